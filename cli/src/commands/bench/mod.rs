//! `atelier bench`: commands that measure and print figures (never tested for speed).
//!
//! - [`artifacts`]: a large checkpoint up and down through the artifact store.
//! - [`dispatch`]: how fast the job system moves no-op jobs.
//! - [`unet`]: the UNet forward on the CPU, atelier (burn) beside PyTorch (diffusers).

mod artifacts;
mod dispatch;
mod unet;

use crate::error::CliResult;
use crate::settings::Settings;

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// Upload a generated checkpoint through the worker's path and download it through
    /// `pull`'s, on the configured artifact store; print MB/s and peak RSS per size
    Artifacts(artifacts::ArtifactsArgs),
    /// Submit, lease and complete no-op jobs; print throughput and latency
    Dispatch(dispatch::DispatchArgs),
    /// Time the UNet forward on the CPU beside PyTorch's (diffusers) on the same weights
    /// and inputs; print the ratio and the largest output difference
    Unet(unet::UnetArgs),
}

impl Bench {
    pub async fn exec(self, settings: Settings) -> CliResult {
        match self {
            Bench::Artifacts(a) => a.exec(settings).await,
            Bench::Dispatch(a) => a.exec(settings).await,
            Bench::Unet(a) => a.exec(settings).await,
        }
    }
}

/// The value at fraction `p` of `sorted` (nearest rank); NaN when empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}
