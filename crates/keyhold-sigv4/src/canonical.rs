//! The canonical request, and the keys and hashes around it.

use aws_lc_rs::{digest, hmac};
use http::{HeaderMap, Method, Uri};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::{incomplete, Error};

/// How the path enters the canonical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathEncoding {
    /// Every service but S3: the path as sent (already encoded once) is encoded again.
    Double,
    /// S3: the path is encoded once (the path as sent is decoded first).
    Single,
}

impl PathEncoding {
    /// The encoding a service's requests use.
    pub fn for_service(service: &str) -> Self {
        if service == "s3" {
            Self::Single
        } else {
            Self::Double
        }
    }
}

/// What SigV4 encodes: everything but the unreserved characters `A-Z a-z 0-9 - _ . ~`.
const SIGV4: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same, keeping `/` (paths).
const SIGV4_PATH: &AsciiSet = &SIGV4.remove(b'/');

/// Percent-encodes as SigV4 requires: everything but unreserved characters (and `/` when
/// `keep_slash`), upper-case hex.
pub(crate) fn uri_encode(s: &str, keep_slash: bool) -> String {
    let set = if keep_slash { SIGV4_PATH } else { SIGV4 };
    utf8_percent_encode(s, set).to_string()
}

/// Decodes `%XX` escapes (a malformed escape stays as it is; invalid UTF-8 is replaced).
pub(crate) fn percent_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The canonical query string: pairs decoded, re-encoded, sorted.
pub(crate) fn canonical_query(query: &str) -> String {
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

/// A header's canonical value: every value trimmed, inner runs of spaces folded, joined by
/// commas. The host of an HTTP/2 request (`:authority`) comes from the URI.
pub(crate) fn header_value(headers: &HeaderMap, uri: &Uri, name: &str) -> Option<String> {
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

/// Builds the canonical request; a signed header missing from the request is an
/// [`Error::Incomplete`].
pub fn canonical_request<E>(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    signed_headers: &[String],
    payload_hash: &str,
    path_encoding: PathEncoding,
) -> Result<String, Error<E>> {
    let path = uri.path();
    let path = if path.is_empty() { "/" } else { path };
    let mut out = String::with_capacity(256);
    out.push_str(method.as_str());
    out.push('\n');
    match path_encoding {
        PathEncoding::Double => out.push_str(&uri_encode(path, true)),
        PathEncoding::Single => out.push_str(&uri_encode(&percent_decode(path), true)),
    }
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

/// The string to sign for a canonical request.
pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{}\n{amz_date}\n{scope}\n{}",
        crate::ALGORITHM,
        sha256_hex(canonical.as_bytes())
    )
}

/// The SigV4 signing key for a secret, date, region and service.
pub fn signing_key(secret: &[u8], date: &str, region: &str, service: &str) -> hmac::Key {
    let mut k_secret = zeroize::Zeroizing::new(b"AWS4".to_vec());
    k_secret.extend_from_slice(secret);
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = step(&k_secret, date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let creq = canonical_request::<()>(
            &Method::GET,
            &uri,
            &headers,
            &["host".into(), "x-amz-date".into()],
            &sha256_hex(b""),
            PathEncoding::Double,
        )
        .unwrap();
        let to_sign = string_to_sign(
            "20150830T123600Z",
            "20150830/us-east-1/service/aws4_request",
            &creq,
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

    #[test]
    fn s3_paths_are_encoded_once_and_others_twice() {
        let uri: Uri = "/my%20bucket/a%2Bb".parse().unwrap();
        let headers = HeaderMap::new();
        let single =
            canonical_request::<()>(&Method::GET, &uri, &headers, &[], "x", PathEncoding::Single)
                .unwrap();
        assert!(single.starts_with("GET\n/my%20bucket/a%2Bb\n"), "{single}");
        let double =
            canonical_request::<()>(&Method::GET, &uri, &headers, &[], "x", PathEncoding::Double)
                .unwrap();
        assert!(
            double.starts_with("GET\n/my%2520bucket/a%252Bb\n"),
            "{double}"
        );
    }
}
