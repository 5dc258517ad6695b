use atelier_proto::v1::{self, revoke_token_request::Which};

use crate::error::CliResult;
use crate::output::print_json;
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The token's name (its live token) or its id (a number, see `atelier token list`)
    pub token: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let mut api = super::connect(&settings)?;
        // Names start with a letter: a number is an id.
        let which = match self.token.parse::<i64>() {
            Ok(id) => Which::Id(id),
            Err(_) => Which::Name(self.token),
        };
        let info = api
            .revoke_token(v1::RevokeTokenRequest { which: Some(which) })
            .await?
            .into_inner()
            .info
            .unwrap_or_default();
        if self.json {
            print_json(&info);
        } else {
            println!("revoked token {} `{}` ({})", info.id, info.name, info.role);
        }
        Ok(())
    }
}
