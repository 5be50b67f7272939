//! The operations. Each area has its file; [`Operation`] names every operation and runs it.

mod aliases;
mod asymmetric;
mod crypto;
mod grants;
mod import;
mod kem;
mod keys;
mod keystores;
mod multiregion;
mod policies;
mod random;
mod rotation;
mod tags;
mod usage;

use serde::de::DeserializeOwned;

pub(crate) use grants::is_grant_token;
/// Every grant operation AWS defines (CreateGrant's `Operations`).
pub use grants::ALL_OPERATIONS as GRANT_OPERATIONS;
pub(crate) use multiregion::{handing_over, refuse_replica};

/// Checks seeded tags with the same rules as TagResource.
pub(crate) fn seed_tags(
    tags: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<keyhold_store::Tag>, KmsError> {
    tags::validate_tags(
        tags.iter()
            .map(|(k, v)| crate::api::TagDto {
                tag_key: Some(k.clone()),
                tag_value: Some(v.clone()),
            })
            .collect(),
    )
}

use crate::api::*;
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::{CallRecord, Engine};

macro_rules! operations {
    ($($(#[$m:meta])* $variant:ident($req:ty) -> $resp:ty => $run:path,
        hot = $hot:literal, read_only = $ro:literal;)+) => {
        /// Every operation keyhold serves.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Operation { $($(#[$m])* $variant),+ }

        /// A request to the engine: the operation and its typed fields, parsed once at the
        /// front door ([`Request::from_json`] for the KMS JSON wire, or built in-process by a
        /// service front door).
        #[derive(Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum Request { $($(#[$m])* $variant($req)),+ }

        /// The engine's answer to a [`Request`], of the same operation.
        #[derive(Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum Response { $($(#[$m])* $variant($resp)),+ }

        impl Operation {
            /// The operation named by `X-Amz-Target: TrentService.<name>`.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $(stringify!($variant) => Some(Self::$variant),)+ _ => None }
            }

            /// Its name.
            pub fn name(&self) -> &'static str {
                match self { $(Self::$variant => stringify!($variant)),+ }
            }

            /// True for cryptographic operations served from the keyring.
            pub fn is_hot(&self) -> bool {
                match self { $(Self::$variant => $hot),+ }
            }

            /// True for the cryptographic operations whose use GetKeyLastUsage reports.
            pub fn tracks_usage(&self) -> bool {
                matches!(
                    self,
                    Self::Encrypt
                        | Self::Decrypt
                        | Self::ReEncrypt
                        | Self::GenerateDataKey
                        | Self::GenerateDataKeyWithoutPlaintext
                        | Self::GenerateDataKeyPair
                        | Self::GenerateDataKeyPairWithoutPlaintext
                        | Self::Sign
                        | Self::Verify
                        | Self::GenerateMac
                        | Self::VerifyMac
                        | Self::DeriveSharedSecret
                        | Self::Encapsulate
                        | Self::Decapsulate
                )
            }

            /// True for operations that change no state (CloudTrail's `readOnly`).
            pub fn is_read_only(&self) -> bool {
                match self { $(Self::$variant => $ro),+ }
            }
        }

        impl Request {
            /// Decodes the AWS JSON 1.1 body of operation `op`. An empty body is an empty
            /// request; anything that is not a JSON object of the right field types is a
            /// `SerializationException` whose message gives the position only, never the
            /// offending value (it could be a secret).
            pub fn from_json(op: Operation, body: &[u8]) -> Result<Self, KmsError> {
                Ok(match op { $(Operation::$variant => Self::$variant(parse(body)?)),+ })
            }

            /// The operation.
            pub fn operation(&self) -> Operation {
                match self { $(Self::$variant(_) => Operation::$variant),+ }
            }

            /// CloudTrail's `requestParameters`: the fields sent, in camelCase, less anything
            /// secret (those fields are never serialized).
            pub fn parameters(&self) -> serde_json::Value {
                let v = match self { $(Self::$variant(r) => serde_json::to_value(r)),+ };
                v.unwrap_or(serde_json::Value::Null)
            }

            /// Runs the operation.
            pub(crate) fn run(
                self,
                engine: &Engine,
                caller: &Principal,
                rec: &mut CallRecord,
            ) -> Result<Response, KmsError> {
                match self {
                    $(Self::$variant(r) => $run(engine, caller, r, rec).map(Response::$variant)),+
                }
            }
        }

        impl Response {
            /// The operation.
            pub fn operation(&self) -> Operation {
                match self { $(Self::$variant(_) => Operation::$variant),+ }
            }

            /// The AWS JSON 1.1 body.
            pub fn to_json(&self) -> Result<Vec<u8>, KmsError> {
                match self { $(Self::$variant(r) => serde_json::to_vec(r)),+ }
                    .map_err(KmsError::internal)
            }
        }
    };
}

operations! {
    /// CreateKey.
    CreateKey(CreateKeyRequest) -> KeyMetadataResponse => keys::create_key, hot = false, read_only = false;
    /// ReplicateKey.
    ReplicateKey(ReplicateKeyRequest) -> ReplicateKeyResponse => multiregion::replicate_key, hot = false, read_only = false;
    /// UpdatePrimaryRegion.
    UpdatePrimaryRegion(UpdatePrimaryRegionRequest) -> EmptyResponse => multiregion::update_primary_region, hot = false, read_only = false;
    /// DescribeKey.
    DescribeKey(KeyIdRequest) -> KeyMetadataResponse => keys::describe_key, hot = false, read_only = true;
    /// ListKeys.
    ListKeys(ListKeysRequest) -> ListKeysResponse => keys::list_keys, hot = false, read_only = true;
    /// UpdateKeyDescription.
    UpdateKeyDescription(UpdateKeyDescriptionRequest) -> EmptyResponse => keys::update_key_description, hot = false, read_only = false;
    /// EnableKey.
    EnableKey(KeyIdRequest) -> EmptyResponse => keys::enable_key, hot = false, read_only = false;
    /// DisableKey.
    DisableKey(KeyIdRequest) -> EmptyResponse => keys::disable_key, hot = false, read_only = false;
    /// ScheduleKeyDeletion.
    ScheduleKeyDeletion(ScheduleKeyDeletionRequest) -> ScheduleKeyDeletionResponse => keys::schedule_key_deletion, hot = false, read_only = false;
    /// CancelKeyDeletion.
    CancelKeyDeletion(KeyIdRequest) -> KeyIdResponse => keys::cancel_key_deletion, hot = false, read_only = false;
    /// Encrypt.
    Encrypt(EncryptRequest) -> EncryptResponse => crypto::encrypt, hot = true, read_only = true;
    /// Decrypt.
    Decrypt(DecryptRequest) -> DecryptResponse => crypto::decrypt, hot = true, read_only = true;
    /// ReEncrypt.
    ReEncrypt(ReEncryptRequest) -> ReEncryptResponse => crypto::re_encrypt, hot = true, read_only = true;
    /// GenerateDataKey.
    GenerateDataKey(GenerateDataKeyRequest) -> GenerateDataKeyResponse => crypto::generate_data_key, hot = true, read_only = true;
    /// GenerateDataKeyWithoutPlaintext.
    GenerateDataKeyWithoutPlaintext(GenerateDataKeyRequest) -> GenerateDataKeyWithoutPlaintextResponse => crypto::generate_data_key_without_plaintext,
        hot = true, read_only = true;
    /// GenerateRandom.
    GenerateRandom(GenerateRandomRequest) -> GenerateRandomResponse => random::generate_random, hot = true, read_only = true;
    /// CreateAlias.
    CreateAlias(AliasRequest) -> EmptyResponse => aliases::create_alias, hot = false, read_only = false;
    /// UpdateAlias.
    UpdateAlias(AliasRequest) -> EmptyResponse => aliases::update_alias, hot = false, read_only = false;
    /// DeleteAlias.
    DeleteAlias(AliasRequest) -> EmptyResponse => aliases::delete_alias, hot = false, read_only = false;
    /// ListAliases.
    ListAliases(ListAliasesRequest) -> ListAliasesResponse => aliases::list_aliases, hot = false, read_only = true;
    /// TagResource.
    TagResource(TagResourceRequest) -> EmptyResponse => tags::tag_resource, hot = false, read_only = false;
    /// UntagResource.
    UntagResource(UntagResourceRequest) -> EmptyResponse => tags::untag_resource, hot = false, read_only = false;
    /// ListResourceTags.
    ListResourceTags(ListResourceTagsRequest) -> ListResourceTagsResponse => tags::list_resource_tags, hot = false, read_only = true;
    /// GetKeyPolicy.
    GetKeyPolicy(GetKeyPolicyRequest) -> GetKeyPolicyResponse => policies::get_key_policy, hot = false, read_only = true;
    /// PutKeyPolicy.
    PutKeyPolicy(PutKeyPolicyRequest) -> EmptyResponse => policies::put_key_policy, hot = false, read_only = false;
    /// ListKeyPolicies.
    ListKeyPolicies(ListKeyPoliciesRequest) -> ListKeyPoliciesResponse => policies::list_key_policies, hot = false, read_only = true;
    /// EnableKeyRotation.
    EnableKeyRotation(EnableKeyRotationRequest) -> EmptyResponse => rotation::enable_key_rotation, hot = false, read_only = false;
    /// DisableKeyRotation.
    DisableKeyRotation(KeyIdRequest) -> EmptyResponse => rotation::disable_key_rotation, hot = false, read_only = false;
    /// GetKeyRotationStatus.
    GetKeyRotationStatus(KeyIdRequest) -> GetKeyRotationStatusResponse => rotation::get_key_rotation_status, hot = false, read_only = true;
    /// RotateKeyOnDemand.
    RotateKeyOnDemand(KeyIdRequest) -> KeyIdResponse => rotation::rotate_key_on_demand, hot = false, read_only = false;
    /// ListKeyRotations.
    ListKeyRotations(ListKeyRotationsRequest) -> ListKeyRotationsResponse => rotation::list_key_rotations, hot = false, read_only = true;
    /// CreateGrant.
    CreateGrant(CreateGrantRequest) -> CreateGrantResponse => grants::create_grant, hot = false, read_only = false;
    /// ListGrants.
    ListGrants(ListGrantsRequest) -> ListGrantsResponse => grants::list_grants, hot = false, read_only = true;
    /// ListRetirableGrants.
    ListRetirableGrants(ListRetirableGrantsRequest) -> ListGrantsResponse => grants::list_retirable_grants, hot = false, read_only = true;
    /// RetireGrant.
    RetireGrant(GrantRefRequest) -> EmptyResponse => grants::retire_grant, hot = false, read_only = false;
    /// RevokeGrant.
    RevokeGrant(GrantRefRequest) -> EmptyResponse => grants::revoke_grant, hot = false, read_only = false;
    /// GetKeyLastUsage.
    GetKeyLastUsage(KeyIdRequest) -> GetKeyLastUsageResponse => usage::get_key_last_usage, hot = false, read_only = true;
    /// Sign.
    Sign(SignRequest) -> SignResponse => asymmetric::sign, hot = true, read_only = true;
    /// Verify.
    Verify(SignRequest) -> VerifyResponse => asymmetric::verify, hot = true, read_only = true;
    /// GetPublicKey.
    GetPublicKey(KeyIdRequest) -> GetPublicKeyResponse => asymmetric::get_public_key, hot = true, read_only = true;
    /// GenerateMac.
    GenerateMac(MacRequest) -> GenerateMacResponse => asymmetric::generate_mac, hot = true, read_only = true;
    /// VerifyMac.
    VerifyMac(MacRequest) -> VerifyMacResponse => asymmetric::verify_mac, hot = true, read_only = true;
    /// GenerateDataKeyPair.
    GenerateDataKeyPair(DataKeyPairRequest) -> DataKeyPairResponse => asymmetric::generate_data_key_pair, hot = false, read_only = true;
    /// GenerateDataKeyPairWithoutPlaintext.
    GenerateDataKeyPairWithoutPlaintext(DataKeyPairRequest) -> DataKeyPairResponse => asymmetric::generate_data_key_pair_without_plaintext,
        hot = false, read_only = true;
    /// DeriveSharedSecret.
    DeriveSharedSecret(DeriveSharedSecretRequest) -> DeriveSharedSecretResponse => asymmetric::derive_shared_secret, hot = true, read_only = true;
    /// Encapsulate.
    Encapsulate(EncapsulateRequest) -> EncapsulateResponse => kem::encapsulate, hot = true, read_only = true;
    /// Decapsulate.
    Decapsulate(DecapsulateRequest) -> DecapsulateResponse => kem::decapsulate, hot = true, read_only = true;
    /// CreateCustomKeyStore.
    CreateCustomKeyStore(CreateCustomKeyStoreRequest) -> CreateCustomKeyStoreResponse => keystores::create_custom_key_store, hot = false, read_only = false;
    /// DescribeCustomKeyStores.
    DescribeCustomKeyStores(DescribeCustomKeyStoresRequest) -> DescribeCustomKeyStoresResponse => keystores::describe_custom_key_stores,
        hot = false, read_only = true;
    /// UpdateCustomKeyStore.
    UpdateCustomKeyStore(UpdateCustomKeyStoreRequest) -> EmptyResponse => keystores::update_custom_key_store, hot = false, read_only = false;
    /// ConnectCustomKeyStore.
    ConnectCustomKeyStore(CustomKeyStoreIdRequest) -> EmptyResponse => keystores::connect_custom_key_store, hot = false, read_only = false;
    /// DisconnectCustomKeyStore.
    DisconnectCustomKeyStore(CustomKeyStoreIdRequest) -> EmptyResponse => keystores::disconnect_custom_key_store,
        hot = false, read_only = false;
    /// DeleteCustomKeyStore.
    DeleteCustomKeyStore(CustomKeyStoreIdRequest) -> EmptyResponse => keystores::delete_custom_key_store, hot = false, read_only = false;
    /// GetParametersForImport.
    GetParametersForImport(GetParametersForImportRequest) -> GetParametersForImportResponse => import::get_parameters_for_import, hot = false, read_only = true;
    /// ImportKeyMaterial.
    ImportKeyMaterial(ImportKeyMaterialRequest) -> KeyMaterialResponse => import::import_key_material, hot = false, read_only = false;
    /// DeleteImportedKeyMaterial.
    DeleteImportedKeyMaterial(DeleteImportedKeyMaterialRequest) -> KeyMaterialResponse => import::delete_imported_key_material,
        hot = false, read_only = false;
}

/// Decodes a request body (see [`Request::from_json`]).
fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, KmsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Data => "A field has the wrong type or value",
            Category::Syntax | Category::Eof | Category::Io => "Malformed JSON",
        };
        KmsError::new(
            ErrorCode::SerializationException,
            format!("{what} at line {} column {}", e.line(), e.column()),
        )
    })
}

/// The empty response of operations that return nothing.
fn empty() -> Result<EmptyResponse, KmsError> {
    Ok(EmptyResponse {})
}

/// The AWS error of an asymmetric-crypto refusal.
pub(crate) fn asym_error(e: keyhold_core::asym::AsymError) -> KmsError {
    use keyhold_core::asym::AsymError;
    match e {
        AsymError::WrongAlgorithm(m) => KmsError::new(ErrorCode::InvalidKeyUsageException, m),
        AsymError::InvalidInput(m) => KmsError::validation(m),
        AsymError::Unsupported(m) => KmsError::new(ErrorCode::UnsupportedOperationException, m),
        AsymError::InvalidCiphertext => KmsError::invalid_ciphertext(),
        other => KmsError::internal(other),
    }
}

/// The error DryRun gives when the request would have succeeded.
fn dry_run_ok(dry_run: Option<bool>) -> Result<(), KmsError> {
    if dry_run == Some(true) {
        return Err(KmsError::new(
            ErrorCode::DryRunOperationException,
            "The request would have succeeded, but the DryRun option is set.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in ["CreateKey", "Encrypt", "ListResourceTags", "GenerateRandom"] {
            assert_eq!(Operation::from_name(n).unwrap().name(), n);
        }
        assert!(Operation::from_name("encrypt").is_none());
    }

    #[test]
    fn audit_parameters_hold_only_known_non_secret_fields() {
        let req = Request::from_json(
            Operation::CreateCustomKeyStore,
            br#"{"CustomKeyStoreName":"s","KeyStorePassword":"pin-1234",
                "XksProxyAuthenticationCredential":{"AccessKeyId":"a","RawSecretAccessKey":"raw-5678"}}"#,
        )
        .unwrap();
        let p = req.parameters().to_string();
        assert!(p.contains("customKeyStoreName"), "{p}");
        assert!(!p.contains("pin-1234") && !p.contains("raw-5678"), "{p}");
        let req = Request::from_json(
            Operation::Encrypt,
            br#"{"KeyId":"k","Plaintext":"c2VjcmV0","plaintext":"c2VjcmV0LWxvd2Vy"}"#,
        )
        .unwrap();
        let p = req.parameters().to_string();
        assert_eq!(p, r#"{"keyId":"k"}"#);
    }

    #[test]
    fn serialization_errors_do_not_echo_values() {
        let e = parse::<crate::api::EncryptRequest>(br#"{"Plaintext": 12345}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::SerializationException);
        assert!(!e.message.contains("12345"), "{}", e.message);
        let e = parse::<crate::api::EncryptRequest>(b"{nope").unwrap_err();
        assert_eq!(e.code, ErrorCode::SerializationException);
        assert!(parse::<crate::api::EncryptRequest>(b"").is_ok());
    }
}
