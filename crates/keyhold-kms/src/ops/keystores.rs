//! Custom key stores: CreateCustomKeyStore, DescribeCustomKeyStores, UpdateCustomKeyStore,
//! ConnectCustomKeyStore, DisconnectCustomKeyStore, DeleteCustomKeyStore.
//!
//! A store is AWS's AWS_CLOUDHSM type over a PKCS#11 token: `CloudHsmClusterId` is the token's
//! label, `KeyStorePassword` its user PIN (kept wrapped under the root key), and the trust anchor
//! is kept and returned. Like AWS, these are account-level operations: any principal of the
//! account may call them (keyhold has no IAM policies), no one of another account.

use keyhold_store::{CustomKeyStoreRecord, StoreError};

use super::empty;
use crate::api::{
    epoch_seconds, CreateCustomKeyStoreRequest, CreateCustomKeyStoreResponse, CustomKeyStoreEntry,
    CustomKeyStoreIdRequest, DescribeCustomKeyStoresRequest, DescribeCustomKeyStoresResponse,
    EmptyResponse, UpdateCustomKeyStoreRequest,
};
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{int_range, required, str_len};
use crate::{CallRecord, Engine};

/// Custom key stores an account may have (AWS's quota).
const MAX_STORES: usize = 10;

fn check_cluster_id(id: &str, field: &str) -> Result<(), KmsError> {
    str_len(id, field, 19, 24)?;
    let ok = id.strip_prefix("cluster-").is_some_and(|rest| {
        (11..=16).contains(&rest.len())
            && rest
                .chars()
                .all(|c| c.is_ascii_alphabetic() || ('2'..='7').contains(&c))
    });
    if ok {
        Ok(())
    } else {
        Err(KmsError::validation(format!(
            "1 validation error detected: Value '{id}' at '{field}' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: \
             cluster-[2-7a-zA-Z]{{11,16}}"
        )))
    }
}

fn not_found(id: &str) -> KmsError {
    KmsError::new(
        ErrorCode::CustomKeyStoreNotFoundException,
        format!("Custom key store {id} does not exist in this account and region."),
    )
}

fn invalid_state(id: &str, state: &str, op: &str) -> KmsError {
    KmsError::new(
        ErrorCode::CustomKeyStoreInvalidStateException,
        format!("Custom key store {id} is {state}: {op} is not valid in that state."),
    )
}

/// The caller's store of this id.
pub(crate) fn find_store(
    engine: &Engine,
    caller: &Principal,
    id: &str,
) -> Result<CustomKeyStoreRecord, KmsError> {
    engine
        .store()
        .list_custom_key_stores(Some(&caller.account))?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| not_found(id))
}

/// The caller's store named by a request's `CustomKeyStoreId`.
fn requested_store(
    engine: &Engine,
    caller: &Principal,
    id: Option<String>,
) -> Result<CustomKeyStoreRecord, KmsError> {
    let id = required(id, "customKeyStoreId")?;
    str_len(&id, "customKeyStoreId", 1, 64)?;
    find_store(engine, caller, &id)
}

/// A field AWS_CLOUDHSM stores require.
fn need<T>(v: Option<T>, field: &str) -> Result<T, KmsError> {
    v.ok_or_else(|| {
        KmsError::validation(format!(
            "{field} is required for a custom key store of type AWS_CLOUDHSM"
        ))
    })
}

fn password(p: &str) -> Result<(), KmsError> {
    str_len(p, "keyStorePassword", 7, 32)
}

/// Maps a uniqueness conflict to the AWS error of the field at fault.
fn conflict(
    engine: &Engine,
    rec: &CustomKeyStoreRecord,
    e: StoreError,
) -> Result<KmsError, KmsError> {
    if !matches!(e, StoreError::AlreadyExists) {
        return Ok(e.into());
    }
    let all = engine.store().list_custom_key_stores(None)?;
    if all
        .iter()
        .any(|s| s.id != rec.id && s.account == rec.account && s.name == rec.name)
    {
        return Ok(KmsError::new(
            ErrorCode::CustomKeyStoreNameInUseException,
            format!(
                "A custom key store named {:?} exists in this account.",
                rec.name
            ),
        ));
    }
    Ok(KmsError::new(
        ErrorCode::CloudHsmClusterInUseException,
        format!(
            "{} is associated with another custom key store.",
            rec.cluster_id
        ),
    ))
}

pub(super) fn create_custom_key_store(
    engine: &Engine,
    caller: &Principal,
    req: CreateCustomKeyStoreRequest,
    _rec: &mut CallRecord,
) -> Result<CreateCustomKeyStoreResponse, KmsError> {
    let name = required(req.custom_key_store_name, "customKeyStoreName")?;
    str_len(&name, "customKeyStoreName", 1, 256)?;
    match req.custom_key_store_type.as_deref() {
        None | Some("AWS_CLOUDHSM") => {}
        Some("EXTERNAL_KEY_STORE") => {
            return Err(KmsError::new(
                ErrorCode::UnsupportedOperationException,
                "External key stores (EXTERNAL_KEY_STORE) are not supported by this keyhold \
                 server; use AWS_CLOUDHSM with a PKCS#11 token.",
            ))
        }
        Some(other) => {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'customKeyStoreType' failed \
                 to satisfy constraint: Member must satisfy enum value set: \
                 [AWS_CLOUDHSM, EXTERNAL_KEY_STORE]"
            )))
        }
    }
    let cluster_id = need(req.cloud_hsm_cluster_id, "CloudHsmClusterId")?;
    check_cluster_id(&cluster_id, "cloudHsmClusterId")?;
    let trust_anchor = need(req.trust_anchor_certificate, "TrustAnchorCertificate")?;
    str_len(&trust_anchor, "trustAnchorCertificate", 1, 5000)?;
    let pin = need(req.key_store_password, "KeyStorePassword")?;
    password(pin.expose())?;
    if engine
        .store()
        .list_custom_key_stores(Some(&caller.account))?
        .len()
        >= MAX_STORES
    {
        return Err(KmsError::new(
            ErrorCode::LimitExceededException,
            format!("An account may have at most {MAX_STORES} custom key stores."),
        ));
    }
    if !engine.token_exists(&cluster_id)? {
        return Err(KmsError::new(
            ErrorCode::CloudHsmClusterNotFoundException,
            format!("No HSM token labelled {cluster_id} was found."),
        ));
    }
    let random = keyhold_core::secret::random_bytes(9).map_err(KmsError::internal)?;
    let id = format!("cks-{}", &hex::encode(random)[..17]);
    let rec = CustomKeyStoreRecord {
        password_wrapped: engine.root_wrap(
            pin.expose().as_bytes(),
            &CustomKeyStoreRecord::wrap_label(&id),
        )?,
        id,
        account: caller.account.clone(),
        name,
        cluster_id,
        trust_anchor,
        connected: false,
        created_at: engine.now_ms(),
    };
    if let Err(e) = engine.store().create_custom_key_store(&rec) {
        return Err(conflict(engine, &rec, e)?);
    }
    Ok(CreateCustomKeyStoreResponse {
        custom_key_store_id: rec.id,
    })
}

fn entry(engine: &Engine, s: &CustomKeyStoreRecord) -> CustomKeyStoreEntry {
    let (state, code) = engine.key_store_state(s);
    CustomKeyStoreEntry {
        custom_key_store_id: s.id.clone(),
        custom_key_store_name: s.name.clone(),
        cloud_hsm_cluster_id: s.cluster_id.clone(),
        trust_anchor_certificate: s.trust_anchor.clone(),
        connection_state: state,
        creation_date: epoch_seconds(s.created_at),
        custom_key_store_type: "AWS_CLOUDHSM",
        connection_error_code: code,
    }
}

pub(super) fn describe_custom_key_stores(
    engine: &Engine,
    caller: &Principal,
    req: DescribeCustomKeyStoresRequest,
    _rec: &mut CallRecord,
) -> Result<DescribeCustomKeyStoresResponse, KmsError> {
    let limit = req.limit.unwrap_or(100);
    int_range(limit, "limit", 1, 1000)?;
    let limit = usize::try_from(limit).unwrap_or(100);
    let mut stores = engine
        .store()
        .list_custom_key_stores(Some(&caller.account))?;
    if let Some(id) = &req.custom_key_store_id {
        str_len(id, "customKeyStoreId", 1, 64)?;
        stores.retain(|s| &s.id == id);
        if stores.is_empty() {
            return Err(not_found(id));
        }
    }
    if let Some(name) = &req.custom_key_store_name {
        str_len(name, "customKeyStoreName", 1, 256)?;
        stores.retain(|s| &s.name == name);
        if stores.is_empty() {
            return Err(KmsError::new(
                ErrorCode::CustomKeyStoreNotFoundException,
                format!("No custom key store named {name:?} exists in this account."),
            ));
        }
    }
    if let Some(m) = &req.marker {
        if !stores.iter().any(|s| &s.id == m) {
            return Err(KmsError::new(
                ErrorCode::InvalidMarkerException,
                "The marker is not valid.",
            ));
        }
        stores.retain(|s| &s.id > m);
    }
    let truncated = stores.len() > limit;
    stores.truncate(limit);
    Ok(DescribeCustomKeyStoresResponse {
        custom_key_stores: stores.iter().map(|s| entry(engine, s)).collect(),
        truncated,
        next_marker: stores.last().filter(|_| truncated).map(|s| s.id.clone()),
    })
}

pub(super) fn update_custom_key_store(
    engine: &Engine,
    caller: &Principal,
    req: UpdateCustomKeyStoreRequest,
    _rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let mut s = requested_store(engine, caller, req.custom_key_store_id)?;
    let id = s.id.clone();
    if let Some(name) = req.new_custom_key_store_name {
        str_len(&name, "newCustomKeyStoreName", 1, 256)?;
        s.name = name;
    }
    let (state, _) = engine.key_store_state(&s);
    if req.key_store_password.is_some() || req.cloud_hsm_cluster_id.is_some() {
        if state != "DISCONNECTED" {
            return Err(invalid_state(
                &id,
                state,
                "changing KeyStorePassword or CloudHsmClusterId (disconnect the store first)",
            ));
        }
        if let Some(pin) = &req.key_store_password {
            password(pin.expose())?;
            s.password_wrapped = engine.root_wrap(
                pin.expose().as_bytes(),
                &CustomKeyStoreRecord::wrap_label(&id),
            )?;
        }
        if let Some(cluster) = req.cloud_hsm_cluster_id {
            check_cluster_id(&cluster, "cloudHsmClusterId")?;
            if !engine.token_exists(&cluster)? {
                return Err(KmsError::new(
                    ErrorCode::CloudHsmClusterNotFoundException,
                    format!("No HSM token labelled {cluster} was found."),
                ));
            }
            s.cluster_id = cluster;
        }
    }
    if let Err(e) = engine.store().update_custom_key_store(&s) {
        return Err(match e {
            StoreError::NotFound => not_found(&id),
            e => conflict(engine, &s, e)?,
        });
    }
    empty()
}

pub(super) fn connect_custom_key_store(
    engine: &Engine,
    caller: &Principal,
    req: CustomKeyStoreIdRequest,
    _rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let mut s = requested_store(engine, caller, req.custom_key_store_id)?;
    let id = s.id.clone();
    let (state, _) = engine.key_store_state(&s);
    if state == "FAILED" {
        return Err(invalid_state(
            &id,
            state,
            "ConnectCustomKeyStore (disconnect the store first)",
        ));
    }
    if state == "CONNECTED" {
        return empty();
    }
    s.connected = true;
    engine.store().update_custom_key_store(&s)?;
    // The outcome shows in DescribeCustomKeyStores (CONNECTED, or FAILED with the reason).
    engine.connect_key_store(&s);
    empty()
}

pub(super) fn disconnect_custom_key_store(
    engine: &Engine,
    caller: &Principal,
    req: CustomKeyStoreIdRequest,
    _rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let mut s = requested_store(engine, caller, req.custom_key_store_id)?;
    let id = s.id.clone();
    if !s.connected {
        return Err(invalid_state(
            &id,
            "DISCONNECTED",
            "DisconnectCustomKeyStore",
        ));
    }
    s.connected = false;
    engine.store().update_custom_key_store(&s)?;
    engine.disconnect_key_store(&id);
    empty()
}

pub(super) fn delete_custom_key_store(
    engine: &Engine,
    caller: &Principal,
    req: CustomKeyStoreIdRequest,
    _rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let s = requested_store(engine, caller, req.custom_key_store_id)?;
    let id = s.id.clone();
    if s.connected {
        let (state, _) = engine.key_store_state(&s);
        return Err(invalid_state(
            &id,
            state,
            "DeleteCustomKeyStore (disconnect the store first)",
        ));
    }
    if engine.store().count_keys_in_custom_key_store(&id)? > 0 {
        return Err(KmsError::new(
            ErrorCode::CustomKeyStoreHasCMKsException,
            format!(
                "Custom key store {id} still holds KMS keys: delete them (ScheduleKeyDeletion) \
                 and wait for the deletion before deleting the store."
            ),
        ));
    }
    engine.store().delete_custom_key_store(&id)?;
    empty()
}
