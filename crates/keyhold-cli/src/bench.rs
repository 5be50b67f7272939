//! `keyhold bench`: a load generator that sends real SigV4-signed KMS requests over keep-alive
//! connections (HTTP/1.1 or HTTP/2, TLS for https endpoints) and reports throughput, latency
//! percentiles and errors by code. With `--baseline` it first runs the same load against a bare
//! HTTP responder in this process (same listener kind, TLS setting and response size, no auth,
//! JSON or crypto) and prints the ratio of the two.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyhold_sigv4::{Scope, Signer};
use serde_json::{json, Value};

/// `keyhold bench` options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The server to load, e.g. `http://127.0.0.1:7080` or `https://localhost:7443`; by
    /// default `AWS_ENDPOINT_URL_KMS` or `AWS_ENDPOINT_URL`, as the AWS tools read them.
    #[arg(long, env = "AWS_ENDPOINT_URL_KMS")]
    endpoint: Option<String>,
    /// The operation to send.
    #[arg(long, value_enum, default_value = "encrypt")]
    op: Op,
    /// Key to use (id, ARN or alias); by default one of the right kind is created.
    #[arg(long)]
    key: Option<String>,
    /// Spread the requests over this many existing keys of the account (read with ListKeys)
    /// instead of one: with more keys than the server's key cache holds, requests miss the
    /// cache. Encrypt, GenerateDataKey and GenerateDataKeyWithoutPlaintext only.
    #[arg(long, conflicts_with = "key")]
    spread: Option<usize>,
    /// Size of the plaintext or message, in bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Concurrent connections, each sending one request at a time.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Open loop: send this many requests per second in all (spread over the connections) and
    /// measure each latency from when the request was due, not from when it could be sent.
    #[arg(long)]
    rate: Option<f64>,
    /// Use HTTP/2 (one stream at a time per connection) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// CA certificate (PEM) to trust for an https endpoint (default `AWS_CA_BUNDLE`).
    #[arg(long, env = "AWS_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// First run the same load against a bare responder and report the ratio.
    #[arg(long)]
    pub(crate) baseline: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Access key id to sign with.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "test")]
    pub(crate) access_key_id: String,
    /// Secret access key to sign with.
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        default_value = "test",
        hide_env_values = true
    )]
    pub(crate) secret_access_key: String,
    /// Region to sign for.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub(crate) region: String,
    /// Load the S3 gateway instead of KMS: PutObject (`put`) or GetObject (`get`) of
    /// --object-size bytes in the --sse mode; reports GB/s. With --baseline, the ratio to the
    /// same gateway with encryption off.
    #[arg(long, value_enum)]
    s3: Option<crate::bench_s3::S3Op>,
    /// The S3 endpoint (default `AWS_ENDPOINT_URL_S3`, else http://127.0.0.1:7090).
    #[arg(long, env = "AWS_ENDPOINT_URL_S3")]
    pub(crate) s3_endpoint: Option<String>,
    /// Encryption of the objects written (--s3).
    #[arg(long, value_enum, default_value = "s3")]
    pub(crate) sse: crate::bench_s3::Sse,
    /// Object size in bytes (--s3); a K, M or G suffix multiplies by 1024, 1024² or 1024³.
    #[arg(long, default_value = "1M", value_parser = byte_size)]
    pub(crate) object_size: u64,
    /// Load a gateway this command starts on a loopback port in a temporary data dir (--s3),
    /// instead of a running server.
    #[arg(long)]
    pub(crate) in_process: bool,
}

/// Parses `1048576`, `64K`, `1M`, `5G`.
fn byte_size(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 1048576, 64K, 1M, 5G)"))
}

/// Operations `keyhold bench` can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
    /// GenerateDataKey (AES_256).
    GenerateDataKey,
    /// GenerateDataKeyWithoutPlaintext (AES_256).
    GenerateDataKeyWithoutPlaintext,
    /// ReEncrypt to the same key.
    ReEncrypt,
    /// Sign (ECC_NIST_P256, ECDSA_SHA_256).
    Sign,
    /// Verify (ECC_NIST_P256, ECDSA_SHA_256).
    Verify,
    /// GenerateMac (HMAC_256, HMAC_SHA_256).
    GenerateMac,
    /// Encrypt, Decrypt and GenerateDataKey in turn.
    Mixed,
}

/// Where requests go and how they are signed.
struct Target {
    uri: Uri,
    host: String,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
    http2: bool,
    access_key_id: String,
    secret: String,
    region: String,
}

/// One keep-alive connection.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// What one run measured.
#[derive(Debug, Default)]
struct Report {
    requests: u64,
    seconds: f64,
    /// Latencies of successful requests.
    latencies: crate::latency::Latencies,
    errors: BTreeMap<String, u64>,
}

impl Report {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        self.latencies.quantile_ms(p)
    }

    fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "seconds": self.seconds,
            "throughput": self.throughput(),
            "latency_ms": {
                "p50": self.percentile_ms(0.50),
                "p90": self.percentile_ms(0.90),
                "p99": self.percentile_ms(0.99),
                "p99.9": self.percentile_ms(0.999),
                "max": self.percentile_ms(1.0),
            },
            "errors": self.errors,
        })
    }

    fn print(&self, what: &str) {
        println!(
            "{what}: {:.0} req/s ({} ok in {:.1} s); latency ms p50 {:.2} p90 {:.2} p99 {:.2} \
             p99.9 {:.2} max {:.2}; errors {:?}",
            self.throughput(),
            self.requests,
            self.seconds,
            self.percentile_ms(0.50),
            self.percentile_ms(0.90),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.percentile_ms(1.0),
            self.errors
        );
    }
}

/// Runs `keyhold bench`.
pub fn run(mut args: BenchArgs) -> Result<(), String> {
    if let Some(op) = args.s3 {
        if args.concurrency == 0 || args.duration.is_nan() || args.duration <= 0.0 {
            return Err("--concurrency and --duration must be positive".into());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        return rt.block_on(crate::bench_s3::run(&args, op));
    }
    if args.endpoint.is_none() {
        args.endpoint = Some(
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:7080".into()),
        );
    }
    if args.concurrency == 0 || args.duration.is_nan() || args.duration <= 0.0 {
        return Err("--concurrency and --duration must be positive".into());
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> Result<(), String> {
    let target = Arc::new(target(&args)?);
    let (op_name, requests, response_size) = prepare(&target, &args).await?;
    let requests = Arc::new(requests);
    let shape = Shape {
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.duration),
        // Each connection sends every `concurrency / rate` seconds.
        interval: args
            .rate
            .map(|r| Duration::from_secs_f64(args.concurrency as f64 / r)),
    };
    let baseline = if args.baseline {
        let (uri, tls) = baseline_server(&target, response_size).await?;
        let base = Arc::new(Target {
            uri: uri.clone(),
            host: uri.authority().map(|a| a.to_string()).unwrap_or_default(),
            tls,
            http2: target.http2,
            access_key_id: target.access_key_id.clone(),
            secret: target.secret.clone(),
            region: target.region.clone(),
        });
        let report = load(&base, &requests, &shape, "baseline").await;
        if !args.json {
            report.print("baseline");
        }
        Some(report)
    } else {
        None
    };
    let report = load(&target, &requests, &shape, op_name).await;
    let ratio = baseline
        .as_ref()
        .map(|b| report.throughput() / b.throughput().max(1e-9));
    if args.json {
        let mut out = json!({
            "op": op_name,
            "endpoint": args.endpoint,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "http2": target.http2,
            "payload": args.payload,
            "target": report.to_json(),
        });
        if let (Some(b), Some(r)) = (&baseline, ratio) {
            out["baseline"] = b.to_json();
            out["ratio"] = json!(r);
        }
        println!("{out}");
    } else {
        report.print(op_name);
        if let Some(r) = ratio {
            println!("ratio to the bare baseline: {r:.2}");
        }
    }
    Ok(())
}

/// An endpoint URL's parts: the URI, its `host:port`, and for `https` the name TLS checks.
pub(crate) fn endpoint_parts(
    endpoint: &str,
    what: &str,
) -> Result<(Uri, String, Option<rustls_pki_types::ServerName<'static>>), String> {
    let uri: Uri = endpoint
        .parse()
        .map_err(|e| format!("{what} {endpoint:?}: {e}"))?;
    let host = uri
        .authority()
        .ok_or_else(|| format!("{what} {endpoint:?} has no host"))?
        .to_string();
    let name = match uri.scheme_str() {
        Some("http") => None,
        Some("https") => {
            let name = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            Some(
                rustls_pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| format!("{what} host: {e}"))?,
            )
        }
        _ => return Err(format!("{what} must start with http:// or https://")),
    };
    Ok((uri, host, name))
}

fn target(args: &BenchArgs) -> Result<Target, String> {
    let endpoint = args.endpoint.as_deref().unwrap_or_default();
    let (uri, host, name) = endpoint_parts(endpoint, "--endpoint")?;
    let tls = match name {
        None => None,
        Some(name) => {
            let path = args
                .ca_bundle
                .as_ref()
                .ok_or("an https endpoint needs --ca-bundle (the CA to trust)")?;
            Some((client_config(roots_from_pem(path)?, args.http2)?, name))
        }
    };
    Ok(Target {
        uri,
        host,
        tls,
        http2: args.http2,
        access_key_id: args.access_key_id.clone(),
        secret: args.secret_access_key.clone(),
        region: args.region.clone(),
    })
}

/// The CA certificates of a PEM file, as trust roots.
pub(crate) fn roots_from_pem(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = keyhold_server::tls::certs_from_pem(&pem, "CA certificate")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable CA certificate", path.display()));
    }
    Ok(roots)
}

/// A TLS client configuration trusting `roots`, offering HTTP/2 or HTTP/1.1 by ALPN.
pub(crate) fn client_config(
    roots: rustls::RootCertStore,
    http2: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(config))
}

async fn connect(t: &Target) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(&t.host)
        .await
        .map_err(|e| format!("connect {}: {e}", t.host))?;
    let _ = tcp.set_nodelay(true);
    match &t.tls {
        None => handshake(TokioIo::new(tcp), t.http2).await,
        Some((config, name)) => {
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| {
                    format!(
                        "TLS with {}: {e} (trust the server's CA with --ca-bundle or \
                         AWS_CA_BUNDLE: `keyhold ca cert` prints it)",
                        t.host
                    )
                })?;
            handshake(TokioIo::new(tls), t.http2).await
        }
    }
}

async fn handshake<IO>(io: TokioIo<IO>, http2: bool) -> Result<Sender, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if http2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Sender::H1(sender))
    }
}

/// Signing keys by day, as SDKs cache them.
/// A signer for the target's credential.
fn signer(t: &Target) -> Signer {
    Signer::new(
        &t.access_key_id,
        t.secret.as_bytes(),
        Scope {
            service: "kms",
            region: &t.region,
        },
    )
}

/// A SigV4-signed `TrentService.<op>` request.
fn signed(
    t: &Target,
    signer: &mut Signer,
    op: &str,
    body: &Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let now = i64::try_from(now).map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| e.to_string());
    headers.insert("content-type", value("application/x-amz-json-1.1")?);
    headers.insert("host", value(&t.host)?);
    headers.insert("x-amz-target", value(&format!("TrentService.{op}"))?);
    let uri: Uri = "/"
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    signer
        .sign(&Method::POST, &uri, &mut headers, body, now)
        .map_err(|e| e.to_string())?;
    let mut builder = Request::builder().method(Method::POST);
    if t.http2 {
        // HTTP/2 carries the host as :authority.
        headers.remove("host");
        builder = builder.uri(t.uri.clone());
    } else {
        builder = builder.uri("/");
    }
    let mut req = builder
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Sends one request; the status and the whole response body.
async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), String> {
    let resp = match sender {
        Sender::H1(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(req).await
        }
        Sender::H2(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(req).await
        }
    }
    .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// One call during set-up: the parsed answer, or the error it gave.
async fn call(
    t: &Target,
    sender: &mut Sender,
    op: &str,
    body: Value,
) -> Result<(Value, usize), String> {
    let mut signer = signer(t);
    let req = signed(t, &mut signer, op, &Bytes::from(body.to_string()))?;
    let (status, bytes) = send(sender, req).await?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status != 200 {
        return Err(format!("{op}: HTTP {status}: {value}"));
    }
    Ok((value, bytes.len()))
}

/// The requests a run sends in turn: wire name and body.
type Requests = Vec<(&'static str, Bytes)>;

/// Creates the key and the fixed request bodies the run sends; returns a label for the run, the
/// requests and the mean size of their responses.
async fn prepare(t: &Target, args: &BenchArgs) -> Result<(&'static str, Requests, usize), String> {
    let mut s = connect(t).await?;
    let payload = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; args.payload]);
    if let Some(n) = args.spread {
        return spread_requests(t, &mut s, args.op, n, &payload).await;
    }
    let (spec, usage) = match args.op {
        Op::Sign | Op::Verify => ("ECC_NIST_P256", "SIGN_VERIFY"),
        Op::GenerateMac => ("HMAC_256", "GENERATE_VERIFY_MAC"),
        _ => ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
    };
    let key = match &args.key {
        Some(k) => k.clone(),
        None => {
            let (v, _) = call(
                t,
                &mut s,
                "CreateKey",
                json!({"KeySpec": spec, "KeyUsage": usage, "Description": "keyhold bench"}),
            )
            .await?;
            v["KeyMetadata"]["KeyId"]
                .as_str()
                .ok_or("CreateKey gave no KeyId")?
                .to_string()
        }
    };
    let ops = match args.op {
        Op::Mixed => vec![Op::Encrypt, Op::Decrypt, Op::GenerateDataKey],
        op => vec![op],
    };
    let mut requests = Vec::with_capacity(ops.len());
    let mut total = 0;
    for op in ops {
        let (name, body) = request_for(t, &mut s, op, &key, &payload).await?;
        // One request first: it must succeed, and it gives the response size for the baseline.
        let (_, size) = call(t, &mut s, name, body.clone()).await?;
        total += size;
        requests.push((name, Bytes::from(body.to_string())));
    }
    let label = if args.op == Op::Mixed {
        "Mixed"
    } else {
        requests[0].0
    };
    let size = total / requests.len();
    Ok((label, requests, size))
}

/// One `op` request on each of the first `n` keys that ListKeys returns.
async fn spread_requests(
    t: &Target,
    s: &mut Sender,
    op: Op,
    n: usize,
    payload: &str,
) -> Result<(&'static str, Requests, usize), String> {
    let name = match op {
        Op::Encrypt => "Encrypt",
        Op::GenerateDataKey => "GenerateDataKey",
        Op::GenerateDataKeyWithoutPlaintext => "GenerateDataKeyWithoutPlaintext",
        _ => {
            return Err("--spread works with encrypt, generate-data-key and \
                 generate-data-key-without-plaintext"
                .into())
        }
    };
    let mut requests = Vec::with_capacity(n);
    let mut marker: Option<String> = None;
    while requests.len() < n {
        let mut req = json!({"Limit": 1000});
        if let Some(m) = &marker {
            req["Marker"] = json!(m);
        }
        let (page, _) = call(t, s, "ListKeys", req).await?;
        for k in page["Keys"].as_array().into_iter().flatten() {
            let Some(id) = k["KeyId"].as_str() else {
                continue;
            };
            let body = if op == Op::Encrypt {
                json!({"KeyId": id, "Plaintext": payload})
            } else {
                json!({"KeyId": id, "KeySpec": "AES_256"})
            };
            requests.push((name, Bytes::from(body.to_string())));
        }
        marker = match page["NextMarker"].as_str() {
            Some(m) if page["Truncated"] == json!(true) => Some(m.to_string()),
            _ => break,
        };
    }
    requests.truncate(n);
    if requests.len() < n {
        return Err(format!(
            "--spread {n}: the account has only {} keys (keyhold admin seed-keys makes more)",
            requests.len()
        ));
    }
    let first = serde_json::from_slice(&requests[0].1).map_err(|e| e.to_string())?;
    let (_, size) = call(t, s, name, first).await?;
    Ok((name, requests, size))
}

/// The wire name and body of one `op` request on `key`, making what it needs first.
async fn request_for(
    t: &Target,
    s: &mut Sender,
    op: Op,
    key: &str,
    payload: &str,
) -> Result<(&'static str, Value), String> {
    Ok(match op {
        Op::Encrypt => ("Encrypt", json!({"KeyId": key, "Plaintext": payload})),
        Op::Decrypt | Op::ReEncrypt => {
            let (v, _) = call(t, s, "Encrypt", json!({"KeyId": key, "Plaintext": payload})).await?;
            let ct = v["CiphertextBlob"].clone();
            if op == Op::Decrypt {
                ("Decrypt", json!({"CiphertextBlob": ct, "KeyId": key}))
            } else {
                (
                    "ReEncrypt",
                    json!({"CiphertextBlob": ct, "DestinationKeyId": key}),
                )
            }
        }
        Op::GenerateDataKey => (
            "GenerateDataKey",
            json!({"KeyId": key, "KeySpec": "AES_256"}),
        ),
        Op::GenerateDataKeyWithoutPlaintext => (
            "GenerateDataKeyWithoutPlaintext",
            json!({"KeyId": key, "KeySpec": "AES_256"}),
        ),
        Op::Sign => (
            "Sign",
            json!({"KeyId": key, "Message": payload, "SigningAlgorithm": "ECDSA_SHA_256"}),
        ),
        Op::Verify => {
            let msg =
                json!({"KeyId": key, "Message": payload, "SigningAlgorithm": "ECDSA_SHA_256"});
            let (v, _) = call(t, s, "Sign", msg).await?;
            (
                "Verify",
                json!({"KeyId": key, "Message": payload, "SigningAlgorithm": "ECDSA_SHA_256",
                       "Signature": v["Signature"]}),
            )
        }
        Op::GenerateMac => (
            "GenerateMac",
            json!({"KeyId": key, "Message": payload, "MacAlgorithm": "HMAC_SHA_256"}),
        ),
        Op::Mixed => return Err("mixed is not one request".into()),
    })
}

/// How the load is sent.
struct Shape {
    /// Connections.
    concurrency: usize,
    /// For how long.
    duration: Duration,
    /// Open loop: the time between two sends on one connection.
    interval: Option<Duration>,
}

/// Sends `requests` in turn as `shape` says.
async fn load(t: &Arc<Target>, requests: &Arc<Requests>, shape: &Shape, label: &str) -> Report {
    let (concurrency, duration, interval) = (shape.concurrency, shape.duration, shape.interval);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (t, requests, done) = (t.clone(), requests.clone(), done.clone());
        // Connections start spread over the requests (over the keys, with --spread).
        let mut turn = worker * requests.len().div_ceil(concurrency).max(1);
        // Open-loop connections start staggered across one interval.
        let mut due = interval.map(|i| (start + i.mul_f64(worker as f64 / concurrency as f64), i));
        workers.push(tokio::spawn(async move {
            let mut latencies = crate::latency::Latencies::default();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut signer = signer(&t);
            let mut sender = None;
            while Instant::now() < deadline {
                let s = match &mut sender {
                    Some(s) => s,
                    None => match connect(&t).await {
                        Ok(s) => sender.insert(s),
                        Err(_) => {
                            *errors.entry("ConnectionError".into()).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let (op, body) = &requests[turn % requests.len()];
                turn += 1;
                let req = match signed(&t, &mut signer, op, body) {
                    Ok(r) => r,
                    Err(_) => {
                        *errors.entry("SigningError".into()).or_default() += 1;
                        break;
                    }
                };
                let sent = match due.as_mut() {
                    Some((at, step)) => {
                        tokio::time::sleep_until((*at).into()).await;
                        if *at >= deadline {
                            break;
                        }
                        let scheduled = *at;
                        *at += *step;
                        scheduled
                    }
                    None => Instant::now(),
                };
                match send(s, req).await {
                    Ok((200, _)) => {
                        let us = sent.elapsed().as_micros();
                        latencies.record(u64::try_from(us).unwrap_or(u64::MAX));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, bytes)) => {
                        *errors.entry(error_code(status, &bytes)).or_default() += 1;
                    }
                    Err(_) => {
                        *errors.entry("ConnectionError".into()).or_default() += 1;
                        sender = None;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let progress = {
        let done = done.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = done.load(Ordering::Relaxed);
                eprint!(
                    "\r{label}: {:>5.1} s, {now} ok, {} req/s   ",
                    start.elapsed().as_secs_f64(),
                    now - last
                );
                last = now;
            }
        })
    };
    let mut report = Report::default();
    for w in workers {
        if let Ok((latencies, errors)) = w.await {
            report.latencies.merge(&latencies);
            for (code, n) in errors {
                *report.errors.entry(code).or_default() += n;
            }
        }
    }
    progress.abort();
    eprintln!();
    report.seconds = start.elapsed().as_secs_f64();
    report.requests = report.latencies.count();
    report
}

/// The AWS error code of an error response (`__type` without its namespace), else the status.
fn error_code(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["__type"].as_str().map(str::to_string))
        .map(|t| t.rsplit('#').next().unwrap_or(&t).to_string())
        .unwrap_or_else(|| format!("HTTP{status}"))
}

/// Starts the bare responder on a loopback port: `response_size` bytes of JSON for any request,
/// over TLS (a throwaway self-signed certificate) when the target is https.
async fn baseline_server(
    target: &Target,
    response_size: usize,
) -> Result<
    (
        Uri,
        Option<(
            Arc<rustls::ClientConfig>,
            rustls_pki_types::ServerName<'static>,
        )>,
    ),
    String,
> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut body = vec![b' '; response_size.max(2)];
    body[0] = b'{';
    body[response_size.max(2) - 1] = b'}';
    let body = Bytes::from(body);
    let (acceptor, client) = if target.tls.is_some() {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .map_err(|e| e.to_string())?;
        let der = cert.cert.der().clone();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .map_err(|e| e.to_string())?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1".to_string())
            .map_err(|e| e.to_string())?;
        (
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))),
            Some((client_config(roots, target.http2)?, name)),
        )
    } else {
        (None, None)
    };
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (body, acceptor) = (body.clone(), acceptor.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut resp = hyper::Response::new(Full::new(body));
                        resp.headers_mut().insert(
                            "content-type",
                            HeaderValue::from_static("application/x-amz-json-1.1"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    let scheme = if client.is_some() { "https" } else { "http" };
    let uri: Uri = format!("{scheme}://127.0.0.1:{}/", addr.port())
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    Ok((uri, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_drop_the_namespace() {
        assert_eq!(
            error_code(400, br#"{"__type":"com.amazonaws.kms#NotFoundException"}"#),
            "NotFoundException"
        );
        assert_eq!(
            error_code(400, br#"{"__type":"ValidationException"}"#),
            "ValidationException"
        );
        assert_eq!(error_code(502, b"bad gateway"), "HTTP502");
    }

    #[test]
    fn throughput_is_requests_per_second() {
        let r = Report {
            requests: 100,
            seconds: 2.0,
            ..Report::default()
        };
        assert_eq!(r.throughput(), 50.0);
    }
}
