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

    /// The private CA's directory.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
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

/// The root key as the private CA's secret wrapper.
pub struct RootWrapper(pub Arc<dyn RootKey>);

impl keyhold_server::tls::ca::Wrapper for RootWrapper {
    fn wrap(&self, secret: &[u8], label: &str) -> Result<Vec<u8>, String> {
        self.0
            .wrap(secret, label.as_bytes())
            .map_err(|e| e.to_string())
    }

    fn unwrap(&self, wrapped: &[u8], label: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
        self.0
            .unwrap(wrapped, label.as_bytes())
            .map(|s| zeroize::Zeroizing::new(s.expose_secret().to_vec()))
            .map_err(|e| e.to_string())
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
