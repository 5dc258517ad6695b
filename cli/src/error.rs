//! CLI errors and the exit codes scripts can rely on (listed in the README).

use std::fmt;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Anything else.
    Failure = 1,
    /// Invalid input: experiment file, arguments, settings.
    Invalid = 3,
    /// No such job, experiment or artifact.
    NotFound = 4,
    /// The coordinator cannot be reached.
    Unreachable = 5,
    /// The request conflicts with the job's state (cancel a finished job, a stale lease).
    Conflict = 6,
    /// `watch EXP` ended with jobs that did not succeed; `pull` found a hash mismatch.
    JobsFailed = 7,
}

#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Invalid, message)
    }
    pub fn failure(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Failure, message)
    }
    pub fn code(&self) -> ExitCode {
        ExitCode::from(self.exit as u8)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> CliError {
        use tonic::Code;
        let exit = match s.code() {
            Code::NotFound => Exit::NotFound,
            Code::InvalidArgument => Exit::Invalid,
            Code::FailedPrecondition => Exit::Conflict,
            Code::Unavailable => Exit::Unreachable,
            _ => Exit::Failure,
        };
        let message = if s.code() == Code::Unavailable {
            format!("cannot reach the coordinator: {}", s.message())
        } else {
            s.message().to_string()
        };
        CliError { exit, message }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        CliError::failure(e.to_string())
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;
