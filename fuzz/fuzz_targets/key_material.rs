//! Untrusted key material: imported private keys of every asymmetric spec, wrapped material
//! for ImportKeyMaterial, ECDH peer public keys and import token payloads are refused cleanly,
//! never a panic.
#![no_main]
use std::sync::OnceLock;

use keyhold_core::asym;
use keyhold_core::import::{self, WrappingAlgorithm};
use keyhold_core::key::KeySpec;
use keyhold_core::secret::SecretBytes;
use libfuzzer_sys::fuzz_target;

/// Keys made once: an RSA wrapping key and an ECDH key.
fn keys() -> &'static (SecretBytes, SecretBytes) {
    static KEYS: OnceLock<(SecretBytes, SecretBytes)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            asym::generate(KeySpec::Rsa2048).expect("RSA key"),
            asym::generate(KeySpec::EccNistP256).expect("P-256 key"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let material = SecretBytes::new(rest.to_vec());
    let specs: Vec<KeySpec> = KeySpec::ALL
        .iter()
        .copied()
        .filter(|s| s.is_asymmetric())
        .collect();
    let spec = specs[usize::from(pick) % specs.len()];
    let _ = asym::check_material(spec, &material);
    let (wrapping, ecdh) = keys();
    let alg = WrappingAlgorithm::ALL[usize::from(pick) % WrappingAlgorithm::ALL.len()];
    let _ = import::unwrap(wrapping, KeySpec::Rsa2048, alg, rest);
    let _ = asym::derive_shared_secret(KeySpec::EccNistP256, ecdh, rest);
    if let Some(p) = import::TokenPayload::decode(data) {
        assert_eq!(p.encode().as_slice(), data);
    }
});
