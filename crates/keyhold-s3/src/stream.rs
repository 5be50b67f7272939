//! Objects as streams: an upload is hashed, encrypted and written as it arrives, a download
//! read, decrypted and sent as the client takes it; memory holds a few windows, never the
//! object.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt as _;
use s3s::dto::StreamingBlob;
use s3s::{s3_error, S3Result};

use crate::chunked::{
    chunk_count, new_data_id, stored_len, stored_span, ContentKey, DataKey, Encryptor, CHUNK,
};
use crate::meta::DataRef;
use crate::objects::{DataReader, ObjectStore};

/// Ciphertext gathered before one write to the store.
const WRITE_BATCH: usize = 1024 * 1024;
/// Chunks read and opened at once on a download.
const READ_CHUNKS: u64 = 16;
/// Windows of a download buffered ahead of the client.
const READ_AHEAD: usize = 2;

/// What an upload is checked and described by, computed over its plaintext as it passes.
#[derive(Default)]
pub(crate) struct Digests {
    /// MD5, when the ETag is one or `Content-MD5` was sent.
    pub md5: Option<s3s::crypto::Md5>,
    /// The `x-amz-checksum-*` algorithms asked for.
    pub checksum: s3s::checksum::ChecksumHasher,
}

impl Digests {
    fn update(&mut self, data: &[u8]) {
        if let Some(m) = &mut self.md5 {
            use s3s::crypto::Checksum as _;
            m.update(data);
        }
        self.checksum.update(data);
    }
}

/// Encrypts `body` under `content` into a new piece of stored data; at most `max` bytes,
/// exactly `declared` when the client declared a length. Nothing is visible unless it all
/// arrived and was made durable. (`content` is `None` only for the benchmark baseline, which
/// stores bytes as they come.)
pub(crate) async fn write_data(
    objects: &dyn ObjectStore,
    content: Option<&ContentKey>,
    body: StreamingBlob,
    digests: &mut Digests,
    max: u64,
    declared: Option<u64>,
) -> S3Result<DataRef> {
    if declared.is_some_and(|d| d > max) {
        return Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed size"
        ));
    }
    let id = new_data_id();
    let name = hex::encode(id);
    let mut enc = content.map(|c| Encryptor::new(DataKey::derive(c, &id)));
    let mut writer = objects.create(&name).await.map_err(store_error)?;
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_BATCH + CHUNK);
    let mut total: u64 = 0;
    let mut body = body;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| {
            tracing::debug!(error = %e, "upload body ended early");
            s3_error!(
                IncompleteBody,
                "You did not provide the number of bytes specified by the Content-Length HTTP \
                 header."
            )
        })?;
        total += piece.len() as u64;
        if total > max || declared.is_some_and(|d| total > d) {
            return Err(s3_error!(
                EntityTooLarge,
                "Your proposed upload exceeds the maximum allowed size"
            ));
        }
        digests.update(&piece);
        match &mut enc {
            Some(e) => pending.extend(e.update(&piece)),
            None => pending.extend_from_slice(&piece),
        }
        if pending.len() >= WRITE_BATCH {
            writer.write(&pending).await.map_err(store_error)?;
            pending.clear();
        }
    }
    if declared.is_some_and(|d| total != d) {
        return Err(s3_error!(
            IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header."
        ));
    }
    let size = match enc {
        Some(e) => {
            let (last, size) = e.finish();
            pending.extend(last);
            size
        }
        None => total,
    };
    writer.write(&pending).await.map_err(store_error)?;
    writer.commit().await.map_err(store_error)?;
    Ok(DataRef { id: name, size })
}

pub(crate) fn store_error(e: io::Error) -> s3s::S3Error {
    tracing::error!(error = %e, "object store failed");
    s3_error!(InternalError, "The object store failed")
}

fn tampered() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "stored object data failed authentication",
    )
}

/// Opens the stored data of one piece and checks its length.
async fn open_piece(
    objects: &dyn ObjectStore,
    piece: &DataRef,
    encrypted: bool,
) -> io::Result<Arc<dyn DataReader>> {
    let reader = objects.open(&piece.id).await?;
    let want = if encrypted {
        stored_len(piece.size)
    } else {
        piece.size
    };
    if reader.len() != want {
        return Err(tampered());
    }
    Ok(reader)
}

/// Plaintext bytes `[from, to)` of one piece, reading and opening only the chunks they lie in.
async fn read_window(
    reader: &dyn DataReader,
    key: &Arc<DataKey>,
    size: u64,
    from: u64,
    to: u64,
) -> io::Result<Vec<Bytes>> {
    let n = chunk_count(size);
    let first = from / CHUNK as u64;
    let last = if to == from {
        first
    } else {
        (to - 1) / CHUNK as u64
    };
    let (start, _) = stored_span(size, first);
    let (end_off, end_len) = stored_span(size, last);
    let len = usize::try_from(end_off + end_len - start).map_err(io::Error::other)?;
    let key = key.clone();
    let open = move |mut buf: Vec<u8>| -> io::Result<Bytes> {
        // Each chunk is opened in place with its plaintext moved down over the tags before it
        // (in the same pass), so the window leaves as one contiguous buffer.
        let mut at = 0usize;
        let mut plain = 0usize;
        for i in first..=last {
            let (_, l) = stored_span(size, i);
            let l = l as usize;
            let m = key
                .open_chunk_within(i, i == n - 1, &mut buf[plain..at + l], at - plain)
                .map_err(|_| tampered())?;
            plain += m;
            at += l;
        }
        buf.truncate(plain);
        let skip = (from - first * CHUNK as u64) as usize;
        let keep = (to - from) as usize;
        Ok(Bytes::from(buf).slice(skip..skip + keep))
    };
    Ok(vec![reader.read_at_then(start, len, Box::new(open)).await?])
}

/// A download: plaintext bytes `[from, to)` of an object made of `pieces`. The first window
/// is read and authenticated before this returns, so a damaged object is an error response,
/// not a truncated body; later damage ends the body early with an error. Never returns a
/// byte that did not authenticate.
pub(crate) async fn read_data(
    objects: Arc<dyn ObjectStore>,
    content: Option<&ContentKey>,
    pieces: &[DataRef],
    from: u64,
    to: u64,
) -> S3Result<StreamingBlob> {
    // The spans of each piece the range covers.
    let mut plan = Vec::new();
    let mut base = 0u64;
    for p in pieces {
        let (start, end) = (base, base + p.size);
        if end > from && start < to {
            plan.push((p.clone(), from.max(start) - start, to.min(end) - start));
        } else if p.size == 0 && from == to && from == start {
            plan.push((p.clone(), 0, 0));
        }
        base = end;
    }
    if plan.is_empty() {
        if let Some(p) = pieces.first() {
            plan.push((p.clone(), 0, 0));
        }
    }
    let keys: Vec<Option<Arc<DataKey>>> = plan
        .iter()
        .map(|(p, _, _)| {
            let mut id = [0u8; 16];
            hex::decode_to_slice(&p.id, &mut id)
                .map(|_| content.map(|c| Arc::new(DataKey::derive(c, &id))))
        })
        .collect::<Result<_, _>>()
        .map_err(|_| s3_error!(InternalError, "stored object metadata is damaged"))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Vec<Bytes>>>(READ_AHEAD);
    tokio::spawn(async move {
        for ((piece, from, to), key) in plan.into_iter().zip(keys) {
            let reader = match open_piece(objects.as_ref(), &piece, key.is_some()).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut at = from;
            loop {
                let window_end = ((at / CHUNK as u64 + READ_CHUNKS) * CHUNK as u64).min(to);
                let result = match &key {
                    Some(k) => read_window(reader.as_ref(), k, piece.size, at, window_end).await,
                    None => {
                        let len = usize::try_from(window_end - at).map_err(io::Error::other);
                        match len {
                            Ok(n) => reader.read_at(at, n).await.map(|b| vec![Bytes::from(b)]),
                            Err(e) => Err(e),
                        }
                    }
                };
                let failed = result.is_err();
                if tx.send(result).await.is_err() || failed {
                    // The client went away, or the data did not authenticate.
                    return;
                }
                at = window_end;
                if at >= to {
                    break;
                }
            }
        }
    });
    let first = match rx.recv().await {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            tracing::error!(error = %e, "object data unreadable");
            return Err(if e.kind() == io::ErrorKind::InvalidData {
                s3_error!(
                    InternalError,
                    "The stored object failed its integrity check and is not returned"
                )
            } else {
                store_error(e)
            });
        }
        None => Vec::new(),
    };
    Ok(StreamingBlob::wrap(Download {
        ready: first.into(),
        rx,
    }))
}

/// The body of a download: windows from the reading task, each a few slices.
struct Download {
    ready: std::collections::VecDeque<Bytes>,
    rx: tokio::sync::mpsc::Receiver<io::Result<Vec<Bytes>>>,
}

impl futures::Stream for Download {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(b)));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(window))) => self.ready.extend(window),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
