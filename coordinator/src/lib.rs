//! The atelier coordinator: keeps experiments, jobs, workers, artifacts and logs in a
//! SQL store and hands jobs to workers under leases.
//!
//! # Layout
//! - `config`: what a coordinator needs to start (database, Redis, artifact directory, lease timing).
//! - `spec`: experiment files (YAML) parsed, sweeps expanded, validated before anything is written.
//! - `store`: the SQL layer (PostgreSQL or SQLite through one code path), a transaction per transition.
//! - `scheduler`: pure placement and "why is this job still queued" logic, tested without I/O.
//! - `events`: job events published in-process or through Redis pub/sub.
//! - `artifacts`: content-addressed blob storage behind a trait: a local directory or an
//!   S3-compatible bucket.
//! - `service`: the gRPC handlers (`Atelier` for users, `WorkerApi` for workers).
//! - `reaper`: re-queues jobs whose lease expired.
//! - `metrics`: Prometheus metrics (jobs and workers from the database at each scrape).
//! - `tls`: the gRPC port's certificate and key, read from PEM files.
//! - `auth`: tokens and roles, the layer that checks them, the first admin token.
//! - `server`: wires it all and serves gRPC.

pub mod artifacts;
pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod metrics;
pub mod reaper;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod spec;
pub mod store;
pub mod tls;

pub use config::CoordinatorConfig;
pub use error::{Error, Result};
