//! `blindwatch`: the command line of every party. Partners seal, the platform ingests and
//! evaluates, auditors verify. See `blindwatch --help`.

mod commands;
mod demo;
mod model_test;
mod models;
mod policies;
mod query;
mod serve;

use std::path::PathBuf;

use blindwatch_store::PostgresUrl;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "blindwatch",
    version,
    about = "Privacy-preserving risk early warning: sealed partner data, blind tokens, tiered alerts, audited."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline as the real parties would, on a synthetic city.
    Demo(DemoArgs),
    /// Generate the synthetic reference city (partner CSV exports and their ground truth).
    Synth(SynthArgs),
    /// Platform keys and consortium keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Partner-side commands (run on the partner's machine).
    #[command(subcommand)]
    Partner(PartnerCommand),
    /// Verify and store sealed packages on the platform.
    Ingest(IngestArgs),
    /// List the platform's accepted contributions and each dataset's token generation.
    Catalog(CatalogArgs),
    /// Datasets on the platform: token key rotation.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Verify the audit log, print checkpoints and inclusion proofs.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The token authority of the blind mode (run by a party other than the platform).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Check, approve (partners), register and test warning models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Evaluate the registered models and record their alerts.
    Run(RunArgs),
    /// An aggregate question through the access policies and the privacy gate.
    Query(QueryArgs),
    /// The access policies (Cedar).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// List alerts (open ones unless --all).
    Alerts(AlertsArgs),
    /// Run the platform server (HTTP API, live alert stream, scheduled model runs).
    Serve(ServeArgs),
    /// API users of the server and their bearer tokens.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on (port 0: any free port, printed on start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    db: DatabaseArg,
    /// Do not run the registered models on their schedules.
    #[arg(long)]
    no_scheduler: bool,
    /// Scheduled runs evaluate as of this day (a replay or a synthetic city); default: now.
    #[arg(long)]
    as_of: Option<chrono::NaiveDate>,
    /// Largest accepted upload, MiB (enforced while the body streams in: 413).
    #[arg(long, default_value_t = 512)]
    max_upload_mib: usize,
    #[command(flatten)]
    limits: serve::LimitArgs,
}

/// Where the alert store and the users live: the data directory's SQLite files by default.
#[derive(Args)]
struct DatabaseArg {
    /// Keep the alert store and the users in PostgreSQL (postgres://USER:PASSWORD@HOST/DB)
    /// instead of the data directory's SQLite files. Every command of one deployment must
    /// name the same database.
    #[arg(long, env = "BLINDWATCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl DatabaseArg {
    fn postgres(&self) -> anyhow::Result<Option<PostgresUrl>> {
        Ok(self
            .database_url
            .as_deref()
            .map(PostgresUrl::parse)
            .transpose()?)
    }
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user; prints its bearer token once, alone on the last line.
    Add {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// officer, specialist, auditor or partner (a partner's name is the partner's).
        #[arg(long)]
        role: String,
        /// An officer's station (policies/org.toml).
        #[arg(long)]
        station: Option<String>,
        /// A county duty officer (sees the county's red alerts).
        #[arg(long)]
        duty: bool,
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// List active users.
    List {
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// Revoke a user's token.
    Revoke {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        db: DatabaseArg,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Check model files against the data directory's catalog and contracts. A directory
    /// stands for its model files (`*.toml`, not the `*.test.toml` fixtures).
    Check {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check model files and register them (install into DIR/models), audited. Every
    /// partner whose data a model reads must have approved its exact text: approvals are
    /// read from --approval and from `<id>.approval.<partner>.json` beside each model.
    Register {
        #[arg(long)]
        data_dir: PathBuf,
        /// A partner's approval file (`model approve`); with one model file. Repeatable.
        #[arg(long = "approval")]
        approvals: Vec<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// On a partner's machine: approve this exact model file (its digest) with the partner's
    /// signing key. Writes `<id>.approval.<partner>.json` beside the model, or to --out.
    Approve {
        #[arg(long)]
        partner: String,
        /// The partner's signing key (NAME.key), the one registered on the platform.
        #[arg(long)]
        partner_key: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        file: PathBuf,
    },
    /// Run each model's fixture cases (MODEL.test.toml beside MODEL.toml).
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parse the Cedar schema and policies of DIR and validate them; errors as file:line:column.
    Check {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct QueryArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// Who asks: specialist, specialist:NAME, auditor:NAME, partner:NAME, officer:NAME@STATION.
    #[arg(long = "as")]
    principal: String,
    /// The declared purpose (e.g. analysis); every column use must be allowed for it.
    #[arg(long)]
    purpose: String,
    #[arg(long, value_enum, default_value = "table")]
    format: FormatArg,
    /// One aggregate question in the gate's language (see the README); `-` reads it from
    /// standard input.
    sql: String,
}

#[derive(Args)]
struct RunArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// Run only this model.
    #[arg(long)]
    model: Option<String>,
    /// Evaluate as of this day (what `current_date` means); default: now.
    #[arg(long)]
    as_of: Option<chrono::NaiveDate>,
    #[command(flatten)]
    db: DatabaseArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Table,
    Json,
}

#[derive(Args)]
struct AlertsArgs {
    #[arg(long)]
    data_dir: PathBuf,
    #[command(flatten)]
    db: DatabaseArg,
    /// Only this station's alerts (e.g. S03).
    #[arg(long)]
    station: Option<String>,
    /// Only this tier: red, orange, yellow or blue.
    #[arg(long)]
    tier: Option<String>,
    /// Only this model's alerts.
    #[arg(long)]
    model: Option<String>,
    /// Include closed alerts.
    #[arg(long)]
    all: bool,
    /// At most this many.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, value_enum, default_value = "table")]
    format: FormatArg,
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create the authority's VOPRF key (ristretto255-SHA512), 0600, and its public key
    /// beside it (KEY with extension .pub) for partners and the platform; prints its key id.
    Keygen {
        #[arg(long)]
        key: PathBuf,
    },
    /// Let a partner ask for evaluations: register its Ed25519 public key (NAME.pub, the
    /// key it signs manifests with) in the authority's directory. One key per partner.
    AddPartner {
        /// The authority's directory (partner register, audit log).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        partner: String,
        /// The partner's public key file (NAME.pub).
        #[arg(long)]
        key: PathBuf,
    },
    /// Serve batch VOPRF evaluations (one proof per batch) to registered partners, within
    /// their quotas and rates; HTTPS with --tls-cert/--tls-key.
    Serve(TokensServeArgs),
}

#[derive(Args)]
struct TokensServeArgs {
    /// The authority's VOPRF key file.
    #[arg(long)]
    key: PathBuf,
    /// Address to listen on, e.g. 0.0.0.0:7300 (with TLS) or 127.0.0.1:7300.
    #[arg(long)]
    listen: String,
    /// The authority's directory (partner register, audit log, ledger).
    #[arg(long)]
    dir: PathBuf,
    /// Privacy settings with the [token_authority] quotas.
    #[arg(long, default_value = "policies/privacy.toml")]
    privacy: PathBuf,
    /// The TLS certificate chain (PEM) partners see.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (PEM) as well.
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// Serve plain HTTP on an address that is not loopback (only behind a TLS-terminating
    /// proxy on a trusted network).
    #[arg(long)]
    allow_plain_http: bool,
    /// Connections served at once; more wait.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Seconds a client has for the TLS handshake and each request head.
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a client has to send a request body.
    #[arg(long, default_value_t = 60)]
    body_timeout_secs: u64,
    /// Seconds between signed audit checkpoints while serving.
    #[arg(long, default_value_t = 60)]
    checkpoint_secs: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum TokensArg {
    /// HMAC-SHA256 under the consortium linkage key (--linkage-key).
    Consortium,
    /// RFC 9497 VOPRF through a token authority (--authority).
    Blind,
}

#[derive(Args)]
struct CatalogArgs {
    /// The platform data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Also check every current contribution's stored file against the catalog and its
    /// signed manifest (SHA-256), as the engine does before reading.
    #[arg(long)]
    verify: bool,
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Start a new token generation for a dataset whose tokens move to another key (a token
    /// authority's key rotation) or mode. Audited. From then on only packages under the new
    /// tokens are accepted and only they are read: the table is empty until the partner
    /// sends the dataset again, sealed under the new key. Earlier contributions stay stored.
    RotateTokens {
        #[arg(long)]
        data_dir: PathBuf,
        /// The dataset, `<partner>.<dataset>`.
        #[arg(long)]
        dataset: String,
        /// The new token mode.
        #[arg(long, value_enum)]
        tokens: TokensArg,
        /// The new token key id (16 hex digits: `tokens keygen` prints it, partners' seals
        /// show it).
        #[arg(long)]
        key_id: String,
    },
}

#[derive(Args)]
struct DataDirArg {
    /// The platform data directory.
    #[arg(long)]
    data_dir: PathBuf,
}

/// The synthetic city, shared by `demo` and `synth`.
#[derive(Args)]
struct CityArgs {
    #[arg(long, default_value_t = 20_000)]
    persons: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Last day of the 365-day activity window (default: today, UTC).
    #[arg(long)]
    as_of: Option<chrono::NaiveDate>,
    /// Share of rows with messy input (0 to 0.5).
    #[arg(long, default_value_t = blindwatch_synth::DEFAULT_MESSY_RATE)]
    messy_rate: f64,
}

#[derive(Args)]
struct DemoArgs {
    /// Working directory; `partners/<name>/` holds what stays with each partner, `platform/` what the platform holds.
    #[arg(long, default_value = "demo-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    city: CityArgs,
    /// How partners make tokens: blind asks a token authority the demo runs in process.
    #[arg(long, value_enum, default_value = "blind")]
    tokens: TokensArg,
}

#[derive(Args)]
struct SynthArgs {
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    city: CityArgs,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a platform data directory: HPKE key pair (public key at keys/platform.pub),
    /// deployment secret, audit-log key, catalog, shipped policies.
    Init(DataDirArg),
    /// Create a consortium linkage key (shared by the partners, never by the platform).
    Linkage {
        #[arg(long)]
        out: PathBuf,
    },
    /// Accept blind packages only under this token authority public key (the .pub that
    /// `tokens keygen` wrote); audited.
    Authority {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// Replace a different key already set (a key rotation).
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Subcommand)]
enum PartnerCommand {
    /// Create a partner's Ed25519 signing key: DIR/NAME.key (0600) and DIR/NAME.pub.
    Keygen {
        #[arg(long)]
        partner: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Register a partner's public key on the platform and the datasets it may contribute to.
    Register {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        partner: String,
        /// The partner's public key file (NAME.pub).
        #[arg(long)]
        key: PathBuf,
        /// Comma-separated `<partner>.<dataset>` names.
        #[arg(long, value_delimiter = ',', required = true)]
        datasets: Vec<String>,
    },
    /// Seal an export: check against the contract, tokenise identifiers, encrypt, sign.
    Seal(Box<SealArgs>),
}

#[derive(Clone, Copy, ValueEnum)]
enum EncodingArg {
    Auto,
    Utf8,
    Gbk,
}

#[derive(Args)]
struct SealArgs {
    /// The dataset contract (policies/datasets/<partner>.<dataset>.toml).
    #[arg(long)]
    contract: PathBuf,
    /// The export: CSV (UTF-8 or GBK/GB18030) or Parquet.
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    partner: String,
    /// The partner's signing key (NAME.key).
    #[arg(long)]
    partner_key: PathBuf,
    /// The platform's public key (platform.pub).
    #[arg(long)]
    platform_key: PathBuf,
    /// How identifiers become tokens: blind (the default) asks the token authority.
    #[arg(long, value_enum, default_value = "blind")]
    tokens: TokensArg,
    /// The consortium linkage key (consortium mode).
    #[arg(long)]
    linkage_key: Option<PathBuf>,
    /// The token authority's URL, e.g. https://authority.example:7300 (blind mode; plain
    /// http:// only to this machine unless --allow-plain-http).
    #[arg(long)]
    authority: Option<String>,
    /// The token authority's public key (from its operator); every batch's proof is
    /// checked against it. Without it the key served on first use is recorded beside
    /// --partner-key (token-authority.pub) and trusted from then on.
    #[arg(long)]
    authority_key: Option<PathBuf>,
    /// For https://: the CA of the authority's TLS certificate, or that certificate (PEM).
    #[arg(long)]
    authority_ca: Option<PathBuf>,
    /// A client certificate chain (PEM), when the authority requires one.
    #[arg(long, requires = "authority_client_key")]
    authority_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "authority_client_cert")]
    authority_client_key: Option<PathBuf>,
    /// Allow plain http:// to an authority on another machine (trusted networks only).
    #[arg(long)]
    allow_plain_http: bool,
    /// Where the encrypted token cache and its key live (blind mode; default: the directory of --partner-key).
    #[arg(long)]
    token_cache: Option<PathBuf>,
    /// Sequence number of this contribution; must grow with every contribution to the dataset.
    #[arg(long)]
    seq: u64,
    #[arg(long)]
    out: PathBuf,
    /// CSV text encoding.
    #[arg(long, value_enum, default_value = "auto")]
    encoding: EncodingArg,
    /// Rows per batch.
    #[arg(long, default_value_t = 65_536)]
    batch_rows: usize,
    /// Seal even if no row is left: for a replace dataset this empties the dataset on the
    /// platform, which the platform accepts only when the signed manifest says so.
    #[arg(long)]
    allow_empty: bool,
    /// Distinct identifiers whose tokens the run keeps in memory; beyond it the in-memory
    /// cache starts over (bounds memory only: every row still gets its own value's token).
    #[arg(long, default_value_t = blindwatch_partner::DEFAULT_TOKEN_CACHE_LIMIT, value_parser = clap::value_parser!(usize))]
    token_cache_limit: usize,
}

#[derive(Args)]
struct IngestArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// Package files (the `.parquet` or the `.manifest.json`; the other is found beside it).
    #[arg(required = true)]
    packages: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the tree, check every checkpoint's signature and consistency; report the first bad entry.
    Verify(DataDirArg),
    /// Print an inclusion proof bundle for entry N (JSON) that an independent verifier accepts.
    Proof {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        entry: u64,
    },
    /// Sign a checkpoint of the log's current size and print it.
    Checkpoint(DataDirArg),
    /// Verify a proof bundle offline against the log's public key.
    VerifyProof {
        /// The bundle (JSON) printed by `audit proof`.
        #[arg(long)]
        bundle: PathBuf,
        /// The log's verifier key file (keys/log.vkey).
        #[arg(long)]
        key: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BLINDWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once: many library errors already quote their source
/// in their own message, which `{:#}` would print again (`X: X`).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    use commands as c;
    match cli.command {
        Command::Demo(a) => {
            let mode = match a.tokens {
                TokensArg::Blind => demo::TokenMode::Blind,
                TokensArg::Consortium => demo::TokenMode::Consortium,
            };
            let options = demo::DemoOptions {
                persons: a.city.persons,
                seed: a.city.seed,
                as_of: a.city.as_of,
                messy_rate: a.city.messy_rate,
                tokens: mode,
            };
            demo::run(&a.data_dir, &options).await
        }
        Command::Synth(a) => c::synth(
            &a.out,
            a.city.persons,
            a.city.seed,
            a.city.as_of,
            a.city.messy_rate,
        ),
        Command::Keys(KeysCommand::Init(a)) => c::keys_init(&a.data_dir).await.map(|_| ()),
        Command::Keys(KeysCommand::Linkage { out }) => c::keys_linkage(&out),
        Command::Keys(KeysCommand::Authority {
            data_dir,
            key,
            rotate,
        }) => c::keys_authority(&data_dir, &key, rotate),
        Command::Partner(PartnerCommand::Keygen { partner, out }) => {
            c::partner_keygen(&partner, &out).map(|_| ())
        }
        Command::Partner(PartnerCommand::Register {
            data_dir,
            partner,
            key,
            datasets,
        }) => c::partner_register(&data_dir, &partner, &key, &datasets).await,
        Command::Partner(PartnerCommand::Seal(a)) => {
            let encoding = match a.encoding {
                EncodingArg::Auto => blindwatch_partner::Encoding::Auto,
                EncodingArg::Utf8 => blindwatch_partner::Encoding::Utf8,
                EncodingArg::Gbk => blindwatch_partner::Encoding::Gbk,
            };
            let job = c::SealJob {
                contract: &a.contract,
                input: &a.input,
                partner: &a.partner,
                partner_key: &a.partner_key,
                platform_key: &a.platform_key,
                sequence: a.seq,
                out: &a.out,
                encoding,
                batch_rows: a.batch_rows,
                token_cache_limit: a.token_cache_limit,
                allow_empty: a.allow_empty,
            };
            match (a.tokens, &a.linkage_key, &a.authority) {
                (TokensArg::Consortium, Some(linkage_key), None) => {
                    c::partner_seal(&job, linkage_key).map(|_| ())
                }
                (TokensArg::Consortium, None, _) => anyhow::bail!(
                    "consortium mode needs --linkage-key FILE (or use --tokens blind --authority URL)"
                ),
                (TokensArg::Consortium, Some(_), Some(_)) => anyhow::bail!(
                    "--authority is for blind mode: add --tokens blind, or drop --authority"
                ),
                (TokensArg::Blind, None, Some(url)) => {
                    let key_dir = a
                        .partner_key
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."))
                        .to_owned();
                    let cache = a.token_cache.clone().unwrap_or_else(|| key_dir.clone());
                    let pin = match &a.authority_key {
                        Some(file) => blindwatch_tokens::Pin::File(file.clone()),
                        None => blindwatch_tokens::Pin::FirstUse(
                            key_dir.join(blindwatch_crypto::blind::AUTHORITY_PUBLIC_KEY_FILE),
                        ),
                    };
                    let endpoint = blindwatch_tokens::Endpoint {
                        url: url.clone(),
                        ca: a.authority_ca.clone(),
                        client_cert: a
                            .authority_client_cert
                            .clone()
                            .zip(a.authority_client_key.clone()),
                        allow_plain_http: a.allow_plain_http,
                    };
                    c::partner_seal_blind(
                        &job,
                        &c::BlindJob {
                            endpoint,
                            pin,
                            cache_dir: &cache,
                        },
                    )
                    .map(|_| ())
                }
                (TokensArg::Blind, Some(_), _) => anyhow::bail!(
                    "--linkage-key is for consortium mode: add --tokens consortium, or drop it and use the token authority (--authority URL); modes never mix"
                ),
                (TokensArg::Blind, None, None) => anyhow::bail!(
                    "blind mode (the default) needs --authority URL (the token authority, e.g. http://127.0.0.1:7300); for consortium tokens add --tokens consortium --linkage-key FILE"
                ),
            }
        }
        Command::Ingest(a) => c::ingest(&a.data_dir, &a.packages).await,
        Command::Catalog(a) => c::catalog(&a.data_dir, a.verify).await,
        Command::Dataset(DatasetCommand::RotateTokens {
            data_dir,
            dataset,
            tokens,
            key_id,
        }) => {
            let mode = match tokens {
                TokensArg::Blind => blindwatch_crypto::token::TokenMode::Blind,
                TokensArg::Consortium => blindwatch_crypto::token::TokenMode::Consortium,
            };
            c::rotate_tokens(&data_dir, &dataset, mode, &key_id).await
        }
        Command::Audit(AuditCommand::Verify(a)) => c::audit_verify(&a.data_dir),
        Command::Audit(AuditCommand::Proof { data_dir, entry }) => c::audit_proof(&data_dir, entry),
        Command::Audit(AuditCommand::Checkpoint(a)) => c::audit_checkpoint(&a.data_dir),
        Command::Audit(AuditCommand::VerifyProof { bundle, key }) => {
            c::audit_verify_proof(&bundle, &key)
        }
        Command::Tokens(TokensCommand::Keygen { key }) => c::tokens_keygen(&key),
        Command::Tokens(TokensCommand::AddPartner { dir, partner, key }) => {
            c::tokens_add_partner(&dir, &partner, &key)
        }
        Command::Tokens(TokensCommand::Serve(a)) => {
            let secs = std::time::Duration::from_secs;
            c::tokens_serve(&c::TokensServe {
                key: &a.key,
                listen: &a.listen,
                dir: &a.dir,
                privacy: &a.privacy,
                tls_cert: a.tls_cert.as_deref(),
                tls_key: a.tls_key.as_deref(),
                tls_client_ca: a.tls_client_ca.as_deref(),
                allow_plain_http: a.allow_plain_http,
                max_connections: a.max_connections,
                header_timeout: secs(a.header_timeout_secs),
                body_timeout: secs(a.body_timeout_secs),
                checkpoint_every: secs(a.checkpoint_secs),
            })
            .await
        }
        Command::Model(ModelCommand::Check { data_dir, files }) => {
            models::model_check(&data_dir, &files).await
        }
        Command::Model(ModelCommand::Register {
            data_dir,
            approvals,
            files,
        }) => models::model_register(&data_dir, &files, &approvals, false).await,
        Command::Model(ModelCommand::Approve {
            partner,
            partner_key,
            out,
            file,
        }) => models::model_approve(&partner, &partner_key, &file, out.as_deref()).map(|_| ()),
        Command::Model(ModelCommand::Test { files }) => model_test::model_test(&files).await,
        Command::Run(a) => {
            let reports = models::run(
                &a.data_dir,
                a.db.postgres()?.as_ref(),
                a.model.as_deref(),
                a.as_of,
            )
            .await?;
            models::print_runs(&reports);
            Ok(())
        }
        Command::Query(a) => {
            query::query(&query::QueryArgs {
                data_dir: &a.data_dir,
                principal: &a.principal,
                purpose: &a.purpose,
                sql: &a.sql,
                format: match a.format {
                    FormatArg::Table => models::Format::Table,
                    FormatArg::Json => models::Format::Json,
                },
            })
            .await
        }
        Command::Policy(PolicyCommand::Check { dir }) => query::policy_check(&dir),
        Command::Serve(a) => {
            serve::serve(&serve::ServeArgs {
                data_dir: &a.data_dir,
                listen: &a.listen,
                postgres: a.db.postgres()?,
                no_scheduler: a.no_scheduler,
                as_of: a.as_of,
                max_upload_mib: a.max_upload_mib,
                limits: &a.limits,
            })
            .await
        }
        Command::Users(UsersCommand::Add {
            data_dir,
            name,
            role,
            station,
            duty,
            db,
        }) => {
            serve::users_add(&serve::AddUser {
                data_dir: &data_dir,
                postgres: db.postgres()?.as_ref(),
                name: &name,
                role: &role,
                station: station.as_deref(),
                duty,
            })
            .await
        }
        Command::Users(UsersCommand::List { data_dir, db }) => {
            serve::users_list(&data_dir, db.postgres()?.as_ref()).await
        }
        Command::Users(UsersCommand::Revoke {
            data_dir,
            role,
            name,
            db,
        }) => serve::users_revoke(&data_dir, db.postgres()?.as_ref(), &role, &name).await,
        Command::Alerts(a) => {
            models::alerts(
                &a.data_dir,
                a.db.postgres()?.as_ref(),
                &models::AlertsQuery {
                    station: a.station.as_deref(),
                    tier: a.tier.as_deref(),
                    model: a.model.as_deref(),
                    all: a.all,
                    limit: a.limit,
                    format: match a.format {
                        FormatArg::Table => models::Format::Table,
                        FormatArg::Json => models::Format::Json,
                    },
                },
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::other("disk on fire");
        // A cause the message already quotes (as library errors often do) is not repeated.
        let quoted = anyhow::Error::new(io()).context("reading the catalog: disk on fire");
        assert_eq!(error_chain(&quoted), "reading the catalog: disk on fire");
        // Context that does not quote it is followed by it, once.
        let context = anyhow::Error::new(io()).context("opening the platform");
        assert_eq!(error_chain(&context), "opening the platform: disk on fire");
        let both = anyhow::Error::new(io())
            .context("reading the catalog: disk on fire")
            .context("opening the platform");
        assert_eq!(
            error_chain(&both),
            "opening the platform: reading the catalog: disk on fire"
        );
    }
}
