//! Key rotation: versions, automatic schedule (with the injected clock), limits.

use aws_sdk_kms::types::RotationType;
use keyhold_kms::clock::DAY_MS;

use crate::common::*;

#[tokio::test]
async fn every_version_keeps_decrypting_and_re_encrypt_moves_to_the_newest() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let mut blobs = Vec::new();
    let mut material_ids = Vec::new();
    for i in 0..4u8 {
        let ct = seal(&c, &k, &[i; 8]).await;
        let d = c
            .decrypt()
            .ciphertext_blob(ct.clone())
            .send()
            .await
            .unwrap();
        material_ids.push(d.key_material_id.unwrap());
        blobs.push(ct);
        c.rotate_key_on_demand().key_id(&k).send().await.unwrap();
    }
    material_ids.dedup();
    assert_eq!(material_ids.len(), 4, "each rotation made new material");
    for (i, ct) in blobs.iter().enumerate() {
        let d = c
            .decrypt()
            .ciphertext_blob(ct.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(d.plaintext.unwrap().as_ref(), &[i as u8; 8]);
    }
    let current = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .current_key_material_id
        .unwrap();
    let re = c
        .re_encrypt()
        .ciphertext_blob(blobs[0].clone())
        .destination_key_id(&k)
        .send()
        .await
        .unwrap();
    assert_eq!(
        re.source_key_material_id.as_deref(),
        Some(material_ids[0].as_str())
    );
    assert_eq!(
        re.destination_key_material_id.as_deref(),
        Some(current.as_str())
    );
    let d = c
        .decrypt()
        .ciphertext_blob(re.ciphertext_blob.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(d.key_material_id.as_deref(), Some(current.as_str()));
    let rotations = c.list_key_rotations().key_id(&k).send().await.unwrap();
    assert_eq!(rotations.rotations().len(), 4);
    assert!(rotations
        .rotations()
        .iter()
        .all(|r| r.rotation_type() == Some(&RotationType::OnDemand)));
    let page = c
        .list_key_rotations()
        .key_id(&k)
        .limit(3)
        .send()
        .await
        .unwrap();
    assert!(page.truncated);
    let rest = c
        .list_key_rotations()
        .key_id(&k)
        .marker(page.next_marker.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.rotations().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn automatic_rotation_runs_when_due() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let status = c.get_key_rotation_status().key_id(&k).send().await.unwrap();
    assert!(!status.key_rotation_enabled);
    assert!(status.next_rotation_date.is_none());
    for bad in [89, 2561] {
        let e = c
            .enable_key_rotation()
            .key_id(&k)
            .rotation_period_in_days(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "ValidationException", "{bad}");
    }
    c.enable_key_rotation().key_id(&k).send().await.unwrap();
    let status = c.get_key_rotation_status().key_id(&k).send().await.unwrap();
    assert!(status.key_rotation_enabled);
    assert_eq!(status.rotation_period_in_days, Some(365));
    let created = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .creation_date
        .unwrap()
        .secs();
    let next = status.next_rotation_date.unwrap().secs();
    assert!(
        (next - created - 365 * 86_400).abs() <= 1,
        "{next} {created}"
    );

    let old = seal(&c, &k, b"before").await;
    s.clock.advance_ms(364 * DAY_MS);
    assert_eq!(s.engine.run_due_rotations().unwrap(), 0);
    s.clock.advance_ms(DAY_MS + 1000);
    assert_eq!(s.engine.run_due_rotations().unwrap(), 1);
    assert_eq!(
        s.engine.run_due_rotations().unwrap(),
        0,
        "rotates once per period"
    );
    let rotations = c.list_key_rotations().key_id(&k).send().await.unwrap();
    assert_eq!(rotations.rotations().len(), 1);
    assert_eq!(
        rotations.rotations()[0].rotation_type(),
        Some(&RotationType::Automatic)
    );
    let later = c.get_key_rotation_status().key_id(&k).send().await.unwrap();
    assert!(later.next_rotation_date.unwrap().secs() > next);
    assert_eq!(
        c.decrypt()
            .ciphertext_blob(old)
            .send()
            .await
            .unwrap()
            .plaintext
            .unwrap()
            .as_ref(),
        b"before"
    );

    // A disabled key does not rotate, and refuses rotation changes.
    c.disable_key().key_id(&k).send().await.unwrap();
    s.clock.advance_ms(400 * DAY_MS);
    assert_eq!(s.engine.run_due_rotations().unwrap(), 0);
    let e = c.enable_key_rotation().key_id(&k).send().await.unwrap_err();
    assert_eq!(code(&e), "DisabledException");
    let e = c
        .rotate_key_on_demand()
        .key_id(&k)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DisabledException");
    c.enable_key().key_id(&k).send().await.unwrap();
    assert_eq!(
        s.engine.run_due_rotations().unwrap(),
        1,
        "an overdue rotation happens once enabled"
    );

    c.disable_key_rotation().key_id(&k).send().await.unwrap();
    let status = c.get_key_rotation_status().key_id(&k).send().await.unwrap();
    assert!(!status.key_rotation_enabled);
    s.clock.advance_ms(800 * DAY_MS);
    assert_eq!(s.engine.run_due_rotations().unwrap(), 0);

    c.schedule_key_deletion()
        .key_id(&k)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let e = c.enable_key_rotation().key_id(&k).send().await.unwrap_err();
    assert_eq!(code(&e), "KMSInvalidStateException");
    s.stop().await;
}

#[tokio::test]
async fn on_demand_rotations_are_limited() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    for _ in 0..25 {
        c.rotate_key_on_demand().key_id(&k).send().await.unwrap();
    }
    let e = c
        .rotate_key_on_demand()
        .key_id(&k)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "LimitExceededException");
    let all = c
        .list_key_rotations()
        .key_id(&k)
        .include_key_material(aws_sdk_kms::types::IncludeKeyMaterial::AllKeyMaterial)
        .send()
        .await
        .unwrap();
    assert_eq!(all.rotations().len(), 26);
    s.stop().await;
}

#[tokio::test]
async fn rotation_is_governed_by_the_key_policy() {
    let s = TestServer::start().await;
    let owner = s.client();
    let k = new_key(&owner).await;
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{k}");
    let other = s.client_as(&s.other.0, &s.other.1);
    let e = other
        .get_key_rotation_status()
        .key_id(&arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let e = other
        .rotate_key_on_demand()
        .key_id(&arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    s.stop().await;
}

#[tokio::test]
async fn keys_that_cannot_rotate_report_rotation_disabled() {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    let s = TestServer::start().await;
    let c = s.client();
    for (spec, usage) in [
        (KeySpec::Rsa2048, KeyUsageType::SignVerify),
        (KeySpec::EccNistP256, KeyUsageType::SignVerify),
        (KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac),
    ] {
        let k = new_key_of(&c, spec.clone(), usage).await;
        // As AWS answers, and as the Terraform provider reads on every refresh.
        let status = c.get_key_rotation_status().key_id(&k).send().await.unwrap();
        assert!(!status.key_rotation_enabled, "{spec:?}");
        assert!(status.rotation_period_in_days.is_none());
        // Turning rotation on is still refused.
        let e = c.enable_key_rotation().key_id(&k).send().await.unwrap_err();
        assert_eq!(code(&e), "UnsupportedOperationException", "{spec:?}");
    }
    s.stop().await;
}
