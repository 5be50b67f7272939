//! AWS managed keys: made on first use, usable only through their service, never changeable.

use aws_sdk_kms::types::{GrantOperation, KeyManagerType, KeyState};
use keyhold_kms::api::EncryptRequest;
use keyhold_kms::principal::Principal;
use keyhold_kms::{Request, RequestMeta, Response};

use crate::common::*;

#[tokio::test]
async fn describe_key_on_an_aws_alias_creates_the_managed_key_once() {
    let s = TestServer::start().await;
    let c = s.client();
    let md = c
        .describe_key()
        .key_id("alias/aws/s3")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.key_manager, Some(KeyManagerType::Aws));
    assert_eq!(md.key_state, Some(KeyState::Enabled));
    assert!(md.description.unwrap().contains("S3"));
    let again = c
        .describe_key()
        .key_id("alias/aws/s3")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(again.key_id, md.key_id);
    let aliases = c.list_aliases().send().await.unwrap();
    let a = aliases
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some("alias/aws/s3"))
        .unwrap();
    assert_eq!(a.target_key_id(), Some(md.key_id.as_str()));
    assert!(c
        .list_keys()
        .send()
        .await
        .unwrap()
        .keys()
        .iter()
        .any(|k| k.key_id() == Some(md.key_id.as_str())));
    let rot = c
        .get_key_rotation_status()
        .key_id(&md.key_id)
        .send()
        .await
        .unwrap();
    assert!(rot.key_rotation_enabled);
    assert_eq!(rot.rotation_period_in_days, Some(365));
    let policy = c
        .get_key_policy()
        .key_id(&md.key_id)
        .send()
        .await
        .unwrap()
        .policy
        .unwrap();
    assert!(policy.contains("s3.us-east-1.amazonaws.com"));
    let e = c
        .describe_key()
        .key_id("alias/aws/not-a-service")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    s.stop().await;
}

#[tokio::test]
async fn managed_keys_are_used_only_through_their_service() {
    let s = TestServer::start().await;
    let c = s.client();
    let e = c
        .encrypt()
        .key_id("alias/aws/ebs")
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    // The key exists now, as in AWS KMS after its first use.
    let md = c
        .describe_key()
        .key_id("alias/aws/ebs")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    // Through the service (kms:ViaService set by a keyhold front door) it works.
    let dev = Principal {
        arn: format!("arn:aws:iam::{ACCOUNT}:user/dev"),
        account: ACCOUNT.into(),
        access_key_id: "test".into(),
    };
    let meta = RequestMeta {
        request_id: "r1".into(),
        via_service: Some(format!("ec2.{REGION}.amazonaws.com")),
        ..RequestMeta::default()
    };
    // A service front door calls the engine in-process with a typed request.
    let encrypt = || {
        Request::Encrypt(EncryptRequest {
            key_id: Some("alias/aws/ebs".into()),
            plaintext: Some("aGk=".into()),
            ..EncryptRequest::default()
        })
    };
    let out = s.engine.call(&dev, &meta, encrypt()).unwrap();
    let Response::Encrypt(out) = out else {
        panic!("not an Encrypt response: {out:?}")
    };
    assert!(out.key_id.ends_with(&md.key_id));
    let wrong = RequestMeta {
        via_service: Some(format!("s3.{REGION}.amazonaws.com")),
        ..meta
    };
    let e = s.engine.call(&dev, &wrong, encrypt()).unwrap_err();
    assert_eq!(e.code.as_str(), "AccessDeniedException");
    s.stop().await;
}

#[tokio::test]
async fn managed_keys_cannot_be_changed() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = c
        .describe_key()
        .key_id("alias/aws/codecommit")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let errors = [
        code(&c.disable_key().key_id(&k).send().await.unwrap_err()),
        code(&c.schedule_key_deletion().key_id(&k).send().await.unwrap_err()),
        code(&c.enable_key_rotation().key_id(&k).send().await.unwrap_err()),
        code(&c.disable_key_rotation().key_id(&k).send().await.unwrap_err()),
        code(&c.put_key_policy().key_id(&k).policy(r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}"#).send().await.unwrap_err()),
        code(&c.update_key_description().key_id(&k).description("mine").send().await.unwrap_err()),
        code(&c.create_grant().key_id(&k).grantee_principal(format!("arn:aws:iam::{ACCOUNT}:user/dev")).operations(GrantOperation::Encrypt).send().await.unwrap_err()),
        code(&c.create_alias().alias_name("alias/mine").target_key_id(&k).send().await.unwrap_err()),
        code(&c.rotate_key_on_demand().key_id(&k).send().await.unwrap_err()),
    ];
    assert!(
        errors.iter().all(|e| e == "AccessDeniedException"),
        "{errors:?}"
    );
    let e = c
        .delete_alias()
        .alias_name("alias/aws/codecommit")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidAliasNameException");
    let md = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.key_state, Some(KeyState::Enabled));
    s.stop().await;
}

#[tokio::test]
async fn an_aws_owned_key_seals_for_its_service_and_no_kms_request_reaches_it() {
    use keyhold_core::context::EncryptionContext;
    let s = TestServer::start().await;
    let ctx = EncryptionContext::from_pairs(&[("aws:s3:arn", "arn:aws:s3:::b/k")]);
    let sealed = s.engine.owned_seal("s3", &ctx, b"data key").unwrap();
    let opened = s.engine.owned_open("s3", &sealed, &ctx).unwrap();
    assert_eq!(opened.expose_secret(), b"data key");
    // Bound to its context and to its service.
    let other = EncryptionContext::from_pairs(&[("aws:s3:arn", "arn:aws:s3:::b/other")]);
    assert!(s.engine.owned_open("s3", &sealed, &other).is_err());
    assert!(s.engine.owned_open("ebs", &sealed, &ctx).is_err());

    // The key is in no account: it is neither listed nor reachable by id or ARN.
    let key_id = keyhold_core::blob::parse_header(&sealed)
        .unwrap()
        .key_id
        .to_string();
    let c = s.client();
    let listed = c.list_keys().send().await.unwrap();
    assert!(listed
        .keys()
        .iter()
        .all(|k| k.key_id() != Some(key_id.as_str())));
    for name in [
        key_id.clone(),
        format!("arn:aws:kms:{REGION}:aws:key/{key_id}"),
    ] {
        let e = c.describe_key().key_id(&name).send().await.unwrap_err();
        assert_eq!(code(&e), "NotFoundException", "{name}");
    }
    let e = c
        .decrypt()
        .ciphertext_blob(blob(&sealed))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidCiphertextException");
    // The same key again for the next object.
    let again = s.engine.owned_seal("s3", &ctx, b"k2").unwrap();
    assert_eq!(
        keyhold_core::blob::parse_header(&again).unwrap().key_id,
        keyhold_core::blob::parse_header(&sealed).unwrap().key_id
    );
}
