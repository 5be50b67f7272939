//! GenerateRandom.

use keyhold_core::secret::SecretBytes;

use crate::api::{GenerateRandomRequest, GenerateRandomResponse};
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{int_range, required};
use crate::{CallRecord, Engine};

pub(super) fn generate_random(
    engine: &Engine,
    caller: &Principal,
    req: GenerateRandomRequest,
    _rec: &mut CallRecord,
) -> Result<GenerateRandomResponse, KmsError> {
    let n = required(req.number_of_bytes, "numberOfBytes")?;
    int_range(n, "numberOfBytes", 1, 1024)?;
    if req.recipient.is_some() {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            "Recipient (Nitro Enclaves attestation) is not supported by this keyhold server",
        ));
    }
    let len = usize::try_from(n).unwrap_or(0);
    let bytes = match &req.custom_key_store_id {
        // From the HSM of a connected custom key store, as AWS draws from the CloudHSM cluster.
        Some(id) => {
            let store = super::keystores::find_store(engine, caller, id)?;
            let token = engine.connected_token(&store, "GenerateRandom")?;
            SecretBytes::new(token.random(len).map_err(KmsError::internal)?)
        }
        None => SecretBytes::random(len).map_err(KmsError::internal)?,
    };
    Ok(GenerateRandomResponse {
        plaintext: Some(bytes),
    })
}
