//! Several Regions on one server, through the AWS SDK for Rust: each Region is its own, and a
//! multi-Region key's ciphertext opens in its replica's Region.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::MultiRegionKeyType;

use crate::common::TestServer;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

#[tokio::test]
async fn the_rust_sdk_replicates_and_decrypts_in_another_region() {
    let s = TestServer::start_regions(&[US, EU]).await;
    let us = s.client_in("test", "test", US);
    let eu = s.client_in("test", "test", EU);

    let md = us
        .create_key()
        .multi_region(true)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    let id = md.key_id().to_string();
    assert!(id.starts_with("mrk-"));
    assert_eq!(md.multi_region(), Some(true));

    let replica = us
        .replicate_key()
        .key_id(&id)
        .replica_region(EU)
        .description("dr")
        .send()
        .await
        .unwrap();
    let rmd = replica.replica_key_metadata().unwrap();
    assert_eq!(rmd.key_id(), id);
    assert!(rmd.arn().unwrap().starts_with("arn:aws:kms:eu-west-1:"));

    let blob = us
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"rust".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let out = eu.decrypt().ciphertext_blob(blob).send().await.unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"rust");
    assert_eq!(out.key_id(), rmd.arn());

    let cfg = eu
        .describe_key()
        .key_id(&id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .multi_region_configuration
        .unwrap();
    assert_eq!(
        cfg.multi_region_key_type(),
        Some(&MultiRegionKeyType::Replica)
    );
    assert_eq!(cfg.primary_key().unwrap().region(), Some(US));

    // A key of one Region is not found in the other, and a single-Region key is not
    // replicated: the SDK sees AWS's typed errors.
    let single = us.create_key().send().await.unwrap().key_metadata.unwrap();
    let err = eu
        .describe_key()
        .key_id(single.key_id())
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_not_found_exception());
    let err = us
        .replicate_key()
        .key_id(single.key_id())
        .replica_region(EU)
        .send()
        .await
        .unwrap_err();
    assert!(err
        .into_service_error()
        .is_unsupported_operation_exception());
    let err = us
        .replicate_key()
        .key_id(&id)
        .replica_region(EU)
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_already_exists_exception());
    let err = us
        .update_primary_region()
        .key_id(&id)
        .primary_region("ap-south-1")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_not_found_exception());

    // A Region the server does not serve is refused at authentication.
    let elsewhere = s.client_in("test", "test", "ap-south-1");
    let err = elsewhere.list_keys().send().await.unwrap_err();
    assert_eq!(
        aws_sdk_kms::error::ProvideErrorMetadata::code(&err),
        Some("InvalidSignatureException")
    );
    s.stop().await;
}
