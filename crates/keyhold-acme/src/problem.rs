//! RFC 8555 errors as problem documents (RFC 7807): `urn:ietf:params:acme:error:<kind>`.

use serde_json::Value;

/// An ACME error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The error type after `urn:ietf:params:acme:error:` (`badNonce`, `malformed`, ...).
    pub kind: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What was wrong; never a secret.
    pub detail: String,
}

macro_rules! kinds {
    ($($fn_name:ident => $kind:literal, $status:literal;)*) => {
        impl Problem {
            $(
                #[doc = concat!("`", $kind, "` (", stringify!($status), ").")]
                pub fn $fn_name(detail: impl Into<String>) -> Self {
                    Self { kind: $kind, status: $status, detail: detail.into() }
                }
            )*
        }
    };
}

kinds! {
    malformed => "malformed", 400;
    bad_nonce => "badNonce", 400;
    bad_csr => "badCSR", 400;
    bad_public_key => "badPublicKey", 400;
    bad_signature_algorithm => "badSignatureAlgorithm", 400;
    bad_revocation_reason => "badRevocationReason", 400;
    already_revoked => "alreadyRevoked", 400;
    rejected_identifier => "rejectedIdentifier", 400;
    unsupported_identifier => "unsupportedIdentifier", 400;
    external_account_required => "externalAccountRequired", 400;
    incorrect_response => "incorrectResponse", 403;
    connection => "connection", 400;
    tls => "tls", 400;
    dns => "dns", 400;
    order_not_ready => "orderNotReady", 403;
    unauthorized => "unauthorized", 403;
    account_does_not_exist => "accountDoesNotExist", 400;
    not_found => "malformed", 404;
    server_internal => "serverInternal", 500;
}

impl Problem {
    /// The problem document.
    pub fn document(&self) -> Value {
        serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{}", self.kind),
            "detail": self.detail,
            "status": self.status,
        })
    }

    /// A fault of this server, logged; the client sees no detail.
    pub fn internal(why: impl std::fmt::Display) -> Self {
        tracing::error!(error = %why, "ACME server fault");
        Self::server_internal("internal error")
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}
