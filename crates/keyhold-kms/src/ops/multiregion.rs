//! Multi-Region keys: ReplicateKey, UpdatePrimaryRegion, and what keeps a primary key and its
//! replicas in step across the Regions of one deployment (DescribeKey's configuration, the
//! material of each rotation, and deletion of a primary only after its replicas).
//!
//! Each Region holds its own record of the key (its own state, policy, description, tags,
//! aliases and grants) and its own copy of every version of the material, wrapped under the
//! root key for that Region's row. The primary's record lists the replicas' Regions; every
//! record names the primary's Region.

use std::sync::Arc;

use keyhold_core::ids::{is_region_name, key_arn};
use keyhold_core::key::{KeyManager, KeyState, Origin};
use keyhold_core::policy::default_key_policy;
use keyhold_store::{KeyRecord, KeyVersionRecord, MultiRegion};

use super::keys::{check_policy, lockout_check, metadata, unsupported};
use super::tags::validate_tags;
use crate::api::{
    EmptyResponse, MultiRegionConfiguration, MultiRegionKey, ReplicateKeyRequest,
    ReplicateKeyResponse, TagDto, UpdatePrimaryRegionRequest,
};
use crate::authz::Conditions;
use crate::clock::DAY_MS;
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{required, str_len};
use crate::{CallRecord, Engine};

/// Checks a Region name as AWS's model does (the pattern, and 1 to 32 characters).
fn check_region(region: &str, field: &str) -> Result<(), KmsError> {
    if region.len() <= 32 && is_region_name(region) {
        Ok(())
    } else {
        Err(KmsError::validation(format!(
            "1 validation error detected: Value '{region}' at '{field}' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: ^([a-z]+-){{2,3}}\\d+$"
        )))
    }
}

/// The primary key's Region, when `key` is a multi-Region key.
fn primary_region(key: &KeyRecord) -> Option<&str> {
    key.multi_region.as_ref().map(|m| m.primary.as_str())
}

/// DescribeKey's `MultiRegionConfiguration` of a key (`None` for a single-Region key).
pub(crate) fn configuration(engine: &Engine, key: &KeyRecord) -> Option<MultiRegionConfiguration> {
    let mr = key.multi_region.as_ref()?;
    let is_primary = mr.primary == engine.region();
    let replicas = if is_primary {
        mr.replicas.clone()
    } else {
        // The primary's record lists the replicas; a Region no longer served shows none.
        let primary = engine.peer(&mr.primary);
        let record = primary
            .as_ref()
            .and_then(|p| p.key_record(&key.key_id).ok().flatten());
        // The Region this replica names as primary may have stopped half-way through handing
        // over (UpdatePrimaryRegion): finish it, and describe the key as it then is.
        if let (Some(p), Some(r)) = (&primary, &record) {
            if handing_over(p, r) && p.finish_handover(&key.key_id).is_ok() {
                if let Ok(Some(now)) = engine.key_record(&key.key_id) {
                    return configuration(engine, &now);
                }
            }
        }
        record
            .and_then(|p| p.multi_region.clone())
            .map(|m| m.replicas)
            .unwrap_or_else(|| vec![engine.region().to_string()])
    };
    let entry = |region: &str| MultiRegionKey {
        arn: key_arn(region, &key.account, &key.key_id),
        region: region.to_string(),
    };
    Some(MultiRegionConfiguration {
        multi_region_key_type: if is_primary { "PRIMARY" } else { "REPLICA" },
        primary_key: entry(&mr.primary),
        replica_keys: replicas.iter().map(|r| entry(r)).collect(),
    })
}

/// The imported material a multi-Region key takes: that of any key of its set which has had
/// some (`None` for a single-Region key, or a set none of whose keys has had material yet).
pub(crate) fn set_material(engine: &Engine, key: &KeyRecord) -> Result<Option<String>, KmsError> {
    let Some(mr) = key.multi_region.as_ref() else {
        return Ok(None);
    };
    let primary = if mr.primary == engine.region() {
        Some(key.clone())
    } else {
        match engine.peer(&mr.primary) {
            Some(p) => p.store().get_key(&key.key_id)?,
            None => None,
        }
    };
    let Some(primary) = primary else {
        return Ok(None);
    };
    let mut regions = vec![mr.primary.clone()];
    regions.extend(
        primary
            .multi_region
            .as_ref()
            .map(|m| m.replicas.clone())
            .unwrap_or_default(),
    );
    for region in regions {
        let record = if region == engine.region() {
            Some(key.clone())
        } else {
            match engine.peer(&region) {
                Some(p) => p.store().get_key(&key.key_id)?,
                None => None,
            }
        };
        if let Some(d) = record.and_then(|r| r.material_digest) {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// Refuses an operation that only a primary key allows on a replica.
pub(crate) fn refuse_replica(engine: &Engine, key: &KeyRecord, what: &str) -> Result<(), KmsError> {
    match primary_region(key) {
        Some(primary) if primary != engine.region() => Err(unsupported(format!(
            "{} is a multi-Region replica key: {what} applies to its primary key, in {primary}",
            engine.key_arn(key)
        ))),
        _ => Ok(()),
    }
}

pub(super) fn replicate_key(
    engine: &Engine,
    caller: &Principal,
    req: ReplicateKeyRequest,
    rec: &mut CallRecord,
) -> Result<ReplicateKeyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let region = required(req.replica_region, "replicaRegion")?;
    check_region(&region, "replicaRegion")?;
    let description = req.description.unwrap_or_default();
    str_len(&description, "description", 0, 8192)?;
    if let Some(p) = &req.policy {
        check_policy(p)?;
    }
    let tags = validate_tags(req.tags.unwrap_or_default())?;
    let conds = Conditions::default().and("kms:ReplicaRegion", vec![region.clone()]);
    let key = engine.key_for(caller, rec, &key_id, false, "kms:ReplicateKey", &conds)?;
    let arn = engine.key_arn(&key);
    match primary_region(&key) {
        None => {
            return Err(unsupported(format!(
                "{arn} is not a multi-Region key: only a multi-Region primary key can be \
                 replicated"
            )))
        }
        Some(p) if p != engine.region() => {
            return Err(unsupported(format!(
                "{arn} is a multi-Region replica key: only its primary key, in {p}, can be \
                 replicated"
            )))
        }
        Some(_) => {}
    }
    match key.state {
        KeyState::Enabled => {}
        // A key for imported material may be replicated before its material is imported.
        KeyState::PendingImport if key.origin == Origin::External => {}
        KeyState::Disabled => {
            return Err(KmsError::new(
                ErrorCode::DisabledException,
                format!("{arn} is disabled."),
            ))
        }
        other => return Err(KmsError::invalid_state(&arn, other.as_str())),
    }
    if region == engine.region() {
        return Err(KmsError::validation(format!(
            "The replica Region {region} is the Region of the primary key {arn}: a replica must \
             be in another Region"
        )));
    }
    let Some(target) = engine.peer(&region) else {
        return Err(unsupported(format!(
            "The Region {region} is not served by this keyhold deployment"
        )));
    };
    let replica_arn = key_arn(&region, &key.account, &key.key_id);
    let listed = key
        .multi_region
        .as_ref()
        .is_some_and(|m| m.replicas.contains(&region));
    if listed || target.store().get_key(&key.key_id)?.is_some() {
        return Err(KmsError::new(
            ErrorCode::AlreadyExistsException,
            format!("{replica_arn} already exists"),
        ));
    }
    let now = engine.now_ms();
    let external = key.origin == Origin::External;
    let replica = KeyRecord {
        key_id: key.key_id,
        account: key.account.clone(),
        description,
        key_spec: key.key_spec,
        key_usage: key.key_usage,
        origin: key.origin,
        state: KeyState::Creating,
        created_at: now,
        deletion_date: None,
        pending_window_days: None,
        // Imported material is imported into each key of the set; generated material is
        // copied.
        current_version: if external { 0 } else { key.current_version },
        policy: req
            .policy
            .unwrap_or_else(|| default_key_policy(&caller.account)),
        key_manager: KeyManager::Customer,
        rotation_period_days: key.rotation_period_days,
        next_rotation_at: key.next_rotation_at,
        expiration_model: None,
        valid_to: None,
        // Which material may be imported: that of the set, once any key of it has some.
        material_digest: key.material_digest.clone(),
        custom_key_store_id: None,
        multi_region: Some(MultiRegion {
            primary: engine.region().to_string(),
            replicas: Vec::new(),
        }),
    };
    if req.bypass_policy_lockout_safety_check != Some(true) {
        lockout_check(&target, caller, rec, &replica)?;
    }
    // 1. The replica, Creating, with the current version of the material (what any
    //    ciphertext needs first); 2. the primary lists it; 3. every version, and Enabled.
    // A crash between the steps leaves a Creating replica that the next use finishes.
    let first = if external {
        None
    } else {
        copy_version(engine, &target, &key, key.current_version)?
    };
    target
        .store()
        .create_key(&replica, first.as_ref(), &tags, None)
        .map_err(|e| match e {
            keyhold_store::StoreError::AlreadyExists => KmsError::new(
                ErrorCode::AlreadyExistsException,
                format!("{replica_arn} already exists"),
            ),
            other => other.into(),
        })?;
    engine.list_replica(&key.key_id, &region)?;
    rec.resources.push(replica_arn);
    let shown = metadata(&target, &replica);
    target.finish_replica(&key.key_id)?;
    Ok(ReplicateKeyResponse {
        replica_key_metadata: shown,
        replica_policy: replica.policy,
        replica_tags: tags
            .into_iter()
            .map(|t| TagDto {
                tag_key: Some(t.key),
                tag_value: Some(t.value),
            })
            .collect(),
    })
}

/// One version of `key`'s material from `from`, wrapped for `to`'s row (`None` when the
/// version has no material).
fn copy_version(
    from: &Engine,
    to: &Engine,
    key: &KeyRecord,
    version: u32,
) -> Result<Option<KeyVersionRecord>, KmsError> {
    let Some(v) = from.store().get_key_version(&key.key_id, version)? else {
        return Ok(None);
    };
    let Some(material) = from.material(&key.key_id, version)? else {
        return Ok(None);
    };
    Ok(Some(KeyVersionRecord {
        wrapped_material: to.wrap_material(&key.key_id, version, &material)?,
        ..v
    }))
}

pub(super) fn update_primary_region(
    engine: &Engine,
    caller: &Principal,
    req: UpdatePrimaryRegionRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let region = required(req.primary_region, "primaryRegion")?;
    check_region(&region, "primaryRegion")?;
    let conds = Conditions::default().and("kms:PrimaryRegion", vec![region.clone()]);
    let key = engine.key_for(
        caller,
        rec,
        &key_id,
        false,
        "kms:UpdatePrimaryRegion",
        &conds,
    )?;
    let arn = engine.key_arn(&key);
    let Some(mr) = key.multi_region.clone() else {
        return Err(unsupported(format!("{arn} is not a multi-Region key")));
    };
    if mr.primary != engine.region() {
        return Err(unsupported(format!(
            "{arn} is a multi-Region replica key: call UpdatePrimaryRegion on its primary key, \
             in {}",
            mr.primary
        )));
    }
    if region == engine.region() {
        return Err(KmsError::validation(format!(
            "{arn} is already the primary key: its Region is {region}"
        )));
    }
    let target = match engine.peer(&region) {
        Some(t) if mr.replicas.contains(&region) => t,
        _ => {
            return Err(KmsError::not_found(format!(
                "{arn} has no replica key in {region}"
            )))
        }
    };
    // The caller needs the permission on the replica too, in its Region.
    let replica = target.key_for(
        caller,
        rec,
        &key.key_id.to_string(),
        false,
        "kms:UpdatePrimaryRegion",
        &conds,
    )?;
    for (k, in_engine) in [(&key, engine), (&replica, target.as_ref())] {
        if !matches!(k.state, KeyState::Enabled | KeyState::Disabled) {
            return Err(KmsError::invalid_state(
                &in_engine.key_arn(k),
                k.state.as_str(),
            ));
        }
    }
    // A handover in steps that are safe to stop between: first this key steps down, naming
    // the new primary and keeping the replica list it hands over (so no Region is primary
    // meanwhile, and none rotates alone); then the new primary takes the list, every other
    // replica names it, and this key drops the list. A handover stopped half-way is finished
    // when a request next resolves any of the Region's keys it reached.
    let replicas: Vec<String> = mr
        .replicas
        .iter()
        .map(|r| {
            if *r == region {
                engine.region().to_string()
            } else {
                r.clone()
            }
        })
        .collect();
    engine.set_multi_region(
        &key.key_id,
        MultiRegion {
            primary: region.clone(),
            replicas,
        },
    )?;
    engine.finish_handover(&key.key_id)?;
    super::empty()
}

/// True for a record left half-way through UpdatePrimaryRegion: a replica still holding the
/// replica list it hands over.
pub(crate) fn handing_over(engine: &Engine, key: &KeyRecord) -> bool {
    key.multi_region
        .as_ref()
        .is_some_and(|m| m.primary != engine.region() && !m.replicas.is_empty())
}

impl Engine {
    /// Adds `region` to the replicas the primary key `id` lists.
    fn list_replica(&self, id: &keyhold_core::ids::KeyId, region: &str) -> Result<(), KmsError> {
        let _guard = self.lock_writes();
        let Some(mut key) = self.store().get_key(id)? else {
            return Ok(());
        };
        let Some(mr) = key.multi_region.as_mut() else {
            return Ok(());
        };
        if mr.primary == self.region() && !mr.replicas.iter().any(|r| r == region) {
            mr.replicas.push(region.to_string());
            self.store().update_key(&key)?;
        }
        self.keyring().invalidate_key(id);
        Ok(())
    }

    /// Overwrites the Regions a record of `id` names.
    fn set_multi_region(
        &self,
        id: &keyhold_core::ids::KeyId,
        mr: MultiRegion,
    ) -> Result<(), KmsError> {
        let _guard = self.lock_writes();
        if let Some(mut key) = self.store().get_key(id)? {
            key.multi_region = Some(mr);
            self.store().update_key(&key)?;
        }
        self.keyring().invalidate_key(id);
        Ok(())
    }

    /// Records in this Region's audit events that the service brought a key of a multi-Region
    /// set up to date with its primary (CloudTrail's `SynchronizeMultiRegionKey`).
    fn audit_synchronized(&self, key: &KeyRecord) {
        self.audit_service_event(
            "SynchronizeMultiRegionKey",
            &serde_json::json!({
                "keyId": self.key_arn(key),
                "primaryRegion": primary_region(key),
                "currentKeyVersion": key.current_version,
            }),
        );
    }

    /// Completes a handover of the primary that this key began (see UpdatePrimaryRegion).
    pub(crate) fn finish_handover(&self, id: &keyhold_core::ids::KeyId) -> Result<(), KmsError> {
        let Some(key) = self.store().get_key(id)? else {
            return Ok(());
        };
        if !handing_over(self, &key) {
            return Ok(());
        }
        let Some(mr) = key.multi_region.clone() else {
            return Ok(());
        };
        let Some(primary) = self.peer(&mr.primary) else {
            return Ok(());
        };
        primary.set_multi_region(id, mr.clone())?;
        for r in mr.replicas.iter().filter(|r| **r != self.region()) {
            if let Some(peer) = self.peer(r) {
                peer.set_multi_region(
                    id,
                    MultiRegion {
                        primary: mr.primary.clone(),
                        replicas: Vec::new(),
                    },
                )?;
            }
        }
        self.set_multi_region(
            id,
            MultiRegion {
                primary: mr.primary.clone(),
                replicas: Vec::new(),
            },
        )?;
        tracing::info!(key_id = %id, primary = mr.primary, "multi-Region primary moved");
        Ok(())
    }

    /// Completes a replica left `Creating`: makes sure its primary lists it, copies every
    /// version of the material the primary has, and enables it.
    pub(crate) fn finish_replica(&self, id: &keyhold_core::ids::KeyId) -> Result<(), KmsError> {
        let Some(replica) = self.store().get_key(id)? else {
            return Ok(());
        };
        if replica.state != KeyState::Creating {
            return Ok(());
        }
        let Some(primary_engine) = primary_region(&replica).and_then(|p| self.peer(p)) else {
            return Ok(());
        };
        let Some(primary) = primary_engine.store().get_key(id)? else {
            return Ok(());
        };
        primary_engine.list_replica(id, self.region())?;
        if replica.origin == Origin::External {
            // Its material is imported into it: it waits for that.
            let _guard = self.lock_writes();
            if let Some(mut replica) = self.store().get_key(id)? {
                if replica.state == KeyState::Creating {
                    replica.state = KeyState::PendingImport;
                    self.store().update_key(&replica)?;
                }
            }
            self.keyring().invalidate_key(id);
            return Ok(());
        }
        let mut versions = Vec::new();
        for v in primary_engine.store().list_key_versions(id)? {
            if let Some(copy) = copy_version(&primary_engine, self, &primary, v.version)? {
                versions.push(copy);
            }
        }
        let _guard = self.lock_writes();
        let Some(mut replica) = self.store().get_key(id)? else {
            return Ok(());
        };
        if replica.state != KeyState::Creating {
            return Ok(());
        }
        replica.state = KeyState::Enabled;
        replica.current_version = primary.current_version;
        replica.rotation_period_days = primary.rotation_period_days;
        replica.next_rotation_at = primary.next_rotation_at;
        self.store().replace_material(&replica, &versions)?;
        self.keyring().invalidate_key(id);
        tracing::info!(key_id = %id, region = self.region(), "multi-Region replica created");
        self.audit_synchronized(&replica);
        Ok(())
    }

    /// Material of a version this replica does not hold yet (a rotation of its primary that
    /// has not reached it), from the primary's Region.
    pub(crate) fn material_from_primary(
        &self,
        id: &keyhold_core::ids::KeyId,
        version: u32,
    ) -> Result<Option<Arc<keyhold_core::secret::SecretBytes>>, KmsError> {
        if !id.is_multi_region() {
            return Ok(None);
        }
        let Some(key) = self.store().get_key(id)? else {
            return Ok(None);
        };
        // Imported material is each key's own: it is never taken from another Region.
        if key.origin != Origin::AwsKms {
            return Ok(None);
        }
        match primary_region(&key).filter(|p| *p != self.region()) {
            Some(p) => match self.peer(p) {
                Some(primary) => primary.material(id, version),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// After a rotation or a rotation setting of the primary key `key`: its replicas get the
    /// same versions and rotation schedule. A replica that cannot be reached now gets missing
    /// versions from the primary when it needs them.
    pub(crate) fn sync_replicas(&self, key: &KeyRecord) {
        let Some(mr) = key
            .multi_region
            .as_ref()
            .filter(|m| m.primary == self.region())
        else {
            return;
        };
        for region in &mr.replicas {
            let Some(peer) = self.peer(region) else {
                continue;
            };
            if let Err(e) = peer.take_from_primary(self, key) {
                tracing::warn!(key_id = %key.key_id, region, error = %e.message,
                    "replica not brought up to date with its primary");
            }
        }
    }

    /// Copies the versions of `primary` that this replica lacks, and its rotation schedule.
    fn take_from_primary(&self, from: &Engine, primary: &KeyRecord) -> Result<(), KmsError> {
        let _guard = self.lock_writes();
        let Some(mut replica) = self.store().get_key(&primary.key_id)? else {
            return Ok(());
        };
        if replica.state == KeyState::Creating {
            return Ok(());
        }
        for version in replica.current_version + 1..=primary.current_version {
            if let Some(v) = copy_version(from, self, primary, version)? {
                replica.current_version = version;
                self.store().add_key_version(&replica, &v)?;
            }
        }
        // The rotation schedule (adding a version writes only part of it).
        replica.rotation_period_days = primary.rotation_period_days;
        replica.next_rotation_at = primary.next_rotation_at;
        self.store().update_key(&replica)?;
        self.keyring().invalidate_key(&primary.key_id);
        self.audit_synchronized(&replica);
        Ok(())
    }

    /// After a replica of `id` in `region` was deleted: its primary stops listing it, and a
    /// primary waiting for its replicas' deletion starts its own waiting period.
    pub(crate) fn replica_deleted(&self, id: &keyhold_core::ids::KeyId, region: &str) {
        let result = (|| -> Result<(), KmsError> {
            let _guard = self.lock_writes();
            let Some(mut key) = self.store().get_key(id)? else {
                return Ok(());
            };
            let Some(mr) = key.multi_region.as_mut() else {
                return Ok(());
            };
            mr.replicas.retain(|r| r != region);
            if mr.replicas.is_empty() && key.state == KeyState::PendingReplicaDeletion {
                let days = key.pending_window_days.unwrap_or(30);
                key.state = KeyState::PendingDeletion;
                key.deletion_date = Some(self.now_ms() + i64::from(days) * DAY_MS);
            }
            self.store().update_key(&key)?;
            self.keyring().invalidate_key(id);
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(key_id = %id, region, error = %e.message,
                "primary key not told of its replica's deletion");
        }
    }

    /// After this Region deleted key `id`: when it was a replica, its primary hears of it.
    pub(crate) fn after_delete(&self, deleted: &KeyRecord) {
        if let Some(primary) = primary_region(deleted).filter(|p| *p != self.region()) {
            if let Some(peer) = self.peer(primary) {
                peer.replica_deleted(&deleted.key_id, self.region());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_region;

    #[test]
    fn region_names_follow_the_model_pattern() {
        for ok in ["us-east-1", "eu-west-3", "us-gov-west-1", "ap-southeast-7"] {
            assert!(check_region(ok, "replicaRegion").is_ok(), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "useast1",
            "US-east-1",
            "us--1",
            "us-east-1-",
            "a-b-c-d-1",
            "us-east-x",
            &format!("{}-east-1", "a".repeat(30)),
        ] {
            assert!(check_region(bad, "replicaRegion").is_err(), "{bad}");
        }
    }
}
