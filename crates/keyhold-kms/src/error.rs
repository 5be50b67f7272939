//! The engine's error: an AWS error name and a message.

use keyhold_core::key::StateRefusal;
use keyhold_store::StoreError;

macro_rules! error_codes {
    ($($(#[$m:meta])* $variant:ident = $status:literal),+ $(,)?) => {
        /// Every error name keyhold puts on the wire (`__type`), with the HTTP status AWS KMS
        /// returns it with. This table is the only source of both; it is matched exhaustively.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode { $($(#[$m])* $variant),+ }

        impl ErrorCode {
            /// Every code, for table tests.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The AWS error name.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => stringify!($variant)),+ }
            }

            /// The HTTP status of the error.
            pub fn http_status(&self) -> u16 {
                match self { $(Self::$variant => $status),+ }
            }
        }
    };
}

error_codes!(
    /// The caller may not do this.
    AccessDeniedException = 400,
    /// A name (alias) already exists.
    AlreadyExistsException = 400,
    /// The PKCS#11 token (cluster) already backs another custom key store.
    CloudHsmClusterInUseException = 400,
    /// No PKCS#11 token has that label.
    CloudHsmClusterNotFoundException = 400,
    /// A custom key store still holds keys.
    CustomKeyStoreHasCMKsException = 400,
    /// The custom key store's connection state does not allow the operation.
    CustomKeyStoreInvalidStateException = 400,
    /// Another custom key store of the account has that name.
    CustomKeyStoreNameInUseException = 400,
    /// No custom key store has that id.
    CustomKeyStoreNotFoundException = 400,
    /// The storage backend did not answer in time.
    DependencyTimeoutException = 503,
    /// The key is disabled.
    DisabledException = 400,
    /// DryRun was set and the request would have succeeded.
    DryRunOperationException = 400,
    /// The import token has expired.
    ExpiredImportTokenException = 400,
    /// Imported material is not valid, or not the material imported before.
    IncorrectKeyMaterialException = 400,
    /// The import token is not valid for this key.
    InvalidImportTokenException = 400,
    /// Decrypt named a different key than the ciphertext's.
    IncorrectKeyException = 400,
    /// The SigV4 Authorization header is malformed.
    IncompleteSignatureException = 400,
    /// The alias name is not valid.
    InvalidAliasNameException = 400,
    /// An ARN is not valid.
    InvalidArnException = 400,
    /// The ciphertext, its context or its key do not match.
    InvalidCiphertextException = 400,
    /// A grant id is not valid.
    InvalidGrantIdException = 400,
    /// A grant token is not valid.
    InvalidGrantTokenException = 400,
    /// The key's usage or algorithm does not fit the operation.
    InvalidKeyUsageException = 400,
    /// A pagination marker is not valid.
    InvalidMarkerException = 400,
    /// The request signature does not match.
    InvalidSignatureException = 400,
    /// An internal fault.
    KMSInternalException = 500,
    /// The key's state does not allow the operation.
    KMSInvalidStateException = 400,
    /// Verify found the signature invalid.
    KMSInvalidSignatureException = 400,
    /// VerifyMac found the MAC invalid.
    KMSInvalidMacException = 400,
    /// A quota is exceeded.
    LimitExceededException = 400,
    /// A key policy is not valid.
    MalformedPolicyDocumentException = 400,
    /// The request carries no authentication.
    MissingAuthenticationTokenException = 403,
    /// The key or alias does not exist.
    NotFoundException = 400,
    /// The request body is larger than allowed.
    RequestEntityTooLargeException = 413,
    /// The request body did not arrive in time.
    RequestTimeoutException = 408,
    /// The request body is not valid JSON of the right shape.
    SerializationException = 400,
    /// A tag is not valid.
    TagException = 400,
    /// Too many requests.
    ThrottlingException = 400,
    /// The access key id is not known.
    UnrecognizedClientException = 400,
    /// The operation name is not known.
    UnknownOperationException = 400,
    /// The operation or option is not supported.
    UnsupportedOperationException = 400,
    /// A field is missing or out of range.
    ValidationException = 400,
);

/// An error returned to the caller: an AWS error name and a message that names the value at
/// fault but never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct KmsError {
    /// The AWS error name.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl KmsError {
    /// An error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A `ValidationException`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationException, message)
    }

    /// A `NotFoundException`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFoundException, message)
    }

    /// The single opaque decryption failure.
    pub fn invalid_ciphertext() -> Self {
        Self::new(ErrorCode::InvalidCiphertextException, "")
    }

    /// A `KMSInternalException`; the detail goes to the log, not to the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            ErrorCode::KMSInternalException,
            "The request was rejected because an internal exception occurred.",
        )
    }

    /// The error a key state gives for an operation it refuses.
    pub fn from_state(refusal: StateRefusal, key_arn: &str, state: &str) -> Self {
        match refusal {
            StateRefusal::Disabled => Self::new(
                ErrorCode::DisabledException,
                format!("{key_arn} is disabled."),
            ),
            StateRefusal::InvalidState => Self::invalid_state(key_arn, state),
        }
    }

    /// A `KMSInvalidStateException` naming the key and its state.
    pub fn invalid_state(key_arn: &str, state: &str) -> Self {
        let message = if state == "PendingDeletion" {
            format!("{key_arn} is pending deletion.")
        } else {
            format!("{key_arn} is {state}.")
        };
        Self::new(ErrorCode::KMSInvalidStateException, message)
    }
}

impl From<StoreError> for KmsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy(detail) => {
                tracing::warn!(%detail, "storage overloaded");
                Self::new(ErrorCode::ThrottlingException, "Rate exceeded")
            }
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "storage unavailable");
                Self::new(
                    ErrorCode::DependencyTimeoutException,
                    "The storage backend did not respond in time.",
                )
            }
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire error table, pinned: a 400 never drifts to another status.
    #[test]
    fn error_table_is_pinned() {
        let expected: &[(&str, u16)] = &[
            ("AccessDeniedException", 400),
            ("AlreadyExistsException", 400),
            ("CloudHsmClusterInUseException", 400),
            ("CloudHsmClusterNotFoundException", 400),
            ("CustomKeyStoreHasCMKsException", 400),
            ("CustomKeyStoreInvalidStateException", 400),
            ("CustomKeyStoreNameInUseException", 400),
            ("CustomKeyStoreNotFoundException", 400),
            ("DependencyTimeoutException", 503),
            ("DisabledException", 400),
            ("DryRunOperationException", 400),
            ("ExpiredImportTokenException", 400),
            ("IncorrectKeyMaterialException", 400),
            ("InvalidImportTokenException", 400),
            ("IncorrectKeyException", 400),
            ("IncompleteSignatureException", 400),
            ("InvalidAliasNameException", 400),
            ("InvalidArnException", 400),
            ("InvalidCiphertextException", 400),
            ("InvalidGrantIdException", 400),
            ("InvalidGrantTokenException", 400),
            ("InvalidKeyUsageException", 400),
            ("InvalidMarkerException", 400),
            ("InvalidSignatureException", 400),
            ("KMSInternalException", 500),
            ("KMSInvalidStateException", 400),
            ("KMSInvalidSignatureException", 400),
            ("KMSInvalidMacException", 400),
            ("LimitExceededException", 400),
            ("MalformedPolicyDocumentException", 400),
            ("MissingAuthenticationTokenException", 403),
            ("NotFoundException", 400),
            ("RequestEntityTooLargeException", 413),
            ("RequestTimeoutException", 408),
            ("SerializationException", 400),
            ("TagException", 400),
            ("ThrottlingException", 400),
            ("UnrecognizedClientException", 400),
            ("UnknownOperationException", 400),
            ("UnsupportedOperationException", 400),
            ("ValidationException", 400),
        ];
        let table: Vec<(&str, u16)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str(), c.http_status()))
            .collect();
        assert_eq!(table, expected);
    }
}
