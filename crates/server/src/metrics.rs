//! Prometheus text-format metrics, kept by hand: a few counters and gauges need no registry
//! crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    /// (route template, method, status) → count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// (route template) → (sum of seconds, count).
    latency: Mutex<BTreeMap<String, (f64, u64)>>,
    pub stream_subscribers: AtomicI64,
    pub stream_events_sent: AtomicU64,
    pub alerts_listed: AtomicU64,
    pub uploads_accepted: AtomicU64,
    pub uploads_refused: AtomicU64,
    pub model_runs: AtomicU64,
    pub reveals_granted: AtomicU64,
    pub reveals_refused: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_owned(), method.to_owned(), status))
                .or_default() += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            let e = m.entry(route.to_owned()).or_default();
            e.0 += seconds;
            e.1 += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP blindwatch_http_requests_total HTTP requests by route template, method and status.\n");
        out.push_str("# TYPE blindwatch_http_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "blindwatch_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP blindwatch_http_request_duration_seconds Time to handle requests by route template.\n");
        out.push_str("# TYPE blindwatch_http_request_duration_seconds summary\n");
        if let Ok(m) = self.latency.lock() {
            for (route, (sum, count)) in m.iter() {
                let _ = writeln!(
                    out,
                    "blindwatch_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
                );
                let _ = writeln!(
                    out,
                    "blindwatch_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
                );
            }
        }
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let r = Ordering::Relaxed;
        gauge(
            &mut out,
            "blindwatch_stream_subscribers",
            "Open live-stream connections.",
            "gauge",
            self.stream_subscribers.load(r).to_string(),
        );
        gauge(
            &mut out,
            "blindwatch_stream_events_sent_total",
            "Alert events sent on live streams.",
            "counter",
            self.stream_events_sent.load(r).to_string(),
        );
        gauge(
            &mut out,
            "blindwatch_alerts_listed_total",
            "Alerts returned by listings.",
            "counter",
            self.alerts_listed.load(r).to_string(),
        );
        gauge(
            &mut out,
            "blindwatch_uploads_accepted_total",
            "Contributions accepted.",
            "counter",
            self.uploads_accepted.load(r).to_string(),
        );
        gauge(
            &mut out,
            "blindwatch_uploads_refused_total",
            "Contributions refused.",
            "counter",
            self.uploads_refused.load(r).to_string(),
        );
        gauge(
            &mut out,
            "blindwatch_model_runs_total",
            "Model runs.",
            "counter",
            self.model_runs.load(r).to_string(),
        );
        gauge(
            &mut out,
            "blindwatch_reveals_granted_total",
            "Reveal requests granted.",
            "counter",
            self.reveals_granted.load(r).to_string(),
        );
        gauge(
            &mut out,
            "blindwatch_reveals_refused_total",
            "Reveal requests refused.",
            "counter",
            self.reveals_refused.load(r).to_string(),
        );
        out
    }
}
