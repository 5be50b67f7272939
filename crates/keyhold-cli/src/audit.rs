//! `keyhold audit verify`, `keyhold audit public-key` and `keyhold audit query`.

use std::io::Write;
use std::path::PathBuf;

use keyhold_kms::audit::chain::PUBLIC_KEY_FILE;
use keyhold_kms::audit::verify::{chain_node, check_head, query, verify_with, Query};

use crate::datadir::DataDir;
use crate::DataDirArg;

/// `keyhold audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the signed digests of the audit log.
    Verify {
        #[command(flatten)]
        dir: DataDirArg,
        /// Only report segments with events at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only report segments with events at or before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// The audit public key (PEM) to check signatures with; by default the copy in the data
        /// dir. Keep a copy elsewhere: whoever can edit the log can also replace that file.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Data dirs of the cluster's other nodes, whose chains are checked too (repeatable).
        #[arg(long = "node-data-dir")]
        nodes: Vec<PathBuf>,
    },
    /// Print the head of the audit chain recorded in the store (the newest digest's number and
    /// hash), to keep elsewhere: `verify` fails when the files end before it.
    Head {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Print the audit signing public key (PEM).
    PublicKey {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Print matching audit events as JSON lines.
    Query {
        #[command(flatten)]
        dir: DataDirArg,
        /// Events at or after this time (RFC 3339, e.g. 2026-11-23T10:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// Events at or before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Events that touched this key (key id, key ARN, alias name or alias ARN; an alias is
        /// looked up in the data dir's store).
        #[arg(long)]
        key: Option<String>,
        /// Events by this principal (its ARN or access key id).
        #[arg(long)]
        principal: Option<String>,
        /// Events of this operation (e.g. Decrypt).
        #[arg(long)]
        event: Option<String>,
        /// Events that failed with this error code (e.g. AccessDeniedException).
        #[arg(long)]
        error: Option<String>,
        /// Events from this client address.
        #[arg(long)]
        source_ip: Option<String>,
    },
}

/// The head the store records for the chain in `adir` (the store the data dir options name).
fn recorded_head(
    dir: &DataDirArg,
    adir: &std::path::Path,
) -> Result<Option<keyhold_store::AuditHead>, String> {
    let data = dir.open();
    // An audit directory copied elsewhere without its data dir, or a PostgreSQL data dir
    // checked without --store: the log is still verified, the head is not.
    if !data.is_initialised() || data.check_store_kind().is_err() {
        return Ok(None);
    }
    let store = data.open_store()?;
    let node = chain_node(adir).map_err(|e| format!("{}: {e}", adir.display()))?;
    store.get_audit_head(&node).map_err(|e| e.to_string())
}

fn audit_dir(dir: &DataDirArg) -> PathBuf {
    DataDir::new(&dir.data_dir).audit_dir()
}

/// The key an alias (name or ARN) points at now, from the data dir's store: in the alias ARN's
/// account, else in whichever account of the store's principals (or the `--dev` account) has it.
fn alias_target(dir: &DataDirArg, alias: &str) -> Result<String, String> {
    let data = dir.open();
    if !data.is_initialised() {
        return Err(format!(
            "{alias}: an alias is looked up in the data dir's store, and {} has none",
            dir.data_dir.display()
        ));
    }
    data.check_store_kind()?;
    let store = data.open_store()?;
    let (accounts, name) = match alias.split_once(":alias/") {
        Some((prefix, name)) => (
            vec![prefix.rsplit(':').next().unwrap_or_default().to_string()],
            format!("alias/{name}"),
        ),
        None => {
            let mut accounts: Vec<String> = store
                .list_principals()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|p| p.account)
                .collect();
            accounts.push("111122223333".into());
            accounts.sort();
            accounts.dedup();
            (accounts, alias.to_string())
        }
    };
    let parsed = keyhold_core::ids::AliasName::parse(&name)
        .map_err(|e| format!("{alias}: not an alias name ({e})"))?;
    let mut found = Vec::new();
    for account in &accounts {
        if let Some(a) = store
            .get_alias(account, &parsed)
            .map_err(|e| e.to_string())?
        {
            found.push((account.clone(), a.target.to_string()));
        }
    }
    match found.as_slice() {
        [] => Err(format!("{alias}: no such alias in the store")),
        [(_, key)] => Ok(key.clone()),
        several => Err(format!(
            "{alias} exists in several accounts ({}): give its alias ARN",
            several
                .iter()
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The audit directory of `dir`, which must exist.
fn existing_audit_dir(dir: &DataDirArg) -> Result<PathBuf, String> {
    let adir = audit_dir(dir);
    if adir.is_dir() {
        Ok(adir)
    } else {
        Err(format!(
            "{} holds no audit log ({} does not exist): is --data-dir right?",
            dir.data_dir.display(),
            adir.display()
        ))
    }
}

/// Normalizes an RFC 3339 time to the audit log's `YYYY-MM-DDTHH:MM:SSZ` form.
fn normalize(t: &Option<String>, flag: &str) -> Result<Option<String>, String> {
    let Some(t) = t else { return Ok(None) };
    let parsed = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{flag} {t:?}: not an RFC 3339 time ({e})"))?;
    let utc = parsed.to_offset(time::UtcOffset::UTC);
    Ok(Some(
        utc.format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .map_err(|e| e.to_string())?,
    ))
}

/// Runs a `keyhold audit` command. Returns false when verification found problems.
pub fn run(cmd: AuditCommand) -> Result<bool, String> {
    match cmd {
        AuditCommand::Verify {
            dir,
            from,
            to,
            public_key,
            nodes,
        } => {
            let from = normalize(&from, "--from")?;
            let to = normalize(&to, "--to")?;
            let mut dirs = vec![DataDir::new(&dir.data_dir)];
            dirs.extend(nodes.iter().map(DataDir::new));
            let several = dirs.len() > 1;
            let mut ok = true;
            for data_dir in &dirs {
                let adir = &data_dir.audit_dir();
                // A server holding the data dir is still writing: its unsealed tail is pending.
                let live = data_dir.root.exists() && data_dir.lock_serving().is_err();
                // Each node signs its own chain with its own key, unless one key is given.
                let key_path = public_key
                    .clone()
                    .unwrap_or_else(|| adir.join(PUBLIC_KEY_FILE));
                let key =
                    std::fs::read(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
                let mut report = verify_with(adir, &key, from.as_deref(), to.as_deref(), live)
                    .map_err(|e| format!("{}: {e}", adir.display()))?;
                // The head recorded in the store: the files must reach it.
                match recorded_head(&dir, adir)? {
                    Some(head) => report.digest_problems.extend(
                        check_head(adir, head.digest, &head.digest_hash)
                            .map_err(|e| format!("{}: {e}", adir.display()))?,
                    ),
                    None => println!(
                        "note    {}: the chain's head was not checked (no head in the store, no \
                         data dir beside the log, or a PostgreSQL data dir without --store)",
                        adir.display()
                    ),
                }
                let at = if several {
                    format!("{}/", adir.display())
                } else {
                    String::new()
                };
                for p in &report.digest_problems {
                    println!("INVALID {at}digests: {p}");
                }
                for r in &report.recoveries {
                    println!("recovered {at}{r}");
                }
                if let Some(p) = &report.pending {
                    println!("pending {at}{p}");
                }
                for s in &report.segments {
                    let range = s
                        .seq
                        .map(|(a, b)| format!(", events {a}-{b}"))
                        .unwrap_or_default();
                    if s.problems.is_empty() {
                        println!("valid   {at}{} ({} events{range})", s.name, s.events);
                    } else {
                        for p in &s.problems {
                            println!("INVALID {at}{}: {p}", s.name);
                        }
                    }
                }
                ok &= report.is_valid();
            }
            println!(
                "{}",
                if ok {
                    "the audit log is intact"
                } else {
                    "the audit log has been tampered with (see above)"
                }
            );
            Ok(ok)
        }
        AuditCommand::Head { dir } => {
            let adir = audit_dir(&dir);
            dir.open().check_store_kind()?;
            let Some(head) = recorded_head(&dir, &adir)? else {
                return Err(format!(
                    "no audit head is recorded for {} yet (a server records one with each digest)",
                    adir.display()
                ));
            };
            println!(
                "{}",
                serde_json::json!({
                    "node": head.node,
                    "digest": head.digest,
                    "digestHash": head.digest_hash,
                    "recordedAt": head.recorded_at,
                })
            );
            Ok(true)
        }
        AuditCommand::PublicKey { dir } => {
            let path = audit_dir(&dir).join(PUBLIC_KEY_FILE);
            let pem =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            print!("{pem}");
            Ok(true)
        }
        AuditCommand::Query {
            dir,
            from,
            to,
            key,
            principal,
            event,
            error,
            source_ip,
        } => {
            let key = match key {
                Some(k) if k.starts_with("alias/") || k.contains(":alias/") => {
                    Some(alias_target(&dir, &k)?)
                }
                other => other,
            };
            let q = Query {
                from: normalize(&from, "--from")?,
                to: normalize(&to, "--to")?,
                key,
                principal,
                event_name: event,
                error_code: error,
                source_ip,
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut failed = None;
            query(&existing_audit_dir(&dir)?, &q, |line| {
                if failed.is_none() {
                    if let Err(e) = out.write_all(line).and_then(|()| out.write_all(b"\n")) {
                        failed = Some(e);
                    }
                }
            })
            .map_err(|e| e.to_string())?;
            Ok(true)
        }
    }
}
