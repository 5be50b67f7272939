//! Micro-benchmarks of the KMS engine without HTTP: the JSON codec of an Encrypt call alone,
//! then whole Encrypt, Decrypt and GenerateDataKey calls (decode, authorize, crypto, audit event,
//! encode) on a cached key with an in-memory store. `cargo bench -p keyhold-kms`.

// A benchmark's setup has no error path worth handling: a failure is a broken benchmark.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use keyhold_hsm::FileRootKey;
use keyhold_kms::api::EncryptRequest;
use keyhold_kms::audit::AuditSink;
use keyhold_kms::clock::SystemClock;
use keyhold_kms::principal::Principal;
use keyhold_kms::{Engine, Operation, Request, RequestMeta};
use keyhold_store::SqliteStore;

/// Builds every event, as the server does, and drops it (the figure excludes the disk).
struct DiscardAudit;

impl AuditSink for DiscardAudit {
    fn record(&self, event: &[u8]) -> std::io::Result<()> {
        black_box(event);
        Ok(())
    }
}

fn codec_benches(c: &mut Criterion) {
    let body = format!(
        r#"{{"KeyId":"alias/bench","Plaintext":"{}","EncryptionContext":{{"tenant":"acme"}}}}"#,
        B64.encode([7u8; 256])
    );
    c.bench_function("codec/encrypt_request_decode", |b| {
        b.iter(|| {
            let req: EncryptRequest = serde_json::from_slice(black_box(body.as_bytes())).unwrap();
            B64.decode(req.plaintext.unwrap_or_default()).unwrap()
        })
    });
    let blob = vec![9u8; 256 + 93];
    c.bench_function("codec/encrypt_response_encode", |b| {
        b.iter(|| {
            serde_json::to_vec(&serde_json::json!({
                "CiphertextBlob": B64.encode(black_box(&blob)),
                "KeyId": "arn:aws:kms:us-east-1:111122223333:key/0b5b5b1c-9d1f-4c53-9a5d-2f3c2f6e6d1a",
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
            .unwrap()
        })
    });
}

fn engine_benches(c: &mut Criterion) {
    let engine = Engine::new(
        "us-east-1",
        Arc::new(SqliteStore::in_memory().unwrap()),
        Arc::new(FileRootKey::ephemeral().unwrap()),
        Arc::new(SystemClock),
        Arc::new(DiscardAudit),
        None,
    );
    let caller = Principal {
        arn: "arn:aws:iam::111122223333:user/bench".into(),
        account: "111122223333".into(),
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
    };
    let meta = RequestMeta {
        request_id: "bench".into(),
        source_ip: "127.0.0.1".into(),
        user_agent: "bench".into(),
        via_service: None,
        secure_transport: false,
        source_arn: None,
    };
    // As the KMS front door does: decode the JSON body, call, encode the response.
    let handle = |op: &str, body: &[u8]| -> Vec<u8> {
        let op = Operation::from_name(op).unwrap();
        let request = Request::from_json(op, body).unwrap();
        engine
            .call(&caller, &meta, request)
            .unwrap()
            .to_json()
            .unwrap()
    };
    let call = |op: &str, body: &str| -> serde_json::Value {
        let out = handle(op, body.as_bytes());
        serde_json::from_slice(&out).unwrap()
    };
    let key = call("CreateKey", "{}")["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let encrypt = format!(
        r#"{{"KeyId":"{key}","Plaintext":"{}","EncryptionContext":{{"tenant":"acme"}}}}"#,
        B64.encode([7u8; 256])
    );
    let blob = call("Encrypt", &encrypt)["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_string();
    let decrypt =
        format!(r#"{{"CiphertextBlob":"{blob}","EncryptionContext":{{"tenant":"acme"}}}}"#);
    let gdk = format!(r#"{{"KeyId":"{key}","KeySpec":"AES_256"}}"#);
    let mut g = c.benchmark_group("engine");
    for (name, op, body) in [
        ("encrypt_256", "Encrypt", &encrypt),
        ("decrypt_256", "Decrypt", &decrypt),
        ("generate_data_key", "GenerateDataKey", &gdk),
    ] {
        g.bench_function(name, |b| b.iter(|| handle(op, black_box(body.as_bytes()))));
    }
    g.finish();
}

criterion_group!(benches, codec_benches, engine_benches);
criterion_main!(benches);
