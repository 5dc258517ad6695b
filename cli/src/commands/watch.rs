use std::io::IsTerminal;
use std::time::{Duration, Instant};

use atelier_proto::v1::{self, event::Kind};
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
                line.push_str(&format!(" on {} (attempt {})", s.worker_id, s.attempt + 1));
            }
            if !s.reason.is_empty() {
                line.push_str(&format!(": {}", s.reason));
            }
            Some(line)
        }
        Kind::Progress(p) => Some(format!(
            "{at} job {} {:.0}% {}",
            ev.job_id,
            p.fraction * 100.0,
            p.message
        )),
        Kind::Log(l) => Some(format!("{at} job {} | {}", ev.job_id, l.line)),
        Kind::Artifact(a) => Some(format!(
            "{at} job {} stored `{}` ({} bytes)",
            ev.job_id, a.name, a.size
        )),
    }
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
        let mut events = api
            .watch(v1::WatchRequest { experiment_id })
            .await?
            .into_inner();
        let mut last_draw = Instant::now() - Duration::from_secs(1);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        if self.json {
                            println!("{}", serde_json::to_string(&ev).unwrap_or_default());
                        } else if !tty {
                            if let Some(line) = describe(&ev) {
                                println!("{line}");
                            }
                        }
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(CliError::new(Exit::Unreachable, "the coordinator closed the event stream")),
                },
                _ = tick.tick() => {}
            }
            if last_draw.elapsed() < Duration::from_millis(250) {
                continue;
            }
            last_draw = Instant::now();
            let jobs = api
                .list_jobs(v1::ListJobsRequest {
                    experiment_id,
                    state: String::new(),
                    limit: 0,
                })
                .await?
                .into_inner()
                .jobs;
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
                print!(
                    "\x1b[2J\x1b[H{}\n{counts}\n",
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
