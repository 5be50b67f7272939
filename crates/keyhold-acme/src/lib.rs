//! keyhold-acme: keyhold's private CA as an ACME server (RFC 8555), so certbot, lego, Caddy and
//! the rest get and renew server certificates from it by themselves.
//!
//! Served under `/acme/` on the KMS listener. Accounts need an external account binding made
//! by `keyhold admin acme-account create` (so only holders of keyhold-issued credentials get
//! certificates, each for the names its binding allows); names are proved with `http-01`
//! or `tls-alpn-01` (checked at the named host, or at the address `--acme-resolve` gives it);
//! certificates come from the private CA with server-authentication usage, the ordered names
//! exactly, and a CRL distribution point (`/acme/crl`); revocations are listed there; ACME Renewal
//! Information (RFC 9773) tells clients when to renew. Every issuance and revocation is in the
//! audit log.
//!
//! # Layout
//! - [`AcmeService`]: routing, the JWS checks (nonce, URL, signature, account) and the
//!   resources; `challenge`: validating `http-01` and `tls-alpn-01`, reading CSRs.
//! - [`jws`]: JWS verification, thumbprints, the external account binding; [`problem`]: RFC
//!   8555 error documents; [`store`]: the records on disk.
#![forbid(unsafe_code)]

mod challenge;
pub mod jws;
pub mod problem;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use keyhold_kms::Engine;
use keyhold_server::tls::ca::{PrivateCa, Wrapper};
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::problem::Problem;
use crate::store::{Account, Authz, Cert, Challenge, Eab, Order, Store};

/// The label EAB HMAC keys are wrapped under.
pub const EAB_LABEL: &str = "keyhold:acme:eab-hmac";

/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;
/// How long a nonce stays usable.
const NONCE_LIFE: Duration = Duration::from_secs(3600);
/// Most nonces outstanding (the oldest are dropped beyond it).
const MAX_NONCES: usize = 100_000;
/// How long an order and its authorizations stay usable.
const ORDER_LIFE_MS: i64 = 7 * 24 * 3600 * 1000;
/// Names per order.
const MAX_NAMES: usize = 100;

/// Settings of the ACME server.
#[derive(Debug, Clone)]
pub struct AcmeOptions {
    /// Lifetime of issued certificates, in days.
    pub cert_days: i64,
    /// The port `http-01` challenges are fetched from (80 in production).
    pub http01_port: u16,
    /// The port `tls-alpn-01` challenges connect to (443 in production).
    pub tlsalpn01_port: u16,
    /// Addresses to use for names instead of resolving them (split-horizon sites, tests).
    pub resolve: HashMap<String, IpAddr>,
}

impl Default for AcmeOptions {
    fn default() -> Self {
        Self {
            cert_days: 30,
            http01_port: 80,
            tlsalpn01_port: 443,
            resolve: HashMap::new(),
        }
    }
}

/// Parses `NAME=ADDR` (for `--acme-resolve`).
pub fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=ADDR"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|e| format!("{s:?}: {addr} is not an IP address: {e}"))?;
    Ok((name.to_ascii_lowercase(), addr))
}

/// The ACME server.
pub struct AcmeService {
    store: Store,
    ca: Arc<PrivateCa>,
    wrapper: Arc<dyn Wrapper>,
    engine: Arc<Engine>,
    options: AcmeOptions,
    nonces: Mutex<HashMap<String, Instant>>,
    /// Serializes changes to orders, authorizations and certificates.
    writes: Mutex<()>,
}

impl std::fmt::Debug for AcmeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeService").finish_non_exhaustive()
    }
}

/// Makes an external account binding: its kid and HMAC key (base64url), stored under `dir`
/// with the key wrapped.
pub fn create_eab(
    dir: &Path,
    wrapper: &dyn Wrapper,
    account: &str,
    allow: &[String],
) -> Result<(String, Zeroizing<String>), String> {
    let store = store::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let kid = format!("kh-{}", store::new_id());
    let mut key = Zeroizing::new(vec![0u8; 32]);
    aws_lc_rs::rand::fill(&mut key).map_err(|_| "no randomness".to_string())?;
    let wrapped = wrapper.wrap(&key, EAB_LABEL)?;
    let eab = Eab {
        kid: kid.clone(),
        hmac_wrapped: jws::b64(&wrapped),
        account: account.to_string(),
        allow: if allow.is_empty() {
            vec!["*".to_string()]
        } else {
            allow.to_vec()
        },
        created_ms: now_ms(),
    };
    store
        .put("eab", &kid, &eab)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok((kid, Zeroizing::new(jws::b64(&key))))
}

/// The external account bindings under `dir`.
pub fn list_eab(dir: &Path) -> Result<Vec<Eab>, String> {
    store::open(dir)
        .and_then(|s| s.all("eab"))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Records a certificate issued outside ACME (`keyhold ca issue`) in the inventory under
/// `dir`, so `keyhold ca list` shows it; `chain_pem` starts with it.
pub fn record_issued(dir: &Path, chain_pem: &str, names: &[String]) -> Result<String, String> {
    let der = keyhold_server::tls::certs_from_pem(chain_pem.as_bytes(), "certificate")
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("no certificate")?;
    let (_, cert) = x509_parser::prelude::X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let (serial, _) = challenge::cert_serial_and_key(der.as_ref()).map_err(|p| p.detail)?;
    let record = Cert {
        serial: serial.clone(),
        account: "keyhold ca issue".into(),
        names: names.to_vec(),
        chain_pem: chain_pem.to_string(),
        not_before_ms: cert.validity().not_before.timestamp() * 1000,
        not_after_ms: cert.validity().not_after.timestamp() * 1000,
        revoked: None,
    };
    store::open(dir)
        .and_then(|s| s.put("certs", &serial, &record))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(serial)
}

/// The certificates issued under `dir`, oldest first.
pub fn list_certs(dir: &Path) -> Result<Vec<Cert>, String> {
    let mut certs: Vec<Cert> = store::open(dir)
        .and_then(|s| s.all("certs"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    certs.sort_by_key(|c| c.not_before_ms);
    Ok(certs)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn io(e: std::io::Error) -> Problem {
    Problem::internal(e)
}

/// One answer: status, content type, body, and the headers ACME adds.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    location: Option<String>,
    links: Vec<String>,
}

impl Answer {
    fn json(status: u16, v: &Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
            location: None,
            links: Vec::new(),
        }
    }

    fn located(mut self, url: String) -> Self {
        self.location = Some(url);
        self
    }
}

/// What a checked POST carries.
struct Signed {
    parsed: jws::Parsed,
    /// The account that signed it (by kid), if any.
    account: Option<Account>,
}

/// A valid DNS name as an identifier (lowercase, LDH labels).
fn valid_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl AcmeService {
    /// The ACME server, keeping its records under `dir`, issuing from `ca`.
    pub fn open(
        dir: &Path,
        ca: Arc<PrivateCa>,
        wrapper: Arc<dyn Wrapper>,
        engine: Arc<Engine>,
        options: AcmeOptions,
    ) -> std::io::Result<Self> {
        Ok(Self {
            store: store::open(dir)?,
            ca,
            wrapper,
            engine,
            options,
            nonces: Mutex::new(HashMap::new()),
            writes: Mutex::new(()),
        })
    }

    /// True for the paths this server answers.
    pub fn owns(path: &str) -> bool {
        path == "/acme" || path.starts_with("/acme/")
    }

    fn new_nonce(&self) -> String {
        let nonce = store::new_id();
        let mut n = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if n.len() >= MAX_NONCES {
            n.retain(|_, t| now.duration_since(*t) < NONCE_LIFE);
            if n.len() >= MAX_NONCES {
                if let Some(oldest) = n.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                    n.remove(&oldest);
                }
            }
        }
        n.insert(nonce.clone(), now);
        nonce
    }

    fn take_nonce(&self, nonce: &str) -> bool {
        let mut n = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        matches!(n.remove(nonce), Some(t) if t.elapsed() < NONCE_LIFE)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one request.
    pub async fn handle<B>(self: Arc<Self>, tls: bool, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".into());
        let base = format!("{}://{host}/acme", if tls { "https" } else { "http" });
        let answer = match self.route(&base, req).await {
            Ok(a) => a,
            Err(p) => Answer {
                status: p.status,
                content_type: "application/problem+json",
                body: p.document().to_string().into_bytes(),
                location: None,
                links: Vec::new(),
            },
        };
        let mut r = Response::new(Full::new(Bytes::from(answer.body)));
        *r.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(answer.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(&self.new_nonce()) {
            h.insert("replay-nonce", v);
        }
        if let Some(l) = answer.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            h.insert(header::LOCATION, l);
        }
        let mut links = answer.links;
        links.push(format!("<{base}/directory>;rel=\"index\""));
        for l in links {
            if let Ok(v) = HeaderValue::from_str(&l) {
                h.append(header::LINK, v);
            }
        }
        r
    }

    async fn route<B>(&self, base: &str, req: Request<B>) -> Result<Answer, Problem>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        let rest = path.strip_prefix("/acme").unwrap_or("");
        let method = req.method().clone();
        if method == Method::GET || method == Method::HEAD {
            return match rest {
                "/directory" | "" | "/" => Ok(Answer::json(200, &self.directory(base))),
                "/new-nonce" => Ok(Answer {
                    status: if method == Method::HEAD { 200 } else { 204 },
                    content_type: "application/json",
                    body: Vec::new(),
                    location: None,
                    links: Vec::new(),
                }),
                "/crl" => self.crl_answer(),
                r if r.starts_with("/renewal-info/") => {
                    self.renewal_info(r.trim_start_matches("/renewal-info/"))
                }
                _ => Err(Problem::not_found(format!("no resource at GET {path}"))),
            };
        }
        if method != Method::POST {
            return Err(Problem {
                kind: "malformed",
                status: 405,
                detail: format!("{method} is not allowed here"),
            });
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/jose+json") {
            return Err(Problem {
                kind: "malformed",
                status: 415,
                detail: "requests must be application/jose+json".into(),
            });
        }
        let body = tokio::time::timeout(
            Duration::from_secs(10),
            Limited::new(req.into_body(), MAX_BODY).collect(),
        )
        .await
        .map_err(|_| Problem::malformed("the request body did not arrive in time"))?
        .map_err(|_| {
            Problem::malformed(format!(
                "the request body is unreadable or over {MAX_BODY} bytes"
            ))
        })?
        .to_bytes();
        let url = format!("{base}{rest}");
        let signed = self.check(base, &url, rest, &body)?;
        let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["new-account"] => self.new_account(base, &url, signed),
            ["account", id] => self.account(base, id, signed),
            ["account", id, "orders"] => self.account_orders(base, id, signed),
            ["new-order"] => self.new_order(base, signed),
            ["order", id] => self.order(base, id, signed),
            ["order", id, "finalize"] => self.finalize(base, id, signed),
            ["authz", id] => self.authz(base, id, signed),
            ["chall", id, index] => self.challenge(base, id, index, signed).await,
            ["cert", serial] => self.certificate(serial, signed),
            ["revoke-cert"] => self.revoke(signed),
            ["key-change"] => self.key_change(base, &url, signed),
            _ => Err(Problem::not_found(format!("no resource at POST {path}"))),
        }
    }

    fn directory(&self, base: &str) -> Value {
        json!({
            "newNonce": format!("{base}/new-nonce"),
            "newAccount": format!("{base}/new-account"),
            "newOrder": format!("{base}/new-order"),
            "revokeCert": format!("{base}/revoke-cert"),
            "keyChange": format!("{base}/key-change"),
            "renewalInfo": format!("{base}/renewal-info"),
            "meta": {
                "externalAccountRequired": true,
            },
        })
    }

    /// The checks every POST passes: a JWS, a fresh nonce, the request's own URL, and a
    /// signature by a JWK (only where allowed) or by a valid account.
    fn check(&self, base: &str, url: &str, rest: &str, body: &[u8]) -> Result<Signed, Problem> {
        let parsed = jws::parse(body)?;
        let nonce = parsed
            .header
            .nonce
            .as_deref()
            .ok_or_else(|| Problem::bad_nonce("the request has no nonce"))?;
        if !self.take_nonce(nonce) {
            return Err(Problem::bad_nonce("the nonce is unknown, used or expired"));
        }
        if parsed.header.url.as_deref() != Some(url) {
            return Err(Problem::unauthorized(format!(
                "the protected header's url is not this request's ({url})"
            )));
        }
        if let Some(jwk) = &parsed.header.jwk {
            if rest != "/new-account" && rest != "/revoke-cert" {
                return Err(Problem::malformed(
                    "this request must be signed by an account (kid), not a jwk",
                ));
            }
            jws::check_key(jwk)?;
            parsed.verify(jwk)?;
            return Ok(Signed {
                parsed,
                account: None,
            });
        }
        let kid = parsed.header.kid.as_deref().unwrap_or_default();
        let id = kid
            .strip_prefix(&format!("{base}/account/"))
            .ok_or_else(|| Problem::account_does_not_exist(format!("unknown account {kid}")))?;
        let account: Account = self
            .store
            .get("accounts", id)
            .map_err(io)?
            .ok_or_else(|| Problem::account_does_not_exist(format!("unknown account {kid}")))?;
        parsed.verify(&account.jwk)?;
        if account.status != "valid" {
            return Err(Problem::unauthorized(format!(
                "the account is {}",
                account.status
            )));
        }
        if rest == "/new-account" {
            return Err(Problem::malformed("newAccount must be signed by a jwk"));
        }
        Ok(Signed {
            parsed,
            account: Some(account),
        })
    }

    fn payload(signed: &Signed) -> Result<Value, Problem> {
        if signed.parsed.payload.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&signed.parsed.payload)
            .map_err(|e| Problem::malformed(format!("the payload is not JSON: {e}")))
    }

    fn signer(signed: &Signed) -> Result<&Account, Problem> {
        signed
            .account
            .as_ref()
            .ok_or_else(|| Problem::malformed("this request must be signed by an account"))
    }

    fn account_json(&self, base: &str, a: &Account) -> Value {
        json!({
            "status": a.status,
            "contact": a.contact,
            "orders": format!("{base}/account/{}/orders", a.id),
            "createdAt": rfc3339(a.created_ms),
        })
    }

    fn new_account(&self, base: &str, url: &str, signed: Signed) -> Result<Answer, Problem> {
        let jwk = signed
            .parsed
            .header
            .jwk
            .clone()
            .ok_or_else(|| Problem::malformed("newAccount must be signed by a jwk"))?;
        let p = Self::payload(&signed)?;
        let thumb = jws::thumbprint(&jwk)?;
        let _w = self.lock();
        if let Some(existing) = self
            .store
            .get::<Value>("keys", &thumb)
            .map_err(io)?
            .and_then(|v| v.get("account").and_then(Value::as_str).map(str::to_string))
        {
            if let Some(a) = self
                .store
                .get::<Account>("accounts", &existing)
                .map_err(io)?
            {
                if a.status != "valid" {
                    return Err(Problem::unauthorized(format!(
                        "the account is {}",
                        a.status
                    )));
                }
                return Ok(Answer::json(200, &self.account_json(base, &a))
                    .located(format!("{base}/account/{}", a.id)));
            }
        }
        if p.get("onlyReturnExisting").and_then(Value::as_bool) == Some(true) {
            return Err(Problem::account_does_not_exist("no account has this key"));
        }
        let eab = p.get("externalAccountBinding").ok_or_else(|| {
            Problem::external_account_required(
                "keyhold requires an external account binding: `keyhold admin acme-account \
                 create` makes one",
            )
        })?;
        let kid = jws::verify_eab(eab, &jwk, url, |kid| {
            let Some(e) = self.store.get::<Eab>("eab", kid).map_err(io)? else {
                return Ok(None);
            };
            let wrapped = jws::unb64(&e.hmac_wrapped)?;
            self.wrapper
                .unwrap(&wrapped, EAB_LABEL)
                .map(Some)
                .map_err(Problem::internal)
        })?;
        let contact: Vec<String> = p
            .get("contact")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if contact.iter().any(|c| !c.starts_with("mailto:")) {
            return Err(Problem {
                kind: "unsupportedContact",
                status: 400,
                detail: "only mailto: contacts are supported".into(),
            });
        }
        let account = Account {
            id: store::new_id(),
            jwk,
            status: "valid".into(),
            contact,
            eab_kid: kid.clone(),
            created_ms: now_ms(),
        };
        self.store
            .put("accounts", &account.id, &account)
            .map_err(io)?;
        self.store
            .put("keys", &thumb, &json!({"account": account.id}))
            .map_err(io)?;
        self.engine.audit_service_event(
            "AcmeNewAccount",
            &json!({"acmeAccount": account.id, "eabKid": kid}),
        );
        Ok(Answer::json(201, &self.account_json(base, &account))
            .located(format!("{base}/account/{}", account.id)))
    }

    fn account(&self, base: &str, id: &str, signed: Signed) -> Result<Answer, Problem> {
        let mut a = Self::signer(&signed)?.clone();
        if a.id != id {
            return Err(Problem::unauthorized("an account may only change itself"));
        }
        let p = Self::payload(&signed)?;
        let mut changed = false;
        if let Some(c) = p.get("contact").and_then(Value::as_array) {
            a.contact = c
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect();
            changed = true;
        }
        if p.get("status").and_then(Value::as_str) == Some("deactivated") {
            a.status = "deactivated".into();
            changed = true;
        }
        if changed {
            let _w = self.lock();
            self.store.put("accounts", &a.id, &a).map_err(io)?;
            if a.status == "deactivated" {
                self.engine
                    .audit_service_event("AcmeDeactivateAccount", &json!({"acmeAccount": a.id}));
            }
        }
        Ok(Answer::json(200, &self.account_json(base, &a)))
    }

    fn account_orders(&self, base: &str, id: &str, signed: Signed) -> Result<Answer, Problem> {
        let a = Self::signer(&signed)?;
        if a.id != id {
            return Err(Problem::unauthorized(
                "an account may only list its own orders",
            ));
        }
        let orders: Vec<Order> = self.store.all("orders").map_err(io)?;
        let urls: Vec<String> = orders
            .iter()
            .filter(|o| o.account == a.id)
            .map(|o| format!("{base}/order/{}", o.id))
            .collect();
        Ok(Answer::json(200, &json!({ "orders": urls })))
    }

    fn eab_of(&self, a: &Account) -> Result<Eab, Problem> {
        self.store
            .get::<Eab>("eab", &a.eab_kid)
            .map_err(io)?
            .ok_or_else(|| Problem::unauthorized("the account's external account binding is gone"))
    }

    fn new_order(&self, base: &str, signed: Signed) -> Result<Answer, Problem> {
        let a = Self::signer(&signed)?.clone();
        let p = Self::payload(&signed)?;
        let ids = p
            .get("identifiers")
            .and_then(Value::as_array)
            .filter(|ids| !ids.is_empty())
            .ok_or_else(|| Problem::malformed("newOrder needs identifiers"))?;
        if ids.len() > MAX_NAMES {
            return Err(Problem::rejected_identifier(format!(
                "at most {MAX_NAMES} names per order"
            )));
        }
        if p.get("notBefore").is_some() || p.get("notAfter").is_some() {
            return Err(Problem::malformed(
                "notBefore and notAfter are not supported: certificates last the configured days",
            ));
        }
        let eab = self.eab_of(&a)?;
        let mut names = Vec::new();
        for id in ids {
            let kind = id.get("type").and_then(Value::as_str).unwrap_or("");
            let value = id
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            if kind != "dns" {
                return Err(Problem::unsupported_identifier(format!(
                    "identifier type {kind:?} is not supported (dns is)"
                )));
            }
            if value.starts_with("*.") {
                return Err(Problem::rejected_identifier(format!(
                    "{value}: wildcard names need dns-01, which keyhold does not offer"
                )));
            }
            if !valid_dns_name(&value) {
                return Err(Problem::rejected_identifier(format!(
                    "{value:?} is not a DNS name"
                )));
            }
            if !store::allowed(&value, &eab.allow) {
                return Err(Problem::rejected_identifier(format!(
                    "{value} is not allowed by this account's binding (allowed: {})",
                    eab.allow.join(", ")
                )));
            }
            if !names.contains(&value) {
                names.push(value);
            }
        }
        let expires = now_ms() + ORDER_LIFE_MS;
        let order_id = store::new_id();
        let _w = self.lock();
        let mut authorizations = Vec::new();
        for name in &names {
            let authz = Authz {
                id: store::new_id(),
                account: a.id.clone(),
                name: name.clone(),
                status: "pending".into(),
                expires_ms: expires,
                challenges: ["http-01", "tls-alpn-01"]
                    .into_iter()
                    .map(|kind| Challenge {
                        kind: kind.into(),
                        token: store::new_id() + &store::new_id(),
                        status: "pending".into(),
                        validated_ms: None,
                        error: None,
                    })
                    .collect(),
            };
            self.store.put("authz", &authz.id, &authz).map_err(io)?;
            authorizations.push(authz.id);
        }
        let order = Order {
            id: order_id,
            account: a.id.clone(),
            status: "pending".into(),
            names,
            authorizations,
            expires_ms: expires,
            certificate: None,
            error: None,
        };
        self.store.put("orders", &order.id, &order).map_err(io)?;
        Ok(Answer::json(201, &self.order_json(base, &order))
            .located(format!("{base}/order/{}", order.id)))
    }

    fn order_json(&self, base: &str, o: &Order) -> Value {
        let mut v = json!({
            "status": o.status,
            "expires": rfc3339(o.expires_ms),
            "identifiers": o.names.iter().map(|n| json!({"type": "dns", "value": n})).collect::<Vec<_>>(),
            "authorizations": o.authorizations.iter().map(|a| format!("{base}/authz/{a}")).collect::<Vec<_>>(),
            "finalize": format!("{base}/order/{}/finalize", o.id),
        });
        if let Some(c) = &o.certificate {
            v["certificate"] = Value::from(format!("{base}/cert/{c}"));
        }
        if let Some(e) = &o.error {
            v["error"] = e.clone();
        }
        v
    }

    /// An order of the signer, with its status brought up to date from its authorizations.
    fn own_order(&self, id: &str, a: &Account) -> Result<Order, Problem> {
        let mut o: Order = self
            .store
            .get("orders", id)
            .map_err(io)?
            .filter(|o: &Order| o.account == a.id)
            .ok_or_else(|| Problem::not_found(format!("no order {id}")))?;
        if o.status == "pending" {
            let mut all_valid = true;
            for z in &o.authorizations {
                let authz: Option<Authz> = self.store.get("authz", z).map_err(io)?;
                match authz.map(|z| z.status) {
                    Some(s) if s == "valid" => {}
                    Some(s) if s == "pending" => all_valid = false,
                    _ => {
                        o.status = "invalid".into();
                        o.error = Some(
                            Problem::unauthorized("an authorization of this order failed")
                                .document(),
                        );
                        all_valid = false;
                    }
                }
            }
            if o.status == "pending" && now_ms() > o.expires_ms {
                o.status = "invalid".into();
            } else if all_valid && o.status == "pending" {
                o.status = "ready".into();
            }
        }
        Ok(o)
    }

    fn order(&self, base: &str, id: &str, signed: Signed) -> Result<Answer, Problem> {
        let a = Self::signer(&signed)?;
        let o = self.own_order(id, a)?;
        Ok(Answer::json(200, &self.order_json(base, &o)))
    }

    fn authz_json(&self, base: &str, z: &Authz) -> Value {
        json!({
            "status": z.status,
            "expires": rfc3339(z.expires_ms),
            "identifier": {"type": "dns", "value": z.name},
            "challenges": z.challenges.iter().enumerate().map(|(i, c)| self.challenge_json(base, z, i, c)).collect::<Vec<_>>(),
        })
    }

    fn challenge_json(&self, base: &str, z: &Authz, index: usize, c: &Challenge) -> Value {
        let mut v = json!({
            "type": c.kind,
            "url": format!("{base}/chall/{}/{index}", z.id),
            "token": c.token,
            "status": c.status,
        });
        if let Some(t) = c.validated_ms {
            v["validated"] = Value::from(rfc3339(t));
        }
        if let Some(e) = &c.error {
            v["error"] = e.clone();
        }
        v
    }

    fn own_authz(&self, id: &str, a: &Account) -> Result<Authz, Problem> {
        self.store
            .get("authz", id)
            .map_err(io)?
            .filter(|z: &Authz| z.account == a.id)
            .ok_or_else(|| Problem::not_found(format!("no authorization {id}")))
    }

    fn authz(&self, base: &str, id: &str, signed: Signed) -> Result<Answer, Problem> {
        let a = Self::signer(&signed)?;
        let mut z = self.own_authz(id, a)?;
        let p = Self::payload(&signed)?;
        if p.get("status").and_then(Value::as_str) == Some("deactivated") {
            let _w = self.lock();
            z.status = "deactivated".into();
            self.store.put("authz", &z.id, &z).map_err(io)?;
        }
        Ok(Answer::json(200, &self.authz_json(base, &z)))
    }

    async fn challenge(
        &self,
        base: &str,
        id: &str,
        index: &str,
        signed: Signed,
    ) -> Result<Answer, Problem> {
        let a = Self::signer(&signed)?.clone();
        let mut z = self.own_authz(id, &a)?;
        let i: usize = index
            .parse()
            .ok()
            .filter(|i| *i < z.challenges.len())
            .ok_or_else(|| Problem::not_found(format!("no challenge {index}")))?;
        let up = format!("<{base}/authz/{}>;rel=\"up\"", z.id);
        // POST-as-GET reads it; any other POST (the empty object) asks for validation.
        if signed.parsed.payload.is_empty() || z.challenges[i].status != "pending" {
            let mut ans = Answer::json(200, &self.challenge_json(base, &z, i, &z.challenges[i]));
            ans.links.push(up);
            return Ok(ans);
        }
        if z.status != "pending" || now_ms() > z.expires_ms {
            return Err(Problem::malformed(format!(
                "the authorization is {}",
                z.status
            )));
        }
        let key_authorization = format!("{}.{}", z.challenges[i].token, jws::thumbprint(&a.jwk)?);
        let outcome = match z.challenges[i].kind.as_str() {
            "http-01" => {
                challenge::http01(
                    &z.name,
                    &z.challenges[i].token,
                    &key_authorization,
                    &self.options,
                )
                .await
            }
            _ => challenge::tls_alpn01(&z.name, &key_authorization, &self.options).await,
        };
        let _w = self.lock();
        // Another request may have settled it meanwhile; reread.
        z = self.own_authz(id, &a)?;
        if z.challenges[i].status == "pending" {
            match outcome {
                Ok(()) => {
                    z.challenges[i].status = "valid".into();
                    z.challenges[i].validated_ms = Some(now_ms());
                    z.status = "valid".into();
                }
                Err(p) => {
                    z.challenges[i].status = "invalid".into();
                    z.challenges[i].error = Some(p.document());
                    z.status = "invalid".into();
                }
            }
            self.store.put("authz", &z.id, &z).map_err(io)?;
        }
        let mut ans = Answer::json(200, &self.challenge_json(base, &z, i, &z.challenges[i]));
        ans.links.push(up);
        Ok(ans)
    }

    fn finalize(&self, base: &str, id: &str, signed: Signed) -> Result<Answer, Problem> {
        let a = Self::signer(&signed)?.clone();
        let p = Self::payload(&signed)?;
        let csr = p
            .get("csr")
            .and_then(Value::as_str)
            .ok_or_else(|| Problem::malformed("finalize needs a csr"))?;
        let csr = jws::unb64(csr)?;
        let _w = self.lock();
        let mut o = self.own_order(id, &a)?;
        if o.status != "ready" {
            return Err(Problem::order_not_ready(format!(
                "the order is {}, not ready",
                o.status
            )));
        }
        challenge::check_csr(&csr, &o.names)?;
        let crl_url = format!("{base}/crl");
        let now = now_ms() / 1000;
        let issued = self
            .ca
            .issue_for_csr(
                &csr,
                &o.names,
                self.options.cert_days * 86_400,
                Some(&crl_url),
                now,
            )
            .map_err(|e| Problem::bad_csr(format!("the CSR cannot be signed: {e}")))?;
        let cert = Cert {
            serial: issued.serial_hex.clone(),
            account: a.id.clone(),
            names: o.names.clone(),
            chain_pem: format!("{}{}", issued.pem, self.ca.cert_pem()),
            not_before_ms: issued.not_before * 1000,
            not_after_ms: issued.not_after * 1000,
            revoked: None,
        };
        self.store.put("certs", &cert.serial, &cert).map_err(io)?;
        o.status = "valid".into();
        o.certificate = Some(cert.serial.clone());
        self.store.put("orders", &o.id, &o).map_err(io)?;
        let eab = self.eab_of(&a)?;
        self.engine.audit_service_event(
            "AcmeIssueCertificate",
            &json!({
                "serial": cert.serial, "names": cert.names, "acmeAccount": a.id,
                "eabKid": a.eab_kid, "account": eab.account,
                "notAfter": rfc3339(cert.not_after_ms),
            }),
        );
        Ok(Answer::json(200, &self.order_json(base, &o)).located(format!("{base}/order/{}", o.id)))
    }

    fn certificate(&self, serial: &str, signed: Signed) -> Result<Answer, Problem> {
        let a = Self::signer(&signed)?;
        let c: Cert = self
            .store
            .get("certs", serial)
            .map_err(io)?
            .filter(|c: &Cert| c.account == a.id)
            .ok_or_else(|| Problem::not_found(format!("no certificate {serial}")))?;
        Ok(Answer {
            status: 200,
            content_type: "application/pem-certificate-chain",
            body: c.chain_pem.into_bytes(),
            location: None,
            links: Vec::new(),
        })
    }

    fn revoke(&self, signed: Signed) -> Result<Answer, Problem> {
        let p = Self::payload(&signed)?;
        let der = p
            .get("certificate")
            .and_then(Value::as_str)
            .ok_or_else(|| Problem::malformed("revokeCert needs a certificate"))?;
        let der = jws::unb64(der)?;
        let reason = match p.get("reason") {
            None | Some(Value::Null) => 0u8,
            Some(r) => match r.as_u64() {
                Some(n @ (0 | 1 | 3 | 4 | 5 | 9)) => u8::try_from(n).unwrap_or(0),
                _ => {
                    return Err(Problem::bad_revocation_reason(format!(
                        "reason {r} is not allowed (0, 1, 3, 4, 5 or 9)"
                    )))
                }
            },
        };
        let (serial, public_key) = challenge::cert_serial_and_key(&der)?;
        let _w = self.lock();
        let mut c: Cert = self
            .store
            .get("certs", &serial)
            .map_err(io)?
            .ok_or_else(|| Problem::not_found("keyhold did not issue this certificate"))?;
        if !challenge::same_certificate(&c.chain_pem, &der) {
            return Err(Problem::not_found("keyhold did not issue this certificate"));
        }
        match (&signed.account, &signed.parsed.header.jwk) {
            (Some(a), _) if a.id == c.account => {}
            (None, Some(jwk)) if challenge::jwk_matches_key(jwk, &public_key) => {}
            _ => {
                return Err(Problem::unauthorized(
                    "only the account that ordered a certificate, or its key, may revoke it",
                ))
            }
        }
        if c.revoked.is_some() {
            return Err(Problem::already_revoked(
                "the certificate is already revoked",
            ));
        }
        c.revoked = Some((now_ms() / 1000, reason));
        self.store.put("certs", &c.serial, &c).map_err(io)?;
        self.engine.audit_service_event(
            "AcmeRevokeCertificate",
            &json!({"serial": c.serial, "names": c.names, "reason": reason}),
        );
        Ok(Answer {
            status: 200,
            content_type: "application/json",
            body: Vec::new(),
            location: None,
            links: Vec::new(),
        })
    }

    fn key_change(&self, base: &str, url: &str, signed: Signed) -> Result<Answer, Problem> {
        let mut a = Self::signer(&signed)?.clone();
        let inner = jws::parse(&signed.parsed.payload)?;
        let new_key = inner
            .header
            .jwk
            .clone()
            .ok_or_else(|| Problem::malformed("the inner JWS of keyChange must carry a jwk"))?;
        if inner.header.url.as_deref() != Some(url) {
            return Err(Problem::malformed("the inner JWS names another URL"));
        }
        if inner.header.nonce.is_some() {
            return Err(Problem::malformed("the inner JWS must not carry a nonce"));
        }
        jws::check_key(&new_key)?;
        inner.verify(&new_key)?;
        let p: Value = serde_json::from_slice(&inner.payload)
            .map_err(|_| Problem::malformed("the inner payload is not JSON"))?;
        if p.get("account").and_then(Value::as_str) != Some(&format!("{base}/account/{}", a.id)) {
            return Err(Problem::malformed(
                "the inner payload names another account",
            ));
        }
        if p.get("oldKey") != Some(&a.jwk) {
            return Err(Problem::malformed("oldKey is not the account's key"));
        }
        let thumb = jws::thumbprint(&new_key)?;
        let _w = self.lock();
        if self
            .store
            .get::<Value>("keys", &thumb)
            .map_err(io)?
            .is_some()
        {
            return Err(Problem {
                kind: "malformed",
                status: 409,
                detail: "another account already has this key".into(),
            });
        }
        let old = jws::thumbprint(&a.jwk)?;
        a.jwk = new_key;
        self.store.put("accounts", &a.id, &a).map_err(io)?;
        self.store
            .put("keys", &thumb, &json!({"account": a.id}))
            .map_err(io)?;
        self.store.remove("keys", &old).map_err(io)?;
        self.engine
            .audit_service_event("AcmeKeyChange", &json!({"acmeAccount": a.id}));
        Ok(Answer::json(200, &self.account_json(base, &a)))
    }

    fn revoked(&self) -> Result<Vec<(String, i64, u8)>, Problem> {
        let certs: Vec<Cert> = self.store.all("certs").map_err(io)?;
        Ok(certs
            .into_iter()
            .filter_map(|c| c.revoked.map(|(t, r)| (c.serial, t, r)))
            .collect())
    }

    fn crl_answer(&self) -> Result<Answer, Problem> {
        let revoked = self.revoked()?;
        let now = now_ms() / 1000;
        let der = self
            .ca
            .crl(&revoked, u64::try_from(now).unwrap_or(0), 86_400, now)
            .map_err(Problem::internal)?;
        Ok(Answer {
            status: 200,
            content_type: "application/pkix-crl",
            body: der,
            location: None,
            links: Vec::new(),
        })
    }

    /// RFC 9773: the window in which to renew the certificate `AKI.SERIAL` (base64url), the
    /// last third of its life, or now when it was revoked.
    fn renewal_info(&self, cert_id: &str) -> Result<Answer, Problem> {
        let (_, serial) = cert_id
            .split_once('.')
            .ok_or_else(|| Problem::malformed("a certificate id is AKI.SERIAL (base64url)"))?;
        let serial = hex::encode(jws::unb64(serial)?);
        let serial = serial.trim_start_matches("00");
        let c: Cert = self
            .store
            .get("certs", serial)
            .map_err(io)?
            .ok_or_else(|| Problem::not_found("no such certificate"))?;
        let now = now_ms();
        let (start, end) = if c.revoked.is_some() {
            (now - 3_600_000, now)
        } else {
            let life = c.not_after_ms - c.not_before_ms;
            (
                c.not_before_ms + life * 2 / 3,
                c.not_before_ms + life * 5 / 6,
            )
        };
        let mut ans = Answer::json(
            200,
            &json!({"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}),
        );
        ans.links.clear();
        Ok(ans)
    }
}

/// Names of a set, for comparisons.
pub(crate) fn name_set(names: &[String]) -> HashSet<String> {
    names.iter().map(|n| n.to_ascii_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_checked() {
        assert!(valid_dns_name("svc.test"));
        assert!(valid_dns_name("a-b.c.example"));
        assert!(!valid_dns_name("localhost"));
        assert!(!valid_dns_name("-a.test"));
        assert!(!valid_dns_name("a..test"));
        assert!(!valid_dns_name("a_b.test"));
    }

    #[test]
    fn resolve_overrides_parse() {
        assert_eq!(
            parse_resolve("SVC.test=127.0.0.1").unwrap(),
            ("svc.test".to_string(), "127.0.0.1".parse().unwrap())
        );
        assert!(parse_resolve("svc.test").is_err());
        assert!(parse_resolve("svc.test=host").is_err());
    }
}
