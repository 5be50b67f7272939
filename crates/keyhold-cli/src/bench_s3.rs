//! `keyhold bench --s3 put|get`: loads the S3 gateway with PutObject or GetObject of one object
//! size in one encryption mode, over keep-alive HTTP/1.1 connections (SigV4, unsigned payload
//! as SDKs send over TLS), and reports GB/s. Bodies are streamed from a 1 MiB buffer, so the
//! load generator's memory does not grow with the object size.
//!
//! `--in-process` runs the load against a gateway this command starts on a loopback port in a
//! temporary data dir (dev credential); `--baseline` first runs the same load against such a
//! gateway with encryption off (the only place that mode exists) and prints the ratio.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use keyhold_sigv4::{Scope, Signer};
use serde_json::json;

use crate::bench::BenchArgs;

/// The S3 operation a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum S3Op {
    /// PutObject of a fresh key each time.
    Put,
    /// GetObject of one object, whole.
    Get,
}

/// The encryption mode of the objects written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS under the account's `aws/s3` key.
    Kms,
    /// SSE-KMS with S3 Bucket Keys (set as the bucket's default).
    KmsBucketKey,
    /// No encryption: only with `--in-process` (a gateway started for the benchmark).
    None,
}

/// A body of `remaining` bytes sent as 1 MiB frames of one shared buffer.
struct RepeatBody {
    chunk: Bytes,
    remaining: u64,
}

impl hyper::body::Body for RepeatBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = (self.chunk.len() as u64).min(self.remaining);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// A gateway started by the benchmark, stopped when dropped.
struct InProcess {
    endpoint: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_gateway(unencrypted: bool) -> Result<InProcess, String> {
    use keyhold_core::secret::SecretBytes;
    use keyhold_kms::principal::{Credential, Principal};
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = keyhold_hsm::FileRootKey::create(&dir.path().join("root.key"))
        .map_err(|e| e.to_string())?;
    let store = keyhold_store::SqliteStore::open(&dir.path().join("keyhold.db"))
        .map_err(|e| e.to_string())?;
    let audit = keyhold_kms::audit::chain::ChainedAuditLog::open(
        &dir.path().join("audit"),
        &root,
        keyhold_kms::audit::chain::AuditOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let dev = Credential {
        principal: Principal {
            arn: "arn:aws:iam::111122223333:user/dev".into(),
            account: "111122223333".into(),
            access_key_id: "test".into(),
        },
        secret: Arc::new(SecretBytes::new(b"test".to_vec())),
    };
    let engine = Arc::new(keyhold_kms::Engine::new(
        "us-east-1",
        Arc::new(store),
        Arc::new(root),
        Arc::new(keyhold_kms::clock::SystemClock),
        audit,
        Some(dev),
    ));
    let objects =
        keyhold_s3::LocalDir::open(&dir.path().join("objects")).map_err(|e| e.to_string())?;
    let options = keyhold_s3::GatewayOptions {
        unencrypted_for_benchmarks: unencrypted,
        ..keyhold_s3::GatewayOptions::default()
    };
    let gateway = Arc::new(keyhold_s3::Gateway::new(
        engine,
        Arc::new(objects),
        options,
    )?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let endpoint = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let options = keyhold_server::ServerOptions::default();
        let stop = async {
            let _ = rx.await;
        };
        let _ = crate::serve::serve_s3(listener, gateway, &options, stop).await;
    });
    Ok(InProcess {
        endpoint,
        _dir: dir,
        _stop: tx,
    })
}

/// One keep-alive HTTP/1.1 connection to the gateway.
struct Conn {
    send: hyper::client::conn::http1::SendRequest<RepeatBody>,
    host: String,
    signer: Signer,
}

impl Conn {
    async fn open(endpoint: &Uri, akid: &str, secret: &str, region: &str) -> Result<Self, String> {
        let host = endpoint
            .authority()
            .ok_or("the S3 endpoint has no host")?
            .to_string();
        let tcp = tokio::net::TcpStream::connect(&host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Self {
            send,
            host,
            signer: Signer::new(
                akid,
                secret.as_bytes(),
                Scope {
                    service: "s3",
                    region,
                },
            ),
        })
    }

    /// Sends one request; its status, and the number of body bytes received.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        extra: &[(&'static str, String)],
        body: RepeatBody,
    ) -> Result<(u16, u64, String), String> {
        let uri: Uri = format!("http://{}{path}", self.host)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let mut headers = HeaderMap::new();
        let value = |s: &str| HeaderValue::from_str(s).map_err(|e| e.to_string());
        headers.insert("host", value(&self.host)?);
        headers.insert("x-amz-content-sha256", value("UNSIGNED-PAYLOAD")?);
        if body.remaining > 0 || method == Method::PUT {
            headers.insert("content-length", value(&body.remaining.to_string())?);
        }
        for (k, v) in extra {
            headers.insert(*k, value(v)?);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.signer
            .sign(&method, &uri, &mut headers, b"", now)
            .map_err(|e| e.to_string())?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .body(body)
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = headers;
        self.send.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut received = 0u64;
        let mut error = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(d) = frame.data_ref() {
                received += d.len() as u64;
                if status >= 300 && error.len() < 4096 {
                    error.extend_from_slice(d);
                }
            }
        }
        let code = String::from_utf8_lossy(&error)
            .split("<Code>")
            .nth(1)
            .and_then(|r| r.split("</Code>").next())
            .unwrap_or("")
            .to_string();
        Ok((status, received, code))
    }
}

fn empty() -> RepeatBody {
    RepeatBody {
        chunk: Bytes::new(),
        remaining: 0,
    }
}

fn sse_headers(sse: Sse) -> Vec<(&'static str, String)> {
    match sse {
        Sse::S3 => vec![("x-amz-server-side-encryption", "AES256".into())],
        Sse::Kms => vec![("x-amz-server-side-encryption", "aws:kms".into())],
        Sse::KmsBucketKey | Sse::None => Vec::new(),
    }
}

/// What one run measured.
#[derive(Debug, Default)]
struct Report {
    requests: u64,
    bytes: u64,
    seconds: f64,
    latencies: crate::latency::Latencies,
    errors: BTreeMap<String, u64>,
}

impl Report {
    fn gb_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9) / 1e9
    }

    fn pct_ms(&self, p: f64) -> f64 {
        self.latencies.quantile_ms(p)
    }

    fn print(&self, what: &str) {
        println!(
            "{what}: {:.3} GB/s, {:.1} req/s ({} ok in {:.1} s); latency ms p50 {:.1} p99 {:.1}; \
             errors {:?}",
            self.gb_per_s(),
            self.requests as f64 / self.seconds.max(1e-9),
            self.requests,
            self.seconds,
            self.pct_ms(0.5),
            self.pct_ms(0.99),
            self.errors
        );
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "requests": self.requests,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "gb_per_s": self.gb_per_s(),
            "latency_ms": {"p50": self.pct_ms(0.5), "p99": self.pct_ms(0.99)},
            "errors": self.errors,
        })
    }
}

/// Prepares a bucket (and for GET, the object), then loads `endpoint` for the duration.
async fn load(endpoint: &str, args: &BenchArgs, op: S3Op, sse: Sse) -> Result<Report, String> {
    let uri: Uri = endpoint
        .parse()
        .map_err(|e| format!("S3 endpoint {endpoint:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(
            "the S3 benchmark speaks plain HTTP: give an http:// endpoint or --in-process".into(),
        );
    }
    let (akid, secret, region) = (
        args.access_key_id.as_str(),
        args.secret_access_key.as_str(),
        args.region.as_str(),
    );
    let size = args.object_size;
    let mut chunk = vec![0u8; 1024 * 1024];
    aws_lc_rs::rand::fill(&mut chunk).map_err(|_| "random fill failed")?;
    let chunk = Bytes::from(chunk);
    let bucket = format!(
        "keyhold-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut setup = Conn::open(&uri, akid, secret, region).await?;
    let check = |r: (u16, u64, String), what: &str| {
        if r.0 >= 300 {
            Err(format!("{what}: HTTP {} {}", r.0, r.2))
        } else {
            Ok(())
        }
    };
    check(
        setup
            .send(Method::PUT, &format!("/{bucket}"), &[], empty())
            .await?,
        "CreateBucket",
    )?;
    if sse == Sse::KmsBucketKey {
        let xml = "<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>\
                   <SSEAlgorithm>aws:kms</SSEAlgorithm></ApplyServerSideEncryptionByDefault>\
                   <BucketKeyEnabled>true</BucketKeyEnabled></Rule></ServerSideEncryptionConfiguration>";
        // The XML body is sent through a one-frame RepeatBody.
        let body = RepeatBody {
            chunk: Bytes::from(xml),
            remaining: xml.len() as u64,
        };
        check(
            setup
                .send(Method::PUT, &format!("/{bucket}?encryption"), &[], body)
                .await?,
            "PutBucketEncryption",
        )?;
    }
    let headers = sse_headers(sse);
    if op == S3Op::Get {
        let body = RepeatBody {
            chunk: chunk.clone(),
            remaining: size,
        };
        check(
            setup
                .send(Method::PUT, &format!("/{bucket}/object"), &headers, body)
                .await?,
            "PutObject",
        )?;
    }
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.concurrency {
        let uri = uri.clone();
        let (akid, secret, region) = (akid.to_string(), secret.to_string(), region.to_string());
        let (bucket, chunk, headers) = (bucket.clone(), chunk.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            let mut report = Report::default();
            let mut conn = match Conn::open(&uri, &akid, &secret, &region).await {
                Ok(c) => c,
                Err(e) => {
                    *report.errors.entry(e).or_default() += 1;
                    return report;
                }
            };
            let mut i = 0u64;
            while start.elapsed() < duration {
                let t = Instant::now();
                let r = match op {
                    S3Op::Put => {
                        let body = RepeatBody {
                            chunk: chunk.clone(),
                            remaining: size,
                        };
                        conn.send(Method::PUT, &format!("/{bucket}/o-{c}-{i}"), &headers, body)
                            .await
                    }
                    S3Op::Get => {
                        conn.send(Method::GET, &format!("/{bucket}/object"), &[], empty())
                            .await
                    }
                };
                i += 1;
                match r {
                    Ok((s, n, _)) if s < 300 => {
                        report.requests += 1;
                        report.bytes += if op == S3Op::Put { size } else { n };
                        report
                            .latencies
                            .record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    Ok((s, _, code)) => {
                        *report.errors.entry(format!("{s} {code}")).or_default() += 1
                    }
                    Err(e) => {
                        *report.errors.entry(e).or_default() += 1;
                        break;
                    }
                }
            }
            report
        }));
    }
    let mut all = Report::default();
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string())?;
        all.requests += r.requests;
        all.bytes += r.bytes;
        all.latencies.merge(&r.latencies);
        for (k, v) in r.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    all.seconds = start.elapsed().as_secs_f64();
    Ok(all)
}

/// Peak resident memory of this process, in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `keyhold bench --s3 OP`.
pub async fn run(args: &BenchArgs, op: S3Op) -> Result<(), String> {
    let sse = args.sse;
    if sse == Sse::None && !args.in_process {
        return Err(
            "--sse none exists only on a gateway the benchmark starts: add --in-process".into(),
        );
    }
    let baseline = if args.baseline {
        let gw = start_gateway(true).await?;
        let r = load(&gw.endpoint, args, op, Sse::None).await?;
        if !args.json {
            r.print("encryption off");
        }
        Some(r)
    } else {
        None
    };
    let own = if args.in_process {
        Some(start_gateway(sse == Sse::None).await?)
    } else {
        None
    };
    let endpoint = match &own {
        Some(g) => g.endpoint.clone(),
        None => args
            .s3_endpoint
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:7090".into()),
    };
    let report = load(&endpoint, args, op, sse).await?;
    let ratio = baseline
        .as_ref()
        .map(|b| report.gb_per_s() / b.gb_per_s().max(1e-12));
    let what = format!("{op:?} {} B, sse {sse:?}", args.object_size).to_lowercase();
    if args.json {
        let mut out = json!({
            "s3": format!("{op:?}").to_lowercase(),
            "sse": format!("{sse:?}"),
            "object_size": args.object_size,
            "concurrency": args.concurrency,
            "endpoint": endpoint,
            "target": report.to_json(),
            "peak_rss_mib": if args.in_process { peak_rss_mib() } else { None },
        });
        if let (Some(b), Some(r)) = (&baseline, ratio) {
            out["baseline"] = b.to_json();
            out["ratio"] = json!(r);
        }
        println!("{out}");
    } else {
        report.print(&what);
        if let Some(r) = ratio {
            println!("ratio to the same gateway with encryption off: {r:.2}");
        }
        if args.in_process {
            if let Some(m) = peak_rss_mib() {
                println!("peak resident memory of this process: {m:.0} MiB");
            }
        }
    }
    Ok(())
}
