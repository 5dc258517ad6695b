//! `atelier bench dispatch`: how fast the job system itself moves jobs, with a real
//! store, real gRPC and real worker agents (in this process) running no-op jobs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use atelier_coordinator::spec::{JobSpec, Requirements};
use atelier_coordinator::CoordinatorConfig;
use atelier_worker::agent::{Agent, WorkerConfig};
use atelier_worker::client::ConnectOptions;
use tokio_util::sync::CancellationToken;

use super::percentile;
use crate::error::{CliError, CliResult};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct DispatchArgs {
    /// Jobs for the throughput run
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Worker agents (each runs one job at a time)
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Jobs each worker runs at once (CPU slots)
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// Stores to measure
    #[arg(long, value_delimiter = ',', default_values_t = ["postgres".to_string(), "sqlite".to_string()])]
    pub stores: Vec<String>,
    /// PostgreSQL server; a scratch database is created on it and dropped after
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres_url: String,
    /// Single-job submissions for the latency run
    #[arg(long, default_value_t = 200)]
    pub latency_jobs: usize,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Figures {
    store: String,
    jobs: usize,
    workers: usize,
    slots: u32,
    submit_jobs_per_s: f64,
    lease_complete_jobs_per_s: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
}

fn noop_jobs(n: usize, prefix: &str) -> Vec<JobSpec> {
    (0..n)
        .map(|i| JobSpec {
            name: format!("{prefix}{i}"),
            kind: "noop".into(),
            params: serde_json::json!({}),
            priority: 0,
            max_attempts: 3,
            requires: Requirements {
                gpus: 0,
                gpu_mem_gb: 0.0,
                backend: "any".into(),
                labels: Default::default(),
            },
            needs: Vec::new(),
            sweep_point: None,
        })
        .collect()
}

impl DispatchArgs {
    pub async fn exec(self, _settings: Settings) -> CliResult {
        let mut all = Vec::new();
        for store in &self.stores {
            let figures = match store.as_str() {
                "postgres" => {
                    let (url, admin, db) = scratch_postgres(&self.postgres_url).await?;
                    let r = self.run(store, &url).await;
                    drop_postgres(&admin, &db).await;
                    r?
                }
                "sqlite" => {
                    let dir = tempfile::tempdir()?;
                    let url = format!(
                        "sqlite://{}?mode=rwc",
                        dir.path().join("bench.db").display()
                    );
                    self.run(store, &url).await?
                }
                other => {
                    return Err(CliError::invalid(format!(
                        "--stores: unknown store `{other}` (postgres, sqlite)"
                    )))
                }
            };
            if !self.json {
                println!(
                    "{:<9} {} jobs, {} workers x {} slots: submit {:>8.0} jobs/s | lease+complete {:>7.0} jobs/s | submit-to-start p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    figures.store, figures.jobs, figures.workers, figures.slots, figures.submit_jobs_per_s,
                    figures.lease_complete_jobs_per_s, figures.latency_p50_ms, figures.latency_p99_ms, figures.latency_max_ms
                );
            }
            all.push(figures);
        }
        if self.json {
            crate::output::print_json(&all);
        }
        Ok(())
    }

    async fn run(&self, store: &str, database_url: &str) -> CliResult<Figures> {
        let data = tempfile::tempdir()?;
        let config = CoordinatorConfig {
            database_url: database_url.to_string(),
            redis_url: None,
            redis_channel: String::new(),
            artifact_dir: data.path().join("artifacts"),
            s3: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            lease_ttl: Duration::from_secs(30),
            auth: false,
            admin_token_file: data.path().join("admin.token"),
            max_upload_bytes: u64::MAX,
            tls: None,
        };
        let running = atelier_coordinator::server::start(config)
            .await
            .map_err(|e| CliError::failure(e.to_string()))?;
        let c = running.coordinator.clone();
        let mut events = c.events.subscribe();
        let url = format!("http://{}", running.addr);

        // 1. submit throughput: one experiment of N jobs over gRPC, no worker yet
        let mut api = atelier_worker::client::user_api(
            atelier_worker::client::channel(&ConnectOptions::new(url.clone()))
                .map_err(CliError::failure)?,
        );
        let request = v1_request("bench", &noop_jobs(self.jobs, "j"));
        let t0 = Instant::now();
        api.submit(request).await?;
        let submit_s = t0.elapsed().as_secs_f64();

        // 2. lease + complete throughput: start the workers, wait for all to succeed
        let shutdown = CancellationToken::new();
        for i in 0..self.workers {
            let agent = Agent::new(WorkerConfig {
                coordinator: ConnectOptions::new(url.clone()),
                name: format!("bench-{i}"),
                backend: "cpu".into(),
                gpus: Vec::new(),
                labels: HashMap::new(),
                cpu_slots: self.slots,
                work_dir: data.path().join("work"),
                cache_dir: data.path().join("cache"),
                min_free_disk_bytes: 0,
            })
            .map_err(CliError::failure)?;
            tokio::spawn(agent.run(shutdown.child_token()));
        }
        let t1 = Instant::now();
        // Count completions from the event bus, so that measuring puts no load on
        // the store (SQLite has a single connection).
        let mut done = 0usize;
        while done < self.jobs {
            match tokio::time::timeout_at((t1 + Duration::from_secs(600)).into(), events.recv())
                .await
            {
                Ok(Ok(ev)) => {
                    if let Some(atelier_proto::v1::event::Kind::State(s)) = &ev.kind {
                        if s.to == "succeeded" {
                            done += 1;
                        }
                    }
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                    return Err(CliError::failure(format!(
                        "the benchmark fell {n} events behind"
                    )));
                }
                Ok(Err(_)) | Err(_) => {
                    return Err(CliError::failure(format!(
                        "only {done} of {} jobs finished in 10 minutes",
                        self.jobs
                    )));
                }
            }
        }
        let drain_s = t1.elapsed().as_secs_f64();

        // 3. latency: idle workers long-poll; single-job submissions, one at a time
        let mut ids = Vec::new();
        for i in 0..self.latency_jobs {
            let r = api
                .submit(v1_request(&format!("latency-{i}"), &noop_jobs(1, "l")))
                .await?
                .into_inner();
            ids.extend(r.job_ids);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut latencies = Vec::new();
        for id in ids {
            let job = loop {
                let j = c
                    .store
                    .get_job(id)
                    .await
                    .map_err(|e| CliError::failure(e.to_string()))?;
                if j.started_at.is_some() {
                    break j;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            latencies.push((job.started_at.unwrap_or(0) - job.created_at) as f64);
        }
        latencies.sort_by(f64::total_cmp);
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        running.stop().await;
        Ok(Figures {
            store: store.to_string(),
            jobs: self.jobs,
            workers: self.workers,
            slots: self.slots,
            submit_jobs_per_s: self.jobs as f64 / submit_s,
            lease_complete_jobs_per_s: self.jobs as f64 / drain_s,
            latency_p50_ms: percentile(&latencies, 0.5),
            latency_p99_ms: percentile(&latencies, 0.99),
            latency_max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        })
    }
}

fn v1_request(name: &str, jobs: &[JobSpec]) -> atelier_proto::v1::SubmitRequest {
    let exp = atelier_coordinator::spec::ExperimentSpec {
        name: name.to_string(),
        description: None,
        jobs: jobs.to_vec(),
        source: String::new(),
    };
    crate::commands::submit::to_request(&exp)
}

/// Creates a scratch database on the server; returns (its url, admin url, name).
pub async fn scratch_postgres(admin: &str) -> CliResult<(String, String, String)> {
    use sqlx::Connection;
    let name = format!("atelier_bench_{:08x}", rand::random::<u32>());
    let mut conn = sqlx::PgConnection::connect(admin).await.map_err(|e| {
        CliError::failure(format!("cannot connect to PostgreSQL at `{admin}`: {e}"))
    })?;
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .map_err(|e| CliError::failure(format!("cannot create database {name}: {e}")))?;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    Ok((format!("{base}/{name}"), admin.to_string(), name))
}

async fn drop_postgres(admin: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::Executor::execute(
            &mut conn,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
        )
        .await;
    }
}
