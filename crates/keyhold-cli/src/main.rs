//! `keyhold`: a key management service that speaks the AWS KMS API.
//!
//! # Layout
//! - `main`: the command line (clap) and dispatch, shell completions and the man page.
//! - `serve`: `keyhold serve` (and `--dev`).
//! - `admin`: `keyhold init` and `keyhold admin principal ...`.
//! - `audit`: `keyhold audit verify`, `public-key` and `query`.
//! - `bench`: `keyhold bench`, the load generator.
//! - `ca`: `keyhold ca cert` and `keyhold ca issue` (the private CA).
//! - `config`: `keyhold.toml`, the serve settings file, and `keyhold config check`.
//! - `datadir`: the files of a data dir.
//! - `rotate`: `keyhold admin rotate-root` (re-wrapping every secret under a new root key).
#![forbid(unsafe_code)]

mod admin;
mod audit;
mod backup;
mod bench;
mod bench_s3;
mod ca;
mod clevis;
mod config;
mod console_door;
mod datadir;
mod envelope;
mod latency;
mod progress;
mod rotate;
mod serve;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the request path allocates many small short-lived buffers, which glibc's
/// allocator serves markedly slower under concurrency.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// keyhold: a self-hosted key management service that speaks the AWS KMS API.
#[derive(Debug, Parser)]
#[command(name = "keyhold", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the KMS API.
    Serve(Box<serve::ServeArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `keyhold man > keyhold.1`.
    Man,
    /// Work with `keyhold serve` config files (keyhold.toml).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Encrypt a file into an AWS Encryption SDK message under KMS keys (keyhold's, from the
    /// AWS environment: AWS_ENDPOINT_URL_KMS or AWS_ENDPOINT_URL, AWS_REGION, credentials or a
    /// profile, AWS_CA_BUNDLE).
    Encrypt(envelope::EncryptArgs),
    /// Decrypt an AWS Encryption SDK message (written by `keyhold encrypt` or any AWS Encryption
    /// SDK) with the KMS keys it names; output appears only once the whole message checks.
    Decrypt(envelope::DecryptArgs),
    /// EBS-style encrypted volumes (LUKS2 images whose passphrase is a KMS data key) from
    /// keyhold's volume service, from the AWS environment like encrypt.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// The Clevis pin `keyhold`: bind LUKS2 volumes to a KMS key (`clevis luks bind -d DEV
    /// keyhold '{"key":"alias/..."}'`) after `keyhold clevis install`.
    #[command(subcommand)]
    Clevis(clevis::ClevisCommand),
    /// Load a server with SigV4-signed requests and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Create a data dir: root key, database and a first principal.
    Init(admin::InitArgs),
    /// The tamper-evident audit log: verify it, print its public key, query it.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// The private CA: print its certificate, issue certificates for other services.
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Administration of a data dir (also while a server runs on it).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Manage principals (access keys).
    Principal {
        #[command(subcommand)]
        command: admin::PrincipalCommand,
    },
    /// Manage the external account bindings ACME clients register with.
    AcmeAccount {
        #[command(subcommand)]
        command: ca::AcmeAccountCommand,
    },
    /// Write a consistent snapshot of the store (online; secrets stay wrapped under the root
    /// key, so the file is useless without it).
    Backup {
        #[command(flatten)]
        dir: DataDirArg,
        /// The backup file to write.
        #[arg(long)]
        to: PathBuf,
    },
    /// Re-wrap every stored secret under a new root key, atomically. Stop every server on
    /// the store first; the old root's passphrase or PIN comes from the usual variables, the
    /// new one's from KEYHOLD_NEW_PASSPHRASE / KEYHOLD_NEW_PKCS11_PIN (or their _FILE forms).
    RotateRoot(RotateRootArgs),
    /// Create many symmetric encryption keys quickly (batched store writes), for scale and
    /// memory measurements.
    SeedKeys {
        #[command(flatten)]
        dir: DataDirArg,
        /// How many keys to create.
        #[arg(long)]
        count: usize,
        /// The account that owns them.
        #[arg(long, default_value = "111122223333")]
        account: String,
        /// Keys per store transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
    /// After `rotate-root` on one node of a cluster, give this node's data dir the same new
    /// root key (its own TLS and audit keys are re-wrapped). Stop this node's server first.
    AdoptRoot {
        #[command(flatten)]
        dir: DataDirArg,
        /// The data dir of the node that ran rotate-root.
        #[arg(long)]
        from: PathBuf,
    },
    /// Restore a backup into an empty store (SQLite or PostgreSQL, whichever it came from).
    Restore {
        #[command(flatten)]
        dir: DataDirArg,
        /// The backup file to read.
        #[arg(long)]
        from: PathBuf,
    },
}

/// `keyhold admin rotate-root` options.
#[derive(Debug, clap::Args)]
struct RotateRootArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// The new root key's provider.
    #[arg(long, value_enum)]
    to: datadir::RootProvider,
    /// PKCS#11 module of the HSM (with --to pkcs11).
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    pkcs11_module: PathBuf,
    /// Label of the HSM token (with --to pkcs11).
    #[arg(long)]
    pkcs11_token: Option<String>,
    /// Label of the new root key made in the token (must differ from the current one).
    #[arg(long, default_value = "keyhold-root-2")]
    pkcs11_key_label: String,
}

/// The data dir option shared by every command.
#[derive(Debug, Clone, clap::Args)]
struct DataDirArg {
    /// Directory holding the root key, database and audit log.
    #[arg(long, env = "KEYHOLD_DATA_DIR", default_value = "./keyhold-data")]
    data_dir: PathBuf,
    /// Keep the state in PostgreSQL (`postgres://user@host/db`) instead of the SQLite file in
    /// the data dir; several keyhold nodes can share it.
    #[arg(long, env = "KEYHOLD_STORE", hide_env_values = true)]
    store: Option<String>,
}

/// `keyhold config` subcommands.
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config file as `keyhold serve` reads it (with the environment, and the serve
    /// flags given after `--`) and print the effective settings, secrets redacted.
    Check {
        /// The file.
        #[arg(default_value = config::DEFAULT_FILE)]
        file: PathBuf,
        /// Serve flags, as they would be given to `keyhold serve`.
        #[arg(last = true)]
        flags: Vec<String>,
    },
}

impl DataDirArg {
    /// The data dir these options name.
    fn open(&self) -> datadir::DataDir {
        datadir::DataDir::new(&self.data_dir).with_store(self.store.clone())
    }
}

fn main() -> ExitCode {
    // `keyhold serve` reads its config file into arguments that clap then checks like flags.
    let argv = match config::with_file_settings(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("keyhold: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(argv);
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file, flags },
        } => config::check(&file, &flags),
        Command::Completions { shell } => {
            // Into memory first: the generator panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "keyhold",
                &mut script,
            );
            std::io::Write::write_all(&mut std::io::stdout(), &script).map_err(|e| e.to_string())
        }
        Command::Encrypt(args) => envelope::encrypt(args),
        Command::Decrypt(args) => envelope::decrypt(args),
        Command::Volume(cmd) => volume::run(cmd),
        Command::Clevis(cmd) => clevis::run(cmd),
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut page)
                .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &page))
                .map_err(|e| e.to_string())
        }
        Command::Serve(args) => serve::run(*args),
        Command::Init(args) => admin::init(args),
        Command::Bench(args) => bench::run(args),
        Command::Ca { command } => ca::run(command),
        Command::Audit { command } => match audit::run(command) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Admin { command } => match command {
            AdminCommand::Principal { command } => admin::principal(command),
            AdminCommand::AcmeAccount { command } => ca::acme_account(command),
            AdminCommand::Backup { dir, to } => backup::backup(&dir, &to),
            AdminCommand::Restore { dir, from } => backup::restore(&dir, &from),
            AdminCommand::AdoptRoot { dir, from } => {
                rotate::adopt(&dir.open(), &datadir::DataDir::new(&from)).and_then(|n| {
                    admin::audit_admin(
                        dir.open().open_store()?.as_ref(),
                        "AdoptRootKey",
                        serde_json::json!({ "from": from.display().to_string(), "files": n }),
                    )?;
                    println!(
                        "re-wrapped {n} files under the root key of {}",
                        from.display()
                    );
                    Ok(())
                })
            }
            AdminCommand::SeedKeys {
                dir,
                count,
                account,
                batch,
            } => admin::seed_keys(&dir, count, &account, batch),
            AdminCommand::RotateRoot(args) => {
                let hsm = args
                    .pkcs11_token
                    .map(|token_label| keyhold_hsm::Pkcs11Config {
                        module: args.pkcs11_module,
                        token_label,
                        key_label: args.pkcs11_key_label,
                    });
                let provider = format!("{:?}", args.to).to_lowercase();
                rotate::rotate(
                    &args.dir.open(),
                    rotate::NewRoot {
                        provider: args.to,
                        hsm,
                    },
                )
                .and_then(|n| {
                    admin::audit_admin(
                        args.dir.open().open_store()?.as_ref(),
                        "RotateRootKey",
                        serde_json::json!({ "newProvider": provider, "secrets": n }),
                    )?;
                    println!("re-wrapped {n} stored secrets under the new root key");
                    Ok(())
                })
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyhold: {e}");
            ExitCode::FAILURE
        }
    }
}
