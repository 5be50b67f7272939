//! GetKeyLastUsage: when, and by which operation, a key was last used successfully.

use serde_json::json;

use super::respond;
use crate::api::JsonResponse;
use crate::api::{epoch_seconds, KeyIdRequest};
use crate::error::KmsError;
use crate::principal::Principal;
use crate::{CallRecord, Engine};

pub(super) fn get_key_last_usage(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<JsonResponse, KmsError> {
    let key = engine.requested_key(caller, rec, req.key_id, false, "kms:GetKeyLastUsage")?;
    // keyhold tracks every key from its creation.
    let mut out = json!({
        "KeyId": key.key_id.to_string(),
        "TrackingStartDate": epoch_seconds(key.created_at),
        "KeyCreationDate": epoch_seconds(key.created_at),
    });
    if let Some(u) = engine.last_usage(&key.key_id)? {
        out["KeyLastUsage"] = json!({
            "Operation": u.operation,
            "Timestamp": epoch_seconds(u.used_at),
            "CloudTrailEventId": u.event_id,
        });
    }
    respond(out)
}
