//! Aliases and tags through the AWS SDK for Rust.

use aws_sdk_kms::types::Tag;

use crate::common::*;

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().tag_key(k).tag_value(v).build().unwrap()
}

#[tokio::test]
async fn alias_lifecycle_and_naming_rules() {
    let s = TestServer::start().await;
    let c = s.client();
    let k1 = new_key(&c).await;
    let k2 = new_key(&c).await;
    c.create_alias()
        .alias_name("alias/app")
        .target_key_id(&k1)
        .send()
        .await
        .unwrap();
    let e = c
        .create_alias()
        .alias_name("alias/app")
        .target_key_id(&k2)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AlreadyExistsException");
    let e = c
        .create_alias()
        .alias_name("app")
        .target_key_id(&k1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidAliasNameException");
    let e = c
        .create_alias()
        .alias_name("alias/aws/s3")
        .target_key_id(&k1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidAliasNameException");
    let e = c
        .create_alias()
        .alias_name("alias/bad name")
        .target_key_id(&k1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = c
        .create_alias()
        .alias_name("alias/x")
        .target_key_id("alias/app")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");

    // Every way of naming a key reaches it.
    let alias_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/app");
    let key_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{k1}");
    for name in [
        k1.as_str(),
        key_arn.as_str(),
        "alias/app",
        alias_arn.as_str(),
    ] {
        let md = c
            .describe_key()
            .key_id(name)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        assert_eq!(md.key_id, k1, "{name}");
    }

    c.update_alias()
        .alias_name("alias/app")
        .target_key_id(&k2)
        .send()
        .await
        .unwrap();
    let md = c
        .describe_key()
        .key_id("alias/app")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.key_id, k2);
    let e = c
        .update_alias()
        .alias_name("alias/none")
        .target_key_id(&k2)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");

    let listed = c.list_aliases().send().await.unwrap();
    let entry = listed
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some("alias/app"))
        .unwrap();
    assert_eq!(entry.target_key_id(), Some(k2.as_str()));
    assert_eq!(entry.alias_arn(), Some(alias_arn.as_str()));
    assert!(entry.creation_date().is_some() && entry.last_updated_date().is_some());
    let for_k1 = c.list_aliases().key_id(&k1).send().await.unwrap();
    assert!(for_k1.aliases().is_empty());

    c.delete_alias()
        .alias_name("alias/app")
        .send()
        .await
        .unwrap();
    let e = c
        .describe_key()
        .key_id("alias/app")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    let e = c
        .delete_alias()
        .alias_name("alias/app")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");

    // A key pending deletion cannot gain an alias.
    c.schedule_key_deletion()
        .key_id(&k1)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let e = c
        .create_alias()
        .alias_name("alias/late")
        .target_key_id(&k1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "KMSInvalidStateException");
    s.stop().await;
}

#[tokio::test]
async fn list_aliases_pages() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    for i in 0..5 {
        c.create_alias()
            .alias_name(format!("alias/p{i}"))
            .target_key_id(&k)
            .send()
            .await
            .unwrap();
    }
    let first = c.list_aliases().limit(2).send().await.unwrap();
    assert!(first.truncated);
    let mut names: Vec<String> = first
        .aliases()
        .iter()
        .map(|a| a.alias_name().unwrap().to_string())
        .collect();
    let mut marker = first.next_marker;
    while let Some(m) = marker {
        let p = c.list_aliases().limit(2).marker(m).send().await.unwrap();
        names.extend(
            p.aliases()
                .iter()
                .map(|a| a.alias_name().unwrap().to_string()),
        );
        marker = p.next_marker;
    }
    assert_eq!(
        names,
        ["alias/p0", "alias/p1", "alias/p2", "alias/p3", "alias/p4"]
    );
    let e = c.list_aliases().limit(101).send().await.unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = c.list_aliases().marker("garbage").send().await.unwrap_err();
    assert_eq!(code(&e), "InvalidMarkerException");
    s.stop().await;
}

#[tokio::test]
async fn tags_add_overwrite_remove_and_rules() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    c.tag_resource()
        .key_id(&k)
        .tags(tag("a", "1"))
        .tags(tag("b", "2"))
        .send()
        .await
        .unwrap();
    c.tag_resource()
        .key_id(&k)
        .tags(tag("a", "9"))
        .send()
        .await
        .unwrap();
    let t = c.list_resource_tags().key_id(&k).send().await.unwrap();
    let pairs: Vec<(String, String)> = t
        .tags()
        .iter()
        .map(|t| (t.tag_key.clone(), t.tag_value.clone()))
        .collect();
    assert_eq!(pairs, [("a".into(), "9".into()), ("b".into(), "2".into())]);
    c.untag_resource()
        .key_id(&k)
        .tag_keys("a")
        .tag_keys("absent")
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.list_resource_tags()
            .key_id(&k)
            .send()
            .await
            .unwrap()
            .tags()
            .len(),
        1
    );

    let e = c
        .tag_resource()
        .key_id(&k)
        .tags(tag("aws:reserved", "x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "TagException");
    let e = c
        .tag_resource()
        .key_id(&k)
        .tags(tag(&"k".repeat(129), "x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let mut req = c.tag_resource().key_id(&k);
    for i in 0..50 {
        req = req.tags(tag(&format!("t{i}"), "v"));
    }
    let e = req.send().await.unwrap_err();
    assert_eq!(code(&e), "LimitExceededException");
    let e = c
        .tag_resource()
        .key_id("alias/x")
        .tags(tag("a", "b"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    s.stop().await;
}

#[tokio::test]
async fn list_resource_tags_pages() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let mut req = c.tag_resource().key_id(&k);
    for i in 0..5 {
        req = req.tags(tag(&format!("t{i}"), "v"));
    }
    req.send().await.unwrap();
    let p1 = c
        .list_resource_tags()
        .key_id(&k)
        .limit(3)
        .send()
        .await
        .unwrap();
    assert!(p1.truncated);
    assert_eq!(p1.tags().len(), 3);
    let p2 = c
        .list_resource_tags()
        .key_id(&k)
        .limit(3)
        .marker(p1.next_marker.unwrap())
        .send()
        .await
        .unwrap();
    assert!(!p2.truncated);
    assert_eq!(p2.tags().len(), 2);
    s.stop().await;
}
