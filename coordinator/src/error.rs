//! The coordinator's error type and its mapping onto gRPC status codes.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    /// A write from a worker whose lease is no longer the job's current one.
    #[error("{0}")]
    StaleLease(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("artifact store: {0}")]
    Io(#[from] std::io::Error),
    #[error("events: {0}")]
    Events(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match &e {
            Error::NotFound(m) => Status::not_found(m.clone()),
            Error::StaleLease(m) => Status::failed_precondition(m.clone()),
            Error::Invalid(m) => Status::invalid_argument(m.clone()),
            Error::Conflict(m) => Status::failed_precondition(m.clone()),
            Error::Db(_) | Error::Migrate(_) | Error::Io(_) | Error::Events(_) => {
                tracing::error!("{e}");
                Status::internal(e.to_string())
            }
        }
    }
}
