use atelier_proto::v1;

use crate::error::CliResult;
use crate::output::print_json;
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A job number, or an experiment (`e3` or its name)
    pub target: String,
    /// New priority; higher runs first
    #[arg(allow_hyphen_values = true)]
    pub priority: i64,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let mut api = super::connect(&settings)?;
        let target = crate::refs::target(&mut api, &self.target).await?;
        let r = api
            .set_priority(v1::SetPriorityRequest {
                target: Some(v1::TargetRequest {
                    target: Some(target),
                    reason: String::new(),
                }),
                priority: self.priority,
            })
            .await?
            .into_inner();
        if self.json {
            print_json(&serde_json::json!({ "changed": r.job_ids, "priority": self.priority }));
        } else {
            println!("priority {} for {} job(s)", self.priority, r.job_ids.len());
        }
        Ok(())
    }
}
