//! The web console: keys, AWS managed keys, key details and the audit trail in a browser,
//! served by keyhold itself under `/console/`. Every page calls the engine in-process as the
//! signed-in principal ([`keyhold_kms::Engine::call`]), so key policies, grants and the audit
//! log apply exactly as for the API.
//!
//! Server-rendered HTML (askama templates compiled into the binary) and one embedded style
//! sheet; no script at all, so a strict Content-Security-Policy holds and every page works
//! without JavaScript. Sessions are server-side; see [`session`].

mod pages;
pub mod session;
mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use keyhold_kms::Engine;

use crate::session::{Failures, Sessions};

/// Where the console is served.
pub const PREFIX: &str = "/console";
/// The session cookie.
const COOKIE: &str = "keyhold_console";
/// Largest form accepted (a key policy is at most 32 KiB).
pub const MAX_FORM: usize = 64 * 1024;
/// Most bytes of an oversized form read before it is refused.
const MAX_DRAIN: usize = 1024 * 1024;
/// How long a browser may take to send a form.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The Content-Security-Policy of every page: no script at all, styles and forms only from the
/// console itself, no framing.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// A bucket of the S3 gateway, as the console lists it.
#[derive(Debug, Clone)]
pub struct BucketSummary {
    /// Its name.
    pub name: String,
    /// When it was made, ms since the epoch.
    pub created_ms: i64,
    /// Its default encryption, in words (`SSE-S3`, `SSE-KMS with alias/x, Bucket Key`).
    pub encryption: String,
}

/// An object of a bucket.
#[derive(Debug, Clone)]
pub struct ObjectSummary {
    /// Its key.
    pub key: String,
    /// Plaintext bytes.
    pub size: u64,
    /// When it was written, ms since the epoch.
    pub modified_ms: i64,
    /// `SSE-S3`, `SSE-KMS` or `SSE-C`.
    pub sse: String,
    /// The KMS key of SSE-KMS (its ARN).
    pub kms_key: String,
}

/// The S3 gateway's buckets, for the buckets pages (the binary that serves both provides it).
pub trait Buckets: std::fmt::Debug + Send + Sync {
    /// The buckets `account` owns.
    fn buckets(&self, account: &str) -> Result<Vec<BucketSummary>, String>;
    /// Objects of `bucket` after `after`, at most `limit`, when `account` owns the bucket
    /// (`None` otherwise, as for a bucket that does not exist).
    fn objects(
        &self,
        account: &str,
        bucket: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<ObjectSummary>>, String>;
}

/// What the console needs beyond the engine.
#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// The S3 gateway's buckets (none: no buckets pages).
    pub buckets: Option<Arc<dyn Buckets>>,
    /// The audit log's directory, for the audit trail pages (none: the pages say so).
    pub audit_dir: Option<PathBuf>,
    /// The PEM public key that verifies the audit log's digests.
    pub audit_public_key: Option<PathBuf>,
}

/// The console of one keyhold node.
pub struct Console {
    engine: Arc<Engine>,
    options: ConsoleOptions,
    sessions: Sessions,
    failures: Failures,
    /// The latest audit verification run from the console, and when.
    last_verify: Mutex<Option<views::VerifyResult>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// What a page handler answers: the response, and how long to hold it back (failed
/// sign-ins).
pub(crate) struct Out {
    pub(crate) response: Response<Full<Bytes>>,
    pub(crate) delay: Option<Duration>,
}

/// One request, as the pages see it.
pub(crate) struct Ctx<'a> {
    pub(crate) method: &'a Method,
    /// The path below `/console`, without a trailing slash (`""` for the root).
    pub(crate) path: &'a str,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) form: Vec<(String, String)>,
    pub(crate) cookie: Option<String>,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
    pub(crate) user_agent: String,
    /// The request's `Origin`, when it sent one, and whether it is this console's own.
    pub(crate) foreign_origin: bool,
}

impl Ctx<'_> {
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Console {
    /// A console on `engine`.
    pub fn new(engine: Arc<Engine>, options: ConsoleOptions) -> Arc<Self> {
        Arc::new(Self {
            engine,
            options,
            sessions: Sessions::default(),
            failures: Failures::default(),
            last_verify: Mutex::new(None),
        })
    }

    /// The sessions (for tests of expiry).
    #[doc(hidden)]
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// True when `path` is the console's.
    pub fn owns(path: &str) -> bool {
        path == PREFIX || path.starts_with("/console/")
    }

    /// Answers one request for a path under `/console`.
    pub async fn handle<B>(
        self: &Arc<Self>,
        peer: SocketAddr,
        tls: bool,
        req: Request<B>,
    ) -> Response<Full<Bytes>>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let form = if parts.method == Method::POST {
            // An oversized form is still read (up to a bound) before it is refused, so the
            // browser gets the answer rather than a connection reset mid-upload.
            let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_DRAIN).collect());
            match read.await {
                Ok(Ok(c)) => {
                    let bytes = c.to_bytes();
                    if bytes.len() > MAX_FORM {
                        return secured(too_large());
                    }
                    bytes
                }
                _ => return secured(too_large()),
            }
        } else {
            Bytes::new()
        };
        let this = self.clone();
        // HTTP/2 carries the host as the URI's authority, HTTP/1 in the Host header.
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let foreign_origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| {
                let own = [format!("https://{host}"), format!("http://{host}")];
                !own.iter().any(|x| x == o)
            });
        let cookie = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(256)
            .collect();
        let out = tokio::task::spawn_blocking(move || {
            let path = parts.uri.path();
            let below = path
                .strip_prefix(PREFIX)
                .unwrap_or("")
                .trim_end_matches('/');
            let ctx = Ctx {
                method: &parts.method,
                path: below,
                query: parts
                    .uri
                    .query()
                    .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                    .unwrap_or_default(),
                form: form_urlencoded::parse(&form).into_owned().collect(),
                cookie,
                peer,
                tls,
                user_agent,
                foreign_origin,
            };
            this.route(&ctx)
        })
        .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "console page failed");
                Out {
                    response: views::problem(500, "Internal error", "The page could not be made."),
                    delay: None,
                }
            }
        };
        if let Some(d) = out.delay {
            tokio::time::sleep(d).await;
        }
        secured(out.response)
    }
}

fn too_large() -> Response<Full<Bytes>> {
    views::problem(
        413,
        "Form too large",
        "The form was larger than 64 KiB, or did not arrive whole; nothing was changed.",
    )
}

/// Adds the headers every console response carries.
fn secured(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // Not no-referrer: with it, browsers send `Origin: null` on form posts, which the
    // origin check would refuse.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A `Set-Cookie` value for session `id` (`None`: removes it).
pub(crate) fn cookie(id: Option<&str>, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    match id {
        Some(id) => format!("{COOKIE}={id}; Path={PREFIX}; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path={PREFIX}; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// A redirect (303, so a form post becomes a GET).
pub(crate) fn redirect(to: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
