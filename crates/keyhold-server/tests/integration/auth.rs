//! SigV4 authentication against raw requests signed by `aws-sigv4`.

use std::time::{Duration, SystemTime};

use crate::common::*;

fn base_headers(s: &TestServer) -> Vec<(String, String)> {
    vec![
        ("host".into(), s.addr.to_string()),
        ("content-type".into(), "application/x-amz-json-1.1".into()),
        ("x-amz-target".into(), "TrentService.ListKeys".into()),
    ]
}

async fn signed_with(
    s: &TestServer,
    akid: &str,
    secret: &str,
    region: &str,
    time: SystemTime,
    body: &[u8],
    sent_body: &[u8],
) -> (u16, serde_json::Value) {
    let mut h = base_headers(s);
    h.extend(sign_headers(
        &s.endpoint,
        &h,
        body,
        akid,
        secret,
        region,
        time,
    ));
    s.send(&h, sent_body).await
}

#[tokio::test]
async fn a_correctly_signed_request_is_accepted() {
    let s = TestServer::start().await;
    let (status, body) =
        signed_with(&s, "test", "test", REGION, SystemTime::now(), b"{}", b"{}").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["Keys"].is_array());
    s.stop().await;
}

#[tokio::test]
async fn unknown_access_key_is_unrecognized_client() {
    let s = TestServer::start().await;
    let (status, body) = signed_with(
        &s,
        "AKIANOBODY",
        "x",
        REGION,
        SystemTime::now(),
        b"{}",
        b"{}",
    )
    .await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("UnrecognizedClientException"))
    );
    s.stop().await;
}

#[tokio::test]
async fn wrong_secret_is_invalid_signature() {
    let s = TestServer::start().await;
    let (status, body) =
        signed_with(&s, "test", "wrong", REGION, SystemTime::now(), b"{}", b"{}").await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("InvalidSignatureException"))
    );
    s.stop().await;
}

#[tokio::test]
async fn body_changed_after_signing_is_invalid_signature() {
    let s = TestServer::start().await;
    let (_, body) = signed_with(&s, "test", "test", REGION, SystemTime::now(), b"{}", b"{ }").await;
    assert_eq!(body["__type"], "InvalidSignatureException");
    s.stop().await;
}

#[tokio::test]
async fn stale_or_future_dates_are_refused() {
    let s = TestServer::start().await;
    let old = SystemTime::now() - Duration::from_secs(16 * 60);
    let (_, body) = signed_with(&s, "test", "test", REGION, old, b"{}", b"{}").await;
    assert_eq!(body["__type"], "InvalidSignatureException");
    let future = SystemTime::now() + Duration::from_secs(16 * 60);
    let (_, body) = signed_with(&s, "test", "test", REGION, future, b"{}", b"{}").await;
    assert_eq!(body["__type"], "InvalidSignatureException");
    // Within the window is fine.
    let recent = SystemTime::now() - Duration::from_secs(10 * 60);
    let (status, _) = signed_with(&s, "test", "test", REGION, recent, b"{}", b"{}").await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn another_region_is_invalid_signature() {
    let s = TestServer::start().await;
    let (_, body) = signed_with(
        &s,
        "test",
        "test",
        "eu-west-1",
        SystemTime::now(),
        b"{}",
        b"{}",
    )
    .await;
    assert_eq!(body["__type"], "InvalidSignatureException");
    s.stop().await;
}

#[tokio::test]
async fn missing_authorization_is_missing_token() {
    let s = TestServer::start().await;
    let (status, body) = s.raw(Some("ListKeys"), b"{}", false).await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (403, Some("MissingAuthenticationTokenException"))
    );
    s.stop().await;
}

#[tokio::test]
async fn malformed_authorization_is_incomplete_signature() {
    let s = TestServer::start().await;
    for auth in [
        "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kms/aws4_request",
        "AWS4-HMAC-SHA256 Credential=test, SignedHeaders=host, Signature=00",
        "Bearer abc",
    ] {
        let mut h = base_headers(&s);
        h.push(("authorization".into(), auth.into()));
        h.push(("x-amz-date".into(), "20260101T000000Z".into()));
        let (status, body) = s.send(&h, b"{}").await;
        assert_eq!(
            (status, body["__type"].as_str()),
            (400, Some("IncompleteSignatureException")),
            "{auth}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn refused_calls_are_audited_too() {
    let s = TestServer::start().await;
    let _ = signed_with(
        &s,
        "AKIANOBODY",
        "x",
        REGION,
        SystemTime::now(),
        b"{}",
        b"{}",
    )
    .await;
    let _ = s.raw(Some("ListKeys"), b"{}", false).await;
    let events = s.audit_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["errorCode"], "UnrecognizedClientException");
    assert_eq!(events[0]["userIdentity"]["accessKeyId"], "AKIANOBODY");
    assert_eq!(
        events[1]["errorCode"],
        "MissingAuthenticationTokenException"
    );
    s.stop().await;
}

#[tokio::test]
async fn principals_in_other_accounts_sign_their_own_requests() {
    let s = TestServer::start().await;
    let c = s.client_as(&s.other.0, &s.other.1);
    let md = c.create_key().send().await.unwrap().key_metadata.unwrap();
    assert_eq!(md.aws_account_id.as_deref(), Some(OTHER_ACCOUNT));
    s.stop().await;
}

/// Headers of a ListKeys request signed by the dev principal.
fn signed_list_keys(s: &TestServer) -> Vec<(String, String)> {
    let mut h = base_headers(s);
    h.extend(sign_headers(
        &s.endpoint,
        &h,
        b"{}",
        "test",
        "test",
        REGION,
        SystemTime::now(),
    ));
    h
}

#[tokio::test]
async fn two_authorization_headers_are_an_incomplete_signature() {
    let s = TestServer::start().await;
    let mut h = signed_list_keys(&s);
    let auth = h
        .iter()
        .find(|(k, _)| k == "authorization")
        .unwrap()
        .clone();
    h.push(auth);
    let (status, body) = s.send(&h, b"{}").await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("IncompleteSignatureException")),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_repeated_credential_is_an_incomplete_signature() {
    let s = TestServer::start().await;
    let mut h = signed_list_keys(&s);
    let auth = h.iter_mut().find(|(k, _)| k == "authorization").unwrap();
    let credential = auth
        .1
        .split(", ")
        .find(|p| p.contains("Credential="))
        .unwrap()
        .trim_start_matches("AWS4-HMAC-SHA256 ")
        .to_string();
    auth.1 = auth.1.replacen(
        &credential,
        &format!("{credential}, {}", credential.replace("test/", "other/")),
        1,
    );
    let (status, body) = s.send(&h, b"{}").await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("IncompleteSignatureException")),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_session_token_is_an_unrecognized_client() {
    let s = TestServer::start().await;
    // Signed with the token, as an SDK with session credentials does.
    let mut h = base_headers(&s);
    h.push(("x-amz-security-token".into(), "FwoGZXIvYXdzEBYaDH".into()));
    h.extend(sign_headers(
        &s.endpoint,
        &h,
        b"{}",
        "test",
        "test",
        REGION,
        SystemTime::now(),
    ));
    let (status, body) = s.send(&h, b"{}").await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("UnrecognizedClientException")),
        "{body}"
    );
    s.stop().await;
}
