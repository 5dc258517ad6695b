//! The crate's error type. Messages name the file, tensor or config field at fault.

use std::path::PathBuf;

pub type Result<T, E = SdError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SdError {
    #[error("failed to read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not valid JSON for {what}: {source}")]
    Json {
        path: PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("`{path}`: {message}")]
    Config { path: PathBuf, message: String },
    #[error("`{path}` is not a readable safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{}", weights_report(.component, .files, .problems))]
    Weights {
        component: String,
        files: Vec<PathBuf>,
        problems: Vec<String>,
    },
    #[error("model folder `{path}`: {message}")]
    ModelFolder { path: PathBuf, message: String },
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Scheduler(#[from] crate::schedulers::SchedulerError),
    #[error("{0}")]
    Invalid(String),
    /// The caller's `on_step` asked to stop (`train::trainer::train_until`).
    #[error("training stopped after step {step}, as asked")]
    Stopped { step: usize },
}

impl SdError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SdError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SdError::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Long lists are cut: a wrong config can make every tensor mismatch.
const MAX_LISTED: usize = 25;

fn weights_report(component: &str, files: &[PathBuf], problems: &[String]) -> String {
    let names: Vec<String> = files.iter().map(|f| format!("`{}`", f.display())).collect();
    let mut out = format!(
        "weights in {} do not fit the {component} built from its config ({} problem{}):",
        names.join(", "),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for problem in problems.iter().take(MAX_LISTED) {
        out.push_str("\n  ");
        out.push_str(problem);
    }
    if problems.len() > MAX_LISTED {
        out.push_str(&format!("\n  … and {} more", problems.len() - MAX_LISTED));
    }
    out
}
