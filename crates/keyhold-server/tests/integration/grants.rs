//! Grants: a second account gets in through a grant, exactly as far as the grant says.

use aws_sdk_kms::types::{GrantConstraints, GrantOperation};

use crate::common::*;

struct Two {
    s: TestServer,
    owner: aws_sdk_kms::Client,
    other: aws_sdk_kms::Client,
    other_arn: String,
    key: String,
    arn: String,
}

async fn two_accounts() -> Two {
    let s = TestServer::start().await;
    let owner = s.client();
    let other = s.client_as(&s.other.0, &s.other.1);
    let other_arn = s
        .engine
        .credential(&s.other.0)
        .unwrap()
        .unwrap()
        .principal
        .arn;
    let key = new_key(&owner).await;
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key}");
    Two {
        s,
        owner,
        other,
        other_arn,
        key,
        arn,
    }
}

#[tokio::test]
async fn a_grant_lets_exactly_its_operations_in_until_revoked() {
    let t = two_accounts().await;
    let e = t
        .other
        .encrypt()
        .key_id(&t.arn)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");

    let g = t
        .owner
        .create_grant()
        .key_id(&t.key)
        .grantee_principal(&t.other_arn)
        .operations(GrantOperation::Encrypt)
        .operations(GrantOperation::Decrypt)
        .send()
        .await
        .unwrap();
    let grant_id = g.grant_id.unwrap();
    let token = g.grant_token.unwrap();
    assert_eq!(grant_id.len(), 64);

    let ct = t
        .other
        .encrypt()
        .key_id(&t.arn)
        .plaintext(blob(b"via grant"))
        .grant_tokens(&token)
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let pt = t
        .other
        .decrypt()
        .ciphertext_blob(ct)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(pt.as_ref(), b"via grant");
    let e = t
        .other
        .generate_data_key()
        .key_id(&t.arn)
        .number_of_bytes(16)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let e = t
        .other
        .describe_key()
        .key_id(&t.arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");

    let listed = t.owner.list_grants().key_id(&t.key).send().await.unwrap();
    assert_eq!(listed.grants().len(), 1);
    let entry = &listed.grants()[0];
    assert_eq!(entry.grant_id(), Some(grant_id.as_str()));
    assert_eq!(entry.grantee_principal(), Some(t.other_arn.as_str()));
    assert_eq!(
        entry.issuing_account(),
        Some(format!("arn:aws:iam::{ACCOUNT}:root").as_str())
    );
    assert_eq!(entry.operations().len(), 2);

    // The grantee may not retire a grant that does not allow it.
    let e = t
        .other
        .retire_grant()
        .grant_token(&token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");

    t.owner
        .revoke_grant()
        .key_id(&t.key)
        .grant_id(&grant_id)
        .send()
        .await
        .unwrap();
    let e = t
        .other
        .encrypt()
        .key_id(&t.arn)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let e = t
        .owner
        .revoke_grant()
        .key_id(&t.key)
        .grant_id(&grant_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    let events = t.s.audit_events();
    assert!(events.iter().any(|e| e["eventName"] == "Decrypt"
        && e["additionalEventData"]["authorization"]
            .as_str()
            .is_some_and(|a| a.contains(&format!("by grant {grant_id}")))));
    t.s.stop().await;
}

#[tokio::test]
async fn grant_constraints_bind_the_encryption_context() {
    let t = two_accounts().await;
    let subset = GrantConstraints::builder()
        .encryption_context_subset("app", "x")
        .build();
    t.owner
        .create_grant()
        .key_id(&t.key)
        .grantee_principal(&t.other_arn)
        .operations(GrantOperation::Encrypt)
        .constraints(subset)
        .send()
        .await
        .unwrap();
    t.other
        .encrypt()
        .key_id(&t.arn)
        .plaintext(blob(b"x"))
        .encryption_context("app", "x")
        .encryption_context("extra", "ok")
        .send()
        .await
        .unwrap();
    for ctx in [None, Some(("app", "y"))] {
        let mut r = t.other.encrypt().key_id(&t.arn).plaintext(blob(b"x"));
        if let Some((k, v)) = ctx {
            r = r.encryption_context(k, v);
        }
        assert_eq!(
            code(&r.send().await.unwrap_err()),
            "AccessDeniedException",
            "{ctx:?}"
        );
    }
    let equals = GrantConstraints::builder()
        .encryption_context_equals("only", "this")
        .build();
    t.owner
        .create_grant()
        .key_id(&t.key)
        .grantee_principal(&t.other_arn)
        .operations(GrantOperation::GenerateDataKey)
        .constraints(equals)
        .send()
        .await
        .unwrap();
    t.other
        .generate_data_key()
        .key_id(&t.arn)
        .number_of_bytes(32)
        .encryption_context("only", "this")
        .send()
        .await
        .unwrap();
    let e = t
        .other
        .generate_data_key()
        .key_id(&t.arn)
        .number_of_bytes(32)
        .encryption_context("only", "this")
        .encryption_context("more", "no")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    t.s.stop().await;
}

#[tokio::test]
async fn retiring_principal_retires_and_name_is_idempotent() {
    let t = two_accounts().await;
    let dev = format!("arn:aws:iam::{ACCOUNT}:user/dev");
    let make = || {
        t.owner
            .create_grant()
            .key_id(&t.key)
            .grantee_principal(&t.other_arn)
            .retiring_principal(&dev)
            .operations(GrantOperation::Decrypt)
            .name("batch-job")
    };
    let a = make().send().await.unwrap();
    let b = make().send().await.unwrap();
    assert_eq!(
        a.grant_id, b.grant_id,
        "same name and parameters: same grant"
    );
    assert_eq!(
        t.owner
            .list_grants()
            .key_id(&t.key)
            .send()
            .await
            .unwrap()
            .grants()
            .len(),
        1
    );
    let retirable = t
        .owner
        .list_retirable_grants()
        .retiring_principal(&dev)
        .send()
        .await
        .unwrap();
    assert_eq!(retirable.grants().len(), 1);
    assert_eq!(retirable.grants()[0].name(), Some("batch-job"));
    t.owner
        .retire_grant()
        .grant_token(a.grant_token.unwrap())
        .send()
        .await
        .unwrap();
    assert!(t
        .owner
        .list_grants()
        .key_id(&t.key)
        .send()
        .await
        .unwrap()
        .grants()
        .is_empty());
    t.s.stop().await;
}

#[tokio::test]
async fn explicit_deny_beats_a_grant() {
    let t = two_accounts().await;
    t.owner
        .create_grant()
        .key_id(&t.key)
        .grantee_principal(&t.other_arn)
        .operations(GrantOperation::Encrypt)
        .send()
        .await
        .unwrap();
    let policy = serde_json::json!({"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": t.other_arn}, "Action": "kms:*", "Resource": "*"},
    ]});
    t.owner
        .put_key_policy()
        .key_id(&t.key)
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    let e = t
        .other
        .encrypt()
        .key_id(&t.arn)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    t.s.stop().await;
}

#[tokio::test]
async fn bad_grants_are_refused_and_change_nothing() {
    let t = two_accounts().await;
    let (status, v) =
        t.s.raw(
            Some("CreateGrant"),
            format!(
                r#"{{"KeyId":"{}","GranteePrincipal":"{}","Operations":["Fly"]}}"#,
                t.key, t.other_arn
            )
            .as_bytes(),
            true,
        )
        .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("ValidationException"))
    );
    let base = || {
        t.owner
            .create_grant()
            .key_id(&t.key)
            .grantee_principal(&t.other_arn)
    };
    let e = base()
        .operations(GrantOperation::Sign)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = base()
        .operations(GrantOperation::DescribeKey)
        .constraints(
            GrantConstraints::builder()
                .encryption_context_subset("a", "b")
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = t
        .owner
        .create_grant()
        .key_id(&t.key)
        .grantee_principal("not-a-principal")
        .operations(GrantOperation::Encrypt)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = t
        .owner
        .encrypt()
        .key_id(&t.key)
        .plaintext(blob(b"x"))
        .grant_tokens("garbage-token")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidGrantTokenException");
    let e = t
        .owner
        .revoke_grant()
        .key_id(&t.key)
        .grant_id("abc")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidGrantIdException");
    // The other account cannot grant itself access.
    let e = t
        .other
        .create_grant()
        .key_id(&t.arn)
        .grantee_principal(&t.other_arn)
        .operations(GrantOperation::Encrypt)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    t.owner.disable_key().key_id(&t.key).send().await.unwrap();
    let e = base()
        .operations(GrantOperation::Encrypt)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DisabledException");
    assert!(t
        .owner
        .list_grants()
        .key_id(&t.key)
        .send()
        .await
        .unwrap()
        .grants()
        .is_empty());
    t.s.stop().await;
}

#[tokio::test]
async fn a_grant_made_through_a_grant_is_at_least_as_strict_as_its_parent() {
    let t = two_accounts().await;
    // The other account may decrypt only with repo=r-1, and may pass that on.
    t.owner
        .create_grant()
        .key_id(&t.key)
        .grantee_principal(&t.other_arn)
        .operations(GrantOperation::Decrypt)
        .operations(GrantOperation::CreateGrant)
        .constraints(
            GrantConstraints::builder()
                .encryption_context_subset("repo", "r-1")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let third = format!("arn:aws:iam::{OTHER_ACCOUNT}:user/third");
    let child = |c: Option<GrantConstraints>| {
        let mut r = t
            .other
            .create_grant()
            .key_id(&t.arn)
            .grantee_principal(&third)
            .operations(GrantOperation::Decrypt);
        if let Some(c) = c {
            r = r.constraints(c);
        }
        r.send()
    };
    // No constraint, another pair, a different value, or an empty map: wider than the parent.
    for c in [
        None,
        Some(
            GrantConstraints::builder()
                .encryption_context_subset("other", "x")
                .build(),
        ),
        Some(
            GrantConstraints::builder()
                .encryption_context_subset("repo", "R-1")
                .build(),
        ),
        Some(
            GrantConstraints::builder()
                .set_encryption_context_equals(Some(Default::default()))
                .build(),
        ),
    ] {
        let e = child(c.clone()).await.unwrap_err();
        assert_eq!(code(&e), "AccessDeniedException", "{c:?}");
    }
    // As strict (keys compare case-insensitively) or stricter: allowed.
    for c in [
        GrantConstraints::builder()
            .encryption_context_subset("REPO", "r-1")
            .build(),
        GrantConstraints::builder()
            .encryption_context_subset("repo", "r-1")
            .encryption_context_subset("branch", "main")
            .build(),
        GrantConstraints::builder()
            .encryption_context_equals("repo", "r-1")
            .build(),
    ] {
        child(Some(c.clone()))
            .await
            .unwrap_or_else(|e| panic!("{c:?}: {e:?}"));
    }
    t.s.stop().await;
}

#[tokio::test]
async fn an_empty_constraint_map_is_no_constraint() {
    let t = two_accounts().await;
    // As the Terraform AWS provider sends it: both maps, the unused one empty.
    t.owner
        .create_grant()
        .key_id(&t.key)
        .grantee_principal(&t.other_arn)
        .operations(GrantOperation::Encrypt)
        .constraints(
            GrantConstraints::builder()
                .encryption_context_equals("app", "x")
                .set_encryption_context_subset(Some(Default::default()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    t.other
        .encrypt()
        .key_id(&t.arn)
        .plaintext(blob(b"x"))
        .encryption_context("App", "x")
        .send()
        .await
        .unwrap();
    let e = t
        .other
        .encrypt()
        .key_id(&t.arn)
        .plaintext(blob(b"x"))
        .encryption_context("app", "X")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    // Both maps empty: no constraint at all.
    t.owner
        .create_grant()
        .key_id(&t.key)
        .grantee_principal(&t.other_arn)
        .operations(GrantOperation::GenerateDataKey)
        .constraints(
            GrantConstraints::builder()
                .set_encryption_context_equals(Some(Default::default()))
                .set_encryption_context_subset(Some(Default::default()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    t.other
        .generate_data_key()
        .key_id(&t.arn)
        .number_of_bytes(16)
        .encryption_context("any", "thing")
        .send()
        .await
        .unwrap();
    let grants = t.owner.list_grants().key_id(&t.key).send().await.unwrap();
    let unconstrained = grants
        .grants()
        .iter()
        .filter(|g| g.constraints().is_none())
        .count();
    assert_eq!(unconstrained, 1);
    t.s.stop().await;
}

/// A grant to a service principal lets that service, calling as itself for the grant's
/// `SourceArn`, use the key; nobody else, and not for another resource.
#[tokio::test]
async fn a_service_principal_grant_admits_only_that_service_for_its_resource() {
    use keyhold_kms::api::{CreateGrantRequest, EncryptRequest, GrantConstraintsDto};
    use keyhold_kms::principal::Principal;
    use keyhold_kms::{Request, RequestMeta};

    let s = TestServer::start().await;
    let key = s
        .client()
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let dev = Principal {
        arn: format!("arn:aws:iam::{ACCOUNT}:user/dev"),
        account: ACCOUNT.into(),
        access_key_id: "test".into(),
    };
    let volume = format!("arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-1");
    let meta = RequestMeta {
        request_id: "r1".into(),
        ..RequestMeta::default()
    };
    s.engine
        .call(
            &dev,
            &meta,
            Request::CreateGrant(CreateGrantRequest {
                key_id: Some(key.clone()),
                grantee_service_principal: Some("ec2.amazonaws.com".into()),
                operations: Some(vec!["Encrypt".into()]),
                constraints: Some(GrantConstraintsDto {
                    source_arn: Some(volume.clone()),
                    ..GrantConstraintsDto::default()
                }),
                ..CreateGrantRequest::default()
            }),
        )
        .unwrap();
    let encrypt = || {
        Request::Encrypt(EncryptRequest {
            key_id: Some(key.clone()),
            plaintext: Some("aGk=".into()),
            ..EncryptRequest::default()
        })
    };
    let for_resource = |arn: Option<&str>| RequestMeta {
        source_arn: arn.map(str::to_string),
        ..meta.clone()
    };
    let ec2 = Principal::service("ec2.amazonaws.com", ACCOUNT);
    let s3 = Principal::service("s3.amazonaws.com", ACCOUNT);
    s.engine
        .call(&ec2, &for_resource(Some(&volume)), encrypt())
        .unwrap();
    for (who, source) in [
        (
            &ec2,
            Some(format!("arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-2")),
        ),
        (&ec2, None),
        (&s3, Some(volume.clone())),
    ] {
        let e = s
            .engine
            .call(who, &for_resource(source.as_deref()), encrypt())
            .unwrap_err();
        assert_eq!(
            e.code.as_str(),
            "AccessDeniedException",
            "{who:?} {source:?}"
        );
    }
    s.stop().await;
}
