//! Signing requests, for keyhold's own clients (`keyhold bench`, tests).

use aws_lc_rs::hmac;
use http::{HeaderMap, HeaderValue, Method, Uri};
use zeroize::Zeroizing;

use crate::canonical::{canonical_request, sha256_hex, signing_key, string_to_sign, PathEncoding};
use crate::{Error, Scope, ALGORITHM};

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The request has no host: neither a `host` header nor an authority in its URI.
    #[error("the request names no host")]
    NoHost,
    /// A header value could not be built (an access key id with control characters, ...).
    #[error("a header value is not valid: {0}")]
    BadHeader(String),
}

/// Signs requests with one long-term credential for one service and region, caching the
/// day's signing key as SDKs do.
pub struct Signer {
    /// The access key id.
    access_key_id: String,
    /// The secret access key.
    secret: Zeroizing<Vec<u8>>,
    /// Service name in the credential scope.
    service: String,
    /// Region in the credential scope.
    region: String,
    /// The day (`YYYYMMDD`) and its signing key.
    cached: Option<(String, hmac::Key)>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key_id", &self.access_key_id)
            .field("service", &self.service)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `access_key_id`/`secret` scoped to `scope`.
    pub fn new(access_key_id: &str, secret: &[u8], scope: Scope<'_>) -> Self {
        Self {
            access_key_id: access_key_id.to_string(),
            secret: Zeroizing::new(secret.to_vec()),
            service: scope.service.to_string(),
            region: scope.region.to_string(),
            cached: None,
        }
    }

    /// Signs a request at `now_secs`: sets `x-amz-date` and `authorization` in `headers`.
    /// Every header present is signed, and `host` (from the URI's authority when there is no
    /// `host` header, as for HTTP/2). The payload hash is `x-amz-content-sha256` when the
    /// request has one (S3's `UNSIGNED-PAYLOAD`), else the SHA-256 of `body`.
    pub fn sign(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), SignError> {
        let amz_date = crate::format_amz_date(now_secs);
        let value =
            |s: &str| HeaderValue::from_str(s).map_err(|e| SignError::BadHeader(e.to_string()));
        headers.insert("x-amz-date", value(&amz_date)?);
        headers.remove(http::header::AUTHORIZATION);
        let mut names: Vec<String> = headers.keys().map(|k| k.as_str().to_string()).collect();
        if !headers.contains_key(http::header::HOST) {
            if uri.authority().is_none() {
                return Err(SignError::NoHost);
            }
            names.push("host".into());
        }
        names.sort();
        names.dedup();
        // S3 signs the payload hash the request declares (`UNSIGNED-PAYLOAD`, say).
        let payload_hash = match headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
        {
            Some(declared) => declared.to_string(),
            None => sha256_hex(body),
        };
        let canonical = canonical_request::<()>(
            method,
            uri,
            headers,
            &names,
            &payload_hash,
            PathEncoding::for_service(&self.service),
        )
        .map_err(|e| match e {
            Error::Incomplete(m) => SignError::BadHeader(m),
            _ => SignError::NoHost,
        })?;
        let day = amz_date.get(..8).unwrap_or_default().to_string();
        let scope = format!("{day}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = string_to_sign(&amz_date, &scope, &canonical);
        let key = match &self.cached {
            Some((d, k)) if *d == day => k,
            _ => {
                let k = signing_key(&self.secret, &day, &self.region, &self.service);
                &self.cached.insert((day, k)).1
            }
        };
        let signature = hex::encode(hmac::sign(key, to_sign.as_bytes()).as_ref());
        let auth = format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
            self.access_key_id,
            names.join(";")
        );
        headers.insert(http::header::AUTHORIZATION, value(&auth)?);
        Ok(())
    }
}
