//! How commands name jobs and experiments: a job by its number (`42`), an
//! experiment by `e<number>` (`e3`) or by name (the latest with that name).

use atelier_proto::v1;

use crate::error::{CliError, CliResult, Exit};
use atelier_worker::client::UserApi;

pub fn job_id(s: &str) -> CliResult<i64> {
    s.trim_start_matches('j')
        .parse()
        .map_err(|_| CliError::invalid(format!("`{s}` is not a job number (e.g. 42)")))
}

/// An experiment reference: `e3`, `3`, or a name.
pub async fn experiment_id(api: &mut UserApi, s: &str) -> CliResult<i64> {
    if let Some(n) = s.strip_prefix('e').and_then(|n| n.parse().ok()) {
        return Ok(n);
    }
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    let found = api
        .list_experiments(v1::ListExperimentsRequest { name: s.into() })
        .await?
        .into_inner()
        .experiments;
    found
        .iter()
        .map(|e| e.id)
        .max()
        .ok_or_else(|| CliError::new(Exit::NotFound, format!("no experiment is named `{s}`")))
}

/// `cancel`/`retry`/`priority` take a job number or an experiment (`e3` or a name).
pub async fn target(api: &mut UserApi, s: &str) -> CliResult<v1::target_request::Target> {
    if let Ok(id) = s.parse::<i64>() {
        return Ok(v1::target_request::Target::JobId(id));
    }
    if let Some(id) = s.strip_prefix('j').and_then(|n| n.parse().ok()) {
        return Ok(v1::target_request::Target::JobId(id));
    }
    Ok(v1::target_request::Target::ExperimentId(
        experiment_id(api, s).await?,
    ))
}
