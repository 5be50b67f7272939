//! The test fixture: a server owning its data dir, and clients for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sdk_kms::error::ProvideErrorMetadata;
use keyhold_core::secret::SecretBytes;
use keyhold_hsm::FileRootKey;
use keyhold_kms::audit::chain::{AuditOptions, ChainedAuditLog};
use keyhold_kms::clock::{Clock, ManualClock, SystemClock};
use keyhold_kms::principal::{create_principal, Credential, Principal, PrincipalKind};
use keyhold_kms::regions::{Regions, Shared};
use keyhold_kms::Engine;
use keyhold_server::ServerOptions;
use keyhold_store::SqliteStore;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ACCOUNT: &str = "111122223333";
pub const OTHER_ACCOUNT: &str = "444455556666";
pub const REGION: &str = "us-east-1";

/// A running server with its own data dir.
pub struct TestServer {
    pub endpoint: String,
    pub addr: std::net::SocketAddr,
    pub engine: Arc<Engine>,
    pub clock: Arc<ManualClock>,
    pub dir: PathBuf,
    /// Credentials of a principal in another account.
    pub other: (String, String),
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// Every Region's engine (the engines reach one another through it).
    _regions: Arc<Regions>,
    task: Option<tokio::task::JoinHandle<()>>,
    _temp: Option<TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut s = Self::start_in(&dir).await;
        s._temp = Some(temp);
        s
    }

    /// Starts a server on an existing (or new) data dir.
    pub async fn start_in(dir: &Path) -> Self {
        Self::start_with(dir, ServerOptions::default()).await
    }

    /// Starts a server on a data dir with the given front-door options.
    pub async fn start_with(dir: &Path, options: ServerOptions) -> Self {
        Self::start_serving(dir, options, &[REGION]).await
    }

    /// Starts a server for several Regions (the first is the home Region) on a new data dir.
    pub async fn start_regions(regions: &[&str]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut s = Self::start_serving(&dir, ServerOptions::default(), regions).await;
        s._temp = Some(temp);
        s
    }

    async fn start_serving(dir: &Path, mut options: ServerOptions, regions: &[&str]) -> Self {
        let key_path = dir.join("root.key");
        let root = if key_path.exists() {
            FileRootKey::load(&key_path).unwrap()
        } else {
            FileRootKey::create(&key_path).unwrap()
        };
        let store = SqliteStore::open(&dir.join("keyhold.db")).unwrap();
        let other = create_principal(
            &store,
            &root,
            OTHER_ACCOUNT,
            &format!("other-{}", uuid::Uuid::new_v4().simple()),
            PrincipalKind::User,
            0,
        )
        .unwrap();
        let other = (
            other.access_key_id.clone(),
            String::from_utf8(other.secret_access_key.expose_secret().to_vec()).unwrap(),
        );
        let audit =
            ChainedAuditLog::open(&dir.join("audit"), &root, AuditOptions::default()).unwrap();
        let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
        let dev = Credential {
            principal: Principal {
                arn: format!("arn:aws:iam::{ACCOUNT}:user/dev"),
                account: ACCOUNT.into(),
                access_key_id: "test".into(),
            },
            secret: Arc::new(SecretBytes::new(b"test".to_vec())),
        };
        let names: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
        let served = Regions::new(
            &names,
            Shared {
                store: Arc::new(store),
                root: Arc::new(root),
                clock: clock.clone(),
                audit,
                dev: Some(dev),
            },
            |e| e,
        );
        let engine = served.home().clone();
        if served.len() > 1 {
            options.regions = Some(served.clone());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let e = engine.clone();
        let task = tokio::spawn(async move {
            keyhold_server::run(listener, e, options, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            endpoint: format!("{scheme}://{addr}"),
            addr,
            engine,
            clock,
            dir: dir.to_path_buf(),
            other,
            shutdown: Some(tx),
            task: Some(task),
            _temp: None,
            _regions: served,
        }
    }

    /// The injected clock's time, in seconds.
    pub fn clock_now_secs(&self) -> f64 {
        self.clock.now_ms() as f64 / 1000.0
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.engine.flush_usage().unwrap();
        self.engine.close_audit().unwrap();
    }

    /// An SDK client signing as the dev principal.
    pub fn client(&self) -> aws_sdk_kms::Client {
        self.client_as("test", "test")
    }

    /// An SDK client signing with the given credentials.
    pub fn client_as(&self, akid: &str, secret: &str) -> aws_sdk_kms::Client {
        self.client_in(akid, secret, REGION)
    }

    /// An SDK client for `region`, signing with the given credentials.
    pub fn client_in(&self, akid: &str, secret: &str, region: &str) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(akid, secret, None, None, "test"))
            .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }

    /// Events of the audit log, in order.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        keyhold_kms::audit::verify::query(&self.dir.join("audit"), &Default::default(), |line| {
            out.push(serde_json::from_slice(line).unwrap())
        })
        .unwrap();
        out
    }

    /// The raw text of every audit segment.
    pub fn audit_text(&self) -> String {
        let dir = self.dir.join("audit");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("segment-"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| std::fs::read_to_string(dir.join(n)).unwrap())
            .collect()
    }

    /// Sends a raw request signed by the dev principal (when `sign`) and returns the status
    /// and JSON body.
    pub async fn raw(
        &self,
        target: Option<&str>,
        body: &[u8],
        sign: bool,
    ) -> (u16, serde_json::Value) {
        let mut headers = vec![
            ("host".to_string(), self.addr.to_string()),
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
        ];
        if let Some(t) = target {
            headers.push(("x-amz-target".into(), format!("TrentService.{t}")));
        }
        if sign {
            headers.extend(sign_headers(
                &self.endpoint,
                &headers,
                body,
                "test",
                "test",
                REGION,
                SystemTime::now(),
            ));
        }
        self.send(&headers, body).await
    }

    /// Sends a request with exactly these headers (plus content-length).
    pub async fn send(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let mut req = String::from("POST / HTTP/1.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        ));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        send_raw(self.addr, &bytes).await
    }
}

/// Writes raw bytes, reads the whole response, returns status and JSON body.
pub async fn send_raw(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    parse_response(&out)
}

pub fn parse_response(out: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(out);
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // One chunk is all these small responses use.
        body.split("\r\n").nth(1).unwrap_or("").to_string()
    } else {
        body.to_string()
    };
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// SigV4 headers for a POST / with these headers and body, computed by `aws-sigv4`.
pub fn sign_headers(
    endpoint: &str,
    headers: &[(String, String)],
    body: &[u8],
    akid: &str,
    secret: &str,
    region: &str,
    time: SystemTime,
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    let identity = Credentials::new(akid, secret, None, None, "t").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kms")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        format!("{endpoint}/"),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let (hs, _) = instructions.into_parts();
    hs.iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect()
}

/// The AWS error code of an SDK error.
pub fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<none>").to_string()
}

/// Creates a symmetric key and returns its id.
pub async fn new_key(c: &aws_sdk_kms::Client) -> String {
    c.create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

/// Creates a key of `spec` and `usage` and returns its id.
pub async fn new_key_of(
    c: &aws_sdk_kms::Client,
    spec: aws_sdk_kms::types::KeySpec,
    usage: aws_sdk_kms::types::KeyUsageType,
) -> String {
    c.create_key()
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

pub fn blob(b: &[u8]) -> aws_sdk_kms::primitives::Blob {
    aws_sdk_kms::primitives::Blob::new(b)
}

/// Encrypts `plaintext` under `key` (no context) and returns the ciphertext blob.
pub async fn seal(
    c: &aws_sdk_kms::Client,
    key: impl Into<String>,
    plaintext: &[u8],
) -> aws_sdk_kms::primitives::Blob {
    c.encrypt()
        .key_id(key)
        .plaintext(blob(plaintext))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
}
