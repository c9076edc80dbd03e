#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Decisions log the action and the outcome, never who asked or about what.

use std::io::Write;
use std::sync::{Arc, Mutex};

use blindwatch_access::{AccessPolicies, Action, Context, Principal, Resource};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn decisions_log_no_names() {
    let policies = AccessPolicies::shipped().unwrap();
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();

    let officer = Principal::Officer {
        name: "officer-secret-name".into(),
        station: "STATION-SECRET".into(),
        county: "COUNTY-SECRET".into(),
        duty: true,
    };
    let alert = |tier| Resource::Alert {
        id: "ALERT-SECRET".into(),
        station: "STATION-SECRET".into(),
        county: "COUNTY-SECRET".into(),
        tier,
        model: "MODEL-SECRET".into(),
    };
    let context = Context {
        justification_given: true,
    };
    tracing::subscriber::with_default(subscriber, || {
        // Allowed, denied by default, and a request that cannot be built (tier 9, and an
        // action that does not apply to a dataset).
        assert!(
            policies
                .decide(&officer, Action::Reveal, &alert(4), &context)
                .allowed
        );
        assert!(
            !policies
                .decide(&officer, Action::Reveal, &alert(2), &context)
                .allowed
        );
        assert!(
            !policies
                .decide(&officer, Action::ReadAlert, &alert(9), &context)
                .allowed
        );
        let dataset = Resource::Dataset {
            name: "DATASET-SECRET".into(),
            partner: "PARTNER-SECRET".into(),
        };
        assert!(
            !policies
                .decide(&officer, Action::ReadAlert, &dataset, &context)
                .allowed
        );
    });

    let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("action=\"reveal\""), "{logged}");
    assert!(logged.contains("allowed=true"), "{logged}");
    assert!(logged.contains("allowed=false"), "{logged}");
    assert!(logged.contains("could not be built"), "{logged}");
    for secret in ["secret", "SECRET"] {
        assert!(!logged.contains(secret), "{logged}");
    }
}
