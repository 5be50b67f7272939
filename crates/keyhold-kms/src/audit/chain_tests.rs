//! Tests of the chained log and its verifier: every listed kind of tampering is caught.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyhold_hsm::FileRootKey;

use super::chain::{
    digest_name, segment_name, AuditOptions, ChainedAuditLog, FsSegments, FsyncMode, SegmentIo,
    PUBLIC_KEY_FILE,
};
use super::verify::{query, verify, Query};
use super::AuditSink;

fn options() -> AuditOptions {
    AuditOptions {
        fsync: FsyncMode::Always,
        segment_max_bytes: 2_000,
        digest_interval: Duration::from_secs(3600),
        node: "test-node".into(),
        anchor: None,
    }
}

fn event(i: u32) -> Vec<u8> {
    format!(
        r#"{{"eventTime":"2026-11-23T10:00:{:02}Z","eventName":"Encrypt","userIdentity":{{"arn":"arn:aws:iam::111122223333:user/u{}"}},"resources":[{{"ARN":"arn:aws:kms:us-east-1:111122223333:key/k{}"}}]}}"#,
        i % 60,
        i % 3,
        i % 2
    )
    .into_bytes()
}

/// Writes `n` events through a fresh log and closes it.
fn write_log(dir: &Path, root: &FileRootKey, n: u32) {
    let log = ChainedAuditLog::open(dir, root, options()).unwrap();
    for i in 0..n {
        log.record(&event(i)).unwrap();
    }
    log.close().unwrap();
}

fn check(dir: &Path) -> super::verify::Report {
    let pk = std::fs::read(dir.join(PUBLIC_KEY_FILE)).unwrap();
    verify(dir, &pk, None, None).unwrap()
}

fn problems(dir: &Path) -> String {
    let r = check(dir);
    let mut all = r.digest_problems.clone();
    for s in &r.segments {
        for p in &s.problems {
            all.push(format!("{}: {p}", s.name));
        }
    }
    all.join("\n")
}

fn setup(n: u32) -> (tempfile::TempDir, FileRootKey) {
    let dir = tempfile::tempdir().unwrap();
    let root = FileRootKey::ephemeral().unwrap();
    write_log(dir.path(), &root, n);
    (dir, root)
}

#[test]
fn an_untouched_log_verifies_across_segments_and_restarts() {
    let (dir, root) = setup(40);
    write_log(dir.path(), &root, 5);
    let r = check(dir.path());
    assert!(r.is_valid(), "{}", problems(dir.path()));
    assert!(r.segments.len() > 2, "rolled over into several segments");
    let first = std::fs::read_to_string(dir.path().join(segment_name(1))).unwrap();
    assert!(first
        .lines()
        .all(|l| l.contains("\"keyholdNode\":\"test-node\"")));
    let digest = std::fs::read_to_string(dir.path().join(digest_name(1))).unwrap();
    assert!(digest.contains("\"node\":\"test-node\""));
    let total: u64 = r.segments.iter().map(|s| s.events).sum();
    assert_eq!(total, 45);
}

#[test]
fn an_edited_event_is_caught() {
    let (dir, _) = setup(10);
    let p = dir.path().join(segment_name(1));
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replacen("Encrypt", "Decrypt", 1);
    std::fs::write(&p, text).unwrap();
    let found = problems(dir.path());
    assert!(found.contains("no longer match"), "{found}");
}

#[test]
fn a_removed_or_reordered_event_is_caught() {
    let (dir, _) = setup(6);
    let p = dir.path().join(segment_name(1));
    let lines: Vec<String> = std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut removed = lines.clone();
    removed.remove(2);
    std::fs::write(&p, removed.join("\n") + "\n").unwrap();
    let found = problems(dir.path());
    assert!(
        found.contains("line 3") && found.contains("expected"),
        "{found}"
    );

    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    std::fs::write(&p, swapped.join("\n") + "\n").unwrap();
    let found = problems(dir.path());
    assert!(found.contains("hash chain is broken"), "{found}");
}

#[test]
fn a_truncated_segment_is_caught() {
    let (dir, _) = setup(6);
    let p = dir.path().join(segment_name(1));
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 30]).unwrap();
    let found = problems(dir.path());
    assert!(found.contains("truncated"), "{found}");
}

#[test]
fn a_removed_digest_is_caught() {
    let (dir, _) = setup(40);
    std::fs::remove_file(dir.path().join(digest_name(2))).unwrap();
    let found = problems(dir.path());
    assert!(
        found.contains("digest-000002.json") && found.contains("missing"),
        "{found}"
    );
}

#[test]
fn a_forged_digest_is_caught() {
    let (dir, _) = setup(6);
    let p = dir.path().join(digest_name(1));
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replacen("\"lastSeq\":6", "\"lastSeq\":5", 1);
    std::fs::write(&p, text).unwrap();
    let found = problems(dir.path());
    assert!(found.contains("signature does not verify"), "{found}");
}

#[test]
fn events_or_segments_appended_by_hand_are_caught() {
    let (dir, _) = setup(6);
    let p = dir.path().join(segment_name(1));
    let mut bytes = std::fs::read(&p).unwrap();
    let last = String::from_utf8(bytes.clone())
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    bytes.extend_from_slice(last.as_bytes());
    bytes.push(b'\n');
    std::fs::write(&p, &bytes).unwrap();
    assert!(problems(dir.path()).contains("not covered by any signed digest"));

    let (dir, _) = setup(6);
    std::fs::write(dir.path().join(segment_name(9)), format!("{last}\n")).unwrap();
    let found = problems(dir.path());
    assert!(
        found.contains("segment-000009.jsonl") && found.contains("not covered"),
        "{found}"
    );
}

#[test]
fn a_write_error_fails_closed() {
    struct FullDisk(FsSegments, u32);
    impl SegmentIo for FullDisk {
        fn open_segment(&mut self, name: &str) -> std::io::Result<()> {
            self.0.open_segment(name)
        }
        fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            if self.1 == 0 {
                return Err(std::io::Error::other("No space left on device"));
            }
            self.1 -= 1;
            self.0.append(bytes)
        }
        fn sync(&mut self) -> std::io::Result<()> {
            self.0.sync()
        }
        fn write_digest(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
            self.0.write_digest(name, bytes)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let root = FileRootKey::ephemeral().unwrap();
    let io = Box::new(FullDisk(FsSegments::new(dir.path()), 2));
    let log = ChainedAuditLog::open_with(dir.path(), &root, options(), io).unwrap();
    log.record(&event(1)).unwrap();
    log.record(&event(2)).unwrap();
    let e = log.record(&event(3)).unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    assert!(log.failure().unwrap().contains("No space left"));
    assert!(log.record(&event(4)).is_err(), "stays closed");
}

#[test]
fn the_log_resumes_by_itself_once_it_can_write_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// A disk that fills up: appends then write half their bytes and fail.
    struct FillingDisk(FsSegments, Arc<AtomicBool>);
    impl SegmentIo for FillingDisk {
        fn open_segment(&mut self, name: &str) -> std::io::Result<()> {
            self.0.open_segment(name)
        }
        fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            if self.1.load(Ordering::SeqCst) {
                self.0.append(&bytes[..bytes.len() / 2])?;
                return Err(std::io::Error::other("No space left on device"));
            }
            self.0.append(bytes)
        }
        fn sync(&mut self) -> std::io::Result<()> {
            self.0.sync()
        }
        fn write_digest(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
            self.0.write_digest(name, bytes)
        }
        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            self.0.truncate(len)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let root = FileRootKey::ephemeral().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let opts = AuditOptions {
        fsync: FsyncMode::Interval(Duration::from_millis(20)),
        ..options()
    };
    let io = Box::new(FillingDisk(FsSegments::new(dir.path()), full.clone()));
    let log = ChainedAuditLog::open_with(dir.path(), &root, opts, io).unwrap();
    log.record(&event(1)).unwrap();
    full.store(true, Ordering::SeqCst);
    assert!(log.record(&event(2)).is_err());
    assert!(log.failure().is_some());
    // Space returns: within a few ticks events are taken again, without a restart.
    full.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.failure().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the log never resumed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    log.record(&event(3)).unwrap();
    log.record(&event(4)).unwrap();
    log.close().unwrap();
    // The torn half-line is gone and the chain verifies: events 1, 3 and 4, in sequence.
    assert_eq!(problems(dir.path()), "");
    let mut seqs = Vec::new();
    query(dir.path(), &Query::default(), |line| {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        seqs.push(v["keyholdSeq"].as_u64().unwrap());
    })
    .unwrap();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn concurrent_events_are_all_chained() {
    let dir = tempfile::tempdir().unwrap();
    let root = FileRootKey::ephemeral().unwrap();
    let opts = AuditOptions {
        fsync: FsyncMode::Interval(Duration::from_millis(20)),
        segment_max_bytes: 64 * 1024,
        digest_interval: Duration::from_secs(3600),
        node: "test-node".into(),
        anchor: None,
    };
    let log = ChainedAuditLog::open(dir.path(), &root, opts).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log: Arc<ChainedAuditLog> = log.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    log.record(&event(t * 100 + i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log.close().unwrap();
    let r = check(dir.path());
    assert!(r.is_valid(), "{}", problems(dir.path()));
    assert_eq!(r.segments.iter().map(|s| s.events).sum::<u64>(), 800);
}

#[test]
fn query_filters_events() {
    let (dir, _) = setup(12);
    let mut n = 0;
    let q = Query {
        principal: Some("arn:aws:iam::111122223333:user/u1".into()),
        key: Some("k1".into()),
        ..Query::default()
    };
    query(dir.path(), &q, |_| n += 1).unwrap();
    assert_eq!(n, 2, "i = 1 and 7 of 0..12");
    let mut m = 0;
    let q = Query {
        to: Some("2026-11-23T10:00:03Z".into()),
        ..Query::default()
    };
    query(dir.path(), &q, |_| m += 1).unwrap();
    assert_eq!(m, 4);
}

/// Writes `n` events and stops without closing, as kill -9 does; `torn` bytes of a half-written
/// event are left at the end of the segment.
fn crash_after(dir: &Path, root: &FileRootKey, n: u32, torn: &[u8]) {
    let log = ChainedAuditLog::open(dir, root, options()).unwrap();
    for i in 0..n {
        log.record(&event(i)).unwrap();
    }
    drop(log);
    let newest = super::chain::numbered(dir, "segment-", ".jsonl")
        .unwrap()
        .into_iter()
        .rev()
        .find(|n| std::fs::metadata(dir.join(segment_name(*n))).unwrap().len() > 0)
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(segment_name(newest)))
        .unwrap();
    std::io::Write::write_all(&mut f, torn).unwrap();
}

#[test]
fn a_crash_is_sealed_at_the_next_start_and_verifies_as_a_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let root = FileRootKey::ephemeral().unwrap();
    crash_after(dir.path(), &root, 5, b"{\"eventTime\":\"2026-11-");
    // Before the restart the crashed tail is not sealed.
    assert!(problems(dir.path()).contains("not covered"));
    // Restart, more events, a second crash without a torn line, another restart.
    crash_after(dir.path(), &root, 3, b"");
    write_log(dir.path(), &root, 2);
    let r = check(dir.path());
    assert!(r.is_valid(), "{}", problems(dir.path()));
    assert_eq!(r.recoveries.len(), 2, "{:?}", r.recoveries);
    assert!(r.recoveries[0].contains("cut"), "{:?}", r.recoveries);
    let events: u64 = r.segments.iter().map(|s| s.events).sum();
    assert_eq!(events, 10);
}

#[test]
fn tampering_after_a_crash_is_still_caught() {
    // Cases that are caught on a log that went through crashes and recoveries.
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        let root = FileRootKey::ephemeral().unwrap();
        crash_after(dir.path(), &root, 5, b"{\"torn");
        write_log(dir.path(), &root, 3);
        assert!(check(dir.path()).is_valid());
        dir
    };
    // An edited byte in a sealed segment.
    let dir = fresh();
    let p = dir.path().join(segment_name(1));
    let text = std::fs::read_to_string(&p).unwrap().replacen("u1", "u9", 1);
    std::fs::write(&p, text).unwrap();
    assert!(!check(dir.path()).is_valid());
    // A deleted recovery digest.
    let dir = fresh();
    std::fs::remove_file(dir.path().join(digest_name(1))).unwrap();
    assert!(!check(dir.path()).is_valid());
    // A truncated sealed segment.
    let dir = fresh();
    let p = dir.path().join(segment_name(1));
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert!(!check(dir.path()).is_valid());
}

#[test]
fn events_added_after_a_clean_shutdown_are_caught_even_once_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let root = FileRootKey::ephemeral().unwrap();
    write_log(dir.path(), &root, 4);
    // Someone adds a line to the closed log, then the server starts again.
    let p = dir.path().join(segment_name(1));
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes[..bytes.len() - 1]
        .split(|b| *b == b'\n')
        .next_back()
        .unwrap()
        .to_vec();
    bytes.extend_from_slice(&last);
    bytes.push(b'\n');
    std::fs::write(&p, &bytes).unwrap();
    write_log(dir.path(), &root, 1);
    let r = check(dir.path());
    assert!(
        r.digest_problems
            .iter()
            .any(|p| p.contains("after the clean shutdown")),
        "{r:?}"
    );
}

#[test]
fn a_running_servers_unsealed_tail_is_pending_not_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let root = FileRootKey::ephemeral().unwrap();
    write_log(dir.path(), &root, 3);
    let log = ChainedAuditLog::open(dir.path(), &root, options()).unwrap();
    for i in 0..4 {
        log.record(&event(i)).unwrap();
    }
    let pk = std::fs::read(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
    let live = super::verify::verify_with(dir.path(), &pk, None, None, true).unwrap();
    assert!(live.is_valid(), "{live:?}");
    assert!(
        live.pending.as_deref().unwrap().contains("events 4 to 7"),
        "{live:?}"
    );
    // Without the server running, the same bytes are reported.
    assert!(!check(dir.path()).is_valid());
    log.close().unwrap();
    assert!(check(dir.path()).is_valid());
}
