//! `atelier bench artifacts`: a large checkpoint through the artifact store, up
//! through the worker's Upload path and down through `pull`'s Download path, with a
//! real coordinator (gRPC on loopback, SQLite) in this process. Prints MB/s each way
//! and the process's peak RSS for each size, so that memory can be seen not to grow
//! with the size (the store streams).

use std::path::{Path, PathBuf};
use std::time::Instant;

use atelier_proto::v1;
use atelier_worker::client::ConnectOptions;
use atelier_worker::jobs::JobContext;
use indicatif::ProgressBar;
use rand::RngCore;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::commands::coordinator::StoreArgs;
use crate::error::{CliError, CliResult};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct ArtifactsArgs {
    /// Sizes to move, in GB (10^9 bytes), each as one artifact
    #[arg(long, value_delimiter = ',', default_values_t = [0.2, 2.0])]
    pub size_gb: Vec<f64>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Create the bucket first (a scratch S3 server)
    #[arg(long)]
    pub create_bucket: bool,
    /// Folder for the generated and downloaded files (default: a temporary one)
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Figures {
    store: String,
    bytes: u64,
    upload_s: f64,
    upload_mb_per_s: f64,
    download_s: f64,
    download_mb_per_s: f64,
    /// VmHWM during this size's run (reset before it where the kernel allows).
    peak_rss_mb: f64,
    rss_before_mb: f64,
}

impl ArtifactsArgs {
    pub async fn exec(self, mut settings: Settings) -> CliResult {
        self.store.apply(&mut settings);
        let s3 = settings.s3().map_err(CliError::invalid)?;
        if let (Some(c), true) = (&s3, self.create_bucket) {
            atelier_coordinator::artifacts::s3::create_bucket(c)
                .await
                .map_err(|e| CliError::failure(e.to_string()))?;
        }
        let label = s3
            .as_ref()
            .map(|c| c.url())
            .unwrap_or_else(|| "local artifact_dir".into());
        if self.size_gb.iter().any(|g| !(*g > 0.0 && g.is_finite())) {
            return Err(CliError::invalid("--size-gb: sizes must be positive"));
        }

        let state = tempfile::tempdir()?;
        // Only the store comes from the settings: the rest is a private coordinator.
        let mut local = settings.clone();
        local.data_dir = state.path().to_path_buf();
        local.database_url = String::new();
        local.redis_url = String::new();
        local.artifact_dir = String::new();
        local.listen = "127.0.0.1:0".into();
        // One lease covers the whole run: nothing heartbeats it.
        local.lease_ttl_secs = 86_400.0;
        local.auth = false;
        local.tls_cert = String::new();
        local.tls_key = String::new();
        let config = super::super::coordinator::Args::default().config(local)?;
        let running = atelier_coordinator::server::start(config)
            .await
            .map_err(|e| CliError::failure(e.to_string()))?;
        let conn = atelier_worker::client::channel(&ConnectOptions::new(format!(
            "http://{}",
            running.addr
        )))
        .map_err(CliError::failure)?;
        let mut user = atelier_worker::client::user_api(conn.clone());
        let worker = atelier_worker::client::worker_api(conn);

        let scratch = match &self.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                tempfile::tempdir_in(d)?
            }
            None => tempfile::tempdir()?,
        };
        let mut all = Vec::new();
        for (i, gb) in self.size_gb.iter().enumerate() {
            let bytes = (gb * 1e9) as u64;
            let (job, token) = lease_one(&mut user, &worker, i).await?;
            let file = scratch.path().join(format!("checkpoint-{i}.bin"));
            write_random(&file, bytes).await?;
            let rss_before = reset_peak_rss();

            let ctx = JobContext::new(
                job.clone(),
                token,
                Vec::new(),
                scratch.path().join("work"),
                scratch.path().join("cache"),
                CancellationToken::new(),
                worker.clone(),
            );
            let t = Instant::now();
            let artifact = ctx
                .upload("checkpoint.bin", &file)
                .await
                .map_err(|e| CliError::failure(e.message))?;
            let upload_s = t.elapsed().as_secs_f64();
            tokio::fs::remove_file(&file).await?;

            let dest = scratch.path().join(format!("pulled-{i}.bin"));
            let t = Instant::now();
            crate::commands::pull::download(
                &mut user,
                job.id,
                &artifact,
                &dest,
                &ProgressBar::hidden(),
            )
            .await?;
            let download_s = t.elapsed().as_secs_f64();
            tokio::fs::remove_file(&dest).await?;

            let mb = bytes as f64 / 1e6;
            let f = Figures {
                store: label.clone(),
                bytes,
                upload_s,
                upload_mb_per_s: mb / upload_s,
                download_s,
                download_mb_per_s: mb / download_s,
                peak_rss_mb: status_kb("VmHWM").unwrap_or(0) as f64 / 1e3,
                rss_before_mb: rss_before as f64 / 1e3,
            };
            if !self.json {
                println!(
                    "{}: {:.2} GB (sha256 {}): upload {:.0} MB/s ({:.1} s), download and verify \
                     {:.0} MB/s ({:.1} s); peak RSS {:.0} MB (before: {:.0} MB)",
                    f.store,
                    bytes as f64 / 1e9,
                    &artifact.sha256[..12],
                    f.upload_mb_per_s,
                    f.upload_s,
                    f.download_mb_per_s,
                    f.download_s,
                    f.peak_rss_mb,
                    f.rss_before_mb
                );
            }
            all.push(f);
        }
        running.stop().await;
        if self.json {
            crate::output::print_json(&all);
        }
        Ok(())
    }
}

/// Submits a no-op job and leases it as a worker would: uploads need a live lease.
async fn lease_one(
    user: &mut atelier_worker::client::UserApi,
    worker: &atelier_worker::client::Api,
    i: usize,
) -> CliResult<(v1::Job, u64)> {
    let spec = atelier_coordinator::spec::JobSpec {
        name: format!("checkpoint-{i}"),
        kind: "noop".into(),
        params: serde_json::json!({}),
        priority: 0,
        max_attempts: 1,
        requires: atelier_coordinator::spec::Requirements {
            gpus: 0,
            gpu_mem_gb: 0.0,
            backend: "any".into(),
            labels: Default::default(),
        },
        needs: Vec::new(),
        sweep_point: None,
    };
    let exp = atelier_coordinator::spec::ExperimentSpec {
        name: format!("bench-artifacts-{i}"),
        description: None,
        jobs: vec![spec],
        source: String::new(),
    };
    user.submit(crate::commands::submit::to_request(&exp))
        .await?;
    let mut worker = worker.clone();
    let id = "bench-artifacts".to_string();
    worker
        .register(v1::RegisterRequest {
            worker_id: id.clone(),
            name: id.clone(),
            backend: "cpu".into(),
            cpu_slots: 1,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
        .await?;
    let leased = worker
        .lease(v1::LeaseRequest {
            worker_id: id,
            free_cpu_slots: 1,
            max_jobs: 1,
            wait_ms: 10_000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .jobs
        .pop()
        .ok_or_else(|| CliError::failure("the benchmark's job was not leased"))?;
    let job = leased
        .job
        .ok_or_else(|| CliError::failure("a lease without its job"))?;
    Ok((job, leased.lease_token))
}

/// `bytes` random bytes (nothing for a store or a link to compress) to `path`.
async fn write_random(path: &Path, bytes: u64) -> CliResult {
    let mut file = tokio::fs::File::create(path).await?;
    let mut buf = vec![0u8; 8 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rand::thread_rng().fill_bytes(&mut buf[..n]);
        file.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    file.flush().await?;
    Ok(())
}

/// A field of /proc/self/status, in kB (Linux).
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current RSS (`5` to clear_refs, Linux 4.0+); returns the
/// current RSS in kB. Where the reset is refused, VmHWM stays the run's maximum.
fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kb("VmRSS").unwrap_or(0)
}
