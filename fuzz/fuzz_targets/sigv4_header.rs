//! The SigV4 Authorization header and date parsers never panic on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = keyhold_sigv4::parse_authorization::<()>(s);
        let _ = keyhold_sigv4::parse_amz_date(s);
    }
});
