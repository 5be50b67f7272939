//! Checking a chained audit log offline, with the audit public key only.
//!
//! For every segment the report says it is valid, or exactly what is wrong: which line breaks
//! the hash chain (an event changed, removed, reordered or inserted), which bytes a signed
//! digest no longer matches (edited or truncated), which events no digest covers (appended),
//! and which digest files are missing or forged.

use std::collections::BTreeMap;
use std::path::Path;

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_ASN1};
use base64::Engine as _;

use super::chain::{digest_name, numbered, segment_name, sha256_hex, DigestPayload};

/// What was found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// File name.
    pub name: String,
    /// Complete event lines.
    pub events: u64,
    /// First and last sequence numbers seen.
    pub seq: Option<(u64, u64)>,
    /// Everything wrong with it (empty when valid).
    pub problems: Vec<String>,
}

/// The verdict on a whole log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Per segment, in order.
    pub segments: Vec<SegmentReport>,
    /// Problems of the digest files themselves.
    pub digest_problems: Vec<String>,
    /// Segments sealed at a start after an unclean stop (a crash): not tampering.
    pub recoveries: Vec<String>,
    /// Events a running server has written but not yet sealed with a digest.
    pub pending: Option<String>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn is_valid(&self) -> bool {
        self.digest_problems.is_empty() && self.segments.iter().all(|s| s.problems.is_empty())
    }
}

/// Decodes a PEM (or DER) public key to DER (empty when the PEM cannot be read: nothing then
/// verifies).
pub fn public_key_der(pem_or_der: &[u8]) -> Vec<u8> {
    if !pem_or_der.starts_with(b"-----BEGIN") && !pem_or_der.windows(10).any(|w| w == b"-----BEGIN")
    {
        return pem_or_der.to_vec();
    }
    pem::parse(pem_or_der)
        .map(|p| p.into_contents())
        .unwrap_or_default()
}

/// The event time of a line, if it has one (RFC 3339, second precision).
fn event_time(line: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    v.get("eventTime")?.as_str().map(str::to_string)
}

/// Verifies the log in `dir`. `from`/`to` (RFC 3339 times) limit the report to segments with
/// events in that range; the chain is still checked across all of them.
pub fn verify(
    dir: &Path,
    public_key: &[u8],
    from: Option<&str>,
    to: Option<&str>,
) -> std::io::Result<Report> {
    verify_with(dir, public_key, from, to, false)
}

/// [`verify`], for a log a server may be writing right now when `live`: the events of the
/// newest segment that no digest covers yet are reported as pending, not as tampering.
pub fn verify_with(
    dir: &Path,
    public_key: &[u8],
    from: Option<&str>,
    to: Option<&str>,
    live: bool,
) -> std::io::Result<Report> {
    let key = UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, public_key_der(public_key));
    let mut report = Report::default();

    // Digests: signatures and their own chain.
    let mut coverage: BTreeMap<String, Vec<(u64, DigestPayload)>> = BTreeMap::new();
    let digests = numbered(dir, "digest-", ".json")?;
    let mut prev: Option<(u64, String)> = None;
    if let Some(first) = digests.first() {
        if *first != 1 {
            report
                .digest_problems
                .push(format!("digests 1 to {} are missing", first - 1));
        }
    }
    for n in digests {
        let name = digest_name(n);
        let text = std::fs::read(dir.join(&name))?;
        let mut parts = text.split(|b| *b == b'\n');
        let payload = parts.next().unwrap_or_default();
        let sig = parts.next().unwrap_or_default();
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap_or_default();
        if key.verify(payload, &sig).is_err() {
            report.digest_problems.push(format!(
                "{name}: the signature does not verify (the digest was edited or forged)"
            ));
            continue;
        }
        let Ok(p) = serde_json::from_slice::<DigestPayload>(payload) else {
            report.digest_problems.push(format!("{name}: not a digest"));
            continue;
        };
        if let Some((pn, ph)) = &prev {
            if n != pn + 1 {
                report.digest_problems.push(format!(
                    "{} to {} are missing (the digest chain is broken)",
                    digest_name(pn + 1),
                    digest_name(n - 1)
                ));
            } else if p.previous_digest_hash.as_deref() != Some(ph.as_str()) {
                report.digest_problems.push(format!(
                    "{name}: does not follow {} (a digest was replaced)",
                    digest_name(*pn)
                ));
            }
        }
        prev = Some((n, sha256_hex(payload)));
        if let Some(r) = &p.recovery {
            if r.after_clean_shutdown {
                report.digest_problems.push(format!(
                    "{name}: {} holds events written after the clean shutdown that sealed the \
                     log (added by hand)",
                    p.segment
                ));
            } else {
                report.recoveries.push(format!(
                    "{name} sealed {} at a start after an unclean stop (crash or kill){}",
                    p.segment,
                    if r.torn_bytes > 0 {
                        format!(
                            "; an incomplete last event ({} bytes, never acknowledged) was cut",
                            r.torn_bytes
                        )
                    } else {
                        String::new()
                    }
                ));
            }
        }
        coverage.entry(p.segment.clone()).or_default().push((n, p));
    }

    // Segments: the event chain, and what the digests say about them.
    let segments = numbered(dir, "segment-", ".jsonl")?;
    let newest = segments.last().copied();
    for name in coverage.keys() {
        if !segments.iter().any(|n| segment_name(*n) == *name) {
            report
                .digest_problems
                .push(format!("{name}, signed by a digest, is missing"));
        }
    }
    let mut prev_hash = String::new();
    let mut expected_seq: Option<u64> = None;
    for n in segments {
        let name = segment_name(n);
        let bytes = std::fs::read(dir.join(&name))?;
        let mut seg = SegmentReport {
            name: name.clone(),
            events: 0,
            seq: None,
            problems: Vec::new(),
        };
        let mut offset = 0usize;
        let mut line_no = 0u64;
        // Byte offset after each complete line -> (seq, hash of that line).
        let mut ends: BTreeMap<u64, (u64, String)> = BTreeMap::new();
        let mut times: (Option<String>, Option<String>) = (None, None);
        while offset < bytes.len() {
            let Some(rel) = bytes[offset..].iter().position(|b| *b == b'\n') else {
                // A running server may be in the middle of writing its newest segment.
                if !(live && Some(n) == newest) {
                    seg.problems.push(format!(
                        "ends with an incomplete line at byte {offset} (truncated or appended)"
                    ));
                }
                break;
            };
            let line = &bytes[offset..offset + rel];
            line_no += 1;
            let hash = sha256_hex(line);
            let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
            let seq = v.get("keyholdSeq").and_then(serde_json::Value::as_u64);
            let prev = v.get("keyholdPrev").and_then(serde_json::Value::as_str);
            match (seq, prev) {
                (Some(seq), Some(p)) => {
                    if let Some(exp) = expected_seq {
                        if seq != exp {
                            seg.problems.push(format!(
                                "line {line_no}: event {seq} where {exp} was expected (events \
                                 removed, reordered or added)"
                            ));
                        }
                    } else if seq != 1 {
                        seg.problems.push(format!(
                            "line {line_no}: the log starts at event {seq}: events 1 to {} are \
                             missing",
                            seq - 1
                        ));
                    }
                    if p != prev_hash {
                        seg.problems.push(format!(
                            "line {line_no} (event {seq}): the hash chain is broken: this event \
                             or the one before it was changed, removed or reordered"
                        ));
                    }
                    expected_seq = Some(seq + 1);
                    seg.seq = Some(match seg.seq {
                        Some((a, _)) => (a, seq),
                        None => (seq, seq),
                    });
                    ends.insert((offset + rel + 1) as u64, (seq, hash.clone()));
                }
                _ => seg.problems.push(format!(
                    "line {line_no}: not a chained audit event (edited or added by hand)"
                )),
            }
            if let Some(t) = event_time(line) {
                if times.0.is_none() {
                    times.0 = Some(t.clone());
                }
                times.1 = Some(t);
            }
            prev_hash = hash;
            seg.events += 1;
            offset += rel + 1;
        }
        let mut covered = 0u64;
        for (dn, d) in coverage.get(&name).map(Vec::as_slice).unwrap_or_default() {
            let dname = digest_name(*dn);
            if (bytes.len() as u64) < d.segment_bytes {
                seg.problems.push(format!(
                    "truncated: {dname} signed {} bytes, the file has {}",
                    d.segment_bytes,
                    bytes.len()
                ));
                continue;
            }
            let prefix = &bytes[..d.segment_bytes as usize];
            if sha256_hex(prefix) != d.segment_hash {
                seg.problems.push(format!(
                    "bytes 0 to {} no longer match what {dname} signed (events were changed)",
                    d.segment_bytes
                ));
                continue;
            }
            match ends.get(&d.segment_bytes) {
                Some((seq, hash)) if *seq == d.last_seq && *hash == d.last_event_hash => {}
                _ => seg.problems.push(format!(
                    "{dname} names event {} as the last it covers, which this segment does not \
                     hold there",
                    d.last_seq
                )),
            }
            covered = covered.max(d.segment_bytes);
        }
        if (covered as usize) < bytes.len() {
            let uncovered: Vec<u64> = ends
                .range(covered + 1..)
                .map(|(_, (seq, _))| *seq)
                .collect();
            let what = match (uncovered.first(), uncovered.last()) {
                (Some(a), Some(b)) => format!("events {a} to {b}"),
                _ => "its last bytes".to_string(),
            };
            if live && Some(n) == newest {
                report.pending = Some(format!(
                    "{name}: {what} (after byte {covered}) are written by the running server and \
                     not yet sealed by a digest"
                ));
            } else {
                seg.problems.push(format!(
                    "{what} (after byte {covered}) are not covered by any signed digest: added \
                     by hand (a server that stops, even by a crash, seals its log at the next \
                     start)"
                ));
            }
        }
        let in_range = match (&times.0, &times.1) {
            (Some(first), Some(last)) => {
                from.is_none_or(|f| last.as_str() >= f) && to.is_none_or(|t| first.as_str() <= t)
            }
            _ => true,
        };
        if in_range {
            report.segments.push(seg);
        }
    }
    Ok(report)
}

/// The node whose chain the audit directory holds: the one its newest digest names, else the
/// one recorded at its last start, else the default `node-1`.
pub fn chain_node(dir: &Path) -> std::io::Result<String> {
    if let Some(n) = numbered(dir, "digest-", ".json")?.last() {
        let text = std::fs::read(dir.join(digest_name(*n)))?;
        let payload = text.split(|b| *b == b'\n').next().unwrap_or_default();
        if let Some(node) = serde_json::from_slice::<DigestPayload>(payload)
            .ok()
            .and_then(|d| d.node)
        {
            return Ok(node);
        }
    }
    match std::fs::read_to_string(dir.join(super::chain::NODE_FILE)) {
        Ok(node) if !node.trim().is_empty() => Ok(node.trim().to_string()),
        _ => Ok("node-1".to_string()),
    }
}

/// Checks the audit files reach the head recorded outside them (digest `number` whose payload
/// hashes to `hash`): problems when the files end before it, or its digest was replaced.
pub fn check_head(dir: &Path, number: u64, hash: &str) -> std::io::Result<Vec<String>> {
    let digests = numbered(dir, "digest-", ".json")?;
    let newest = digests.last().copied().unwrap_or(0);
    if newest < number {
        return Ok(vec![format!(
            "the files end at digest {newest}, but the store recorded {} as the newest: the \
             newest segments and digests were deleted",
            digest_name(number)
        )]);
    }
    let text = std::fs::read(dir.join(digest_name(number)));
    let found = match text {
        Ok(text) => sha256_hex(text.split(|b| *b == b'\n').next().unwrap_or_default()) == hash,
        Err(_) => false,
    };
    if found {
        Ok(Vec::new())
    } else {
        Ok(vec![format!(
            "{} is not the digest the store recorded as the head (replaced or deleted)",
            digest_name(number)
        )])
    }
}

/// A filter for `keyhold audit query`.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Events at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Events at or before this time (RFC 3339).
    pub to: Option<String>,
    /// Events that touched this key (key id or ARN).
    pub key: Option<String>,
    /// Events by this principal (its ARN or access key id).
    pub principal: Option<String>,
    /// Events of this operation.
    pub event_name: Option<String>,
    /// Events that failed with this error code.
    pub error_code: Option<String>,
    /// Events from this client address.
    pub source_ip: Option<String>,
}

impl Query {
    fn matches(&self, v: &serde_json::Value) -> bool {
        let s = |p: &str| v.pointer(p).and_then(serde_json::Value::as_str);
        let time = s("/eventTime").unwrap_or_default();
        self.from.as_deref().is_none_or(|f| time >= f)
            && self.to.as_deref().is_none_or(|t| time <= t)
            && self
                .event_name
                .as_deref()
                .is_none_or(|n| s("/eventName") == Some(n))
            && self
                .error_code
                .as_deref()
                .is_none_or(|c| s("/errorCode") == Some(c))
            && self
                .source_ip
                .as_deref()
                .is_none_or(|ip| s("/sourceIPAddress") == Some(ip))
            && self.principal.as_deref().is_none_or(|p| {
                s("/userIdentity/arn") == Some(p) || s("/userIdentity/accessKeyId") == Some(p)
            })
            && self.key.as_deref().is_none_or(|k| {
                v.get("resources")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|r| {
                        r.iter().any(|e| {
                            e.get("ARN")
                                .and_then(serde_json::Value::as_str)
                                .is_some_and(|arn| arn == k || arn.ends_with(&format!("/{k}")))
                        })
                    })
            })
    }
}

/// Calls `out` with every event line of the log in `dir` that `q` matches, in order.
pub fn query(dir: &Path, q: &Query, mut out: impl FnMut(&[u8])) -> std::io::Result<()> {
    for n in numbered(dir, "segment-", ".jsonl")? {
        let bytes = std::fs::read(dir.join(segment_name(n)))?;
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                if q.matches(&v) {
                    out(line);
                }
            }
        }
    }
    Ok(())
}
