//! Authorization: a key's policy decides who may do what with it.
//!
//! Every operation on a key names its action (`kms:Encrypt`, ...) and the condition keys it
//! brings (encryption context, algorithm, ...). [`Engine::authorize`] builds the request context,
//! evaluates the key's policy, and records the decision for the audit event. Operations that
//! AWS never allows across accounts are refused for a key of another account before the policy
//! is read. When the policy neither allows nor denies, the key's grants are read
//! ([`grant_allows`]): the grant rule lives here, and the grant operations only manage grants.

use std::collections::HashMap;
use std::sync::Arc;

use keyhold_core::context::EncryptionContext;
use keyhold_core::grant::GrantConstraint;
use keyhold_core::policy::{Decision, PolicyDocument, RequestContext};
use keyhold_store::{GrantRecord, KeyRecord};

use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::{CallRecord, Engine};

/// Actions AWS allows on a key of another account (when that key's policy allows them).
const CROSS_ACCOUNT: &[&str] = &[
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:Sign",
    "kms:Verify",
    "kms:GetPublicKey",
    "kms:DeriveSharedSecret",
    "kms:Encapsulate",
    "kms:Decapsulate",
    "kms:DescribeKey",
    "kms:CreateGrant",
    "kms:ListGrants",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:GetKeyRotationStatus",
];

/// What allowed a request.
#[derive(Debug, Clone)]
pub(crate) enum Allowed {
    /// A statement of the key policy.
    ByPolicy,
    /// A grant.
    ByGrant(Box<GrantRecord>),
}

/// The request-specific condition keys an operation brings.
#[derive(Debug, Default, Clone)]
pub(crate) struct Conditions<'a> {
    /// The request's encryption context.
    pub context: Option<&'a EncryptionContext>,
    /// Other keys and values (`kms:EncryptionAlgorithm`, `kms:GrantOperations`, ...).
    pub extra: Vec<(&'static str, Vec<String>)>,
}

impl<'a> Conditions<'a> {
    /// Conditions with an encryption context.
    pub fn with_context(context: &'a EncryptionContext) -> Self {
        Self {
            context: Some(context),
            extra: Vec::new(),
        }
    }

    /// Adds one condition key.
    pub fn and(mut self, key: &'static str, values: Vec<String>) -> Self {
        self.extra.push((key, values));
        self
    }
}

/// True when grant `g` lets `caller` perform `op` (`Encrypt`, without `kms:`) with
/// encryption context `ctx`, on behalf of resource `source_arn`: the caller is the grantee
/// (or the grantee is its account; a grant to a service principal only that service), the
/// grant lists the operation, the request is made for the grant's `SourceArn` if it has one,
/// and the context meets the grant's constraint (a stored constraint that cannot be read
/// allows nothing).
pub(crate) fn grant_allows(
    g: &GrantRecord,
    caller: &Principal,
    op: &str,
    ctx: Option<&EncryptionContext>,
    source_arn: Option<&str>,
) -> bool {
    let grantee_ok = match (&g.grantee_service, caller.service_name()) {
        (Some(service), Some(name)) => service == name,
        (Some(_), None) | (None, Some(_)) => false,
        (None, None) => {
            g.grantee == caller.arn
                || g.grantee
                    .strip_prefix("arn:aws:iam::")
                    .and_then(|r| r.strip_suffix(":root"))
                    .is_some_and(|account| account == caller.account)
        }
    };
    if !grantee_ok || !g.operations.iter().any(|o| o == op) {
        return false;
    }
    if g.source_arn
        .as_deref()
        .is_some_and(|s| Some(s) != source_arn)
    {
        return false;
    }
    match &g.constraints {
        None => true,
        // Fail closed whatever the operation.
        Some(c @ GrantConstraint::Unreadable(_)) => c.allows(ctx),
        // Constraints bind operations that take an encryption context; DescribeKey,
        // RetireGrant and CreateGrant take none (CreateGrant checks the child's constraint).
        Some(_) if CONTEXT_FREE_GRANT_OPERATIONS.contains(&op) => true,
        Some(c) => c.allows(ctx),
    }
}

/// Grant operations that take no encryption context, so a grant's constraint does not apply
/// to them.
pub(crate) const CONTEXT_FREE_GRANT_OPERATIONS: &[&str] =
    &["DescribeKey", "RetireGrant", "CreateGrant"];

fn denied(caller: &Principal, action: &str, key_arn: &str, explicit: bool) -> KmsError {
    let why = if explicit {
        "with an explicit deny in a resource-based policy".to_string()
    } else {
        format!("because no resource-based policy allows the {action} action")
    };
    KmsError::new(
        ErrorCode::AccessDeniedException,
        format!(
            "User: {} is not authorized to perform: {action} on resource: {key_arn} {why}",
            caller.arn
        ),
    )
}

impl Engine {
    /// The parsed policy of a key (cached with the key).
    fn parsed_policy(&self, key: &KeyRecord) -> Result<Arc<PolicyDocument>, KmsError> {
        if let Some(p) = self.keyring().policy(&key.key_id) {
            return Ok(p);
        }
        let p = match self.keyring().document(&key.policy) {
            Some(p) => p,
            None => {
                let p = Arc::new(PolicyDocument::parse(&key.policy).map_err(|e| {
                    KmsError::internal(format!("stored policy of {} is malformed: {e}", key.key_id))
                })?);
                self.keyring().put_document(&key.policy, p.clone());
                p
            }
        };
        self.keyring().put_policy(key.key_id, p.clone());
        Ok(p)
    }

    /// The request context a policy is evaluated against.
    pub(crate) fn request_context<'a>(
        &self,
        caller: &'a Principal,
        rec: &CallRecord,
        key: &KeyRecord,
        action: &'a str,
        key_arn: &'a str,
        conds: &Conditions<'_>,
    ) -> RequestContext<'a> {
        let mut keys: HashMap<String, Vec<String>> = HashMap::new();
        let mut put = |k: &str, v: Vec<String>| {
            keys.insert(k.to_ascii_lowercase(), v);
        };
        put("kms:CallerAccount", vec![caller.account.clone()]);
        put("aws:PrincipalArn", vec![caller.arn.clone()]);
        put("aws:PrincipalAccount", vec![caller.account.clone()]);
        put(
            "aws:PrincipalType",
            vec![if caller.arn.contains(":role/") {
                "AssumedRole"
            } else {
                "User"
            }
            .into()],
        );
        if caller.arn.contains(":user/") {
            put("aws:username", vec![caller.name().to_string()]);
        }
        if !rec.source_ip.is_empty() {
            put("aws:SourceIp", vec![rec.source_ip.clone()]);
        }
        put(
            "aws:SecureTransport",
            vec![if rec.secure_transport {
                "true"
            } else {
                "false"
            }
            .into()],
        );
        if let Some(via) = &rec.via_service {
            put("kms:ViaService", vec![via.clone()]);
        }
        if let Some(source) = &rec.source_arn {
            put("aws:SourceArn", vec![source.clone()]);
            if let Some(account) = source.split(':').nth(4).filter(|a| !a.is_empty()) {
                put("aws:SourceAccount", vec![account.to_string()]);
            }
        }
        put("kms:KeySpec", vec![key.key_spec.as_str().into()]);
        put("kms:KeyUsage", vec![key.key_usage.as_str().into()]);
        put("kms:KeyOrigin", vec![key.origin.as_str().into()]);
        put("kms:KeyManager", vec![key.key_manager.as_str().into()]);
        put("aws:RequestedRegion", vec![self.region().to_string()]);
        put(
            "kms:MultiRegion",
            vec![key.multi_region.is_some().to_string()],
        );
        if let Some(mr) = &key.multi_region {
            put(
                "kms:MultiRegionKeyType",
                vec![if mr.primary == self.region() {
                    "PRIMARY"
                } else {
                    "REPLICA"
                }
                .into()],
            );
        }
        if let Some(ctx) = conds.context {
            let mut names = Vec::new();
            for (k, v) in ctx.pairs() {
                put(&format!("kms:EncryptionContext:{k}"), vec![v.clone()]);
                names.push(k.clone());
            }
            put("kms:EncryptionContextKeys", names);
        }
        for (k, v) in &conds.extra {
            put(k, v.clone());
        }
        RequestContext {
            principal_arn: &caller.arn,
            principal_account: &caller.account,
            action,
            resource: key_arn,
            keys,
        }
    }

    /// The grants of a key (cached with the key).
    pub(crate) fn grants_of(&self, key: &KeyRecord) -> Result<Arc<Vec<GrantRecord>>, KmsError> {
        if let Some(g) = self.keyring().grants(&key.key_id) {
            return Ok(g);
        }
        let g = Arc::new(self.store().list_grants(&key.key_id)?);
        self.keyring().put_grants(key.key_id, g.clone());
        Ok(g)
    }

    /// Decides whether `caller` may perform `action` on `key`: the key policy first (an
    /// explicit deny there is final), then the key's grants. Records the decision.
    pub(crate) fn authorize(
        &self,
        caller: &Principal,
        rec: &mut CallRecord,
        key: &KeyRecord,
        action: &str,
        conds: &Conditions<'_>,
    ) -> Result<Allowed, KmsError> {
        let key_arn = self.key_arn(key);
        if key.account != caller.account && !CROSS_ACCOUNT.contains(&action) {
            rec.decision = Some(format!("denied {action}: not allowed across accounts"));
            return Err(denied(caller, action, &key_arn, false));
        }
        let policy = self.parsed_policy(key)?;
        let ctx = self.request_context(caller, rec, key, action, &key_arn, conds);
        match policy.evaluate(&ctx) {
            Decision::Allow(sid) => {
                rec.decision = Some(match sid {
                    Some(s) => format!("allowed {action} by key policy statement {s:?}"),
                    None => format!("allowed {action} by key policy"),
                });
                Ok(Allowed::ByPolicy)
            }
            Decision::ExplicitDeny(sid) => {
                rec.decision = Some(match sid {
                    Some(s) => format!("denied {action} by key policy statement {s:?}"),
                    None => format!("denied {action} by key policy"),
                });
                Err(denied(caller, action, &key_arn, true))
            }
            Decision::ImplicitDeny => {
                let op = action.strip_prefix("kms:").unwrap_or(action);
                let grants = self.grants_of(key)?;
                if let Some(g) = grants
                    .iter()
                    .find(|g| grant_allows(g, caller, op, conds.context, rec.source_arn.as_deref()))
                {
                    rec.decision = Some(format!("allowed {action} by grant {}", g.grant_id));
                    return Ok(Allowed::ByGrant(Box::new(g.clone())));
                }
                rec.decision = Some(format!("denied {action}: no statement or grant allows it"));
                Err(denied(caller, action, &key_arn, false))
            }
        }
    }

    /// Resolves the key a request names, records it as the call's resource, and authorizes
    /// `action` on it.
    /// The key a request's `KeyId` names (required), checked for `action` with no conditions.
    pub(crate) fn requested_key(
        &self,
        caller: &Principal,
        rec: &mut CallRecord,
        key_id: Option<String>,
        aliases: bool,
        action: &str,
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let key_id = crate::validate::required(key_id, "keyId")?;
        self.key_for(
            caller,
            rec,
            &key_id,
            aliases,
            action,
            &Conditions::default(),
        )
    }

    pub(crate) fn key_for(
        &self,
        caller: &Principal,
        rec: &mut CallRecord,
        name: &str,
        aliases: bool,
        action: &str,
        conds: &Conditions<'_>,
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let key = self.resolve_key(caller, name, aliases)?;
        rec.resources.push(self.key_arn(&key));
        self.authorize(caller, rec, &key, action, conds)?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::ids::KeyId;

    fn grant(constraints: Option<GrantConstraint>) -> GrantRecord {
        GrantRecord {
            grant_id: "0".repeat(64),
            key_id: KeyId::parse("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap(),
            name: None,
            grantee: "arn:aws:iam::111122223333:user/app".into(),
            retiring: None,
            issuing_account: "111122223333".into(),
            operations: vec!["Encrypt".into(), "Decrypt".into()],
            constraints,
            token: "t".into(),
            created_at: 0,
            grantee_service: None,
            retiring_service: None,
            source_arn: None,
        }
    }

    fn caller(arn: &str) -> Principal {
        Principal {
            arn: arn.into(),
            account: "111122223333".into(),
            access_key_id: "AKIA".into(),
        }
    }

    #[test]
    fn a_grant_allows_its_grantee_its_operations() {
        let g = grant(None);
        let app = caller("arn:aws:iam::111122223333:user/app");
        assert!(grant_allows(&g, &app, "Encrypt", None, None));
        assert!(!grant_allows(&g, &app, "ReEncryptFrom", None, None));
        let other = caller("arn:aws:iam::111122223333:user/other");
        assert!(!grant_allows(&g, &other, "Encrypt", None, None));
        let mut to_account = grant(None);
        to_account.grantee = "arn:aws:iam::111122223333:root".into();
        assert!(grant_allows(&to_account, &other, "Encrypt", None, None));
    }

    #[test]
    fn constraints_are_checked_and_an_unreadable_one_denies() {
        let app = caller("arn:aws:iam::111122223333:user/app");
        let ctx = EncryptionContext::new([("repo".to_string(), "r-1".to_string())].into());
        let sub = grant(Some(GrantConstraint::from_json(
            r#"{"EncryptionContextSubset":{"repo":"r-1"}}"#,
        )));
        assert!(grant_allows(&sub, &app, "Encrypt", Some(&ctx), None));
        assert!(!grant_allows(&sub, &app, "Encrypt", None, None));
        for stored in ["{", r#"{"EncryptionContextSubset":5}"#, "{}"] {
            let mut bad = grant(Some(GrantConstraint::from_json(stored)));
            assert!(
                !grant_allows(&bad, &app, "Encrypt", Some(&ctx), None),
                "{stored}"
            );
            assert!(!grant_allows(&bad, &app, "Encrypt", None, None), "{stored}");
            bad.operations.push("DescribeKey".into());
            assert!(
                !grant_allows(&bad, &app, "DescribeKey", None, None),
                "{stored}"
            );
        }
        // The constraint does not bind operations without an encryption context.
        let mut sub = sub;
        sub.operations.push("DescribeKey".into());
        assert!(grant_allows(&sub, &app, "DescribeKey", None, None));
    }

    #[test]
    fn a_grant_to_a_service_principal_allows_only_that_service() {
        let mut g = grant(None);
        g.grantee = String::new();
        g.grantee_service = Some("ec2.amazonaws.com".into());
        let ec2 = Principal::service("ec2.amazonaws.com", "111122223333");
        let s3 = Principal::service("s3.amazonaws.com", "111122223333");
        let app = caller("arn:aws:iam::111122223333:user/app");
        assert!(grant_allows(&g, &ec2, "Encrypt", None, None));
        assert!(!grant_allows(&g, &s3, "Encrypt", None, None));
        assert!(!grant_allows(&g, &app, "Encrypt", None, None));
        // A grant to an account never admits a service acting in it.
        let mut to_account = grant(None);
        to_account.grantee = "arn:aws:iam::111122223333:root".into();
        assert!(!grant_allows(&to_account, &ec2, "Encrypt", None, None));
    }

    #[test]
    fn a_source_arn_constraint_binds_the_resource_acted_for() {
        let mut g = grant(None);
        g.grantee = String::new();
        g.grantee_service = Some("ec2.amazonaws.com".into());
        g.source_arn = Some("arn:aws:ec2:us-east-1:111122223333:volume/vol-1".into());
        let ec2 = Principal::service("ec2.amazonaws.com", "111122223333");
        let vol1 = "arn:aws:ec2:us-east-1:111122223333:volume/vol-1";
        let vol2 = "arn:aws:ec2:us-east-1:111122223333:volume/vol-2";
        assert!(grant_allows(&g, &ec2, "Decrypt", None, Some(vol1)));
        assert!(!grant_allows(&g, &ec2, "Decrypt", None, Some(vol2)));
        assert!(!grant_allows(&g, &ec2, "Decrypt", None, None));
        // It binds operations without an encryption context too.
        g.operations.push("DescribeKey".into());
        assert!(!grant_allows(&g, &ec2, "DescribeKey", None, None));
    }
}
