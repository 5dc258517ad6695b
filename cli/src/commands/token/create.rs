use atelier_proto::v1;

use crate::error::CliResult;
use crate::output::print_json;
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Who holds it (a letter, then letters, digits, `.`, `_`, `@`, `-`): the owner of what it submits
    #[arg(long)]
    pub name: String,
    /// admin, user or worker
    #[arg(long, value_parser = ["admin", "user", "worker"])]
    pub role: String,
    /// Print JSON (the token and its details)
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let mut api = super::connect(&settings)?;
        let r = api
            .create_token(v1::CreateTokenRequest {
                name: self.name,
                role: self.role,
            })
            .await?
            .into_inner();
        let info = r.info.unwrap_or_default();
        if self.json {
            print_json(&serde_json::json!({
                "id": info.id,
                "name": info.name,
                "role": info.role,
                "created_at_ms": info.created_at_ms,
                "token": r.token,
            }));
        } else {
            eprintln!(
                "token {} `{}` ({}); it is shown once, keep it:",
                info.id, info.name, info.role
            );
            println!("{}", r.token);
        }
        Ok(())
    }
}
