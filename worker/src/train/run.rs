//! One training run on the job's backend.

use std::ops::ControlFlow;
use std::path::PathBuf;

use atelier_sd::backend::{Cpu, Cuda};
use atelier_sd::train::config::TrainConfig;
use atelier_sd::train::trainer::{train_until, StepReport, TrainOutcome};
use atelier_sd::SdError;
use burn::backend::Autodiff;

/// Where the run computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// The CUDA device of this index (the GPU the job was given).
    Cuda(usize),
}

#[derive(Debug, Clone)]
pub struct RunSpec {
    pub model: PathBuf,
    /// A folder of images and captions.
    pub trainset: PathBuf,
    pub out: PathBuf,
    /// A checkpoint folder to continue from.
    pub resume: Option<PathBuf>,
    pub config: TrainConfig,
    pub device: Device,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sd(#[from] SdError),
    /// The CUDA device cannot be used on this worker.
    #[error("{0}")]
    Device(String),
}

/// Trains; `stop` is asked after every step (and its checkpoint), and `on_step`
/// hears each one. A stop ends the run with `SdError::Stopped`.
pub fn run(
    spec: &RunSpec,
    stop: &dyn Fn() -> bool,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<TrainOutcome, RunError> {
    let hook = |report: &StepReport| {
        on_step(report);
        if stop() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let resume = spec.resume.as_deref();
    let outcome = match spec.device {
        Device::Cpu => train_until::<Autodiff<Cpu>>(
            &spec.model,
            &spec.trainset,
            &spec.config,
            &spec.out,
            resume,
            &Default::default(),
            hook,
        )?,
        Device::Cuda(index) => {
            let device = atelier_sd::backend::cuda_device(index).map_err(RunError::Device)?;
            train_until::<Autodiff<Cuda>>(
                &spec.model,
                &spec.trainset,
                &spec.config,
                &spec.out,
                resume,
                &device,
                hook,
            )?
        }
    };
    Ok(outcome)
}
