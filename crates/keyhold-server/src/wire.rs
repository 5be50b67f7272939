//! The AWS JSON 1.1 wire: the error table (name → HTTP status) and response bodies.

use keyhold_kms::error::{ErrorCode, KmsError};

/// The content type of every request and response.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The prefix of `X-Amz-Target` values.
pub const TARGET_PREFIX: &str = "TrentService.";

/// The HTTP status AWS KMS returns with each error. This table is the only source of error
/// statuses.
pub fn status(code: ErrorCode) -> u16 {
    use ErrorCode::*;
    match code {
        KMSInternalException => 500,
        DependencyTimeoutException => 503,
        MissingAuthenticationTokenException => 403,
        RequestEntityTooLargeException => 413,
        AccessDeniedException
        | AlreadyExistsException
        | CloudHsmClusterInUseException
        | CloudHsmClusterNotFoundException
        | CustomKeyStoreHasCMKsException
        | CustomKeyStoreInvalidStateException
        | CustomKeyStoreNameInUseException
        | CustomKeyStoreNotFoundException
        | DisabledException
        | DryRunOperationException
        | ExpiredImportTokenException
        | IncorrectKeyMaterialException
        | InvalidImportTokenException
        | IncorrectKeyException
        | IncompleteSignatureException
        | InvalidAliasNameException
        | InvalidArnException
        | InvalidCiphertextException
        | InvalidGrantIdException
        | InvalidGrantTokenException
        | InvalidKeyUsageException
        | InvalidMarkerException
        | InvalidSignatureException
        | KMSInvalidStateException
        | KMSInvalidSignatureException
        | KMSInvalidMacException
        | LimitExceededException
        | MalformedPolicyDocumentException
        | NotFoundException
        | SerializationException
        | TagException
        | ThrottlingException
        | UnrecognizedClientException
        | UnknownOperationException
        | UnsupportedOperationException
        | ValidationException => 400,
        _ => 400,
    }
}

/// The JSON body of an error: `{"__type": NAME, "message": TEXT}`.
pub fn error_body(e: &KmsError) -> Vec<u8> {
    let mut body = serde_json::json!({ "__type": e.code.as_str() });
    if !e.message.is_empty() {
        body["message"] = serde_json::json!(e.message);
    }
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_table_is_pinned() {
        assert_eq!(status(ErrorCode::NotFoundException), 400);
        assert_eq!(status(ErrorCode::InvalidCiphertextException), 400);
        assert_eq!(status(ErrorCode::AccessDeniedException), 400);
        assert_eq!(status(ErrorCode::KMSInternalException), 500);
        assert_eq!(status(ErrorCode::DependencyTimeoutException), 503);
        assert_eq!(status(ErrorCode::MissingAuthenticationTokenException), 403);
        assert_eq!(status(ErrorCode::RequestEntityTooLargeException), 413);
        for c in ErrorCode::ALL {
            let s = status(*c);
            assert!(s == 400 || s == 403 || s == 413 || s >= 500, "{c:?}");
        }
    }

    #[test]
    fn error_body_has_type_and_message() {
        let b = error_body(&KmsError::not_found("nope"));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["__type"], "NotFoundException");
        assert_eq!(v["message"], "nope");
    }
}
