//! Bring your own key: import, re-import, deletion and expiry of key material.

use aws_sdk_kms::primitives::DateTime;
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, KeySpec, KeyState, KeyUsageType, OriginType,
    SigningAlgorithmSpec, WrappingKeySpec,
};
use keyhold_core::import::{wrap, WrappingAlgorithm};
use keyhold_kms::clock::DAY_MS;

use crate::common::*;

async fn external_key(c: &aws_sdk_kms::Client, spec: KeySpec, usage: KeyUsageType) -> String {
    c.create_key()
        .origin(OriginType::External)
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

/// Gets import parameters and wraps `material` with them.
async fn wrapped(
    c: &aws_sdk_kms::Client,
    key: &str,
    alg: AlgorithmSpec,
    material: &[u8],
) -> (aws_sdk_kms::primitives::Blob, aws_sdk_kms::primitives::Blob) {
    let p = c
        .get_parameters_for_import()
        .key_id(key)
        .wrapping_algorithm(alg.clone())
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap();
    let ours = WrappingAlgorithm::parse(alg.as_str()).unwrap();
    let w = wrap(p.public_key.unwrap().as_ref(), ours, material).unwrap();
    (p.import_token.unwrap(), blob(&w))
}

#[tokio::test]
async fn symmetric_import_with_every_wrapping_algorithm() {
    let s = TestServer::start().await;
    let c = s.client();
    for alg in [
        AlgorithmSpec::RsaesOaepSha1,
        AlgorithmSpec::RsaesOaepSha256,
        AlgorithmSpec::RsaAesKeyWrapSha1,
        AlgorithmSpec::RsaAesKeyWrapSha256,
    ] {
        let k = external_key(&c, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
        let md = c
            .describe_key()
            .key_id(&k)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        assert_eq!(md.key_state, Some(KeyState::PendingImport));
        assert_eq!(md.origin, Some(OriginType::External));
        let e = c
            .encrypt()
            .key_id(&k)
            .plaintext(blob(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "KMSInvalidStateException");
        let (token, material) = wrapped(&c, &k, alg.clone(), &[0x42; 32]).await;
        c.import_key_material()
            .key_id(&k)
            .import_token(token)
            .encrypted_key_material(material)
            .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
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
        assert_eq!(md.key_state, Some(KeyState::Enabled), "{alg:?}");
        assert_eq!(
            md.expiration_model,
            Some(ExpirationModelType::KeyMaterialDoesNotExpire)
        );
        let ct = seal(&c, &k, b"imported").await;
        let pt = c
            .decrypt()
            .ciphertext_blob(ct)
            .send()
            .await
            .unwrap()
            .plaintext
            .unwrap();
        assert_eq!(pt.as_ref(), b"imported");
    }
    s.stop().await;
}

#[tokio::test]
async fn reimport_delete_and_expiry() {
    let s = TestServer::start().await;
    let c = s.client();
    let k = external_key(&c, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
    let (token, material) = wrapped(&c, &k, AlgorithmSpec::RsaesOaepSha256, &[7; 32]).await;
    c.import_key_material()
        .key_id(&k)
        .import_token(token)
        .encrypted_key_material(material)
        .send()
        .await
        .unwrap();
    let ct = seal(&c, &k, b"keep").await;

    // Other material is refused, the same material is accepted again.
    let (token, other) = wrapped(&c, &k, AlgorithmSpec::RsaesOaepSha256, &[8; 32]).await;
    let e = c
        .import_key_material()
        .key_id(&k)
        .import_token(token)
        .encrypted_key_material(other)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "IncorrectKeyMaterialException");

    c.delete_imported_key_material()
        .key_id(&k)
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
    assert_eq!(md.key_state, Some(KeyState::PendingImport));
    let e = c
        .decrypt()
        .ciphertext_blob(ct.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "KMSInvalidStateException");

    let (token, same) = wrapped(&c, &k, AlgorithmSpec::RsaesOaepSha256, &[7; 32]).await;
    let valid_to = (s.clock_now_secs() + 3600.0) as i64;
    c.import_key_material()
        .key_id(&k)
        .import_token(token)
        .encrypted_key_material(same)
        .expiration_model(ExpirationModelType::KeyMaterialExpires)
        .valid_to(DateTime::from_secs(valid_to))
        .send()
        .await
        .unwrap();
    let pt = c
        .decrypt()
        .ciphertext_blob(ct.clone())
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(pt.as_ref(), b"keep");
    let md = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.valid_to.map(|d| d.secs()), Some(valid_to));

    // Past ValidTo the material is gone, even before the maintenance task runs.
    s.clock.advance_ms(2 * 3600 * 1000);
    let e = c.decrypt().ciphertext_blob(ct).send().await.unwrap_err();
    assert_eq!(code(&e), "KMSInvalidStateException");
    let md = c
        .describe_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.key_state, Some(KeyState::PendingImport));
    s.stop().await;
}

#[tokio::test]
async fn bad_tokens_and_bad_material() {
    let s = TestServer::start().await;
    let c = s.client();
    let k1 = external_key(&c, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
    let k2 = external_key(&c, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
    let (token1, material1) = wrapped(&c, &k1, AlgorithmSpec::RsaesOaepSha1, &[1; 32]).await;
    // A token for another key.
    let e = c
        .import_key_material()
        .key_id(&k2)
        .import_token(token1.clone())
        .encrypted_key_material(material1.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidImportTokenException");
    // Material that does not unwrap.
    let e = c
        .import_key_material()
        .key_id(&k1)
        .import_token(token1.clone())
        .encrypted_key_material(blob(&[5u8; 256]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidCiphertextException");
    // Material of the wrong size for the key spec.
    let (token, short) = wrapped(&c, &k1, AlgorithmSpec::RsaesOaepSha256, &[1; 16]).await;
    let e = c
        .import_key_material()
        .key_id(&k1)
        .import_token(token)
        .encrypted_key_material(short)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "IncorrectKeyMaterialException");
    // An expired token.
    s.clock.advance_ms(DAY_MS + 1000);
    let e = c
        .import_key_material()
        .key_id(&k1)
        .import_token(token1)
        .encrypted_key_material(material1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ExpiredImportTokenException");
    // Keys with their own material take no import.
    let own = new_key(&c).await;
    let e = c
        .get_parameters_for_import()
        .key_id(&own)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "UnsupportedOperationException");
    let md = c
        .describe_key()
        .key_id(&k1)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(
        md.key_state,
        Some(KeyState::PendingImport),
        "nothing refused changed state"
    );
    s.stop().await;
}

#[tokio::test]
async fn asymmetric_and_hmac_import() {
    let s = TestServer::start().await;
    let c = s.client();
    // An ECC signing key made outside keyhold.
    let local = keyhold_core::asym::generate(keyhold_core::key::KeySpec::EccNistP256).unwrap();
    let k = external_key(&c, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let (token, material) = wrapped(
        &c,
        &k,
        AlgorithmSpec::RsaAesKeyWrapSha256,
        local.expose_secret(),
    )
    .await;
    c.import_key_material()
        .key_id(&k)
        .import_token(token)
        .encrypted_key_material(material)
        .send()
        .await
        .unwrap();
    let public = c
        .get_public_key()
        .key_id(&k)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap();
    let expected =
        keyhold_core::asym::public_key_der(keyhold_core::key::KeySpec::EccNistP256, &local)
            .unwrap();
    assert_eq!(public.as_ref(), expected.as_slice());
    let sig = c
        .sign()
        .key_id(&k)
        .message(blob(b"m"))
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap()
        .signature
        .unwrap();
    assert!(keyhold_core::asym::verify(
        keyhold_core::key::KeySpec::EccNistP256,
        &local,
        keyhold_core::key::SigningAlgorithm::EcdsaSha256,
        keyhold_core::key::MessageType::Raw,
        b"m",
        sig.as_ref()
    )
    .unwrap());

    let h = external_key(&c, KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac).await;
    let (token, material) = wrapped(
        &c,
        &h,
        AlgorithmSpec::RsaesOaepSha256,
        b"0123456789abcdef0123456789abcdef",
    )
    .await;
    c.import_key_material()
        .key_id(&h)
        .import_token(token)
        .encrypted_key_material(material)
        .send()
        .await
        .unwrap();
    let mac = c
        .generate_mac()
        .key_id(&h)
        .message(blob(b"msg"))
        .mac_algorithm(aws_sdk_kms::types::MacAlgorithmSpec::HmacSha256)
        .send()
        .await
        .unwrap()
        .mac
        .unwrap();
    let expected = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            b"0123456789abcdef0123456789abcdef",
        ),
        b"msg",
    );
    assert_eq!(mac.as_ref(), expected.as_ref());
    s.stop().await;
}

/// Of several imported materials, the one past its ValidTo is deleted alone: the key waits
/// for it (PendingImport), the listing shows it PENDING_IMPORT, and re-importing it restores
/// the key with its ciphertext.
#[tokio::test]
async fn one_expired_material_of_several_makes_the_key_wait_for_it() {
    use aws_sdk_kms::types::{ImportState, ImportType, IncludeKeyMaterial, KeyMaterialState};
    let s = TestServer::start().await;
    let c = s.client();
    let k = external_key(&c, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
    let (token, first) = wrapped(&c, &k, AlgorithmSpec::RsaesOaepSha256, &[1; 32]).await;
    c.import_key_material()
        .key_id(&k)
        .import_token(token)
        .encrypted_key_material(first)
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .send()
        .await
        .unwrap();
    let valid_to = (s.clock_now_secs() + 3600.0) as i64;
    let (token, second) = wrapped(&c, &k, AlgorithmSpec::RsaesOaepSha256, &[2; 32]).await;
    let m2 = c
        .import_key_material()
        .key_id(&k)
        .import_token(token)
        .encrypted_key_material(second)
        .import_type(ImportType::NewKeyMaterial)
        .expiration_model(ExpirationModelType::KeyMaterialExpires)
        .valid_to(DateTime::from_secs(valid_to))
        .send()
        .await
        .unwrap()
        .key_material_id
        .unwrap();
    c.rotate_key_on_demand().key_id(&k).send().await.unwrap();
    let ct = c
        .encrypt()
        .key_id(&k)
        .plaintext(blob(b"under the second"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let md = c.describe_key().key_id(&k).send().await.unwrap();
    let md = md.key_metadata.unwrap();
    assert_eq!(md.current_key_material_id.as_deref(), Some(m2.as_str()));
    assert_eq!(md.valid_to.map(|d| d.secs()), Some(valid_to));

    s.clock.advance_ms(2 * 3600 * 1000);
    let e = c
        .decrypt()
        .ciphertext_blob(ct.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "KMSInvalidStateException");
    let listed = c
        .list_key_rotations()
        .key_id(&k)
        .include_key_material(IncludeKeyMaterial::AllKeyMaterial)
        .send()
        .await
        .unwrap();
    let states: Vec<_> = listed
        .rotations()
        .iter()
        .map(|r| (r.import_state.clone(), r.key_material_state.clone()))
        .collect();
    assert_eq!(
        states,
        vec![
            (
                Some(ImportState::Imported),
                Some(KeyMaterialState::NonCurrent)
            ),
            (
                Some(ImportState::PendingImport),
                Some(KeyMaterialState::Current)
            ),
        ]
    );
    let md = c.describe_key().key_id(&k).send().await.unwrap();
    assert_eq!(
        md.key_metadata.unwrap().key_state,
        Some(KeyState::PendingImport)
    );

    let (token, again) = wrapped(&c, &k, AlgorithmSpec::RsaesOaepSha256, &[2; 32]).await;
    c.import_key_material()
        .key_id(&k)
        .import_token(token)
        .encrypted_key_material(again)
        .key_material_id(&m2)
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .send()
        .await
        .unwrap();
    let pt = c.decrypt().ciphertext_blob(ct).send().await.unwrap();
    assert_eq!(pt.plaintext.unwrap().as_ref(), b"under the second");
    s.stop().await;
}
