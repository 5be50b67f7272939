//! The web console called in-process on a test server's engine: session expiry and the
//! sign-in's audit, which a browser cannot reach in test time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use keyhold_console::{Console, ConsoleOptions};

use crate::common::*;

fn peer() -> std::net::SocketAddr {
    "127.0.0.1:5555".parse().unwrap()
}

async fn send(
    console: &Arc<Console>,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &str,
) -> (u16, http::HeaderMap, String) {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("keyhold_console={c}"));
    }
    if method == "POST" {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let req = req.body(Full::new(Bytes::from(form.to_string()))).unwrap();
    let r = console.handle(peer(), false, req).await;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn session_cookie(h: &http::HeaderMap) -> String {
    let v = h.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        v.contains("HttpOnly") && v.contains("SameSite=Strict"),
        "{v}"
    );
    assert!(!v.contains("Secure"), "plain HTTP: {v}");
    v.split(';')
        .next()
        .unwrap()
        .trim_start_matches("keyhold_console=")
        .to_string()
}

#[tokio::test]
async fn an_idle_session_expires_and_asks_for_a_new_sign_in() {
    let s = TestServer::start().await;
    let console = Console::new(s.engine.clone(), ConsoleOptions::default());
    let (status, h, _) = send(
        &console,
        "POST",
        "/console/signin",
        None,
        "access_key_id=test&secret_access_key=test",
    )
    .await;
    assert_eq!(status, 303);
    let id = session_cookie(&h);
    let (status, _, body) = send(&console, "GET", "/console/keys", Some(&id), "").await;
    assert_eq!(status, 200, "{body}");
    console
        .sessions()
        .age(&id, keyhold_console::session::IDLE + Duration::from_secs(1));
    let (status, h, body) = send(&console, "GET", "/console/keys", Some(&id), "").await;
    assert_eq!(status, 401);
    assert!(body.contains("Your session expired"), "{body}");
    assert!(h
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // The expired id is gone for good.
    let (status, h, _) = send(&console, "GET", "/console/keys", Some(&id), "").await;
    assert_eq!(status, 303);
    assert_eq!(h.get("location").unwrap(), "/console/signin");
    s.stop().await;
}

#[tokio::test]
async fn failed_sign_ins_are_slowed_audited_and_answered_alike() {
    let s = TestServer::start().await;
    let console = Console::new(s.engine.clone(), ConsoleOptions::default());
    // A wrong secret: refused, slowed.
    let started = std::time::Instant::now();
    let (status, _, body) = send(
        &console,
        "POST",
        "/console/signin",
        None,
        "access_key_id=test&secret_access_key=nope",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // An unknown access key id, and one far too long: the same answer.
    for id in ["AKIANOBODY", &"A".repeat(5000)] {
        let (status, _, _) = send(
            &console,
            "POST",
            "/console/signin",
            None,
            &format!("access_key_id={id}&secret_access_key=x"),
        )
        .await;
        assert_eq!(status, 401);
    }
    // In the audit log as failed ConsoleLogin events (the claimed id cut to 128 characters).
    let q = keyhold_kms::audit::verify::Query {
        event_name: Some("ConsoleLogin".into()),
        ..Default::default()
    };
    let mut events = Vec::new();
    for _ in 0..50 {
        events.clear();
        keyhold_kms::audit::verify::query(&s.dir.join("audit"), &q, |l| {
            events.push(serde_json::from_slice::<serde_json::Value>(l).unwrap())
        })
        .unwrap();
        if events.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 3, "{events:?}");
    for e in &events {
        assert_eq!(e["eventSource"], "signin.amazonaws.com");
        assert_eq!(e["errorCode"], "Failed authentication");
        assert!(e["userIdentity"]["accessKeyId"].as_str().unwrap().len() <= 128);
        assert!(
            !e.to_string().contains("nope"),
            "no secret in the event: {e}"
        );
    }
    s.stop().await;
}
