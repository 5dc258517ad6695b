//! Log lines on stderr, as text or (`log_format = "json"`) one JSON object per line:
//! the event's fields at the top level (`job`, `worker`, …), the spans it happened in
//! under `spans` (a worker's lines carry its id there, a job's lines the job's).

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use crate::error::{CliError, CliResult};

/// Set by [`init`] for `json`: then even the services' start-up lines are JSON.
static JSON: AtomicBool = AtomicBool::new(false);

/// A service's start-up line ("listening on …"): plain on stderr, or an `info` log
/// line when logs are JSON, so that every line a service writes parses.
pub fn banner(line: impl std::fmt::Display) {
    if JSON.load(Ordering::Relaxed) {
        tracing::info!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`.
pub fn init(format: &str, default_filter: &str) -> CliResult {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "text" => fmt.init(),
        "json" => {
            JSON.store(true, Ordering::Relaxed);
            fmt.json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .init()
        }
        other => {
            return Err(CliError::invalid(format!(
                "log_format `{other}`: expected text or json"
            )))
        }
    }
    Ok(())
}
