//! Known-answer vectors for the ciphertext blob, computed independently with Python's
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `cryptography` (HKDF-SHA256 + AES-GCM). Files named `fail_*` must be rejected.

use std::collections::BTreeMap;

use keyhold_core::blob;
use keyhold_core::context::EncryptionContext;
use keyhold_core::ids::KeyId;
use keyhold_core::secret::SecretBytes;
use serde_json::Value;

fn hex_field(v: &Value, name: &str) -> Vec<u8> {
    hex::decode(v[name].as_str().unwrap()).unwrap()
}

fn context(v: &Value) -> EncryptionContext {
    let map: BTreeMap<String, String> = v["context"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    EncryptionContext::new(map)
}

#[test]
fn blob_vectors() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/blob");
    let mut seen = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let material = SecretBytes::new(hex_field(&v, "material"));
        let ctx = context(&v);
        let expected_blob = hex_field(&v, "blob");
        if name.starts_with("fail_") {
            assert!(
                blob::open(&material, &expected_blob, &ctx).is_err(),
                "{name}"
            );
            seen.1 += 1;
            continue;
        }
        let key_id = KeyId::parse(v["key_id"].as_str().unwrap()).unwrap();
        let version = v["version"].as_u64().unwrap() as u32;
        let plaintext = hex_field(&v, "plaintext");
        let sealed = blob::seal_with_salt(
            &material,
            &key_id,
            version,
            &ctx,
            &plaintext,
            &hex_field(&v, "salt"),
        )
        .unwrap();
        assert_eq!(sealed, expected_blob, "{name}: seal");
        let opened = blob::open(&material, &expected_blob, &ctx).unwrap();
        assert_eq!(opened.expose_secret(), plaintext.as_slice(), "{name}: open");
        seen.0 += 1;
    }
    assert!(seen.0 >= 3 && seen.1 >= 6, "vectors found: {seen:?}");
}
