//! Who is calling: s3s verifies the signature (header, presigned, aws-chunked) with the secret
//! keyhold's engine holds for the access key; the access check then makes the caller a
//! [`Principal`], records the operation for the audit event, and refuses anonymous requests
//! and requests signed for another region or service.

use std::sync::Arc;

use keyhold_kms::principal::Principal;
use keyhold_kms::Engine;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

use crate::Exchange;

/// Secrets for SigV4 verification, from the engine's credentials.
pub(crate) struct Auth(pub Arc<Engine>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        // As on the KMS front door: a cache hit after the first request of an access key.
        let found = self.0.credential(access_key).map_err(|e| {
            tracing::warn!(error = %e, "credential lookup failed");
            s3_error!(InternalError, "credential lookup failed")
        })?;
        match found {
            Some(c) => {
                let secret = String::from_utf8_lossy(c.secret.expose_secret()).into_owned();
                Ok(SecretKey::from(secret))
            }
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

/// The access check of every operation.
pub(crate) struct Access(pub Arc<Engine>);

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name().to_string();
        let exchange = cx.extensions_mut().get::<Arc<Exchange>>().cloned();
        if let Some(x) = &exchange {
            x.set_operation(&op);
        }
        let Some(cred) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Anonymous access is not allowed"));
        };
        // The signature check just looked this access key up: the cache answers.
        let found = self
            .0
            .credential(&cred.access_key)
            .map_err(|_| s3_error!(InternalError, "credential lookup failed"))?;
        let Some(c) = found else {
            return Err(s3_error!(InvalidAccessKeyId));
        };
        let principal: Principal = c.principal.clone();
        if let Some(x) = &exchange {
            x.set_principal(&principal);
        }
        cx.extensions_mut().insert(principal);
        Ok(())
    }
}
