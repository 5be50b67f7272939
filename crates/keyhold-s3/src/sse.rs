//! Server-side encryption requests as S3 reads them from headers, and the local key wrapping
//! of SSE-C and Bucket Keys (AES-256-GCM from aws-lc-rs).

use std::collections::BTreeMap;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine as _;
use s3s::{s3_error, S3Result};
use zeroize::Zeroizing;

use crate::chunked::{ContentKey, KEY_LEN};
use crate::meta::DefaultEncryption;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Base64 of bytes.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Bytes of stored base64 (a stored document that does not decode is an internal fault).
pub fn unb64(s: &str) -> S3Result<Vec<u8>> {
    B64.decode(s)
        .map_err(|_| s3_error!(InternalError, "stored object metadata is damaged"))
}

/// A customer-provided key (SSE-C), checked against its MD5. Zeroized on drop.
pub struct CustomerKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    /// Base64 MD5 of the key, as sent.
    pub md5: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerKey")
            .field("md5", &self.md5)
            .finish_non_exhaustive()
    }
}

impl CustomerKey {
    /// Reads the three SSE-C headers (algorithm, key, key MD5) of a request or of its copy
    /// source. `None` when none is sent.
    pub fn from_headers(
        algorithm: Option<&str>,
        key: Option<&str>,
        md5: Option<&str>,
    ) -> S3Result<Option<Self>> {
        if algorithm.is_none() && key.is_none() && md5.is_none() {
            return Ok(None);
        }
        let Some(algorithm) = algorithm else {
            return Err(s3_error!(
                InvalidArgument,
                "Requests specifying Server Side Encryption with Customer provided keys must \
                 provide a valid encryption algorithm."
            ));
        };
        if algorithm != "AES256" {
            return Err(s3_error!(
                InvalidEncryptionAlgorithmError,
                "The encryption request you specified is not valid. Supported value: AES256."
            ));
        }
        let (Some(key), Some(md5)) = (key, md5) else {
            return Err(s3_error!(
                InvalidArgument,
                "Requests specifying Server Side Encryption with Customer provided keys must \
                 provide an appropriate secret key and its MD5."
            ));
        };
        let raw = Zeroizing::new(B64.decode(key).unwrap_or_default());
        if raw.len() != KEY_LEN {
            return Err(s3_error!(
                InvalidArgument,
                "The secret key was invalid for the specified algorithm."
            ));
        }
        let digest = {
            use s3s::crypto::Checksum as _;
            s3s::crypto::Md5::checksum(&raw)
        };
        if B64.encode(digest) != md5 {
            return Err(s3_error!(
                InvalidArgument,
                "The calculated MD5 hash of the key did not match the hash that was provided."
            ));
        }
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        k.copy_from_slice(&raw);
        Ok(Some(Self {
            key: k,
            md5: md5.to_string(),
        }))
    }

    /// A fresh salt and the HMAC-SHA256 of this key under it (what is stored to check the key
    /// later; the key itself never is).
    pub fn fingerprint(&self) -> (Vec<u8>, Vec<u8>) {
        let salt = crate::chunked::new_data_id().to_vec();
        let tag = self.hmac(&salt);
        (salt, tag)
    }

    fn hmac(&self, salt: &[u8]) -> Vec<u8> {
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, salt);
        aws_lc_rs::hmac::sign(&k, &self.key[..]).as_ref().to_vec()
    }

    /// True when this is the key the stored fingerprint was made from (constant time).
    pub fn matches(&self, salt: &[u8], tag: &[u8]) -> bool {
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, salt);
        aws_lc_rs::hmac::verify(&k, &self.key[..], tag).is_ok()
    }

    /// The key bytes (to wrap a content key under).
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

/// How a new object is to be encrypted.
#[derive(Debug)]
pub enum SseRequest {
    /// SSE-S3.
    S3,
    /// SSE-KMS.
    Kms {
        /// The key named, or the account's `aws/s3`.
        key_id: Option<String>,
        /// The user's encryption context.
        context: BTreeMap<String, String>,
        /// Use a Bucket Key.
        bucket_key: bool,
    },
    /// SSE-C.
    Customer(CustomerKey),
}

/// The SSE headers of a write (PutObject, CopyObject, CreateMultipartUpload), checked as S3
/// checks them, falling back to the bucket's default.
pub fn write_request(
    sse: Option<&str>,
    kms_key_id: Option<&str>,
    context_b64: Option<&str>,
    bucket_key: Option<bool>,
    customer: Option<CustomerKey>,
    default: Option<&DefaultEncryption>,
) -> S3Result<SseRequest> {
    if let Some(c) = customer {
        if sse.is_some() || kms_key_id.is_some() || context_b64.is_some() {
            return Err(s3_error!(
                InvalidArgument,
                "Server Side Encryption with Customer provided key is incompatible with the \
                 encryption method specified"
            ));
        }
        return Ok(SseRequest::Customer(c));
    }
    match sse {
        None => {
            if kms_key_id.is_some() || context_b64.is_some() {
                return Err(s3_error!(
                    InvalidArgument,
                    "Server Side Encryption with AWS KMS managed key requires HTTP header \
                     x-amz-server-side-encryption : aws:kms"
                ));
            }
            Ok(match default {
                Some(d) if d.algorithm == "aws:kms" => SseRequest::Kms {
                    key_id: d.kms_key_id.clone(),
                    context: BTreeMap::new(),
                    bucket_key: bucket_key.unwrap_or(d.bucket_key),
                },
                _ => SseRequest::S3,
            })
        }
        Some("AES256") => {
            if kms_key_id.is_some() || context_b64.is_some() {
                return Err(s3_error!(
                    InvalidArgument,
                    "Server Side Encryption with AWS KMS managed key requires HTTP header \
                     x-amz-server-side-encryption : aws:kms"
                ));
            }
            Ok(SseRequest::S3)
        }
        Some("aws:kms") => {
            let context = match context_b64 {
                None => BTreeMap::new(),
                Some(c) => parse_context(c)?,
            };
            // A bucket default of aws:kms with its key applies to a request that names none.
            let (key_id, default_bucket_key) = match (kms_key_id, default) {
                (Some(k), _) => (Some(k.to_string()), false),
                (None, Some(d)) if d.algorithm == "aws:kms" => (d.kms_key_id.clone(), d.bucket_key),
                (None, _) => (None, false),
            };
            if let Some(k) = &key_id {
                if k.is_empty() || k.len() > 2048 {
                    return Err(s3_error!(InvalidArgument, "Invalid KMS key id"));
                }
            }
            Ok(SseRequest::Kms {
                key_id,
                context,
                bucket_key: bucket_key.unwrap_or(default_bucket_key),
            })
        }
        Some(other) => Err(s3_error!(
            InvalidArgument,
            "The encryption method specified is not supported: {other}"
        )),
    }
}

/// The user's SSE-KMS encryption context: base64 of a JSON object of strings.
pub fn parse_context(b64: &str) -> S3Result<BTreeMap<String, String>> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "The header 'x-amz-server-side-encryption-context' shall be Base64-encoded UTF-8 \
             string holding JSON which represents a string-string map"
        )
    };
    let json = B64.decode(b64).map_err(|_| bad())?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&json).map_err(|_| bad())?;
    if map.keys().any(|k| k.starts_with("aws:")) {
        return Err(s3_error!(
            InvalidArgument,
            "Encryption context keys cannot start with the reserved prefix 'aws:'"
        ));
    }
    Ok(map)
}

/// The base64 JSON form of a context, as S3 returns it in
/// `x-amz-server-side-encryption-context`.
pub fn context_header(context: &BTreeMap<String, String>) -> String {
    B64.encode(serde_json::to_vec(context).unwrap_or_default())
}

/// Wraps a content key under a 256-bit key with AES-256-GCM (random nonce), bound to `aad`.
pub fn wrap(kek: &[u8; KEY_LEN], content: &ContentKey, aad: &[u8]) -> Vec<u8> {
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, kek).unwrap_or_else(|_| unreachable!("32-byte key")),
    );
    let nonce = crate::chunked::new_data_id();
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&nonce[..NONCE_LEN]);
    let mut buf = content.expose().to_vec();
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::from(aad), &mut buf)
        .unwrap_or_else(|_| unreachable!("32-byte plaintext"));
    let mut out = n.to_vec();
    out.extend_from_slice(&buf);
    out.extend_from_slice(tag.as_ref());
    buf.iter_mut().for_each(|b| *b = 0);
    out
}

/// Unwraps what [`wrap`] made with the same key and `aad`; `None` for anything else.
pub fn unwrap(kek: &[u8; KEY_LEN], wrapped: &[u8], aad: &[u8]) -> Option<ContentKey> {
    if wrapped.len() != NONCE_LEN + KEY_LEN + 16 {
        return None;
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).ok()?);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&wrapped[..NONCE_LEN]);
    let mut buf = Zeroizing::new(wrapped[NONCE_LEN..].to_vec());
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(n), Aad::from(aad), &mut buf)
        .ok()?;
    ContentKey::from_slice(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_headers(key: &[u8]) -> (String, String) {
        use s3s::crypto::Checksum as _;
        (B64.encode(key), B64.encode(s3s::crypto::Md5::checksum(key)))
    }

    fn code(e: s3s::S3Error) -> String {
        e.code().as_str().to_string()
    }

    #[test]
    fn customer_keys_are_checked_like_s3() {
        let (k, m) = key_headers(&[1u8; 32]);
        let c = CustomerKey::from_headers(Some("AES256"), Some(&k), Some(&m))
            .unwrap()
            .unwrap();
        let (salt, tag) = c.fingerprint();
        assert!(c.matches(&salt, &tag));
        let (k2, m2) = key_headers(&[2u8; 32]);
        let other = CustomerKey::from_headers(Some("AES256"), Some(&k2), Some(&m2))
            .unwrap()
            .unwrap();
        assert!(!other.matches(&salt, &tag));
        assert!(!format!("{c:?}").contains(&k));

        assert!(CustomerKey::from_headers(None, None, None)
            .unwrap()
            .is_none());
        let (short, short_md5) = key_headers(&[1u8; 16]);
        for (alg, key, md5, want) in [
            (
                Some("AES128"),
                Some(k.as_str()),
                Some(m.as_str()),
                "InvalidEncryptionAlgorithmError",
            ),
            (None, Some(k.as_str()), Some(m.as_str()), "InvalidArgument"),
            (Some("AES256"), None, Some(m.as_str()), "InvalidArgument"),
            (Some("AES256"), Some(k.as_str()), None, "InvalidArgument"),
            (
                Some("AES256"),
                Some(k.as_str()),
                Some(m2.as_str()),
                "InvalidArgument",
            ),
            (
                Some("AES256"),
                Some(short.as_str()),
                Some(short_md5.as_str()),
                "InvalidArgument",
            ),
            (
                Some("AES256"),
                Some("%%%"),
                Some(m.as_str()),
                "InvalidArgument",
            ),
        ] {
            let e = CustomerKey::from_headers(alg, key, md5).unwrap_err();
            assert_eq!(code(e), want, "{alg:?} {key:?} {md5:?}");
        }
    }

    #[test]
    fn sse_header_combinations_are_checked_like_s3() {
        let (k, m) = key_headers(&[1u8; 32]);
        let cust = || CustomerKey::from_headers(Some("AES256"), Some(&k), Some(&m)).unwrap();
        let ctx = B64.encode(br#"{"project":"x"}"#);
        // SSE-C with an aws:kms or AES256 header, a KMS key id without aws:kms, an unknown
        // algorithm, a reserved or malformed context.
        let bad = [
            write_request(Some("aws:kms"), None, None, None, cust(), None),
            write_request(Some("AES256"), None, None, None, cust(), None),
            write_request(Some("AES256"), Some("alias/x"), None, None, None, None),
            write_request(None, Some("alias/x"), None, None, None, None),
            write_request(None, None, Some(&ctx), None, None, None),
            write_request(Some("aws:kms:dsse"), None, None, None, None, None),
            write_request(
                Some("aws:kms"),
                None,
                Some("bm90IGpzb24="),
                None,
                None,
                None,
            ),
            write_request(
                Some("aws:kms"),
                None,
                Some(&B64.encode(br#"{"aws:s3:arn":"x"}"#)),
                None,
                None,
                None,
            ),
        ];
        for (i, r) in bad.into_iter().enumerate() {
            assert_eq!(code(r.unwrap_err()), "InvalidArgument", "case {i}");
        }
        assert!(matches!(
            write_request(None, None, None, None, None, None).unwrap(),
            SseRequest::S3
        ));
        let d = DefaultEncryption {
            algorithm: "aws:kms".into(),
            kms_key_id: Some("alias/k".into()),
            bucket_key: true,
        };
        match write_request(None, None, None, None, None, Some(&d)).unwrap() {
            SseRequest::Kms {
                key_id, bucket_key, ..
            } => assert_eq!((key_id.as_deref(), bucket_key), (Some("alias/k"), true)),
            other => panic!("{other:?}"),
        }
        match write_request(
            Some("aws:kms"),
            Some("alias/y"),
            Some(&ctx),
            Some(false),
            None,
            Some(&d),
        )
        .unwrap()
        {
            SseRequest::Kms {
                key_id,
                context,
                bucket_key,
            } => {
                assert_eq!((key_id.as_deref(), bucket_key), (Some("alias/y"), false));
                assert_eq!(context.get("project").map(String::as_str), Some("x"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrapped_keys_open_only_with_their_key_and_binding() {
        let content = ContentKey::random();
        let w = wrap(&[3u8; 32], &content, b"arn:aws:s3:::b/k");
        let back = unwrap(&[3u8; 32], &w, b"arn:aws:s3:::b/k").unwrap();
        assert_eq!(back.expose(), content.expose());
        assert!(unwrap(&[4u8; 32], &w, b"arn:aws:s3:::b/k").is_none());
        assert!(unwrap(&[3u8; 32], &w, b"arn:aws:s3:::b/other").is_none());
        assert!(unwrap(&[3u8; 32], &w[1..], b"arn:aws:s3:::b/k").is_none());
    }
}
