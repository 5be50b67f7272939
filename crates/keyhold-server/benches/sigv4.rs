//! Micro-benchmark of SigV4 verification of a KMS Encrypt request as an SDK signs it (five
//! signed headers, a 256-byte plaintext in the body). `cargo bench -p keyhold-server`.

// A benchmark's setup has no error path worth handling: a failure is a broken benchmark.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, Uri};
use keyhold_core::secret::SecretBytes;
use keyhold_kms::principal::{Credential, Principal};
use keyhold_server::sigv4::{self, SignedRequest};

const SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const AMZ_DATE: &str = "20261123T120000Z";
const REGION: &str = "us-east-1";

fn signed_headers(body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    h.insert("host", HeaderValue::from_static("127.0.0.1:7080"));
    h.insert("x-amz-date", HeaderValue::from_static(AMZ_DATE));
    h.insert(
        "x-amz-target",
        HeaderValue::from_static("TrentService.Encrypt"),
    );
    let names: Vec<String> = ["content-type", "host", "x-amz-date", "x-amz-target"]
        .map(String::from)
        .to_vec();
    let uri: Uri = "/".parse().unwrap();
    let creq = sigv4::canonical_request(&Method::POST, &uri, &h, &names, &sigv4::sha256_hex(body))
        .unwrap();
    let scope = format!("{}/{REGION}/kms/aws4_request", &AMZ_DATE[..8]);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{AMZ_DATE}\n{scope}\n{}",
        sigv4::sha256_hex(creq.as_bytes())
    );
    let key = sigv4::signing_key(SECRET, &AMZ_DATE[..8], REGION, "kms");
    let sig = aws_lc_rs::hmac::sign(&key, to_sign.as_bytes());
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/{scope}, \
         SignedHeaders={}, Signature={}",
        names.join(";"),
        hex::encode(sig.as_ref())
    );
    h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
    h
}

fn sigv4_benches(c: &mut Criterion) {
    let body = format!(
        r#"{{"KeyId":"alias/bench","Plaintext":"{}"}}"#,
        "QUFB".repeat(256 / 3)
    );
    let headers = signed_headers(body.as_bytes());
    let method = Method::POST;
    let uri: Uri = "/".parse().unwrap();
    let cred = Credential {
        principal: Principal {
            arn: "arn:aws:iam::111122223333:user/bench".into(),
            account: "111122223333".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        },
        secret: Arc::new(SecretBytes::new(SECRET.to_vec())),
    };
    let now = sigv4::parse_amz_date(AMZ_DATE).unwrap();
    let req = SignedRequest {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: body.as_bytes(),
    };
    // The request must verify, or the figure would be of the refusal path.
    sigv4::verify(&req, REGION, now, |_| Ok(Some(cred.clone()))).unwrap();
    c.bench_function("sigv4/verify_encrypt_request", |b| {
        b.iter(|| sigv4::verify(black_box(&req), REGION, now, |_| Ok(Some(cred.clone()))).unwrap())
    });
    c.bench_function("sigv4/signing_key_derivation", |b| {
        b.iter(|| sigv4::signing_key(black_box(SECRET), "20261123", REGION, "kms"))
    });
}

criterion_group!(benches, sigv4_benches);
criterion_main!(benches);
