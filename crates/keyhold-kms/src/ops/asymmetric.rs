//! Asymmetric keys and HMAC keys: Sign, Verify, GetPublicKey, GenerateMac, VerifyMac,
//! GenerateDataKeyPair, GenerateDataKeyPairWithoutPlaintext, DeriveSharedSecret.
//! (Encapsulate and Decapsulate are in `kem.rs`.)

use std::sync::Arc;

use keyhold_core::asym;
use keyhold_core::key::{
    EncapsulationAlgorithm, EncryptionAlgorithm, KeyPairSpec, KeySpec, KeyUsage, MacAlgorithm,
    MessageType, SigningAlgorithm,
};
use keyhold_core::secret::SecretBytes;
use keyhold_store::KeyRecord;

use super::keys::key_material_id;
use super::{asym_error, dry_run_ok};
use crate::api::{
    DataKeyPairRequest, DataKeyPairResponse, DeriveSharedSecretRequest, DeriveSharedSecretResponse,
    GenerateMacResponse, GetPublicKeyResponse, KeyIdRequest, MacRequest, SignRequest, SignResponse,
    VerifyMacResponse, VerifyResponse,
};
use crate::authz::Conditions;
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{self, blob, enum_value, grant_tokens, required};
use crate::{CallRecord, Engine};

/// Largest message Sign, Verify, GenerateMac and VerifyMac accept.
const MAX_MESSAGE: usize = 4096;

/// Refuses a key in the wrong state or with the wrong usage for an operation.
fn check_key(engine: &Engine, key: &KeyRecord, usage: KeyUsage, op: &str) -> Result<(), KmsError> {
    let arn = engine.key_arn(key);
    if let Some(r) = key.state.crypto_refusal() {
        return Err(KmsError::from_state(r, &arn, key.state.as_str()));
    }
    if key.key_usage != usage {
        return Err(KmsError::new(
            ErrorCode::InvalidKeyUsageException,
            format!(
                "{arn} has key usage {} and key spec {}: it cannot be used for {op}",
                key.key_usage, key.key_spec
            ),
        ));
    }
    Ok(())
}

/// Resolves, authorizes and checks the key of an operation.
pub(super) fn key_for_use(
    engine: &Engine,
    caller: &Principal,
    rec: &mut CallRecord,
    name: &str,
    action: &str,
    usage: KeyUsage,
    conds: &Conditions<'_>,
) -> Result<(Arc<KeyRecord>, Arc<SecretBytes>), KmsError> {
    let key = engine.key_for(caller, rec, name, true, action, conds)?;
    check_key(engine, &key, usage, action.trim_start_matches("kms:"))?;
    let material = engine.current_material(&key)?;
    Ok((key, material))
}

fn signing_parts(
    req: &SignRequest,
) -> Result<(String, Vec<u8>, MessageType, SigningAlgorithm), KmsError> {
    let key_id = required(req.key_id.clone(), "keyId")?;
    let message = blob(
        &required(req.message.clone(), "message")?,
        "message",
        1,
        MAX_MESSAGE,
    )?;
    let message_type = match &req.message_type {
        Some(t) => enum_value(
            t,
            "messageType",
            MessageType::parse,
            MessageType::ALL,
            MessageType::as_str,
        )?,
        None => MessageType::Raw,
    };
    let alg = enum_value(
        &required(req.signing_algorithm.clone(), "signingAlgorithm")?,
        "signingAlgorithm",
        SigningAlgorithm::parse,
        SigningAlgorithm::ALL,
        SigningAlgorithm::as_str,
    )?;
    grant_tokens(&req.grant_tokens)?;
    Ok((key_id, message, message_type, alg))
}

pub(super) fn sign(
    engine: &Engine,
    caller: &Principal,
    req: SignRequest,
    rec: &mut CallRecord,
) -> Result<SignResponse, KmsError> {
    let (key_id, message, message_type, alg) = signing_parts(&req)?;
    let conds = Conditions::default()
        .and("kms:SigningAlgorithm", vec![alg.as_str().into()])
        .and("kms:MessageType", vec![message_type.as_str().into()]);
    let (key, material) = key_for_use(
        engine,
        caller,
        rec,
        &key_id,
        "kms:Sign",
        KeyUsage::SignVerify,
        &conds,
    )?;
    dry_run_ok(req.dry_run)?;
    let signature =
        asym::sign(key.key_spec, &material, alg, message_type, &message).map_err(asym_error)?;
    Ok(SignResponse {
        key_id: engine.key_arn(&key),
        signature,
        signing_algorithm: alg.as_str(),
    })
}

pub(super) fn verify(
    engine: &Engine,
    caller: &Principal,
    req: SignRequest,
    rec: &mut CallRecord,
) -> Result<VerifyResponse, KmsError> {
    let (key_id, message, message_type, alg) = signing_parts(&req)?;
    let signature = blob(&required(req.signature, "signature")?, "signature", 1, 6144)?;
    let conds = Conditions::default()
        .and("kms:SigningAlgorithm", vec![alg.as_str().into()])
        .and("kms:MessageType", vec![message_type.as_str().into()]);
    let (key, material) = key_for_use(
        engine,
        caller,
        rec,
        &key_id,
        "kms:Verify",
        KeyUsage::SignVerify,
        &conds,
    )?;
    dry_run_ok(req.dry_run)?;
    let valid = asym::verify(
        key.key_spec,
        &material,
        alg,
        message_type,
        &message,
        &signature,
    )
    .map_err(asym_error)?;
    if !valid {
        return Err(KmsError::new(
            ErrorCode::KMSInvalidSignatureException,
            "The signature is not valid for this message, key and signing algorithm.",
        ));
    }
    Ok(VerifyResponse {
        key_id: engine.key_arn(&key),
        signature_valid: true,
        signing_algorithm: alg.as_str(),
    })
}

pub(super) fn get_public_key(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<GetPublicKeyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    grant_tokens(&req.grant_tokens)?;
    let key = engine.key_for(
        caller,
        rec,
        &key_id,
        true,
        "kms:GetPublicKey",
        &Conditions::default(),
    )?;
    let arn = engine.key_arn(&key);
    if !key.key_spec.is_asymmetric() {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            format!("{arn} is a {} key: it has no public key", key.key_spec),
        ));
    }
    if let Some(r) = key.state.crypto_refusal() {
        return Err(KmsError::from_state(r, &arn, key.state.as_str()));
    }
    let material = engine.current_material(&key)?;
    let public = asym::public_key_der(key.key_spec, &material).map_err(asym_error)?;
    let mut out = GetPublicKeyResponse {
        key_id: arn,
        public_key: public,
        customer_master_key_spec: key.key_spec.as_str(),
        key_spec: key.key_spec.as_str(),
        key_usage: key.key_usage.as_str(),
        signing_algorithms: None,
        encryption_algorithms: None,
        key_agreement_algorithms: None,
        encapsulation_algorithms: None,
    };
    match key.key_usage {
        KeyUsage::SignVerify => {
            out.signing_algorithms = Some(
                key.key_spec
                    .signing_algorithms()
                    .iter()
                    .map(|a| a.as_str())
                    .collect(),
            );
        }
        KeyUsage::EncryptDecrypt => {
            out.encryption_algorithms = Some(vec![
                EncryptionAlgorithm::RsaesOaepSha1.as_str(),
                EncryptionAlgorithm::RsaesOaepSha256.as_str(),
            ]);
        }
        KeyUsage::KeyAgreement => out.key_agreement_algorithms = Some(vec!["ECDH"]),
        KeyUsage::EncapsulateDecapsulate => {
            out.encapsulation_algorithms = Some(vec![EncapsulationAlgorithm::MlKem.as_str()]);
        }
        KeyUsage::GenerateVerifyMac => {}
    }
    Ok(out)
}

fn mac_parts(req: &MacRequest) -> Result<(String, Vec<u8>, MacAlgorithm), KmsError> {
    let key_id = required(req.key_id.clone(), "keyId")?;
    let message = blob(
        &required(req.message.clone(), "message")?,
        "message",
        1,
        MAX_MESSAGE,
    )?;
    let alg = enum_value(
        &required(req.mac_algorithm.clone(), "macAlgorithm")?,
        "macAlgorithm",
        MacAlgorithm::parse,
        MacAlgorithm::ALL,
        MacAlgorithm::as_str,
    )?;
    grant_tokens(&req.grant_tokens)?;
    Ok((key_id, message, alg))
}

pub(super) fn generate_mac(
    engine: &Engine,
    caller: &Principal,
    req: MacRequest,
    rec: &mut CallRecord,
) -> Result<GenerateMacResponse, KmsError> {
    let (key_id, message, alg) = mac_parts(&req)?;
    let conds = Conditions::default().and("kms:MacAlgorithm", vec![alg.as_str().into()]);
    let (key, material) = key_for_use(
        engine,
        caller,
        rec,
        &key_id,
        "kms:GenerateMac",
        KeyUsage::GenerateVerifyMac,
        &conds,
    )?;
    dry_run_ok(req.dry_run)?;
    let tag = asym::mac(key.key_spec, &material, alg, &message).map_err(asym_error)?;
    Ok(GenerateMacResponse {
        mac: tag,
        mac_algorithm: alg.as_str(),
        key_id: engine.key_arn(&key),
    })
}

pub(super) fn verify_mac(
    engine: &Engine,
    caller: &Principal,
    req: MacRequest,
    rec: &mut CallRecord,
) -> Result<VerifyMacResponse, KmsError> {
    let (key_id, message, alg) = mac_parts(&req)?;
    let tag = blob(&required(req.mac, "mac")?, "mac", 1, 6144)?;
    let conds = Conditions::default().and("kms:MacAlgorithm", vec![alg.as_str().into()]);
    let (key, material) = key_for_use(
        engine,
        caller,
        rec,
        &key_id,
        "kms:VerifyMac",
        KeyUsage::GenerateVerifyMac,
        &conds,
    )?;
    dry_run_ok(req.dry_run)?;
    if !asym::verify_mac(key.key_spec, &material, alg, &message, &tag).map_err(asym_error)? {
        return Err(KmsError::new(
            ErrorCode::KMSInvalidMacException,
            "The MAC is not valid for this message, key and MAC algorithm.",
        ));
    }
    Ok(VerifyMacResponse {
        key_id: engine.key_arn(&key),
        mac_valid: true,
        mac_algorithm: alg.as_str(),
    })
}

/// The shared body of GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext.
fn data_key_pair(
    engine: &Engine,
    caller: &Principal,
    req: DataKeyPairRequest,
    rec: &mut CallRecord,
    with_plaintext: bool,
) -> Result<DataKeyPairResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let spec = enum_value(
        &required(req.key_pair_spec, "keyPairSpec")?,
        "keyPairSpec",
        KeyPairSpec::parse,
        KeyPairSpec::ALL,
        KeyPairSpec::as_str,
    )?;
    grant_tokens(&req.grant_tokens)?;
    if req.recipient.is_some() {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            "Recipient (Nitro Enclaves attestation) is not supported by this keyhold server",
        ));
    }
    let context = validate::context(req.encryption_context);
    let action = if with_plaintext {
        "kms:GenerateDataKeyPair"
    } else {
        "kms:GenerateDataKeyPairWithoutPlaintext"
    };
    let conds =
        Conditions::with_context(&context).and("kms:DataKeyPairSpec", vec![spec.as_str().into()]);
    let key = engine.key_for(caller, rec, &key_id, true, action, &conds)?;
    check_key(
        engine,
        &key,
        KeyUsage::EncryptDecrypt,
        "GenerateDataKeyPair",
    )?;
    if key.key_spec != KeySpec::SymmetricDefault {
        return Err(KmsError::new(
            ErrorCode::InvalidKeyUsageException,
            format!("{} is not a symmetric encryption key", engine.key_arn(&key)),
        ));
    }
    dry_run_ok(req.dry_run)?;
    let pair_spec = spec.key_spec();
    let private = asym::generate(pair_spec).map_err(asym_error)?;
    let public = asym::public_key_der(pair_spec, &private).map_err(asym_error)?;
    let sealed = super::crypto::encrypt_under(
        engine,
        &key,
        EncryptionAlgorithm::SymmetricDefault,
        &context,
        private.expose_secret(),
    )?;
    Ok(DataKeyPairResponse {
        private_key_ciphertext_blob: sealed,
        public_key: public,
        key_id: engine.key_arn(&key),
        key_pair_spec: spec.as_str(),
        key_material_id: key_material_id(&key.key_id, key.current_version),
        private_key_plaintext: with_plaintext.then_some(private),
    })
}

pub(super) fn generate_data_key_pair(
    engine: &Engine,
    caller: &Principal,
    req: DataKeyPairRequest,
    rec: &mut CallRecord,
) -> Result<DataKeyPairResponse, KmsError> {
    data_key_pair(engine, caller, req, rec, true)
}

pub(super) fn generate_data_key_pair_without_plaintext(
    engine: &Engine,
    caller: &Principal,
    req: DataKeyPairRequest,
    rec: &mut CallRecord,
) -> Result<DataKeyPairResponse, KmsError> {
    data_key_pair(engine, caller, req, rec, false)
}

pub(super) fn derive_shared_secret(
    engine: &Engine,
    caller: &Principal,
    req: DeriveSharedSecretRequest,
    rec: &mut CallRecord,
) -> Result<DeriveSharedSecretResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let alg = required(req.key_agreement_algorithm, "keyAgreementAlgorithm")?;
    if alg != "ECDH" {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '{alg}' at 'keyAgreementAlgorithm' failed to \
             satisfy constraint: Member must satisfy enum value set: [ECDH]"
        )));
    }
    let peer = blob(
        &required(req.public_key, "publicKey")?,
        "publicKey",
        1,
        8192,
    )?;
    grant_tokens(&req.grant_tokens)?;
    if req.recipient.is_some() {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            "Recipient (Nitro Enclaves attestation) is not supported by this keyhold server",
        ));
    }
    let conds = Conditions::default().and("kms:KeyAgreementAlgorithm", vec![alg.clone()]);
    let (key, material) = key_for_use(
        engine,
        caller,
        rec,
        &key_id,
        "kms:DeriveSharedSecret",
        KeyUsage::KeyAgreement,
        &conds,
    )?;
    dry_run_ok(req.dry_run)?;
    let secret = asym::derive_shared_secret(key.key_spec, &material, &peer).map_err(asym_error)?;
    Ok(DeriveSharedSecretResponse {
        key_id: engine.key_arn(&key),
        shared_secret: secret,
        key_agreement_algorithm: alg,
        key_origin: key.origin.as_str(),
    })
}
