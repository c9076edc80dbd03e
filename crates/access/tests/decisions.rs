#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Decisions of the shipped policies (loaded from the repository's `policies/`) over the
//! reference city: stations S01–S04 in county C1, S05–S08 in county C2.

use std::path::PathBuf;

use blindwatch_access::{AccessPolicies, Action, Context, Decision, Principal, Resource, shipped};

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

fn shipped_policies() -> AccessPolicies {
    AccessPolicies::load(&policies_dir()).unwrap_or_else(|e| panic!("{e}: {:#?}", e.diagnostics()))
}

fn county_of(station: &str) -> &'static str {
    match station {
        "S01" | "S02" | "S03" | "S04" => "C1",
        "S05" | "S06" | "S07" | "S08" => "C2",
        other => panic!("no station {other} in the reference city"),
    }
}

fn officer(name: &str, station: &str) -> Principal {
    Principal::Officer {
        name: name.into(),
        station: station.into(),
        county: county_of(station).into(),
        duty: false,
    }
}

fn duty_officer(name: &str, station: &str) -> Principal {
    Principal::Officer {
        name: name.into(),
        station: station.into(),
        county: county_of(station).into(),
        duty: true,
    }
}

fn alert(station: &str, tier: u8) -> Resource {
    Resource::Alert {
        id: format!("A-{station}-{tier}"),
        station: station.into(),
        county: county_of(station).into(),
        tier,
        model: "fugitive-medical-visit".into(),
    }
}

fn specialist() -> Principal {
    Principal::Specialist {
        name: "spec1".into(),
    }
}

fn auditor() -> Principal {
    Principal::Auditor {
        name: "aud1".into(),
    }
}

fn partner(name: &str) -> Principal {
    Principal::Partner { name: name.into() }
}

fn dataset(name: &str, partner: &str) -> Resource {
    Resource::Dataset {
        name: name.into(),
        partner: partner.into(),
    }
}

fn model() -> Resource {
    Resource::Model {
        id: "fugitive-medical-visit".into(),
    }
}

const NONE: Context = Context {
    justification_given: false,
};
const JUSTIFIED: Context = Context {
    justification_given: true,
};

/// One row: who, what, on what, with what context; expected outcome and determining policies.
struct Case {
    what: &'static str,
    principal: Principal,
    action: Action,
    resource: Resource,
    context: Context,
    allowed: bool,
    policies: &'static [&'static str],
}

fn case(
    what: &'static str,
    principal: Principal,
    action: Action,
    resource: Resource,
    context: Context,
    expected: (bool, &'static [&'static str]),
) -> Case {
    Case {
        what,
        principal,
        action,
        resource,
        context,
        allowed: expected.0,
        policies: expected.1,
    }
}

const DENY: (bool, &[&str]) = (false, &[]);

fn run(policies: &AccessPolicies, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let got = policies.decide(&c.principal, c.action, &c.resource, &c.context);
        let want = Decision {
            allowed: c.allowed,
            policies: c.policies.iter().map(|s| s.to_string()).collect(),
        };
        if got != want {
            failures.push(format!("{}: want {want:?}, got {got:?}", c.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn officers_work_their_own_station_only() {
    use Action::*;
    let own = (true, &["officer-own-station"][..]);
    let o = || officer("o1", "S01");
    run(
        &shipped_policies(),
        &[
            case("own read blue", o(), ReadAlert, alert("S01", 1), NONE, own),
            case("own read red", o(), ReadAlert, alert("S01", 4), NONE, own),
            case(
                "own act yellow",
                o(),
                ActOnAlert,
                alert("S01", 2),
                NONE,
                own,
            ),
            case("own act red", o(), ActOnAlert, alert("S01", 4), NONE, own),
            case("other read", o(), ReadAlert, alert("S02", 1), NONE, DENY),
            case("other act", o(), ActOnAlert, alert("S02", 2), NONE, DENY),
            case("other county", o(), ReadAlert, alert("S05", 3), NONE, DENY),
            case(
                "non-duty other red",
                o(),
                ReadAlert,
                alert("S03", 4),
                NONE,
                DENY,
            ),
            case(
                "non-duty act other red",
                o(),
                ActOnAlert,
                alert("S03", 4),
                NONE,
                DENY,
            ),
        ],
    );
}

#[test]
fn duty_officer_reads_red_alerts_of_their_county_only() {
    use Action::*;
    let red = (true, &["duty-officer-county-red"][..]);
    let d = || duty_officer("d1", "S01");
    run(
        &shipped_policies(),
        &[
            case("C1 red", d(), ReadAlert, alert("S03", 4), NONE, red),
            case("C1 red S04", d(), ReadAlert, alert("S04", 4), NONE, red),
            case("C1 orange", d(), ReadAlert, alert("S03", 3), NONE, DENY),
            case("C1 blue", d(), ReadAlert, alert("S02", 1), NONE, DENY),
            case("C2 red", d(), ReadAlert, alert("S05", 4), NONE, DENY),
            case(
                "act on C1 red",
                d(),
                ActOnAlert,
                alert("S03", 4),
                NONE,
                DENY,
            ),
            case(
                "reveal C1 red",
                d(),
                Reveal,
                alert("S03", 4),
                JUSTIFIED,
                DENY,
            ),
            case(
                "reveal own red unjustified",
                d(),
                Reveal,
                alert("S01", 4),
                NONE,
                (false, &["forbid-reveal-without-justification"]),
            ),
            // Their own station: both permits determine the read, and they may act.
            case(
                "own red",
                d(),
                ReadAlert,
                alert("S01", 4),
                NONE,
                (true, &["duty-officer-county-red", "officer-own-station"]),
            ),
            case(
                "own act",
                d(),
                ActOnAlert,
                alert("S01", 4),
                NONE,
                (true, &["officer-own-station"]),
            ),
        ],
    );
}

#[test]
fn reveal_needs_own_station_orange_or_above_and_a_justification() {
    use Action::*;
    let ok = (true, &["officer-reveal"][..]);
    let forbidden = (false, &["forbid-reveal-without-justification"][..]);
    let o = || officer("o5", "S05");
    run(
        &shipped_policies(),
        &[
            case(
                "orange justified",
                o(),
                Reveal,
                alert("S05", 3),
                JUSTIFIED,
                ok,
            ),
            case("red justified", o(), Reveal, alert("S05", 4), JUSTIFIED, ok),
            case(
                "yellow justified",
                o(),
                Reveal,
                alert("S05", 2),
                JUSTIFIED,
                DENY,
            ),
            case(
                "blue justified",
                o(),
                Reveal,
                alert("S05", 1),
                JUSTIFIED,
                DENY,
            ),
            case(
                "red unjustified",
                o(),
                Reveal,
                alert("S05", 4),
                NONE,
                forbidden,
            ),
            case(
                "blue unjustified",
                o(),
                Reveal,
                alert("S05", 1),
                NONE,
                forbidden,
            ),
            case(
                "other station",
                o(),
                Reveal,
                alert("S06", 4),
                JUSTIFIED,
                DENY,
            ),
            case(
                "other county",
                o(),
                Reveal,
                alert("S01", 4),
                JUSTIFIED,
                DENY,
            ),
        ],
    );
}

#[test]
fn specialists_run_models_and_queries_but_never_touch_alerts() {
    use Action::*;
    let ok = (true, &["specialist-models"][..]);
    let s = specialist;
    let mut cases = vec![
        case("check", s(), CheckModel, model(), NONE, ok),
        case("register", s(), RegisterModel, model(), NONE, ok),
        case("run", s(), RunModel, model(), NONE, ok),
        case("query", s(), Query, Resource::Platform, NONE, ok),
        case("audit", s(), ReadAudit, Resource::Platform, NONE, DENY),
        case(
            "contribute",
            s(),
            Contribute,
            dataset("visits", "hospital"),
            NONE,
            DENY,
        ),
    ];
    for station in ["S01", "S05"] {
        for tier in 1..=4 {
            for action in [ReadAlert, ActOnAlert, Reveal] {
                for context in [NONE, JUSTIFIED] {
                    cases.push(case(
                        "alert",
                        s(),
                        action,
                        alert(station, tier),
                        context,
                        DENY,
                    ));
                }
            }
        }
    }
    run(&shipped_policies(), &cases);
}

#[test]
fn auditors_read_the_audit_log_and_nothing_else() {
    let policies = shipped_policies();
    let mut cases = vec![case(
        "read audit",
        auditor(),
        Action::ReadAudit,
        Resource::Platform,
        NONE,
        (true, &["auditor-read-audit"]),
    )];
    let resources = [
        alert("S01", 4),
        alert("S06", 1),
        model(),
        dataset("visits", "hospital"),
        Resource::Platform,
    ];
    for action in Action::ALL {
        for resource in &resources {
            if action == Action::ReadAudit && *resource == Resource::Platform {
                continue;
            }
            cases.push(case(
                "other",
                auditor(),
                action,
                resource.clone(),
                JUSTIFIED,
                DENY,
            ));
        }
    }
    run(&policies, &cases);
}

#[test]
fn partners_contribute_to_their_own_datasets_only() {
    use Action::*;
    let ok = (true, &["partner-own-dataset"][..]);
    let h = || partner("hospital");
    run(
        &shipped_policies(),
        &[
            case(
                "own",
                h(),
                Contribute,
                dataset("visits", "hospital"),
                NONE,
                ok,
            ),
            case(
                "other",
                h(),
                Contribute,
                dataset("claims", "insurance"),
                NONE,
                DENY,
            ),
            // Same dataset name, other owner: ownership, not the name, decides.
            case(
                "same name",
                h(),
                Contribute,
                dataset("visits", "tax"),
                NONE,
                DENY,
            ),
            case("audit", h(), ReadAudit, Resource::Platform, NONE, DENY),
            case("query", h(), Query, Resource::Platform, NONE, DENY),
            case("alert", h(), ReadAlert, alert("S01", 4), NONE, DENY),
        ],
    );
}

#[test]
fn only_the_owning_partner_approves_a_model_for_a_dataset() {
    let policies = shipped_policies();
    let datasets = [
        ("visits", "hospital"),
        ("claims", "insurance"),
        ("wanted", "police"),
        ("visits", "tax"),
    ];
    let mut cases = Vec::new();
    for (name, owner) in datasets {
        for who in ["hospital", "insurance", "police", "tax"] {
            let allowed = who == owner;
            cases.push(case(
                "partner",
                partner(who),
                Action::ApproveModel,
                dataset(name, owner),
                NONE,
                if allowed {
                    (true, &["partner-own-dataset"][..])
                } else {
                    DENY
                },
            ));
        }
        // Nobody else approves for a partner: not the specialist who wrote the model, not
        // an officer, not an auditor.
        for other in [specialist(), officer("o1", "S01"), auditor()] {
            cases.push(case(
                "not a partner",
                other,
                Action::ApproveModel,
                dataset(name, owner),
                JUSTIFIED,
                DENY,
            ));
        }
    }
    run(&policies, &cases);
}

#[test]
fn malformed_requests_are_denied_without_a_policy() {
    use Action::*;
    let o = || officer("o1", "S01");
    run(
        &shipped_policies(),
        &[
            // Tiers outside 1..=4 would otherwise pass `tier >= 3` or miss `tier == 4`.
            case("tier 0", o(), ReadAlert, alert("S01", 0), NONE, DENY),
            case("tier 5", o(), Reveal, alert("S01", 5), JUSTIFIED, DENY),
            // A resource type the action does not apply to.
            case("read a model", o(), ReadAlert, model(), NONE, DENY),
            case(
                "query as officer",
                o(),
                Query,
                Resource::Platform,
                NONE,
                DENY,
            ),
        ],
    );
}

#[test]
fn forbid_wins_over_any_permit() {
    let mut sources: Vec<(String, String)> = shipped::POLICIES
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    sources.push((
        "zz-open.cedar".into(),
        "@id(\"open-everything\")\npermit (principal, action, resource);\n".into(),
    ));
    let open = AccessPolicies::from_sources(shipped::SCHEMA, &sources).unwrap();
    use Action::*;
    let o = || officer("o1", "S01");
    run(
        &open,
        &[
            // The extra permit is live: it allows what the shipped ones do not...
            case(
                "other station justified",
                o(),
                Reveal,
                alert("S02", 1),
                JUSTIFIED,
                (true, &["open-everything"]),
            ),
            // ...but the forbid still denies, and is the determining policy.
            case(
                "own red unjustified",
                o(),
                Reveal,
                alert("S01", 4),
                NONE,
                (false, &["forbid-reveal-without-justification"]),
            ),
            case(
                "other unjustified",
                o(),
                Reveal,
                alert("S02", 4),
                NONE,
                (false, &["forbid-reveal-without-justification"]),
            ),
            // The schema still keeps specialists away from alerts.
            case(
                "specialist",
                specialist(),
                ReadAlert,
                alert("S01", 4),
                NONE,
                DENY,
            ),
        ],
    );
}

#[test]
fn the_shipped_set_loads_cleanly_and_the_embedded_copy_matches_the_files() {
    let loaded = shipped_policies();
    assert!(
        loaded.report().warnings.is_empty(),
        "{:#?}",
        loaded.report().warnings
    );
    assert_eq!(loaded.report().policy_count(), shipped::POLICIES.len());

    let dir = policies_dir();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cedar"))
        .collect();
    on_disk.sort();
    let embedded: Vec<String> = shipped::POLICIES
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(
        on_disk, embedded,
        "shipped::POLICIES must list every policies/*.cedar"
    );
    for (name, text) in shipped::POLICIES {
        assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), *text);
    }

    let embedded = AccessPolicies::shipped().unwrap();
    assert_eq!(embedded.report().policy_count(), shipped::POLICIES.len());
    assert_eq!(
        embedded.decide(
            &officer("o1", "S01"),
            Action::ReadAlert,
            &alert("S01", 1),
            &NONE
        ),
        Decision {
            allowed: true,
            policies: vec!["officer-own-station".into()]
        }
    );
}

fn station(id: &str) -> Resource {
    Resource::Station {
        id: id.into(),
        county: county_of(id).into(),
    }
}

#[test]
fn officers_silence_only_their_own_station() {
    use Action::ManageSilence;
    let own = (true, &["officer-silence-own-station"][..]);
    run(
        &shipped_policies(),
        &[
            case(
                "own",
                officer("li", "S03"),
                ManageSilence,
                station("S03"),
                NONE,
                own,
            ),
            case(
                "same county",
                officer("li", "S03"),
                ManageSilence,
                station("S01"),
                NONE,
                DENY,
            ),
            case(
                "duty, same county",
                duty_officer("li", "S03"),
                ManageSilence,
                station("S01"),
                NONE,
                DENY,
            ),
            case(
                "other county",
                officer("li", "S03"),
                ManageSilence,
                station("S05"),
                NONE,
                DENY,
            ),
            case(
                "specialist",
                specialist(),
                ManageSilence,
                station("S03"),
                NONE,
                DENY,
            ),
        ],
    );
}
