//! `keyhold encrypt` and `keyhold decrypt`: files in the AWS Encryption SDK message format,
//! their data keys from keyhold (or any AWS KMS) through the AWS SDK for Rust, configured from
//! the AWS environment like the AWS tools (endpoint, region, credentials and profiles,
//! `AWS_CA_BUNDLE`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use aws_sdk_kms::primitives::Blob;
use keyhold_esdk::{Context, Edk, Error as EsdkError, Keyring, Suite};
use zeroize::Zeroizing;

const AWS_KMS: &str = "aws-kms";

/// `keyhold encrypt`.
#[derive(Debug, clap::Args)]
pub struct EncryptArgs {
    /// A KMS key to encrypt under (key id, ARN, alias name or alias ARN); repeat it so that
    /// any one of the keys can decrypt. The first makes the data key.
    #[arg(long = "key", required = true)]
    keys: Vec<String>,
    /// An encryption context pair `KEY=VALUE`, bound to the message (repeatable).
    #[arg(long = "context", value_parser = pair)]
    context: Vec<(String, String)>,
    /// Sign the message (suite AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384): a decrypt then
    /// proves the message came from someone who could encrypt, not only from a key user.
    #[arg(long)]
    signed: bool,
    /// Plaintext bytes per frame.
    #[arg(long, default_value_t = keyhold_esdk::DEFAULT_FRAME)]
    frame_length: u32,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,
    /// Where the message goes (`-`: standard output; a directory with --recursive).
    #[arg(short = 'o', long = "output")]
    output: String,
    #[command(flatten)]
    common: Common,
    /// The plaintext (`-`: standard input; a directory with --recursive).
    input: String,
}

/// Options both commands take.
#[derive(Debug, clap::Args)]
struct Common {
    /// INPUT is a directory: every file under it, into the same tree under OUTPUT (a message
    /// gets the suffix `.encrypted`; a decrypt drops it, or adds `.decrypted`).
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Write one JSON line per file (its header: suite, message id, encryption context,
    /// encrypted data keys, frame length) to this file (`-`: standard output), as the
    /// aws-encryption-cli does.
    #[arg(long)]
    metadata_output: Option<String>,
}

/// `keyhold decrypt`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each frame's plaintext is written only after that frame's tag checks. \
A signed message's signature covers the whole message and is checked at its end: a file output \
appears (renamed into place) only after that check, but plaintext sent to standard output has \
been written before it; a failed check then ends with an error and a non-zero exit, and what was \
written must be discarded."
)]
pub struct DecryptArgs {
    /// Use only these KMS keys (default: any key named in the message that you may use).
    #[arg(long = "key")]
    keys: Vec<String>,
    /// A pair `KEY=VALUE` the message's encryption context must hold (repeatable).
    #[arg(long = "context", value_parser = pair)]
    context: Vec<(String, String)>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,
    /// Where the plaintext goes (`-`: standard output; a directory with --recursive).
    #[arg(short = 'o', long = "output")]
    output: String,
    #[command(flatten)]
    common: Common,
    /// The message (`-`: standard input; a directory with --recursive).
    input: String,
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// Data keys from KMS: GenerateDataKey under the first key, Encrypt under the others, and
/// Decrypt of the message's `aws-kms` keys.
struct KmsKeyring {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_kms::Client,
    keys: Vec<String>,
}

pub(crate) fn kms_error<E>(e: aws_sdk_kms::error::SdkError<E>) -> String
where
    E: std::error::Error + aws_sdk_kms::error::ProvideErrorMetadata + 'static,
{
    match e.as_service_error().map(|s| (s.code(), s.message())) {
        Some((Some(code), msg)) => format!("{code}: {}", msg.unwrap_or("")),
        _ => match e {
            aws_sdk_kms::error::SdkError::DispatchFailure(_)
            | aws_sdk_kms::error::SdkError::TimeoutError(_) => format!(
                "cannot reach KMS (AWS_ENDPOINT_URL_KMS or AWS_ENDPOINT_URL): {}",
                aws_sdk_kms::error::DisplayErrorContext(&e)
            ),
            other => aws_sdk_kms::error::DisplayErrorContext(other).to_string(),
        },
    }
}

impl Keyring for KmsKeyring {
    fn generate(&self, context: &Context) -> Result<(Zeroizing<Vec<u8>>, Vec<Edk>), EsdkError> {
        let ctx: std::collections::HashMap<String, String> = context
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.rt.block_on(async {
            let first = &self.keys[0];
            let r = self
                .client
                .generate_data_key()
                .key_id(first)
                .number_of_bytes(32)
                .set_encryption_context(Some(ctx.clone()))
                .send()
                .await
                .map_err(|e| EsdkError::Keyring(format!("{first}: {}", kms_error(e))))?;
            let plaintext = Zeroizing::new(
                r.plaintext
                    .map(Blob::into_inner)
                    .ok_or_else(|| EsdkError::Keyring("no plaintext data key".into()))?,
            );
            let mut edks = vec![Edk {
                provider_id: AWS_KMS.into(),
                provider_info: r.key_id.unwrap_or_default().into_bytes(),
                ciphertext: r.ciphertext_blob.map(Blob::into_inner).unwrap_or_default(),
            }];
            for k in &self.keys[1..] {
                let r = self
                    .client
                    .encrypt()
                    .key_id(k)
                    .plaintext(Blob::new(plaintext.to_vec()))
                    .set_encryption_context(Some(ctx.clone()))
                    .send()
                    .await
                    .map_err(|e| EsdkError::Keyring(format!("{k}: {}", kms_error(e))))?;
                edks.push(Edk {
                    provider_id: AWS_KMS.into(),
                    provider_info: r.key_id.unwrap_or_default().into_bytes(),
                    ciphertext: r.ciphertext_blob.map(Blob::into_inner).unwrap_or_default(),
                });
            }
            Ok((plaintext, edks))
        })
    }

    fn decrypt(&self, edks: &[Edk], context: &Context) -> Result<Zeroizing<Vec<u8>>, EsdkError> {
        let ctx: std::collections::HashMap<String, String> = context
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.rt.block_on(async {
            // Keys given by the caller, as ARNs (the message names ARNs).
            let mut allowed = Vec::new();
            for k in &self.keys {
                let md = self
                    .client
                    .describe_key()
                    .key_id(k)
                    .send()
                    .await
                    .map_err(|e| EsdkError::Keyring(format!("{k}: {}", kms_error(e))))?;
                allowed.extend(md.key_metadata.and_then(|m| m.arn));
            }
            let mut tried = Vec::new();
            for e in edks.iter().filter(|e| e.provider_id == AWS_KMS) {
                let Ok(arn) = std::str::from_utf8(&e.provider_info) else {
                    continue;
                };
                if !self.keys.is_empty() && !allowed.iter().any(|a| a == arn) {
                    continue;
                }
                match self
                    .client
                    .decrypt()
                    .key_id(arn)
                    .ciphertext_blob(Blob::new(e.ciphertext.clone()))
                    .set_encryption_context(Some(ctx.clone()))
                    .send()
                    .await
                {
                    // The key that answered must be the one the message names.
                    Ok(r) if r.key_id.as_deref() == Some(arn) => {
                        if let Some(p) = r.plaintext {
                            return Ok(Zeroizing::new(p.into_inner()));
                        }
                        tried.push(format!("{arn}: no plaintext"));
                    }
                    Ok(r) => tried.push(format!(
                        "{arn}: KMS answered for another key ({})",
                        r.key_id.unwrap_or_default()
                    )),
                    Err(err) => tried.push(format!("{arn}: {}", kms_error(err))),
                }
            }
            Err(EsdkError::Keyring(if tried.is_empty() {
                "the message names no KMS key you allowed".into()
            } else {
                tried.join("; ")
            }))
        })
    }
}

/// A KMS client configured from the AWS environment, on a runtime of its own. `endpoint` and
/// `region`, when given, take the place of the environment's.
pub(crate) fn kms_client(
    endpoint: Option<&str>,
    region: Option<&str>,
) -> Result<(tokio::runtime::Runtime, aws_sdk_kms::Client), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = rt.block_on(async {
        let conf = aws_environment(endpoint, region).await?;
        Ok::<_, String>(aws_sdk_kms::Client::new(&conf))
    })?;
    Ok((rt, client))
}

/// The AWS configuration of the environment (endpoint, region, credentials and profiles,
/// `AWS_CA_BUNDLE`), with `endpoint` and `region` in place of the environment's when given.
pub(crate) async fn aws_environment(
    endpoint: Option<&str>,
    region: Option<&str>,
) -> Result<aws_config::SdkConfig, String> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE").filter(|b| !b.is_empty()) {
        let pem = std::fs::read(&bundle)
            .map_err(|e| format!("AWS_CA_BUNDLE {}: {e}", Path::new(&bundle).display()))?;
        use aws_smithy_http_client::tls;
        let context = tls::TlsContext::builder()
            .with_trust_store(
                tls::TrustStore::empty()
                    .with_native_roots(false)
                    .with_pem_certificate(pem),
            )
            .build()
            .map_err(|e| format!("AWS_CA_BUNDLE: {e}"))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(context)
            .build_https();
        loader = loader.http_client(http);
    }
    let conf = loader.load().await;
    if conf.region().is_none() {
        return Err(
            "no AWS Region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
                .to_string(),
        );
    }
    Ok(conf)
}

/// A KMS keyring configured from the AWS environment.
fn keyring(keys: Vec<String>) -> Result<KmsKeyring, String> {
    let (rt, client) = kms_client(None, None)?;
    Ok(KmsKeyring { rt, client, keys })
}

/// Where output goes: a temporary file beside the target, renamed into place only when the
/// work succeeded (so a failed decrypt leaves no plaintext), or standard output.
enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File {
        tmp: tempfile::NamedTempFile,
        to: PathBuf,
        force: bool,
    },
}

impl Sink {
    fn open(output: &str, force: bool) -> Result<Self, String> {
        if output == "-" {
            return Ok(Self::Stdout(std::io::BufWriter::new(std::io::stdout())));
        }
        let to = PathBuf::from(output);
        if to.exists() && !force {
            return Err(format!(
                "{output} exists: give --force to replace it (nothing was written)"
            ));
        }
        let dir = to
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".keyhold-")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot write beside {output}: {e}"))?;
        Ok(Self::File { tmp, to, force })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Self::Stdout(w) => w,
            Self::File { tmp, .. } => tmp.as_file_mut(),
        }
    }

    /// Keeps the output (the temporary file, synced, renamed into place).
    fn keep(self) -> Result<(), String> {
        match self {
            Self::Stdout(mut w) => w.flush().map_err(|e| e.to_string()),
            Self::File { tmp, to, force } => {
                tmp.as_file().sync_all().map_err(|e| e.to_string())?;
                let kept = if force {
                    tmp.persist(&to).map_err(|e| e.error)
                } else {
                    tmp.persist_noclobber(&to).map_err(|e| e.error)
                };
                kept.map(|_| ())
                    .map_err(|e| format!("{}: {e}", to.display()))
            }
        }
    }
}

fn reader(input: &str) -> Result<(Box<dyn Read>, Option<indicatif::ProgressBar>), String> {
    if input == "-" {
        return Ok((Box::new(std::io::BufReader::new(std::io::stdin())), None));
    }
    let f = std::fs::File::open(input).map_err(|e| format!("{input}: {e}"))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    // A bar on a terminal for files worth waiting for.
    let bar = (size >= 64 << 20).then(|| crate::progress::bytes(size, input));
    let f = std::io::BufReader::with_capacity(1 << 20, f);
    Ok(match &bar {
        Some(b) => (Box::new(b.wrap_read(f)), bar.clone()),
        None => (Box::new(f), None),
    })
}

/// The header as `--metadata-output` writes it.
fn metadata(mode: &str, input: &str, output: &str, h: &keyhold_esdk::Header) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    serde_json::json!({
        "mode": mode,
        "input": input,
        "output": output,
        "header": {
            "version": "2.0",
            "algorithm": h.suite.name(),
            "message_id": b64(&h.message_id),
            "encryption_context": h.context,
            "encrypted_data_keys": h.edks.iter().map(|e| serde_json::json!({
                "key_provider": {
                    "provider_id": e.provider_id,
                    "key_info": String::from_utf8_lossy(&e.provider_info),
                },
                "encrypted_data_key": b64(&e.ciphertext),
            })).collect::<Vec<_>>(),
            "content_type": 2,
            "frame_length": h.frame_len,
        }
    })
    .to_string()
}

/// The files one command works on: (input, output) pairs.
fn jobs(
    input: &str,
    output: &str,
    recursive: bool,
    encrypting: bool,
) -> Result<Vec<(String, String)>, String> {
    if !recursive {
        if input != "-" && Path::new(input).is_dir() {
            return Err(format!("{input} is a directory: give --recursive"));
        }
        return Ok(vec![(input.to_string(), output.to_string())]);
    }
    if input == "-" || output == "-" {
        return Err("--recursive works on directories, not standard input or output".into());
    }
    let root = Path::new(input);
    if !root.is_dir() {
        return Err(format!("{input} is not a directory"));
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(std::fs::DirEntry::path);
        for e in entries {
            let path = e.path();
            let kind = e
                .file_type()
                .map_err(|err| format!("{}: {err}", path.display()))?;
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let rel = path.strip_prefix(root).map_err(|e| e.to_string())?;
            let mut target = Path::new(output).join(rel);
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let renamed = if encrypting {
                format!("{name}.encrypted")
            } else {
                name.strip_suffix(".encrypted")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{name}.decrypted"))
            };
            target.set_file_name(renamed);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            out.push((
                path.to_string_lossy().into_owned(),
                target.to_string_lossy().into_owned(),
            ));
        }
    }
    Ok(out)
}

/// Where `--metadata-output` goes.
fn metadata_sink(common: &Common, output: &str) -> Result<Option<Box<dyn Write>>, String> {
    match common.metadata_output.as_deref() {
        None => Ok(None),
        Some("-") if output == "-" => {
            Err("--metadata-output - and -o - would share standard output".into())
        }
        Some("-") => Ok(Some(Box::new(std::io::stdout()))),
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|f| Some(Box::new(f) as Box<dyn Write>))
            .map_err(|e| format!("{path}: {e}")),
    }
}

/// Runs `f` over every (input, output) pair: each output appears only when `f` succeeded,
/// and its header goes to `--metadata-output`.
fn each_file(
    work: &[(String, String)],
    force: bool,
    meta: &mut Option<Box<dyn Write>>,
    mode: &str,
    mut f: impl FnMut(&mut dyn Read, &mut dyn Write) -> Result<keyhold_esdk::Header, EsdkError>,
) -> Result<(), String> {
    for (input, output) in work {
        let (mut reader, bar) = reader(input)?;
        let mut sink = Sink::open(output, force)?;
        // On an error the temporary file is dropped, and with it every byte written.
        let done = f(&mut reader, sink.writer()).map_err(|e| format!("{input}: {e}"));
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let header = done?;
        sink.keep()?;
        if let Some(m) = meta.as_mut() {
            writeln!(m, "{}", metadata(mode, input, output, &header)).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// `keyhold encrypt`.
pub fn encrypt(args: EncryptArgs) -> Result<(), String> {
    let context: Context = args.context.into_iter().collect();
    let work = jobs(&args.input, &args.output, args.common.recursive, true)?;
    let mut meta = metadata_sink(&args.common, &args.output)?;
    let keyring = keyring(args.keys)?;
    let suite = if args.signed {
        Suite::CommittedSigned
    } else {
        Suite::Committed
    };
    each_file(&work, args.force, &mut meta, "encrypt", |mut r, mut w| {
        keyhold_esdk::encrypt(&keyring, suite, &context, args.frame_length, &mut r, &mut w)
            .map(|e| e.header)
    })
}

/// `keyhold decrypt`.
pub fn decrypt(args: DecryptArgs) -> Result<(), String> {
    let required: Context = args.context.into_iter().collect();
    let work = jobs(&args.input, &args.output, args.common.recursive, false)?;
    let mut meta = metadata_sink(&args.common, &args.output)?;
    let keyring = keyring(args.keys)?;
    let required = (!required.is_empty()).then_some(&required);
    each_file(&work, args.force, &mut meta, "decrypt", |mut r, mut w| {
        keyhold_esdk::decrypt(&keyring, required, &mut r, &mut w)
    })
}
