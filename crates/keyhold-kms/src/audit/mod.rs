//! Audit events: one CloudTrail-shaped JSON record per call, allowed or refused.
//!
//! Events go to an [`AuditSink`]. [`chain::ChainedAuditLog`] writes them to hash-chained segment
//! files with signed digests before the response is sent; [`verify`] checks such a log.

pub mod chain;
#[cfg(test)]
mod chain_tests;
pub mod verify;

use std::sync::Mutex;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::principal::Principal;

/// Where audit events go.
pub trait AuditSink: Send + Sync {
    /// Records one event (a JSON object, no newline); an error means the event could not be
    /// persisted.
    fn record(&self, event: &[u8]) -> std::io::Result<()>;

    /// Why events cannot be recorded now, if they cannot (keyhold then refuses requests).
    fn failure(&self) -> Option<String> {
        None
    }

    /// Makes everything recorded so far durable and signed (at shutdown).
    fn close(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Records each audit digest as the chain's head in the store.
pub struct StoreAnchor(pub std::sync::Arc<dyn keyhold_store::Store>);

impl chain::AuditAnchor for StoreAnchor {
    fn record(&self, node: &str, digest: u64, hash: &str) -> Result<(), String> {
        self.0
            .put_audit_head(&keyhold_store::AuditHead {
                node: node.to_string(),
                digest,
                digest_hash: hash.to_string(),
                recorded_at: crate::clock::Clock::now_ms(&crate::clock::SystemClock),
            })
            .map_err(|e| e.to_string())
    }
}

/// Keeps events in memory (tests).
#[derive(Default)]
pub struct MemoryAuditLog(pub Mutex<Vec<Value>>);

impl AuditSink for MemoryAuditLog {
    fn record(&self, event: &[u8]) -> std::io::Result<()> {
        let v = serde_json::from_slice(event)?;
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(v);
        Ok(())
    }
}

/// Request fields never written to the audit log: plaintext, ciphertext and anything secret.
const REDACTED_FIELDS: &[&str] = &[
    "Plaintext",
    "CiphertextBlob",
    "EncryptedKeyMaterial",
    "ImportToken",
    "Message",
    "Signature",
    "Mac",
    "PublicKey",
    "Recipient",
    "KeyStorePassword",
];

fn camel(k: &str) -> String {
    let mut chars = k.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Where an event's `requestParameters` come from.
#[derive(Debug, Clone, Copy)]
pub enum Parameters<'a> {
    /// A request body that did not become a typed request (refused before it was parsed, or
    /// not parseable): its fields are copied as sent, less the secret ones.
    Raw(&'a [u8]),
    /// A typed request's parameters ([`crate::ops::Request::parameters`]): already camelCase,
    /// secret fields never serialized.
    Typed(&'a Value),
}

/// CloudTrail's `requestParameters`: the request fields in camelCase, less anything secret.
/// Raw values are copied through as they were sent, without being decoded.
pub enum RequestParameters<'a> {
    /// Fields of a raw body (`None` unless it is a JSON object).
    Raw(Option<BTreeMap<String, &'a RawValue>>),
    /// A typed request's parameters.
    Typed(&'a Value),
}

impl<'a> RequestParameters<'a> {
    /// Reads them from a request body (`null` unless it is a JSON object).
    pub fn from_body(body: &'a [u8]) -> Self {
        Self::Raw(serde_json::from_slice(body).ok())
    }

    /// A typed request's parameters.
    pub fn from_value(v: &'a Value) -> Self {
        Self::Typed(v)
    }
}

impl Serialize for RequestParameters<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = match self {
            Self::Typed(v) => return v.serialize(ser),
            Self::Raw(None) => return ser.serialize_none(),
            Self::Raw(Some(fields)) => fields,
        };
        let mut map = ser.serialize_map(None)?;
        for (k, v) in fields {
            if !REDACTED_FIELDS.contains(&k.as_str()) {
                map.serialize_entry(&camel(k), v)?;
            }
        }
        map.end()
    }
}

/// The request parameters as a JSON value (tests and tools).
pub fn request_parameters(body: &[u8]) -> Value {
    serde_json::to_value(RequestParameters::from_body(body)).unwrap_or(Value::Null)
}

/// Everything about one call that goes into its event.
pub struct CallInfo<'a> {
    /// The event's id (CloudTrail `eventID`).
    pub event_id: &'a str,
    /// Operation name (`Encrypt`); may be unknown or empty for refused requests.
    pub event_name: &'a str,
    /// Who called, if authenticated.
    pub principal: Option<&'a Principal>,
    /// The access key id claimed, when authentication failed.
    pub claimed_access_key_id: Option<&'a str>,
    /// Client address.
    pub source_ip: &'a str,
    /// Client User-Agent.
    pub user_agent: &'a str,
    /// Request id returned to the client.
    pub request_id: &'a str,
    /// What was asked (for requestParameters).
    pub parameters: Parameters<'a>,
    /// Error name and message, when the call failed.
    pub error: Option<(&'a str, &'a str)>,
    /// ARNs of the keys the call touched.
    pub resources: &'a [String],
    /// The authorization decision (which policy statement or grant allowed or denied it).
    pub decision: Option<&'a str>,
    /// The server's region.
    pub region: &'a str,
    /// Event time, milliseconds since the epoch.
    pub time_ms: i64,
    /// True for operations that change nothing.
    pub read_only: bool,
    /// The service whose API was called (`kms.amazonaws.com`, `s3.amazonaws.com`).
    pub event_source: &'a str,
    /// The service that made the call on the principal's behalf (`s3.amazonaws.com`), for a
    /// call that came through one of keyhold's service front doors.
    pub invoked_by: Option<&'a str>,
}

/// The event source of KMS calls.
pub const KMS_SOURCE: &str = "kms.amazonaws.com";

pub(crate) fn iso8601(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserIdentity<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    access_key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invoked_by: Option<&'a str>,
}

#[derive(Serialize)]
struct Resource<'a> {
    #[serde(rename = "accountId")]
    account_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ARN")]
    arn: &'a str,
}

#[derive(Serialize)]
struct Authorization<'a> {
    authorization: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    event_version: &'static str,
    user_identity: UserIdentity<'a>,
    event_time: String,
    event_source: &'a str,
    event_name: &'a str,
    aws_region: &'a str,
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: &'a str,
    user_agent: &'a str,
    request_parameters: RequestParameters<'a>,
    response_elements: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
    #[serde(rename = "requestID")]
    request_id: &'a str,
    #[serde(rename = "eventID")]
    event_id: &'a str,
    read_only: bool,
    resources: Vec<Resource<'a>>,
    event_type: &'static str,
    management_event: bool,
    recipient_account_id: Option<&'a str>,
    event_category: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_event_data: Option<Authorization<'a>>,
}

/// The CloudTrail resource type of an ARN.
fn resource_kind(arn: &str) -> &'static str {
    match arn.strip_prefix("arn:aws:s3:::") {
        Some(rest) if rest.contains('/') => "AWS::S3::Object",
        Some(_) => "AWS::S3::Bucket",
        None => "AWS::KMS::Key",
    }
}

/// Builds the CloudTrail-shaped event, serialized as one JSON object.
pub fn event(info: &CallInfo<'_>) -> Vec<u8> {
    let user_identity = match info.principal {
        // A service calling as itself: CloudTrail's AWSService identity.
        Some(p) if p.service_name().is_some() => UserIdentity {
            kind: "AWSService",
            principal_id: None,
            arn: None,
            account_id: Some(&p.account),
            access_key_id: None,
            user_name: None,
            invoked_by: Some(&p.arn),
        },
        Some(p) => UserIdentity {
            kind: if p.arn.contains(":role/") {
                "AssumedRole"
            } else {
                "IAMUser"
            },
            principal_id: Some(&p.access_key_id),
            arn: Some(&p.arn),
            account_id: Some(&p.account),
            access_key_id: Some(&p.access_key_id),
            user_name: Some(p.name()),
            invoked_by: info.invoked_by,
        },
        None => UserIdentity {
            kind: "Unknown",
            principal_id: None,
            arn: None,
            account_id: None,
            access_key_id: info.claimed_access_key_id,
            user_name: None,
            invoked_by: info.invoked_by,
        },
    };
    let ev = Event {
        event_version: "1.08",
        user_identity,
        event_time: iso8601(info.time_ms),
        event_source: info.event_source,
        event_name: info.event_name,
        aws_region: info.region,
        source_ip_address: info.source_ip,
        user_agent: info.user_agent,
        request_parameters: match info.parameters {
            Parameters::Raw(body) => RequestParameters::from_body(body),
            Parameters::Typed(v) => RequestParameters::from_value(v),
        },
        response_elements: None,
        error_code: info.error.map(|(c, _)| c),
        error_message: info.error.map(|(_, m)| m),
        request_id: info.request_id,
        event_id: info.event_id,
        read_only: info.read_only,
        resources: info
            .resources
            .iter()
            .map(|arn| Resource {
                account_id: match arn.split(':').nth(4) {
                    Some(a) if !a.is_empty() => a,
                    // S3 ARNs name no account: the bucket's owner is the recipient.
                    _ => info.principal.map_or("", |p| p.account.as_str()),
                },
                kind: resource_kind(arn),
                arn,
            })
            .collect(),
        event_type: "AwsApiCall",
        management_event: true,
        recipient_account_id: info.principal.map(|p| p.account.as_str()),
        event_category: "Management",
        additional_event_data: info.decision.map(|d| Authorization { authorization: d }),
    };
    serde_json::to_vec(&ev).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_parameters_drop_plaintext_and_camel_case_keys() {
        let p = request_parameters(
            br#"{"KeyId":"k","Plaintext":"c2VjcmV0","EncryptionContext":{"a":"b"}}"#,
        );
        assert_eq!(p, json!({"keyId": "k", "encryptionContext": {"a": "b"}}));
        assert_eq!(request_parameters(b"not json"), Value::Null);
    }

    #[test]
    fn event_has_cloudtrail_fields() {
        let p = Principal {
            arn: "arn:aws:iam::111122223333:user/dev".into(),
            account: "111122223333".into(),
            access_key_id: "test".into(),
        };
        let ev: Value = serde_json::from_slice(&event(&CallInfo {
            event_id: "e1",
            event_name: "Encrypt",
            principal: Some(&p),
            claimed_access_key_id: None,
            source_ip: "127.0.0.1",
            user_agent: "ua",
            request_id: "rid",
            parameters: Parameters::Raw(b"{}"),
            error: Some(("NotFoundException", "nope")),
            resources: &["arn:aws:kms:us-east-1:111122223333:key/x".into()],
            decision: Some("allowed kms:Encrypt by key policy"),
            region: "us-east-1",
            time_ms: 0,
            read_only: false,
            event_source: KMS_SOURCE,
            invoked_by: None,
        }))
        .unwrap();
        assert_eq!(ev["eventTime"], "1970-01-01T00:00:00Z");
        assert_eq!(ev["userIdentity"]["userName"], "dev");
        assert_eq!(ev["errorCode"], "NotFoundException");
        assert_eq!(ev["resources"][0]["accountId"], "111122223333");
        assert_eq!(
            ev["additionalEventData"]["authorization"],
            "allowed kms:Encrypt by key policy"
        );
    }
}
