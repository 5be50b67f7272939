//! GenerateRandom.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use keyhold_core::secret::SecretBytes;
use serde_json::json;

use super::respond;
use crate::api::GenerateRandomRequest;
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{int_range, required};
use crate::{CallRecord, Engine};

pub(super) fn generate_random(
    _engine: &Engine,
    _caller: &Principal,
    req: GenerateRandomRequest,
    _rec: &mut CallRecord,
) -> Result<Vec<u8>, KmsError> {
    let n = required(req.number_of_bytes, "numberOfBytes")?;
    int_range(n, "numberOfBytes", 1, 1024)?;
    if req.recipient.is_some() {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            "Recipient (Nitro Enclaves attestation) is not supported by this keyhold server",
        ));
    }
    if req.custom_key_store_id.is_some() {
        return Err(KmsError::new(
            ErrorCode::CustomKeyStoreNotFoundException,
            "No custom key store with that id exists.",
        ));
    }
    let bytes = SecretBytes::random(n as usize).map_err(KmsError::internal)?;
    respond(&json!({ "Plaintext": B64.encode(bytes.expose_secret()) }))
}
