//! Counters shared by all shards, rendered in Prometheus text format by `/metrics`.
//!
//! Relaxed atomics: each counter is independent and read only for display.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    pub requests: AtomicU64,
    pub requests_rejected: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "weir_connections_accepted_total",
                "counter",
                "Kafka connections accepted",
                &self.connections_accepted,
            ),
            (
                "weir_connections_open",
                "gauge",
                "Kafka connections open",
                &self.connections_open,
            ),
            (
                "weir_requests_total",
                "counter",
                "Kafka requests answered",
                &self.requests,
            ),
            (
                "weir_requests_rejected_total",
                "counter",
                "Kafka requests that closed their connection (malformed, unsupported, too large)",
                &self.requests_rejected,
            ),
        ];
        for (name, kind, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}
