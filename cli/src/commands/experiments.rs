use atelier_proto::v1;

use crate::error::CliResult;
use crate::output::{ago, print_json, table};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let mut api = super::connect(&settings)?;
        let exps = api
            .list_experiments(v1::ListExperimentsRequest::default())
            .await?
            .into_inner()
            .experiments;
        if self.json {
            print_json(&exps);
            return Ok(());
        }
        let mut t = table(&[
            "ID",
            "NAME",
            "CREATED",
            "QUEUED",
            "RUNNING",
            "SUCCEEDED",
            "FAILED",
            "CANCELLED",
        ]);
        for e in &exps {
            t.add_row(vec![
                format!("e{}", e.id),
                e.name.clone(),
                ago(e.created_at_ms),
                e.queued.to_string(),
                e.running.to_string(),
                e.succeeded.to_string(),
                e.failed.to_string(),
                e.cancelled.to_string(),
            ]);
        }
        println!("{t}");
        Ok(())
    }
}
