//! The commands behind the CLI. Each prints what a person needs and nothing personal.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use blindwatch_audit::{AuditEvent, AuditRecord, LogPublicKey, Principal, Sha256Digest};
use blindwatch_common::fsutil;
use blindwatch_contract::{Contract, ContractSet, is_plain_name};
use blindwatch_crypto::keys::{self, KeyFileKind};
use blindwatch_crypto::sign::{SigningKey, VerifyingKey};
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey, Tokenizer};
use blindwatch_crypto::wrap::{PlatformPrivateKey, PlatformPublicKey};
use blindwatch_ingest::Ingestor;
use blindwatch_partner::{Encoding, InputFormat, SealOptions, SealOutcome, SealPermissions};
use blindwatch_store::{Catalog, DataDir};

pub fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

pub fn synth(
    out: &Path,
    persons: u64,
    seed: u64,
    as_of: Option<chrono::NaiveDate>,
    messy_rate: f64,
) -> anyhow::Result<()> {
    let mut cfg = blindwatch_synth::SynthConfig::new(persons, seed, as_of.unwrap_or_else(today));
    cfg.messy_rate = messy_rate;
    let summary = blindwatch_synth::generate(&cfg, out)?;
    print!("{summary}");
    Ok(())
}

/// Creates a platform data directory. Refuses to touch one that has keys already.
pub async fn keys_init(data_dir: &Path) -> anyhow::Result<DataDir> {
    let (dir, public, installed) = init_platform(data_dir).await?;
    println!("initialised {}", data_dir.display());
    println!(
        "  platform key {} (partners seal to {})",
        public.id(),
        dir.platform_public_key().display()
    );
    println!(
        "  {installed} shipped policy files in {}",
        dir.policies_dir().display()
    );
    println!(
        "  audit log verifier key in {}",
        dir.log_public_key().display()
    );
    Ok(dir)
}

/// `keys init` without the report: the data directory, its public key, policy files written.
pub async fn init_platform(data_dir: &Path) -> anyhow::Result<(DataDir, PlatformPublicKey, usize)> {
    let dir = DataDir::new(data_dir);
    if dir.platform_private_key().exists() {
        bail!(
            "{} is already initialised (it has a platform key); use another directory",
            data_dir.display()
        );
    }
    for d in [dir.keys_dir(), dir.tmp_dir(), dir.packages_dir()] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let (private, public) = PlatformPrivateKey::generate();
    private.write(&dir.platform_private_key())?;
    public.write(&dir.platform_public_key())?;
    let deployment = blindwatch_crypto::random_secret::<32>()?;
    keys::write_key_file(
        &dir.deployment_key(),
        KeyFileKind::Deployment,
        deployment.as_ref(),
    )?;
    let log_key = SigningKey::generate()?;
    log_key.write(&dir.log_key(), KeyFileKind::LogSigning)?;
    let installed = crate::policies::install(&dir.policies_dir())?;
    Catalog::open(&dir.catalog_path(), true)
        .await?
        .close()
        .await;
    let mut audit = dir.open_audit_log()?;
    fsutil::write_new(
        &dir.log_public_key(),
        format!("{}\n", audit.public_key().to_vkey()).as_bytes(),
    )?;
    let digest = policy_digest(&dir.policies_dir())?;
    audit.append(&AuditRecord::now(
        Principal::new("platform")?,
        AuditEvent::PolicyLoaded { digest },
    ))?;
    audit.checkpoint()?;
    Ok((dir, public, installed))
}

fn policy_digest(dir: &Path) -> anyhow::Result<Sha256Digest> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut all = Vec::new();
    for f in files {
        all.extend_from_slice(
            f.strip_prefix(dir)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        all.push(0);
        all.extend_from_slice(&std::fs::read(&f)?);
    }
    Ok(Sha256Digest::of(&all))
}

pub fn keys_linkage(out: &Path) -> anyhow::Result<()> {
    LinkageKey::generate()?.write(out)?;
    println!(
        "wrote consortium linkage key {} (share it with the partners only, never with the platform)",
        out.display()
    );
    Ok(())
}

pub fn partner_keygen(partner: &str, out: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    if !is_plain_name(partner) {
        bail!("partner name `{partner}` must be lower-case letters, digits, `_` or `-`");
    }
    let key = SigningKey::generate()?;
    let (secret, public) = (
        out.join(format!("{partner}.key")),
        out.join(format!("{partner}.pub")),
    );
    key.write(&secret, KeyFileKind::PartnerSigning)?;
    key.verifying_key()
        .write(&public, KeyFileKind::PartnerPublic)?;
    println!(
        "partner {partner}: key {} — keep {} secret, give {} to the platform",
        key.id(),
        secret.display(),
        public.display()
    );
    Ok((secret, public))
}

pub fn load_contracts(dir: &DataDir) -> anyhow::Result<ContractSet> {
    ContractSet::load_dir(&dir.contracts_dir())
        .with_context(|| format!("loading contracts from {}", dir.contracts_dir().display()))
}

async fn open_catalog(dir: &DataDir) -> anyhow::Result<Catalog> {
    if !dir.is_initialised() {
        bail!(
            "{} is not a platform data directory: run `blindwatch keys init --data-dir {}` first",
            dir.root().display(),
            dir.root().display()
        );
    }
    Ok(Catalog::open(&dir.catalog_path(), false).await?)
}

pub async fn partner_register(
    data_dir: &Path,
    partner: &str,
    key: &Path,
    datasets: &[String],
) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    let catalog = open_catalog(&dir).await?;
    let contracts = load_contracts(&dir)?;
    let key = VerifyingKey::read(key, KeyFileKind::PartnerPublic)?;
    let datasets: BTreeSet<String> = datasets
        .iter()
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    for table in &datasets {
        let contract = contracts.get(table)?;
        if contract.partner != partner {
            bail!(
                "dataset {table} belongs to partner `{}`: a partner may contribute only to its own datasets",
                contract.partner
            );
        }
    }
    let datasets: Vec<String> = datasets.into_iter().collect();
    catalog.register_partner(partner, &key, &datasets).await?;
    catalog.close().await;
    println!(
        "registered partner {partner} (key {}) for {}",
        key.id(),
        datasets.join(", ")
    );
    Ok(())
}

/// What a seal needs besides the way tokens are made.
pub struct SealJob<'a> {
    pub contract: &'a Path,
    pub input: &'a Path,
    pub partner: &'a str,
    pub partner_key: &'a Path,
    pub platform_key: &'a Path,
    pub sequence: u64,
    pub out: &'a Path,
    pub encoding: Encoding,
    pub batch_rows: usize,
    pub token_cache_limit: usize,
    /// Seal even when no row is left (`--allow-empty`), recorded in the signed manifest.
    pub allow_empty: bool,
}

/// Seals in consortium mode (HMAC under the linkage key).
pub fn partner_seal(job: &SealJob<'_>, linkage_key: &Path) -> anyhow::Result<SealOutcome> {
    let tokenizer = ConsortiumTokenizer::new(&LinkageKey::read(linkage_key)?);
    partner_seal_with(job, &tokenizer)
}

/// How a blind seal reaches the token authority and which key it trusts.
pub struct BlindJob<'a> {
    pub endpoint: blindwatch_tokens::Endpoint,
    /// `--authority-key FILE`, or trust on first use recorded beside the partner's key.
    pub pin: blindwatch_tokens::Pin,
    pub cache_dir: &'a Path,
}

/// Seals in blind mode: identifiers are blinded on this machine and only blinded elements
/// go to the token authority, signed with the partner's key; every batch's proof is checked
/// against the pinned authority key; tokens are cached (encrypted) in `cache_dir` as they
/// arrive, so a later seal — or a retry after a refusal — asks only for new values.
pub fn partner_seal_blind(job: &SealJob<'_>, blind: &BlindJob<'_>) -> anyhow::Result<SealOutcome> {
    let signing_key = Arc::new(SigningKey::read(
        job.partner_key,
        KeyFileKind::PartnerSigning,
    )?);
    let connected = blindwatch_tokens::blind_tokenizer(
        &blind.endpoint,
        job.partner,
        signing_key,
        blind.cache_dir,
        &blind.pin,
    )
    .context("connecting to the token authority")?;
    if let (true, blindwatch_tokens::Pin::FirstUse(path)) = (connected.recorded, &blind.pin) {
        println!(
            "  trusting token authority key {} from now on (recorded on first use in {}; compare the key id with the authority's operator)",
            connected.pinned.key_id(),
            path.display()
        );
    }
    let tokenizer = connected.tokenizer;
    let cached_before = tokenizer.cached();
    let outcome = partner_seal_with(job, &tokenizer).map_err(|e| {
        let kept = tokenizer.cached().saturating_sub(cached_before);
        if kept > 0 {
            e.context(format!(
                "{kept} tokens evaluated before the failure are kept in the encrypted cache ({}): a retry asks only for the rest",
                blind.cache_dir.display()
            ))
        } else {
            e
        }
    })?;
    println!(
        "  blind tokens: key {} (verified), {} values sent blinded to the authority in requests of up to {}, {} cached before ({})",
        outcome.manifest.tokens.key_id,
        tokenizer.requested(),
        tokenizer.request_elements(),
        cached_before,
        blind.cache_dir.display()
    );
    Ok(outcome)
}

/// Seals with any tokenizer.
pub fn partner_seal_with(
    f: &SealJob<'_>,
    tokenizer: &dyn Tokenizer,
) -> anyhow::Result<SealOutcome> {
    let contract = Contract::load(f.contract)?;
    let signing_key = SigningKey::read(f.partner_key, KeyFileKind::PartnerSigning)?;
    let platform_key = PlatformPublicKey::read(f.platform_key)?;
    let format = match (f.encoding, f.input.extension().and_then(|e| e.to_str())) {
        (_, Some("parquet")) => InputFormat::Parquet,
        (enc, _) => InputFormat::Csv(enc),
    };
    std::fs::create_dir_all(f.out).with_context(|| format!("creating {}", f.out.display()))?;
    let permissions = SealPermissions {
        allow_empty: f.allow_empty,
    };
    let outcome = blindwatch_partner::seal_permitting(
        &SealOptions {
            contract: &contract,
            input: f.input,
            format,
            partner: f.partner,
            signing_key: &signing_key,
            platform_key: &platform_key,
            tokenizer,
            sequence: f.sequence,
            out_dir: f.out,
            batch_rows: f.batch_rows,
            token_cache_limit: f.token_cache_limit,
            progress: true,
        },
        permissions,
    )?;
    let m = &outcome.manifest;
    let rejected: u64 = m.rejected_rows.values().sum();
    println!(
        "sealed {} #{}: {} rows of {} read, {} rejected, {} distinct identifiers tokenised, {:.1} s",
        m.table_name(),
        m.sequence,
        m.row_count,
        m.input_rows,
        rejected,
        outcome.distinct_tokenised,
        outcome.elapsed.as_secs_f64()
    );
    for (reason, n) in &m.rejected_rows {
        println!("  rejected {n:>8}  {reason}");
    }
    for (reason, n) in &outcome.nulled_values {
        println!("  nulled   {n:>8}  {reason} (optional identifier)");
    }
    println!("  package  {}", outcome.package.manifest.display());
    if rejected > 0 {
        println!(
            "  rejected rows by number and reason: {}",
            outcome.rejects_report.display()
        );
    }
    if m.row_count == 0 {
        println!(
            "  empty contribution, allowed by --allow-empty (recorded in the signed manifest)"
        );
    }
    Ok(outcome)
}

pub async fn ingestor(dir: &DataDir) -> anyhow::Result<Ingestor> {
    let catalog = open_catalog(dir).await?;
    let contracts = load_contracts(dir)?;
    let key = Arc::new(PlatformPrivateKey::read(&dir.platform_private_key())?);
    Ok(Ingestor::new(dir.clone(), catalog, contracts, key))
}

pub async fn ingest(data_dir: &Path, packages: &[PathBuf]) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    let ingestor = ingestor(&dir).await?;
    let mut audit = dir.open_audit_log()?;
    // This process now holds the log's lock: staging left by a killed one can go.
    blindwatch_ingest::sweep_staging(&dir, &audit)
        .with_context(|| format!("clearing {}", dir.tmp_dir().display()))?;
    let mut refused = 0;
    for package in packages {
        match ingestor.ingest(package, &mut audit).await {
            Ok(a) if a.empty => println!(
                "accepted {} #{}: no rows (the partner sealed it with --allow-empty)",
                a.table, a.sequence
            ),
            Ok(a) => println!("accepted {} #{}: {} rows", a.table, a.sequence, a.rows),
            Err(e) => {
                refused += 1;
                eprintln!("refused {}: {e}", package.display());
            }
        }
    }
    audit.checkpoint()?;
    if refused > 0 {
        bail!(
            "{refused} of {} packages refused; nothing of them was stored",
            packages.len()
        );
    }
    Ok(())
}

pub async fn catalog(data_dir: &Path, verify: bool) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    let catalog = open_catalog(&dir).await?;
    println!(
        "{:<34} {:>5} {:>12}  {:<11} {:<17} {:>4}  ingested",
        "table", "seq", "rows", "tokens", "token key", "gen"
    );
    let tables = catalog.tables().await?;
    for table in &tables {
        for c in catalog.all_contributions(table).await? {
            println!(
                "{:<34} {:>5} {:>12}  {:<11} {:<17} {:>4}  {}",
                c.table,
                c.sequence,
                c.row_count,
                c.token_mode,
                c.token_key_id,
                c.generation,
                c.ingested_at
            );
        }
    }
    println!();
    for table in &tables {
        if let Some(g) = catalog.token_generation(table).await? {
            let current = catalog.contributions(table).await?;
            println!(
                "{table}: token generation {} ({} tokens under key {}, since {} by {}), {} current contribution(s)",
                g.generation,
                g.token_mode,
                g.token_key_id,
                g.started_at,
                g.started_by,
                current.len()
            );
        }
    }
    if verify {
        let engine = blindwatch_engine::Engine::open(&dir).await?;
        for t in engine.tables() {
            if t.current_sequences.is_empty() {
                continue;
            }
            engine
                .verify_table(&t.name)
                .await
                .with_context(|| format!("verifying {}", t.name))?;
            println!(
                "verified {}: {} current contribution(s) match the catalog and their signed manifests",
                t.name,
                t.current_sequences.len()
            );
        }
    }
    Ok(())
}

/// `dataset rotate-tokens`: the dataset's next token generation, audited.
pub async fn rotate_tokens(
    data_dir: &Path,
    table: &str,
    mode: blindwatch_crypto::token::TokenMode,
    key_id: &str,
) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    let catalog = open_catalog(&dir).await?;
    let contracts = load_contracts(&dir)?;
    let contract = contracts.get(table)?;
    if !(key_id.len() == 16
        && key_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    {
        bail!(
            "`--key-id` is a token key id: 16 lower-case hex digits, as `tokens keygen` prints it"
        );
    }
    let mut audit = dir.open_audit_log()?;
    let before = catalog.contributions(table).await?;
    let last = catalog.last_sequence(table).await?;
    let mode = mode.to_string();
    let started = catalog
        .start_token_generation(table, &mode, key_id, "platform")
        .await?;
    audit.append(&AuditRecord::now(
        Principal::new("platform")?,
        AuditEvent::TokenGenerationStarted {
            partner: blindwatch_audit::PartnerId::new(&contract.partner)?,
            dataset: blindwatch_audit::DatasetId::new(&contract.dataset)?,
            generation: started.generation,
            mode: blindwatch_audit::ReasonCode::new(&mode)?,
            key_id_sha256: Sha256Digest::of(key_id.as_bytes()),
        },
    ))?;
    audit.checkpoint()?;
    println!(
        "{table}: token generation {} started ({mode} tokens under key {key_id})",
        started.generation
    );
    println!(
        "  the {} contribution(s) of the previous generation stay stored and verifiable but are no longer read;",
        before.len()
    );
    println!(
        "  {table} is empty until {} sends it again sealed under the new key, with sequence numbers above {}",
        contract.partner,
        last.unwrap_or(0)
    );
    Ok(())
}

fn log_key(dir: &DataDir) -> anyhow::Result<LogPublicKey> {
    let text = std::fs::read_to_string(dir.log_public_key()).with_context(|| {
        format!(
            "reading the log verifier key {}",
            dir.log_public_key().display()
        )
    })?;
    Ok(LogPublicKey::from_vkey(text.trim())?)
}

pub fn audit_verify(data_dir: &Path) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    let report = blindwatch_audit::verify(dir.audit_dir(), &log_key(&dir)?)?;
    print!("{report}");
    if !report.is_ok() {
        bail!("the audit log does not verify");
    }
    Ok(())
}

pub fn audit_proof(data_dir: &Path, entry: u64) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    let log = dir.open_audit_log()?;
    println!("{}", log.inclusion_bundle(entry)?.to_json()?);
    Ok(())
}

pub fn audit_checkpoint(data_dir: &Path) -> anyhow::Result<()> {
    if blindwatch_tokens::AuthorityDir::is_authority_dir(data_dir) {
        // A token authority's directory: through the running authority, if it runs.
        let dir = blindwatch_tokens::AuthorityDir::new(data_dir);
        print!("{}", blindwatch_tokens::control::checkpoint(&dir)?);
        return Ok(());
    }
    let dir = DataDir::new(data_dir);
    let mut log = dir.open_audit_log()?;
    print!("{}", log.checkpoint()?.text());
    Ok(())
}

pub fn audit_verify_proof(bundle: &Path, key: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let key_text =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let bundle = blindwatch_audit::InclusionBundle::from_json(&text)?;
    let verified = blindwatch_audit::verify_inclusion_bundle(
        &bundle,
        &LogPublicKey::from_vkey(key_text.trim())?,
    )?;
    println!("ok: {verified:?}");
    Ok(())
}

/// `tokens keygen`: a new VOPRF key for the token authority, and its public key beside it
/// (`FILE.pub`), which partners pin and the platform accepts blind packages under.
pub fn tokens_keygen(path: &Path) -> anyhow::Result<()> {
    let public_path = path.with_extension("pub");
    if public_path.exists() {
        bail!(
            "{} exists already: move it away, or choose another --key name",
            public_path.display()
        );
    }
    let key = blindwatch_crypto::blind::AuthorityKey::generate()?;
    key.write(path)?;
    key.public_key().write(&public_path)?;
    println!(
        "wrote token authority key {} (key id {}): keep it with the authority only, never on the platform",
        path.display(),
        key.key_id()
    );
    println!(
        "  public key {}: give it to every partner (--authority-key) and to the platform (blindwatch keys authority)",
        public_path.display()
    );
    Ok(())
}

/// `keys authority`: the token authority public key this deployment accepts blind packages
/// under. Replacing a different one needs `rotate` (packages sealed under the old key are
/// refused from then on, until re-sealed).
pub fn keys_authority(data_dir: &Path, key: &Path, rotate: bool) -> anyhow::Result<()> {
    use blindwatch_crypto::blind::{AUTHORITY_PUBLIC_KEY_FILE, AuthorityPublicKey};
    let dir = DataDir::new(data_dir);
    if !dir.is_initialised() {
        bail!(
            "{} is not a platform data directory: run `blindwatch keys init --data-dir {}` first",
            data_dir.display(),
            data_dir.display()
        );
    }
    let new = AuthorityPublicKey::read(key)?;
    let target = dir.keys_dir().join(AUTHORITY_PUBLIC_KEY_FILE);
    let old = if target.exists() {
        Some(AuthorityPublicKey::read(&target)?)
    } else {
        None
    };
    match &old {
        Some(old) if old == &new => {
            println!(
                "token authority key {} is already this deployment's",
                new.key_id()
            );
            return Ok(());
        }
        Some(old) if !rotate => bail!(
            "this deployment already accepts blind packages under token authority key {}; to replace it with {} add --rotate (packages sealed under the old key are refused from then on, until re-sealed)",
            old.key_id(),
            new.key_id()
        ),
        _ => {}
    }
    // Audited first: the key decides which packages are accepted.
    let mut audit = dir.open_audit_log()?;
    audit.append(&AuditRecord::now(
        Principal::new("platform")?,
        AuditEvent::PolicyLoaded {
            digest: Sha256Digest::of(new.as_bytes()),
        },
    ))?;
    audit.checkpoint()?;
    let staged = target.with_extension("pub.new");
    let _ = std::fs::remove_file(&staged);
    new.write(&staged)?;
    std::fs::rename(&staged, &target)
        .with_context(|| format!("installing {}", target.display()))?;
    match old {
        Some(old) => println!(
            "token authority key rotated: {} replaces {} (blind packages under the old key are refused from now on)",
            new.key_id(),
            old.key_id()
        ),
        None => println!(
            "this deployment accepts blind packages under token authority key {} ({})",
            new.key_id(),
            target.display()
        ),
    }
    Ok(())
}

/// `tokens add-partner`: registers a partner's Ed25519 public key with the authority.
pub fn tokens_add_partner(dir: &Path, partner: &str, key: &Path) -> anyhow::Result<()> {
    let key = VerifyingKey::read(key, KeyFileKind::PartnerPublic)?;
    blindwatch_tokens::AuthorityDir::new(dir).add_partner(partner, &key)?;
    println!(
        "partner {partner} (key {}) may now ask the token authority in {} for evaluations (restart a running authority to pick it up)",
        key.id(),
        dir.display()
    );
    Ok(())
}

/// What `tokens serve` runs with.
pub struct TokensServe<'a> {
    pub key: &'a Path,
    pub listen: &'a str,
    pub dir: &'a Path,
    pub privacy: &'a Path,
    pub tls_cert: Option<&'a Path>,
    pub tls_key: Option<&'a Path>,
    pub tls_client_ca: Option<&'a Path>,
    pub allow_plain_http: bool,
    pub max_connections: usize,
    pub header_timeout: std::time::Duration,
    pub body_timeout: std::time::Duration,
    pub checkpoint_every: std::time::Duration,
}

/// `tokens serve`: the token authority, until Ctrl-C or SIGTERM.
pub async fn tokens_serve(a: &TokensServe<'_>) -> anyhow::Result<()> {
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(blindwatch_net::tls_config(cert, key, a.tls_client_ca)?),
        (None, None) if a.tls_client_ca.is_some() => {
            bail!("--tls-client-ca needs TLS: add --tls-cert FILE --tls-key FILE")
        }
        (None, None) => None,
        _ => bail!("TLS needs both --tls-cert FILE and --tls-key FILE"),
    };
    let key = blindwatch_crypto::blind::AuthorityKey::read(a.key)?;
    let quotas = blindwatch_tokens::Quotas::load(a.privacy)?;
    std::fs::create_dir_all(a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let authority_dir = blindwatch_tokens::AuthorityDir::new(a.dir);
    let authority = Arc::new(blindwatch_tokens::Authority::open(
        authority_dir.clone(),
        key,
        quotas,
    )?);
    let partners = authority_dir.partners()?.len();
    if partners == 0 {
        tracing::warn!("no partner is registered yet: every request will be refused");
    }
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let settings = blindwatch_tokens::ServeSettings {
        net: blindwatch_net::ServeOptions {
            tls,
            header_read_timeout: a.header_timeout,
            body_read_timeout: a.body_timeout,
            max_connections: a.max_connections,
            allow_plain_http: a.allow_plain_http,
            ..blindwatch_net::ServeOptions::default()
        },
        checkpoint_every: a.checkpoint_every,
    };
    println!(
        "token authority: key {}, {partners} partners, max_batch {}, listening on {scheme}://{} (audit log {}); Ctrl-C or SIGTERM stops",
        authority.key_id(),
        authority.quotas().max_batch,
        listener.local_addr()?,
        authority_dir.audit_dir().display()
    );
    blindwatch_tokens::serve(
        listener,
        authority.clone(),
        settings,
        crate::serve::shutdown_signal(),
    )
    .await?;
    println!("token authority stopped; audit log checkpoint signed");
    Ok(())
}
