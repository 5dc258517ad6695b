//! `DDIMScheduler` (diffusers `schedulers/scheduling_ddim.py`), deterministic: eta = 0.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde_json::Value;

use super::config::{np_arange, np_linspace, py_index, BetaConfig, Fields};
use super::{check_steps, PredictionType, Scheduler, SchedulerError, TimestepSpacing};

const NAME: &str = "DDIMScheduler";

/// The `DDIMScheduler` fields, with that class's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct DdimConfig {
    pub beta: BetaConfig,
    /// Default true: SD configs set it to false.
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// Default true; SD 1.5 uses false (the last step goes to `alphas_cumprod[0]`).
    pub set_alpha_to_one: bool,
    pub steps_offset: usize,
    pub prediction_type: PredictionType,
    /// Default "leading".
    pub timestep_spacing: TimestepSpacing,
}

impl DdimConfig {
    /// Reads the fields `DDIMScheduler.from_config` would take from `config`.
    pub fn from_json(config: &Value) -> Result<Self, SchedulerError> {
        let f = Fields::new(NAME, config)?;
        f.require_default("thresholding", Value::Bool(false), "false")?;
        Ok(Self {
            beta: BetaConfig::read(&f)?,
            clip_sample: f.bool_or("clip_sample", true)?,
            clip_sample_range: f.f64_or("clip_sample_range", 1.0)?,
            set_alpha_to_one: f.bool_or("set_alpha_to_one", true)?,
            steps_offset: f.usize_or("steps_offset", 0)?,
            prediction_type: f.choice("prediction_type", PredictionType::Epsilon)?,
            timestep_spacing: f.choice("timestep_spacing", TimestepSpacing::Leading)?,
        })
    }
}

/// DDIM with eta = 0.
#[derive(Clone, Debug)]
pub struct Ddim {
    config: DdimConfig,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    num_inference_steps: usize,
    /// Integer timesteps; may end in -1 (see [`ddim_timesteps`]).
    timesteps_int: Vec<i64>,
    timesteps: Vec<f64>,
}

impl Ddim {
    /// `DDIMScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: DdimConfig, num_inference_steps: usize) -> Result<Self, SchedulerError> {
        let t_train = config.beta.num_train_timesteps;
        check_steps(NAME, num_inference_steps, t_train)?;
        let alphas_cumprod = config.beta.alphas_cumprod();
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let timesteps_int = ddim_timesteps(
            config.timestep_spacing,
            t_train,
            num_inference_steps,
            config.steps_offset,
        );
        if let Some(&t) = timesteps_int
            .iter()
            .find(|&&t| t >= t_train as i64 || t < -1)
        {
            // diffusers raises an IndexError in `step` here (e.g. "leading" with
            // steps_offset 1 and num_inference_steps == num_train_timesteps).
            return Err(SchedulerError::InvalidConfig {
                scheduler: NAME,
                message: format!(
                    "timestep {t} is out of range for {t_train} training timesteps \
                     ({num_inference_steps} steps, steps_offset {})",
                    config.steps_offset
                ),
            });
        }
        let timesteps = timesteps_int.iter().map(|&t| t as f64).collect();
        Ok(Self {
            config,
            alphas_cumprod,
            final_alpha_cumprod,
            num_inference_steps,
            timesteps_int,
            timesteps,
        })
    }

    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }
}

/// `set_timesteps` of DDIM (and DDPM). "trailing" is `round(arange(T, 0, -T / n)) - 1`,
/// and numpy's float `arange` sometimes has one element more than `n` (n = 61, 103, 121,
/// ...): the schedule then ends in timestep -1, as in diffusers.
pub(crate) fn ddim_timesteps(
    spacing: TimestepSpacing,
    t_train: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<i64> {
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (t_train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = t_train / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => np_arange(t_train as f64, 0.0, -(t_train as f64 / n as f64))
            .into_iter()
            .map(|t| t.round_ties_even() as i64 - 1)
            .collect(),
    }
}

impl<B: Backend> Scheduler<B> for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: Tensor<B, 4>, _step_index: usize) -> Tensor<B, 4> {
        sample
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let timestep = self.timesteps_int[step_index];
        // 1. previous timestep: always `T // n` back, whatever the spacing, as in diffusers
        // (so for "linspace" and "trailing" it is not the next timestep of the list).
        let prev_timestep =
            timestep - (self.config.beta.num_train_timesteps / self.num_inference_steps) as i64;

        // 2. alphas and betas (float32 scalars, as torch's 0-dim tensors)
        let alpha_prod_t = py_index(&self.alphas_cumprod, timestep);
        let alpha_prod_t_prev = if prev_timestep >= 0 {
            self.alphas_cumprod[prev_timestep as usize]
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0 - alpha_prod_t;

        // 3. predicted x0 and epsilon
        let (pred_original_sample, pred_epsilon) = match self.config.prediction_type {
            PredictionType::Epsilon => (
                (sample - model_output.clone().mul_scalar(beta_prod_t.sqrt()))
                    .div_scalar(alpha_prod_t.sqrt()),
                model_output,
            ),
            PredictionType::Sample => {
                let eps = (sample - model_output.clone().mul_scalar(alpha_prod_t.sqrt()))
                    .div_scalar(beta_prod_t.sqrt());
                (model_output, eps)
            }
            PredictionType::VPrediction => (
                sample.clone().mul_scalar(alpha_prod_t.sqrt())
                    - model_output.clone().mul_scalar(beta_prod_t.sqrt()),
                model_output.mul_scalar(alpha_prod_t.sqrt())
                    + sample.mul_scalar(beta_prod_t.sqrt()),
            ),
        };

        // 4. clip x0
        let pred_original_sample = if self.config.clip_sample {
            let r = self.config.clip_sample_range as f32;
            pred_original_sample.clamp(-r, r)
        } else {
            pred_original_sample
        };

        // 5. sigma_t = eta * sqrt(variance) with eta = 0, kept so NaNs propagate as in diffusers
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        let std_dev_t = 0.0f32 * variance.sqrt();

        // 6. x_{t-1} = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma_t^2) eps
        let direction =
            pred_epsilon.mul_scalar((1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t).sqrt());
        pred_original_sample.mul_scalar(alpha_prod_t_prev.sqrt()) + direction
    }
}
