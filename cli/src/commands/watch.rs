use std::io::IsTerminal;
use std::time::{Duration, Instant};

use atelier_proto::v1::{self, event::Kind};
use atelier_worker::client::{self, Backoff, UserApi};
use tokio_stream::StreamExt;

use crate::error::{CliError, CliResult, Exit};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment to follow (`e3` or a name); all jobs when omitted
    pub experiment: Option<String>,
    /// Print events as JSON lines
    #[arg(long)]
    pub json: bool,
    /// Keep following after every job of the experiment has ended
    #[arg(long)]
    pub forever: bool,
}

fn describe(ev: &v1::Event) -> Option<String> {
    let at = chrono_like(ev.at_ms);
    match ev.kind.as_ref()? {
        Kind::State(s) => {
            let mut line = format!(
                "{at} job {} `{}`: {} → {}",
                ev.job_id, s.job_name, s.from, s.to
            );
            if s.to == "running" {
                // The job's attempt counter, already counting this lease (1 for the first).
                line.push_str(&format!(" on {} (attempt {})", s.worker_id, s.attempt));
            }
            if !s.reason.is_empty() {
                line.push_str(&format!(": {}", s.reason));
            }
            Some(line)
        }
        Kind::Progress(p) => Some(match eval_metrics(&p.metrics_json) {
            Some(metrics) => format!("{at} job {} metrics {metrics}", ev.job_id),
            None => format!(
                "{at} job {} {:.0}% {}",
                ev.job_id,
                p.fraction * 100.0,
                p.message
            ),
        }),
        Kind::Log(l) => Some(format!("{at} job {} | {}", ev.job_id, l.line)),
        Kind::Artifact(a) => Some(format!(
            "{at} job {} stored `{}` ({} bytes)",
            ev.job_id, a.name, a.size
        )),
    }
}

/// An eval job's metrics for one sample set, as one line: `sample-lora (lora):
/// LPIPS nearest 0.4123, mean 0.5012, CLIP score 23.10`.
pub fn eval_metrics(metrics_json: &str) -> Option<String> {
    let m: serde_json::Value = serde_json::from_str(metrics_json).ok()?;
    let nearest = m.get("lpips_nearest")?.as_f64()?;
    Some(format!(
        "`{}` ({}): LPIPS nearest {nearest:.4}, mean {:.4}, CLIP score {:.2}",
        m["sample_job"].as_str().unwrap_or("?"),
        m["method"].as_str().unwrap_or("?"),
        m["lpips_pairwise"].as_f64().unwrap_or(f64::NAN),
        m["clip_score"].as_f64().unwrap_or(f64::NAN),
    ))
}

/// `HH:MM:SS` in UTC, without a date library.
fn chrono_like(ms: i64) -> String {
    let s = (ms / 1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let mut api = super::connect(&settings)?;
        let experiment_id = match &self.experiment {
            Some(e) => crate::refs::experiment_id(&mut api, e).await?,
            None => 0,
        };
        let tty = std::io::stdout().is_terminal() && !self.json;
        let mut events = subscribe(&mut api, experiment_id).await?;
        let mut last_draw = Instant::now() - Duration::from_secs(1);
        // Eval metrics as they arrive, shown under the table on a terminal.
        let mut metrics: Vec<String> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        if let Some(Kind::Progress(p)) = &ev.kind {
                            if let Some(line) = eval_metrics(&p.metrics_json) {
                                metrics.push(format!("job {} {line}", ev.job_id));
                            }
                        }
                        if self.json {
                            println!("{}", serde_json::to_string(&ev).unwrap_or_default());
                        } else if !tty {
                            if let Some(line) = describe(&ev) {
                                println!("{line}");
                            }
                        }
                    }
                    // Its replica died or the connection broke: subscribe again. The
                    // table is re-read from the store, so only event lines in between
                    // are missed.
                    Some(Err(e)) if client::is_transient(&e) => {
                        eprintln!("watch: event stream lost ({}); reconnecting", e.message());
                        events = subscribe(&mut api, experiment_id).await?;
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => {
                        eprintln!("watch: the coordinator closed the event stream; reconnecting");
                        events = subscribe(&mut api, experiment_id).await?;
                    }
                },
                _ = tick.tick() => {}
            }
            if last_draw.elapsed() < Duration::from_millis(250) {
                continue;
            }
            last_draw = Instant::now();
            let jobs = match api
                .list_jobs(v1::ListJobsRequest {
                    experiment_id,
                    state: String::new(),
                    limit: 0,
                })
                .await
            {
                Ok(r) => r.into_inner().jobs,
                // Drawn again at the next event or tick, on a live replica.
                Err(e) if client::is_transient(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            if tty {
                let shown: Vec<v1::Job> = if experiment_id == 0 {
                    jobs.iter()
                        .filter(|j| matches!(j.state.as_str(), "queued" | "running"))
                        .cloned()
                        .collect()
                } else {
                    jobs.clone()
                };
                let counts = count(&jobs);
                let recent = &metrics[metrics.len().saturating_sub(MAX_METRICS_SHOWN)..];
                let metrics_block = if recent.is_empty() {
                    String::new()
                } else {
                    format!("\nmetrics:\n  {}\n", recent.join("\n  "))
                };
                print!(
                    "\x1b[2J\x1b[H{}\n{counts}\n{metrics_block}",
                    super::jobs::job_table(&shown)
                );
            }
            if experiment_id != 0
                && !self.forever
                && !jobs.is_empty()
                && jobs
                    .iter()
                    .all(|j| matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled"))
            {
                let bad = jobs.iter().filter(|j| j.state != "succeeded").count();
                if !self.json {
                    println!("{}", count(&jobs));
                }
                if bad > 0 {
                    return Err(CliError::new(
                        Exit::JobsFailed,
                        format!("{bad} of {} jobs did not succeed", jobs.len()),
                    ));
                }
                return Ok(());
            }
        }
    }
}

/// The event stream, retried with backoff for up to a minute while the coordinator
/// (or every replica of it) is away.
async fn subscribe(
    api: &mut UserApi,
    experiment_id: i64,
) -> CliResult<tonic::Streaming<v1::Event>> {
    let mut backoff = Backoff::default();
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        match api.watch(v1::WatchRequest { experiment_id }).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e) if client::is_transient(&e) && Instant::now() < give_up => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Lines of eval metrics kept under the table.
const MAX_METRICS_SHOWN: usize = 12;

fn count(jobs: &[v1::Job]) -> String {
    let n = |s: &str| jobs.iter().filter(|j| j.state == s).count();
    format!(
        "{} jobs: {} queued, {} running, {} succeeded, {} failed, {} cancelled",
        jobs.len(),
        n("queued"),
        n("running"),
        n("succeeded"),
        n("failed"),
        n("cancelled")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind) -> v1::Event {
        v1::Event {
            job_id: 7,
            experiment_id: 1,
            at_ms: 3_723_000,
            kind: Some(kind),
        }
    }

    #[test]
    fn a_first_lease_is_attempt_1() {
        let line = describe(&event(Kind::State(v1::StateChanged {
            job_name: "train".into(),
            from: "queued".into(),
            to: "running".into(),
            reason: String::new(),
            worker_id: "w1".into(),
            // The store's counter after the lease: 1 for the first.
            attempt: 1,
        })))
        .unwrap();
        assert_eq!(
            line,
            "01:02:03 job 7 `train`: queued → running on w1 (attempt 1)"
        );
    }

    #[test]
    fn eval_metrics_get_a_line_of_their_own() {
        let metrics = r#"{"sample_job":"sample-lora","method":"lora","lpips_nearest":0.41234,"lpips_pairwise":0.5,"clip_score":23.456}"#;
        let line = describe(&event(Kind::Progress(v1::ProgressChanged {
            fraction: 0.5,
            message: "1/2 sets".into(),
            metrics_json: metrics.into(),
        })))
        .unwrap();
        assert_eq!(
            line,
            "01:02:03 job 7 metrics `sample-lora` (lora): LPIPS nearest 0.4123, mean 0.5000, CLIP score 23.46"
        );
        // Training progress keeps its own message.
        let train = describe(&event(Kind::Progress(v1::ProgressChanged {
            fraction: 0.5,
            message: "step 5/10".into(),
            metrics_json: r#"{"step":5,"loss":0.1}"#.into(),
        })))
        .unwrap();
        assert_eq!(train, "01:02:03 job 7 50% step 5/10");
    }
}
