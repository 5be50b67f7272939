//! The tamper-evident audit log.
//!
//! Events are appended to segment files (`segment-000001.jsonl`, ...), one JSON line each.
//! Every line carries `keyholdSeq` (a sequence number over the whole log) and `keyholdPrev`
//! (the SHA-256 of the line before it), so changing, removing, reordering or inserting a line
//! breaks the chain. Digest files (`digest-000001.json`, ...) are written when a segment closes,
//! at least every five minutes while events arrive, and at shutdown: each covers a prefix of a
//! segment (its length and SHA-256, and the last event's hash), names the hash of the previous
//! digest, and is signed with the audit signing key (ECDSA P-384), whose private half is wrapped
//! under the root key. A digest file is its signed payload on the first line and the base64
//! signature on the second.
//!
//! Durability: a call returns once its event has been written to the segment file (group
//! commit: one write covers the events of many concurrent calls). With [`FsyncMode::Always`] the
//! write is also fsynced before any of those calls returns; with [`FsyncMode::Interval`] a
//! background thread fsyncs at least every interval (100 ms by default), so a power loss can
//! lose at most that much of the log. When the log cannot be written, every later call fails
//! until the server is restarted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{self, Context, SHA256};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};
use base64::Engine as _;
use keyhold_hsm::RootKey;

use super::AuditSink;

/// Label the audit signing key is wrapped under.
pub const SIGNING_LABEL: &[u8] = b"keyhold:audit-signing-key";
/// Name of the wrapped signing key in the audit directory.
pub const SIGNING_KEY_FILE: &str = "signing.key.wrapped";
/// Name of the signing key's public half (PEM) in the audit directory.
pub const PUBLIC_KEY_FILE: &str = "signing.pub.pem";

/// When segment writes are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// Before the calls whose events a write covers return.
    Always,
    /// At least this often, by a background thread.
    Interval(Duration),
}

/// Where each new digest is recorded outside the audit files (the store, and so PostgreSQL
/// for several nodes), so that deleting the newest segments with their digests is caught.
pub trait AuditAnchor: Send + Sync {
    /// Records that `node`'s newest digest is number `digest`, whose payload hashes to `hash`.
    fn record(&self, node: &str, digest: u64, hash: &str) -> Result<(), String>;
}

/// An anchor for the options (`Debug` and `Clone`).
#[derive(Clone)]
pub struct Anchor(pub Arc<dyn AuditAnchor>);

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Anchor(..)")
    }
}

impl Anchor {
    /// Records a digest; a failure is logged (the digest file itself is written).
    fn note(&self, node: &str, digest: u64, hash: &str) {
        if let Err(e) = self.0.record(node, digest, hash) {
            tracing::warn!(digest, error = %e, "the audit head could not be recorded in the store");
        }
    }
}

/// The file in the audit directory that names the node whose chain it holds.
pub const NODE_FILE: &str = "node";

/// Settings of the audit log.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// When writes are fsynced.
    pub fsync: FsyncMode,
    /// A segment is closed (and a new one opened) once it holds this many bytes.
    pub segment_max_bytes: u64,
    /// Longest time between digests while events arrive.
    pub digest_interval: Duration,
    /// This node's id, in every event and digest (several nodes each keep their own chain).
    pub node: String,
    /// Where each digest is recorded outside the files.
    pub anchor: Option<Anchor>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncMode::Interval(Duration::from_millis(100)),
            segment_max_bytes: 64 * 1024 * 1024,
            digest_interval: Duration::from_secs(300),
            node: "node-1".into(),
            anchor: None,
        }
    }
}

/// Where the log's bytes go. The file implementation is [`FsSegments`]; tests put a failing
/// one behind it to simulate a full disk.
pub trait SegmentIo: Send {
    /// Starts a new segment file for appending.
    fn open_segment(&mut self, name: &str) -> std::io::Result<()>;
    /// Appends to the current segment.
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes the current segment durable.
    fn sync(&mut self) -> std::io::Result<()>;
    /// Writes a digest file durably (all or nothing).
    fn write_digest(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// Cuts the current segment back to `len` bytes (what a failed append may have left
    /// half-written goes), so writing can resume after a failure.
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        let _ = len;
        Err(std::io::Error::other(
            "this audit file layer cannot recover",
        ))
    }
}

/// Segments and digests as files in a directory.
pub struct FsSegments {
    /// The audit directory.
    dir: PathBuf,
    /// The segment being appended to.
    file: Option<File>,
}

impl FsSegments {
    /// Files in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            file: None,
        }
    }
}

impl SegmentIo for FsSegments {
    fn open_segment(&mut self, name: &str) -> std::io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name))?;
        self.file = Some(f);
        File::open(&self.dir)?.sync_all()
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(std::io::Error::other("no open audit segment")),
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let started = std::time::Instant::now();
        let r = match &self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        };
        metrics::histogram!("keyhold_audit_fsync_seconds").record(started.elapsed().as_secs_f64());
        r
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        match &self.file {
            Some(f) => f.set_len(len),
            None => Ok(()),
        }
    }

    fn write_digest(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()
    }
}

/// The name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("segment-{n:06}.jsonl")
}

/// The name of digest `n`.
pub fn digest_name(n: u64) -> String {
    format!("digest-{n:06}.json")
}

/// Numbers of the files `prefix-NNNNNN.ext` in `dir`, ascending.
pub fn numbered(dir: &Path, prefix: &str, ext: &str) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(ext))
            .and_then(|n| n.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The payload of a digest (the first line of a digest file, which is what is signed).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DigestPayload {
    /// Format version.
    pub digest_version: u32,
    /// This digest's number.
    pub digest: u64,
    /// The segment it covers.
    pub segment: String,
    /// How many bytes of the segment it covers (from the start).
    pub segment_bytes: u64,
    /// SHA-256 of those bytes, hex.
    pub segment_hash: String,
    /// Sequence number of the first event in the segment.
    pub first_seq: u64,
    /// Sequence number of the last event covered.
    pub last_seq: u64,
    /// Hash of the last event covered, hex.
    pub last_event_hash: String,
    /// SHA-256 of the previous digest's payload, hex (absent for the first digest).
    pub previous_digest_hash: Option<String>,
    /// When the digest was made (RFC 3339).
    pub time: String,
    /// Always `ECDSA_SHA_384`.
    pub signature_algorithm: String,
    /// The node whose chain this is.
    #[serde(default)]
    pub node: Option<String>,
    /// True for the digest a clean shutdown writes: nothing may follow it.
    #[serde(default, rename = "final", skip_serializing_if = "std::ops::Not::not")]
    pub final_digest: bool,
    /// Set on the digest a start writes to seal a segment that an unclean stop (a crash,
    /// kill -9, power loss) left without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
}

/// What a start found when it sealed a segment left without a digest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// Bytes of a last, incomplete line that were cut away (an event whose write the stop
    /// interrupted; it was never acknowledged).
    pub torn_bytes: u64,
    /// Bytes of the segment an earlier digest had already signed.
    pub previously_covered: u64,
    /// True when the digest before this one was a clean shutdown's: events written after it
    /// were not written by keyhold, so `audit verify` reports them as tampering.
    pub after_clean_shutdown: bool,
}

/// Signs a digest payload and writes it as digest file `payload.digest`; returns the hash of
/// the payload (the next digest's `previousDigestHash`).
fn write_signed_digest(
    signer: &EcdsaKeyPair,
    io: &mut dyn SegmentIo,
    payload: &DigestPayload,
) -> std::io::Result<String> {
    let bytes = serde_json::to_vec(payload)?;
    let sig = signer
        .sign(&aws_lc_rs::rand::SystemRandom::new(), &bytes)
        .map_err(|_| std::io::Error::other("cannot sign the audit digest"))?;
    let mut file = bytes.clone();
    file.push(b'\n');
    file.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(sig.as_ref())
            .as_bytes(),
    );
    file.push(b'\n');
    io.write_digest(&digest_name(payload.digest), &file)?;
    Ok(sha256_hex(&bytes))
}

/// Seals the newest segment of an earlier run when that run stopped without its shutdown
/// digest: cuts a torn last line away and signs a recovery digest over the rest. Returns the
/// new digest's number and hash, or `None` when the log was closed cleanly.
fn seal_after_unclean_stop(
    dir: &Path,
    signer: &EcdsaKeyPair,
    node: &str,
    segments: &[u64],
    last: Option<(u64, Option<String>, Option<DigestPayload>)>,
) -> std::io::Result<Option<(u64, String)>> {
    // The newest segment holding bytes (a run may have opened an empty one and stopped).
    let mut newest = None;
    for n in segments.iter().rev() {
        if std::fs::metadata(dir.join(segment_name(*n)))?.len() > 0 {
            newest = Some(*n);
            break;
        }
    }
    let Some(n) = newest else {
        return Ok(None);
    };
    let name = segment_name(n);
    let path = dir.join(&name);
    let (last_number, last_hash, last_payload) = last.unwrap_or((0, None, None));
    let covered = last_payload
        .as_ref()
        .filter(|d| d.segment == name)
        .map_or(0, |d| d.segment_bytes);
    let mut bytes = Vec::new();
    File::open(&path)?.read_to_end(&mut bytes)?;
    let len = bytes.len() as u64;
    if len <= covered {
        return Ok(None);
    }
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let torn = bytes.len() - whole;
    if torn > 0 {
        OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(whole as u64)?;
        bytes.truncate(whole);
        tracing::warn!(segment = %name, torn, "cut an incomplete audit event left by an unclean stop");
    }
    let lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let seq_of = |line: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("keyholdSeq").and_then(serde_json::Value::as_u64))
            .unwrap_or(0)
    };
    let (first_seq, last_seq, last_event_hash) = match (lines.first(), lines.last()) {
        (Some(f), Some(l)) => (seq_of(f), seq_of(l), sha256_hex(l)),
        _ => (0, 0, String::new()),
    };
    let payload = DigestPayload {
        digest_version: 1,
        digest: last_number + 1,
        segment: name.clone(),
        segment_bytes: whole as u64,
        segment_hash: sha256_hex(&bytes),
        first_seq,
        last_seq,
        last_event_hash,
        previous_digest_hash: last_hash,
        time: super::iso8601(crate::clock::Clock::now_ms(&crate::clock::SystemClock)),
        signature_algorithm: "ECDSA_SHA_384".into(),
        node: Some(node.to_string()),
        final_digest: false,
        recovery: Some(Recovery {
            torn_bytes: torn as u64,
            previously_covered: covered,
            after_clean_shutdown: last_payload.is_some_and(|d| d.final_digest),
        }),
    };
    let mut io = FsSegments::new(dir);
    let hash = write_signed_digest(signer, &mut io, &payload)?;
    tracing::warn!(
        segment = %name,
        digest = payload.digest,
        "sealed the audit segment an unclean stop left without a digest"
    );
    Ok(Some((payload.digest, hash)))
}

/// The SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&SHA256, bytes).as_ref())
}

/// Loads (or, the first time, makes) the audit signing key.
fn signing_key(dir: &Path, root: &dyn RootKey) -> std::io::Result<EcdsaKeyPair> {
    let path = dir.join(SIGNING_KEY_FILE);
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    if path.exists() {
        let wrapped = std::fs::read(&path)?;
        let der = root
            .unwrap(&wrapped, SIGNING_LABEL)
            .map_err(|e| invalid(format!("audit signing key: {e}")))?;
        return EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der.expose_secret())
            .map_err(|e| invalid(format!("audit signing key: {e}")));
    }
    let kp = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING)
        .map_err(|_| invalid("cannot generate the audit signing key".into()))?;
    let der = kp
        .to_pkcs8v1()
        .map_err(|_| invalid("cannot encode the audit signing key".into()))?;
    let wrapped = root
        .wrap(der.as_ref(), SIGNING_LABEL)
        .map_err(|e| invalid(format!("audit signing key: {e}")))?;
    FsSegments::new(dir).write_digest(SIGNING_KEY_FILE, &wrapped)?;
    let spki = kp
        .public_key()
        .as_der()
        .map_err(|_| invalid("cannot encode the audit public key".into()))?;
    FsSegments::new(dir).write_digest(PUBLIC_KEY_FILE, public_key_pem(spki.as_ref()).as_bytes())?;
    Ok(kp)
}

/// PEM of a DER SubjectPublicKeyInfo (RFC 7468, LF line endings).
pub fn public_key_pem(spki: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("PUBLIC KEY", spki),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Appends the chain fields to an event object:
/// `{..., "keyholdNode":"id","keyholdSeq":N,"keyholdPrev":"hex"}`.
fn chained_line(event: &[u8], node: &str, seq: u64, prev: &str) -> Vec<u8> {
    let body = event.strip_suffix(b"}").unwrap_or(event);
    let mut line = Vec::with_capacity(event.len() + 100);
    line.extend_from_slice(body);
    if body.len() > 1 {
        line.push(b',');
    }
    line.extend_from_slice(b"\"keyholdNode\":");
    line.extend_from_slice(serde_json::json!(node).to_string().as_bytes());
    line.extend_from_slice(
        format!(",\"keyholdSeq\":{seq},\"keyholdPrev\":\"{prev}\"}}").as_bytes(),
    );
    line
}

/// The chain's state at the end of what has been written.
struct Tail {
    /// Sequence number of the last event.
    seq: u64,
    /// Hash of the last event line, hex.
    hash: String,
}

/// State shared by callers, the writer and the background thread.
struct State {
    /// The files; absent while a writer holds them.
    io: Option<Box<dyn SegmentIo>>,
    /// Lines not yet written.
    buf: Vec<u8>,
    /// Sequence number of the last event added to `buf`.
    last_added: u64,
    /// Sequence number of the last event written.
    last_written: u64,
    /// Hash of the last event added, hex (the next event's `keyholdPrev`).
    prev_hash: String,
    /// Hash of the last event written, hex (where the chain resumes after a failed write).
    written_hash: String,
    /// Written-and-covered state of the current segment.
    segment: SegmentState,
    /// Number of the last digest, and the hash of its payload.
    digest: (u64, Option<String>),
    /// True when writes were made since the last fsync.
    dirty: bool,
    /// When the last digest was written.
    last_digest_at: Instant,
    /// Why the log cannot be written any more.
    broken: Option<String>,
    /// True once closed.
    closed: bool,
}

/// What has been written to the open segment.
struct SegmentState {
    /// Its number.
    number: u64,
    /// Bytes written.
    bytes: u64,
    /// Running SHA-256 of the bytes written.
    hash: Context,
    /// First sequence number in it (0 while empty).
    first_seq: u64,
    /// Last event written to it.
    tail: Option<Tail>,
    /// Bytes covered by the latest digest.
    covered: u64,
}

/// The hash-chained, signed audit log.
pub struct ChainedAuditLog {
    /// The audit directory.
    dir: PathBuf,
    /// Settings.
    options: AuditOptions,
    /// The signing key.
    signer: EcdsaKeyPair,
    /// Shared state.
    state: Mutex<State>,
    /// Signalled when a batch is written (or fails).
    written: Condvar,
}

impl std::fmt::Debug for ChainedAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainedAuditLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Reads the last complete line of a segment: its sequence number and hash.
fn last_line(path: &Path) -> std::io::Result<Option<Tail>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return Ok(None);
    };
    let start = bytes[..end]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let line = &bytes[start..end];
    let seq = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("keyholdSeq").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    Ok(Some(Tail {
        seq,
        hash: sha256_hex(line),
    }))
}

impl ChainedAuditLog {
    /// Opens the log in `dir` with files on disk, continuing the chain of earlier runs in a
    /// new segment.
    pub fn open(
        dir: &Path,
        root: &dyn RootKey,
        options: AuditOptions,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        Self::open_with(dir, root, options, Box::new(FsSegments::new(dir)))
    }

    /// [`ChainedAuditLog::open`] with the given file layer.
    pub fn open_with(
        dir: &Path,
        root: &dyn RootKey,
        options: AuditOptions,
        mut io: Box<dyn SegmentIo>,
    ) -> std::io::Result<Arc<Self>> {
        let signer = signing_key(dir, root)?;
        let segments = numbered(dir, "segment-", ".jsonl")?;
        let digests = numbered(dir, "digest-", ".json")?;
        let last_digest = match digests.last() {
            Some(n) => {
                let text = std::fs::read(dir.join(digest_name(*n)))?;
                let payload = text.split(|b| *b == b'\n').next().unwrap_or_default();
                Some((
                    *n,
                    Some(sha256_hex(payload)),
                    serde_json::from_slice::<DigestPayload>(payload).ok(),
                ))
            }
            None => None,
        };
        // An earlier run that stopped without its shutdown digest: seal what it wrote.
        let sealed =
            seal_after_unclean_stop(dir, &signer, &options.node, &segments, last_digest.clone())?;
        if let (Some((n, hash)), Some(anchor)) = (&sealed, &options.anchor) {
            anchor.note(&options.node, *n, hash);
        }
        std::fs::write(dir.join(NODE_FILE), &options.node)?;
        // The chain continues from the last event of the newest segment that has one (a
        // segment opened just before a shutdown may be empty).
        let mut tail = None;
        for n in segments.iter().rev() {
            if let Some(t) = last_line(&dir.join(segment_name(*n)))? {
                tail = Some(t);
                break;
            }
        }
        let (seq, prev_hash) = tail.map_or((0, String::new()), |t| (t.seq, t.hash));
        let digest = match (sealed, last_digest) {
            (Some((n, hash)), _) => (n, Some(hash)),
            (None, Some((n, hash, _))) => (n, hash),
            (None, None) => (0, None),
        };
        let number = segments.last().map_or(1, |n| n + 1);
        io.open_segment(&segment_name(number))?;
        let log = Arc::new(Self {
            dir: dir.to_path_buf(),
            options: options.clone(),
            signer,
            state: Mutex::new(State {
                io: Some(io),
                buf: Vec::with_capacity(64 * 1024),
                last_added: seq,
                last_written: seq,
                written_hash: prev_hash.clone(),
                prev_hash,
                segment: SegmentState {
                    number,
                    bytes: 0,
                    hash: Context::new(&SHA256),
                    first_seq: 0,
                    tail: None,
                    covered: 0,
                },
                digest,
                dirty: false,
                last_digest_at: Instant::now(),
                broken: None,
                closed: false,
            }),
            written: Condvar::new(),
        });
        let weak = Arc::downgrade(&log);
        let tick = match options.fsync {
            FsyncMode::Interval(d) => d,
            FsyncMode::Always => Duration::from_millis(500),
        };
        std::thread::Builder::new()
            .name("keyhold-audit".into())
            .spawn(move || loop {
                std::thread::sleep(tick);
                let Some(log) = weak.upgrade() else { return };
                if log.background_tick() {
                    return;
                }
            })?;
        Ok(log)
    }

    /// The audit directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a digest covering everything written to the open segment. Called with the files
    /// held by the caller.
    fn write_digest(
        &self,
        st: &mut State,
        io: &mut dyn SegmentIo,
        final_digest: bool,
    ) -> std::io::Result<()> {
        let Some(tail) = &st.segment.tail else {
            return Ok(());
        };
        // A shutdown marks the end with a final digest even when nothing new needs covering.
        if st.segment.covered == st.segment.bytes && !final_digest {
            return Ok(());
        }
        let number = st.digest.0 + 1;
        let payload = DigestPayload {
            digest_version: 1,
            digest: number,
            segment: segment_name(st.segment.number),
            segment_bytes: st.segment.bytes,
            segment_hash: hex::encode(st.segment.hash.clone().finish().as_ref()),
            first_seq: st.segment.first_seq,
            last_seq: tail.seq,
            last_event_hash: tail.hash.clone(),
            previous_digest_hash: st.digest.1.clone(),
            time: super::iso8601(crate::clock::Clock::now_ms(&crate::clock::SystemClock)),
            signature_algorithm: "ECDSA_SHA_384".into(),
            node: Some(self.options.node.clone()),
            final_digest,
            recovery: None,
        };
        io.sync()?;
        let hash = write_signed_digest(&self.signer, io, &payload)?;
        if let Some(anchor) = &self.options.anchor {
            anchor.note(&self.options.node, number, &hash);
        }
        st.digest = (number, Some(hash));
        st.segment.covered = st.segment.bytes;
        st.last_digest_at = Instant::now();
        st.dirty = false;
        Ok(())
    }

    /// Writes the pending batch (and whatever digest or rollover is due). Returns with the
    /// files given back to the state.
    fn write_batch<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let Some(mut io) = st.io.take() else {
            return st;
        };
        let batch = std::mem::replace(&mut st.buf, Vec::with_capacity(64 * 1024));
        let upto = st.last_added;
        // Events accepted but not yet in the segment file.
        metrics::gauge!("keyhold_audit_pending_events")
            .set(upto.saturating_sub(st.last_written) as f64);
        drop(st);
        let mut result = io.append(&batch);
        if result.is_ok() && self.options.fsync == FsyncMode::Always {
            result = io.sync();
        }
        let mut st = self.lock();
        match result {
            Ok(()) => {
                st.segment.hash.update(&batch);
                st.segment.bytes += batch.len() as u64;
                if st.segment.first_seq == 0 {
                    st.segment.first_seq = st.last_written + 1;
                }
                let hash = last_line_hash(&batch);
                st.written_hash.clone_from(&hash);
                st.segment.tail = Some(Tail { seq: upto, hash });
                st.last_written = upto;
                st.dirty = self.options.fsync != FsyncMode::Always;
                let rollover = st.segment.bytes >= self.options.segment_max_bytes;
                let digest_due = st.last_digest_at.elapsed() >= self.options.digest_interval;
                if rollover || digest_due {
                    if let Err(e) = self.write_digest(&mut st, io.as_mut(), false) {
                        st.broken = Some(format!("writing an audit digest failed: {e}"));
                    }
                }
                if rollover && st.broken.is_none() {
                    let next = st.segment.number + 1;
                    match io.open_segment(&segment_name(next)) {
                        Ok(()) => {
                            st.segment = SegmentState {
                                number: next,
                                bytes: 0,
                                hash: Context::new(&SHA256),
                                first_seq: 0,
                                tail: None,
                                covered: 0,
                            };
                        }
                        Err(e) => st.broken = Some(format!("opening an audit segment failed: {e}")),
                    }
                }
            }
            Err(e) => {
                st.broken = Some(format!("writing the audit log failed: {e}"));
            }
        }
        st.io = Some(io);
        self.written.notify_all();
        st
    }

    /// After a failed write: cuts the segment back to what was written whole and, when that
    /// and an fsync succeed, lets events in again. The events refused meanwhile were never
    /// acknowledged, so the chain resumes from the last event written.
    fn try_recover(&self, st: &mut State) {
        let Some(mut io) = st.io.take() else {
            return;
        };
        let result = io.truncate(st.segment.bytes).and_then(|()| io.sync());
        st.io = Some(io);
        if result.is_ok() {
            st.buf.clear();
            st.last_added = st.last_written;
            st.prev_hash.clone_from(&st.written_hash);
            if let Some(was) = st.broken.take() {
                tracing::warn!(%was, "the audit log can be written again; requests are served");
            }
        }
    }

    /// Periodic work: fsync in interval mode, digests every interval, recovery after a
    /// failed write. Returns true once closed.
    fn background_tick(&self) -> bool {
        let mut st = self.lock();
        if st.closed {
            return true;
        }
        if st.broken.is_some() {
            self.try_recover(&mut st);
            self.written.notify_all();
            return false;
        }
        let digest_due = st.last_digest_at.elapsed() >= self.options.digest_interval
            && st.segment.covered < st.segment.bytes;
        if !st.dirty && !digest_due {
            return false;
        }
        let Some(mut io) = st.io.take() else {
            return false;
        };
        let result = if digest_due {
            self.write_digest(&mut st, io.as_mut(), false)
        } else {
            io.sync().map(|()| st.dirty = false)
        };
        if let Err(e) = result {
            st.broken = Some(format!("syncing the audit log failed: {e}"));
        }
        st.io = Some(io);
        self.written.notify_all();
        false
    }
}

/// The hash of the last line of a batch of newline-terminated lines.
fn last_line_hash(batch: &[u8]) -> String {
    let end = batch.len().saturating_sub(1);
    let body = batch.get(..end).unwrap_or_default();
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    sha256_hex(body.get(start..).unwrap_or_default())
}

impl AuditSink for ChainedAuditLog {
    fn record(&self, event: &[u8]) -> std::io::Result<()> {
        let mut st = self.lock();
        if let Some(why) = &st.broken {
            return Err(std::io::Error::other(why.clone()));
        }
        if st.closed {
            return Err(std::io::Error::other("the audit log is closed"));
        }
        st.last_added += 1;
        let seq = st.last_added;
        let line = chained_line(event, &self.options.node, seq, &st.prev_hash);
        st.prev_hash = sha256_hex(&line);
        st.buf.extend_from_slice(&line);
        st.buf.push(b'\n');
        loop {
            if st.last_written >= seq {
                return Ok(());
            }
            if let Some(why) = &st.broken {
                return Err(std::io::Error::other(why.clone()));
            }
            if st.io.is_some() {
                st = self.write_batch(st);
                continue;
            }
            st = self.written.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn failure(&self) -> Option<String> {
        self.lock().broken.clone()
    }

    fn close(&self) -> std::io::Result<()> {
        let mut st = self.lock();
        while st.io.is_none() {
            st = self.written.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if !st.buf.is_empty() {
            st = self.write_batch(st);
        }
        let Some(mut io) = st.io.take() else {
            return Ok(());
        };
        let result = self.write_digest(&mut st, io.as_mut(), true);
        st.io = Some(io);
        st.closed = true;
        self.written.notify_all();
        result
    }
}
