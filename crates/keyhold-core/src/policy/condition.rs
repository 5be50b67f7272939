//! The Condition block.
//!
//! Semantics follow IAM: operators in a block, and keys under one operator, are ANDed; the
//! values of one key are ORed (for a negated operator: the request value must match none).
//! A key absent from the request makes a condition false, except that a negated operator is
//! then true, `...IfExists` is then true, `ForAllValues:` is then true and `ForAnyValue:` false.

use std::net::IpAddr;

use serde_json::Value;

use super::wildcard::wildcard_match;
use super::{malformed, PolicyError, RequestContext};

/// The comparison an operator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    Bool,
    IpAddress,
    ArnEquals,
    ArnLike,
    Null,
}

/// How a multi-valued key is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    Single,
    ForAnyValue,
    ForAllValues,
}

/// One condition: an operator, a key and the policy's values for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    base: Base,
    negated: bool,
    if_exists: bool,
    qualifier: Qualifier,
    /// The condition key, lower-cased.
    key: String,
    values: Vec<String>,
}

fn parse_operator(name: &str) -> Option<(Base, bool, bool, Qualifier)> {
    let (qualifier, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
        (Qualifier::ForAnyValue, r)
    } else if let Some(r) = name.strip_prefix("ForAllValues:") {
        (Qualifier::ForAllValues, r)
    } else {
        (Qualifier::Single, name)
    };
    let (rest, if_exists) = match rest.strip_suffix("IfExists") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (base, negated) = match rest {
        "StringEquals" => (Base::StringEquals, false),
        "StringNotEquals" => (Base::StringEquals, true),
        "StringEqualsIgnoreCase" => (Base::StringEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (Base::StringEqualsIgnoreCase, true),
        "StringLike" => (Base::StringLike, false),
        "StringNotLike" => (Base::StringLike, true),
        "NumericEquals" => (Base::NumericEquals, false),
        "NumericNotEquals" => (Base::NumericEquals, true),
        "NumericLessThan" => (Base::NumericLessThan, false),
        "NumericLessThanEquals" => (Base::NumericLessThanEquals, false),
        "NumericGreaterThan" => (Base::NumericGreaterThan, false),
        "NumericGreaterThanEquals" => (Base::NumericGreaterThanEquals, false),
        "Bool" => (Base::Bool, false),
        "IpAddress" => (Base::IpAddress, false),
        "NotIpAddress" => (Base::IpAddress, true),
        "ArnEquals" => (Base::ArnEquals, false),
        "ArnNotEquals" => (Base::ArnEquals, true),
        "ArnLike" => (Base::ArnLike, false),
        "ArnNotLike" => (Base::ArnLike, true),
        "Null" if !if_exists && qualifier == Qualifier::Single => (Base::Null, false),
        _ => return None,
    };
    Some((base, negated, if_exists, qualifier))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses a statement's Condition element.
pub(super) fn parse_block(v: &Value) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(ops) = v else {
        return Err(malformed("Condition must be a JSON object."));
    };
    let mut out = Vec::new();
    for (op, keys) in ops {
        let (base, negated, if_exists, qualifier) = parse_operator(op)
            .ok_or_else(|| malformed(format!("Unknown condition operator {op:?}.")))?;
        let Value::Object(keys) = keys else {
            return Err(malformed(format!(
                "Condition operator {op} must map keys to values."
            )));
        };
        for (key, values) in keys {
            let values = match values {
                Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
                other => scalar(other).map(|s| vec![s]),
            }
            .ok_or_else(|| malformed(format!("Condition values of {key} must be strings.")))?;
            if base == Base::IpAddress {
                if let Some(bad) = values.iter().find(|v| parse_cidr(v).is_none()) {
                    return Err(malformed(format!("Invalid IP address or range {bad:?}.")));
                }
            }
            out.push(Condition {
                base,
                negated,
                if_exists,
                qualifier,
                key: key.to_ascii_lowercase(),
                values,
            });
        }
    }
    Ok(out)
}

/// An IP range (`10.0.0.0/8`, `2001:db8::/32`) or a single address (a full-length range).
fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

fn ip_in(ip: &str, cidr: &str) -> bool {
    match (ip.parse::<IpAddr>(), parse_cidr(cidr)) {
        (Ok(ip), Some(net)) => net.contains(&ip),
        _ => false,
    }
}

fn base_match(base: Base, request: &str, policy: &str) -> bool {
    let num = |s: &str| s.trim().parse::<f64>().ok();
    match base {
        Base::StringEquals | Base::ArnEquals => request == policy,
        Base::StringEqualsIgnoreCase => request.eq_ignore_ascii_case(policy),
        Base::StringLike | Base::ArnLike => wildcard_match(policy, request),
        Base::NumericEquals => matches!((num(request), num(policy)), (Some(a), Some(b)) if a == b),
        Base::NumericLessThan => matches!((num(request), num(policy)), (Some(a), Some(b)) if a < b),
        Base::NumericLessThanEquals => {
            matches!((num(request), num(policy)), (Some(a), Some(b)) if a <= b)
        }
        Base::NumericGreaterThan => {
            matches!((num(request), num(policy)), (Some(a), Some(b)) if a > b)
        }
        Base::NumericGreaterThanEquals => {
            matches!((num(request), num(policy)), (Some(a), Some(b)) if a >= b)
        }
        Base::Bool => request.eq_ignore_ascii_case(policy),
        Base::IpAddress => ip_in(request, policy),
        Base::Null => false,
    }
}

impl Condition {
    /// The condition key this condition tests (lower-cased).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// True when `request_value` satisfies this condition's values.
    fn value_matches(&self, request_value: &str) -> bool {
        let any = self
            .values
            .iter()
            .any(|p| base_match(self.base, request_value, p));
        any != self.negated
    }

    /// Evaluates the condition against a request.
    pub fn evaluate(&self, ctx: &RequestContext<'_>) -> bool {
        let present = ctx.values(&self.key).filter(|v| !v.is_empty());
        if self.base == Base::Null {
            let absent = present.is_none();
            return self
                .values
                .iter()
                .any(|v| v.eq_ignore_ascii_case(if absent { "true" } else { "false" }));
        }
        let Some(values) = present else {
            return match self.qualifier {
                Qualifier::ForAllValues => true,
                Qualifier::ForAnyValue => false,
                Qualifier::Single => self.if_exists || self.negated,
            };
        };
        match self.qualifier {
            Qualifier::ForAllValues => values.iter().all(|v| self.value_matches(v)),
            Qualifier::ForAnyValue | Qualifier::Single => {
                values.iter().any(|v| self.value_matches(v))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_ranges_match_by_prefix() {
        assert!(ip_in("10.1.2.3", "10.0.0.0/8"));
        assert!(ip_in("192.168.1.130", "192.168.1.128/25"));
        assert!(!ip_in("192.168.1.127", "192.168.1.128/25"));
        assert!(ip_in("203.0.113.7", "203.0.113.7"));
        assert!(!ip_in("203.0.113.8", "203.0.113.7"));
        assert!(ip_in("2001:db8::1", "2001:db8::/32"));
        assert!(!ip_in("2001:db9::1", "2001:db8::/32"));
        assert!(ip_in("::1", "::1/128"));
        assert!(!ip_in("127.0.0.1", "::1/128"), "no match across families");
        assert!(!ip_in("not-an-ip", "10.0.0.0/8"));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("300.0.0.1").is_none());
        assert!(ip_in("10.9.9.9", "0.0.0.0/0"));
    }
}
