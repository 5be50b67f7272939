//! ML-KEM keys: Encapsulate and Decapsulate (FIPS 203), as AWS KMS offers them.

use std::sync::Arc;

use keyhold_core::asym;
use keyhold_core::key::{EncapsulationAlgorithm, KeyUsage};
use keyhold_core::secret::SecretBytes;
use keyhold_store::KeyRecord;

use super::asymmetric::key_for_use;
use super::{asym_error, dry_run_ok};
use crate::api::{
    DecapsulateRequest, DecapsulateResponse, EncapsulateRequest, EncapsulateResponse,
};
use crate::authz::Conditions;
use crate::error::KmsError;
use crate::principal::Principal;
use crate::validate::{blob, enum_value, grant_tokens, required};
use crate::{CallRecord, Engine};

/// Largest SharedSecretCiphertextBlob AWS accepts (CiphertextType).
const MAX_CIPHERTEXT: usize = 6144;

fn algorithm(alg: Option<String>) -> Result<EncapsulationAlgorithm, KmsError> {
    enum_value(
        &required(alg, "encapsulationAlgorithm")?,
        "encapsulationAlgorithm",
        EncapsulationAlgorithm::parse,
        EncapsulationAlgorithm::ALL,
        EncapsulationAlgorithm::as_str,
    )
}

/// The validated prologue of both operations: the algorithm, then the key, authorized for
/// `action` and of usage ENCAPSULATE_DECAPSULATE, with its material.
fn ml_kem_key(
    engine: &Engine,
    (caller, rec): (&Principal, &mut CallRecord),
    key_id: Option<String>,
    alg: Option<String>,
    tokens: &Option<Vec<String>>,
    action: &str,
) -> Result<(Arc<KeyRecord>, Arc<SecretBytes>, EncapsulationAlgorithm), KmsError> {
    let key_id = required(key_id, "keyId")?;
    let alg = algorithm(alg)?;
    grant_tokens(tokens)?;
    let (key, material) = key_for_use(
        engine,
        caller,
        rec,
        &key_id,
        action,
        KeyUsage::EncapsulateDecapsulate,
        &Conditions::default(),
    )?;
    Ok((key, material, alg))
}

pub(super) fn encapsulate(
    engine: &Engine,
    caller: &Principal,
    req: EncapsulateRequest,
    rec: &mut CallRecord,
) -> Result<EncapsulateResponse, KmsError> {
    let (key, material, alg) = ml_kem_key(
        engine,
        (caller, rec),
        req.key_id,
        req.encapsulation_algorithm,
        &req.grant_tokens,
        "kms:Encapsulate",
    )?;
    dry_run_ok(req.dry_run)?;
    let (ciphertext, secret) = asym::encapsulate(key.key_spec, &material).map_err(asym_error)?;
    Ok(EncapsulateResponse {
        key_id: engine.key_arn(&key),
        shared_secret: secret,
        shared_secret_ciphertext_blob: ciphertext,
        encapsulation_algorithm: alg.as_str(),
    })
}

pub(super) fn decapsulate(
    engine: &Engine,
    caller: &Principal,
    req: DecapsulateRequest,
    rec: &mut CallRecord,
) -> Result<DecapsulateResponse, KmsError> {
    let ciphertext = blob(
        &required(
            req.shared_secret_ciphertext_blob,
            "sharedSecretCiphertextBlob",
        )?,
        "sharedSecretCiphertextBlob",
        1,
        MAX_CIPHERTEXT,
    )?;
    let (key, material, alg) = ml_kem_key(
        engine,
        (caller, rec),
        req.key_id,
        req.encapsulation_algorithm,
        &req.grant_tokens,
        "kms:Decapsulate",
    )?;
    dry_run_ok(req.dry_run)?;
    let secret = asym::decapsulate(key.key_spec, &material, &ciphertext).map_err(asym_error)?;
    Ok(DecapsulateResponse {
        key_id: engine.key_arn(&key),
        shared_secret: secret,
        encapsulation_algorithm: alg.as_str(),
    })
}
