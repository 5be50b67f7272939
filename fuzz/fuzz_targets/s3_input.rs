//! What an S3 client sends that the gateway reads itself (the SSE headers, the encryption
//! context, the tagging and copy-range headers) is accepted or refused with an S3 error, never
//! a panic; and stored object bytes that were tampered with never open.
#![no_main]
use keyhold_s3::chunked::{ContentKey, DataKey, Encryptor, CHUNK};
use keyhold_s3::headers::{copy_range, parse_tagging_header};
use keyhold_s3::sse::{parse_context, write_request, CustomerKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let parts: Vec<&str> = text.splitn(4, '\n').collect();
    let part = |i: usize| parts.get(i).copied();
    match selector % 4 {
        0 => {
            let _ = parse_context(&text);
            let customer = CustomerKey::from_headers(part(0), part(1), part(2)).ok().flatten();
            let _ = write_request(part(0), part(1), part(2), None, customer, None);
        }
        1 => {
            if let Ok(tags) = parse_tagging_header(Some(&text)) {
                assert!(tags.len() <= 10);
            }
        }
        2 => {
            let size = u64::from(selector) * 1000;
            if let Ok((a, b)) = copy_range(&text, size) {
                assert!(a < b && b <= size);
            }
        }
        _ => {
            // A stored chunk changed anywhere, or cut, does not open.
            let key = DataKey::derive(&ContentKey::from_slice(&[3u8; 32]).unwrap(), &[1u8; 16]);
            let plain = &rest[..rest.len().min(CHUNK)];
            let mut enc = Encryptor::new(key);
            let mut stored = enc.update(plain);
            let (last, _) = enc.finish();
            stored.extend(last);
            let key = DataKey::derive(&ContentKey::from_slice(&[3u8; 32]).unwrap(), &[1u8; 16]);
            let at = usize::from(selector) % stored.len();
            let mut changed = stored.clone();
            changed[at] ^= 0x80;
            assert!(key.open_chunk(0, true, &mut changed).is_err());
            let mut cut = stored[..stored.len() - 1].to_vec();
            assert!(key.open_chunk(0, true, &mut cut).is_err());
            assert_eq!(key.open_chunk(0, true, &mut stored), Ok(plain.len()));
        }
    }
});
