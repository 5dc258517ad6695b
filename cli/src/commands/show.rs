use atelier_proto::v1;

use crate::error::CliResult;
use crate::output::{ago, bytes, duration_ms, print_json, table};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Job number
    pub job: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let id = crate::refs::job_id(&self.job)?;
        let mut api = super::connect(&settings)?;
        let r = api
            .get_job(v1::GetJobRequest { job_id: id })
            .await?
            .into_inner();
        if self.json {
            print_json(&r);
            return Ok(());
        }
        let j = r.job.unwrap_or_default();
        println!(
            "job {} `{}` of experiment e{} `{}`",
            j.id, j.name, j.experiment_id, j.experiment_name
        );
        println!("  kind       {}", j.kind);
        println!("  state      {}", j.state);
        if !r.waiting_reason.is_empty() {
            println!("  waiting    {}", r.waiting_reason);
        }
        if !j.reason.is_empty() {
            println!("  reason     {}", j.reason);
        }
        println!("  priority   {}", j.priority);
        println!("  attempt    {} of {}", j.attempt, j.max_attempts);
        let req = j.requires.clone().unwrap_or_default();
        let mut labels: Vec<String> = req.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        println!(
            "  requires   {} GPU, {} GB GPU memory, backend {}{}",
            req.gpus,
            req.gpu_mem_gb,
            req.backend,
            if labels.is_empty() {
                String::new()
            } else {
                format!(", labels {}", labels.join(","))
            }
        );
        if !r.needs_names.is_empty() {
            let needs: Vec<String> = j
                .needs
                .iter()
                .zip(&r.needs_names)
                .map(|(i, n)| format!("{i} `{n}`"))
                .collect();
            println!("  needs      {}", needs.join(", "));
        }
        if j.state == "running" {
            println!("  worker     {} (GPUs {:?})", j.worker_id, j.gpu_indexes);
            println!(
                "  progress   {:.0}% {}",
                j.progress * 100.0,
                j.progress_message
            );
        }
        println!("  params     {}", j.params_json);
        if !j.sweep_point_json.is_empty() {
            println!("  sweep      {}", j.sweep_point_json);
        }
        if !j.result_json.is_empty() {
            println!("  result     {}", j.result_json);
        }
        println!("  created    {}", ago(j.created_at_ms));
        if !r.attempts.is_empty() {
            let mut t = table(&[
                "TOKEN", "TRY", "WORKER", "STARTED", "TOOK", "OUTCOME", "REASON",
            ]);
            for a in &r.attempts {
                let took = if a.ended_at_ms > 0 {
                    duration_ms(a.ended_at_ms - a.started_at_ms)
                } else {
                    "-".into()
                };
                t.add_row(vec![
                    a.lease_token.to_string(),
                    a.attempt.to_string(),
                    a.worker_id.clone(),
                    ago(a.started_at_ms),
                    took,
                    a.outcome.clone(),
                    a.reason.clone(),
                ]);
            }
            println!("attempts\n{t}");
        }
        if !r.artifacts.is_empty() {
            let mut t = table(&["ID", "NAME", "SIZE", "SHA256"]);
            for a in &r.artifacts {
                t.add_row(vec![
                    a.id.to_string(),
                    a.name.clone(),
                    bytes(a.size),
                    a.sha256.clone(),
                ]);
            }
            println!("artifacts (atelier pull {})\n{t}", j.id);
        }
        Ok(())
    }
}
