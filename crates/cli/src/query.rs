//! `blindwatch query` and `blindwatch policy check`: the access policies (Cedar) and the
//! aggregate-only privacy gate, audited.

use std::path::Path;

use anyhow::{Context, bail};
use blindwatch_access::{
    AccessPolicies, Action, Context as AccessContext, Org, Principal, Resource,
};
use blindwatch_audit::{Principal as AuditPrincipal, Purpose};
use blindwatch_query::{GateSettings, QueryResult};
use blindwatch_store::DataDir;

use crate::models::{Format, open_engine};

/// `ROLE[:NAME]`, officers as `officer:NAME@STATION` (`+duty` for a county duty officer).
pub struct Acting {
    pub principal: Principal,
    /// As written to the audit log (role and name, never more).
    pub audit: AuditPrincipal,
}

pub fn parse_principal(text: &str, dir: &DataDir) -> anyhow::Result<Acting> {
    let usage = "write the principal as ROLE or ROLE:NAME — specialist, specialist:wang, auditor:zhao, partner:hospital, officer:li@S03 (officer:li@S03+duty for a county duty officer)";
    let (role, rest) = text.split_once(':').unwrap_or((text, ""));
    let name = |default: &str| -> anyhow::Result<String> {
        let n = if rest.is_empty() { default } else { rest };
        if n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !n.is_empty()
        {
            Ok(n.to_owned())
        } else {
            bail!(
                "`{text}` is not a principal: names are ASCII letters, digits, `-` and `_`; {usage}"
            )
        }
    };
    let principal = match role {
        "specialist" => Principal::Specialist {
            name: name("specialist")?,
        },
        "auditor" => Principal::Auditor {
            name: name("auditor")?,
        },
        "partner" => Principal::Partner { name: name("")? },
        "officer" => {
            let (who, station) = rest
                .split_once('@')
                .with_context(|| format!("`{text}`: an officer needs a station; {usage}"))?;
            let (station, duty) = match station.strip_suffix("+duty") {
                Some(s) => (s, true),
                None => (station, false),
            };
            let org = Org::load(&dir.policies_dir())?;
            let county = org
                .county_of(station)
                .with_context(|| format!("station `{station}` is not in policies/org.toml"))?;
            Principal::Officer {
                name: who.to_owned(),
                station: station.to_owned(),
                county: county.to_owned(),
                duty,
            }
        }
        _ => bail!("unknown role `{role}`; {usage}"),
    };
    let audit = AuditPrincipal::new(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Acting { principal, audit })
}

/// `policy check`: the Cedar schema and policies of a directory.
pub fn policy_check(dir: &Path) -> anyhow::Result<()> {
    match blindwatch_access::check(dir) {
        Ok(report) => {
            for f in &report.files {
                println!("{}: {}", f.file, f.policy_ids.join(", "));
            }
            for w in &report.warnings {
                println!("warning: {w}");
            }
            println!(
                "ok: {} policies in {} files, valid against the schema",
                report.policy_count(),
                report.files.len()
            );
            Ok(())
        }
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            bail!(
                "{} problem(s) in the policies of {}",
                diagnostics.len(),
                dir.display()
            )
        }
    }
}

pub struct QueryArgs<'a> {
    pub data_dir: &'a Path,
    pub principal: &'a str,
    pub purpose: &'a str,
    pub sql: &'a str,
    pub format: Format,
}

/// `query`: an aggregate question through the access policies and the privacy gate. Every
/// outcome — refused by policy, refused by the gate, or run — is audited with the query's
/// digest, never its text.
pub async fn query(a: &QueryArgs<'_>) -> anyhow::Result<()> {
    let from_stdin;
    let sql = if a.sql == "-" {
        from_stdin = read_question()?;
        from_stdin.as_str()
    } else {
        a.sql
    };
    let a = &QueryArgs { sql, ..*a };
    let dir = DataDir::new(a.data_dir);
    let acting = parse_principal(a.principal, &dir)?;
    let mut audit = dir.open_audit_log()?;
    // Refusals before the gate sees the query are audited too (the gate audits its own).
    let purpose = match Purpose::new(a.purpose) {
        Ok(p) => p,
        Err(e) => {
            audit.append(&blindwatch_audit::AuditRecord::now(
                acting.audit.clone(),
                blindwatch_audit::AuditEvent::RequestRefused {
                    principal: acting.audit.clone(),
                    action: blindwatch_audit::ReasonCode::new("query")?,
                    rule: blindwatch_audit::ReasonCode::new("bad-purpose")?,
                },
            ))?;
            audit.checkpoint()?;
            bail!("--purpose: {e}");
        }
    };
    let engine = match open_engine(&dir).await {
        Ok(e) => e,
        Err(e) => {
            blindwatch_query::audit_refusal(
                a.sql,
                &purpose,
                &acting.audit,
                "platform-failure",
                &mut audit,
            )?;
            return Err(e);
        }
    };

    let access = AccessPolicies::load(&dir.policies_dir())?;
    let decision = access.decide(
        &acting.principal,
        Action::Query,
        &Resource::Platform,
        &AccessContext::default(),
    );
    if !decision.allowed {
        blindwatch_query::audit_refusal(
            a.sql,
            &purpose,
            &acting.audit,
            "access-policy",
            &mut audit,
        )?;
        bail!(
            "refused (rule access-policy): the access policies do not let `{}` run queries; ask for the specialist role",
            a.principal
        );
    }
    let settings = GateSettings::load(&dir.policies_dir().join("privacy.toml"))?;
    let result = blindwatch_query::run_audited(
        &engine,
        a.sql,
        &purpose,
        &settings,
        &acting.audit,
        &mut audit,
    )
    .await?;
    print_result(&result, a.format)?;
    Ok(())
}

/// The question from standard input. Anything past the gate's largest allowed length is
/// read no further: the gate refuses the text by its length anyway.
fn read_question() -> anyhow::Result<String> {
    use std::io::Read;
    const MOST: u64 = 16 << 20;
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MOST)
        .read_to_end(&mut bytes)
        .context("reading the question from standard input")?;
    String::from_utf8(bytes).context("the question on standard input is not UTF-8")
}

fn print_result(result: &QueryResult, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(result)?),
        Format::Table => {
            print!("{}", blindwatch_query::render_table(result));
            let p = &result.protection;
            println!(
                "({} group(s) released, each with at least {} people; groups under that, or under the noisy threshold, are not shown)",
                result.groups_released(),
                p.min_group_size
            );
            if p.noise {
                let deviations: Vec<String> = result
                    .columns
                    .iter()
                    .zip(&p.standard_deviation)
                    .filter_map(|(c, d)| d.map(|d| format!("{c} ±{d:.1}")))
                    .collect();
                println!(
                    "(noise: ε = {} δ = {:e} spent; standard deviation {}; budget {:.2} of {} spent in {} queries)",
                    p.epsilon,
                    p.delta,
                    deviations.join(", "),
                    p.budget.epsilon_spent,
                    p.budget.epsilon_limit,
                    p.budget.queries
                );
            } else {
                println!("(exact answers: this purpose has no noise in privacy.toml)");
            }
        }
    }
    Ok(())
}
