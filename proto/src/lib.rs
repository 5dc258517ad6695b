//! atelier's API: the gRPC services (generated from `proto/atelier/v1/*.proto`) and the
//! parameter types of each job kind.
//!
//! # Layout
//! - `v1`: generated messages, the `Atelier` service (users) and `WorkerApi` (workers).
//! - `kinds`: the `params:` of each job kind, validated by the coordinator, read by workers.
//! - `artifact_name`: what an artifact may be called (checked on upload and on pull).
//! - `trainset_ref`: `pushed:NAME` and `sha256:HEX`, trainsets in the artifact store.

pub mod artifact_name;
pub mod kinds;
pub mod trainset_ref;

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("atelier.v1");
}
