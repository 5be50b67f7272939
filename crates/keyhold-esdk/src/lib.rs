//! The AWS Encryption SDK message format, version 2, on aws-lc-rs: framed messages under the
//! committing algorithm suites `AES_256_GCM_HKDF_SHA512_COMMIT_KEY` (0x0478) and
//! `AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384` (0x0578), streamed in both directions with
//! one frame in memory at a time. Data keys come through a [`Keyring`] (keyhold's KMS, or any
//! other), so this crate does no I/O but the reader and writer it is given.
//!
//! Decryption checks the key commitment before anything else, authenticates the header, and
//! writes a frame's plaintext only once that frame's tag has been checked. With the signed suite
//! the signature covers the whole message and is checked at the end: plaintext written before
//! then is authenticated (every frame's tag) but not yet known to come from the signer, so a
//! caller writing to a file must only keep it once [`decrypt`] returns `Ok`.

mod format;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::digest;
use aws_lc_rs::hkdf;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use zeroize::Zeroizing;

pub use format::{Edk, Header};

/// The encryption context (key-value pairs bound to the message).
pub type Context = BTreeMap<String, String>;

/// The context key that carries the signer's public key in signed messages.
pub const PUBLIC_KEY_CONTEXT: &str = "aws-crypto-public-key";
/// Default frame length.
pub const DEFAULT_FRAME: u32 = 4096;
/// Largest frame length this crate encrypts or decrypts (a frame is held in memory).
pub const MAX_FRAME: u32 = 16 * 1024 * 1024;
/// Most encrypted data keys a message may carry to be decrypted.
pub const MAX_EDKS: usize = 64;

/// An algorithm suite of message format 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// `AES_256_GCM_HKDF_SHA512_COMMIT_KEY` (0x0478).
    Committed,
    /// `AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384` (0x0578).
    CommittedSigned,
}

impl Suite {
    /// Its id on the wire.
    pub fn id(self) -> u16 {
        match self {
            Self::Committed => 0x0478,
            Self::CommittedSigned => 0x0578,
        }
    }

    /// The suite of an id.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0478 => Some(Self::Committed),
            0x0578 => Some(Self::CommittedSigned),
            _ => None,
        }
    }

    /// Its name, as the AWS Encryption SDKs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Committed => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            Self::CommittedSigned => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
        }
    }

    fn signed(self) -> bool {
        self == Self::CommittedSigned
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a message this crate reads, or a damaged one.
    #[error("not a valid message: {0}")]
    Format(String),
    /// The message's key commitment does not match its data key.
    #[error("the key commitment does not match: the message was altered or made to deceive")]
    Commitment,
    /// A tag or the signature did not verify: the message was altered.
    #[error("the message does not authenticate ({0}): it was altered or truncated")]
    Authentication(&'static str),
    /// The encryption context is not what the caller requires.
    #[error("the encryption context does not match: {0}")]
    Context(String),
    /// No data key could be had (every keyring error, in the keyring's words).
    #[error("no data key: {0}")]
    Keyring(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A cryptographic operation failed unexpectedly.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

/// Where data keys come from.
pub trait Keyring {
    /// A new 32-byte data key, encrypted for every key of the keyring, bound to `context`.
    fn generate(&self, context: &Context) -> Result<(Zeroizing<Vec<u8>>, Vec<Edk>), Error>;
    /// The data key inside one of `edks` (those of the message), bound to `context`.
    fn decrypt(&self, edks: &[Edk], context: &Context) -> Result<Zeroizing<Vec<u8>>, Error>;
}

/// A length for HKDF output.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The derived encryption key and the commitment key of a data key (HKDF-SHA512, the message
/// id as salt; info = suite id || "DERIVEKEY", and "COMMITKEY").
fn derive(
    suite: Suite,
    data_key: &[u8],
    message_id: &[u8],
) -> Result<(Zeroizing<[u8; 32]>, [u8; 32]), Error> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA512, message_id).extract(data_key);
    let mut key = Zeroizing::new([0u8; 32]);
    let mut info = suite.id().to_be_bytes().to_vec();
    info.extend_from_slice(b"DERIVEKEY");
    prk.expand(&[&info], Len(32))
        .and_then(|okm| okm.fill(key.as_mut()))
        .map_err(|_| Error::Crypto("hkdf"))?;
    let mut commit = [0u8; 32];
    prk.expand(&[b"COMMITKEY"], Len(32))
        .and_then(|okm| okm.fill(&mut commit))
        .map_err(|_| Error::Crypto("hkdf"))?;
    Ok((key, commit))
}

fn aead_key(key: &[u8; 32]) -> Result<LessSafeKey, Error> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Crypto("aes key"))
}

/// The IV of frame `seq` (its sequence number, big-endian, in 12 bytes).
fn frame_iv(seq: u32) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[8..].copy_from_slice(&seq.to_be_bytes());
    iv
}

const FRAME_LABEL: &[u8] = b"AWSKMSEncryptionClient Frame";
const FINAL_LABEL: &[u8] = b"AWSKMSEncryptionClient Final Frame";
const FINAL_MARK: u32 = 0xFFFF_FFFF;

fn frame_aad(message_id: &[u8], last: bool, seq: u32, len: usize) -> Vec<u8> {
    let label = if last { FINAL_LABEL } else { FRAME_LABEL };
    let mut aad = Vec::with_capacity(32 + label.len() + 12);
    aad.extend_from_slice(message_id);
    aad.extend_from_slice(label);
    aad.extend_from_slice(&seq.to_be_bytes());
    aad.extend_from_slice(&(len as u64).to_be_bytes());
    aad
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes and, for signed messages, hashes what is written.
struct Out<'a, W: Write> {
    w: &'a mut W,
    hash: Option<digest::Context>,
}

impl<W: Write> Out<'_, W> {
    fn put(&mut self, b: &[u8]) -> Result<(), Error> {
        if let Some(h) = self.hash.as_mut() {
            h.update(b);
        }
        self.w.write_all(b)?;
        Ok(())
    }
}

/// What an encryption used.
#[derive(Debug, Clone)]
pub struct Encrypted {
    /// The message's header.
    pub header: Header,
}

/// Encrypts everything `input` yields into one message written to `output`.
pub fn encrypt(
    keyring: &dyn Keyring,
    suite: Suite,
    context: &Context,
    frame_len: u32,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<Encrypted, Error> {
    if frame_len == 0 || frame_len > MAX_FRAME {
        return Err(Error::Format(format!(
            "frame length {frame_len} is not in 1..={MAX_FRAME}"
        )));
    }
    if context.keys().any(|k| k.starts_with("aws-crypto-")) {
        return Err(Error::Context(
            "keys starting with aws-crypto- are reserved".into(),
        ));
    }
    let mut context = context.clone();
    let signer = if suite.signed() {
        let kp = EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_ASN1_SIGNING)
            .map_err(|_| Error::Crypto("ecdsa key"))?;
        let compressed: aws_lc_rs::encoding::EcPublicKeyCompressedBin<'_> =
            aws_lc_rs::encoding::AsBigEndian::as_be_bytes(kp.public_key())
                .map_err(|_| Error::Crypto("ecdsa public key"))?;
        context.insert(
            PUBLIC_KEY_CONTEXT.to_string(),
            base64::engine::general_purpose::STANDARD.encode(compressed.as_ref()),
        );
        Some(kp)
    } else {
        None
    };
    let (data_key, edks) = keyring.generate(&context)?;
    if data_key.len() != 32 {
        return Err(Error::Keyring("the data key is not 32 bytes".into()));
    }
    if edks.is_empty() || edks.len() > usize::from(u16::MAX) {
        return Err(Error::Keyring("no encrypted data key".into()));
    }
    let mut message_id = [0u8; 32];
    aws_lc_rs::rand::fill(&mut message_id).map_err(|_| Error::Crypto("random"))?;
    let (key, commitment) = derive(suite, &data_key, &message_id)?;
    let aead = aead_key(&key)?;
    let header = Header {
        suite,
        message_id,
        context,
        edks,
        frame_len,
        commitment,
    };
    let body = header.serialize()?;
    let tag = aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0u8; 12]),
            Aad::from(&body),
            &mut [],
        )
        .map_err(|_| Error::Crypto("header tag"))?;
    let mut out = Out {
        w: output,
        hash: signer
            .as_ref()
            .map(|_| digest::Context::new(&digest::SHA384)),
    };
    out.put(&body)?;
    out.put(tag.as_ref())?;

    let frame = frame_len as usize;
    let mut cur = Zeroizing::new(vec![0u8; frame]);
    let mut next = Zeroizing::new(vec![0u8; frame]);
    let mut cur_len = fill(input, &mut cur)?;
    let mut seq: u32 = 1;
    loop {
        // One frame of look-ahead tells whether this one is the last.
        let next_len = if cur_len == frame {
            fill(input, &mut next)?
        } else {
            0
        };
        let last = next_len == 0;
        let aad = frame_aad(&message_id, last, seq, cur_len);
        let chunk = &mut cur[..cur_len];
        let tag = aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(frame_iv(seq)),
                Aad::from(&aad),
                chunk,
            )
            .map_err(|_| Error::Crypto("frame"))?;
        if last {
            out.put(&FINAL_MARK.to_be_bytes())?;
            out.put(&seq.to_be_bytes())?;
            out.put(&frame_iv(seq))?;
            out.put(&(cur_len as u32).to_be_bytes())?;
        } else {
            out.put(&seq.to_be_bytes())?;
            out.put(&frame_iv(seq))?;
        }
        out.put(&cur[..cur_len])?;
        out.put(tag.as_ref())?;
        if last {
            break;
        }
        std::mem::swap(&mut cur, &mut next);
        cur_len = next_len;
        seq = seq
            .checked_add(1)
            .filter(|s| *s != FINAL_MARK)
            .ok_or_else(|| Error::Format("too many frames".into()))?;
    }
    if let (Some(kp), Some(h)) = (signer, out.hash.take()) {
        let sig = kp
            .sign_digest(&h.finish())
            .map_err(|_| Error::Crypto("signature"))?;
        let sig = sig.as_ref();
        out.put(&(sig.len() as u16).to_be_bytes())?;
        out.put(sig)?;
    }
    out.w.flush()?;
    Ok(Encrypted { header })
}

/// Reads and hashes (for signed messages) what is read.
struct In<'a, R: Read> {
    r: &'a mut R,
    hash: Option<digest::Context>,
    /// Bytes read so far (for messages).
    pos: u64,
}

impl<R: Read> In<'_, R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        let n = fill(self.r, buf)?;
        if n < buf.len() {
            return Err(Error::Format(format!(
                "the message ends early, at byte {}",
                self.pos + n as u64
            )));
        }
        self.pos += n as u64;
        if let Some(h) = self.hash.as_mut() {
            h.update(buf);
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }
}

/// Decrypts one message from `input` into `output`. When `required` is given, the message's
/// encryption context must hold every pair of it (as the ESDK's required encryption context
/// does). Returns the message's header. With the signed suite, see the crate documentation
/// on what is written before the signature is checked.
pub fn decrypt(
    keyring: &dyn Keyring,
    required: Option<&Context>,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<Header, Error> {
    let (header, header_bytes) = format::read_header(input)?;
    if let Some(req) = required {
        for (k, v) in req {
            match header.context.get(k) {
                Some(have) if have == v => {}
                Some(_) => {
                    return Err(Error::Context(format!(
                        "the message's value for {k:?} is not the one required"
                    )))
                }
                None => {
                    return Err(Error::Context(format!(
                        "the message has no pair {k:?} in its encryption context"
                    )))
                }
            }
        }
    }
    let data_key = keyring.decrypt(&header.edks, &header.context)?;
    let (key, commitment) = derive(header.suite, &data_key, &header.message_id)?;
    if aws_lc_rs::constant_time::verify_slices_are_equal(&commitment, &header.commitment).is_err() {
        return Err(Error::Commitment);
    }
    let aead = aead_key(&key)?;
    let mut inp = In {
        r: input,
        hash: header.suite.signed().then(|| {
            let mut h = digest::Context::new(&digest::SHA384);
            h.update(&header_bytes);
            h
        }),
        pos: header_bytes.len() as u64,
    };
    let mut tag = [0u8; 16];
    inp.exact(&mut tag)?;
    let mut sealed = tag.to_vec();
    aead.open_in_place(
        Nonce::assume_unique_for_key([0u8; 12]),
        Aad::from(&header_bytes),
        &mut sealed,
    )
    .map_err(|_| Error::Authentication("header"))?;

    let frame = header.frame_len as usize;
    let mut buf = Zeroizing::new(Vec::with_capacity(frame + 16));
    let mut expected: u32 = 1;
    loop {
        let first = inp.u32()?;
        let last = first == FINAL_MARK;
        let seq = if last { inp.u32()? } else { first };
        if seq != expected {
            return Err(Error::Authentication("frame order"));
        }
        let mut iv = [0u8; 12];
        inp.exact(&mut iv)?;
        if iv != frame_iv(seq) {
            return Err(Error::Format(format!("frame {seq} has an unexpected IV")));
        }
        let len = if last {
            let l = inp.u32()? as usize;
            if l > frame {
                return Err(Error::Format(format!(
                    "the final frame holds {l} bytes, more than the frame length {frame}"
                )));
            }
            l
        } else {
            frame
        };
        buf.clear();
        buf.resize(len + 16, 0);
        inp.exact(&mut buf)?;
        let aad = frame_aad(&header.message_id, last, seq, len);
        let plain = aead
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(&aad), &mut buf)
            .map_err(|_| Error::Authentication("frame"))?;
        output.write_all(plain)?;
        if last {
            break;
        }
        expected = expected
            .checked_add(1)
            .filter(|s| *s != FINAL_MARK)
            .ok_or_else(|| Error::Format("too many frames".into()))?;
    }
    if let Some(h) = inp.hash.take() {
        let public = header
            .context
            .get(PUBLIC_KEY_CONTEXT)
            .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
            .ok_or_else(|| Error::Format("a signed message without its public key".into()))?;
        let mut len = [0u8; 2];
        let n = fill(inp.r, &mut len)?;
        if n < 2 {
            return Err(Error::Authentication("signature missing"));
        }
        let mut sig = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if fill(inp.r, &mut sig)? < sig.len() {
            return Err(Error::Authentication("signature truncated"));
        }
        signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_ASN1, &public)
            .verify_digest(&h.finish(), &sig)
            .map_err(|_| Error::Authentication("signature"))?;
    } else if header.context.contains_key(PUBLIC_KEY_CONTEXT) {
        return Err(Error::Format(
            "an unsigned message carries a signing key in its context".into(),
        ));
    }
    // Nothing may follow the message.
    let mut extra = [0u8; 1];
    if fill(inp.r, &mut extra)? != 0 {
        return Err(Error::Format("bytes follow the end of the message".into()));
    }
    output.flush()?;
    Ok(header)
}

#[cfg(test)]
mod tests;
