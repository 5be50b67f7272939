//! The data dir: where a keyhold server keeps its root key, database and audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyhold_hsm::{FileRootKey, RootKey};
use keyhold_store::SqliteStore;

/// Paths inside a data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory itself.
    pub root: PathBuf,
}

impl DataDir {
    /// The data dir at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root key file.
    pub fn root_key(&self) -> PathBuf {
        self.root.join("root.key")
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.root.join("keyhold.db")
    }

    /// The audit log directory.
    pub fn audit_dir(&self) -> PathBuf {
        self.root.join("audit")
    }

    /// True when `keyhold init` has run here.
    pub fn is_initialised(&self) -> bool {
        self.root_key().exists()
    }

    /// Creates the directory (0700), a new root key and the database. Refuses a dir that is
    /// already initialised.
    pub fn initialise(&self) -> Result<(Arc<dyn RootKey>, SqliteStore), String> {
        if self.is_initialised() {
            return Err(format!(
                "{} is already initialised (it has a root key)",
                self.root.display()
            ));
        }
        create_private_dir(&self.root)?;
        let root = FileRootKey::create(&self.root_key()).map_err(|e| e.to_string())?;
        let store = SqliteStore::open(&self.database()).map_err(|e| e.to_string())?;
        Ok((Arc::new(root), store))
    }

    /// Opens an initialised data dir.
    pub fn open(&self) -> Result<(Arc<dyn RootKey>, SqliteStore), String> {
        if !self.is_initialised() {
            return Err(format!(
                "{} is not a keyhold data dir: run `keyhold init --data-dir {}` first",
                self.root.display(),
                self.root.display()
            ));
        }
        let root = FileRootKey::load(&self.root_key()).map_err(|e| e.to_string())?;
        let store = SqliteStore::open(&self.database()).map_err(|e| e.to_string())?;
        Ok((Arc::new(root), store))
    }
}

fn create_private_dir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
