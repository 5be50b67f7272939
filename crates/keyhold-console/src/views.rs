//! The pages' data and templates (askama, compiled into the binary, HTML-escaped).

use askama::Template;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// What every page shows around its content.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    pub title: String,
    pub who: Option<Who>,
    pub region: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    /// The CSRF token of the session (empty when signed out).
    pub csrf: String,
}

/// The signed-in principal, and the CSRF token the page's forms carry.
#[derive(Debug, Clone)]
pub struct Who {
    pub arn: String,
    pub account: String,
    pub csrf: String,
}

/// One time, in UTC and relative to now.
pub fn when(epoch_secs: f64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(epoch_secs as i64) else {
        return String::new();
    };
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    let abs = t.format(&fmt).unwrap_or_default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let d = now - t.unix_timestamp();
    let (n, unit) = match d.unsigned_abs() {
        s if s < 60 => return format!("{abs} (just now)"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if d >= 0 {
        format!("{abs} ({n} {unit}{plural} ago)")
    } else {
        format!("{abs} (in {n} {unit}{plural})")
    }
}

/// A row of the customer managed keys list.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: String,
    pub aliases: String,
    pub state: String,
    pub spec: String,
    pub usage: String,
    pub created: String,
    pub description: String,
}

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SigninPage {
    pub c: Chrome,
    pub access_key_id: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
pub struct KeysPage {
    pub c: Chrome,
    pub rows: Vec<KeyRow>,
    pub q: String,
    pub tag: String,
    pub state: String,
    pub states: Vec<&'static str>,
    pub next: Option<String>,
    pub scanned: Option<String>,
}

/// A row of the AWS managed keys list.
#[derive(Debug, Clone)]
pub struct ManagedRow {
    pub id: String,
    pub alias: String,
    pub service: String,
    pub state: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "managed.html")]
pub struct ManagedPage {
    pub c: Chrome,
    pub rows: Vec<ManagedRow>,
}

/// The create-key form's values (kept when the form comes back with an error).
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub spec: String,
    pub usage: String,
    pub origin: String,
    pub store: String,
    pub description: String,
    pub alias: String,
    pub tags: String,
    pub policy: String,
}

#[derive(Template)]
#[template(path = "new_key.html")]
pub struct NewKeyPage {
    pub c: Chrome,
    pub f: NewKey,
    pub specs: Vec<&'static str>,
    pub usages: Vec<&'static str>,
    pub origins: Vec<&'static str>,
    pub stores: Vec<(String, String)>,
}

/// One section of the key page that may have been refused (shown with AWS's message).
#[derive(Debug, Clone)]
pub enum Part<T> {
    Shown(T),
    Refused(String),
}

/// A rotation of the key's material.
#[derive(Debug, Clone)]
pub struct RotationRow {
    pub material: String,
    pub state: String,
    pub date: String,
    pub kind: String,
    pub import_state: String,
}

/// A grant on the key.
#[derive(Debug, Clone)]
pub struct GrantRow {
    pub id: String,
    pub name: String,
    pub grantee: String,
    pub retiring: String,
    pub operations: String,
    pub constraints: String,
    pub created: String,
}

/// Rotation settings and history.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub enabled: bool,
    pub period: String,
    pub next: String,
    pub history: Part<Vec<RotationRow>>,
}

/// What the key page shows.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub id: String,
    pub arn: String,
    pub aliases: Vec<String>,
    pub state: String,
    pub enabled: bool,
    pub pending_deletion: bool,
    pub deletion: String,
    pub description: String,
    pub created: String,
    pub origin: String,
    pub spec: String,
    pub usage: String,
    pub manager: String,
    pub algorithms: String,
    pub store: String,
    pub material: String,
    pub expiry: String,
    pub managed: bool,
    pub external: bool,
}

#[derive(Template)]
#[template(path = "key.html")]
pub struct KeyPage {
    pub c: Chrome,
    pub k: KeyView,
    pub policy: Part<String>,
    pub policy_draft: Option<String>,
    pub rotation: Option<Part<Rotation>>,
    pub tags: Part<Vec<(String, String)>>,
    pub grants: Part<Vec<GrantRow>>,
    pub public_key: Option<Part<String>>,
    pub last_used: Part<String>,
    pub operations: Vec<&'static str>,
}

#[derive(Template)]
#[template(path = "confirm_delete.html")]
pub struct ConfirmDeletePage {
    pub c: Chrome,
    pub id: String,
    pub name: String,
}

/// An alias row.
#[derive(Debug, Clone)]
pub struct AliasRow {
    pub name: String,
    pub target: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "aliases.html")]
pub struct AliasesPage {
    pub c: Chrome,
    pub rows: Vec<AliasRow>,
}

/// A custom key store row.
#[derive(Debug, Clone)]
pub struct StoreRow {
    pub id: String,
    pub name: String,
    pub cluster: String,
    pub state: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "keystores.html")]
pub struct StoresPage {
    pub c: Chrome,
    pub rows: Vec<StoreRow>,
}

/// An audit event row.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: String,
    pub time: String,
    pub name: String,
    pub source: String,
    pub principal: String,
    pub ip: String,
    pub resources: String,
    pub error: String,
}

/// The latest chain verification run from the console.
#[derive(Debug, Clone)]
pub struct VerifyResult {
    pub at: String,
    pub valid: bool,
    pub summary: String,
}

/// The audit page's filter, as given.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub from: String,
    pub to: String,
    pub event: String,
    pub key: String,
    pub principal: String,
    pub ip: String,
    pub error: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub c: Chrome,
    pub rows: Vec<EventRow>,
    pub f: AuditFilter,
    pub next: Option<String>,
    pub prev: Option<String>,
    pub head: String,
    pub verify: Option<VerifyResult>,
    pub available: bool,
}

/// A bucket row.
#[derive(Debug, Clone)]
pub struct BucketRow {
    pub name: String,
    pub created: String,
    pub encryption: String,
}

#[derive(Template)]
#[template(path = "buckets.html")]
pub struct BucketsPage {
    pub c: Chrome,
    pub available: bool,
    pub rows: Vec<BucketRow>,
}

/// An object row.
#[derive(Debug, Clone)]
pub struct ObjectRow {
    pub key: String,
    pub size: u64,
    pub modified: String,
    pub sse: String,
    pub kms_key: String,
}

#[derive(Template)]
#[template(path = "bucket.html")]
pub struct BucketPage {
    pub c: Chrome,
    pub name: String,
    pub rows: Vec<ObjectRow>,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "event.html")]
pub struct EventPage {
    pub c: Chrome,
    pub id: String,
    pub json: String,
}

#[derive(Template)]
#[template(path = "problem.html")]
pub struct ProblemPage {
    pub c: Chrome,
    pub heading: String,
    pub message: String,
}

/// An HTML response of `page` with `status`.
pub fn html(status: u16, page: &impl Template) -> Response<Full<Bytes>> {
    match page.render() {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            let mut r = Response::new(Full::new(Bytes::from_static(b"page error")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

/// A plain page saying what went wrong (nothing signed in shown).
pub fn problem(status: u16, heading: &str, message: &str) -> Response<Full<Bytes>> {
    html(
        status,
        &ProblemPage {
            c: Chrome {
                title: heading.to_string(),
                ..Chrome::default()
            },
            heading: heading.to_string(),
            message: message.to_string(),
        },
    )
}

/// The embedded style sheet.
pub const STYLE: &str = include_str!("../assets/style.css");
