//! This worker's Prometheus metrics (OpenMetrics text, `prometheus-client`): the jobs
//! it runs, the speed and loss each training job last reported, and the memory of its
//! GPUs as `nvidia-smi` reads it at the scrape. A value that cannot be read is left
//! out, never guessed.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// `nvidia-smi` answers in well under a second; a hung driver must not hang scrapes.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    gpu: String,
    model: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// What a running job last reported.
#[derive(Debug, Clone, Default)]
struct JobStats {
    kind: String,
    steps_per_second: Option<f64>,
    loss: Option<f64>,
}

#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    /// This worker's GPUs (their `nvidia-smi` indexes); the others on the host
    /// belong to other workers.
    gpus: Vec<u32>,
    running: Mutex<HashMap<i64, JobStats>>,
    jobs_running: Gauge,
    steps_per_second: Family<JobLabels, F64Gauge>,
    loss: Family<JobLabels, F64Gauge>,
    gpu_memory_used: Family<GpuLabels, Gauge>,
    gpu_memory_total: Family<GpuLabels, Gauge>,
    /// One scrape at a time: each clears the gauges and fills them again.
    scrape: tokio::sync::Mutex<()>,
}

impl Telemetry {
    /// Metrics of worker `worker_id` (a label on every series) with GPUs `gpus`.
    pub fn new(worker_id: &str, gpus: Vec<u32>) -> Telemetry {
        let mut r = Registry::with_prefix_and_labels(
            "atelier_worker",
            [("worker".into(), worker_id.to_string().into())].into_iter(),
        );
        let t = Telemetry {
            registry: Registry::default(),
            gpus,
            running: Mutex::new(HashMap::new()),
            jobs_running: Gauge::default(),
            steps_per_second: Family::default(),
            loss: Family::default(),
            gpu_memory_used: Family::default(),
            gpu_memory_total: Family::default(),
            scrape: tokio::sync::Mutex::new(()),
        };
        r.register(
            "jobs_running",
            "Jobs this worker runs now",
            t.jobs_running.clone(),
        );
        r.register(
            "job_steps_per_second",
            "Training steps per second of a running job since its attempt started",
            t.steps_per_second.clone(),
        );
        r.register(
            "job_loss",
            "The last training loss a running job reported",
            t.loss.clone(),
        );
        r.register_with_unit(
            "gpu_memory_used",
            "GPU memory in use (nvidia-smi, at the scrape)",
            Unit::Bytes,
            t.gpu_memory_used.clone(),
        );
        r.register_with_unit(
            "gpu_memory_total",
            "GPU memory in all (nvidia-smi, at the scrape)",
            Unit::Bytes,
            t.gpu_memory_total.clone(),
        );
        Telemetry { registry: r, ..t }
    }

    pub fn job_started(&self, job_id: i64, kind: &str) {
        self.running.lock().unwrap().insert(
            job_id,
            JobStats {
                kind: kind.to_string(),
                ..JobStats::default()
            },
        );
    }

    pub fn job_ended(&self, job_id: i64) {
        self.running.lock().unwrap().remove(&job_id);
    }

    /// Takes `steps_per_second` and `loss` from a job's progress metrics (JSON), when
    /// it has them (training jobs do).
    pub fn progress(&self, job_id: i64, metrics_json: &str) {
        if metrics_json.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(metrics_json) else {
            return;
        };
        let mut running = self.running.lock().unwrap();
        let Some(stats) = running.get_mut(&job_id) else {
            return;
        };
        if let Some(r) = v.get("steps_per_second").and_then(|x| x.as_f64()) {
            stats.steps_per_second = Some(r);
        }
        if let Some(l) = v.get("loss").and_then(|x| x.as_f64()) {
            stats.loss = Some(l);
        }
    }

    /// The exposition, with GPU memory read now.
    pub async fn render(&self) -> String {
        let gpus = if self.gpus.is_empty() {
            Vec::new()
        } else {
            read_gpu_memory().await
        };
        let _one = self.scrape.lock().await;
        self.steps_per_second.clear();
        self.loss.clear();
        {
            let running = self.running.lock().unwrap();
            self.jobs_running.set(running.len() as i64);
            for (id, s) in running.iter() {
                let labels = JobLabels {
                    job: id.to_string(),
                    kind: s.kind.clone(),
                };
                if let Some(r) = s.steps_per_second {
                    self.steps_per_second.get_or_create(&labels).set(r);
                }
                if let Some(l) = s.loss {
                    self.loss.get_or_create(&labels).set(l);
                }
            }
        }
        self.gpu_memory_used.clear();
        self.gpu_memory_total.clear();
        for g in gpus.iter().filter(|g| self.gpus.contains(&g.index)) {
            let labels = GpuLabels {
                gpu: g.index.to_string(),
                model: g.name.clone(),
            };
            if let Some(b) = g.used_bytes {
                self.gpu_memory_used.get_or_create(&labels).set(b);
            }
            if let Some(b) = g.total_bytes {
                self.gpu_memory_total.get_or_create(&labels).set(b);
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// One GPU's memory as `nvidia-smi` reports it; `None` where it says N/A.
#[derive(Debug, PartialEq)]
struct GpuMemory {
    index: u32,
    name: String,
    used_bytes: Option<i64>,
    total_bytes: Option<i64>,
}

/// Every GPU `nvidia-smi` lists; empty when it is absent, fails or hangs.
async fn read_gpu_memory() -> Vec<GpuMemory> {
    let run = tokio::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.used,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(NVIDIA_SMI_TIMEOUT, run).await {
        Ok(Ok(o)) if o.status.success() => parse_gpu_memory(&String::from_utf8_lossy(&o.stdout)),
        Ok(Ok(o)) => {
            tracing::debug!("nvidia-smi failed: {}", String::from_utf8_lossy(&o.stderr));
            Vec::new()
        }
        Ok(Err(e)) => {
            tracing::debug!("nvidia-smi: {e}");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("nvidia-smi gave no answer in {NVIDIA_SMI_TIMEOUT:?}");
            Vec::new()
        }
    }
}

/// Parses `index, name, memory.used, memory.total` lines (MiB).
fn parse_gpu_memory(text: &str) -> Vec<GpuMemory> {
    let mib = |s: &str| s.parse::<i64>().ok().map(|m| m * 1024 * 1024);
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, name, used, total] = parts[..] else {
                return None;
            };
            Some(GpuMemory {
                index: index.parse().ok()?,
                name: name.to_string(),
                used_bytes: mib(used),
                total_bytes: mib(total),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nvidia_smi_memory_and_leaves_out_what_it_cannot_read() {
        let gpus = parse_gpu_memory(
            "0, NVIDIA H200, 1024, 143771\n1, NVIDIA GeForce RTX 4090, [N/A], 24564\nnonsense\n",
        );
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].used_bytes, Some(1024 * 1024 * 1024));
        assert_eq!(gpus[0].total_bytes, Some(143771 * 1024 * 1024));
        assert_eq!(gpus[1].name, "NVIDIA GeForce RTX 4090");
        assert_eq!(gpus[1].used_bytes, None);
    }

    #[tokio::test]
    async fn running_jobs_show_their_speed_and_loss_until_they_end() {
        let t = Telemetry::new("w-1", Vec::new());
        t.job_started(7, "train");
        t.job_started(8, "prepare");
        t.progress(
            7,
            r#"{"step":3,"steps":10,"loss":0.25,"steps_per_second":1.5}"#,
        );
        t.progress(8, "");
        let text = t.render().await;
        for line in [
            "atelier_worker_jobs_running{worker=\"w-1\"} 2",
            "atelier_worker_job_steps_per_second{worker=\"w-1\",job=\"7\",kind=\"train\"} 1.5",
            "atelier_worker_job_loss{worker=\"w-1\",job=\"7\",kind=\"train\"} 0.25",
        ] {
            assert!(text.contains(line), "`{line}` missing from:\n{text}");
        }
        // A job that reports no steps has no step rate, not a made-up 0.
        assert!(!text.contains("job=\"8\""), "{text}");
        t.job_ended(7);
        let text = t.render().await;
        assert!(
            text.contains("atelier_worker_jobs_running{worker=\"w-1\"} 1"),
            "{text}"
        );
        assert!(!text.contains("job=\"7\""), "{text}");
        // No GPUs: nvidia-smi is not asked.
        assert!(
            !text.contains("atelier_worker_gpu_memory_used_bytes{"),
            "{text}"
        );
    }
}
