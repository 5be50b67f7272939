//! `keyhold init` and `keyhold admin principal ...`.

use keyhold_kms::clock::{Clock, SystemClock};
use keyhold_kms::principal::{create_principal, NewPrincipal, PrincipalKind};

use crate::DataDirArg;

/// Options of `keyhold init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Account of the first principal.
    #[arg(long, default_value = "111122223333")]
    account: String,
    /// User name of the first principal.
    #[arg(long, default_value = "admin")]
    name: String,
    /// Print the first principal's credentials as JSON.
    #[arg(long)]
    json: bool,
    /// Where the root key lives: `file` (root.key beside the data) or `passphrase`
    /// (Argon2id from KEYHOLD_PASSPHRASE, KEYHOLD_PASSPHRASE_FILE or a prompt).
    #[arg(long, value_enum, default_value = "file")]
    root_key: crate::datadir::RootProvider,
    /// PKCS#11 module of the HSM (with --root-key pkcs11).
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    pkcs11_module: std::path::PathBuf,
    /// Label of the HSM token (with --root-key pkcs11; the PIN comes from KEYHOLD_PKCS11_PIN
    /// or KEYHOLD_PKCS11_PIN_FILE).
    #[arg(long)]
    pkcs11_token: Option<String>,
    /// Label of the root key made in the token.
    #[arg(long, default_value = "keyhold-root")]
    pkcs11_key_label: String,
    /// Names and IP addresses of the server certificate (repeatable).
    #[arg(long = "tls-name", default_values = ["localhost", "127.0.0.1", "::1"])]
    tls_names: Vec<String>,
    /// Lifetime of server certificates, in days (renewed at two thirds of it).
    #[arg(long, default_value_t = 90)]
    tls_days: i64,
}

/// `keyhold admin principal` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PrincipalCommand {
    /// Create a principal and print its secret access key (shown once).
    Create {
        #[command(flatten)]
        dir: DataDirArg,
        /// 12-digit account id.
        #[arg(long, default_value = "111122223333")]
        account: String,
        /// User (or role) name.
        #[arg(long)]
        name: String,
        /// Make a role (`arn:aws:iam::ACCOUNT:role/NAME`) instead of a user.
        #[arg(long)]
        role: bool,
        /// Print `{"access_key_id", "secret_access_key", "arn"}`.
        #[arg(long)]
        json: bool,
    },
    /// List principals (never their secrets).
    List {
        #[command(flatten)]
        dir: DataDirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a principal by access key id or ARN.
    Delete {
        #[command(flatten)]
        dir: DataDirArg,
        /// Access key id or ARN.
        principal: String,
    },
}

fn print_new(p: &NewPrincipal, json: bool) {
    let secret = String::from_utf8_lossy(p.secret_access_key.expose_secret()).into_owned();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "access_key_id": p.access_key_id,
                "secret_access_key": secret,
                "arn": p.arn,
            })
        );
    } else {
        println!("principal:         {}", p.arn);
        println!("access key id:     {}", p.access_key_id);
        println!("secret access key: {secret}");
        println!("(the secret access key is shown only this once)");
    }
    zeroize::Zeroize::zeroize(&mut secret.into_bytes());
}

/// `keyhold init`.
pub fn init(args: InitArgs) -> Result<(), String> {
    let dir = args.dir.open();
    let hsm = args
        .pkcs11_token
        .clone()
        .map(|token_label| keyhold_hsm::Pkcs11Config {
            module: args.pkcs11_module.clone(),
            token_label,
            key_label: args.pkcs11_key_label.clone(),
        });
    let (root, store) = dir.initialise_with(args.root_key, hsm)?;
    if args.tls_days < 1 {
        return Err("--tls-days must be at least 1".into());
    }
    keyhold_server::tls::ca::PrivateCa::create(
        &dir.tls_dir(),
        &args.tls_names,
        args.tls_days,
        &crate::datadir::RootWrapper(root.clone()),
        crate::datadir::now_secs(),
    )
    .map_err(|e| e.to_string())?;
    let p = create_principal(
        store.as_ref(),
        root.as_ref(),
        &args.account,
        &args.name,
        PrincipalKind::User,
        SystemClock.now_ms(),
    )
    .map_err(|e| e.message)?;
    if !args.json {
        println!("initialised keyhold data dir {}", dir.root.display());
        match args.root_key {
            crate::datadir::RootProvider::File => println!(
                "root key: {} (file provider: keep it private and backed up)",
                dir.root_key().display()
            ),
            crate::datadir::RootProvider::Pkcs11 => println!(
                "root key: a non-extractable AES-256 key in HSM token {:?}",
                args.pkcs11_token.as_deref().unwrap_or_default()
            ),
            crate::datadir::RootProvider::Passphrase => println!(
                "root key: derived from your passphrase (nothing secret is stored; without the \
                 passphrase the data is unreadable)"
            ),
        }
        println!(
            "private CA: {} (clients trust it with AWS_CA_BUNDLE; see `keyhold ca cert`)",
            dir.tls_dir().join("ca.pem").display()
        );
    }
    print_new(&p, args.json);
    Ok(())
}

/// `keyhold admin principal ...`.
pub fn principal(cmd: PrincipalCommand) -> Result<(), String> {
    match cmd {
        PrincipalCommand::Create {
            dir,
            account,
            name,
            role,
            json,
        } => {
            let (root, store) = dir.open().open()?;
            let kind = if role {
                PrincipalKind::Role
            } else {
                PrincipalKind::User
            };
            let p = create_principal(
                store.as_ref(),
                root.as_ref(),
                &account,
                &name,
                kind,
                SystemClock.now_ms(),
            )
            .map_err(|e| e.message)?;
            audit_admin(
                store.as_ref(),
                "CreatePrincipal",
                serde_json::json!({
                    "principal": p.arn,
                    "accountId": account,
                    "accessKeyId": p.access_key_id,
                }),
            )?;
            print_new(&p, json);
            Ok(())
        }
        PrincipalCommand::List { dir, json } => {
            let (_root, store) = dir.open().open()?;
            let list = store.list_principals().map_err(|e| e.to_string())?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "access_key_id": p.access_key_id,
                            "arn": p.arn,
                            "account": p.account,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for p in list {
                    println!("{}\t{}", p.access_key_id, p.arn);
                }
            }
            Ok(())
        }
        PrincipalCommand::Delete { dir, principal } => {
            let (_root, store) = dir.open().open()?;
            store.delete_principal(&principal).map_err(|e| match e {
                keyhold_store::StoreError::NotFound => {
                    format!("no principal with access key id or ARN {principal}")
                }
                other => other.to_string(),
            })?;
            audit_admin(
                store.as_ref(),
                "DeletePrincipal",
                serde_json::json!({ "principal": principal }),
            )?;
            println!("deleted {principal}");
            Ok(())
        }
    }
}

/// Keeps an administrative action in the store for the server to audit (at once if one runs,
/// else at its next start): admin commands are audited like API calls.
pub(crate) fn audit_admin(
    store: &dyn keyhold_store::Store,
    event_name: &str,
    detail: serde_json::Value,
) -> Result<(), String> {
    store
        .add_admin_event(&keyhold_store::AdminEvent {
            id: uuid::Uuid::new_v4().to_string(),
            event_name: event_name.to_string(),
            detail: detail.to_string(),
            created_at: SystemClock.now_ms(),
        })
        .map_err(|e| format!("the action was done but could not be kept for the audit log: {e}"))
}

/// `keyhold admin seed-keys`.
pub fn seed_keys(
    dir: &DataDirArg,
    count: usize,
    account: &str,
    batch: usize,
) -> Result<(), String> {
    if !keyhold_core::ids::is_account_id(account) {
        return Err(format!("{account:?} is not a 12-digit account id"));
    }
    let (root, store) = dir.open().open()?;
    let started = std::time::Instant::now();
    let bar = crate::progress::items(count as u64, "creating keys");
    keyhold_kms::seed::bulk_create(
        root.as_ref(),
        store.as_ref(),
        account,
        count,
        batch,
        SystemClock.now_ms(),
        |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    audit_admin(
        store.as_ref(),
        "SeedKeys",
        serde_json::json!({ "count": count, "accountId": account }),
    )?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "created {count} keys for account {account} in {secs:.1} s ({:.0} keys/s)",
        count as f64 / secs.max(1e-9)
    );
    Ok(())
}
