//! keyhold-server: the front door. HTTP, SigV4 and the AWS JSON 1.1 wire; the engine does the
//! rest.
//!
//! # Layout
//! - [`run`]: serves the KMS API on a bound listener until a shutdown future resolves, then
//!   drains; [`serve`]: the same connection handling for any front door's handler.
//! - `handler`: one request: framing limits, SigV4 (keyhold-sigv4), the AWS JSON 1.1 codec
//!   (the operation name and body parsed once into a typed request), `Engine::call`.
//! - `limits`: the idle bound on every connection's I/O and the per-address connection cap.
//! - [`wire`]: the JSON error bodies (the error table is `ErrorCode::http_status`).
//! - [`tls`]: rustls configuration, the swappable certificate, and the private CA.
//! - [`spawn_maintenance_task`]: destroys keys whose deletion window has passed and performs
//!   due automatic rotations.
#![forbid(unsafe_code)]

mod handler;
mod limits;
pub mod tls;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use keyhold_kms::Engine;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits and transport of the HTTP front door.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most connections served at once; further connections wait to be accepted.
    pub max_connections: usize,
    /// TLS configuration; plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Requests worked on at once; more are answered `ThrottlingException` at once rather
    /// than queued without bound. A request takes its slot only once its body has arrived.
    pub max_inflight: usize,
    /// Most connections from one client address at once (0: no cap), so one address cannot
    /// hold the whole connection cap.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a complete HTTP/1 request head, counted from the
    /// connection's start or the end of the previous response: a keep-alive connection idle
    /// for longer is closed.
    pub header_timeout: Duration,
    /// How long any connection may go without a byte read or written (TLS handshakes and
    /// HTTP/2 included) before it is closed.
    pub idle_timeout: Duration,
    /// How long a client may take to send a request body.
    pub body_timeout: Duration,
    /// Serves the Prometheus text of this recorder at `GET /metrics` (unauthenticated, as
    /// Prometheus scrapes); not served when `None`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Other front doors served on the KMS listener (the web console under its paths, the
    /// volume service for requests signed for `ec2`), asked in order.
    pub mounted: Vec<Arc<dyn Mounted>>,
    /// Every Region served, when there are several: a KMS request goes to the engine of the
    /// Region its SigV4 scope names (a Region not served is refused by the first engine, as
    /// one Region's server refuses another's).
    pub regions: Option<Arc<keyhold_kms::regions::Regions>>,
}

/// The answer of a [`Mounted`] front door.
pub type MountedFuture = std::pin::Pin<
    Box<dyn Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send>,
>;

/// A front door served on the KMS listener for requests of its own (the console's paths under
/// `/console/`, requests signed for another service): its requests never reach the KMS wire
/// protocol, and the KMS API's requests never reach it.
pub trait Mounted: std::fmt::Debug + Send + Sync {
    /// True for the requests it serves (by path and headers; the body is not read yet).
    fn owns(&self, path: &str, headers: &http::HeaderMap) -> bool;
    /// Answers one request.
    fn handle(&self, conn: Connection, req: http::Request<hyper::body::Incoming>) -> MountedFuture;
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_connections: 4096,
            tls: None,
            max_inflight: 1024,
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(10),
            metrics: None,
            mounted: Vec::new(),
            regions: None,
        }
    }
}

/// What a handler knows of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// True for a TLS connection (`aws:SecureTransport`).
    pub tls: bool,
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the KMS API on `listener` until `shutdown` resolves, then stops accepting and waits
/// (at most 10 s) for in-flight requests to finish.
pub async fn run(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let inflight = Arc::new(Semaphore::new(options.max_inflight.max(1)));
    let opts = Arc::new(options.clone());
    serve(listener, &options, shutdown, move |conn, req| {
        handler::handle(engine.clone(), opts.clone(), inflight.clone(), conn, req)
    })
    .await
}

/// Serves HTTP/1.1 and HTTP/2 (over TLS when `options.tls` is set) on `listener` with
/// `handler` until `shutdown` resolves, with the connection limits of `options` (the total
/// and per-address caps, the handshake, head and idle bounds); then stops accepting and waits
/// (at most 10 s) for in-flight requests to finish. Every front door (KMS, S3) runs on it.
pub async fn serve<H, Fut, B, E>(
    listener: TcpListener,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(Connection, http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = Arc::new(Semaphore::new(options.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let per_address = limits::PerAddress::new(options.max_connections_per_ip);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // One address may not hold more than its share of the connection cap.
        let Some(slot) = per_address.take(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = limits::IdleIo::new(stream, options.idle_timeout, Some(options.idle_timeout));
        let header_timeout = options.header_timeout;
        let conn = Connection {
            peer,
            tls: options.tls.is_some(),
        };
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| handler(conn, req));
        let builder = builder.clone();
        match &options.tls {
            None => {
                // The first byte of a request is due within the head bound.
                let stream = limits::IdleIo::new(stream, header_timeout, None);
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop((permit, slot));
                });
            }
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    // After the handshake, the first byte of a request is due within the head
                    // bound.
                    let tls = limits::IdleIo::new(tls, header_timeout, None);
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop((permit, slot));
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10 s; closing");
        }
    }
    Ok(())
}

/// The answer to the unauthenticated operator paths (`/health`, `/health/live`,
/// `/health/ready`, `/metrics`), or `None` for any other request.
pub fn operator_response(
    engine: &Engine,
    metrics: Option<&metrics_exporter_prometheus::PrometheusHandle>,
    method: &http::Method,
    path: &str,
) -> Option<http::Response<http_body_util::Full<bytes::Bytes>>> {
    if method != http::Method::GET {
        return None;
    }
    let (status, content_type, body) = match path {
        "/health" | "/health/live" => (200, "application/json", "{\"status\":\"ok\"}".to_string()),
        "/health/ready" => match engine.ready() {
            Ok(()) => (
                200,
                "application/json",
                "{\"status\":\"ready\"}".to_string(),
            ),
            Err(why) => (
                503,
                "application/json",
                serde_json::json!({"status": "not ready", "reason": why}).to_string(),
            ),
        },
        "/metrics" => (200, "text/plain; version=0.0.4", metrics?.render()),
        _ => return None,
    };
    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Some(r)
}

/// Every `every`, for each Region's engine (the first is the home Region's): deletes imported
/// key material past its ValidTo, destroys keys whose deletion window has passed, performs due
/// automatic rotations, syncs custom key store connections, writes the batched key last-use
/// records; and (once, by the first) audits
/// the administrative actions taken meanwhile, until the runtime stops.
pub fn spawn_maintenance_task(
    engines: Vec<Arc<Engine>>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let engines = engines.clone();
            let done = tokio::task::spawn_blocking(move || {
                let mut deleted = Ok(0);
                let mut rotated = Ok(0);
                for (i, e) in engines.iter().enumerate() {
                    if let Err(err) = e.sync_key_stores() {
                        tracing::warn!(error = %err, "custom key store connections not synced");
                    }
                    if let Err(err) = e.flush_usage() {
                        tracing::warn!(error = %err, "key last-use records not written yet");
                    }
                    if i == 0 {
                        if let Err(err) = e.record_admin_events() {
                            tracing::warn!(error = %err, "administrative actions not audited yet");
                        }
                    }
                    deleted = match (deleted, e.run_due_deletions()) {
                        (Ok(a), Ok(b)) => Ok(a + b),
                        (Err(x), _) | (_, Err(x)) => Err(x),
                    };
                    rotated = match (rotated, e.run_due_rotations()) {
                        (Ok(a), Ok(b)) => Ok(a + b),
                        (Err(x), _) | (_, Err(x)) => Err(x),
                    };
                }
                (deleted, rotated)
            })
            .await;
            match done {
                Ok((deleted, rotated)) => {
                    match deleted {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(deleted = n, "scheduled key deletions done"),
                        Err(e) => tracing::warn!(error = %e, "scheduled key deletion failed"),
                    }
                    match rotated {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(rotated = n, "automatic key rotations done"),
                        Err(e) => tracing::warn!(error = %e, "automatic key rotation failed"),
                    }
                }
                Err(e) => tracing::error!(error = %e, "maintenance task panicked"),
            }
        }
    })
}
