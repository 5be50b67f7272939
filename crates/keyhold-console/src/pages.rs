//! The console's pages: routing, the sign-in, and each page's engine calls.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use keyhold_kms::api::*;
use keyhold_kms::error::KmsError;
use keyhold_kms::ops::GRANT_OPERATIONS;
use keyhold_kms::principal::Principal;
use keyhold_kms::{Request, RequestMeta, Response as KmsResponse, ServiceRequest};

use crate::session::{self, Lookup, Session};
use crate::views::*;
use crate::{cookie, redirect, Console, Ctx, Out};

/// Keys shown on one page of the list.
const PAGE: usize = 25;
/// Keys looked at, at most, to fill one filtered page.
const SCAN: usize = 500;
/// Audit events on one page.
const EVENTS: usize = 50;

const SPECS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "ECC_NIST_EDWARDS25519",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
];
const USAGES: &[&str] = &[
    "ENCRYPT_DECRYPT",
    "SIGN_VERIFY",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
    "ENCAPSULATE_DECAPSULATE",
];
const ORIGINS: &[&str] = &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM"];
const STATES: &[&str] = &[
    "Enabled",
    "Disabled",
    "PendingDeletion",
    "PendingImport",
    "Unavailable",
];

/// A key id from a URL: the console only links ids (36 characters of hex and dashes).
fn key_id_in(path: &str) -> Option<&str> {
    (path.len() == 36 && path.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(path)
}

fn text(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn out(response: Response<Full<Bytes>>) -> Out {
    Out {
        response,
        delay: None,
    }
}

/// AWS's way of showing a refusal: `Code: message`.
fn shown(e: &KmsError) -> String {
    format!("{}: {}", e.code.as_str(), e.message)
}

/// `key=value` lines.
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("{l:?} is not key=value"))
        })
        .collect()
}

/// Percent-encodes a query value.
fn enc(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// The engine calls of one signed-in request.
struct Caller<'a> {
    console: &'a Console,
    principal: Principal,
    meta: RequestMeta,
}

macro_rules! call {
    ($c:expr, $op:ident, $req:expr) => {
        match $c.call(Request::$op($req)) {
            Ok(KmsResponse::$op(r)) => Ok(r),
            Ok(_) => Err(KmsError::internal("unexpected response")),
            Err(e) => Err(e),
        }
    };
}

impl Caller<'_> {
    fn call(&self, r: Request) -> Result<KmsResponse, KmsError> {
        self.console.engine.call(&self.principal, &self.meta, r)
    }

    fn key(&self, id: &str) -> KeyIdRequest {
        KeyIdRequest {
            key_id: Some(id.to_string()),
            ..KeyIdRequest::default()
        }
    }

    fn describe(&self, id: &str) -> Result<KeyMetadata, KmsError> {
        call!(self, DescribeKey, self.key(id)).map(|r| r.key_metadata)
    }

    fn aliases_of(&self, id: Option<&str>) -> Result<Vec<AliasListEntry>, KmsError> {
        let mut all = Vec::new();
        let mut marker = None;
        loop {
            let r = call!(
                self,
                ListAliases,
                ListAliasesRequest {
                    key_id: id.map(str::to_string),
                    limit: Some(100),
                    marker: marker.take(),
                }
            )?;
            all.extend(r.aliases);
            match r.next_marker.filter(|_| r.truncated) {
                Some(m) if all.len() < 10_000 => marker = Some(m),
                _ => return Ok(all),
            }
        }
    }

    fn tags(&self, id: &str) -> Result<Vec<(String, String)>, KmsError> {
        let r = call!(
            self,
            ListResourceTags,
            ListResourceTagsRequest {
                key_id: Some(id.to_string()),
                limit: Some(50),
                marker: None,
            }
        )?;
        Ok(r.tags
            .into_iter()
            .map(|t| {
                (
                    t.tag_key.unwrap_or_default(),
                    t.tag_value.unwrap_or_default(),
                )
            })
            .collect())
    }
}

impl Console {
    pub(crate) fn route(&self, ctx: &Ctx<'_>) -> Out {
        let get = ctx.method == Method::GET || ctx.method == Method::HEAD;
        let post = ctx.method == Method::POST;
        match (ctx.path, get, post) {
            ("/static/style.css", true, _) => {
                return out(text(200, "text/css; charset=utf-8", STYLE));
            }
            ("/signin", true, _) => return out(self.signin_page(ctx, None, 200)),
            ("/signin", _, true) => return self.signin(ctx),
            _ => {}
        }
        let (id, session) = match self.session(ctx) {
            Ok(s) => s,
            Err(Lookup::Expired) => {
                let mut r =
                    self.signin_page(ctx, Some("Your session expired; sign in again."), 401);
                if let Ok(v) = HeaderValue::from_str(&cookie(None, ctx.tls)) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                return out(r);
            }
            Err(Lookup::Unknown) => return out(redirect("/console/signin")),
        };
        if post {
            let token = ctx.field("csrf").unwrap_or("");
            if ctx.foreign_origin || token.is_empty() || !session::same_secret(token, &session.csrf)
            {
                return out(problem(
                    403,
                    "Request refused",
                    "The form did not come from this console (its CSRF token was missing or \
                     wrong, or it came from another site). Nothing was changed.",
                ));
            }
        }
        let who = Who {
            arn: session.principal.arn.clone(),
            account: session.principal.account.clone(),
            csrf: session.csrf.clone(),
        };
        let caller = Caller {
            console: self,
            principal: session.principal.clone(),
            meta: RequestMeta {
                request_id: uuid::Uuid::new_v4().to_string(),
                source_ip: ctx.peer.ip().to_string(),
                user_agent: ctx.user_agent.clone(),
                via_service: None,
                secure_transport: ctx.tls,
                source_arn: None,
            },
        };
        let page = Page {
            console: self,
            ctx,
            who,
            caller,
        };
        let segments: Vec<&str> = ctx.path.trim_start_matches('/').split('/').collect();
        let r = match (segments.as_slice(), get, post) {
            ([""], true, _) => redirect("/console/keys"),
            (["signout"], _, true) => {
                self.sessions.remove(&id);
                let mut r = redirect("/console/signin");
                if let Ok(v) = HeaderValue::from_str(&cookie(None, ctx.tls)) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                r
            }
            (["keys"], true, _) => page.keys(),
            (["keys"], _, true) => page.create_key(),
            (["keys", "new"], true, _) => page.new_key(NewKey::default(), None, 200),
            (["keys", id], true, _) => match key_id_in(id) {
                Some(id) => page.key(id, None, None, 200),
                None => page.not_found(),
            },
            (["keys", id, "delete"], true, _) => match key_id_in(id) {
                Some(id) => page.confirm_delete(id),
                None => page.not_found(),
            },
            (["keys", id, "public-key.pem"], true, _) => match key_id_in(id) {
                Some(id) => page.public_key_file(id),
                None => page.not_found(),
            },
            (["keys", id, action], _, true) => match key_id_in(id) {
                Some(id) => page.key_action(id, action),
                None => page.not_found(),
            },
            (["managed"], true, _) => page.managed(),
            (["aliases"], true, _) => page.aliases(),
            (["keystores"], true, _) => page.keystores(),
            (["buckets"], true, _) => page.buckets(),
            (["buckets", name], true, _) => page.bucket(name),
            (["audit"], true, _) => page.audit(),
            (["audit", "verify"], _, true) => page.verify(),
            (["audit", event], true, _) => page.event(event),
            _ => page.not_found(),
        };
        out(r)
    }

    fn session(&self, ctx: &Ctx<'_>) -> Result<(String, Session), Lookup> {
        let id = ctx.cookie.as_deref().ok_or(Lookup::Unknown)?;
        let s = self.sessions.get(id)?;
        Ok((id.to_string(), s))
    }

    fn chrome(&self, title: &str, who: Option<Who>) -> Chrome {
        Chrome {
            title: title.to_string(),
            region: self.engine.region().to_string(),
            notice: None,
            error: None,
            csrf: who.as_ref().map(|w| w.csrf.clone()).unwrap_or_default(),
            who,
        }
    }

    fn signin_page(
        &self,
        ctx: &Ctx<'_>,
        error: Option<&str>,
        status: u16,
    ) -> Response<Full<Bytes>> {
        let mut c = self.chrome("Sign in", None);
        c.error = error.map(str::to_string);
        html(
            status,
            &SigninPage {
                c,
                access_key_id: ctx.field("access_key_id").unwrap_or("").to_string(),
            },
        )
    }

    /// Checks the credentials like SigV4's (the secret compared in constant time), starts a
    /// session, and audits the sign-in either way; failures from one address are slowed.
    fn signin(&self, ctx: &Ctx<'_>) -> Out {
        let ip = ctx.peer.ip();
        let access_key_id = ctx.field("access_key_id").unwrap_or("").trim();
        let secret = ctx.field("secret_access_key").unwrap_or("");
        let meta = RequestMeta {
            request_id: uuid::Uuid::new_v4().to_string(),
            source_ip: ip.to_string(),
            user_agent: ctx.user_agent.clone(),
            via_service: None,
            secure_transport: ctx.tls,
            source_arn: None,
        };
        if ctx.foreign_origin {
            return out(problem(
                403,
                "Request refused",
                "The sign-in form came from another site.",
            ));
        }
        if self.failures.count(ip) >= session::MAX_FAILURES {
            let _ = self.audit_signin(
                &meta,
                None,
                Some(access_key_id),
                Some("TooManyFailedSignIns"),
            );
            return out(self.signin_page(
                ctx,
                Some("Too many failed sign-ins from your address: wait 15 minutes and try again."),
                429,
            ));
        }
        let found = if access_key_id.is_empty() || access_key_id.len() > 128 {
            None
        } else {
            self.engine.credential(access_key_id).ok().flatten()
        };
        let principal = found.filter(|c| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                c.secret.expose_secret(),
                secret.as_bytes(),
            )
            .is_ok()
        });
        let Some(cred) = principal else {
            let delay = self.failures.fail(ip);
            let _ = self.audit_signin(
                &meta,
                None,
                Some(access_key_id),
                Some("Failed authentication"),
            );
            let mut o = out(self.signin_page(
                ctx,
                Some("The access key ID or the secret access key is wrong."),
                401,
            ));
            o.delay = Some(delay);
            return o;
        };
        self.failures.clear(ip);
        if let Err(e) = self.audit_signin(&meta, Some(&cred.principal), None, None) {
            return out(problem(503, "Sign-in refused", &shown(&e)));
        }
        let Some(id) = self.sessions.create(cred.principal.clone()) else {
            return out(problem(
                500,
                "Sign-in failed",
                "No session could be started.",
            ));
        };
        let mut r = redirect("/console/keys");
        if let Ok(v) = HeaderValue::from_str(&cookie(Some(&id), ctx.tls)) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        out(r)
    }

    /// Audits a sign-in attempt; a sign-in that cannot be audited does not happen.
    fn audit_signin(
        &self,
        meta: &RequestMeta,
        principal: Option<&Principal>,
        claimed: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), KmsError> {
        let claimed: Option<String> = claimed.map(|c| c.chars().take(128).collect());
        let parameters = serde_json::json!({ "ConsoleLogin": if error.is_none() { "Success" } else { "Failure" } });
        self.engine.audit_service_request(
            meta,
            &ServiceRequest {
                event_source: "signin.amazonaws.com",
                event_name: "ConsoleLogin",
                principal,
                claimed_access_key_id: claimed.as_deref(),
                parameters: &parameters,
                error: error.map(|e| (e, "The console sign-in failed.")),
                resources: &[],
                read_only: false,
            },
        )
    }
}

/// One signed-in request's page.
struct Page<'a> {
    console: &'a Console,
    ctx: &'a Ctx<'a>,
    who: Who,
    caller: Caller<'a>,
}

impl Page<'_> {
    fn chrome(&self, title: &str) -> Chrome {
        let mut c = self.console.chrome(title, Some(self.who.clone()));
        c.notice = self.ctx.query("done").and_then(notice).map(str::to_string);
        c
    }

    fn not_found(&self) -> Response<Full<Bytes>> {
        let c = self.chrome("Not found");
        html(
            404,
            &ProblemPage {
                c,
                heading: "Not found".into(),
                message: "There is no such page or key in this console.".into(),
            },
        )
    }

    fn refused(&self, title: &str, e: &KmsError) -> Response<Full<Bytes>> {
        let status = if e.code.as_str() == "NotFoundException" {
            404
        } else {
            400
        };
        let c = self.chrome(title);
        html(
            status,
            &ProblemPage {
                c,
                heading: title.into(),
                message: shown(e),
            },
        )
    }

    fn keys(&self) -> Response<Full<Bytes>> {
        let q = self.ctx.query("q").unwrap_or("").trim().to_string();
        let tag = self.ctx.query("tag").unwrap_or("").trim().to_string();
        let state = self
            .ctx
            .query("state")
            .filter(|s| STATES.contains(s))
            .unwrap_or("")
            .to_string();
        let filtering = !q.is_empty() || !tag.is_empty() || !state.is_empty();
        let wanted_tag = tag.split_once('=').map(|(k, v)| (k.trim(), v.trim()));
        let mut marker = self.ctx.query("marker").map(str::to_string);
        let mut rows = Vec::new();
        let mut scanned = 0;
        let mut next = None;
        'pages: loop {
            let listed = match call!(
                self.caller,
                ListKeys,
                ListKeysRequest {
                    limit: Some(if filtering { 100 } else { PAGE as i64 }),
                    marker: marker.clone(),
                }
            ) {
                Ok(r) => r,
                Err(e) => return self.refused("Customer managed keys", &e),
            };
            for entry in &listed.keys {
                scanned += 1;
                let Ok(md) = self.caller.describe(&entry.key_id) else {
                    continue;
                };
                if md.key_manager != "CUSTOMER" {
                    continue;
                }
                let aliases: Vec<String> = self
                    .caller
                    .aliases_of(Some(&entry.key_id))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| a.alias_name)
                    .collect();
                let matches = (q.is_empty()
                    || md.key_id.contains(&q)
                    || aliases.iter().any(|a| a.contains(&q)))
                    && (state.is_empty() || md.key_state == state)
                    && match (&tag.is_empty(), wanted_tag) {
                        (true, _) => true,
                        (false, Some((k, v))) => self
                            .caller
                            .tags(&md.key_id)
                            .unwrap_or_default()
                            .iter()
                            .any(|(tk, tv)| tk == k && tv == v),
                        (false, None) => self
                            .caller
                            .tags(&md.key_id)
                            .unwrap_or_default()
                            .iter()
                            .any(|(tk, _)| *tk == tag),
                    };
                if matches {
                    rows.push(KeyRow {
                        id: md.key_id.clone(),
                        aliases: aliases.join(", "),
                        state: md.key_state.to_string(),
                        spec: md.key_spec.to_string(),
                        usage: md.key_usage.to_string(),
                        created: when(md.creation_date),
                        description: md.description.clone(),
                    });
                }
                let full = rows.len() >= PAGE || (filtering && scanned >= SCAN);
                if full {
                    // Continue after this key next time.
                    let last = &entry.key_id;
                    let rest =
                        listed.truncated || listed.keys.last().is_some_and(|k| &k.key_id != last);
                    if rest {
                        next = Some(last.clone());
                    }
                    break 'pages;
                }
            }
            match listed.next_marker.filter(|_| listed.truncated) {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        let next = next.map(|m| {
            format!(
                "/console/keys?q={}&tag={}&state={}&marker={}",
                enc(&q),
                enc(&tag),
                enc(&state),
                enc(&m)
            )
        });
        let scanned = (filtering && next.is_some())
            .then(|| format!("Looked at {scanned} keys for this page; more may match."));
        html(
            200,
            &KeysPage {
                c: self.chrome("Customer managed keys"),
                rows,
                q,
                tag,
                state,
                states: STATES.to_vec(),
                next,
                scanned,
            },
        )
    }

    fn managed(&self) -> Response<Full<Bytes>> {
        let aliases = match self.caller.aliases_of(None) {
            Ok(a) => a,
            Err(e) => return self.refused("AWS managed keys", &e),
        };
        let mut rows = Vec::new();
        for a in aliases
            .iter()
            .filter(|a| a.alias_name.starts_with("alias/aws/") && !a.target_key_id.is_empty())
        {
            let Ok(md) = self.caller.describe(&a.target_key_id) else {
                continue;
            };
            let service = a.alias_name.trim_start_matches("alias/aws/");
            rows.push(ManagedRow {
                id: md.key_id,
                alias: a.alias_name.clone(),
                service: format!("{service}.amazonaws.com"),
                state: md.key_state.to_string(),
                created: when(md.creation_date),
            });
        }
        html(
            200,
            &ManagedPage {
                c: self.chrome("AWS managed keys"),
                rows,
            },
        )
    }

    fn aliases(&self) -> Response<Full<Bytes>> {
        let aliases = match self.caller.aliases_of(None) {
            Ok(a) => a,
            Err(e) => return self.refused("Aliases", &e),
        };
        let rows = aliases
            .into_iter()
            .map(|a| AliasRow {
                name: a.alias_name,
                target: a.target_key_id,
                created: if a.creation_date > 0.0 {
                    when(a.creation_date)
                } else {
                    String::new()
                },
            })
            .collect();
        html(
            200,
            &AliasesPage {
                c: self.chrome("Aliases"),
                rows,
            },
        )
    }

    fn keystores(&self) -> Response<Full<Bytes>> {
        let r = match call!(
            self.caller,
            DescribeCustomKeyStores,
            DescribeCustomKeyStoresRequest::default()
        ) {
            Ok(r) => r,
            Err(e) => return self.refused("Custom key stores", &e),
        };
        let rows = r
            .custom_key_stores
            .into_iter()
            .map(|s| StoreRow {
                id: s.custom_key_store_id,
                name: s.custom_key_store_name,
                cluster: s.cloud_hsm_cluster_id,
                state: s.connection_state.to_string(),
                created: when(s.creation_date),
            })
            .collect();
        html(
            200,
            &StoresPage {
                c: self.chrome("Custom key stores"),
                rows,
            },
        )
    }

    /// Audits a read of the gateway's catalog as the S3 event it stands for.
    fn audit_s3_read(
        &self,
        event: &str,
        resources: &[String],
        error: Option<&str>,
    ) -> Result<(), KmsError> {
        self.console.engine.audit_service_request(
            &self.caller.meta,
            &ServiceRequest {
                event_source: "s3.amazonaws.com",
                event_name: event,
                principal: Some(&self.caller.principal),
                claimed_access_key_id: None,
                parameters: &serde_json::json!({}),
                error: error.map(|e| (e, "The bucket does not exist or is not yours.")),
                resources,
                read_only: true,
            },
        )
    }

    fn buckets(&self) -> Response<Full<Bytes>> {
        let Some(provider) = self.console.options.buckets.clone() else {
            return html(
                200,
                &BucketsPage {
                    c: self.chrome("Buckets"),
                    available: false,
                    rows: Vec::new(),
                },
            );
        };
        if let Err(e) = self.audit_s3_read("ListBuckets", &[], None) {
            return self.refused("Buckets", &e);
        }
        let mut c = self.chrome("Buckets");
        let rows = match provider.buckets(&self.who.account) {
            Ok(b) => b
                .into_iter()
                .map(|b| BucketRow {
                    name: b.name,
                    created: when(b.created_ms as f64 / 1000.0),
                    encryption: b.encryption,
                })
                .collect(),
            Err(e) => {
                c.error = Some(format!("The buckets could not be read: {e}"));
                Vec::new()
            }
        };
        html(
            200,
            &BucketsPage {
                c,
                available: true,
                rows,
            },
        )
    }

    fn bucket(&self, name: &str) -> Response<Full<Bytes>> {
        let Some(provider) = self.console.options.buckets.clone() else {
            return self.not_found();
        };
        if name.is_empty() || name.len() > 63 {
            return self.not_found();
        }
        let after = self.ctx.query("after");
        let arn = format!("arn:aws:s3:::{name}");
        let listed = match provider.objects(&self.who.account, name, after, PAGE * 4) {
            Ok(Some(o)) => o,
            Ok(None) => {
                let _ = self.audit_s3_read("ListObjectsV2", &[arn], Some("NoSuchBucket"));
                return self.not_found();
            }
            Err(e) => {
                let mut c = self.chrome(name);
                c.error = Some(format!("The bucket could not be read: {e}"));
                return html(
                    500,
                    &BucketPage {
                        c,
                        name: name.to_string(),
                        rows: Vec::new(),
                        next: None,
                    },
                );
            }
        };
        if let Err(e) = self.audit_s3_read("ListObjectsV2", &[arn], None) {
            return self.refused(name, &e);
        }
        let next = (listed.len() == PAGE * 4)
            .then(|| {
                listed
                    .last()
                    .map(|o| format!("/console/buckets/{}?after={}", enc(name), enc(&o.key)))
            })
            .flatten();
        let rows = listed
            .into_iter()
            .map(|o| ObjectRow {
                key: o.key,
                size: o.size,
                modified: when(o.modified_ms as f64 / 1000.0),
                sse: o.sse,
                kms_key: o.kms_key,
            })
            .collect();
        html(
            200,
            &BucketPage {
                c: self.chrome(name),
                name: name.to_string(),
                rows,
                next,
            },
        )
    }

    fn new_key(&self, f: NewKey, error: Option<String>, status: u16) -> Response<Full<Bytes>> {
        let mut c = self.chrome("Create key");
        c.error = error;
        let stores = call!(
            self.caller,
            DescribeCustomKeyStores,
            DescribeCustomKeyStoresRequest::default()
        )
        .map(|r| {
            r.custom_key_stores
                .into_iter()
                .map(|s| (s.custom_key_store_id, s.custom_key_store_name))
                .collect()
        })
        .unwrap_or_default();
        html(
            status,
            &NewKeyPage {
                c,
                f,
                specs: SPECS.to_vec(),
                usages: USAGES.to_vec(),
                origins: ORIGINS.to_vec(),
                stores,
            },
        )
    }

    fn create_key(&self) -> Response<Full<Bytes>> {
        let field = |n: &str| self.ctx.field(n).unwrap_or("").to_string();
        let f = NewKey {
            spec: field("spec"),
            usage: field("usage"),
            origin: field("origin"),
            store: field("store"),
            description: field("description"),
            alias: field("alias").trim().to_string(),
            tags: field("tags"),
            policy: field("policy"),
        };
        let tags = match pairs(&f.tags) {
            Ok(t) => t,
            Err(e) => return self.new_key(f, Some(format!("Tags: {e}")), 400),
        };
        let opt = |s: &str| Some(s.to_string()).filter(|s| !s.trim().is_empty());
        let req = CreateKeyRequest {
            policy: opt(&f.policy),
            description: Some(f.description.clone()),
            key_usage: opt(&f.usage),
            key_spec: opt(&f.spec),
            origin: opt(&f.origin),
            custom_key_store_id: opt(&f.store),
            tags: (!tags.is_empty()).then(|| {
                tags.iter()
                    .map(|(k, v)| TagDto {
                        tag_key: Some(k.clone()),
                        tag_value: Some(v.clone()),
                    })
                    .collect()
            }),
            ..CreateKeyRequest::default()
        };
        let md = match call!(self.caller, CreateKey, req) {
            Ok(r) => r.key_metadata,
            Err(e) => return self.new_key(f, Some(shown(&e)), 400),
        };
        if !f.alias.is_empty() {
            if let Err(e) = call!(
                self.caller,
                CreateAlias,
                AliasRequest {
                    alias_name: Some(f.alias.clone()),
                    target_key_id: Some(md.key_id.clone()),
                }
            ) {
                return self.key(
                    &md.key_id,
                    Some(format!(
                        "The key was created, but not its alias: {}",
                        shown(&e)
                    )),
                    None,
                    400,
                );
            }
        }
        redirect(&format!("/console/keys/{}?done=created", md.key_id))
    }

    fn key(
        &self,
        id: &str,
        error: Option<String>,
        policy_draft: Option<String>,
        status: u16,
    ) -> Response<Full<Bytes>> {
        let md = match self.caller.describe(id) {
            Ok(m) => m,
            Err(e) => return self.refused("Key", &e),
        };
        let aliases: Vec<String> = self
            .caller
            .aliases_of(Some(&md.key_id))
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.alias_name)
            .collect();
        let managed = md.key_manager == "AWS";
        let symmetric = md.key_spec == "SYMMETRIC_DEFAULT";
        let asymmetric = md.key_spec.starts_with("RSA")
            || md.key_spec.starts_with("ECC")
            || md.key_spec.starts_with("ML_")
            || md.key_spec.starts_with("SM2");
        let external = md.origin == "EXTERNAL";
        let algorithms = [
            &md.encryption_algorithms,
            &md.signing_algorithms,
            &md.mac_algorithms,
            &md.key_agreement_algorithms,
            &md.encapsulation_algorithms,
        ]
        .iter()
        .filter_map(|a| a.as_ref())
        .flatten()
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
        let policy = match call!(
            self.caller,
            GetKeyPolicy,
            GetKeyPolicyRequest {
                key_id: Some(md.key_id.clone()),
                policy_name: Some("default".into()),
            }
        ) {
            Ok(p) => Part::Shown(pretty(&p.policy)),
            Err(e) => Part::Refused(shown(&e)),
        };
        let rotation = (symmetric && md.custom_key_store_id.is_none()).then(|| {
            match call!(
                self.caller,
                GetKeyRotationStatus,
                self.caller.key(&md.key_id)
            ) {
                Ok(s) => {
                    let history = match call!(
                        self.caller,
                        ListKeyRotations,
                        ListKeyRotationsRequest {
                            key_id: Some(md.key_id.clone()),
                            include_key_material: Some("ALL_KEY_MATERIAL".into()),
                            limit: Some(1000),
                            marker: None,
                        }
                    ) {
                        Ok(r) => Part::Shown(
                            r.rotations
                                .into_iter()
                                .rev()
                                .map(|x| RotationRow {
                                    material: x.key_material_id,
                                    state: x.key_material_state.to_string(),
                                    date: x.rotation_date.map(when).unwrap_or_default(),
                                    kind: x.rotation_type.unwrap_or_default(),
                                    import_state: x.import_state.unwrap_or_default().to_string(),
                                })
                                .collect(),
                        ),
                        Err(e) => Part::Refused(shown(&e)),
                    };
                    Part::Shown(Rotation {
                        enabled: s.key_rotation_enabled,
                        period: s
                            .rotation_period_in_days
                            .map(|d| d.to_string())
                            .unwrap_or_default(),
                        next: s.next_rotation_date.map(when).unwrap_or_default(),
                        history,
                    })
                }
                Err(e) => Part::Refused(shown(&e)),
            }
        });
        let tags = match self.caller.tags(&md.key_id) {
            Ok(t) => Part::Shown(t),
            Err(e) => Part::Refused(shown(&e)),
        };
        let grants = match call!(
            self.caller,
            ListGrants,
            ListGrantsRequest {
                key_id: Some(md.key_id.clone()),
                limit: Some(100),
                ..ListGrantsRequest::default()
            }
        ) {
            Ok(r) => Part::Shown(r.grants.into_iter().map(grant_row).collect()),
            Err(e) => Part::Refused(shown(&e)),
        };
        let public_key = asymmetric.then(|| match self.public_key_pem(&md.key_id) {
            Ok(p) => Part::Shown(p),
            Err(e) => Part::Refused(shown(&e)),
        });
        let last_used = match call!(self.caller, GetKeyLastUsage, self.caller.key(&md.key_id)) {
            Ok(r) => Part::Shown(match r.key_last_usage {
                Some(u) => format!("{} at {}", u.operation, when(u.timestamp)),
                None => format!(
                    "never, since tracking started {}",
                    when(r.tracking_start_date)
                ),
            }),
            Err(e) => Part::Refused(shown(&e)),
        };
        let pending_deletion = md.key_state == "PendingDeletion";
        let k = KeyView {
            id: md.key_id.clone(),
            arn: md.arn.clone(),
            aliases,
            state: md.key_state.to_string(),
            enabled: md.enabled,
            pending_deletion,
            deletion: md.deletion_date.map(when).unwrap_or_default(),
            description: md.description.clone(),
            created: when(md.creation_date),
            origin: md.origin.to_string(),
            spec: md.key_spec.to_string(),
            usage: md.key_usage.to_string(),
            manager: md.key_manager.to_string(),
            algorithms,
            store: md.custom_key_store_id.clone().unwrap_or_default(),
            material: md.current_key_material_id.clone().unwrap_or_default(),
            expiry: match (&md.expiration_model, md.valid_to) {
                (_, Some(t)) => format!("expires {}", when(t)),
                (Some(_), None) => "does not expire".into(),
                (None, None) => "none imported".into(),
            },
            managed,
            external,
        };
        let title = k.aliases.first().cloned().unwrap_or_else(|| k.id.clone());
        let mut c = self.chrome(&title);
        c.error = error;
        html(
            status,
            &KeyPage {
                c,
                k,
                policy,
                policy_draft,
                rotation,
                tags,
                grants,
                public_key,
                last_used,
                operations: GRANT_OPERATIONS.to_vec(),
            },
        )
    }

    fn public_key_pem(&self, id: &str) -> Result<String, KmsError> {
        let r = call!(self.caller, GetPublicKey, self.caller.key(id))?;
        Ok(keyhold_kms::audit::chain::public_key_pem(&r.public_key))
    }

    fn public_key_file(&self, id: &str) -> Response<Full<Bytes>> {
        match self.public_key_pem(id) {
            Ok(pem) => {
                let mut r = text(200, "application/x-pem-file", pem);
                if let Ok(v) =
                    HeaderValue::from_str(&format!("attachment; filename=\"{id}-public-key.pem\""))
                {
                    r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
                }
                r
            }
            Err(e) => self.refused("Public key", &e),
        }
    }

    fn confirm_delete(&self, id: &str) -> Response<Full<Bytes>> {
        let md = match self.caller.describe(id) {
            Ok(m) => m,
            Err(e) => return self.refused("Schedule key deletion", &e),
        };
        html(
            200,
            &ConfirmDeletePage {
                c: self.chrome("Schedule key deletion"),
                id: md.key_id.clone(),
                name: md.key_id,
            },
        )
    }

    /// A state-changing form on a key's page: done, it goes back to the page with a notice;
    /// refused, the page shows AWS's message and nothing changed.
    fn key_action(&self, id: &str, action: &str) -> Response<Full<Bytes>> {
        let c = &self.caller;
        let field = |n: &str| self.ctx.field(n).unwrap_or("").to_string();
        let key = || Some(id.to_string());
        let done: Result<&str, KmsError> = match action {
            "enable" => call!(c, EnableKey, c.key(id)).map(|_| "enabled"),
            "disable" => call!(c, DisableKey, c.key(id)).map(|_| "disabled"),
            "cancel-deletion" => {
                call!(c, CancelKeyDeletion, c.key(id)).map(|_| "deletion-cancelled")
            }
            "schedule-deletion" => {
                if field("confirm") != "yes" {
                    return self.key(
                        id,
                        Some("Confirm the deletion by ticking the box.".into()),
                        None,
                        400,
                    );
                }
                let days = field("days").trim().parse::<i64>().unwrap_or(0);
                call!(
                    c,
                    ScheduleKeyDeletion,
                    ScheduleKeyDeletionRequest {
                        key_id: key(),
                        pending_window_in_days: Some(days),
                    }
                )
                .map(|_| "deletion-scheduled")
            }
            "rotate" => call!(c, RotateKeyOnDemand, c.key(id)).map(|_| "rotated"),
            "rotation" => {
                if field("enabled") == "yes" {
                    let days = field("period").trim().parse::<i64>().unwrap_or(0);
                    call!(
                        c,
                        EnableKeyRotation,
                        EnableKeyRotationRequest {
                            key_id: key(),
                            rotation_period_days: Some(days),
                        }
                    )
                    .map(|_| "rotation-enabled")
                } else {
                    call!(c, DisableKeyRotation, c.key(id)).map(|_| "rotation-disabled")
                }
            }
            "description" => call!(
                c,
                UpdateKeyDescription,
                UpdateKeyDescriptionRequest {
                    key_id: key(),
                    description: Some(field("description")),
                }
            )
            .map(|_| "description-saved"),
            "policy" => {
                let policy = field("policy");
                match call!(
                    c,
                    PutKeyPolicy,
                    PutKeyPolicyRequest {
                        key_id: key(),
                        policy_name: Some("default".into()),
                        policy: Some(policy.clone()),
                        bypass_policy_lockout_safety_check: None,
                    }
                ) {
                    Ok(_) => Ok("policy-saved"),
                    // The refused draft stays in the editor, beside the message.
                    Err(e) => return self.key(id, Some(shown(&e)), Some(policy), 400),
                }
            }
            "alias-add" => call!(
                c,
                CreateAlias,
                AliasRequest {
                    alias_name: Some(field("alias").trim().to_string()),
                    target_key_id: key(),
                }
            )
            .map(|_| "alias-added"),
            "alias-delete" => call!(
                c,
                DeleteAlias,
                AliasRequest {
                    alias_name: Some(field("alias")),
                    target_key_id: None,
                }
            )
            .map(|_| "alias-deleted"),
            "tag-add" => call!(
                c,
                TagResource,
                TagResourceRequest {
                    key_id: key(),
                    tags: Some(vec![TagDto {
                        tag_key: Some(field("tag_key")),
                        tag_value: Some(field("tag_value")),
                    }]),
                }
            )
            .map(|_| "tag-saved"),
            "tag-delete" => call!(
                c,
                UntagResource,
                UntagResourceRequest {
                    key_id: key(),
                    tag_keys: Some(vec![field("tag_key")]),
                }
            )
            .map(|_| "tag-removed"),
            "grant-create" => {
                let ctx = match pairs(&field("context")) {
                    Ok(p) => p,
                    Err(e) => {
                        return self.key(id, Some(format!("Encryption context: {e}")), None, 400)
                    }
                };
                let ops: Vec<String> = self
                    .ctx
                    .form
                    .iter()
                    .filter(|(k, _)| k == "op")
                    .map(|(_, v)| v.clone())
                    .collect();
                call!(
                    c,
                    CreateGrant,
                    CreateGrantRequest {
                        key_id: key(),
                        grantee_principal: Some(field("grantee").trim().to_string()),
                        operations: Some(ops),
                        name: Some(field("name")).filter(|n| !n.is_empty()),
                        constraints: (!ctx.is_empty()).then(|| GrantConstraintsDto {
                            encryption_context_subset: Some(ctx.into_iter().collect()),
                            ..GrantConstraintsDto::default()
                        }),
                        ..CreateGrantRequest::default()
                    }
                )
                .map(|_| "grant-created")
            }
            "grant-revoke" => call!(
                c,
                RevokeGrant,
                GrantRefRequest {
                    key_id: key(),
                    grant_id: Some(field("grant_id")),
                    ..GrantRefRequest::default()
                }
            )
            .map(|_| "grant-revoked"),
            _ => return self.not_found(),
        };
        match done {
            Ok(what) => redirect(&format!("/console/keys/{id}?done={what}")),
            Err(e) if e.code.as_str() == "NotFoundException" && action != "alias-delete" => {
                self.refused("Key", &e)
            }
            Err(e) => self.key(id, Some(shown(&e)), None, 400),
        }
    }

    fn audit(&self) -> Response<Full<Bytes>> {
        let q = |n: &str| self.ctx.query(n).unwrap_or("").trim().to_string();
        let f = AuditFilter {
            from: q("from"),
            to: q("to"),
            event: q("event"),
            key: q("key"),
            principal: q("principal"),
            ip: q("ip"),
            error: q("error"),
        };
        let page: usize = self
            .ctx
            .query("page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
            .min(100_000);
        let Some(dir) = self.console.options.audit_dir.clone() else {
            return html(
                200,
                &AuditPage {
                    c: self.chrome("Audit trail"),
                    rows: Vec::new(),
                    f,
                    next: None,
                    prev: None,
                    head: String::new(),
                    verify: None,
                    available: false,
                },
            );
        };
        // A key given by alias is looked up as the caller sees it.
        let key = if f.key.starts_with("alias/") {
            match self.caller.describe(&f.key) {
                Ok(md) => Some(md.key_id),
                Err(e) => {
                    let mut c = self.chrome("Audit trail");
                    c.error = Some(shown(&e));
                    return html(
                        400,
                        &AuditPage {
                            c,
                            rows: Vec::new(),
                            f,
                            next: None,
                            prev: None,
                            head: String::new(),
                            verify: None,
                            available: true,
                        },
                    );
                }
            }
        } else {
            Some(f.key.clone()).filter(|k| !k.is_empty())
        };
        let query = keyhold_kms::audit::verify::Query {
            from: Some(f.from.clone()).filter(|s| !s.is_empty()),
            to: Some(f.to.clone()).filter(|s| !s.is_empty()),
            key,
            principal: Some(f.principal.clone()).filter(|s| !s.is_empty()),
            event_name: Some(f.event.clone()).filter(|s| !s.is_empty()),
            error_code: Some(f.error.clone()).filter(|s| !s.is_empty()),
            source_ip: Some(f.ip.clone()).filter(|s| !s.is_empty()),
        };
        let account = self.who.account.clone();
        let mut events: Vec<serde_json::Value> = Vec::new();
        let read = keyhold_kms::audit::verify::query(&dir, &query, |line| {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                if of_account(&v, &account) {
                    events.push(v);
                }
            }
        });
        let mut c = self.chrome("Audit trail");
        if let Err(e) = read {
            c.error = Some(format!("The audit log could not be read: {e}"));
        }
        events.reverse();
        let total = events.len();
        let rows: Vec<EventRow> = events
            .iter()
            .skip(page * EVENTS)
            .take(EVENTS)
            .map(event_row)
            .collect();
        let link = |p: usize| {
            format!(
                "/console/audit?from={}&to={}&event={}&key={}&principal={}&ip={}&error={}&page={p}",
                enc(&f.from),
                enc(&f.to),
                enc(&f.event),
                enc(&f.key),
                enc(&f.principal),
                enc(&f.ip),
                enc(&f.error)
            )
        };
        let next = ((page + 1) * EVENTS < total).then(|| link(page + 1));
        let prev = (page > 0).then(|| link(page - 1));
        let verify = self.console.last_verify.lock().ok().and_then(|v| v.clone());
        html(
            200,
            &AuditPage {
                c,
                rows,
                f,
                next,
                prev,
                head: chain_head(&dir),
                verify,
                available: true,
            },
        )
    }

    fn event(&self, id: &str) -> Response<Full<Bytes>> {
        let Some(dir) = self.console.options.audit_dir.clone() else {
            return self.not_found();
        };
        if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return self.not_found();
        }
        let account = self.who.account.clone();
        let mut found = None;
        let _ = keyhold_kms::audit::verify::query(
            &dir,
            &keyhold_kms::audit::verify::Query::default(),
            |line| {
                if found.is_none() {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                        if v.get("eventID").and_then(|e| e.as_str()) == Some(id)
                            && of_account(&v, &account)
                        {
                            found = Some(v);
                        }
                    }
                }
            },
        );
        match found {
            Some(v) => html(
                200,
                &EventPage {
                    c: self.chrome("Audit event"),
                    id: id.to_string(),
                    json: serde_json::to_string_pretty(&v).unwrap_or_default(),
                },
            ),
            None => self.not_found(),
        }
    }

    fn verify(&self) -> Response<Full<Bytes>> {
        let (Some(dir), Some(key_path)) = (
            self.console.options.audit_dir.clone(),
            self.console.options.audit_public_key.clone(),
        ) else {
            return self.not_found();
        };
        let result = std::fs::read(&key_path)
            .map_err(|e| e.to_string())
            .and_then(|key| {
                keyhold_kms::audit::verify::verify_with(&dir, &key, None, None, true)
                    .map_err(|e| e.to_string())
            });
        let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
        let v = match result {
            Ok(report) => {
                let problems: usize = report.digest_problems.len()
                    + report
                        .segments
                        .iter()
                        .map(|s| s.problems.len())
                        .sum::<usize>();
                VerifyResult {
                    at: when(now),
                    valid: report.is_valid(),
                    summary: format!(
                        "{} segments checked, {problems} problems.",
                        report.segments.len()
                    ),
                }
            }
            Err(e) => VerifyResult {
                at: when(now),
                valid: false,
                summary: format!("The log could not be verified: {e}"),
            },
        };
        if let Ok(mut last) = self.console.last_verify.lock() {
            *last = Some(v);
        }
        redirect("/console/audit?done=verified")
    }
}

/// The notice a finished action shows (only known words; nothing from the URL is echoed).
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "created" => "Key created.",
        "enabled" => "Key enabled.",
        "disabled" => "Key disabled.",
        "deletion-scheduled" => "Key deletion scheduled.",
        "deletion-cancelled" => "Key deletion cancelled; the key is disabled.",
        "rotated" => "Rotation started: new key material is current.",
        "rotation-enabled" => "Automatic rotation enabled.",
        "rotation-disabled" => "Automatic rotation disabled.",
        "description-saved" => "Description saved.",
        "policy-saved" => "Key policy saved.",
        "alias-added" => "Alias added.",
        "alias-deleted" => "Alias deleted.",
        "tag-saved" => "Tag saved.",
        "tag-removed" => "Tag removed.",
        "grant-created" => "Grant created.",
        "grant-revoked" => "Grant revoked.",
        "verified" => "Audit chain verified.",
        _ => return None,
    })
}

/// A policy document, indented for reading (as stored when it is not JSON).
fn pretty(policy: &str) -> String {
    serde_json::from_str::<serde_json::Value>(policy)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| policy.to_string())
}

fn grant_row(g: GrantListEntry) -> GrantRow {
    let constraints = g
        .constraints
        .map(|c| {
            let mut parts = Vec::new();
            if let Some(m) = c.encryption_context_subset {
                parts.push(format!("context contains {}", fmt_map(&m)));
            }
            if let Some(m) = c.encryption_context_equals {
                parts.push(format!("context equals {}", fmt_map(&m)));
            }
            if let Some(s) = c.source_arn {
                parts.push(format!("for {s}"));
            }
            parts.join("; ")
        })
        .unwrap_or_default();
    GrantRow {
        id: g.grant_id,
        name: g.name.unwrap_or_default(),
        grantee: g
            .grantee_principal
            .or(g.grantee_service_principal)
            .unwrap_or_default(),
        retiring: g
            .retiring_principal
            .or(g.retiring_service_principal)
            .unwrap_or_default(),
        operations: g.operations.join(", "),
        constraints,
        created: when(g.creation_date),
    }
}

fn fmt_map(m: &std::collections::BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// True for events of `account`: made by one of its principals, or naming one of its
/// resources.
fn of_account(v: &serde_json::Value, account: &str) -> bool {
    if v.pointer("/userIdentity/accountId")
        .and_then(|a| a.as_str())
        == Some(account)
    {
        return true;
    }
    v.get("resources")
        .and_then(|r| r.as_array())
        .is_some_and(|r| {
            r.iter().any(|e| {
                e.get("accountId").and_then(|a| a.as_str()) == Some(account)
                    || e.get("ARN")
                        .and_then(|a| a.as_str())
                        .is_some_and(|arn| arn.split(':').nth(4) == Some(account))
            })
        })
}

fn event_row(v: &serde_json::Value) -> EventRow {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string()
    };
    let resources = v
        .get("resources")
        .and_then(|r| r.as_array())
        .map(|r| {
            r.iter()
                .filter_map(|e| e.get("ARN").and_then(|a| a.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let principal = match s("/userIdentity/arn") {
        a if !a.is_empty() => a,
        _ => match s("/userIdentity/invokedBy") {
            b if !b.is_empty() => b,
            _ => s("/userIdentity/accessKeyId"),
        },
    };
    let time = s("/eventTime");
    let shown_time =
        time::OffsetDateTime::parse(&time, &time::format_description::well_known::Rfc3339)
            .map(|t| when(t.unix_timestamp() as f64))
            .unwrap_or(time);
    EventRow {
        id: s("/eventID"),
        time: shown_time,
        name: s("/eventName"),
        source: s("/eventSource"),
        principal,
        ip: s("/sourceIPAddress"),
        resources,
        error: s("/errorCode"),
    }
}

/// The newest signed digest of the log: its number and SHA-256.
fn chain_head(dir: &std::path::Path) -> String {
    use keyhold_kms::audit::chain::{digest_name, numbered, sha256_hex};
    let newest = numbered(dir, "digest-", ".json")
        .ok()
        .and_then(|n| n.into_iter().max());
    match newest {
        Some(n) => match std::fs::read(dir.join(digest_name(n))) {
            Ok(bytes) => format!("digest {n}, SHA-256 {}", sha256_hex(&bytes)),
            Err(e) => format!("digest {n} unreadable: {e}"),
        },
        None => "no digest signed yet".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_notices_and_key_ids_are_taken_from_urls() {
        assert_eq!(notice("disabled"), Some("Key disabled."));
        assert_eq!(notice("<script>"), None);
        assert!(key_id_in("1234abcd-12ab-34cd-56ef-1234567890ab").is_some());
        assert!(key_id_in("../../etc/passwd").is_none());
        assert!(key_id_in("<script>alert(1)</script>xxxxxxxxxxxxxxx").is_none());
    }

    #[test]
    fn events_of_an_account() {
        let mine = serde_json::json!({"userIdentity": {"accountId": "111122223333"}});
        let on_mine = serde_json::json!({"userIdentity": {"accountId": "444455556666"},
            "resources": [{"ARN": "arn:aws:kms:us-east-1:111122223333:key/k"}]});
        let other = serde_json::json!({"userIdentity": {"accountId": "444455556666"}});
        assert!(of_account(&mine, "111122223333"));
        assert!(of_account(&on_mine, "111122223333"));
        assert!(!of_account(&other, "111122223333"));
        assert_eq!(pairs("a=b\n\n c = d ").unwrap().len(), 2);
        assert!(pairs("nope").is_err());
    }
}
