//! Where the encrypted bytes live: the [`ObjectStore`] trait and its local-directory backend.
//!
//! A store holds named pieces of data, each written once: written in full, made durable and
//! only then visible under its name, so a crash never leaves a partial piece visible. It
//! only ever sees ciphertext.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writes one piece of data; dropped without [`DataWriter::commit`], nothing is visible.
#[async_trait::async_trait]
pub trait DataWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the data durable and visible under its name.
    async fn commit(self: Box<Self>) -> io::Result<()>;
}

/// Reads one piece of data at any offset.
#[async_trait::async_trait]
pub trait DataReader: Send + Sync {
    /// The stored length.
    fn len(&self) -> u64;
    /// True when nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; an error when the data ends before `buf` is full.
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Reads like [`DataReader::read_at`], then runs `then` on the bytes (decryption): a
    /// store that reads on a blocking thread runs `then` there too, off the async threads.
    async fn read_at_then(
        &self,
        offset: u64,
        len: usize,
        then: Box<dyn FnOnce(Vec<u8>) -> io::Result<bytes::Bytes> + Send>,
    ) -> io::Result<bytes::Bytes> {
        then(self.read_at(offset, len).await?)
    }
}

/// Named pieces of ciphertext.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Starts writing the piece `name`.
    async fn create(&self, name: &str) -> io::Result<Box<dyn DataWriter>>;
    /// Opens the piece `name` (`NotFound` when there is none).
    async fn open(&self, name: &str) -> io::Result<Arc<dyn DataReader>>;
    /// Deletes the piece `name` (nothing when there is none).
    async fn delete(&self, name: &str) -> io::Result<()>;
}

/// The embedded default: pieces as files under one directory (`DATA_DIR/objects`), written
/// to `tmp/`, fsynced, then renamed into `data/xx/` and the directory fsynced.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
}

/// Names are data ids: 32 lower-case hex digits.
pub(crate) fn checked(name: &str) -> io::Result<&str> {
    if name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad data name {name:?}"),
        ))
    }
}

impl LocalDir {
    /// Opens (making when needed) the store at `root`, and removes what unfinished writes
    /// left in `tmp/`.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("data"))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        let name = checked(name)?;
        Ok(self.root.join("data").join(&name[..2]).join(name))
    }
}

/// A file written under a temporary name; removed when dropped, unless it was moved away
/// ([`TempFile::moved`]).
pub(crate) struct TempFile {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    moved: bool,
}

impl TempFile {
    /// Creates the file at `path`.
    pub(crate) async fn create(path: PathBuf) -> io::Result<Self> {
        let file = tokio::fs::File::create(&path).await?;
        Ok(Self {
            file: Some(file),
            path,
            moved: false,
        })
    }

    /// Appends bytes.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        match &mut self.file {
            Some(f) => f.write_all(bytes).await,
            None => Err(io::Error::other("temporary file already closed")),
        }
    }

    /// Flushes (and with `sync`, fsyncs) what was written and closes the file; it stays at
    /// [`TempFile::path`].
    pub(crate) async fn close(&mut self, sync: bool) -> io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("temporary file already closed"));
        };
        file.flush().await?;
        if sync {
            file.sync_all().await?;
        }
        Ok(())
    }

    /// Where the file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed elsewhere: nothing is left to remove.
    pub(crate) fn moved(mut self) {
        self.moved = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.moved {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct LocalWriter {
    tmp: TempFile,
    dest: PathBuf,
}

#[async_trait::async_trait]
impl DataWriter for LocalWriter {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tmp.write(bytes).await
    }

    async fn commit(mut self: Box<Self>) -> io::Result<()> {
        self.tmp.close(true).await?;
        let dir = self
            .dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::rename(self.tmp.path(), &self.dest).await?;
        let LocalWriter { tmp, .. } = *self;
        tmp.moved();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .map_err(io::Error::other)?
    }
}

struct LocalReader {
    file: Arc<std::fs::File>,
    len: u64,
}

#[async_trait::async_trait]
impl DataReader for LocalReader {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || read_exact_at(&file, offset, len))
            .await
            .map_err(io::Error::other)?
    }

    async fn read_at_then(
        &self,
        offset: u64,
        len: usize,
        then: Box<dyn FnOnce(Vec<u8>) -> io::Result<bytes::Bytes> + Send>,
    ) -> io::Result<bytes::Bytes> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || then(read_exact_at(&file, offset, len)?))
            .await
            .map_err(io::Error::other)?
    }
}

/// `len` bytes of `file` from `offset` (blocking).
fn read_exact_at(file: &std::fs::File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

#[async_trait::async_trait]
impl ObjectStore for LocalDir {
    async fn create(&self, name: &str) -> io::Result<Box<dyn DataWriter>> {
        let dest = self.path(name)?;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{name}.{}", uuid::Uuid::new_v4().simple()));
        Ok(Box::new(LocalWriter {
            tmp: TempFile::create(tmp).await?,
            dest,
        }))
    }

    async fn open(&self, name: &str) -> io::Result<Arc<dyn DataReader>> {
        let path = self.path(name)?;
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(path)?;
            let len = file.metadata()?.len();
            Ok(Arc::new(LocalReader {
                file: Arc::new(file),
                len,
            }) as Arc<dyn DataReader>)
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn delete(&self, name: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(name)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_is_visible_only_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::open(dir.path()).unwrap();
        let name = "00112233445566778899aabbccddeeff";
        let mut w = store.create(name).await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        assert_eq!(
            store.open(name).await.err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        w.commit().await.unwrap();
        let r = store.open(name).await.unwrap();
        assert_eq!(r.len(), 11);
        assert_eq!(r.read_at(6, 5).await.unwrap(), b"world");
        assert!(r.read_at(6, 6).await.is_err());
        store.delete(name).await.unwrap();
        store.delete(name).await.unwrap();

        // An abandoned write leaves nothing behind.
        let mut w = store.create(name).await.unwrap();
        w.write(b"partial").await.unwrap();
        drop(w);
        assert!(store.open(name).await.is_err());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        // Names are data ids only.
        assert!(store.create("../escape").await.is_err());
    }
}
