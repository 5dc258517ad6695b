//! `atelier token`: API tokens for users and workers, when the coordinator runs with
//! `auth = true` (admin tokens only). One file per sub-verb.

mod create;
mod list;
mod revoke;

use atelier_proto::v1::admin_client::AdminClient;
use atelier_worker::client::{self, Conn};

use crate::error::{CliError, CliResult};
use crate::settings::Settings;

#[derive(clap::Subcommand, Debug)]
pub enum Token {
    /// Make a token and print it, the only time it is shown
    ///
    /// Roles: `admin` may do everything, tokens included; `user` submits, lists,
    /// follows, steers and pulls its own experiments (its name owns them) and pushes
    /// trainsets; `worker` runs jobs (the worker service only). The coordinator keeps
    /// only the token's sha256. Give it to its holder as the setting `token` or
    /// `token_file` (`ATELIER_TOKEN`, `ATELIER_TOKEN_FILE`).
    Create(create::Args),
    /// List tokens: id, name, role, created, last used, revoked (never the secrets)
    List(list::Args),
    /// Revoke a token by name or id: refused from its next call on
    ///
    /// On the coordinator that revokes it at once; on other coordinators of the same
    /// database within 2 seconds. The name can then be given a new token, which owns
    /// the same experiments.
    Revoke(revoke::Args),
}

impl Token {
    pub async fn exec(self, settings: Settings) -> CliResult {
        match self {
            Token::Create(a) => a.exec(settings).await,
            Token::List(a) => a.exec(settings).await,
            Token::Revoke(a) => a.exec(settings).await,
        }
    }
}

fn connect(settings: &Settings) -> CliResult<AdminClient<Conn>> {
    let options = settings.connect_options().map_err(CliError::invalid)?;
    let channel = client::channel(&options).map_err(CliError::invalid)?;
    Ok(AdminClient::new(channel))
}
