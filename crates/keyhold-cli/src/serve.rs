//! `keyhold serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyhold_core::secret::SecretBytes;
use keyhold_kms::audit::FileAuditLog;
use keyhold_kms::clock::SystemClock;
use keyhold_kms::principal::{Credential, Principal};
use keyhold_kms::Engine;
use keyhold_server::ServerOptions;

use crate::datadir::DataDir;

/// Options of `keyhold serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Zero-setup local server: loopback only, state in a temporary dir unless --data-dir is
    /// given, and the fixed credential test/test (see KEYHOLD_DEV_ACCESS_KEY_ID and
    /// KEYHOLD_DEV_SECRET_ACCESS_KEY) as arn:aws:iam::111122223333:user/dev.
    #[arg(long)]
    dev: bool,
    /// Directory holding the root key, database and audit log [default: ./keyhold-data; with
    /// --dev a temporary dir removed at exit].
    #[arg(long, env = "KEYHOLD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on. Plain HTTP is served on loopback addresses only.
    #[arg(long, env = "KEYHOLD_LISTEN", default_value = "127.0.0.1:7080")]
    listen: SocketAddr,
    /// The region this server answers for (part of every ARN and of the SigV4 scope).
    #[arg(long, env = "KEYHOLD_REGION", default_value = "us-east-1")]
    region: String,
    /// Access key id of the dev credential.
    #[arg(
        long,
        env = "KEYHOLD_DEV_ACCESS_KEY_ID",
        default_value = "test",
        hide_env_values = true
    )]
    dev_access_key_id: String,
    /// Secret access key of the dev credential.
    #[arg(
        long,
        env = "KEYHOLD_DEV_SECRET_ACCESS_KEY",
        default_value = "test",
        hide_env_values = true,
        hide_default_value = true
    )]
    dev_secret_access_key: String,
    /// A YAML or JSON file of keys to create at start, idempotently (see the README).
    #[arg(long, env = "KEYHOLD_SEED")]
    seed: Option<PathBuf>,
    /// Seconds between checks for keys whose deletion window has passed or whose automatic
    /// rotation is due.
    #[arg(long, env = "KEYHOLD_MAINTENANCE_SECS", default_value_t = 60)]
    maintenance_secs: u64,
}

fn valid_region(r: &str) -> bool {
    // ^([a-z]+-){2,3}\d+$
    let parts: Vec<&str> = r.split('-').collect();
    let Some((last, words)) = parts.split_last() else {
        return false;
    };
    (2..=3).contains(&words.len())
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYHOLD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !valid_region(&args.region) {
        return Err(format!(
            "--region {:?} is not a valid region name",
            args.region
        ));
    }
    if !args.listen.ip().is_loopback() {
        return Err(format!(
            "refusing to serve plain HTTP on non-loopback address {}: listen on 127.0.0.1 or ::1",
            args.listen
        ));
    }
    let mut _temp = None;
    let (dir, dev) = if args.dev {
        let dir = match &args.data_dir {
            Some(d) => DataDir::new(d),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("keyhold-dev-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a temporary data dir: {e}"))?;
                let d = DataDir::new(t.path());
                _temp = Some(t);
                d
            }
        };
        if !dir.is_initialised() {
            dir.initialise()?;
        }
        let principal = Principal {
            arn: "arn:aws:iam::111122223333:user/dev".into(),
            account: "111122223333".into(),
            access_key_id: args.dev_access_key_id.clone(),
        };
        let cred = Credential {
            principal,
            secret: Arc::new(SecretBytes::new(
                args.dev_secret_access_key.clone().into_bytes(),
            )),
        };
        (dir, Some(cred))
    } else {
        (
            DataDir::new(
                args.data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("./keyhold-data")),
            ),
            None,
        )
    };
    let (root, store) = dir.open()?;
    let audit = FileAuditLog::open(&dir.audit_dir()).map_err(|e| {
        format!(
            "cannot open the audit log in {}: {e}",
            dir.audit_dir().display()
        )
    })?;
    let engine = Arc::new(Engine::new(
        args.region.clone(),
        Arc::new(store),
        root,
        Arc::new(SystemClock),
        Arc::new(audit),
        dev.clone(),
    ));

    if let Some(path) = &args.seed {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("seed file {}: {e}", path.display()))?;
        let json = path.extension().is_some_and(|e| e == "json");
        let file = keyhold_kms::seed::parse(&text, json)
            .map_err(|e| format!("seed file {}: {e}", path.display()))?;
        let report = engine
            .apply_seed(&file, &text)
            .map_err(|e| format!("seed file {}: {e}", path.display()))?;
        tracing::info!(
            created = report.created,
            existing = report.existing,
            aliases = report.aliases,
            "seed file applied"
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        let endpoint = format!("http://{addr}");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "keyhold{} listening on {endpoint} (region {}, data dir {}, root key provider {})",
            if args.dev { " (dev)" } else { "" },
            args.region,
            dir.root.display(),
            engine.root_provider(),
        );
        if let Some(cred) = &dev {
            let _ = writeln!(out, "  principal:         {}", cred.principal.arn);
            let _ = writeln!(out, "  access key id:     {}", args.dev_access_key_id);
            let _ = writeln!(out, "  secret access key: {}", args.dev_secret_access_key);
            let _ = writeln!(
                out,
                "export AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID={} \
                 AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={}",
                args.dev_access_key_id, args.dev_secret_access_key, args.region
            );
        }
        let _ = out.flush();
        drop(out);
        keyhold_server::spawn_maintenance_task(
            engine.clone(),
            Duration::from_secs(args.maintenance_secs.max(1)),
        );
        keyhold_server::run(
            listener,
            engine,
            ServerOptions::default(),
            shutdown_signal(),
        )
        .await
        .map_err(|e| format!("server error: {e}"))?;
        tracing::info!("keyhold stopped");
        Ok::<(), String>(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        assert!(valid_region("us-east-1"));
        assert!(valid_region("us-gov-west-1"));
        assert!(!valid_region("useast1"));
        assert!(!valid_region("US-east-1"));
        assert!(!valid_region("us-east-"));
    }
}
