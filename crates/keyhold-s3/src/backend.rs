//! The S3-backend object store: ciphertext pieces kept as objects of an existing
//! S3-compatible store (MinIO, Ceph RGW, AWS S3), so several keyhold nodes sharing one
//! PostgreSQL store serve the same buckets. Only ciphertext ever leaves keyhold.
//!
//! A piece is spooled to a local file while it is written (its length is known only at the
//! end), then uploaded with one PutObject when committed: the backend shows it whole or not at
//! all. Reads are ranged GETs of the windows the gateway asks for.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use crate::objects::{DataReader, DataWriter, ObjectStore, TempFile};

/// Where the backend is and how to sign for it.
#[derive(Clone)]
pub struct BackendConfig {
    /// The endpoint (`http://127.0.0.1:9000`).
    pub endpoint: String,
    /// The backend bucket.
    pub bucket: String,
    /// A key prefix inside it (empty, or ending in `/`).
    pub prefix: String,
    /// The backend's region.
    pub region: String,
    /// Access key id for the backend.
    pub access_key_id: String,
    /// Secret access key for the backend.
    pub secret_access_key: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl BackendConfig {
    /// Reads `URL` = `http(s)://HOST[:PORT]/BUCKET[/PREFIX]`.
    pub fn parse(
        url: &str,
        region: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("--s3-backend {url}: expected http(s)://HOST/BUCKET[/PREFIX]")
        })?;
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "--s3-backend {url}: the scheme must be http or https"
            ));
        }
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("--s3-backend {url}: the URL names no bucket"))?;
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() || host.is_empty() {
            return Err(format!("--s3-backend {url}: the URL names no bucket"));
        }
        if access_key_id.is_empty() || secret_access_key.is_empty() {
            return Err("--s3-backend needs KEYHOLD_S3_BACKEND_ACCESS_KEY_ID and \
                 KEYHOLD_S3_BACKEND_SECRET_ACCESS_KEY"
                .into());
        }
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(Self {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix,
            region: region.to_string(),
            access_key_id: access_key_id.to_string(),
            secret_access_key: zeroize::Zeroizing::new(secret_access_key.to_string()),
        })
    }
}

/// Pieces as objects of a backend bucket.
pub struct S3Backend {
    client: Client,
    bucket: String,
    prefix: String,
    spool: PathBuf,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn backend_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("S3 backend: {e}"))
}

impl S3Backend {
    /// A backend store; `spool` is a local directory for pieces being written (emptied now).
    pub async fn open(config: BackendConfig, spool: &Path) -> io::Result<Self> {
        if spool.exists() {
            std::fs::remove_dir_all(spool)?;
        }
        std::fs::create_dir_all(spool)?;
        let creds = aws_credential_types::Credentials::from_keys(
            config.access_key_id.clone(),
            config.secret_access_key.to_string(),
            None,
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(config.region.clone()))
            .endpoint_url(&config.endpoint)
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        let client = Client::from_conf(conf);
        // The bucket must be there and reachable before the gateway serves anything.
        client
            .head_bucket()
            .bucket(&config.bucket)
            .send()
            .await
            .map_err(|e| {
                backend_error(format!(
                    "bucket {} at {}: {}",
                    config.bucket,
                    config.endpoint,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ))
            })?;
        Ok(Self {
            client,
            bucket: config.bucket,
            prefix: config.prefix,
            spool: spool.to_path_buf(),
        })
    }

    fn key(&self, name: &str) -> io::Result<String> {
        let name = crate::objects::checked(name)?;
        Ok(format!("{}{}/{}", self.prefix, &name[..2], name))
    }
}

struct SpoolWriter {
    spool: TempFile,
    key: String,
    bucket: String,
    client: Client,
}

#[async_trait::async_trait]
impl DataWriter for SpoolWriter {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.spool.write(bytes).await
    }

    async fn commit(mut self: Box<Self>) -> io::Result<()> {
        self.spool.close(false).await?;
        let body = ByteStream::from_path(self.spool.path())
            .await
            .map_err(backend_error)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .body(body)
            .send()
            .await
            .map_err(|e| backend_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}

struct RangeReader {
    client: Client,
    bucket: String,
    key: String,
    len: u64,
}

#[async_trait::async_trait]
impl DataReader for RangeReader {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset + len as u64 - 1;
        if end >= self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of stored data",
            ));
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .range(format!("bytes={offset}-{end}"))
            .send()
            .await
            .map_err(|e| backend_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(backend_error)?
            .into_bytes();
        if bytes.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the backend returned a short range",
            ));
        }
        Ok(bytes.to_vec())
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Backend {
    async fn create(&self, name: &str) -> io::Result<Box<dyn DataWriter>> {
        let key = self.key(name)?;
        let path = self
            .spool
            .join(format!("{name}.{}", uuid::Uuid::new_v4().simple()));
        Ok(Box::new(SpoolWriter {
            spool: TempFile::create(path).await?,
            key,
            bucket: self.bucket.clone(),
            client: self.client.clone(),
        }))
    }

    async fn open(&self, name: &str) -> io::Result<Arc<dyn DataReader>> {
        let key = self.key(name)?;
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| {
                let missing = e
                    .as_service_error()
                    .is_some_and(aws_sdk_s3::operation::head_object::HeadObjectError::is_not_found);
                if missing {
                    io::Error::new(io::ErrorKind::NotFound, "stored data not found")
                } else {
                    backend_error(aws_sdk_s3::error::DisplayErrorContext(e))
                }
            })?;
        let len = head
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| backend_error("no content length"))?;
        Ok(Arc::new(RangeReader {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key,
            len,
        }))
    }

    async fn delete(&self, name: &str) -> io::Result<()> {
        let key = self.key(name)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| backend_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls_name_an_endpoint_a_bucket_and_a_prefix() {
        let c = BackendConfig::parse(
            "http://127.0.0.1:9000/keyhold/node-a/",
            "us-east-1",
            "a",
            "s",
        )
        .unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.bucket.as_str(), c.prefix.as_str()),
            ("http://127.0.0.1:9000", "keyhold", "node-a/")
        );
        let c = BackendConfig::parse("https://s3.example.com/b", "eu-west-1", "a", "s").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("b", ""));
        assert!(!format!("{c:?}").contains("\"s\""));
        for bad in ["s3.example.com/b", "ftp://h/b", "http://h", "http://h/"] {
            assert!(BackendConfig::parse(bad, "r", "a", "s").is_err(), "{bad}");
        }
        assert!(BackendConfig::parse("http://h/b", "r", "", "").is_err());
    }
}
