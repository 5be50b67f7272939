//! The Clevis pin `keyhold`: `clevis-encrypt-keyhold CONFIG` and `clevis-decrypt-keyhold`,
//! as `keyhold clevis encrypt|decrypt` behind two small scripts that `keyhold clevis install`
//! puts on PATH. Clevis hands a pin a secret (a LUKS passphrase, when `clevis luks bind` runs
//! it) and keeps the pin's compact JWE in the LUKS2 header; `clevis luks unlock` (or `clevis
//! luks pass`) gives the JWE back to the pin for the secret.
//!
//! The JWE is `dir` + `A256GCM`: the content key is a data key from KMS (GenerateDataKey
//! under the configured key, with the configured encryption context), and the protected
//! header carries what decrypting needs: the key's ARN, the encrypted data key and the
//! context. Decrypting asks KMS to decrypt the data key, so the key policy decides, a disabled
//! key refuses, and the audit log records every unlock.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_sdk_kms::primitives::Blob;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The pin's name.
const PIN: &str = "keyhold";

/// Longest JWE read (a LUKS2 token holds far less).
const MAX_JWE: u64 = 1 << 20;

/// `keyhold clevis`.
#[derive(Debug, clap::Subcommand)]
pub enum ClevisCommand {
    /// Encrypt standard input into a compact JWE on standard output (clevis-encrypt-keyhold).
    /// CONFIG is JSON: {"key": "alias/aws/ebs" or another key id, ARN or alias,
    /// "context": {"k": "v", ...} (optional), "endpoint": "https://..." and "region": "..."
    /// (optional: else the AWS environment's, at encrypt and at decrypt)}.
    Encrypt {
        /// Print the pin's one-line summary (as Clevis asks) and exit.
        #[arg(long)]
        summary: bool,
        /// Accepted and ignored: `clevis luks bind -y` passes it on to skip questions, and this
        /// pin asks none.
        #[arg(short = 'y')]
        _yes: bool,
        /// The pin configuration (JSON).
        #[arg(required_unless_present = "summary")]
        config: Option<String>,
    },
    /// Decrypt a compact JWE made by this pin, from standard input to standard output
    /// (clevis-decrypt-keyhold).
    Decrypt {
        /// Print the pin's one-line summary and exit.
        #[arg(long)]
        summary: bool,
    },
    /// Write clevis-encrypt-keyhold and clevis-decrypt-keyhold into DIR, calling this binary.
    Install {
        /// Where the two scripts go (a directory on Clevis's PATH).
        #[arg(long, default_value = "/usr/local/bin")]
        dir: PathBuf,
    },
}

/// The pin configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Config {
    key: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    context: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
}

/// What the JWE's protected header keeps under `clevis.keyhold`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Binding {
    /// ARN of the key the data key is encrypted under.
    key: String,
    /// The encrypted data key (KMS ciphertext blob, base64).
    blob: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    context: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClevisHeader {
    pin: String,
    #[serde(default)]
    keyhold: Option<Binding>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Protected {
    alg: String,
    enc: String,
    clevis: ClevisHeader,
}

/// Runs `keyhold clevis ...`.
pub fn run(cmd: ClevisCommand) -> Result<(), String> {
    match cmd {
        ClevisCommand::Encrypt { summary: true, .. } => {
            println!("Encrypts using a keyhold (AWS KMS) key");
            Ok(())
        }
        ClevisCommand::Encrypt {
            config: Some(config),
            ..
        } => {
            let config: Config = serde_json::from_str(&config)
                .map_err(|e| format!("Configuration is malformed: {e}"))?;
            if config.key.is_empty() {
                return Err("Configuration is malformed: \"key\" is empty".into());
            }
            let mut plaintext = Zeroizing::new(Vec::new());
            std::io::stdin()
                .take(MAX_JWE)
                .read_to_end(&mut plaintext)
                .map_err(|e| format!("reading the secret: {e}"))?;
            let jwe = encrypt(&config, &plaintext)?;
            let mut out = std::io::stdout();
            out.write_all(jwe.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| e.to_string())
        }
        ClevisCommand::Encrypt { config: None, .. } => Err("CONFIG is required".into()),
        ClevisCommand::Decrypt { summary: true } => {
            println!("Decrypts using a keyhold (AWS KMS) key");
            Ok(())
        }
        ClevisCommand::Decrypt { summary: false } => {
            let mut jwe = Vec::new();
            std::io::stdin()
                .take(MAX_JWE + 1)
                .read_to_end(&mut jwe)
                .map_err(|e| format!("reading the JWE: {e}"))?;
            if jwe.len() as u64 > MAX_JWE {
                return Err("the JWE is larger than 1 MiB".into());
            }
            let jwe = std::str::from_utf8(&jwe)
                .map_err(|_| "the input is not a compact JWE".to_string())?;
            let plaintext = decrypt(jwe.trim())?;
            let mut out = std::io::stdout();
            out.write_all(&plaintext)
                .and_then(|()| out.flush())
                .map_err(|e| e.to_string())
        }
        ClevisCommand::Install { dir } => install(&dir),
    }
}

/// Writes the two pin scripts into `dir`.
fn install(dir: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    let exe = exe.to_string_lossy();
    if exe.contains('\'') {
        return Err(format!("this binary's path {exe} contains a quote"));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for verb in ["encrypt", "decrypt"] {
        let path = dir.join(format!("clevis-{verb}-{PIN}"));
        let script = format!(
            "#!/bin/sh\n# The Clevis pin '{PIN}': written by `keyhold clevis install`.\n\
             exec '{exe}' clevis {verb} \"$@\"\n"
        );
        std::fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        println!("{}", path.display());
    }
    Ok(())
}

fn sealing_key(key: &[u8]) -> Result<LessSafeKey, String> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| "the data key is not an AES-256 key".to_string())
}

/// Seals `plaintext` under `key` into a compact JWE with `protected` as its header.
fn seal(protected: &Protected, key: &[u8], plaintext: &[u8]) -> Result<String, String> {
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(protected).map_err(|e| e.to_string())?);
    let mut iv = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| "no randomness".to_string())?;
    let mut data = plaintext.to_vec();
    let tag = sealing_key(key)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(header.as_bytes()),
            &mut data,
        )
        .map_err(|_| "encryption failed".to_string())?;
    Ok(format!(
        "{header}..{}.{}.{}",
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(&data),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    ))
}

/// A parsed compact JWE of this pin: its header, the base64 header text (the AAD), IV,
/// ciphertext and tag.
struct Parsed<'a> {
    protected: Protected,
    header: &'a str,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

fn parse(jwe: &str) -> Result<Parsed<'_>, String> {
    let not_jwe = || "the input is not a compact JWE".to_string();
    let parts: Vec<&str> = jwe.split('.').collect();
    let [header, encrypted_key, iv, ciphertext, tag] = parts[..] else {
        return Err(not_jwe());
    };
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| not_jwe());
    let protected: Protected = serde_json::from_slice(&b64(header)?)
        .map_err(|_| "JWE is missing the required 'clevis.pin' header property".to_string())?;
    if protected.clevis.pin != PIN {
        return Err(format!(
            "JWE pin mismatch: this is the '{}' pin's, not '{PIN}'",
            protected.clevis.pin
        ));
    }
    if protected.alg != "dir" || protected.enc != "A256GCM" || !encrypted_key.is_empty() {
        return Err(format!(
            "unsupported JWE: alg {} enc {} (this pin makes dir + A256GCM)",
            protected.alg, protected.enc
        ));
    }
    let (iv, ciphertext, tag) = (b64(iv)?, b64(ciphertext)?, b64(tag)?);
    if iv.len() != NONCE_LEN || tag.len() != 16 {
        return Err(not_jwe());
    }
    Ok(Parsed {
        protected,
        header,
        iv,
        ciphertext,
        tag,
    })
}

/// Opens a parsed JWE with the data key `key`.
fn open(p: &Parsed<'_>, key: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let nonce = Nonce::try_assume_unique_for_key(&p.iv).map_err(|_| "bad IV".to_string())?;
    let mut data = Zeroizing::new(p.ciphertext.clone());
    data.extend_from_slice(&p.tag);
    let n = sealing_key(key)?
        .open_in_place(nonce, Aad::from(p.header.as_bytes()), &mut data)
        .map_err(|_| "the JWE does not authenticate under its data key (altered)".to_string())?
        .len();
    data.truncate(n);
    Ok(data)
}

/// The plaintext data key of a KMS answer.
fn data_key(plaintext: Option<Blob>) -> Result<Zeroizing<Vec<u8>>, String> {
    plaintext
        .map(|b| Zeroizing::new(b.into_inner()))
        .ok_or_else(|| "KMS returned no data key".to_string())
}

fn encrypt(config: &Config, plaintext: &[u8]) -> Result<String, String> {
    let (rt, client) =
        crate::envelope::kms_client(config.endpoint.as_deref(), config.region.as_deref())?;
    let r = rt
        .block_on(
            client
                .generate_data_key()
                .key_id(&config.key)
                .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                .set_encryption_context(
                    (!config.context.is_empty()).then(|| config.context.clone()),
                )
                .send(),
        )
        .map_err(|e| format!("{}: {}", config.key, crate::envelope::kms_error(e)))?;
    let key = data_key(r.plaintext)?;
    let protected = Protected {
        alg: "dir".into(),
        enc: "A256GCM".into(),
        clevis: ClevisHeader {
            pin: PIN.into(),
            keyhold: Some(Binding {
                key: r.key_id.ok_or("KMS named no key")?,
                blob: STANDARD.encode(
                    r.ciphertext_blob
                        .ok_or("KMS returned no encrypted data key")?
                        .into_inner(),
                ),
                context: config.context.clone(),
                endpoint: config.endpoint.clone(),
                region: config.region.clone(),
            }),
        },
    };
    seal(&protected, &key, plaintext)
}

fn decrypt(jwe: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let p = parse(jwe)?;
    let b = p
        .protected
        .clevis
        .keyhold
        .as_ref()
        .ok_or("JWE is missing the 'clevis.keyhold' header property")?;
    let blob = STANDARD
        .decode(&b.blob)
        .map_err(|_| "the JWE's encrypted data key is not base64".to_string())?;
    let (rt, client) = crate::envelope::kms_client(b.endpoint.as_deref(), b.region.as_deref())?;
    let r = rt
        .block_on(
            client
                .decrypt()
                .key_id(&b.key)
                .ciphertext_blob(Blob::new(blob))
                .set_encryption_context((!b.context.is_empty()).then(|| b.context.clone()))
                .send(),
        )
        .map_err(|e| format!("{}: {}", b.key, crate::envelope::kms_error(e)))?;
    let key = data_key(r.plaintext)?;
    open(&p, &key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protected() -> Protected {
        Protected {
            alg: "dir".into(),
            enc: "A256GCM".into(),
            clevis: ClevisHeader {
                pin: PIN.into(),
                keyhold: Some(Binding {
                    key: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
                    blob: "AAAA".into(),
                    context: HashMap::from([("disk".into(), "d1".into())]),
                    endpoint: None,
                    region: None,
                }),
            },
        }
    }

    #[test]
    fn a_sealed_jwe_opens_with_its_key_only() {
        let key = [7u8; 32];
        let jwe = seal(&protected(), &key, b"passphrase").unwrap();
        assert_eq!(jwe.split('.').count(), 5);
        let p = parse(&jwe).unwrap();
        assert_eq!(&open(&p, &key).unwrap()[..], b"passphrase");
        assert!(open(&p, &[8u8; 32]).is_err());
    }

    #[test]
    fn an_altered_header_or_body_is_refused() {
        let key = [7u8; 32];
        let jwe = seal(&protected(), &key, b"passphrase").unwrap();
        let parts: Vec<&str> = jwe.split('.').collect();
        // Another context in the header: the AAD changes, so the tag fails.
        let mut other = protected();
        if let Some(b) = other.clevis.keyhold.as_mut() {
            b.context.insert("disk".into(), "d2".into());
        }
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        let swapped = [header.as_str(), "", parts[2], parts[3], parts[4]].join(".");
        assert!(open(&parse(&swapped).unwrap(), &key).is_err());
        let mut body = URL_SAFE_NO_PAD.decode(parts[3]).unwrap();
        body[0] ^= 1;
        let flipped = [
            parts[0],
            "",
            parts[2],
            &URL_SAFE_NO_PAD.encode(body),
            parts[4],
        ]
        .join(".");
        assert!(open(&parse(&flipped).unwrap(), &key).is_err());
    }

    #[test]
    fn other_pins_and_shapes_are_refused() {
        assert!(parse("not a jwe").is_err());
        assert!(parse("a.b.c").is_err());
        let mut tang = protected();
        tang.clevis.pin = "tang".into();
        let jwe = seal(&tang, &[7u8; 32], b"x").unwrap();
        let e = parse(&jwe).err().unwrap_or_default();
        assert!(e.contains("pin mismatch"), "{e}");
        let mut rsa = protected();
        rsa.alg = "RSA-OAEP".into();
        let jwe = seal(&rsa, &[7u8; 32], b"x").unwrap();
        assert!(parse(&jwe).is_err());
    }

    #[test]
    fn configs_with_unknown_fields_are_malformed() {
        assert!(serde_json::from_str::<Config>(r#"{"key":"alias/k","kye":"x"}"#).is_err());
        let c: Config =
            serde_json::from_str(r#"{"key":"alias/aws/ebs","context":{"disk":"d1"}}"#).unwrap();
        assert_eq!(c.context.get("disk").map(String::as_str), Some("d1"));
    }
}
