//! Rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand,
//! ListKeyRotations. Rotation adds a version of the key's material; new ciphertext uses the
//! newest version and every older version stays available for decryption.

use keyhold_core::key::{KeySpec, Origin};
use keyhold_store::KeyRecord;

use super::empty;
use super::keys::key_material_id;
use crate::api::{
    epoch_seconds, EmptyResponse, EnableKeyRotationRequest, GetKeyRotationStatusResponse,
    KeyIdRequest, KeyIdResponse, ListKeyRotationsRequest, ListKeyRotationsResponse, RotationEntry,
};
use crate::authz::Conditions;
use crate::clock::DAY_MS;
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{int_range, required};
use crate::{CallRecord, Engine};

/// Default automatic rotation period.
pub(crate) const DEFAULT_PERIOD_DAYS: i64 = 365;
/// Most on-demand rotations one key may have.
pub(crate) const MAX_ON_DEMAND: usize = 25;

/// Refuses keys that cannot rotate: only symmetric keys with AWS_KMS material do.
pub(crate) fn check_rotatable(key: &KeyRecord, arn: &str) -> Result<(), KmsError> {
    if key.key_spec != KeySpec::SymmetricDefault || key.origin != Origin::AwsKms {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            format!(
                "{arn} cannot rotate: automatic and on-demand rotation need a symmetric key \
                 with AWS_KMS key material (this one is {} from {})",
                key.key_spec, key.origin
            ),
        ));
    }
    Ok(())
}

/// True for keys that rotate on demand to material the caller imports: symmetric keys with
/// EXTERNAL material.
pub(crate) fn rotates_imported(key: &KeyRecord) -> bool {
    key.key_spec == KeySpec::SymmetricDefault
        && key.origin == Origin::External
        && key.custom_key_store_id.is_none()
}

/// Refuses keys that cannot rotate on demand: symmetric keys with AWS_KMS or imported
/// material do.
fn check_rotatable_on_demand(key: &KeyRecord, arn: &str) -> Result<(), KmsError> {
    if rotates_imported(key) {
        Ok(())
    } else {
        check_rotatable(key, arn)
    }
}

/// Refuses keys whose state does not allow changing rotation.
fn check_rotation_state(key: &KeyRecord, arn: &str) -> Result<(), KmsError> {
    match key.state.crypto_refusal() {
        None => Ok(()),
        Some(r) => Err(KmsError::from_state(r, arn, key.state.as_str())),
    }
}

pub(super) fn enable_key_rotation(
    engine: &Engine,
    caller: &Principal,
    req: EnableKeyRotationRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let days = req.rotation_period_days.unwrap_or(DEFAULT_PERIOD_DAYS);
    int_range(days, "rotationPeriodInDays", 90, 2560)?;
    let last = engine.last_material_time(caller, &key_id)?;
    let conds = Conditions::default().and("kms:RotationPeriodInDays", vec![days.to_string()]);
    let key = engine.update_key(
        caller,
        &key_id,
        rec,
        "kms:EnableKeyRotation",
        &conds,
        |k, arn| {
            check_rotatable(k, arn)?;
            super::refuse_replica(engine, k, "automatic rotation")?;
            check_rotation_state(k, arn)?;
            k.rotation_period_days = Some(days as u32);
            k.next_rotation_at = Some(last.unwrap_or(k.created_at) + days * DAY_MS);
            Ok(())
        },
    )?;
    engine.sync_replicas(&key);
    empty()
}

pub(super) fn disable_key_rotation(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let conds = Conditions::default();
    let key = engine.update_key(
        caller,
        &key_id,
        rec,
        "kms:DisableKeyRotation",
        &conds,
        |k, arn| {
            check_rotatable(k, arn)?;
            super::refuse_replica(engine, k, "automatic rotation")?;
            check_rotation_state(k, arn)?;
            k.rotation_period_days = None;
            k.next_rotation_at = None;
            Ok(())
        },
    )?;
    engine.sync_replicas(&key);
    empty()
}

pub(super) fn get_key_rotation_status(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<GetKeyRotationStatusResponse, KmsError> {
    let key = engine.requested_key(caller, rec, req.key_id, false, "kms:GetKeyRotationStatus")?;
    let arn = engine.key_arn(&key);
    // Keys that cannot rotate (asymmetric, HMAC, imported, custom key store) answer "not
    // enabled", as AWS does: the Terraform provider asks on every refresh.
    if check_rotatable(&key, &arn).is_err() {
        return Ok(GetKeyRotationStatusResponse {
            key_rotation_enabled: false,
            key_id: arn,
            rotation_period_in_days: None,
            next_rotation_date: None,
        });
    }
    let schedule = key.rotation_period_days.zip(key.next_rotation_at);
    Ok(GetKeyRotationStatusResponse {
        key_rotation_enabled: key.rotation_period_days.is_some(),
        key_id: arn,
        rotation_period_in_days: schedule.map(|(days, _)| days),
        next_rotation_date: schedule.map(|(_, next)| epoch_seconds(next)),
    })
}

pub(super) fn rotate_key_on_demand(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<KeyIdResponse, KmsError> {
    let key = engine.requested_key(caller, rec, req.key_id, false, "kms:RotateKeyOnDemand")?;
    let arn = engine.key_arn(&key);
    check_rotatable_on_demand(&key, &arn)?;
    super::refuse_replica(engine, &key, "on-demand rotation")?;
    if rotates_imported(&key) && key.multi_region.is_some() {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            format!(
                "{arn} is a multi-Region key with imported key material: its keys share one \
                 key material, and it does not rotate on demand"
            ),
        ));
    }
    check_rotation_state(&key, &arn)?;
    let on_demand = engine
        .store()
        .list_key_versions(&key.key_id)?
        .iter()
        .filter(|v| v.rotation_type.as_deref() == Some("ON_DEMAND"))
        .count();
    if on_demand >= MAX_ON_DEMAND {
        return Err(KmsError::new(
            ErrorCode::LimitExceededException,
            format!("{arn} has had the most on-demand rotations allowed ({MAX_ON_DEMAND})"),
        ));
    }
    if rotates_imported(&key) {
        engine.rotate_to_imported(&key.key_id)?;
    } else {
        engine.rotate(&key.key_id, "ON_DEMAND")?;
    }
    Ok(KeyIdResponse { key_id: arn })
}

pub(super) fn list_key_rotations(
    engine: &Engine,
    caller: &Principal,
    req: ListKeyRotationsRequest,
    rec: &mut CallRecord,
) -> Result<ListKeyRotationsResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let limit = req.limit.unwrap_or(100);
    int_range(limit, "limit", 1, 1000)?;
    let all = match req.include_key_material.as_deref() {
        None | Some("ROTATIONS_ONLY") => false,
        Some("ALL_KEY_MATERIAL") => true,
        Some(other) => {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'includeKeyMaterial' failed to \
                 satisfy constraint: Member must satisfy enum value set: [ALL_KEY_MATERIAL, \
                 ROTATIONS_ONLY]"
            )))
        }
    };
    let after: u32 = match &req.marker {
        Some(m) => m
            .parse()
            .map_err(|_| KmsError::new(ErrorCode::InvalidMarkerException, "Invalid marker"))?,
        None => 0,
    };
    let key = engine.key_for(
        caller,
        rec,
        &key_id,
        false,
        "kms:ListKeyRotations",
        &Conditions::default(),
    )?;
    check_rotatable_on_demand(&key, &engine.key_arn(&key))?;
    let imported = rotates_imported(&key);
    let versions = if imported {
        engine.imported_versions(&key)?
    } else {
        engine.store().list_key_versions(&key.key_id)?
    };
    let versions: Vec<_> = versions
        .into_iter()
        .filter(|v| v.version > after && (all || v.rotation_type.is_some()))
        .collect();
    let truncated = versions.len() > limit as usize;
    let page = &versions[..versions.len().min(limit as usize)];
    let entries: Vec<_> = page
        .iter()
        .map(|v| RotationEntry {
            key_id: key.key_id.to_string(),
            key_material_id: match &v.imported {
                Some(m) => m.material_id.clone(),
                None => key_material_id(&key.key_id, v.version),
            },
            key_material_description: v.imported.as_ref().and_then(|m| m.description.clone()),
            import_state: v.imported.as_ref().map(|m| {
                if m.present {
                    "IMPORTED"
                } else {
                    "PENDING_IMPORT"
                }
            }),
            key_material_state: if v.imported.as_ref().is_some_and(|m| m.pending_rotation) {
                "PENDING_ROTATION"
            } else if v.version == key.current_version {
                "CURRENT"
            } else {
                "NON_CURRENT"
            },
            expiration_model: v.imported.as_ref().map(|m| m.expiration_model.clone()),
            valid_to: v
                .imported
                .as_ref()
                .and_then(|m| m.valid_to)
                .map(epoch_seconds),
            rotation_date: v
                .rotation_type
                .as_ref()
                .map(|_| epoch_seconds(v.created_at)),
            rotation_type: v.rotation_type.clone(),
        })
        .collect();
    Ok(ListKeyRotationsResponse {
        rotations: entries,
        truncated,
        next_marker: page
            .last()
            .filter(|_| truncated)
            .map(|v| v.version.to_string()),
    })
}

impl Engine {
    /// When the key's newest material was made (None if the key does not resolve).
    fn last_material_time(&self, caller: &Principal, name: &str) -> Result<Option<i64>, KmsError> {
        let Ok(key) = self.resolve_key(caller, name, false) else {
            return Ok(None);
        };
        Ok(self
            .store()
            .get_key_version(&key.key_id, key.current_version)?
            .map(|v| v.created_at))
    }

    /// Adds a new version of a key's material and makes it current. Returns false when an
    /// automatic rotation turned out to be done already (by another node).
    pub(crate) fn rotate(
        &self,
        id: &keyhold_core::ids::KeyId,
        rotation_type: &str,
    ) -> Result<bool, KmsError> {
        let _guard = self.lock_writes();
        let mut key = self
            .store()
            .get_key(id)?
            .ok_or_else(|| KmsError::not_found(format!("Key '{id}' does not exist")))?;
        let now = self.now_ms();
        // Another node sharing the store may have performed this automatic rotation already.
        if rotation_type == "AUTOMATIC" && key.next_rotation_at.is_none_or(|t| t > now) {
            return Ok(false);
        }
        // A multi-Region replica rotates with its primary, never by itself.
        if key
            .multi_region
            .as_ref()
            .is_some_and(|m| m.primary != self.region())
        {
            return Ok(false);
        }
        let version = key.current_version + 1;
        let material = keyhold_core::secret::SecretBytes::random(32).map_err(KmsError::internal)?;
        let record = keyhold_store::KeyVersionRecord {
            key_id: *id,
            version,
            wrapped_material: self.wrap_material(id, version, &material)?,
            created_at: now,
            rotation_type: Some(rotation_type.to_string()),
            imported: None,
        };
        key.current_version = version;
        if rotation_type == "AUTOMATIC" {
            if let Some(days) = key.rotation_period_days {
                key.next_rotation_at = Some(now + i64::from(days) * DAY_MS);
            }
        }
        match self.store().add_key_version(&key, &record) {
            Ok(()) => {}
            // Another node added this version at the same moment: one rotation happened.
            Err(keyhold_store::StoreError::AlreadyExists) if rotation_type == "AUTOMATIC" => {
                self.keyring().invalidate_key(id);
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        self.keyring().invalidate_key(id);
        tracing::info!(key_id = %id, version, rotation_type, "key rotated");
        drop(_guard);
        self.sync_replicas(&key);
        Ok(true)
    }

    /// Performs every automatic rotation that is due. Returns how many keys rotated.
    pub fn run_due_rotations(&self) -> Result<usize, KmsError> {
        let due = self.store().keys_due_for_rotation(self.now_ms())?;
        let mut rotated = 0;
        for id in &due {
            if self.rotate(id, "AUTOMATIC")? {
                rotated += 1;
            }
        }
        Ok(rotated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::ids::KeyId;
    use keyhold_core::key::{KeyManager, KeyState, KeyUsage};

    fn key(spec: KeySpec, origin: Origin) -> KeyRecord {
        KeyRecord {
            key_id: KeyId::generate(),
            account: "111122223333".into(),
            description: String::new(),
            key_spec: spec,
            key_usage: KeyUsage::EncryptDecrypt,
            origin,
            state: KeyState::Enabled,
            created_at: 0,
            deletion_date: None,
            pending_window_days: None,
            current_version: 1,
            policy: String::new(),
            key_manager: KeyManager::Customer,
            rotation_period_days: None,
            next_rotation_at: None,
            expiration_model: None,
            valid_to: None,
            material_digest: None,
            custom_key_store_id: None,
            multi_region: None,
        }
    }

    #[test]
    fn only_symmetric_aws_kms_keys_rotate() {
        assert!(check_rotatable(&key(KeySpec::SymmetricDefault, Origin::AwsKms), "k").is_ok());
        for (spec, origin) in [
            (KeySpec::Rsa2048, Origin::AwsKms),
            (KeySpec::EccNistP256, Origin::AwsKms),
            (KeySpec::Hmac256, Origin::AwsKms),
            (KeySpec::SymmetricDefault, Origin::External),
        ] {
            let e = check_rotatable(&key(spec, origin), "k").unwrap_err();
            assert_eq!(
                e.code,
                ErrorCode::UnsupportedOperationException,
                "{spec} {origin}"
            );
        }
    }
}
