//! The ciphertext blob of symmetric keys.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (0x01)
//! 1       16    key id (UUID bytes)
//! 17      4     key version (big-endian u32)
//! 21      32    message salt (random per message)
//! 53      n+16  AES-256-GCM ciphertext and tag
//! ```
//!
//! The per-message AES key and nonce are HKDF-SHA256(salt = message salt, ikm = key version
//! material, info = "keyhold blob v1" || bytes 0..21) expanded to 44 bytes. The AEAD's associated
//! data is the 53-byte header followed by the canonical encryption context, so a changed header
//! or context fails authentication. A random 256-bit salt per message means a key can encrypt
//! far beyond the 2^32 limit of random 96-bit nonces under a single AES-GCM key.
//!
//! Keys held in an HSM (custom key stores) seal inside the HSM, where no key can be derived:
//!
//! ```text
//! offset  size  field
//! 0       1     format version (0x02)
//! 1       16    key id
//! 17      4     key version
//! 21      12    AES-GCM IV (random per message, drawn by keyhold)
//! 33      n+16  AES-256-GCM ciphertext and tag, computed inside the HSM
//! ```
//!
//! with the first 21 bytes and the canonical encryption context as associated data.
//!
//! A multi-Region key's blobs are the first format with version byte 0x03 (its key id is the
//! `mrk-` id's 16 bytes), so a blob made in one Region names the same key in every Region
//! holding a replica.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf::{self, Salt, HKDF_SHA256};
use zeroize::Zeroizing;

use crate::context::EncryptionContext;
use crate::ids::KeyId;
use crate::secret::{random_bytes, SecretBytes};
use crate::CoreError;

/// The blob format of single-Region keys.
pub const FORMAT_V1: u8 = 0x01;
/// The same format, for a multi-Region key.
pub const FORMAT_MRK: u8 = 0x03;
/// Length of the message salt.
pub const SALT_LEN: usize = 32;
/// Length of the header (version, key id, key version, salt).
pub const HEADER_LEN: usize = 1 + 16 + 4 + SALT_LEN;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes a blob adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
const INFO: &[u8] = b"keyhold blob v1";

/// The format of blobs sealed inside an HSM.
pub const FORMAT_HSM: u8 = 0x02;
/// Length of the prefix (format, key id, key version) of an HSM blob.
pub const HSM_PREFIX_LEN: usize = 21;
/// Bytes an HSM blob adds to its plaintext (prefix, 12-byte IV, tag).
pub const HSM_OVERHEAD: usize = HSM_PREFIX_LEN + 12 + TAG_LEN;

/// What the unauthenticated header of a blob claims: which key and version sealed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    /// The key that sealed the blob.
    pub key_id: KeyId,
    /// The version of that key's material.
    pub version: u32,
    /// True for a blob sealed inside an HSM ([`FORMAT_HSM`]).
    pub hsm: bool,
}

/// Reads the header of a blob without authenticating it. Anything too short or of an unknown
/// format is `InvalidCiphertext`.
pub fn parse_header(blob: &[u8]) -> Result<BlobHeader, CoreError> {
    let (hsm, multi_region) = match blob.first() {
        Some(&FORMAT_V1) if blob.len() >= OVERHEAD => (false, false),
        Some(&FORMAT_MRK) if blob.len() >= OVERHEAD => (false, true),
        Some(&FORMAT_HSM) if blob.len() >= HSM_OVERHEAD => (true, false),
        _ => return Err(CoreError::InvalidCiphertext),
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&blob[1..17]); // in bounds: len >= OVERHEAD > 21
    let mut ver = [0u8; 4];
    ver.copy_from_slice(&blob[17..21]);
    Ok(BlobHeader {
        key_id: KeyId::from_bytes(id, multi_region),
        version: u32::from_be_bytes(ver),
        hsm,
    })
}

/// The prefix of an HSM blob of one key version.
pub fn hsm_prefix(key_id: &KeyId, version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HSM_PREFIX_LEN);
    out.push(FORMAT_HSM);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out
}

/// The associated data the HSM authenticates for an HSM blob: its prefix and the context.
pub fn hsm_aad(prefix: &[u8], context: &EncryptionContext) -> Vec<u8> {
    associated_data(prefix, context)
}

/// Seals `plaintext` under one version of a key.
pub fn seal(
    material: &SecretBytes,
    key_id: &KeyId,
    version: u32,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, CoreError> {
    let salt = random_bytes(SALT_LEN)?;
    seal_with_salt(material, key_id, version, context, plaintext, &salt)
}

/// [`seal`] with a given salt; public for known-answer tests only.
#[doc(hidden)]
pub fn seal_with_salt(
    material: &SecretBytes,
    key_id: &KeyId,
    version: u32,
    context: &EncryptionContext,
    plaintext: &[u8],
    salt: &[u8],
) -> Result<Vec<u8>, CoreError> {
    if salt.len() != SALT_LEN {
        return Err(CoreError::Crypto("salt length"));
    }
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(if key_id.is_multi_region() {
        FORMAT_MRK
    } else {
        FORMAT_V1
    });
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(salt);
    let (key, nonce) = message_key(material, &out)?;
    let aad = associated_data(&out, context);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(&aad), &mut out[HEADER_LEN..])
        .map_err(|_| CoreError::Crypto("aes-gcm seal"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens a blob sealed by [`seal`] with the same key version material and context.
pub fn open(
    material: &SecretBytes,
    blob: &[u8],
    context: &EncryptionContext,
) -> Result<SecretBytes, CoreError> {
    if parse_header(blob)?.hsm {
        return Err(CoreError::InvalidCiphertext);
    }
    let header = &blob[..HEADER_LEN];
    let (key, nonce) = message_key(material, header)?;
    let aad = associated_data(header, context);
    let mut buf = Zeroizing::new(blob[HEADER_LEN..].to_vec());
    let plain_len = key
        .open_in_place(nonce, Aad::from(&aad), &mut buf)
        .map_err(|_| CoreError::InvalidCiphertext)?
        .len();
    buf.truncate(plain_len);
    Ok(SecretBytes::new(std::mem::take(&mut *buf)))
}

fn associated_data(header: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&context.canonical_bytes());
    aad
}

struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// Derives the per-message AES-256-GCM key and nonce from the header (which holds the salt).
fn message_key(material: &SecretBytes, header: &[u8]) -> Result<(LessSafeKey, Nonce), CoreError> {
    let salt = header
        .get(21..HEADER_LEN)
        .ok_or(CoreError::InvalidCiphertext)?;
    let prefix = header.get(..21).ok_or(CoreError::InvalidCiphertext)?;
    let prk = Salt::new(HKDF_SHA256, salt).extract(material.expose_secret());
    let info = [INFO, prefix];
    let okm = prk
        .expand(&info, OkmLen(32 + NONCE_LEN))
        .map_err(|_| CoreError::Crypto("hkdf expand"))?;
    let mut bytes = Zeroizing::new([0u8; 32 + NONCE_LEN]);
    okm.fill(&mut bytes[..])
        .map_err(|_| CoreError::Crypto("hkdf fill"))?;
    let unbound =
        UnboundKey::new(&AES_256_GCM, &bytes[..32]).map_err(|_| CoreError::Crypto("aes key"))?;
    let nonce =
        Nonce::try_assume_unique_for_key(&bytes[32..]).map_err(|_| CoreError::Crypto("nonce"))?;
    Ok((LessSafeKey::new(unbound), nonce))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn material() -> SecretBytes {
        SecretBytes::new((0u8..32).collect())
    }

    fn key_id() -> KeyId {
        KeyId::parse("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap()
    }

    fn ctx(k: &str, v: &str) -> EncryptionContext {
        EncryptionContext::new(BTreeMap::from([(k.to_string(), v.to_string())]))
    }

    #[test]
    fn seal_then_open_round_trips() {
        let c = ctx("purpose", "test");
        let blob = seal(&material(), &key_id(), 7, &c, b"hello").unwrap();
        assert_eq!(blob.len(), OVERHEAD + 5);
        let h = parse_header(&blob).unwrap();
        assert_eq!((h.key_id, h.version), (key_id(), 7));
        assert_eq!(
            open(&material(), &blob, &c).unwrap().expose_secret(),
            b"hello"
        );
    }

    #[test]
    fn wrong_context_is_invalid_ciphertext() {
        let blob = seal(&material(), &key_id(), 1, &ctx("a", "1"), b"x").unwrap();
        assert_eq!(
            open(&material(), &blob, &ctx("a", "2")).unwrap_err(),
            CoreError::InvalidCiphertext
        );
        assert_eq!(
            open(&material(), &blob, &EncryptionContext::default()).unwrap_err(),
            CoreError::InvalidCiphertext
        );
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let c = EncryptionContext::default();
        let blob = seal(&material(), &key_id(), 1, &c, b"payload").unwrap();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(open(&material(), &bad, &c).is_err(), "byte {i}");
        }
    }

    #[test]
    fn short_or_unknown_blobs_are_invalid() {
        let c = EncryptionContext::default();
        assert!(parse_header(&[]).is_err());
        assert!(parse_header(&[FORMAT_V1; OVERHEAD - 1]).is_err());
        let mut blob = seal(&material(), &key_id(), 1, &c, b"").unwrap();
        blob[0] = 0x02;
        assert!(open(&material(), &blob, &c).is_err());
    }

    #[test]
    fn multi_region_blobs_name_their_mrk_id() {
        let c = ctx("purpose", "replica");
        let id = KeyId::parse("mrk-1234abcd12ab34cd56ef1234567890ab").unwrap();
        let blob = seal(&material(), &id, 2, &c, b"across regions").unwrap();
        assert_eq!(blob[0], FORMAT_MRK);
        let h = parse_header(&blob).unwrap();
        assert_eq!((h.key_id, h.version, h.hsm), (id, 2, false));
        assert_eq!(
            open(&material(), &blob, &c).unwrap().expose_secret(),
            b"across regions"
        );
        // The format byte is authenticated: a blob cannot be passed off as the single-Region
        // key with the same 16 bytes.
        let mut other = blob.clone();
        other[0] = FORMAT_V1;
        assert!(open(&material(), &other, &c).is_err());
    }

    #[test]
    fn two_seals_of_one_plaintext_differ() {
        let c = EncryptionContext::default();
        let a = seal(&material(), &key_id(), 1, &c, b"same").unwrap();
        let b = seal(&material(), &key_id(), 1, &c, b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn hsm_blobs_parse_but_never_open_in_software() {
        let id = KeyId::generate();
        let mut b = hsm_prefix(&id, 3);
        b.extend_from_slice(&[0u8; 12 + TAG_LEN]);
        let h = parse_header(&b).unwrap();
        assert!(h.hsm && h.key_id == id && h.version == 3);
        let m = SecretBytes::random(32).unwrap();
        assert!(open(&m, &b, &EncryptionContext::default()).is_err());
        assert!(parse_header(&b[..HSM_OVERHEAD - 1]).is_err());
        b[0] = 0x07;
        assert!(parse_header(&b).is_err());
    }
}
