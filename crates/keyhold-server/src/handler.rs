//! One HTTP request, from bytes to the engine and back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use keyhold_kms::error::{ErrorCode, KmsError};
use keyhold_kms::{Engine, RequestMeta};

use crate::sigv4::{self, SignedRequest};
use crate::wire::{self, CONTENT_TYPE, TARGET_PREFIX};
use crate::ServerOptions;

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

pub(crate) async fn handle(
    engine: Arc<Engine>,
    options: Arc<ServerOptions>,
    inflight: Arc<tokio::sync::Semaphore>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let meta = RequestMeta {
        request_id: uuid::Uuid::new_v4().to_string(),
        source_ip: peer.ip().to_string(),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        // Never taken from the client: only keyhold's own service front doors set it.
        via_service: None,
    };
    let (parts, body) = req.into_parts();
    if parts.method == Method::GET && parts.uri.path() == "/health" {
        return Ok(response(
            200,
            &meta.request_id,
            b"{\"status\":\"ok\"}".to_vec(),
        ));
    }
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .unwrap_or("")
        .to_string();
    let claimed = sigv4::claimed_access_key_id(&parts.headers);
    let refuse = |e: KmsError, body: &[u8]| {
        engine.audit_refused(&meta, &op, claimed.as_deref(), body, &e);
        error_response(&meta.request_id, &e)
    };
    // Overload: answer at once instead of queueing without bound.
    let Ok(_permit) = inflight.try_acquire_owned() else {
        return Ok(refuse(
            KmsError::new(ErrorCode::ThrottlingException, "Rate exceeded"),
            b"",
        ));
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
        return Ok(refuse(too_large, b""));
    }
    let body = match Limited::new(body, options.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Ok(refuse(too_large, b""));
            }
            tracing::debug!(error = %e, "request body read failed");
            return Ok(refuse(
                KmsError::new(
                    ErrorCode::SerializationException,
                    "Could not read request body",
                ),
                b"",
            ));
        }
    };
    if parts.method != Method::POST || parts.uri.path() != "/" {
        return Ok(refuse(
            KmsError::new(
                ErrorCode::UnknownOperationException,
                format!("No operation at {} {}", parts.method, parts.uri.path()),
            ),
            &body,
        ));
    }

    let signed = SignedRequest {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &body,
    };
    let cred = match sigv4::verify(&signed, engine.region(), now_secs(), |akid| {
        engine.credential(akid)
    }) {
        Ok(c) => c,
        Err(e) => return Ok(refuse(e, &body)),
    };
    if op.is_empty() {
        return Ok(refuse(
            KmsError::new(
                ErrorCode::UnknownOperationException,
                "Missing or malformed X-Amz-Target header",
            ),
            &body,
        ));
    }

    let result = if Engine::is_hot(&op) {
        engine.handle(&cred.principal, &meta, &op, &body)
    } else {
        let engine = engine.clone();
        let meta = meta.clone();
        let op = op.clone();
        match tokio::task::spawn_blocking(move || engine.handle(&cred.principal, &meta, &op, &body))
            .await
        {
            Ok(r) => r,
            Err(e) => Err(KmsError::internal(e)),
        }
    };
    Ok(match result {
        Ok(body) => response(200, &meta.request_id, body),
        Err(e) => error_response(&meta.request_id, &e),
    })
}
