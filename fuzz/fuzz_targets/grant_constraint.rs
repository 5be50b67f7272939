//! Stored grant constraints parse or become unreadable (allowing nothing), whatever the text,
//! and a readable one writes back as it was read.
#![no_main]
use keyhold_core::grant::GrantConstraint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let c = GrantConstraint::from_json(s);
        match &c {
            GrantConstraint::Unreadable(_) => assert!(!c.allows(None)),
            _ => assert_eq!(GrantConstraint::from_json(&c.to_json()), c),
        }
    }
});
