//! Rows of the store. Timestamps are milliseconds since the Unix epoch.

use keyhold_core::grant::GrantConstraint;
use keyhold_core::ids::{AliasName, KeyId};
use keyhold_core::key::{KeyManager, KeySpec, KeyState, KeyUsage, Origin};

/// A KMS key's metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    /// The key id.
    pub key_id: KeyId,
    /// The owning account.
    pub account: String,
    /// Free-text description (may be empty).
    pub description: String,
    /// Type of key material.
    pub key_spec: KeySpec,
    /// What the key is for.
    pub key_usage: KeyUsage,
    /// Where its material came from.
    pub origin: Origin,
    /// Lifecycle state.
    pub state: KeyState,
    /// Creation time.
    pub created_at: i64,
    /// When a scheduled deletion happens, if one is scheduled.
    pub deletion_date: Option<i64>,
    /// The waiting period of the scheduled deletion, in days.
    pub pending_window_days: Option<u32>,
    /// The version new encryptions use.
    pub current_version: u32,
    /// The key policy (JSON).
    pub policy: String,
    /// Customer or AWS managed.
    pub key_manager: KeyManager,
    /// Automatic rotation period in days, when automatic rotation is enabled.
    pub rotation_period_days: Option<u32>,
    /// When the next automatic rotation is due.
    pub next_rotation_at: Option<i64>,
    /// For imported material: `KEY_MATERIAL_EXPIRES` or `KEY_MATERIAL_DOES_NOT_EXPIRE`.
    pub expiration_model: Option<String>,
    /// For imported material that expires: when.
    pub valid_to: Option<i64>,
    /// For imported material: a digest that identifies it, so a re-import can be checked to
    /// be the same material even after the material was deleted.
    pub material_digest: Option<String>,
    /// The custom key store holding the key's material (`Origin` AWS_CLOUDHSM keys).
    #[serde(default)]
    pub custom_key_store_id: Option<String>,
    /// For a multi-Region key: where its primary is, and (on the primary) its replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_region: Option<MultiRegion>,
}

/// The Regions of a multi-Region key, as one of its keys records them.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MultiRegion {
    /// The Region of the primary key.
    pub primary: String,
    /// The Regions of its replicas, in the order they were made (kept on the primary's record;
    /// a replica's record leaves it empty).
    #[serde(default)]
    pub replicas: Vec<String>,
}

impl MultiRegion {
    /// Serialized for the store.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One version of a key's material, wrapped under the root key.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyVersionRecord {
    /// The key this version belongs to.
    pub key_id: KeyId,
    /// Version number (1 for the first material).
    pub version: u32,
    /// The material, wrapped under the root key with [`KeyVersionRecord::wrap_label`].
    #[serde(with = "b64")]
    pub wrapped_material: Vec<u8>,
    /// When this version was made.
    pub created_at: i64,
    /// How this version came to be: `None` for the first material (and for imported material
    /// pending rotation), else `AUTOMATIC` or `ON_DEMAND` rotation.
    pub rotation_type: Option<String>,
    /// For imported material: its id, description and expiry, whether it is in KMS now, and
    /// whether it waits for an on-demand rotation. `None` for generated material (and for
    /// material imported before keyhold kept this per version; the key's fields describe it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportedMaterial>,
}

/// What keyhold knows of one imported key material, kept beside its version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportedMaterial {
    /// The key material id (64 hex digits) derived from the material.
    pub material_id: String,
    /// The caller's description of the material (`KeyMaterialDescription`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `KEY_MATERIAL_EXPIRES` or `KEY_MATERIAL_DOES_NOT_EXPIRE`.
    pub expiration_model: String,
    /// When it expires, for `KEY_MATERIAL_EXPIRES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<i64>,
    /// False once the material was deleted or expired (`PENDING_IMPORT`): the version's
    /// wrapped material is then empty until the same material is imported again.
    pub present: bool,
    /// True for new material imported but not yet made current by `RotateKeyOnDemand`
    /// (`PENDING_ROTATION`).
    pub pending_rotation: bool,
}

impl ImportedMaterial {
    /// Serialized for the store.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl KeyVersionRecord {
    /// The root-key label that binds wrapped material to its key and version.
    pub fn wrap_label(key_id: &KeyId, version: u32) -> Vec<u8> {
        format!("keyhold:key-material:{key_id}:{version}").into_bytes()
    }

    /// False for imported material that was deleted or expired (nothing is wrapped).
    pub fn has_material(&self) -> bool {
        !self.wrapped_material.is_empty()
    }
}

impl std::fmt::Debug for KeyVersionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVersionRecord")
            .field("key_id", &self.key_id)
            .field("version", &self.version)
            .field("rotation_type", &self.rotation_type)
            .finish_non_exhaustive()
    }
}

/// An alias.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AliasRecord {
    /// Owning account.
    pub account: String,
    /// The alias name (`alias/...`).
    pub name: AliasName,
    /// The key it points at.
    pub target: KeyId,
    /// Creation time.
    pub created_at: i64,
    /// Time of the last UpdateAlias (or creation).
    pub updated_at: i64,
}

/// A tag on a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tag {
    /// Tag key.
    pub key: String,
    /// Tag value.
    pub value: String,
}

/// A custom key store: keyhold's AWS_CLOUDHSM key store, backed by a PKCS#11 token whose label
/// is the store's `CloudHsmClusterId`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CustomKeyStoreRecord {
    /// `cks-` and 17 hex digits.
    pub id: String,
    /// The owning account.
    pub account: String,
    /// Its name, unique in the account.
    pub name: String,
    /// The `CloudHsmClusterId`: the label of the PKCS#11 token (one store per token).
    pub cluster_id: String,
    /// The trust anchor certificate given at creation (kept and returned, not checked).
    pub trust_anchor: String,
    /// The token's user PIN (`KeyStorePassword`), wrapped under the root key with
    /// [`CustomKeyStoreRecord::wrap_label`].
    #[serde(with = "b64")]
    pub password_wrapped: Vec<u8>,
    /// Whether the store should be connected (servers connect it at start).
    pub connected: bool,
    /// Creation time.
    pub created_at: i64,
}

impl CustomKeyStoreRecord {
    /// The root-key label that binds a wrapped password to its store.
    pub fn wrap_label(id: &str) -> Vec<u8> {
        format!("keyhold:custom-key-store-password:{id}").into_bytes()
    }
}

impl std::fmt::Debug for CustomKeyStoreRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomKeyStoreRecord")
            .field("id", &self.id)
            .field("account", &self.account)
            .field("name", &self.name)
            .field("cluster_id", &self.cluster_id)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// A principal that may call the API.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrincipalRecord {
    /// The access key id clients sign with.
    pub access_key_id: String,
    /// `arn:aws:iam::ACCOUNT:user/NAME`.
    pub arn: String,
    /// The principal's account.
    pub account: String,
    /// The secret access key, wrapped under the root key with
    /// [`PrincipalRecord::wrap_label`].
    #[serde(with = "b64")]
    pub wrapped_secret: Vec<u8>,
    /// Creation time.
    pub created_at: i64,
}

impl PrincipalRecord {
    /// The root-key label that binds a wrapped secret to its access key id.
    pub fn wrap_label(access_key_id: &str) -> Vec<u8> {
        format!("keyhold:principal-secret:{access_key_id}").into_bytes()
    }
}

impl std::fmt::Debug for PrincipalRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalRecord")
            .field("access_key_id", &self.access_key_id)
            .field("arn", &self.arn)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// A grant: permission for a grantee to use a key for some operations.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantRecord {
    /// 64 hex digits.
    pub grant_id: String,
    /// The key it applies to.
    pub key_id: KeyId,
    /// Optional name (CreateGrant's idempotency token).
    pub name: Option<String>,
    /// Who may use the key: an IAM ARN (empty for a grant to a service principal).
    pub grantee: String,
    /// Who may retire the grant (an IAM ARN).
    pub retiring: Option<String>,
    /// The service principal that may use the key (`GranteeServicePrincipal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grantee_service: Option<String>,
    /// The service principal that may retire the grant (`RetiringServicePrincipal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring_service: Option<String>,
    /// The `SourceArn` constraint: the grant applies only to requests made on behalf of this
    /// resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_arn: Option<String>,
    /// The account that created the grant.
    pub issuing_account: String,
    /// Operation names (`Encrypt`, `Decrypt`, ...).
    pub operations: Vec<String>,
    /// The encryption context constraint, if any (stored as AWS's JSON,
    /// `{"EncryptionContextSubset": {...}}`; in backups as that JSON text).
    #[serde(with = "constraint_text")]
    pub constraints: Option<GrantConstraint>,
    /// The grant token handed to the creator.
    pub token: String,
    /// Creation time.
    pub created_at: i64,
}

impl std::fmt::Debug for GrantRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantRecord")
            .field("grant_id", &self.grant_id)
            .field("key_id", &self.key_id)
            .field("grantee", &self.grantee)
            .field("grantee_service", &self.grantee_service)
            .field("operations", &self.operations)
            .finish_non_exhaustive()
    }
}

/// The last successful cryptographic use of a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyLastUsage {
    /// The key.
    pub key_id: KeyId,
    /// The operation (`Encrypt`, `Decrypt`, ...).
    pub operation: String,
    /// When, in milliseconds since the epoch.
    pub used_at: i64,
    /// The audit event id of that call.
    pub event_id: String,
}

/// Every row of a store: what a backup holds. Secrets in it stay wrapped under the root key.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Keys.
    pub keys: Vec<KeyRecord>,
    /// Key material versions.
    pub versions: Vec<KeyVersionRecord>,
    /// Aliases.
    pub aliases: Vec<AliasRecord>,
    /// Tags, with their key.
    pub tags: Vec<(KeyId, Tag)>,
    /// Grants.
    pub grants: Vec<GrantRecord>,
    /// Principals.
    pub principals: Vec<PrincipalRecord>,
    /// Last uses of keys.
    pub usage: Vec<KeyLastUsage>,
    /// Custom key stores.
    #[serde(default)]
    pub custom_key_stores: Vec<CustomKeyStoreRecord>,
}

/// One row of a store, as a backup streams it: keys come before the rows that name them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Record {
    /// A key.
    Key(KeyRecord),
    /// A version of a key's material.
    Version(KeyVersionRecord),
    /// An alias.
    Alias(AliasRecord),
    /// A tag, with its key.
    Tag(KeyId, Tag),
    /// A grant.
    Grant(GrantRecord),
    /// A principal.
    Principal(PrincipalRecord),
    /// The last use of a key.
    Usage(KeyLastUsage),
    /// A custom key store.
    CustomKeyStore(CustomKeyStoreRecord),
}

impl Snapshot {
    /// Adds one record.
    pub fn push(&mut self, r: Record) {
        match r {
            Record::Key(k) => self.keys.push(k),
            Record::Version(v) => self.versions.push(v),
            Record::Alias(a) => self.aliases.push(a),
            Record::Tag(id, t) => self.tags.push((id, t)),
            Record::Grant(g) => self.grants.push(g),
            Record::Principal(p) => self.principals.push(p),
            Record::Usage(u) => self.usage.push(u),
            Record::CustomKeyStore(c) => self.custom_key_stores.push(c),
        }
    }

    /// Every record, in the order a store takes them back.
    pub fn records(self) -> impl Iterator<Item = Record> {
        self.keys
            .into_iter()
            .map(Record::Key)
            .chain(self.versions.into_iter().map(Record::Version))
            .chain(self.aliases.into_iter().map(Record::Alias))
            .chain(self.tags.into_iter().map(|(id, t)| Record::Tag(id, t)))
            .chain(self.grants.into_iter().map(Record::Grant))
            .chain(self.principals.into_iter().map(Record::Principal))
            .chain(self.usage.into_iter().map(Record::Usage))
            .chain(
                self.custom_key_stores
                    .into_iter()
                    .map(Record::CustomKeyStore),
            )
    }
}

/// Where [`crate::Store::export_to`] puts records, one at a time.
pub trait RecordSink: Send {
    /// Forgets every record put so far: the export starts over (its transaction was retried).
    fn restart(&mut self) -> Result<(), crate::StoreError>;
    /// Takes one record.
    fn put(&mut self, r: Record) -> Result<(), crate::StoreError>;
}

/// Where [`crate::Store::import_from`] reads records from, one at a time.
pub trait RecordSource: Send {
    /// Goes back to the first record (the import's transaction was retried).
    fn rewind(&mut self) -> Result<(), crate::StoreError>;
    /// The next record; `None` at the end.
    fn next_record(&mut self) -> Result<Option<Record>, crate::StoreError>;
}

impl RecordSink for Snapshot {
    fn restart(&mut self) -> Result<(), crate::StoreError> {
        *self = Snapshot::default();
        Ok(())
    }
    fn put(&mut self, r: Record) -> Result<(), crate::StoreError> {
        self.push(r);
        Ok(())
    }
}

/// The newest signed digest of one node's audit chain, recorded outside the audit files so
/// that deleting the newest segments together with their digests is caught.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// The node whose chain it is.
    pub node: String,
    /// The digest's number.
    pub digest: u64,
    /// SHA-256 of the digest's payload, hex.
    pub digest_hash: String,
    /// When it was recorded (milliseconds since the epoch).
    pub recorded_at: i64,
}

/// An administrative action taken outside the API (`keyhold admin ...`), kept in the store
/// until a server records it in its audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminEvent {
    /// Unique id (the audit event's id).
    pub id: String,
    /// What was done (`CreatePrincipal`, `RotateRootKey`, ...).
    pub event_name: String,
    /// The action's parameters (JSON), never a secret.
    pub detail: String,
    /// When it was done (milliseconds since the epoch).
    pub created_at: i64,
}

/// A grant constraint as its stored JSON text in serialized records (the backup format).
mod constraint_text {
    use keyhold_core::grant::GrantConstraint;

    pub fn serialize<S: serde::Serializer>(
        v: &Option<GrantConstraint>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(c) => s.serialize_some(&c.to_json()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<GrantConstraint>, D::Error> {
        let s = <Option<String> as serde::Deserialize>::deserialize(d)?;
        Ok(s.as_deref().map(GrantConstraint::from_json))
    }
}

/// Bytes as base64 in serialized records.
mod b64 {
    use base64::Engine as _;

    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}
