//! `keyhold admin rotate-root`: re-wraps every stored secret under a new root key.
//!
//! The steps, and why a crash anywhere leaves a data dir that opens with exactly one root:
//! 1. The new root is made beside the old one: `root.json.next` (and `root.key.next` for a
//!    key file). Nothing the server reads has changed.
//! 2. The secrets kept in files (the private CA's keys, the audit signing key) are re-wrapped
//!    into `<file>.next` siblings. Still nothing read has changed.
//! 3. Every wrapped secret in the store (key material, principal secrets) is replaced in ONE
//!    transaction. This is the commit point.
//! 4. The `.next` files are renamed over the old ones, `root.json.next` last.
//!
//! Whenever `root.json.next` exists, opening the data dir first settles the rotation: if the new
//! root unwraps a secret in the store, step 3 committed and step 4 is finished; otherwise the
//! `.next` files are discarded. Both ways are idempotent, so a crash while settling is safe too.
//!
//! Servers keep unwrapped material and credentials in memory, so every server on the store
//! must be stopped while the root rotates (a short, documented pause): a local `serve` holds a
//! lock on the data dir that this command checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyhold_hsm::{FileRootKey, Pkcs11Config, RootKey};
use keyhold_store::{
    CustomKeyStoreRecord, KeyVersionRecord, PrincipalRecord, Store, WrappedChange,
};

use crate::datadir::{create_root, DataDir, NewRootAt, RootConfig, RootProvider};

/// Suffix of the files a rotation in progress writes.
const NEXT: &str = "next";

/// Files of a data dir that hold secrets wrapped under the root key, with their labels.
fn wrapped_files(dir: &DataDir) -> Vec<(PathBuf, &'static [u8])> {
    vec![
        (
            dir.tls_dir().join("ca.key.wrapped"),
            keyhold_server::tls::ca::CA_LABEL.as_bytes(),
        ),
        (
            dir.tls_dir().join("server.key.wrapped"),
            keyhold_server::tls::ca::SERVER_LABEL.as_bytes(),
        ),
        (
            dir.audit_dir()
                .join(keyhold_kms::audit::chain::SIGNING_KEY_FILE),
            keyhold_kms::audit::chain::SIGNING_LABEL,
        ),
    ]
}

/// `path` with `.next` appended.
fn next(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(NEXT);
    PathBuf::from(s)
}

/// Where the new root's settings are, and what it is.
pub struct NewRoot {
    /// The provider.
    pub provider: RootProvider,
    /// The HSM token and key (with `pkcs11`).
    pub hsm: Option<Pkcs11Config>,
}

/// Re-wraps every secret of the data dir under a new root key. Returns how many secrets changed.
pub fn rotate(dir: &DataDir, to: NewRoot) -> Result<usize, String> {
    rotate_until(dir, to, Stop::Never)
}

/// Where a rotation stops early: how the tests stand in for a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Runs to the end.
    Never,
    /// After the new root and the `.next` files are written, before the store changes.
    BeforeStore,
    /// After the store committed, before the `.next` files are renamed.
    AfterStore,
}

fn rotate_until(dir: &DataDir, to: NewRoot, stop: Stop) -> Result<usize, String> {
    let _lock = dir.lock(true).map_err(|e| {
        format!("{e}: stop every keyhold server on this data dir before rotating its root key")
    })?;
    let (old, store) = dir.open()?;
    let old_config = dir.read_config()?;
    // 1. The new root, beside the old.
    if let (RootConfig::Pkcs11(current), Some(config)) = (&old_config, &to.hsm) {
        if to.provider == RootProvider::Pkcs11
            && current.token_label == config.token_label
            && current.key_label == config.key_label
        {
            return Err(format!(
                "the root key is already {:?} in token {:?}: give the new one another \
                 --pkcs11-key-label",
                config.key_label, config.token_label
            ));
        }
    }
    let _ = std::fs::remove_file(next(&dir.root_key()));
    let new = create_root(
        to.provider,
        to.hsm,
        NewRootAt {
            key: &next(&dir.root_key()),
            config: &next(&dir.root_config()),
            flag: "--to",
            rotation: true,
        },
    )?;
    // 2. Secrets kept in files.
    for (path, label) in wrapped_files(dir) {
        let wrapped = match std::fs::read(&path) {
            Ok(w) => w,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let secret = old
            .unwrap(&wrapped, label)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let rewrapped = new
            .wrap(secret.expose_secret(), label)
            .map_err(|e| e.to_string())?;
        crate::datadir::write_synced(&next(&path), &rewrapped)?;
    }
    sync_dirs(dir, true)?;
    // 3. Every secret in the store, in one transaction.
    let snapshot = store.export().map_err(|e| e.to_string())?;
    let mut changes = Vec::with_capacity(snapshot.versions.len() + snapshot.principals.len());
    let bar = crate::progress::items(
        (snapshot.versions.len() + snapshot.principals.len() + snapshot.custom_key_stores.len())
            as u64,
        "rewrapping secrets",
    );
    for v in snapshot.versions.iter().filter(|v| v.has_material()) {
        bar.inc(1);
        let label = KeyVersionRecord::wrap_label(&v.key_id, v.version);
        let secret = old
            .unwrap(&v.wrapped_material, &label)
            .map_err(|e| format!("key {} version {}: {e}", v.key_id, v.version))?;
        changes.push(WrappedChange::KeyMaterial {
            key_id: v.key_id,
            version: v.version,
            old: v.wrapped_material.clone(),
            new: new
                .wrap(secret.expose_secret(), &label)
                .map_err(|e| e.to_string())?,
        });
    }
    for p in &snapshot.principals {
        bar.inc(1);
        let label = PrincipalRecord::wrap_label(&p.access_key_id);
        let secret = old
            .unwrap(&p.wrapped_secret, &label)
            .map_err(|e| format!("principal {}: {e}", p.arn))?;
        changes.push(WrappedChange::PrincipalSecret {
            access_key_id: p.access_key_id.clone(),
            old: p.wrapped_secret.clone(),
            new: new
                .wrap(secret.expose_secret(), &label)
                .map_err(|e| e.to_string())?,
        });
    }
    for c in &snapshot.custom_key_stores {
        bar.inc(1);
        let label = CustomKeyStoreRecord::wrap_label(&c.id);
        let secret = old
            .unwrap(&c.password_wrapped, &label)
            .map_err(|e| format!("custom key store {}: {e}", c.id))?;
        changes.push(WrappedChange::KeyStorePassword {
            id: c.id.clone(),
            old: c.password_wrapped.clone(),
            new: new
                .wrap(secret.expose_secret(), &label)
                .map_err(|e| e.to_string())?,
        });
    }
    bar.finish_and_clear();
    if stop == Stop::BeforeStore {
        return Ok(0);
    }
    if let Err(e) = store.replace_wrapped(&changes) {
        discard(dir);
        return Err(format!("the store was left unchanged: {e}"));
    }
    if stop == Stop::AfterStore {
        return Ok(changes.len());
    }
    // 4. The new root becomes the data dir's.
    finish(dir, to.provider)?;
    Ok(changes.len())
}

/// `keyhold admin adopt-root`: after `rotate-root` ran on one node of a cluster (which
/// re-wrapped the shared store and that node's files), gives another node's data dir the same
/// new root: its own files (CA and server TLS keys, audit signing key) are re-wrapped from its
/// old root to the new one, through the same `.next` files and settling as a rotation, so a
/// crash at any point opens with the new root. Returns how many files were re-wrapped.
pub fn adopt(dir: &DataDir, from: &DataDir) -> Result<usize, String> {
    let _lock = dir.lock(true).map_err(|e| {
        format!("{e}: stop the keyhold server on this data dir before it adopts a new root key")
    })?;
    let old = dir.open_root(&dir.read_config()?)?;
    let new_config = from.read_config()?;
    let new = from.open_new_root(&new_config)?;
    let store = dir.open_store()?;
    if let Some((label, wrapped)) = probe(store.as_ref())? {
        if new.unwrap(&wrapped, &label).is_err() {
            return Err(format!(
                "the root key of {} does not open the store: run `keyhold admin rotate-root` on                  that node first",
                from.root.display()
            ));
        }
    }
    // The new root's settings (and key file) beside the old ones.
    let _ = std::fs::remove_file(next(&dir.root_key()));
    if matches!(new_config, RootConfig::File) {
        let key = std::fs::read(from.root_key())
            .map_err(|e| format!("{}: {e}", from.root_key().display()))?;
        crate::datadir::write_synced(&next(&dir.root_key()), &key)?;
    }
    let mut n = 0;
    for (path, label) in wrapped_files(dir) {
        let wrapped = match std::fs::read(&path) {
            Ok(w) => w,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        // A file already under the new root (an adoption run twice) stays as it is.
        let secret = match old.unwrap(&wrapped, label) {
            Ok(s) => s,
            Err(_) => new
                .unwrap(&wrapped, label)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        };
        let rewrapped = new
            .wrap(secret.expose_secret(), label)
            .map_err(|e| e.to_string())?;
        crate::datadir::write_synced(&next(&path), &rewrapped)?;
        n += 1;
    }
    let config = serde_json::to_vec_pretty(&new_config).map_err(|e| e.to_string())?;
    crate::datadir::write_synced(&next(&dir.root_config()), &config)?;
    sync_dirs(dir, true)?;
    let provider = match new_config {
        RootConfig::File => RootProvider::File,
        RootConfig::Passphrase(_) => RootProvider::Passphrase,
        RootConfig::Pkcs11(_) => RootProvider::Pkcs11,
    };
    finish(dir, provider)?;
    Ok(n)
}

/// Settles a rotation a crash interrupted (see the module docs); a no-op when none was.
pub fn settle(dir: &DataDir, store: &dyn Store) -> Result<(), String> {
    let next_config = next(&dir.root_config());
    let bytes = match std::fs::read(&next_config) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", next_config.display())),
    };
    let Ok(config) = serde_json::from_slice::<RootConfig>(&bytes) else {
        // Step 1 never finished writing the new root's settings: nothing else moved.
        discard(dir);
        return Ok(());
    };
    let new = open_new(dir, &config);
    let provider = match config {
        RootConfig::File => RootProvider::File,
        RootConfig::Passphrase(_) => RootProvider::Passphrase,
        RootConfig::Pkcs11(_) => RootProvider::Pkcs11,
    };
    let Some((label, wrapped)) = probe(store)? else {
        // Nothing is wrapped in the store: either root opens it.
        if new.is_some() {
            return finish(dir, provider);
        }
        discard(dir);
        return Ok(());
    };
    if new.is_some_and(|new| new.unwrap(&wrapped, &label).is_ok()) {
        return finish(dir, provider);
    }
    // The store did not commit, or the new root cannot be opened with the secrets at hand:
    // discard the new root only when the old one is known to open the store.
    let old = dir.open_root(&dir.read_config()?);
    if old.is_ok_and(|old| old.unwrap(&wrapped, &label).is_ok()) {
        discard(dir);
        return Ok(());
    }
    Err(format!(
        "{} holds an interrupted root-key rotation and neither root opens its store with the \
         passphrase or PIN given: give the new root's",
        dir.root.display()
    ))
}

/// The new root of an interrupted rotation, if it can be opened with the secrets at hand.
fn open_new(dir: &DataDir, config: &RootConfig) -> Option<Arc<dyn RootKey>> {
    match config {
        RootConfig::File => {
            // Step 4 may have renamed the key file already.
            let path = next(&dir.root_key());
            let path = if path.exists() { path } else { dir.root_key() };
            Some(Arc::new(FileRootKey::load(&path).ok()?))
        }
        RootConfig::Passphrase(_) | RootConfig::Pkcs11(_) => dir.open_root(config).ok(),
    }
}

/// A wrapped secret's label and its wrapped bytes.
type Labelled = (Vec<u8>, Vec<u8>);

/// One wrapped secret of the store and its label.
fn probe(store: &dyn Store) -> Result<Option<Labelled>, String> {
    let principals = store.list_principals().map_err(|e| e.to_string())?;
    if let Some(p) = principals.first() {
        return Ok(Some((
            PrincipalRecord::wrap_label(&p.access_key_id),
            p.wrapped_secret.clone(),
        )));
    }
    let snapshot = store.export().map_err(|e| e.to_string())?;
    Ok(snapshot
        .versions
        .iter()
        .find(|v| v.has_material())
        .map(|v| {
            (
                KeyVersionRecord::wrap_label(&v.key_id, v.version),
                v.wrapped_material.clone(),
            )
        }))
}

/// Step 4: renames the `.next` files into place, the root's settings last.
fn finish(dir: &DataDir, provider: RootProvider) -> Result<(), String> {
    for path in replaced_files(dir) {
        let from = next(&path);
        if from.exists() {
            std::fs::rename(&from, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if provider != RootProvider::File {
        // The old key file, if the old root was one, opens nothing any more.
        let _ = std::fs::remove_file(dir.root_key());
    }
    sync_dirs(dir, false)?;
    let config = dir.root_config();
    std::fs::rename(next(&config), &config).map_err(|e| format!("{}: {e}", config.display()))?;
    sync_dir(&dir.root)
}

/// Removes every `.next` file of an unfinished rotation.
fn discard(dir: &DataDir) {
    for path in replaced_files(dir) {
        let _ = std::fs::remove_file(next(&path));
    }
    // The settings go last: while they exist, a crash here is settled again on the next open.
    let _ = std::fs::remove_file(next(&dir.root_config()));
    let _ = sync_dir(&dir.root);
}

/// Every file a rotation writes a `.next` sibling of, except the root's settings (which go last).
fn replaced_files(dir: &DataDir) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = wrapped_files(dir).into_iter().map(|(p, _)| p).collect();
    files.push(dir.root_key());
    files
}

/// Syncs the directories holding re-wrapped files (and the data dir itself when `root`), so
/// the creations and renames in them are durable.
fn sync_dirs(dir: &DataDir, root: bool) -> Result<(), String> {
    let mut dirs = vec![dir.tls_dir(), dir.audit_dir()];
    if root {
        dirs.push(dir.root.clone());
    }
    for d in dirs.iter().filter(|d| d.exists()) {
        sync_dir(d)?;
    }
    Ok(())
}

fn sync_dir(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use keyhold_kms::principal::{create_principal, PrincipalKind};

    use super::*;

    /// A data dir with a key-file root and one principal; returns its secret access key.
    fn data_dir() -> (tempfile::TempDir, DataDir, String, String) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("data"));
        let (root, store) = dir.initialise().unwrap();
        let p = create_principal(
            store.as_ref(),
            root.as_ref(),
            "111122223333",
            "alice",
            PrincipalKind::User,
            1,
        )
        .unwrap();
        let secret = p.secret_access_key.expose_secret().to_vec();
        (
            tmp,
            dir,
            p.access_key_id,
            String::from_utf8(secret).unwrap(),
        )
    }

    /// The principal's secret as the data dir's root unwraps it now.
    fn secret_now(dir: &DataDir, access_key_id: &str) -> String {
        let (root, store) = dir.open().unwrap();
        let p = store.get_principal(access_key_id).unwrap().unwrap();
        let s = root
            .unwrap(
                &p.wrapped_secret,
                &PrincipalRecord::wrap_label(access_key_id),
            )
            .unwrap();
        String::from_utf8(s.expose_secret().to_vec()).unwrap()
    }

    fn leftovers(dir: &DataDir) -> Vec<PathBuf> {
        std::fs::read_dir(&dir.root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == NEXT))
            .collect()
    }

    fn to_file() -> NewRoot {
        NewRoot {
            provider: RootProvider::File,
            hsm: None,
        }
    }

    #[test]
    fn a_crash_before_the_store_changed_keeps_the_old_root() {
        let (_tmp, dir, id, secret) = data_dir();
        let old_key = std::fs::read(dir.root_key()).unwrap();
        rotate_until(&dir, to_file(), Stop::BeforeStore).unwrap();
        assert!(!leftovers(&dir).is_empty());
        assert_eq!(secret_now(&dir, &id), secret);
        assert!(leftovers(&dir).is_empty());
        assert_eq!(std::fs::read(dir.root_key()).unwrap(), old_key);
    }

    #[test]
    fn a_crash_after_the_store_committed_finishes_on_the_next_open() {
        let (_tmp, dir, id, secret) = data_dir();
        let old_key = std::fs::read(dir.root_key()).unwrap();
        let new_key = next(&dir.root_key());
        rotate_until(&dir, to_file(), Stop::AfterStore).unwrap();
        let new_bytes = std::fs::read(&new_key).unwrap();
        assert_eq!(secret_now(&dir, &id), secret);
        assert!(leftovers(&dir).is_empty());
        assert_eq!(std::fs::read(dir.root_key()).unwrap(), new_bytes);
        assert_ne!(new_bytes, old_key);
    }

    #[test]
    fn a_rotation_that_runs_through_needs_no_settling() {
        let (_tmp, dir, id, secret) = data_dir();
        assert_eq!(rotate(&dir, to_file()).unwrap(), 1);
        assert!(leftovers(&dir).is_empty());
        assert_eq!(secret_now(&dir, &id), secret);
    }

    #[test]
    fn a_second_process_cannot_take_the_lock_of_a_server() {
        let (_tmp, dir, _, _) = data_dir();
        let held = dir.lock(false).unwrap();
        let e = rotate(&dir, to_file()).err().unwrap();
        assert!(e.contains("stop every keyhold server"), "{e}");
        drop(held);
        rotate(&dir, to_file()).unwrap();
    }
}
