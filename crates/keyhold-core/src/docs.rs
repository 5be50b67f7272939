//! Small JSON documents kept as files, one directory per kind (`ROOT/<kind>/<id>.json`), each
//! written through a temporary file that is flushed before it is renamed into place and the
//! directory flushed after: a crash leaves the old document or the new one. The records of
//! keyhold's services that live beside the data (volumes, ACME) use it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// True for ids that may name a document: 1 to 128 ASCII letters, digits, `-` and `_`, so an
/// id from a client is never a path.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Writes `bytes` to `path` through a temporary file in the same directory, flushed to disk
/// before the rename, and flushes the directory after it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// Documents under a root directory.
#[derive(Debug)]
pub struct Docs {
    root: PathBuf,
}

impl Docs {
    /// Opens (and makes) the directories of `kinds` under `root`.
    pub fn open(root: &Path, kinds: &[&str]) -> std::io::Result<Self> {
        for kind in kinds {
            std::fs::create_dir_all(root.join(kind))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, kind: &str, id: &str) -> PathBuf {
        self.root.join(kind).join(format!("{id}.json"))
    }

    /// Whether a document exists (never for an invalid id).
    pub fn exists(&self, kind: &str, id: &str) -> bool {
        valid_id(id) && self.path(kind, id).exists()
    }

    /// A document; `None` when it is absent or `id` is not a valid id.
    pub fn get<T: for<'de> Deserialize<'de>>(
        &self,
        kind: &str,
        id: &str,
    ) -> std::io::Result<Option<T>> {
        if !valid_id(id) {
            return Ok(None);
        }
        match std::fs::read(self.path(kind, id)) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(invalid),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a document; an invalid id is refused.
    pub fn put<T: Serialize>(&self, kind: &str, id: &str, value: &T) -> std::io::Result<()> {
        if !valid_id(id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "bad record id",
            ));
        }
        let bytes = serde_json::to_vec_pretty(value).map_err(invalid)?;
        write_atomically(&self.path(kind, id), &bytes)
    }

    /// Removes a document (gone already is fine), then flushes its directory.
    pub fn remove(&self, kind: &str, id: &str) -> std::io::Result<()> {
        if !valid_id(id) {
            return Ok(());
        }
        match std::fs::remove_file(self.path(kind, id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => std::fs::File::open(self.root.join(kind))?.sync_all(),
        }
    }

    /// Every document of a kind, by id.
    pub fn all<T: for<'de> Deserialize<'de>>(&self, kind: &str) -> std::io::Result<Vec<T>> {
        let mut ids: Vec<String> = Vec::new();
        for e in std::fs::read_dir(self.root.join(kind))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json").filter(|n| valid_id(n)) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            if let Some(v) = self.get(kind, &id)? {
                out.push(v);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_and_bad_ids_name_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = Docs::open(dir.path(), &["orders"]).unwrap();
        d.put("orders", "b", &serde_json::json!({"x": 2})).unwrap();
        d.put("orders", "a", &serde_json::json!({"x": 1})).unwrap();
        let back: Option<serde_json::Value> = d.get("orders", "a").unwrap();
        assert_eq!(back, Some(serde_json::json!({"x": 1})));
        let all: Vec<serde_json::Value> = d.all("orders").unwrap();
        assert_eq!(
            all,
            vec![serde_json::json!({"x": 1}), serde_json::json!({"x": 2})]
        );
        let none: Option<serde_json::Value> = d.get("orders", "../eab/x").unwrap();
        assert!(none.is_none());
        assert!(d.put("orders", "../x", &1).is_err());
        assert!(!d.exists("orders", "../orders/a"));
        d.remove("orders", "a").unwrap();
        d.remove("orders", "a").unwrap();
        assert!(!d.exists("orders", "a"));
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
