//! The front doors mounted on the KMS listener: the web console (and the S3 gateway's
//! buckets as its buckets pages read them, from the gateway's catalog through the engine),
//! the volume service (requests signed for `ec2`) and the ACME server (`/acme/`).

use std::sync::Arc;

use keyhold_console::{BucketSummary, Buckets, Console, ObjectSummary};
use keyhold_kms::Engine;
use keyhold_s3::meta::{BucketMeta, ObjectMeta, Sealed};

/// The console, mounted on the KMS listener.
#[derive(Debug)]
pub struct ConsoleDoor(pub Arc<Console>);

impl keyhold_server::Mounted for ConsoleDoor {
    fn owns(&self, path: &str, _headers: &http::HeaderMap) -> bool {
        Console::owns(path)
    }

    fn handle(
        &self,
        conn: keyhold_server::Connection,
        req: http::Request<hyper::body::Incoming>,
    ) -> keyhold_server::MountedFuture {
        let console = self.0.clone();
        Box::pin(async move { console.handle(conn.peer, conn.tls, req).await })
    }
}

/// The volume service, mounted on the KMS listener.
#[derive(Debug)]
pub struct VolumeDoor(pub Arc<keyhold_volumes::VolumeService>);

impl keyhold_server::Mounted for VolumeDoor {
    fn owns(&self, _path: &str, headers: &http::HeaderMap) -> bool {
        keyhold_volumes::VolumeService::owns(headers)
    }

    fn handle(
        &self,
        conn: keyhold_server::Connection,
        req: http::Request<hyper::body::Incoming>,
    ) -> keyhold_server::MountedFuture {
        let service = self.0.clone();
        Box::pin(async move { service.handle(conn.peer, conn.tls, req).await })
    }
}

/// The ACME server, mounted on the KMS listener under `/acme/`.
#[derive(Debug)]
pub struct AcmeDoor(pub Arc<keyhold_acme::AcmeService>);

impl keyhold_server::Mounted for AcmeDoor {
    fn owns(&self, path: &str, _headers: &http::HeaderMap) -> bool {
        keyhold_acme::AcmeService::owns(path)
    }

    fn handle(
        &self,
        conn: keyhold_server::Connection,
        req: http::Request<hyper::body::Incoming>,
    ) -> keyhold_server::MountedFuture {
        let service = self.0.clone();
        Box::pin(async move { service.handle(conn.tls, req).await })
    }
}

/// The gateway's catalog, read for the console.
pub struct CatalogBuckets(pub Arc<Engine>);

impl std::fmt::Debug for CatalogBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogBuckets")
    }
}

/// A bucket's default encryption in words.
fn default_encryption(meta: &str) -> String {
    let Ok(m) = serde_json::from_str::<BucketMeta>(meta) else {
        return "unreadable".into();
    };
    match m.encryption {
        None => "SSE-S3 (the default)".into(),
        Some(e) if e.algorithm == "aws:kms" => format!(
            "SSE-KMS with {}{}",
            e.kms_key_id.as_deref().unwrap_or("alias/aws/s3"),
            if e.bucket_key { ", Bucket Key" } else { "" }
        ),
        Some(_) => "SSE-S3".into(),
    }
}

fn summary(key: String, modified_ms: i64, meta: &str) -> ObjectSummary {
    let (size, sse, kms_key) = match serde_json::from_str::<ObjectMeta>(meta) {
        Ok(m) => {
            let (sse, key) = match m.sealed {
                Sealed::S3 { .. } => ("SSE-S3".to_string(), String::new()),
                Sealed::Kms {
                    key_arn,
                    bucket_wrapped,
                    ..
                } => (
                    if bucket_wrapped.is_some() {
                        "SSE-KMS (Bucket Key)".to_string()
                    } else {
                        "SSE-KMS".to_string()
                    },
                    key_arn,
                ),
                Sealed::Customer { .. } => ("SSE-C".to_string(), String::new()),
                Sealed::Unencrypted => ("none".to_string(), String::new()),
            };
            (m.size, sse, key)
        }
        Err(_) => (0, "unreadable".to_string(), String::new()),
    };
    ObjectSummary {
        key,
        size,
        modified_ms,
        sse,
        kms_key,
    }
}

impl Buckets for CatalogBuckets {
    fn buckets(&self, account: &str) -> Result<Vec<BucketSummary>, String> {
        let list = self
            .0
            .catalog()
            .list_buckets(account)
            .map_err(|e| e.to_string())?;
        Ok(list
            .into_iter()
            .map(|b| BucketSummary {
                encryption: default_encryption(&b.meta),
                name: b.name,
                created_ms: b.created_at,
            })
            .collect())
    }

    fn objects(
        &self,
        account: &str,
        bucket: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<ObjectSummary>>, String> {
        let catalog = self.0.catalog();
        match catalog.get_bucket(bucket).map_err(|e| e.to_string())? {
            Some(b) if b.account == account => {}
            _ => return Ok(None),
        }
        let list = catalog
            .list_objects(bucket, "", after, limit)
            .map_err(|e| e.to_string())?;
        Ok(Some(
            list.into_iter()
                .map(|o| summary(o.key, o.modified_at, &o.meta))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_encryption_in_words() {
        assert_eq!(default_encryption("{}"), "SSE-S3 (the default)");
        assert_eq!(
            default_encryption(
                r#"{"encryption":{"algorithm":"aws:kms","kms_key_id":"alias/k","bucket_key":true}}"#
            ),
            "SSE-KMS with alias/k, Bucket Key"
        );
        assert_eq!(default_encryption("nope"), "unreadable");
    }
}
