//! TLS with the private CA: the Rust SDK trusting only keyhold's CA, and renewal on the same
//! listener without a restart.

use std::sync::Arc;

use aws_credential_types::Credentials;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls;
use keyhold_hsm::{FileRootKey, RootKey};
use keyhold_server::tls::ca::{PrivateCa, Wrapper};
use keyhold_server::tls::{server_config, validity, CertStore};
use keyhold_server::ServerOptions;
use zeroize::Zeroizing;

use crate::common::*;

struct RootWrapper(FileRootKey);

impl Wrapper for RootWrapper {
    fn wrap(&self, secret: &[u8], label: &str) -> Result<Vec<u8>, String> {
        self.0
            .wrap(secret, label.as_bytes())
            .map_err(|e| e.to_string())
    }
    fn unwrap(&self, wrapped: &[u8], label: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        self.0
            .unwrap(wrapped, label.as_bytes())
            .map(|s| Zeroizing::new(s.expose_secret().to_vec()))
            .map_err(|e| e.to_string())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A TLS connection to `addr` (as `localhost`) trusting only `ca_pem`.
async fn tls_connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// The leaf certificate a fresh TLS connection to `addr` is served.
async fn served_leaf(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let tls = tls_connect(addr, ca_pem).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A Rust SDK client for `https://localhost:PORT` that trusts only `ca_pem`.
fn https_client(ca_pem: &str, port: u16) -> aws_sdk_kms::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(
            tls::TlsContext::builder()
                .with_trust_store(
                    tls::TrustStore::empty()
                        .with_native_roots(false)
                        .with_pem_certificate(ca_pem.as_bytes().to_vec()),
                )
                .build()
                .unwrap(),
        )
        .build_https();
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(format!("https://localhost:{port}"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .http_client(http)
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// A key policy that allows the account everything, but only over TLS.
fn tls_only_policy() -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "TLS only",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "true"}}
        }]
    })
    .to_string()
}

/// Creates a key with the TLS-only policy and tries to encrypt with it.
async fn encrypt_under_tls_only_policy(c: &aws_sdk_kms::Client) -> Result<(), String> {
    let key = c
        .create_key()
        .policy(tls_only_policy())
        .bypass_policy_lockout_safety_check(true)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    c.encrypt()
        .key_id(key)
        .plaintext(blob(b"x"))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| code(&e))
}

#[tokio::test]
async fn secure_transport_comes_from_the_connection() {
    // Over HTTPS the condition holds.
    let dir = tempfile::tempdir().unwrap();
    let root = RootWrapper(FileRootKey::create(&dir.path().join("root.key")).unwrap());
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let ca = PrivateCa::create(&dir.path().join("tls"), &names, 30, &root, now() - 60).unwrap();
    let store = Arc::new(CertStore::new(ca.server_cert(&root, now() - 60).unwrap()));
    let options = ServerOptions {
        tls: Some(server_config(store, None).unwrap()),
        ..ServerOptions::default()
    };
    let s = TestServer::start_with(dir.path(), options).await;
    let c = https_client(ca.cert_pem(), s.addr.port());
    assert_eq!(encrypt_under_tls_only_policy(&c).await, Ok(()));
    s.stop().await;
    // Over plain HTTP the same policy denies.
    let s = TestServer::start().await;
    assert_eq!(
        encrypt_under_tls_only_policy(&s.client()).await,
        Err("AccessDeniedException".to_string())
    );
    let events = s.audit_events();
    let denied = events
        .iter()
        .rfind(|e| e["eventName"] == "Encrypt")
        .unwrap();
    assert_eq!(denied["errorCode"], "AccessDeniedException");
    s.stop().await;
}

#[tokio::test]
async fn the_rust_sdk_trusts_the_private_ca_and_renewal_swaps_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let root = RootWrapper(FileRootKey::create(&dir.path().join("root.key")).unwrap());
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    // Issued two days ago with a three-day life: renewal is due now, and every certificate
    // involved is valid for a client using the real clock.
    let start = now() - 2 * 86_400 - 60;
    let ca = PrivateCa::create(&dir.path().join("tls"), &names, 3, &root, start).unwrap();
    let store = Arc::new(CertStore::new(ca.server_cert(&root, start).unwrap()));
    let options = ServerOptions {
        tls: Some(server_config(store.clone(), None).unwrap()),
        ..ServerOptions::default()
    };
    let s = TestServer::start_with(dir.path(), options).await;
    assert!(s.endpoint.starts_with("https://"));

    let c = https_client(ca.cert_pem(), s.addr.port());
    let k = new_key(&c).await;
    let ct = seal(&c, &k, b"over tls").await;

    // Not due yet: the same certificate. Past two thirds of its life: a new one, served on the
    // same listener to new connections, without a restart.
    let before = served_leaf(s.addr, ca.cert_pem()).await;
    let (nb, na) = validity(&before).unwrap();
    assert!(!ca.renew_if_due(&root, &store, nb + (na - nb) / 2).unwrap());
    assert_eq!(served_leaf(s.addr, ca.cert_pem()).await, before);
    assert!(now() >= nb + (na - nb) * 2 / 3);
    assert!(ca.renew_if_due(&root, &store, now()).unwrap());
    let after = served_leaf(s.addr, ca.cert_pem()).await;
    assert_ne!(after, before);
    let pt = c
        .decrypt()
        .ciphertext_blob(ct)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(pt.as_ref(), b"over tls");
    // The renewed certificate is on disk for the next start.
    let reloaded = PrivateCa::load(&dir.path().join("tls"), &root).unwrap();
    let cert = reloaded.server_cert(&root, now()).unwrap();
    assert_eq!(cert.end_entity_cert().unwrap().to_vec(), after);
    s.stop().await;
}

#[tokio::test]
async fn a_client_quiet_after_the_tls_handshake_is_closed() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let root = RootWrapper(FileRootKey::create(&dir.path().join("root.key")).unwrap());
    let names = vec!["localhost".to_string()];
    let ca = PrivateCa::create(&dir.path().join("tls"), &names, 30, &root, now() - 60).unwrap();
    let store = Arc::new(CertStore::new(ca.server_cert(&root, now() - 60).unwrap()));
    let options = ServerOptions {
        tls: Some(server_config(store, None).unwrap()),
        header_timeout: std::time::Duration::from_secs(1),
        ..ServerOptions::default()
    };
    let s = TestServer::start_with(dir.path(), options).await;
    // The handshake completes, then nothing is sent: the server closes the connection.
    let mut tls = tls_connect(s.addr, ca.cert_pem()).await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("the quiet TLS connection stayed open: {other:?}"),
    }
    s.stop().await;
}
