//! Audit events: one CloudTrail-shaped JSON record per call, allowed or refused.
//!
//! Events go to an [`AuditSink`]. The file sink appends one JSON line per event to
//! `audit/audit.log` in the data dir before the response is sent. The record has room for the
//! tamper evidence (hash chain, signed digests) that a later sink adds around the same events.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use crate::principal::Principal;

/// Where audit events go.
pub trait AuditSink: Send + Sync {
    /// Records one event; an error means the event could not be persisted.
    fn record(&self, event: &Value) -> std::io::Result<()>;
}

/// Appends events as JSON lines to a file.
pub struct FileAuditLog {
    /// The log file.
    path: PathBuf,
    /// The open file, appended to under the lock so lines never interleave.
    file: Mutex<File>,
}

impl FileAuditLog {
    /// Opens (creating) `dir/audit.log` for appending.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("audit.log");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// The file events are written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AuditSink for FileAuditLog {
    fn record(&self, event: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)
    }
}

/// Keeps events in memory (tests).
#[derive(Default)]
pub struct MemoryAuditLog(pub Mutex<Vec<Value>>);

impl AuditSink for MemoryAuditLog {
    fn record(&self, event: &Value) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
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
];

/// CloudTrail's `requestParameters`: the request fields in camelCase, less anything secret.
pub fn request_parameters(body: &[u8]) -> Value {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return Value::Null;
    };
    let mut out = Map::new();
    for (k, v) in obj {
        if REDACTED_FIELDS.contains(&k.as_str()) {
            continue;
        }
        let mut chars = k.chars();
        let camel = match chars.next() {
            Some(c) => c.to_lowercase().chain(chars).collect(),
            None => k,
        };
        out.insert(camel, v);
    }
    Value::Object(out)
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
    /// The raw request body (for requestParameters).
    pub body: &'a [u8],
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
}

fn iso8601(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// Builds the CloudTrail-shaped event.
pub fn event(info: &CallInfo<'_>) -> Value {
    let user_identity = match info.principal {
        Some(p) => json!({
            "type": if p.arn.contains(":role/") { "AssumedRole" } else { "IAMUser" },
            "principalId": p.access_key_id,
            "arn": p.arn,
            "accountId": p.account,
            "accessKeyId": p.access_key_id,
            "userName": p.name(),
        }),
        None => json!({
            "type": "Unknown",
            "accessKeyId": info.claimed_access_key_id,
        }),
    };
    let account = info.principal.map(|p| p.account.as_str());
    let resources: Vec<Value> = info
        .resources
        .iter()
        .map(|arn| {
            json!({
                "accountId": arn.split(':').nth(4).unwrap_or_default(),
                "type": "AWS::KMS::Key",
                "ARN": arn,
            })
        })
        .collect();
    let mut ev = json!({
        "eventVersion": "1.08",
        "userIdentity": user_identity,
        "eventTime": iso8601(info.time_ms),
        "eventSource": "kms.amazonaws.com",
        "eventName": info.event_name,
        "awsRegion": info.region,
        "sourceIPAddress": info.source_ip,
        "userAgent": info.user_agent,
        "requestParameters": request_parameters(info.body),
        "responseElements": Value::Null,
        "requestID": info.request_id,
        "eventID": info.event_id,
        "readOnly": info.read_only,
        "resources": resources,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
    });
    if let Some(obj) = ev.as_object_mut() {
        if let Some((code, message)) = info.error {
            obj.insert("errorCode".into(), json!(code));
            obj.insert("errorMessage".into(), json!(message));
        }
        if let Some(d) = info.decision {
            obj.insert("additionalEventData".into(), json!({ "authorization": d }));
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ev = event(&CallInfo {
            event_id: "e1",
            event_name: "Encrypt",
            principal: Some(&p),
            claimed_access_key_id: None,
            source_ip: "127.0.0.1",
            user_agent: "ua",
            request_id: "rid",
            body: b"{}",
            error: Some(("NotFoundException", "nope")),
            resources: &["arn:aws:kms:us-east-1:111122223333:key/x".into()],
            decision: Some("allowed kms:Encrypt by key policy"),
            region: "us-east-1",
            time_ms: 0,
            read_only: false,
        });
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
