//! ML-KEM keys: Encapsulate and Decapsulate (FIPS 203), as AWS KMS offers them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use keyhold_core::asym;
use keyhold_core::key::{EncapsulationAlgorithm, KeyUsage};
use serde_json::json;

use super::asymmetric::key_for_use;
use super::{asym_error, dry_run_ok, respond};
use crate::api::{DecapsulateRequest, EncapsulateRequest};
use crate::authz::Conditions;
use crate::principal::Principal;
use crate::validate::{blob, enum_value, grant_tokens, required};
use crate::{CallRecord, Engine};

/// Largest SharedSecretCiphertextBlob AWS accepts (CiphertextType).
const MAX_CIPHERTEXT: usize = 6144;

fn algorithm(alg: Option<String>) -> Result<EncapsulationAlgorithm, crate::error::KmsError> {
    enum_value(
        &required(alg, "encapsulationAlgorithm")?,
        "encapsulationAlgorithm",
        EncapsulationAlgorithm::parse,
        EncapsulationAlgorithm::ALL,
        EncapsulationAlgorithm::as_str,
    )
}

pub(super) fn encapsulate(
    engine: &Engine,
    caller: &Principal,
    req: EncapsulateRequest,
    rec: &mut CallRecord,
) -> Result<Vec<u8>, crate::error::KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let alg = algorithm(req.encapsulation_algorithm)?;
    grant_tokens(&req.grant_tokens)?;
    let (key, material) = key_for_use(
        engine,
        caller,
        rec,
        &key_id,
        "kms:Encapsulate",
        KeyUsage::EncapsulateDecapsulate,
        &Conditions::default(),
    )?;
    dry_run_ok(req.dry_run)?;
    let (ciphertext, secret) = asym::encapsulate(key.key_spec, &material).map_err(asym_error)?;
    respond(&json!({
        "KeyId": engine.key_arn(&key),
        "SharedSecret": B64.encode(secret.expose_secret()),
        "SharedSecretCiphertextBlob": B64.encode(ciphertext),
        "EncapsulationAlgorithm": alg.as_str(),
    }))
}

pub(super) fn decapsulate(
    engine: &Engine,
    caller: &Principal,
    req: DecapsulateRequest,
    rec: &mut CallRecord,
) -> Result<Vec<u8>, crate::error::KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let ciphertext = blob(
        &required(
            req.shared_secret_ciphertext_blob,
            "sharedSecretCiphertextBlob",
        )?,
        "sharedSecretCiphertextBlob",
        1,
        MAX_CIPHERTEXT,
    )?;
    let alg = algorithm(req.encapsulation_algorithm)?;
    grant_tokens(&req.grant_tokens)?;
    let (key, material) = key_for_use(
        engine,
        caller,
        rec,
        &key_id,
        "kms:Decapsulate",
        KeyUsage::EncapsulateDecapsulate,
        &Conditions::default(),
    )?;
    dry_run_ok(req.dry_run)?;
    let secret = asym::decapsulate(key.key_spec, &material, &ciphertext).map_err(asym_error)?;
    respond(&json!({
        "KeyId": engine.key_arn(&key),
        "SharedSecret": B64.encode(secret.expose_secret()),
        "EncapsulationAlgorithm": alg.as_str(),
    }))
}
