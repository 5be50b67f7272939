//! Key lifecycle through the AWS SDK for Rust.

use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, Tag};
use keyhold_kms::clock::DAY_MS;

use crate::common::*;

#[tokio::test]
async fn create_key_returns_full_metadata() {
    let s = TestServer::start().await;
    let c = s.client();
    let md = c
        .create_key()
        .description("payments")
        .tags(
            Tag::builder()
                .tag_key("team")
                .tag_value("core")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.aws_account_id.as_deref(), Some(ACCOUNT));
    assert_eq!(
        md.arn.as_deref(),
        Some(format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{}", md.key_id).as_str())
    );
    assert_eq!(md.description.as_deref(), Some("payments"));
    assert_eq!(md.key_state, Some(KeyState::Enabled));
    assert!(md.enabled);
    assert_eq!(md.key_usage, Some(KeyUsageType::EncryptDecrypt));
    assert_eq!(md.key_spec, Some(KeySpec::SymmetricDefault));
    assert_eq!(md.multi_region, Some(false));
    assert_eq!(md.encryption_algorithms().len(), 1);
    assert!(md.creation_date.is_some());
    let described = c
        .describe_key()
        .key_id(md.arn.clone().unwrap())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(described.key_id, md.key_id);
    s.stop().await;
}

#[tokio::test]
async fn list_keys_pages_with_marker() {
    let s = TestServer::start().await;
    let c = s.client();
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(new_key(&c).await);
    }
    let first = c.list_keys().limit(2).send().await.unwrap();
    assert!(first.truncated);
    assert_eq!(first.keys().len(), 2);
    let mut seen: Vec<String> = first
        .keys()
        .iter()
        .map(|k| k.key_id.clone().unwrap())
        .collect();
    let mut marker = first.next_marker;
    while let Some(m) = marker {
        let page = c.list_keys().limit(2).marker(m).send().await.unwrap();
        seen.extend(page.keys().iter().map(|k| k.key_id.clone().unwrap()));
        marker = page.next_marker;
    }
    seen.sort();
    made.sort();
    assert_eq!(seen, made);
    // Keys of another account are not listed.
    let other = s.client_as(&s.other.0, &s.other.1);
    assert!(other.list_keys().send().await.unwrap().keys().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn disable_enable_and_update_description() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    c.disable_key().key_id(&k).send().await.unwrap();
    let e = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DisabledException");
    let md = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.key_state, Some(KeyState::Disabled));
    assert!(!md.enabled);
    c.enable_key().key_id(&k).send().await.unwrap();
    c.encrypt()
        .key_id(&k)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap();
    c.update_key_description()
        .key_id(&k)
        .description("new words")
        .send()
        .await
        .unwrap();
    let md = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.description.as_deref(), Some("new words"));
    s.stop().await;
}

#[tokio::test]
async fn scheduled_deletion_refuses_use_then_destroys_after_window() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let ct = seal(&c, &k, b"keep").await;
    let e = c
        .schedule_key_deletion()
        .key_id(&k)
        .pending_window_in_days(6)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let out = c
        .schedule_key_deletion()
        .key_id(&k)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(out.key_state, Some(KeyState::PendingDeletion));
    assert_eq!(out.pending_window_in_days, Some(7));
    let md = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.key_state, Some(KeyState::PendingDeletion));
    assert!(md.deletion_date.is_some());
    assert_eq!(md.pending_deletion_window_in_days, Some(7));
    for e in [
        c.encrypt()
            .key_id(&k)
            .plaintext(blob(b"x"))
            .send()
            .await
            .unwrap_err()
            .into_service_error()
            .meta()
            .code()
            .map(str::to_string),
        c.decrypt()
            .ciphertext_blob(ct.clone())
            .send()
            .await
            .unwrap_err()
            .into_service_error()
            .meta()
            .code()
            .map(str::to_string),
        c.enable_key()
            .key_id(&k)
            .send()
            .await
            .unwrap_err()
            .into_service_error()
            .meta()
            .code()
            .map(str::to_string),
        c.schedule_key_deletion()
            .key_id(&k)
            .send()
            .await
            .unwrap_err()
            .into_service_error()
            .meta()
            .code()
            .map(str::to_string),
    ] {
        assert_eq!(e.as_deref(), Some("KMSInvalidStateException"));
    }
    // Cancel, then schedule again: the key comes back Disabled and is usable once enabled.
    c.cancel_key_deletion().key_id(&k).send().await.unwrap();
    let md = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.key_state, Some(KeyState::Disabled));
    let e = c.cancel_key_deletion().key_id(&k).send().await.unwrap_err();
    assert_eq!(code(&e), "KMSInvalidStateException");
    c.schedule_key_deletion()
        .key_id(&k)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();

    s.clock.advance_ms(6 * DAY_MS);
    assert_eq!(s.engine.run_due_deletions().unwrap(), 0);
    s.clock.advance_ms(DAY_MS + 1000);
    assert_eq!(s.engine.run_due_deletions().unwrap(), 1);
    let e = c.describe_key().key_id(&k).send().await.unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    let e = c.decrypt().ciphertext_blob(ct).send().await.unwrap_err();
    assert_eq!(code(&e), "InvalidCiphertextException");
    s.stop().await;
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_in(dir.path()).await;
    let c = s.client();
    let k = new_key(&c).await;
    c.create_alias()
        .alias_name("alias/durable")
        .target_key_id(&k)
        .send()
        .await
        .unwrap();
    c.tag_resource()
        .key_id(&k)
        .tags(Tag::builder().tag_key("k").tag_value("v").build().unwrap())
        .send()
        .await
        .unwrap();
    let ct = seal(&c, "alias/durable", b"persist me").await;
    s.stop().await;

    let s = TestServer::start_in(dir.path()).await;
    let c = s.client();
    let pt = c
        .decrypt()
        .ciphertext_blob(ct)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(pt.as_ref(), b"persist me");
    let md = c
        .describe_key()
        .key_id("alias/durable")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.key_id, k);
    let tags = c.list_resource_tags().key_id(&k).send().await.unwrap();
    assert_eq!(tags.tags().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn keys_of_another_account_are_not_usable() {
    let s = TestServer::start().await;
    let mine = s.client();
    let k = new_key(&mine).await;
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{k}");
    let other = s.client_as(&s.other.0, &s.other.1);
    // By bare id the key is looked up in the caller's own account.
    let e = other.describe_key().key_id(&k).send().await.unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    let e = other
        .encrypt()
        .key_id(&arn)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let ct = seal(&mine, &k, b"x").await;
    let e = other
        .decrypt()
        .ciphertext_blob(ct)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    s.stop().await;
}

#[tokio::test]
async fn key_last_usage_is_tracked_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_in(dir.path()).await;
    let c = s.client();
    let k = new_key(&c).await;
    let fresh = c.get_key_last_usage().key_id(&k).send().await.unwrap();
    assert!(fresh.key_last_usage.is_none());
    assert!(fresh.tracking_start_date.is_some() && fresh.key_creation_date.is_some());
    let ct = seal(&c, &k, b"x").await;
    c.decrypt().ciphertext_blob(ct).send().await.unwrap();
    let _ = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(&[0; 5000]))
        .send()
        .await;
    let used = c.get_key_last_usage().key_id(&k).send().await.unwrap();
    let last = used.key_last_usage.unwrap();
    assert_eq!(
        last.operation().map(|o| o.as_str()),
        Some("Decrypt"),
        "failed calls do not count"
    );
    let event_id = last.cloud_trail_event_id().unwrap().to_string();
    let events = s.audit_events();
    assert!(events
        .iter()
        .any(|e| e["eventID"] == event_id.as_str() && e["eventName"] == "Decrypt"));
    s.stop().await;

    let s = TestServer::start_in(dir.path()).await;
    let c = s.client();
    let after = c.get_key_last_usage().key_id(&k).send().await.unwrap();
    assert_eq!(
        after.key_last_usage.unwrap().cloud_trail_event_id(),
        Some(event_id.as_str())
    );
    let e = c
        .get_key_last_usage()
        .key_id("alias/x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    s.stop().await;
}
