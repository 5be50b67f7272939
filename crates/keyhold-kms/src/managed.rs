//! AWS managed keys: `alias/aws/<service>` names a key that keyhold makes for the account the
//! first time the alias is used, as AWS KMS does. Its policy is AWS's: principals of the account
//! may use it for cryptography only through the service (`kms:ViaService`), and may read its
//! metadata directly; nothing may change it. It rotates every year.

use keyhold_core::ids::{AliasName, KeyId};
use keyhold_core::key::{KeyManager, KeySpec, KeyState, KeyUsage, Origin};
use keyhold_core::secret::SecretBytes;
use keyhold_store::{AliasRecord, KeyRecord, KeyVersionRecord, StoreError};

use crate::clock::DAY_MS;
use crate::error::KmsError;
use crate::Engine;

/// Services with an AWS managed key, and the service name in their `kms:ViaService` value.
const SERVICES: &[(&str, &str, &str)] = &[
    ("acm", "acm", "ACM"),
    ("backup", "backup", "Backup"),
    ("cloudtrail", "cloudtrail", "CloudTrail"),
    ("codeartifact", "codeartifact", "CodeArtifact"),
    ("codebuild", "codebuild", "CodeBuild"),
    ("codecommit", "codecommit", "CodeCommit"),
    ("dms", "dms", "DMS"),
    ("dynamodb", "dynamodb", "DynamoDB"),
    ("ebs", "ec2", "EBS"),
    ("ecr", "ecr", "ECR"),
    ("elasticfilesystem", "elasticfilesystem", "EFS"),
    ("es", "es", "OpenSearch"),
    ("fsx", "fsx", "FSx"),
    ("glue", "glue", "Glue"),
    ("kafka", "kafka", "MSK"),
    ("kinesis", "kinesis", "Kinesis"),
    ("kinesisvideo", "kinesisvideo", "Kinesis Video Streams"),
    ("lambda", "lambda", "Lambda"),
    ("lightsail", "lightsail", "Lightsail"),
    ("rds", "rds", "RDS"),
    ("redshift", "redshift", "Redshift"),
    ("s3", "s3", "S3"),
    ("secretsmanager", "secretsmanager", "Secrets Manager"),
    ("ses", "ses", "SES"),
    ("sns", "sns", "SNS"),
    ("sqs", "sqs", "SQS"),
    ("ssm", "ssm", "Systems Manager"),
    ("timestream", "timestream", "Timestream"),
    ("xray", "xray", "X-Ray"),
];

/// Days between the automatic rotations of an AWS managed key.
const ROTATION_DAYS: u32 = 365;

/// The service an `alias/aws/<service>` name belongs to, if it is a known one.
fn service(alias: &AliasName) -> Option<&'static (&'static str, &'static str, &'static str)> {
    let name = alias.as_str().strip_prefix("alias/aws/")?;
    SERVICES.iter().find(|(s, _, _)| *s == name)
}

/// The key policy AWS gives a managed key.
fn policy(account: &str, region: &str, via: &str, title: &str, service: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "Version": "2012-10-17",
        "Id": format!("auto-{service}-1"),
        "Statement": [
            {
                "Sid": format!("Allow access through {title} for all principals in the account that are authorized to use {title}"),
                "Effect": "Allow",
                "Principal": { "AWS": "*" },
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:CallerAccount": account,
                        "kms:ViaService": format!("{via}.{region}.amazonaws.com"),
                    }
                }
            },
            {
                "Sid": "Allow direct access to key metadata to the account",
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
                "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
                "Resource": "*"
            }
        ]
    }))
    .unwrap_or_default()
}

impl Engine {
    /// The AWS managed key `alias` names in `account`, made now if this is its first use.
    /// `None` when the alias is not one of AWS's service aliases.
    pub(crate) fn managed_key(
        &self,
        account: &str,
        alias: &AliasName,
    ) -> Result<Option<KeyId>, KmsError> {
        let Some((name, via, title)) = service(alias) else {
            return Ok(None);
        };
        self.create_aws_key(
            account,
            alias,
            format!("Default key that protects my {title} data when no other key is defined"),
            policy(account, self.region(), via, title, name),
            Some(ROTATION_DAYS),
        )
        .map(Some)
    }

    /// Makes a key AWS manages (an AWS managed or an AWS owned key) under `alias` in
    /// `account`, once: a key another caller or node made first is the one returned.
    pub(crate) fn create_aws_key(
        &self,
        account: &str,
        alias: &AliasName,
        description: String,
        policy: String,
        rotation_days: Option<u32>,
    ) -> Result<KeyId, KmsError> {
        let _guard = self.lock_writes();
        if let Some(existing) = self.store().get_alias(account, alias)? {
            return Ok(existing.target);
        }
        let id = KeyId::generate();
        let now = self.now_ms();
        let material = SecretBytes::random(32).map_err(KmsError::internal)?;
        let key = KeyRecord {
            key_id: id,
            account: account.to_string(),
            description,
            key_spec: KeySpec::SymmetricDefault,
            key_usage: KeyUsage::EncryptDecrypt,
            origin: Origin::AwsKms,
            state: KeyState::Enabled,
            created_at: now,
            deletion_date: None,
            pending_window_days: None,
            current_version: 1,
            policy,
            key_manager: KeyManager::Aws,
            rotation_period_days: rotation_days,
            next_rotation_at: rotation_days.map(|d| now + i64::from(d) * DAY_MS),
            expiration_model: None,
            valid_to: None,
            material_digest: None,
            custom_key_store_id: None,
            multi_region: None,
        };
        let version = KeyVersionRecord {
            key_id: id,
            version: 1,
            wrapped_material: self.wrap_material(&id, 1, &material)?,
            created_at: now,
            rotation_type: None,
            imported: None,
        };
        let alias_rec = AliasRecord {
            account: account.to_string(),
            name: alias.clone(),
            target: id,
            created_at: now,
            updated_at: now,
        };
        match self
            .store()
            .create_key(&key, Some(&version), &[], Some(&alias_rec))
        {
            Ok(()) => {
                tracing::info!(%account, alias = %alias, key_id = %id, "AWS key created");
                Ok(id)
            }
            // Another node made it first: use theirs.
            Err(StoreError::AlreadyExists) => self
                .store()
                .get_alias(account, alias)?
                .map(|a| a.target)
                .ok_or_else(|| KmsError::internal("AWS key alias vanished")),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_services_have_managed_keys() {
        assert!(service(&AliasName::parse("alias/aws/s3").unwrap()).is_some());
        assert!(service(&AliasName::parse("alias/aws/ebs").unwrap()).is_some());
        assert!(service(&AliasName::parse("alias/aws/nope").unwrap()).is_none());
        assert!(service(&AliasName::parse("alias/s3").unwrap()).is_none());
    }

    #[test]
    fn managed_policy_is_a_valid_policy() {
        let p = policy("111122223333", "us-east-1", "ec2", "EBS", "ebs");
        keyhold_core::policy::PolicyDocument::parse(&p).unwrap();
        assert!(p.contains("ec2.us-east-1.amazonaws.com"));
    }
}
