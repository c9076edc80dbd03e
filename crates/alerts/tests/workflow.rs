//! The officers' workflow on the public API: actions, re-alert suppression, silences,
//! events, subject cards, the paginated listing, and the upgrade of a 0001 store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use blindwatch_alerts::{
    Action, Alert, AlertEvent, AlertFilter, AlertOrder, AlertQuery, AlertStore, AlertStoreError,
    Change, Cursor, EventKind, Evidence, EvidenceValue, Finding, Muted, Outcome, Pseudonym,
    Pseudonymizer, RunInput, RunOutcome, Silence, SilenceMatchers, State, StationScope, Status,
    Tier,
};
use blindwatch_audit::{AlertId, Principal, SilenceId, StationId};
use blindwatch_store::{DatabaseTarget, PostgresUrl};
use chrono::{DateTime, Duration, TimeZone, Utc};
use tempfile::TempDir;

struct Env {
    _dir: TempDir,
    store: AlertStore,
    p: Pseudonymizer,
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A new, empty store: a SQLite file, or a database of its own on the PostgreSQL server
/// named by `BLINDWATCH_TEST_POSTGRES_URL` (which `tests/run` starts).
async fn env(backend: Backend) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let target = match backend {
        Backend::Sqlite => DatabaseTarget::SqliteFile(dir.path().join("alerts.sqlite")),
        Backend::Postgres => DatabaseTarget::Postgres {
            url: scratch_postgres_database().await,
            schema: "alerts",
        },
    };
    let store = AlertStore::connect(&target).await.unwrap();
    Env {
        _dir: dir,
        store,
        p: Pseudonymizer::new(&[9; 32]),
    }
}

async fn scratch_postgres_database() -> PostgresUrl {
    use sqlx::{Connection, Executor};
    let server = std::env::var("BLINDWATCH_TEST_POSTGRES_URL").expect(
        "BLINDWATCH_TEST_POSTGRES_URL is not set: run the tests with tests/run, which starts a PostgreSQL server, or point it at one (postgres://USER@HOST:PORT, allowed to create databases)",
    );
    sqlx::any::install_default_drivers();
    let name = format!("bw_alerts_{}", hex::encode(rand_bytes()));
    let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    admin.close().await.unwrap();
    PostgresUrl::parse(&format!("{server}/{name}")).unwrap()
}

fn rand_bytes() -> [u8; 8] {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new()
        .hash_one(std::time::SystemTime::now())
        .to_le_bytes()
}

/// Each scenario runs on both backends, as two tests: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::env(super::Backend::Sqlite).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::env(super::Backend::Postgres).await).await
            }
        }
    )*};
}

on_both_backends!(
    officer_actions_record_actor_detail_and_state,
    refused_actions_change_nothing,
    officer_close_suppresses_findings_at_the_same_or_a_lower_tier,
    suppression_is_lifted_after_keep_for_runs_without_the_subject,
    a_higher_tier_reopens_from_the_officer_closed_alert,
    silences_are_validated_listed_and_expired,
    events_notify_unless_silenced_inhibited_or_done_by_an_officer,
    the_subject_card_gathers_alerts_across_models,
    the_listing_is_scoped_filtered_and_paged,
    concurrent_actions_and_runs_queue_instead_of_failing,
);

/// Hour `h` of the test day.
fn t(h: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap() + Duration::hours(h)
}

fn finding(p: &Pseudonymizer, n: u8, tier: Tier, station: &str) -> Finding {
    let (subject, pseudonym) = p.subject("person", &[n; 16]);
    let mut evidence = Evidence::new();
    evidence.insert("visits_7d".into(), Some(EvidenceValue::Int(n.into())));
    Finding {
        subject,
        pseudonym,
        station: StationId::new(station).unwrap(),
        tier,
        evidence,
    }
}

fn pseudonym(p: &Pseudonymizer, n: u8) -> Pseudonym {
    p.subject("person", &[n; 16]).1
}

fn run(model: &'static str, keep_for: u32, hour: i64) -> RunInput<'static> {
    RunInput {
        model,
        version: 1,
        category: if model == "m2" {
            "violence"
        } else {
            "fugitive"
        },
        subject_kind: "person",
        keep_for,
        as_of: t(hour),
    }
}

async fn apply(store: &AlertStore, r: &RunInput<'_>, f: Vec<Finding>) -> RunOutcome {
    store
        .apply_run(r, f, |_| Ok::<(), String>(()))
        .await
        .unwrap()
}

fn aid(s: &str) -> AlertId {
    AlertId::new(s).unwrap()
}

fn officer(s: &str) -> Principal {
    Principal::new(s).unwrap()
}

async fn all(store: &AlertStore) -> Vec<Alert> {
    store.list(&AlertFilter::default()).await.unwrap()
}

async fn changes(store: &AlertStore, id: &str) -> Vec<&'static str> {
    store
        .history(&aid(id))
        .await
        .unwrap()
        .iter()
        .map(|h| h.change.as_str())
        .collect()
}

async fn officer_actions_record_actor_detail_and_state(e: Env) {
    let li = officer("officer:li@S01");
    let wang = officer("officer:wang@S01");
    let zhao = officer("officer:zhao@S01");
    apply(
        &e.store,
        &run("m", 1, 0),
        vec![finding(&e.p, 1, Tier::Orange, "S01")],
    )
    .await;
    let a = aid("A-0000001");
    assert_eq!(e.store.get(&a).await.unwrap().state, State::Open);

    let x = e.store.acknowledge(&a, &li, t(1)).await.unwrap();
    assert_eq!(x.state, State::Acknowledged);
    assert_eq!(x.status, Status::Open);
    assert_eq!(x.acknowledged_by.as_deref(), Some("officer:li@S01"));
    assert_eq!(x.acknowledged_at.as_deref(), Some("2025-03-01T01:00:00Z"));

    let x = e.store.assign(&a, &li, &wang, t(2)).await.unwrap();
    assert_eq!(x.assignee.as_deref(), Some("officer:wang@S01"));
    let x = e.store.assign(&a, &wang, &zhao, t(3)).await.unwrap();
    assert_eq!(x.assignee.as_deref(), Some("officer:zhao@S01"));

    let x = e
        .store
        .comment(
            &a,
            &zhao,
            "  visited the clinic, subject not present  ",
            t(4),
        )
        .await
        .unwrap();
    assert_eq!(x.state, State::Acknowledged);

    let x = e
        .store
        .close_alert(
            &a,
            &zhao,
            Outcome::Handled,
            Some("referred to the county"),
            t(5),
        )
        .await
        .unwrap();
    assert_eq!(x.status, Status::Closed);
    assert_eq!(x.state, State::Closed);
    assert_eq!(x.outcome.as_deref(), Some("handled"));
    assert_eq!(x.closed_by.as_deref(), Some("officer:zhao@S01"));
    assert_eq!(x.closed_at.as_deref(), Some("2025-03-01T05:00:00Z"));
    assert!(x.suppressing);
    assert_eq!(x.tier, Tier::Orange);

    let h = e.store.history(&a).await.unwrap();
    let rows: Vec<(EventKind, Option<&str>, Option<&str>)> = h
        .iter()
        .map(|h| (h.change, h.actor.as_deref(), h.detail.as_deref()))
        .collect();
    assert_eq!(
        rows,
        [
            (EventKind::Opened, None, None),
            (
                EventKind::Acknowledged,
                Some("officer:li@S01"),
                Some("acknowledged at orange")
            ),
            (
                EventKind::Assigned,
                Some("officer:li@S01"),
                Some("assigned to officer:wang@S01")
            ),
            (
                EventKind::Assigned,
                Some("officer:wang@S01"),
                Some("reassigned from officer:wang@S01 to officer:zhao@S01")
            ),
            (
                EventKind::Commented,
                Some("officer:zhao@S01"),
                Some("visited the clinic, subject not present")
            ),
            (
                EventKind::Closed,
                Some("officer:zhao@S01"),
                Some("closed as handled: referred to the county")
            ),
        ]
    );
    // Officer rows keep the tier; only the run row has a run.
    assert!(
        h[1..].iter().all(|r| r.from == Some(Tier::Orange)
            && r.to == Some(Tier::Orange)
            && r.run_id.is_none())
    );
    assert_eq!(h[0].run_id, Some(1));
    // Event ids increase.
    assert!(h.windows(2).all(|w| w[0].id < w[1].id));

    // The other outcomes, and a close without a note.
    apply(
        &e.store,
        &run("m", 1, 6),
        vec![
            finding(&e.p, 2, Tier::Blue, "S01"),
            finding(&e.p, 3, Tier::Blue, "S01"),
        ],
    )
    .await;
    let x = e
        .store
        .close_alert(&aid("A-0000002"), &li, Outcome::FalsePositive, None, t(7))
        .await
        .unwrap();
    assert_eq!(x.outcome.as_deref(), Some("false_positive"));
    let x = e
        .store
        .close_alert(&aid("A-0000003"), &li, Outcome::Duplicate, None, t(7))
        .await
        .unwrap();
    assert_eq!(x.outcome.as_deref(), Some("duplicate"));
    let h = e.store.history(&aid("A-0000003")).await.unwrap();
    assert_eq!(h[1].detail.as_deref(), Some("closed as duplicate"));
}

async fn refused_actions_change_nothing(e: Env) {
    let li = officer("officer:li@S01");
    apply(
        &e.store,
        &run("m", 1, 0),
        vec![
            finding(&e.p, 1, Tier::Orange, "S01"),
            finding(&e.p, 2, Tier::Red, "S01"),
        ],
    )
    .await;
    let a = aid("A-0000001");
    e.store.acknowledge(&a, &li, t(1)).await.unwrap();
    e.store.assign(&a, &li, &li, t(1)).await.unwrap();
    let before = serde_json::to_value(e.store.get(&a).await.unwrap()).unwrap();
    let events_before = e.store.last_event_id().await.unwrap();

    let unknown = e.store.acknowledge(&aid("A-0000099"), &li, t(2)).await;
    assert!(
        matches!(unknown, Err(AlertStoreError::UnknownAlert(ref x)) if x.as_str() == "A-0000099")
    );
    assert!(matches!(
        e.store.history(&aid("A-0000099")).await,
        Err(AlertStoreError::UnknownAlert(_))
    ));
    assert!(matches!(
        e.store.get(&aid("A-0000099")).await,
        Err(AlertStoreError::UnknownAlert(_))
    ));

    match e
        .store
        .acknowledge(&a, &officer("officer:wang@S01"), t(2))
        .await
    {
        Err(err @ AlertStoreError::AlreadyAcknowledged { .. }) => {
            assert_eq!(
                err.to_string(),
                "alert A-0000001 was already acknowledged by officer:li@S01; nothing to do"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        e.store.assign(&a, &li, &li, t(2)).await,
        Err(AlertStoreError::AlreadyAssigned { ref assignee, .. }) if assignee == "officer:li@S01"
    ));
    assert!(matches!(
        e.store.comment(&a, &li, " \n ", t(2)).await,
        Err(AlertStoreError::EmptyText { field: "comment" })
    ));
    assert!(matches!(
        e.store.comment(&a, &li, &"x".repeat(2001), t(2)).await,
        Err(AlertStoreError::TextTooLong {
            chars: 2001,
            max: 2000,
            ..
        })
    ));
    let phone = e
        .store
        .comment(&a, &li, "his number is 13912345678", t(2))
        .await
        .unwrap_err();
    assert!(matches!(
        phone,
        AlertStoreError::TextLooksLikeIdentifier { field: "comment" }
    ));
    assert!(!phone.to_string().contains("13912345678"));
    assert!(matches!(
        e.store
            .close_alert(&a, &li, Outcome::Handled, Some(""), t(2))
            .await,
        Err(AlertStoreError::EmptyText {
            field: "close note"
        })
    ));
    // A failing audit hook stores nothing either.
    let aborted = e
        .store
        .act(&a, &li, Action::Comment { text: "ok" }, t(2), |_| {
            Err("audit log unavailable")
        })
        .await;
    assert!(
        matches!(aborted, Err(AlertStoreError::Aborted(ref m)) if m == "audit log unavailable")
    );

    assert_eq!(
        serde_json::to_value(e.store.get(&a).await.unwrap()).unwrap(),
        before
    );
    assert_eq!(e.store.last_event_id().await.unwrap(), events_before);

    // Exactly 2000 characters is fine.
    e.store
        .comment(&a, &li, &"字".repeat(2000), t(3))
        .await
        .unwrap();

    // Nothing is done to a closed alert; the run-resolved one neither.
    e.store
        .close_alert(&a, &li, Outcome::Handled, None, t(4))
        .await
        .unwrap();
    apply(&e.store, &run("m", 1, 5), vec![]).await; // resolves A-0000002
    let closed_before = e.store.last_event_id().await.unwrap();
    for (id, outcome) in [("A-0000001", "handled"), ("A-0000002", "resolved")] {
        let id = aid(id);
        let refusals = [
            e.store.acknowledge(&id, &li, t(6)).await,
            e.store
                .assign(&id, &li, &officer("officer:wang@S01"), t(6))
                .await,
            e.store.comment(&id, &li, "late note", t(6)).await,
            e.store
                .close_alert(&id, &li, Outcome::Duplicate, None, t(6))
                .await,
        ];
        for r in refusals {
            match r {
                Err(AlertStoreError::AlertClosed {
                    alert, outcome: o, ..
                }) => {
                    assert_eq!(alert, id);
                    assert_eq!(o, outcome);
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(e.store.last_event_id().await.unwrap(), closed_before);
    let a1 = e.store.get(&a).await.unwrap();
    assert_eq!(a1.outcome.as_deref(), Some("handled"));
    assert_eq!(a1.closed_at.as_deref(), Some("2025-03-01T04:00:00Z"));
}

async fn officer_close_suppresses_findings_at_the_same_or_a_lower_tier(e: Env) {
    let li = officer("officer:li@S01");
    apply(
        &e.store,
        &run("m", 2, 0),
        vec![finding(&e.p, 1, Tier::Orange, "S01")],
    )
    .await;
    e.store
        .close_alert(&aid("A-0000001"), &li, Outcome::FalsePositive, None, t(1))
        .await
        .unwrap();

    for (hour, tier) in [
        (2, Tier::Orange),
        (3, Tier::Yellow),
        (4, Tier::Blue),
        (5, Tier::Orange),
    ] {
        let o = apply(
            &e.store,
            &run("m", 2, hour),
            vec![finding(&e.p, 1, tier, "S01")],
        )
        .await;
        assert!(o.changes.is_empty(), "{hour}");
        assert_eq!(
            (o.suppressed, o.suppressions_lifted, o.unchanged),
            (1, 0, 0)
        );
    }
    // The same subject under another model still alerts: suppression is per model.
    let o = apply(
        &e.store,
        &run("m2", 2, 6),
        vec![finding(&e.p, 1, Tier::Yellow, "S01")],
    )
    .await;
    assert_eq!(o.count(Change::Opened), 1);

    let alerts = all(&e.store).await;
    assert_eq!(alerts.len(), 2);
    let a1 = alerts.iter().find(|a| a.id == "A-0000001").unwrap();
    assert!(a1.suppressing);
    assert_eq!(a1.status, Status::Closed);
    assert_eq!(changes(&e.store, "A-0000001").await, ["opened", "closed"]);
}

async fn suppression_is_lifted_after_keep_for_runs_without_the_subject(e: Env) {
    let li = officer("officer:li@S01");
    let r = |h| run("m", 2, h);
    apply(&e.store, &r(0), vec![finding(&e.p, 1, Tier::Red, "S01")]).await;
    e.store
        .close_alert(&aid("A-0000001"), &li, Outcome::Handled, None, t(1))
        .await
        .unwrap();

    // Absent once, found again: the absence count starts over.
    let o = apply(&e.store, &r(2), vec![]).await;
    assert_eq!((o.suppressed, o.suppressions_lifted), (0, 0));
    let o = apply(&e.store, &r(3), vec![finding(&e.p, 1, Tier::Red, "S01")]).await;
    assert_eq!((o.suppressed, o.suppressions_lifted), (1, 0));
    let o = apply(&e.store, &r(4), vec![]).await;
    assert_eq!((o.suppressed, o.suppressions_lifted), (0, 0));
    assert!(e.store.get(&aid("A-0000001")).await.unwrap().suppressing);
    // Absent twice in a row (keep_for = 2): lifted.
    let o = apply(&e.store, &r(5), vec![]).await;
    assert_eq!((o.suppressed, o.suppressions_lifted), (0, 1));
    assert!(o.changes.is_empty());
    let old = e.store.get(&aid("A-0000001")).await.unwrap();
    assert!(!old.suppressing);
    let h = e.store.history(&aid("A-0000001")).await.unwrap();
    assert_eq!(
        h.iter().map(|x| x.change).collect::<Vec<_>>(),
        [
            EventKind::Opened,
            EventKind::Closed,
            EventKind::SuppressionLifted
        ]
    );
    assert_eq!(
        h[2].detail.as_deref(),
        Some("the subject was absent from 2 consecutive runs: a new finding opens a new alert")
    );
    assert_eq!(h[2].run_id, Some(5));

    // The subject is back, even at a lower tier: a new alert, not a reopened one.
    let o = apply(&e.store, &r(6), vec![finding(&e.p, 1, Tier::Yellow, "S01")]).await;
    assert_eq!(o.count(Change::Opened), 1);
    assert_eq!(o.suppressed, 0);
    assert_eq!(o.changes[0].alert.as_str(), "A-0000002");
    assert!(o.changes[0].reopened_from.is_none());
    let new = e.store.get(&aid("A-0000002")).await.unwrap();
    assert_eq!(
        (new.tier, new.state, new.reopened_from),
        (Tier::Yellow, State::Open, None)
    );
    assert_eq!(changes(&e.store, "A-0000002").await, ["opened"]);
}

async fn a_higher_tier_reopens_from_the_officer_closed_alert(e: Env) {
    let li = officer("officer:li@S01");
    let r = |h| run("m", 3, h);
    apply(&e.store, &r(0), vec![finding(&e.p, 1, Tier::Orange, "S01")]).await;
    e.store
        .close_alert(&aid("A-0000001"), &li, Outcome::Handled, None, t(1))
        .await
        .unwrap();
    let o = apply(&e.store, &r(2), vec![finding(&e.p, 1, Tier::Orange, "S01")]).await;
    assert_eq!(o.suppressed, 1);

    let o = apply(&e.store, &r(3), vec![finding(&e.p, 1, Tier::Red, "S02")]).await;
    assert_eq!(o.suppressed, 0);
    assert_eq!(o.changes.len(), 1);
    let c = &o.changes[0];
    assert_eq!(c.change, Change::Opened);
    assert_eq!(c.alert.as_str(), "A-0000002");
    assert_eq!(
        c.reopened_from.as_ref().map(AlertId::as_str),
        Some("A-0000001")
    );
    assert_eq!(
        (c.from, c.to, c.station.as_str()),
        (Some(Tier::Orange), Tier::Red, "S02")
    );

    let new = e.store.get(&aid("A-0000002")).await.unwrap();
    assert_eq!(new.reopened_from.as_deref(), Some("A-0000001"));
    assert_eq!(
        (new.tier, new.status, new.suppressing),
        (Tier::Red, Status::Open, false)
    );
    let h = e.store.history(&aid("A-0000002")).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].change, EventKind::Reopened);
    assert_eq!(
        h[0].detail.as_deref(),
        Some("reopened from A-0000001 (closed as handled at orange): the subject rose to red")
    );
    let old = e.store.get(&aid("A-0000001")).await.unwrap();
    assert!(!old.suppressing);
    assert_eq!(
        changes(&e.store, "A-0000001").await,
        ["opened", "closed", "suppression_lifted"]
    );

    // The reopened alert follows the usual lifecycle; the old one is out of the way.
    let o = apply(&e.store, &r(4), vec![finding(&e.p, 1, Tier::Red, "S02")]).await;
    assert_eq!((o.unchanged, o.suppressed, o.changes.len()), (1, 0, 0));
    assert_eq!(all(&e.store).await.len(), 2);
}

async fn silences_are_validated_listed_and_expired(e: Env) {
    let li = officer("officer:li@S01");
    let silence = |m: SilenceMatchers, s: i64, end: i64, reason: &str| Silence {
        matchers: m,
        starts_at: t(s),
        ends_at: t(end),
        created_by: li.clone(),
        reason: reason.into(),
    };
    let station = |s: &str| SilenceMatchers {
        station: Some(s.into()),
        ..SilenceMatchers::default()
    };

    assert!(matches!(
        e.store
            .add_silence(silence(SilenceMatchers::default(), 0, 1, "x"))
            .await,
        Err(AlertStoreError::SilenceWithoutMatcher)
    ));
    assert!(matches!(
        e.store.add_silence(silence(station(" "), 0, 1, "x")).await,
        Err(AlertStoreError::EmptyMatcher("station"))
    ));
    assert!(matches!(
        e.store
            .add_silence(silence(station("S01"), 2, 2, "x"))
            .await,
        Err(AlertStoreError::SilenceEndsBeforeStart { .. })
    ));
    assert!(matches!(
        e.store
            .add_silence(silence(station("S01"), 3, 2, "x"))
            .await,
        Err(AlertStoreError::SilenceEndsBeforeStart { .. })
    ));
    assert!(matches!(
        e.store
            .add_silence(silence(station("S01"), 0, 1, "  "))
            .await,
        Err(AlertStoreError::EmptyText {
            field: "silence reason"
        })
    ));
    assert!(e.store.list_silences(None).await.unwrap().is_empty());

    let s1 = e
        .store
        .add_silence(silence(station("S01"), 0, 10, "drill at S01"))
        .await
        .unwrap();
    assert_eq!(s1.id.as_str(), "SIL-0000001");
    assert_eq!(s1.starts_at, "2025-03-01T00:00:00Z");
    assert_eq!(s1.ends_at, "2025-03-01T10:00:00Z");
    assert_eq!(s1.created_by, "officer:li@S01");
    assert_eq!(s1.reason, "drill at S01");
    let s2 = e
        .store
        .add_silence(silence(
            SilenceMatchers {
                model: Some("m".into()),
                tier: Some(Tier::Blue),
                category: Some("fugitive".into()),
                subject: Some(pseudonym(&e.p, 1)),
                ..SilenceMatchers::default()
            },
            5,
            20,
            "known case",
        ))
        .await
        .unwrap();
    assert_eq!(s2.id.as_str(), "SIL-0000002");
    assert_eq!(s2.matchers.subject, Some(pseudonym(&e.p, 1)));

    let ids = |v: Vec<blindwatch_alerts::StoredSilence>| -> Vec<String> {
        v.into_iter().map(|s| s.id.as_str().to_owned()).collect()
    };
    assert_eq!(
        ids(e.store.list_silences(None).await.unwrap()),
        ["SIL-0000001", "SIL-0000002"]
    );
    assert_eq!(
        ids(e.store.list_silences(Some(t(0))).await.unwrap()),
        ["SIL-0000001"]
    );
    assert_eq!(
        ids(e.store.list_silences(Some(t(5))).await.unwrap()),
        ["SIL-0000001", "SIL-0000002"]
    );
    // The end is exclusive.
    assert_eq!(
        ids(e.store.list_silences(Some(t(10))).await.unwrap()),
        ["SIL-0000002"]
    );
    assert!(e.store.list_silences(Some(t(20))).await.unwrap().is_empty());

    let x = e.store.expire_silence(&s2.id, &li, t(7)).await.unwrap();
    assert_eq!(x.expired_at.as_deref(), Some("2025-03-01T07:00:00Z"));
    assert_eq!(x.expired_by.as_deref(), Some("officer:li@S01"));
    assert_eq!(
        ids(e.store.list_silences(Some(t(6))).await.unwrap()),
        ["SIL-0000001", "SIL-0000002"]
    );
    assert_eq!(
        ids(e.store.list_silences(Some(t(7))).await.unwrap()),
        ["SIL-0000001"]
    );

    assert!(matches!(
        e.store.expire_silence(&s2.id, &li, t(8)).await,
        Err(AlertStoreError::SilenceEnded { ref at, .. }) if at == "2025-03-01T07:00:00Z"
    ));
    assert!(matches!(
        e.store.expire_silence(&s1.id, &li, t(10)).await,
        Err(AlertStoreError::SilenceEnded { ref at, .. }) if at == "2025-03-01T10:00:00Z"
    ));
    assert!(matches!(
        e.store
            .expire_silence(&SilenceId::new("SIL-0000009").unwrap(), &li, t(8))
            .await,
        Err(AlertStoreError::UnknownSilence(_))
    ));
    // Nothing of the refused expiries was stored.
    assert_eq!(
        e.store.list_silences(None).await.unwrap()[0].expired_at,
        None
    );
}

fn summary(ev: &[AlertEvent]) -> Vec<(i64, &str, EventKind, bool, Option<Muted>)> {
    ev.iter()
        .map(|e| {
            (
                e.id,
                e.alert.id.as_str(),
                e.change,
                e.notify,
                e.muted_by.clone(),
            )
        })
        .collect()
}

async fn events_notify_unless_silenced_inhibited_or_done_by_an_officer(e: Env) {
    let li = officer("officer:li@S01");
    assert_eq!(e.store.last_event_id().await.unwrap(), 0);
    assert!(e.store.events_after(0, 10).await.unwrap().is_empty());
    // Silence S02 from hour 0 to 2; silence model m at blue anywhere (hours 0-100).
    e.store
        .add_silence(Silence {
            matchers: SilenceMatchers {
                station: Some("S02".into()),
                ..SilenceMatchers::default()
            },
            starts_at: t(0),
            ends_at: t(2),
            created_by: li.clone(),
            reason: "exercise".into(),
        })
        .await
        .unwrap();
    e.store
        .add_silence(Silence {
            matchers: SilenceMatchers {
                model: Some("m".into()),
                tier: Some(Tier::Blue),
                ..SilenceMatchers::default()
            },
            starts_at: t(0),
            ends_at: t(100),
            created_by: li.clone(),
            reason: "blue is noise for m".into(),
        })
        .await
        .unwrap();

    // 1 opened A1 (subject 1, S01, orange): notifies. 2 opened A2 (subject 2, S02): muted
    // by the S02 silence.
    apply(
        &e.store,
        &run("m", 1, 0),
        vec![
            finding(&e.p, 1, Tier::Orange, "S01"),
            finding(&e.p, 2, Tier::Yellow, "S02"),
        ],
    )
    .await;
    // 3 opened A3: subject 1 red under m2: red is never inhibited.
    apply(
        &e.store,
        &run("m2", 1, 1),
        vec![finding(&e.p, 1, Tier::Red, "S01")],
    )
    .await;
    // 4 A1 lowered orange → yellow while subject 1 is red under m2: inhibited.
    // 5 A2 raised yellow → orange at S02 after the S02 silence ended: notifies.
    apply(
        &e.store,
        &run("m", 1, 3),
        vec![
            finding(&e.p, 1, Tier::Yellow, "S01"),
            finding(&e.p, 2, Tier::Orange, "S02"),
        ],
    )
    .await;
    // 6 acknowledged A1: an officer action, never notifies.
    e.store
        .acknowledge(&aid("A-0000001"), &li, t(4))
        .await
        .unwrap();
    // 7 A3 resolved (m2 no longer finds subject 1).
    apply(&e.store, &run("m2", 1, 5), vec![]).await;
    // 8 A1 lowered yellow → blue: matched by the blue silence of m (not inhibited: A3 is closed).
    apply(
        &e.store,
        &run("m", 1, 6),
        vec![
            finding(&e.p, 1, Tier::Blue, "S01"),
            finding(&e.p, 2, Tier::Orange, "S02"),
        ],
    )
    .await;
    // 9 A2 closed by an officer.
    e.store
        .close_alert(&aid("A-0000002"), &li, Outcome::Handled, None, t(7))
        .await
        .unwrap();

    let ev = e.store.events_after(0, 100).await.unwrap();
    let sil = |s: &str| Some(Muted::Silence(SilenceId::new(s).unwrap()));
    assert_eq!(
        summary(&ev),
        [
            (1, "A-0000001", EventKind::Opened, true, None),
            (2, "A-0000002", EventKind::Opened, false, sil("SIL-0000001")),
            (3, "A-0000003", EventKind::Opened, true, None),
            (
                4,
                "A-0000001",
                EventKind::Lowered,
                false,
                Some(Muted::Inhibited {
                    by: "A-0000003".into()
                })
            ),
            (5, "A-0000002", EventKind::Raised, true, None),
            (6, "A-0000001", EventKind::Acknowledged, false, None),
            (7, "A-0000003", EventKind::Resolved, true, None),
            (
                8,
                "A-0000001",
                EventKind::Lowered,
                false,
                sil("SIL-0000002")
            ),
            (9, "A-0000002", EventKind::Closed, false, None),
        ]
    );
    assert_eq!(ev[5].actor.as_deref(), Some("officer:li@S01"));
    assert_eq!(ev[3].actor, None);
    assert_eq!(
        (ev[3].from, ev[3].to),
        (Some(Tier::Orange), Some(Tier::Yellow))
    );
    assert_eq!(ev[3].at, "2025-03-01T03:00:00Z");
    assert_eq!(ev[3].run_id, Some(3));
    // The event carries the alert as it is now.
    assert_eq!(ev[0].alert.tier, Tier::Blue);
    assert_eq!(ev[0].alert.state, State::Acknowledged);
    assert_eq!(e.store.last_event_id().await.unwrap(), 9);

    // Resuming: pages of 4 give the same events; a limit above the cap is cut to it.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = e.store.events_after(after, 4).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        after = page.last().unwrap().id;
        paged.extend(page);
    }
    assert_eq!(summary(&paged), summary(&ev));
    assert_eq!(e.store.events_after(6, u32::MAX).await.unwrap().len(), 3);
    assert!(e.store.events_after(9, 10).await.unwrap().is_empty());
    assert!(e.store.events_after(0, 0).await.unwrap().is_empty());

    // Read again later, the inhibition of event 4 still holds (A3 was red then, though it
    // is closed now); a later silence covering hour 3 at S01 mutes it by silence instead.
    e.store
        .add_silence(Silence {
            matchers: SilenceMatchers {
                subject: Some(pseudonym(&e.p, 1)),
                ..SilenceMatchers::default()
            },
            starts_at: t(3),
            ends_at: t(4),
            created_by: li.clone(),
            reason: "late silence".into(),
        })
        .await
        .unwrap();
    let again = e.store.events_after(3, 1).await.unwrap();
    assert_eq!(again[0].muted_by, sil("SIL-0000003"));
    assert!(!again[0].notify);
}

async fn the_subject_card_gathers_alerts_across_models(e: Env) {
    let li = officer("officer:li@S01");
    // Subject 1: m (orange at S01, then closed by an officer), m2 (red at S03), m3 (yellow
    // at S02). Subject 2 only under m.
    apply(
        &e.store,
        &run("m", 1, 0),
        vec![
            finding(&e.p, 1, Tier::Orange, "S01"),
            finding(&e.p, 2, Tier::Red, "S01"),
        ],
    )
    .await;
    apply(
        &e.store,
        &run("m2", 1, 1),
        vec![finding(&e.p, 1, Tier::Red, "S03")],
    )
    .await;
    apply(
        &e.store,
        &run("m3", 1, 2),
        vec![finding(&e.p, 1, Tier::Yellow, "S02")],
    )
    .await;
    e.store
        .close_alert(&aid("A-0000001"), &li, Outcome::Handled, None, t(3))
        .await
        .unwrap();
    e.store
        .comment(&aid("A-0000004"), &li, "checked", t(4))
        .await
        .unwrap();

    let p1 = pseudonym(&e.p, 1);
    let card = e.store.subject_card(&p1).await.unwrap().unwrap();
    assert_eq!(card.pseudonym, p1);
    assert_eq!(card.subject_kind, "person");
    assert_eq!(card.highest_tier, Some(Tier::Red));
    assert_eq!(card.stations, ["S01", "S02", "S03"]);
    let ids: Vec<&str> = card.alerts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["A-0000003", "A-0000004", "A-0000001"]);
    assert_eq!(card.history.len(), 3);
    let kinds =
        |id: &str| -> Vec<EventKind> { card.history[id].iter().map(|h| h.change).collect() };
    assert_eq!(kinds("A-0000001"), [EventKind::Opened, EventKind::Closed]);
    assert_eq!(kinds("A-0000003"), [EventKind::Opened]);
    assert_eq!(
        kinds("A-0000004"),
        [EventKind::Opened, EventKind::Commented]
    );
    assert!(!card.history.contains_key("A-0000002"));

    // The same card from an alert; nothing once every alert is closed but the highest tier.
    let same = e
        .store
        .subject_card_of_alert(&aid("A-0000004"))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&same).unwrap(),
        serde_json::to_value(&card).unwrap()
    );
    apply(&e.store, &run("m2", 1, 5), vec![]).await;
    apply(&e.store, &run("m3", 1, 5), vec![]).await;
    let card = e.store.subject_card(&p1).await.unwrap().unwrap();
    assert_eq!(card.highest_tier, None);
    let ids: Vec<&str> = card.alerts.iter().map(|a| a.id.as_str()).collect();
    // All closed: highest tier first, then most recently seen.
    assert_eq!(ids, ["A-0000003", "A-0000001", "A-0000004"]);

    // A subject without alerts has no card; a typed pseudonym is read back.
    assert!(
        e.store
            .subject_card(&pseudonym(&e.p, 9))
            .await
            .unwrap()
            .is_none()
    );
    let typed = Pseudonym::parse(&p1.as_str().to_ascii_lowercase()).unwrap();
    assert!(e.store.subject_card(&typed).await.unwrap().is_some());
    assert!(matches!(
        e.store.subject_card_of_alert(&aid("A-0000009")).await,
        Err(AlertStoreError::UnknownAlert(_))
    ));
}

async fn page_through(store: &AlertStore, mut q: AlertQuery) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    loop {
        let page = store.query(&q).await.unwrap();
        pages.push(page.alerts.iter().map(|a| a.id.clone()).collect());
        match page.next {
            Some(next) => {
                // The cursor survives a round trip through text (a query string).
                q.after = Some(next.to_string().parse::<Cursor>().unwrap());
            }
            None => return pages,
        }
    }
}

async fn the_listing_is_scoped_filtered_and_paged(e: Env) {
    let li = officer("officer:li@S01");
    // A1 red S01, A2 orange S01, A3 red S02, A4 yellow S03, A5 red S03 (model m, hour 0);
    // A6 red S02 (m2, hour 1, seen more recently than A1/A3/A5).
    apply(
        &e.store,
        &run("m", 1, 0),
        vec![
            finding(&e.p, 1, Tier::Red, "S01"),
            finding(&e.p, 2, Tier::Orange, "S01"),
            finding(&e.p, 3, Tier::Red, "S02"),
            finding(&e.p, 4, Tier::Yellow, "S03"),
            finding(&e.p, 5, Tier::Red, "S03"),
        ],
    )
    .await;
    apply(
        &e.store,
        &run("m2", 1, 1),
        vec![finding(&e.p, 6, Tier::Red, "S02")],
    )
    .await;
    e.store
        .acknowledge(&aid("A-0000003"), &li, t(2))
        .await
        .unwrap();
    e.store
        .assign(&aid("A-0000002"), &li, &li, t(2))
        .await
        .unwrap();
    e.store
        .close_alert(&aid("A-0000005"), &li, Outcome::Duplicate, None, t(2))
        .await
        .unwrap();

    let ids = |p: blindwatch_alerts::AlertPage| -> Vec<String> {
        p.alerts.into_iter().map(|a| a.id).collect()
    };
    let only = |s: &[&str]| StationScope::Only(s.iter().map(|x| x.to_string()).collect());

    // The county duty officer: red alerts of S01 and S02, not S03.
    let mut q = AlertQuery::new(only(&["S01", "S02"]));
    q.tiers = vec![Tier::Red];
    assert_eq!(
        ids(e.store.query(&q).await.unwrap()),
        ["A-0000006", "A-0000001", "A-0000003"]
    );
    // No stations: nothing (never "all").
    assert!(
        e.store
            .query(&AlertQuery::new(only(&[])))
            .await
            .unwrap()
            .alerts
            .is_empty()
    );

    // States, models, assignee.
    let mut q = AlertQuery::new(StationScope::All);
    q.states = vec![State::Acknowledged];
    assert_eq!(ids(e.store.query(&q).await.unwrap()), ["A-0000003"]);
    q.states = vec![State::Open, State::Acknowledged];
    assert_eq!(
        ids(e.store.query(&q).await.unwrap()),
        [
            "A-0000006",
            "A-0000001",
            "A-0000003",
            "A-0000002",
            "A-0000004"
        ]
    );
    q.states = vec![State::Closed];
    assert_eq!(ids(e.store.query(&q).await.unwrap()), ["A-0000005"]);
    let mut q = AlertQuery::new(StationScope::All);
    q.models = vec!["m2".into()];
    assert_eq!(ids(e.store.query(&q).await.unwrap()), ["A-0000006"]);
    let mut q = AlertQuery::new(StationScope::All);
    q.assignee = Some("officer:li@S01".into());
    assert_eq!(ids(e.store.query(&q).await.unwrap()), ["A-0000002"]);

    // Paging by urgency visits the same alerts in the same order as the CLI's list.
    let listed: Vec<String> = all(&e.store).await.into_iter().map(|a| a.id).collect();
    assert_eq!(
        listed,
        [
            "A-0000006",
            "A-0000001",
            "A-0000003",
            "A-0000005",
            "A-0000002",
            "A-0000004"
        ]
    );
    let mut q = AlertQuery::new(StationScope::All);
    q.limit = 4;
    let pages = page_through(&e.store, q.clone()).await;
    assert_eq!(pages.len(), 2);
    assert_eq!(pages.concat(), listed);
    q.limit = 1;
    let pages = page_through(&e.store, q.clone()).await;
    assert_eq!(pages.len(), 6);
    assert_eq!(pages.concat(), listed);
    // Exactly one full page: no cursor.
    q.limit = 6;
    assert!(e.store.query(&q).await.unwrap().next.is_none());

    // Newest first, with a filter.
    let mut q = AlertQuery::new(only(&["S01", "S02", "S03"]));
    q.order = AlertOrder::Newest;
    q.limit = 2;
    q.states = vec![State::Open, State::Acknowledged];
    assert_eq!(
        page_through(&e.store, q.clone()).await,
        [
            vec!["A-0000006".to_string(), "A-0000004".into()],
            vec!["A-0000003".into(), "A-0000002".into()],
            vec!["A-0000001".into()],
        ]
    );

    // A cursor of another order, or made up, is refused.
    let first = e.store.query(&q).await.unwrap();
    let mut other = AlertQuery::new(StationScope::All);
    other.after = first.next;
    assert!(matches!(
        e.store.query(&other).await,
        Err(AlertStoreError::InvalidCursor)
    ));
    for bad in ["", "zz", "757c357c787c31", &hex::encode("n|0")] {
        assert!(
            matches!(bad.parse::<Cursor>(), Err(AlertStoreError::InvalidCursor)),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_store_made_by_0001_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.sqlite");
    // Build a store with the first migration only, and an alert and history in it.
    {
        let migrations = dir.path().join("migrations");
        std::fs::create_dir(&migrations).unwrap();
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/sqlite/0001_alerts.sql"
            ),
            migrations.join("0001_alerts.sql"),
        )
        .unwrap();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(migrations.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::raw_sql(
            "INSERT INTO runs (model, model_version, as_of, started_at, subjects, opened, raised, lowered, resolved)
             VALUES ('m', 1, '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z', 1, 1, 0, 0, 0);
             INSERT INTO alerts (id, model, model_version, category, subject_kind, subject_key, pseudonym, station,
                                 tier, status, evidence, first_seen, last_seen)
             VALUES ('A-0000001', 'm', 1, 'fugitive', 'person', 'k1', 'P-00000-00001', 'S01', 'orange', 'open',
                     '{}', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z');
             INSERT INTO alert_history (alert_id, run_id, at, change, from_tier, to_tier)
             VALUES ('A-0000001', 1, '2025-01-01T00:00:00Z', 'opened', NULL, 'orange');",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    let store = AlertStore::open(&path).await.unwrap();
    let a = store.get(&aid("A-0000001")).await.unwrap();
    assert_eq!(
        (a.state, a.suppressing, a.assignee),
        (State::Open, false, None)
    );
    let ev = store.events_after(0, 10).await.unwrap();
    assert_eq!(
        summary(&ev),
        [(1, "A-0000001", EventKind::Opened, true, None)]
    );
    let a = store
        .acknowledge(&aid("A-0000001"), &officer("officer:li@S01"), t(0))
        .await
        .unwrap();
    assert_eq!(a.state, State::Acknowledged);
    assert_eq!(store.last_event_id().await.unwrap(), 2);
}

async fn concurrent_actions_and_runs_queue_instead_of_failing(e: Env) {
    let findings: Vec<Finding> = (1..=4)
        .map(|n| finding(&e.p, n, Tier::Orange, "S01"))
        .collect();
    apply(&e.store, &run("m", 1, 0), findings.clone()).await;

    let mut tasks = Vec::new();
    for round in 0..5 {
        for n in 1..=4 {
            let store = e.store.clone();
            tasks.push(tokio::spawn(async move {
                let who = officer(&format!("officer:o{round}@S01"));
                store
                    .comment(&aid(&format!("A-000000{n}")), &who, "checked", t(1))
                    .await
                    .map(|_| ())
            }));
        }
        let store = e.store.clone();
        let findings = findings.clone();
        tasks.push(tokio::spawn(async move {
            store
                .apply_run(&run("m", 1, 1 + round), findings, |_| Ok::<(), String>(()))
                .await
                .map(|o| assert_eq!((o.unchanged, o.changes.len()), (4, 0)))
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    for n in 1..=4 {
        let h = e
            .store
            .history(&aid(&format!("A-000000{n}")))
            .await
            .unwrap();
        assert_eq!(h.len(), 6);
        assert_eq!(
            h.iter()
                .filter(|x| x.change == EventKind::Commented)
                .count(),
            5
        );
    }
    assert_eq!(e.store.last_event_id().await.unwrap(), 24);
}
