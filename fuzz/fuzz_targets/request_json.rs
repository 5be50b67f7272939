//! Request bodies decode or fail cleanly, whatever the bytes, for every operation; a decoded
//! request's audit parameters always serialize.
#![no_main]
use keyhold_kms::{Operation, Request};
use libfuzzer_sys::fuzz_target;

const OPS: &[&str] = &[
    "CreateKey",
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "CreateGrant",
    "PutKeyPolicy",
    "ImportKeyMaterial",
    "Sign",
    "TagResource",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let name = OPS[usize::from(pick) % OPS.len()];
    if let Some(op) = Operation::from_name(name) {
        if let Ok(req) = Request::from_json(op, body) {
            let _ = req.parameters();
        }
    }
    let _ = keyhold_kms::audit::request_parameters(body);
});
