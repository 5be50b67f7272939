//! The operations. Each area has its file; [`Operation`] names every operation and runs it.

mod aliases;
mod asymmetric;
mod crypto;
mod grants;
mod import;
mod kem;
mod keys;
mod keystores;
mod policies;
mod random;
mod rotation;
mod tags;
mod usage;

use serde::de::DeserializeOwned;

pub(crate) use grants::{grant_allows, is_grant_token};

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

use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::{CallRecord, Engine};

macro_rules! operations {
    ($($(#[$m:meta])* $variant:ident => $run:path, hot = $hot:literal, read_only = $ro:literal;)+) => {
        /// Every operation keyhold serves.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Operation { $($(#[$m])* $variant),+ }

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
                    self.name(),
                    "Encrypt"
                        | "Decrypt"
                        | "ReEncrypt"
                        | "GenerateDataKey"
                        | "GenerateDataKeyWithoutPlaintext"
                        | "GenerateDataKeyPair"
                        | "GenerateDataKeyPairWithoutPlaintext"
                        | "Sign"
                        | "Verify"
                        | "GenerateMac"
                        | "VerifyMac"
                        | "DeriveSharedSecret"
                        | "Encapsulate"
                        | "Decapsulate"
                )
            }

            /// True for operations that change no state (CloudTrail's `readOnly`).
            pub fn is_read_only(&self) -> bool {
                match self { $(Self::$variant => $ro),+ }
            }

            /// Runs the operation.
            pub(crate) fn run(
                &self,
                engine: &Engine,
                caller: &Principal,
                body: &[u8],
                rec: &mut CallRecord,
            ) -> Result<Vec<u8>, KmsError> {
                match self { $(Self::$variant => $run(engine, caller, parse(body)?, rec)),+ }
            }
        }
    };
}

operations! {
    /// CreateKey.
    CreateKey => keys::create_key, hot = false, read_only = false;
    /// DescribeKey.
    DescribeKey => keys::describe_key, hot = false, read_only = true;
    /// ListKeys.
    ListKeys => keys::list_keys, hot = false, read_only = true;
    /// UpdateKeyDescription.
    UpdateKeyDescription => keys::update_key_description, hot = false, read_only = false;
    /// EnableKey.
    EnableKey => keys::enable_key, hot = false, read_only = false;
    /// DisableKey.
    DisableKey => keys::disable_key, hot = false, read_only = false;
    /// ScheduleKeyDeletion.
    ScheduleKeyDeletion => keys::schedule_key_deletion, hot = false, read_only = false;
    /// CancelKeyDeletion.
    CancelKeyDeletion => keys::cancel_key_deletion, hot = false, read_only = false;
    /// Encrypt.
    Encrypt => crypto::encrypt, hot = true, read_only = true;
    /// Decrypt.
    Decrypt => crypto::decrypt, hot = true, read_only = true;
    /// ReEncrypt.
    ReEncrypt => crypto::re_encrypt, hot = true, read_only = true;
    /// GenerateDataKey.
    GenerateDataKey => crypto::generate_data_key, hot = true, read_only = true;
    /// GenerateDataKeyWithoutPlaintext.
    GenerateDataKeyWithoutPlaintext => crypto::generate_data_key_without_plaintext,
        hot = true, read_only = true;
    /// GenerateRandom.
    GenerateRandom => random::generate_random, hot = true, read_only = true;
    /// CreateAlias.
    CreateAlias => aliases::create_alias, hot = false, read_only = false;
    /// UpdateAlias.
    UpdateAlias => aliases::update_alias, hot = false, read_only = false;
    /// DeleteAlias.
    DeleteAlias => aliases::delete_alias, hot = false, read_only = false;
    /// ListAliases.
    ListAliases => aliases::list_aliases, hot = false, read_only = true;
    /// TagResource.
    TagResource => tags::tag_resource, hot = false, read_only = false;
    /// UntagResource.
    UntagResource => tags::untag_resource, hot = false, read_only = false;
    /// ListResourceTags.
    ListResourceTags => tags::list_resource_tags, hot = false, read_only = true;
    /// GetKeyPolicy.
    GetKeyPolicy => policies::get_key_policy, hot = false, read_only = true;
    /// PutKeyPolicy.
    PutKeyPolicy => policies::put_key_policy, hot = false, read_only = false;
    /// ListKeyPolicies.
    ListKeyPolicies => policies::list_key_policies, hot = false, read_only = true;
    /// EnableKeyRotation.
    EnableKeyRotation => rotation::enable_key_rotation, hot = false, read_only = false;
    /// DisableKeyRotation.
    DisableKeyRotation => rotation::disable_key_rotation, hot = false, read_only = false;
    /// GetKeyRotationStatus.
    GetKeyRotationStatus => rotation::get_key_rotation_status, hot = false, read_only = true;
    /// RotateKeyOnDemand.
    RotateKeyOnDemand => rotation::rotate_key_on_demand, hot = false, read_only = false;
    /// ListKeyRotations.
    ListKeyRotations => rotation::list_key_rotations, hot = false, read_only = true;
    /// CreateGrant.
    CreateGrant => grants::create_grant, hot = false, read_only = false;
    /// ListGrants.
    ListGrants => grants::list_grants, hot = false, read_only = true;
    /// ListRetirableGrants.
    ListRetirableGrants => grants::list_retirable_grants, hot = false, read_only = true;
    /// RetireGrant.
    RetireGrant => grants::retire_grant, hot = false, read_only = false;
    /// RevokeGrant.
    RevokeGrant => grants::revoke_grant, hot = false, read_only = false;
    /// GetKeyLastUsage.
    GetKeyLastUsage => usage::get_key_last_usage, hot = false, read_only = true;
    /// Sign.
    Sign => asymmetric::sign, hot = true, read_only = true;
    /// Verify.
    Verify => asymmetric::verify, hot = true, read_only = true;
    /// GetPublicKey.
    GetPublicKey => asymmetric::get_public_key, hot = true, read_only = true;
    /// GenerateMac.
    GenerateMac => asymmetric::generate_mac, hot = true, read_only = true;
    /// VerifyMac.
    VerifyMac => asymmetric::verify_mac, hot = true, read_only = true;
    /// GenerateDataKeyPair.
    GenerateDataKeyPair => asymmetric::generate_data_key_pair, hot = false, read_only = true;
    /// GenerateDataKeyPairWithoutPlaintext.
    GenerateDataKeyPairWithoutPlaintext => asymmetric::generate_data_key_pair_without_plaintext,
        hot = false, read_only = true;
    /// DeriveSharedSecret.
    DeriveSharedSecret => asymmetric::derive_shared_secret, hot = true, read_only = true;
    /// Encapsulate.
    Encapsulate => kem::encapsulate, hot = true, read_only = true;
    /// Decapsulate.
    Decapsulate => kem::decapsulate, hot = true, read_only = true;
    /// CreateCustomKeyStore.
    CreateCustomKeyStore => keystores::create_custom_key_store, hot = false, read_only = false;
    /// DescribeCustomKeyStores.
    DescribeCustomKeyStores => keystores::describe_custom_key_stores,
        hot = false, read_only = true;
    /// UpdateCustomKeyStore.
    UpdateCustomKeyStore => keystores::update_custom_key_store, hot = false, read_only = false;
    /// ConnectCustomKeyStore.
    ConnectCustomKeyStore => keystores::connect_custom_key_store, hot = false, read_only = false;
    /// DisconnectCustomKeyStore.
    DisconnectCustomKeyStore => keystores::disconnect_custom_key_store,
        hot = false, read_only = false;
    /// DeleteCustomKeyStore.
    DeleteCustomKeyStore => keystores::delete_custom_key_store, hot = false, read_only = false;
    /// GetParametersForImport.
    GetParametersForImport => import::get_parameters_for_import, hot = false, read_only = true;
    /// ImportKeyMaterial.
    ImportKeyMaterial => import::import_key_material, hot = false, read_only = false;
    /// DeleteImportedKeyMaterial.
    DeleteImportedKeyMaterial => import::delete_imported_key_material,
        hot = false, read_only = false;
}

/// Decodes a request body. An empty body is an empty request; anything that is not a JSON
/// object of the right field types is a `SerializationException` whose message gives the
/// position only, never the offending value (it could be a secret).
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

/// Serialises a response.
fn respond(v: &serde_json::Value) -> Result<Vec<u8>, KmsError> {
    serde_json::to_vec(v).map_err(KmsError::internal)
}

/// The empty response of operations that return nothing.
fn empty() -> Result<Vec<u8>, KmsError> {
    Ok(b"{}".to_vec())
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
    fn serialization_errors_do_not_echo_values() {
        let e = parse::<crate::api::EncryptRequest>(br#"{"Plaintext": 12345}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::SerializationException);
        assert!(!e.message.contains("12345"), "{}", e.message);
        let e = parse::<crate::api::EncryptRequest>(b"{nope").unwrap_err();
        assert_eq!(e.code, ErrorCode::SerializationException);
        assert!(parse::<crate::api::EncryptRequest>(b"").is_ok());
    }
}
