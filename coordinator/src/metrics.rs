//! The coordinator's Prometheus metrics (OpenMetrics text, `prometheus-client`).
//!
//! Jobs and workers are read from the database at each scrape, so every replica on
//! one database reports the same numbers. The counters and histograms count what
//! this process did (a sum over replicas is the fleet's total).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::clock::now_ms;
use crate::error::Result;
use crate::store::{StateChange, Store, TERMINAL};

/// Every state a job can be in: each is reported for every kind seen, 0 included,
/// so that a job leaving a state shows as that state's gauge going down.
const STATES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// Submission to first start: milliseconds for a free worker, hours behind a queue
/// or a long `needs:` chain.
const WAIT_BUCKETS: [f64; 16] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
    21600.0, 86400.0,
];
/// An attempt's run time: a noop's fraction of a second to a day of training.
const DURATION_BUCKETS: [f64; 14] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateKind {
    state: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    worker: String,
    gpu: String,
    model: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    jobs: Family<StateKind, Gauge>,
    workers_online: Gauge,
    worker_gpus: Family<WorkerLabels, Gauge>,
    worker_gpu_memory: Family<GpuLabels, Gauge<f64, AtomicU64>>,
    worker_leases: Family<WorkerLabels, Gauge>,
    lease_expiries: Counter,
    requeues: Family<Kind, Counter>,
    submit_to_start: HistogramFamily<Kind>,
    durations: HistogramFamily<StateKind>,
    uploaded: Counter,
    downloaded: Counter,
    /// One scrape at a time: each clears the database gauges and fills them again.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("atelier");
        let m = Metrics {
            registry: Registry::default(),
            jobs: Family::default(),
            workers_online: Gauge::default(),
            worker_gpus: Family::default(),
            worker_gpu_memory: Family::default(),
            worker_leases: Family::default(),
            lease_expiries: Counter::default(),
            requeues: Family::default(),
            submit_to_start: Family::new_with_constructor(|| Histogram::new(WAIT_BUCKETS)),
            durations: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            uploaded: Counter::default(),
            downloaded: Counter::default(),
            scrape: tokio::sync::Mutex::new(()),
        };
        r.register(
            "jobs",
            "Jobs by state and kind (read from the database at each scrape)",
            m.jobs.clone(),
        );
        r.register(
            "workers_online",
            "Workers heard from within three heartbeat intervals",
            m.workers_online.clone(),
        );
        // Not `worker_…`: that prefix is the workers' own endpoint's.
        r.register(
            "gpus",
            "GPUs each online worker registered",
            m.worker_gpus.clone(),
        );
        r.register_with_unit(
            "gpu_memory",
            "Memory of each GPU of an online worker, as it registered it (0.1 GiB steps)",
            Unit::Bytes,
            m.worker_gpu_memory.clone(),
        );
        r.register(
            "leases_held",
            "Leases each online worker held at its last heartbeat",
            m.worker_leases.clone(),
        );
        r.register(
            "lease_expiries",
            "Leases this coordinator found past their deadline (the job re-queued, or failed \
             when out of attempts)",
            m.lease_expiries.clone(),
        );
        r.register(
            "job_requeues",
            "Attempts that ended with the job back in the queue: an expired lease, a \
             retryable failure, or a worker handing its job back",
            m.requeues.clone(),
        );
        r.register_with_unit(
            "job_submit_to_start",
            "From a job's submission to the start of its first attempt",
            Unit::Seconds,
            m.submit_to_start.clone(),
        );
        r.register_with_unit(
            "job_duration",
            "Run time of a job's last attempt, by the state it ended in",
            Unit::Seconds,
            m.durations.clone(),
        );
        r.register_with_unit(
            "artifact_uploaded",
            "Artifact bytes received (job artifacts and pushed trainsets)",
            Unit::Bytes,
            m.uploaded.clone(),
        );
        r.register_with_unit(
            "artifact_downloaded",
            "Artifact bytes sent (to `pull` and to workers)",
            Unit::Bytes,
            m.downloaded.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Counts what state changes say: re-queues, first starts and ended attempts.
    pub fn observe(&self, changes: &[StateChange]) {
        let now = now_ms();
        let seconds = |since: i64| (now - since).max(0) as f64 / 1000.0;
        for c in changes {
            let kind = Kind {
                kind: c.kind.clone(),
            };
            match (c.from.as_str(), c.to.as_str()) {
                ("queued", "running") if c.attempt == 1 => {
                    self.submit_to_start
                        .get_or_create(&kind)
                        .observe(seconds(c.created_at));
                }
                ("running", "queued") => {
                    self.requeues.get_or_create(&kind).inc();
                }
                ("running", to) if TERMINAL.contains(&to) => {
                    if let Some(started) = c.started_at {
                        self.durations
                            .get_or_create(&StateKind {
                                state: to.to_string(),
                                kind: c.kind.clone(),
                            })
                            .observe(seconds(started));
                    }
                }
                _ => {}
            }
        }
    }

    pub fn lease_expired(&self, n: usize) {
        self.lease_expiries.inc_by(n as u64);
    }

    pub fn uploaded(&self, bytes: u64) {
        self.uploaded.inc_by(bytes);
    }

    pub fn downloaded(&self, bytes: u64) {
        self.downloaded.inc_by(bytes);
    }

    /// The exposition: jobs and workers as the database has them now, then this
    /// process's counters and histograms. Workers count as online when heard from
    /// within `offline_after`.
    pub async fn render(&self, store: &Store, offline_after: Duration) -> Result<String> {
        let counts = store.job_counts().await?;
        let workers = store
            .list_workers(Some(offline_after.as_millis() as i64))
            .await?;
        let _one = self.scrape.lock().await;
        self.jobs.clear();
        let mut kinds: Vec<&str> = counts.iter().map(|(_, k, _)| k.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            for state in STATES {
                self.jobs
                    .get_or_create(&StateKind {
                        state: state.into(),
                        kind: kind.into(),
                    })
                    .set(0);
            }
        }
        for (state, kind, n) in &counts {
            self.jobs
                .get_or_create(&StateKind {
                    state: state.clone(),
                    kind: kind.clone(),
                })
                .set(*n);
        }
        self.workers_online.set(workers.len() as i64);
        self.worker_gpus.clear();
        self.worker_gpu_memory.clear();
        self.worker_leases.clear();
        for w in &workers {
            let labels = WorkerLabels {
                worker: w.id.clone(),
                name: w.name.clone(),
            };
            let gpus = w.gpu_list();
            self.worker_gpus
                .get_or_create(&labels)
                .set(gpus.len() as i64);
            let running: Vec<i64> = serde_json::from_str(&w.running).unwrap_or_default();
            self.worker_leases
                .get_or_create(&labels)
                .set(running.len() as i64);
            for g in gpus {
                self.worker_gpu_memory
                    .get_or_create(&GpuLabels {
                        worker: w.id.clone(),
                        gpu: g.index.to_string(),
                        model: g.name.clone(),
                    })
                    .set(g.memory_gb * (1u64 << 30) as f64);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| crate::Error::Invalid(format!("encoding the metrics: {e}")))?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(from: &str, to: &str, attempt: i64, started_at: Option<i64>) -> StateChange {
        StateChange {
            job_id: 1,
            experiment_id: 1,
            job_name: "j".into(),
            from: from.into(),
            to: to.into(),
            reason: String::new(),
            worker_id: "w".into(),
            attempt,
            kind: "noop".into(),
            created_at: now_ms() - 2_000,
            started_at,
        }
    }

    fn encoded(m: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        text
    }

    #[test]
    fn state_changes_feed_the_counters_and_histograms() {
        let m = Metrics::new();
        let started = Some(now_ms() - 1_000);
        m.observe(&[
            change("queued", "running", 1, started),
            change("running", "queued", 1, started),
            // A second attempt is not a submit-to-start.
            change("queued", "running", 2, started),
            change("running", "succeeded", 2, started),
            // Settled from a cache: never ran, no duration.
            change("queued", "succeeded", 0, None),
        ]);
        m.lease_expired(2);
        m.uploaded(10);
        m.downloaded(7);
        let text = encoded(&m);
        for line in [
            "atelier_job_submit_to_start_seconds_count{kind=\"noop\"} 1",
            "atelier_job_requeues_total{kind=\"noop\"} 1",
            "atelier_job_duration_seconds_count{state=\"succeeded\",kind=\"noop\"} 1",
            "atelier_lease_expiries_total 2",
            "atelier_artifact_uploaded_bytes_total 10",
            "atelier_artifact_downloaded_bytes_total 7",
            // 2 s waited: above the 1 s bucket, within the 5 s one.
            "atelier_job_submit_to_start_seconds_bucket{le=\"1.0\",kind=\"noop\"} 0",
            "atelier_job_submit_to_start_seconds_bucket{le=\"5.0\",kind=\"noop\"} 1",
        ] {
            assert!(text.contains(line), "`{line}` missing from:\n{text}");
        }
    }
}
