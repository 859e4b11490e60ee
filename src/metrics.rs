//! The daemon's metrics for `GET /metrics`, kept in a `prometheus` registry and exposed in
//! the Prometheus text format (0.0.4).
//!
//! One [`Metrics`] is shared (behind an `Arc`) by the StateKeeper, which records runs and
//! images, the Coordinator (bucket mode), and the API, which records on-demand conversions
//! and every HTTP request. Updates are atomic adds, so reading the metrics never slows a
//! run down. Conventions: units in names (`_bytes_total`, `_seconds`), every series
//! present from the start (each failure reason at 0), `process_*` from the process
//! collector (Linux), and `ics_build_info` naming the version, commit and libwebp.
//!
//! Runs and their images are counted per bucket (a `bucket` label; one daemon may keep
//! several buckets, `r2.buckets`): each bucket's pipeline holds a [`Metrics::for_bucket`]
//! handle on the one registry, so `/metrics` shows every bucket's series side by side.

use crate::reason::Reason;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Upper bounds (seconds) of the conversion-duration histogram's buckets.
/// The event sources, each present in `ics_events_received_total` from the start.
const EVENT_SOURCES: [&str; 3] = ["sqs", "webhook", "cloudflare_queue"];
/// Why an event source gives a record or message up, each source's series present from
/// the start (an image given up for bad input adds its own reason, `not_an_image`…).
pub const EVENT_GIVE_UP_REASONS: [&str; 3] = ["unreadable_record", "unsafe_key", "max_receives"];
const EVENT_LAG_BUCKETS: [f64; 12] = [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];
const CONVERSION_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upper bounds (seconds) of the HTTP request-duration histogram's buckets.
const HTTP_BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

/// The daemon's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// The bucket this handle records runs for (the `bucket` label).
    bucket: String,
    runs_started: IntCounterVec,
    runs_completed: IntCounterVec,
    runs_interrupted: IntCounterVec,
    runs_failed: IntCounterVec,
    last_run_failed: IntGaugeVec,
    converted: IntCounterVec,
    /// Outputs written, by format (`conversion.outputs`; one per image by default).
    outputs: IntCounterVec,
    skipped: IntCounterVec,
    kept: IntCounterVec,
    failed: IntCounterVec,
    input_bytes: IntCounterVec,
    output_bytes: IntCounterVec,
    in_flight: IntGaugeVec,
    last_success: IntGaugeVec,
    api_conversions: IntCounter,
    duration: HistogramVec,
    superseded: IntCounterVec,
    shards_held: IntGaugeVec,
    live_instances: IntGaugeVec,
    leases_lost: IntCounterVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    events_received: IntCounterVec,
    events_given_up: IntCounterVec,
    journal_files: IntGauge,
    journal_records: IntGauge,
    journal_oldest: Gauge,
    event_lag: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers a metric built from `opts` (the names are constants: a clash is a bug).
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

/// A counter with a `bucket` label.
fn counters(registry: &Registry, name: &str, help: &str) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), &["bucket"]).expect("valid metric"))
}

/// A gauge with a `bucket` label.
fn gauges(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), &["bucket"]).expect("valid metric"))
}

impl Metrics {
    /// The registry, with no bucket's series yet: a pipeline records through
    /// [`Metrics::for_bucket`] (this handle itself records under `bucket=""`).
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("one process collector");
        let build = register(
            &r,
            IntGaugeVec::new(
                Opts::new("ics_build_info", "The running build: version, commit and libwebp version (always 1)."),
                &["version", "commit", "libwebp"],
            )
            .expect("valid metric"),
        );
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("ICS_BUILD_COMMIT"), &crate::convert::webp::version()])
            .set(1);
        let outputs = register(
            &r,
            IntCounterVec::new(
                Opts::new("ics_outputs_converted_total", "Outputs written (runs and events), by bucket and format."),
                &["bucket", "format"],
            )
            .expect("valid metric"),
        );
        let failed = register(
            &r,
            IntCounterVec::new(
                Opts::new("ics_images_failed_total", "Images that failed, by bucket and reason."),
                &["bucket", "reason"],
            )
            .expect("valid metric"),
        );
        let duration = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new("ics_conversion_duration_seconds", "Download-to-upload time of one image.")
                    .buckets(CONVERSION_BUCKETS.to_vec()),
                &["bucket"],
            )
            .expect("valid metric"),
        );
        let http_requests = register(
            &r,
            IntCounterVec::new(
                Opts::new("ics_http_requests_total", "HTTP requests answered, by route, method and status."),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
        );
        let http_duration = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new("ics_http_request_duration_seconds", "Time to answer an HTTP request, by route.")
                    .buckets(HTTP_BUCKETS.to_vec()),
                &["route", "method"],
            )
            .expect("valid metric"),
        );
        let events_received = register(
            &r,
            IntCounterVec::new(
                Opts::new("ics_events_received_total", "Bucket event messages received, by source."),
                &["source"],
            )
            .expect("valid metric"),
        );
        for source in EVENT_SOURCES {
            events_received.with_label_values(&[source]);
        }
        let event_lag = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "ics_event_lag_seconds",
                    "Time from an upload (its event's time) to its WebP stored, for event-driven conversions.",
                )
                .buckets(EVENT_LAG_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let events_given_up = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "ics_events_given_up_total",
                    "Event records and messages that can never succeed, given up once (not retried), by source \
                     and reason.",
                ),
                &["source", "reason"],
            )
            .expect("valid metric"),
        );
        for source in EVENT_SOURCES {
            for reason in EVENT_GIVE_UP_REASONS {
                events_given_up.with_label_values(&[source, reason]);
            }
        }
        let journal = |name: &str, help: &str| register(&r, IntGauge::new(name, help).expect("valid metric"));
        let journal_files = journal("ics_events_journal_files", "Webhook journal files not yet done.");
        let journal_records = journal("ics_events_journal_records", "Event records in the webhook journal's files.");
        let journal_oldest = register(
            &r,
            Gauge::new("ics_events_journal_oldest_age_seconds", "Age of the webhook journal's oldest file (0: none).")
                .expect("valid metric"),
        );
        Self {
            bucket: String::new(),
            events_received,
            events_given_up,
            journal_files,
            journal_records,
            journal_oldest,
            event_lag,
            runs_started: counters(&r, "ics_runs_started_total", "Runs started."),
            runs_completed: counters(&r, "ics_runs_completed_total", "Runs that went through the whole bucket."),
            runs_interrupted: counters(&r, "ics_runs_interrupted_total", "Runs interrupted (shutdown, listing error)."),
            runs_failed: counters(
                &r,
                "ics_runs_failed_total",
                "Runs that failed as a whole (the listing failed, the state could not be saved); also counted interrupted.",
            ),
            last_run_failed: gauges(&r, "ics_last_run_failed", "1 when the last run failed as a whole, else 0."),
            converted: counters(&r, "ics_images_converted_total", "Images converted and uploaded by runs."),
            outputs,
            skipped: counters(
                &r,
                "ics_images_skipped_total",
                "Sources skipped (WebP up to date, or left by the ledger).",
            ),
            kept: counters(&r, "ics_images_kept_total", "Sources kept because their WebP would be larger."),
            api_conversions: counter(&r, "ics_api_conversions_total", "Images converted through the API."),
            input_bytes: counters(&r, "ics_input_bytes_total", "Source bytes converted."),
            output_bytes: counters(&r, "ics_output_bytes_total", "WebP bytes written."),
            in_flight: gauges(&r, "ics_images_in_flight", "Images between listing and record."),
            last_success: gauges(
                &r,
                "ics_last_success_timestamp_seconds",
                "End of the last complete run without failures (Unix time; 0: none yet).",
            ),
            superseded: counters(
                &r,
                "ics_images_superseded_total",
                "Images left to another instance (shard lost, or its WebP written first).",
            ),
            shards_held: gauges(&r, "ics_cluster_shards_held", "Shards this instance holds (state.backend: bucket)."),
            live_instances: gauges(&r, "ics_cluster_live_instances", "Live instances seen through their heartbeats."),
            leases_lost: counters(
                &r,
                "ics_cluster_leases_lost_total",
                "Shard leases lost to another instance (a write refused).",
            ),
            failed,
            duration,
            http_requests,
            http_duration,
            registry: r,
        }
    }

    /// A handle recording runs and images for `bucket` (its series exist from now on, at 0).
    pub fn for_bucket(&self, bucket: &str) -> Self {
        let m = Self { bucket: bucket.to_owned(), ..self.clone() };
        m.touch();
        m
    }

    /// Creates this bucket's series, so each is present before its first event.
    fn touch(&self) {
        let b: &[&str] = &[&self.bucket];
        for v in [&self.runs_started, &self.runs_completed, &self.runs_interrupted, &self.runs_failed, &self.converted]
        {
            v.with_label_values(b);
        }
        for v in [&self.skipped, &self.kept, &self.input_bytes, &self.output_bytes, &self.superseded, &self.leases_lost]
        {
            v.with_label_values(b);
        }
        for v in [&self.in_flight, &self.last_success, &self.last_run_failed, &self.shards_held, &self.live_instances] {
            v.with_label_values(b);
        }
        self.duration.with_label_values(b);
        for reason in Reason::ALL {
            self.failed.with_label_values(&[self.bucket.as_str(), reason.code()]);
        }
    }

    pub fn run_started(&self) {
        self.runs_started.with_label_values(&[&self.bucket]).inc();
    }

    /// A run ended; `complete` runs set the last-success time, one with an `error` of
    /// its own (not an image's) failed as a whole.
    pub fn run_finished(&self, complete: bool, failed: bool, error: bool) {
        self.last_run_failed.with_label_values(&[&self.bucket]).set(i64::from(error));
        if error {
            self.runs_failed.with_label_values(&[&self.bucket]).inc();
        }
        if complete {
            self.runs_completed.with_label_values(&[&self.bucket]).inc();
            if !failed {
                self.last_success.with_label_values(&[&self.bucket]).set(chrono::Utc::now().timestamp());
            }
        } else {
            self.runs_interrupted.with_label_values(&[&self.bucket]).inc();
        }
    }

    /// One output written: `output` is its key (its extension names the format).
    pub fn converted(&self, output: &str, bytes_in: u64, bytes_out: u64, seconds: f64) {
        self.converted.with_label_values(&[&self.bucket]).inc();
        let format = crate::naming::extension(output).unwrap_or("webp").to_ascii_lowercase();
        self.outputs.with_label_values(&[self.bucket.as_str(), format.as_str()]).inc();
        self.input_bytes.with_label_values(&[&self.bucket]).inc_by(bytes_in);
        self.output_bytes.with_label_values(&[&self.bucket]).inc_by(bytes_out);
        self.duration.with_label_values(&[&self.bucket]).observe(seconds);
    }

    pub fn api_converted(&self) {
        self.api_conversions.inc();
    }

    pub fn skipped(&self, n: u64) {
        self.skipped.with_label_values(&[&self.bucket]).inc_by(n);
    }

    pub fn kept(&self) {
        self.kept.with_label_values(&[&self.bucket]).inc();
    }

    pub fn failed(&self, reason: Reason) {
        self.failed.with_label_values(&[self.bucket.as_str(), reason.code()]).inc();
    }

    /// A bucket event message received from `source`.
    pub fn event_received(&self, source: &str) {
        self.events_received.with_label_values(&[source]).inc();
    }

    /// An event record (or a whole message) from `source` given up for `reason`.
    pub fn event_given_up(&self, source: &str, reason: &str) {
        self.events_given_up.with_label_values(&[source, reason]).inc();
    }

    /// The webhook journal's backlog.
    pub fn journal_backlog(&self, files: usize, records: usize, oldest_age_seconds: f64) {
        self.journal_files.set(files as i64);
        self.journal_records.set(records as i64);
        self.journal_oldest.set(oldest_age_seconds);
    }

    /// An event's upload-to-WebP time.
    pub fn event_lag(&self, seconds: f64) {
        self.event_lag.observe(seconds);
    }

    /// Bucket mode: an image left to another instance.
    pub fn superseded(&self) {
        self.superseded.with_label_values(&[&self.bucket]).inc();
    }

    /// Bucket mode: a lease lost to another instance.
    pub fn lease_lost(&self) {
        self.leases_lost.with_label_values(&[&self.bucket]).inc();
    }

    /// Bucket mode: shards held here and live instances seen.
    pub fn set_cluster(&self, held: usize, live: usize) {
        self.shards_held.with_label_values(&[&self.bucket]).set(held as i64);
        self.live_instances.with_label_values(&[&self.bucket]).set(live as i64);
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.with_label_values(&[&self.bucket]).set(n as i64);
    }

    /// An HTTP request answered: `route` is the matched pattern (`/api/convert`), or
    /// `unmatched` for a 404, so that the series stay few whatever paths clients send.
    pub fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http_requests.with_label_values(&[route, method, &status.to_string()]).inc();
        self.http_duration.with_label_values(&[route, method]).observe(seconds);
    }

    /// The text exposition format (`text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8192);
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding into memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_labels_and_a_cumulative_histogram() {
        let m = Metrics::default().for_bucket("b");
        m.run_started();
        m.converted("a.webp", 100, 40, 0.2);
        m.converted("a_w64.avif", 100, 40, 3.0);
        m.failed(Reason::DecodeFailed);
        m.failed(Reason::DecodeFailed);
        let text = m.render();
        assert!(text.contains("ics_runs_started_total{bucket=\"b\"} 1\n"));
        assert!(text.contains("ics_images_converted_total{bucket=\"b\"} 2\n"));
        assert!(text.contains("ics_outputs_converted_total{bucket=\"b\",format=\"webp\"} 1\n"), "{text}");
        assert!(text.contains("ics_outputs_converted_total{bucket=\"b\",format=\"avif\"} 1\n"), "{text}");
        assert!(text.contains("ics_images_failed_total{bucket=\"b\",reason=\"decode_failed\"} 2\n"));
        assert!(text.contains("ics_conversion_duration_seconds_bucket{bucket=\"b\",le=\"0.25\"} 1\n"));
        assert!(text.contains("ics_conversion_duration_seconds_bucket{bucket=\"b\",le=\"5\"} 2\n"));
        assert!(text.contains("ics_conversion_duration_seconds_count{bucket=\"b\"} 2\n"));
        assert!(text.contains("ics_output_bytes_total{bucket=\"b\"} 80\n"));
        assert!(text.contains("ics_input_bytes_total{bucket=\"b\"} 200\n"));
    }

    #[test]
    fn every_series_exists_before_its_first_event() {
        let text = Metrics::default().for_bucket("b").render();
        for reason in Reason::ALL {
            assert!(
                text.contains(&format!("ics_images_failed_total{{bucket=\"b\",reason=\"{reason}\"}} 0\n")),
                "{reason}"
            );
        }
        for name in [
            "ics_runs_started_total{bucket=\"b\"} 0",
            "ics_cluster_shards_held{bucket=\"b\"} 0",
            "ics_images_in_flight{bucket=\"b\"} 0",
        ] {
            assert!(text.contains(name), "{name}");
        }
        assert!(text.contains("ics_build_info{commit=\""), "{text}");
        assert!(text.contains("ics_events_given_up_total{reason=\"unsafe_key\",source=\"sqs\"} 0\n"), "{text}");
        assert!(text.contains("ics_events_journal_records 0\n"), "{text}");
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} missing");
        }
    }

    #[test]
    fn each_bucket_has_its_own_series_on_one_registry() {
        let registry = Metrics::new();
        let (a, b) = (registry.for_bucket("images-a"), registry.for_bucket("images-b"));
        a.converted("x.webp", 10, 5, 0.1);
        b.converted("x.webp", 10, 5, 0.1);
        b.converted("y.webp", 10, 5, 0.1);
        b.failed(Reason::DecodeFailed);
        let text = registry.render();
        assert!(text.contains("ics_images_converted_total{bucket=\"images-a\"} 1\n"), "{text}");
        assert!(text.contains("ics_images_converted_total{bucket=\"images-b\"} 2\n"), "{text}");
        assert!(text.contains("ics_images_failed_total{bucket=\"images-a\",reason=\"decode_failed\"} 0\n"));
        assert!(text.contains("ics_images_failed_total{bucket=\"images-b\",reason=\"decode_failed\"} 1\n"));
        assert!(!text.contains("bucket=\"\""), "no series of an unnamed bucket: {text}");
    }

    #[test]
    fn a_run_that_failed_as_a_whole_is_counted_and_flagged_until_a_run_without_error() {
        let m = Metrics::default().for_bucket("b");
        assert!(m.render().contains("ics_runs_failed_total{bucket=\"b\"} 0\n"));
        m.run_finished(false, false, true);
        let text = m.render();
        assert!(text.contains("ics_runs_failed_total{bucket=\"b\"} 1\n"), "{text}");
        assert!(text.contains("ics_last_run_failed{bucket=\"b\"} 1\n"), "{text}");
        assert!(text.contains("ics_runs_interrupted_total{bucket=\"b\"} 1\n"), "{text}");
        m.run_finished(true, false, false);
        let text = m.render();
        assert!(text.contains("ics_runs_failed_total{bucket=\"b\"} 1\n"), "{text}");
        assert!(text.contains("ics_last_run_failed{bucket=\"b\"} 0\n"), "{text}");
    }

    #[test]
    fn http_requests_are_counted_by_route_and_status() {
        let m = Metrics::default();
        m.http_request("/api/convert", "POST", 200, 0.02);
        m.http_request("/api/convert", "POST", 200, 0.03);
        m.http_request("unmatched", "GET", 404, 0.001);
        let text = m.render();
        assert!(
            text.contains("ics_http_requests_total{method=\"POST\",route=\"/api/convert\",status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("ics_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1\n"));
        assert!(text.contains("ics_http_request_duration_seconds_count{method=\"POST\",route=\"/api/convert\"} 2\n"));
    }
}
