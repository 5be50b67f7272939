//! The gateway on a loopback port, driven by the AWS SDK for Rust (`aws-sdk-s3`), which sends
//! aws-chunked bodies with CRC32 checksum trailers by default.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use keyhold_core::secret::SecretBytes;
use keyhold_kms::audit::MemoryAuditLog;
use keyhold_kms::clock::SystemClock;
use keyhold_kms::principal::{Credential, Principal};
use keyhold_kms::Engine;
use keyhold_s3::{Gateway, GatewayOptions, LocalDir, Transport};

struct Running {
    endpoint: String,
    audit: Arc<MemoryAuditLog>,
    gateway: Arc<Gateway>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Running {
    start_with(GatewayOptions::default()).await
}

async fn start_with(options: GatewayOptions) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let root = keyhold_hsm::FileRootKey::create(&dir.path().join("root.key")).unwrap();
    let store = keyhold_store::SqliteStore::open(&dir.path().join("keyhold.db")).unwrap();
    let audit = Arc::new(MemoryAuditLog::default());
    let dev = Credential {
        principal: Principal {
            arn: "arn:aws:iam::111122223333:user/dev".into(),
            account: "111122223333".into(),
            access_key_id: "test".into(),
        },
        secret: Arc::new(SecretBytes::new(b"test".to_vec())),
    };
    let engine = Arc::new(Engine::new(
        "us-east-1",
        Arc::new(store),
        Arc::new(root),
        Arc::new(SystemClock),
        audit.clone(),
        Some(dev),
    ));
    let objects = LocalDir::open(&dir.path().join("objects")).unwrap();
    let gateway = Arc::new(Gateway::new(engine, Arc::new(objects), options).unwrap());
    let serving = gateway.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let options = keyhold_server::ServerOptions::default();
        let handler = move |conn: keyhold_server::Connection, req| {
            let g = serving.clone();
            async move {
                let t = Transport {
                    peer: conn.peer,
                    tls: conn.tls,
                };
                g.handle(t, req).await
            }
        };
        keyhold_server::serve(
            listener,
            &options,
            async {
                let _ = rx.await;
            },
            handler,
        )
        .await
        .unwrap();
    });
    Running {
        endpoint,
        audit,
        gateway,
        _dir: dir,
        _stop: tx,
    }
}

fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::from_keys(
            "test", "test", None,
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_sdk_writes_reads_lists_and_uploads_in_parts() {
    let s = start().await;
    let c = client(&s.endpoint);
    c.create_bucket().bucket("rust-sdk").send().await.unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let put = c
        .put_object()
        .bucket("rust-sdk")
        .key("data.bin")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    let got = c
        .get_object()
        .bucket("rust-sdk")
        .key("data.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes(), body);
    let range = c
        .get_object()
        .bucket("rust-sdk")
        .key("data.bin")
        .range("bytes=65530-65545")
        .send()
        .await
        .unwrap();
    assert_eq!(
        range.body.collect().await.unwrap().into_bytes(),
        body[65530..65546]
    );

    // SSE-KMS under the account's aws/s3 key.
    let put = c
        .put_object()
        .bucket("rust-sdk")
        .key("kms.bin")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .body(ByteStream::from_static(b"kms protected"))
        .send()
        .await
        .unwrap();
    assert!(put
        .ssekms_key_id()
        .unwrap()
        .starts_with("arn:aws:kms:us-east-1:111122223333:key/"));

    // A multipart upload of two parts.
    let up = c
        .create_multipart_upload()
        .bucket("rust-sdk")
        .key("parts")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let p1 = vec![7u8; 5 * 1024 * 1024];
    let mut parts = Vec::new();
    for (n, data) in [(1, p1.clone()), (2, b"end".to_vec())] {
        let r = c
            .upload_part()
            .bucket("rust-sdk")
            .key("parts")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(data))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().unwrap())
                .build(),
        );
    }
    c.complete_multipart_upload()
        .bucket("rust-sdk")
        .key("parts")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let all = c
        .get_object()
        .bucket("rust-sdk")
        .key("parts")
        .send()
        .await
        .unwrap();
    let bytes = all.body.collect().await.unwrap().into_bytes();
    assert_eq!(bytes.len(), p1.len() + 3);
    assert_eq!(&bytes[p1.len()..], b"end");

    let list = c.list_objects_v2().bucket("rust-sdk").send().await.unwrap();
    let keys: Vec<_> = list.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["data.bin", "kms.bin", "parts"]);

    let missing = c
        .get_object()
        .bucket("rust-sdk")
        .key("nope")
        .send()
        .await
        .unwrap_err();
    assert!(missing.into_service_error().is_no_such_key());

    // Every request is in the audit log with its event source.
    let events = s.audit.0.lock().unwrap().clone();
    let s3_events: Vec<_> = events
        .iter()
        .filter(|e| e["eventSource"] == "s3.amazonaws.com")
        .collect();
    assert!(s3_events
        .iter()
        .any(|e| e["eventName"] == "CompleteMultipartUpload"));
    let failed = s3_events
        .iter()
        .find(|e| e["eventName"] == "GetObject" && e["errorCode"] == "NoSuchKey")
        .unwrap();
    assert_eq!(failed["resources"][1]["ARN"], "arn:aws:s3:::rust-sdk/nope");
    let kms: Vec<_> = events
        .iter()
        .filter(|e| e["eventName"] == "GenerateDataKey")
        .collect();
    assert_eq!(kms.len(), 1);
    assert_eq!(kms[0]["userIdentity"]["invokedBy"], "s3.amazonaws.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_never_completed_are_removed_by_the_maintenance_task() {
    let s = start_with(GatewayOptions {
        upload_expiry: std::time::Duration::ZERO,
        ..GatewayOptions::default()
    })
    .await;
    let c = client(&s.endpoint);
    c.create_bucket().bucket("abandoned").send().await.unwrap();
    let up = c
        .create_multipart_upload()
        .bucket("abandoned")
        .key("never-done")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    c.upload_part()
        .bucket("abandoned")
        .key("never-done")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from_static(b"part"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(s.gateway.expire_uploads().await.unwrap(), 1);
    let gone = c
        .list_parts()
        .bucket("abandoned")
        .key("never-done")
        .upload_id(id)
        .send()
        .await
        .unwrap_err();
    assert!(gone.into_service_error().meta().code() == Some("NoSuchUpload"));
    // With the upload gone the bucket is empty and can be deleted.
    c.delete_bucket().bucket("abandoned").send().await.unwrap();
}
