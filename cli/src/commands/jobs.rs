use atelier_proto::v1;

use crate::error::CliResult;
use crate::output::{duration_ms, now_ms, print_json, shorten, table};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this experiment (`e3` or a name)
    #[arg(long, short)]
    pub experiment: Option<String>,
    /// Only jobs in this state
    #[arg(long, value_parser = ["queued", "running", "succeeded", "failed", "cancelled"])]
    pub state: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// The job table shared by `jobs` and `watch`.
pub fn job_table(jobs: &[v1::Job]) -> comfy_table::Table {
    let mut t = table(&[
        "ID",
        "EXPERIMENT",
        "NAME",
        "KIND",
        "STATE",
        "PRI",
        "TRY",
        "PROGRESS",
        "WORKER",
        "TIME",
        "REASON",
    ]);
    let now = now_ms();
    for j in jobs {
        let time = match (j.started_at_ms, j.finished_at_ms) {
            (0, _) => format!("queued {}", duration_ms(now - j.created_at_ms)),
            (s, 0) => duration_ms(now - s),
            (s, f) => duration_ms(f - s),
        };
        let progress = if j.state == "running" {
            format!(
                "{:>3.0}% {}",
                j.progress * 100.0,
                shorten(&j.progress_message, 20)
            )
        } else {
            String::new()
        };
        t.add_row(vec![
            j.id.to_string(),
            j.experiment_name.clone(),
            j.name.clone(),
            j.kind.clone(),
            j.state.clone(),
            j.priority.to_string(),
            format!("{}/{}", j.attempt, j.max_attempts),
            progress,
            j.worker_id.clone(),
            time,
            shorten(&j.reason, 60),
        ]);
    }
    t
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let mut api = super::connect(&settings)?;
        let experiment_id = match &self.experiment {
            Some(e) => crate::refs::experiment_id(&mut api, e).await?,
            None => 0,
        };
        let jobs = api
            .list_jobs(v1::ListJobsRequest {
                experiment_id,
                state: self.state.clone().unwrap_or_default(),
                limit: 0,
            })
            .await?
            .into_inner()
            .jobs;
        if self.json {
            print_json(&jobs);
        } else {
            println!("{}", job_table(&jobs));
        }
        Ok(())
    }
}
