//! Key policies: the IAM policy language as AWS KMS uses it.
//!
//! - [`PolicyDocument::parse`] turns policy JSON into typed statements, refusing anything AWS
//!   would call a malformed policy document.
//! - [`PolicyDocument::evaluate`] decides a request: an explicit deny in any matching statement
//!   wins, else an allow in any matching statement allows, else the request is implicitly denied.
//! - [`condition`]: the Condition block (operators, `...IfExists`, `ForAnyValue:` /
//!   `ForAllValues:`), evaluated against a [`RequestContext`].
//!
//! An account principal (`"111122223333"` or `arn:aws:iam::111122223333:root`) matches every
//! principal of that account: keyhold has no IAM policies, so the account's delegation is taken
//! as granted.

pub mod condition;
mod wildcard;

use std::collections::HashMap;

use serde_json::Value;

pub use condition::Condition;
pub use wildcard::wildcard_match;

/// Why a policy document is malformed (AWS's `MalformedPolicyDocumentException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn malformed(msg: impl Into<String>) -> PolicyError {
    PolicyError(msg.into())
}

/// Allow or Deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The statement allows what it matches.
    Allow,
    /// The statement denies what it matches.
    Deny,
}

/// One entry of a Principal element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PrincipalPattern {
    /// `*`: everyone.
    Anyone,
    /// An account id (or its `:root` ARN): every principal of that account.
    Account(String),
    /// One IAM user or role ARN.
    Arn(String),
    /// A service principal (`"Service": "..."`): matches only that service calling as
    /// itself, never an IAM principal.
    Service(String),
}

impl PrincipalPattern {
    fn matches(&self, ctx: &RequestContext<'_>) -> bool {
        match self {
            Self::Anyone => true,
            // A service principal acting in an account is not one of the account's principals.
            Self::Account(a) => a == ctx.principal_account && ctx.principal_arn.starts_with("arn:"),
            Self::Arn(arn) => arn == ctx.principal_arn,
            // A service principal's "ARN" is its name (`ec2.amazonaws.com`); no IAM ARN is.
            Self::Service(s) => s == ctx.principal_arn && !s.starts_with("arn:"),
        }
    }
}

/// A statement's principal element: `Principal` or `NotPrincipal`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PrincipalElement {
    negated: bool,
    patterns: Vec<PrincipalPattern>,
}

/// A list element (`Action`/`NotAction`, `Resource`/`NotResource`) of wildcard patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PatternElement {
    negated: bool,
    patterns: Vec<String>,
}

impl PatternElement {
    fn matches(&self, value: &str, ignore_case: bool) -> bool {
        let hit = self.patterns.iter().any(|p| {
            if ignore_case {
                wildcard_match(&p.to_ascii_lowercase(), &value.to_ascii_lowercase())
            } else {
                wildcard_match(p, value)
            }
        });
        hit != self.negated
    }
}

/// One statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The statement id, if any.
    pub sid: Option<String>,
    /// Allow or Deny.
    pub effect: Effect,
    principal: PrincipalElement,
    action: PatternElement,
    resource: PatternElement,
    conditions: Vec<Condition>,
}

/// The facts of one request that a policy is evaluated against.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    /// The caller's ARN.
    pub principal_arn: &'a str,
    /// The caller's account.
    pub principal_account: &'a str,
    /// The action, e.g. `kms:Encrypt`.
    pub action: &'a str,
    /// The resource, the key's ARN.
    pub resource: &'a str,
    /// Condition keys (names in lower case) and their values.
    pub keys: HashMap<String, Vec<String>>,
}

impl RequestContext<'_> {
    /// Values of a condition key (the name is matched case-insensitively).
    pub fn values(&self, key: &str) -> Option<&[String]> {
        self.keys.get(&key.to_ascii_lowercase()).map(Vec::as_slice)
    }
}

/// The outcome of evaluating a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A statement allows the request (its Sid, if it has one).
    Allow(Option<String>),
    /// A statement explicitly denies the request.
    ExplicitDeny(Option<String>),
    /// No statement allows the request.
    ImplicitDeny,
}

/// A parsed key policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    /// The statements, in document order.
    pub statements: Vec<Statement>,
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| malformed(format!("{what} entries must be strings")))
            })
            .collect(),
        _ => Err(malformed(format!(
            "{what} must be a string or a non-empty list of strings"
        ))),
    }
}

fn parse_principal_value(v: &Value) -> Result<Vec<PrincipalPattern>, PolicyError> {
    const INVALID: &str = "Policy contains a statement with one or more invalid principals.";
    if v.as_str() == Some("*") {
        return Ok(vec![PrincipalPattern::Anyone]);
    }
    let Value::Object(map) = v else {
        return Err(malformed(INVALID));
    };
    let mut out = Vec::new();
    for (kind, value) in map {
        let list = string_list(value, "Principal").map_err(|_| malformed(INVALID))?;
        for p in list {
            let pattern = match kind.as_str() {
                "AWS" => parse_aws_principal(&p).ok_or_else(|| malformed(INVALID))?,
                "Service" | "Federated" | "CanonicalUser" => PrincipalPattern::Service(p),
                _ => return Err(malformed(INVALID)),
            };
            out.push(pattern);
        }
    }
    if out.is_empty() {
        return Err(malformed(INVALID));
    }
    Ok(out)
}

fn parse_aws_principal(p: &str) -> Option<PrincipalPattern> {
    if p == "*" {
        return Some(PrincipalPattern::Anyone);
    }
    if crate::ids::is_account_id(p) {
        return Some(PrincipalPattern::Account(p.to_string()));
    }
    let rest = p.strip_prefix("arn:")?;
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    let [partition, service, region, account, resource] = parts.as_slice() else {
        return None;
    };
    if partition.is_empty() || !region.is_empty() || !crate::ids::is_account_id(account) {
        return None;
    }
    match *service {
        "iam" if *resource == "root" => Some(PrincipalPattern::Account(account.to_string())),
        "iam" if resource.starts_with("user/") || resource.starts_with("role/") => {
            let name = resource.rsplit('/').next().unwrap_or("");
            (!name.is_empty() && !resource.contains('*'))
                .then(|| PrincipalPattern::Arn(p.to_string()))
        }
        "sts" if resource.starts_with("assumed-role/") => {
            Some(PrincipalPattern::Arn(p.to_string()))
        }
        _ => None,
    }
}

fn pattern_element(
    obj: &serde_json::Map<String, Value>,
    name: &str,
    not_name: &str,
    required: bool,
) -> Result<PatternElement, PolicyError> {
    match (obj.get(name), obj.get(not_name)) {
        (Some(_), Some(_)) => Err(malformed(format!(
            "A statement cannot have both {name} and {not_name}."
        ))),
        (Some(v), None) => Ok(PatternElement {
            negated: false,
            patterns: string_list(v, name)?,
        }),
        (None, Some(v)) => Ok(PatternElement {
            negated: true,
            patterns: string_list(v, not_name)?,
        }),
        (None, None) if required => Err(malformed(format!(
            "Policy contains a statement with no {name} or {not_name} element."
        ))),
        (None, None) => Ok(PatternElement {
            negated: false,
            patterns: vec!["*".into()],
        }),
    }
}

fn parse_statement(v: &Value) -> Result<Statement, PolicyError> {
    let Value::Object(obj) = v else {
        return Err(malformed("Each statement must be a JSON object."));
    };
    const KNOWN: &[&str] = &[
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    ];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(malformed(format!(
            "Policy statement has an unknown element {k:?}."
        )));
    }
    let sid = match obj.get("Sid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(malformed("Sid must be a string.")),
    };
    let effect = match obj.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => {
            return Err(malformed(format!(
                "Invalid Effect {other:?}: must be Allow or Deny."
            )))
        }
        None => return Err(malformed("Policy contains a statement with no Effect.")),
    };
    let principal = match (obj.get("Principal"), obj.get("NotPrincipal")) {
        (Some(_), Some(_)) => {
            return Err(malformed(
                "A statement cannot have both Principal and NotPrincipal.",
            ))
        }
        (Some(v), None) => PrincipalElement {
            negated: false,
            patterns: parse_principal_value(v)?,
        },
        (None, Some(v)) => PrincipalElement {
            negated: true,
            patterns: parse_principal_value(v)?,
        },
        (None, None) => {
            return Err(malformed(
                "Policy contains a statement with no Principal or NotPrincipal element.",
            ))
        }
    };
    let action = pattern_element(obj, "Action", "NotAction", true)?;
    for a in &action.patterns {
        if a != "*" && !a.contains(':') {
            return Err(malformed(format!("Invalid action {a:?}.")));
        }
    }
    let resource = pattern_element(obj, "Resource", "NotResource", true)?;
    let conditions = match obj.get("Condition") {
        None => Vec::new(),
        Some(c) => condition::parse_block(c)?,
    };
    Ok(Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        conditions,
    })
}

impl PolicyDocument {
    /// Parses policy JSON.
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        let v: Value = serde_json::from_str(json)
            .map_err(|_| malformed("The policy is not a valid JSON document."))?;
        let Value::Object(obj) = v else {
            return Err(malformed("The policy must be a JSON object."));
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "Version" | "Id" | "Statement"))
        {
            return Err(malformed(format!("Policy has an unknown element {k:?}.")));
        }
        match obj.get("Version") {
            None => {}
            Some(Value::String(v)) if v == "2012-10-17" || v == "2008-10-17" => {}
            Some(_) => return Err(malformed("Version must be 2012-10-17 or 2008-10-17.")),
        }
        let statements = match obj.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .map(parse_statement)
                .collect::<Result<Vec<_>, _>>()?,
            Some(v @ Value::Object(_)) => vec![parse_statement(v)?],
            _ => return Err(malformed("The policy must contain at least one Statement.")),
        };
        Ok(Self { statements })
    }

    /// Decides a request.
    pub fn evaluate(&self, ctx: &RequestContext<'_>) -> Decision {
        let mut allow = None;
        for st in &self.statements {
            if !st.applies(ctx) {
                continue;
            }
            match st.effect {
                Effect::Deny => return Decision::ExplicitDeny(st.sid.clone()),
                Effect::Allow => {
                    if allow.is_none() {
                        allow = Some(st.sid.clone());
                    }
                }
            }
        }
        match allow {
            Some(sid) => Decision::Allow(sid),
            None => Decision::ImplicitDeny,
        }
    }
}

impl Statement {
    fn applies(&self, ctx: &RequestContext<'_>) -> bool {
        let principal_hit = self.principal.patterns.iter().any(|p| p.matches(ctx));
        principal_hit != self.principal.negated
            && self.action.matches(ctx.action, true)
            && self.resource.matches(ctx.resource, false)
            && self.conditions.iter().all(|c| c.evaluate(ctx))
    }
}

/// The policy a key gets when CreateKey names none: the account root may do everything, which
/// delegates to every principal of the account.
pub fn default_key_policy(account: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
            "Action": "kms:*",
            "Resource": "*",
        }],
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests;
