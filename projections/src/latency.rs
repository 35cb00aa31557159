//! Lock-free histograms of the queue writer's timings, rendered for `/metrics` in Prometheus'
//! text format. Counting is a few relaxed atomic adds, cheap enough for every command.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: fine below 10 ms, where a commit on a local
/// disk lands, coarse above.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.004, 0.005, 0.007_5, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds of the commands-per-group-commit buckets.
pub const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// A Prometheus histogram with fixed bucket bounds.
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: Vec<AtomicU64>,
    /// The sum of observations, in millionths of the unit (µs for latencies).
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.partition_point(|b| *b < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6).round() as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Cumulative counts per bound (`+Inf` last) and the sum, as of now.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum)
    }

    /// The histogram's HELP, TYPE, `_bucket`, `_sum` and `_count` lines.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let (cumulative, sum) = self.snapshot();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&cumulative) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let count = cumulative.last().copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Where the queue writer's time goes, for operators and the load generator.
pub struct CommitStats {
    /// From a command's arrival at the writer's channel to its answer: waiting for the group
    /// commit in progress, deciding, the durable append, folding into the projection.
    pub command: Histogram,
    /// From a command's arrival at the writer's channel to the start of its group commit.
    pub wait: Histogram,
    /// One group commit, from deciding its first command to answering its last.
    pub commit: Histogram,
    /// The durable append of one group commit (the WAL write and its fsync on the embedded
    /// log, the produce and its acknowledgement on Kafka).
    pub append: Histogram,
    /// From the writer sending a command's answer to the caller running again: the wait for
    /// a free async worker thread, which on a busy machine makes much of a command's tail.
    pub resume: Histogram,
    /// Commands decided in one group commit.
    pub batch: Histogram,
}

impl Default for CommitStats {
    fn default() -> Self {
        CommitStats {
            command: Histogram::new(LATENCY_BOUNDS),
            wait: Histogram::new(LATENCY_BOUNDS),
            commit: Histogram::new(LATENCY_BOUNDS),
            append: Histogram::new(LATENCY_BOUNDS),
            resume: Histogram::new(LATENCY_BOUNDS),
            batch: Histogram::new(BATCH_BOUNDS),
        }
    }
}

impl CommitStats {
    /// Every histogram in Prometheus' text format, named `taskledger_<topic>_<what>`.
    pub fn prometheus(&self, topic: &str) -> String {
        let mut out = String::new();
        for (histogram, what, help) in [
            (&self.command, "command_seconds", "Time from a command's arrival at the writer to its answer (group commit wait, decide, durable append, projection)."),
            (&self.wait, "wait_seconds", "Time from a command's arrival at the writer to the start of its group commit."),
            (&self.commit, "commit_seconds", "Time of one group commit, from deciding its first command to answering its last."),
            (&self.append, "append_seconds", "Time of one group commit's durable append to the log."),
            (&self.resume, "resume_seconds", "Time from the writer sending a command's answer to the caller running again."),
            (&self.batch, "batch_commands", "Commands decided in one group commit."),
        ] {
            histogram.render(&mut out, &format!("taskledger_{topic}_{what}"), help);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = Histogram::new(&[0.001, 0.01, 0.1]);
        for v in [0.0005, 0.001, 0.002, 0.05, 0.5, 7.0] {
            h.observe(v);
        }
        let (cumulative, sum) = h.snapshot();
        // le=0.001 holds 0.0005 and 0.001 (bounds are inclusive, as Prometheus' `le`)
        assert_eq!(cumulative, vec![2, 3, 4, 6]);
        assert!((sum - 7.5535).abs() < 1e-6, "{sum}");
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(out.contains("# TYPE x_seconds histogram\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.01\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 6\n"), "{out}");
        assert!(out.contains("x_seconds_count 6\n"), "{out}");
    }
}
