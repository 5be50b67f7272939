//! One HTTP request, from bytes to the engine and back.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use keyhold_kms::error::{ErrorCode, KmsError};
use keyhold_kms::principal::Principal;
use keyhold_kms::{Engine, Operation, Refused, Request as KmsRequest, RequestMeta};
use keyhold_sigv4::{Scope, SignedRequest};

use crate::wire::{self, CONTENT_TYPE, TARGET_PREFIX};
use crate::{Connection, ServerOptions};

type Resp = Response<Full<Bytes>>;

fn response(status: u16, request_id: &str, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

fn error_response(request_id: &str, e: &KmsError) -> Resp {
    response(wire::status(e.code), request_id, wire::error_body(e))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Longest User-Agent kept for the audit log (longer ones are cut).
const MAX_USER_AGENT: usize = 256;
/// Longest operation name kept (the longest KMS operation has 35 characters).
const MAX_TARGET: usize = 64;
/// Longest claimed access key id kept.
const MAX_ACCESS_KEY_ID: usize = 128;

/// `s`, cut to at most `max` bytes at a character boundary.
fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The KMS error of a refused signature.
fn auth_error(e: keyhold_sigv4::Error<KmsError>) -> KmsError {
    use keyhold_sigv4::Error;
    match e {
        Error::Missing => KmsError::new(
            ErrorCode::MissingAuthenticationTokenException,
            "Missing Authentication Token",
        ),
        Error::Incomplete(m) => KmsError::new(ErrorCode::IncompleteSignatureException, m),
        Error::Invalid(m) => KmsError::new(ErrorCode::InvalidSignatureException, m),
        Error::UnrecognizedClient(m) => KmsError::new(ErrorCode::UnrecognizedClientException, m),
        Error::Lookup(e) => e,
    }
}

pub(crate) async fn handle(
    engine: Arc<Engine>,
    options: Arc<ServerOptions>,
    inflight: Arc<tokio::sync::Semaphore>,
    conn: Connection,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    if let Some(m) = options
        .mounted
        .iter()
        .find(|m| m.owns(req.uri().path(), req.headers()))
    {
        return Ok(m.handle(conn, req).await);
    }
    // The Region's engine, by the Region the signature claims; the signature check below
    // holds the request to it.
    let engine = match &options.regions {
        Some(regions) => keyhold_sigv4::claimed_region(req.headers())
            .and_then(|r| regions.get(r).cloned())
            .unwrap_or(engine),
        None => engine,
    };
    let meta = RequestMeta {
        request_id: uuid::Uuid::new_v4().to_string(),
        source_ip: conn.peer.ip().to_string(),
        user_agent: bounded(
            req.headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            MAX_USER_AGENT,
        ),
        // Never taken from the client: only keyhold's own service front doors set it.
        via_service: None,
        // From the connection the request came on, never from the request.
        secure_transport: conn.tls,
        source_arn: None,
    };
    let (parts, body) = req.into_parts();
    if let Some(r) = crate::operator_response(
        &engine,
        options.metrics.as_ref(),
        &parts.method,
        parts.uri.path(),
    ) {
        return Ok(r);
    }
    let started = std::time::Instant::now();
    // The operation name, read once.
    // What the client sends into an audit event is bounded, so every event's size is too.
    let target = bounded(
        parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.strip_prefix(TARGET_PREFIX))
            .unwrap_or(""),
        MAX_TARGET,
    );
    let claimed = keyhold_sigv4::claimed_access_key_id(&parts.headers)
        .map(|a| bounded(&a, MAX_ACCESS_KEY_ID));
    // A refusal before the request became a typed call is audited without its body: what
    // an unauthenticated client sends never reaches the log (it could fill the disk), and
    // requestParameters come only from an operation's known fields.
    let refuse = |e: KmsError, principal: Option<&Principal>| {
        let refused = Refused {
            op_name: &target,
            principal,
            claimed_access_key_id: if principal.is_some() {
                None
            } else {
                claimed.as_deref()
            },
        };
        engine.audit_refused(&meta, refused, &e);
        // A refused request is counted under its operation when it named a known one (labels
        // never carry what the client sent).
        let op = Operation::from_name(&target).map_or("unknown", |o| o.name());
        record(op, e.code.as_str(), started);
        error_response(&meta.request_id, &e)
    };

    // Framing: refuse oversized bodies before reading them.
    let too_large = KmsError::new(
        ErrorCode::RequestEntityTooLargeException,
        format!(
            "Request body is larger than {} bytes",
            options.max_body_bytes
        ),
    );
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > options.max_body_bytes as u64) {
        return Ok(refuse(too_large, None));
    }
    // The body is read under a deadline, and before the request takes an in-flight slot, so
    // slow senders hold no slot that real work needs.
    let read = Limited::new(body, options.max_body_bytes).collect();
    let body = match tokio::time::timeout(options.body_timeout, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Ok(refuse(too_large, None));
            }
            tracing::debug!(error = %e, "request body read failed");
            return Ok(refuse(
                KmsError::new(
                    ErrorCode::SerializationException,
                    "Could not read request body",
                ),
                None,
            ));
        }
        Err(_) => {
            let mut r = refuse(
                KmsError::new(
                    ErrorCode::RequestTimeoutException,
                    format!(
                        "The request body did not arrive within {} seconds",
                        options.body_timeout.as_secs()
                    ),
                ),
                None,
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Ok(r);
        }
    };
    // Overload: answer at once instead of queueing without bound.
    let Ok(_permit) = inflight.try_acquire_owned() else {
        metrics::counter!("keyhold_requests_throttled_total").increment(1);
        return Ok(refuse(
            KmsError::new(ErrorCode::ThrottlingException, "Rate exceeded"),
            None,
        ));
    };
    let _in_flight = InFlight::new();
    if parts.method != Method::POST || parts.uri.path() != "/" {
        return Ok(refuse(
            KmsError::new(
                ErrorCode::UnknownOperationException,
                format!("No operation at {} {}", parts.method, parts.uri.path()),
            ),
            None,
        ));
    }

    let signed = SignedRequest {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &body,
    };
    let scope = Scope {
        service: "kms",
        region: engine.region(),
    };
    let verified = keyhold_sigv4::verify(&signed, scope, now_secs(), |akid| {
        Ok(engine.credential(akid)?.map(|c| {
            let secret = c.secret.clone();
            (c, secret)
        }))
    });
    let cred = match verified {
        Ok(c) => c,
        Err(e) => return Ok(refuse(auth_error(e), None)),
    };
    if target.is_empty() {
        return Ok(refuse(
            KmsError::new(
                ErrorCode::UnknownOperationException,
                "Missing or malformed X-Amz-Target header",
            ),
            Some(&cred.principal),
        ));
    }
    let Some(op) = Operation::from_name(&target) else {
        return Ok(refuse(
            KmsError::new(
                ErrorCode::UnknownOperationException,
                format!("Unknown operation {target}"),
            ),
            Some(&cred.principal),
        ));
    };
    let request = match KmsRequest::from_json(op, &body) {
        Ok(r) => r,
        Err(e) => return Ok(refuse(e, Some(&cred.principal))),
    };

    let result = if op.is_hot() {
        engine.call(&cred.principal, &meta, request)
    } else {
        let engine = engine.clone();
        let meta = meta.clone();
        match tokio::task::spawn_blocking(move || engine.call(&cred.principal, &meta, request))
            .await
        {
            Ok(r) => r,
            Err(e) => Err(KmsError::internal(e)),
        }
    };
    let answer = result.and_then(|r| r.to_json());
    let code = answer.as_ref().err().map_or("OK", |e| e.code.as_str());
    record(op.name(), code, started);
    Ok(match answer {
        Ok(body) => response(200, &meta.request_id, body),
        Err(e) => error_response(&meta.request_id, &e),
    })
}

/// Counts a request in `keyhold_requests_in_flight` while it is alive.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn new() -> Self {
        let g = metrics::gauge!("keyhold_requests_in_flight");
        g.increment(1.0);
        Self(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Counts a finished request by operation and outcome, and its latency.
fn record(operation: &'static str, code: &'static str, started: std::time::Instant) {
    metrics::counter!("keyhold_requests_total", "operation" => operation, "code" => code)
        .increment(1);
    metrics::histogram!("keyhold_request_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
}
