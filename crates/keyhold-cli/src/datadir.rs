//! The data dir: where a keyhold server keeps its root key, database and audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyhold_hsm::{
    FileRootKey, PassphraseParams, PassphraseRootKey, Pkcs11Config, Pkcs11RootKey, RootKey,
};
use keyhold_store::{PgStore, SqliteStore, Store};

/// An opened data dir: its root key and its store.
pub type Opened = (Arc<dyn RootKey>, Box<dyn Store>);

/// Paths inside a data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory itself.
    pub root: PathBuf,
    /// A PostgreSQL URL when the state lives there instead of `keyhold.db`.
    pub store: Option<String>,
}

impl DataDir {
    /// The data dir at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            store: None,
        }
    }

    /// The same data dir with its state in PostgreSQL at `url` (when given).
    pub fn with_store(mut self, url: Option<String>) -> Self {
        self.store = url.filter(|u| !u.is_empty());
        self
    }

    /// Opens the store: PostgreSQL when configured, else the SQLite file.
    pub(crate) fn open_store(&self) -> Result<Box<dyn Store>, String> {
        match &self.store {
            Some(url) => Ok(Box::new(
                PgStore::open(url).map_err(|e| format!("store {}: {e}", redact(url)))?,
            )),
            None => Ok(Box::new(
                SqliteStore::open(&self.database()).map_err(|e| e.to_string())?,
            )),
        }
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

    /// Which root-key provider the data dir uses, and its (non-secret) parameters.
    pub fn root_config(&self) -> PathBuf {
        self.root.join("root.json")
    }

    /// The private CA's directory.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// True when `keyhold init` has run here.
    pub fn is_initialised(&self) -> bool {
        self.root_key().exists() || self.root_config().exists()
    }

    /// Creates the directory (0700), a new root key of `provider` and the database. Refuses a
    /// dir that is already initialised.
    pub fn initialise_with(
        &self,
        provider: RootProvider,
        hsm: Option<Pkcs11Config>,
    ) -> Result<Opened, String> {
        if self.is_initialised() {
            return Err(format!(
                "{} is already initialised (it has a root key)",
                self.root.display()
            ));
        }
        create_private_dir(&self.root)?;
        self.record_store_kind()?;
        let root = create_root(
            provider,
            hsm,
            NewRootAt {
                key: &self.root_key(),
                config: &self.root_config(),
                flag: "--root-key",
                rotation: false,
            },
        )?;
        let store = self.open_store()?;
        Ok((root, store))
    }

    /// Creates a data dir with a key-file root key.
    pub fn initialise(&self) -> Result<Opened, String> {
        self.initialise_with(RootProvider::File, None)
    }

    /// Opens an initialised data dir.
    pub fn open(&self) -> Result<Opened, String> {
        if !self.is_initialised() {
            return Err(format!(
                "{} is not a keyhold data dir: run `keyhold init --data-dir {}` first",
                self.root.display(),
                self.root.display()
            ));
        }
        self.check_store_kind()?;
        self.open_checked()
    }

    /// Opens a data dir to restore a backup into: its store is the one the flags name (the
    /// restore records it), and its root key must already be there.
    pub fn open_for_restore(&self) -> Result<Opened, String> {
        if !self.is_initialised() {
            return Err(format!(
                "{} has no root key to restore into: create the directory and copy the backed-up \
                 data dir's root key into it (root.key and root.json; or the same passphrase \
                 or HSM key, with its root.json), and its tls/ directory for the same CA; do not \
                 run `keyhold init`, which makes a new root key that cannot open the backup",
                self.root.display()
            ));
        }
        self.record_store_kind()?;
        self.open_checked()
    }

    /// The file that records which store the data dir belongs to.
    fn store_record(&self) -> PathBuf {
        self.root.join("store.json")
    }

    /// The store kind the flags name: `postgres` or `sqlite`.
    fn store_kind(&self) -> &'static str {
        if self.store.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Records the store kind the flags name.
    fn record_store_kind(&self) -> Result<(), String> {
        let text = serde_json::json!({ "store": self.store_kind() }).to_string();
        write_synced(&self.store_record(), text.as_bytes())
    }

    /// Refuses to open a data dir with another store than the one it was made for (a
    /// PostgreSQL data dir started without `--store` would otherwise serve a new, empty
    /// SQLite store). A data dir made before the kind was recorded gets it recorded now.
    pub(crate) fn check_store_kind(&self) -> Result<(), String> {
        let recorded = match std::fs::read(self.store_record()) {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["store"].as_str().map(str::to_string))
                .ok_or_else(|| format!("{}: not a store record", self.store_record().display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.store.is_none() && !self.database().exists() {
                    "postgres".to_string()
                } else {
                    return self.record_store_kind();
                }
            }
            Err(e) => return Err(format!("{}: {e}", self.store_record().display())),
        };
        match (recorded.as_str(), self.store_kind()) {
            (r, want) if r == want => Ok(()),
            ("postgres", _) => Err(format!(
                "{} belongs to a PostgreSQL store: pass --store URL (or set KEYHOLD_STORE); \
                 without it keyhold would serve a new, empty SQLite store",
                self.root.display()
            )),
            _ => Err(format!(
                "{} keeps its state in its own SQLite database (keyhold.db): drop --store (to \
                 move the state to PostgreSQL, back it up and restore it into a new data dir)",
                self.root.display()
            )),
        }
    }

    /// Opens the store and root key, and checks the root opens the store's secrets.
    fn open_checked(&self) -> Result<Opened, String> {
        let store = self.open_store()?;
        crate::rotate::settle(self, store.as_ref())?;
        let root = self.open_root(&self.read_config()?)?;
        // A store shared with a node that rotated the root key: this data dir must adopt it.
        if let Some(p) = store.list_principals().map_err(|e| e.to_string())?.first() {
            let label = keyhold_store::PrincipalRecord::wrap_label(&p.access_key_id);
            if root.unwrap(&p.wrapped_secret, &label).is_err() {
                return Err(format!(
                    "the store's secrets are wrapped under another root key than {}'s (was the \
                     root rotated on another node? run `keyhold admin adopt-root --data-dir {} \
                     --from <that node's data dir>`)",
                    self.root.display(),
                    self.root.display()
                ));
            }
        }
        Ok((root, store))
    }

    /// The root-key provider recorded in the data dir.
    pub(crate) fn read_config(&self) -> Result<RootConfig, String> {
        match std::fs::read(self.root_config()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: {e}", self.root_config().display())),
            // Data dirs made before the provider was recorded use the key file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RootConfig::File),
            Err(e) => Err(format!("{}: {e}", self.root_config().display())),
        }
    }

    /// Takes the data dir's serving lock: one `keyhold serve` per data dir at a time (two
    /// would interleave one audit chain), whatever their flags. Held until the file returned
    /// is dropped.
    pub fn lock_serving(&self) -> Result<std::fs::File, String> {
        self.lock_file("serve.lock", true, || {
            format!(
                "{} is already served by another keyhold process: a data dir is served by one \
                 process at a time (another node needs a data dir of its own)",
                self.root.display()
            )
        })
    }

    /// Takes the data dir's lock: shared for a server, exclusive for a root rotation. Held
    /// until the file returned is dropped.
    pub fn lock(&self, exclusive: bool) -> Result<std::fs::File, String> {
        self.lock_file("keyhold.lock", exclusive, || {
            format!(
                "{} is in use by another keyhold process",
                self.root.display()
            )
        })
    }

    /// Takes the lock of file `name` in the data dir (exclusive or shared) without waiting;
    /// `busy` says why when another process holds it.
    fn lock_file(
        &self,
        name: &str,
        exclusive: bool,
        busy: impl FnOnce() -> String,
    ) -> Result<std::fs::File, String> {
        let path = self.root.join(name);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let taken = if exclusive {
            f.try_lock()
        } else {
            f.try_lock_shared()
        };
        match taken {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => Err(busy()),
            Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Opens the root key that `config` describes (asking for its passphrase or PIN).
    pub(crate) fn open_root(&self, config: &RootConfig) -> Result<Arc<dyn RootKey>, String> {
        self.open_root_with(config, pin, || passphrase(false))
    }

    /// Opens a new root key of a rotation or adoption: its passphrase and PIN come from the
    /// `KEYHOLD_NEW_*` variables (the current PIN when the new one is unset).
    pub(crate) fn open_new_root(&self, config: &RootConfig) -> Result<Arc<dyn RootKey>, String> {
        self.open_root_with(config, new_pin, new_passphrase)
    }

    fn open_root_with(
        &self,
        config: &RootConfig,
        pin: fn() -> Result<zeroize::Zeroizing<String>, String>,
        passphrase: impl FnOnce() -> Result<zeroize::Zeroizing<String>, String>,
    ) -> Result<Arc<dyn RootKey>, String> {
        Ok(match config {
            RootConfig::File => {
                Arc::new(FileRootKey::load(&self.root_key()).map_err(|e| e.to_string())?)
            }
            RootConfig::Pkcs11(config) => Arc::new(
                Pkcs11RootKey::open(config, &pin()?)
                    .map_err(|e| format!("{e}: refusing to start without the HSM root key"))?,
            ),
            RootConfig::Passphrase(params) => {
                let pass = passphrase()?;
                Arc::new(
                    PassphraseRootKey::open(pass.as_bytes(), params).map_err(|e| {
                        format!("{e}: the passphrase does not open {}", self.root.display())
                    })?,
                )
            }
        })
    }
}

/// Root-key providers `keyhold init` can set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RootProvider {
    /// 32 random bytes in `root.key` (mode 0600) beside the data.
    File,
    /// Derived from a passphrase with Argon2id; nothing secret on disk.
    Passphrase,
    /// A non-extractable AES-256 key in an HSM token (PKCS#11).
    Pkcs11,
}

/// The data dir's record of its root-key provider.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub(crate) enum RootConfig {
    /// `root.key`.
    File,
    /// Argon2id parameters.
    Passphrase(PassphraseParams),
    /// The HSM module, token and key label.
    Pkcs11(Pkcs11Config),
}

/// Where `create_root` writes a new root and where its secrets come from.
pub(crate) struct NewRootAt<'a> {
    /// The key file (with `file`).
    pub key: &'a Path,
    /// The settings file.
    pub config: &'a Path,
    /// The option that chose the provider, for messages.
    pub flag: &'a str,
    /// A rotation's new root: its passphrase and PIN come from the `KEYHOLD_NEW_*` variables.
    pub rotation: bool,
}

/// Makes a new root key of `provider` (the key file or the key in the HSM) and writes its
/// settings, durably.
pub(crate) fn create_root(
    provider: RootProvider,
    hsm: Option<Pkcs11Config>,
    at: NewRootAt<'_>,
) -> Result<Arc<dyn RootKey>, String> {
    let (root, config): (Arc<dyn RootKey>, RootConfig) = match provider {
        RootProvider::File => (
            Arc::new(FileRootKey::create(at.key).map_err(|e| e.to_string())?),
            RootConfig::File,
        ),
        RootProvider::Pkcs11 => {
            let config = hsm.ok_or_else(|| format!("{} pkcs11 needs --pkcs11-token", at.flag))?;
            let pin = if at.rotation { new_pin()? } else { pin()? };
            let rk = Pkcs11RootKey::create(&config, &pin).map_err(|e| e.to_string())?;
            (Arc::new(rk), RootConfig::Pkcs11(config))
        }
        RootProvider::Passphrase => {
            let pass = if at.rotation {
                new_passphrase()?
            } else {
                passphrase(true)?
            };
            let (rk, params) =
                PassphraseRootKey::create(pass.as_bytes()).map_err(|e| e.to_string())?;
            (Arc::new(rk), RootConfig::Passphrase(params))
        }
    };
    write_config(at.config, &config)?;
    Ok(root)
}

/// The HSM user PIN: `KEYHOLD_PKCS11_PIN`, else the file named by `KEYHOLD_PKCS11_PIN_FILE`.
fn pin() -> Result<zeroize::Zeroizing<String>, String> {
    secret_from_env("KEYHOLD_PKCS11_PIN")?.ok_or_else(|| {
        "the HSM root key needs its PIN: set KEYHOLD_PKCS11_PIN or KEYHOLD_PKCS11_PIN_FILE".into()
    })
}

/// Writes the root's settings and makes them durable.
fn write_config(path: &Path, config: &RootConfig) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(config).map_err(|e| e.to_string())?;
    write_synced(path, &bytes)
}

/// Writes `bytes` to `path` and syncs the file.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::create(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// A new root's passphrase for a rotation: `KEYHOLD_NEW_PASSPHRASE`, else the file named by
/// `KEYHOLD_NEW_PASSPHRASE_FILE`, else a prompt (twice).
fn new_passphrase() -> Result<zeroize::Zeroizing<String>, String> {
    secret_from_env("KEYHOLD_NEW_PASSPHRASE")?.map_or_else(|| passphrase(true), Ok)
}

/// The PIN of a new root's token: `KEYHOLD_NEW_PKCS11_PIN` (or `_FILE`), else the current PIN.
fn new_pin() -> Result<zeroize::Zeroizing<String>, String> {
    secret_from_env("KEYHOLD_NEW_PKCS11_PIN")?.map_or_else(pin, Ok)
}

/// A secret from the variable `name`, else from the file named by `<name>_FILE`.
fn secret_from_env(name: &str) -> Result<Option<zeroize::Zeroizing<String>>, String> {
    if let Some(p) = std::env::var(name).ok().filter(|p| !p.is_empty()) {
        return Ok(Some(zeroize::Zeroizing::new(p)));
    }
    if let Some(path) = std::env::var(format!("{name}_FILE"))
        .ok()
        .filter(|p| !p.is_empty())
    {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        return Ok(Some(zeroize::Zeroizing::new(
            text.trim_end_matches(['\n', '\r']).to_string(),
        )));
    }
    Ok(None)
}

/// The passphrase: `KEYHOLD_PASSPHRASE`, else the file named by `KEYHOLD_PASSPHRASE_FILE`,
/// else a prompt on the terminal (twice when `new`).
pub(crate) fn passphrase(new: bool) -> Result<zeroize::Zeroizing<String>, String> {
    if let Some(p) = secret_from_env("KEYHOLD_PASSPHRASE")? {
        return Ok(p);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(
            "this data dir's root key needs its passphrase: set KEYHOLD_PASSPHRASE or \
             KEYHOLD_PASSPHRASE_FILE"
                .into(),
        );
    }
    let p = zeroize::Zeroizing::new(
        rpassword::prompt_password("keyhold passphrase: ").map_err(|e| e.to_string())?,
    );
    if new {
        let again = zeroize::Zeroizing::new(
            rpassword::prompt_password("again: ").map_err(|e| e.to_string())?,
        );
        if *again != *p {
            return Err("the passphrases differ".into());
        }
    }
    Ok(p)
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

/// A store URL with any password hidden, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
