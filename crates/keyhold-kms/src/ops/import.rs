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
use keyhold_store::{ImportedMaterial, KeyRecord, KeyVersionRecord};

use crate::api::{
    epoch_seconds, DeleteImportedKeyMaterialRequest, GetParametersForImportRequest,
    GetParametersForImportResponse, ImportKeyMaterialRequest, KeyMaterialResponse,
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

/// NEW_KEY_MATERIAL or EXISTING_KEY_MATERIAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImportType {
    New,
    Existing,
}

const EXPIRES: &str = "KEY_MATERIAL_EXPIRES";
const DOES_NOT_EXPIRE: &str = "KEY_MATERIAL_DOES_NOT_EXPIRE";

/// Checks a `KeyMaterialDescription`: at most 256 characters of `[a-zA-Z0-9:/_\s.-]`.
fn check_description(d: &str) -> Result<(), KmsError> {
    let ok = d.chars().count() <= 256
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || ":/_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(KmsError::validation(format!(
            "1 validation error detected: Value '{d}' at 'keyMaterialDescription' failed to \
             satisfy constraint: Member must have length less than or equal to 256 and match \
             pattern ^[a-zA-Z0-9:/_\\s.-]+$"
        )))
    }
}

/// Checks a `KeyMaterialId`: 64 lowercase hex digits.
pub(super) fn check_material_id(id: &str) -> Result<(), KmsError> {
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(KmsError::validation(format!(
            "1 validation error detected: Value '{id}' at 'keyMaterialId' failed to satisfy \
             constraint: Member must have length 64 and match pattern ^[a-f0-9]+$"
        )))
    }
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
        (None | Some(EXPIRES), Some(v)) => Some((v * 1000.0) as i64),
        (None | Some(DOES_NOT_EXPIRE), None) => None,
        (Some(EXPIRES), None) => {
            return Err(KmsError::validation(
                "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES.",
            ))
        }
        (Some(DOES_NOT_EXPIRE), Some(_)) => {
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
    let import_type = match req.import_type.as_deref() {
        None => None,
        Some("NEW_KEY_MATERIAL") => Some(ImportType::New),
        Some("EXISTING_KEY_MATERIAL") => Some(ImportType::Existing),
        Some(other) => {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'importType' failed to \
                 satisfy constraint: Member must satisfy enum value set: [NEW_KEY_MATERIAL, \
                 EXISTING_KEY_MATERIAL]"
            )))
        }
    };
    if let Some(d) = &req.key_material_description {
        check_description(d)?;
    }
    if let Some(id) = &req.key_material_id {
        check_material_id(id)?;
        if import_type == Some(ImportType::New) {
            return Err(KmsError::validation(
                "You cannot specify a KeyMaterialId with ImportType NEW_KEY_MATERIAL.",
            ));
        }
    }
    let now = engine.now_ms();
    if let Some(t) = expires {
        if t <= now || t > now + 365 * DAY_MS {
            return Err(KmsError::validation(
                "ValidTo must be in the future and at most 365 days from now.",
            ));
        }
    }
    let model = if expires.is_some() {
        EXPIRES
    } else {
        DOES_NOT_EXPIRE
    };
    let mut conds = Conditions::default().and("kms:ExpirationModel", vec![model.into()]);
    if let Some(t) = expires {
        conds = conds.and("kms:ValidTo", vec![(t / 1000).to_string()]);
    }
    let key = engine.key_for(caller, rec, &key_id, false, "kms:ImportKeyMaterial", &conds)?;
    check_external(engine, &key)?;
    let arn = engine.key_arn(&key);
    let symmetric = key.key_spec == KeySpec::SymmetricDefault;
    if !symmetric && (req.key_material_description.is_some() || req.key_material_id.is_some()) {
        return Err(KmsError::validation(
            "KeyMaterialDescription and KeyMaterialId apply only to symmetric encryption keys.",
        ));
    }
    let (wrapping, wrapping_spec, alg) = open_token(engine, &key, &token)?;
    let material = import::unwrap(&wrapping, wrapping_spec, alg, &encrypted)
        .map_err(|_| KmsError::invalid_ciphertext())?;
    asym::check_material(key.key_spec, &material)
        .map_err(|e| KmsError::new(ErrorCode::IncorrectKeyMaterialException, e.to_string()))?;
    let digest = material_digest(key.key_spec, &material)?;
    let incorrect = |msg: String| KmsError::new(ErrorCode::IncorrectKeyMaterialException, msg);
    // The keys of a multi-Region key share one material: what any of them has had.
    if let Some(theirs) = super::multiregion::set_material(engine, &key)? {
        if theirs != digest {
            return Err(incorrect(format!(
                "The key material is not that of the other keys of the multi-Region key {arn} \
                 (key material id {theirs})."
            )));
        }
    }

    let _guard = engine.lock_writes();
    let mut key = engine.stored_key(&key.key_id)?;
    let mut versions = engine.imported_versions(&key)?;
    let import_type = import_type.unwrap_or(if versions.is_empty() {
        ImportType::New
    } else {
        ImportType::Existing
    });
    let info = |pending_rotation: bool, description: Option<String>| ImportedMaterial {
        material_id: digest.clone(),
        description,
        expiration_model: model.into(),
        valid_to: expires,
        present: true,
        pending_rotation,
    };
    match import_type {
        ImportType::New => {
            if let Some(v) = versions
                .iter()
                .find(|v| material_of(v).material_id == digest)
            {
                return Err(incorrect(format!(
                    "This key material is already associated with {arn} (key material id {}): \
                     import it with ImportType EXISTING_KEY_MATERIAL.",
                    material_of(v).material_id
                )));
            }
            if !versions.is_empty() {
                if !symmetric {
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperationException,
                        format!(
                            "{arn} is a {} key: only symmetric encryption keys take new key \
                             material after the first import",
                            key.key_spec
                        ),
                    ));
                }
                if let Some(p) = versions.iter().find(|v| material_of(v).pending_rotation) {
                    return Err(KmsError::new(
                        ErrorCode::KMSInvalidStateException,
                        format!(
                            "{arn} already has key material pending rotation ({}): rotate to \
                             it with RotateKeyOnDemand, or delete it before importing other \
                             new key material",
                            material_of(p).material_id
                        ),
                    ));
                }
            }
            let first = versions.is_empty();
            let version = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
            versions.push(KeyVersionRecord {
                key_id: key.key_id,
                version,
                wrapped_material: engine.wrap_material(&key.key_id, version, &material)?,
                created_at: now,
                rotation_type: None,
                imported: Some(info(!first, req.key_material_description.clone())),
            });
            if first {
                key.current_version = version;
            }
        }
        ImportType::Existing => {
            if versions.is_empty() {
                return Err(incorrect(format!(
                    "No key material was imported into {arn} before: import it with ImportType \
                     NEW_KEY_MATERIAL."
                )));
            }
            if req.key_material_id.as_ref().is_some_and(|id| *id != digest) {
                return Err(incorrect(format!(
                    "The key material does not have the key material id {}.",
                    req.key_material_id.as_deref().unwrap_or_default()
                )));
            }
            let Some(v) = versions
                .iter_mut()
                .find(|v| material_of(v).material_id == digest)
            else {
                return Err(incorrect(
                    "The key material is not the material previously imported into this KMS key."
                        .into(),
                ));
            };
            let old = material_of(v).clone();
            v.wrapped_material = engine.wrap_material(&key.key_id, v.version, &material)?;
            v.imported = Some(info(
                old.pending_rotation,
                req.key_material_description.clone().or(old.description),
            ));
        }
    }
    engine.save_materials(&mut key, versions)?;
    Ok(KeyMaterialResponse {
        key_id: arn,
        key_material_id: Some(digest),
    })
}

/// The imported-material description of a version that [`Engine::imported_versions`] filled.
fn material_of(v: &KeyVersionRecord) -> &ImportedMaterial {
    static NONE: std::sync::OnceLock<ImportedMaterial> = std::sync::OnceLock::new();
    v.imported.as_ref().unwrap_or_else(|| {
        NONE.get_or_init(|| ImportedMaterial {
            material_id: String::new(),
            description: None,
            expiration_model: DOES_NOT_EXPIRE.into(),
            valid_to: None,
            present: false,
            pending_rotation: false,
        })
    })
}

pub(super) fn delete_imported_key_material(
    engine: &Engine,
    caller: &Principal,
    req: DeleteImportedKeyMaterialRequest,
    rec: &mut CallRecord,
) -> Result<KeyMaterialResponse, KmsError> {
    if let Some(id) = &req.key_material_id {
        check_material_id(id)?;
    }
    let key = engine.requested_key(
        caller,
        rec,
        req.key_id,
        false,
        "kms:DeleteImportedKeyMaterial",
    )?;
    check_external(engine, &key)?;
    let deleted = engine.remove_imported_material(&key.key_id, req.key_material_id.as_deref())?;
    Ok(KeyMaterialResponse {
        key_id: engine.key_arn(&key),
        key_material_id: deleted,
    })
}

impl Engine {
    /// A key as stored now (under the write lock: to change it).
    fn stored_key(&self, id: &KeyId) -> Result<KeyRecord, KmsError> {
        self.store()
            .get_key(id)?
            .ok_or_else(|| KmsError::not_found(format!("Key '{id}' does not exist")))
    }

    /// A key's versions, each imported material described (material imported before keyhold
    /// kept this per version is described from the key's fields).
    pub(crate) fn imported_versions(
        &self,
        key: &KeyRecord,
    ) -> Result<Vec<KeyVersionRecord>, KmsError> {
        let mut versions = self.store().list_key_versions(&key.key_id)?;
        let legacy = |present: bool| ImportedMaterial {
            material_id: key.material_digest.clone().unwrap_or_default(),
            description: None,
            expiration_model: key
                .expiration_model
                .clone()
                .unwrap_or_else(|| DOES_NOT_EXPIRE.into()),
            valid_to: key.valid_to,
            present,
            pending_rotation: false,
        };
        for v in &mut versions {
            if v.imported.is_none() {
                v.imported = Some(legacy(v.has_material()));
            }
        }
        // Material deleted before keyhold kept versions of imported material: only its digest
        // is left, on the key.
        if versions.is_empty() && key.material_digest.is_some() {
            versions.push(KeyVersionRecord {
                key_id: key.key_id,
                version: 1,
                wrapped_material: Vec::new(),
                created_at: key.created_at,
                rotation_type: None,
                imported: Some(legacy(false)),
            });
        }
        Ok(versions)
    }

    /// Writes a key's versions after a change to its imported material, with the key's
    /// fields that sum them up: its state (PendingImport while any material that belongs to
    /// the key is missing), the current material's id, and the earliest expiry.
    pub(crate) fn save_materials(
        &self,
        key: &mut KeyRecord,
        versions: Vec<KeyVersionRecord>,
    ) -> Result<(), KmsError> {
        let associated: Vec<&ImportedMaterial> = versions
            .iter()
            .map(material_of)
            .filter(|m| !m.pending_rotation)
            .collect();
        let complete = !associated.is_empty() && associated.iter().all(|m| m.present);
        if key.state != KeyState::PendingDeletion {
            if !complete {
                key.state = KeyState::PendingImport;
            } else if key.state == KeyState::PendingImport {
                key.state = KeyState::Enabled;
            }
        }
        if let Some(current) = versions.iter().find(|v| v.version == key.current_version) {
            key.material_digest = Some(material_of(current).material_id.clone());
        }
        let present: Vec<&&ImportedMaterial> = associated.iter().filter(|m| m.present).collect();
        key.valid_to = present.iter().filter_map(|m| m.valid_to).min();
        key.expiration_model = match (present.is_empty(), key.valid_to) {
            (true, _) => None,
            (false, Some(_)) => Some(EXPIRES.into()),
            (false, None) => Some(DOES_NOT_EXPIRE.into()),
        };
        self.store().replace_material(key, &versions)?;
        self.keyring().forget_material(&key.key_id);
        Ok(())
    }

    /// Deletes one imported material (the current one when `material_id` is `None`): material
    /// pending rotation is dropped; any other is emptied, and the key waits for it
    /// (PendingImport, unless it is pending deletion). Returns the deleted material's id.
    pub(crate) fn remove_imported_material(
        &self,
        id: &KeyId,
        material_id: Option<&str>,
    ) -> Result<Option<String>, KmsError> {
        let _guard = self.lock_writes();
        let mut key = self.stored_key(id)?;
        let mut versions = self.imported_versions(&key)?;
        let found = match material_id {
            Some(m) => Some(
                versions
                    .iter()
                    .position(|v| material_of(v).material_id == m)
                    .ok_or_else(|| {
                        KmsError::not_found(format!(
                            "Key material {m} is not associated with {}",
                            self.key_arn(&key)
                        ))
                    })?,
            ),
            None => versions
                .iter()
                .position(|v| v.version == key.current_version),
        };
        let Some(i) = found else {
            // Nothing was ever imported: the key already waits for material.
            self.save_materials(&mut key, versions)?;
            return Ok(None);
        };
        let deleted = material_of(&versions[i]).material_id.clone();
        if material_of(&versions[i]).pending_rotation {
            versions.remove(i);
        } else {
            forget(&mut versions[i]);
        }
        self.save_materials(&mut key, versions)?;
        Ok(Some(deleted))
    }

    /// Deletes a key's imported material whose ValidTo has passed.
    pub(crate) fn expire_materials(&self, id: &KeyId) -> Result<(), KmsError> {
        let _guard = self.lock_writes();
        let Some(mut key) = self.store().get_key(id)? else {
            return Ok(());
        };
        let now = self.now_ms();
        let expired = |v: &KeyVersionRecord| {
            let m = material_of(v);
            m.present && m.valid_to.is_some_and(|t| t <= now)
        };
        let mut versions = self.imported_versions(&key)?;
        versions.retain(|v| !(expired(v) && material_of(v).pending_rotation));
        for v in versions.iter_mut().filter(|v| expired(v)) {
            forget(v);
        }
        self.save_materials(&mut key, versions)
    }

    /// Makes imported material that waits for rotation current (RotateKeyOnDemand on a key
    /// with imported material).
    pub(crate) fn rotate_to_imported(&self, id: &KeyId) -> Result<(), KmsError> {
        let _guard = self.lock_writes();
        let mut key = self.stored_key(id)?;
        let mut versions = self.imported_versions(&key)?;
        let Some(v) = versions
            .iter_mut()
            .find(|v| material_of(v).pending_rotation && material_of(v).present)
        else {
            return Err(KmsError::new(
                ErrorCode::KMSInvalidStateException,
                format!(
                    "{} has no imported key material in PENDING_ROTATION state: import new key \
                     material (ImportType NEW_KEY_MATERIAL) first",
                    self.key_arn(&key)
                ),
            ));
        };
        if let Some(m) = v.imported.as_mut() {
            m.pending_rotation = false;
        }
        v.rotation_type = Some("ON_DEMAND".into());
        v.created_at = self.now_ms();
        key.current_version = v.version;
        self.save_materials(&mut key, versions)?;
        tracing::info!(key_id = %id, version = key.current_version, "key rotated to imported material");
        Ok(())
    }

    /// Deletes imported material whose ValidTo has passed. Returns how many keys had some.
    pub fn run_due_expirations(&self) -> Result<usize, KmsError> {
        let due = self.store().keys_due_for_expiry(self.now_ms())?;
        for id in &due {
            self.expire_materials(id)?;
            tracing::info!(key_id = %id, "imported key material expired and was deleted");
        }
        Ok(due.len())
    }
}

/// Empties a version's imported material (deleted or expired): PENDING_IMPORT.
fn forget(v: &mut KeyVersionRecord) {
    v.wrapped_material.clear();
    if let Some(m) = v.imported.as_mut() {
        m.present = false;
    }
}
