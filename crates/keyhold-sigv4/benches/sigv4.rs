//! Micro-benchmark of SigV4 verification of a KMS Encrypt request as an SDK signs it (five
//! signed headers, a 256-byte plaintext in the body). `cargo bench -p keyhold-sigv4`.

// A benchmark's setup has no error path worth handling: a failure is a broken benchmark.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, Uri};
use keyhold_core::secret::SecretBytes;
use keyhold_sigv4::{parse_amz_date, signing_key, verify, Scope, SignedRequest, Signer};

const SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const AMZ_DATE: &str = "20261123T120000Z";
const SCOPE: Scope<'static> = Scope {
    service: "kms",
    region: "us-east-1",
};

fn sigv4_benches(c: &mut Criterion) {
    let body = format!(
        r#"{{"KeyId":"alias/bench","Plaintext":"{}"}}"#,
        "QUFB".repeat(256 / 3)
    );
    let method = Method::POST;
    let uri: Uri = "/".parse().unwrap();
    let now = parse_amz_date(AMZ_DATE).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    headers.insert("host", HeaderValue::from_static("127.0.0.1:7080"));
    headers.insert(
        "x-amz-target",
        HeaderValue::from_static("TrentService.Encrypt"),
    );
    Signer::new("AKIAIOSFODNN7EXAMPLE", SECRET, SCOPE)
        .sign(&method, &uri, &mut headers, body.as_bytes(), now)
        .unwrap();
    let secret = Arc::new(SecretBytes::new(SECRET.to_vec()));
    let lookup = |_: &str| Ok::<_, ()>(Some(("principal", secret.clone())));
    let req = SignedRequest {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: body.as_bytes(),
    };
    // The request must verify, or the figure would be of the refusal path.
    verify(&req, SCOPE, now, lookup).unwrap();
    c.bench_function("sigv4/verify_encrypt_request", |b| {
        b.iter(|| verify(black_box(&req), SCOPE, now, lookup).unwrap())
    });
    c.bench_function("sigv4/signing_key_derivation", |b| {
        b.iter(|| signing_key(black_box(SECRET), "20261123", "us-east-1", "kms"))
    });
}

criterion_group!(benches, sigv4_benches);
criterion_main!(benches);
