//! The atelier worker: an agent that leases jobs from a coordinator and runs them.
//!
//! # Layout
//! - `agent`: register, lease, heartbeat, run, report; reconnects with backoff.
//! - `client`: the gRPC channel and which errors are worth a retry.
//! - `connect`: the coordinator's addresses, token and CA; TLS for `https://`.
//! - `failover`: one connection over a list of coordinator replicas.
//! - `socket`: the client's TCP connections, whose writes cannot raise SIGPIPE.
//! - `resources`: GPUs (via `nvidia-smi`) and host name.
//! - `telemetry`: the worker's Prometheus metrics (running jobs, step rate and
//!   loss, GPU memory).
//! - `jobs`: the job kinds and the context a running job gets.
//! - `prepare`: turns a folder of images into a packed dataset (the `prepare` kind),
//!   and back into a folder for training.
//! - `train`: a training run on the job's backend and its checkpoints as artifacts
//!   (the `train` kind).
//! - `sample`: images from a model with a trained adapter, from fixed seeds (the
//!   `sample` kind).
//! - `eval`: LPIPS and CLIP score of sample sets (the `eval` kind).
//! - `trainset`: trainset folders and their `trainset.toml`: import, check, survey
//!   (the `atelier trainset` commands).

pub mod agent;
pub mod client;
pub mod connect;
pub mod disk;
pub mod eval;
pub mod failover;
pub mod jobs;
pub mod prepare;
pub mod resources;
pub mod sample;
mod socket;
pub mod telemetry;
pub mod train;
pub mod trainset;
