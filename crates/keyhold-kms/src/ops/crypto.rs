//! Encryption: Encrypt, Decrypt, ReEncrypt (symmetric keys and RSA keys with OAEP),
//! GenerateDataKey, GenerateDataKeyWithoutPlaintext. These run from the keyring on a warm cache.

use std::sync::Arc;

use keyhold_core::context::EncryptionContext;
use keyhold_core::key::{DataKeySpec, EncryptionAlgorithm, KeySpec, KeyUsage};
use keyhold_core::secret::SecretBytes;
use keyhold_core::{asym, blob};
use keyhold_store::KeyRecord;

use super::keys::key_material_id;
use super::{asym_error, dry_run_ok};
use crate::api::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, GenerateDataKeyRequest,
    GenerateDataKeyResponse, GenerateDataKeyWithoutPlaintextResponse, ReEncryptRequest,
    ReEncryptResponse,
};
use crate::authz::Conditions;
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{self, blob as blob_field, enum_value, grant_tokens, int_range, required};
use crate::{CallRecord, Engine};

/// Largest plaintext Encrypt accepts.
const MAX_PLAINTEXT: usize = 4096;
/// Largest ciphertext blob accepted.
const MAX_CIPHERTEXT: usize = 6144;

/// Reads an optional `EncryptionAlgorithm` field (default `SYMMETRIC_DEFAULT`).
fn algorithm(v: &Option<String>, field: &str) -> Result<EncryptionAlgorithm, KmsError> {
    match v {
        Some(s) => enum_value(
            s,
            field,
            EncryptionAlgorithm::parse,
            EncryptionAlgorithm::ALL,
            EncryptionAlgorithm::as_str,
        ),
        None => Ok(EncryptionAlgorithm::SymmetricDefault),
    }
}

/// Refuses an encryption algorithm the key's spec does not use.
fn check_algorithm(
    engine: &Engine,
    key: &KeyRecord,
    alg: EncryptionAlgorithm,
) -> Result<(), KmsError> {
    let fits = match alg {
        EncryptionAlgorithm::SymmetricDefault => key.key_spec == KeySpec::SymmetricDefault,
        EncryptionAlgorithm::RsaesOaepSha1 | EncryptionAlgorithm::RsaesOaepSha256 => {
            key.key_spec.is_rsa()
        }
        EncryptionAlgorithm::Sm2Pke => false,
    };
    if !fits {
        return Err(KmsError::new(
            ErrorCode::InvalidKeyUsageException,
            format!(
                "Encryption algorithm {alg} is not compatible with {} ({})",
                engine.key_arn(key),
                key.key_spec
            ),
        ));
    }
    Ok(())
}

/// Refuses an encryption context on an asymmetric key, which cannot bind one.
fn check_context(key: &KeyRecord, context: &EncryptionContext) -> Result<(), KmsError> {
    if key.key_spec.is_asymmetric() && !context.pairs().is_empty() {
        return Err(KmsError::validation(
            "EncryptionContext is not supported with asymmetric KMS keys.",
        ));
    }
    Ok(())
}

fn no_recipient(v: &Option<serde_json::Value>) -> Result<(), KmsError> {
    if v.is_some() {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            "Recipient (Nitro Enclaves attestation) is not supported by this keyhold server",
        ));
    }
    Ok(())
}

/// Refuses keys whose state or usage does not allow encryption.
fn check_usable(engine: &Engine, key: &KeyRecord) -> Result<(), KmsError> {
    if let Some(refusal) = key.state.crypto_refusal() {
        return Err(KmsError::from_state(
            refusal,
            &engine.key_arn(key),
            key.state.as_str(),
        ));
    }
    if key.key_usage != KeyUsage::EncryptDecrypt {
        return Err(KmsError::new(
            ErrorCode::InvalidKeyUsageException,
            format!(
                "{} key usage is {} and key spec is {}",
                engine.key_arn(key),
                key.key_usage,
                key.key_spec
            ),
        ));
    }
    Ok(())
}

/// Finds the key an Encrypt or GenerateDataKey names, checks it can encrypt, records it as the
/// call's resource, and answers a DryRun.
fn usable_key(
    engine: &Engine,
    caller: &Principal,
    name: &str,
    action: &str,
    conds: &Conditions<'_>,
    dry_run: Option<bool>,
    rec: &mut CallRecord,
) -> Result<Arc<KeyRecord>, KmsError> {
    let key = engine.key_for(caller, rec, name, true, action, conds)?;
    check_usable(engine, &key)?;
    dry_run_ok(dry_run)?;
    Ok(key)
}

/// The `CiphertextBlob` field of Decrypt and ReEncrypt.
fn ciphertext_field(v: Option<String>) -> Result<Vec<u8>, KmsError> {
    blob_field(
        &required(v, "ciphertextBlob")?,
        "ciphertextBlob",
        1,
        MAX_CIPHERTEXT,
    )
}

/// Encrypts `plaintext` under the current version of `key`: a ciphertext blob for a symmetric
/// key, RSA OAEP for an RSA key.
pub(super) fn encrypt_under(
    engine: &Engine,
    key: &KeyRecord,
    alg: EncryptionAlgorithm,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, KmsError> {
    check_algorithm(engine, key, alg)?;
    check_context(key, context)?;
    if let Some(store) = &key.custom_key_store_id {
        let token = engine.key_store_token(store, &engine.key_arn(key))?;
        let prefix = blob::hsm_prefix(&key.key_id, key.current_version);
        let sealed = token
            .gcm_seal(
                &crate::keystores::hsm_label(&key.key_id),
                &blob::hsm_aad(&prefix, context),
                plaintext,
            )
            .map_err(|e| hsm_error(engine, key, e))?;
        let mut out = prefix;
        out.extend_from_slice(&sealed);
        return Ok(out);
    }
    let material = engine.current_material(key)?;
    if key.key_spec.is_rsa() {
        return asym::rsa_encrypt(key.key_spec, &material, alg, plaintext).map_err(asym_error);
    }
    blob::seal(
        &material,
        &key.key_id,
        key.current_version,
        context,
        plaintext,
    )
    .map_err(KmsError::internal)
}

/// An HSM failure with a key of a custom key store (its key gone from the token, the token
/// gone or failing): the key is unavailable (`KMSInvalidStateException`), as AWS answers when a
/// key's CloudHSM cluster cannot serve it. The detail goes to the log.
fn hsm_error(engine: &Engine, key: &KeyRecord, e: keyhold_hsm::HsmError) -> KmsError {
    tracing::warn!(key_id = %key.key_id, error = %e, "custom key store operation failed");
    let why = match e {
        keyhold_hsm::HsmError::NoKey(_) => "its key material is missing from the custom key store",
        _ => "its custom key store's HSM failed",
    };
    KmsError::new(
        ErrorCode::KMSInvalidStateException,
        format!("{} is unavailable: {why}.", engine.key_arn(key)),
    )
}

/// The `KeyMaterialId` fields of a response: symmetric keys only.
fn material_id(key: &KeyRecord, version: u32) -> Option<String> {
    (key.key_spec == KeySpec::SymmetricDefault).then(|| key_material_id(&key.key_id, version))
}

/// The DryRun options of a request that opens a blob.
#[derive(Clone, Copy)]
struct DryRun {
    /// DryRun as sent.
    requested: Option<bool>,
    /// DryRunModifiers held IGNORE_CIPHERTEXT.
    ignore_ciphertext: bool,
}

impl DryRun {
    /// Reads `DryRun` and `DryRunModifiers` (whose only value is `IGNORE_CIPHERTEXT`).
    fn from_request(
        requested: Option<bool>,
        modifiers: &Option<Vec<String>>,
    ) -> Result<Self, KmsError> {
        let mut ignore_ciphertext = false;
        for m in modifiers.iter().flatten() {
            if m != "IGNORE_CIPHERTEXT" {
                return Err(KmsError::validation(format!(
                    "1 validation error detected: Value '{m}' at 'dryRunModifiers' failed to \
                     satisfy constraint: Member must satisfy enum value set: [IGNORE_CIPHERTEXT]"
                )));
            }
            ignore_ciphertext = true;
        }
        Ok(Self {
            requested,
            ignore_ciphertext,
        })
    }
}

/// A decrypted blob and the key and version that sealed it.
struct Opened {
    key: Arc<KeyRecord>,
    version: u32,
    plaintext: SecretBytes,
}

/// What a Decrypt or the source half of a ReEncrypt asks to open.
struct BlobRequest<'a> {
    /// The ciphertext blob.
    ciphertext: &'a [u8],
    /// The key the request names, if it names one.
    expected: Option<&'a str>,
    /// The encryption context.
    context: &'a EncryptionContext,
    /// `kms:Decrypt` or `kms:ReEncryptFrom`.
    action: &'a str,
    /// The encryption algorithm the request names.
    algorithm: EncryptionAlgorithm,
    /// DryRun options.
    dry_run: DryRun,
}

/// Opens a symmetric blob: finds its key from the header, checks it against `expected` (the
/// request's KeyId, if any), authorizes, checks state, and authenticates. `dry_run` is checked
/// once the request is known to be allowed; with `ignore_ciphertext` before the blob is opened.
fn open_blob(
    engine: &Engine,
    caller: &Principal,
    req: BlobRequest<'_>,
    rec: &mut CallRecord,
) -> Result<Opened, KmsError> {
    let BlobRequest {
        ciphertext,
        expected,
        context,
        action,
        algorithm,
        dry_run,
    } = req;
    let expected = match expected {
        Some(name) => Some(engine.resolve_key(caller, name, true)?),
        None => None,
    };
    if let Some(key) = expected.as_ref().filter(|k| k.key_spec.is_rsa()) {
        // RSA ciphertext names no key: the request's KeyId decides.
        rec.resources.push(engine.key_arn(key));
        let conds = Conditions::with_context(context)
            .and("kms:EncryptionAlgorithm", vec![algorithm.as_str().into()]);
        engine.authorize(caller, rec, key, action, &conds)?;
        check_usable(engine, key)?;
        check_algorithm(engine, key, algorithm)?;
        check_context(key, context)?;
        dry_run_ok(dry_run.requested)?;
        let material = engine.current_material(key)?;
        let plaintext = asym::rsa_decrypt(&material, algorithm, ciphertext).map_err(asym_error)?;
        return Ok(Opened {
            key: key.clone(),
            version: key.current_version,
            plaintext,
        });
    }
    if dry_run.ignore_ciphertext {
        if let Some(key) = &expected {
            check_usable(engine, key)?;
        }
        dry_run_ok(dry_run.requested)?;
    }
    let header = blob::parse_header(ciphertext).map_err(|_| KmsError::invalid_ciphertext())?;
    if let Some(e) = &expected {
        if e.key_id != header.key_id {
            return Err(KmsError::new(
                ErrorCode::IncorrectKeyException,
                "The key ID in the request does not identify a KMS key that can perform this \
                 operation.",
            ));
        }
    }
    // A blob of an owned key is no ciphertext any caller can open.
    let key = engine
        .key_record(&header.key_id)?
        .filter(|k| k.account != crate::owned::OWNED_ACCOUNT)
        .ok_or_else(KmsError::invalid_ciphertext)?;
    rec.resources.push(engine.key_arn(&key));
    let conds = Conditions::with_context(context)
        .and("kms:EncryptionAlgorithm", vec![algorithm.as_str().into()]);
    engine.authorize(caller, rec, &key, action, &conds)?;
    check_usable(engine, &key)?;
    check_algorithm(engine, &key, algorithm)?;
    dry_run_ok(dry_run.requested)?;
    let plaintext = match &key.custom_key_store_id {
        Some(store) => {
            if !header.hsm {
                return Err(KmsError::invalid_ciphertext());
            }
            let token = engine.key_store_token(store, &engine.key_arn(&key))?;
            let (prefix, sealed) = ciphertext.split_at(blob::HSM_PREFIX_LEN);
            token
                .gcm_open(
                    &crate::keystores::hsm_label(&key.key_id),
                    &blob::hsm_aad(prefix, context),
                    sealed,
                )
                .map_err(|e| match e {
                    keyhold_hsm::HsmError::UnwrapFailed => KmsError::invalid_ciphertext(),
                    e => hsm_error(engine, &key, e),
                })?
        }
        None => {
            let material = engine
                .material(&key.key_id, header.version)?
                .ok_or_else(KmsError::invalid_ciphertext)?;
            blob::open(&material, ciphertext, context)
                .map_err(|_| KmsError::invalid_ciphertext())?
        }
    };
    Ok(Opened {
        key,
        version: header.version,
        plaintext,
    })
}

pub(super) fn encrypt(
    engine: &Engine,
    caller: &Principal,
    req: EncryptRequest,
    rec: &mut CallRecord,
) -> Result<EncryptResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let plaintext = blob_field(
        &required(req.plaintext, "plaintext")?,
        "plaintext",
        1,
        MAX_PLAINTEXT,
    )?;
    let plaintext = SecretBytes::new(plaintext);
    grant_tokens(&req.grant_tokens)?;
    let alg = algorithm(&req.encryption_algorithm, "encryptionAlgorithm")?;
    let context = validate::context(req.encryption_context);
    let conds = Conditions::with_context(&context)
        .and("kms:EncryptionAlgorithm", vec![alg.as_str().into()]);
    let key = usable_key(
        engine,
        caller,
        &key_id,
        "kms:Encrypt",
        &conds,
        req.dry_run,
        rec,
    )?;
    let ciphertext = encrypt_under(engine, &key, alg, &context, plaintext.expose_secret())?;
    Ok(EncryptResponse {
        ciphertext_blob: ciphertext,
        key_id: engine.key_arn(&key),
        encryption_algorithm: alg,
    })
}

pub(super) fn decrypt(
    engine: &Engine,
    caller: &Principal,
    req: DecryptRequest,
    rec: &mut CallRecord,
) -> Result<DecryptResponse, KmsError> {
    let ciphertext = ciphertext_field(req.ciphertext_blob)?;
    grant_tokens(&req.grant_tokens)?;
    let alg = algorithm(&req.encryption_algorithm, "encryptionAlgorithm")?;
    no_recipient(&req.recipient)?;
    let dry_run = DryRun::from_request(req.dry_run, &req.dry_run_modifiers)?;
    let context = validate::context(req.encryption_context);
    let opened = open_blob(
        engine,
        caller,
        BlobRequest {
            ciphertext: &ciphertext,
            expected: req.key_id.as_deref(),
            context: &context,
            action: "kms:Decrypt",
            algorithm: alg,
            dry_run,
        },
        rec,
    )?;
    Ok(DecryptResponse {
        key_id: engine.key_arn(&opened.key),
        key_material_id: material_id(&opened.key, opened.version),
        plaintext: opened.plaintext,
        encryption_algorithm: alg,
    })
}

pub(super) fn re_encrypt(
    engine: &Engine,
    caller: &Principal,
    req: ReEncryptRequest,
    rec: &mut CallRecord,
) -> Result<ReEncryptResponse, KmsError> {
    let ciphertext = ciphertext_field(req.ciphertext_blob)?;
    let dest_id = required(req.destination_key_id, "destinationKeyId")?;
    grant_tokens(&req.grant_tokens)?;
    let source_alg = algorithm(
        &req.source_encryption_algorithm,
        "sourceEncryptionAlgorithm",
    )?;
    let dest_alg = algorithm(
        &req.destination_encryption_algorithm,
        "destinationEncryptionAlgorithm",
    )?;
    let dry_run = DryRun::from_request(req.dry_run, &req.dry_run_modifiers)?;
    let source_ctx = validate::context(req.source_encryption_context);
    let dest_ctx = validate::context(req.destination_encryption_context);
    let mut dest_rec = CallRecord {
        source_ip: rec.source_ip.clone(),
        via_service: rec.via_service.clone(),
        secure_transport: rec.secure_transport,
        ..CallRecord::default()
    };
    let dest = engine.key_for(
        caller,
        &mut dest_rec,
        &dest_id,
        true,
        "kms:ReEncryptTo",
        &Conditions::with_context(&dest_ctx)
            .and("kms:EncryptionAlgorithm", vec![dest_alg.as_str().into()]),
    );
    rec.resources.append(&mut dest_rec.resources);
    let dest = dest.inspect_err(|_| rec.decision = dest_rec.decision.clone())?;
    check_usable(engine, &dest)?;
    let opened = open_blob(
        engine,
        caller,
        BlobRequest {
            ciphertext: &ciphertext,
            expected: req.source_key_id.as_deref(),
            context: &source_ctx,
            action: "kms:ReEncryptFrom",
            algorithm: source_alg,
            dry_run,
        },
        rec,
    )?;
    if let Some(d) = dest_rec.decision {
        rec.decision = Some(format!("{}; {d}", rec.decision.take().unwrap_or_default()));
    }
    let new_blob = encrypt_under(
        engine,
        &dest,
        dest_alg,
        &dest_ctx,
        opened.plaintext.expose_secret(),
    )?;
    Ok(ReEncryptResponse {
        ciphertext_blob: new_blob,
        source_key_id: engine.key_arn(&opened.key),
        key_id: engine.key_arn(&dest),
        source_encryption_algorithm: source_alg,
        destination_encryption_algorithm: dest_alg,
        source_key_material_id: material_id(&opened.key, opened.version),
        destination_key_material_id: material_id(&dest, dest.current_version),
    })
}

/// The shared body of GenerateDataKey and GenerateDataKeyWithoutPlaintext: the data key and
/// its ciphertext.
fn data_key(
    engine: &Engine,
    caller: &Principal,
    req: GenerateDataKeyRequest,
    rec: &mut CallRecord,
    with_plaintext: bool,
) -> Result<GenerateDataKeyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    grant_tokens(&req.grant_tokens)?;
    no_recipient(&req.recipient)?;
    let len = match (req.key_spec.as_deref(), req.number_of_bytes) {
        (Some(_), Some(_)) => {
            return Err(KmsError::validation(
                "Please specify either number of bytes or key spec, not both.",
            ))
        }
        (None, None) => {
            return Err(KmsError::validation(
                "Please specify either number of bytes or key spec.",
            ))
        }
        (Some(s), None) => enum_value(
            s,
            "keySpec",
            DataKeySpec::parse,
            DataKeySpec::ALL,
            DataKeySpec::as_str,
        )?
        .byte_len(),
        (None, Some(n)) => {
            int_range(n, "numberOfBytes", 1, 1024)?;
            n as usize
        }
    };
    let context = validate::context(req.encryption_context);
    let action = if with_plaintext {
        "kms:GenerateDataKey"
    } else {
        "kms:GenerateDataKeyWithoutPlaintext"
    };
    let conds = Conditions::with_context(&context);
    let key = usable_key(engine, caller, &key_id, action, &conds, req.dry_run, rec)?;
    let data_key = SecretBytes::random(len).map_err(KmsError::internal)?;
    let ciphertext = encrypt_under(
        engine,
        &key,
        EncryptionAlgorithm::SymmetricDefault,
        &context,
        data_key.expose_secret(),
    )?;
    Ok(GenerateDataKeyResponse {
        ciphertext_blob: ciphertext,
        plaintext: data_key,
        key_id: engine.key_arn(&key),
        key_material_id: key_material_id(&key.key_id, key.current_version),
    })
}

pub(super) fn generate_data_key(
    engine: &Engine,
    caller: &Principal,
    req: GenerateDataKeyRequest,
    rec: &mut CallRecord,
) -> Result<GenerateDataKeyResponse, KmsError> {
    data_key(engine, caller, req, rec, true)
}

pub(super) fn generate_data_key_without_plaintext(
    engine: &Engine,
    caller: &Principal,
    req: GenerateDataKeyRequest,
    rec: &mut CallRecord,
) -> Result<GenerateDataKeyWithoutPlaintextResponse, KmsError> {
    let r = data_key(engine, caller, req, rec, false)?;
    Ok(GenerateDataKeyWithoutPlaintextResponse {
        ciphertext_blob: r.ciphertext_blob,
        key_id: r.key_id,
        key_material_id: r.key_material_id,
    })
}
