//! Request and response shapes of the KMS API, with AWS's field names.
//!
//! Request fields are all optional here so that a missing field becomes AWS's
//! `ValidationException` (checked in the operation) rather than a decoding error; a field of the
//! wrong JSON type is a `SerializationException`. Blobs are base64 strings on the wire.

use std::collections::HashMap;

use keyhold_core::key::EncryptionAlgorithm;
use keyhold_core::secret::SecretBytes;
use serde::{Deserialize, Serialize};

/// A tag as sent and returned.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagDto {
    /// Tag key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_key: Option<String>,
    /// Tag value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_value: Option<String>,
}

/// The encryption context on the wire.
pub type ContextDto = Option<HashMap<String, String>>;

/// A secret string of a request (a key store password): zeroized when dropped, never shown by
/// `Debug`.
#[derive(Default, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// The secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(..)")
    }
}

/// A request shape. Every field is optional (a missing one is the operation's
/// `ValidationException`). Requests deserialize from AWS's PascalCase fields and serialize to
/// CloudTrail's camelCase `requestParameters`; fields marked `#[serde(skip_serializing)]`
/// (plaintext, ciphertext, signatures, passwords) are never serialized, so never audited.
macro_rules! request {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default, Deserialize, Serialize)]
        #[serde(rename_all(deserialize = "PascalCase", serialize = "camelCase"))]
        pub struct $name {
            $(
                $(#[$fm])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>
            ),*
        }
    };
}

request!(
    /// ReplicateKey.
    ReplicateKeyRequest {
        /// The primary key.
        key_id: String,
        /// The Region of the new replica.
        replica_region: String,
        /// The replica's key policy.
        policy: String,
        /// Skip the policy lockout check.
        bypass_policy_lockout_safety_check: bool,
        /// The replica's description.
        description: String,
        /// The replica's tags.
        tags: Vec<TagDto>,
    }
);

request!(
    /// UpdatePrimaryRegion.
    UpdatePrimaryRegionRequest {
        /// The current primary key.
        key_id: String,
        /// The Region of the replica to make primary.
        primary_region: String,
    }
);

request!(
    /// CreateKey.
    CreateKeyRequest {
        /// Key policy JSON.
        policy: String,
        /// Description.
        description: String,
        /// Key usage.
        key_usage: String,
        /// Deprecated name of KeySpec.
        customer_master_key_spec: String,
        /// Key spec.
        key_spec: String,
        /// Origin of the material.
        origin: String,
        /// Custom key store id.
        custom_key_store_id: String,
        /// Skip the policy lockout check.
        bypass_policy_lockout_safety_check: bool,
        /// Tags to attach.
        tags: Vec<TagDto>,
        /// Multi-Region key.
        multi_region: bool,
        /// External key store key id.
        xks_key_id: String,
    }
);

request!(
    /// DeleteImportedKeyMaterial.
    DeleteImportedKeyMaterialRequest {
        /// The key.
        key_id: String,
        /// The material to delete (default: the current one).
        key_material_id: String,
    }
);

request!(
    /// Any request that names one key and nothing else of interest
    /// (DescribeKey, EnableKey, DisableKey, CancelKeyDeletion).
    KeyIdRequest {
        /// The key.
        key_id: String,
        /// Grant tokens.
        grant_tokens: Vec<String>,
    }
);

request!(
    /// ListKeys.
    ListKeysRequest {
        /// Page size.
        limit: i64,
        /// Where the previous page ended.
        marker: String,
    }
);

request!(
    /// UpdateKeyDescription.
    UpdateKeyDescriptionRequest {
        /// The key.
        key_id: String,
        /// The new description.
        description: String,
    }
);

request!(
    /// ScheduleKeyDeletion.
    ScheduleKeyDeletionRequest {
        /// The key.
        key_id: String,
        /// Waiting period in days.
        pending_window_in_days: i64,
    }
);

request!(
    /// Encrypt.
    EncryptRequest {
        /// The key.
        key_id: String,
        /// Base64 plaintext.
        #[serde(skip_serializing)]
        plaintext: String,
        /// Encryption context.
        encryption_context: HashMap<String, String>,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// Algorithm.
        encryption_algorithm: String,
        /// Check permissions only.
        dry_run: bool,
    }
);

request!(
    /// Decrypt.
    DecryptRequest {
        /// Base64 ciphertext.
        #[serde(skip_serializing)]
        ciphertext_blob: String,
        /// Encryption context.
        encryption_context: HashMap<String, String>,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// Expected key.
        key_id: String,
        /// Algorithm.
        encryption_algorithm: String,
        /// Nitro enclave recipient.
        #[serde(skip_serializing)]
        recipient: serde_json::Value,
        /// Check permissions only.
        dry_run: bool,
        /// Dry-run modifiers.
        dry_run_modifiers: Vec<String>,
    }
);

request!(
    /// ReEncrypt.
    ReEncryptRequest {
        /// Base64 ciphertext.
        #[serde(skip_serializing)]
        ciphertext_blob: String,
        /// Context of the source ciphertext.
        source_encryption_context: HashMap<String, String>,
        /// Expected source key.
        source_key_id: String,
        /// Key to re-encrypt under.
        destination_key_id: String,
        /// Context for the new ciphertext.
        destination_encryption_context: HashMap<String, String>,
        /// Source algorithm.
        source_encryption_algorithm: String,
        /// Destination algorithm.
        destination_encryption_algorithm: String,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// Check permissions only.
        dry_run: bool,
        /// Dry-run modifiers.
        dry_run_modifiers: Vec<String>,
    }
);

request!(
    /// GenerateDataKey and GenerateDataKeyWithoutPlaintext.
    GenerateDataKeyRequest {
        /// The key.
        key_id: String,
        /// Encryption context.
        encryption_context: HashMap<String, String>,
        /// Length in bytes.
        number_of_bytes: i64,
        /// AES_128 or AES_256.
        key_spec: String,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// Nitro enclave recipient.
        #[serde(skip_serializing)]
        recipient: serde_json::Value,
        /// Check permissions only.
        dry_run: bool,
    }
);

request!(
    /// GenerateRandom.
    GenerateRandomRequest {
        /// Length in bytes.
        number_of_bytes: i64,
        /// Custom key store to draw from.
        custom_key_store_id: String,
        /// Nitro enclave recipient.
        #[serde(skip_serializing)]
        recipient: serde_json::Value,
    }
);

request!(
    /// CreateAlias and UpdateAlias.
    AliasRequest {
        /// The alias.
        alias_name: String,
        /// The key it should point at.
        target_key_id: String,
    }
);

request!(
    /// ListAliases.
    ListAliasesRequest {
        /// Only aliases of this key.
        key_id: String,
        /// Page size.
        limit: i64,
        /// Where the previous page ended.
        marker: String,
    }
);

request!(
    /// TagResource.
    TagResourceRequest {
        /// The key.
        key_id: String,
        /// Tags to add or overwrite.
        tags: Vec<TagDto>,
    }
);

request!(
    /// UntagResource.
    UntagResourceRequest {
        /// The key.
        key_id: String,
        /// Tag keys to remove.
        tag_keys: Vec<String>,
    }
);

request!(
    /// ListResourceTags.
    ListResourceTagsRequest {
        /// The key.
        key_id: String,
        /// Page size.
        limit: i64,
        /// Where the previous page ended.
        marker: String,
    }
);

request!(
    /// GetKeyPolicy.
    GetKeyPolicyRequest {
        /// The key.
        key_id: String,
        /// Always `default`.
        policy_name: String,
    }
);

request!(
    /// PutKeyPolicy.
    PutKeyPolicyRequest {
        /// The key.
        key_id: String,
        /// Always `default`.
        policy_name: String,
        /// The new policy JSON.
        policy: String,
        /// Skip the lockout check.
        bypass_policy_lockout_safety_check: bool,
    }
);

request!(
    /// ListKeyPolicies.
    ListKeyPoliciesRequest {
        /// The key.
        key_id: String,
        /// Page size.
        limit: i64,
        /// Where the previous page ended.
        marker: String,
    }
);

request!(
    /// EnableKeyRotation.
    EnableKeyRotationRequest {
        /// The key.
        key_id: String,
        /// Days between automatic rotations (90–2560, default 365).
        #[serde(rename = "RotationPeriodInDays")]
        rotation_period_days: i64,
    }
);

request!(
    /// ListKeyRotations.
    ListKeyRotationsRequest {
        /// The key.
        key_id: String,
        /// `ROTATIONS_ONLY` (default) or `ALL_KEY_MATERIAL`.
        include_key_material: String,
        /// Page size.
        limit: i64,
        /// Where the previous page ended.
        marker: String,
    }
);

/// Grant constraints as sent and returned.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct GrantConstraintsDto {
    /// The request's context must contain these pairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<std::collections::BTreeMap<String, String>>,
    /// The request's context must be exactly these pairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<std::collections::BTreeMap<String, String>>,
    /// The request must be made on behalf of this resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_arn: Option<String>,
}

request!(
    /// CreateGrant.
    CreateGrantRequest {
        /// The key.
        key_id: String,
        /// Who may use the key.
        grantee_principal: String,
        /// Who may retire the grant.
        retiring_principal: String,
        /// Allowed operations.
        operations: Vec<String>,
        /// Encryption context constraints.
        constraints: GrantConstraintsDto,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// Idempotency name.
        name: String,
        /// Check permissions only.
        dry_run: bool,
        /// The service principal that may use the key.
        grantee_service_principal: String,
        /// The service principal that may retire the grant.
        retiring_service_principal: String,
    }
);

request!(
    /// ListGrants.
    ListGrantsRequest {
        /// Page size.
        limit: i64,
        /// Where the previous page ended.
        marker: String,
        /// The key.
        key_id: String,
        /// Only this grant.
        grant_id: String,
        /// Only grants to this principal.
        grantee_principal: String,
        /// Only grants to this service principal.
        grantee_service_principal: String,
    }
);

request!(
    /// ListRetirableGrants.
    ListRetirableGrantsRequest {
        /// Page size.
        limit: i64,
        /// Where the previous page ended.
        marker: String,
        /// The retiring principal.
        retiring_principal: String,
        /// The retiring service principal.
        retiring_service_principal: String,
    }
);

request!(
    /// RetireGrant and RevokeGrant.
    GrantRefRequest {
        /// The grant token (RetireGrant).
        grant_token: String,
        /// The key.
        key_id: String,
        /// The grant id.
        grant_id: String,
        /// Check permissions only.
        dry_run: bool,
    }
);

request!(
    /// Sign and Verify.
    SignRequest {
        /// The key.
        key_id: String,
        /// Base64 message or digest.
        #[serde(skip_serializing)]
        message: String,
        /// RAW, DIGEST or EXTERNAL_MU.
        message_type: String,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// The signing algorithm.
        signing_algorithm: String,
        /// Base64 signature (Verify).
        #[serde(skip_serializing)]
        signature: String,
        /// Check permissions only.
        dry_run: bool,
    }
);

request!(
    /// GenerateMac and VerifyMac.
    MacRequest {
        /// Base64 message.
        #[serde(skip_serializing)]
        message: String,
        /// The key.
        key_id: String,
        /// The MAC algorithm.
        mac_algorithm: String,
        /// Base64 MAC (VerifyMac).
        #[serde(skip_serializing)]
        mac: String,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// Check permissions only.
        dry_run: bool,
    }
);

request!(
    /// GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext.
    DataKeyPairRequest {
        /// Encryption context.
        encryption_context: HashMap<String, String>,
        /// The symmetric key that encrypts the private key.
        key_id: String,
        /// The type of key pair.
        key_pair_spec: String,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// Nitro enclave recipient.
        #[serde(skip_serializing)]
        recipient: serde_json::Value,
        /// Check permissions only.
        dry_run: bool,
    }
);

request!(
    /// DeriveSharedSecret.
    DeriveSharedSecretRequest {
        /// The key.
        key_id: String,
        /// ECDH.
        key_agreement_algorithm: String,
        /// Base64 DER SubjectPublicKeyInfo of the peer.
        #[serde(skip_serializing)]
        public_key: String,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// Check permissions only.
        dry_run: bool,
        /// Nitro enclave recipient.
        #[serde(skip_serializing)]
        recipient: serde_json::Value,
    }
);

request!(
    /// CreateCustomKeyStore.
    CreateCustomKeyStoreRequest {
        /// Name, unique in the account.
        custom_key_store_name: String,
        /// The PKCS#11 token's label.
        cloud_hsm_cluster_id: String,
        /// PEM certificate, kept and returned.
        trust_anchor_certificate: String,
        /// The token's user PIN.
        #[serde(skip_serializing)]
        key_store_password: SecretString,
        /// AWS_CLOUDHSM (the default) or EXTERNAL_KEY_STORE.
        custom_key_store_type: String,
    }
);

request!(
    /// DescribeCustomKeyStores.
    DescribeCustomKeyStoresRequest {
        /// Only this store.
        custom_key_store_id: String,
        /// Only the store of this name.
        custom_key_store_name: String,
        /// Page size.
        limit: i64,
        /// Where the previous page ended.
        marker: String,
    }
);

request!(
    /// UpdateCustomKeyStore.
    UpdateCustomKeyStoreRequest {
        /// The store.
        custom_key_store_id: String,
        /// A new name.
        new_custom_key_store_name: String,
        /// A new user PIN.
        #[serde(skip_serializing)]
        key_store_password: SecretString,
        /// A new token label.
        cloud_hsm_cluster_id: String,
    }
);

request!(
    /// ConnectCustomKeyStore, DisconnectCustomKeyStore and DeleteCustomKeyStore.
    CustomKeyStoreIdRequest {
        /// The store.
        custom_key_store_id: String,
    }
);

request!(
    /// Encapsulate.
    EncapsulateRequest {
        /// The ML-KEM key.
        key_id: String,
        /// ML_KEM.
        encapsulation_algorithm: String,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// Check permissions only.
        dry_run: bool,
    }
);

request!(
    /// Decapsulate.
    DecapsulateRequest {
        /// The ML-KEM key.
        key_id: String,
        /// Base64 ciphertext from Encapsulate.
        shared_secret_ciphertext_blob: String,
        /// ML_KEM.
        encapsulation_algorithm: String,
        /// Grant tokens.
        grant_tokens: Vec<String>,
        /// Check permissions only.
        dry_run: bool,
    }
);

request!(
    /// GetParametersForImport.
    GetParametersForImportRequest {
        /// The key.
        key_id: String,
        /// How the material will be wrapped.
        wrapping_algorithm: String,
        /// The RSA wrapping key size.
        wrapping_key_spec: String,
    }
);

request!(
    /// ImportKeyMaterial.
    ImportKeyMaterialRequest {
        /// The key.
        key_id: String,
        /// The token from GetParametersForImport.
        #[serde(skip_serializing)]
        import_token: String,
        /// The wrapped material.
        #[serde(skip_serializing)]
        encrypted_key_material: String,
        /// When the material expires (epoch seconds).
        valid_to: f64,
        /// KEY_MATERIAL_EXPIRES or KEY_MATERIAL_DOES_NOT_EXPIRE.
        expiration_model: String,
        /// NEW_KEY_MATERIAL or EXISTING_KEY_MATERIAL.
        import_type: String,
        /// Free text.
        key_material_description: String,
        /// The material id (re-import).
        key_material_id: String,
    }
);

/// DescribeKey's `KeyMetadata`, complete as AWS returns it for a symmetric key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    /// Owning account.
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    /// Key id.
    pub key_id: String,
    /// Key ARN.
    pub arn: String,
    /// Creation time, epoch seconds.
    pub creation_date: f64,
    /// True when the state is Enabled.
    pub enabled: bool,
    /// Description.
    pub description: String,
    /// Usage.
    pub key_usage: &'static str,
    /// State.
    pub key_state: &'static str,
    /// Deletion date, when scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    /// Origin.
    pub origin: &'static str,
    /// `CUSTOMER` or `AWS`.
    pub key_manager: &'static str,
    /// Deprecated twin of KeySpec.
    pub customer_master_key_spec: &'static str,
    /// Key spec.
    pub key_spec: &'static str,
    /// Encryption algorithms the key supports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_algorithms: Option<Vec<&'static str>>,
    /// Signing algorithms the key supports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_algorithms: Option<Vec<&'static str>>,
    /// MAC algorithms the key supports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_algorithms: Option<Vec<&'static str>>,
    /// Key agreement algorithms the key supports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_agreement_algorithms: Option<Vec<&'static str>>,
    /// Key encapsulation algorithms the key supports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encapsulation_algorithms: Option<Vec<&'static str>>,
    /// The custom key store holding the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    /// The token (cluster) of that store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_hsm_cluster_id: Option<String>,
    /// Multi-Region key.
    pub multi_region: bool,
    /// A multi-Region key's primary and replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_region_configuration: Option<MultiRegionConfiguration>,
    /// Imported material: whether it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<String>,
    /// Imported material: when it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<f64>,
    /// Waiting period of a scheduled deletion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_deletion_window_in_days: Option<u32>,
    /// Identifier of the current key material.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_key_material_id: Option<String>,
}

/// The Regions of a multi-Region key (DescribeKey's `MultiRegionConfiguration`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MultiRegionConfiguration {
    /// `PRIMARY` or `REPLICA`: which this key is.
    pub multi_region_key_type: &'static str,
    /// The primary key.
    pub primary_key: MultiRegionKey,
    /// Every replica key.
    pub replica_keys: Vec<MultiRegionKey>,
}

/// One key of a multi-Region key's set.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MultiRegionKey {
    /// Its ARN.
    pub arn: String,
    /// Its Region.
    pub region: String,
}

/// ReplicateKey's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicateKeyResponse {
    /// The new replica's metadata.
    pub replica_key_metadata: KeyMetadata,
    /// The replica's key policy.
    pub replica_policy: String,
    /// The replica's tags.
    pub replica_tags: Vec<TagDto>,
}

/// One entry of ListKeys.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyListEntry {
    /// Key id.
    pub key_id: String,
    /// Key ARN.
    pub key_arn: String,
}

/// One entry of ListAliases.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasListEntry {
    /// Alias name.
    pub alias_name: String,
    /// Alias ARN.
    pub alias_arn: String,
    /// Key id of the target.
    pub target_key_id: String,
    /// Creation time.
    pub creation_date: f64,
    /// Last update time.
    pub last_updated_date: f64,
}

/// Serializes bytes as base64, as AWS JSON carries blobs.
fn base64_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
}

/// Serializes a secret as base64 (only into a response to the caller entitled to it).
fn base64_secret<S: serde::Serializer>(b: &SecretBytes, s: S) -> Result<S::Ok, S::Error> {
    base64_bytes(b.expose_secret(), s)
}

/// Serializes an optional secret as base64.
fn base64_secret_opt<S: serde::Serializer>(
    b: &Option<SecretBytes>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => base64_secret(b, s),
        None => s.serialize_none(),
    }
}

/// Encrypt.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    /// The ciphertext.
    #[serde(serialize_with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// ARN of the key that encrypted.
    pub key_id: String,
    /// The algorithm used.
    pub encryption_algorithm: EncryptionAlgorithm,
}

/// Decrypt.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    /// ARN of the key that decrypted.
    pub key_id: String,
    /// The plaintext.
    #[serde(serialize_with = "base64_secret")]
    pub plaintext: SecretBytes,
    /// The algorithm used.
    pub encryption_algorithm: EncryptionAlgorithm,
    /// The key material that decrypted (symmetric keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_material_id: Option<String>,
}

/// ReEncrypt.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptResponse {
    /// The new ciphertext.
    #[serde(serialize_with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// ARN of the key that decrypted.
    pub source_key_id: String,
    /// ARN of the key that encrypted.
    pub key_id: String,
    /// Algorithm of the source ciphertext.
    pub source_encryption_algorithm: EncryptionAlgorithm,
    /// Algorithm of the new ciphertext.
    pub destination_encryption_algorithm: EncryptionAlgorithm,
    /// Key material that decrypted (symmetric keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_key_material_id: Option<String>,
    /// Key material that encrypted (symmetric keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_key_material_id: Option<String>,
}

/// GenerateDataKey.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    /// The data key, encrypted.
    #[serde(serialize_with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// The data key.
    #[serde(serialize_with = "base64_secret")]
    pub plaintext: SecretBytes,
    /// ARN of the key that encrypted the data key.
    pub key_id: String,
    /// The key material that encrypted it.
    pub key_material_id: String,
}

/// GenerateDataKeyWithoutPlaintext.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyWithoutPlaintextResponse {
    /// The data key, encrypted.
    #[serde(serialize_with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// ARN of the key that encrypted the data key.
    pub key_id: String,
    /// The key material that encrypted it.
    pub key_material_id: String,
}

/// GenerateRandom.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomResponse {
    /// The random bytes.
    #[serde(
        serialize_with = "base64_secret_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub plaintext: Option<SecretBytes>,
}

/// CreateKey and DescribeKey.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadataResponse {
    /// The key's metadata.
    pub key_metadata: KeyMetadata,
}

/// The empty response (`{}`) of operations that return nothing.
#[derive(Debug, Default, Serialize)]
pub struct EmptyResponse {}

/// ListKeys.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    /// The page of keys.
    pub keys: Vec<KeyListEntry>,
    /// True when more follow.
    pub truncated: bool,
    /// Where the next page starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// ScheduleKeyDeletion.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionResponse {
    /// Key ARN.
    pub key_id: String,
    /// When the key will be deleted, epoch seconds (not yet known for a multi-Region primary
    /// key waiting for its replicas' deletion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    /// The key's state (`PendingDeletion`, or `PendingReplicaDeletion`).
    pub key_state: &'static str,
    /// The waiting period.
    pub pending_window_in_days: i64,
}

/// CancelKeyDeletion, RotateKeyOnDemand: the key's ARN.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdResponse {
    /// Key ARN.
    pub key_id: String,
}

/// ListAliases.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    /// The page of aliases.
    pub aliases: Vec<AliasListEntry>,
    /// True when more follow.
    pub truncated: bool,
    /// Where the next page starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// ListResourceTags.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTagsResponse {
    /// The page of tags.
    pub tags: Vec<TagDto>,
    /// True when more follow.
    pub truncated: bool,
    /// Where the next page starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// GetKeyPolicy.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyPolicyResponse {
    /// The policy document.
    pub policy: String,
    /// Its name (`default`).
    pub policy_name: &'static str,
}

/// ListKeyPolicies.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPoliciesResponse {
    /// Policy names (only `default`).
    pub policy_names: Vec<&'static str>,
    /// Always false.
    pub truncated: bool,
}

/// GetKeyRotationStatus.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyRotationStatusResponse {
    /// Whether automatic rotation is on.
    pub key_rotation_enabled: bool,
    /// Key ARN.
    pub key_id: String,
    /// The rotation period, when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period_in_days: Option<u32>,
    /// The next automatic rotation, when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<f64>,
}

/// One entry of ListKeyRotations.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEntry {
    /// Key id.
    pub key_id: String,
    /// The material's id.
    pub key_material_id: String,
    /// The caller's description of imported material.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_material_description: Option<String>,
    /// `IMPORTED` or `PENDING_IMPORT` (imported material only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_state: Option<&'static str>,
    /// `CURRENT`, `NON_CURRENT` or `PENDING_ROTATION`.
    pub key_material_state: &'static str,
    /// Whether imported material expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<String>,
    /// When imported material expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<f64>,
    /// When the rotation that made it happened (rotations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_date: Option<f64>,
    /// `AUTOMATIC` or `ON_DEMAND` (rotations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_type: Option<String>,
}

/// ListKeyRotations.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsResponse {
    /// The page of rotations.
    pub rotations: Vec<RotationEntry>,
    /// True when more follow.
    pub truncated: bool,
    /// Where the next page starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// CreateGrant.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGrantResponse {
    /// The grant token.
    pub grant_token: String,
    /// The grant id.
    pub grant_id: String,
}

/// One grant of ListGrants and ListRetirableGrants.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantListEntry {
    /// Key ARN.
    pub key_id: String,
    /// Grant id.
    pub grant_id: String,
    /// Creation time.
    pub creation_date: f64,
    /// Who may use the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grantee_principal: Option<String>,
    /// The service principal that may use the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grantee_service_principal: Option<String>,
    /// The account that made the grant.
    pub issuing_account: String,
    /// The operations allowed.
    pub operations: Vec<String>,
    /// The grant's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Who may retire it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retiring_principal: Option<String>,
    /// The service principal that may retire it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retiring_service_principal: Option<String>,
    /// Its encryption context constraint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<GrantConstraintsDto>,
}

/// ListGrants and ListRetirableGrants.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsResponse {
    /// The page of grants.
    pub grants: Vec<GrantListEntry>,
    /// True when more follow.
    pub truncated: bool,
    /// Where the next page starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// GetKeyLastUsage's `KeyLastUsage`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyLastUsageEntry {
    /// The operation.
    pub operation: String,
    /// When.
    pub timestamp: f64,
    /// The audit event of that use.
    pub cloud_trail_event_id: String,
}

/// GetKeyLastUsage.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyLastUsageResponse {
    /// Key id.
    pub key_id: String,
    /// Since when uses are tracked.
    pub tracking_start_date: f64,
    /// When the key was made.
    pub key_creation_date: f64,
    /// The last use, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_last_usage: Option<KeyLastUsageEntry>,
}

/// Sign.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignResponse {
    /// Key ARN.
    pub key_id: String,
    /// The signature.
    #[serde(serialize_with = "base64_bytes")]
    pub signature: Vec<u8>,
    /// The algorithm.
    pub signing_algorithm: &'static str,
}

/// Verify.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyResponse {
    /// Key ARN.
    pub key_id: String,
    /// Always true (an invalid signature is an error).
    pub signature_valid: bool,
    /// The algorithm.
    pub signing_algorithm: &'static str,
}

/// GenerateMac.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMacResponse {
    /// The MAC.
    #[serde(serialize_with = "base64_bytes")]
    pub mac: Vec<u8>,
    /// The algorithm.
    pub mac_algorithm: &'static str,
    /// Key ARN.
    pub key_id: String,
}

/// VerifyMac.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMacResponse {
    /// Key ARN.
    pub key_id: String,
    /// Always true (an invalid MAC is an error).
    pub mac_valid: bool,
    /// The algorithm.
    pub mac_algorithm: &'static str,
}

/// GetPublicKey.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyResponse {
    /// Key ARN.
    pub key_id: String,
    /// DER SubjectPublicKeyInfo.
    #[serde(serialize_with = "base64_bytes")]
    pub public_key: Vec<u8>,
    /// Deprecated twin of KeySpec.
    pub customer_master_key_spec: &'static str,
    /// Key spec.
    pub key_spec: &'static str,
    /// Key usage.
    pub key_usage: &'static str,
    /// For signing keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_algorithms: Option<Vec<&'static str>>,
    /// For encryption keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_algorithms: Option<Vec<&'static str>>,
    /// For key agreement keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_agreement_algorithms: Option<Vec<&'static str>>,
    /// For ML-KEM keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encapsulation_algorithms: Option<Vec<&'static str>>,
}

/// GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKeyPairResponse {
    /// The private key, encrypted.
    #[serde(serialize_with = "base64_bytes")]
    pub private_key_ciphertext_blob: Vec<u8>,
    /// The public key (DER SubjectPublicKeyInfo).
    #[serde(serialize_with = "base64_bytes")]
    pub public_key: Vec<u8>,
    /// ARN of the key that encrypted the private key.
    pub key_id: String,
    /// The pair's spec.
    pub key_pair_spec: &'static str,
    /// The key material that encrypted it.
    pub key_material_id: String,
    /// The private key (PKCS#8), GenerateDataKeyPair only.
    #[serde(
        serialize_with = "base64_secret_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub private_key_plaintext: Option<SecretBytes>,
}

/// DeriveSharedSecret.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretResponse {
    /// Key ARN.
    pub key_id: String,
    /// The shared secret.
    #[serde(serialize_with = "base64_secret")]
    pub shared_secret: SecretBytes,
    /// `ECDH`.
    pub key_agreement_algorithm: String,
    /// The key's origin.
    pub key_origin: &'static str,
}

/// Encapsulate.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncapsulateResponse {
    /// Key ARN.
    pub key_id: String,
    /// The shared secret.
    #[serde(serialize_with = "base64_secret")]
    pub shared_secret: SecretBytes,
    /// The ciphertext to send to the key's holder.
    #[serde(serialize_with = "base64_bytes")]
    pub shared_secret_ciphertext_blob: Vec<u8>,
    /// `ML_KEM`.
    pub encapsulation_algorithm: &'static str,
}

/// Decapsulate.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecapsulateResponse {
    /// Key ARN.
    pub key_id: String,
    /// The shared secret.
    #[serde(serialize_with = "base64_secret")]
    pub shared_secret: SecretBytes,
    /// `ML_KEM`.
    pub encapsulation_algorithm: &'static str,
}

/// GetParametersForImport.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportResponse {
    /// Key ARN.
    pub key_id: String,
    /// The import token.
    #[serde(serialize_with = "base64_bytes")]
    pub import_token: Vec<u8>,
    /// The RSA wrapping public key (DER).
    #[serde(serialize_with = "base64_bytes")]
    pub public_key: Vec<u8>,
    /// When the token and wrapping key expire.
    pub parameters_valid_to: f64,
}

/// ImportKeyMaterial and DeleteImportedKeyMaterial.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMaterialResponse {
    /// Key ARN.
    pub key_id: String,
    /// The material's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_material_id: Option<String>,
}

/// CreateCustomKeyStore.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateCustomKeyStoreResponse {
    /// The new store's id.
    pub custom_key_store_id: String,
}

/// One store of DescribeCustomKeyStores.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomKeyStoreEntry {
    /// Store id.
    pub custom_key_store_id: String,
    /// Store name.
    pub custom_key_store_name: String,
    /// The token label.
    pub cloud_hsm_cluster_id: String,
    /// The trust anchor certificate as given.
    pub trust_anchor_certificate: String,
    /// `CONNECTED`, `DISCONNECTED`, `FAILED`, ...
    pub connection_state: &'static str,
    /// Creation time.
    pub creation_date: f64,
    /// `AWS_CLOUDHSM`.
    pub custom_key_store_type: &'static str,
    /// Why a connection failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_error_code: Option<&'static str>,
}

/// DescribeCustomKeyStores.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeCustomKeyStoresResponse {
    /// The page of stores.
    pub custom_key_stores: Vec<CustomKeyStoreEntry>,
    /// True when more follow.
    pub truncated: bool,
    /// Where the next page starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// Epoch seconds with millisecond precision, as AWS JSON timestamps are.
pub fn epoch_seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_store_passwords_never_show_in_debug() {
        let req: CreateCustomKeyStoreRequest =
            serde_json::from_str(r#"{"CustomKeyStoreName":"n","KeyStorePassword":"hunter22"}"#)
                .unwrap();
        assert_eq!(
            req.key_store_password.as_ref().unwrap().expose(),
            "hunter22"
        );
        assert!(!format!("{req:?}").contains("hunter22"));
    }
}
