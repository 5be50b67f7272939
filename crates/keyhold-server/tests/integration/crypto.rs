//! Encrypt, Decrypt, ReEncrypt, data keys and random bytes through the AWS SDK for Rust.

use aws_sdk_kms::types::{DataKeySpec, EncryptionAlgorithmSpec};

use crate::common::*;

#[tokio::test]
async fn encrypt_decrypt_round_trips_with_context() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let out = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"attack at dawn"))
        .encryption_context("purpose", "test")
        .encryption_context("tenant", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.key_id.as_deref(),
        Some(format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{k}").as_str())
    );
    assert_eq!(
        out.encryption_algorithm,
        Some(EncryptionAlgorithmSpec::SymmetricDefault)
    );
    let ct = out.ciphertext_blob.unwrap();
    assert!(!ct.as_ref().windows(6).any(|w| w == b"attack"));
    let dec = c
        .decrypt()
        .ciphertext_blob(ct.clone())
        .encryption_context("tenant", "acme")
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext.unwrap().as_ref(), b"attack at dawn");
    assert_eq!(dec.key_id, out.key_id);
    assert_eq!(dec.key_material_id.map(|m| m.len()), Some(64));
    s.stop().await;
}

#[tokio::test]
async fn decrypt_with_wrong_context_is_invalid_ciphertext() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let ct = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"x"))
        .encryption_context("a", "1")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    for ctx in [Some(("a", "2")), Some(("b", "1")), None] {
        let mut req = c.decrypt().ciphertext_blob(ct.clone());
        if let Some((k, v)) = ctx {
            req = req.encryption_context(k, v);
        }
        let e = req.send().await.unwrap_err();
        assert_eq!(code(&e), "InvalidCiphertextException", "{ctx:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn altered_blob_is_invalid_ciphertext() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let ct = seal(&c, &k, b"hello").await;
    let bytes = ct.as_ref().to_vec();
    for i in [0, 5, 18, 30, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        let e = c
            .decrypt()
            .ciphertext_blob(blob(&bad))
            .send()
            .await
            .unwrap_err();
        let got = code(&e);
        // A flipped key-id byte names a key that does not exist: still an invalid ciphertext.
        assert_eq!(got, "InvalidCiphertextException", "byte {i}");
    }
    let e = c
        .decrypt()
        .ciphertext_blob(blob(b"short"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidCiphertextException");
    s.stop().await;
}

#[tokio::test]
async fn decrypt_naming_another_key_is_incorrect_key() {
    let s = TestServer::start().await;
    let c = s.client();
    let k1 = new_key(&c).await;
    let k2 = new_key(&c).await;
    let ct = seal(&c, &k1, b"x").await;
    let e = c
        .decrypt()
        .ciphertext_blob(ct.clone())
        .key_id(&k2)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "IncorrectKeyException");
    // Naming the right key, by alias, works.
    c.create_alias()
        .alias_name("alias/one")
        .target_key_id(&k1)
        .send()
        .await
        .unwrap();
    c.decrypt()
        .ciphertext_blob(ct)
        .key_id("alias/one")
        .send()
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test]
async fn generate_data_key_variants() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let dk = c
        .generate_data_key()
        .key_id(&k)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("f", "g")
        .send()
        .await
        .unwrap();
    let plain = dk.plaintext.unwrap();
    assert_eq!(plain.as_ref().len(), 32);
    let back = c
        .decrypt()
        .ciphertext_blob(dk.ciphertext_blob.unwrap())
        .encryption_context("f", "g")
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext.unwrap(), plain);
    let dk = c
        .generate_data_key()
        .key_id(&k)
        .key_spec(DataKeySpec::Aes128)
        .send()
        .await
        .unwrap();
    assert_eq!(dk.plaintext.unwrap().as_ref().len(), 16);
    let dk = c
        .generate_data_key()
        .key_id(&k)
        .number_of_bytes(1024)
        .send()
        .await
        .unwrap();
    assert_eq!(dk.plaintext.unwrap().as_ref().len(), 1024);
    let e = c.generate_data_key().key_id(&k).send().await.unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = c
        .generate_data_key()
        .key_id(&k)
        .number_of_bytes(16)
        .key_spec(DataKeySpec::Aes128)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = c
        .generate_data_key()
        .key_id(&k)
        .number_of_bytes(1025)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let wp = c
        .generate_data_key_without_plaintext()
        .key_id(&k)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    let back = c
        .decrypt()
        .ciphertext_blob(wp.ciphertext_blob.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext.unwrap().as_ref().len(), 32);
    s.stop().await;
}

#[tokio::test]
async fn re_encrypt_moves_ciphertext_to_another_key() {
    let s = TestServer::start().await;
    let c = s.client();
    let k1 = new_key(&c).await;
    let k2 = new_key(&c).await;
    let ct = c
        .encrypt()
        .key_id(&k1)
        .plaintext(blob(b"move me"))
        .encryption_context("a", "1")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let re = c
        .re_encrypt()
        .ciphertext_blob(ct.clone())
        .source_encryption_context("a", "1")
        .destination_key_id(&k2)
        .destination_encryption_context("b", "2")
        .send()
        .await
        .unwrap();
    assert!(re.source_key_id.unwrap().ends_with(&k1));
    assert!(re.key_id.unwrap().ends_with(&k2));
    let dec = c
        .decrypt()
        .ciphertext_blob(re.ciphertext_blob.unwrap())
        .encryption_context("b", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext.unwrap().as_ref(), b"move me");
    assert!(dec.key_id.unwrap().ends_with(&k2));
    let e = c
        .re_encrypt()
        .ciphertext_blob(ct)
        .destination_key_id(&k2)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidCiphertextException");
    s.stop().await;
}

#[tokio::test]
async fn generate_random_lengths() {
    let s = TestServer::start().await;
    let c = s.client();
    let a = c
        .generate_random()
        .number_of_bytes(32)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    let b = c
        .generate_random()
        .number_of_bytes(32)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(a.as_ref().len(), 32);
    assert_ne!(a, b);
    for n in [0, 1025] {
        let e = c
            .generate_random()
            .number_of_bytes(n)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "ValidationException", "{n}");
    }
    s.stop().await;
}

#[tokio::test]
async fn dry_run_reports_success_without_doing_it() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    let e = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"x"))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DryRunOperationException");
    c.disable_key().key_id(&k).send().await.unwrap();
    let e = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"x"))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DisabledException");
    s.stop().await;
}

#[tokio::test]
async fn plaintext_limits() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = new_key(&c).await;
    c.encrypt()
        .key_id(&k)
        .plaintext(blob(&[7u8; 4096]))
        .send()
        .await
        .unwrap();
    let e = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(&[7u8; 4097]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    s.stop().await;
}
