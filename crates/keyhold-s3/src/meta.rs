//! The gateway's documents in the catalog: what a bucket, object, upload and part record's
//! `meta` holds. Wrapped keys only; never a plaintext key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A bucket's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMeta {
    /// Default encryption (PutBucketEncryption); SSE-S3 when absent, as in S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<DefaultEncryption>,
}

/// A bucket's default encryption rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultEncryption {
    /// `AES256` or `aws:kms`.
    pub algorithm: String,
    /// The KMS key of `aws:kms` (the account's `aws/s3` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// S3 Bucket Keys for `aws:kms`.
    #[serde(default)]
    pub bucket_key: bool,
}

/// How an object's content key is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode")]
pub enum Sealed {
    /// SSE-S3: sealed under keyhold's owned S3 key, bound to the object's ARN.
    #[serde(rename = "AES256")]
    S3 {
        /// The sealed content key (base64).
        key: String,
    },
    /// SSE-KMS.
    #[serde(rename = "aws:kms")]
    Kms {
        /// The KMS key's ARN.
        key_arn: String,
        /// The user's encryption context (without `aws:s3:arn`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        context: BTreeMap<String, String>,
        /// The KMS ciphertext blob: of the content key itself, or of the bucket key (base64).
        blob: String,
        /// With a bucket key: the content key wrapped under the bucket key (base64).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bucket_wrapped: Option<String>,
    },
    /// SSE-C: the content key wrapped under the customer's key; only a salted HMAC of that
    /// key is kept, to check it.
    #[serde(rename = "SSE-C")]
    Customer {
        /// Base64 MD5 of the customer key (returned in headers, as S3 does).
        key_md5: String,
        /// Salt of the HMAC (base64).
        salt: String,
        /// HMAC-SHA256 of the customer key under the salt (base64).
        hmac: String,
        /// The content key wrapped under the customer key (base64).
        key: String,
    },
    /// Not encrypted: only ever written by a gateway that `keyhold bench` starts for itself
    /// as its encryption-off baseline ([`crate::GatewayOptions::unencrypted_for_benchmarks`]);
    /// `keyhold serve` never writes it.
    #[serde(rename = "none")]
    Unencrypted,
}

impl Sealed {
    /// The `x-amz-server-side-encryption` value (none for SSE-C, as S3).
    pub fn algorithm(&self) -> Option<&'static str> {
        match self {
            Self::S3 { .. } => Some("AES256"),
            Self::Kms { .. } => Some("aws:kms"),
            Self::Customer { .. } | Self::Unencrypted => None,
        }
    }
}

/// One piece of stored (encrypted) data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRef {
    /// The data id (hex), also its name in the object store.
    pub id: String,
    /// Plaintext bytes.
    pub size: u64,
}

/// Headers stored with an object and returned on GET and HEAD.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers {
    /// Content-Type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Content-Encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// Content-Disposition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// Content-Language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// Cache-Control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// Expires, as sent (an HTTP date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// x-amz-website-redirect-location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website_redirect_location: Option<String>,
    /// x-amz-meta-*.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
}

/// A checksum S3 keeps for an object or part (`CRC32`, ... and its base64 value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredChecksum {
    /// The algorithm (`CRC32`, `CRC32C`, `SHA1`, `SHA256`, `CRC64NVME`).
    pub algorithm: String,
    /// The value, base64.
    pub value: String,
    /// `FULL_OBJECT` or `COMPOSITE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// An object's current version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Plaintext bytes.
    pub size: u64,
    /// The ETag, without quotes.
    pub etag: String,
    /// Stored headers.
    #[serde(default)]
    pub headers: Headers,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// Checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<StoredChecksum>,
    /// How the content key is kept.
    pub sealed: Sealed,
    /// The stored data, in order (one piece, or one per part).
    pub data: Vec<DataRef>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    /// Headers of the object to be.
    #[serde(default)]
    pub headers: Headers,
    /// Tags of the object to be.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// How the content key, shared by every part, is kept.
    pub sealed: Sealed,
    /// The checksum algorithm asked for at the start, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<String>,
    /// The principal that started it (ListMultipartUploads' Initiator).
    pub initiator: String,
}

/// One part of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    /// The part's ETag, without quotes.
    pub etag: String,
    /// Its stored data.
    pub data: DataRef,
    /// Its checksum, if one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<StoredChecksum>,
}
