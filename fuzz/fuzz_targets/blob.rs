//! The ciphertext blob parser and opener never panic on any input.
#![no_main]
use keyhold_core::{blob, context::EncryptionContext, secret::SecretBytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = blob::parse_header(data);
    let material = SecretBytes::new(vec![7u8; 32]);
    let _ = blob::open(&material, data, &EncryptionContext::default());
});
