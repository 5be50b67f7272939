//! Key policies parse or fail cleanly, whatever the text, and a parsed one evaluates.
#![no_main]
use std::collections::HashMap;

use keyhold_core::policy::{PolicyDocument, RequestContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(doc) = PolicyDocument::parse(text) {
        let mut keys = HashMap::new();
        keys.insert("kms:callerAccount".to_string(), vec!["111122223333".to_string()]);
        let ctx = RequestContext {
            principal_arn: "arn:aws:iam::111122223333:user/app",
            principal_account: "111122223333",
            action: "kms:Decrypt",
            resource: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            keys,
        };
        let _ = doc.evaluate(&ctx);
    }
});
