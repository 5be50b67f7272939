//! `keyhold serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keyhold_core::ids::is_region_name;
use keyhold_core::secret::SecretBytes;
use keyhold_kms::audit::chain::{Anchor, AuditOptions, ChainedAuditLog, FsyncMode};
use keyhold_kms::audit::StoreAnchor;
use keyhold_kms::clock::SystemClock;
use keyhold_kms::principal::{Credential, Principal};
use keyhold_kms::Engine;
use keyhold_server::ServerOptions;

use keyhold_hsm::RootKey;
use keyhold_server::tls::ca::PrivateCa;
use keyhold_server::tls::{certified_key, CertStore};

use crate::datadir::{now_secs, DataDir, RootWrapper};

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
    /// Serve plain HTTP instead of TLS (loopback addresses only). `--dev` always serves plain
    /// HTTP.
    #[arg(long)]
    insecure_http: bool,
    /// Serve this certificate chain (PEM) instead of one from the private CA; reloaded when the
    /// file changes or on SIGHUP.
    #[arg(long, env = "KEYHOLD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "KEYHOLD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM), in addition to SigV4.
    #[arg(long, env = "KEYHOLD_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Names of the server certificate when the private CA is made at first start of a data
    /// dir that has none (repeatable).
    #[arg(long = "tls-name", default_values = ["localhost", "127.0.0.1", "::1"])]
    tls_names: Vec<String>,
    /// A TOML file holding any of these settings (the flags' long names without dashes, e.g.
    /// `listen = "0.0.0.0:7443"`); flags and the environment win over it. Default:
    /// ./keyhold.toml when it exists.
    #[arg(long, env = "KEYHOLD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (`HOST:PORT`; a host name such as `localhost` is resolved, IPv4
    /// first). Plain HTTP is served on loopback addresses only.
    #[arg(long, env = "KEYHOLD_LISTEN", default_value = "127.0.0.1:7080", value_parser = listen_addr)]
    listen: SocketAddr,
    /// Also serve the S3 API (an object store that encrypts every object with SSE-S3, SSE-KMS
    /// or SSE-C) on this address, TLS like --listen. With --dev it is served on --listen's
    /// port + 10 (127.0.0.1:7090 by default; an ephemeral port when --listen's is 0).
    #[arg(long, env = "KEYHOLD_S3_LISTEN", value_parser = listen_addr)]
    s3_listen: Option<SocketAddr>,
    /// Do not serve the web console (`/console/` on --listen).
    #[arg(long, env = "KEYHOLD_NO_CONSOLE")]
    no_console: bool,
    /// Do not serve the volume service (EBS's part of the EC2 API, for requests signed for
    /// `ec2` on --listen; volumes are kept in DATA_DIR/volumes).
    #[arg(long, env = "KEYHOLD_NO_VOLUMES")]
    no_volumes: bool,
    /// Do not serve the ACME server (`/acme/directory` on --listen, served over TLS with the
    /// private CA).
    #[arg(long, env = "KEYHOLD_NO_ACME")]
    no_acme: bool,
    /// Lifetime of certificates issued through ACME, in days.
    #[arg(long, env = "KEYHOLD_ACME_CERT_DAYS", default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=398))]
    acme_cert_days: i64,
    /// The port ACME http-01 challenges are fetched from (80 unless a test or a proxy says
    /// otherwise).
    #[arg(long, env = "KEYHOLD_ACME_HTTP01_PORT", default_value_t = 80)]
    acme_http01_port: u16,
    /// The port ACME tls-alpn-01 challenges connect to (443 unless a test or a proxy says
    /// otherwise).
    #[arg(long, env = "KEYHOLD_ACME_TLSALPN01_PORT", default_value_t = 443)]
    acme_tlsalpn01_port: u16,
    /// Validate ACME challenges for NAME at ADDR instead of NAME's DNS address
    /// (`NAME=ADDR`, repeatable: split-horizon sites, tests).
    #[arg(long = "acme-resolve", value_parser = keyhold_acme::parse_resolve)]
    acme_resolve: Vec<(String, std::net::IpAddr)>,
    /// Serve `GET /metrics` (Prometheus text) and the health paths on this address (plain
    /// HTTP) instead of on --listen.
    #[arg(long, env = "KEYHOLD_METRICS_LISTEN", value_parser = listen_addr)]
    metrics_listen: Option<SocketAddr>,
    /// Domain of virtual-hosted-style S3 requests (`BUCKET.DOMAIN`); path-style requests are
    /// always served.
    #[arg(long, env = "KEYHOLD_S3_DOMAIN")]
    s3_domain: Option<String>,
    /// Keep the gateway's (encrypted) object bytes in an existing S3-compatible store,
    /// `http(s)://HOST[:PORT]/BUCKET[/PREFIX]`, instead of DATA_DIR/objects: with
    /// --store postgres, several nodes then serve the same buckets. Its credentials come from
    /// KEYHOLD_S3_BACKEND_ACCESS_KEY_ID and KEYHOLD_S3_BACKEND_SECRET_ACCESS_KEY.
    #[arg(long, env = "KEYHOLD_S3_BACKEND")]
    s3_backend: Option<String>,
    /// The region of --s3-backend.
    #[arg(long, env = "KEYHOLD_S3_BACKEND_REGION", default_value = "us-east-1")]
    s3_backend_region: String,
    /// The Regions this server answers for, each as its own Region (part of every ARN and of
    /// the SigV4 scope): repeat it or give a list (`--regions us-east-1,eu-west-1`). The
    /// first is the home Region: the S3 gateway, volumes, console and ACME act in it. With
    /// --dev, every other commercial Region is served too.
    #[arg(
        long,
        visible_alias = "regions",
        env = "KEYHOLD_REGION",
        value_delimiter = ',',
        default_value = "us-east-1"
    )]
    region: Vec<String>,
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
    /// When audit writes are fsynced: `interval` (at least every 100 ms) or `always` (before
    /// each response, with group commit).
    #[arg(
        long,
        env = "KEYHOLD_AUDIT_FSYNC",
        value_enum,
        default_value = "interval"
    )]
    audit_fsync: AuditFsync,
    /// Keep the state in PostgreSQL (`postgres://user@host/db`) instead of the SQLite file in
    /// the data dir; several keyhold nodes can share it (see the README).
    #[arg(long, env = "KEYHOLD_STORE", hide_env_values = true)]
    store: Option<String>,
    /// A YAML or JSON file of keys to create at start, idempotently (see the README).
    #[arg(long, env = "KEYHOLD_SEED")]
    seed: Option<PathBuf>,
    /// This node's id, in every audit event and digest (nodes sharing a store each keep their
    /// own audit chain).
    #[arg(long, env = "KEYHOLD_NODE_ID", default_value = "node-1")]
    node_id: String,
    /// Requests worked on at once; beyond it requests get ThrottlingException at once.
    #[arg(long, env = "KEYHOLD_MAX_INFLIGHT", default_value_t = 1024)]
    max_inflight: usize,
    /// Most connections from one client address at once (0: no cap), so one address cannot
    /// hold the whole connection cap. Raise it behind a load balancer that connects from few
    /// addresses.
    #[arg(long, env = "KEYHOLD_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    max_connections_per_ip: usize,
    /// Seconds a client may take to send a complete HTTP/1 request head, from the
    /// connection's start or the end of the previous response (an idle keep-alive connection
    /// is closed after it).
    #[arg(long, env = "KEYHOLD_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a connection may go without a byte read or written (TLS and HTTP/2 included)
    /// before it is closed.
    #[arg(long, env = "KEYHOLD_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    idle_timeout_secs: u64,
    /// Log lines as plain text or as one JSON object a line.
    #[arg(long, env = "KEYHOLD_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Seconds a client may take to send a request body.
    #[arg(long, env = "KEYHOLD_BODY_TIMEOUT_SECS", default_value_t = 10)]
    body_timeout_secs: u64,
    /// Seconds between checks for keys whose deletion window has passed or whose automatic
    /// rotation is due.
    #[arg(long, env = "KEYHOLD_MAINTENANCE_SECS", default_value_t = 60)]
    maintenance_secs: u64,
    /// PKCS#11 module holding the tokens of custom key stores (a store's CloudHsmClusterId is
    /// its token's label).
    #[arg(
        long,
        env = "KEYHOLD_HSM_MODULE",
        default_value = keyhold_kms::keystores::DEFAULT_MODULE
    )]
    hsm_module: PathBuf,
}

/// With a shared store, the longest a node may serve key state cached before another node
/// changed it (disable, delete, policy, alias, grant), should a change notification be lost.
const SHARED_STALENESS: Duration = Duration::from_secs(1);

/// When audit writes are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFsync {
    /// At least every 100 ms.
    Interval,
    /// Before each response, with group commit.
    Always,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Reads `--listen`: an IP address and port, or a host name and port resolved to its first
/// IPv4 address (else its first address).
fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("{s:?} is not HOST:PORT ({e})"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// The file recording a data dir's home Region.
const HOME_REGION_FILE: &str = "home-region";

/// Refuses to serve a data dir with another home Region than it has served: the rows of the
/// home Region carry no Region, so naming another Region first would show them (the keys made
/// before the deployment served several Regions, among others) under that Region's name, and
/// hide the first one's. Records the home Region on the first start.
fn check_home_region(data_dir: &std::path::Path, regions: &[String]) -> Result<(), String> {
    let path = data_dir.join(HOME_REGION_FILE);
    let home = &regions[0];
    match std::fs::read_to_string(&path) {
        Ok(recorded) if recorded.trim() == home => Ok(()),
        Ok(recorded) => {
            let recorded = recorded.trim();
            let mut fixed = vec![recorded.to_string()];
            fixed.extend(regions.iter().filter(|r| *r != recorded).cloned());
            Err(format!(
                "this data dir's home Region is {recorded}, and --region names {home} first: its \
                 keys are {recorded}'s. Name it first (--regions {}), or remove {} to make {home} \
                 the home Region (the home Region's keys then show under {home}'s name)",
                fixed.join(","),
                path.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && data_dir.exists() => {
            keyhold_core::docs::write_atomically(&path, format!("{home}\n").as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> Result<(), String> {
    // Log lines are written by a thread of their own: a slow stderr never holds a request.
    // Lines beyond its queue are dropped (and counted) rather than waited for.
    let (writer, _log_guard) = tracing_appender::non_blocking(std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYHOLD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
                // s3s never logs, whatever the filter: at debug it prints whole requests
                // (SSE-C keys, signatures), and it reports every client error (NoSuchKey, ...)
                // at error level. The gateway logs its own faults.
                .add_directive("s3s=off".parse().map_err(|e| format!("log filter: {e}"))?),
        )
        .with_writer(writer);
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    if let Some(bad) = args.region.iter().find(|r| !is_region_name(r)) {
        return Err(format!("--region {bad:?} is not a valid region name"));
    }
    let mut regions = Vec::new();
    for r in &args.region {
        if !regions.contains(r) {
            regions.push(r.clone());
        }
    }
    if args.dev {
        for r in keyhold_kms::regions::COMMERCIAL_REGIONS {
            if !regions.iter().any(|x| x == r) {
                regions.push(r.to_string());
            }
        }
    }
    let home_region = regions[0].clone();
    let plain = args.dev || args.insecure_http;
    if args.dev && (args.tls_cert.is_some() || args.tls_client_ca.is_some()) {
        return Err("--dev serves plain HTTP: drop --tls-cert/--tls-client-ca, or --dev".into());
    }
    let s3_listen = match (args.s3_listen, args.dev) {
        (Some(a), _) => Some(a),
        (None, true) => Some(SocketAddr::new(
            args.listen.ip(),
            match args.listen.port() {
                0 => 0,
                p => p
                    .checked_add(10)
                    .ok_or("--listen port too high for the dev S3 port")?,
            },
        )),
        (None, false) => None,
    };
    if plain && !args.listen.ip().is_loopback() {
        return Err(format!(
            "refusing to serve plain HTTP on non-loopback address {}: listen on 127.0.0.1 or ::1, \
             or serve TLS",
            args.listen
        ));
    }
    if let Some(a) = s3_listen {
        if plain && !a.ip().is_loopback() {
            return Err(format!(
                "refusing to serve plain HTTP on non-loopback address {a} (--s3-listen): listen \
                 on 127.0.0.1 or ::1, or serve TLS"
            ));
        }
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
        // A dev data dir is made for the store the flags name.
        let dir = dir.with_store(args.store.clone());
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
    let dir = dir.with_store(args.store.clone());
    let shared = dir.store.is_some();
    // Held while serving: `admin rotate-root` refuses to run under a live server, and a
    // second server on the same data dir refuses to start.
    let _lock = if dir.root.exists() {
        Some((dir.lock_serving()?, dir.lock(false)?))
    } else {
        None
    };
    let (root, store) = dir.open()?;
    check_home_region(&dir.root, &regions)?;
    let store: Arc<dyn keyhold_store::Store> = Arc::from(store);
    let root_for_tls = root.clone();
    let root_for_acme = root.clone();
    let fsync = match args.audit_fsync {
        AuditFsync::Always => FsyncMode::Always,
        AuditFsync::Interval => FsyncMode::Interval(Duration::from_millis(100)),
    };
    let audit_options = AuditOptions {
        fsync,
        node: args.node_id.clone(),
        // Each digest is recorded in the store as the chain's head (`keyhold audit head`).
        anchor: Some(Anchor(Arc::new(StoreAnchor(store.clone())))),
        ..AuditOptions::default()
    };
    let audit =
        ChainedAuditLog::open(&dir.audit_dir(), root.as_ref(), audit_options).map_err(|e| {
            format!(
                "cannot open the audit log in {}: {e}",
                dir.audit_dir().display()
            )
        })?;
    let served = keyhold_kms::regions::Regions::new(
        &regions,
        keyhold_kms::regions::Shared {
            store,
            root,
            clock: Arc::new(SystemClock),
            audit,
            dev: dev.clone(),
        },
        |engine| {
            // Other nodes change the same keys: cached key state is served for at most this
            // long.
            let engine = if shared {
                engine.with_shared_store(SHARED_STALENESS)
            } else {
                engine
            };
            engine.with_hsm_module(args.hsm_module.clone())
        },
    );
    let mut failed = 0;
    for engine in served.all() {
        failed += engine.connect_key_stores().map_err(|e| e.message)?;
    }
    if shared {
        served.watch_store();
    }
    if failed > 0 {
        eprintln!(
            "keyhold: warning: {failed} custom key store(s) did not connect \
             (DescribeCustomKeyStores shows why)"
        );
    }
    let engine: Arc<Engine> = served.home().clone();

    // The port is bound before anything is seeded: a server that cannot listen changes
    // nothing.
    let std_listener = std::net::TcpListener::bind(args.listen).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "cannot listen on {}: the address is in use (another server?): choose another \
                 with --listen",
                args.listen
            )
        } else {
            format!("cannot listen on {} (--listen): {e}", args.listen)
        }
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let s3_std_listener = match s3_listen {
        None => None,
        Some(a) => {
            let l = std::net::TcpListener::bind(a).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!(
                        "cannot listen on {a} for S3: the address is in use (another server?): \
                         choose another with --s3-listen"
                    )
                } else {
                    format!("cannot listen on {a} (--s3-listen): {e}")
                }
            })?;
            l.set_nonblocking(true)
                .map_err(|e| format!("cannot listen on {a}: {e}"))?;
            Some(l)
        }
    };
    let backend = match &args.s3_backend {
        None => None,
        Some(url) => Some(keyhold_s3::BackendConfig::parse(
            url,
            &args.s3_backend_region,
            &std::env::var("KEYHOLD_S3_BACKEND_ACCESS_KEY_ID").unwrap_or_default(),
            &std::env::var("KEYHOLD_S3_BACKEND_SECRET_ACCESS_KEY").unwrap_or_default(),
        )?),
    };
    if backend.is_some() && s3_std_listener.is_none() {
        return Err("--s3-backend needs the S3 gateway: add --s3-listen".into());
    }

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
        engine.audit_service_event(
            "ApplySeedFile",
            &serde_json::json!({
                "seedFile": path.display().to_string(),
                "created": report.created,
                "existing": report.existing,
                "aliases": report.aliases,
            }),
        );
    }
    // Administrative actions taken while no server ran enter the audit log now.
    engine
        .record_admin_events()
        .map_err(|e| format!("cannot audit the administrative actions: {}", e.message))?;

    let tls = if plain {
        None
    } else {
        Some(tls_setup(&args, &dir, root_for_tls)?)
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let gateway = match &s3_std_listener {
            None => None,
            Some(_) => {
                let objects_dir = dir.root.join("objects");
                let objects: Arc<dyn keyhold_s3::ObjectStore> = match backend {
                    Some(b) => {
                        let shown = format!("{}/{}", b.endpoint, b.bucket);
                        Arc::new(
                            keyhold_s3::S3Backend::open(b, &objects_dir.join("spool"))
                                .await
                                .map_err(|e| format!("--s3-backend {shown}: {e}"))?,
                        )
                    }
                    None => Arc::new(
                        keyhold_s3::LocalDir::open(&objects_dir)
                            .map_err(|e| format!("object store {}: {e}", objects_dir.display()))?,
                    ),
                };
                let options = keyhold_s3::GatewayOptions {
                    domain: args.s3_domain.clone(),
                    ..keyhold_s3::GatewayOptions::default()
                };
                Some(Arc::new(keyhold_s3::Gateway::new(
                    engine.clone(),
                    objects,
                    options,
                )?))
            }
        };
        let metrics = install_metrics()?;
        let metrics_task = match args.metrics_listen {
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("cannot listen on {a} (--metrics-listen): {e}"))?;
                let (engine, handle) = (engine.clone(), metrics.clone());
                let handler =
                    move |_conn: keyhold_server::Connection,
                          req: http::Request<hyper::body::Incoming>| {
                        let answer = keyhold_server::operator_response(
                            &engine,
                            Some(&handle),
                            req.method(),
                            req.uri().path(),
                        )
                        .unwrap_or_else(|| {
                            let mut r = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"not found\n"),
                            ));
                            *r.status_mut() = http::StatusCode::NOT_FOUND;
                            r
                        });
                        async move { Ok::<_, std::convert::Infallible>(answer) }
                    };
                tracing::info!(listen = %a, "metrics and health on their own listener");
                Some(tokio::spawn(async move {
                    let options = ServerOptions::default();
                    keyhold_server::serve(l, &options, shutdown_signal(), handler).await
                }))
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        let endpoint = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "keyhold{} listening on {endpoint} ({}, data dir {}, root key provider {})",
            if args.dev { " (dev)" } else { "" },
            match regions.len() {
                1 => format!("region {home_region}"),
                n if args.dev => format!("region {home_region} and {} more", n - 1),
                _ => format!("regions {}", regions.join(", ")),
            },
            dir.root.display(),
            engine.root_provider(),
        );
        if let Some(t) = &tls {
            let _ = writeln!(out, "  tls: {}", t.describe);
        }
        if !args.no_console {
            let _ = writeln!(out, "  console: {endpoint}/console/");
        }
        if !args.no_volumes {
            let _ = writeln!(out, "  volumes: {endpoint} (EC2 API)");
        }
        if !args.no_acme && tls.is_some() && PrivateCa::exists(&dir.tls_dir()) {
            let _ = writeln!(out, "  acme: {endpoint}/acme/directory");
        }
        if engine.root_provider() == "file" && !args.dev {
            tracing::warn!(
                "the root key is a file in the data dir: anyone who copies the data dir can read \
                 every key; use `keyhold init --root-key passphrase` (or an HSM) for real secrets"
            );
        }
        if let Some(cred) = &dev {
            let _ = writeln!(out, "  principal:         {}", cred.principal.arn);
            let _ = writeln!(out, "  access key id:     {}", args.dev_access_key_id);
            let _ = writeln!(out, "  secret access key: {}", args.dev_secret_access_key);
            let _ = writeln!(
                out,
                "export AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID={} \
                 AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={}",
                args.dev_access_key_id, args.dev_secret_access_key, home_region
            );
        }
        let s3 = match (s3_std_listener, &gateway) {
            (Some(l), Some(g)) => {
                let l = tokio::net::TcpListener::from_std(l)
                    .map_err(|e| format!("cannot listen for S3: {e}"))?;
                let a = l
                    .local_addr()
                    .map_err(|e| format!("cannot read the bound address: {e}"))?;
                let s3_endpoint = format!("{}://{a}", if tls.is_some() { "https" } else { "http" });
                let _ = writeln!(out, "  s3: listening on {s3_endpoint}");
                if dev.is_some() {
                    let _ = writeln!(out, "export AWS_ENDPOINT_URL_S3={s3_endpoint}");
                }
                Some((l, g.clone()))
            }
            _ => None,
        };
        let _ = out.flush();
        drop(out);
        // The home Region first: it audits the administrative actions.
        let mut engines = vec![engine.clone()];
        engines.extend(
            served
                .all()
                .filter(|e| e.region() != engine.region())
                .cloned(),
        );
        keyhold_server::spawn_maintenance_task(
            engines.clone(),
            Duration::from_secs(args.maintenance_secs.max(1)),
        );
        let mut mounted: Vec<Arc<dyn keyhold_server::Mounted>> = Vec::new();
        if !args.no_console {
            let console = keyhold_console::Console::new(
                engine.clone(),
                keyhold_console::ConsoleOptions {
                    buckets: s3.as_ref().map(|_| {
                        Arc::new(crate::console_door::CatalogBuckets(engine.clone()))
                            as Arc<dyn keyhold_console::Buckets>
                    }),
                    audit_dir: Some(dir.audit_dir()),
                    audit_public_key: Some(
                        dir.audit_dir()
                            .join(keyhold_kms::audit::chain::PUBLIC_KEY_FILE),
                    ),
                },
            );
            mounted.push(Arc::new(crate::console_door::Door::console(console)));
        }
        if let (false, Some(_)) = (args.no_acme, &tls) {
            if PrivateCa::exists(&dir.tls_dir()) {
                let wrapper = RootWrapper(root_for_acme.clone());
                let ca = PrivateCa::load(&dir.tls_dir(), &wrapper)
                    .map_err(|e| format!("private CA in {}: {e}", dir.tls_dir().display()))?;
                let acme_dir = dir.root.join("acme");
                let service = keyhold_acme::AcmeService::open(
                    &acme_dir,
                    Arc::new(ca),
                    Arc::new(wrapper),
                    engine.clone(),
                    keyhold_acme::AcmeOptions {
                        cert_days: args.acme_cert_days,
                        http01_port: args.acme_http01_port,
                        tlsalpn01_port: args.acme_tlsalpn01_port,
                        resolve: args.acme_resolve.iter().cloned().collect(),
                    },
                )
                .map_err(|e| format!("ACME server {}: {e}", acme_dir.display()))?;
                mounted.push(Arc::new(crate::console_door::Door::acme(Arc::new(service))));
            }
        }
        if !args.no_volumes {
            let volumes_dir = dir.root.join("volumes");
            let service = keyhold_volumes::VolumeService::open(engine.clone(), &volumes_dir)
                .map_err(|e| format!("volume service {}: {e}", volumes_dir.display()))?;
            mounted.push(Arc::new(crate::console_door::Door::volumes(Arc::new(
                service,
            ))));
        }
        let mut options = ServerOptions {
            // Served on the main listener unless they have their own.
            metrics: metrics_task.is_none().then_some(metrics),
            max_inflight: args.max_inflight,
            max_connections_per_ip: args.max_connections_per_ip,
            header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
            mounted,
            regions: (served.len() > 1).then(|| served.clone()),
            ..ServerOptions::default()
        };
        if let Some(t) = tls {
            options.tls = Some(t.config.clone());
            spawn_tls_upkeep(
                t,
                engine.clone(),
                Duration::from_secs(args.maintenance_secs.max(1)),
            );
        }
        let s3_task = s3.map(|(l, g)| {
            let options = options.clone();
            spawn_upload_expiry(g.clone(), Duration::from_secs(args.maintenance_secs.max(1)));
            tokio::spawn(async move { serve_s3(l, g, &options, shutdown_signal()).await })
        });
        keyhold_server::run(listener, engine.clone(), options, shutdown_signal())
            .await
            .map_err(|e| format!("server error: {e}"))?;
        if let Some(t) = s3_task {
            match t.await {
                Ok(Err(e)) => tracing::error!(error = %e, "S3 server error"),
                Err(e) => tracing::error!(error = %e, "S3 server task failed"),
                Ok(Ok(())) => {}
            }
        }
        for e in &engines {
            if let Err(e) = e.flush_usage() {
                tracing::warn!(error = %e, "writing key last-use records at shutdown failed");
            }
        }
        if let Err(e) = engine.close_audit() {
            tracing::error!(error = %e, "writing the shutdown audit digest failed");
        }
        tracing::info!("keyhold stopped");
        Ok::<(), String>(())
    })
}

/// Latency buckets of every `*_seconds` histogram (100 µs to 10 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the process's Prometheus recorder (histograms with [`LATENCY_BUCKETS`]) and keeps
/// it tidy; the handle renders `/metrics`.
fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| format!("cannot start the metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Serves the S3 gateway on `listener` with the connection limits of `options` until
/// `shutdown` resolves.
pub(crate) async fn serve_s3(
    listener: tokio::net::TcpListener,
    gateway: Arc<keyhold_s3::Gateway>,
    options: &ServerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let handler = move |conn: keyhold_server::Connection, req| {
        let g = gateway.clone();
        async move {
            let t = keyhold_s3::Transport {
                peer: conn.peer,
                tls: conn.tls,
            };
            g.handle(t, req).await
        }
    };
    keyhold_server::serve(listener, options, shutdown, handler).await
}

/// Every `every`, aborts multipart uploads left incomplete past the gateway's expiry.
fn spawn_upload_expiry(gateway: Arc<keyhold_s3::Gateway>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match gateway.expire_uploads().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(aborted = n, "abandoned multipart uploads removed"),
                Err(e) => tracing::warn!(error = %e, "abandoned multipart uploads not removed"),
            }
        }
    });
}

/// A TLS listener's configuration and what keeps its certificate fresh.
struct TlsSetup {
    /// The rustls configuration (serving from `store`).
    config: Arc<rustls::ServerConfig>,
    /// The certificate being served.
    store: Arc<CertStore>,
    /// Where the certificate comes from.
    source: CertSource,
    /// One line for the start-up banner.
    describe: String,
}

enum CertSource {
    /// keyhold's private CA, which renews the certificate.
    PrivateCa(PrivateCa, RootWrapper),
    /// Operator files, reloaded when they change or on SIGHUP.
    Files {
        cert: PathBuf,
        key: PathBuf,
        stamp: Option<(SystemTime, SystemTime)>,
    },
}

fn mtimes(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn tls_setup(args: &ServeArgs, dir: &DataDir, root: Arc<dyn RootKey>) -> Result<TlsSetup, String> {
    let now = now_secs();
    let (cert, source, describe) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let ck = certified_key(&read(cert)?, &read(key)?, now).map_err(|e| {
                format!(
                    "--tls-cert {} / --tls-key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
            let describe = format!(
                "certificate from {} (reloaded when it changes)",
                cert.display()
            );
            let source = CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
                stamp: mtimes(cert, key),
            };
            (ck, source, describe)
        }
        _ => {
            let wrapper = RootWrapper(root);
            let ca = if PrivateCa::exists(&dir.tls_dir()) {
                PrivateCa::load(&dir.tls_dir(), &wrapper)
            } else {
                PrivateCa::create(&dir.tls_dir(), &args.tls_names, 90, &wrapper, now)
            }
            .map_err(|e| format!("private CA in {}: {e}", dir.tls_dir().display()))?;
            let ck = ca
                .server_cert(&wrapper, now)
                .map_err(|e| format!("server certificate: {e}"))?;
            let ca_pem = dir.tls_dir().join("ca.pem");
            let describe = format!(
                "certificate from keyhold's private CA; clients trust {} \
                 (export AWS_CA_BUNDLE={})",
                ca_pem.display(),
                ca_pem.display()
            );
            (ck, CertSource::PrivateCa(ca, wrapper), describe)
        }
    };
    let client_ca = match &args.tls_client_ca {
        Some(p) => Some(read(p)?),
        None => None,
    };
    let store = Arc::new(CertStore::new(cert));
    let config =
        keyhold_server::tls::server_config(store.clone(), client_ca.as_deref()).map_err(|e| {
            match &args.tls_client_ca {
                Some(p) => format!("--tls-client-ca {}: {e}", p.display()),
                None => e.to_string(),
            }
        })?;
    Ok(TlsSetup {
        config,
        store,
        source,
        describe,
    })
}

/// Renews private-CA certificates when due, or reloads operator certificates when their files
/// change or on SIGHUP.
fn spawn_tls_upkeep(mut tls: TlsSetup, engine: Arc<Engine>, every: Duration) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let poll = match tls.source {
            CertSource::Files { .. } => Duration::from_secs(2).min(every),
            CertSource::PrivateCa(..) => every,
        };
        let mut tick = tokio::time::interval(poll);
        loop {
            #[cfg(unix)]
            let forced = match hup.as_mut() {
                Some(h) => tokio::select! {
                    _ = tick.tick() => false,
                    _ = h.recv() => true,
                },
                None => {
                    tick.tick().await;
                    false
                }
            };
            #[cfg(not(unix))]
            let forced = {
                tick.tick().await;
                false
            };
            let now = now_secs();
            match &mut tls.source {
                CertSource::PrivateCa(ca, wrapper) => {
                    match ca.renew_if_due(wrapper, &tls.store, now) {
                        Ok(false) => {}
                        Ok(true) => {
                            tracing::info!("server certificate renewed by the private CA");
                            engine.audit_service_event(
                                "RenewServerCertificate",
                                &serde_json::json!({ "source": "private CA" }),
                            );
                        }
                        Err(e) => tracing::error!(error = %e, "server certificate renewal failed"),
                    }
                }
                CertSource::Files { cert, key, stamp } => {
                    let now_stamp = mtimes(cert, key);
                    if !forced && now_stamp == *stamp {
                        continue;
                    }
                    *stamp = now_stamp;
                    let loaded = read(cert)
                        .and_then(|c| read(key).map(|k| (c, k)))
                        .and_then(|(c, k)| certified_key(&c, &k, now).map_err(|e| e.to_string()));
                    match loaded {
                        Ok(ck) => {
                            tls.store.replace(ck);
                            tracing::info!(cert = %cert.display(), "server certificate reloaded");
                            engine.audit_service_event(
                                "ReloadServerCertificate",
                                &serde_json::json!({ "source": cert.display().to_string() }),
                            );
                        }
                        Err(e) => tracing::error!(
                            error = %e,
                            "reloading the server certificate failed; still serving the old one"
                        ),
                    }
                }
            }
        }
    });
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
    fn the_home_region_is_recorded_and_kept_first() {
        let dir = tempfile::tempdir().unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        check_home_region(dir.path(), &names(&["us-east-1", "eu-west-1"])).unwrap();
        let recorded = std::fs::read_to_string(dir.path().join(HOME_REGION_FILE)).unwrap();
        assert_eq!(recorded, "us-east-1\n");
        check_home_region(dir.path(), &names(&["us-east-1"])).unwrap();
        let e = check_home_region(dir.path(), &names(&["eu-west-1", "us-east-1"])).unwrap_err();
        assert!(e.contains("--regions us-east-1,eu-west-1"), "{e}");
        let e = check_home_region(dir.path(), &names(&["ap-south-1"])).unwrap_err();
        assert!(e.contains("--regions us-east-1,ap-south-1"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(HOME_REGION_FILE)).unwrap(),
            "us-east-1\n"
        );
    }

    #[test]
    fn region_names() {
        assert!(is_region_name("us-east-1"));
        assert!(is_region_name("us-gov-west-1"));
        assert!(!is_region_name("useast1"));
        assert!(!is_region_name("US-east-1"));
        assert!(!is_region_name("us-east-"));
    }
}
