//! Content keys per SSE mode: made and sealed for a new object, opened to read one.
//!
//! - SSE-S3: sealed under keyhold's owned S3 key (no KMS call), bound to the object's ARN.
//! - SSE-KMS: GenerateDataKey / Decrypt on the engine as the requesting principal via S3,
//!   with `{"aws:s3:arn": "arn:aws:s3:::BUCKET/KEY"}` plus the user's context; with a Bucket
//!   Key, one data key per requester, bucket, KMS key and context for a bounded time (context:
//!   the bucket's ARN), and each object's content key wrapped under it locally.
//! - SSE-C: wrapped under the customer's key; only a salted HMAC of that key is kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyhold_kms::api::{DecryptRequest, GenerateDataKeyRequest};
use keyhold_kms::error::{ErrorCode, KmsError};
use keyhold_kms::principal::Principal;
use keyhold_kms::{Engine, Request, RequestMeta, Response};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};

use crate::chunked::{ContentKey, KEY_LEN};
use crate::meta::Sealed;
use crate::sse::{b64, unb64, CustomerKey, SseRequest};

/// The S3 error of a KMS refusal, as S3 reports it (`KMS.DisabledException`, ...).
pub(crate) fn kms_error(e: KmsError) -> S3Error {
    match e.code {
        ErrorCode::AccessDeniedException => s3_error!(AccessDenied, "{}", e.message),
        ErrorCode::KMSInternalException => s3_error!(InternalError, "{}", e.message),
        ErrorCode::ThrottlingException => s3_error!(SlowDown, "{}", e.message),
        code => {
            let name = format!("KMS.{}", code.as_str());
            let parsed: S3ErrorCode = name.parse().unwrap_or(S3ErrorCode::InvalidArgument);
            let mut err = S3Error::with_message(parsed, e.message);
            err.set_status_code(http::StatusCode::BAD_REQUEST);
            err
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub principal: &'a Principal,
    pub meta: &'a RequestMeta,
}

/// The ARN of an object.
pub(crate) fn object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

/// The ARN of a bucket.
pub(crate) fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

struct BucketKey {
    key: ContentKey,
    blob: Vec<u8>,
    key_arn: String,
    made: Instant,
}

/// Most cached Bucket Keys at once.
const MAX_CACHED: usize = 10_000;

/// Requester ARN, bucket, named KMS key, context: one Bucket Key for writing.
type WriteSlot = (String, String, String, String);
/// Requester ARN and blob: one opened Bucket Key for reading.
type ReadSlot = (String, Vec<u8>);

pub(crate) struct Keys {
    engine: Arc<Engine>,
    ttl: Duration,
    /// Seal nothing (the benchmark baseline only).
    unencrypted: bool,
    /// Bucket Keys for writing, by requester, bucket, named KMS key and context.
    writing: Mutex<HashMap<WriteSlot, Arc<BucketKey>>>,
    /// Opened Bucket Keys for reading, by requester and blob.
    reading: Mutex<HashMap<ReadSlot, (Arc<ContentKey>, Instant)>>,
}

impl Keys {
    pub(crate) fn new(engine: Arc<Engine>, ttl: Duration, unencrypted: bool) -> Self {
        Self {
            engine,
            ttl,
            unencrypted,
            writing: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashMap::new()),
        }
    }

    fn full_context(
        user: &BTreeMap<String, String>,
        arn: &str,
    ) -> std::collections::HashMap<String, String> {
        let mut c: HashMap<String, String> = user.clone().into_iter().collect();
        c.insert("aws:s3:arn".into(), arn.to_string());
        c
    }

    fn generate(
        &self,
        caller: Caller<'_>,
        key_id: Option<&str>,
        context: HashMap<String, String>,
    ) -> S3Result<(ContentKey, Vec<u8>, String)> {
        let req = GenerateDataKeyRequest {
            key_id: Some(key_id.unwrap_or("alias/aws/s3").to_string()),
            encryption_context: Some(context),
            key_spec: Some("AES_256".into()),
            ..Default::default()
        };
        match self
            .engine
            .call(caller.principal, caller.meta, Request::GenerateDataKey(req))
            .map_err(kms_error)?
        {
            Response::GenerateDataKey(r) => {
                let key = ContentKey::from_slice(r.plaintext.expose_secret())
                    .ok_or_else(|| s3_error!(InternalError, "data key of the wrong length"))?;
                Ok((key, r.ciphertext_blob, r.key_id))
            }
            _ => Err(s3_error!(InternalError, "unexpected KMS response")),
        }
    }

    fn decrypt(
        &self,
        caller: Caller<'_>,
        key_arn: &str,
        blob: &[u8],
        context: HashMap<String, String>,
    ) -> S3Result<ContentKey> {
        let req = DecryptRequest {
            ciphertext_blob: Some(b64(blob)),
            encryption_context: Some(context),
            key_id: Some(key_arn.to_string()),
            ..Default::default()
        };
        match self
            .engine
            .call(caller.principal, caller.meta, Request::Decrypt(req))
            .map_err(kms_error)?
        {
            Response::Decrypt(r) => ContentKey::from_slice(r.plaintext.expose_secret())
                .ok_or_else(|| s3_error!(InternalError, "data key of the wrong length")),
            _ => Err(s3_error!(InternalError, "unexpected KMS response")),
        }
    }

    fn bucket_key_for_writing(
        &self,
        caller: Caller<'_>,
        bucket: &str,
        key_id: Option<&str>,
        user: &BTreeMap<String, String>,
    ) -> S3Result<Arc<BucketKey>> {
        let slot = (
            caller.principal.arn.clone(),
            bucket.to_string(),
            key_id.unwrap_or("").to_string(),
            serde_json::to_string(user).unwrap_or_default(),
        );
        {
            let cache = self.writing.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(k) = cache.get(&slot) {
                if k.made.elapsed() < self.ttl {
                    return Ok(k.clone());
                }
            }
        }
        let (key, blob, key_arn) = self.generate(
            caller,
            key_id,
            Self::full_context(user, &bucket_arn(bucket)),
        )?;
        let made = Arc::new(BucketKey {
            key,
            blob,
            key_arn,
            made: Instant::now(),
        });
        let mut cache = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            let ttl = self.ttl;
            cache.retain(|_, v| v.made.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(slot, made.clone());
        Ok(made)
    }

    fn bucket_key_for_reading(
        &self,
        caller: Caller<'_>,
        bucket: &str,
        key_arn: &str,
        blob: &[u8],
        user: &BTreeMap<String, String>,
    ) -> S3Result<Arc<ContentKey>> {
        let slot = (caller.principal.arn.clone(), blob.to_vec());
        {
            let cache = self.reading.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, at)) = cache.get(&slot) {
                if at.elapsed() < self.ttl {
                    return Ok(k.clone());
                }
            }
        }
        let key = Arc::new(self.decrypt(
            caller,
            key_arn,
            blob,
            Self::full_context(user, &bucket_arn(bucket)),
        )?);
        let mut cache = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            let ttl = self.ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(slot, (key.clone(), Instant::now()));
        Ok(key)
    }

    /// A fresh content key for the object `bucket/key`, sealed as `req` asks.
    pub(crate) fn seal(
        &self,
        caller: Caller<'_>,
        bucket: &str,
        key: &str,
        req: &SseRequest,
    ) -> S3Result<(ContentKey, Sealed)> {
        let arn = object_arn(bucket, key);
        if self.unencrypted {
            return Ok((ContentKey::random(), Sealed::Unencrypted));
        }
        match req {
            SseRequest::S3 => {
                let content = ContentKey::random();
                let ctx = keyhold_core::context::EncryptionContext::from_pairs(&[(
                    "aws:s3:arn",
                    arn.as_str(),
                )]);
                let sealed = self
                    .engine
                    .owned_seal("s3", &ctx, content.expose())
                    .map_err(kms_error)?;
                Ok((content, Sealed::S3 { key: b64(&sealed) }))
            }
            SseRequest::Kms {
                key_id,
                context,
                bucket_key: false,
            } => {
                let (content, blob, key_arn) =
                    self.generate(caller, key_id.as_deref(), Self::full_context(context, &arn))?;
                Ok((
                    content,
                    Sealed::Kms {
                        key_arn,
                        context: context.clone(),
                        blob: b64(&blob),
                        bucket_wrapped: None,
                    },
                ))
            }
            SseRequest::Kms {
                key_id,
                context,
                bucket_key: true,
            } => {
                let bk = self.bucket_key_for_writing(caller, bucket, key_id.as_deref(), context)?;
                let content = ContentKey::random();
                let kek = kek(&bk.key)?;
                let wrapped = crate::sse::wrap(&kek, &content, arn.as_bytes());
                Ok((
                    content,
                    Sealed::Kms {
                        key_arn: bk.key_arn.clone(),
                        context: context.clone(),
                        blob: b64(&bk.blob),
                        bucket_wrapped: Some(b64(&wrapped)),
                    },
                ))
            }
            SseRequest::Customer(c) => {
                let content = ContentKey::random();
                let (salt, hmac) = c.fingerprint();
                let wrapped = crate::sse::wrap(c.expose(), &content, arn.as_bytes());
                Ok((
                    content,
                    Sealed::Customer {
                        key_md5: c.md5.clone(),
                        salt: b64(&salt),
                        hmac: b64(&hmac),
                        key: b64(&wrapped),
                    },
                ))
            }
        }
    }

    /// The content key of the object `bucket/key`, opened as its mode requires: the KMS key's
    /// policy, grants and state apply for SSE-KMS; the customer's key must be given (and
    /// right) for SSE-C, and must not be given otherwise ([`check_customer`]).
    pub(crate) fn open(
        &self,
        caller: Caller<'_>,
        bucket: &str,
        key: &str,
        sealed: &Sealed,
        customer: Option<&CustomerKey>,
    ) -> S3Result<ContentKey> {
        let arn = object_arn(bucket, key);
        let damaged = || s3_error!(InternalError, "stored object key does not open");
        check_customer(sealed, customer)?;
        match sealed {
            Sealed::Customer { key, .. } => {
                let c = customer.ok_or_else(|| s3_error!(InternalError))?;
                crate::sse::unwrap(c.expose(), &unb64(key)?, arn.as_bytes()).ok_or_else(damaged)
            }
            Sealed::Unencrypted => Ok(ContentKey::random()),
            Sealed::S3 { key } => {
                let ctx = keyhold_core::context::EncryptionContext::from_pairs(&[(
                    "aws:s3:arn",
                    arn.as_str(),
                )]);
                let opened = self
                    .engine
                    .owned_open("s3", &unb64(key)?, &ctx)
                    .map_err(|_| damaged())?;
                ContentKey::from_slice(opened.expose_secret()).ok_or_else(damaged)
            }
            Sealed::Kms {
                key_arn,
                context,
                blob,
                bucket_wrapped: None,
            } => self.decrypt(
                caller,
                key_arn,
                &unb64(blob)?,
                Self::full_context(context, &arn),
            ),
            Sealed::Kms {
                key_arn,
                context,
                blob,
                bucket_wrapped: Some(wrapped),
            } => {
                let bk =
                    self.bucket_key_for_reading(caller, bucket, key_arn, &unb64(blob)?, context)?;
                let kek = kek(&bk)?;
                crate::sse::unwrap(&kek, &unb64(wrapped)?, arn.as_bytes()).ok_or_else(damaged)
            }
        }
    }
}

/// A HEAD (or a step that reads no bytes) of an SSE-C object still needs its key, and a key
/// sent for any other object is refused.
pub(crate) fn check_customer(sealed: &Sealed, customer: Option<&CustomerKey>) -> S3Result<()> {
    match (sealed, customer) {
        (Sealed::Customer { salt, hmac, .. }, Some(c)) => {
            if c.matches(&unb64(salt)?, &unb64(hmac)?) {
                Ok(())
            } else {
                Err(s3_error!(
                    AccessDenied,
                    "The provided customer key does not match the key the object was stored with."
                ))
            }
        }
        (Sealed::Customer { .. }, None) => Err(s3_error!(
            InvalidRequest,
            "The object was stored using a form of Server Side Encryption. The correct \
             parameters must be provided to retrieve the object."
        )),
        (_, Some(_)) => Err(s3_error!(
            InvalidRequest,
            "The encryption parameters are not applicable to this object."
        )),
        (_, None) => Ok(()),
    }
}

fn kek(k: &ContentKey) -> S3Result<zeroize::Zeroizing<[u8; KEY_LEN]>> {
    let mut out = zeroize::Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(k.expose());
    Ok(out)
}
