//! The Prometheus exporter behind `GET /metrics`.
//!
//! The actors record through the `metrics` facade; the first runtime of a
//! process installs metrics-exporter-prometheus as the global recorder. If
//! the application installed its own recorder first, resilite's metrics go
//! to that recorder and [`render`] returns `None`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds): 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
/// Operations per group commit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// One operation in this many has its latency recorded in the
/// `resilite_*_duration_seconds` histograms: recording every one cost about
/// a fifth of the throughput at high concurrency (measured with
/// `cargo bench --bench writes`). Counts come from the `_total` counters.
pub const LATENCY_SAMPLE_EVERY: u32 = 8;
/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the exporter once per process; later calls return the same handle.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("batch_size".into()), BATCH_BUCKETS));
            let handle = match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics exporter not installed; /metrics will be empty");
                    return None;
                }
            };
            let upkeep = handle.clone();
            // A plain thread: it must outlive any one tokio runtime.
            let spawned = std::thread::Builder::new()
                .name("resilite-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "metrics upkeep thread not started");
            }
            Some(handle)
        })
        .as_ref()
}

/// The metrics in Prometheus text format, when the exporter is installed.
pub fn render() -> Option<String> {
    install().map(PrometheusHandle::render)
}

/// Whether this operation's latency is recorded: one in
/// [`LATENCY_SAMPLE_EVERY`], counted per thread so no counter is shared.
pub(crate) fn sampled() -> bool {
    thread_local! {
        static SEEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    SEEN.with(|seen| {
        let n = seen.get().wrapping_add(1);
        seen.set(n);
        n % LATENCY_SAMPLE_EVERY == 1
    })
}
