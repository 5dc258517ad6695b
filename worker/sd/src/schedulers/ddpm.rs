//! `DDPMScheduler` (diffusers `schedulers/scheduling_ddpm.py`): the forward process used
//! for training (`add_noise`, `get_velocity`, the loss target) and the ancestral step of
//! the full training chain.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;

use super::config::{BetaConfig, Choice, Fields};
use super::{PredictionType, SchedulerError};

const NAME: &str = "DDPMScheduler";

/// `variance_type`: the variance of the noise added by [`Ddpm::step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceType {
    /// The posterior variance `beta_tilde_t` (the default).
    FixedSmall,
    /// `beta_t`.
    FixedLarge,
    /// Learned by the model or another log variant: accepted for training, where the
    /// variance plays no part, and refused by [`Ddpm::step`].
    Unsupported,
}

impl Choice for VarianceType {
    const SUPPORTED: &'static str =
        "fixed_small, fixed_small_log, fixed_large, fixed_large_log, learned, learned_range";
    fn parse(s: &str) -> Option<Self> {
        match s {
            "fixed_small" => Some(Self::FixedSmall),
            "fixed_large" => Some(Self::FixedLarge),
            "fixed_small_log" | "fixed_large_log" | "learned" | "learned_range" => {
                Some(Self::Unsupported)
            }
            _ => None,
        }
    }
}

/// The `DDPMScheduler` fields, with that class's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct DdpmConfig {
    pub beta: BetaConfig,
    /// What the UNet is trained to predict (SD 1.5: epsilon).
    pub prediction_type: PredictionType,
    pub variance_type: VarianceType,
    /// Default true: SD configs set it to false.
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// Only [`Ddpm::step`] would use it; true is refused there.
    pub thresholding: bool,
}

impl DdpmConfig {
    /// Reads the fields `DDPMScheduler.from_config` would take from `config`.
    pub fn from_json(config: &Value) -> Result<Self, SchedulerError> {
        let f = Fields::new(NAME, config)?;
        Ok(Self {
            beta: BetaConfig::read(&f)?,
            prediction_type: f.choice("prediction_type", PredictionType::Epsilon)?,
            variance_type: f.choice("variance_type", VarianceType::FixedSmall)?,
            clip_sample: f.bool_or("clip_sample", true)?,
            clip_sample_range: f.f64_or("clip_sample_range", 1.0)?,
            thresholding: f.bool_or("thresholding", false)?,
        })
    }
}

/// The DDPM noise schedule over the training timesteps.
#[derive(Clone, Debug)]
pub struct Ddpm {
    config: DdpmConfig,
    betas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
}

impl Ddpm {
    /// `DDPMScheduler.from_config(config)`.
    pub fn new(config: &Value) -> Result<Self, SchedulerError> {
        Ok(Self::from_config(DdpmConfig::from_json(config)?))
    }

    pub fn from_config(config: DdpmConfig) -> Self {
        let betas = config.beta.betas();
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let alphas_cumprod = super::config::torch_cumprod_f32(&alphas);
        Self {
            config,
            betas,
            alphas_cumprod,
        }
    }

    pub fn config(&self) -> &DdpmConfig {
        &self.config
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    pub fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    /// `betas`, float32, one per training timestep.
    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// `alphas_cumprod` (abar_t), float32, one per training timestep.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Per-example `(sqrt(abar_t), sqrt(1 - abar_t))` as `[batch, 1, ...]` tensors.
    fn coefficients<B: Backend, const D: usize>(
        &self,
        like: &Tensor<B, D>,
        timesteps: &[usize],
    ) -> (Tensor<B, D>, Tensor<B, D>) {
        let batch = like.dims()[0];
        assert_eq!(
            timesteps.len(),
            batch,
            "one timestep per example: {} timesteps for a batch of {batch}",
            timesteps.len()
        );
        let mut shape = [1usize; D];
        shape[0] = batch;
        let abar: Vec<f32> = timesteps.iter().map(|&t| self.alphas_cumprod[t]).collect();
        let sqrt_alpha: Vec<f32> = abar.iter().map(|a| a.sqrt()).collect();
        let sqrt_one_minus: Vec<f32> = abar.iter().map(|a| (1.0 - a).sqrt()).collect();
        let options = (&like.device(), like.dtype());
        (
            Tensor::from_data(TensorData::new(sqrt_alpha, shape), options),
            Tensor::from_data(TensorData::new(sqrt_one_minus, shape), options),
        )
    }

    /// `add_noise`: `sqrt(abar_t) * original + sqrt(1 - abar_t) * noise`, with one
    /// timestep per example (the first dimension).
    ///
    /// # Panics
    /// If `timesteps.len()` differs from the batch size or a timestep is out of range.
    pub fn add_noise<B: Backend, const D: usize>(
        &self,
        original: Tensor<B, D>,
        noise: Tensor<B, D>,
        timesteps: &[usize],
    ) -> Tensor<B, D> {
        let (sqrt_alpha, sqrt_one_minus) = self.coefficients(&original, timesteps);
        original * sqrt_alpha + noise * sqrt_one_minus
    }

    /// `get_velocity`: the v-prediction target `sqrt(abar_t) * noise - sqrt(1 - abar_t) * sample`.
    pub fn velocity<B: Backend, const D: usize>(
        &self,
        sample: Tensor<B, D>,
        noise: Tensor<B, D>,
        timesteps: &[usize],
    ) -> Tensor<B, D> {
        let (sqrt_alpha, sqrt_one_minus) = self.coefficients(&sample, timesteps);
        noise * sqrt_alpha - sample * sqrt_one_minus
    }

    /// The training target for `prediction_type`: the noise (epsilon), the velocity
    /// (v_prediction) or the clean latents (sample), as diffusers' training scripts do.
    pub fn training_target<B: Backend, const D: usize>(
        &self,
        latents: Tensor<B, D>,
        noise: Tensor<B, D>,
        timesteps: &[usize],
    ) -> Tensor<B, D> {
        match self.config.prediction_type {
            PredictionType::Epsilon => noise,
            PredictionType::VPrediction => self.velocity(latents, noise, timesteps),
            PredictionType::Sample => latents,
        }
    }

    /// One ancestral step of the full chain (`step` without `set_timesteps`: from
    /// `timestep` to `timestep - 1`). `variance_noise` is the `N(0, 1)` noise diffusers
    /// would draw; it is not used at timestep 0.
    pub fn step<B: Backend, const D: usize>(
        &self,
        model_output: Tensor<B, D>,
        timestep: usize,
        sample: Tensor<B, D>,
        variance_noise: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, SchedulerError> {
        if self.config.thresholding {
            return Err(SchedulerError::Unsupported {
                scheduler: NAME,
                field: "thresholding",
                value: "true".into(),
                supported: "false",
            });
        }
        if self.config.variance_type == VarianceType::Unsupported {
            return Err(SchedulerError::InvalidConfig {
                scheduler: NAME,
                message: "`step` supports `variance_type` fixed_small and fixed_large only".into(),
            });
        }
        let t = timestep;
        // 1. alphas and betas (float32)
        let alpha_prod_t = self.alphas_cumprod[t];
        let alpha_prod_t_prev = if t > 0 {
            self.alphas_cumprod[t - 1]
        } else {
            1.0
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;

        // 2. x0
        let pred_original_sample = match self.config.prediction_type {
            PredictionType::Epsilon => (sample.clone()
                - model_output.mul_scalar(beta_prod_t.sqrt()))
            .div_scalar(alpha_prod_t.sqrt()),
            PredictionType::Sample => model_output,
            PredictionType::VPrediction => {
                sample.clone().mul_scalar(alpha_prod_t.sqrt())
                    - model_output.mul_scalar(beta_prod_t.sqrt())
            }
        };
        let pred_original_sample = if self.config.clip_sample {
            let r = self.config.clip_sample_range as f32;
            pred_original_sample.clamp(-r, r)
        } else {
            pred_original_sample
        };

        // 3. posterior mean
        let x0_coeff = (alpha_prod_t_prev.sqrt() * current_beta_t) / beta_prod_t;
        let sample_coeff = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let prev = pred_original_sample.mul_scalar(x0_coeff) + sample.mul_scalar(sample_coeff);

        // 4. noise
        if t == 0 {
            return Ok(prev);
        }
        let variance = match self.config.variance_type {
            VarianceType::FixedLarge => current_beta_t,
            _ => ((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t).max(1e-20),
        };
        Ok(prev + variance_noise.mul_scalar(variance.sqrt()))
    }
}
