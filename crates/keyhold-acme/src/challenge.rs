//! Proving control of names (`http-01`: fetching the key authorization from the named host)
//! and reading the certificates and CSRs clients send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::problem::Problem;
use crate::AcmeOptions;

/// How long one validation may take.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches `http://NAME:PORT/.well-known/acme-challenge/TOKEN` and checks that it answers the
/// key authorization (RFC 8555 section 8.3).
pub async fn http01(
    name: &str,
    token: &str,
    key_authorization: &str,
    options: &AcmeOptions,
) -> Result<(), Problem> {
    let port = options.http01_port;
    let run = async {
        let addr = address(name, port, options).await?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| Problem::connection(format!("{name} ({addr}): cannot connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| Problem::connection(format!("{name} ({addr}): {e}")))?;
        tokio::spawn(conn);
        let req = http::Request::get(format!("/.well-known/acme-challenge/{token}"))
            .header(http::header::HOST, name)
            .header(http::header::USER_AGENT, "keyhold-acme")
            .body(Empty::<Bytes>::new())
            .map_err(Problem::internal)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Problem::connection(format!("{name} ({addr}): {e}")))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 8192)
            .collect()
            .await
            .map_err(|_| Problem::incorrect_response(format!("{name}: the answer is unreadable")))?
            .to_bytes();
        if !status.is_success() {
            return Err(Problem::incorrect_response(format!(
                "{name} answered HTTP {} for the challenge",
                status.as_u16()
            )));
        }
        let got = String::from_utf8_lossy(&body);
        if got.trim_end() != key_authorization {
            return Err(Problem::incorrect_response(format!(
                "{name} answered another key authorization than expected"
            )));
        }
        Ok(())
    };
    tokio::time::timeout(VALIDATION_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(Problem::connection(format!("{name}: timed out"))))
}

/// The acmeIdentifier extension of a tls-alpn-01 certificate (RFC 8737).
const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

/// Accepts any server certificate for the handshake: tls-alpn-01 checks the self-signed
/// certificate's content itself (RFC 8737 section 3), while the handshake signature is still
/// verified with the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls_pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // Never reached: the validation connects with TLS 1.3 only.
        Err(rustls::Error::General(
            "TLS 1.2 is not used for tls-alpn-01".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // The certificate carries the critical acmeIdentifier extension, which a WebPKI
        // parser refuses: the signature is checked with its key alone.
        let (_, parsed) = X509Certificate::from_der(cert.as_ref())
            .map_err(|e| rustls::Error::General(format!("certificate: {e}")))?;
        let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from(parsed.public_key().raw);
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &spki,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects to NAME:PORT with TLS, ALPN `acme-tls/1` and NAME as SNI, and checks that the
/// certificate presented names NAME alone and carries the critical acmeIdentifier extension
/// holding SHA-256 of the key authorization (RFC 8737).
pub async fn tls_alpn01(
    name: &str,
    key_authorization: &str,
    options: &AcmeOptions,
) -> Result<(), Problem> {
    let port = options.tlsalpn01_port;
    let run = async {
        let addr = address(name, port, options).await?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(Problem::internal)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
        let server_name = rustls_pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| Problem::malformed(format!("{name}: {e}")))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| Problem::connection(format!("{name} ({addr}): cannot connect: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| Problem::tls(format!("{name} ({addr}): TLS: {e}")))?;
        let (_, conn) = tls.get_ref();
        if conn.alpn_protocol() != Some(b"acme-tls/1") {
            return Err(Problem::tls(format!("{name} did not negotiate acme-tls/1")));
        }
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| Problem::tls(format!("{name} presented no certificate")))?;
        let (_, cert) = X509Certificate::from_der(cert.as_ref())
            .map_err(|e| Problem::tls(format!("{name}: the certificate does not parse: {e}")))?;
        let mut sans = Vec::new();
        let mut identifier = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for n in &san.general_names {
                        match n {
                            GeneralName::DNSName(d) => sans.push(d.to_ascii_lowercase()),
                            _ => sans.push(String::new()),
                        }
                    }
                }
                _ if ext.oid.to_id_string() == ACME_IDENTIFIER_OID => {
                    identifier = Some((ext.critical, ext.value.to_vec()));
                }
                _ => {}
            }
        }
        if sans != [name.to_ascii_lowercase()] {
            return Err(Problem::incorrect_response(format!(
                "{name}: the certificate must name {name} alone (it names {sans:?})"
            )));
        }
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
        let mut want = vec![0x04, 0x20];
        want.extend_from_slice(digest.as_ref());
        match identifier {
            Some((true, value)) if value == want => Ok(()),
            Some((false, _)) => Err(Problem::incorrect_response(format!(
                "{name}: the acmeIdentifier extension must be critical"
            ))),
            Some(_) => Err(Problem::incorrect_response(format!(
                "{name}: the acmeIdentifier does not match the key authorization"
            ))),
            None => Err(Problem::incorrect_response(format!(
                "{name}: the certificate has no acmeIdentifier extension"
            ))),
        }
    };
    tokio::time::timeout(VALIDATION_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(Problem::connection(format!("{name}: timed out"))))
}

/// Where to reach `name` on `port`: the `--acme-resolve` address, else its DNS address.
async fn address(name: &str, port: u16, options: &AcmeOptions) -> Result<SocketAddr, Problem> {
    match options.resolve.get(name) {
        Some(ip) => Ok(SocketAddr::new(*ip, port)),
        None => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| Problem::dns(format!("{name}: cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| Problem::dns(format!("{name}: no address"))),
    }
}

/// Checks a CSR before it is signed: a key of acceptable strength (RSA of 2048 bits or more,
/// ECDSA P-256 or P-384, Ed25519) and exactly the order's names (subject common name and
/// subject alternative names together).
pub fn check_csr(der: &[u8], names: &[String]) -> Result<(), Problem> {
    use x509_parser::certification_request::X509CertificationRequest;
    let (_, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| Problem::bad_csr(format!("the CSR does not parse: {e}")))?;
    let info = &csr.certification_request_info;
    match info.subject_pki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if bits < 2048 {
                return Err(Problem::bad_csr(format!(
                    "an RSA key of {bits} bits is too weak (2048 at least)"
                )));
            }
        }
        Ok(PublicKey::EC(_)) => {
            let curve = info
                .subject_pki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            if curve != "1.2.840.10045.3.1.7" && curve != "1.3.132.0.34" {
                return Err(Problem::bad_csr(format!(
                    "EC curve {curve} is not accepted (P-256 and P-384 are)"
                )));
            }
        }
        Ok(PublicKey::Unknown(_))
            if info.subject_pki.algorithm.algorithm.to_id_string() == "1.3.101.112" => {}
        _ => return Err(Problem::bad_csr("the CSR's key type is not accepted")),
    }
    let mut asked = Vec::new();
    for cn in info.subject.iter_common_name() {
        if let Ok(s) = cn.as_str() {
            asked.push(s.to_ascii_lowercase());
        }
    }
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => asked.push(d.to_ascii_lowercase()),
                        other => {
                            return Err(Problem::bad_csr(format!(
                                "the CSR asks for a name the order does not hold: {other:?}"
                            )))
                        }
                    }
                }
            }
        }
    }
    let want = crate::name_set(names);
    let got = crate::name_set(&asked);
    if got != want {
        let mut extra: Vec<&String> = got.difference(&want).collect();
        let mut missing: Vec<&String> = want.difference(&got).collect();
        extra.sort();
        missing.sort();
        return Err(Problem::bad_csr(format!(
            "the CSR's names differ from the order's (not ordered: {extra:?}; missing: \
             {missing:?})"
        )));
    }
    Ok(())
}

/// A certificate's public key, as a JWK is compared with it.
#[derive(Debug)]
pub enum Key {
    /// An EC point (uncompressed).
    Ec(Vec<u8>),
    /// RSA modulus and exponent (big-endian, no leading zeros).
    Rsa(Vec<u8>, Vec<u8>),
    /// An Ed25519 key.
    Ed25519(Vec<u8>),
    /// Another kind.
    Other,
}

fn strip(b: &[u8]) -> Vec<u8> {
    b.iter().skip_while(|x| **x == 0).copied().collect()
}

/// A certificate's serial (lowercase hex, no leading zero bytes) and public key.
pub fn cert_serial_and_key(der: &[u8]) -> Result<(String, Key), Problem> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| Problem::malformed(format!("the certificate does not parse: {e}")))?;
    let serial = hex::encode(strip(cert.tbs_certificate.raw_serial()));
    let spki = cert.public_key();
    let key = match spki.parsed() {
        Ok(PublicKey::EC(p)) => Key::Ec(p.data().to_vec()),
        Ok(PublicKey::RSA(r)) => Key::Rsa(strip(r.modulus), strip(r.exponent)),
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => {
            Key::Ed25519(spki.subject_public_key.data.to_vec())
        }
        _ => Key::Other,
    };
    Ok((serial, key))
}

/// Whether `jwk` is the public key `key`.
pub fn jwk_matches_key(jwk: &Value, key: &Key) -> bool {
    let field = |n: &str| {
        jwk.get(n)
            .and_then(Value::as_str)
            .and_then(|s| crate::jws::unb64(s).ok())
    };
    match key {
        Key::Ec(point) => match (field("x"), field("y")) {
            (Some(x), Some(y)) => {
                let mut p = vec![4u8];
                p.extend(x);
                p.extend(y);
                &p == point
            }
            _ => false,
        },
        Key::Rsa(n, e) => {
            field("n").map(|v| strip(&v)).as_ref() == Some(n)
                && field("e").map(|v| strip(&v)).as_ref() == Some(e)
        }
        Key::Ed25519(x) => field("x").as_ref() == Some(x),
        Key::Other => false,
    }
}

/// Whether the first certificate of `chain_pem` is `der`.
pub fn same_certificate(chain_pem: &str, der: &[u8]) -> bool {
    keyhold_server::tls::certs_from_pem(chain_pem.as_bytes(), "certificate")
        .ok()
        .and_then(|c| c.into_iter().next())
        .is_some_and(|c| c.as_ref() == der)
}
