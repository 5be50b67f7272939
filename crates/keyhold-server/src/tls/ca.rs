//! keyhold's private CA: an ECDSA P-384 CA whose key is wrapped under the root key, the server
//! certificates it issues, and their renewal once two thirds of their life has passed.
//!
//! Files in the CA directory (`DATA_DIR/tls`): `ca.pem` (the CA certificate, public),
//! `ca.key.wrapped` (the CA's PKCS#8 key, wrapped), `server.pem`, `server.key.wrapped` and
//! `server.json` (the names and lifetime of the server certificate).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

use super::{certified_key, validity, CertStore, TlsError};

/// Wraps and unwraps secrets under the root of trust (the engine's root key).
pub trait Wrapper: Send + Sync {
    /// Wraps `secret` bound to `label`.
    fn wrap(&self, secret: &[u8], label: &str) -> Result<Vec<u8>, String>;
    /// Unwraps a value made by [`Wrapper::wrap`] with the same label.
    fn unwrap(&self, wrapped: &[u8], label: &str) -> Result<Zeroizing<Vec<u8>>, String>;
}

/// Label the CA key is wrapped under.
pub const CA_LABEL: &str = "keyhold:tls:ca-key";
/// Label the server key is wrapped under.
pub const SERVER_LABEL: &str = "keyhold:tls:server-key";
/// Lifetime of the CA certificate.
const CA_DAYS: i64 = 3650;

/// Key types `keyhold ca issue` can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048.
    Rsa2048,
}

impl KeyType {
    /// Parses `ecdsa-p256`, `ecdsa-p384`, `ed25519` or `rsa-2048`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ecdsa-p256" => Self::EcdsaP256,
            "ecdsa-p384" => Self::EcdsaP384,
            "ed25519" => Self::Ed25519,
            "rsa-2048" => Self::Rsa2048,
            _ => return None,
        })
    }

    fn generate(&self) -> Result<KeyPair, rcgen::Error> {
        match self {
            Self::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Self::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            Self::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            Self::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
    }
}

/// The names and lifetime of the server certificate, kept for renewal.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ServerSpec {
    /// DNS names and IP addresses.
    pub names: Vec<String>,
    /// Lifetime in seconds.
    pub lifetime_secs: i64,
}

fn ca_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Ca(e.to_string())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a file atomically (`keyhold_core::docs::write_atomically`).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    keyhold_core::docs::write_atomically(path, bytes).map_err(io(path))
}

fn odt(secs: i64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(ca_err)
}

fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| ca_err("rng"))?;
    b[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&b))
}

/// A certificate issued for a CSR.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub pem: String,
    /// Its serial number, lowercase hex.
    pub serial_hex: String,
    /// Start of validity, seconds since the epoch.
    pub not_before: i64,
    /// End of validity, seconds since the epoch.
    pub not_after: i64,
}

/// The private CA.
pub struct PrivateCa {
    /// Where its files live.
    dir: PathBuf,
    /// The CA certificate (PEM).
    cert_pem: String,
    /// The CA key (held in memory only unwrapped).
    key: KeyPair,
}

impl std::fmt::Debug for PrivateCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl PrivateCa {
    /// True when `dir` holds a CA.
    pub fn exists(dir: &Path) -> bool {
        dir.join("ca.pem").exists()
    }

    /// Creates a CA in `dir` and a first server certificate for `names`.
    pub fn create(
        dir: &Path,
        names: &[String],
        server_days: i64,
        wrapper: &dyn Wrapper,
        now_secs: i64,
    ) -> Result<Self, TlsError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(ca_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(ca_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "keyhold private CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = odt(now_secs - 60)?;
        params.not_after = odt(now_secs + CA_DAYS * 86_400)?;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(ca_err)?;
        let wrapped = wrapper
            .wrap(&Zeroizing::new(key.serialize_der()), CA_LABEL)
            .map_err(ca_err)?;
        write_atomic(&dir.join("ca.key.wrapped"), &wrapped)?;
        write_atomic(&dir.join("ca.pem"), cert.pem().as_bytes())?;
        let ca = Self {
            dir: dir.to_path_buf(),
            cert_pem: cert.pem(),
            key,
        };
        let spec = ServerSpec {
            names: names.to_vec(),
            lifetime_secs: server_days * 86_400,
        };
        write_atomic(
            &dir.join("server.json"),
            &serde_json::to_vec_pretty(&spec).map_err(ca_err)?,
        )?;
        ca.issue_server(&spec, wrapper, now_secs)?;
        Ok(ca)
    }

    /// Loads the CA in `dir`.
    pub fn load(dir: &Path, wrapper: &dyn Wrapper) -> Result<Self, TlsError> {
        let cert_path = dir.join("ca.pem");
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_path = dir.join("ca.key.wrapped");
        let wrapped = std::fs::read(&key_path).map_err(io(&key_path))?;
        let der = wrapper.unwrap(&wrapped, CA_LABEL).map_err(ca_err)?;
        let key = KeyPair::try_from(der.as_slice()).map_err(ca_err)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            cert_pem,
            key,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `names` (server and client authentication) valid for
    /// `lifetime_secs` from `now_secs`. Returns the certificate and key, PEM.
    pub fn issue(
        &self,
        names: &[String],
        lifetime_secs: i64,
        key_type: KeyType,
        now_secs: i64,
    ) -> Result<(String, Zeroizing<String>), TlsError> {
        if names.is_empty() {
            return Err(ca_err("a certificate needs at least one name"));
        }
        let key = key_type.generate().map_err(ca_err)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(ca_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = odt(now_secs - 60)?;
        params.not_after = odt(now_secs + lifetime_secs)?;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(ca_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(ca_err)?;
        Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
    }

    /// Issues a server certificate for the key of a verified CSR (`csr_der`): exactly `names`
    /// as its DNS names (the first is the subject), server authentication, `lifetime_secs`
    /// from `now_secs`, and `crl_url` as its CRL distribution point. Whatever else the CSR
    /// asks (extensions, subject) is ignored. Returns the certificate (PEM), its serial and
    /// its validity (seconds).
    pub fn issue_for_csr(
        &self,
        csr_der: &[u8],
        names: &[String],
        lifetime_secs: i64,
        crl_url: Option<&str>,
        now_secs: i64,
    ) -> Result<IssuedCert, TlsError> {
        let der = rustls_pki_types::CertificateSigningRequestDer::from(csr_der);
        let mut csr = rcgen::CertificateSigningRequestParams::from_der(&der).map_err(ca_err)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(ca_err)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.clone());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if csr.public_key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let not_before = now_secs - 60;
        let not_after = now_secs + lifetime_secs;
        params.not_before = odt(not_before)?;
        params.not_after = odt(not_after)?;
        let serial = random_serial()?;
        // As DER writes it: without leading zero bytes.
        let serial_hex = hex::encode(
            serial
                .as_ref()
                .iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect::<Vec<u8>>(),
        );
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        if let Some(url) = crl_url {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.to_string()],
            }];
        }
        csr.params = params;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(ca_err)?;
        let cert = csr.signed_by(&issuer).map_err(ca_err)?;
        Ok(IssuedCert {
            pem: cert.pem(),
            serial_hex,
            not_before,
            not_after,
        })
    }

    /// A CRL (DER) listing `revoked` (serial in hex, revocation time in seconds, reason
    /// code), numbered `number`, valid for `valid_secs` from `now_secs`.
    pub fn crl(
        &self,
        revoked: &[(String, i64, u8)],
        number: u64,
        valid_secs: i64,
        now_secs: i64,
    ) -> Result<Vec<u8>, TlsError> {
        use rcgen::{CertificateRevocationListParams, RevocationReason, RevokedCertParams};
        let mut list = Vec::new();
        for (serial, at, reason) in revoked {
            let bytes = hex::decode(serial).map_err(ca_err)?;
            let reason_code = match reason {
                1 => RevocationReason::KeyCompromise,
                3 => RevocationReason::AffiliationChanged,
                4 => RevocationReason::Superseded,
                5 => RevocationReason::CessationOfOperation,
                9 => RevocationReason::PrivilegeWithdrawn,
                _ => RevocationReason::Unspecified,
            };
            list.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: odt(*at)?,
                reason_code: Some(reason_code),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: odt(now_secs - 60)?,
            next_update: odt(now_secs + valid_secs)?,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: list,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(ca_err)?;
        let crl = params.signed_by(&issuer).map_err(ca_err)?;
        Ok(crl.der().to_vec())
    }

    fn spec(&self) -> Result<ServerSpec, TlsError> {
        let path = self.dir.join("server.json");
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(ca_err)
    }

    fn issue_server(
        &self,
        spec: &ServerSpec,
        wrapper: &dyn Wrapper,
        now_secs: i64,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let (cert, key) = self.issue(
            &spec.names,
            spec.lifetime_secs,
            KeyType::EcdsaP256,
            now_secs,
        )?;
        let ck = certified_key(cert.as_bytes(), key.as_bytes(), now_secs)?;
        let wrapped = wrapper.wrap(key.as_bytes(), SERVER_LABEL).map_err(ca_err)?;
        write_atomic(&self.dir.join("server.key.wrapped"), &wrapped)?;
        write_atomic(&self.dir.join("server.pem"), cert.as_bytes())?;
        Ok(ck)
    }

    /// The current server certificate, from the files.
    pub fn server_cert(
        &self,
        wrapper: &dyn Wrapper,
        now_secs: i64,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let cert_path = self.dir.join("server.pem");
        let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
        let key_path = self.dir.join("server.key.wrapped");
        let wrapped = std::fs::read(&key_path).map_err(io(&key_path))?;
        let key = wrapper.unwrap(&wrapped, SERVER_LABEL).map_err(ca_err)?;
        match certified_key(&cert, &key, now_secs) {
            // An expired server certificate (a server that was stopped for long) is replaced.
            Err(TlsError::Validity(_)) => self.issue_server(&self.spec()?, wrapper, now_secs),
            other => other,
        }
    }

    /// Issues and serves a new server certificate when two thirds of the current one's life
    /// has passed. Returns true when it renewed.
    pub fn renew_if_due(
        &self,
        wrapper: &dyn Wrapper,
        store: &CertStore,
        now_secs: i64,
    ) -> Result<bool, TlsError> {
        let current = store.current();
        let leaf = current
            .end_entity_cert()
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        let (nb, na) = validity(leaf)?;
        if now_secs < nb + (na - nb) * 2 / 3 {
            return Ok(false);
        }
        let fresh = self.issue_server(&self.spec()?, wrapper, now_secs)?;
        store.replace(fresh);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrapper for tests: XOR-free, just tags the label (no secrecy needed here).
    struct Plain;

    impl Wrapper for Plain {
        fn wrap(&self, secret: &[u8], label: &str) -> Result<Vec<u8>, String> {
            let mut v = label.as_bytes().to_vec();
            v.push(0);
            v.extend_from_slice(secret);
            Ok(v)
        }
        fn unwrap(&self, wrapped: &[u8], label: &str) -> Result<Zeroizing<Vec<u8>>, String> {
            let prefix = [label.as_bytes(), &[0]].concat();
            wrapped
                .strip_prefix(prefix.as_slice())
                .map(|s| Zeroizing::new(s.to_vec()))
                .ok_or_else(|| "wrong label".into())
        }
    }

    #[test]
    fn create_load_issue_and_renew() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let ca = PrivateCa::create(dir.path(), &names, 3, &Plain, now).unwrap();
        assert!(ca.cert_pem().contains("BEGIN CERTIFICATE"));
        let again = PrivateCa::load(dir.path(), &Plain).unwrap();
        let cert = again.server_cert(&Plain, now).unwrap();
        let store = CertStore::new(cert);
        let first = store.current().end_entity_cert().unwrap().to_vec();
        assert!(!again.renew_if_due(&Plain, &store, now + 86_400).unwrap());
        assert!(again
            .renew_if_due(&Plain, &store, now + 2 * 86_400 + 1)
            .unwrap());
        assert_ne!(store.current().end_entity_cert().unwrap().to_vec(), first);
        let (c, k) = again
            .issue(&["svc.internal".into()], 86_400, KeyType::Rsa2048, now)
            .unwrap();
        certified_key(c.as_bytes(), k.as_bytes(), now).unwrap();
    }

    #[test]
    fn expired_or_mismatched_certificates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        let ca = PrivateCa::create(dir.path(), &["localhost".into()], 1, &Plain, now).unwrap();
        let (c1, k1) = ca
            .issue(&["a".into()], 3600, KeyType::EcdsaP256, now)
            .unwrap();
        let (_, k2) = ca
            .issue(&["b".into()], 3600, KeyType::EcdsaP256, now)
            .unwrap();
        assert!(matches!(
            certified_key(c1.as_bytes(), k1.as_bytes(), now + 7200),
            Err(TlsError::Validity(_))
        ));
        assert!(matches!(
            certified_key(c1.as_bytes(), k2.as_bytes(), now),
            Err(TlsError::KeyMismatch)
        ));
        assert!(matches!(
            certified_key(b"garbage", k1.as_bytes(), now),
            Err(TlsError::Pem(_))
        ));
    }
}
