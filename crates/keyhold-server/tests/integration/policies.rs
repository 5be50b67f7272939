//! Key policies: who may use which key, across two accounts.

use serde_json::json;

use crate::common::*;

fn root_statement(account: &str) -> serde_json::Value {
    json!({"Sid": "root", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")}, "Action": "kms:*", "Resource": "*"})
}

fn policy(statements: serde_json::Value) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

#[tokio::test]
async fn every_key_gets_the_default_policy() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let got = c.get_key_policy().key_id(&k).send().await.unwrap();
    assert_eq!(got.policy_name(), Some("default"));
    let doc: serde_json::Value = serde_json::from_str(got.policy().unwrap()).unwrap();
    assert_eq!(
        doc["Statement"][0]["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:root")
    );
    assert_eq!(doc["Statement"][0]["Action"], "kms:*");
    let names = c.list_key_policies().key_id(&k).send().await.unwrap();
    assert_eq!(names.policy_names(), ["default"]);
    let e = c
        .get_key_policy()
        .key_id(&k)
        .policy_name("other")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    s.stop().await;
}

#[tokio::test]
async fn another_account_is_refused_until_the_policy_lets_it_in() {
    let s = TestServer::start().await;
    let owner = s.client();
    let other = s.client_as(&s.other.0, &s.other.1);
    let k = new_key(&owner).await;
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{k}");

    let e = other
        .encrypt()
        .key_id(&arn)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let msg = e.into_service_error().meta().message().unwrap().to_string();
    assert!(
        msg.contains("is not authorized to perform: kms:Encrypt on resource"),
        "{msg}"
    );
    assert!(msg.contains(&arn), "{msg}");

    owner
        .put_key_policy()
        .key_id(&k)
        .policy(policy(json!([
            root_statement(ACCOUNT),
            {"Sid": "partner", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OTHER_ACCOUNT}:root")},
             "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:DisableKey"], "Resource": "*"},
        ])))
        .send()
        .await
        .unwrap();
    let ct = other
        .encrypt()
        .key_id(&arn)
        .plaintext(blob(b"shared"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let pt = owner
        .decrypt()
        .ciphertext_blob(ct.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pt.plaintext.unwrap().as_ref(), b"shared");
    other.decrypt().ciphertext_blob(ct).send().await.unwrap();
    other.describe_key().key_id(&arn).send().await.unwrap();
    // Not every operation can cross accounts, whatever the policy says.
    let e = other.disable_key().key_id(&arn).send().await.unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    // And not what the policy does not name.
    let e = other
        .generate_data_key()
        .key_id(&arn)
        .number_of_bytes(16)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    s.stop().await;
}

#[tokio::test]
async fn explicit_deny_with_conditions_beats_allow() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    c.put_key_policy()
        .key_id(&k)
        .policy(policy(json!([
            root_statement(ACCOUNT),
            {"Sid": "only-app-x", "Effect": "Deny", "Principal": "*", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*",
             "Condition": {"StringNotEquals": {"kms:EncryptionContext:app": "x"}}},
        ])))
        .send()
        .await
        .unwrap();
    let e = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"a"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    assert!(e
        .into_service_error()
        .meta()
        .message()
        .unwrap()
        .contains("explicit deny"));
    let e = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"a"))
        .encryption_context("app", "y")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let ct = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"a"))
        .encryption_context("app", "x")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    c.decrypt()
        .ciphertext_blob(ct)
        .encryption_context("app", "x")
        .send()
        .await
        .unwrap();
    // The audit log names the statement that decided.
    let events = s.audit_events();
    let denied = events
        .iter()
        .find(|e| e["errorCode"] == "AccessDeniedException")
        .unwrap();
    assert!(denied["additionalEventData"]["authorization"]
        .as_str()
        .unwrap()
        .contains("only-app-x"));
    let allowed = events
        .iter()
        .rev()
        .find(|e| e["eventName"] == "Decrypt")
        .unwrap();
    assert!(allowed["additionalEventData"]["authorization"]
        .as_str()
        .unwrap()
        .contains("allowed kms:Decrypt"));
    s.stop().await;
}

#[tokio::test]
async fn create_key_with_a_policy_and_the_lockout_check() {
    let s = TestServer::start().await;
    let c = s.client();
    let dev = format!("arn:aws:iam::{ACCOUNT}:user/dev");
    // A policy that does not let the caller manage the key is refused...
    let narrow = policy(
        json!([{"Effect": "Allow", "Principal": {"AWS": dev}, "Action": "kms:Encrypt", "Resource": "*"}]),
    );
    let e = c.create_key().policy(&narrow).send().await.unwrap_err();
    assert_eq!(code(&e), "MalformedPolicyDocumentException");
    // ...also when a wildcard principal denies PutKeyPolicy.
    let wildcard_lockout = policy(json!([
        root_statement(ACCOUNT),
        {"Effect": "Deny", "Principal": "*", "Action": "kms:PutKeyPolicy", "Resource": "*"},
    ]));
    let e = c
        .create_key()
        .policy(&wildcard_lockout)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MalformedPolicyDocumentException");
    let keys_before = c.list_keys().send().await.unwrap().keys().len();
    assert_eq!(keys_before, 0, "refused CreateKey calls made no key");
    // ...unless the caller bypasses the check, and is then locked out.
    let md = c
        .create_key()
        .policy(&narrow)
        .bypass_policy_lockout_safety_check(true)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    c.encrypt()
        .key_id(&md.key_id)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap();
    let e = c
        .get_key_policy()
        .key_id(&md.key_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let e = c
        .describe_key()
        .key_id(&md.key_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    s.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_policies_are_refused_and_change_nothing() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let before = c
        .get_key_policy()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .policy
        .unwrap();
    let huge_sid = "x".repeat(33 * 1024);
    let cases = [
        ("{not json".to_string(), "MalformedPolicyDocumentException"),
        (
            policy(
                json!([{"Effect": "Perhaps", "Principal": "*", "Action": "kms:*", "Resource": "*"}]),
            ),
            "MalformedPolicyDocumentException",
        ),
        (
            policy(
                json!([{"Effect": "Allow", "Principal": {"AWS": "nobody"}, "Action": "kms:*", "Resource": "*"}]),
            ),
            "MalformedPolicyDocumentException",
        ),
        (
            policy(json!([{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}])),
            "MalformedPolicyDocumentException",
        ),
        (
            policy(
                json!([{"Sid": huge_sid, "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}]),
            ),
            "LimitExceededException",
        ),
    ];
    for (p, want) in cases {
        let e = c
            .put_key_policy()
            .key_id(&k)
            .policy(&p)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), want, "{}", &p[..p.len().min(80)]);
        let e = c.create_key().policy(&p).send().await.unwrap_err();
        assert_eq!(code(&e), want);
    }
    let after = c
        .get_key_policy()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .policy
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(c.list_keys().send().await.unwrap().keys().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_user_named_in_the_policy_and_a_stranger() {
    let s = TestServer::start().await;
    let owner = s.client();
    let k = new_key(&owner).await;
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{k}");
    // Name one specific user of the other account, with a source-address condition.
    let other_user = s
        .engine
        .credential(&s.other.0)
        .unwrap()
        .unwrap()
        .principal
        .arn;
    owner
        .put_key_policy()
        .key_id(&k)
        .policy(policy(json!([
            root_statement(ACCOUNT),
            {"Effect": "Allow", "Principal": {"AWS": other_user}, "Action": "kms:Encrypt", "Resource": "*",
             "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
        ])))
        .send()
        .await
        .unwrap();
    let other = s.client_as(&s.other.0, &s.other.1);
    other
        .encrypt()
        .key_id(&arn)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap();
    s.stop().await;
}
