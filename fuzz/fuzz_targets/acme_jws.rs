//! The ACME server's JWS parser, thumbprints and key checks never panic on any request body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = keyhold_acme::jws::parse(data) {
        if let Some(jwk) = &p.header.jwk {
            let _ = keyhold_acme::jws::thumbprint(jwk);
            let _ = keyhold_acme::jws::check_key(jwk);
            let _ = p.verify(jwk);
        }
    }
});
