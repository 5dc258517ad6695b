use atelier_proto::v1;
use tokio_stream::StreamExt;

use crate::error::CliResult;
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Job number
    pub job: String,
    /// Keep printing new lines until the job ends
    #[arg(long, short)]
    pub follow: bool,
    /// Print JSON lines
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let job_id = crate::refs::job_id(&self.job)?;
        let mut api = super::connect(&settings)?;
        let mut lines = api
            .logs(v1::LogsRequest {
                job_id,
                follow: self.follow,
                after_seq: 0,
            })
            .await?
            .into_inner();
        while let Some(line) = lines.next().await {
            let line = line?;
            if self.json {
                println!("{}", serde_json::to_string(&line).unwrap_or_default());
            } else {
                println!("[attempt {}] {}", line.attempt, line.line);
            }
        }
        Ok(())
    }
}
