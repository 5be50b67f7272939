//! The volume service's EC2 Query parameter parser (lists, filters, numbers, booleans) never
//! panics on any request body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = keyhold_volumes::query::Params::parse(data) {
        let _ = p.list("VolumeId");
        let _ = p.filters();
        let _ = p.int("Size");
        let _ = p.bool("Encrypted");
        let _ = p.required("AvailabilityZone");
    }
});
