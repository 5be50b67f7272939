//! The engine's error: an AWS error name and a message.

use keyhold_core::key::StateRefusal;
use keyhold_store::StoreError;

macro_rules! error_codes {
    ($($(#[$m:meta])* $variant:ident),+ $(,)?) => {
        /// Every error name keyhold puts on the wire (`__type`). The server's table maps each
        /// to its HTTP status.
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
        }
    };
}

error_codes!(
    /// The caller may not do this.
    AccessDeniedException,
    /// A name (alias) already exists.
    AlreadyExistsException,
    /// The PKCS#11 token (cluster) already backs another custom key store.
    CloudHsmClusterInUseException,
    /// No PKCS#11 token has that label.
    CloudHsmClusterNotFoundException,
    /// A custom key store still holds keys.
    CustomKeyStoreHasCMKsException,
    /// The custom key store's connection state does not allow the operation.
    CustomKeyStoreInvalidStateException,
    /// Another custom key store of the account has that name.
    CustomKeyStoreNameInUseException,
    /// No custom key store has that id.
    CustomKeyStoreNotFoundException,
    /// The storage backend did not answer in time.
    DependencyTimeoutException,
    /// The key is disabled.
    DisabledException,
    /// DryRun was set and the request would have succeeded.
    DryRunOperationException,
    /// The import token has expired.
    ExpiredImportTokenException,
    /// Imported material is not valid, or not the material imported before.
    IncorrectKeyMaterialException,
    /// The import token is not valid for this key.
    InvalidImportTokenException,
    /// Decrypt named a different key than the ciphertext's.
    IncorrectKeyException,
    /// The SigV4 Authorization header is malformed.
    IncompleteSignatureException,
    /// The alias name is not valid.
    InvalidAliasNameException,
    /// An ARN is not valid.
    InvalidArnException,
    /// The ciphertext, its context or its key do not match.
    InvalidCiphertextException,
    /// A grant id is not valid.
    InvalidGrantIdException,
    /// A grant token is not valid.
    InvalidGrantTokenException,
    /// The key's usage or algorithm does not fit the operation.
    InvalidKeyUsageException,
    /// A pagination marker is not valid.
    InvalidMarkerException,
    /// The request signature does not match.
    InvalidSignatureException,
    /// An internal fault.
    KMSInternalException,
    /// The key's state does not allow the operation.
    KMSInvalidStateException,
    /// Verify found the signature invalid.
    KMSInvalidSignatureException,
    /// VerifyMac found the MAC invalid.
    KMSInvalidMacException,
    /// A quota is exceeded.
    LimitExceededException,
    /// A key policy is not valid.
    MalformedPolicyDocumentException,
    /// The request carries no authentication.
    MissingAuthenticationTokenException,
    /// The key or alias does not exist.
    NotFoundException,
    /// The request body is larger than allowed.
    RequestEntityTooLargeException,
    /// The request body is not valid JSON of the right shape.
    SerializationException,
    /// A tag is not valid.
    TagException,
    /// Too many requests.
    ThrottlingException,
    /// The access key id is not known.
    UnrecognizedClientException,
    /// The operation name is not known.
    UnknownOperationException,
    /// The operation or option is not supported.
    UnsupportedOperationException,
    /// A field is missing or out of range.
    ValidationException,
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
