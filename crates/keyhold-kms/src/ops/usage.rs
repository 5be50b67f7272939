//! GetKeyLastUsage: when, and by which operation, a key was last used successfully.

use crate::api::{epoch_seconds, GetKeyLastUsageResponse, KeyIdRequest, KeyLastUsageEntry};
use crate::error::KmsError;
use crate::principal::Principal;
use crate::{CallRecord, Engine};

pub(super) fn get_key_last_usage(
    engine: &Engine,
    caller: &Principal,
    req: KeyIdRequest,
    rec: &mut CallRecord,
) -> Result<GetKeyLastUsageResponse, KmsError> {
    let key = engine.requested_key(caller, rec, req.key_id, false, "kms:GetKeyLastUsage")?;
    // keyhold tracks every key from its creation.
    Ok(GetKeyLastUsageResponse {
        key_id: key.key_id.to_string(),
        tracking_start_date: epoch_seconds(key.created_at),
        key_creation_date: epoch_seconds(key.created_at),
        key_last_usage: engine.last_usage(&key.key_id)?.map(|u| KeyLastUsageEntry {
            operation: u.operation,
            timestamp: epoch_seconds(u.used_at),
            cloud_trail_event_id: u.event_id,
        }),
    })
}
