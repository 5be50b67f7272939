//! `keyhold ca cert`, `keyhold ca issue` and `keyhold ca list`: the private CA as a small
//! internal CA; `keyhold admin acme-account`: the external account bindings its ACME server
//! requires.

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
    /// List the certificates issued (through ACME and by `ca issue`): serial, names, expiry and
    /// state (valid, expiring within 7 days, expired, revoked).
    List {
        #[command(flatten)]
        dir: DataDirArg,
        /// One JSON object per certificate.
        #[arg(long)]
        json: bool,
    },
}

/// `keyhold admin acme-account` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AcmeAccountCommand {
    /// Make external account binding credentials for one ACME client (certbot's --eab-kid and
    /// --eab-hmac-key), limited to the names --allow gives.
    Create {
        #[command(flatten)]
        dir: DataDirArg,
        /// The keyhold account (12-digit account id) the binding belongs to, in the audit log.
        #[arg(long, default_value = "111122223333")]
        account: String,
        /// A name its certificates may carry: `svc.example` exactly, `*.internal.example` for
        /// any name under it, `*` for any (repeatable; default `*`).
        #[arg(long)]
        allow: Vec<String>,
        /// Print `{"eab_kid": ..., "eab_hmac_key": ...}`.
        #[arg(long)]
        json: bool,
    },
    /// List the external account bindings (never their keys).
    List {
        #[command(flatten)]
        dir: DataDirArg,
    },
}

/// Runs `keyhold admin acme-account ...`.
pub fn acme_account(cmd: AcmeAccountCommand) -> Result<(), String> {
    match cmd {
        AcmeAccountCommand::Create {
            dir,
            account,
            allow,
            json,
        } => {
            if !keyhold_core::ids::is_account_id(&account) {
                return Err(format!(
                    "--account {account:?} is not a 12-digit account id"
                ));
            }
            for a in &allow {
                let name = a.strip_prefix("*.").unwrap_or(a);
                if a != "*" && (name.is_empty() || name.contains('*')) {
                    return Err(format!(
                        "--allow {a:?}: use a name, *.DOMAIN or * (one leading wildcard label)"
                    ));
                }
            }
            let d = dir.open();
            let (root, store) = d.open()?;
            let wrapper = RootWrapper(root);
            let (kid, key) =
                keyhold_acme::create_eab(&d.root.join("acme"), &wrapper, &account, &allow)?;
            crate::admin::audit_admin(
                store.as_ref(),
                "CreateAcmeAccountBinding",
                serde_json::json!({"eabKid": kid, "accountId": account, "allow": allow}),
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"eab_kid": kid, "eab_hmac_key": key.as_str()})
                );
            } else {
                println!("eab kid:      {kid}");
                println!("eab hmac key: {}", key.as_str());
            }
            Ok(())
        }
        AcmeAccountCommand::List { dir } => {
            let d = dir.open();
            println!("{:<28} {:<14} ALLOW", "EAB KID", "ACCOUNT");
            for e in keyhold_acme::list_eab(&d.root.join("acme"))? {
                println!("{:<28} {:<14} {}", e.kid, e.account, e.allow.join(","));
            }
            Ok(())
        }
    }
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
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
        CaCommand::List { dir, json } => {
            let d = dir.open();
            let now = now_secs() * 1000;
            if !json {
                println!("{:<34} {:<9} {:<21} NAMES", "SERIAL", "STATE", "NOT AFTER");
            }
            for c in keyhold_acme::list_certs(&d.root.join("acme"))? {
                let state = if c.revoked.is_some() {
                    "revoked"
                } else if c.not_after_ms < now {
                    "expired"
                } else if c.not_after_ms < now + 7 * 86_400_000 {
                    "expiring"
                } else {
                    "valid"
                };
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "serial": c.serial, "state": state, "names": c.names,
                            "not_before": rfc3339(c.not_before_ms),
                            "not_after": rfc3339(c.not_after_ms),
                            "revoked": c.revoked.map(|(t, r)| serde_json::json!({"at": rfc3339(t * 1000), "reason": r})),
                        })
                    );
                } else {
                    println!(
                        "{:<34} {:<9} {:<21} {}",
                        c.serial,
                        state,
                        rfc3339(c.not_after_ms),
                        c.names.join(",")
                    );
                }
            }
            Ok(())
        }
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
            keyhold_acme::record_issued(&dir.open().root.join("acme"), &cert, &names)?;
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
