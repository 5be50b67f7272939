//! TLS for the front door: rustls with the aws-lc-rs provider, TLS 1.3 and 1.2 with AEAD
//! suites only, HTTP/2 and HTTP/1.1 by ALPN, a certificate that can be swapped while serving,
//! and optional client certificates.
//!
//! - [`ca`]: keyhold's private CA: the CA, server certificates, renewal at two thirds of life.
//! - [`CertStore`]: the certificate the listener serves, replaceable at any time.

pub mod ca;

use std::sync::{Arc, RwLock};

use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors of the TLS layer, each with the file or setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file held no certificate or key, or could not be parsed.
    #[error("{0}")]
    Pem(String),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// The certificate has expired (or is not valid yet).
    #[error("{0}")]
    Validity(String),
    /// Building the rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The private CA could not issue or load a certificate.
    #[error("private CA: {0}")]
    Ca(String),
}

/// Parses a PEM certificate chain.
pub fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{what}: not a PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!("{what}: no certificate found")));
    }
    Ok(certs)
}

/// The validity window of a DER certificate, as Unix seconds.
pub fn validity(cert: &[u8]) -> Result<(i64, i64), TlsError> {
    let (_, c) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| TlsError::Pem(format!("certificate does not parse: {e}")))?;
    let v = c.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Builds a servable certificate from PEM chain and key, refusing a key that does not match
/// or a certificate outside its validity at `now_secs`.
pub fn certified_key(
    chain_pem: &[u8],
    key_pem: &[u8],
    now_secs: i64,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs_from_pem(chain_pem, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Pem(format!("private key: not a PEM private key ({e})")))?;
    let provider = aws_lc_rs::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Pem(format!("private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|_| TlsError::KeyMismatch)?;
    let (not_before, not_after) = validity(
        ck.end_entity_cert()
            .map_err(|e| TlsError::Pem(e.to_string()))?,
    )?;
    if now_secs > not_after {
        return Err(TlsError::Validity(format!(
            "the certificate expired at {} (Unix time {not_after})",
            fmt_time(not_after)
        )));
    }
    if now_secs < not_before {
        return Err(TlsError::Validity(format!(
            "the certificate is not valid before {}",
            fmt_time(not_before)
        )));
    }
    Ok(Arc::new(ck))
}

fn fmt_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// The certificate the listener serves; [`CertStore::replace`] swaps it for new connections
/// without touching open ones.
#[derive(Debug)]
pub struct CertStore {
    /// The current certificate and key.
    current: RwLock<Arc<CertifiedKey>>,
}

/// Publishes when the served certificate expires
/// (`keyhold_tls_certificate_expiry_timestamp_seconds`).
fn note_expiry(cert: &CertifiedKey) {
    if let Some(Ok((_, not_after))) = cert.cert.first().map(|c| validity(c.as_ref())) {
        metrics::gauge!("keyhold_tls_certificate_expiry_timestamp_seconds").set(not_after as f64);
    }
}

impl CertStore {
    /// A store serving `cert`.
    pub fn new(cert: Arc<CertifiedKey>) -> Self {
        note_expiry(&cert);
        Self {
            current: RwLock::new(cert),
        }
    }

    /// Serves `cert` from now on.
    pub fn replace(&self, cert: Arc<CertifiedKey>) {
        note_expiry(&cert);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = cert;
    }

    /// The certificate being served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls server configuration: TLS 1.3 and 1.2, AEAD suites, ALPN h2 and http/1.1, and
/// client certificates signed by `client_ca_pem` when given.
pub fn server_config(
    store: Arc<CertStore>,
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in certs_from_pem(pem, "client CA")? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Pem(format!("client CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
