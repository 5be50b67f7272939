//! Key lifecycle: CreateKey, DescribeKey, ListKeys, UpdateKeyDescription, EnableKey,
//! DisableKey, ScheduleKeyDeletion, CancelKeyDeletion.

use keyhold_core::ids::{key_arn, KeyId};
use keyhold_core::key::{
    EncapsulationAlgorithm, EncryptionAlgorithm, KeyManager, KeySpec, KeyState, KeyUsage, Origin,
};
use keyhold_core::policy::{default_key_policy, Decision, PolicyDocument};
use keyhold_core::secret::SecretBytes;
use keyhold_store::{KeyRecord, KeyVersionRecord};

use super::{empty, tags::validate_tags};
use crate::api::{
    epoch_seconds, CreateKeyRequest, EmptyResponse, KeyIdRequest, KeyIdResponse, KeyListEntry,
    KeyMetadata, KeyMetadataResponse, ListKeysRequest, ListKeysResponse,
    ScheduleKeyDeletionRequest, ScheduleKeyDeletionResponse, UpdateKeyDescriptionRequest,
};
use crate::authz::Conditions;
use crate::clock::DAY_MS;
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{enum_value, grant_tokens, int_range, required, str_len};
use crate::{CallRecord, Engine};

/// The id of one version of key material, as AWS's 64-hex-digit `KeyMaterialId`.
pub(crate) fn key_material_id(id: &KeyId, version: u32) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("keyhold:key-material-id:{id}:{version}").as_bytes(),
    );
    hex::encode(d.as_ref())
}

/// DescribeKey's metadata for a key record.
pub(crate) fn metadata(engine: &Engine, rec: &KeyRecord) -> KeyMetadata {
    let encryption_algorithms = match (rec.key_spec, rec.key_usage) {
        (KeySpec::SymmetricDefault, _) => {
            Some(vec![EncryptionAlgorithm::SymmetricDefault.as_str()])
        }
        (s, KeyUsage::EncryptDecrypt) if s.is_rsa() => Some(vec![
            EncryptionAlgorithm::RsaesOaepSha1.as_str(),
            EncryptionAlgorithm::RsaesOaepSha256.as_str(),
        ]),
        _ => None,
    };
    let signing_algorithms = (rec.key_usage == KeyUsage::SignVerify).then(|| {
        rec.key_spec
            .signing_algorithms()
            .iter()
            .map(|a| a.as_str())
            .collect()
    });
    let mac_algorithms = rec.key_spec.mac_algorithm().map(|a| vec![a.as_str()]);
    let key_agreement_algorithms = (rec.key_usage == KeyUsage::KeyAgreement).then(|| vec!["ECDH"]);
    let encapsulation_algorithms = (rec.key_usage == KeyUsage::EncapsulateDecapsulate)
        .then(|| vec![EncapsulationAlgorithm::MlKem.as_str()]);
    let pending = rec.state == KeyState::PendingDeletion;
    // A key of a custom key store that is not connected is Unavailable, as AWS reports it.
    let store = rec.custom_key_store_id.as_ref().and_then(|id| {
        engine
            .store()
            .list_custom_key_stores(Some(&rec.account))
            .ok()?
            .into_iter()
            .find(|s| &s.id == id)
    });
    let key_state = match &store {
        Some(s) if rec.state == KeyState::Enabled && engine.key_store_state(s).0 != "CONNECTED" => {
            KeyState::Unavailable
        }
        _ => rec.state,
    };
    KeyMetadata {
        aws_account_id: rec.account.clone(),
        key_id: rec.key_id.to_string(),
        arn: engine.key_arn(rec),
        creation_date: epoch_seconds(rec.created_at),
        enabled: rec.state == KeyState::Enabled,
        description: rec.description.clone(),
        key_usage: rec.key_usage.as_str(),
        key_state: key_state.as_str(),
        deletion_date: rec.deletion_date.filter(|_| pending).map(epoch_seconds),
        origin: rec.origin.as_str(),
        key_manager: rec.key_manager.as_str(),
        customer_master_key_spec: rec.key_spec.as_str(),
        key_spec: rec.key_spec.as_str(),
        encryption_algorithms,
        signing_algorithms,
        mac_algorithms,
        key_agreement_algorithms,
        encapsulation_algorithms,
        custom_key_store_id: rec.custom_key_store_id.clone(),
        cloud_hsm_cluster_id: store.map(|s| s.cluster_id),
        multi_region: rec.multi_region.is_some(),
        multi_region_configuration: super::multiregion::configuration(engine, rec),
        expiration_model: rec.expiration_model.clone(),
        valid_to: rec.valid_to.map(epoch_seconds),
        pending_deletion_window_in_days: rec
            .pending_window_days
            .filter(|_| pending || rec.state == KeyState::PendingReplicaDeletion),
        current_key_material_id: match rec.origin {
            // Imported material: the id derived from the material (ImportKeyMaterial's).
            Origin::External => rec
                .material_digest
                .clone()
                .filter(|_| rec.key_spec == KeySpec::SymmetricDefault && rec.current_version > 0),
            _ => (rec.key_spec == KeySpec::SymmetricDefault && rec.current_version > 0)
                .then(|| key_material_id(&rec.key_id, rec.current_version)),
        },
    }
}

/// Largest key policy, in bytes.
pub(crate) const MAX_POLICY_BYTES: usize = 32 * 1024;

/// Validates a key policy from a request: length, size quota and the policy language.
pub(crate) fn check_policy(p: &str) -> Result<PolicyDocument, KmsError> {
    str_len(p, "policy", 1, 131_072)?;
    if p.len() > MAX_POLICY_BYTES {
        return Err(KmsError::new(
            ErrorCode::LimitExceededException,
            format!(
                "The key policy is {} bytes; the limit is {MAX_POLICY_BYTES}.",
                p.len()
            ),
        ));
    }
    PolicyDocument::parse(p)
        .map_err(|e| KmsError::new(ErrorCode::MalformedPolicyDocumentException, e.0))
}

/// AWS's policy lockout safety check: the new policy must let the caller change it again.
pub(crate) fn lockout_check(
    engine: &Engine,
    caller: &Principal,
    rec: &CallRecord,
    key: &KeyRecord,
) -> Result<(), KmsError> {
    let policy = PolicyDocument::parse(&key.policy)
        .map_err(|e| KmsError::new(ErrorCode::MalformedPolicyDocumentException, e.0))?;
    let arn = engine.key_arn(key);
    let ctx = engine.request_context(
        caller,
        rec,
        key,
        "kms:PutKeyPolicy",
        &arn,
        &Conditions::default(),
    );
    match policy.evaluate(&ctx) {
        Decision::Allow(_) => Ok(()),
        _ => Err(KmsError::new(
            ErrorCode::MalformedPolicyDocumentException,
            "The new key policy will not allow you to update the key policy in the future.",
        )),
    }
}

pub(super) fn unsupported(what: String) -> KmsError {
    KmsError::new(ErrorCode::UnsupportedOperationException, what)
}

pub(super) fn create_key(
    engine: &Engine,
    caller: &Principal,
    req: CreateKeyRequest,
    rec: &mut CallRecord,
) -> Result<KeyMetadataResponse, KmsError> {
    let description = req.description.unwrap_or_default();
    str_len(&description, "description", 0, 8192)?;
    if let Some(p) = &req.policy {
        str_len(p, "policy", 1, 131_072)?;
        if !matches!(
            serde_json::from_str::<serde_json::Value>(p),
            Ok(serde_json::Value::Object(_))
        ) {
            return Err(KmsError::new(
                ErrorCode::MalformedPolicyDocumentException,
                "The key policy is not a valid JSON document.",
            ));
        }
    }
    if req.key_spec.is_some() && req.customer_master_key_spec.is_some() {
        return Err(KmsError::validation(
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. \
             CustomerMasterKeySpec is deprecated.",
        ));
    }
    let spec = match req
        .key_spec
        .as_deref()
        .or(req.customer_master_key_spec.as_deref())
    {
        Some(s) => enum_value(s, "keySpec", KeySpec::parse, KeySpec::ALL, KeySpec::as_str)?,
        None => KeySpec::SymmetricDefault,
    };
    let usage = match req.key_usage.as_deref() {
        Some(s) => enum_value(
            s,
            "keyUsage",
            KeyUsage::parse,
            KeyUsage::ALL,
            KeyUsage::as_str,
        )?,
        None => KeyUsage::EncryptDecrypt,
    };
    let origin = match req.origin.as_deref() {
        Some(s) => enum_value(s, "origin", Origin::parse, Origin::ALL, Origin::as_str)?,
        None => Origin::AwsKms,
    };
    if spec == KeySpec::Sm2 {
        return Err(unsupported(
            "KeySpec SM2 is only available in the China Regions".into(),
        ));
    }
    if !spec.usages().contains(&usage) {
        return Err(KmsError::validation(format!(
            "KeyUsage {usage} is not compatible with KeySpec {spec}"
        )));
    }
    if !matches!(
        origin,
        Origin::AwsKms | Origin::External | Origin::AwsCloudhsm
    ) {
        return Err(unsupported(format!(
            "Origin {origin} is not supported by this keyhold server"
        )));
    }
    let imported = origin == Origin::External;
    let key_store = match (&req.custom_key_store_id, origin) {
        (Some(id), Origin::AwsCloudhsm) => {
            str_len(id, "customKeyStoreId", 1, 64)?;
            Some(super::keystores::find_store(engine, caller, id)?)
        }
        (None, Origin::AwsCloudhsm) => {
            return Err(KmsError::validation(
                "Origin AWS_CLOUDHSM requires a CustomKeyStoreId.",
            ))
        }
        (Some(_), _) => {
            return Err(KmsError::validation(
                "CustomKeyStoreId requires Origin AWS_CLOUDHSM.",
            ))
        }
        (None, _) => None,
    };
    let token = match &key_store {
        Some(ks) => {
            if spec != KeySpec::SymmetricDefault {
                return Err(unsupported(format!(
                    "A custom key store holds symmetric encryption keys only, not {spec}"
                )));
            }
            Some(engine.connected_token(ks, "CreateKey")?)
        }
        None => None,
    };
    if req.xks_key_id.is_some() {
        return Err(unsupported(
            "XksKeyId requires an external key store, which this server does not have".into(),
        ));
    }
    let multi_region = req.multi_region == Some(true);
    if multi_region && key_store.is_some() {
        return Err(unsupported(
            "A multi-Region key cannot be created in a custom key store".into(),
        ));
    }
    let tags = validate_tags(req.tags.unwrap_or_default())?;

    let id = if multi_region {
        KeyId::generate_multi_region()
    } else {
        KeyId::generate()
    };
    let now = engine.now_ms();
    let policy = match req.policy {
        Some(p) => {
            check_policy(&p)?;
            p
        }
        None => default_key_policy(&caller.account),
    };
    let material = if imported || key_store.is_some() {
        None
    } else if spec == KeySpec::SymmetricDefault {
        Some(SecretBytes::random(32).map_err(KmsError::internal)?)
    } else {
        Some(keyhold_core::asym::generate(spec).map_err(super::asym_error)?)
    };
    let key = KeyRecord {
        key_id: id,
        account: caller.account.clone(),
        description,
        key_spec: spec,
        key_usage: usage,
        origin,
        state: if imported {
            KeyState::PendingImport
        } else {
            KeyState::Enabled
        },
        created_at: now,
        deletion_date: None,
        pending_window_days: None,
        current_version: if imported { 0 } else { 1 },
        policy,
        key_manager: KeyManager::Customer,
        rotation_period_days: None,
        next_rotation_at: None,
        expiration_model: None,
        valid_to: None,
        material_digest: None,
        custom_key_store_id: key_store.as_ref().map(|ks| ks.id.clone()),
        multi_region: multi_region.then(|| keyhold_store::MultiRegion {
            primary: engine.region().to_string(),
            replicas: Vec::new(),
        }),
    };
    if req.bypass_policy_lockout_safety_check != Some(true) {
        lockout_check(engine, caller, rec, &key)?;
    }
    if let Some(token) = &token {
        // The key is made inside the token and never leaves it; the store row holds no
        // material for it.
        token
            .generate_aes_key(&crate::keystores::hsm_label(&id))
            .map_err(KmsError::internal)?;
    }
    let version = match &material {
        Some(m) => Some(KeyVersionRecord {
            key_id: id,
            version: 1,
            wrapped_material: engine.wrap_material(&id, 1, m)?,
            created_at: now,
            rotation_type: None,
            imported: None,
        }),
        None => None,
    };
    engine
        .store()
        .create_key(&key, version.as_ref(), &tags, None)?;
    rec.resources.push(engine.key_arn(&key));
    Ok(KeyMetadataResponse {
        key_metadata: metadata(engine, &key),
    })
}

pub(super) fn describe_key(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<KeyMetadataResponse, KmsError> {
    grant_tokens(&req.grant_tokens)?;
    let key = engine.requested_key(caller, rec, req.key_id, true, "kms:DescribeKey")?;
    Ok(KeyMetadataResponse {
        key_metadata: metadata(engine, &key),
    })
}

pub(super) fn list_keys(
    engine: &Engine,
    caller: &Principal,
    req: ListKeysRequest,
    _rec: &mut CallRecord,
) -> Result<ListKeysResponse, KmsError> {
    let limit = req.limit.unwrap_or(100);
    int_range(limit, "limit", 1, 1000)?;
    let after = match &req.marker {
        Some(m) => Some(
            KeyId::parse(m)
                .map_err(|_| KmsError::new(ErrorCode::InvalidMarkerException, "Invalid marker"))?,
        ),
        None => None,
    };
    let mut keys = engine
        .store()
        .list_keys(&caller.account, after.as_ref(), limit as usize + 1)?;
    let truncated = keys.len() > limit as usize;
    keys.truncate(limit as usize);
    let entries: Vec<KeyListEntry> = keys
        .iter()
        .map(|k| KeyListEntry {
            key_id: k.key_id.to_string(),
            key_arn: key_arn(engine.region(), &k.account, &k.key_id),
        })
        .collect();
    Ok(ListKeysResponse {
        keys: entries,
        truncated,
        next_marker: keys
            .last()
            .filter(|_| truncated)
            .map(|k| k.key_id.to_string()),
    })
}

pub(super) fn update_key_description(
    engine: &Engine,
    caller: &Principal,
    req: UpdateKeyDescriptionRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let description = required(req.description, "description")?;
    str_len(&description, "description", 0, 8192)?;
    engine.update_key(
        caller,
        &key_id,
        rec,
        "kms:UpdateKeyDescription",
        &Conditions::default(),
        |k, arn| {
            if k.state == KeyState::PendingDeletion {
                return Err(KmsError::invalid_state(arn, k.state.as_str()));
            }
            k.description = description;
            Ok(())
        },
    )?;
    empty()
}

pub(super) fn enable_key(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    set_enabled(engine, caller, req, rec, KeyState::Enabled)
}

pub(super) fn disable_key(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    set_enabled(engine, caller, req, rec, KeyState::Disabled)
}

fn set_enabled(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
    to: KeyState,
) -> Result<EmptyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let action = if to == KeyState::Enabled {
        "kms:EnableKey"
    } else {
        "kms:DisableKey"
    };
    engine.update_key(
        caller,
        &key_id,
        rec,
        action,
        &Conditions::default(),
        |k, arn| match k.state {
            KeyState::Enabled | KeyState::Disabled => {
                k.state = to;
                Ok(())
            }
            other => Err(KmsError::invalid_state(arn, other.as_str())),
        },
    )?;
    empty()
}

pub(super) fn schedule_key_deletion(
    engine: &Engine,
    caller: &Principal,
    req: ScheduleKeyDeletionRequest,
    rec: &mut CallRecord,
) -> Result<ScheduleKeyDeletionResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let days = req.pending_window_in_days.unwrap_or(30);
    int_range(days, "pendingWindowInDays", 7, 30)?;
    let now = engine.now_ms();
    let conds = Conditions::default().and(
        "kms:ScheduleKeyDeletionPendingWindowInDays",
        vec![days.to_string()],
    );
    let key = engine.update_key(
        caller,
        &key_id,
        rec,
        "kms:ScheduleKeyDeletion",
        &conds,
        |k, arn| match k.state {
            KeyState::Enabled | KeyState::Disabled | KeyState::PendingImport => {
                // A multi-Region primary key with replicas waits for their deletion first;
                // its own waiting period starts when the last one is gone.
                let waits = k
                    .multi_region
                    .as_ref()
                    .is_some_and(|m| m.primary == engine.region() && !m.replicas.is_empty());
                if waits {
                    k.state = KeyState::PendingReplicaDeletion;
                    k.deletion_date = None;
                } else {
                    k.state = KeyState::PendingDeletion;
                    k.deletion_date = Some(now + days * DAY_MS);
                }
                k.pending_window_days = Some(days as u32);
                Ok(())
            }
            other => Err(KmsError::invalid_state(arn, other.as_str())),
        },
    )?;
    Ok(ScheduleKeyDeletionResponse {
        key_id: engine.key_arn(&key),
        deletion_date: key.deletion_date.map(epoch_seconds),
        key_state: key.state.as_str(),
        pending_window_in_days: days,
    })
}

pub(super) fn cancel_key_deletion(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<KeyIdResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let key = engine.update_key(
        caller,
        &key_id,
        rec,
        "kms:CancelKeyDeletion",
        &Conditions::default(),
        |k, arn| {
            if !matches!(
                k.state,
                KeyState::PendingDeletion | KeyState::PendingReplicaDeletion
            ) {
                return Err(KmsError::invalid_state(arn, k.state.as_str()));
            }
            k.state = KeyState::Disabled;
            k.deletion_date = None;
            k.pending_window_days = None;
            Ok(())
        },
    )?;
    Ok(KeyIdResponse {
        key_id: engine.key_arn(&key),
    })
}
