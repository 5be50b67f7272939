//! Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant.
//!
//! A grant lets its grantee perform exactly its operations on one key, optionally only with an
//! encryption context that contains (`EncryptionContextSubset`) or equals
//! (`EncryptionContextEquals`) given pairs. Grants are read when the key policy does not allow
//! a request; an explicit deny in the policy still wins.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use keyhold_core::grant::GrantConstraint;
use keyhold_store::{GrantRecord, KeyRecord, StoreError};

use super::{dry_run_ok, empty};
use crate::api::{
    epoch_seconds, CreateGrantRequest, CreateGrantResponse, EmptyResponse, GrantConstraintsDto,
    GrantListEntry, GrantRefRequest, ListGrantsRequest, ListGrantsResponse,
    ListRetirableGrantsRequest,
};
use crate::authz::{Allowed, Conditions, CONTEXT_FREE_GRANT_OPERATIONS};
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{grant_tokens, int_range, required, str_len};
use crate::{CallRecord, Engine};

/// Every grant operation AWS defines.
pub const ALL_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
    "Encapsulate",
    "Decapsulate",
];

/// Operations a grant on a key of each kind may allow.
fn operations_for(key: &KeyRecord) -> &'static [&'static str] {
    use keyhold_core::key::{KeySpec, KeyUsage};
    match (key.key_spec, key.key_usage) {
        (KeySpec::SymmetricDefault, _) => SYMMETRIC_OPERATIONS,
        (_, KeyUsage::EncryptDecrypt) => &[
            "Encrypt",
            "Decrypt",
            "ReEncryptFrom",
            "ReEncryptTo",
            "GetPublicKey",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ],
        (_, KeyUsage::SignVerify) => &[
            "Sign",
            "Verify",
            "GetPublicKey",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ],
        (_, KeyUsage::GenerateVerifyMac) => &[
            "GenerateMac",
            "VerifyMac",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ],
        (_, KeyUsage::KeyAgreement) => &[
            "DeriveSharedSecret",
            "GetPublicKey",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ],
        (_, KeyUsage::EncapsulateDecapsulate) => &[
            "Encapsulate",
            "Decapsulate",
            "GetPublicKey",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ],
    }
}

/// Operations a grant on a symmetric encryption key may allow.
const SYMMETRIC_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
];

/// Operations that may not be combined with encryption context constraints (those of
/// asymmetric and HMAC keys, which take no encryption context).
const NO_CONSTRAINTS: &[&str] = &[
    "GetPublicKey",
    "Sign",
    "Verify",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
    "Encapsulate",
    "Decapsulate",
];

/// The prefix of every grant token keyhold issues.
const TOKEN_PREFIX: &str = "khgt1.";

/// The API shape of a grant's constraints (an unreadable encryption context constraint shows
/// as none: it allows nothing, and says so in the log).
fn constraints_dto(g: &GrantRecord) -> Option<GrantConstraintsDto> {
    let (subset, equals) = match g.constraints.as_ref() {
        Some(GrantConstraint::Subset(m)) => (Some(m.clone()), None),
        Some(GrantConstraint::Equals(m)) => (None, Some(m.clone())),
        Some(GrantConstraint::Unreadable(_)) => {
            tracing::warn!(grant_id = %g.grant_id, "grant constraint in the store is unreadable");
            (None, None)
        }
        None => (None, None),
    };
    if subset.is_none() && equals.is_none() && g.source_arn.is_none() {
        return None;
    }
    Some(GrantConstraintsDto {
        encryption_context_subset: subset,
        encryption_context_equals: equals,
        source_arn: g.source_arn.clone(),
    })
}

/// A service principal name as AWS's model allows it (`ec2.amazonaws.com`).
fn check_service_principal(p: &str, field: &str) -> Result<(), KmsError> {
    str_len(p, field, 1, 128)?;
    let labels: Vec<&str> = p.split('.').collect();
    let ok = labels.len() >= 3
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err(KmsError::validation(format!(
            "1 validation error detected: Value '{p}' at '{field}' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: \
             ^([A-Za-z0-9\\-]+)\\.([A-Za-z0-9\\-]+)(\\.[A-Za-z0-9\\-]+)+$"
        )))
    }
}

/// A `SourceArn` grant constraint as AWS's model allows it.
fn check_source_arn(arn: &str) -> Result<(), KmsError> {
    str_len(arn, "constraints.sourceArn", 20, 512)?;
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = matches!(parts.as_slice(), ["arn", partition, service, region, account, rest]
        if partition.starts_with("aws")
            && partition[3..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !service.is_empty()
            && service.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
            && !rest.is_empty());
    if ok {
        Ok(())
    } else {
        Err(KmsError::validation(format!(
            "1 validation error detected: Value '{arn}' at 'constraints.sourceArn' failed to \
             satisfy constraint: Member must satisfy regular expression pattern: \
             ^arn:aws[a-z0-9-]*:[a-z0-9-]+:[a-z0-9-]*:[0-9]{{12}}:.+$"
        )))
    }
}

/// Exactly one of an IAM principal and a service principal.
fn one_of(
    iam: Option<String>,
    service: Option<String>,
    what: &str,
    required: bool,
) -> Result<(Option<String>, Option<String>), KmsError> {
    match (&iam, &service) {
        (Some(_), Some(_)) => Err(KmsError::validation(format!(
            "Specify either {what}Principal or {what}ServicePrincipal, but not both."
        ))),
        (None, None) if required => Err(KmsError::validation(format!(
            "Specify either {what}Principal or {what}ServicePrincipal."
        ))),
        _ => Ok((iam, service)),
    }
}

/// True for a token that keyhold could have issued.
pub(crate) fn is_grant_token(t: &str) -> bool {
    t.strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| B64URL.decode(rest).ok())
        .is_some_and(|b| b.len() == 32)
}

fn invalid_token() -> KmsError {
    KmsError::new(
        ErrorCode::InvalidGrantTokenException,
        "The grant token is not valid.",
    )
}

fn invalid_grant_id(id: &str) -> KmsError {
    KmsError::new(
        ErrorCode::InvalidGrantIdException,
        format!("Invalid grant id {id:?}"),
    )
}

/// A grant id as AWS makes them: 64 hex digits.
fn check_grant_id(id: &str) -> Result<(), KmsError> {
    str_len(id, "grantId", 1, 128)?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid_grant_id(id));
    }
    Ok(())
}

/// A grantee or retiring principal: an IAM account, user or role ARN.
fn check_principal(p: &str, field: &str) -> Result<(), KmsError> {
    str_len(p, field, 1, 256)?;
    let rest = p.strip_prefix("arn:").and_then(|r| {
        let parts: Vec<&str> = r.splitn(5, ':').collect();
        match parts.as_slice() {
            [_, "iam", "", account, res]
                if keyhold_core::ids::is_account_id(account)
                    && (*res == "root" || res.starts_with("user/") || res.starts_with("role/")) =>
            {
                Some(())
            }
            [_, "sts", "", account, res]
                if keyhold_core::ids::is_account_id(account)
                    && res.starts_with("assumed-role/") =>
            {
                Some(())
            }
            _ => None,
        }
    });
    rest.ok_or_else(|| {
        KmsError::validation(format!(
            "{field} {p:?} is not a valid principal: use the ARN of an account, user or role"
        ))
    })
}

fn grant_entry(engine: &Engine, key: &KeyRecord, g: &GrantRecord) -> GrantListEntry {
    GrantListEntry {
        key_id: engine.key_arn(key),
        grant_id: g.grant_id.clone(),
        creation_date: epoch_seconds(g.created_at),
        grantee_principal: Some(g.grantee.clone()).filter(|p| !p.is_empty()),
        grantee_service_principal: g.grantee_service.clone(),
        issuing_account: format!("arn:aws:iam::{}:root", g.issuing_account),
        operations: g.operations.clone(),
        name: g.name.clone(),
        retiring_principal: g.retiring.clone(),
        retiring_service_principal: g.retiring_service.clone(),
        constraints: constraints_dto(g),
    }
}

pub(super) fn create_grant(
    engine: &Engine,
    caller: &Principal,
    req: CreateGrantRequest,
    rec: &mut CallRecord,
) -> Result<CreateGrantResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let (grantee, grantee_service) = one_of(
        req.grantee_principal,
        req.grantee_service_principal,
        "Grantee",
        true,
    )?;
    if let Some(g) = &grantee {
        check_principal(g, "granteePrincipal")?;
    }
    if let Some(g) = &grantee_service {
        check_service_principal(g, "granteeServicePrincipal")?;
    }
    let (retiring, retiring_service) = one_of(
        req.retiring_principal,
        req.retiring_service_principal,
        "Retiring",
        false,
    )?;
    if let Some(r) = &retiring {
        check_principal(r, "retiringPrincipal")?;
    }
    if let Some(r) = &retiring_service {
        check_service_principal(r, "retiringServicePrincipal")?;
    }
    let operations = required(req.operations, "operations")?;
    if operations.is_empty() {
        return Err(KmsError::validation(
            "1 validation error detected: Value '[]' at 'operations' failed to satisfy \
             constraint: Member must have length greater than or equal to 1",
        ));
    }
    for op in &operations {
        if !ALL_OPERATIONS.contains(&op.as_str()) {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{op}' at 'operations' failed to satisfy \
                 constraint: Member must satisfy enum value set: [{}]",
                ALL_OPERATIONS.join(", ")
            )));
        }
    }
    if let Some(n) = &req.name {
        str_len(n, "name", 1, 256)?;
        if !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
        {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{n}' at 'name' failed to satisfy \
                 constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
            )));
        }
    }
    grant_tokens(&req.grant_tokens)?;
    // An empty map is the same as none (the Terraform AWS provider sends both maps, the
    // unused one empty).
    let (subset, equals, source_arn) = req.constraints.map_or((None, None, None), |c| {
        (
            c.encryption_context_subset.filter(|m| !m.is_empty()),
            c.encryption_context_equals.filter(|m| !m.is_empty()),
            c.source_arn,
        )
    });
    if let Some(s) = &source_arn {
        check_source_arn(s)?;
    }
    if grantee_service.is_some() && source_arn.is_none() {
        return Err(KmsError::validation(
            "A grant to a service principal (GranteeServicePrincipal) requires the SourceArn \
             constraint.",
        ));
    }
    let constraint = match (subset, equals) {
        (Some(_), Some(_)) => {
            return Err(KmsError::validation(
                "Specify EncryptionContextEquals or EncryptionContextSubset, not both.",
            ))
        }
        (Some(sub), None) => Some(GrantConstraint::Subset(sub)),
        (None, Some(eq)) => Some(GrantConstraint::Equals(eq)),
        (None, None) => None,
    };
    if constraint.is_some() {
        if let Some(op) = operations
            .iter()
            .find(|o| NO_CONSTRAINTS.contains(&o.as_str()))
        {
            return Err(KmsError::validation(format!(
                "Grant constraints cannot be used with the {op} operation."
            )));
        }
        if operations
            .iter()
            .all(|o| CONTEXT_FREE_GRANT_OPERATIONS.contains(&o.as_str()))
        {
            return Err(KmsError::validation(
                "Grant constraints apply only to operations that take an encryption context; \
                 none of the grant's operations does.",
            ));
        }
    }
    let mut ops_sorted = operations.clone();
    ops_sorted.sort();
    ops_sorted.dedup();

    let key = engine.resolve_key(caller, &key_id, false)?;
    let arn = engine.key_arn(&key);
    rec.resources.push(arn.clone());
    let mut conds = Conditions::default()
        .and("kms:GrantOperations", ops_sorted.clone())
        .and("kms:GrantIsForAWSResource", vec!["false".into()]);
    if let Some(g) = &grantee {
        conds = conds.and("kms:GranteePrincipal", vec![g.clone()]);
    }
    if let Some(r) = &retiring {
        conds = conds.and("kms:RetiringPrincipal", vec![r.clone()]);
    }
    if let Some(c) = &constraint {
        let kind = match c {
            GrantConstraint::Equals(_) => "EncryptionContextEquals",
            _ => "EncryptionContextSubset",
        };
        conds = conds.and("kms:GrantConstraintType", vec![kind.into()]);
    }
    // A grant that allows CreateGrant lets its grantee pass on at most its own operations.
    if let Allowed::ByGrant(parent) =
        engine.authorize(caller, rec, &key, "kms:CreateGrant", &conds)?
    {
        if let Some(op) = ops_sorted.iter().find(|o| !parent.operations.contains(o)) {
            return Err(KmsError::new(
                ErrorCode::AccessDeniedException,
                format!(
                    "User: {} may not grant {op}: grant {} does not allow it",
                    caller.arn, parent.grant_id
                ),
            ));
        }
        // A grant made through a grant limited to one resource is limited to it too.
        if parent.source_arn.is_some() && parent.source_arn != source_arn {
            return Err(KmsError::new(
                ErrorCode::AccessDeniedException,
                format!(
                    "User: {} may not create a grant less constrained than grant {}: it must \
                     keep the SourceArn constraint",
                    caller.arn, parent.grant_id
                ),
            ));
        }
        // A grant made through a constrained grant is at least as strict as its parent.
        if let Some(limit) = &parent.constraints {
            if !constraint.as_ref().is_some_and(|c| c.within(limit)) {
                return Err(KmsError::new(
                    ErrorCode::AccessDeniedException,
                    format!(
                        "User: {} may not create a grant less constrained than grant {}: its \
                         encryption context constraint must be equally strict or stricter",
                        caller.arn, parent.grant_id
                    ),
                ));
            }
        }
    }
    if let Some(r) = key.state.crypto_refusal() {
        return Err(KmsError::from_state(r, &arn, key.state.as_str()));
    }
    if let Some(op) = ops_sorted
        .iter()
        .find(|o| !operations_for(&key).contains(&o.as_str()))
    {
        return Err(KmsError::validation(format!(
            "Grant operation {op} is not valid for a {} key",
            key.key_spec
        )));
    }
    dry_run_ok(req.dry_run)?;

    let _guard = engine.lock_writes();
    if let Some(name) = &req.name {
        let existing = engine.store().list_grants(&key.key_id)?;
        if let Some(g) = existing.iter().find(|g| {
            g.name.as_deref() == Some(name.as_str())
                && g.grantee == grantee.clone().unwrap_or_default()
                && g.grantee_service == grantee_service
                && g.retiring == retiring
                && g.retiring_service == retiring_service
                && g.operations == ops_sorted
                && g.constraints == constraint
                && g.source_arn == source_arn
        }) {
            return Ok(CreateGrantResponse {
                grant_token: g.token.clone(),
                grant_id: g.grant_id.clone(),
            });
        }
    }
    let id_bytes = keyhold_core::secret::random_bytes(32).map_err(KmsError::internal)?;
    let token_bytes = keyhold_core::secret::random_bytes(32).map_err(KmsError::internal)?;
    let grant = GrantRecord {
        grant_id: hex::encode(id_bytes),
        key_id: key.key_id,
        name: req.name,
        grantee: grantee.unwrap_or_default(),
        retiring,
        grantee_service,
        retiring_service,
        source_arn,
        issuing_account: caller.account.clone(),
        operations: ops_sorted,
        constraints: constraint,
        token: format!("{TOKEN_PREFIX}{}", B64URL.encode(token_bytes)),
        created_at: engine.now_ms(),
    };
    engine.store().create_grant(&grant)?;
    engine.keyring().invalidate_grants(&key.key_id);
    Ok(CreateGrantResponse {
        grant_token: grant.token,
        grant_id: grant.grant_id,
    })
}

/// Pages a list of grants by grant id.
fn page_of(
    engine: &Engine,
    grants: Vec<(KeyRecord, GrantRecord)>,
    limit: i64,
    marker: &Option<String>,
) -> Result<ListGrantsResponse, KmsError> {
    int_range(limit, "limit", 1, 100)?;
    let start = match marker {
        Some(m) => {
            let pos = grants.iter().position(|(_, g)| &g.grant_id == m);
            pos.map(|p| p + 1)
                .ok_or_else(|| KmsError::new(ErrorCode::InvalidMarkerException, "Invalid marker"))?
        }
        None => 0,
    };
    let page: Vec<_> = grants.iter().skip(start).take(limit as usize).collect();
    let truncated = start + page.len() < grants.len();
    let entries: Vec<_> = page
        .iter()
        .map(|(k, g)| grant_entry(engine, k, g))
        .collect();
    Ok(ListGrantsResponse {
        grants: entries,
        truncated,
        next_marker: page
            .last()
            .filter(|_| truncated)
            .map(|(_, g)| g.grant_id.clone()),
    })
}

pub(super) fn list_grants(
    engine: &Engine,
    caller: &Principal,
    req: ListGrantsRequest,
    rec: &mut CallRecord,
) -> Result<ListGrantsResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    if let Some(id) = &req.grant_id {
        check_grant_id(id)?;
    }
    if let Some(p) = &req.grantee_principal {
        str_len(p, "granteePrincipal", 1, 256)?;
    }
    if let Some(p) = &req.grantee_service_principal {
        check_service_principal(p, "granteeServicePrincipal")?;
    }
    one_of(
        req.grantee_principal.clone(),
        req.grantee_service_principal.clone(),
        "Grantee",
        false,
    )?;
    let key = engine.key_for(
        caller,
        rec,
        &key_id,
        false,
        "kms:ListGrants",
        &Conditions::default(),
    )?;
    let grants = engine
        .store()
        .list_grants(&key.key_id)?
        .into_iter()
        .filter(|g| req.grant_id.as_ref().is_none_or(|id| &g.grant_id == id))
        .filter(|g| {
            req.grantee_principal
                .as_ref()
                .is_none_or(|p| &g.grantee == p)
        })
        .filter(|g| {
            req.grantee_service_principal
                .as_ref()
                .is_none_or(|p| g.grantee_service.as_ref() == Some(p))
        })
        .map(|g| ((*key).clone(), g))
        .collect();
    page_of(engine, grants, req.limit.unwrap_or(50), &req.marker)
}

pub(super) fn list_retirable_grants(
    engine: &Engine,
    caller: &Principal,
    req: ListRetirableGrantsRequest,
    _rec: &mut CallRecord,
) -> Result<ListGrantsResponse, KmsError> {
    let (iam, service) = one_of(
        req.retiring_principal,
        req.retiring_service_principal,
        "Retiring",
        true,
    )?;
    if let Some(s) = service {
        check_service_principal(&s, "retiringServicePrincipal")?;
        // A service retires grants in every account; a caller sees those on its account's keys.
        let mut grants = Vec::new();
        for g in engine.store().list_retirable_grants(&s)? {
            if g.retiring_service.as_ref() != Some(&s) {
                continue;
            }
            if let Some(k) = engine.key_record(&g.key_id)? {
                if k.account == caller.account {
                    grants.push(((*k).clone(), g));
                }
            }
        }
        return page_of(engine, grants, req.limit.unwrap_or(50), &req.marker);
    }
    let retiring = iam.unwrap_or_default();
    check_principal(&retiring, "retiringPrincipal")?;
    // Only principals of the caller's own account may be looked up.
    if retiring.split(':').nth(4) != Some(caller.account.as_str()) {
        return Err(KmsError::new(
            ErrorCode::AccessDeniedException,
            format!(
                "User: {} is not authorized to list grants retirable by {retiring}",
                caller.arn
            ),
        ));
    }
    let mut grants = Vec::new();
    for g in engine.store().list_retirable_grants(&retiring)? {
        if g.retiring.as_ref() != Some(&retiring) {
            continue;
        }
        if let Some(k) = engine.key_record(&g.key_id)? {
            grants.push(((*k).clone(), g));
        }
    }
    page_of(engine, grants, req.limit.unwrap_or(50), &req.marker)
}

pub(super) fn retire_grant(
    engine: &Engine,
    caller: &Principal,
    req: GrantRefRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    if let Some(t) = &req.grant_token {
        str_len(t, "grantToken", 1, 8192)?;
        if !is_grant_token(t) {
            return Err(invalid_token());
        }
    }
    if let Some(id) = &req.grant_id {
        check_grant_id(id)?;
    }
    let grant = match (&req.grant_token, &req.key_id, &req.grant_id) {
        (Some(t), _, _) => engine
            .store()
            .find_grant(None, Some(t))?
            .ok_or_else(|| KmsError::not_found("No grant matches the grant token."))?,
        (None, Some(k), Some(id)) => {
            let key = engine.resolve_key(caller, k, false)?;
            engine
                .store()
                .find_grant(Some(id), None)?
                .filter(|g| g.key_id == key.key_id)
                .ok_or_else(|| KmsError::not_found(format!("Grant {id} does not exist.")))?
        }
        _ => {
            return Err(KmsError::validation(
                "Specify a GrantToken, or a KeyId and a GrantId.",
            ))
        }
    };
    let key = engine
        .key_record(&grant.key_id)?
        .ok_or_else(|| KmsError::not_found("The grant's key does not exist."))?;
    rec.resources.push(engine.key_arn(&key));
    let service = caller.service_name();
    let may = (service.is_none() && grant.retiring.as_deref() == Some(caller.arn.as_str()))
        || (service.is_some() && grant.retiring_service.as_deref() == service)
        || (grant.operations.iter().any(|o| o == "RetireGrant")
            && match service {
                Some(s) => grant.grantee_service.as_deref() == Some(s),
                None => grant.grantee_service.is_none() && grant.grantee == caller.arn,
            })
        || (caller.account == grant.issuing_account
            && engine
                .authorize(caller, rec, &key, "kms:RetireGrant", &Conditions::default())
                .is_ok());
    if !may {
        rec.decision = Some("denied kms:RetireGrant: not the grant's retiring principal".into());
        return Err(KmsError::new(
            ErrorCode::AccessDeniedException,
            format!(
                "User: {} is not authorized to perform: kms:RetireGrant on grant {}",
                caller.arn, grant.grant_id
            ),
        ));
    }
    rec.decision = Some(format!(
        "allowed kms:RetireGrant of grant {}",
        grant.grant_id
    ));
    dry_run_ok(req.dry_run)?;
    remove(engine, &grant)
}

pub(super) fn revoke_grant(
    engine: &Engine,
    caller: &Principal,
    req: GrantRefRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let grant_id = required(req.grant_id, "grantId")?;
    check_grant_id(&grant_id)?;
    let key = engine.key_for(
        caller,
        rec,
        &key_id,
        false,
        "kms:RevokeGrant",
        &Conditions::default(),
    )?;
    let grant = engine
        .store()
        .find_grant(Some(&grant_id), None)?
        .filter(|g| g.key_id == key.key_id)
        .ok_or_else(|| KmsError::not_found(format!("Grant {grant_id} does not exist.")))?;
    dry_run_ok(req.dry_run)?;
    remove(engine, &grant)
}

fn remove(engine: &Engine, grant: &GrantRecord) -> Result<EmptyResponse, KmsError> {
    let _guard = engine.lock_writes();
    engine
        .store()
        .delete_grant(&grant.grant_id)
        .map_err(|e| match e {
            StoreError::NotFound => {
                KmsError::not_found(format!("Grant {} does not exist.", grant.grant_id))
            }
            other => other.into(),
        })?;
    engine.keyring().invalidate_grants(&grant.key_id);
    empty()
}
