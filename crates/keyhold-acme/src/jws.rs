//! JWS as ACME uses it (RFC 8555 section 6.2, RFC 7515): the flattened JSON serialization,
//! signed with ES256, ES384, RS256 or EdDSA by a JWK (new accounts, revocation by certificate
//! key) or by an account (`kid`); JWK thumbprints (RFC 7638); and the HS256 external account
//! binding (section 7.3.4).

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::problem::Problem;

/// A flattened JWS as received.
#[derive(Debug, Deserialize)]
pub struct Flattened {
    /// base64url of the protected header.
    pub protected: String,
    /// base64url of the payload (empty for POST-as-GET).
    pub payload: String,
    /// base64url of the signature.
    pub signature: String,
}

/// The protected header of a request.
#[derive(Debug, Clone, Deserialize)]
pub struct Protected {
    /// Signature algorithm.
    pub alg: String,
    /// The server-issued nonce.
    #[serde(default)]
    pub nonce: Option<String>,
    /// The URL the request was sent to.
    #[serde(default)]
    pub url: Option<String>,
    /// The signer's key (new accounts, key changes, revocation by certificate key).
    #[serde(default)]
    pub jwk: Option<Value>,
    /// The signer's account URL.
    #[serde(default)]
    pub kid: Option<String>,
}

/// A parsed request: header, payload bytes, and what the signature covers.
#[derive(Debug)]
pub struct Parsed {
    /// The protected header.
    pub header: Protected,
    /// The decoded payload (empty for POST-as-GET).
    pub payload: Vec<u8>,
    signing_input: String,
    signature: Vec<u8>,
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn unb64(s: &str) -> Result<Vec<u8>, Problem> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| Problem::malformed("a JWS field is not base64url"))
}

/// Parses a flattened JWS body.
pub fn parse(body: &[u8]) -> Result<Parsed, Problem> {
    let f: Flattened = serde_json::from_slice(body)
        .map_err(|e| Problem::malformed(format!("the body is not a flattened JWS: {e}")))?;
    let header: Protected = serde_json::from_slice(&unb64(&f.protected)?)
        .map_err(|e| Problem::malformed(format!("the protected header is malformed: {e}")))?;
    if header.jwk.is_some() == header.kid.is_some() {
        return Err(Problem::malformed(
            "the protected header must carry exactly one of jwk and kid",
        ));
    }
    Ok(Parsed {
        payload: unb64(&f.payload)?,
        signing_input: format!("{}.{}", f.protected, f.payload),
        signature: unb64(&f.signature)?,
        header,
    })
}

fn member<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, Problem> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::malformed(format!("the JWK has no \"{name}\"")))
}

/// The RFC 7638 thumbprint of a public JWK (base64url of its SHA-256).
pub fn thumbprint(jwk: &Value) -> Result<String, Problem> {
    let canonical = match member(jwk, "kty")? {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            Value::from(member(jwk, "crv")?),
            Value::from(member(jwk, "x")?),
            Value::from(member(jwk, "y")?)
        ),
        "RSA" => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            Value::from(member(jwk, "e")?),
            Value::from(member(jwk, "n")?)
        ),
        "OKP" => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            Value::from(member(jwk, "crv")?),
            Value::from(member(jwk, "x")?)
        ),
        other => {
            return Err(Problem::bad_public_key(format!(
                "key type {other} is not supported (EC, RSA and OKP are)"
            )))
        }
    };
    Ok(b64(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        canonical.as_bytes(),
    )
    .as_ref()))
}

/// Checks that `jwk` is a key this server accepts for accounts: EC P-256/P-384, RSA of 2048
/// bits or more, Ed25519.
pub fn check_key(jwk: &Value) -> Result<(), Problem> {
    match member(jwk, "kty")? {
        "EC" => match member(jwk, "crv")? {
            "P-256" | "P-384" => Ok(()),
            c => Err(Problem::bad_public_key(format!(
                "curve {c} is not supported"
            ))),
        },
        "RSA" => {
            let n = unb64(member(jwk, "n")?)?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                Err(Problem::bad_public_key(format!(
                    "an RSA account key of {bits} bits is too small (2048 at least)"
                )))
            } else {
                Ok(())
            }
        }
        "OKP" => match member(jwk, "crv")? {
            "Ed25519" => Ok(()),
            c => Err(Problem::bad_public_key(format!(
                "curve {c} is not supported"
            ))),
        },
        k => Err(Problem::bad_public_key(format!(
            "key type {k} is not supported"
        ))),
    }
}

impl Parsed {
    /// Verifies the signature with `jwk`.
    pub fn verify(&self, jwk: &Value) -> Result<(), Problem> {
        let msg = self.signing_input.as_bytes();
        let bad = || Problem::malformed("the JWS signature does not verify");
        let alg = self.header.alg.as_str();
        match (alg, member(jwk, "kty")?) {
            ("ES256" | "ES384", "EC") => {
                let (curve, algorithm): (&str, &'static signature::EcdsaVerificationAlgorithm) =
                    if alg == "ES256" {
                        ("P-256", &signature::ECDSA_P256_SHA256_FIXED)
                    } else {
                        ("P-384", &signature::ECDSA_P384_SHA384_FIXED)
                    };
                if member(jwk, "crv")? != curve {
                    return Err(Problem::bad_signature_algorithm(format!(
                        "{alg} needs a {curve} key"
                    )));
                }
                let mut point = vec![4u8];
                point.extend(unb64(member(jwk, "x")?)?);
                point.extend(unb64(member(jwk, "y")?)?);
                UnparsedPublicKey::new(algorithm, point)
                    .verify(msg, &self.signature)
                    .map_err(|_| bad())
            }
            ("RS256", "RSA") => {
                let n = unb64(member(jwk, "n")?)?;
                let e = unb64(member(jwk, "e")?)?;
                signature::RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, &self.signature)
                    .map_err(|_| bad())
            }
            ("EdDSA", "OKP") => {
                if member(jwk, "crv")? != "Ed25519" {
                    return Err(Problem::bad_signature_algorithm(
                        "EdDSA needs an Ed25519 key",
                    ));
                }
                UnparsedPublicKey::new(&signature::ED25519, unb64(member(jwk, "x")?)?)
                    .verify(msg, &self.signature)
                    .map_err(|_| bad())
            }
            _ => Err(Problem::bad_signature_algorithm(format!(
                "algorithm {alg} with this key is not supported (ES256, ES384, RS256, EdDSA are)"
            ))),
        }
    }
}

/// Verifies an external account binding (an HS256 JWS over the account's JWK, by the EAB key
/// `kid`): returns its `kid`. `hmac_key` finds a binding's key by kid.
pub fn verify_eab(
    eab: &Value,
    account_jwk: &Value,
    url: &str,
    hmac_key: impl FnOnce(&str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, Problem>,
) -> Result<String, Problem> {
    let f: Flattened = serde_json::from_value(eab.clone())
        .map_err(|_| Problem::malformed("externalAccountBinding is not a flattened JWS"))?;
    let header: Value = serde_json::from_slice(&unb64(&f.protected)?)
        .map_err(|_| Problem::malformed("externalAccountBinding's header is malformed"))?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(Problem::bad_signature_algorithm(
            "externalAccountBinding must be signed with HS256",
        ));
    }
    if header.get("nonce").is_some() {
        return Err(Problem::malformed(
            "externalAccountBinding must not carry a nonce",
        ));
    }
    if header.get("url").and_then(Value::as_str) != Some(url) {
        return Err(Problem::unauthorized(
            "externalAccountBinding names another URL",
        ));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::malformed("externalAccountBinding has no kid"))?;
    let inner: Value = serde_json::from_slice(&unb64(&f.payload)?)
        .map_err(|_| Problem::malformed("externalAccountBinding's payload is not a JWK"))?;
    if &inner != account_jwk {
        return Err(Problem::unauthorized(
            "externalAccountBinding binds another key than the account's",
        ));
    }
    let key = hmac_key(kid)?
        .ok_or_else(|| Problem::unauthorized(format!("unknown external account binding {kid}")))?;
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    aws_lc_rs::hmac::verify(
        &k,
        format!("{}.{}", f.protected, f.payload).as_bytes(),
        &unb64(&f.signature)?,
    )
    .map_err(|_| Problem::unauthorized("externalAccountBinding's signature does not verify"))?;
    Ok(kid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::KeyPair as _;

    #[test]
    fn thumbprints_match_rfc_7638s_example() {
        // RFC 7638 section 3.1.
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    fn es256_jws(header: &Value, payload: &[u8]) -> (Vec<u8>, Value) {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let kp = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
        )
        .unwrap();
        let point = kp.public_key().as_ref();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        });
        let mut h = header.clone();
        h["jwk"] = jwk.clone();
        let protected = b64(h.to_string().as_bytes());
        let payload = b64(payload);
        let sig = kp
            .sign(&rng, format!("{protected}.{payload}").as_bytes())
            .unwrap();
        let body = serde_json::json!({
            "protected": protected, "payload": payload, "signature": b64(sig.as_ref()),
        });
        (body.to_string().into_bytes(), jwk)
    }

    #[test]
    fn an_es256_jws_verifies_and_an_altered_one_does_not() {
        let header =
            serde_json::json!({"alg": "ES256", "nonce": "n", "url": "https://x/acme/new-account"});
        let (body, jwk) = es256_jws(&header, b"{}");
        let parsed = parse(&body).unwrap();
        parsed.verify(&jwk).unwrap();
        assert_eq!(
            parsed.header.url.as_deref(),
            Some("https://x/acme/new-account")
        );
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["payload"] = Value::from(b64(b"{\"x\":1}"));
        let altered = parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(altered.verify(&jwk).unwrap_err().kind, "malformed");
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
    }

    fn signed_body(header: &Value, jwk: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let mut h = header.clone();
        h["jwk"] = jwk.clone();
        let protected = b64(h.to_string().as_bytes());
        let payload = b64(b"{}");
        let sig = sign(format!("{protected}.{payload}").as_bytes());
        serde_json::json!({"protected": protected, "payload": payload, "signature": b64(&sig)})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn eddsa_and_rs256_signatures_verify_with_their_jwks() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk =
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(ed.public_key().as_ref())});
        let body = signed_body(&serde_json::json!({"alg": "EdDSA"}), &jwk, |m| {
            ed.sign(m).as_ref().to_vec()
        });
        parse(&body).unwrap().verify(&jwk).unwrap();
        // The same signature under another algorithm name is refused.
        let body = signed_body(&serde_json::json!({"alg": "ES256"}), &jwk, |m| {
            ed.sign(m).as_ref().to_vec()
        });
        assert_eq!(
            parse(&body).unwrap().verify(&jwk).unwrap_err().kind,
            "badSignatureAlgorithm"
        );

        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let components: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> = rsa.public_key().into();
        let jwk =
            serde_json::json!({"kty": "RSA", "n": b64(&components.n), "e": b64(&components.e)});
        check_key(&jwk).unwrap();
        let body = signed_body(&serde_json::json!({"alg": "RS256"}), &jwk, |m| {
            let mut sig = vec![0u8; rsa.public_modulus_len()];
            rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
                .unwrap();
            sig
        });
        parse(&body).unwrap().verify(&jwk).unwrap();
    }

    #[test]
    fn an_external_account_binding_binds_the_key_to_a_kid() {
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "abc"});
        let url = "https://x/acme/new-account";
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let make = |kid: &str, url: &str, jwk: &Value, key: &[u8]| {
            let protected = b64(serde_json::json!({"alg": "HS256", "kid": kid, "url": url})
                .to_string()
                .as_bytes());
            let payload = b64(jwk.to_string().as_bytes());
            let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
            let tag = aws_lc_rs::hmac::sign(&k, format!("{protected}.{payload}").as_bytes());
            serde_json::json!({"protected": protected, "payload": payload, "signature": b64(tag.as_ref())})
        };
        let lookup = |kid: &str| Ok((kid == "kid-1").then(|| zeroize::Zeroizing::new(key.clone())));
        let good = make("kid-1", url, &jwk, &key);
        assert_eq!(verify_eab(&good, &jwk, url, lookup).unwrap(), "kid-1");
        let other_key = make("kid-1", url, &jwk, b"another key another key another k");
        assert_eq!(
            verify_eab(&other_key, &jwk, url, lookup).unwrap_err().kind,
            "unauthorized"
        );
        let other_kid = make("kid-2", url, &jwk, &key);
        assert_eq!(
            verify_eab(&other_kid, &jwk, url, lookup).unwrap_err().kind,
            "unauthorized"
        );
        let other_url = make("kid-1", "https://y/", &jwk, &key);
        assert!(verify_eab(&other_url, &jwk, url, lookup).is_err());
        let other_jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "abd"});
        assert!(verify_eab(&good, &other_jwk, url, lookup).is_err());
    }

    #[test]
    fn small_rsa_and_unknown_curves_are_bad_public_keys() {
        let small = serde_json::json!({"kty": "RSA", "n": b64(&[0xff; 128]), "e": "AQAB"});
        assert_eq!(check_key(&small).unwrap_err().kind, "badPublicKey");
        let big = serde_json::json!({"kty": "RSA", "n": b64(&[0xff; 256]), "e": "AQAB"});
        check_key(&big).unwrap();
        let k1 = serde_json::json!({"kty": "EC", "crv": "secp256k1", "x": "a", "y": "b"});
        assert!(check_key(&k1).is_err());
    }
}
