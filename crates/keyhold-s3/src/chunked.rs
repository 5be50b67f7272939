//! The stored form of an object's bytes: authenticated encryption in chunks.
//!
//! An object has one random 256-bit content key (wrapped by its SSE mode; never stored in
//! plaintext). Each piece of stored data (a whole object, or one part of a multipart object)
//! has a random 16-byte data id and is encrypted under its own key, derived with HKDF-SHA256
//! from the content key and the data id. The data is a sequence of chunks of
//! [`CHUNK`] plaintext bytes (the last may be shorter; empty data is one empty chunk), each
//! sealed with AES-256-GCM: nonce = the chunk's index, associated data = format label, data
//! id, index and a flag for the final chunk. So a chunk moved to another index, another
//! object or another version fails to open, a truncated object fails at its new last chunk,
//! and an extended one has a length that does not match; a Range read opens only the chunks it
//! touches.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Bytes the AEAD tag adds to each chunk.
pub const TAG: usize = 16;
/// Stored bytes of a full chunk.
pub const STORED_CHUNK: usize = CHUNK + TAG;
/// Length of a content key.
pub const KEY_LEN: usize = 32;

const LABEL: &[u8] = b"keyhold-s3 chunked v1";

/// Stored data that does not open: changed, swapped, truncated or extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored object data failed authentication")]
pub struct Tampered;

/// An object's content key. Zeroized on drop; never printed.
pub struct ContentKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

impl ContentKey {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        // The system RNG does not fail on supported platforms; a failure would leave the
        // key all zeros, so it is checked.
        let filled = aws_lc_rs::rand::fill(&mut k[..]);
        assert!(filled.is_ok(), "system random number generator failed");
        Self(k)
    }

    /// A key from its bytes; `None` unless exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return None;
        }
        k.copy_from_slice(bytes);
        Some(Self(k))
    }

    /// The key bytes (to wrap them).
    pub fn expose(&self) -> &[u8] {
        &self.0[..]
    }
}

/// A fresh random data id.
pub fn new_data_id() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

/// The key of one piece of stored data.
pub struct DataKey {
    key: LessSafeKey,
    data_id: [u8; 16],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("data_id", &hex::encode(self.data_id))
            .finish_non_exhaustive()
    }
}

struct Len(usize);

impl aws_lc_rs::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl DataKey {
    /// Derives the key of the data `data_id` from the object's content key.
    pub fn derive(content: &ContentKey, data_id: &[u8; 16]) -> Self {
        let prk = Salt::new(HKDF_SHA256, LABEL).extract(content.expose());
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        let info = [&data_id[..]];
        // Expanding 32 bytes from SHA-256 is within HKDF's limit, so neither call fails.
        let filled = prk
            .expand(&info, Len(KEY_LEN))
            .and_then(|o| o.fill(&mut okm[..]));
        assert!(filled.is_ok(), "HKDF expand of 32 bytes");
        let unbound = UnboundKey::new(&AES_256_GCM, &okm[..]);
        let key = LessSafeKey::new(unbound.unwrap_or_else(|_| unreachable!("32-byte AES key")));
        Self {
            key,
            data_id: *data_id,
        }
    }

    fn nonce(index: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&index.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    fn aad(&self, index: u64, last: bool) -> [u8; 46] {
        let mut a = [0u8; 46];
        a[..21].copy_from_slice(LABEL);
        a[21..37].copy_from_slice(&self.data_id);
        a[37..45].copy_from_slice(&index.to_be_bytes());
        a[45] = u8::from(last);
        a
    }

    /// Seals one chunk's plaintext in place and appends its tag.
    pub fn seal_chunk(&self, index: u64, last: bool, buf: &mut Vec<u8>) {
        let aad = self.aad(index, last);
        // AES-GCM sealing fails only for inputs over 64 GiB; a chunk is 64 KiB.
        let tag = self
            .key
            .seal_in_place_separate_tag(Self::nonce(index), Aad::from(&aad[..]), buf)
            .unwrap_or_else(|_| unreachable!("chunk within AES-GCM limits"));
        buf.extend_from_slice(tag.as_ref());
    }

    /// Opens one stored chunk in place; its plaintext length.
    pub fn open_chunk(&self, index: u64, last: bool, buf: &mut [u8]) -> Result<usize, Tampered> {
        let aad = self.aad(index, last);
        self.key
            .open_in_place(Self::nonce(index), Aad::from(&aad[..]), buf)
            .map(|p| p.len())
            .map_err(|_| Tampered)
    }
}

impl DataKey {
    /// Opens the stored chunk at `in_out[offset..]` and leaves its plaintext at the start of
    /// `in_out` (one pass: decryption and the move over earlier tags together); its length.
    pub fn open_chunk_within(
        &self,
        index: u64,
        last: bool,
        in_out: &mut [u8],
        offset: usize,
    ) -> Result<usize, Tampered> {
        let aad = self.aad(index, last);
        self.key
            .open_within(Self::nonce(index), Aad::from(&aad[..]), in_out, offset..)
            .map(|p| p.len())
            .map_err(|_| Tampered)
    }
}

/// Chunks of `plain_len` plaintext bytes (at least one).
pub fn chunk_count(plain_len: u64) -> u64 {
    plain_len.div_ceil(CHUNK as u64).max(1)
}

/// Stored bytes of `plain_len` plaintext bytes.
pub fn stored_len(plain_len: u64) -> u64 {
    plain_len + chunk_count(plain_len) * TAG as u64
}

/// Where chunk `index` of data of `plain_len` plaintext bytes is stored: offset and length.
pub fn stored_span(plain_len: u64, index: u64) -> (u64, u64) {
    let offset = index * STORED_CHUNK as u64;
    let len = (stored_len(plain_len) - offset).min(STORED_CHUNK as u64);
    (offset, len)
}

/// Encrypts a stream of plaintext into stored chunks, holding at most one chunk.
#[derive(Debug)]
pub struct Encryptor {
    key: DataKey,
    buf: Vec<u8>,
    index: u64,
    total: u64,
}

impl Encryptor {
    /// An encryptor for data under `key`.
    pub fn new(key: DataKey) -> Self {
        Self {
            key,
            buf: Vec::with_capacity(STORED_CHUNK),
            index: 0,
            total: 0,
        }
    }

    /// Takes plaintext; returns the stored bytes of every chunk it completed. A full chunk is
    /// sealed only when more data follows it (the final chunk is sealed by [`Self::finish`]).
    pub fn update(&mut self, mut data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.total += data.len() as u64;
        while !data.is_empty() {
            if self.buf.len() == CHUNK {
                let mut chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(STORED_CHUNK));
                self.key.seal_chunk(self.index, false, &mut chunk);
                self.index += 1;
                if out.is_empty() {
                    out = chunk;
                } else {
                    out.extend_from_slice(&chunk);
                }
            }
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        out
    }

    /// Seals the final chunk; its stored bytes, and the plaintext length of the whole data.
    pub fn finish(mut self) -> (Vec<u8>, u64) {
        let mut chunk = std::mem::take(&mut self.buf);
        self.key.seal_chunk(self.index, true, &mut chunk);
        (chunk, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey::derive(&ContentKey::from_slice(&[7u8; 32]).unwrap(), &[9u8; 16])
    }

    fn encrypt(data: &[u8], pieces: usize) -> Vec<u8> {
        let mut e = Encryptor::new(key());
        let mut out = Vec::new();
        for p in data.chunks(pieces.max(1)) {
            out.extend(e.update(p));
        }
        let (last, total) = e.finish();
        out.extend(last);
        assert_eq!(total, data.len() as u64);
        out
    }

    fn decrypt(stored: &[u8], plain_len: u64, k: &DataKey) -> Result<Vec<u8>, Tampered> {
        if stored.len() as u64 != stored_len(plain_len) {
            return Err(Tampered);
        }
        let n = chunk_count(plain_len);
        let mut out = Vec::new();
        for i in 0..n {
            let (off, len) = stored_span(plain_len, i);
            let mut c = stored[off as usize..(off + len) as usize].to_vec();
            let m = k.open_chunk(i, i == n - 1, &mut c)?;
            out.extend_from_slice(&c[..m]);
        }
        // Opening in place over the earlier tags gives the same plaintext.
        let mut whole = stored.to_vec();
        let mut plain = 0;
        for i in 0..n {
            let (off, len) = stored_span(plain_len, i);
            let m = k.open_chunk_within(
                i,
                i == n - 1,
                &mut whole[plain..(off + len) as usize],
                off as usize - plain,
            )?;
            plain += m;
        }
        assert_eq!(&whole[..plain], &out[..]);
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_chunk_boundary_and_piece_size() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for pieces in [1, 1000, CHUNK, CHUNK + 3, len] {
                let stored = encrypt(&data, pieces);
                assert_eq!(stored.len() as u64, stored_len(len as u64), "len {len}");
                assert_eq!(decrypt(&stored, len as u64, &key()).unwrap(), data);
            }
        }
    }

    #[test]
    fn changed_swapped_truncated_or_extended_data_does_not_open() {
        let data = vec![5u8; 3 * CHUNK + 10];
        let len = data.len() as u64;
        let stored = encrypt(&data, 4096);
        // A flipped bit anywhere.
        for at in [0, 10, STORED_CHUNK + 1, stored.len() - 1] {
            let mut s = stored.clone();
            s[at] ^= 1;
            assert_eq!(decrypt(&s, len, &key()), Err(Tampered), "bit at {at}");
        }
        // Two chunks swapped.
        let mut s = stored.clone();
        let (a, b) = s.split_at_mut(STORED_CHUNK);
        a.swap_with_slice(&mut b[..STORED_CHUNK]);
        assert_eq!(decrypt(&s, len, &key()), Err(Tampered));
        // Truncated to whole chunks (and the metadata length changed to match).
        let cut = &stored[..3 * STORED_CHUNK];
        assert_eq!(decrypt(cut, 3 * CHUNK as u64, &key()), Err(Tampered));
        // Extended.
        let mut s = stored.clone();
        s.extend_from_slice(&[0u8; TAG]);
        assert_eq!(decrypt(&s, len, &key()), Err(Tampered));
        // Another data id (another object or version) or another content key.
        let other = DataKey::derive(&ContentKey::from_slice(&[7u8; 32]).unwrap(), &[8u8; 16]);
        assert_eq!(decrypt(&stored, len, &other), Err(Tampered));
        let other = DataKey::derive(&ContentKey::from_slice(&[6u8; 32]).unwrap(), &[9u8; 16]);
        assert_eq!(decrypt(&stored, len, &other), Err(Tampered));
    }

    #[test]
    fn known_answer_of_an_empty_and_a_short_chunk() {
        // Pinned so the stored format cannot change unnoticed: existing objects must stay
        // readable.
        let empty = encrypt(b"", 1);
        assert_eq!(empty.len(), TAG);
        let short = encrypt(b"keyhold", 1);
        assert_eq!(short.len(), 7 + TAG);
        let pinned = (hex::encode(&empty), hex::encode(&short));
        let again = (
            hex::encode(encrypt(b"", 1)),
            hex::encode(encrypt(b"keyhold", 3)),
        );
        assert_eq!(pinned, again);
        assert_eq!(pinned.0, KAT_EMPTY, "empty chunk");
        assert_eq!(pinned.1, KAT_SHORT, "short chunk");
    }

    // Computed independently with Python's `cryptography` (HKDF-SHA256 and AESGCM) from the
    // format described in the module documentation.
    const KAT_EMPTY: &str = "db2bcc75f79e208c5b87b63c0fd55222";
    const KAT_SHORT: &str = "8b35f8bd8ad2640736b824cd806417b66285b550d6dc6b";

    #[test]
    fn spans_cover_the_stored_bytes() {
        assert_eq!(stored_span(0, 0), (0, TAG as u64));
        let len = 2 * CHUNK as u64 + 1;
        assert_eq!(stored_span(len, 0), (0, STORED_CHUNK as u64));
        assert_eq!(
            stored_span(len, 2),
            (2 * STORED_CHUNK as u64, 1 + TAG as u64)
        );
    }
}
