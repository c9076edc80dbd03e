//! `blindwatch demo`: the whole flow as the real parties would run it, each in its own
//! directory as if on its own machine:
//!
//! ```text
//! D/partners/<partner>/exports   the partner's raw CSV exports (raw identifiers: stays here)
//! D/partners/<partner>/keys      its signing key and its encrypted token cache
//!                                (the consortium linkage key instead, with --tokens consortium)
//! D/partners/<partner>/outbox    sealed packages it sends
//! D/authority                    the token authority: its OPRF key, partner register, audit log
//!                                (served in process on a loopback port while partners seal)
//! D/platform                     an ordinary platform data directory (no raw identifier)
//! D/specialist/models           the data specialist's warning models (and their test cases),
//!                                and the partners' signed approvals of them
//! D/ground_truth.json            the generator's planted scenarios (for tests)
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use blindwatch_partner::Encoding;
use blindwatch_store::DataDir;

use blindwatch_crypto::blind::AuthorityKey;
use blindwatch_crypto::keys::KeyFileKind;
use blindwatch_crypto::sign::VerifyingKey;
use blindwatch_tokens::{AuthorityDir, LocalAuthority, Quotas};

use crate::commands::{self, SealJob};
use crate::{model_test, models};

const MARKER: &str = ".blindwatch-demo";

/// How the demo's partners make tokens.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// Through the token authority (RFC 9497 VOPRF), the default.
    Blind,
    /// HMAC under a consortium key that every partner holds.
    Consortium,
}

/// Where partners get their tokens while they seal.
enum Tokens {
    Blind {
        authority: LocalAuthority,
        /// The authority's public key file, which partners pin.
        public: std::path::PathBuf,
    },
    Consortium {
        master: std::path::PathBuf,
    },
}

/// The demo's city and token mode.
pub struct DemoOptions {
    pub persons: u64,
    pub seed: u64,
    /// Last day of the activity window (default: today).
    pub as_of: Option<chrono::NaiveDate>,
    pub messy_rate: f64,
    pub tokens: TokenMode,
}

pub async fn run(root: &Path, options: &DemoOptions) -> anyhow::Result<()> {
    let &DemoOptions {
        persons,
        seed,
        as_of,
        messy_rate,
        tokens: mode,
    } = options;
    let started = Instant::now();
    prepare(root)?;
    let as_of = as_of.unwrap_or_else(commands::today);

    // The city: each partner's raw exports.
    let city = root.join(".city");
    let mut cfg = blindwatch_synth::SynthConfig::new(persons, seed, as_of);
    cfg.messy_rate = messy_rate;
    let summary = blindwatch_synth::generate(&cfg, &city)?;
    println!(
        "1. synthetic city: {persons} persons, {} planted alerts, as of {as_of} ({:.1} s)",
        summary.alerts,
        summary.elapsed.as_secs_f64()
    );
    let mut by_partner: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for table in blindwatch_synth::DATASETS {
        let partner = table.split('.').next().unwrap_or(table);
        by_partner.entry(partner).or_default().push(table);
        let exports = root.join("partners").join(partner).join("exports");
        std::fs::create_dir_all(&exports)?;
        std::fs::rename(
            city.join(format!("{table}.csv")),
            exports.join(format!("{table}.csv")),
        )
        .with_context(|| format!("moving the {table} export to its partner"))?;
    }
    std::fs::rename(
        city.join(blindwatch_synth::GROUND_TRUTH_FILE),
        root.join(blindwatch_synth::GROUND_TRUTH_FILE),
    )?;
    std::fs::remove_dir_all(&city)?;

    // The platform.
    println!("2. platform keys and catalog");
    let platform = commands::keys_init(&root.join("platform")).await?;

    println!("3. partners: keys, registration, sealing");
    // Each partner's signing key, registered with the platform (and, in blind mode, with
    // the token authority, which must know every partner its privacy settings name
    // before it starts).
    let authority_dir = AuthorityDir::new(root.join("authority"));
    let mut keys = BTreeMap::new();
    for (partner, tables) in &by_partner {
        let home = root.join("partners").join(partner);
        let dir = home.join("keys");
        std::fs::create_dir_all(&dir)?;
        let (secret, public) = commands::partner_keygen(partner, &dir)?;
        let datasets: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        commands::partner_register(platform.root(), partner, &public, &datasets).await?;
        if mode == TokenMode::Blind {
            std::fs::create_dir_all(authority_dir.root())?;
            let key = VerifyingKey::read(&public, KeyFileKind::PartnerPublic)?;
            authority_dir.add_partner(partner, &key)?;
        }
        keys.insert(*partner, (dir, secret));
    }

    let tokens = match mode {
        TokenMode::Blind => {
            // The token authority is a party of its own: its key never reaches the
            // platform or the partners. Its public key goes to both: partners pin it,
            // the platform accepts blind packages only under it.
            let key_file = authority_dir.root().join("oprf.key");
            commands::tokens_keygen(&key_file)?;
            let key = AuthorityKey::read(&key_file)?;
            let public = key_file.with_extension("pub");
            commands::keys_authority(platform.root(), &public, false)?;
            let quotas = Quotas::load(&platform.policies_dir().join("privacy.toml"))?;
            let authority = LocalAuthority::start(authority_dir.clone(), key, quotas)?;
            println!(
                "   token authority: key {}, serving at {} (in process)",
                authority.key_id(),
                authority.url()
            );
            Tokens::Blind { authority, public }
        }
        TokenMode::Consortium => {
            // The consortium's linkage key, shared by the partners only.
            let master = root.join("partners").join(".consortium-linkage.key");
            commands::keys_linkage(&master)?;
            Tokens::Consortium { master }
        }
    };

    let mut packages = Vec::new();
    for (partner, tables) in &by_partner {
        let home = root.join("partners").join(partner);
        let Some((keys_dir, secret)) = keys.get(partner) else {
            bail!("partner {partner} has no key");
        };
        let linkage = keys_dir.join("linkage.key");
        if let Tokens::Consortium { master } = &tokens {
            copy_private(master, &linkage)?;
        }
        for table in tables {
            let contract = platform.contracts_dir().join(format!("{table}.toml"));
            let job = SealJob {
                contract: &contract,
                input: &home.join("exports").join(format!("{table}.csv")),
                partner,
                partner_key: secret,
                platform_key: &platform.platform_public_key(),
                sequence: 1,
                out: &home.join("outbox"),
                encoding: Encoding::Auto,
                batch_rows: 65_536,
                token_cache_limit: blindwatch_partner::DEFAULT_TOKEN_CACHE_LIMIT,
                allow_empty: false,
            };
            let outcome = match &tokens {
                Tokens::Blind { authority, public } => commands::partner_seal_blind(
                    &job,
                    &commands::BlindJob {
                        endpoint: blindwatch_tokens::Endpoint::new(authority.url()),
                        pin: blindwatch_tokens::Pin::File(public.clone()),
                        cache_dir: keys_dir,
                    },
                )?,
                Tokens::Consortium { .. } => commands::partner_seal(&job, &linkage)?,
            };
            packages.push(outcome.package.manifest);
        }
    }
    match tokens {
        Tokens::Blind { authority, .. } => {
            authority.shutdown()?;
            println!(
                "   token authority stopped; its audit log: {}",
                authority_dir.audit_dir().display()
            );
        }
        Tokens::Consortium { master } => std::fs::remove_file(&master)?,
    }

    println!("4. platform: ingest");
    commands::ingest(platform.root(), &packages).await?;
    commands::catalog(platform.root(), false).await?;

    // The data specialist's models: checked against the contracts, approved by each partner
    // whose data they read (with the partner's own key), registered and run.
    println!("5. warning models: partners approve, the platform registers and runs as of {as_of}");
    let specialist = root.join("specialist").join("models");
    std::fs::create_dir_all(&specialist)?;
    let mut files = Vec::new();
    for (id, model, fixture) in models::SHIPPED_MODELS {
        let file = specialist.join(format!("{id}.toml"));
        std::fs::write(&file, model)?;
        std::fs::write(model_test::fixture_path(&file), fixture)?;
        for partner in models::model_approvers(platform.root(), &file).await? {
            let (_, key) = keys.get(partner.as_str()).with_context(|| {
                format!("{id} reads data of `{partner}`, a partner the demo does not have")
            })?;
            models::model_approve(&partner, key, &file, None)?;
        }
        files.push(file);
    }
    models::model_register(platform.root(), &files, &[], true).await?;
    let reports = models::run(platform.root(), None, None, Some(as_of)).await?;
    models::print_runs(&reports);
    println!("6. open alerts by station and tier");
    models::summary(platform.root()).await?;
    println!("   top alerts:");
    models::alerts(
        platform.root(),
        None,
        &models::AlertsQuery {
            station: None,
            tier: None,
            model: None,
            all: false,
            limit: Some(12),
            format: models::Format::Table,
        },
    )
    .await?;
    audit_summary(&platform)?;
    println!(
        "done in {:.1} s; platform data directory: {}",
        started.elapsed().as_secs_f64(),
        platform.root().display()
    );
    Ok(())
}

/// A fresh demo directory: an earlier demo's is replaced, anything else is left alone.
fn prepare(root: &Path) -> anyhow::Result<()> {
    if root.exists() {
        let empty = std::fs::read_dir(root)?.next().is_none();
        if root.join(MARKER).exists() {
            std::fs::remove_dir_all(root)
                .with_context(|| format!("removing the earlier demo in {}", root.display()))?;
        } else if !empty {
            bail!(
                "{} exists and is not a demo directory: choose another --data-dir",
                root.display()
            );
        }
    }
    std::fs::create_dir_all(root)?;
    std::fs::write(
        root.join(MARKER),
        b"created by blindwatch demo; removed by the next demo run\n",
    )?;
    Ok(())
}

fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = blindwatch_crypto::keys::read_key_file(
        from,
        blindwatch_crypto::keys::KeyFileKind::Linkage,
    )?;
    blindwatch_crypto::keys::write_key_file(
        to,
        blindwatch_crypto::keys::KeyFileKind::Linkage,
        &bytes,
    )?;
    Ok(())
}

fn audit_summary(platform: &DataDir) -> anyhow::Result<()> {
    let log = platform.open_audit_log()?;
    if let Some(cp) = log.latest_checkpoint() {
        println!(
            "audit log: {} entries, latest signed checkpoint covers {}",
            log.size(),
            cp.size()
        );
    }
    Ok(())
}
