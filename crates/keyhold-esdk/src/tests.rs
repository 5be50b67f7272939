//! Known-answer messages made by the AWS Encryption SDK for Python (testdata/), round trips,
//! and every damaged message refused.

use super::*;
use crate::format::serialize_context;

/// The Python SDK's raw AES-256-GCM keyring, as the test vectors use it: provider info is the
/// key id, the tag length in bits, the IV length and the IV; the wrapped key is ciphertext and
/// tag; the AAD is the serialized encryption context.
struct RawAes {
    key: [u8; 32],
}

const PROVIDER: &str = "keyhold-test";
const KEY_ID: &[u8] = b"keyhold-test-key";

impl Keyring for RawAes {
    fn generate(&self, context: &Context) -> Result<(Zeroizing<Vec<u8>>, Vec<Edk>), Error> {
        let mut dk = Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut dk).unwrap();
        let mut iv = [0u8; 12];
        aws_lc_rs::rand::fill(&mut iv).unwrap();
        let aead = aead_key(&self.key)?;
        let mut ct = dk.to_vec();
        let aad = serialize_context(context)?;
        aead.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::from(&aad), &mut ct)
            .unwrap();
        let mut info = KEY_ID.to_vec();
        info.extend_from_slice(&128u32.to_be_bytes());
        info.extend_from_slice(&12u32.to_be_bytes());
        info.extend_from_slice(&iv);
        Ok((
            dk,
            vec![Edk {
                provider_id: PROVIDER.into(),
                provider_info: info,
                ciphertext: ct,
            }],
        ))
    }

    fn decrypt(&self, edks: &[Edk], context: &Context) -> Result<Zeroizing<Vec<u8>>, Error> {
        let aad = serialize_context(context)?;
        for e in edks.iter().filter(|e| e.provider_id == PROVIDER) {
            let Some(iv) = e
                .provider_info
                .strip_prefix(KEY_ID)
                .and_then(|r| r.get(8..20))
            else {
                continue;
            };
            let iv: [u8; 12] = iv.try_into().unwrap();
            let mut ct = e.ciphertext.clone();
            if let Ok(pt) = aead_key(&self.key)?.open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(&aad),
                &mut ct,
            ) {
                return Ok(Zeroizing::new(pt.to_vec()));
            }
        }
        Err(Error::Keyring("no encrypted data key opens".into()))
    }
}

fn keyring() -> RawAes {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = i as u8;
    }
    RawAes { key }
}

fn plaintext(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + 3) % 251) as u8).collect()
}

fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/{name}.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn index() -> serde_json::Value {
    let p = format!("{}/testdata/vectors.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn open(message: &[u8]) -> Result<(Header, Vec<u8>), Error> {
    let mut out = Vec::new();
    let h = decrypt(&keyring(), None, &mut &message[..], &mut out)?;
    Ok((h, out))
}

#[test]
fn messages_made_by_the_python_sdk_decrypt() {
    let idx = index();
    let messages = idx["messages"].as_object().unwrap();
    assert_eq!(messages.len(), 4);
    for (name, m) in messages {
        let (h, pt) = open(&testdata(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            pt,
            plaintext(m["size"].as_u64().unwrap() as usize),
            "{name}"
        );
        assert_eq!(
            u64::from(h.frame_len),
            m["frame"].as_u64().unwrap(),
            "{name}"
        );
        for (k, v) in m["context"].as_object().unwrap() {
            assert_eq!(h.context.get(k).map(String::as_str), v.as_str(), "{name}");
        }
        let signed = name.contains("signed");
        assert_eq!(h.suite.signed(), signed, "{name}");
        assert_eq!(h.context.contains_key(PUBLIC_KEY_CONTEXT), signed, "{name}");
    }
}

#[test]
fn every_damaged_message_is_refused() {
    let idx = index();
    let fails = idx["fail"].as_array().unwrap();
    assert_eq!(fails.len(), 7);
    for name in fails {
        let name = name.as_str().unwrap();
        let e = open(&testdata(name)).err();
        assert!(e.is_some(), "{name} decrypted");
        let e = e.unwrap();
        let expected = match name {
            "fail_wrong_commitment" => matches!(e, Error::Commitment),
            "fail_altered_header" => matches!(e, Error::Keyring(_) | Error::Authentication(_)),
            "fail_truncated_body" => matches!(e, Error::Format(_)),
            _ => matches!(e, Error::Authentication(_)),
        };
        assert!(expected, "{name}: {e}");
    }
}

#[test]
fn round_trips_of_every_size_and_suite() {
    for suite in [Suite::Committed, Suite::CommittedSigned] {
        for (size, frame) in [
            (0, 4096),
            (1, 4096),
            (4096, 4096),
            (4097, 4096),
            (10_000, 100),
        ] {
            let ctx: Context = [("repo".to_string(), "r-1".to_string())].into();
            let pt = plaintext(size);
            let mut msg = Vec::new();
            let enc = encrypt(&keyring(), suite, &ctx, frame, &mut &pt[..], &mut msg).unwrap();
            assert_eq!(enc.header.suite, suite);
            let (h, back) = open(&msg).unwrap();
            assert_eq!(back, pt, "{suite:?} {size}");
            assert_eq!(h.context.get("repo").map(String::as_str), Some("r-1"));
            // Plaintext never shows in the message.
            if size > 64 {
                assert!(!msg.windows(64).any(|w| w == &pt[..64]));
            }
        }
    }
}

#[test]
fn the_required_context_must_be_in_the_message() {
    let ctx: Context = [("repo".to_string(), "r-1".to_string())].into();
    let mut msg = Vec::new();
    encrypt(
        &keyring(),
        Suite::Committed,
        &ctx,
        64,
        &mut &b"x"[..],
        &mut msg,
    )
    .unwrap();
    let mut out = Vec::new();
    let ok: Context = [("repo".to_string(), "r-1".to_string())].into();
    decrypt(&keyring(), Some(&ok), &mut &msg[..], &mut out).unwrap();
    for bad in [("repo", "r-2"), ("other", "x")] {
        let req: Context = [(bad.0.to_string(), bad.1.to_string())].into();
        let e = decrypt(&keyring(), Some(&req), &mut &msg[..], &mut Vec::new()).unwrap_err();
        assert!(matches!(e, Error::Context(_)), "{e}");
    }
    // Reserved context keys cannot be given.
    let reserved: Context = [(PUBLIC_KEY_CONTEXT.to_string(), "x".to_string())].into();
    let e = encrypt(
        &keyring(),
        Suite::Committed,
        &reserved,
        64,
        &mut &b"x"[..],
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Context(_)));
}

#[test]
fn malformed_headers_are_format_errors() {
    let good = testdata("python_committed_frames");
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "ends early"),
        (b"not a message at all".to_vec(), "version"),
        (vec![0x01, 0x03, 0x78], "version 1"),
        (vec![0x02, 0x01, 0x78], "suite"),
        (good[..50].to_vec(), "ends early"),
    ];
    // Zero encrypted data keys.
    let (h, _) = format::read_header(&mut &good[..]).unwrap();
    let mut none = h.clone();
    none.edks.clear();
    cases.push((none.serialize().unwrap(), "no encrypted data key"));
    // A frame length past the bound.
    let mut huge = h.clone();
    huge.frame_len = MAX_FRAME + 1;
    cases.push((huge.serialize().unwrap(), "frame length"));
    for (bytes, why) in cases {
        match open(&bytes) {
            Err(Error::Format(m)) => assert!(m.contains(why), "{why}: {m}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    // Bytes after the end of a message.
    let mut extra = good.clone();
    extra.push(0);
    assert!(matches!(open(&extra), Err(Error::Format(_))));
}

#[test]
fn our_header_serializes_as_the_python_sdk_does() {
    let good = testdata("python_committed_frames");
    let (h, bytes) = format::read_header(&mut &good[..]).unwrap();
    assert_eq!(h.serialize().unwrap(), bytes);
    assert_eq!(h.suite, Suite::Committed);
    assert_eq!(h.edks.len(), 1);
    assert_eq!(h.edks[0].provider_id, PROVIDER);
}
