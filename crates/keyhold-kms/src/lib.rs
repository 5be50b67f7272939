//! keyhold-kms: the engine behind the KMS API. Knows nothing of HTTP.
//!
//! # Layout
//! - [`Engine`]: owns the store, root key, keyring, clock and audit sink; [`Engine::call`]
//!   runs one typed [`Request`] for an authenticated principal, audits it and answers a typed
//!   [`Response`]: the one entry point of every front door.
//! - [`ops`]: the operations, grouped by area, and the [`Operation`], [`Request`] and
//!   [`Response`] enums that name them ([`Request::from_json`] is the AWS JSON 1.1 decoder).
//! - [`api`]: request and response shapes with AWS's field names; [`validate`]: turning
//!   request fields into typed values with AWS's validation errors.
//! - `authz`: key policies and grants applied to each request (`Engine::authorize`; the
//!   grant rule, `grant_allows`, lives here too).
//! - [`keystores`]: this node's connections to the PKCS#11 tokens of custom key stores.
//! - [`owned`]: AWS owned keys: one per service (SSE-S3's), in no account, never reachable
//!   through the KMS API.
//! - [`catalog`]: the S3 gateway's buckets and objects, kept in the store ([`Engine::catalog`]).
//! - `managed`: AWS managed keys (`alias/aws/<service>`), made on first use.
//! - [`keyring`]: cached key records, unwrapped material and alias targets.
//! - [`seed`]: keys declared in a seed file, created idempotently at start.
//! - [`principal`]: principals, their credentials and the credential cache.
//! - [`regions`]: the Regions a deployment serves, one engine each over one store, and
//!   what crosses between them (multi-Region keys).
//! - [`audit`]: CloudTrail-shaped events and their sinks.
//! - [`clock`]: the injectable clock; [`error`]: AWS error names and the engine's error.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub(crate) mod authz;
pub mod clock;
pub mod error;
pub mod keyring;
pub mod keystores;
mod managed;
pub mod ops;
pub mod owned;
pub mod principal;
pub mod regions;
pub mod seed;
pub mod validate;

/// The S3 gateway's catalog records, kept in the engine's store.
pub mod catalog {
    pub use keyhold_store::{
        BucketRecord, ObjectCatalog, ObjectRecord, PartRecord, StoreError, UploadRecord,
    };
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use keyhold_core::ids::{key_arn, KeyId, KeyRef};
use keyhold_core::secret::SecretBytes;
use keyhold_core::CoreError;
use keyhold_hsm::RootKey;
use keyhold_store::{KeyLastUsage, KeyRecord, KeyVersionRecord, RegionalStore, Store};

use crate::audit::{AuditSink, CallInfo, Parameters};
use crate::clock::Clock;
use crate::error::{ErrorCode, KmsError};
use crate::keyring::Keyring;
pub use crate::ops::{Operation, Request, Response};
use crate::principal::{Credential, CredentialCache, Principal};

/// The refusal of every request while the audit log cannot be written.
fn audit_failed(why: &str) -> KmsError {
    tracing::error!(%why, "refusing requests: the audit log cannot be written");
    KmsError::new(
        ErrorCode::KMSInternalException,
        format!("The audit log cannot be written ({why}); keyhold refuses requests until it can."),
    )
}

/// Facts about a request that are not in its body.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// Request id, returned to the client and written to the audit event.
    pub request_id: String,
    /// Client address.
    pub source_ip: String,
    /// Client User-Agent header.
    pub user_agent: String,
    /// The service a request comes through (`s3.us-east-1.amazonaws.com`), set only by
    /// keyhold's own service front doors, never from a client's request (`kms:ViaService`).
    pub via_service: Option<String>,
    /// True when the request arrived over TLS (`aws:SecureTransport`); set by the front door
    /// from the connection itself, never from the request.
    pub secure_transport: bool,
    /// The resource a service principal acts for (`aws:SourceArn`, and a grant's `SourceArn`
    /// constraint); set only by keyhold's own services, never from a client's request.
    pub source_arn: Option<String>,
}

/// What is known of a request refused before it became a typed call, for its audit event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Refused<'a> {
    /// The operation named, as sent (may be empty or unknown).
    pub op_name: &'a str,
    /// The authenticated caller, once authentication has passed.
    pub principal: Option<&'a Principal>,
    /// The access key id claimed, when authentication failed.
    pub claimed_access_key_id: Option<&'a str>,
}

/// The one log line of a request, at info (`keyhold::request`): what was asked, by whom, of
/// which key, and how it ended. Never a secret: names, ids and codes only.
fn request_log(
    meta: &RequestMeta,
    operation: &str,
    principal: Option<&Principal>,
    key: Option<&str>,
    error: Option<&KmsError>,
    started: std::time::Instant,
) {
    tracing::info!(
        target: "keyhold::request",
        request_id = %meta.request_id,
        operation,
        principal = principal.map_or("-", |p| p.arn.as_str()),
        key = key.unwrap_or("-"),
        status = error.map_or(200, |e| e.code.http_status()),
        error = error.map_or("-", |e| e.code.as_str()),
        via = meta.via_service.as_deref().unwrap_or("-"),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
}

/// The service principal of a `kms:ViaService` value (`s3.us-east-1.amazonaws.com` is
/// `s3.amazonaws.com`), for the `invokedBy` of audit events.
fn service_principal(via: &str) -> String {
    match via.split_once('.') {
        Some((service, _)) => format!("{service}.amazonaws.com"),
        None => via.to_string(),
    }
}

/// A request to one of keyhold's service front doors (the S3 gateway), for its audit event.
#[derive(Debug, Clone, Copy)]
pub struct ServiceRequest<'a> {
    /// The service's event source (`s3.amazonaws.com`).
    pub event_source: &'a str,
    /// The operation (`PutObject`); may be empty when the request was refused before it
    /// was recognised.
    pub event_name: &'a str,
    /// The authenticated caller, if authentication passed.
    pub principal: Option<&'a Principal>,
    /// The access key id claimed, when authentication failed.
    pub claimed_access_key_id: Option<&'a str>,
    /// Parameters of the request worth recording (never a secret, never a body).
    pub parameters: &'a serde_json::Value,
    /// Error code and message, when the request failed.
    pub error: Option<(&'a str, &'a str)>,
    /// ARNs of the buckets and objects involved.
    pub resources: &'a [String],
    /// True for requests that change nothing.
    pub read_only: bool,
}

/// The engine.
pub struct Engine {
    /// The region this server answers for; part of every ARN.
    region: String,
    /// Durable state: this Region's view of the store.
    store: Arc<RegionalStore>,
    /// The other Regions this deployment serves (none for a lone engine).
    peers: std::sync::Weak<regions::Regions>,
    /// Wraps and unwraps key material and credentials.
    root: Arc<dyn RootKey>,
    /// Wall-clock time.
    clock: Arc<dyn Clock>,
    /// Where every call's event goes.
    audit: Arc<dyn AuditSink>,
    /// Cached key state and material.
    keyring: Keyring,
    /// Cached credentials for SigV4.
    credentials: CredentialCache,
    /// Last uses of keys not yet written to the store (flushed in batches, so the hot path
    /// never writes to the database).
    usage: Mutex<HashMap<KeyId, KeyLastUsage>>,
    /// Serialises read-modify-write changes of key state, so two concurrent changes of one key
    /// cannot lose one another.
    write_lock: Mutex<()>,
    /// This node's connections to custom key store tokens.
    key_stores: keystores::Connections,
}

/// What an operation reports back besides its response: the keys it touched.
#[derive(Debug, Default)]
pub struct CallRecord {
    /// ARNs of the keys involved, for the audit event's `resources`.
    pub resources: Vec<String>,
    /// The client's address (the `aws:SourceIp` condition key).
    pub source_ip: String,
    /// The authorization decision, for the audit event.
    pub decision: Option<String>,
    /// The service the request came through, if any (`kms:ViaService`).
    pub via_service: Option<String>,
    /// The request arrived over TLS (`aws:SecureTransport`).
    pub secure_transport: bool,
    /// The resource the calling service acts for (`aws:SourceArn`).
    pub source_arn: Option<String>,
}

impl Engine {
    /// Builds an engine. `dev` is an extra fixed credential that is never stored.
    pub fn new(
        region: impl Into<String>,
        store: Arc<dyn Store>,
        root: Arc<dyn RootKey>,
        clock: Arc<dyn Clock>,
        audit: Arc<dyn AuditSink>,
        dev: Option<Credential>,
    ) -> Self {
        let region = region.into();
        let store = Arc::new(RegionalStore::new(store, &region, true));
        Self::regional(
            region,
            store,
            root,
            clock,
            audit,
            dev,
            std::sync::Weak::new(),
        )
    }

    /// An engine for one of several Regions served over one store.
    pub(crate) fn regional(
        region: String,
        store: Arc<RegionalStore>,
        root: Arc<dyn RootKey>,
        clock: Arc<dyn Clock>,
        audit: Arc<dyn AuditSink>,
        dev: Option<Credential>,
        peers: std::sync::Weak<regions::Regions>,
    ) -> Self {
        Self {
            region,
            store,
            peers,
            root,
            clock,
            audit,
            keyring: Keyring::default(),
            credentials: CredentialCache::new(dev),
            usage: Mutex::new(HashMap::new()),
            write_lock: Mutex::new(()),
            key_stores: keystores::Connections::default(),
        }
    }

    /// Serves cached key state for at most `bound` (for several nodes sharing one store: a
    /// change made on another node is seen within it).
    pub fn with_shared_store(mut self, bound: std::time::Duration) -> Self {
        self.keyring = Keyring::with_staleness(Some(bound));
        self
    }

    /// Forgets the cached state of the key whose row (by its stored id) another node changed,
    /// or all of it when that is not known.
    pub(crate) fn forget_changed(&self, changed: Option<KeyId>) {
        match changed {
            // The stored id's translation is its own inverse.
            Some(stored) => self.keyring.forget_key(&self.store.stored_id(&stored)),
            None => self.keyring.clear_state(),
        }
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The root key's provider name.
    pub fn root_provider(&self) -> &'static str {
        self.root.provider()
    }

    /// Credentials for an access key id (for SigV4 verification).
    pub fn credential(&self, access_key_id: &str) -> Result<Option<Credential>, KmsError> {
        self.credentials
            .lookup(self.store.as_ref(), self.root.as_ref(), access_key_id)
    }

    /// Runs one request for `principal` and audits it. Every front door (the KMS JSON wire,
    /// the S3 gateway, the console) comes through here, so key policies, grants, key state and
    /// the audit log apply to every path alike. `meta` carries what the front door knows of
    /// the transport and, for a service front door, the service (`kms:ViaService`).
    pub fn call(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        request: Request,
    ) -> Result<Response, KmsError> {
        let op = request.operation();
        let parameters = request.parameters();
        let mut rec = CallRecord {
            source_ip: meta.source_ip.clone(),
            via_service: meta.via_service.clone(),
            secure_transport: meta.secure_transport,
            source_arn: meta.source_arn.clone(),
            ..CallRecord::default()
        };
        let event_id = uuid::Uuid::new_v4().to_string();
        // Fail closed: nothing is done that could not be audited.
        if let Some(why) = self.audit.failure() {
            return Err(audit_failed(&why));
        }
        let started = std::time::Instant::now();
        let result = request.run(self, principal, &mut rec);
        let invoker = meta.via_service.as_deref().map(service_principal);
        let err = result.as_ref().err();
        let now = self.clock.now_ms();
        if err.is_none() && op.tracks_usage() {
            self.note_usage(op.name(), &rec.resources, now, &event_id);
        }
        let recorded = self.audit(&CallInfo {
            event_id: &event_id,
            event_name: op.name(),
            principal: Some(principal),
            claimed_access_key_id: None,
            source_ip: &meta.source_ip,
            user_agent: &meta.user_agent,
            request_id: &meta.request_id,
            parameters: Parameters::Typed(&parameters),
            error: err.map(|e| (e.code.as_str(), e.message.as_str())),
            resources: &rec.resources,
            decision: rec.decision.as_deref(),
            region: &self.region,
            time_ms: now,
            read_only: op.is_read_only(),
            event_source: audit::KMS_SOURCE,
            invoked_by: invoker.as_deref(),
        });
        let result = match recorded {
            Ok(()) => result,
            Err(why) => Err(audit_failed(&why)),
        };
        let err = result.as_ref().err();
        request_log(
            meta,
            op.name(),
            Some(principal),
            rec.resources.first().map(String::as_str),
            err,
            started,
        );
        result
    }

    /// Makes the audit log durable and signed up to here (at shutdown).
    pub fn close_audit(&self) -> std::io::Result<()> {
        self.audit.close()
    }

    /// Audits a request refused before it became a typed call: authentication or framing
    /// (no `principal`), or an unknown operation or a body that does not parse (with the
    /// authenticated `principal`). Its body is not recorded (`requestParameters` is null):
    /// the event's size does not depend on what the client sent.
    pub fn audit_refused(&self, meta: &RequestMeta, refused: Refused<'_>, error: &KmsError) {
        let name = ops::Operation::from_name(refused.op_name).map_or("unknown", |o| o.name());
        request_log(
            meta,
            name,
            refused.principal,
            None,
            Some(error),
            std::time::Instant::now(),
        );
        let _ = self.audit(&CallInfo {
            event_id: &uuid::Uuid::new_v4().to_string(),
            event_name: refused.op_name,
            principal: refused.principal,
            claimed_access_key_id: refused.claimed_access_key_id,
            source_ip: &meta.source_ip,
            user_agent: &meta.user_agent,
            request_id: &meta.request_id,
            parameters: Parameters::Raw(b""),
            error: Some((error.code.as_str(), error.message.as_str())),
            resources: &[],
            decision: None,
            region: &self.region,
            time_ms: self.clock.now_ms(),
            read_only: false,
            event_source: audit::KMS_SOURCE,
            invoked_by: None,
        });
    }

    /// Audits one request to a service front door (the S3 gateway), in the same log as KMS
    /// calls. Fails when the event cannot be written: the front door then refuses the request.
    pub fn audit_service_request(
        &self,
        meta: &RequestMeta,
        req: &ServiceRequest<'_>,
    ) -> Result<(), KmsError> {
        if let Some(why) = self.audit.failure() {
            return Err(audit_failed(&why));
        }
        self.audit(&CallInfo {
            event_id: &uuid::Uuid::new_v4().to_string(),
            event_name: req.event_name,
            principal: req.principal,
            claimed_access_key_id: req.claimed_access_key_id,
            source_ip: &meta.source_ip,
            user_agent: &meta.user_agent,
            request_id: &meta.request_id,
            parameters: Parameters::Typed(req.parameters),
            error: req.error,
            resources: req.resources,
            decision: None,
            region: &self.region,
            time_ms: self.clock.now_ms(),
            read_only: req.read_only,
            event_source: req.event_source,
            invoked_by: None,
        })
        .map_err(|why| audit_failed(&why))
    }

    /// Whether the audit log can be written now (a front door refuses work while it cannot).
    pub fn audit_available(&self) -> Result<(), KmsError> {
        match self.audit.failure() {
            Some(why) => Err(audit_failed(&why)),
            None => Ok(()),
        }
    }

    /// Whether this node can do work: the audit log can be written and the store answers
    /// (`/health/ready`).
    pub fn ready(&self) -> Result<(), String> {
        if let Some(why) = self.audit.failure() {
            return Err(format!("the audit log cannot be written: {why}"));
        }
        self.store
            .get_audit_head(&uuid::Uuid::new_v4().to_string())
            .map(|_| ())
            .map_err(|e| format!("the store does not answer: {e}"))
    }

    /// The S3 gateway's catalog of buckets, objects and uploads, in this engine's store.
    pub fn catalog(&self) -> &dyn catalog::ObjectCatalog {
        self.store.inner().as_ref()
    }

    /// Audits something the service did by itself (a certificate renewal, ...): `detail`
    /// becomes the event's requestParameters.
    pub fn audit_service_event(&self, event_name: &str, detail: &serde_json::Value) {
        let body = serde_json::to_vec(detail).unwrap_or_default();
        let _ = self.audit(&CallInfo {
            event_id: &uuid::Uuid::new_v4().to_string(),
            event_name,
            principal: None,
            claimed_access_key_id: None,
            source_ip: "keyhold",
            user_agent: "keyhold",
            request_id: &uuid::Uuid::new_v4().to_string(),
            parameters: Parameters::Raw(&body),
            error: None,
            resources: &[],
            decision: None,
            region: &self.region,
            time_ms: self.clock.now_ms(),
            read_only: false,
            event_source: audit::KMS_SOURCE,
            invoked_by: None,
        });
    }

    /// Records the administrative actions taken outside the API (`keyhold admin ...`, kept
    /// in the store meanwhile) in the audit log, oldest first. Returns how many.
    pub fn record_admin_events(&self) -> Result<usize, KmsError> {
        let mut done = 0;
        loop {
            let batch = self.store.list_admin_events(100)?;
            if batch.is_empty() {
                return Ok(done);
            }
            for e in batch {
                let detail: serde_json::Value =
                    serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null);
                let body = serde_json::to_vec(&detail).unwrap_or_default();
                self.audit(&CallInfo {
                    event_id: &e.id,
                    event_name: &e.event_name,
                    principal: None,
                    claimed_access_key_id: None,
                    source_ip: "keyhold-admin",
                    user_agent: "keyhold admin",
                    request_id: &e.id,
                    parameters: Parameters::Raw(&body),
                    error: None,
                    resources: &[],
                    decision: None,
                    region: &self.region,
                    time_ms: e.created_at,
                    read_only: false,
                    event_source: audit::KMS_SOURCE,
                    invoked_by: None,
                })
                .map_err(|why| audit_failed(&why))?;
                self.store.delete_admin_event(&e.id)?;
                done += 1;
            }
        }
    }

    fn audit(&self, info: &CallInfo<'_>) -> Result<(), String> {
        let ev = audit::event(info);
        self.audit.record(&ev).map_err(|e| {
            tracing::error!(error = %e, request_id = info.request_id, "audit write failed");
            e.to_string()
        })
    }

    fn note_usage(&self, op_name: &str, resources: &[String], now: i64, event_id: &str) {
        let mut pending = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        for arn in resources {
            let Some(id) = arn.rsplit('/').next().and_then(|i| KeyId::parse(i).ok()) else {
                continue;
            };
            pending.insert(
                id,
                KeyLastUsage {
                    key_id: id,
                    operation: op_name.to_string(),
                    used_at: now,
                    event_id: event_id.to_string(),
                },
            );
        }
    }

    /// The last successful cryptographic use of a key, from memory or the store.
    pub(crate) fn last_usage(&self, id: &KeyId) -> Result<Option<KeyLastUsage>, KmsError> {
        if let Some(u) = self.usage.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(Some(u.clone()));
        }
        Ok(self.store.get_key_usage(id)?)
    }

    /// Writes the pending last-use records to the store, in one batch. Returns how many.
    pub fn flush_usage(&self) -> Result<usize, KmsError> {
        let batch: Vec<KeyLastUsage> = {
            let mut pending = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().map(|(_, u)| u).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.store.put_key_usage(&batch) {
            // Put them back (unless a newer use arrived meanwhile) and try again next time.
            let mut pending = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            for u in batch {
                pending.entry(u.key_id).or_insert(u);
            }
            return Err(e.into());
        }
        Ok(batch.len())
    }

    /// Destroys every key whose deletion window has passed. Returns how many were destroyed.
    pub fn run_due_deletions(&self) -> Result<usize, KmsError> {
        let _guard = self.lock_writes();
        let due = self.store.keys_due_for_deletion(self.clock.now_ms())?;
        let mut deleted = 0;
        for id in &due {
            let record = self.store.get_key(id).ok().flatten();
            // A key of a custom key store: its AES key is destroyed inside the token too (when
            // the store is connected; otherwise it stays there, unusable, as an orphan).
            if let Some(store) = record.as_ref().and_then(|r| r.custom_key_store_id.as_ref()) {
                if let Some(keystores::Connection::Connected(t)) = self.key_stores.get(store) {
                    if let Err(e) = t.destroy_key(&keystores::hsm_label(id)) {
                        tracing::warn!(key_id = %id, error = %e, "HSM key not destroyed");
                    }
                }
            }
            match self.store.delete_key(id) {
                Ok(()) => {
                    deleted += 1;
                    tracing::info!(key_id = %id, "key deleted after its waiting period");
                    if let Some(r) = &record {
                        self.after_delete(r);
                    }
                }
                // Another node sharing the store deleted it first.
                Err(keyhold_store::StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            self.keyring.forget_key(id);
        }
        Ok(deleted)
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The engine of another Region this deployment serves.
    pub(crate) fn peer(&self, region: &str) -> Option<Arc<Engine>> {
        self.peers.upgrade()?.get(region).cloned()
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub(crate) fn lock_writes(&self) -> MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn key_arn(&self, rec: &KeyRecord) -> String {
        key_arn(&self.region, &rec.account, &rec.key_id)
    }

    /// Finds the key a request names. `aliases` says whether alias names are accepted here.
    pub(crate) fn resolve_key(
        &self,
        caller: &Principal,
        name: &str,
        aliases: bool,
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let key_ref = KeyRef::parse(name).map_err(|e| match e {
            CoreError::InvalidArn(_) => KmsError::new(
                ErrorCode::InvalidArnException,
                format!("Invalid arn {name}"),
            ),
            _ => KmsError::not_found(format!("Invalid keyId '{name}'")),
        })?;
        if key_ref.is_alias() && !aliases {
            return Err(KmsError::not_found(format!("Invalid keyId '{name}'")));
        }
        let (account, id) = match key_ref {
            KeyRef::Id(id) => (caller.account.clone(), id),
            KeyRef::KeyArn {
                region,
                account,
                id,
            } => {
                if region != self.region {
                    return Err(KmsError::not_found(format!("Key '{name}' does not exist")));
                }
                (account, id)
            }
            KeyRef::Alias(alias) => {
                let id = match self.alias_target(&caller.account, alias.as_str(), name) {
                    Err(e) if e.code == ErrorCode::NotFoundException && alias.is_reserved() => {
                        self.managed_key(&caller.account, &alias)?.ok_or(e)?
                    }
                    other => other?,
                };
                (caller.account.clone(), id)
            }
            KeyRef::AliasArn {
                region,
                account,
                alias,
            } => {
                if region != self.region {
                    return Err(KmsError::not_found(format!("Alias {name} is not found.")));
                }
                let id = self.alias_target(&account, alias.as_str(), name)?;
                (account, id)
            }
        };
        // An owned key is in no account a caller can name.
        let named = |r: &Arc<KeyRecord>| r.account == account && r.account != owned::OWNED_ACCOUNT;
        let mut rec = self.key_record(&id)?.filter(named);
        // A replica left Creating, or a primary's handover left half-way (by a crash during
        // ReplicateKey or UpdatePrimaryRegion), is finished on first use (never under the write
        // lock: requests resolve their key before taking it). A replica whose primary's Region
        // stopped half-way finishes it when it is described (`ops::multiregion::configuration`),
        // off the cryptographic path.
        if let Some(r) = rec.clone() {
            if r.state == keyhold_core::key::KeyState::Creating {
                self.finish_replica(&id)?;
                rec = self.key_record(&id)?.filter(named);
            } else if ops::handing_over(self, &r) {
                self.finish_handover(&id)?;
                rec = self.key_record(&id)?.filter(named);
            }
        }
        rec.ok_or_else(|| {
            KmsError::not_found(format!(
                "Key '{}' does not exist",
                key_arn(&self.region, &account, &id)
            ))
        })
    }

    /// Finds a key that a request is about to change (aliases not accepted), records it as
    /// the call's resource, authorizes `action`, and refuses a key pending deletion.
    pub(crate) fn resolve_for_change(
        &self,
        caller: &Principal,
        name: &str,
        rec: &mut CallRecord,
        action: &str,
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let key = self.key_for(
            caller,
            rec,
            name,
            false,
            action,
            &authz::Conditions::default(),
        )?;
        if matches!(
            key.state,
            keyhold_core::key::KeyState::PendingDeletion
                | keyhold_core::key::KeyState::PendingReplicaDeletion
        ) {
            return Err(KmsError::invalid_state(
                &self.key_arn(&key),
                key.state.as_str(),
            ));
        }
        Ok(key)
    }

    fn alias_target(&self, account: &str, alias: &str, shown: &str) -> Result<KeyId, KmsError> {
        if let Some(id) = self.keyring.alias(account, alias) {
            return Ok(id);
        }
        let parsed = keyhold_core::ids::AliasName::parse(alias)
            .map_err(|_| KmsError::not_found(format!("Alias {shown} is not found.")))?;
        match self.store.get_alias(account, &parsed)? {
            Some(a) => {
                self.keyring.put_alias(account, alias, a.target);
                Ok(a.target)
            }
            None => Err(KmsError::not_found(format!("Alias {shown} is not found."))),
        }
    }

    /// A key record, from the keyring or the store.
    pub(crate) fn key_record(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, KmsError> {
        if let Some(r) = self.keyring.record(id) {
            if r.valid_to.is_none_or(|t| t > self.clock.now_ms()) {
                metrics::counter!("keyhold_key_cache_total", "kind" => "record", "result" => "hit")
                    .increment(1);
                return Ok(Some(r));
            }
        }
        metrics::counter!("keyhold_key_cache_total", "kind" => "record", "result" => "miss")
            .increment(1);
        let Some(mut rec) = self.store.get_key(id)? else {
            return Ok(None);
        };
        // Imported material past its ValidTo is deleted before anyone can use it, without
        // waiting for the maintenance task.
        if rec.valid_to.is_some_and(|t| t <= self.clock.now_ms()) {
            self.expire_materials(id)?;
            match self.store.get_key(id)? {
                Some(r) => rec = r,
                None => return Ok(None),
            }
        }
        let rec = Arc::new(rec);
        self.keyring.put_record(rec.clone());
        Ok(Some(rec))
    }

    /// Unwrapped material of one key version, from the keyring or the store.
    pub(crate) fn material(
        &self,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<Arc<SecretBytes>>, KmsError> {
        if let Some(m) = self.keyring.material(id, version) {
            metrics::counter!("keyhold_key_cache_total", "kind" => "material", "result" => "hit")
                .increment(1);
            return Ok(Some(m));
        }
        metrics::counter!("keyhold_key_cache_total", "kind" => "material", "result" => "miss")
            .increment(1);
        let Some(v) = self.store.get_key_version(id, version)? else {
            // A multi-Region replica that has not received a rotation of its primary yet.
            let m = self.material_from_primary(id, version)?;
            if let Some(m) = &m {
                self.keyring.put_material(*id, version, m.clone());
            }
            return Ok(m);
        };
        // Deleted imported material, or new material not yet rotated in.
        if !v.has_material() || v.imported.as_ref().is_some_and(|i| i.pending_rotation) {
            return Ok(None);
        }
        let m = self
            .root
            .unwrap(&v.wrapped_material, &self.material_label(id, version))
            .map_err(KmsError::internal)?;
        let m = Arc::new(m);
        self.keyring.put_material(*id, version, m.clone());
        Ok(Some(m))
    }

    /// Material of a key's current version.
    pub(crate) fn current_material(&self, key: &KeyRecord) -> Result<Arc<SecretBytes>, KmsError> {
        self.material(&key.key_id, key.current_version)?
            .ok_or_else(|| KmsError::internal(format!("material of {} missing", key.key_id)))
    }

    /// Wraps a secret under the root key with `label`.
    pub(crate) fn root_wrap(&self, secret: &[u8], label: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.root.wrap(secret, label).map_err(KmsError::internal)
    }

    /// Unwraps a secret made by [`Engine::root_wrap`] with the same label.
    pub(crate) fn root_unwrap(
        &self,
        wrapped: &[u8],
        label: &[u8],
    ) -> Result<SecretBytes, keyhold_hsm::HsmError> {
        self.root.unwrap(wrapped, label)
    }

    /// Wraps fresh material for storage.
    pub(crate) fn wrap_material(
        &self,
        id: &KeyId,
        version: u32,
        material: &SecretBytes,
    ) -> Result<Vec<u8>, KmsError> {
        self.root
            .wrap(material.expose_secret(), &self.material_label(id, version))
            .map_err(KmsError::internal)
    }

    /// The root-key label of a key version's material: that of the id its row is stored
    /// under, so whatever reads the store (root-key rotation) finds it from the row alone.
    fn material_label(&self, id: &KeyId, version: u32) -> Vec<u8> {
        KeyVersionRecord::wrap_label(&self.store.stored_id(id), version)
    }

    /// Reads a key fresh from the store, lets `change` modify it, and writes it back, all under
    /// the write lock; the keyring forgets the old record.
    pub(crate) fn update_key(
        &self,
        caller: &Principal,
        name: &str,
        rec_out: &mut CallRecord,
        action: &str,
        conds: &authz::Conditions<'_>,
        change: impl FnOnce(&mut KeyRecord, &str) -> Result<(), KmsError>,
    ) -> Result<KeyRecord, KmsError> {
        let resolved = self.key_for(caller, rec_out, name, false, action, conds)?;
        let _guard = self.lock_writes();
        let mut rec = self
            .store
            .get_key(&resolved.key_id)?
            .ok_or_else(|| KmsError::not_found(format!("Key '{name}' does not exist")))?;
        let arn = self.key_arn(&rec);
        change(&mut rec, &arn)?;
        self.store.update_key(&rec)?;
        self.keyring.invalidate_key(&rec.key_id);
        Ok(rec)
    }
}
