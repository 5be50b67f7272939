//! AWS owned keys: one key per service that keyhold itself uses for that service's default
//! encryption (SSE-S3), as AWS services use keys they own. Such a key belongs to no account
//! (its records are kept under [`OWNED_ACCOUNT`], which no principal can be in), so no ListKeys
//! shows it and no KMS request can name it; its policy denies every principal anyway. Its
//! material is wrapped under the root key like every other key's, and it never leaves keyhold.

use keyhold_core::blob;
use keyhold_core::context::EncryptionContext;
use keyhold_core::ids::{AliasName, KeyId};
use keyhold_core::secret::SecretBytes;
use keyhold_store::KeyRecord;

use crate::error::{ErrorCode, KmsError};
use crate::Engine;

/// The pseudo-account owned keys are kept under (not a 12-digit account id, so no principal
/// is ever in it).
pub const OWNED_ACCOUNT: &str = "aws";

/// The policy of an owned key: nobody may use it through KMS.
const DENY_ALL: &str = r#"{
  "Version": "2012-10-17",
  "Id": "aws-owned",
  "Statement": [
    {
      "Sid": "An AWS owned key is used only by its service",
      "Effect": "Deny",
      "Principal": { "AWS": "*" },
      "Action": "kms:*",
      "Resource": "*"
    }
  ]
}"#;

impl Engine {
    /// The owned key of `service`, made on first use.
    fn owned_key(&self, service: &str) -> Result<std::sync::Arc<KeyRecord>, KmsError> {
        let alias = AliasName::parse(&format!("alias/aws/{service}"))
            .map_err(|_| KmsError::internal(format!("no owned key for service {service}")))?;
        let id = match self.alias_target(OWNED_ACCOUNT, alias.as_str(), alias.as_str()) {
            Ok(id) => id,
            Err(e) if e.code == ErrorCode::NotFoundException => {
                self.create_owned_key(service, &alias)?
            }
            Err(e) => return Err(e),
        };
        self.key_record(&id)?
            .ok_or_else(|| KmsError::internal(format!("owned key of {service} missing")))
    }

    fn create_owned_key(&self, service: &str, alias: &AliasName) -> Result<KeyId, KmsError> {
        self.create_aws_key(
            OWNED_ACCOUNT,
            alias,
            format!("AWS owned key of {service}"),
            DENY_ALL.to_string(),
            None,
        )
    }

    /// Seals `plaintext` (a data key) under `service`'s owned key, bound to `context`. Not a
    /// KMS call: not authorized against any principal and not audited, as AWS services use
    /// their own keys.
    pub fn owned_seal(
        &self,
        service: &str,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let key = self.owned_key(service)?;
        let material = self.current_material(&key)?;
        blob::seal(
            &material,
            &key.key_id,
            key.current_version,
            context,
            plaintext,
        )
        .map_err(KmsError::internal)
    }

    /// Opens a blob made by [`Engine::owned_seal`] for the same service and context;
    /// `InvalidCiphertextException` for anything else.
    pub fn owned_open(
        &self,
        service: &str,
        sealed: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretBytes, KmsError> {
        let key = self.owned_key(service)?;
        let header = blob::parse_header(sealed).map_err(|_| KmsError::invalid_ciphertext())?;
        if header.key_id != key.key_id || header.hsm {
            return Err(KmsError::invalid_ciphertext());
        }
        let material = self
            .material(&key.key_id, header.version)?
            .ok_or_else(KmsError::invalid_ciphertext)?;
        blob::open(&material, sealed, context).map_err(|_| KmsError::invalid_ciphertext())
    }
}
