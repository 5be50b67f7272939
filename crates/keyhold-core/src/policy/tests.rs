//! Table-driven evaluator tests.

use std::collections::HashMap;

use serde_json::json;

use super::*;

const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const BOB: &str = "arn:aws:iam::444455556666:user/bob";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn ctx<'a>(arn: &'a str, action: &'a str, keys: &[(&str, &[&str])]) -> RequestContext<'a> {
    let account = arn.split(':').nth(4).unwrap();
    RequestContext {
        principal_arn: arn,
        principal_account: account,
        action,
        resource: KEY,
        keys: keys
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect::<HashMap<_, _>>(),
    }
}

fn policy(statements: serde_json::Value) -> PolicyDocument {
    PolicyDocument::parse(&json!({"Version": "2012-10-17", "Statement": statements}).to_string())
        .unwrap()
}

fn allowed(p: &PolicyDocument, c: &RequestContext<'_>) -> &'static str {
    match p.evaluate(c) {
        Decision::Allow(_) => "allow",
        Decision::ExplicitDeny(_) => "deny",
        Decision::ImplicitDeny => "implicit",
    }
}

#[test]
fn default_policy_allows_the_account_and_no_one_else() {
    let p = PolicyDocument::parse(&default_key_policy("111122223333")).unwrap();
    assert_eq!(allowed(&p, &ctx(ALICE, "kms:Encrypt", &[])), "allow");
    assert_eq!(allowed(&p, &ctx(ALICE, "kms:PutKeyPolicy", &[])), "allow");
    assert_eq!(allowed(&p, &ctx(BOB, "kms:Encrypt", &[])), "implicit");
}

#[test]
fn principals_actions_and_explicit_deny() {
    let p = policy(json!([
        {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "bob-use", "Effect": "Allow", "Principal": {"AWS": [BOB]}, "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"},
        {"Sid": "no-delete", "Effect": "Deny", "Principal": "*", "Action": "kms:ScheduleKeyDeletion", "Resource": "*"},
    ]));
    let cases: &[(&str, &str, &str)] = &[
        (ALICE, "kms:Encrypt", "allow"),
        (ALICE, "kms:ScheduleKeyDeletion", "deny"),
        (BOB, "kms:Encrypt", "allow"),
        (BOB, "kms:generatedatakeywithoutplaintext", "allow"),
        (BOB, "kms:DisableKey", "implicit"),
        (BOB, "kms:ScheduleKeyDeletion", "deny"),
        (
            "arn:aws:iam::444455556666:user/carol",
            "kms:Encrypt",
            "implicit",
        ),
    ];
    for (who, action, want) in cases {
        assert_eq!(allowed(&p, &ctx(who, action, &[])), *want, "{who} {action}");
    }
    assert_eq!(
        p.evaluate(&ctx(ALICE, "kms:ScheduleKeyDeletion", &[])),
        Decision::ExplicitDeny(Some("no-delete".into()))
    );
}

#[test]
fn not_action_not_principal_and_resources() {
    let p = policy(json!([
        {"Effect": "Allow", "Principal": "*", "NotAction": ["kms:Put*", "kms:Schedule*"], "Resource": KEY},
        {"Effect": "Deny", "NotPrincipal": {"AWS": ALICE}, "Action": "kms:Decrypt", "Resource": "*"},
        {"Effect": "Allow", "Principal": "*", "Action": "kms:DisableKey", "NotResource": "arn:aws:kms:*:*:key/*"},
    ]));
    assert_eq!(allowed(&p, &ctx(BOB, "kms:Encrypt", &[])), "allow");
    assert_eq!(allowed(&p, &ctx(BOB, "kms:PutKeyPolicy", &[])), "implicit");
    assert_eq!(allowed(&p, &ctx(BOB, "kms:Decrypt", &[])), "deny");
    assert_eq!(allowed(&p, &ctx(ALICE, "kms:Decrypt", &[])), "allow");
    assert_eq!(allowed(&p, &ctx(ALICE, "kms:DisableKey", &[])), "allow");
}

#[test]
fn conditions_table() {
    type Keys<'a> = &'a [(&'a str, &'a [&'a str])];
    let cases: &[(serde_json::Value, Keys<'_>, bool)] = &[
        (
            json!({"StringEquals": {"kms:EncryptionContext:app": "x"}}),
            &[("kms:EncryptionContext:app", &["x"])],
            true,
        ),
        (
            json!({"StringEquals": {"kms:EncryptionContext:app": "x"}}),
            &[("kms:EncryptionContext:app", &["y"])],
            false,
        ),
        (
            json!({"StringEquals": {"kms:EncryptionContext:app": "x"}}),
            &[],
            false,
        ),
        (
            json!({"StringEqualsIfExists": {"kms:EncryptionContext:app": "x"}}),
            &[],
            true,
        ),
        (
            json!({"StringEqualsIfExists": {"kms:EncryptionContext:app": "x"}}),
            &[("kms:EncryptionContext:app", &["y"])],
            false,
        ),
        (
            json!({"StringNotEquals": {"kms:CallerAccount": "111122223333"}}),
            &[],
            true,
        ),
        (
            json!({"StringNotEquals": {"kms:CallerAccount": ["111122223333", "444455556666"]}}),
            &[("kms:CallerAccount", &["444455556666"])],
            false,
        ),
        (
            json!({"StringLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/b*"}}),
            &[("aws:PrincipalArn", &[BOB])],
            true,
        ),
        (
            json!({"StringEqualsIgnoreCase": {"kms:KeySpec": "symmetric_default"}}),
            &[("kms:KeySpec", &["SYMMETRIC_DEFAULT"])],
            true,
        ),
        (
            json!({"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["a", "b"]}}),
            &[("kms:EncryptionContextKeys", &["c", "b"])],
            true,
        ),
        (
            json!({"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["a"]}}),
            &[],
            false,
        ),
        (
            json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["a", "b"]}}),
            &[("kms:EncryptionContextKeys", &["a", "c"])],
            false,
        ),
        (
            json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["a", "b"]}}),
            &[("kms:EncryptionContextKeys", &["b", "a"])],
            true,
        ),
        (
            json!({"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]}}),
            &[],
            true,
        ),
        (
            json!({"Bool": {"kms:GrantIsForAWSResource": true}}),
            &[("kms:GrantIsForAWSResource", &["false"])],
            false,
        ),
        (
            json!({"Bool": {"aws:SecureTransport": "false"}}),
            &[("aws:SecureTransport", &["false"])],
            true,
        ),
        (
            json!({"NumericLessThanEquals": {"kms:ScheduleKeyDeletionPendingWindowInDays": "10"}}),
            &[("kms:ScheduleKeyDeletionPendingWindowInDays", &["7"])],
            true,
        ),
        (
            json!({"NumericGreaterThan": {"kms:ScheduleKeyDeletionPendingWindowInDays": 10}}),
            &[("kms:ScheduleKeyDeletionPendingWindowInDays", &["7"])],
            false,
        ),
        (
            json!({"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}),
            &[("aws:SourceIp", &["127.0.0.1"])],
            true,
        ),
        (
            json!({"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "::1/128"]}}),
            &[("aws:SourceIp", &["127.0.0.1"])],
            false,
        ),
        (
            json!({"NotIpAddress": {"aws:SourceIp": "10.1.0.0/16"}}),
            &[("aws:SourceIp", &["10.2.0.1"])],
            true,
        ),
        (
            json!({"Null": {"kms:EncryptionContext:app": "true"}}),
            &[],
            true,
        ),
        (
            json!({"Null": {"kms:EncryptionContext:app": "false"}}),
            &[],
            false,
        ),
        (
            json!({"StringEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}, "StringEquals ": {}}),
            &[("kms:EncryptionAlgorithm", &["SYMMETRIC_DEFAULT"])],
            true,
        ),
        (
            json!({"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com", "kms:CallerAccount": "111122223333"}}),
            &[("kms:CallerAccount", &["111122223333"])],
            false,
        ),
        (
            json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::444455556666:*"}}),
            &[("aws:PrincipalArn", &[BOB])],
            true,
        ),
    ];
    for (i, (cond, keys, want)) in cases.iter().enumerate() {
        let mut cond = cond.clone();
        // The one case with an odd operator name checks that it is refused at parse.
        if let Some(obj) = cond.as_object_mut() {
            if obj.remove("StringEquals ").is_some() {
                let bad = json!([{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringEquals ": {}}}]);
                assert!(PolicyDocument::parse(&json!({"Statement": bad}).to_string()).is_err());
            }
        }
        let p = policy(
            json!([{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": cond}]),
        );
        let got = allowed(&p, &ctx(BOB, "kms:Encrypt", keys)) == "allow";
        assert_eq!(got, *want, "case {i}: {cond}");
    }
}

#[test]
fn cross_account_needs_the_policy_to_name_the_account() {
    let own = policy(
        json!([{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"}]),
    );
    assert_eq!(allowed(&own, &ctx(BOB, "kms:Decrypt", &[])), "implicit");
    let shared = policy(json!([
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:root"}, "Action": "kms:Decrypt", "Resource": "*"},
    ]));
    assert_eq!(allowed(&shared, &ctx(BOB, "kms:Decrypt", &[])), "allow");
    assert_eq!(allowed(&shared, &ctx(BOB, "kms:Encrypt", &[])), "implicit");
}

#[test]
fn malformed_policies_are_refused() {
    let ok_st = json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"});
    let with = |k: &str, v: serde_json::Value| {
        let mut s = ok_st.clone();
        s[k] = v;
        json!({"Statement": [s]}).to_string()
    };
    let without = |k: &str| {
        let mut s = ok_st.clone();
        s.as_object_mut().unwrap().remove(k);
        json!({"Statement": [s]}).to_string()
    };
    let bad = [
        "not json".to_string(),
        "[]".to_string(),
        json!({"Statement": []}).to_string(),
        json!({"Version": "2020-01-01", "Statement": [ok_st]}).to_string(),
        json!({"Statement": [ok_st], "Extra": 1}).to_string(),
        with("Effect", json!("Maybe")),
        with("Principal", json!({"AWS": "not-an-arn"})),
        with(
            "Principal",
            json!({"AWS": "arn:aws:iam::111122223333:user/*"}),
        ),
        with("Principal", json!({"Martian": "x"})),
        with("Action", json!("Encrypt")),
        with("Action", json!([])),
        with("Condition", json!({"StringEqualz": {"a": "b"}})),
        with(
            "Condition",
            json!({"IpAddress": {"aws:SourceIp": "300.0.0.1"}}),
        ),
        with("NotAction", json!("kms:Encrypt")),
        with("Unknown", json!("x")),
        without("Effect"),
        without("Principal"),
        without("Action"),
        without("Resource"),
    ];
    for b in bad {
        assert!(PolicyDocument::parse(&b).is_err(), "{b}");
    }
    assert!(PolicyDocument::parse(&json!({"Statement": ok_st}).to_string()).is_ok());
}
