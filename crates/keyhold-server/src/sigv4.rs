//! AWS Signature Version 4 verification.
//!
//! The verifier rebuilds the canonical request from what arrived (method, path, query, the
//! signed headers, the SHA-256 of the body actually received), derives the signing key from
//! the principal's secret, and compares signatures in constant time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::{digest, hmac};
use http::{HeaderMap, Method, Uri};
use keyhold_core::secret::SecretBytes;
use keyhold_kms::error::{ErrorCode, KmsError};
use keyhold_kms::principal::Credential;

/// The only algorithm SigV4 defines.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's `x-amz-date` may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

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

fn incomplete(msg: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::IncompleteSignatureException, msg)
}

fn invalid(msg: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::InvalidSignatureException, msg)
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<AuthHeader, KmsError> {
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
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        } else if !part.is_empty() {
            return Err(incomplete(format!(
                "Authorization header contains an unknown element: {part}"
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

/// Parses `YYYYMMDDTHHMMSSZ` into seconds since the epoch.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// Percent-encodes as SigV4 requires: everything but unreserved characters (and `/` when
/// `keep_slash`).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    fn hex_val(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn header_value(headers: &HeaderMap, uri: &Uri, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    if values.is_empty() {
        // HTTP/2 carries the host as the :authority pseudo-header, which lands in the URI.
        if name == "host" {
            return uri.authority().map(|a| a.as_str().to_string());
        }
        return None;
    }
    Some(values.join(","))
}

/// The hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data).as_ref())
}

/// Builds the canonical request.
pub fn canonical_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    signed_headers: &[String],
    payload_hash: &str,
) -> Result<String, KmsError> {
    let path = uri.path();
    let path = if path.is_empty() { "/" } else { path };
    let mut out = String::with_capacity(256);
    out.push_str(method.as_str());
    out.push('\n');
    out.push_str(&uri_encode(path, true));
    out.push('\n');
    out.push_str(&canonical_query(uri.query().unwrap_or("")));
    out.push('\n');
    for name in signed_headers {
        let value = header_value(headers, uri, name).ok_or_else(|| {
            incomplete(format!(
                "Signed header {name} is not present in the request"
            ))
        })?;
        out.push_str(name);
        out.push(':');
        out.push_str(&value);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// The SigV4 signing key for a secret, date, region and service.
pub fn signing_key(secret: &[u8], date: &str, region: &str, service: &str) -> hmac::Key {
    let mut k_secret = b"AWS4".to_vec();
    k_secret.extend_from_slice(secret);
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = step(&k_secret, date);
    zeroize::Zeroize::zeroize(&mut k_secret);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// Signing keys by (access key id, date, region), with the secret they were derived from: SDKs
/// cache the day's signing key the same way. An entry is used only with the very same secret
/// (the credential cache hands out one `Arc` per lookup), so a changed secret is never served
/// from here.
type KeyCache = HashMap<(String, String, String), (Arc<SecretBytes>, hmac::Key)>;

static SIGNING_KEYS: OnceLock<Mutex<KeyCache>> = OnceLock::new();

/// Entries kept before the cache is emptied.
const SIGNING_KEY_CACHE_MAX: usize = 10_000;

fn cached_signing_key(cred: &Credential, auth: &AuthHeader) -> hmac::Key {
    let cache = SIGNING_KEYS.get_or_init(|| Mutex::new(HashMap::new()));
    let id = (
        auth.access_key_id.clone(),
        auth.date.clone(),
        auth.region.clone(),
    );
    if let Some((secret, key)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        if Arc::ptr_eq(secret, &cred.secret) {
            return key.clone();
        }
    }
    let key = signing_key(
        cred.secret.expose_secret(),
        &auth.date,
        &auth.region,
        &auth.service,
    );
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= SIGNING_KEY_CACHE_MAX {
        c.clear();
    }
    c.insert(id, (cred.secret.clone(), key.clone()));
    key
}

/// What the verifier needs from a request.
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

/// Reads the access key id a request claims, if its Authorization header parses.
pub fn claimed_access_key_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    parse_authorization(v).ok().map(|a| a.access_key_id)
}

/// Verifies a request. `lookup` finds the credential of an access key id; `now_secs` is the
/// server's time. Returns the credential of the signer.
pub fn verify(
    req: &SignedRequest<'_>,
    region: &str,
    now_secs: i64,
    lookup: impl FnOnce(&str) -> Result<Option<Credential>, KmsError>,
) -> Result<Credential, KmsError> {
    let Some(auth) = req.headers.get(http::header::AUTHORIZATION) else {
        return Err(KmsError::new(
            ErrorCode::MissingAuthenticationTokenException,
            "Missing Authentication Token",
        ));
    };
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
    let signed_at = parse_amz_date(amz_date)
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
            &amz_date[..8]
        )));
    }
    if auth.service != "kms" {
        return Err(invalid(format!(
            "Credential should be scoped to correct service: 'kms'. (got '{}')",
            auth.service
        )));
    }
    if auth.region != region {
        return Err(invalid(format!(
            "Credential should be scoped to a valid region: '{region}'. (got '{}')",
            auth.region
        )));
    }
    let body_hash = sha256_hex(req.body);
    if let Some(h) = req.headers.get("x-amz-content-sha256") {
        if h.as_bytes() != body_hash.as_bytes() {
            return Err(invalid(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ));
        }
    }
    let Some(cred) = lookup(&auth.access_key_id)? else {
        return Err(KmsError::new(
            ErrorCode::UnrecognizedClientException,
            "The security token included in the request is invalid.",
        ));
    };
    let creq = canonical_request(
        req.method,
        req.uri,
        req.headers,
        &auth.signed_headers,
        &body_hash,
    )?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(creq.as_bytes())
    );
    let key = cached_signing_key(&cred, &auth);
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
    fn parses_a_real_authorization_header() {
        let a = parse_authorization(
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
        for bad in [
            "Basic abc",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/kms/aws4_request, SignedHeaders=host, Signature=zz",
            "AWS4-HMAC-SHA256 Credential=a/2015/r/kms/aws4_request, SignedHeaders=host, Signature=00",
        ] {
            let e = parse_authorization(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::IncompleteSignatureException, "{bad}");
        }
    }

    #[test]
    fn amz_date_parses_to_epoch_seconds() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("20150830T123600"), None);
        assert_eq!(parse_amz_date("2015083XT123600Z"), None);
    }

    /// The `get-vanilla` case of AWS's SigV4 test suite (signing key and signature).
    #[test]
    fn aws_test_suite_get_vanilla() {
        let key = signing_key(
            b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "service",
        );
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let uri: Uri = "/".parse().unwrap();
        let creq = canonical_request(
            &Method::GET,
            &uri,
            &headers,
            &["host".into(), "x-amz-date".into()],
            &sha256_hex(b""),
        )
        .unwrap();
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{}",
            sha256_hex(creq.as_bytes())
        );
        let sig = hmac::sign(&key, to_sign.as_bytes());
        assert_eq!(
            hex::encode(sig.as_ref()),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(
            canonical_query("b=2&a=1&c=x%20y&d=%E2%82%AC+"),
            "a=1&b=2&c=x%20y&d=%E2%82%AC%2B"
        );
        assert_eq!(canonical_query("e=%Z"), "e=%25Z");
        assert_eq!(canonical_query(""), "");
    }
}
