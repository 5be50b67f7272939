//! Turning untrusted request fields into typed values, with AWS's validation messages.

use std::collections::HashMap;

use base64::Engine as _;
use keyhold_core::context::EncryptionContext;

use crate::error::KmsError;

fn one_error(value: &str, field: &str, constraint: &str) -> KmsError {
    KmsError::validation(format!(
        "1 validation error detected: Value {value} at '{field}' failed to satisfy constraint: \
         {constraint}"
    ))
}

/// A required field.
pub fn required<T>(v: Option<T>, field: &str) -> Result<T, KmsError> {
    v.ok_or_else(|| one_error("null", field, "Member must not be null"))
}

/// A string whose length (in characters) must lie in `min..=max`.
pub fn str_len(s: &str, field: &str, min: usize, max: usize) -> Result<(), KmsError> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(one_error(
            &format!("'{}'", truncate(s)),
            field,
            &format!("Member must have length between {min} and {max}, inclusive"),
        ));
    }
    Ok(())
}

/// An integer that must lie in `min..=max`.
pub fn int_range(v: i64, field: &str, min: i64, max: i64) -> Result<(), KmsError> {
    if v < min || v > max {
        let constraint = if v < min {
            format!("Member must have value greater than or equal to {min}")
        } else {
            format!("Member must have value less than or equal to {max}")
        };
        return Err(one_error(&format!("'{v}'"), field, &constraint));
    }
    Ok(())
}

/// Decodes a base64 blob field whose decoded length must lie in `min..=max`.
pub fn blob(b64: &str, field: &str, min: usize, max: usize) -> Result<Vec<u8>, KmsError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| {
            KmsError::validation(format!(
                "Value at '{field}' is not valid base64-encoded data"
            ))
        })?;
    if bytes.len() < min || bytes.len() > max {
        return Err(one_error(
            "(blob)",
            field,
            &format!("Member must have length between {min} and {max}, inclusive"),
        ));
    }
    Ok(bytes)
}

/// An enum field: parses with `parse` or explains the allowed values.
pub fn enum_value<T: Copy>(
    s: &str,
    field: &str,
    parse: impl Fn(&str) -> Option<T>,
    all: &[T],
    name: impl Fn(&T) -> &'static str,
) -> Result<T, KmsError> {
    parse(s).ok_or_else(|| {
        let allowed: Vec<&str> = all.iter().map(name).collect();
        one_error(
            &format!("'{}'", truncate(s)),
            field,
            &format!(
                "Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            ),
        )
    })
}

/// Grant tokens: at most 10, each 1–8192 characters. (Checked, then unused until grants.)
pub fn grant_tokens(tokens: &Option<Vec<String>>) -> Result<(), KmsError> {
    if let Some(t) = tokens {
        if t.len() > 10 {
            return Err(one_error(
                "(list)",
                "grantTokens",
                "Member must have length less than or equal to 10",
            ));
        }
        for token in t {
            str_len(token, "grantTokens.member", 1, 8192)?;
            if !crate::ops::is_grant_token(token) {
                return Err(KmsError::new(
                    crate::error::ErrorCode::InvalidGrantTokenException,
                    "The grant token is not valid.",
                ));
            }
        }
    }
    Ok(())
}

/// An optional encryption context from the request.
pub fn context(map: Option<HashMap<String, String>>) -> EncryptionContext {
    EncryptionContext::new(map.map(|m| m.into_iter().collect()).unwrap_or_default())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field() {
        let e = required::<u8>(None, "keyId").unwrap_err();
        assert!(e.message.contains("'keyId'"), "{}", e.message);
        let e = int_range(0, "numberOfBytes", 1, 1024).unwrap_err();
        assert!(e.message.contains("greater than or equal to 1"));
        assert!(blob("!!", "plaintext", 1, 4096).is_err());
        assert_eq!(blob("AAE=", "plaintext", 1, 4096).unwrap(), vec![0, 1]);
        assert!(blob("", "plaintext", 1, 4096).is_err());
        assert!(str_len("ab", "description", 0, 1).is_err());
    }
}
