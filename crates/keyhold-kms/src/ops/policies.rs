//! Key policies: GetKeyPolicy, PutKeyPolicy, ListKeyPolicies.

use super::empty;
use super::keys::{check_policy, lockout_check};
use crate::api::{
    EmptyResponse, GetKeyPolicyRequest, GetKeyPolicyResponse, ListKeyPoliciesRequest,
    ListKeyPoliciesResponse, PutKeyPolicyRequest,
};
use crate::authz::Conditions;
use crate::error::KmsError;
use crate::principal::Principal;
use crate::validate::{int_range, required, str_len};
use crate::{CallRecord, Engine};

/// The only policy name a key has.
const DEFAULT: &str = "default";

/// Checks an optional PolicyName: a valid name, and the one that exists.
fn policy_name(name: Option<String>) -> Result<(), KmsError> {
    if let Some(n) = name {
        str_len(&n, "policyName", 1, 128)?;
        if !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{n}' at 'policyName' failed to satisfy \
                 constraint: Member must satisfy regular expression pattern: [\\w]+"
            )));
        }
        if n != DEFAULT {
            return Err(KmsError::not_found(format!("No such policy exists: {n}")));
        }
    }
    Ok(())
}

pub(super) fn get_key_policy(
    engine: &Engine,
    caller: &Principal,
    req: GetKeyPolicyRequest,
    rec: &mut CallRecord,
) -> Result<GetKeyPolicyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    policy_name(req.policy_name)?;
    let key = engine.key_for(
        caller,
        rec,
        &key_id,
        false,
        "kms:GetKeyPolicy",
        &Conditions::default(),
    )?;
    Ok(GetKeyPolicyResponse {
        policy: key.policy.clone(),
        policy_name: DEFAULT,
    })
}

pub(super) fn put_key_policy(
    engine: &Engine,
    caller: &Principal,
    req: PutKeyPolicyRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let policy = required(req.policy, "policy")?;
    policy_name(req.policy_name)?;
    check_policy(&policy)?;
    let bypass = req.bypass_policy_lockout_safety_check == Some(true);
    let conds = Conditions::default().and(
        "kms:BypassPolicyLockoutSafetyCheck",
        vec![bypass.to_string()],
    );
    let probe = CallRecord {
        source_ip: rec.source_ip.clone(),
        via_service: rec.via_service.clone(),
        secure_transport: rec.secure_transport,
        ..CallRecord::default()
    };
    engine.update_key(
        caller,
        &key_id,
        rec,
        "kms:PutKeyPolicy",
        &conds,
        |k, _arn| {
            k.policy = policy;
            if !bypass {
                lockout_check(engine, caller, &probe, k)?;
            }
            Ok(())
        },
    )?;
    empty()
}

pub(super) fn list_key_policies(
    engine: &Engine,
    caller: &Principal,
    req: ListKeyPoliciesRequest,
    rec: &mut CallRecord,
) -> Result<ListKeyPoliciesResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    int_range(req.limit.unwrap_or(100), "limit", 1, 1000)?;
    if let Some(m) = &req.marker {
        str_len(m, "marker", 1, 1024)?;
        return Err(KmsError::new(
            crate::error::ErrorCode::InvalidMarkerException,
            "Invalid marker",
        ));
    }
    engine.key_for(
        caller,
        rec,
        &key_id,
        false,
        "kms:ListKeyPolicies",
        &Conditions::default(),
    )?;
    Ok(ListKeyPoliciesResponse {
        policy_names: vec![DEFAULT],
        truncated: false,
    })
}
