//! Request bodies decode or fail cleanly, whatever the bytes.
#![no_main]
use keyhold_kms::api::{CreateKeyRequest, DecryptRequest, EncryptRequest, ReEncryptRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<CreateKeyRequest>(data);
    let _ = serde_json::from_slice::<EncryptRequest>(data);
    let _ = serde_json::from_slice::<DecryptRequest>(data);
    let _ = serde_json::from_slice::<ReEncryptRequest>(data);
    let _ = keyhold_kms::audit::request_parameters(data);
});
