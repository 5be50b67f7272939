//! Verifying a request signed with an `Authorization` header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::hmac;
use http::{HeaderMap, Method, Uri};
use keyhold_core::secret::SecretBytes;

use crate::canonical::{canonical_request, sha256_hex, signing_key, string_to_sign, PathEncoding};
use crate::{incomplete, invalid, Error, Scope, ALGORITHM, MAX_SKEW_SECS};

/// The parts of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    /// Access key id from the credential scope.
    pub access_key_id: String,
    /// `YYYYMMDD` from the credential scope.
    pub date: String,
    /// Region from the credential scope.
    pub region: String,
    /// Service from the credential scope.
    pub service: String,
    /// Lower-case names of the signed headers, in the order given.
    pub signed_headers: Vec<String>,
    /// The signature, hex-decoded.
    pub signature: Vec<u8>,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`. An element given twice is refused: which one was meant
/// would be a guess.
pub fn parse_authorization<E>(value: &str) -> Result<AuthHeader, Error<E>> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            incomplete(format!(
                "Authorization header requires the {ALGORITHM} algorithm"
            ))
        })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (slot, name, v) = if let Some(v) = part.strip_prefix("Credential=") {
            (&mut credential, "Credential", v)
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            (&mut signed, "SignedHeaders", v)
        } else if let Some(v) = part.strip_prefix("Signature=") {
            (&mut signature, "Signature", v)
        } else if part.is_empty() {
            continue;
        } else {
            return Err(incomplete(format!(
                "Authorization header contains an unknown element: {part}"
            )));
        };
        if slot.replace(v).is_some() {
            return Err(incomplete(format!(
                "Authorization header contains '{name}' more than once."
            )));
        }
    }
    let credential = credential
        .ok_or_else(|| incomplete("Authorization header requires 'Credential' parameter."))?;
    let signed = signed
        .ok_or_else(|| incomplete("Authorization header requires 'SignedHeaders' parameter."))?;
    let signature = signature
        .ok_or_else(|| incomplete("Authorization header requires 'Signature' parameter."))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, terminator] = scope.as_slice() else {
        return Err(incomplete(format!(
            "Credential should have five parts (AKID/DATE/REGION/SERVICE/aws4_request): \
             {credential}"
        )));
    };
    if *terminator != "aws4_request" {
        return Err(incomplete(
            "Credential should be scoped with a valid terminator: 'aws4_request'.",
        ));
    }
    if akid.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete(format!("Credential is malformed: {credential}")));
    }
    let signature = hex::decode(signature)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| incomplete("Signature must be 64 hexadecimal characters."))?;
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers.iter().any(String::is_empty) {
        return Err(incomplete("SignedHeaders is malformed."));
    }
    Ok(AuthHeader {
        access_key_id: akid.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature,
    })
}

/// Signing keys by (access key id, date, region, service), with the secret they were derived
/// from: SDKs cache the day's signing key the same way. An entry is used only with the very
/// same secret (`Arc` identity; a credential cache hands out one `Arc` per lookup), so a
/// changed secret is never served from here.
type KeyCache = HashMap<(String, String, String, String), (Arc<SecretBytes>, hmac::Key)>;

static SIGNING_KEYS: OnceLock<Mutex<KeyCache>> = OnceLock::new();

/// Entries kept before the cache is emptied.
const SIGNING_KEY_CACHE_MAX: usize = 10_000;

fn cached_signing_key(secret: &Arc<SecretBytes>, auth: &AuthHeader) -> hmac::Key {
    let cache = SIGNING_KEYS.get_or_init(|| Mutex::new(HashMap::new()));
    let id = (
        auth.access_key_id.clone(),
        auth.date.clone(),
        auth.region.clone(),
        auth.service.clone(),
    );
    if let Some((s, key)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        if Arc::ptr_eq(s, secret) {
            return key.clone();
        }
    }
    let key = signing_key(
        secret.expose_secret(),
        &auth.date,
        &auth.region,
        &auth.service,
    );
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= SIGNING_KEY_CACHE_MAX {
        c.clear();
    }
    c.insert(id, (secret.clone(), key.clone()));
    key
}

/// What the verifier needs from a request.
#[derive(Debug)]
pub struct SignedRequest<'a> {
    /// HTTP method.
    pub method: &'a Method,
    /// Request URI.
    pub uri: &'a Uri,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// The body as received.
    pub body: &'a [u8],
}

/// Reads the access key id a request claims, if its (single) Authorization header parses.
pub fn claimed_access_key_id(headers: &HeaderMap) -> Option<String> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let v = all.next()?.to_str().ok()?;
    if all.next().is_some() {
        return None;
    }
    parse_authorization::<()>(v).ok().map(|a| a.access_key_id)
}

/// The Region an `Authorization` header's credential scope names, unverified and without
/// parsing the rest of the header (to pick the Region whose engine then verifies the request
/// in full; a header this misreads fails that verification).
pub fn claimed_region(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let scope = v.split_once("Credential=")?.1;
    let scope = scope.split([',', ' ']).next()?;
    scope.split('/').nth(2)
}

/// Verifies a request signed for `scope`. `lookup` finds the credential of an access key id
/// and its secret; `now_secs` is the server's time. Returns the signer's credential.
pub fn verify<C, E>(
    req: &SignedRequest<'_>,
    scope: Scope<'_>,
    now_secs: i64,
    lookup: impl FnOnce(&str) -> Result<Option<(C, Arc<SecretBytes>)>, E>,
) -> Result<C, Error<E>> {
    let mut values = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(auth) = values.next() else {
        return Err(Error::Missing);
    };
    if values.next().is_some() {
        return Err(incomplete(
            "The request carries more than one Authorization header.",
        ));
    }
    let auth = auth
        .to_str()
        .map_err(|_| incomplete("Authorization header is not ASCII"))?;
    let auth = parse_authorization(auth)?;
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let amz_date = req
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            incomplete("Authorization header requires existence of a 'X-Amz-Date' header.")
        })?;
    let signed_at = crate::parse_amz_date(amz_date)
        .ok_or_else(|| incomplete(format!("X-Amz-Date {amz_date:?} is not a valid date")))?;
    if (now_secs - signed_at).abs() > MAX_SKEW_SECS {
        return Err(invalid(format!(
            "Signature expired or not yet valid: {amz_date} is more than 15 minutes from the \
             server's time."
        )));
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
             from HTTP: '{}' != '{}'",
            auth.date,
            amz_date.get(..8).unwrap_or(amz_date)
        )));
    }
    if auth.service != scope.service {
        return Err(invalid(format!(
            "Credential should be scoped to correct service: '{}'. (got '{}')",
            scope.service, auth.service
        )));
    }
    if auth.region != scope.region {
        return Err(invalid(format!(
            "Credential should be scoped to a valid region: '{}'. (got '{}')",
            scope.region, auth.region
        )));
    }
    // keyhold issues long-term keys only: a session token cannot be one of its own.
    if req.headers.contains_key("x-amz-security-token") {
        return Err(Error::UnrecognizedClient(
            "The security token included in the request is invalid.".into(),
        ));
    }
    let body_hash = sha256_hex(req.body);
    if let Some(h) = req.headers.get("x-amz-content-sha256") {
        if h.as_bytes() != body_hash.as_bytes() {
            return Err(invalid(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ));
        }
    }
    let Some((cred, secret)) = lookup(&auth.access_key_id).map_err(Error::Lookup)? else {
        return Err(Error::UnrecognizedClient(
            "The security token included in the request is invalid.".into(),
        ));
    };
    let creq = canonical_request(
        req.method,
        req.uri,
        req.headers,
        &auth.signed_headers,
        &body_hash,
        PathEncoding::for_service(scope.service),
    )?;
    let credential_scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = string_to_sign(amz_date, &credential_scope, &creq);
    let key = cached_signing_key(&secret, &auth);
    hmac::verify(&key, to_sign.as_bytes(), &auth.signature).map_err(|_| {
        invalid(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        )
    })?;
    Ok(cred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claimed_region_is_the_scopes_third_part() {
        let mut h = HeaderMap::new();
        assert_eq!(claimed_region(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/kms/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00"
                .parse()
                .unwrap(),
        );
        assert_eq!(claimed_region(&h), Some("eu-west-1"));
        h.insert(
            http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AKID/20260101".parse().unwrap(),
        );
        assert_eq!(claimed_region(&h), None);
        h.insert(http::header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(claimed_region(&h), None);
    }

    #[test]
    fn parses_a_real_authorization_header() {
        let a = parse_authorization::<()>(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "AKIDEXAMPLE");
        assert_eq!(a.region, "us-east-1");
        assert_eq!(a.signed_headers, ["content-type", "host", "x-amz-date"]);
    }

    #[test]
    fn malformed_headers_are_incomplete_signatures() {
        let sig = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
        for bad in [
            "Basic abc".to_string(),
            "AWS4-HMAC-SHA256".into(),
            "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request".into(),
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/kms/aws4_request, SignedHeaders=host, Signature=zz".into(),
            "AWS4-HMAC-SHA256 Credential=a/2015/r/kms/aws4_request, SignedHeaders=host, Signature=00".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20150830/r/kms/aws4_request, \
                 Credential=b/20150830/r/kms/aws4_request, SignedHeaders=host, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20150830/r/kms/aws4_request, SignedHeaders=host, \
                 Signature={sig}, Signature={sig}"
            ),
        ] {
            let e = parse_authorization::<()>(&bad).unwrap_err();
            assert!(matches!(e, Error::Incomplete(_)), "{bad}: {e:?}");
        }
    }
}
