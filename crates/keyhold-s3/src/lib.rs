//! keyhold-s3: the S3 front door. An S3-compatible object store whose objects are always
//! encrypted at rest (SSE-S3, SSE-KMS, SSE-C), using the KMS engine in-process as the
//! requesting principal, via the S3 service (`kms:ViaService = s3.REGION.amazonaws.com`).
//!
//! # Layout
//! - [`Gateway`]: the service; [`Gateway::handle`] runs one HTTP request: the S3 wire protocol
//!   and SigV4 in every mode come from `s3s`, then the operation, then one audit event.
//! - `ops`: the S3 operations (buckets, objects, multipart uploads, tagging, encryption).
//! - `access`: credentials and the access check (principal, operation name).
//! - [`chunked`]: the stored format: AES-256-GCM in 64 KiB chunks bound to the data, its
//!   index and the final flag.
//! - [`sse`]: SSE headers as S3 checks them; SSE-C and Bucket Key wrapping; [`headers`]: the
//!   tagging and copy-range headers.
//! - `keys`: sealing and opening content keys per mode (owned key, KMS, customer key) and
//!   the Bucket Key cache.
//! - [`meta`]: the catalog documents; [`objects`]: where the ciphertext lives (a local
//!   directory), or [`backend`]: an existing S3-compatible store.
//! - `stream`: encrypting uploads and decrypting downloads as streams, in bounded memory.
#![forbid(unsafe_code)]

mod access;
#[cfg(feature = "backend")]
pub mod backend;
pub mod chunked;
pub mod headers;
mod keys;
pub mod meta;
pub mod objects;
mod ops;
pub mod sse;
mod stream;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use keyhold_kms::principal::Principal;
use keyhold_kms::{Engine, RequestMeta, ServiceRequest};
use s3s::service::{S3Service, S3ServiceBuilder};

#[cfg(feature = "backend")]
pub use backend::{BackendConfig, S3Backend};
pub use objects::{LocalDir, ObjectStore};

/// The audit event source of S3 requests.
pub const EVENT_SOURCE: &str = "s3.amazonaws.com";

/// Settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The domain of virtual-hosted-style requests (`BUCKET.DOMAIN`); path-style only when
    /// `None`.
    pub domain: Option<String>,
    /// How long a Bucket Key is reused for one requester, bucket and KMS key.
    pub bucket_key_ttl: Duration,
    /// Largest object accepted in one PutObject or UploadPart (S3: 5 GiB).
    pub max_object_size: u64,
    /// How long an upload may stay incomplete before the maintenance task aborts it.
    pub upload_expiry: Duration,
    /// Store object bytes without encryption, whatever the request asks. Only `keyhold
    /// bench` sets it, on a temporary gateway of its own, to measure the cost of encryption;
    /// `keyhold serve` has no way to set it.
    pub unencrypted_for_benchmarks: bool,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            domain: None,
            bucket_key_ttl: Duration::from_secs(300),
            max_object_size: 5 * 1024 * 1024 * 1024,
            upload_expiry: Duration::from_secs(7 * 24 * 3600),
            unencrypted_for_benchmarks: false,
        }
    }
}

/// The S3 gateway.
pub struct Gateway {
    inner: Arc<ops::Inner>,
    service: S3Service,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

/// What the gateway learns about one request while s3s and the operation run, for its audit
/// event (shared through the request's extensions).
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    state: Mutex<ExchangeState>,
}

#[derive(Debug, Default)]
struct ExchangeState {
    operation: String,
    principal: Option<Principal>,
    resources: Vec<String>,
    parameters: serde_json::Map<String, serde_json::Value>,
}

impl Exchange {
    fn lock(&self) -> std::sync::MutexGuard<'_, ExchangeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_operation(&self, op: &str) {
        op.clone_into(&mut self.lock().operation);
    }

    pub(crate) fn set_principal(&self, p: &Principal) {
        self.lock().principal = Some(p.clone());
    }

    /// Records the bucket (and object) a request is about.
    pub(crate) fn set_target(&self, bucket: &str, key: Option<&str>) {
        let mut s = self.lock();
        s.parameters
            .insert("bucketName".into(), serde_json::Value::from(bucket));
        s.resources.push(format!("arn:aws:s3:::{bucket}"));
        if let Some(k) = key {
            s.parameters
                .insert("key".into(), serde_json::Value::from(k));
            s.resources.push(format!("arn:aws:s3:::{bucket}/{k}"));
        }
    }

    /// Records one request parameter worth auditing (never a secret).
    pub(crate) fn param(&self, name: &str, value: impl Into<serde_json::Value>) {
        self.lock().parameters.insert(name.into(), value.into());
    }
}

/// Operations that change nothing (readOnly in their audit events).
fn read_only(op: &str) -> bool {
    op.starts_with("Get")
        || op.starts_with("Head")
        || op.starts_with("List")
        || op == "SelectObjectContent"
}

/// The transport facts the front door knows of a request (set from the connection).
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// True over TLS.
    pub tls: bool,
}

/// Longest User-Agent kept for the audit log.
const MAX_USER_AGENT: usize = 256;

fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Virtual-hosted-style requests under one domain: `BUCKET.DOMAIN[:PORT]` names a bucket;
/// the domain itself, or any other host (an IP address, `localhost`), is path style.
struct VirtualHosts {
    domain: String,
}

impl VirtualHosts {
    fn new(domain: &str) -> Result<Self, String> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!("--s3-domain {domain:?} is not a domain name"));
        }
        Ok(Self { domain })
    }
}

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        // The port, if any, is not part of the name.
        let name = match host.rsplit_once(':') {
            Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        let lower = name.to_ascii_lowercase();
        match lower
            .strip_suffix(&self.domain)
            .and_then(|b| b.strip_suffix('.'))
        {
            Some(bucket) if !bucket.is_empty() => {
                Ok(s3s::host::VirtualHost::new(self.domain.as_str())
                    .with_bucket(bucket.to_string()))
            }
            _ => Ok(s3s::host::VirtualHost::new(self.domain.as_str())),
        }
    }
}

/// The `<Code>` of an S3 XML error body.
fn error_code(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let start = s.find("<Code>")? + "<Code>".len();
    let end = s[start..].find("</Code>")? + start;
    Some(s[start..end].to_string())
}

impl Gateway {
    /// A gateway over `engine` keeping ciphertext in `objects`.
    pub fn new(
        engine: Arc<Engine>,
        objects: Arc<dyn ObjectStore>,
        options: GatewayOptions,
    ) -> Result<Self, String> {
        let inner = Arc::new(ops::Inner::new(engine.clone(), objects, options.clone()));
        let mut builder = S3ServiceBuilder::new(ops::S3Impl(inner.clone()));
        builder.set_auth(access::Auth(engine.clone()));
        builder.set_access(access::Access(engine));
        // XML bodies (DeleteObjects of 1000 keys, CompleteMultipartUpload of 10,000 parts)
        // fit in 4 MiB; larger ones are refused before they are buffered.
        let mut config = s3s::config::S3Config::default();
        config.xml_max_body_size = 4 * 1024 * 1024;
        builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
            config,
        ))));
        if let Some(domain) = &options.domain {
            builder.set_host(VirtualHosts::new(domain)?);
        }
        Ok(Self {
            inner,
            service: builder.build(),
        })
    }

    /// Runs one request: refuses all work while the audit log cannot be written, lets s3s
    /// verify the signature (SigV4 in every mode; SigV2, which boto3 still uses for presigned
    /// URLs, as S3 does) and decode the request, runs the operation, and audits it once.
    pub async fn handle(
        &self,
        transport: Transport,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<s3s::Body>, s3s::HttpError> {
        let started = std::time::Instant::now();
        let meta = RequestMeta {
            request_id: uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
            source_ip: transport.peer.ip().to_string(),
            user_agent: bounded(
                req.headers()
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                MAX_USER_AGENT,
            ),
            via_service: Some(format!("s3.{}.amazonaws.com", self.inner.engine.region())),
            secure_transport: transport.tls,
            source_arn: None,
        };
        let claimed = keyhold_sigv4::claimed_access_key_id(req.headers())
            .or_else(|| presigned_access_key_id(req.uri()))
            .map(|a| bounded(&a, 128));
        let exchange = Arc::new(Exchange::default());
        // An HTTP/1 request that carries a body (clients send `Expect: 100-continue` with most),
        // answered with an error perhaps before the body was read: the connection is closed
        // after the answer, so no unread body can be taken for the next request.
        let has_body = req.version() <= http::Version::HTTP_11
            && (req.headers().contains_key(http::header::TRANSFER_ENCODING)
                || req
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v != "0"));
        let refusal = self
            .inner
            .engine
            .audit_available()
            .err()
            .map(|e| s3s::s3_error!(ServiceUnavailable, "{}", e.message));
        let mut response = match refusal {
            Some(e) => e
                .to_http_response()
                .map_err(|e| s3s::HttpError::new(Box::new(e)))?,
            None => {
                let (mut parts, body) = req.into_parts();
                parts.extensions.insert(exchange.clone());
                parts.extensions.insert(meta.clone());
                parts.extensions.insert(transport);
                let req = Request::from_parts(parts, s3s::Body::from(body));
                self.service.call(req).await?
            }
        };
        if let Ok(v) = HeaderValue::from_str(&meta.request_id) {
            response.headers_mut().insert("x-amz-request-id", v);
        }
        if has_body && (response.status().is_client_error() || response.status().is_server_error())
        {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        // The audit event: an error's code comes from its XML body (small and complete).
        let status = response.status();
        let code = if status.is_client_error() || status.is_server_error() {
            let body = std::mem::take(response.body_mut());
            let bytes = body.bytes();
            let code = bytes.as_deref().and_then(error_code);
            *response.body_mut() = bytes.map(s3s::Body::from).unwrap_or(body);
            Some(code.unwrap_or_else(|| status.as_u16().to_string()))
        } else {
            None
        };
        let s = exchange.lock();
        let op = if s.operation.is_empty() {
            "unknown".to_string()
        } else {
            s.operation.clone()
        };
        metrics::counter!(
            "keyhold_s3_requests_total",
            "operation" => op.clone(),
            "code" => code.clone().unwrap_or_else(|| "OK".into())
        )
        .increment(1);
        tracing::info!(
            target: "keyhold::request",
            request_id = %meta.request_id,
            operation = %op,
            principal = s.principal.as_ref().map_or("-", |p| p.arn.as_str()),
            resource = s.resources.last().map_or("-", String::as_str),
            status = status.as_u16(),
            error = code.as_deref().unwrap_or("-"),
            via = "s3",
            latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request"
        );
        metrics::histogram!("keyhold_s3_request_duration_seconds", "operation" => op)
            .record(started.elapsed().as_secs_f64());
        let params = serde_json::Value::Object(s.parameters.clone());
        let message = code.as_ref().map(|_| status.to_string());
        let ev = ServiceRequest {
            event_source: EVENT_SOURCE,
            event_name: &s.operation,
            principal: s.principal.as_ref(),
            claimed_access_key_id: if s.principal.is_some() {
                None
            } else {
                claimed.as_deref()
            },
            parameters: &params,
            error: code.as_deref().zip(message.as_deref()),
            resources: &s.resources,
            read_only: read_only(&s.operation),
        };
        if let Err(e) = self.inner.engine.audit_service_request(&meta, &ev) {
            tracing::error!(error = %e, "S3 request not audited");
        }
        Ok(response)
    }

    /// Aborts multipart uploads older than the expiry and deletes their parts' data; how
    /// many (for the maintenance task).
    pub async fn expire_uploads(&self) -> Result<usize, String> {
        self.inner.expire_uploads().await
    }
}

/// The access key id a presigned URL claims (`X-Amz-Credential=AKID/...` or SigV2's
/// `AWSAccessKeyId=AKID`).
fn presigned_access_key_id(uri: &http::Uri) -> Option<String> {
    let q = uri.query()?;
    let cred = q.split('&').find_map(|p| {
        p.strip_prefix("X-Amz-Credential=")
            .or_else(|| p.strip_prefix("AWSAccessKeyId="))
    })?;
    let decoded = cred.replace("%2F", "/").replace("%2f", "/");
    decoded.split('/').next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_the_xml_body() {
        assert_eq!(
            error_code(b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>"),
            Some("NoSuchKey".into())
        );
        assert_eq!(error_code(b"<Error></Error>"), None);
        assert_eq!(error_code(&[0xff, 0xfe]), None);
    }

    #[test]
    fn virtual_hosts_name_buckets_under_the_domain_only() {
        use s3s::host::S3Host as _;
        let v = VirtualHosts::new("s3.example.com").unwrap();
        let bucket = |h: &str| v.parse_host_header(h).unwrap().bucket().map(str::to_string);
        assert_eq!(bucket("photos.s3.example.com"), Some("photos".into()));
        assert_eq!(bucket("Photos.S3.Example.com:9443"), Some("photos".into()));
        assert_eq!(bucket("a.b.s3.example.com"), Some("a.b".into()));
        assert_eq!(bucket("s3.example.com:9443"), None);
        assert_eq!(bucket("localhost:7090"), None);
        assert_eq!(bucket("xs3.example.com"), None);
        assert!(VirtualHosts::new("bad domain").is_err());
        assert!(VirtualHosts::new("").is_err());
    }

    #[test]
    fn presigned_urls_name_their_access_key() {
        let uri: http::Uri = "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDX%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
            .parse()
            .unwrap();
        assert_eq!(presigned_access_key_id(&uri).as_deref(), Some("AKIDX"));
    }
}
