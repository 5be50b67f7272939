//! keyhold-volumes: the volume service. EBS's model of encrypted block volumes on a Linux
//! host: a volume is a LUKS2 image whose passphrase is a data key made by KMS under the
//! account's `aws/ebs` key (or a customer key), bound to the volume id as encryption context
//! (`aws:ebs:id`). Its API is the EBS part of the EC2 Query API (CreateVolume,
//! DescribeVolumes, AttachVolume, CreateSnapshot, EnableEbsEncryptionByDefault, ...), so the
//! AWS CLI and SDKs drive it, plus one action of keyhold's own, `UnlockVolume`, that hands the
//! passphrase of an attached volume to the host that attached it.
//!
//! Every KMS call is made in-process as the requesting principal through the EC2 service
//! (`kms:ViaService = ec2.REGION.amazonaws.com`), so the key policy decides, a disabled key
//! refuses, and the audit log shows the caller and the service.
//!
//! # Layout
//! - [`VolumeService`]: the front door: SigV4 (service `ec2`), the Query protocol, one audit
//!   event per request; `ops`: the actions.
//! - [`query`]: parameters in, XML out; [`catalog`]: records on disk; [`image`]: sparse
//!   images, `cryptsetup luksFormat`, snapshot copies.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod image;
mod ops;
pub mod query;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use keyhold_kms::principal::Principal;
use keyhold_kms::{Engine, RequestMeta, ServiceRequest};
use keyhold_sigv4::{Scope, SignedRequest};

use crate::catalog::Catalog;
use crate::query::{Ec2Error, Params};

/// The audit event source of volume requests.
pub const EVENT_SOURCE: &str = "ec2.amazonaws.com";

/// Largest request body read (the Query API's requests are small).
const MAX_BODY: usize = 64 * 1024;

/// How long a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The volume service.
pub struct VolumeService {
    engine: Arc<Engine>,
    catalog: Catalog,
    /// Serializes changes to the catalog (one volume's state at a time).
    writes: Mutex<()>,
}

impl std::fmt::Debug for VolumeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeService").finish_non_exhaustive()
    }
}

/// Who asks, and how, for the KMS calls an action makes.
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) meta: RequestMeta,
}

/// The service of a SigV4 `Authorization` header's credential scope
/// (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`).
fn signed_service(headers: &http::HeaderMap) -> Option<&str> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    let scope = cred.split([',', ' ']).next()?;
    scope.split('/').nth(3)
}

impl VolumeService {
    /// The service, keeping volumes under `dir` (images and records). Images left without a
    /// record by a crash are removed.
    pub fn open(engine: Arc<Engine>, dir: &Path) -> std::io::Result<Self> {
        let catalog = Catalog::open(dir)?;
        let orphans = catalog.remove_orphan_images()?;
        if orphans > 0 {
            tracing::info!(orphans, "removed volume images that had no record");
        }
        Ok(Self {
            engine,
            catalog,
            writes: Mutex::new(()),
        })
    }

    /// True for the requests this service answers on a shared listener: those signed for
    /// the `ec2` service (the AWS tools sign EC2 requests so when `AWS_ENDPOINT_URL` names
    /// keyhold).
    pub fn owns(headers: &http::HeaderMap) -> bool {
        signed_service(headers) == Some("ec2")
    }

    /// Answers one request.
    pub async fn handle<B>(
        self: Arc<Self>,
        peer: std::net::SocketAddr,
        tls: bool,
        req: Request<B>,
    ) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let request_id = uuid::Uuid::new_v4().to_string();
        let meta = RequestMeta {
            request_id: request_id.clone(),
            source_ip: peer.ip().to_string(),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect())
                .unwrap_or_default(),
            via_service: Some(format!("ec2.{}.amazonaws.com", self.engine.region())),
            secure_transport: tls,
            source_arn: None,
        };
        let (parts, body) = req.into_parts();
        let read = Limited::new(body, MAX_BODY).collect();
        let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) => {
                return self.refuse(
                    &meta,
                    None,
                    "",
                    &Ec2Error::invalid(format!(
                        "The request body is unreadable or larger than {MAX_BODY} bytes"
                    )),
                )
            }
            Err(_) => {
                return self.refuse(
                    &meta,
                    None,
                    "",
                    &Ec2Error::new("RequestTimeout", "The request body did not arrive in time"),
                )
            }
        };
        let engine = self.engine.clone();
        let signed = SignedRequest {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            body: &body,
        };
        let scope = Scope {
            service: "ec2",
            region: engine.region(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let verified =
            keyhold_sigv4::verify::<_, keyhold_kms::error::KmsError>(&signed, scope, now, |akid| {
                Ok(engine.credential(akid)?.map(|c| {
                    let secret = c.secret.clone();
                    (c, secret)
                }))
            });
        let principal = match verified {
            Ok(c) => c.principal,
            Err(e) => {
                let e = match e {
                    keyhold_sigv4::Error::Lookup(e) => Ec2Error::internal(e.message),
                    keyhold_sigv4::Error::Missing => Ec2Error {
                        code: "AuthFailure",
                        status: 401,
                        message: "AWS was not able to validate the provided access credentials"
                            .into(),
                    },
                    keyhold_sigv4::Error::Incomplete(m)
                    | keyhold_sigv4::Error::Invalid(m)
                    | keyhold_sigv4::Error::UnrecognizedClient(m) => Ec2Error {
                        code: "AuthFailure",
                        status: 401,
                        message: m,
                    },
                };
                return self.refuse(&meta, None, "", &e);
            }
        };
        if parts.method != Method::POST {
            return self.refuse(
                &meta,
                Some(&principal),
                "",
                &Ec2Error::new("InvalidAction", "The EC2 Query API is served by POST only"),
            );
        }
        let params = match Params::parse(&body) {
            Ok(p) => p,
            Err(e) => return self.refuse(&meta, Some(&principal), "", &e),
        };
        let action = params.get("Action").unwrap_or_default().to_string();
        let Some(action) = ops::ACTIONS.iter().find(|a| **a == action).copied() else {
            return self.refuse(
                &meta,
                Some(&principal),
                "",
                &Ec2Error::new(
                    "InvalidAction",
                    format!(
                        "The action {} is not valid for this web service.",
                        action.chars().take(64).collect::<String>()
                    ),
                ),
            );
        };
        let caller = Caller { principal, meta };
        let this = self.clone();
        let run = tokio::task::spawn_blocking(move || {
            let mut audit = serde_json::Map::new();
            let result = this.run(action, &caller, &params, &mut audit);
            (caller, audit, result)
        })
        .await;
        let (caller, audit, result) = match run {
            Ok(r) => r,
            Err(e) => {
                return self.refuse(
                    &RequestMeta {
                        request_id,
                        ..RequestMeta::default()
                    },
                    None,
                    action,
                    &Ec2Error::internal(e),
                )
            }
        };
        let (status, doc, error) = match result {
            Ok(doc) => (200, doc, None),
            Err(e) => (
                e.status,
                query::error_document(&e, &caller.meta.request_id),
                Some(e),
            ),
        };
        let event = ServiceRequest {
            event_source: EVENT_SOURCE,
            event_name: action,
            principal: Some(&caller.principal),
            claimed_access_key_id: None,
            parameters: &serde_json::Value::Object(audit),
            error: error.as_ref().map(|e| (e.code, e.message.as_str())),
            resources: &[],
            read_only: ops::read_only(action),
        };
        if let Err(e) = self.engine.audit_service_request(&caller.meta, &event) {
            return xml(
                500,
                &query::error_document(&Ec2Error::internal(e.message), &caller.meta.request_id),
            );
        }
        tracing::info!(
            target: "keyhold::request",
            request_id = %caller.meta.request_id,
            operation = action,
            principal = %caller.principal.arn,
            status,
            error = error.as_ref().map_or("-", |e| e.code),
            service = "ec2",
        );
        xml(status, &doc)
    }

    /// Answers a request refused before it became an action, and audits it.
    fn refuse(
        &self,
        meta: &RequestMeta,
        principal: Option<&Principal>,
        action: &str,
        e: &Ec2Error,
    ) -> Response<Full<Bytes>> {
        let event = ServiceRequest {
            event_source: EVENT_SOURCE,
            event_name: action,
            principal,
            claimed_access_key_id: None,
            parameters: &serde_json::Value::Object(serde_json::Map::new()),
            error: Some((e.code, e.message.as_str())),
            resources: &[],
            read_only: true,
        };
        if let Err(err) = self.engine.audit_service_request(meta, &event) {
            tracing::error!(error = %err, "volume request not audited");
        }
        xml(e.status, &query::error_document(e, &meta.request_id))
    }
}

fn xml(status: u16, doc: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(doc.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_signed_for_ec2_belong_to_the_volume_service() {
        let mut h = http::HeaderMap::new();
        assert!(!VolumeService::owns(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20261130/us-east-1/ec2/aws4_request, \
                 SignedHeaders=host, Signature=00",
            ),
        );
        assert!(VolumeService::owns(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20261130/us-east-1/kms/aws4_request, \
                 SignedHeaders=host, Signature=00",
            ),
        );
        assert!(!VolumeService::owns(&h));
    }
}
