//! Asymmetric and HMAC keys through the AWS SDK for Rust.

use aws_sdk_kms::types::{
    DataKeyPairSpec, EncryptionAlgorithmSpec, KeyAgreementAlgorithmSpec, KeySpec, KeyUsageType,
    MacAlgorithmSpec, MessageType, SigningAlgorithmSpec,
};

use crate::common::new_key_of as key;
use crate::common::*;

#[tokio::test]
async fn sign_and_verify_with_every_signing_spec() {
    let s = TestServer::start().await;
    let c = s.client();
    let cases = [
        (KeySpec::Rsa2048, SigningAlgorithmSpec::RsassaPssSha256),
        (KeySpec::Rsa2048, SigningAlgorithmSpec::RsassaPkcs1V15Sha512),
        (KeySpec::EccNistP256, SigningAlgorithmSpec::EcdsaSha256),
        (KeySpec::EccNistP384, SigningAlgorithmSpec::EcdsaSha384),
        (KeySpec::EccNistP521, SigningAlgorithmSpec::EcdsaSha512),
        (KeySpec::EccSecgP256K1, SigningAlgorithmSpec::EcdsaSha256),
        (
            KeySpec::EccNistEdwards25519,
            SigningAlgorithmSpec::Ed25519Sha512,
        ),
        (KeySpec::MlDsa65, SigningAlgorithmSpec::MlDsaShake256),
    ];
    for (spec, alg) in cases {
        let k = key(&c, spec.clone(), KeyUsageType::SignVerify).await;
        let md = c
            .describe_key()
            .key_id(&k)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        assert!(md.signing_algorithms().contains(&alg), "{spec:?}");
        assert!(md.encryption_algorithms().is_empty());
        let sig = c
            .sign()
            .key_id(&k)
            .message(blob(b"release v1.2.3"))
            .signing_algorithm(alg.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(sig.signing_algorithm(), Some(&alg));
        let signature = sig.signature.unwrap();
        let ok = c
            .verify()
            .key_id(&k)
            .message(blob(b"release v1.2.3"))
            .signature(signature.clone())
            .signing_algorithm(alg.clone())
            .send()
            .await
            .unwrap();
        assert!(ok.signature_valid, "{spec:?}");
        let e = c
            .verify()
            .key_id(&k)
            .message(blob(b"release v1.2.4"))
            .signature(signature)
            .signing_algorithm(alg.clone())
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "KMSInvalidSignatureException", "{spec:?}");
        let pk = c.get_public_key().key_id(&k).send().await.unwrap();
        assert!(pk.public_key.unwrap().as_ref().len() > 40);
        assert_eq!(pk.key_usage, Some(KeyUsageType::SignVerify));
    }
    s.stop().await;
}

#[tokio::test]
async fn digest_signing_and_its_limits() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = key(&c, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"payload");
    let sig = c
        .sign()
        .key_id(&k)
        .message(blob(digest.as_ref()))
        .message_type(MessageType::Digest)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap()
        .signature
        .unwrap();
    // A digest signature verifies as a RAW signature of the message.
    c.verify()
        .key_id(&k)
        .message(blob(b"payload"))
        .signature(sig)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap();
    let e = c
        .sign()
        .key_id(&k)
        .message(blob(&[1u8; 20]))
        .message_type(MessageType::Digest)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = c
        .sign()
        .key_id(&k)
        .message(blob(&[1u8; 4097]))
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = c
        .sign()
        .key_id(&k)
        .message(blob(b"x"))
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidKeyUsageException");
    let e = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidKeyUsageException");
    let e = c
        .generate_data_key()
        .key_id(&k)
        .number_of_bytes(16)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidKeyUsageException");
    let e = c.enable_key_rotation().key_id(&k).send().await.unwrap_err();
    assert_eq!(code(&e), "UnsupportedOperationException");
    s.stop().await;
}

#[tokio::test]
async fn rsa_encryption_with_oaep() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = key(&c, KeySpec::Rsa3072, KeyUsageType::EncryptDecrypt).await;
    let md = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.encryption_algorithms().len(), 2);
    for alg in [
        EncryptionAlgorithmSpec::RsaesOaepSha1,
        EncryptionAlgorithmSpec::RsaesOaepSha256,
    ] {
        let ct = c
            .encrypt()
            .key_id(&k)
            .plaintext(blob(b"secret"))
            .encryption_algorithm(alg.clone())
            .send()
            .await
            .unwrap()
            .ciphertext_blob
            .unwrap();
        assert_eq!(ct.as_ref().len(), 384);
        let pt = c
            .decrypt()
            .key_id(&k)
            .ciphertext_blob(ct.clone())
            .encryption_algorithm(alg.clone())
            .send()
            .await
            .unwrap()
            .plaintext
            .unwrap();
        assert_eq!(pt.as_ref(), b"secret");
        let e = c.decrypt().ciphertext_blob(ct).send().await.unwrap_err();
        assert_eq!(code(&e), "InvalidCiphertextException");
    }
    let e = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        "InvalidKeyUsageException",
        "SYMMETRIC_DEFAULT under RSA"
    );
    let e = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(&[0u8; 319]))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException", "over the OAEP limit");
    // ReEncrypt from RSA to a symmetric key.
    let ct = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"move"))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let sym = new_key(&c).await;
    let re = c
        .re_encrypt()
        .ciphertext_blob(ct)
        .source_key_id(&k)
        .source_encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
        .destination_key_id(&sym)
        .send()
        .await
        .unwrap();
    let pt = c
        .decrypt()
        .ciphertext_blob(re.ciphertext_blob.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(pt.plaintext.unwrap().as_ref(), b"move");
    s.stop().await;
}

#[tokio::test]
async fn hmac_keys_generate_and_verify_macs() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = key(&c, KeySpec::Hmac384, KeyUsageType::GenerateVerifyMac).await;
    let md = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.mac_algorithms(), [MacAlgorithmSpec::HmacSha384]);
    let mac = c
        .generate_mac()
        .key_id(&k)
        .message(blob(b"token"))
        .mac_algorithm(MacAlgorithmSpec::HmacSha384)
        .send()
        .await
        .unwrap()
        .mac
        .unwrap();
    assert_eq!(mac.as_ref().len(), 48);
    let ok = c
        .verify_mac()
        .key_id(&k)
        .message(blob(b"token"))
        .mac(mac.clone())
        .mac_algorithm(MacAlgorithmSpec::HmacSha384)
        .send()
        .await
        .unwrap();
    assert!(ok.mac_valid);
    let e = c
        .verify_mac()
        .key_id(&k)
        .message(blob(b"tokem"))
        .mac(mac)
        .mac_algorithm(MacAlgorithmSpec::HmacSha384)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "KMSInvalidMacException");
    let e = c
        .generate_mac()
        .key_id(&k)
        .message(blob(b"token"))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidKeyUsageException");
    let e = c.get_public_key().key_id(&k).send().await.unwrap_err();
    assert_eq!(code(&e), "UnsupportedOperationException");
    let e = c
        .create_key()
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    s.stop().await;
}

#[tokio::test]
async fn data_key_pairs_and_shared_secrets() {
    let s = TestServer::start().await;
    let c = s.client();
    let sym = new_key(&c).await;
    let pair = c
        .generate_data_key_pair()
        .key_id(&sym)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .encryption_context("use", "tls")
        .send()
        .await
        .unwrap();
    let private = pair.private_key_plaintext.unwrap();
    let back = c
        .decrypt()
        .ciphertext_blob(pair.private_key_ciphertext_blob.unwrap())
        .encryption_context("use", "tls")
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(back, private);
    let without = c
        .generate_data_key_pair_without_plaintext()
        .key_id(&sym)
        .key_pair_spec(DataKeyPairSpec::Rsa2048)
        .send()
        .await
        .unwrap();
    assert!(without.public_key.is_some());

    // ECDH between a KMS key and the data key pair agrees with aws-lc-rs on the client side.
    let kms_key = key(&c, KeySpec::EccNistP256, KeyUsageType::KeyAgreement).await;
    let kms_public = c
        .get_public_key()
        .key_id(&kms_key)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap();
    let derived = c
        .derive_shared_secret()
        .key_id(&kms_key)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(pair.public_key.unwrap())
        .send()
        .await
        .unwrap();
    let local = aws_lc_rs::agreement::PrivateKey::from_private_key_der(
        &aws_lc_rs::agreement::ECDH_P256,
        private.as_ref(),
    )
    .unwrap();
    let peer = aws_lc_rs::agreement::UnparsedPublicKey::new(
        &aws_lc_rs::agreement::ECDH_P256,
        kms_public.as_ref(),
    );
    let expected = aws_lc_rs::agreement::agree(&local, peer, (), |s| Ok(s.to_vec())).unwrap();
    assert_eq!(derived.shared_secret.unwrap().as_ref(), expected.as_slice());
    let e = c
        .derive_shared_secret()
        .key_id(&kms_key)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(blob(b"not a key"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    s.stop().await;
}

#[tokio::test]
async fn ml_kem_encapsulation_round_trips() {
    use aws_sdk_kms::primitives::Blob;
    use aws_sdk_kms::types::EncapsulationAlgorithmSpec as Alg;
    let s = TestServer::start().await;
    let c = s.client();
    for (spec, ct_len) in [
        (KeySpec::MlKem512, 768),
        (KeySpec::MlKem768, 1088),
        (KeySpec::MlKem1024, 1568),
    ] {
        let k = key(&c, spec.clone(), KeyUsageType::EncapsulateDecapsulate).await;
        let meta = c
            .describe_key()
            .key_id(&k)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        assert_eq!(meta.encapsulation_algorithms(), [Alg::MlKem]);
        let enc = c
            .encapsulate()
            .key_id(&k)
            .encapsulation_algorithm(Alg::MlKem)
            .send()
            .await
            .unwrap();
        let ct = enc.shared_secret_ciphertext_blob.unwrap();
        assert_eq!(ct.as_ref().len(), ct_len, "{spec:?}");
        let dec = c
            .decapsulate()
            .key_id(&k)
            .shared_secret_ciphertext_blob(ct.clone())
            .encapsulation_algorithm(Alg::MlKem)
            .send()
            .await
            .unwrap();
        assert_eq!(dec.shared_secret.unwrap(), enc.shared_secret.unwrap());
        // A ciphertext of the wrong length is refused; a changed one gives another secret.
        let short = c
            .decapsulate()
            .key_id(&k)
            .shared_secret_ciphertext_blob(Blob::new(&ct.as_ref()[1..]))
            .encapsulation_algorithm(Alg::MlKem)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&short), "InvalidCiphertextException");
    }
    let sym = c
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let e = c
        .encapsulate()
        .key_id(&sym)
        .encapsulation_algorithm(Alg::MlKem)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidKeyUsageException");
}
