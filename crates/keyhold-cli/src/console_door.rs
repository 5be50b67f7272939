//! The front doors mounted on the KMS listener: the web console (and the S3 gateway's
//! buckets as its buckets pages read them, from the gateway's catalog through the engine),
//! the volume service (requests signed for `ec2`) and the ACME server (`/acme/`).

use std::sync::Arc;

use keyhold_console::{BucketSummary, Buckets, Console, ObjectSummary};
use keyhold_kms::Engine;
use keyhold_s3::meta::{BucketMeta, ObjectMeta, Sealed};

/// A front door mounted on the KMS listener: which requests are its, and how it answers.
pub struct Door {
    name: &'static str,
    owns: fn(&str, &http::HeaderMap) -> bool,
    handle: Box<
        dyn Fn(
                keyhold_server::Connection,
                http::Request<hyper::body::Incoming>,
            ) -> keyhold_server::MountedFuture
            + Send
            + Sync,
    >,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl keyhold_server::Mounted for Door {
    fn owns(&self, path: &str, headers: &http::HeaderMap) -> bool {
        (self.owns)(path, headers)
    }

    fn handle(
        &self,
        conn: keyhold_server::Connection,
        req: http::Request<hyper::body::Incoming>,
    ) -> keyhold_server::MountedFuture {
        (self.handle)(conn, req)
    }
}

impl Door {
    /// The web console, under `/console/`.
    pub fn console(console: Arc<Console>) -> Self {
        Self {
            name: "console",
            owns: |path, _| Console::owns(path),
            handle: Box::new(move |conn, req| {
                let console = console.clone();
                Box::pin(async move { console.handle(conn.peer, conn.tls, req).await })
            }),
        }
    }

    /// The volume service, for requests signed for `ec2`.
    pub fn volumes(service: Arc<keyhold_volumes::VolumeService>) -> Self {
        Self {
            name: "volumes",
            owns: |_, headers| keyhold_volumes::VolumeService::owns(headers),
            handle: Box::new(move |conn, req| {
                let service = service.clone();
                Box::pin(async move { service.handle(conn.peer, conn.tls, req).await })
            }),
        }
    }

    /// The ACME server, under `/acme/`.
    pub fn acme(service: Arc<keyhold_acme::AcmeService>) -> Self {
        Self {
            name: "acme",
            owns: |path, _| keyhold_acme::AcmeService::owns(path),
            handle: Box::new(move |conn, req| {
                let service = service.clone();
                Box::pin(async move { service.handle(conn.tls, req).await })
            }),
        }
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
