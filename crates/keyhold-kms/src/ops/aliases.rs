//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases.

use keyhold_core::ids::{alias_arn, AliasName};
use std::sync::Arc;

use keyhold_store::{AliasRecord, KeyRecord, StoreError};

use super::empty;
use crate::api::{
    epoch_seconds, AliasListEntry, AliasRequest, EmptyResponse, ListAliasesRequest,
    ListAliasesResponse,
};
use crate::authz::Conditions;
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{int_range, required, str_len};
use crate::{CallRecord, Engine};

/// Parses an alias name: length and characters are a `ValidationException`, the `alias/`
/// prefix an `InvalidAliasNameException`.
fn alias_name(s: &str) -> Result<AliasName, KmsError> {
    str_len(s, "aliasName", 1, 256)?;
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
    {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '{s}' at 'aliasName' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
        )));
    }
    AliasName::parse(s)
        .map_err(|e| KmsError::new(ErrorCode::InvalidAliasNameException, e.to_string()))
}

/// A store error about an existing alias: `NotFound` means the alias does not exist.
fn alias_store_error(e: StoreError, name: &AliasName) -> KmsError {
    match e {
        StoreError::NotFound => KmsError::not_found(format!("Alias {name} is not found.")),
        other => other.into(),
    }
}

fn reserved(name: &AliasName) -> KmsError {
    KmsError::new(
        ErrorCode::InvalidAliasNameException,
        format!("Alias {name} must not begin with alias/aws/: that prefix is reserved for AWS managed keys"),
    )
}

/// The alias a CreateAlias or UpdateAlias names, and the key it should point at (which must
/// exist and not be pending deletion).
fn name_and_target(
    engine: &Engine,
    caller: &Principal,
    req: AliasRequest,
    rec: &mut CallRecord,
    action: &str,
) -> Result<(AliasName, Arc<KeyRecord>), KmsError> {
    let name = alias_name(&required(req.alias_name, "aliasName")?)?;
    let target = required(req.target_key_id, "targetKeyId")?;
    if name.is_reserved() {
        return Err(reserved(&name));
    }
    let key = engine.resolve_for_change(caller, &target, rec, action)?;
    Ok((name, key))
}

pub(super) fn create_alias(
    engine: &Engine,
    caller: &Principal,
    req: AliasRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let (name, key) = name_and_target(engine, caller, req, rec, "kms:CreateAlias")?;
    let now = engine.now_ms();
    let _guard = engine.lock_writes();
    let alias = AliasRecord {
        account: caller.account.clone(),
        name: name.clone(),
        target: key.key_id,
        created_at: now,
        updated_at: now,
    };
    engine.store().create_alias(&alias).map_err(|e| match e {
        StoreError::AlreadyExists => KmsError::new(
            ErrorCode::AlreadyExistsException,
            format!(
                "An alias with the name {} already exists",
                alias_arn(engine.region(), &caller.account, &name)
            ),
        ),
        other => other.into(),
    })?;
    engine
        .keyring()
        .invalidate_alias(&caller.account, name.as_str());
    empty()
}

pub(super) fn update_alias(
    engine: &Engine,
    caller: &Principal,
    req: AliasRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let (name, key) = name_and_target(engine, caller, req, rec, "kms:UpdateAlias")?;
    let _guard = engine.lock_writes();
    let current = engine
        .store()
        .get_alias(&caller.account, &name)?
        .ok_or_else(|| KmsError::not_found(format!("Alias {name} is not found.")))?;
    if let Some(old) = engine.key_record(&current.target)? {
        engine.authorize(caller, rec, &old, "kms:UpdateAlias", &Conditions::default())?;
        if old.key_spec != key.key_spec || old.key_usage != key.key_usage {
            return Err(KmsError::validation(format!(
                "{name} points at a {} {} key; the new target must have the same key spec and \
                 usage",
                old.key_spec, old.key_usage
            )));
        }
    }
    engine
        .store()
        .update_alias(&caller.account, &name, &key.key_id, engine.now_ms())
        .map_err(|e| alias_store_error(e, &name))?;
    engine
        .keyring()
        .invalidate_alias(&caller.account, name.as_str());
    empty()
}

pub(super) fn delete_alias(
    engine: &Engine,
    caller: &Principal,
    req: AliasRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let name = alias_name(&required(req.alias_name, "aliasName")?)?;
    if name.is_reserved() {
        return Err(reserved(&name));
    }
    let _guard = engine.lock_writes();
    let current = engine
        .store()
        .get_alias(&caller.account, &name)?
        .ok_or_else(|| KmsError::not_found(format!("Alias {name} is not found.")))?;
    if let Some(key) = engine.key_record(&current.target)? {
        rec.resources.push(engine.key_arn(&key));
        engine.authorize(caller, rec, &key, "kms:DeleteAlias", &Conditions::default())?;
    }
    engine
        .store()
        .delete_alias(&caller.account, &name)
        .map_err(|e| alias_store_error(e, &name))?;
    engine
        .keyring()
        .invalidate_alias(&caller.account, name.as_str());
    empty()
}

pub(super) fn list_aliases(
    engine: &Engine,
    caller: &Principal,
    req: ListAliasesRequest,
    _rec: &mut CallRecord,
) -> Result<ListAliasesResponse, KmsError> {
    let limit = req.limit.unwrap_or(50);
    int_range(limit, "limit", 1, 100)?;
    let target = match &req.key_id {
        Some(k) => Some(engine.resolve_key(caller, k, false)?.key_id),
        None => None,
    };
    if let Some(m) = &req.marker {
        if AliasName::parse(m).is_err() {
            return Err(KmsError::new(
                ErrorCode::InvalidMarkerException,
                "Invalid marker",
            ));
        }
    }
    let mut aliases = engine.store().list_aliases(
        &caller.account,
        target.as_ref(),
        req.marker.as_deref(),
        limit as usize + 1,
    )?;
    let truncated = aliases.len() > limit as usize;
    aliases.truncate(limit as usize);
    let entries: Vec<AliasListEntry> = aliases
        .iter()
        .map(|a| AliasListEntry {
            alias_name: a.name.to_string(),
            alias_arn: alias_arn(engine.region(), &a.account, &a.name),
            target_key_id: a.target.to_string(),
            creation_date: epoch_seconds(a.created_at),
            last_updated_date: epoch_seconds(a.updated_at),
        })
        .collect();
    Ok(ListAliasesResponse {
        aliases: entries,
        truncated,
        next_marker: aliases
            .last()
            .filter(|_| truncated)
            .map(|a| a.name.to_string()),
    })
}
