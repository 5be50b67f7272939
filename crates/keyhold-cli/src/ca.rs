//! `keyhold ca cert` and `keyhold ca issue`: the private CA as a small internal CA.

use std::io::Write;
use std::path::PathBuf;

use keyhold_server::tls::ca::{KeyType, PrivateCa};

use crate::datadir::{now_secs, RootWrapper};
use crate::DataDirArg;

/// `keyhold ca` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Print the CA certificate (PEM), for clients to trust (AWS_CA_BUNDLE).
    Cert {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Issue a certificate (server and client authentication) for another service.
    Issue {
        #[command(flatten)]
        dir: DataDirArg,
        /// DNS name or IP address (repeatable; the first is the subject).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// ecdsa-p256, ecdsa-p384, ed25519 or rsa-2048.
        #[arg(long, default_value = "ecdsa-p256")]
        key_type: String,
        /// Write NAME.pem and NAME.key (0600) into this directory instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn load(dir: &DataDirArg) -> Result<PrivateCa, String> {
    let d = dir.open();
    let (root, _store) = d.open()?;
    if !PrivateCa::exists(&d.tls_dir()) {
        return Err(format!(
            "{} has no private CA (it was made before TLS existed: start `keyhold serve` once)",
            d.root.display()
        ));
    }
    PrivateCa::load(&d.tls_dir(), &RootWrapper(root)).map_err(|e| e.to_string())
}

/// Runs a `keyhold ca` command.
pub fn run(cmd: CaCommand) -> Result<(), String> {
    match cmd {
        CaCommand::Cert { dir } => {
            print!("{}", load(&dir)?.cert_pem());
            Ok(())
        }
        CaCommand::Issue {
            dir,
            names,
            days,
            key_type,
            out,
        } => {
            let kt = KeyType::parse(&key_type).ok_or_else(|| {
                format!("--key-type {key_type:?}: use ecdsa-p256, ecdsa-p384, ed25519 or rsa-2048")
            })?;
            if !(1..=3650).contains(&days) {
                return Err("--days must be between 1 and 3650".into());
            }
            let ca = load(&dir)?;
            let (cert, key) = ca
                .issue(&names, days * 86_400, kt, now_secs())
                .map_err(|e| e.to_string())?;
            match out {
                None => {
                    print!("{cert}{}", key.as_str());
                }
                Some(out) => {
                    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
                    let base = names[0].replace(['/', ':'], "_");
                    let cert_path = out.join(format!("{base}.pem"));
                    std::fs::write(&cert_path, cert.as_bytes())
                        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
                    let key_path = out.join(format!("{base}.key"));
                    let mut opts = std::fs::OpenOptions::new();
                    opts.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::OpenOptionsExt;
                        opts.mode(0o600);
                    }
                    opts.open(&key_path)
                        .and_then(|mut f| f.write_all(key.as_bytes()))
                        .map_err(|e| format!("{}: {e}", key_path.display()))?;
                    println!("{}", cert_path.display());
                    println!("{}", key_path.display());
                }
            }
            Ok(())
        }
    }
}
