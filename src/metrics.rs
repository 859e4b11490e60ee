//! Counters and gauges for `GET /metrics`, in the Prometheus text format.
//!
//! One [`Metrics`] is shared (behind an `Arc`) by the StateKeeper, which records runs and
//! images, and the API, which records on-demand conversions. Updates are atomic adds, so
//! reading the metrics never slows a run down.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the conversion-duration histogram's buckets.
const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The daemon's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    runs_started: AtomicU64,
    runs_completed: AtomicU64,
    runs_failed: AtomicU64,
    converted: AtomicU64,
    skipped: AtomicU64,
    kept: AtomicU64,
    failed: Mutex<BTreeMap<String, u64>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    in_flight: AtomicI64,
    last_success: AtomicI64,
    api_conversions: AtomicU64,
    duration: Histogram,
    superseded: AtomicU64,
    /// Bucket mode only (`cluster` is set once the Coordinator reports).
    cluster: AtomicBool,
    shards_held: AtomicU64,
    live_instances: AtomicU64,
    leases_lost: AtomicU64,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Metrics {
    pub fn run_started(&self) {
        self.runs_started.fetch_add(1, Relaxed);
    }

    /// A run ended; `complete` runs set the last-success time.
    pub fn run_finished(&self, complete: bool, failed: bool) {
        if complete {
            self.runs_completed.fetch_add(1, Relaxed);
            if !failed {
                self.last_success.store(chrono::Utc::now().timestamp(), Relaxed);
            }
        } else {
            self.runs_failed.fetch_add(1, Relaxed);
        }
    }

    pub fn converted(&self, bytes_in: u64, bytes_out: u64, seconds: f64) {
        self.converted.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
        self.duration.observe(seconds);
    }

    pub fn api_converted(&self) {
        self.api_conversions.fetch_add(1, Relaxed);
    }

    pub fn skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Relaxed);
    }

    pub fn kept(&self) {
        self.kept.fetch_add(1, Relaxed);
    }

    pub fn failed(&self, reason: &str) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        *f.entry(reason.to_owned()).or_default() += 1;
    }

    /// Bucket mode: an image left to another instance.
    pub fn superseded(&self) {
        self.superseded.fetch_add(1, Relaxed);
    }

    /// Bucket mode: a lease lost to another instance.
    pub fn lease_lost(&self) {
        self.leases_lost.fetch_add(1, Relaxed);
    }

    /// Bucket mode: shards held here and live instances seen.
    pub fn set_cluster(&self, held: usize, live: usize) {
        self.cluster.store(true, Relaxed);
        self.shards_held.store(held as u64, Relaxed);
        self.live_instances.store(live as u64, Relaxed);
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as i64, Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("ics_runs_started_total", "Runs started.", self.runs_started.load(Relaxed));
        counter(
            "ics_runs_completed_total",
            "Runs that went through the whole bucket.",
            self.runs_completed.load(Relaxed),
        );
        counter(
            "ics_runs_interrupted_total",
            "Runs interrupted (shutdown or listing error).",
            self.runs_failed.load(Relaxed),
        );
        counter("ics_images_converted_total", "Images converted and uploaded by runs.", self.converted.load(Relaxed));
        counter(
            "ics_images_skipped_total",
            "Sources skipped (WebP up to date, or left by the ledger).",
            self.skipped.load(Relaxed),
        );
        counter("ics_images_kept_total", "Sources kept because their WebP would be larger.", self.kept.load(Relaxed));
        counter("ics_api_conversions_total", "Images converted through the API.", self.api_conversions.load(Relaxed));
        counter("ics_bytes_in_total", "Source bytes converted.", self.bytes_in.load(Relaxed));
        counter("ics_bytes_out_total", "WebP bytes written.", self.bytes_out.load(Relaxed));
        let _ = writeln!(
            out,
            "# HELP ics_images_failed_total Images that failed, by reason.\n# TYPE ics_images_failed_total counter"
        );
        for (reason, n) in self.failed.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "ics_images_failed_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP ics_images_in_flight Images between listing and record.\n# TYPE ics_images_in_flight gauge\nics_images_in_flight {}",
            self.in_flight.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ics_last_success_timestamp_seconds End of the last complete run without failures.\n# TYPE ics_last_success_timestamp_seconds gauge\nics_last_success_timestamp_seconds {}",
            self.last_success.load(Relaxed)
        );
        self.duration.render(&mut out, "ics_conversion_duration_seconds", "Download-to-upload time of one image.");
        if self.cluster.load(Relaxed) {
            let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
            };
            gauge("ics_cluster_shards_held", "Shards this instance holds.", "gauge", self.shards_held.load(Relaxed));
            gauge(
                "ics_cluster_live_instances",
                "Live instances seen through their heartbeats.",
                "gauge",
                self.live_instances.load(Relaxed),
            );
            gauge(
                "ics_cluster_leases_lost_total",
                "Leases lost to another instance (a write refused).",
                "counter",
                self.leases_lost.load(Relaxed),
            );
            gauge(
                "ics_images_superseded_total",
                "Images left to another instance (shard lost, or its WebP written first).",
                "counter",
                self.superseded.load(Relaxed),
            );
        }
        out
    }
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", self.buckets[i].load(Relaxed));
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_labels_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.run_started();
        m.converted(100, 40, 0.2);
        m.converted(100, 40, 3.0);
        m.failed("decode_failed");
        m.failed("decode_failed");
        let text = m.render();
        assert!(text.contains("ics_runs_started_total 1\n"));
        assert!(text.contains("ics_images_converted_total 2\n"));
        assert!(text.contains("ics_images_failed_total{reason=\"decode_failed\"} 2\n"));
        assert!(text.contains("ics_conversion_duration_seconds_bucket{le=\"0.25\"} 1\n"));
        assert!(text.contains("ics_conversion_duration_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("ics_conversion_duration_seconds_count 2\n"));
        assert!(text.contains("ics_bytes_out_total 80\n"));
    }
}
