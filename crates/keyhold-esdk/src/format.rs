//! The message header of format version 2: its serialization, and its careful reading from
//! untrusted bytes (every length bounded before anything is allocated).

use std::io::Read;

use crate::{fill, Context, Error, Suite, MAX_EDKS, MAX_FRAME};

/// One encrypted data key of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edk {
    /// Who can open it (`aws-kms` for KMS keys).
    pub provider_id: String,
    /// Which key of that provider (the KMS key ARN).
    pub provider_info: Vec<u8>,
    /// The encrypted data key (a KMS ciphertext blob).
    pub ciphertext: Vec<u8>,
}

/// A message header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The algorithm suite.
    pub suite: Suite,
    /// The message id: HKDF salt and part of every frame's AAD.
    pub message_id: [u8; 32],
    /// The encryption context.
    pub context: Context,
    /// The data key, encrypted once per key that can open the message.
    pub edks: Vec<Edk>,
    /// The frame length.
    pub frame_len: u32,
    /// The key commitment.
    pub commitment: [u8; 32],
}

const VERSION: u8 = 0x02;
const FRAMED: u8 = 0x02;

fn field(out: &mut Vec<u8>, b: &[u8], what: &str) -> Result<(), Error> {
    let len = u16::try_from(b.len())
        .map_err(|_| Error::Format(format!("{what} is longer than 65535 bytes")))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// The encryption context as the format serializes it (sorted by key bytes; empty for none).
pub fn serialize_context(context: &Context) -> Result<Vec<u8>, Error> {
    if context.is_empty() {
        return Ok(Vec::new());
    }
    let count = u16::try_from(context.len())
        .map_err(|_| Error::Format("too many encryption context pairs".into()))?;
    let mut out = count.to_be_bytes().to_vec();
    // A BTreeMap of Strings orders by the keys' UTF-8 bytes, as the format requires.
    for (k, v) in context {
        field(&mut out, k.as_bytes(), "an encryption context key")?;
        field(&mut out, v.as_bytes(), "an encryption context value")?;
    }
    Ok(out)
}

impl Header {
    /// The header's bytes, up to its authentication tag.
    pub fn serialize(&self) -> Result<Vec<u8>, Error> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.suite.id().to_be_bytes());
        out.extend_from_slice(&self.message_id);
        let aad = serialize_context(&self.context)?;
        field(&mut out, &aad, "the encryption context")?;
        let n = u16::try_from(self.edks.len())
            .map_err(|_| Error::Format("too many encrypted data keys".into()))?;
        out.extend_from_slice(&n.to_be_bytes());
        for e in &self.edks {
            field(&mut out, e.provider_id.as_bytes(), "a key provider id")?;
            field(&mut out, &e.provider_info, "a key provider info")?;
            field(&mut out, &e.ciphertext, "an encrypted data key")?;
        }
        out.push(FRAMED);
        out.extend_from_slice(&self.frame_len.to_be_bytes());
        out.extend_from_slice(&self.commitment);
        Ok(out)
    }
}

/// Reads from untrusted input, keeping every byte read.
struct Reader<'a, R: Read> {
    r: &'a mut R,
    kept: Vec<u8>,
}

impl<R: Read> Reader<'_, R> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let start = self.kept.len();
        self.kept.resize(start + n, 0);
        let got = fill(self.r, &mut self.kept[start..])?;
        if got < n {
            return Err(Error::Format(format!(
                "the header ends early, at byte {}",
                start + got
            )));
        }
        Ok(&self.kept[start..])
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn field(&mut self) -> Result<Vec<u8>, Error> {
        let n = self.u16()?;
        Ok(self.take(usize::from(n))?.to_vec())
    }
}

fn utf8(b: Vec<u8>, what: &str) -> Result<String, Error> {
    String::from_utf8(b).map_err(|_| Error::Format(format!("{what} is not UTF-8")))
}

/// Parses a serialized encryption context (the whole of `b`).
fn parse_context(b: &[u8]) -> Result<Context, Error> {
    let mut ctx = Context::new();
    if b.is_empty() {
        return Ok(ctx);
    }
    let mut cur = std::io::Cursor::new(b);
    let mut r = Reader {
        r: &mut cur,
        kept: Vec::new(),
    };
    let count = r.u16()?;
    if count == 0 {
        return Err(Error::Format(
            "an empty encryption context must have length 0".into(),
        ));
    }
    let mut last: Option<String> = None;
    for _ in 0..count {
        let k = utf8(r.field()?, "an encryption context key")?;
        let v = utf8(r.field()?, "an encryption context value")?;
        if last.as_ref().is_some_and(|l| l.as_bytes() >= k.as_bytes()) {
            return Err(Error::Format(
                "the encryption context is not sorted, or repeats a key".into(),
            ));
        }
        last = Some(k.clone());
        ctx.insert(k, v);
    }
    if r.kept.len() != b.len() {
        return Err(Error::Format(
            "bytes follow the encryption context inside its length".into(),
        ));
    }
    Ok(ctx)
}

/// Reads a header (up to its authentication tag); returns it and its bytes.
pub fn read_header(input: &mut impl Read) -> Result<(Header, Vec<u8>), Error> {
    let mut r = Reader {
        r: input,
        kept: Vec::new(),
    };
    let version = r.u8()?;
    if version != VERSION {
        return Err(Error::Format(match version {
            0x01 => "message format version 1 (a non-committing suite) is not accepted".into(),
            v => format!("unknown message format version {v:#04x}"),
        }));
    }
    let id = r.u16()?;
    let suite = Suite::from_id(id).ok_or_else(|| {
        Error::Format(format!(
            "algorithm suite {id:#06x} is not a committing suite of format 2"
        ))
    })?;
    let mut message_id = [0u8; 32];
    message_id.copy_from_slice(r.take(32)?);
    let aad = r.field()?;
    let context = parse_context(&aad)?;
    let count = usize::from(r.u16()?);
    if count == 0 {
        return Err(Error::Format(
            "the message has no encrypted data key".into(),
        ));
    }
    if count > MAX_EDKS {
        return Err(Error::Format(format!(
            "the message has {count} encrypted data keys; at most {MAX_EDKS} are read"
        )));
    }
    let mut edks = Vec::with_capacity(count);
    for _ in 0..count {
        let provider_id = utf8(r.field()?, "a key provider id")?;
        let provider_info = r.field()?;
        let ciphertext = r.field()?;
        edks.push(Edk {
            provider_id,
            provider_info,
            ciphertext,
        });
    }
    let content = r.u8()?;
    if content != FRAMED {
        return Err(Error::Format(format!(
            "content type {content:#04x} is not framed content"
        )));
    }
    let frame_len = r.u32()?;
    if frame_len == 0 || frame_len > MAX_FRAME {
        return Err(Error::Format(format!(
            "frame length {frame_len} is not in 1..={MAX_FRAME}"
        )));
    }
    let mut commitment = [0u8; 32];
    commitment.copy_from_slice(r.take(32)?);
    let header = Header {
        suite,
        message_id,
        context,
        edks,
        frame_len,
        commitment,
    };
    Ok((header, r.kept))
}
