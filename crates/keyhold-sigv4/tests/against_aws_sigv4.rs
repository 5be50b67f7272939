//! keyhold-sigv4 checked against the `aws-sigv4` crate (the signer inside every AWS SDK for
//! Rust): what it signs, keyhold verifies; what keyhold signs is byte for byte what it signs.

// Helpers outside #[test] functions: a failure is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use keyhold_core::secret::SecretBytes;
use keyhold_sigv4::{verify, Error, Scope, SignedRequest, Signer};

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const NOW: u64 = 1_795_000_000;

/// A request to sign: method, URL, headers, body.
struct Case {
    service: &'static str,
    method: &'static str,
    url: &'static str,
    headers: Vec<(&'static str, String)>,
    body: &'static [u8],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            service: "kms",
            method: "POST",
            url: "http://127.0.0.1:7080/",
            headers: vec![
                ("content-type", "application/x-amz-json-1.1".into()),
                ("x-amz-target", "TrentService.Encrypt".into()),
            ],
            body: br#"{"KeyId":"alias/app","Plaintext":"aGVsbG8="}"#,
        },
        Case {
            service: "s3",
            method: "PUT",
            url: "http://127.0.0.1:7090/my-bucket/photos/2026/a%20b%2Bc.jpg?x-id=PutObject",
            headers: vec![
                ("content-type", "image/jpeg".into()),
                ("x-amz-meta-owner", "  alice   and bob ".into()),
            ],
            body: b"\xff\xd8 not really a jpeg",
        },
        Case {
            service: "s3",
            method: "GET",
            url: "http://127.0.0.1:7090/my-bucket?list-type=2&prefix=a%2Fb&max-keys=10",
            headers: vec![],
            body: b"",
        },
    ]
}

fn settings(service: &str) -> SigningSettings {
    let mut s = SigningSettings::default();
    if service == "s3" {
        s.percent_encoding_mode = PercentEncodingMode::Single;
        s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        s.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    s
}

/// The case signed by aws-sigv4: its headers with what the signer added.
fn aws_signed(case: &Case) -> HeaderMap {
    let identity = Credentials::new(AKID, SECRET, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(case.service)
        .time(UNIX_EPOCH + Duration::from_secs(NOW))
        .settings(settings(case.service))
        .build()
        .unwrap()
        .into();
    let uri: Uri = case.url.parse().unwrap();
    let host = uri.authority().unwrap().to_string();
    let mut headers: Vec<(&str, String)> = case.headers.clone();
    headers.push(("host", host));
    let signable = SignableRequest::new(
        case.method,
        case.url,
        headers.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Bytes(case.body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let (added, _) = instructions.into_parts();
    let mut out = HeaderMap::new();
    for (k, v) in &headers {
        out.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    for h in added {
        out.insert(
            HeaderName::from_bytes(h.name().as_bytes()).unwrap(),
            HeaderValue::from_str(h.value()).unwrap(),
        );
    }
    out
}

fn check(case: &Case, headers: &HeaderMap, body: &[u8]) -> Result<&'static str, Error<()>> {
    let method: Method = case.method.parse().unwrap();
    let uri: Uri = case.url.parse().unwrap();
    let req = SignedRequest {
        method: &method,
        uri: &uri,
        headers,
        body,
    };
    let secret = Arc::new(SecretBytes::new(SECRET.as_bytes().to_vec()));
    verify(
        &req,
        Scope {
            service: case.service,
            region: "us-east-1",
        },
        NOW as i64 + 60,
        |akid| Ok((akid == AKID).then(|| ("the principal", secret.clone()))),
    )
}

#[test]
fn requests_signed_by_aws_sigv4_verify() {
    for case in cases() {
        let headers = aws_signed(&case);
        assert_eq!(
            check(&case, &headers, case.body),
            Ok("the principal"),
            "{}",
            case.url
        );
    }
}

#[test]
fn a_changed_body_or_header_does_not_verify() {
    for case in cases() {
        let headers = aws_signed(&case);
        let e = check(&case, &headers, b"something else").unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{}: {e:?}", case.url);
        let mut changed = headers.clone();
        changed.insert("host", HeaderValue::from_static("evil.example:80"));
        let e = check(&case, &changed, case.body).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{}: {e:?}", case.url);
    }
}

#[test]
fn keyhold_signs_exactly_as_aws_sigv4() {
    for case in cases() {
        let expected = aws_signed(&case);
        let uri: Uri = case.url.parse().unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in &case.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers.insert(
            "host",
            HeaderValue::from_str(uri.authority().unwrap().as_str()).unwrap(),
        );
        if case.service == "s3" {
            headers.insert(
                "x-amz-content-sha256",
                HeaderValue::from_str(&keyhold_sigv4::sha256_hex(case.body)).unwrap(),
            );
        }
        let mut signer = Signer::new(
            AKID,
            SECRET.as_bytes(),
            Scope {
                service: case.service,
                region: "us-east-1",
            },
        );
        signer
            .sign(
                &case.method.parse().unwrap(),
                &uri,
                &mut headers,
                case.body,
                NOW as i64,
            )
            .unwrap();
        assert_eq!(
            headers.get("authorization"),
            expected.get("authorization"),
            "{}",
            case.url
        );
        assert_eq!(check(&case, &headers, case.body), Ok("the principal"));
    }
}

#[test]
fn ambiguous_or_foreign_requests_are_refused() {
    let case = &cases()[0];
    let headers = aws_signed(case);
    // Two Authorization headers.
    let mut twice = headers.clone();
    let auth = headers.get("authorization").unwrap().clone();
    twice.append("authorization", auth);
    let e = check(case, &twice, case.body).unwrap_err();
    assert!(matches!(e, Error::Incomplete(_)), "{e:?}");
    // A session token: keyhold issues none, so it cannot be one of its own.
    let mut token = headers.clone();
    token.insert(
        "x-amz-security-token",
        HeaderValue::from_static("FwoGZXIvYXdz"),
    );
    let e = check(case, &token, case.body).unwrap_err();
    assert!(matches!(e, Error::UnrecognizedClient(_)), "{e:?}");
    // An unknown access key id.
    let secret = Arc::new(SecretBytes::new(SECRET.as_bytes().to_vec()));
    let uri: Uri = case.url.parse().unwrap();
    let req = SignedRequest {
        method: &Method::POST,
        uri: &uri,
        headers: &headers,
        body: case.body,
    };
    let scope = Scope {
        service: "kms",
        region: "us-east-1",
    };
    let e = verify(&req, scope, NOW as i64, |_| Ok::<_, ()>(None::<((), _)>)).unwrap_err();
    assert!(matches!(e, Error::UnrecognizedClient(_)), "{e:?}");
    // The wrong service or region, and a clock too far away.
    for (service, region, now) in [
        ("s3", "us-east-1", NOW as i64),
        ("kms", "eu-west-1", NOW as i64),
        ("kms", "us-east-1", NOW as i64 + 16 * 60),
    ] {
        let e = verify(&req, Scope { service, region }, now, |_| {
            Ok::<_, ()>(Some(((), secret.clone())))
        })
        .unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{service} {region}: {e:?}");
    }
    // No Authorization at all.
    let e = check(case, &HeaderMap::new(), case.body).unwrap_err();
    assert_eq!(e, Error::Missing);
}

#[test]
fn an_unsigned_payload_is_signed_as_aws_sigv4_signs_it() {
    let url = "https://s3.us-east-1.amazonaws.com/bucket/big%20object";
    let identity = Credentials::new(AKID, SECRET, None, None, "test").into();
    let mut s = settings("s3");
    s.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(UNIX_EPOCH + Duration::from_secs(NOW))
        .settings(s)
        .build()
        .unwrap()
        .into();
    let host = ("host", "s3.us-east-1.amazonaws.com".to_string());
    let signable = SignableRequest::new(
        "PUT",
        url,
        [(host.0, host.1.as_str())].into_iter(),
        SignableBody::UnsignedPayload,
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let (added, _) = instructions.into_parts();
    let expected = added
        .iter()
        .find(|h| h.name() == "authorization")
        .map(|h| h.value().to_string());
    let mut headers = HeaderMap::new();
    headers.insert(
        "host",
        HeaderValue::from_static("s3.us-east-1.amazonaws.com"),
    );
    headers.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    let mut signer = Signer::new(
        AKID,
        SECRET.as_bytes(),
        Scope {
            service: "s3",
            region: "us-east-1",
        },
    );
    signer
        .sign(
            &Method::PUT,
            &url.parse().unwrap(),
            &mut headers,
            b"the body is not hashed",
            NOW as i64,
        )
        .unwrap();
    assert_eq!(
        headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        expected
    );
}
