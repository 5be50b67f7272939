//! Hostile clients: connections that open and go quiet, heads and bodies sent a byte at a
//! time, and unauthenticated requests meant to fill the audit log. Each test holds the
//! attack while a real client is served. Waits are bounds for a hang, not speed targets.

use std::net::SocketAddr;
use std::time::Duration;

use keyhold_server::ServerOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;

/// A connection to `addr` from the loopback address `from` (127.0.0.0/8 is all loopback).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// True when the server closes `conn` (EOF or reset) within `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn server(options: ServerOptions) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), options).await;
    (dir, s)
}

/// A real request must be answered while the attack goes on.
async fn served(s: &TestServer) {
    let listed = tokio::time::timeout(Duration::from_secs(10), s.client().list_keys().send())
        .await
        .expect("a real client was not served while the attack held its connections");
    listed.unwrap();
}

#[tokio::test]
async fn idle_connections_from_one_address_cannot_lock_others_out() {
    let (_dir, s) = server(ServerOptions {
        max_connections: 32,
        max_connections_per_ip: 8,
        header_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        ..ServerOptions::default()
    })
    .await;
    // More quiet connections from one address than the whole cap.
    let mut attack = Vec::new();
    for _ in 0..40 {
        attack.push(connect_from("127.0.0.2", s.addr).await);
    }
    served(&s).await;
    // Beyond its share, the address's connections were closed at once.
    let mut closed = 0;
    for c in &mut attack {
        if closed_within(c, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(closed >= 32, "only {closed} of 40 closed");
    s.stop().await;
}

#[tokio::test]
async fn a_request_head_must_arrive_in_time() {
    let (_dir, s) = server(ServerOptions {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        ..ServerOptions::default()
    })
    .await;
    // Nothing at all.
    let mut quiet = connect_from("127.0.0.3", s.addr).await;
    // A head one byte every 200 ms: never complete within the bound.
    let mut slow = connect_from("127.0.0.3", s.addr).await;
    let trickle = tokio::spawn(async move {
        for b in b"POST / HTTP/1.1\r\nhost: x\r\nx-amz-target: TrentService.ListKeys\r\n" {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slow
    });
    assert!(closed_within(&mut quiet, Duration::from_secs(5)).await);
    let mut slow = trickle.await.unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await);
    served(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn a_connection_that_goes_quiet_is_closed() {
    let (_dir, s) = server(ServerOptions {
        header_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(1),
        ..ServerOptions::default()
    })
    .await;
    let mut quiet = connect_from("127.0.0.4", s.addr).await;
    assert!(closed_within(&mut quiet, Duration::from_secs(5)).await);
    s.stop().await;
}

#[tokio::test]
async fn slow_bodies_hold_no_in_flight_slot() {
    let (_dir, s) = server(ServerOptions {
        max_inflight: 2,
        body_timeout: Duration::from_secs(2),
        ..ServerOptions::default()
    })
    .await;
    // Six requests whose bodies never finish arriving.
    let mut slow = Vec::new();
    for _ in 0..6 {
        let mut c = connect_from("127.0.0.5", s.addr).await;
        c.write_all(
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-amz-json-1.1\r\n\
              x-amz-target: TrentService.ListKeys\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
        slow.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Real work is not throttled while they trickle.
    served(&s).await;
    // And each slow sender is answered 408 and closed once its deadline passes.
    for c in &mut slow {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "slow body not cut off");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("RequestTimeoutException"), "{text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn unauthenticated_requests_add_a_small_fixed_amount_of_audit() {
    let (_dir, s) = server(ServerOptions::default()).await;
    // The event segments (digests are written on their own schedule).
    let audit_bytes = |s: &TestServer| {
        std::fs::read_dir(s.dir.join("audit"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with("segment-"))
            .map(|e| e.metadata().unwrap().len())
            .sum::<u64>()
    };
    let mut grew = Vec::new();
    for size in [10usize, 1_000_000] {
        // The same refused request (no credentials; then a bad signature), its body 10 bytes or
        // about 1 MiB.
        let body = format!(r#"{{"KeyId":"{}"}}"#, "k".repeat(size));
        for sign in [false, true] {
            let before = audit_bytes(&s);
            // Long headers too: they are cut before they reach the log.
            let mut headers = vec![
                ("host".to_string(), s.addr.to_string()),
                (
                    "content-type".to_string(),
                    "application/x-amz-json-1.1".to_string(),
                ),
                ("x-amz-target".into(), "TrentService.DescribeKey".into()),
                ("user-agent".into(), "u".repeat(size.min(8000))),
            ];
            if sign {
                headers.extend(sign_headers(
                    &s.endpoint,
                    &headers,
                    body.as_bytes(),
                    "test",
                    "wrong-secret",
                    REGION,
                    std::time::SystemTime::now(),
                ));
            }
            let (status, v) = s.send(&headers, body.as_bytes()).await;
            assert!(status == 403 || status == 400, "{status} {v}");
            // The event is written before the response is sent.
            grew.push(audit_bytes(&s) - before);
        }
    }
    // Each refusal adds well under 2 KiB, whatever the body's size.
    for g in &grew {
        assert!(*g < 2048, "{grew:?}");
    }
    let events = s.audit_events();
    for e in events.iter().filter(|e| e["eventName"] == "DescribeKey") {
        assert!(e["requestParameters"].is_null(), "{e}");
    }
    // An unknown, very long operation name is cut too.
    let long_target = format!("TrentService.{}", "X".repeat(8000));
    let (status, _) = s
        .send(
            &[
                ("host".to_string(), s.addr.to_string()),
                ("x-amz-target".to_string(), long_target),
            ],
            b"{}",
        )
        .await;
    assert_eq!(status, 403);
    let last = s.audit_events().pop().unwrap();
    assert!(last.to_string().len() < 2048, "{}", last.to_string().len());
    s.stop().await;
}
