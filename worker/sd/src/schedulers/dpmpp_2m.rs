//! `DPMSolverMultistepScheduler` (diffusers `schedulers/scheduling_dpmsolver_multistep.py`)
//! with `algorithm_type = "dpmsolver++"`: DPM-Solver++ 2M by default (solver orders 1 and 3
//! and the "heun" solver type come along because they are a few lines each).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde_json::Value;

use super::config::{
    karras_sigmas, np_arange, np_interp_arange, np_linspace, sigma_to_t, train_sigmas, BetaConfig,
    Choice, Fields,
};
use super::{
    check_steps, BetaSchedule, FinalSigmasType, PredictionType, Scheduler, SchedulerError,
    TimestepSpacing,
};

const NAME: &str = "DPMSolverMultistepScheduler";

/// `solver_type`: how the second-order term is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

impl Choice for SolverType {
    const SUPPORTED: &'static str = "midpoint, heun (logrho, bh1, bh2 mean midpoint)";
    fn parse(s: &str) -> Option<Self> {
        match s {
            // diffusers maps the UniPC/DEIS names to midpoint
            "midpoint" | "logrho" | "bh1" | "bh2" => Some(Self::Midpoint),
            "heun" => Some(Self::Heun),
            _ => None,
        }
    }
}

/// The `DPMSolverMultistepScheduler` fields, with that class's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct DpmSolverConfig {
    pub beta: BetaConfig,
    /// Default 2 ("2M"); 1 and 3 are supported too.
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub solver_type: SolverType,
    /// Use lower orders for the last steps when there are fewer than 15 steps.
    pub lower_order_final: bool,
    /// First order for the very last step.
    pub euler_at_final: bool,
    pub final_sigmas_type: FinalSigmasType,
    /// Drop the timesteps whose log-SNR is below this (default -inf: none).
    pub lambda_min_clipped: f64,
    /// Default "linspace".
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// Karras et al. sigmas over the whole training range ("DPM++ 2M Karras"); the
    /// timesteps follow them and `timestep_spacing` is not used.
    pub use_karras_sigmas: bool,
}

impl DpmSolverConfig {
    /// Reads the fields `DPMSolverMultistepScheduler.from_config` would take from `config`.
    pub fn from_json(config: &Value) -> Result<Self, SchedulerError> {
        let f = Fields::new(NAME, config)?;
        match f.str_or("algorithm_type", "dpmsolver++")? {
            // diffusers registers "deis" as "dpmsolver++"
            "dpmsolver++" | "deis" => {}
            other => {
                return Err(f.unsupported("algorithm_type", &Value::from(other), "dpmsolver++"))
            }
        }
        for field in [
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
            "thresholding",
        ] {
            f.require_default(field, Value::Bool(false), "false")?;
        }
        f.require_default("variance_type", Value::Null, "null")?;
        let solver_order = f.usize_or("solver_order", 2)?;
        if !(1..=3).contains(&solver_order) {
            return Err(f.unsupported("solver_order", &Value::from(solver_order), "1, 2, 3"));
        }
        Ok(Self {
            beta: BetaConfig::read(&f)?,
            solver_order,
            prediction_type: f.choice("prediction_type", PredictionType::Epsilon)?,
            solver_type: f.choice("solver_type", SolverType::Midpoint)?,
            lower_order_final: f.bool_or("lower_order_final", true)?,
            euler_at_final: f.bool_or("euler_at_final", false)?,
            final_sigmas_type: f.choice("final_sigmas_type", FinalSigmasType::Zero)?,
            lambda_min_clipped: lambda_min_clipped(&f)?,
            timestep_spacing: f.choice("timestep_spacing", TimestepSpacing::Linspace)?,
            steps_offset: f.usize_or("steps_offset", 0)?,
            use_karras_sigmas: f.bool_or("use_karras_sigmas", false)?,
        })
    }
}

/// diffusers saves the default as `-Infinity`, which is not JSON; accept a number, null
/// or the strings "-inf" / "-Infinity".
fn lambda_min_clipped(f: &Fields) -> Result<f64, SchedulerError> {
    const FIELD: &str = "lambda_min_clipped";
    match f.str_or(FIELD, "-inf") {
        Ok("-inf" | "-Infinity") => Ok(f64::NEG_INFINITY),
        Ok(other) => Err(f.unsupported(FIELD, &Value::from(other), "a number or \"-inf\"")),
        Err(_) => f.f64_or(FIELD, f64::NEG_INFINITY),
    }
}

/// DPM-Solver++ multistep (data prediction), deterministic.
#[derive(Clone, Debug)]
pub struct DpmPlusPlus2M<B: Backend> {
    config: DpmSolverConfig,
    timesteps: Vec<f64>,
    /// One more than the timesteps: the sigma after the last step.
    sigmas: Vec<f32>,
    /// Converted outputs (x0 predictions) of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Option<Tensor<B, 4>>>,
    lower_order_nums: usize,
    last_step_index: Option<usize>,
}

impl<B: Backend> DpmPlusPlus2M<B> {
    /// `DPMSolverMultistepScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: DpmSolverConfig, n: usize) -> Result<Self, SchedulerError> {
        let t_train = config.beta.num_train_timesteps;
        check_steps(NAME, n, t_train)?;
        let alphas_cumprod = config.beta.alphas_cumprod_for_sigmas();

        // 1. timesteps (int64), possibly clipped at lambda_min_clipped
        let clipped_idx = if config.lambda_min_clipped == f64::NEG_INFINITY {
            0
        } else {
            // torch.searchsorted(flip(lambda_t), lambda_min_clipped), lambda_t in float32
            alphas_cumprod
                .iter()
                .rev()
                .map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln())
                .take_while(|&l| (l as f64) < config.lambda_min_clipped)
                .count()
        };
        let last_timestep = t_train - clipped_idx;
        let mut timesteps: Vec<i64> = match config.timestep_spacing {
            TimestepSpacing::Linspace => {
                let mut t: Vec<i64> = np_linspace(0.0, last_timestep as f64 - 1.0, n + 1)
                    .into_iter()
                    .rev()
                    .map(|t| t.round_ties_even() as i64)
                    .collect();
                t.pop();
                t
            }
            TimestepSpacing::Leading => {
                let ratio = last_timestep / (n + 1);
                (1..=n)
                    .rev()
                    .map(|i| (i * ratio + config.steps_offset) as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                np_arange(last_timestep as f64, 0.0, -(t_train as f64 / n as f64))
                    .into_iter()
                    .map(|t| t.round_ties_even() as i64 - 1)
                    .collect()
            }
        };

        // 2. sigmas at those timesteps (np.interp clamps out-of-range ones), or Karras
        // sigmas over the whole training range with the timesteps following them
        let train32 = train_sigmas(&alphas_cumprod);
        let train: Vec<f64> = train32.iter().copied().map(f64::from).collect();
        let mut sigmas: Vec<f32> = if config.use_karras_sigmas {
            let sigmas = karras_sigmas(train[0], train[t_train - 1], n);
            let log_sigmas: Vec<f32> = train32.iter().map(|s| s.ln()).collect();
            let round = config.beta.beta_schedule != Some(BetaSchedule::SquaredcosCapV2);
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    // torch's int64 conversion truncates what is not rounded
                    (if round { t.round_ties_even() } else { t }) as i64
                })
                .collect();
            sigmas.into_iter().map(|s| s as f32).collect()
        } else {
            timesteps
                .iter()
                .map(|&t| np_interp_arange(t as f64, &train) as f32)
                .collect()
        };
        sigmas.push(match config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => train[0] as f32,
        });

        let order = config.solver_order;
        Ok(Self {
            config,
            timesteps: timesteps.into_iter().map(|t| t as f64).collect(),
            sigmas,
            model_outputs: vec![None; order],
            lower_order_nums: 0,
            last_step_index: None,
        })
    }

    pub fn config(&self) -> &DpmSolverConfig {
        &self.config
    }

    /// The sigmas, one per timestep plus the final one.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// (alpha_t, sigma_t, lambda_t) of the sigma at `index`, in float32.
    fn alpha_sigma_lambda(&self, index: usize) -> (f32, f32, f32) {
        let sigma = self.sigmas[index];
        let alpha_t = 1.0 / (sigma * sigma + 1.0).sqrt();
        let sigma_t = sigma * alpha_t;
        (alpha_t, sigma_t, alpha_t.ln() - sigma_t.ln())
    }

    /// `convert_model_output`: the x0 prediction.
    fn convert_model_output(
        &self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let (alpha_t, sigma_t, _) = self.alpha_sigma_lambda(step_index);
        match self.config.prediction_type {
            PredictionType::Epsilon => {
                (sample - model_output.mul_scalar(sigma_t)).div_scalar(alpha_t)
            }
            PredictionType::VPrediction => {
                sample.mul_scalar(alpha_t) - model_output.mul_scalar(sigma_t)
            }
            PredictionType::Sample => model_output,
        }
    }

    fn history(&self, back: usize) -> Tensor<B, 4> {
        self.model_outputs[self.model_outputs.len() - 1 - back]
            .clone()
            .expect("DPM-Solver history is filled before it is used")
    }

    fn first_order_update(&self, x0: Tensor<B, 4>, i: usize, sample: Tensor<B, 4>) -> Tensor<B, 4> {
        let (alpha_t, sigma_t, lambda_t) = self.alpha_sigma_lambda(i + 1);
        let (_, sigma_s, lambda_s) = self.alpha_sigma_lambda(i);
        let h = lambda_t - lambda_s;
        sample.mul_scalar(sigma_t / sigma_s) - x0.mul_scalar(alpha_t * ((-h).exp() - 1.0))
    }

    fn second_order_update(&self, i: usize, sample: Tensor<B, 4>) -> Tensor<B, 4> {
        let (alpha_t, sigma_t, lambda_t) = self.alpha_sigma_lambda(i + 1);
        let (_, sigma_s0, lambda_s0) = self.alpha_sigma_lambda(i);
        let (_, _, lambda_s1) = self.alpha_sigma_lambda(i - 1);
        let (m0, m1) = (self.history(0), self.history(1));
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let r0 = h_0 / h;
        let d1 = (m0.clone() - m1).mul_scalar(1.0 / r0);
        let c = alpha_t * ((-h).exp() - 1.0);
        let x = sample.mul_scalar(sigma_t / sigma_s0) - m0.mul_scalar(c);
        match self.config.solver_type {
            SolverType::Midpoint => x - d1.mul_scalar(0.5 * c),
            SolverType::Heun => x + d1.mul_scalar(alpha_t * (((-h).exp() - 1.0) / h + 1.0)),
        }
    }

    fn third_order_update(&self, i: usize, sample: Tensor<B, 4>) -> Tensor<B, 4> {
        let (alpha_t, sigma_t, lambda_t) = self.alpha_sigma_lambda(i + 1);
        let (_, sigma_s0, lambda_s0) = self.alpha_sigma_lambda(i);
        let (_, _, lambda_s1) = self.alpha_sigma_lambda(i - 1);
        let (_, _, lambda_s2) = self.alpha_sigma_lambda(i - 2);
        let (m0, m1, m2) = (self.history(0), self.history(1), self.history(2));
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let h_1 = lambda_s1 - lambda_s2;
        let (r0, r1) = (h_0 / h, h_1 / h);
        let d1_0 = (m0.clone() - m1.clone()).mul_scalar(1.0 / r0);
        let d1_1 = (m1 - m2).mul_scalar(1.0 / r1);
        let d1 = d1_0.clone() + (d1_0.clone() - d1_1.clone()).mul_scalar(r0 / (r0 + r1));
        let d2 = (d1_0 - d1_1).mul_scalar(1.0 / (r0 + r1));
        let e = (-h).exp();
        sample.mul_scalar(sigma_t / sigma_s0) - m0.mul_scalar(alpha_t * (e - 1.0))
            + d1.mul_scalar(alpha_t * ((e - 1.0) / h + 1.0))
            - d2.mul_scalar(alpha_t * ((e - 1.0 + h) / (h * h) - 0.5))
    }
}

impl<B: Backend> Scheduler<B> for DpmPlusPlus2M<B> {
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
        let i = step_index;
        let n = self.timesteps.len();
        assert!(i < n, "step index {i} out of range for {n} timesteps");
        // a new trajectory: forget the previous one's outputs
        if self.last_step_index.map(|last| last + 1) != Some(i) {
            self.model_outputs.iter_mut().for_each(|m| *m = None);
            self.lower_order_nums = 0;
        }
        self.last_step_index = Some(i);

        let cfg = &self.config;
        let lower_order_final = i == n - 1
            && (cfg.euler_at_final
                || (cfg.lower_order_final && n < 15)
                || cfg.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = i + 2 == n && cfg.lower_order_final && n < 15;
        let order = cfg.solver_order;

        let x0 = self.convert_model_output(model_output, i, sample.clone());
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(x0.clone()));

        let prev_sample = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order_update(x0, i, sample)
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order_update(i, sample)
        } else {
            self.third_order_update(i, sample)
        };
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        prev_sample
    }
}
