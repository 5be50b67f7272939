//! Seed files (YAML or JSON) parse or fail with a message, whatever the text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keyhold_kms::seed::parse(text, false);
        let _ = keyhold_kms::seed::parse(text, true);
    }
});
