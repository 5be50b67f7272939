//! `keyhold admin backup` and `keyhold admin restore`: the store streamed to and from a file
//! of JSON lines, so a backup of any size takes a page of rows in memory.
//!
//! The file is a header line (`{"format":"keyhold-backup","version":2}`), one line per row
//! ([`Record`], secrets still wrapped under the root key), and an end line
//! (`{"End":{"records":N}}`) without which a restore refuses the file as truncated. Backups
//! of the earlier single-document format restore too.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use keyhold_hsm::RootKey;
use keyhold_store::{
    CustomKeyStoreRecord, KeyVersionRecord, PrincipalRecord, Record, RecordSink, RecordSource,
    StoreError,
};

use crate::DataDirArg;

const FORMAT: &str = "keyhold-backup";
const VERSION: u32 = 2;

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    format: String,
    version: u32,
}

/// A line after the header: a row, or the end.
#[derive(serde::Serialize, serde::Deserialize)]
enum Line {
    /// The last line: how many rows came before it.
    End { records: u64 },
    #[serde(untagged)]
    Row(Box<Record>),
}

/// How many rows of each kind went by.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    records: u64,
    keys: u64,
    aliases: u64,
    grants: u64,
    principals: u64,
}

impl Counts {
    fn add(&mut self, r: &Record) {
        self.records += 1;
        match r {
            Record::Key(_) => self.keys += 1,
            Record::Alias(_) => self.aliases += 1,
            Record::Grant(_) => self.grants += 1,
            Record::Principal(_) => self.principals += 1,
            _ => {}
        }
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{}: {e}", path.display()))
}

/// Writes rows to the backup's temporary file as the store hands them over.
struct Writer {
    out: BufWriter<File>,
    path: PathBuf,
    counts: Counts,
    bar: ProgressBar,
}

impl Writer {
    fn header(&mut self) -> Result<(), StoreError> {
        let h = Header {
            format: FORMAT.into(),
            version: VERSION,
        };
        serde_json::to_writer(&mut self.out, &h).map_err(|e| io_error(&self.path, e))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| io_error(&self.path, e))
    }
}

impl RecordSink for Writer {
    fn restart(&mut self) -> Result<(), StoreError> {
        self.out.flush().map_err(|e| io_error(&self.path, e))?;
        let f = self.out.get_mut();
        f.set_len(0)
            .and_then(|()| f.rewind())
            .map_err(|e| io_error(&self.path, e))?;
        self.counts = Counts::default();
        self.bar.set_position(0);
        self.header()
    }

    fn put(&mut self, r: Record) -> Result<(), StoreError> {
        self.counts.add(&r);
        serde_json::to_writer(&mut self.out, &Line::Row(Box::new(r)))
            .map_err(|e| io_error(&self.path, e))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| io_error(&self.path, e))?;
        self.bar.inc(1);
        Ok(())
    }
}

/// `keyhold admin backup`.
pub fn backup(dir: &DataDirArg, to: &Path) -> Result<(), String> {
    let (_root, store) = dir.open().open()?;
    let tmp = to.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    let writer = Arc::new(Mutex::new(Writer {
        out: BufWriter::new(file),
        path: tmp.clone(),
        counts: Counts::default(),
        bar: crate::progress::counter("rows backed up"),
    }));
    let done = store.export_to(writer.clone());
    let mut w = writer
        .lock()
        .map_err(|_| "the backup writer failed".to_string())?;
    w.bar.finish_and_clear();
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    let end = Line::End {
        records: w.counts.records,
    };
    let finished = serde_json::to_writer(&mut w.out, &end)
        .map_err(|e| e.to_string())
        .and_then(|()| w.out.write_all(b"\n").map_err(|e| e.to_string()))
        .and_then(|()| w.out.flush().map_err(|e| e.to_string()))
        .and_then(|()| w.out.get_ref().sync_all().map_err(|e| e.to_string()));
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", tmp.display()));
    }
    std::fs::rename(&tmp, to).map_err(|e| format!("{}: {e}", to.display()))?;
    let c = w.counts;
    println!(
        "backed up {} keys, {} aliases, {} grants and {} principals to {}",
        c.keys,
        c.aliases,
        c.grants,
        c.principals,
        to.display()
    );
    Ok(())
}

/// Reads rows from a backup for the store, checking that every wrapped secret opens under
/// this data dir's root key, and that the file is whole.
struct Reader {
    input: BufReader<File>,
    path: PathBuf,
    root: Arc<dyn RootKey>,
    line: u64,
    ended: bool,
    counts: Counts,
    read: u64,
    bar: ProgressBar,
    /// Why the read stopped, in the words the operator sees.
    failure: Option<String>,
}

impl Reader {
    fn fail(&mut self, why: String) -> StoreError {
        self.failure = Some(why.clone());
        StoreError::Backend(why)
    }

    fn read_line(&mut self, buf: &mut String) -> Result<usize, StoreError> {
        buf.clear();
        let n = self
            .input
            .read_line(buf)
            .map_err(|e| io_error(&self.path, e))?;
        self.line += 1;
        self.read += n as u64;
        self.bar.set_position(self.read);
        Ok(n)
    }

    /// Refuses a row whose secret this root key cannot open: restoring it would leave a
    /// server that cannot use the key or credential.
    fn check_opens(&mut self, r: &Record) -> Result<(), StoreError> {
        if !opens(self.root.as_ref(), r) {
            return Err(self.fail(wrong_root()));
        }
        Ok(())
    }
}

/// True when `root` opens the wrapped secret of `r` (rows without one open trivially).
fn opens(root: &dyn RootKey, r: &Record) -> bool {
    let (bytes, label) = match r {
        Record::Version(v) if v.has_material() => (
            &v.wrapped_material,
            KeyVersionRecord::wrap_label(&v.key_id, v.version),
        ),
        Record::Principal(p) => (
            &p.wrapped_secret,
            PrincipalRecord::wrap_label(&p.access_key_id),
        ),
        Record::CustomKeyStore(c) => (&c.password_wrapped, CustomKeyStoreRecord::wrap_label(&c.id)),
        _ => return true,
    };
    root.unwrap(bytes, &label).is_ok()
}

fn wrong_root() -> String {
    "the backup's secrets are wrapped under another root key than this data dir's: give it the \
     root key of the data dir the backup came from (nothing was restored)"
        .into()
}

impl RecordSource for Reader {
    fn rewind(&mut self) -> Result<(), StoreError> {
        self.input.rewind().map_err(|e| io_error(&self.path, e))?;
        self.line = 0;
        self.read = 0;
        self.ended = false;
        self.counts = Counts::default();
        let mut header = String::new();
        self.read_line(&mut header)?;
        Ok(())
    }

    fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
        let mut buf = String::new();
        if self.read_line(&mut buf)? == 0 {
            if !self.ended {
                let why = format!(
                    "{}: the backup ends early, without its end line (truncated?); nothing was \
                     restored",
                    self.path.display()
                );
                return Err(self.fail(why));
            }
            return Ok(None);
        }
        if self.ended {
            let why = format!(
                "{}:{}: data after the backup's end line; nothing was restored",
                self.path.display(),
                self.line
            );
            return Err(self.fail(why));
        }
        match serde_json::from_str::<Line>(buf.trim_end()) {
            Ok(Line::Row(r)) => {
                let r = *r;
                self.check_opens(&r)?;
                self.counts.add(&r);
                Ok(Some(r))
            }
            Ok(Line::End { records }) if records == self.counts.records => {
                self.ended = true;
                self.next_record()
            }
            Ok(Line::End { records }) => {
                let why = format!(
                    "{}: the backup's end line counts {records} rows but {} came before it; \
                     nothing was restored",
                    self.path.display(),
                    self.counts.records
                );
                Err(self.fail(why))
            }
            Err(e) => {
                let why = format!(
                    "{}:{}: not a row of a keyhold backup ({e}); nothing was restored",
                    self.path.display(),
                    self.line
                );
                Err(self.fail(why))
            }
        }
    }
}

fn restore_error(e: StoreError) -> String {
    match e {
        StoreError::NotEmpty => {
            "refusing to restore into a store that already holds keys or principals".to_string()
        }
        other => other.to_string(),
    }
}

/// `keyhold admin restore`.
pub fn restore(dir: &DataDirArg, from: &Path) -> Result<(), String> {
    let file = File::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut input = BufReader::new(file);
    let mut first = String::new();
    input
        .read_line(&mut first)
        .map_err(|e| format!("{}: {e}", from.display()))?;
    let streamed = serde_json::from_str::<Header>(first.trim_end()).ok();
    let (root, store) = dir.open().open_for_restore()?;
    let counts = match streamed {
        Some(h) if h.format == FORMAT && h.version == VERSION => {
            let reader = Arc::new(Mutex::new(Reader {
                input,
                path: from.to_path_buf(),
                root,
                line: 0,
                ended: false,
                counts: Counts::default(),
                read: 0,
                bar: crate::progress::bytes(size, "restoring"),
                failure: None,
            }));
            let done = store.import_from(reader.clone());
            let mut r = reader
                .lock()
                .map_err(|_| "the backup reader failed".to_string())?;
            r.bar.finish_and_clear();
            if let Err(e) = done {
                return Err(r.failure.take().unwrap_or_else(|| restore_error(e)));
            }
            r.counts
        }
        Some(h) => {
            return Err(format!(
                "{}: a {:?} backup of version {}; this keyhold reads {FORMAT} version {VERSION}",
                from.display(),
                h.format,
                h.version
            ))
        }
        None => restore_whole_document(from, root.as_ref(), store.as_ref())?,
    };
    crate::admin::audit_admin(
        store.as_ref(),
        "RestoreBackup",
        serde_json::json!({
            "backup": from.display().to_string(),
            "keys": counts.keys,
            "principals": counts.principals,
        }),
    )?;
    println!(
        "restored {} keys and {} principals from {}",
        counts.keys,
        counts.principals,
        from.display()
    );
    Ok(())
}

/// A backup of the earlier format: one JSON document, read whole.
fn restore_whole_document(
    from: &Path,
    root: &dyn RootKey,
    store: &dyn keyhold_store::Store,
) -> Result<Counts, String> {
    let bytes = std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let snapshot: keyhold_store::Snapshot = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a keyhold backup ({e})", from.display()))?;
    let mut counts = Counts::default();
    for r in snapshot.clone().records() {
        counts.add(&r);
        if !opens(root, &r) {
            return Err(wrong_root());
        }
    }
    store.import(&snapshot).map_err(restore_error)?;
    Ok(counts)
}
