//! Bring your own key: GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial,
//! and the expiry of imported material.
//!
//! The import token is the RSA wrapping private key with the key id, wrapping algorithm and
//! expiry, wrapped under the root key with a label that names the key: it is useless for any
//! other key, and keyhold keeps no state between the two calls.

use keyhold_core::asym;
use keyhold_core::ids::KeyId;
use keyhold_core::import::{self, TokenPayload, WrappingAlgorithm};
use keyhold_core::key::{KeySpec, KeyState, Origin};
use keyhold_core::secret::SecretBytes;
use keyhold_store::{KeyRecord, KeyVersionRecord};

use crate::api::{
    epoch_seconds, GetParametersForImportRequest, GetParametersForImportResponse,
    ImportKeyMaterialRequest, KeyIdRequest, KeyMaterialResponse,
};
use crate::authz::Conditions;
use crate::clock::DAY_MS;
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{blob, enum_value, required};
use crate::{CallRecord, Engine};

/// How long import parameters stay valid.
const TOKEN_LIFETIME_MS: i64 = DAY_MS;
const TOKEN_FORMAT: u8 = 0x01;

fn token_label(id: &KeyId) -> Vec<u8> {
    format!("keyhold:import-token:{id}").into_bytes()
}

fn invalid_token() -> KmsError {
    KmsError::new(
        ErrorCode::InvalidImportTokenException,
        "The import token is not valid for this KMS key.",
    )
}

/// Refuses keys that do not take imported material, or whose state forbids it.
fn check_external(engine: &Engine, key: &KeyRecord) -> Result<(), KmsError> {
    let arn = engine.key_arn(key);
    if key.origin != Origin::External {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            format!(
                "{arn} has origin {}: only EXTERNAL keys take imported key material",
                key.origin
            ),
        ));
    }
    if key.state == KeyState::PendingDeletion {
        return Err(KmsError::invalid_state(&arn, key.state.as_str()));
    }
    Ok(())
}

/// A digest that identifies imported material (for the re-import check and KeyMaterialId).
fn material_digest(spec: KeySpec, m: &SecretBytes) -> Result<String, KmsError> {
    let basis = if spec.is_asymmetric() {
        asym::public_key_der(spec, m).map_err(super::asym_error)?
    } else {
        m.expose_secret().to_vec()
    };
    let mut input = b"keyhold:imported-material:".to_vec();
    input.extend_from_slice(&basis);
    Ok(hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input).as_ref(),
    ))
}

pub(super) fn get_parameters_for_import(
    engine: &Engine,
    caller: &Principal,
    req: GetParametersForImportRequest,
    rec: &mut CallRecord,
) -> Result<GetParametersForImportResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let alg = enum_value(
        &required(req.wrapping_algorithm, "wrappingAlgorithm")?,
        "wrappingAlgorithm",
        WrappingAlgorithm::parse,
        WrappingAlgorithm::ALL,
        WrappingAlgorithm::as_str,
    )?;
    let spec_name = required(req.wrapping_key_spec, "wrappingKeySpec")?;
    let spec = match spec_name.as_str() {
        "RSA_2048" => KeySpec::Rsa2048,
        "RSA_3072" => KeySpec::Rsa3072,
        "RSA_4096" => KeySpec::Rsa4096,
        "SM2" => {
            return Err(KmsError::new(
                ErrorCode::UnsupportedOperationException,
                "WrappingKeySpec SM2 is only available in the China Regions",
            ))
        }
        other => {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'wrappingKeySpec' failed to \
                 satisfy constraint: Member must satisfy enum value set: [RSA_2048, RSA_3072, \
                 RSA_4096, SM2]"
            )))
        }
    };
    if matches!(
        alg,
        WrappingAlgorithm::RsaesPkcs1V15 | WrappingAlgorithm::Sm2Pke
    ) {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            format!("Wrapping algorithm {} is not supported", alg.as_str()),
        ));
    }
    let conds = Conditions::default()
        .and("kms:WrappingAlgorithm", vec![alg.as_str().into()])
        .and("kms:WrappingKeySpec", vec![spec_name.clone()]);
    let key = engine.key_for(
        caller,
        rec,
        &key_id,
        false,
        "kms:GetParametersForImport",
        &conds,
    )?;
    check_external(engine, &key)?;

    let wrapping = asym::generate(spec).map_err(super::asym_error)?;
    let public = asym::public_key_der(spec, &wrapping).map_err(super::asym_error)?;
    let expires = engine.now_ms() + TOKEN_LIFETIME_MS;
    let payload = TokenPayload {
        expires_ms: expires,
        algorithm: alg,
        spec,
        wrapping_key: wrapping,
    }
    .encode();
    let mut token = vec![TOKEN_FORMAT];
    token.extend(engine.root_wrap(&payload, &token_label(&key.key_id))?);
    Ok(GetParametersForImportResponse {
        key_id: engine.key_arn(&key),
        import_token: token,
        public_key: public,
        parameters_valid_to: epoch_seconds(expires),
    })
}

/// Opens an import token for `key`: the wrapping key, its spec and the wrapping algorithm.
fn open_token(
    engine: &Engine,
    key: &KeyRecord,
    token: &[u8],
) -> Result<(SecretBytes, KeySpec, WrappingAlgorithm), KmsError> {
    let (format, wrapped) = token.split_first().ok_or_else(invalid_token)?;
    if *format != TOKEN_FORMAT {
        return Err(invalid_token());
    }
    let payload = engine
        .root_unwrap(wrapped, &token_label(&key.key_id))
        .map_err(|_| invalid_token())?;
    let p = TokenPayload::decode(payload.expose_secret())
        .filter(|p| !p.wrapping_key.is_empty())
        .ok_or_else(invalid_token)?;
    if p.expires_ms < engine.now_ms() {
        return Err(KmsError::new(
            ErrorCode::ExpiredImportTokenException,
            "The import token has expired: call GetParametersForImport again.",
        ));
    }
    Ok((p.wrapping_key, p.spec, p.algorithm))
}

pub(super) fn import_key_material(
    engine: &Engine,
    caller: &Principal,
    req: ImportKeyMaterialRequest,
    rec: &mut CallRecord,
) -> Result<KeyMaterialResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let token = blob(
        &required(req.import_token, "importToken")?,
        "importToken",
        1,
        6144,
    )?;
    let encrypted = blob(
        &required(req.encrypted_key_material, "encryptedKeyMaterial")?,
        "encryptedKeyMaterial",
        1,
        6144,
    )?;
    let expires = match (req.expiration_model.as_deref(), req.valid_to) {
        (None | Some("KEY_MATERIAL_EXPIRES"), Some(v)) => Some((v * 1000.0) as i64),
        (None | Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), None) => None,
        (Some("KEY_MATERIAL_EXPIRES"), None) => {
            return Err(KmsError::validation(
                "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES.",
            ))
        }
        (Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), Some(_)) => {
            return Err(KmsError::validation(
                "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE.",
            ))
        }
        (Some(other), _) => {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'expirationModel' failed to \
                 satisfy constraint: Member must satisfy enum value set: [KEY_MATERIAL_EXPIRES, \
                 KEY_MATERIAL_DOES_NOT_EXPIRE]"
            )))
        }
    };
    let now = engine.now_ms();
    if let Some(t) = expires {
        if t <= now || t > now + 365 * DAY_MS {
            return Err(KmsError::validation(
                "ValidTo must be in the future and at most 365 days from now.",
            ));
        }
    }
    let mut conds = Conditions::default().and(
        "kms:ExpirationModel",
        vec![if expires.is_some() {
            "KEY_MATERIAL_EXPIRES"
        } else {
            "KEY_MATERIAL_DOES_NOT_EXPIRE"
        }
        .into()],
    );
    if let Some(t) = expires {
        conds = conds.and("kms:ValidTo", vec![(t / 1000).to_string()]);
    }
    let key = engine.key_for(caller, rec, &key_id, false, "kms:ImportKeyMaterial", &conds)?;
    check_external(engine, &key)?;
    let (wrapping, wrapping_spec, alg) = open_token(engine, &key, &token)?;
    let material = import::unwrap(&wrapping, wrapping_spec, alg, &encrypted)
        .map_err(|_| KmsError::invalid_ciphertext())?;
    asym::check_material(key.key_spec, &material)
        .map_err(|e| KmsError::new(ErrorCode::IncorrectKeyMaterialException, e.to_string()))?;
    let digest = material_digest(key.key_spec, &material)?;
    if key.material_digest.as_ref().is_some_and(|d| *d != digest) {
        return Err(KmsError::new(
            ErrorCode::IncorrectKeyMaterialException,
            "The key material is not the material previously imported into this KMS key.",
        ));
    }

    let _guard = engine.lock_writes();
    let mut updated = engine
        .store()
        .get_key(&key.key_id)?
        .ok_or_else(|| KmsError::not_found(format!("Key '{key_id}' does not exist")))?;
    if updated.state == KeyState::PendingImport {
        updated.state = KeyState::Enabled;
    }
    updated.current_version = 1;
    updated.expiration_model = Some(
        if expires.is_some() {
            "KEY_MATERIAL_EXPIRES"
        } else {
            "KEY_MATERIAL_DOES_NOT_EXPIRE"
        }
        .into(),
    );
    updated.valid_to = expires;
    updated.material_digest = Some(digest.clone());
    let version = KeyVersionRecord {
        key_id: key.key_id,
        version: 1,
        wrapped_material: engine.wrap_material(&key.key_id, 1, &material)?,
        created_at: now,
        rotation_type: None,
    };
    engine.store().replace_material(&updated, Some(&version))?;
    engine.keyring().forget_material(&key.key_id);
    Ok(KeyMaterialResponse {
        key_id: engine.key_arn(&key),
        key_material_id: Some(digest),
    })
}

pub(super) fn delete_imported_key_material(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<KeyMaterialResponse, KmsError> {
    let key = engine.requested_key(
        caller,
        rec,
        req.key_id,
        false,
        "kms:DeleteImportedKeyMaterial",
    )?;
    check_external(engine, &key)?;
    let digest = engine.remove_imported_material(&key.key_id)?;
    Ok(KeyMaterialResponse {
        key_id: engine.key_arn(&key),
        key_material_id: digest,
    })
}

impl Engine {
    /// Deletes a key's imported material: the key goes back to PendingImport (unless it is
    /// pending deletion) and keeps the digest that a re-import must match.
    pub(crate) fn remove_imported_material(&self, id: &KeyId) -> Result<Option<String>, KmsError> {
        let _guard = self.lock_writes();
        let mut key = self
            .store()
            .get_key(id)?
            .ok_or_else(|| KmsError::not_found(format!("Key '{id}' does not exist")))?;
        if key.state != KeyState::PendingDeletion {
            key.state = KeyState::PendingImport;
        }
        key.current_version = 0;
        key.expiration_model = None;
        key.valid_to = None;
        self.store().replace_material(&key, None)?;
        self.keyring().forget_material(id);
        Ok(key.material_digest)
    }

    /// Deletes imported material whose ValidTo has passed. Returns how many keys expired.
    pub fn run_due_expirations(&self) -> Result<usize, KmsError> {
        let due = self.store().keys_due_for_expiry(self.now_ms())?;
        for id in &due {
            self.remove_imported_material(id)?;
            tracing::info!(key_id = %id, "imported key material expired and was deleted");
        }
        Ok(due.len())
    }
}
