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
        let tokens = api
            .list_tokens(v1::ListTokensRequest {})
            .await?
            .into_inner()
            .tokens;
        if self.json {
            print_json(&tokens);
            return Ok(());
        }
        let mut t = table(&["ID", "NAME", "ROLE", "CREATED", "LAST USED", "REVOKED"]);
        let when = |ms: i64| if ms == 0 { "-".to_string() } else { ago(ms) };
        for tok in &tokens {
            t.add_row(vec![
                tok.id.to_string(),
                tok.name.clone(),
                tok.role.clone(),
                ago(tok.created_at_ms),
                when(tok.last_used_at_ms),
                when(tok.revoked_at_ms),
            ]);
        }
        println!("{t}");
        Ok(())
    }
}
