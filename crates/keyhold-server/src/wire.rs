//! The AWS JSON 1.1 wire: error statuses (from the engine's error table) and error bodies.

use keyhold_kms::error::{ErrorCode, KmsError};

/// The content type of every request and response.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The prefix of `X-Amz-Target` values.
pub const TARGET_PREFIX: &str = "TrentService.";

/// The HTTP status AWS KMS returns with an error (the engine's error table).
pub fn status(code: ErrorCode) -> u16 {
    code.http_status()
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
    fn error_body_has_type_and_message() {
        let b = error_body(&KmsError::not_found("nope"));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["__type"], "NotFoundException");
        assert_eq!(v["message"], "nope");
    }
}
