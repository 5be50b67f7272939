//! Bring-your-own-key import: the RSA wrapping keys handed out by GetParametersForImport, and
//! unwrapping of the material ImportKeyMaterial receives.

use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};

use crate::asym::{self, AsymError};
use crate::key::{EncryptionAlgorithm, KeySpec};
use crate::secret::SecretBytes;

macro_rules! wire {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $variant),+ }
        impl $name {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// The wire name.
            pub fn as_str(&self) -> &'static str { match self { $(Self::$variant => $wire),+ } }
            /// Parses the wire name.
            pub fn parse(s: &str) -> Option<Self> { match s { $($wire => Some(Self::$variant),)+ _ => None } }
        }
    };
}

wire!(
    /// How imported material is wrapped (AWS `AlgorithmSpec`).
    WrappingAlgorithm {
        /// Deprecated by AWS; refused.
        RsaesPkcs1V15 = "RSAES_PKCS1_V1_5",
        /// RSA OAEP with SHA-1.
        RsaesOaepSha1 = "RSAES_OAEP_SHA_1",
        /// RSA OAEP with SHA-256.
        RsaesOaepSha256 = "RSAES_OAEP_SHA_256",
        /// An AES-256 key under RSA OAEP SHA-1, the material under AES key wrap with padding.
        RsaAesKeyWrapSha1 = "RSA_AES_KEY_WRAP_SHA_1",
        /// An AES-256 key under RSA OAEP SHA-256, the material under AES key wrap with padding.
        RsaAesKeyWrapSha256 = "RSA_AES_KEY_WRAP_SHA_256",
        /// SM2 (China regions only).
        Sm2Pke = "SM2PKE",
    }
);

impl WrappingAlgorithm {
    fn oaep(&self) -> Option<EncryptionAlgorithm> {
        match self {
            Self::RsaesOaepSha1 | Self::RsaAesKeyWrapSha1 => {
                Some(EncryptionAlgorithm::RsaesOaepSha1)
            }
            Self::RsaesOaepSha256 | Self::RsaAesKeyWrapSha256 => {
                Some(EncryptionAlgorithm::RsaesOaepSha256)
            }
            Self::RsaesPkcs1V15 | Self::Sm2Pke => None,
        }
    }

    /// True for the two-layer RSA + AES key wrap algorithms.
    pub fn is_key_wrap(&self) -> bool {
        matches!(self, Self::RsaAesKeyWrapSha1 | Self::RsaAesKeyWrapSha256)
    }
}

/// What an import token carries (sealed under the root key by the KMS engine): when it
/// expires, how the material will be wrapped, and the RSA wrapping private key.
pub struct TokenPayload {
    /// Expiry, milliseconds since the epoch.
    pub expires_ms: i64,
    /// The wrapping algorithm.
    pub algorithm: WrappingAlgorithm,
    /// The wrapping key's spec (RSA_2048/3072/4096).
    pub spec: KeySpec,
    /// The wrapping private key (PKCS#8).
    pub wrapping_key: SecretBytes,
}

impl std::fmt::Debug for TokenPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPayload")
            .field("expires_ms", &self.expires_ms)
            .field("algorithm", &self.algorithm)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl TokenPayload {
    /// The payload's bytes: expiry (8, big-endian), algorithm (1), spec (1), key.
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let key = self.wrapping_key.expose_secret();
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(key.len() + 10));
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        let alg = WrappingAlgorithm::ALL
            .iter()
            .position(|a| *a == self.algorithm)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(u8::MAX);
        out.push(alg);
        out.push(match self.spec {
            KeySpec::Rsa2048 => 0,
            KeySpec::Rsa3072 => 1,
            _ => 2,
        });
        out.extend_from_slice(key);
        out
    }

    /// Reads a payload made by [`TokenPayload::encode`]; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (expires, rest) = bytes.split_first_chunk::<8>()?;
        let (&alg, rest) = rest.split_first()?;
        let (&spec, key) = rest.split_first()?;
        Some(Self {
            expires_ms: i64::from_be_bytes(*expires),
            algorithm: *WrappingAlgorithm::ALL.get(usize::from(alg))?,
            spec: match spec {
                0 => KeySpec::Rsa2048,
                1 => KeySpec::Rsa3072,
                2 => KeySpec::Rsa4096,
                _ => return None,
            },
            wrapping_key: SecretBytes::new(key.to_vec()),
        })
    }
}

/// Unwraps imported material with the RSA wrapping private key (PKCS#8).
pub fn unwrap(
    wrapping_key: &SecretBytes,
    wrapping_spec: KeySpec,
    alg: WrappingAlgorithm,
    encrypted: &[u8],
) -> Result<SecretBytes, AsymError> {
    let oaep = alg.oaep().ok_or_else(|| {
        AsymError::Unsupported(format!(
            "Wrapping algorithm {} is not supported",
            alg.as_str()
        ))
    })?;
    if !alg.is_key_wrap() {
        return asym::rsa_decrypt(wrapping_key, oaep, encrypted);
    }
    let k = match wrapping_spec {
        KeySpec::Rsa2048 => 256,
        KeySpec::Rsa3072 => 384,
        KeySpec::Rsa4096 => 512,
        _ => return Err(AsymError::InvalidCiphertext),
    };
    if encrypted.len() <= k {
        return Err(AsymError::InvalidCiphertext);
    }
    let (wrapped_aes, wrapped_material) = encrypted.split_at(k);
    let aes = asym::rsa_decrypt(wrapping_key, oaep, wrapped_aes)?;
    let kek =
        AesKek::new(&AES_256, aes.expose_secret()).map_err(|_| AsymError::InvalidCiphertext)?;
    let mut out = zeroize::Zeroizing::new(vec![0u8; wrapped_material.len()]);
    let n = kek
        .unwrap_with_padding(wrapped_material, &mut out)
        .map_err(|_| AsymError::InvalidCiphertext)?
        .len();
    out.truncate(n);
    Ok(SecretBytes::new(std::mem::take(&mut *out)))
}

/// Wraps material as a client would (tests and the seeding path).
pub fn wrap(
    wrapping_public_der: &[u8],
    alg: WrappingAlgorithm,
    material: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let oaep = alg.oaep().ok_or_else(|| {
        AsymError::Unsupported(format!(
            "Wrapping algorithm {} is not supported",
            alg.as_str()
        ))
    })?;
    if !alg.is_key_wrap() {
        return asym::encrypt_to_public_der(wrapping_public_der, oaep, material);
    }
    let aes = SecretBytes::random(32).map_err(|_| AsymError::Material("rng"))?;
    let mut out = asym::encrypt_to_public_der(wrapping_public_der, oaep, aes.expose_secret())?;
    let kek = AesKek::new(&AES_256, aes.expose_secret()).map_err(|_| AsymError::Material("kek"))?;
    let mut wrapped = vec![0u8; material.len() + 16];
    let n = kek
        .wrap_with_padding(material, &mut wrapped)
        .map_err(|_| AsymError::Material("key wrap"))?
        .len();
    out.extend_from_slice(&wrapped[..n]);
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn token_payloads_round_trip_and_junk_is_refused() {
        let p = TokenPayload {
            expires_ms: 1_795_000_000_123,
            algorithm: WrappingAlgorithm::RsaAesKeyWrapSha256,
            spec: KeySpec::Rsa3072,
            wrapping_key: SecretBytes::new(vec![9; 40]),
        };
        let back = TokenPayload::decode(&p.encode()).unwrap();
        assert_eq!(back.expires_ms, p.expires_ms);
        assert_eq!(back.algorithm, p.algorithm);
        assert_eq!(back.spec, p.spec);
        assert_eq!(back.wrapping_key.expose_secret(), &[9; 40]);
        assert!(TokenPayload::decode(&[0; 9]).is_none());
        let mut bad_alg = p.encode().to_vec();
        bad_alg[8] = 200;
        assert!(TokenPayload::decode(&bad_alg).is_none());
        let mut bad_spec = p.encode().to_vec();
        bad_spec[9] = 3;
        assert!(TokenPayload::decode(&bad_spec).is_none());
    }
    use super::*;

    #[test]
    fn every_wrapping_algorithm_round_trips() {
        let wk = asym::generate(KeySpec::Rsa2048).unwrap();
        let public = asym::public_key_der(KeySpec::Rsa2048, &wk).unwrap();
        let material = [9u8; 32];
        for alg in [
            WrappingAlgorithm::RsaesOaepSha1,
            WrappingAlgorithm::RsaesOaepSha256,
            WrappingAlgorithm::RsaAesKeyWrapSha1,
            WrappingAlgorithm::RsaAesKeyWrapSha256,
        ] {
            let w = wrap(&public, alg, &material).unwrap();
            let back = unwrap(&wk, KeySpec::Rsa2048, alg, &w).unwrap();
            assert_eq!(back.expose_secret(), &material, "{alg:?}");
            let mut bad = w.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(unwrap(&wk, KeySpec::Rsa2048, alg, &bad).is_err(), "{alg:?}");
        }
        assert!(unwrap(
            &wk,
            KeySpec::Rsa2048,
            WrappingAlgorithm::RsaesPkcs1V15,
            b"x"
        )
        .is_err());
    }
}
