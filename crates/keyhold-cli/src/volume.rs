//! `keyhold volume`: EBS-style encrypted volumes from keyhold's volume service (the EC2 API),
//! configured from the AWS environment like the AWS tools (`AWS_ENDPOINT_URL_EC2` or
//! `AWS_ENDPOINT_URL`, the region, credentials and profiles, `AWS_CA_BUNDLE`). The service
//! keeps the LUKS2 images and their data keys; `attach` opens a volume on this host with
//! `cryptsetup open` where device-mapper is usable, and otherwise hands the passphrase over.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use keyhold_sigv4::{Scope, Signer};
use zeroize::Zeroizing;

/// `keyhold volume`.
#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (encrypted when --encrypted, --key or --snapshot of an encrypted
    /// snapshot asks, or when encryption by default is on); prints its id.
    Create {
        /// Size in GiB (default: the snapshot's).
        #[arg(long)]
        size: Option<u64>,
        /// Encrypt it (under --key, else the account's default EBS key, else alias/aws/ebs).
        #[arg(long)]
        encrypted: bool,
        /// The KMS key to encrypt under (implies --encrypted).
        #[arg(long)]
        key: Option<String>,
        /// Make it from this snapshot.
        #[arg(long)]
        snapshot: Option<String>,
        /// Availability Zone (default: the region's first, REGIONa).
        #[arg(long)]
        availability_zone: Option<String>,
        /// Volume type.
        #[arg(long = "type", default_value = "gp3")]
        volume_type: String,
    },
    /// List the account's volumes.
    List,
    /// Attach a volume to this host: the service decrypts its data key (so the key must be
    /// usable now), then `cryptsetup open IMAGE NAME` where this host allows device-mapper;
    /// otherwise (or with --key-file) the passphrase is written out for the caller.
    Attach {
        /// The volume id.
        volume: String,
        /// The device-mapper name (default: the volume id).
        #[arg(long)]
        name: Option<String>,
        /// Write the LUKS passphrase here (`-`: standard output) instead of opening the
        /// volume, for `cryptsetup open IMAGE NAME --key-file FILE`.
        #[arg(long)]
        key_file: Option<String>,
    },
    /// Write the passphrase of a volume attached to this host again (`-`: standard output).
    Unlock {
        /// The volume id.
        volume: String,
        /// Where the passphrase goes.
        #[arg(long, default_value = "-")]
        key_file: String,
    },
    /// Close a volume opened by attach (when open) and detach it.
    Detach {
        /// The volume id.
        volume: String,
        /// The device-mapper name used at attach (default: the volume id).
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a volume that is not attached.
    Delete {
        /// The volume id.
        volume: String,
    },
    /// Snapshot a volume (a copy of its image, encrypted under the same key); prints its id.
    Snapshot {
        /// The volume id.
        volume: String,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the account's snapshots.
    Snapshots,
    /// Delete a snapshot.
    DeleteSnapshot {
        /// The snapshot id.
        snapshot: String,
    },
    /// Show, or change, whether new volumes are encrypted by default and with which key.
    DefaultEncryption {
        /// Encrypt every new volume.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Stop encrypting new volumes by default.
        #[arg(long)]
        disable: bool,
        /// The default key of new encrypted volumes.
        #[arg(long, conflicts_with = "reset_key")]
        key: Option<String>,
        /// Go back to alias/aws/ebs as the default key.
        #[arg(long)]
        reset_key: bool,
    },
}

/// An XML element of a response.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn text_of(&self, name: &str) -> &str {
        self.child(name).map_or("", |c| c.text.as_str())
    }

    /// The `item`s of the child set `name`.
    fn items(&self, name: &str) -> impl Iterator<Item = &Element> {
        self.child(name)
            .into_iter()
            .flat_map(|s| s.children.iter().filter(|c| c.name == "item"))
    }
}

/// Parses an XML document into its root element.
fn parse_xml(doc: &[u8]) -> Result<Element, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(doc);
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => stack.push(Element {
                name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                ..Element::default()
            }),
            Ok(Event::Empty(e)) => {
                let el = Element {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Element::default()
                };
                if let Some(top) = stack.last_mut() {
                    top.children.push(el);
                }
            }
            Ok(Event::Text(t)) => {
                let text = t.decode().map_err(|e| format!("bad XML: {e}"))?;
                let text =
                    quick_xml::escape::unescape(&text).map_err(|e| format!("bad XML: {e}"))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Ok(Event::GeneralRef(r)) => {
                let name = r.decode().map_err(|e| format!("bad XML: {e}"))?;
                let text = quick_xml::escape::unescape(&format!("&{name};"))
                    .map_err(|e| format!("bad XML: {e}"))?
                    .into_owned();
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Ok(Event::End(_)) => {
                let done = stack.pop().ok_or("bad XML: unbalanced")?;
                stack
                    .last_mut()
                    .ok_or("bad XML: unbalanced")?
                    .children
                    .push(done);
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("bad XML: {e}")),
        }
        buf.clear();
    }
    stack
        .pop()
        .and_then(|mut d| d.children.pop())
        .ok_or_else(|| "empty XML response".to_string())
}

/// A connection to the volume service.
struct Client {
    uri: Uri,
    host: String,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
    signer: Signer,
    region: String,
    session_token: Option<String>,
}

fn tls_config(host: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let bundle = std::env::var_os("AWS_CA_BUNDLE")
        .filter(|b| !b.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let roots = crate::bench::roots_from_pem(&bundle).map_err(|e| {
        format!(
            "{e} (set AWS_CA_BUNDLE to the CA that signed {host}'s certificate: `keyhold ca \
             cert` prints keyhold's)"
        )
    })?;
    crate::bench::client_config(roots, false)
}

impl Client {
    async fn from_environment() -> Result<Self, String> {
        let conf = crate::envelope::aws_environment(None, None).await?;
        let endpoint = std::env::var("AWS_ENDPOINT_URL_EC2")
            .ok()
            .filter(|e| !e.is_empty())
            .or_else(|| conf.endpoint_url().map(str::to_string))
            .ok_or(
                "no endpoint: set AWS_ENDPOINT_URL_EC2 or AWS_ENDPOINT_URL to keyhold's address \
                 (the one `keyhold serve` prints)",
            )?;
        let (uri, host, name) = crate::bench::endpoint_parts(&endpoint, "endpoint")?;
        let tls = match name {
            None => None,
            Some(name) => Some((tls_config(&host)?, name)),
        };
        use aws_credential_types::provider::ProvideCredentials;
        let creds = conf
            .credentials_provider()
            .ok_or("no AWS credentials in the environment or profile")?
            .provide_credentials()
            .await
            .map_err(|e| format!("AWS credentials: {e}"))?;
        let region = conf.region().map(|r| r.to_string()).unwrap_or_default();
        let signer = Signer::new(
            creds.access_key_id(),
            creds.secret_access_key().as_bytes(),
            Scope {
                service: "ec2",
                region: &region,
            },
        );
        Ok(Self {
            uri,
            host,
            tls,
            signer,
            region,
            session_token: creds.session_token().map(str::to_string),
        })
    }

    fn region(&self) -> &str {
        &self.region
    }

    /// Sends one action with its parameters; the response's root element, or the service's
    /// error as `Code: message`.
    async fn call(&mut self, action: &str, params: &[(&str, &str)]) -> Result<Element, String> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action);
        form.append_pair("Version", "2016-11-15");
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let body = Bytes::from(form.finish());
        let path = match self.uri.path() {
            "" => "/",
            p => p,
        };
        let path: Uri = path.parse().map_err(|e| format!("{e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        headers.insert(
            "host",
            HeaderValue::from_str(&self.host).map_err(|e| e.to_string())?,
        );
        headers.insert(
            "user-agent",
            HeaderValue::from_static(concat!("keyhold/", env!("CARGO_PKG_VERSION"), " volume")),
        );
        if let Some(token) = &self.session_token {
            headers.insert(
                "x-amz-security-token",
                HeaderValue::from_str(token).map_err(|e| e.to_string())?,
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        self.signer
            .sign(&Method::POST, &path, &mut headers, &body, now)
            .map_err(|e| e.to_string())?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = headers;
        let tcp = tokio::net::TcpStream::connect(&self.host)
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the volume service at {} (AWS_ENDPOINT_URL_EC2 or \
                     AWS_ENDPOINT_URL): {e}",
                    self.uri
                )
            })?;
        let resp = match &self.tls {
            None => send(TokioIo::new(tcp), req).await?,
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.host))?;
                send(TokioIo::new(tls), req).await?
            }
        };
        let (status, body) = resp;
        let root = parse_xml(&body).map_err(|e| format!("{action}: HTTP {status}: {e}"))?;
        if status != 200 {
            let err = root
                .child("Errors")
                .and_then(|e| e.child("Error"))
                .map(|e| format!("{}: {}", e.text_of("Code"), e.text_of("Message")))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(err);
        }
        Ok(root)
    }
}

async fn send<IO>(io: TokioIo<IO>, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// This host's instance id: `i-` and 17 hex digits of a hash of its machine id (or host
/// name), the same on every run.
fn instance_id() -> String {
    let seed = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_else(|| "keyhold-host".into());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.trim().as_bytes());
    format!("i-{}", &hex::encode(digest.as_ref())[..17])
}

/// What `cryptsetup open` did.
enum Opened {
    Yes,
    /// device-mapper is not usable here (a container, say).
    NoDeviceMapper,
    Failed(String),
}

/// `cryptsetup open --type luks2 IMAGE NAME` with the passphrase on standard input.
fn cryptsetup_open(image: &str, name: &str, pass: &[u8]) -> Result<Opened, String> {
    let program = keyhold_volumes::image::cryptsetup().ok_or("cryptsetup is not installed")?;
    let mut child = std::process::Command::new(program)
        .args(["open", "--type", "luks2", "--key-file", "-"])
        .arg(image)
        .arg(name)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cryptsetup: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(pass)
            .map_err(|e| format!("cryptsetup: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cryptsetup: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    Ok(if out.status.success() {
        Opened::Yes
    } else if stderr.contains("device-mapper") {
        Opened::NoDeviceMapper
    } else {
        Opened::Failed(stderr.trim().to_string())
    })
}

/// Whether `cryptsetup open` may work here: device-mapper's control device is present, we
/// are root and cryptsetup is installed.
fn device_mapper_present() -> bool {
    Path::new("/dev/mapper/control").exists()
        && std::fs::metadata("/proc/self")
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid() == 0
            })
            .unwrap_or(false)
        && keyhold_volumes::image::cryptsetup().is_some()
}

/// Writes a passphrase to `to` (`-`: standard output; a file is made readable by its owner
/// only, and never replaces one).
fn write_key_file(to: &str, pass: &[u8]) -> Result<(), String> {
    if to == "-" {
        let mut out = std::io::stdout();
        return out
            .write_all(pass)
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(to).map_err(|e| format!("{to}: {e}"))?;
    f.write_all(pass).map_err(|e| format!("{to}: {e}"))
}

/// The unlock of an attached volume: its image path and, when encrypted, its passphrase.
async fn unlock(
    c: &mut Client,
    volume: &str,
) -> Result<(String, Option<Zeroizing<String>>), String> {
    let instance = instance_id();
    let r = c
        .call(
            "UnlockVolume",
            &[("VolumeId", volume), ("InstanceId", &instance)],
        )
        .await?;
    let image = r.text_of("imagePath").to_string();
    let pass = r
        .child("passphrase")
        .map(|p| Zeroizing::new(p.text.clone()));
    Ok((image, pass))
}

fn print_volumes(root: &Element) {
    println!(
        "{:<22} {:>6} {:<10} {:<10} {:<12} KEY",
        "VOLUME", "GiB", "STATE", "ENCRYPTED", "ATTACHED-TO"
    );
    for v in root.items("volumeSet") {
        let attached = v
            .items("attachmentSet")
            .next()
            .map_or("-", |a| a.text_of("instanceId"));
        println!(
            "{:<22} {:>6} {:<10} {:<10} {:<12} {}",
            v.text_of("volumeId"),
            v.text_of("size"),
            v.text_of("status"),
            v.text_of("encrypted"),
            attached,
            match v.text_of("kmsKeyId") {
                "" => "-",
                k => k,
            }
        );
    }
}

/// Runs `keyhold volume ...`.
pub fn run(cmd: VolumeCommand) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: VolumeCommand) -> Result<(), String> {
    let mut c = Client::from_environment().await?;
    match cmd {
        VolumeCommand::Create {
            size,
            encrypted,
            key,
            snapshot,
            availability_zone,
            volume_type,
        } => {
            let az = availability_zone.unwrap_or_else(|| format!("{}a", c.region()));
            let size = size.map(|s| s.to_string());
            let mut params = vec![
                ("AvailabilityZone", az.as_str()),
                ("VolumeType", &volume_type),
            ];
            if let Some(s) = &size {
                params.push(("Size", s));
            }
            if encrypted || key.is_some() {
                params.push(("Encrypted", "true"));
            }
            if let Some(k) = &key {
                params.push(("KmsKeyId", k));
            }
            if let Some(s) = &snapshot {
                params.push(("SnapshotId", s));
            }
            let r = c.call("CreateVolume", &params).await?;
            println!("{}", r.text_of("volumeId"));
            Ok(())
        }
        VolumeCommand::List => {
            let r = c.call("DescribeVolumes", &[]).await?;
            print_volumes(&r);
            Ok(())
        }
        VolumeCommand::Attach {
            volume,
            name,
            key_file,
        } => {
            let name = name.unwrap_or_else(|| volume.clone());
            let instance = instance_id();
            let device = format!("/dev/mapper/{name}");
            c.call(
                "AttachVolume",
                &[
                    ("VolumeId", &volume),
                    ("InstanceId", &instance),
                    ("Device", &device),
                ],
            )
            .await?;
            let (image, pass) = unlock(&mut c, &volume).await?;
            let Some(pass) = pass else {
                eprintln!("{volume} is unencrypted: its image is {image}");
                return Ok(());
            };
            if let Some(to) = key_file {
                write_key_file(&to, pass.as_bytes())?;
                eprintln!(
                    "{volume} attached to {instance}; open it with: cryptsetup open {image} \
                     {name} --key-file {}",
                    if to == "-" { "-" } else { &to }
                );
                return Ok(());
            }
            if device_mapper_present() {
                match cryptsetup_open(&image, &name, pass.as_bytes())? {
                    Opened::Yes => {
                        println!("{device}");
                        return Ok(());
                    }
                    Opened::NoDeviceMapper => {}
                    Opened::Failed(why) => {
                        return Err(format!(
                            "cryptsetup open {image} {name} failed: {why}; the volume stays \
                             attached: `keyhold volume detach {volume}`"
                        ))
                    }
                }
            }
            // No device-mapper here: the unlock goes to the caller.
            println!("volume:     {volume}");
            println!("image:      {image}");
            println!("passphrase: {}", pass.as_str());
            eprintln!(
                "device-mapper is not usable here (root and a working /dev/mapper/control are \
                 needed): open the image with `cryptsetup open {image} {name}` and this \
                 passphrase where it is, or use --key-file"
            );
            Ok(())
        }
        VolumeCommand::Unlock { volume, key_file } => {
            let (image, pass) = unlock(&mut c, &volume).await?;
            match pass {
                Some(p) => write_key_file(&key_file, p.as_bytes()),
                None => Err(format!("{volume} is unencrypted: its image is {image}")),
            }
        }
        VolumeCommand::Detach { volume, name } => {
            let name = name.unwrap_or_else(|| volume.clone());
            if Path::new("/dev/mapper").join(&name).exists() {
                let program =
                    keyhold_volumes::image::cryptsetup().ok_or("cryptsetup is not installed")?;
                let status = std::process::Command::new(program)
                    .args(["close", &name])
                    .status()
                    .map_err(|e| format!("cryptsetup: {e}"))?;
                if !status.success() {
                    return Err(format!("cryptsetup close {name} failed ({status})"));
                }
            }
            c.call("DetachVolume", &[("VolumeId", &volume)]).await?;
            Ok(())
        }
        VolumeCommand::Delete { volume } => {
            c.call("DeleteVolume", &[("VolumeId", &volume)]).await?;
            Ok(())
        }
        VolumeCommand::Snapshot {
            volume,
            description,
        } => {
            let r = c
                .call(
                    "CreateSnapshot",
                    &[("VolumeId", &volume), ("Description", &description)],
                )
                .await?;
            println!("{}", r.text_of("snapshotId"));
            Ok(())
        }
        VolumeCommand::Snapshots => {
            let r = c.call("DescribeSnapshots", &[]).await?;
            println!(
                "{:<23} {:<22} {:>6} {:<10} KEY",
                "SNAPSHOT", "VOLUME", "GiB", "ENCRYPTED"
            );
            for s in r.items("snapshotSet") {
                println!(
                    "{:<23} {:<22} {:>6} {:<10} {}",
                    s.text_of("snapshotId"),
                    s.text_of("volumeId"),
                    s.text_of("volumeSize"),
                    s.text_of("encrypted"),
                    match s.text_of("kmsKeyId") {
                        "" => "-",
                        k => k,
                    }
                );
            }
            Ok(())
        }
        VolumeCommand::DeleteSnapshot { snapshot } => {
            c.call("DeleteSnapshot", &[("SnapshotId", &snapshot)])
                .await?;
            Ok(())
        }
        VolumeCommand::DefaultEncryption {
            enable,
            disable,
            key,
            reset_key,
        } => {
            if enable {
                c.call("EnableEbsEncryptionByDefault", &[]).await?;
            }
            if disable {
                c.call("DisableEbsEncryptionByDefault", &[]).await?;
            }
            if let Some(k) = &key {
                c.call("ModifyEbsDefaultKmsKeyId", &[("KmsKeyId", k)])
                    .await?;
            }
            if reset_key {
                c.call("ResetEbsDefaultKmsKeyId", &[]).await?;
            }
            let on = c.call("GetEbsEncryptionByDefault", &[]).await?;
            let key = c.call("GetEbsDefaultKmsKeyId", &[]).await?;
            println!(
                "encryption by default: {}",
                if on.text_of("ebsEncryptionByDefault") == "true" {
                    "on"
                } else {
                    "off"
                }
            );
            println!("default key:           {}", key.text_of("kmsKeyId"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_into_elements_with_unescaped_text() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId>
<volumeSet><item><volumeId>vol-1</volumeId><snapshotId/><attachmentSet><item><instanceId>i-1</instanceId></item></attachmentSet></item>
<item><volumeId>vol-2</volumeId><description>a &amp; b</description><attachmentSet/></item></volumeSet></DescribeVolumesResponse>"#;
        let root = parse_xml(doc).unwrap();
        assert_eq!(root.name, "DescribeVolumesResponse");
        let items: Vec<&Element> = root.items("volumeSet").collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].text_of("volumeId"), "vol-1");
        assert_eq!(
            items[0]
                .items("attachmentSet")
                .next()
                .map(|a| a.text_of("instanceId")),
            Some("i-1")
        );
        assert_eq!(items[1].text_of("description"), "a & b");
        assert!(parse_xml(b"<a><b></a>").is_err());
    }

    #[test]
    fn the_instance_id_is_stable_and_well_formed() {
        let id = instance_id();
        assert_eq!(id, instance_id());
        assert_eq!(id.len(), 19);
        assert!(id.starts_with("i-"));
    }
}
