use atelier_proto::v1;

use crate::error::CliResult;
use crate::output::print_json;
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A job number, or an experiment (`e3` or its name): its failed and cancelled jobs
    pub target: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let mut api = super::connect(&settings)?;
        let target = crate::refs::target(&mut api, &self.target).await?;
        let r = api
            .retry(v1::TargetRequest {
                target: Some(target),
                reason: String::new(),
            })
            .await?
            .into_inner();
        if self.json {
            print_json(&serde_json::json!({ "requeued": r.job_ids }));
        } else {
            println!("re-queued {} job(s)", r.job_ids.len());
        }
        Ok(())
    }
}
