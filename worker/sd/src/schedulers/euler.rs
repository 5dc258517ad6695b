//! `EulerDiscreteScheduler` (diffusers `schedulers/scheduling_euler_discrete.py`) with
//! `s_churn = 0` (deterministic), linear sigma interpolation, optional Karras sigmas.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde_json::Value;

use super::config::{
    karras_sigmas, np_arange, np_interp_arange, np_linspace, sigma_to_t, train_sigmas, BetaConfig,
    Fields,
};
use super::{
    check_steps, FinalSigmasType, PredictionType, Scheduler, SchedulerError, TimestepSpacing,
};

const NAME: &str = "EulerDiscreteScheduler";

/// The `EulerDiscreteScheduler` fields, with that class's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct EulerConfig {
    pub beta: BetaConfig,
    pub prediction_type: PredictionType,
    /// Default "linspace" (not DDIM's "leading").
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub final_sigmas_type: FinalSigmasType,
    /// Karras et al. sigmas between `sigma_min` and `sigma_max` (default: the schedule's).
    pub use_karras_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
}

impl EulerConfig {
    /// Reads the fields `EulerDiscreteScheduler.from_config` would take from `config`.
    pub fn from_json(config: &Value) -> Result<Self, SchedulerError> {
        let f = Fields::new(NAME, config)?;
        f.require_default("interpolation_type", Value::from("linear"), "linear")?;
        f.require_default("use_exponential_sigmas", Value::Bool(false), "false")?;
        f.require_default("use_beta_sigmas", Value::Bool(false), "false")?;
        let prediction_type = f.choice("prediction_type", PredictionType::Epsilon)?;
        if prediction_type == PredictionType::VPrediction {
            // "continuous" timesteps only change anything with v-prediction
            f.require_default("timestep_type", Value::from("discrete"), "discrete")?;
        }
        Ok(Self {
            beta: BetaConfig::read(&f)?,
            prediction_type,
            timestep_spacing: f.choice("timestep_spacing", TimestepSpacing::Linspace)?,
            steps_offset: f.usize_or("steps_offset", 0)?,
            final_sigmas_type: f.choice("final_sigmas_type", FinalSigmasType::Zero)?,
            use_karras_sigmas: f.bool_or("use_karras_sigmas", false)?,
            sigma_min: f.opt_f64("sigma_min")?,
            sigma_max: f.opt_f64("sigma_max")?,
        })
    }
}

/// Euler's method on the probability-flow ODE in sigma.
#[derive(Clone, Debug)]
pub struct Euler {
    config: EulerConfig,
    /// float32 values, as diffusers feeds them to the UNet, widened to f64.
    timesteps: Vec<f64>,
    /// One more than the timesteps: the sigma after the last step.
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
}

impl Euler {
    /// `EulerDiscreteScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: EulerConfig, n: usize) -> Result<Self, SchedulerError> {
        let t_train = config.beta.num_train_timesteps;
        check_steps(NAME, n, t_train)?;

        // 1. timesteps: numpy float64, stored as float32
        let mut timesteps: Vec<f32> = match config.timestep_spacing {
            TimestepSpacing::Linspace => np_linspace(0.0, (t_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|t| t as f32)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = t_train / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio) as f32 + config.steps_offset as f32)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                np_arange(t_train as f64, 0.0, -(t_train as f64 / n as f64))
                    .into_iter()
                    .map(|t| t.round_ties_even() as f32 - 1.0)
                    .collect()
            }
        };

        // 2. sigmas: float32 training sigmas, interpolated in float64
        let alphas_cumprod = config.beta.alphas_cumprod_for_sigmas();
        let train32 = train_sigmas(&alphas_cumprod);
        let train: Vec<f64> = train32.iter().copied().map(f64::from).collect();
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| np_interp_arange(t as f64, &train))
            .collect();

        // 3. Karras sigmas replace them, and the timesteps follow the sigmas
        if config.use_karras_sigmas {
            // (the last interpolated sigma: with the "trailing" quirk there are n + 1)
            let sigma_min = config.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(sigma_min, sigma_max, n);
            let log_sigmas: Vec<f32> = train32.iter().map(|s| s.ln()).collect();
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &log_sigmas) as f32)
                .collect();
        }

        // 4. back to float32, with the final sigma
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        sigmas.push(match config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => train[0] as f32,
        });

        // 5. init_noise_sigma: the largest sigma, or sqrt(max^2 + 1) for "leading"
        let max_sigma = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let init_noise_sigma = match config.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };

        Ok(Self {
            config,
            timesteps: timesteps.into_iter().map(f64::from).collect(),
            sigmas,
            init_noise_sigma,
        })
    }

    pub fn config(&self) -> &EulerConfig {
        &self.config
    }

    /// The sigmas, one per timestep plus the final one.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
}

impl<B: Backend> Scheduler<B> for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma as f64
    }

    fn scale_model_input(&self, sample: Tensor<B, 4>, step_index: usize) -> Tensor<B, 4> {
        let sigma = self.sigmas[step_index];
        sample.div_scalar((sigma * sigma + 1.0).sqrt())
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let sigma = self.sigmas[step_index];
        // s_churn = 0: gamma = 0, sigma_hat = sigma * (gamma + 1)
        let sigma_hat = sigma * 1.0;

        // 1. x0 from the model output
        let pred_original_sample = match self.config.prediction_type {
            PredictionType::Epsilon => sample.clone() - model_output.mul_scalar(sigma_hat),
            PredictionType::VPrediction => {
                let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
                model_output.mul_scalar(c_out) + sample.clone().div_scalar(sigma * sigma + 1.0)
            }
            PredictionType::Sample => model_output,
        };

        // 2. ODE derivative and Euler step
        let derivative = (sample.clone() - pred_original_sample).div_scalar(sigma_hat);
        let dt = self.sigmas[step_index + 1] - sigma_hat;
        sample + derivative.mul_scalar(dt)
    }
}
