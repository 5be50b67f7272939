//! Asymmetric and HMAC key material: generation, public keys, signatures, RSA OAEP, HMAC and
//! ECDH, all through aws-lc-rs.
//!
//! Private keys are held as PKCS#8 DER (RSA, ECC, Ed25519, ML-DSA, and ML-KEM in RFC 9935's
//! expanded-key form) and HMAC keys as raw bytes,
//! always inside [`SecretBytes`].

use aws_lc_rs::agreement;
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::hmac;
use aws_lc_rs::kem;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    KeySize, OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, PqdsaKeyPair};

use crate::key::{EncryptionAlgorithm, KeySpec, MacAlgorithm, MessageType, SigningAlgorithm};
use crate::secret::SecretBytes;

/// Why an asymmetric operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AsymError {
    /// The algorithm does not fit the key spec (`InvalidKeyUsageException`).
    #[error("{0}")]
    WrongAlgorithm(String),
    /// The input is malformed for the algorithm (`ValidationException`).
    #[error("{0}")]
    InvalidInput(String),
    /// Supported by AWS KMS but not by this server (`UnsupportedOperationException`).
    #[error("{0}")]
    Unsupported(String),
    /// A ciphertext did not decrypt (`InvalidCiphertextException`).
    #[error("the ciphertext is invalid")]
    InvalidCiphertext,
    /// The stored key material could not be used; an internal fault.
    #[error("key material unusable: {0}")]
    Material(&'static str),
}

fn material(e: impl Into<&'static str>) -> AsymError {
    AsymError::Material(e.into())
}

fn ecdsa_alg(spec: KeySpec) -> Option<&'static sig::EcdsaSigningAlgorithm> {
    Some(match spec {
        KeySpec::EccNistP256 => &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
        KeySpec::EccNistP384 => &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
        KeySpec::EccNistP521 => &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
        KeySpec::EccSecgP256k1 => &sig::ECDSA_P256K1_SHA256_ASN1_SIGNING,
        _ => return None,
    })
}

fn ecdsa_verify_alg(spec: KeySpec) -> Option<&'static sig::EcdsaVerificationAlgorithm> {
    Some(match spec {
        KeySpec::EccNistP256 => &sig::ECDSA_P256_SHA256_ASN1,
        KeySpec::EccNistP384 => &sig::ECDSA_P384_SHA384_ASN1,
        KeySpec::EccNistP521 => &sig::ECDSA_P521_SHA512_ASN1,
        KeySpec::EccSecgP256k1 => &sig::ECDSA_P256K1_SHA256_ASN1,
        _ => return None,
    })
}

fn mldsa_alg(spec: KeySpec) -> Option<&'static sig::PqdsaSigningAlgorithm> {
    Some(match spec {
        KeySpec::MlDsa44 => &sig::ML_DSA_44_SIGNING,
        KeySpec::MlDsa65 => &sig::ML_DSA_65_SIGNING,
        KeySpec::MlDsa87 => &sig::ML_DSA_87_SIGNING,
        _ => return None,
    })
}

fn mldsa_verify_alg(spec: KeySpec) -> Option<&'static sig::PqdsaVerificationAlgorithm> {
    Some(match spec {
        KeySpec::MlDsa44 => &sig::ML_DSA_44,
        KeySpec::MlDsa65 => &sig::ML_DSA_65,
        KeySpec::MlDsa87 => &sig::ML_DSA_87,
        _ => return None,
    })
}

/// The ECDH algorithm of `spec` and the DER of its named-curve OID (RFC 5480).
fn ecdh_alg(spec: KeySpec) -> Option<(&'static agreement::Algorithm, &'static [u8])> {
    Some(match spec {
        KeySpec::EccNistP256 => (
            &agreement::ECDH_P256,
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        ),
        KeySpec::EccNistP384 => (
            &agreement::ECDH_P384,
            &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        ),
        KeySpec::EccNistP521 => (
            &agreement::ECDH_P521,
            &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        ),
        _ => return None,
    })
}

/// The content of the DER element of `tag` at the start of `der`, and what follows it.
fn der_element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if t != tag {
        return None;
    }
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => {
            let (&l, rest) = rest.split_first()?;
            (usize::from(l), rest)
        }
        0x82 => {
            let (l, rest) = rest.split_at_checked(2)?;
            (usize::from(u16::from_be_bytes([l[0], l[1]])), rest)
        }
        _ => return None,
    };
    rest.split_at_checked(len)
}

/// Whether `spki` is an EC SubjectPublicKeyInfo whose parameters name the curve `curve_oid`
/// (the OID's DER), as RFC 5480 requires (explicit curve parameters are refused, whatever curve
/// they describe).
fn names_curve(spki: &[u8], curve_oid: &[u8]) -> bool {
    use spki::der::asn1::ObjectIdentifier;
    use spki::der::Decode;
    const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    let (Ok(info), Ok(curve)) = (
        spki::SubjectPublicKeyInfoRef::from_der(spki),
        ObjectIdentifier::from_der(curve_oid),
    ) else {
        return false;
    };
    info.algorithm.oid == ID_EC_PUBLIC_KEY
        && info
            .algorithm
            .parameters
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
            == Some(curve)
}

fn hmac_alg(spec: KeySpec) -> Option<(hmac::Algorithm, usize)> {
    Some(match spec {
        KeySpec::Hmac224 => (hmac::HMAC_SHA224, 28),
        KeySpec::Hmac256 => (hmac::HMAC_SHA256, 32),
        KeySpec::Hmac384 => (hmac::HMAC_SHA384, 48),
        KeySpec::Hmac512 => (hmac::HMAC_SHA512, 64),
        _ => return None,
    })
}

fn rsa_size(spec: KeySpec) -> Option<KeySize> {
    Some(match spec {
        KeySpec::Rsa2048 => KeySize::Rsa2048,
        KeySpec::Rsa3072 => KeySize::Rsa3072,
        KeySpec::Rsa4096 => KeySize::Rsa4096,
        _ => return None,
    })
}

fn doc(d: impl AsRef<[u8]>) -> SecretBytes {
    SecretBytes::new(d.as_ref().to_vec())
}

/// Generates new key material of `spec`.
pub fn generate(spec: KeySpec) -> Result<SecretBytes, AsymError> {
    if let Some(size) = rsa_size(spec) {
        let kp = aws_lc_rs::rsa::KeyPair::generate(size).map_err(|_| material("rsa generate"))?;
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp)
            .map_err(|_| material("rsa pkcs8"))?;
        return Ok(doc(der.as_ref()));
    }
    if let Some(alg) = ecdsa_alg(spec) {
        let kp = EcdsaKeyPair::generate(alg).map_err(|_| material("ec generate"))?;
        return Ok(doc(kp.to_pkcs8v1().map_err(|_| material("ec pkcs8"))?));
    }
    if let Some(alg) = mldsa_alg(spec) {
        let kp = PqdsaKeyPair::generate(alg).map_err(|_| material("ml-dsa generate"))?;
        return Ok(doc(kp
            .to_pkcs8v1()
            .map_err(|_| material("ml-dsa pkcs8"))?));
    }
    if let Some(p) = mlkem(spec) {
        let dk = kem::DecapsulationKey::generate(p.alg).map_err(|_| material("ml-kem generate"))?;
        let raw = dk.key_bytes().map_err(|_| material("ml-kem key bytes"))?;
        return Ok(SecretBytes::new(p.pkcs8(raw.as_ref())));
    }
    if spec == KeySpec::EccNistEdwards25519 {
        let kp = Ed25519KeyPair::generate().map_err(|_| material("ed25519 generate"))?;
        // PKCS#8 v1 (RFC 5208), as AWS documents and OpenSSL 3.0, Node and Python's
        // cryptography load; keys stored as v2 by earlier versions still load.
        return Ok(doc(kp
            .to_pkcs8v1()
            .map_err(|_| material("ed25519 pkcs8"))?));
    }
    if let Some((_, len)) = hmac_alg(spec) {
        return SecretBytes::random(len).map_err(|_| material("rng"));
    }
    Err(AsymError::Unsupported(format!(
        "KeySpec {spec} is not supported by this keyhold server"
    )))
}

/// Checks that `m` is usable key material of `spec` (for imported material).
pub fn check_material(spec: KeySpec, m: &SecretBytes) -> Result<(), AsymError> {
    let bad = || AsymError::InvalidInput(format!("the key material is not a valid {spec} key"));
    let der = m.expose_secret();
    if let Some(size) = rsa_size(spec) {
        let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(der).map_err(|_| bad())?;
        return if kp.public_modulus_len() == size.len() {
            Ok(())
        } else {
            Err(bad())
        };
    }
    if let Some(alg) = ecdsa_alg(spec) {
        return EcdsaKeyPair::from_pkcs8(alg, der)
            .map(|_| ())
            .map_err(|_| bad());
    }
    if let Some(alg) = mldsa_alg(spec) {
        return PqdsaKeyPair::from_pkcs8(alg, der)
            .map(|_| ())
            .map_err(|_| bad());
    }
    if let Some(p) = mlkem(spec) {
        let dk = p.decapsulation_key(der).ok_or_else(bad)?;
        return kem::DecapsulationKey::new(p.alg, dk)
            .map(|_| ())
            .map_err(|_| bad());
    }
    if spec == KeySpec::EccNistEdwards25519 {
        return Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|_| ())
            .map_err(|_| bad());
    }
    if hmac_alg(spec).is_some() {
        // AWS accepts HMAC material from 16 bytes up to the block size of the hash.
        let max = if matches!(spec, KeySpec::Hmac384 | KeySpec::Hmac512) {
            128
        } else {
            64
        };
        return if (16..=max).contains(&der.len()) {
            Ok(())
        } else {
            Err(bad())
        };
    }
    if spec == KeySpec::SymmetricDefault {
        return if der.len() == 32 { Ok(()) } else { Err(bad()) };
    }
    Err(bad())
}

/// The DER SubjectPublicKeyInfo of an asymmetric key.
pub fn public_key_der(spec: KeySpec, m: &SecretBytes) -> Result<Vec<u8>, AsymError> {
    let der = m.expose_secret();
    let spki = |d: Result<PublicKeyX509Der<'static>, aws_lc_rs::error::Unspecified>| {
        d.map(|d| d.as_ref().to_vec())
            .map_err(|_| material("public key der"))
    };
    if rsa_size(spec).is_some() {
        let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(der).map_err(|_| material("rsa pkcs8"))?;
        return spki(kp.public_key().as_der());
    }
    if let Some(alg) = ecdsa_alg(spec) {
        let kp = EcdsaKeyPair::from_pkcs8(alg, der).map_err(|_| material("ec pkcs8"))?;
        return spki(kp.public_key().as_der());
    }
    if let Some(alg) = mldsa_alg(spec) {
        let kp = PqdsaKeyPair::from_pkcs8(alg, der).map_err(|_| material("ml-dsa pkcs8"))?;
        return spki(kp.public_key().as_der());
    }
    if let Some(p) = mlkem(spec) {
        let dk = p
            .decapsulation_key(der)
            .ok_or_else(|| material("ml-kem pkcs8"))?;
        return Ok(p.spki(p.encapsulation_key(dk)?));
    }
    if spec == KeySpec::EccNistEdwards25519 {
        let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| material("ed25519 pkcs8"))?;
        return spki(kp.public_key().as_der());
    }
    Err(AsymError::WrongAlgorithm(format!(
        "KeySpec {spec} has no public key"
    )))
}

fn digest_alg(alg: SigningAlgorithm) -> Option<&'static digest::Algorithm> {
    use SigningAlgorithm::*;
    Some(match alg {
        RsassaPssSha256 | RsassaPkcs1V15Sha256 | EcdsaSha256 => &digest::SHA256,
        RsassaPssSha384 | RsassaPkcs1V15Sha384 | EcdsaSha384 => &digest::SHA384,
        RsassaPssSha512 | RsassaPkcs1V15Sha512 | EcdsaSha512 | Ed25519PhSha512 => &digest::SHA512,
        _ => return None,
    })
}

fn rsa_encoding(alg: SigningAlgorithm) -> Option<&'static sig::RsaSignatureEncoding> {
    use SigningAlgorithm::*;
    Some(match alg {
        RsassaPssSha256 => &sig::RSA_PSS_SHA256,
        RsassaPssSha384 => &sig::RSA_PSS_SHA384,
        RsassaPssSha512 => &sig::RSA_PSS_SHA512,
        RsassaPkcs1V15Sha256 => &sig::RSA_PKCS1_SHA256,
        RsassaPkcs1V15Sha384 => &sig::RSA_PKCS1_SHA384,
        RsassaPkcs1V15Sha512 => &sig::RSA_PKCS1_SHA512,
        _ => return None,
    })
}

fn rsa_params(alg: SigningAlgorithm) -> Option<&'static sig::RsaParameters> {
    use SigningAlgorithm::*;
    Some(match alg {
        RsassaPssSha256 => &sig::RSA_PSS_2048_8192_SHA256,
        RsassaPssSha384 => &sig::RSA_PSS_2048_8192_SHA384,
        RsassaPssSha512 => &sig::RSA_PSS_2048_8192_SHA512,
        RsassaPkcs1V15Sha256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        RsassaPkcs1V15Sha384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        RsassaPkcs1V15Sha512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        _ => return None,
    })
}

/// Checks the algorithm against the spec and the message against the message type; returns
/// the digest to sign when the message is (or must be made into) a digest.
fn prepare(
    spec: KeySpec,
    alg: SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
) -> Result<Option<Digest>, AsymError> {
    if !spec.signing_algorithms().contains(&alg) {
        return Err(AsymError::WrongAlgorithm(format!(
            "Signing algorithm {alg} is not supported by a {spec} key"
        )));
    }
    match (alg, message_type) {
        (SigningAlgorithm::Ed25519Sha512, MessageType::Raw) => Ok(None),
        (SigningAlgorithm::Ed25519Sha512, _) => Err(AsymError::WrongAlgorithm(
            "ED25519_SHA_512 signs RAW messages only".into(),
        )),
        (SigningAlgorithm::MlDsaShake256, MessageType::Raw) => Ok(None),
        (SigningAlgorithm::MlDsaShake256, MessageType::ExternalMu) => {
            if message.len() == crate::ffi::MU_LEN {
                Ok(None)
            } else {
                Err(AsymError::InvalidInput(format!(
                    "An EXTERNAL_MU message must be {} bytes, not {}",
                    crate::ffi::MU_LEN,
                    message.len()
                )))
            }
        }
        (SigningAlgorithm::MlDsaShake256, MessageType::Digest) => Err(AsymError::WrongAlgorithm(
            "ML_DSA_SHAKE_256 signs RAW or EXTERNAL_MU messages only".into(),
        )),
        (_, MessageType::ExternalMu) => Err(AsymError::WrongAlgorithm(
            "MessageType EXTERNAL_MU is only for ML-DSA keys".into(),
        )),
        (a, t) => {
            let d = digest_alg(a).ok_or_else(|| {
                AsymError::Unsupported(format!("Signing algorithm {a} is not supported"))
            })?;
            match t {
                MessageType::Raw => Ok(Some(digest::digest(d, message))),
                _ => {
                    if message.len() != d.output_len() {
                        return Err(AsymError::InvalidInput(format!(
                            "Digest is invalid length for algorithm {a}: {} bytes, expected {}",
                            message.len(),
                            d.output_len()
                        )));
                    }
                    Digest::import_less_safe(message, d)
                        .map(Some)
                        .map_err(|_| AsymError::InvalidInput("invalid digest".into()))
                }
            }
        }
    }
}

/// The 64-byte Ed25519 private key (seed || public) and the public key of a key pair.
fn ed25519_parts(
    kp: &Ed25519KeyPair,
) -> Result<(zeroize::Zeroizing<[u8; 64]>, [u8; 32]), AsymError> {
    use aws_lc_rs::encoding::AsBigEndian;
    let seed = kp.seed().map_err(|_| material("ed25519 seed"))?;
    let seed = seed.as_be_bytes().map_err(|_| material("ed25519 seed"))?;
    let public: [u8; 32] = kp
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| material("ed25519 public key"))?;
    let mut private = zeroize::Zeroizing::new([0u8; 64]);
    private
        .get_mut(..32)
        .ok_or_else(|| material("ed25519 seed"))?
        .copy_from_slice(
            seed.as_ref()
                .get(..32)
                .ok_or_else(|| material("ed25519 seed"))?,
        );
    private
        .get_mut(32..)
        .ok_or_else(|| material("ed25519 public key"))?
        .copy_from_slice(&public);
    Ok((private, public))
}

fn digest64(d: &Digest) -> Result<[u8; 64], AsymError> {
    d.as_ref()
        .try_into()
        .map_err(|_| AsymError::InvalidInput("ED25519_PH_SHA_512 needs a SHA-512 digest".into()))
}

/// Signs `message` (a message or a digest, as `message_type` says).
pub fn sign(
    spec: KeySpec,
    m: &SecretBytes,
    alg: SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let digest = prepare(spec, alg, message_type, message)?;
    let der = m.expose_secret();
    if let (Some(enc), Some(d)) = (rsa_encoding(alg), &digest) {
        let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(der).map_err(|_| material("rsa pkcs8"))?;
        let mut out = vec![0u8; kp.public_modulus_len()];
        kp.sign_digest(enc, d, &mut out)
            .map_err(|_| material("rsa sign"))?;
        return Ok(out);
    }
    if let (Some(a), Some(d)) = (ecdsa_alg(spec), &digest) {
        let kp = EcdsaKeyPair::from_pkcs8(a, der).map_err(|_| material("ec pkcs8"))?;
        let s = kp.sign_digest(d).map_err(|_| material("ecdsa sign"))?;
        return Ok(s.as_ref().to_vec());
    }
    if spec == KeySpec::EccNistEdwards25519 {
        let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| material("ed25519 pkcs8"))?;
        if let Some(d) = &digest {
            let (private, _) = ed25519_parts(&kp)?;
            let sig = crate::ffi::ed25519ph_sign(&private, &digest64(d)?)
                .ok_or_else(|| material("ed25519ph sign"))?;
            return Ok(sig.to_vec());
        }
        return Ok(kp.sign(message).as_ref().to_vec());
    }
    if let Some(a) = mldsa_alg(spec) {
        if message_type == MessageType::ExternalMu {
            return crate::ffi::mldsa_sign_mu(der, &mu(message)?, a.signature_len())
                .ok_or_else(|| material("ml-dsa sign mu"));
        }
        let kp = PqdsaKeyPair::from_pkcs8(a, der).map_err(|_| material("ml-dsa pkcs8"))?;
        let mut out = vec![0u8; a.signature_len()];
        let n = kp
            .sign(message, &mut out)
            .map_err(|_| material("ml-dsa sign"))?;
        out.truncate(n);
        return Ok(out);
    }
    Err(AsymError::WrongAlgorithm(format!(
        "KeySpec {spec} cannot sign"
    )))
}

/// Verifies a signature made by [`sign`] (or any conforming signer) with the public half of `m`.
pub fn verify(
    spec: KeySpec,
    m: &SecretBytes,
    alg: SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, AsymError> {
    let public = public_key_der(spec, m)?;
    verify_public(spec, &public, alg, message_type, message, signature)
}

/// Verifies a signature with a public key given as DER SubjectPublicKeyInfo (what GetPublicKey
/// returns), as an offline verifier does.
pub fn verify_public(
    spec: KeySpec,
    spki: &[u8],
    alg: SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, AsymError> {
    let digest = prepare(spec, alg, message_type, message)?;
    let bad_key = || AsymError::InvalidInput(format!("not a {spec} public key"));
    if let (Some(params), Some(d)) = (rsa_params(alg), &digest) {
        let pk = sig::UnparsedPublicKey::new(params, spki);
        return Ok(pk.verify_digest(d, signature).is_ok());
    }
    if let (Some(va), Some(d)) = (ecdsa_verify_alg(spec), &digest) {
        let pk = sig::UnparsedPublicKey::new(va, spki);
        return Ok(pk.verify_digest(d, signature).is_ok());
    }
    if spec == KeySpec::EccNistEdwards25519 {
        if let Some(d) = &digest {
            let public: [u8; 32] = ed25519_spki_point(spki).ok_or_else(bad_key)?;
            let Ok(sig64) = <[u8; 64]>::try_from(signature) else {
                return Ok(false);
            };
            return Ok(crate::ffi::ed25519ph_verify(&public, &digest64(d)?, &sig64));
        }
        let pk = sig::UnparsedPublicKey::new(&sig::ED25519, spki);
        return Ok(pk.verify(message, signature).is_ok());
    }
    if let Some(va) = mldsa_verify_alg(spec) {
        if message_type == MessageType::ExternalMu {
            return crate::ffi::mldsa_verify_mu(spki, &mu(message)?, signature).ok_or_else(bad_key);
        }
        let pk = sig::UnparsedPublicKey::new(va, spki);
        return Ok(pk.verify(message, signature).is_ok());
    }
    Err(AsymError::WrongAlgorithm(format!(
        "KeySpec {spec} cannot verify"
    )))
}

/// The 32-byte point of an Ed25519 SubjectPublicKeyInfo (RFC 8410: id-Ed25519, no
/// parameters).
fn ed25519_spki_point(spki: &[u8]) -> Option<[u8; 32]> {
    use spki::der::asn1::ObjectIdentifier;
    use spki::der::Decode;
    const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
    let info = spki::SubjectPublicKeyInfoRef::from_der(spki).ok()?;
    if info.algorithm.oid != ID_ED25519 || info.algorithm.parameters.is_some() {
        return None;
    }
    info.subject_public_key.as_bytes()?.try_into().ok()
}

fn mu(message: &[u8]) -> Result<[u8; crate::ffi::MU_LEN], AsymError> {
    message
        .try_into()
        .map_err(|_| AsymError::InvalidInput("an EXTERNAL_MU message is 64 bytes".into()))
}

fn oaep(alg: EncryptionAlgorithm) -> Result<&'static OaepAlgorithm, AsymError> {
    match alg {
        EncryptionAlgorithm::RsaesOaepSha1 => Ok(&OAEP_SHA1_MGF1SHA1),
        EncryptionAlgorithm::RsaesOaepSha256 => Ok(&OAEP_SHA256_MGF1SHA256),
        other => Err(AsymError::WrongAlgorithm(format!(
            "Encryption algorithm {other} is not supported by RSA keys"
        ))),
    }
}

/// The largest plaintext RSA OAEP can encrypt under `spec` with `alg`.
pub fn rsa_max_plaintext(spec: KeySpec, alg: EncryptionAlgorithm) -> Option<usize> {
    let k = rsa_size(spec)?.len();
    let h = match alg {
        EncryptionAlgorithm::RsaesOaepSha1 => 20,
        EncryptionAlgorithm::RsaesOaepSha256 => 32,
        _ => return None,
    };
    Some(k - 2 * h - 2)
}

/// Encrypts with RSA OAEP under the public half of `m`.
pub fn rsa_encrypt(
    spec: KeySpec,
    m: &SecretBytes,
    alg: EncryptionAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let max = rsa_max_plaintext(spec, alg)
        .ok_or_else(|| AsymError::WrongAlgorithm(format!("KeySpec {spec} is not RSA")))?;
    if plaintext.len() > max {
        return Err(AsymError::InvalidInput(format!(
            "Plaintext is {} bytes; {alg} under {spec} encrypts at most {max}",
            plaintext.len()
        )));
    }
    let public = rsa_public_der(m)?;
    encrypt_to_public_der(&public, alg, plaintext)
}

fn rsa_public_der(m: &SecretBytes) -> Result<Vec<u8>, AsymError> {
    let key =
        PrivateDecryptingKey::from_pkcs8(m.expose_secret()).map_err(|_| material("rsa pkcs8"))?;
    let der = key
        .public_key()
        .as_der()
        .map_err(|_| material("rsa public der"))?;
    Ok(der.as_ref().to_vec())
}

/// Encrypts with RSA OAEP to a DER SubjectPublicKeyInfo (also used for import wrapping tests).
pub fn encrypt_to_public_der(
    spki: &[u8],
    alg: EncryptionAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let a = oaep(alg)?;
    let pk = PublicEncryptingKey::from_der(spki)
        .map_err(|_| AsymError::InvalidInput("not an RSA public key".into()))?;
    let pk = OaepPublicEncryptingKey::new(pk).map_err(|_| material("oaep key"))?;
    let mut out = vec![0u8; pk.ciphertext_size()];
    let n = pk
        .encrypt(a, plaintext, &mut out, None)
        .map_err(|_| AsymError::InvalidInput("plaintext too long for the key".into()))?
        .len();
    out.truncate(n);
    Ok(out)
}

/// Decrypts RSA OAEP with the private key `m`.
pub fn rsa_decrypt(
    m: &SecretBytes,
    alg: EncryptionAlgorithm,
    ciphertext: &[u8],
) -> Result<SecretBytes, AsymError> {
    let a = oaep(alg)?;
    let key =
        PrivateDecryptingKey::from_pkcs8(m.expose_secret()).map_err(|_| material("rsa pkcs8"))?;
    let key = OaepPrivateDecryptingKey::new(key).map_err(|_| material("oaep key"))?;
    let mut out = zeroize::Zeroizing::new(vec![0u8; key.key_size_bytes()]);
    let n = key
        .decrypt(a, ciphertext, &mut out, None)
        .map_err(|_| AsymError::InvalidCiphertext)?
        .len();
    out.truncate(n);
    Ok(SecretBytes::new(std::mem::take(&mut *out)))
}

/// Computes an HMAC with key `m` of `spec`.
pub fn mac(
    spec: KeySpec,
    m: &SecretBytes,
    alg: MacAlgorithm,
    message: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let (h, _) = hmac_for(spec, alg)?;
    let key = hmac::Key::new(h, m.expose_secret());
    Ok(hmac::sign(&key, message).as_ref().to_vec())
}

/// Verifies an HMAC in constant time.
pub fn verify_mac(
    spec: KeySpec,
    m: &SecretBytes,
    alg: MacAlgorithm,
    message: &[u8],
    tag: &[u8],
) -> Result<bool, AsymError> {
    let (h, _) = hmac_for(spec, alg)?;
    let key = hmac::Key::new(h, m.expose_secret());
    Ok(hmac::verify(&key, message, tag).is_ok())
}

fn hmac_for(spec: KeySpec, alg: MacAlgorithm) -> Result<(hmac::Algorithm, usize), AsymError> {
    if spec.mac_algorithm() != Some(alg) {
        return Err(AsymError::WrongAlgorithm(format!(
            "MAC algorithm {alg} is not supported by a {spec} key"
        )));
    }
    hmac_alg(spec).ok_or_else(|| AsymError::WrongAlgorithm(format!("{spec} is not an HMAC key")))
}

/// ECDH between the private key `m` and a peer's DER SubjectPublicKeyInfo; returns the raw
/// shared secret (the x-coordinate), as AWS KMS does.
pub fn derive_shared_secret(
    spec: KeySpec,
    m: &SecretBytes,
    peer_spki: &[u8],
) -> Result<SecretBytes, AsymError> {
    let (alg, curve_oid) = ecdh_alg(spec)
        .ok_or_else(|| AsymError::WrongAlgorithm(format!("KeySpec {spec} cannot derive")))?;
    let bad_peer = || {
        AsymError::InvalidInput(format!(
            "PublicKey is not a valid DER-encoded {spec} public key"
        ))
    };
    if !names_curve(peer_spki, curve_oid) {
        return Err(bad_peer());
    }
    let private = agreement::PrivateKey::from_private_key_der(alg, m.expose_secret())
        .map_err(|_| material("ecdh private key"))?;
    let peer = agreement::UnparsedPublicKey::new(alg, peer_spki);
    agreement::agree(&private, peer, bad_peer(), |s| {
        Ok(SecretBytes::new(s.to_vec()))
    })
}

/// An ML-KEM parameter set: the aws-lc-rs algorithm, the module rank k of FIPS 203 and the
/// DER of its RFC 9935 algorithm OID.
struct MlKem {
    alg: &'static kem::Algorithm,
    k: usize,
    oid: &'static [u8],
}

fn mlkem(spec: KeySpec) -> Option<MlKem> {
    // id-alg-ml-kem-512/768/1024: 2.16.840.1.101.3.4.4.{1,2,3}.
    const OID: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x01];
    const OID_768: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x02];
    const OID_1024: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x03];
    Some(match spec {
        KeySpec::MlKem512 => MlKem {
            alg: &kem::ML_KEM_512,
            k: 2,
            oid: &OID,
        },
        KeySpec::MlKem768 => MlKem {
            alg: &kem::ML_KEM_768,
            k: 3,
            oid: &OID_768,
        },
        KeySpec::MlKem1024 => MlKem {
            alg: &kem::ML_KEM_1024,
            k: 4,
            oid: &OID_1024,
        },
        _ => return None,
    })
}

/// A DER element: tag, definite length, content.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    out.push(tag);
    match content.len() {
        n @ 0..=0x7f => out.push(n as u8),
        n @ 0x80..=0xff => out.extend_from_slice(&[0x81, n as u8]),
        n => {
            out.push(0x82);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(content);
    out
}

impl MlKem {
    /// FIPS 203 sizes: the encapsulation key is 384k + 32 bytes, the decapsulation key
    /// 768k + 96, the ciphertext 32(du k + dv) with (du, dv) = (10, 4) or (11, 5) for k = 4.
    fn ek_len(&self) -> usize {
        384 * self.k + 32
    }

    fn dk_len(&self) -> usize {
        768 * self.k + 96
    }

    fn ciphertext_len(&self) -> usize {
        if self.k == 4 {
            32 * (11 * 4 + 5)
        } else {
            32 * (10 * self.k + 4)
        }
    }

    fn algorithm_identifier(&self) -> Vec<u8> {
        der_tlv(0x30, &der_tlv(0x06, self.oid))
    }

    /// The RFC 9935 PKCS#8 of an expanded decapsulation key.
    fn pkcs8(&self, dk: &[u8]) -> Vec<u8> {
        let mut body = der_tlv(0x02, &[0]);
        body.extend(self.algorithm_identifier());
        body.extend(der_tlv(0x04, &der_tlv(0x04, dk)));
        der_tlv(0x30, &body)
    }

    /// The RFC 9935 SubjectPublicKeyInfo of an encapsulation key.
    fn spki(&self, ek: &[u8]) -> Vec<u8> {
        let mut bits = Vec::with_capacity(ek.len() + 1);
        bits.push(0);
        bits.extend_from_slice(ek);
        let mut body = self.algorithm_identifier();
        body.extend(der_tlv(0x03, &bits));
        der_tlv(0x30, &body)
    }

    /// The expanded decapsulation key inside an RFC 9935 PKCS#8 (expandedKey form).
    fn decapsulation_key<'a>(&self, pkcs8: &'a [u8]) -> Option<&'a [u8]> {
        let (body, []) = der_element(pkcs8, 0x30)? else {
            return None;
        };
        let (version, rest) = der_element(body, 0x02)?;
        if version != [0] {
            return None;
        }
        let (alg, rest) = der_element(rest, 0x30)?;
        if alg != der_tlv(0x06, self.oid).as_slice() {
            return None;
        }
        let (outer, []) = der_element(rest, 0x04)? else {
            return None;
        };
        let (dk, []) = der_element(outer, 0x04)? else {
            return None;
        };
        (dk.len() == self.dk_len()).then_some(dk)
    }

    /// The encapsulation key inside an expanded decapsulation key (FIPS 203, algorithm 16:
    /// dk = dk_PKE || ek || H(ek) || z, with dk_PKE 384k bytes).
    fn encapsulation_key<'a>(&self, dk: &'a [u8]) -> Result<&'a [u8], AsymError> {
        dk.get(384 * self.k..384 * self.k + self.ek_len())
            .ok_or_else(|| material("ml-kem decapsulation key"))
    }
}

fn mlkem_for(spec: KeySpec, m: &SecretBytes) -> Result<(MlKem, &[u8]), AsymError> {
    let p = mlkem(spec)
        .ok_or_else(|| AsymError::WrongAlgorithm(format!("KeySpec {spec} is not ML-KEM")))?;
    let dk = p
        .decapsulation_key(m.expose_secret())
        .ok_or_else(|| material("ml-kem pkcs8"))?;
    Ok((p, dk))
}

/// ML-KEM encapsulation to the public half of `m`: the ciphertext and the 32-byte shared secret.
pub fn encapsulate(spec: KeySpec, m: &SecretBytes) -> Result<(Vec<u8>, SecretBytes), AsymError> {
    let (p, dk) = mlkem_for(spec, m)?;
    let ek = kem::EncapsulationKey::new(p.alg, p.encapsulation_key(dk)?)
        .map_err(|_| material("ml-kem encapsulation key"))?;
    let (ct, secret) = ek
        .encapsulate()
        .map_err(|_| material("ml-kem encapsulate"))?;
    Ok((
        ct.as_ref().to_vec(),
        SecretBytes::new(secret.as_ref().to_vec()),
    ))
}

/// ML-KEM decapsulation with `m`. A ciphertext of the wrong length is refused; any other
/// ciphertext gives a 32-byte value (implicit rejection, FIPS 203).
pub fn decapsulate(
    spec: KeySpec,
    m: &SecretBytes,
    ciphertext: &[u8],
) -> Result<SecretBytes, AsymError> {
    let (p, dk) = mlkem_for(spec, m)?;
    if ciphertext.len() != p.ciphertext_len() {
        return Err(AsymError::InvalidCiphertext);
    }
    let key = kem::DecapsulationKey::new(p.alg, dk).map_err(|_| material("ml-kem key"))?;
    let secret = key
        .decapsulate(ciphertext.into())
        .map_err(|_| AsymError::InvalidCiphertext)?;
    Ok(SecretBytes::new(secret.as_ref().to_vec()))
}

/// A random source for APIs that ask for one.
pub fn rng() -> SystemRandom {
    SystemRandom::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signing_spec_signs_and_verifies_raw_and_digest() {
        for spec in [
            KeySpec::Rsa2048,
            KeySpec::EccNistP256,
            KeySpec::EccNistP384,
            KeySpec::EccNistP521,
            KeySpec::EccSecgP256k1,
            KeySpec::EccNistEdwards25519,
            KeySpec::MlDsa44,
        ] {
            let m = generate(spec).unwrap();
            let spki = public_key_der(spec, &m).unwrap();
            assert!(spki.len() > 32, "{spec}");
            for alg in spec.signing_algorithms() {
                let s = sign(spec, &m, *alg, MessageType::Raw, b"message").unwrap();
                assert!(verify(spec, &m, *alg, MessageType::Raw, b"message", &s).unwrap());
                assert!(!verify(spec, &m, *alg, MessageType::Raw, b"other", &s).unwrap());
                if let Some(d) = digest_alg(*alg) {
                    let dg = digest::digest(d, b"message");
                    assert!(verify(spec, &m, *alg, MessageType::Digest, dg.as_ref(), &s).unwrap());
                    let e = sign(spec, &m, *alg, MessageType::Digest, &[0u8; 7]).unwrap_err();
                    assert!(matches!(e, AsymError::InvalidInput(_)), "{spec} {alg}");
                }
            }
        }
    }

    #[test]
    fn wrong_algorithm_for_the_spec() {
        let m = generate(KeySpec::EccNistP256).unwrap();
        let e = sign(
            KeySpec::EccNistP256,
            &m,
            SigningAlgorithm::EcdsaSha384,
            MessageType::Raw,
            b"x",
        )
        .unwrap_err();
        assert!(matches!(e, AsymError::WrongAlgorithm(_)));
    }

    #[test]
    fn rsa_oaep_round_trips_with_limits() {
        let m = generate(KeySpec::Rsa2048).unwrap();
        for alg in [
            EncryptionAlgorithm::RsaesOaepSha1,
            EncryptionAlgorithm::RsaesOaepSha256,
        ] {
            let max = rsa_max_plaintext(KeySpec::Rsa2048, alg).unwrap();
            let ct = rsa_encrypt(KeySpec::Rsa2048, &m, alg, &vec![7u8; max]).unwrap();
            assert_eq!(rsa_decrypt(&m, alg, &ct).unwrap().len(), max);
            assert!(rsa_encrypt(KeySpec::Rsa2048, &m, alg, &vec![7u8; max + 1]).is_err());
        }
        assert_eq!(
            rsa_max_plaintext(KeySpec::Rsa2048, EncryptionAlgorithm::RsaesOaepSha256),
            Some(190)
        );
        assert_eq!(
            rsa_max_plaintext(KeySpec::Rsa4096, EncryptionAlgorithm::RsaesOaepSha1),
            Some(470)
        );
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let key = SecretBytes::new(b"Jefe".to_vec());
        let tag = mac(
            KeySpec::Hmac256,
            &key,
            MacAlgorithm::HmacSha256,
            b"what do ya want for nothing?",
        )
        .unwrap();
        assert_eq!(
            hex::encode(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_mac(
            KeySpec::Hmac256,
            &key,
            MacAlgorithm::HmacSha256,
            b"what do ya want for nothing?",
            &tag
        )
        .unwrap());
        assert!(mac(KeySpec::Hmac256, &key, MacAlgorithm::HmacSha512, b"x").is_err());
    }

    #[test]
    fn ecdh_agrees_between_two_keys() {
        let a = generate(KeySpec::EccNistP256).unwrap();
        let b = generate(KeySpec::EccNistP256).unwrap();
        let pa = public_key_der(KeySpec::EccNistP256, &a).unwrap();
        let pb = public_key_der(KeySpec::EccNistP256, &b).unwrap();
        let s1 = derive_shared_secret(KeySpec::EccNistP256, &a, &pb).unwrap();
        let s2 = derive_shared_secret(KeySpec::EccNistP256, &b, &pa).unwrap();
        assert_eq!(s1.expose_secret(), s2.expose_secret());
        assert!(derive_shared_secret(KeySpec::EccNistP256, &a, b"garbage").is_err());
    }

    #[test]
    fn ml_kem_round_trips_and_refuses_bad_lengths() {
        for spec in [KeySpec::MlKem512, KeySpec::MlKem768, KeySpec::MlKem1024] {
            let p = mlkem(spec).unwrap();
            let m = generate(spec).unwrap();
            check_material(spec, &m).unwrap();
            let spki = public_key_der(spec, &m).unwrap();
            assert_eq!(spki.len(), p.ek_len() + 22, "{spec}");
            let (ct, secret) = encapsulate(spec, &m).unwrap();
            assert_eq!(ct.len(), p.ciphertext_len(), "{spec}");
            assert_eq!(secret.expose_secret().len(), 32);
            let back = decapsulate(spec, &m, &ct).unwrap();
            assert_eq!(back.expose_secret(), secret.expose_secret());
            // The public key inside the SPKI is the one aws-lc-rs encapsulates to.
            let ek = kem::EncapsulationKey::new(p.alg, &spki[22..]).unwrap();
            let (ct2, s2) = ek.encapsulate().unwrap();
            let back = decapsulate(spec, &m, ct2.as_ref()).unwrap();
            assert_eq!(back.expose_secret(), s2.as_ref());
            // Implicit rejection: a changed ciphertext gives another secret, not an error.
            let mut bad = ct.clone();
            bad[3] ^= 1;
            let other = decapsulate(spec, &m, &bad).unwrap();
            assert_ne!(other.expose_secret(), secret.expose_secret());
            assert_eq!(
                decapsulate(spec, &m, &ct[1..]).unwrap_err(),
                AsymError::InvalidCiphertext
            );
            // Material of another parameter set is refused.
            let wrong = if spec == KeySpec::MlKem512 {
                KeySpec::MlKem768
            } else {
                KeySpec::MlKem512
            };
            assert!(check_material(wrong, &m).is_err());
        }
    }
}
