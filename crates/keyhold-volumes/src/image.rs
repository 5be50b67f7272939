//! Volume images: sparse files, formatted as LUKS2 by `cryptsetup` when encrypted, and
//! copied hole-preserving for snapshots.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One GiB.
pub const GIB: u64 = 1 << 30;

/// The `cryptsetup` program: on PATH, else in the sbin directories it lives in.
pub fn cryptsetup() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("cryptsetup"))
        .find(|p| p.is_file())
}

/// Makes an empty (sparse) image of `size` bytes at `path`; fails if it exists.
pub fn create_sparse(path: &Path, size: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.set_len(size)?;
    f.sync_all()
}

/// Formats the image at `path` as LUKS2 with `passphrase` in key slot 0, labelled `label`.
/// The passphrase is a random 256-bit key, so the slot's key derivation is PBKDF2 with few
/// iterations, as Clevis does for its slots.
pub fn luks_format(path: &Path, passphrase: &[u8], label: &str) -> Result<(), String> {
    let program = cryptsetup().ok_or("cryptsetup is not installed on the keyhold server")?;
    let mut child = Command::new(program)
        .args([
            "luksFormat",
            "--type",
            "luks2",
            "--batch-mode",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--label",
            label,
            "--key-file",
            "-",
        ])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cryptsetup: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(passphrase)
            .map_err(|e| format!("cryptsetup: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cryptsetup: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cryptsetup luksFormat failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Copies `from` to a new file `to`, keeping its holes (`cp --sparse=always`, which skips
/// them without reading), and grows it to `size` bytes when that is larger.
pub fn copy_sparse(from: &Path, to: &Path, size: u64) -> std::io::Result<()> {
    if to.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        ));
    }
    let out = Command::new("cp")
        .args([
            "--sparse=always",
            "--reflink=auto",
            "--no-preserve=all",
            "--",
        ])
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        let _ = std::fs::remove_file(to);
        return Err(std::io::Error::other(format!(
            "cp: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let f = std::fs::OpenOptions::new().write(true).open(to)?;
    if f.metadata()?.len() < size {
        f.set_len(size)?;
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    #[test]
    fn a_sparse_copy_has_the_same_bytes_and_can_grow() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        create_sparse(&a, 5 << 20).unwrap();
        {
            let mut f = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
            f.seek(SeekFrom::Start(3 << 20)).unwrap();
            f.write_all(b"data in the middle").unwrap();
        }
        let b = dir.path().join("b");
        copy_sparse(&a, &b, 6 << 20).unwrap();
        let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(y.len(), 6 << 20);
        assert_eq!(&y[..x.len()], &x[..]);
        assert!(y[x.len()..].iter().all(|&b| b == 0));
        assert!(
            copy_sparse(&a, &b, 0).is_err(),
            "an existing file is never replaced"
        );
    }
}
