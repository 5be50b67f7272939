//! What an operator's tools read without credentials: liveness, readiness, Prometheus metrics.

use std::sync::{Arc, OnceLock};

use keyhold_kms::audit::AuditSink;
use keyhold_server::ServerOptions;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::common::*;

/// The process's recorder, installed once for every test of this binary.
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.01, 0.1, 1.0])
                .unwrap()
                .install_recorder()
                .unwrap()
        })
        .clone()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test]
async fn metrics_count_requests_by_operation_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(
        dir.path(),
        ServerOptions {
            metrics: Some(recorder()),
            ..ServerOptions::default()
        },
    )
    .await;
    let c = s.client();
    let key = new_key(&c).await;
    c.encrypt()
        .key_id(&key)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap();
    c.describe_key()
        .key_id("alias/missing")
        .send()
        .await
        .unwrap_err();
    let (status, text) = get(s.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"keyhold_requests_total{operation="Encrypt",code="OK"}"#),
        "{text}"
    );
    assert!(text.contains(r#"operation="DescribeKey",code="NotFoundException""#));
    assert!(text.contains("keyhold_request_duration_seconds_bucket"));
    assert!(text.contains("keyhold_key_cache_total"));
    assert!(text.contains("keyhold_store_seconds"));
    // Labels never carry what a client sent.
    s.raw(Some("NoSuchOperation"), b"{}", true).await;
    let (_, text) = get(s.addr, "/metrics").await;
    assert!(!text.contains("NoSuchOperation"));
    assert!(text.contains(r#"operation="unknown""#));
    assert_eq!(get(s.addr, "/health/live").await.0, 200);
    assert_eq!(
        get(s.addr, "/health/ready").await,
        (200, r#"{"status":"ready"}"#.into())
    );
    s.stop().await;
}

/// An audit sink that reports itself broken.
struct Broken;

impl AuditSink for Broken {
    fn record(&self, _event: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("disk full"))
    }

    fn failure(&self) -> Option<String> {
        Some("disk full".into())
    }
}

#[test]
fn ready_fails_while_the_audit_log_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = keyhold_hsm::FileRootKey::create(&dir.path().join("root.key")).unwrap();
    let store = keyhold_store::SqliteStore::open(&dir.path().join("db")).unwrap();
    let engine = keyhold_kms::Engine::new(
        REGION,
        Arc::new(store),
        Arc::new(root),
        Arc::new(keyhold_kms::clock::SystemClock),
        Arc::new(Broken),
        None,
    );
    let get = |path: &str| {
        keyhold_server::operator_response(&engine, None, &http::Method::GET, path)
            .map(|r| r.status().as_u16())
    };
    assert_eq!(get("/health/ready"), Some(503));
    assert_eq!(get("/health/live"), Some(200));
    assert_eq!(get("/health"), Some(200));
    // No recorder given: no metrics path.
    assert_eq!(get("/metrics"), None);
    assert_eq!(get("/other"), None);
    assert!(
        keyhold_server::operator_response(&engine, None, &http::Method::POST, "/health").is_none()
    );
}
