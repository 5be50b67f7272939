//! The S3 operations. Each runs as the requesting principal: bucket ownership decides access,
//! the KMS engine decides every use of a KMS key, and every object's bytes are encrypted.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use keyhold_kms::catalog::{BucketRecord, ObjectCatalog, ObjectRecord, StoreError, UploadRecord};
use keyhold_kms::principal::Principal;
use keyhold_kms::{Engine, RequestMeta};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use crate::headers::{check_tags, copy_range, parse_tagging_header};
use crate::keys::{check_customer, Caller, Keys};
use crate::meta::{
    BucketMeta, DataRef, DefaultEncryption, Headers, ObjectMeta, PartMeta, Sealed, StoredChecksum,
    UploadMeta,
};
use crate::objects::ObjectStore;
use crate::sse::{b64, context_header, CustomerKey};
use crate::stream::{read_data, write_data, Digests};
use crate::{Exchange, GatewayOptions, Transport};

/// Longest object key (bytes).
const MAX_KEY: usize = 1024;
/// Most bytes of user metadata (names and values).
const MAX_USER_METADATA: usize = 2048;
/// Smallest part but the last of a multipart upload.
const MIN_PART: u64 = 5 * 1024 * 1024;
/// Largest object CopyObject copies in one request.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;

pub(crate) struct Inner {
    pub(crate) engine: Arc<Engine>,
    objects: Arc<dyn ObjectStore>,
    keys: Keys,
    options: GatewayOptions,
}

impl Inner {
    pub(crate) fn new(
        engine: Arc<Engine>,
        objects: Arc<dyn ObjectStore>,
        options: GatewayOptions,
    ) -> Self {
        Self {
            keys: Keys::new(
                engine.clone(),
                options.bucket_key_ttl,
                options.unencrypted_for_benchmarks,
            ),
            engine,
            objects,
            options,
        }
    }

    /// Runs a catalog call off the async threads.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn ObjectCatalog) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(engine.catalog()))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn delete_pieces(&self, pieces: impl IntoIterator<Item = DataRef>) {
        for p in pieces {
            if let Err(e) = self.objects.delete(&p.id).await {
                tracing::warn!(error = %e, data = %p.id, "stored data not deleted");
            }
        }
    }

    pub(crate) async fn expire_uploads(&self) -> Result<usize, String> {
        let cutoff = now_ms() - i64::try_from(self.options.upload_expiry.as_millis()).unwrap_or(0);
        let old = self
            .db(move |c| c.uploads_started_before(cutoff, 1000))
            .await
            .map_err(|e| e.to_string())?;
        let mut done = 0;
        for u in old {
            let id = u.upload_id.clone();
            match self.db(move |c| c.delete_upload(&id)).await {
                Ok(parts) => {
                    let pieces: Vec<DataRef> = parts
                        .into_iter()
                        .filter_map(|p| part_meta(&p.meta).ok())
                        .map(|p| p.data)
                        .collect();
                    self.delete_pieces(pieces).await;
                    done += 1;
                }
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(done)
    }
}

pub(crate) struct S3Impl(pub Arc<Inner>);

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

fn timestamp(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

fn ms_of(t: &Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.clone().into();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn internal(e: StoreError) -> s3s::S3Error {
    tracing::error!(error = %e, "catalog failed");
    match e {
        StoreError::Busy(_) | StoreError::Unavailable(_) => {
            s3_error!(SlowDown, "Please reduce your request rate.")
        }
        _ => s3_error!(
            InternalError,
            "We encountered an internal error. Please try again."
        ),
    }
}

fn damaged(e: serde_json::Error) -> s3s::S3Error {
    tracing::error!(error = %e, "catalog document unreadable");
    s3_error!(InternalError, "stored metadata is damaged")
}

fn object_meta(s: &str) -> S3Result<ObjectMeta> {
    serde_json::from_str(s).map_err(damaged)
}

fn part_meta(s: &str) -> S3Result<PartMeta> {
    serde_json::from_str(s).map_err(damaged)
}

fn to_json<T: serde::Serialize>(v: &T) -> S3Result<String> {
    serde_json::to_string(v).map_err(damaged)
}

/// Who is calling and how, from what the front door and the access check put in the request.
struct Ctx {
    /// `x-amz-expected-bucket-owner`, when sent: a bucket of another account is refused.
    expected_owner: Option<String>,
    principal: Principal,
    meta: RequestMeta,
    transport: Transport,
    exchange: Arc<Exchange>,
}

impl Ctx {
    fn caller(&self) -> Caller<'_> {
        Caller {
            principal: &self.principal,
            meta: &self.meta,
        }
    }

    /// SSE-C keys travel only over TLS, as in S3.
    fn customer_key(
        &self,
        algorithm: Option<&str>,
        key: Option<&str>,
        md5: Option<&str>,
    ) -> S3Result<Option<CustomerKey>> {
        let c = CustomerKey::from_headers(algorithm, key, md5)?;
        if c.is_some() && !self.transport.tls {
            return Err(s3_error!(
                InvalidRequest,
                "Requests specifying Server Side Encryption with Customer provided keys must be \
                 made over a secure connection."
            ));
        }
        Ok(c)
    }
}

impl S3Impl {
    fn ctx<T>(&self, req: &S3Request<T>) -> S3Result<Ctx> {
        let principal = req
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| s3_error!(AccessDenied, "Access Denied"))?;
        let meta = req
            .extensions
            .get::<RequestMeta>()
            .cloned()
            .ok_or_else(|| s3_error!(InternalError))?;
        let transport = *req
            .extensions
            .get::<Transport>()
            .ok_or_else(|| s3_error!(InternalError))?;
        let exchange = req
            .extensions
            .get::<Arc<Exchange>>()
            .cloned()
            .ok_or_else(|| s3_error!(InternalError))?;
        let region = self.0.engine.region();
        if let Some(r) = &req.region {
            if r.as_str() != region {
                return Err(s3_error!(
                    AuthorizationHeaderMalformed,
                    "The authorization header is malformed; the region '{}' is wrong; expecting \
                     '{region}'",
                    r.as_str()
                ));
            }
        }
        if let Some(s) = &req.service {
            if s != "s3" {
                return Err(s3_error!(
                    AuthorizationHeaderMalformed,
                    "The authorization header is malformed; the service '{s}' is wrong; \
                     expecting 's3'"
                ));
            }
        }
        let expected_owner = req
            .headers
            .get("x-amz-expected-bucket-owner")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Ctx {
            expected_owner,
            principal,
            meta,
            transport,
            exchange,
        })
    }

    /// A bucket the caller's account owns: `NoSuchBucket`, or `AccessDenied` for another
    /// account's.
    async fn bucket(&self, ctx: &Ctx, name: &str) -> S3Result<(BucketRecord, BucketMeta)> {
        let n = name.to_string();
        let Some(b) = self
            .0
            .db(move |c| c.get_bucket(&n))
            .await
            .map_err(internal)?
        else {
            return Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            ));
        };
        if b.account != ctx.principal.account
            || ctx.expected_owner.as_ref().is_some_and(|o| *o != b.account)
        {
            return Err(s3_error!(AccessDenied, "Access Denied"));
        }
        let meta: BucketMeta = serde_json::from_str(&b.meta).map_err(damaged)?;
        Ok((b, meta))
    }

    async fn object(&self, bucket: &str, key: &str) -> S3Result<(ObjectRecord, ObjectMeta)> {
        let (b, k) = (bucket.to_string(), key.to_string());
        let Some(o) = self
            .0
            .db(move |c| c.get_object(&b, &k))
            .await
            .map_err(internal)?
        else {
            return Err(s3_error!(NoSuchKey, "The specified key does not exist."));
        };
        let m = object_meta(&o.meta)?;
        Ok((o, m))
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> S3Result<(UploadRecord, UploadMeta)> {
        let id = upload_id.to_string();
        let found = self
            .0
            .db(move |c| c.get_upload(&id))
            .await
            .map_err(internal)?;
        match found {
            Some(u) if u.bucket == bucket && u.key == key => {
                let m: UploadMeta = serde_json::from_str(&u.meta).map_err(damaged)?;
                Ok((u, m))
            }
            _ => Err(s3_error!(
                NoSuchUpload,
                "The specified upload does not exist. The upload ID may be invalid, or the \
                 upload may have been aborted or completed."
            )),
        }
    }

    /// Writes `meta` as the current version of `bucket/key` and deletes what it replaced.
    async fn commit_object(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        modified_at: i64,
    ) -> S3Result<()> {
        let rec = ObjectRecord {
            bucket: bucket.to_string(),
            key: key.to_string(),
            modified_at,
            meta: to_json(meta)?,
        };
        match self.0.db(move |c| c.put_object(&rec)).await {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    if let Ok(old) = object_meta(&old.meta) {
                        self.0.delete_pieces(old.data).await;
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.0.delete_pieces(meta.data.clone()).await;
                Err(match e {
                    StoreError::NotFound => {
                        s3_error!(NoSuchBucket, "The specified bucket does not exist")
                    }
                    e => internal(e),
                })
            }
        }
    }
}

fn check_key(key: &str) -> S3Result<()> {
    if key.len() > MAX_KEY {
        return Err(s3_error!(KeyTooLongError, "Your key is too long"));
    }
    Ok(())
}

fn user_metadata(m: Option<Metadata>) -> S3Result<BTreeMap<String, String>> {
    let m: BTreeMap<String, String> = m.unwrap_or_default().into_iter().collect();
    let size: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_USER_METADATA {
        return Err(s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size"
        ));
    }
    Ok(m)
}

fn tag_set(tags: &[(String, String)]) -> TagSet {
    tags.iter()
        .map(|(k, v)| Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

fn expires_string(e: Option<Timestamp>) -> Option<String> {
    e.map(|t| ms_of(&t).to_string())
}

fn expires_of(h: &Headers) -> Option<Timestamp> {
    h.expires
        .as_deref()
        .and_then(|s| s.parse::<i64>().ok())
        .map(timestamp)
}

/// A random ETag, for objects whose ETag is not an MD5 of their data (SSE-KMS, SSE-C).
fn random_etag() -> String {
    hex::encode(crate::chunked::new_data_id())
}

/// The SSE response headers of an object or upload, as S3 returns them.
struct SseHeaders {
    algorithm: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    context: Option<String>,
    bucket_key: Option<bool>,
    customer_algorithm: Option<String>,
    customer_md5: Option<String>,
}

fn sse_headers(s: &Sealed) -> SseHeaders {
    let mut h = SseHeaders {
        algorithm: s.algorithm().map(ServerSideEncryption::from_static),
        kms_key_id: None,
        context: None,
        bucket_key: None,
        customer_algorithm: None,
        customer_md5: None,
    };
    match s {
        Sealed::S3 { .. } | Sealed::Unencrypted => {}
        Sealed::Kms {
            key_arn,
            context,
            bucket_wrapped,
            ..
        } => {
            h.kms_key_id = Some(key_arn.clone());
            h.bucket_key = bucket_wrapped.as_ref().map(|_| true);
            if !context.is_empty() {
                h.context = Some(context_header(context));
            }
        }
        Sealed::Customer { key_md5, .. } => {
            h.customer_algorithm = Some("AES256".into());
            h.customer_md5 = Some(key_md5.clone());
        }
    }
    h
}

/// Which `x-amz-checksum-*` algorithms to compute for an upload.
fn checksum_hasher(
    algorithm: Option<&ChecksumAlgorithm>,
    sent: &Checksums,
    trailer: Option<&str>,
) -> S3Result<s3s::checksum::ChecksumHasher> {
    let mut h = s3s::checksum::ChecksumHasher::default();
    let mut want = |name: &str| -> S3Result<()> {
        match name.to_ascii_uppercase().as_str() {
            "CRC32" => h.crc32 = Some(Default::default()),
            "CRC32C" => h.crc32c = Some(Default::default()),
            "SHA1" => h.sha1 = Some(Default::default()),
            "SHA256" => h.sha256 = Some(Default::default()),
            "CRC64NVME" => h.crc64nvme = Some(Default::default()),
            other => {
                return Err(s3_error!(
                    InvalidArgument,
                    "Value for x-amz-checksum-algorithm header is invalid: {other}"
                ))
            }
        }
        Ok(())
    };
    if let Some(a) = algorithm {
        want(a.as_str())?;
    }
    for (name, v) in sent.pairs() {
        if v.is_some() {
            want(name)?;
        }
    }
    if let Some(t) = trailer {
        for name in t.split(',') {
            if let Some(a) = name.trim().strip_prefix("x-amz-checksum-") {
                want(a)?;
            }
        }
    }
    Ok(h)
}

/// The checksums a request sent (headers or trailers).
#[derive(Debug, Default, Clone)]
struct Checksums {
    crc32: Option<String>,
    crc32c: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    crc64nvme: Option<String>,
}

impl Checksums {
    fn pairs(&self) -> [(&'static str, &Option<String>); 5] {
        [
            ("CRC32", &self.crc32),
            ("CRC32C", &self.crc32c),
            ("SHA1", &self.sha1),
            ("SHA256", &self.sha256),
            ("CRC64NVME", &self.crc64nvme),
        ]
    }

    fn add_trailers(&mut self, trailers: Option<&s3s::TrailingHeaders>) -> S3Result<()> {
        let Some(map) = trailers.and_then(|t| t.take()) else {
            return Ok(());
        };
        let get = |n: &str| -> S3Result<Option<String>> {
            map.get(n)
                .map(|v| {
                    v.to_str()
                        .map(str::to_string)
                        .map_err(|_| s3_error!(InvalidArgument, "bad checksum trailer"))
                })
                .transpose()
        };
        self.crc32 = get("x-amz-checksum-crc32")?.or(self.crc32.take());
        self.crc32c = get("x-amz-checksum-crc32c")?.or(self.crc32c.take());
        self.sha1 = get("x-amz-checksum-sha1")?.or(self.sha1.take());
        self.sha256 = get("x-amz-checksum-sha256")?.or(self.sha256.take());
        self.crc64nvme = get("x-amz-checksum-crc64nvme")?.or(self.crc64nvme.take());
        Ok(())
    }

    /// Checks the computed sums against the sent ones; the sum to keep.
    fn verify(&self, computed: s3s::dto::Checksum) -> S3Result<Option<StoredChecksum>> {
        let got = [
            ("CRC32", computed.checksum_crc32),
            ("CRC32C", computed.checksum_crc32c),
            ("SHA1", computed.checksum_sha1),
            ("SHA256", computed.checksum_sha256),
            ("CRC64NVME", computed.checksum_crc64nvme),
        ];
        let mut keep = None;
        for ((name, sent), (_, computed)) in self.pairs().into_iter().zip(got) {
            if let (Some(s), Some(c)) = (sent, &computed) {
                if s != c {
                    return Err(s3_error!(
                        BadDigest,
                        "The {name} you specified did not match the calculated checksum."
                    ));
                }
            }
            if keep.is_none() {
                if let Some(c) = computed {
                    keep = Some(StoredChecksum {
                        algorithm: name.to_string(),
                        value: c,
                        kind: Some("FULL_OBJECT".into()),
                    });
                }
            }
        }
        Ok(keep)
    }
}

/// Fills the checksum fields of an output from a stored checksum.
macro_rules! set_checksum {
    ($out:expr, $c:expr) => {
        if let Some(c) = $c {
            match c.algorithm.as_str() {
                "CRC32" => $out.checksum_crc32 = Some(c.value.clone()),
                "CRC32C" => $out.checksum_crc32c = Some(c.value.clone()),
                "SHA1" => $out.checksum_sha1 = Some(c.value.clone()),
                "SHA256" => $out.checksum_sha256 = Some(c.value.clone()),
                "CRC64NVME" => $out.checksum_crc64nvme = Some(c.value.clone()),
                _ => {}
            }
        }
    };
    ($out:expr, $c:expr, with_type) => {
        set_checksum!($out, $c);
        if let Some(c) = $c {
            $out.checksum_type = c.kind.clone().map(ChecksumType::from);
        }
    };
}

fn content_md5_check(
    sent: Option<&str>,
    md5: Option<s3s::crypto::Md5>,
) -> S3Result<Option<[u8; 16]>> {
    use s3s::crypto::Checksum as _;
    let Some(m) = md5 else { return Ok(None) };
    let digest: [u8; 16] = m.finalize();
    if let Some(sent) = sent {
        let want = base64::engine::general_purpose::STANDARD
            .decode(sent)
            .map_err(|_| s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid."))?;
        if want.len() != 16 {
            return Err(s3_error!(
                InvalidDigest,
                "The Content-MD5 you specified was invalid."
            ));
        }
        if want != digest {
            return Err(s3_error!(
                BadDigest,
                "The Content-MD5 you specified did not match what we received."
            ));
        }
    }
    Ok(Some(digest))
}

/// Conditions of a read (GET, HEAD, copy source), in S3's order of precedence.
fn check_conditions(
    etag: &str,
    modified_ms: i64,
    if_match: Option<&ETagCondition>,
    if_unmodified_since: Option<&Timestamp>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    copy: bool,
) -> S3Result<()> {
    let ours = ETag::Strong(etag.to_string());
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == ours.value(),
    };
    let modified_s = modified_ms / 1000;
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
    } else if let Some(t) = if_unmodified_since {
        if modified_s > ms_of(t) / 1000 {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
    }
    let not_modified = || {
        if copy {
            s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            )
        } else {
            s3_error!(NotModified)
        }
    };
    if let Some(c) = if_none_match {
        if matches(c) {
            return Err(not_modified());
        }
    } else if let Some(t) = if_modified_since {
        if modified_s <= ms_of(t) / 1000 {
            return Err(not_modified());
        }
    }
    Ok(())
}

/// The bytes `[from, to)` a `Range` asks of an object of `size` bytes, and its
/// `Content-Range`; the whole object without one.
fn span_of(range: Option<&Range>, size: u64) -> S3Result<(u64, u64, Option<String>)> {
    match range {
        None => Ok((0, size, None)),
        Some(r) => {
            let span = r
                .check(size)
                .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
            let header = format!("bytes {}-{}/{size}", span.start, span.end - 1);
            Ok((span.start, span.end, Some(header)))
        }
    }
}

/// The conditional headers of a read.
struct Preconditions<'a> {
    if_match: Option<&'a ETagCondition>,
    if_unmodified_since: Option<&'a Timestamp>,
    if_none_match: Option<&'a ETagCondition>,
    if_modified_since: Option<&'a Timestamp>,
}

/// Percent-encodes a key for `EncodingType=url` listings.
fn url_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// One entry of a listing: an object, or a common prefix rolled up at the delimiter.
enum Entry {
    Object(ObjectRecord),
    Prefix(String),
}

/// The greatest character: a cursor of `prefix` + it is after every key under `prefix`.
const AFTER_ALL: char = '\u{10FFFF}';

/// One page of a listing, as both ListObjects versions return it.
struct Page {
    contents: Option<Vec<Object>>,
    prefixes: Option<Vec<CommonPrefix>>,
    /// Where the next page starts, when there is one.
    next: Option<String>,
    /// The last key or prefix on this page.
    last: Option<String>,
    max: i32,
    count: i32,
    encode: bool,
}

impl Page {
    /// A name as returned: URL-encoded with `EncodingType=url`.
    fn encode(&self, s: Option<String>) -> Option<String> {
        if self.encode {
            s.map(|s| url_encode(&s))
        } else {
            s
        }
    }
}

impl S3Impl {
    /// One page of a bucket's listing for ListObjects and ListObjectsV2.
    #[allow(clippy::too_many_arguments)]
    async fn listing(
        &self,
        ctx: &Ctx,
        bucket: &str,
        prefix: Option<&str>,
        delimiter: Option<&str>,
        cursor: String,
        max_keys: Option<i32>,
        encoding: Option<&EncodingType>,
        with_owner: bool,
    ) -> S3Result<Page> {
        let (b, _) = self.bucket(ctx, bucket).await?;
        let max = max_keys_of(max_keys)?;
        let encode = match encoding.map(EncodingType::as_str) {
            None => false,
            Some(EncodingType::URL) => true,
            Some(_) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "Invalid Encoding Method specified in Request"
                ))
            }
        };
        let (entries, next) = self
            .list(bucket, prefix.unwrap_or(""), delimiter, cursor, max)
            .await?;
        let owner = with_owner.then(|| owner_of(&b.account));
        let mut contents = Vec::new();
        let mut prefixes = Vec::new();
        let mut last = None;
        for e in &entries {
            match e {
                Entry::Object(r) => {
                    last = Some(r.key.clone());
                    contents.push(Self::object_entry(r, owner.clone(), encode)?);
                }
                Entry::Prefix(p) => {
                    last = Some(p.clone());
                    prefixes.push(CommonPrefix {
                        prefix: Some(if encode { url_encode(p) } else { p.clone() }),
                    });
                }
            }
        }
        Ok(Page {
            contents: (!contents.is_empty()).then_some(contents),
            prefixes: (!prefixes.is_empty()).then_some(prefixes),
            next,
            last,
            max: i32::try_from(max).unwrap_or(1000),
            count: i32::try_from(entries.len()).unwrap_or(0),
            encode,
        })
    }

    /// Lists a bucket's keys after `cursor` under `prefix`, rolling keys up to common
    /// prefixes at `delimiter`; at most `max` entries, and whether more follow (with the cursor
    /// to resume from).
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        mut cursor: String,
        max: usize,
    ) -> S3Result<(Vec<Entry>, Option<String>)> {
        let mut out = Vec::new();
        let batch = (max + 1).clamp(1, 1001);
        loop {
            let (b, p, c) = (bucket.to_string(), prefix.to_string(), cursor.clone());
            let rows = self
                .0
                .db(move |cat| cat.list_objects(&b, &p, Some(&c), batch))
                .await
                .map_err(internal)?;
            let exhausted = rows.len() < batch;
            let mut progressed = false;
            for r in rows {
                if !r.key.starts_with(prefix) {
                    return Ok((out, None));
                }
                if out.len() == max {
                    return Ok((out, Some(cursor)));
                }
                let rolled = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                    r.key[prefix.len()..]
                        .find(d)
                        .map(|i| r.key[..prefix.len() + i + d.len()].to_string())
                });
                match rolled {
                    Some(cp) => {
                        cursor = format!("{cp}{AFTER_ALL}");
                        out.push(Entry::Prefix(cp));
                        progressed = true;
                        // Keys under this prefix are skipped by the next query.
                        break;
                    }
                    None => {
                        cursor.clone_from(&r.key);
                        out.push(Entry::Object(r));
                        progressed = true;
                    }
                }
            }
            if !progressed || (exhausted && !matches!(out.last(), Some(Entry::Prefix(_)))) {
                return Ok((out, None));
            }
        }
    }

    fn object_entry(r: &ObjectRecord, owner: Option<Owner>, encode: bool) -> S3Result<Object> {
        let m = object_meta(&r.meta)?;
        Ok(Object {
            key: Some(if encode {
                url_encode(&r.key)
            } else {
                r.key.clone()
            }),
            last_modified: Some(timestamp(r.modified_at)),
            e_tag: Some(ETag::Strong(m.etag)),
            size: Some(i64::try_from(m.size).unwrap_or(i64::MAX)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            owner,
            checksum_algorithm: m
                .checksum
                .as_ref()
                .map(|c| vec![ChecksumAlgorithm::from(c.algorithm.clone())]),
            checksum_type: m
                .checksum
                .as_ref()
                .and_then(|c| c.kind.clone())
                .map(ChecksumType::from),
            ..Default::default()
        })
    }
}

fn owner_of(account: &str) -> Owner {
    Owner {
        id: Some(account.to_string()),
        display_name: None,
    }
}

fn token_of(cursor: &str) -> String {
    b64(cursor.as_bytes())
}

fn cursor_of(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

fn max_keys_of(m: Option<i32>) -> S3Result<usize> {
    match m {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(
            InvalidArgument,
            "Provided max-keys not an integer or within integer range"
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(1000).min(1000)),
    }
}

#[async_trait::async_trait]
impl S3 for S3Impl {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, None);
        let region = self.0.engine.region();
        if let Some(loc) = input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
        {
            if loc.as_str() != region {
                let mut e = s3s::S3Error::with_message(
                    "IllegalLocationConstraintException"
                        .parse()
                        .unwrap_or(s3s::S3ErrorCode::InvalidArgument),
                    format!(
                        "The {} location constraint is incompatible for the region specific \
                         endpoint this request was sent to.",
                        loc.as_str()
                    ),
                );
                e.set_status_code(http::StatusCode::BAD_REQUEST);
                return Err(e);
            }
        }
        let rec = BucketRecord {
            name: input.bucket.clone(),
            account: ctx.principal.account.clone(),
            created_at: now_ms(),
            meta: to_json(&BucketMeta::default())?,
        };
        let r = rec.clone();
        match self.0.db(move |c| c.create_bucket(&r)).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists) => {
                let n = rec.name.clone();
                let existing = self
                    .0
                    .db(move |c| c.get_bucket(&n))
                    .await
                    .map_err(internal)?;
                return Err(match existing {
                    Some(b) if b.account == rec.account => s3_error!(
                        BucketAlreadyOwnedByYou,
                        "Your previous request to create the named bucket succeeded and you \
                         already own it."
                    ),
                    _ => s3_error!(
                        BucketAlreadyExists,
                        "The requested bucket name is not available. The bucket namespace is \
                         shared by all users of the system. Please select a different name and \
                         try again."
                    ),
                });
            }
            Err(e) => return Err(internal(e)),
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", rec.name)),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let ctx = self.ctx(&req)?;
        ctx.exchange.set_target(&req.input.bucket, None);
        self.bucket(&ctx, &req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.0.engine.region().to_string()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let ctx = self.ctx(&req)?;
        ctx.exchange.set_target(&req.input.bucket, None);
        self.bucket(&ctx, &req.input.bucket).await?;
        let region = self.0.engine.region();
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: (region != "us-east-1")
                .then(|| BucketLocationConstraint::from(region.to_string())),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let ctx = self.ctx(&req)?;
        let name = req.input.bucket.clone();
        ctx.exchange.set_target(&name, None);
        self.bucket(&ctx, &name).await?;
        match self.0.db(move |c| c.delete_bucket(&name)).await {
            Ok(()) => Ok(S3Response::with_status(
                DeleteBucketOutput {},
                http::StatusCode::NO_CONTENT,
            )),
            Err(StoreError::NotEmpty) => Err(s3_error!(
                BucketNotEmpty,
                "The bucket you tried to delete is not empty"
            )),
            Err(StoreError::NotFound) => Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            )),
            Err(e) => Err(internal(e)),
        }
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let ctx = self.ctx(&req)?;
        let account = ctx.principal.account.clone();
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let buckets = self
            .0
            .db(move |c| c.list_buckets(&account))
            .await
            .map_err(internal)?;
        let region = self.0.engine.region().to_string();
        let list = buckets
            .into_iter()
            .filter(|b| b.name.starts_with(&prefix))
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_at)),
                bucket_region: Some(region.clone()),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(list),
            owner: Some(owner_of(&ctx.principal.account)),
            prefix: req.input.prefix,
            ..Default::default()
        }))
    }

    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, None);
        let (b, mut meta) = self.bucket(&ctx, &input.bucket).await?;
        let rules = input.server_side_encryption_configuration.rules;
        let [rule] = rules.as_slice() else {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our \
                 published schema"
            ));
        };
        let Some(d) = &rule.apply_server_side_encryption_by_default else {
            return Err(s3_error!(
                MalformedXML,
                "ApplyServerSideEncryptionByDefault is required"
            ));
        };
        let algorithm = d.sse_algorithm.as_str().to_string();
        match algorithm.as_str() {
            "AES256" if d.kms_master_key_id.is_some() => {
                return Err(s3_error!(
                    InvalidArgument,
                    "a KMSMasterKeyID is not applicable if the default sse algorithm is not \
                     aws:kms or aws:kms:dsse"
                ))
            }
            "AES256" | "aws:kms" => {}
            other => {
                return Err(s3_error!(
                    InvalidArgument,
                    "The encryption method specified is not supported: {other}"
                ))
            }
        }
        ctx.exchange.param("sseAlgorithm", algorithm.clone());
        meta.encryption = Some(DefaultEncryption {
            algorithm,
            kms_key_id: d.kms_master_key_id.clone(),
            bucket_key: rule.bucket_key_enabled.unwrap_or(false),
        });
        let (name, doc) = (b.name.clone(), to_json(&meta)?);
        self.0
            .db(move |c| c.update_bucket(&name, &doc))
            .await
            .map_err(internal)?;
        Ok(S3Response::new(PutBucketEncryptionOutput {}))
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let ctx = self.ctx(&req)?;
        ctx.exchange.set_target(&req.input.bucket, None);
        let (_, meta) = self.bucket(&ctx, &req.input.bucket).await?;
        // Every bucket encrypts: SSE-S3 unless set otherwise, as in S3 since 2023.
        let d = meta.encryption.unwrap_or(DefaultEncryption {
            algorithm: "AES256".into(),
            kms_key_id: None,
            bucket_key: false,
        });
        let rule = ServerSideEncryptionRule {
            apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                sse_algorithm: ServerSideEncryption::from(d.algorithm),
                kms_master_key_id: d.kms_key_id,
            }),
            bucket_key_enabled: Some(d.bucket_key),
        };
        Ok(S3Response::new(GetBucketEncryptionOutput {
            server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
                rules: vec![rule],
            }),
        }))
    }

    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        let ctx = self.ctx(&req)?;
        ctx.exchange.set_target(&req.input.bucket, None);
        let (b, mut meta) = self.bucket(&ctx, &req.input.bucket).await?;
        meta.encryption = None;
        let (name, doc) = (b.name.clone(), to_json(&meta)?);
        self.0
            .db(move |c| c.update_bucket(&name, &doc))
            .await
            .map_err(internal)?;
        Ok(S3Response::with_status(
            DeleteBucketEncryptionOutput {},
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let ctx = self.ctx(&req)?;
        let trailer = req
            .headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let trailers = req.trailing_headers.clone();
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        check_key(&input.key)?;
        let (_, bmeta) = self.bucket(&ctx, &input.bucket).await?;
        let customer = ctx.customer_key(
            input.sse_customer_algorithm.as_deref(),
            input.sse_customer_key.as_deref(),
            input.sse_customer_key_md5.as_deref(),
        )?;
        let sse = crate::sse::write_request(
            input.server_side_encryption.as_ref().map(|s| s.as_str()),
            input.ssekms_key_id.as_deref(),
            input.ssekms_encryption_context.as_deref(),
            input.bucket_key_enabled,
            customer,
            bmeta.encryption.as_ref(),
        )?;
        let user = user_metadata(input.metadata)?;
        let tags = parse_tagging_header(input.tagging.as_deref())?;
        if input.if_none_match.is_some() || input.if_match.is_some() {
            let existing = match self.object(&input.bucket, &input.key).await {
                Ok((_, m)) => Some(m),
                Err(e) if *e.code() == s3s::S3ErrorCode::NoSuchKey => None,
                Err(e) => return Err(e),
            };
            if input.if_none_match.is_some() && existing.is_some() {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
            if let Some(c) = &input.if_match {
                let ok = match (&existing, c) {
                    (None, _) => false,
                    (Some(_), ETagCondition::Any) => true,
                    (Some(m), ETagCondition::ETag(e)) => e.value() == m.etag,
                };
                if !ok {
                    return Err(match existing {
                        None => s3_error!(NoSuchKey, "The specified key does not exist."),
                        Some(_) => s3_error!(
                            PreconditionFailed,
                            "At least one of the pre-conditions you specified did not hold"
                        ),
                    });
                }
            }
        }
        let Some(body) = input.body else {
            return Err(s3_error!(IncompleteBody, "You did not provide the number of bytes specified by the Content-Length HTTP header."));
        };
        // The key is made (and KMS asked) before any byte is stored.
        let (content, sealed) = self
            .0
            .keys
            .seal(ctx.caller(), &input.bucket, &input.key, &sse)?;
        let checks = BodyChecks {
            content_md5: input.content_md5.clone(),
            algorithm: input.checksum_algorithm.clone(),
            sent: Checksums {
                crc32: input.checksum_crc32,
                crc32c: input.checksum_crc32c,
                sha1: input.checksum_sha1,
                sha256: input.checksum_sha256,
                crc64nvme: input.checksum_crc64nvme,
            },
            trailer,
            trailers,
            declared: input.content_length.and_then(|n| u64::try_from(n).ok()),
        };
        let (piece, etag, checksum) = self
            .store_body(
                &sealed,
                &content,
                body,
                checks,
                self.0.options.max_object_size,
            )
            .await?;
        ctx.exchange.param(
            "x-amz-server-side-encryption",
            sealed.algorithm().unwrap_or("SSE-C"),
        );
        let meta = ObjectMeta {
            size: piece.size,
            etag: etag.clone(),
            headers: Headers {
                content_type: input.content_type.map(|c| c.to_string()),
                content_encoding: input.content_encoding,
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                cache_control: input.cache_control,
                expires: expires_string(input.expires),
                website_redirect_location: input.website_redirect_location,
                user,
            },
            tags,
            checksum: checksum.clone(),
            sealed,
            data: vec![piece],
        };
        self.commit_object(&input.bucket, &input.key, &meta, now_ms())
            .await?;
        let h = sse_headers(&meta.sealed);
        let mut out = PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            server_side_encryption: h.algorithm,
            ssekms_key_id: h.kms_key_id,
            ssekms_encryption_context: h.context,
            bucket_key_enabled: h.bucket_key,
            sse_customer_algorithm: h.customer_algorithm,
            sse_customer_key_md5: h.customer_md5,
            ..Default::default()
        };
        set_checksum!(out, checksum.as_ref(), with_type);
        Ok(S3Response::new(out))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        let (customer, rec, m) = self
            .readable(
                &ctx,
                &input.bucket,
                &input.key,
                [
                    input.sse_customer_algorithm.as_deref(),
                    input.sse_customer_key.as_deref(),
                    input.sse_customer_key_md5.as_deref(),
                ],
                Preconditions {
                    if_match: input.if_match.as_ref(),
                    if_unmodified_since: input.if_unmodified_since.as_ref(),
                    if_none_match: input.if_none_match.as_ref(),
                    if_modified_since: input.if_modified_since.as_ref(),
                },
            )
            .await?;
        if input.part_number.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "GetObject by part number is not supported"
            ));
        }
        let (from, to, content_range) = span_of(input.range.as_ref(), m.size)?;
        let content = self.0.keys.open(
            ctx.caller(),
            &input.bucket,
            &input.key,
            &m.sealed,
            customer.as_ref(),
        )?;
        let body = read_data(
            self.0.objects.clone(),
            cipher(&m.sealed, &content),
            &m.data,
            from,
            to,
        )
        .await?;
        let h = sse_headers(&m.sealed);
        let full = content_range.is_none();
        let mut out = GetObjectOutput {
            body: Some(body),
            content_length: Some(i64::try_from(to - from).unwrap_or(i64::MAX)),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(m.etag.clone())),
            last_modified: Some(timestamp(rec.modified_at)),
            content_type: input.response_content_type.or(m
                .headers
                .content_type
                .as_deref()
                .and_then(|c| c.parse().ok())),
            content_encoding: input
                .response_content_encoding
                .or(m.headers.content_encoding.clone()),
            content_disposition: input
                .response_content_disposition
                .or(m.headers.content_disposition.clone()),
            content_language: input
                .response_content_language
                .or(m.headers.content_language.clone()),
            cache_control: input
                .response_cache_control
                .or(m.headers.cache_control.clone()),
            expires: input.response_expires.or(expires_of(&m.headers)),
            website_redirect_location: m.headers.website_redirect_location.clone(),
            metadata: Some(m.headers.user.clone().into_iter().collect()),
            server_side_encryption: h.algorithm,
            ssekms_key_id: h.kms_key_id,
            bucket_key_enabled: h.bucket_key,
            sse_customer_algorithm: h.customer_algorithm,
            sse_customer_key_md5: h.customer_md5,
            tag_count: (!m.tags.is_empty()).then(|| i32::try_from(m.tags.len()).unwrap_or(0)),
            parts_count: (m.data.len() > 1).then(|| i32::try_from(m.data.len()).unwrap_or(0)),
            ..Default::default()
        };
        let enabled = input
            .checksum_mode
            .as_ref()
            .is_some_and(|c| c.as_str() == ChecksumMode::ENABLED);
        if full && enabled {
            set_checksum!(out, m.checksum.as_ref(), with_type);
        }
        let status = if full {
            http::StatusCode::OK
        } else {
            http::StatusCode::PARTIAL_CONTENT
        };
        Ok(S3Response::with_status(out, status))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        let (customer, rec, m) = self
            .readable(
                &ctx,
                &input.bucket,
                &input.key,
                [
                    input.sse_customer_algorithm.as_deref(),
                    input.sse_customer_key.as_deref(),
                    input.sse_customer_key_md5.as_deref(),
                ],
                Preconditions {
                    if_match: input.if_match.as_ref(),
                    if_unmodified_since: input.if_unmodified_since.as_ref(),
                    if_none_match: input.if_none_match.as_ref(),
                    if_modified_since: input.if_modified_since.as_ref(),
                },
            )
            .await?;
        check_customer(&m.sealed, customer.as_ref())?;
        let (from, to, content_range) = span_of(input.range.as_ref(), m.size)?;
        let length = to - from;
        let h = sse_headers(&m.sealed);
        let mut out = HeadObjectOutput {
            content_length: Some(i64::try_from(length).unwrap_or(i64::MAX)),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(m.etag.clone())),
            last_modified: Some(timestamp(rec.modified_at)),
            content_type: m
                .headers
                .content_type
                .as_deref()
                .and_then(|c| c.parse().ok()),
            content_encoding: m.headers.content_encoding.clone(),
            content_disposition: m.headers.content_disposition.clone(),
            content_language: m.headers.content_language.clone(),
            cache_control: m.headers.cache_control.clone(),
            expires: expires_of(&m.headers),
            website_redirect_location: m.headers.website_redirect_location.clone(),
            metadata: Some(m.headers.user.clone().into_iter().collect()),
            server_side_encryption: h.algorithm,
            ssekms_key_id: h.kms_key_id,
            bucket_key_enabled: h.bucket_key,
            sse_customer_algorithm: h.customer_algorithm,
            sse_customer_key_md5: h.customer_md5,
            parts_count: (m.data.len() > 1).then(|| i32::try_from(m.data.len()).unwrap_or(0)),
            ..Default::default()
        };
        if input
            .checksum_mode
            .as_ref()
            .is_some_and(|c| c.as_str() == ChecksumMode::ENABLED)
        {
            set_checksum!(out, m.checksum.as_ref(), with_type);
        }
        Ok(S3Response::new(out))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        self.bucket(&ctx, &input.bucket).await?;
        let (b, k) = (input.bucket.clone(), input.key.clone());
        let gone = self
            .0
            .db(move |c| c.delete_object(&b, &k))
            .await
            .map_err(internal)?;
        if let Some(old) = gone {
            if let Ok(m) = object_meta(&old.meta) {
                self.0.delete_pieces(m.data).await;
            }
        }
        Ok(S3Response::with_status(
            DeleteObjectOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, None);
        self.bucket(&ctx, &input.bucket).await?;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our \
                 published schema"
            ));
        }
        ctx.exchange.param("count", input.delete.objects.len());
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in input.delete.objects {
            if o.key.len() > MAX_KEY {
                errors.push(Error {
                    key: Some(o.key),
                    code: Some("KeyTooLongError".into()),
                    message: Some("Your key is too long".into()),
                    version_id: None,
                });
                continue;
            }
            let (b, k) = (input.bucket.clone(), o.key.clone());
            match self.0.db(move |c| c.delete_object(&b, &k)).await {
                Ok(gone) => {
                    if let Some(old) = gone {
                        if let Ok(m) = object_meta(&old.meta) {
                            self.0.delete_pieces(m.data).await;
                        }
                    }
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            ..Default::default()
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "delete failed");
                    errors.push(Error {
                        key: Some(o.key),
                        code: Some("InternalError".into()),
                        message: Some("We encountered an internal error. Please try again.".into()),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, None);
        let mut cursor = input.start_after.clone().unwrap_or_default();
        if let Some(t) = &input.continuation_token {
            let c = cursor_of(t)?;
            if c > cursor {
                cursor = c;
            }
        }
        let page = self
            .listing(
                &ctx,
                &input.bucket,
                input.prefix.as_deref(),
                input.delimiter.as_deref(),
                cursor,
                input.max_keys,
                input.encoding_type.as_ref(),
                input.fetch_owner.unwrap_or(false),
            )
            .await?;
        let enc = |s: Option<String>| page.encode(s);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: enc(input.prefix),
            delimiter: enc(input.delimiter),
            max_keys: Some(page.max),
            key_count: Some(page.count),
            is_truncated: Some(page.next.is_some()),
            continuation_token: input.continuation_token,
            next_continuation_token: page.next.as_deref().map(token_of),
            start_after: enc(input.start_after),
            encoding_type: input.encoding_type,
            contents: page.contents,
            common_prefixes: page.prefixes,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, None);
        let page = self
            .listing(
                &ctx,
                &input.bucket,
                input.prefix.as_deref(),
                input.delimiter.as_deref(),
                input.marker.clone().unwrap_or_default(),
                input.max_keys,
                input.encoding_type.as_ref(),
                true,
            )
            .await?;
        let enc = |s: Option<String>| page.encode(s);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: enc(input.prefix),
            delimiter: enc(input.delimiter),
            marker: enc(input.marker),
            max_keys: Some(page.max),
            is_truncated: Some(page.next.is_some()),
            next_marker: if page.next.is_some() {
                enc(page.last.clone())
            } else {
                None
            },
            encoding_type: input.encoding_type,
            contents: page.contents,
            common_prefixes: page.prefixes,
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        check_key(&input.key)?;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "Only bucket copy sources are supported"
            ));
        };
        let (src_bucket, src_key) = (src_bucket.to_string(), src_key.to_string());
        ctx.exchange
            .param("copySource", format!("{src_bucket}/{src_key}"));
        let (_, dest_meta) = self.bucket(&ctx, &input.bucket).await?;
        self.bucket(&ctx, &src_bucket).await?;
        let src_customer = ctx.customer_key(
            input.copy_source_sse_customer_algorithm.as_deref(),
            input.copy_source_sse_customer_key.as_deref(),
            input.copy_source_sse_customer_key_md5.as_deref(),
        )?;
        let customer = ctx.customer_key(
            input.sse_customer_algorithm.as_deref(),
            input.sse_customer_key.as_deref(),
            input.sse_customer_key_md5.as_deref(),
        )?;
        let (src_rec, src) = self.object(&src_bucket, &src_key).await?;
        check_conditions(
            &src.etag,
            src_rec.modified_at,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            true,
        )?;
        if src.size > MAX_COPY {
            return Err(s3_error!(
                InvalidRequest,
                "The specified copy source is larger than the maximum allowable size for a copy \
                 source: 5368709120"
            ));
        }
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let sse_given = input.server_side_encryption.is_some()
            || customer.is_some()
            || input.ssekms_key_id.is_some();
        if src_bucket == input.bucket && src_key == input.key && !replace && !sse_given {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata, storage class, website redirect \
                 location or encryption attributes."
            ));
        }
        let sse = crate::sse::write_request(
            input.server_side_encryption.as_ref().map(|s| s.as_str()),
            input.ssekms_key_id.as_deref(),
            input.ssekms_encryption_context.as_deref(),
            input.bucket_key_enabled,
            customer,
            dest_meta.encryption.as_ref(),
        )?;
        let headers = if replace {
            Headers {
                content_type: input.content_type.map(|c| c.to_string()),
                content_encoding: input.content_encoding,
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                cache_control: input.cache_control,
                expires: expires_string(input.expires),
                website_redirect_location: input.website_redirect_location,
                user: user_metadata(input.metadata)?,
            }
        } else {
            src.headers.clone()
        };
        let tags = match input.tagging_directive.as_ref().map(|d| d.as_str()) {
            Some("REPLACE") => parse_tagging_header(input.tagging.as_deref())?,
            _ => src.tags.clone(),
        };
        let src_content = self.0.keys.open(
            ctx.caller(),
            &src_bucket,
            &src_key,
            &src.sealed,
            src_customer.as_ref(),
        )?;
        let (content, sealed) = self
            .0
            .keys
            .seal(ctx.caller(), &input.bucket, &input.key, &sse)?;
        let body = read_data(
            self.0.objects.clone(),
            cipher(&src.sealed, &src_content),
            &src.data,
            0,
            src.size,
        )
        .await?;
        // The copy keeps the source's checksum algorithm, computed anew over what is written.
        let checks = BodyChecks {
            trailer: src
                .checksum
                .as_ref()
                .map(|c| format!("x-amz-checksum-{}", c.algorithm.to_ascii_lowercase())),
            declared: Some(src.size),
            ..BodyChecks::default()
        };
        let (piece, etag, checksum) = self
            .store_body(&sealed, &content, body, checks, MAX_COPY)
            .await?;
        let now = now_ms();
        let meta = ObjectMeta {
            size: piece.size,
            etag: etag.clone(),
            headers,
            tags,
            checksum: checksum.clone(),
            sealed,
            data: vec![piece],
        };
        self.commit_object(&input.bucket, &input.key, &meta, now)
            .await?;
        let h = sse_headers(&meta.sealed);
        let mut result = CopyObjectResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(timestamp(now)),
            ..Default::default()
        };
        set_checksum!(result, checksum.as_ref(), with_type);
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(result),
            server_side_encryption: h.algorithm,
            ssekms_key_id: h.kms_key_id,
            ssekms_encryption_context: h.context,
            bucket_key_enabled: h.bucket_key,
            sse_customer_algorithm: h.customer_algorithm,
            sse_customer_key_md5: h.customer_md5,
            ..Default::default()
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let ctx = self.ctx(&req)?;
        ctx.exchange
            .set_target(&req.input.bucket, Some(&req.input.key));
        self.bucket(&ctx, &req.input.bucket).await?;
        let (_, m) = self.object(&req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tag_set(&m.tags),
            version_id: None,
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        self.bucket(&ctx, &input.bucket).await?;
        let mut tags = Vec::new();
        for t in input.tagging.tag_set {
            tags.push((t.key.unwrap_or_default(), t.value.unwrap_or_default()));
        }
        check_tags(&tags)?;
        self.set_tags(&input.bucket, &input.key, tags).await?;
        Ok(S3Response::new(PutObjectTaggingOutput::default()))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        self.bucket(&ctx, &input.bucket).await?;
        self.set_tags(&input.bucket, &input.key, Vec::new()).await?;
        Ok(S3Response::with_status(
            DeleteObjectTaggingOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        check_key(&input.key)?;
        let (_, bmeta) = self.bucket(&ctx, &input.bucket).await?;
        let customer = ctx.customer_key(
            input.sse_customer_algorithm.as_deref(),
            input.sse_customer_key.as_deref(),
            input.sse_customer_key_md5.as_deref(),
        )?;
        let sse = crate::sse::write_request(
            input.server_side_encryption.as_ref().map(|s| s.as_str()),
            input.ssekms_key_id.as_deref(),
            input.ssekms_encryption_context.as_deref(),
            input.bucket_key_enabled,
            customer,
            bmeta.encryption.as_ref(),
        )?;
        let headers = Headers {
            content_type: input.content_type.map(|c| c.to_string()),
            content_encoding: input.content_encoding,
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            expires: expires_string(input.expires),
            website_redirect_location: input.website_redirect_location,
            user: user_metadata(input.metadata)?,
        };
        let tags = parse_tagging_header(input.tagging.as_deref())?;
        let (_, sealed) = self
            .0
            .keys
            .seal(ctx.caller(), &input.bucket, &input.key, &sse)?;
        let checksum_algorithm = input
            .checksum_algorithm
            .as_ref()
            .map(|a| a.as_str().to_string());
        let meta = UploadMeta {
            headers,
            tags,
            sealed,
            checksum_algorithm: checksum_algorithm.clone(),
            initiator: ctx.principal.arn.clone(),
        };
        let upload_id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let rec = UploadRecord {
            upload_id: upload_id.clone(),
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            created_at: now_ms(),
            meta: to_json(&meta)?,
        };
        match self.0.db(move |c| c.create_upload(&rec)).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                return Err(s3_error!(
                    NoSuchBucket,
                    "The specified bucket does not exist"
                ))
            }
            Err(e) => return Err(internal(e)),
        }
        ctx.exchange.param("uploadId", upload_id.clone());
        let h = sse_headers(&meta.sealed);
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            server_side_encryption: h.algorithm,
            ssekms_key_id: h.kms_key_id,
            ssekms_encryption_context: h.context,
            bucket_key_enabled: h.bucket_key,
            sse_customer_algorithm: h.customer_algorithm,
            sse_customer_key_md5: h.customer_md5,
            checksum_algorithm: checksum_algorithm.map(ChecksumAlgorithm::from),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let ctx = self.ctx(&req)?;
        let trailer = req
            .headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let trailers = req.trailing_headers.clone();
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        ctx.exchange.param("uploadId", input.upload_id.clone());
        ctx.exchange.param("partNumber", input.part_number);
        self.bucket(&ctx, &input.bucket).await?;
        let part_number = part_number(input.part_number)?;
        let customer = ctx.customer_key(
            input.sse_customer_algorithm.as_deref(),
            input.sse_customer_key.as_deref(),
            input.sse_customer_key_md5.as_deref(),
        )?;
        let (_, up) = self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let content = self.0.keys.open(
            ctx.caller(),
            &input.bucket,
            &input.key,
            &up.sealed,
            customer.as_ref(),
        )?;
        let Some(body) = input.body else {
            return Err(s3_error!(IncompleteBody, "You did not provide the number of bytes specified by the Content-Length HTTP header."));
        };
        let checks = BodyChecks {
            content_md5: input.content_md5.clone(),
            algorithm: input.checksum_algorithm.clone(),
            sent: Checksums {
                crc32: input.checksum_crc32,
                crc32c: input.checksum_crc32c,
                sha1: input.checksum_sha1,
                sha256: input.checksum_sha256,
                crc64nvme: input.checksum_crc64nvme,
            },
            trailer,
            trailers,
            declared: input.content_length.and_then(|n| u64::try_from(n).ok()),
        };
        let (piece, etag, checksum) = self
            .store_body(
                &up.sealed,
                &content,
                body,
                checks,
                self.0.options.max_object_size,
            )
            .await?;
        let checksum = checksum.map(|c| StoredChecksum { kind: None, ..c });
        self.store_part(
            &input.upload_id,
            part_number,
            &etag,
            piece,
            checksum.clone(),
        )
        .await?;
        let h = sse_headers(&up.sealed);
        let mut out = UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            server_side_encryption: h.algorithm,
            ssekms_key_id: h.kms_key_id,
            bucket_key_enabled: h.bucket_key,
            sse_customer_algorithm: h.customer_algorithm,
            sse_customer_key_md5: h.customer_md5,
            ..Default::default()
        };
        set_checksum!(out, checksum.as_ref());
        Ok(S3Response::new(out))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        ctx.exchange.param("uploadId", input.upload_id.clone());
        ctx.exchange.param("partNumber", input.part_number);
        self.bucket(&ctx, &input.bucket).await?;
        let part_number = part_number(input.part_number)?;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "Only bucket copy sources are supported"
            ));
        };
        let (src_bucket, src_key) = (src_bucket.to_string(), src_key.to_string());
        self.bucket(&ctx, &src_bucket).await?;
        let src_customer = ctx.customer_key(
            input.copy_source_sse_customer_algorithm.as_deref(),
            input.copy_source_sse_customer_key.as_deref(),
            input.copy_source_sse_customer_key_md5.as_deref(),
        )?;
        let customer = ctx.customer_key(
            input.sse_customer_algorithm.as_deref(),
            input.sse_customer_key.as_deref(),
            input.sse_customer_key_md5.as_deref(),
        )?;
        let (_, up) = self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let (src_rec, src) = self.object(&src_bucket, &src_key).await?;
        check_conditions(
            &src.etag,
            src_rec.modified_at,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            true,
        )?;
        let (from, to) = match &input.copy_source_range {
            None => (0, src.size),
            Some(r) => copy_range(r, src.size)?,
        };
        let src_content = self.0.keys.open(
            ctx.caller(),
            &src_bucket,
            &src_key,
            &src.sealed,
            src_customer.as_ref(),
        )?;
        let content = self.0.keys.open(
            ctx.caller(),
            &input.bucket,
            &input.key,
            &up.sealed,
            customer.as_ref(),
        )?;
        let body = read_data(
            self.0.objects.clone(),
            cipher(&src.sealed, &src_content),
            &src.data,
            from,
            to,
        )
        .await?;
        let checks = BodyChecks {
            declared: Some(to - from),
            ..BodyChecks::default()
        };
        let (piece, etag, _) = self
            .store_body(
                &up.sealed,
                &content,
                body,
                checks,
                self.0.options.max_object_size,
            )
            .await?;
        self.store_part(&input.upload_id, part_number, &etag, piece, None)
            .await?;
        let h = sse_headers(&up.sealed);
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(etag)),
                last_modified: Some(timestamp(now_ms())),
                ..Default::default()
            }),
            server_side_encryption: h.algorithm,
            ssekms_key_id: h.kms_key_id,
            bucket_key_enabled: h.bucket_key,
            sse_customer_algorithm: h.customer_algorithm,
            sse_customer_key_md5: h.customer_md5,
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        ctx.exchange.param("uploadId", input.upload_id.clone());
        self.bucket(&ctx, &input.bucket).await?;
        let customer = ctx.customer_key(
            input.sse_customer_algorithm.as_deref(),
            input.sse_customer_key.as_deref(),
            input.sse_customer_key_md5.as_deref(),
        )?;
        let (_, up) = self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        check_customer(&up.sealed, customer.as_ref())?;
        let asked = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if asked.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our \
                 published schema"
            ));
        }
        let id = input.upload_id.clone();
        let stored = self
            .0
            .db(move |c| c.list_parts(&id))
            .await
            .map_err(internal)?;
        let stored: BTreeMap<u32, PartMeta> = stored
            .into_iter()
            .map(|p| part_meta(&p.meta).map(|m| (p.part_number, m)))
            .collect::<S3Result<_>>()?;
        let mut data = Vec::new();
        let mut etags = Vec::new();
        let numbers: Vec<i32> = asked.iter().map(|p| p.part_number.unwrap_or(0)).collect();
        if numbers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(s3_error!(
                InvalidPartOrder,
                "The list of parts was not in ascending order. The parts list must be \
                 specified in order by part number."
            ));
        }
        let mut previous = 0u32;
        let invalid_part = || {
            s3_error!(
                InvalidPart,
                "One or more of the specified parts could not be found. The part might not have \
                 been uploaded, or the specified entity tag might not have matched the part's \
                 entity tag."
            )
        };
        for p in &asked {
            let n = p
                .part_number
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(invalid_part)?;
            if n <= previous {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "The list of parts was not in ascending order. The parts list must be \
                     specified in order by part number."
                ));
            }
            previous = n;
            let part = stored.get(&n).ok_or_else(invalid_part)?;
            if let Some(e) = &p.e_tag {
                if e.value() != part.etag {
                    return Err(invalid_part());
                }
            }
            let sent = [
                ("CRC32", &p.checksum_crc32),
                ("CRC32C", &p.checksum_crc32c),
                ("SHA1", &p.checksum_sha1),
                ("SHA256", &p.checksum_sha256),
                ("CRC64NVME", &p.checksum_crc64nvme),
            ];
            for (alg, v) in sent {
                if let (Some(v), Some(c)) = (v, &part.checksum) {
                    if c.algorithm == alg && &c.value != v {
                        return Err(invalid_part());
                    }
                }
            }
            etags.push(hex::decode(&part.etag).map_err(|_| invalid_part())?);
            data.push(part.data.clone());
        }
        if data[..data.len() - 1].iter().any(|d| d.size < MIN_PART) {
            return Err(s3_error!(
                EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed object size."
            ));
        }
        let etag = {
            use s3s::crypto::Checksum as _;
            let mut m = s3s::crypto::Md5::default();
            for e in &etags {
                m.update(e);
            }
            let d: [u8; 16] = m.finalize();
            format!("{}-{}", hex::encode(d), etags.len())
        };
        let size = data.iter().map(|d| d.size).sum();
        if let Some(expected) = input.mpu_object_size {
            if u64::try_from(expected).ok() != Some(size) {
                return Err(s3_error!(
                    InvalidRequest,
                    "The provided MpuObjectSize does not match the object's size"
                ));
            }
        }
        let used: std::collections::HashSet<String> = data.iter().map(|d| d.id.clone()).collect();
        let meta = ObjectMeta {
            size,
            etag: etag.clone(),
            headers: up.headers.clone(),
            tags: up.tags.clone(),
            checksum: None,
            sealed: up.sealed.clone(),
            data,
        };
        let rec = ObjectRecord {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            modified_at: now_ms(),
            meta: to_json(&meta)?,
        };
        let id = input.upload_id.clone();
        let (replaced, parts) = match self.0.db(move |c| c.complete_upload(&id, &rec)).await {
            Ok(x) => x,
            Err(StoreError::NotFound) => {
                return Err(s3_error!(
                    NoSuchUpload,
                    "The specified upload does not exist. The upload ID may be invalid, or the \
                     upload may have been aborted or completed."
                ))
            }
            Err(e) => return Err(internal(e)),
        };
        // Parts uploaded but not named are dropped, as is the version replaced.
        let unused = parts
            .iter()
            .filter_map(|p| part_meta(&p.meta).ok())
            .map(|p| p.data)
            .filter(|d| !used.contains(&d.id))
            .collect::<Vec<_>>();
        self.0.delete_pieces(unused).await;
        if let Some(old) = replaced {
            if let Ok(m) = object_meta(&old.meta) {
                self.0.delete_pieces(m.data).await;
            }
        }
        let h = sse_headers(&meta.sealed);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            server_side_encryption: h.algorithm,
            ssekms_key_id: h.kms_key_id,
            bucket_key_enabled: h.bucket_key,
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        ctx.exchange.param("uploadId", input.upload_id.clone());
        self.bucket(&ctx, &input.bucket).await?;
        self.upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let id = input.upload_id.clone();
        match self.0.db(move |c| c.delete_upload(&id)).await {
            Ok(parts) => {
                let pieces = parts
                    .iter()
                    .filter_map(|p| part_meta(&p.meta).ok())
                    .map(|p| p.data)
                    .collect::<Vec<_>>();
                self.0.delete_pieces(pieces).await;
            }
            Err(StoreError::NotFound) => {
                return Err(s3_error!(
                    NoSuchUpload,
                    "The specified upload does not exist."
                ))
            }
            Err(e) => return Err(internal(e)),
        }
        Ok(S3Response::with_status(
            AbortMultipartUploadOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, Some(&input.key));
        ctx.exchange.param("uploadId", input.upload_id.clone());
        let (b, _) = self.bucket(&ctx, &input.bucket).await?;
        let (_, up) = self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let max = match input.max_parts {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(s3_error!(
                    InvalidArgument,
                    "max-parts must be a non-negative integer"
                ))
            }
            Some(n) => usize::try_from(n).unwrap_or(1000).min(1000),
        };
        let marker = match input.part_number_marker {
            None => 0,
            Some(m) => u32::try_from(m)
                .map_err(|_| s3_error!(InvalidArgument, "Invalid part number marker"))?,
        };
        let id = input.upload_id.clone();
        let all = self
            .0
            .db(move |c| c.list_parts(&id))
            .await
            .map_err(internal)?;
        let mut parts = Vec::new();
        let mut truncated = false;
        let mut next = None;
        for p in all.into_iter().filter(|p| p.part_number > marker) {
            if parts.len() == max {
                truncated = true;
                break;
            }
            let m = part_meta(&p.meta)?;
            next = i32::try_from(p.part_number).ok();
            let mut part = Part {
                part_number: Some(i32::try_from(p.part_number).unwrap_or(0)),
                e_tag: Some(ETag::Strong(m.etag)),
                size: Some(i64::try_from(m.data.size).unwrap_or(i64::MAX)),
                last_modified: Some(timestamp(p.modified_at)),
                ..Default::default()
            };
            if let Some(c) = &m.checksum {
                match c.algorithm.as_str() {
                    "CRC32" => part.checksum_crc32 = Some(c.value.clone()),
                    "CRC32C" => part.checksum_crc32c = Some(c.value.clone()),
                    "SHA1" => part.checksum_sha1 = Some(c.value.clone()),
                    "SHA256" => part.checksum_sha256 = Some(c.value.clone()),
                    "CRC64NVME" => part.checksum_crc64nvme = Some(c.value.clone()),
                    _ => {}
                }
            }
            parts.push(part);
        }
        let initiator = Initiator {
            id: Some(up.initiator.clone()),
            display_name: None,
        };
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(i32::try_from(max).unwrap_or(1000)),
            is_truncated: Some(truncated),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            parts: Some(parts),
            initiator: Some(initiator),
            owner: Some(owner_of(&b.account)),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            checksum_algorithm: up.checksum_algorithm.map(ChecksumAlgorithm::from),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let ctx = self.ctx(&req)?;
        let input = req.input;
        ctx.exchange.set_target(&input.bucket, None);
        let (b, _) = self.bucket(&ctx, &input.bucket).await?;
        let max = match input.max_uploads {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(s3_error!(
                    InvalidArgument,
                    "max-uploads must be a non-negative integer"
                ))
            }
            Some(n) => usize::try_from(n).unwrap_or(1000).min(1000),
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut after: Option<(String, String)> = input.key_marker.clone().map(|k| {
            // A key marker alone skips every upload of that key.
            let id = input
                .upload_id_marker
                .clone()
                .unwrap_or_else(|| "\u{10FFFF}".into());
            (k, id)
        });
        let mut uploads = Vec::new();
        let mut truncated = false;
        'pages: loop {
            let (bk, a) = (input.bucket.clone(), after.clone());
            let page = self
                .0
                .db(move |c| {
                    c.list_uploads(&bk, a.as_ref().map(|(k, i)| (k.as_str(), i.as_str())), 1000)
                })
                .await
                .map_err(internal)?;
            let done = page.len() < 1000;
            for u in page {
                after = Some((u.key.clone(), u.upload_id.clone()));
                if !u.key.starts_with(&prefix) {
                    continue;
                }
                if uploads.len() == max {
                    truncated = true;
                    break 'pages;
                }
                let m: UploadMeta = serde_json::from_str(&u.meta).map_err(damaged)?;
                uploads.push((u, m));
            }
            if done {
                break;
            }
        }
        let last = uploads
            .last()
            .map(|(u, _)| (u.key.clone(), u.upload_id.clone()));
        let list = uploads
            .into_iter()
            .map(|(u, m)| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(timestamp(u.created_at)),
                initiator: Some(Initiator {
                    id: Some(m.initiator),
                    display_name: None,
                }),
                owner: Some(owner_of(&b.account)),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                checksum_algorithm: m.checksum_algorithm.map(ChecksumAlgorithm::from),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(i32::try_from(max).unwrap_or(1000)),
            is_truncated: Some(truncated),
            next_key_marker: if truncated {
                last.clone().map(|l| l.0)
            } else {
                None
            },
            next_upload_id_marker: if truncated { last.map(|l| l.1) } else { None },
            uploads: Some(list),
            ..Default::default()
        }))
    }
}

/// What a body is checked against as it is stored.
#[derive(Default)]
struct BodyChecks {
    /// `Content-MD5`, base64.
    content_md5: Option<String>,
    /// `x-amz-sdk-checksum-algorithm`.
    algorithm: Option<ChecksumAlgorithm>,
    /// `x-amz-checksum-*` headers sent.
    sent: Checksums,
    /// `x-amz-trailer`: the checksums that follow the body.
    trailer: Option<String>,
    /// The trailers, once the body has been read.
    trailers: Option<s3s::TrailingHeaders>,
    /// The length the client declared.
    declared: Option<u64>,
}

impl S3Impl {
    /// Hashes, encrypts and stores `body` as a new piece, then checks its MD5 and checksums
    /// (deleting the piece when one does not match). The piece, the ETag (the MD5 where S3's
    /// rule makes it one, else random) and the checksum to keep.
    async fn store_body(
        &self,
        sealed: &Sealed,
        content: &crate::chunked::ContentKey,
        body: StreamingBlob,
        mut checks: BodyChecks,
        max: u64,
    ) -> S3Result<(DataRef, String, Option<StoredChecksum>)> {
        let md5_etag = matches!(sealed, Sealed::S3 { .. } | Sealed::Unencrypted);
        let mut digests = Digests {
            md5: (md5_etag || checks.content_md5.is_some()).then(s3s::crypto::Md5::default),
            checksum: checksum_hasher(
                checks.algorithm.as_ref(),
                &checks.sent,
                checks.trailer.as_deref(),
            )?,
        };
        let piece = write_data(
            self.0.objects.as_ref(),
            cipher(sealed, content),
            body,
            &mut digests,
            max,
            checks.declared,
        )
        .await?;
        let checked = (|| {
            let md5 = content_md5_check(checks.content_md5.as_deref(), digests.md5.take())?;
            checks.sent.add_trailers(checks.trailers.as_ref())?;
            let checksum = checks
                .sent
                .verify(std::mem::take(&mut digests.checksum).finalize())?;
            Ok::<_, s3s::S3Error>((md5, checksum))
        })();
        let (md5, checksum) = match checked {
            Ok(x) => x,
            Err(e) => {
                self.0.delete_pieces([piece]).await;
                return Err(e);
            }
        };
        let etag = match (md5_etag, md5) {
            (true, Some(d)) => hex::encode(d),
            _ => random_etag(),
        };
        Ok((piece, etag, checksum))
    }

    /// The object a GET or HEAD reads, once the caller's account owns its bucket, its
    /// conditions hold, and with the SSE-C key the request carries (checked for TLS).
    async fn readable(
        &self,
        ctx: &Ctx,
        bucket: &str,
        key: &str,
        sse_c: [Option<&str>; 3],
        pre: Preconditions<'_>,
    ) -> S3Result<(Option<CustomerKey>, ObjectRecord, ObjectMeta)> {
        ctx.exchange.set_target(bucket, Some(key));
        self.bucket(ctx, bucket).await?;
        let customer = ctx.customer_key(sse_c[0], sse_c[1], sse_c[2])?;
        let (rec, m) = self.object(bucket, key).await?;
        check_conditions(
            &m.etag,
            rec.modified_at,
            pre.if_match,
            pre.if_unmodified_since,
            pre.if_none_match,
            pre.if_modified_since,
            false,
        )?;
        Ok((customer, rec, m))
    }

    async fn set_tags(&self, bucket: &str, key: &str, tags: Vec<(String, String)>) -> S3Result<()> {
        // A concurrent write of the object retries the change on the new version.
        for _ in 0..5 {
            let (rec, mut m) = self.object(bucket, key).await?;
            m.tags.clone_from(&tags);
            let updated = ObjectRecord {
                meta: to_json(&m)?,
                ..rec.clone()
            };
            let expected = rec.meta.clone();
            match self
                .0
                .db(move |c| c.update_object(&updated, &expected))
                .await
            {
                Ok(()) => return Ok(()),
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(internal(e)),
            }
        }
        Err(s3_error!(
            OperationAborted,
            "A conflicting conditional operation is currently in progress against this resource. \
             Please try again."
        ))
    }

    async fn store_part(
        &self,
        upload_id: &str,
        part_number: u32,
        etag: &str,
        piece: DataRef,
        checksum: Option<StoredChecksum>,
    ) -> S3Result<()> {
        let meta = PartMeta {
            etag: etag.to_string(),
            data: piece.clone(),
            checksum,
        };
        let rec = keyhold_kms::catalog::PartRecord {
            upload_id: upload_id.to_string(),
            part_number,
            modified_at: now_ms(),
            meta: to_json(&meta)?,
        };
        match self.0.db(move |c| c.put_part(&rec)).await {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    if let Ok(m) = part_meta(&old.meta) {
                        self.0.delete_pieces([m.data]).await;
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.0.delete_pieces([piece]).await;
                Err(match e {
                    StoreError::NotFound => s3_error!(
                        NoSuchUpload,
                        "The specified upload does not exist. The upload ID may be invalid, or \
                         the upload may have been aborted or completed."
                    ),
                    e => internal(e),
                })
            }
        }
    }
}

fn part_number(n: i32) -> S3Result<u32> {
    match u32::try_from(n) {
        Ok(n @ 1..=10_000) => Ok(n),
        _ => Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive"
        )),
    }
}

/// The key data is encrypted under: none only for the benchmark baseline's unencrypted
/// objects.
fn cipher<'a>(
    sealed: &Sealed,
    content: &'a crate::chunked::ContentKey,
) -> Option<&'a crate::chunked::ContentKey> {
    (!matches!(sealed, Sealed::Unencrypted)).then_some(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(url_encode("a b+c/ü%"), "a%20b%2Bc/%C3%BC%25");
    }

    #[test]
    fn part_numbers_are_within_s3_bounds() {
        assert!(part_number(0).is_err());
        assert!(part_number(10_001).is_err());
        assert_eq!(part_number(10_000).unwrap(), 10_000);
    }
}
