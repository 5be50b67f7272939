//! Micro-benchmarks of the ciphertext blob (seal and open under one key version) and of key
//! policy parsing and evaluation. `cargo bench -p keyhold-core`.

// A benchmark's setup has no error path worth handling: a failure is a broken benchmark.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyhold_core::blob;
use keyhold_core::context::EncryptionContext;
use keyhold_core::ids::KeyId;
use keyhold_core::policy::{default_key_policy, PolicyDocument, RequestContext};
use keyhold_core::secret::SecretBytes;

const ACCOUNT: &str = "111122223333";

fn context() -> EncryptionContext {
    EncryptionContext::new(BTreeMap::from([
        ("tenant".to_string(), "acme".to_string()),
        ("purpose".to_string(), "invoices".to_string()),
    ]))
}

fn blob_benches(c: &mut Criterion) {
    let material = SecretBytes::random(32).unwrap();
    let id = KeyId::generate();
    let ctx = context();
    let mut g = c.benchmark_group("blob");
    for size in [256usize, 4096] {
        let plaintext = vec![7u8; size];
        let sealed = blob::seal(&material, &id, 1, &ctx, &plaintext).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("seal/{size}"), |b| {
            b.iter(|| blob::seal(&material, &id, 1, &ctx, black_box(&plaintext)).unwrap())
        });
        g.bench_function(format!("open/{size}"), |b| {
            b.iter(|| blob::open(&material, black_box(&sealed), &ctx).unwrap())
        });
    }
    g.finish();
}

/// A policy of the shape teams write: the default root statement, a role allowed to encrypt
/// only with a tenant context, and a deny of key deletion.
fn conditional_policy() -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "root", "Effect": "Allow",
             "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "app", "Effect": "Allow",
             "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/app")},
             "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"],
             "Resource": "*",
             "Condition": {"StringEquals": {"kms:EncryptionContext:tenant": "acme"},
                           "Bool": {"aws:SecureTransport": "true"}}},
            {"Sid": "nodelete", "Effect": "Deny", "Principal": "*",
             "Action": "kms:ScheduleKeyDeletion", "Resource": "*"}
        ]
    })
    .to_string()
}

fn policy_benches(c: &mut Criterion) {
    let default = default_key_policy(ACCOUNT);
    let conditional = conditional_policy();
    let mut g = c.benchmark_group("policy");
    g.bench_function("parse/default", |b| {
        b.iter(|| PolicyDocument::parse(black_box(&default)).unwrap())
    });
    g.bench_function("parse/conditional", |b| {
        b.iter(|| PolicyDocument::parse(black_box(&conditional)).unwrap())
    });
    let arn = format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/{}", KeyId::generate());
    let default_doc = PolicyDocument::parse(&default).unwrap();
    let conditional_doc = PolicyDocument::parse(&conditional).unwrap();
    let user = format!("arn:aws:iam::{ACCOUNT}:user/admin");
    let role = format!("arn:aws:iam::{ACCOUNT}:role/app");
    let ctx = |principal: &'static str| RequestContext {
        principal_arn: principal,
        principal_account: ACCOUNT,
        action: "kms:Encrypt",
        resource: "",
        keys: HashMap::from([
            (
                "kms:encryptioncontext:tenant".to_string(),
                vec!["acme".to_string()],
            ),
            ("aws:securetransport".to_string(), vec!["true".to_string()]),
        ]),
    };
    let user: &'static str = Box::leak(user.into_boxed_str());
    let role: &'static str = Box::leak(role.into_boxed_str());
    let arn: &'static str = Box::leak(arn.into_boxed_str());
    let mut admin = ctx(user);
    admin.resource = arn;
    let mut app = ctx(role);
    app.resource = arn;
    g.bench_function("evaluate/default", |b| {
        b.iter(|| default_doc.evaluate(black_box(&admin)))
    });
    g.bench_function("evaluate/conditional", |b| {
        b.iter(|| conditional_doc.evaluate(black_box(&app)))
    });
    g.finish();
}

criterion_group!(benches, blob_benches, policy_benches);
criterion_main!(benches);
