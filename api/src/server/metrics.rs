//! `GET /metrics`: the server's and the agent's counters in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use critpath_analyzer::store::Recovery;

use crate::agent::AgentStatus;

/// Upper bounds (seconds) of the query latency histogram's buckets.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
    errors: u64,
}

/// Query counters and latencies per endpoint.
#[derive(Default)]
pub struct Metrics {
    queries: Mutex<BTreeMap<&'static str, Histogram>>,
    ingest_batches: AtomicU64,
    ingest_rows: AtomicU64,
    ingest_refused: AtomicU64,
    cache_hits: AtomicU64,
}

impl Metrics {
    /// Records a query answered from the response cache.
    pub fn observe_cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one ingest request: batches and rows stored, or refused.
    pub fn observe_ingest(&self, batches: usize, rows: usize, ok: bool) {
        if ok {
            self.ingest_batches
                .fetch_add(batches as u64, Ordering::Relaxed);
            self.ingest_rows.fetch_add(rows as u64, Ordering::Relaxed);
        } else {
            self.ingest_refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one query.
    pub fn observe_query(&self, endpoint: &'static str, took: Duration, ok: bool) {
        let mut queries = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        let h = queries.entry(endpoint).or_default();
        let s = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if s <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += s;
        if !ok {
            h.errors += 1;
        }
    }

    /// The exposition text.
    pub fn render(&self, agent: Option<&AgentStatus>, recovery: Option<&Recovery>) -> String {
        let mut out = String::new();
        let queries = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str(
            "# HELP critpath_query_duration_seconds Time to answer a query, by endpoint.\n",
        );
        out.push_str("# TYPE critpath_query_duration_seconds histogram\n");
        for (endpoint, h) in queries.iter() {
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "critpath_query_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "critpath_query_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "critpath_query_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "critpath_query_duration_seconds_count{{endpoint=\"{endpoint}\"}} {}",
                h.count
            );
        }
        out.push_str(
            "# HELP critpath_query_errors_total Queries answered with an error, by endpoint.\n",
        );
        out.push_str("# TYPE critpath_query_errors_total counter\n");
        for (endpoint, h) in queries.iter() {
            let _ = writeln!(
                out,
                "critpath_query_errors_total{{endpoint=\"{endpoint}\"}} {}",
                h.errors
            );
        }
        for (name, help, value) in [
            (
                "critpath_ingest_batches_total",
                "Batches pushed by remote agents and stored.",
                &self.ingest_batches,
            ),
            (
                "critpath_ingest_rows_total",
                "Rows of the batches pushed by remote agents and stored.",
                &self.ingest_rows,
            ),
            (
                "critpath_ingest_refused_total",
                "Ingest requests refused (invalid, or the store failed).",
                &self.ingest_refused,
            ),
            (
                "critpath_query_cache_hits_total",
                "Queries answered from the response cache (same request, same data).",
                &self.cache_hits,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        if let Some(r) = recovery {
            for (name, help, value) in [
                (
                    "critpath_wal_recovery_cut_bytes",
                    "Bytes of torn records cut from the log's segments when the store was opened (lost).",
                    r.truncated_bytes,
                ),
                (
                    "critpath_wal_recovery_skipped_bytes",
                    "Bytes of corrupt records skipped inside the log's segments when the store was opened (lost; the records after them kept).",
                    r.skipped_bytes,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
                );
            }
        }
        if let Some(agent) = agent {
            let s = agent.snapshot();
            for (name, help, value) in [
                (
                    "critpath_samples_ingested_total",
                    "On-CPU samples aggregated into the store.",
                    s.samples,
                ),
                (
                    "critpath_off_cpu_waits_ingested_total",
                    "Off-CPU waits aggregated into the store.",
                    s.off_cpu_waits,
                ),
                (
                    "critpath_batches_written_total",
                    "Interval batches appended to the write-ahead log.",
                    s.batches_written,
                ),
                (
                    "critpath_batches_dropped_total",
                    "Batches dropped because a write failed (a full disk).",
                    s.batches_dropped,
                ),
                (
                    "critpath_events_lost_total",
                    "Sampler events lost to a full ring buffer.",
                    s.events_lost,
                ),
                (
                    "critpath_stack_errors_total",
                    "Stack reads that failed in the kernel (user or kernel part).",
                    s.stack_errors,
                ),
                (
                    "critpath_wal_bytes_total",
                    "Bytes appended to the write-ahead log.",
                    s.wal_bytes,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
                );
            }
            let u = &s.unwinding;
            for (name, help, value) in [
                (
                    "critpath_user_stacks_total",
                    "User stacks unwound (samples with a user context).",
                    u.stacks,
                ),
                (
                    "critpath_user_stacks_truncated_total",
                    "User stacks that could not be unwound to their first frame ([truncated]).",
                    u.truncated,
                ),
                (
                    "critpath_wait_stack_copies_total",
                    "User stacks of off-CPU waits and their wakers copied for unwinding.",
                    u.wait_copies,
                ),
                (
                    "critpath_wait_stack_copy_bytes_total",
                    "Bytes of those copies.",
                    u.wait_copy_bytes,
                ),
                (
                    "critpath_waits_without_stack_copy_total",
                    "Captured waits kept without a user stack copy (past the capture budget's \
                     copies in a burst; shown [truncated]).",
                    u.waits_without_copy,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP critpath_held_wait_stack_bytes Bytes of user stack copies held for \
                 off-CPU waits still in progress.\n\
                 # TYPE critpath_held_wait_stack_bytes gauge\n\
                 critpath_held_wait_stack_bytes {}",
                u.held_wait_copy_bytes
            );
            if !u.processes.is_empty() {
                out.push_str(
                    "# HELP critpath_process_truncated_stacks_ratio Share of a process's user \
                     stacks that were truncated (the processes with the most truncated stacks).\n\
                     # TYPE critpath_process_truncated_stacks_ratio gauge\n",
                );
                for p in &u.processes {
                    let _ = writeln!(
                        out,
                        "critpath_process_truncated_stacks_ratio{{pid=\"{}\",comm=\"{}\"}} {}",
                        p.pid,
                        escape_label(&p.comm),
                        p.truncated as f64 / p.stacks.max(1) as f64
                    );
                }
            }
            let _ = writeln!(
                out,
                "# HELP critpath_sampler_running Whether the sampler runs.\n# TYPE critpath_sampler_running gauge\ncritpath_sampler_running {}",
                u8::from(s.running)
            );
        }
        out
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
