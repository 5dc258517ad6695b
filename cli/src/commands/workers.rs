use atelier_proto::v1;

use crate::error::CliResult;
use crate::output::{ago, print_json, table};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also list workers not heard from lately
    #[arg(long)]
    pub all: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let mut api = super::connect(&settings)?;
        let workers: Vec<v1::Worker> = api
            .list_workers(v1::ListWorkersRequest {})
            .await?
            .into_inner()
            .workers
            .into_iter()
            .filter(|w| self.all || w.online)
            .collect();
        if self.json {
            print_json(&workers);
            return Ok(());
        }
        let mut t = table(&[
            "ID",
            "NAME",
            "ONLINE",
            "BACKEND",
            "GPUS",
            "CPU SLOTS",
            "LABELS",
            "RUNNING",
            "SEEN",
        ]);
        for w in &workers {
            let gpus: Vec<String> = w
                .gpus
                .iter()
                .map(|g| format!("{}:{} ({} GB)", g.index, g.name, g.memory_gb))
                .collect();
            let mut labels: Vec<String> =
                w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            t.add_row(vec![
                w.id.clone(),
                w.name.clone(),
                if w.online { "yes".into() } else { "no".into() },
                w.backend.clone(),
                gpus.join(", "),
                w.cpu_slots.to_string(),
                labels.join(","),
                w.running_jobs
                    .iter()
                    .map(|j| j.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                ago(w.last_seen_ms),
            ]);
        }
        println!("{t}");
        Ok(())
    }
}
