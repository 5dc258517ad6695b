//! Noise schedulers, matching diffusers 0.42.1 value for value.
//!
//! # Layout
//! - `config.rs`: reading `scheduler_config.json` with `from_config` semantics, the beta
//!   schedule, and the numpy/torch routines whose rounding the schedules depend on.
//! - `ddpm.rs`: [`Ddpm`], the training-time forward process (`add_noise`, `velocity`).
//! - `ddim.rs`: [`Ddim`], `DDIMScheduler` with eta = 0.
//! - `euler.rs`: [`Euler`], `EulerDiscreteScheduler` (s_churn = 0).
//! - `dpmpp_2m.rs`: [`DpmPlusPlus2M`], `DPMSolverMultistepScheduler` with `dpmsolver++`.
//!
//! Every scheduler computes its schedule as diffusers does (float32 torch tensors for
//! betas and `alphas_cumprod`, float64 numpy for timesteps and interpolated sigmas,
//! float32 again for the per-step coefficients), so the outputs agree with diffusers to
//! float32 rounding; `tests/schedulers.rs` checks them against recorded trajectories.
//! Karras sigmas ("DPM++ 2M Karras") are the config's `use_karras_sigmas: true`.
//!
//! diffusers behaviours kept on purpose, so that the same settings give the same images:
//! - "trailing" spacing computes `arange(T, 0, -T / n)` in floating point, which for some
//!   n (61, 103, 121, ...) has n + 1 elements: the schedule ends in timestep -1 (DDIM then
//!   reads `alphas_cumprod[-1]`, the last one, as Python indexing does).
//! - DDIM's previous timestep is always `t - T / n` (integer division), also for
//!   "linspace" and "trailing" where that is not the next timestep of the schedule.
//!
//! ```ignore
//! let mut scheduler = build_scheduler::<B>(SchedulerKind::Euler, &config, 30)?;
//! let mut latents = noise * scheduler.init_noise_sigma();
//! for i in 0..scheduler.timesteps().len() {
//!     let t = scheduler.timesteps()[i];
//!     let input = scheduler.scale_model_input(latents.clone(), i);
//!     let eps = unet.forward(input, t, &text);
//!     latents = scheduler.step(eps, i, latents);
//! }
//! ```

mod config;
mod ddim;
mod ddpm;
mod dpmpp_2m;
mod euler;

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

pub use config::{BetaConfig, BetaSchedule, FinalSigmasType, PredictionType, TimestepSpacing};
pub use ddim::{Ddim, DdimConfig};
pub use ddpm::{Ddpm, DdpmConfig, VarianceType};
pub use dpmpp_2m::{DpmPlusPlus2M, DpmSolverConfig, SolverType};
pub use euler::{Euler, EulerConfig};

/// An inference scheduler: the timesteps to run the UNet at and the update between them.
///
/// `step_index` is the position in [`Scheduler::timesteps`]; diffusers derives it from
/// the timestep value instead, which is the same thing for every schedule built here.
pub trait Scheduler<B: Backend>: Send {
    /// Timesteps fed to the UNet, in order (f64 because Euler's are fractional).
    fn timesteps(&self) -> &[f64];
    /// Standard deviation of the initial noise: multiply the `N(0, 1)` latents by it.
    fn init_noise_sigma(&self) -> f64;
    /// The UNet input for the sample at `step_index` (Euler divides by `sqrt(sigma^2 + 1)`).
    fn scale_model_input(&self, sample: Tensor<B, 4>, step_index: usize) -> Tensor<B, 4>;
    /// The sample for step `step_index + 1` from the UNet output at `step_index`.
    ///
    /// Multistep schedulers keep earlier outputs: call it once per step, in order; a call
    /// that does not follow the previous step index starts a new trajectory.
    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4>;
}

/// The inference schedulers a user can pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `DDIMScheduler`, deterministic (eta = 0).
    Ddim,
    /// `EulerDiscreteScheduler`.
    Euler,
    /// `DPMSolverMultistepScheduler`, DPM-Solver++ 2M.
    DpmPlusPlus2M,
}

impl SchedulerKind {
    /// The name accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Euler => "euler",
            Self::DpmPlusPlus2M => "dpmpp2m",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SchedulerKind {
    type Err = SchedulerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ddim" => Ok(Self::Ddim),
            "euler" => Ok(Self::Euler),
            "dpmpp2m" => Ok(Self::DpmPlusPlus2M),
            other => Err(SchedulerError::UnknownKind(other.to_string())),
        }
    }
}

/// Errors from reading a scheduler config or choosing a scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("{scheduler}: the scheduler config must be a JSON object, got {found}")]
    NotAnObject {
        scheduler: &'static str,
        found: &'static str,
    },
    #[error("{scheduler}: `{field}` must be {expected}, got {value}")]
    InvalidField {
        scheduler: &'static str,
        field: &'static str,
        expected: &'static str,
        value: String,
    },
    #[error("{scheduler}: unsupported `{field}` value {value} (supported: {supported})")]
    Unsupported {
        scheduler: &'static str,
        field: &'static str,
        value: String,
        supported: &'static str,
    },
    #[error("{scheduler}: {message}")]
    InvalidConfig {
        scheduler: &'static str,
        message: String,
    },
    #[error("{scheduler}: `num_inference_steps` must be between 1 and {max} (num_train_timesteps), got {got}")]
    InvalidSteps {
        scheduler: &'static str,
        got: usize,
        max: usize,
    },
    #[error("unknown scheduler `{0}` (expected ddim, euler or dpmpp2m)")]
    UnknownKind(String),
}

/// Builds the scheduler `kind` from a diffusers scheduler config (any class's: it is read
/// with `from_config` semantics) and sets its timesteps for `num_inference_steps`.
pub fn build_scheduler<B: Backend>(
    kind: SchedulerKind,
    config: &serde_json::Value,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler<B>>, SchedulerError> {
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(Ddim::new(
            DdimConfig::from_json(config)?,
            num_inference_steps,
        )?),
        SchedulerKind::Euler => Box::new(Euler::new(
            EulerConfig::from_json(config)?,
            num_inference_steps,
        )?),
        SchedulerKind::DpmPlusPlus2M => Box::new(DpmPlusPlus2M::<B>::new(
            DpmSolverConfig::from_json(config)?,
            num_inference_steps,
        )?),
    })
}

/// Shared check: diffusers refuses more inference steps than training steps (DDIM) or
/// misbehaves (the others); zero steps divides by zero.
fn check_steps(scheduler: &'static str, got: usize, max: usize) -> Result<(), SchedulerError> {
    if got == 0 || got > max {
        Err(SchedulerError::InvalidSteps {
            scheduler,
            got,
            max,
        })
    } else {
        Ok(())
    }
}
