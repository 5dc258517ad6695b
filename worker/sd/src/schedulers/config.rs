//! Reading diffusers' `scheduler_config.json`, the shared beta schedule, and the few
//! numpy/torch routines whose exact rounding the schedules depend on.
//!
//! diffusers builds every scheduler with `from_config`: the class takes the fields its
//! `__init__` knows, ignores the rest (`_class_name`, `skip_prk_steps`, ...) and gives
//! missing ones its own defaults. [`Fields`] does the same for one class at a time, with
//! the defaults passed in by that class. A field this crate does not implement is accepted
//! only at its default value; anything else is an error naming the field and the value.

use serde_json::{Map, Value};

use super::SchedulerError;

/// Typed access to the fields of one scheduler config, on behalf of one diffusers class.
pub(crate) struct Fields<'a> {
    scheduler: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(scheduler: &'static str, config: &'a Value) -> Result<Self, SchedulerError> {
        match config {
            Value::Object(map) => Ok(Self { scheduler, map }),
            other => Err(SchedulerError::NotAnObject {
                scheduler,
                found: json_kind(other),
            }),
        }
    }

    /// The diffusers class name these fields are read for (used in errors).
    pub(crate) fn scheduler(&self) -> &'static str {
        self.scheduler
    }

    /// The raw value; `null` counts as missing, as diffusers then uses the default.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn invalid(
        &self,
        field: &'static str,
        expected: &'static str,
        value: &Value,
    ) -> SchedulerError {
        SchedulerError::InvalidField {
            scheduler: self.scheduler,
            field,
            expected,
            value: value.to_string(),
        }
    }

    pub(crate) fn f64_or(&self, field: &'static str, default: f64) -> Result<f64, SchedulerError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.invalid(field, "a number", v)),
        }
    }

    pub(crate) fn usize_or(
        &self,
        field: &'static str,
        default: usize,
    ) -> Result<usize, SchedulerError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|x| x.fract() == 0.0 && *x >= 0.0)
                        .map(|x| x as u64)
                })
                .map(|x| x as usize)
                .ok_or_else(|| self.invalid(field, "a non-negative integer", v)),
        }
    }

    pub(crate) fn bool_or(
        &self,
        field: &'static str,
        default: bool,
    ) -> Result<bool, SchedulerError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.invalid(field, "a boolean", v)),
        }
    }

    pub(crate) fn str_or(
        &self,
        field: &'static str,
        default: &'static str,
    ) -> Result<&'a str, SchedulerError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.invalid(field, "a string", v)),
        }
    }

    pub(crate) fn opt_f64(&self, field: &'static str) -> Result<Option<f64>, SchedulerError> {
        self.get(field)
            .map(|v| v.as_f64().ok_or_else(|| self.invalid(field, "a number", v)))
            .transpose()
    }

    pub(crate) fn f64_list(&self, field: &'static str) -> Result<Option<Vec<f64>>, SchedulerError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let list = v
            .as_array()
            .ok_or_else(|| self.invalid(field, "a list of numbers", v))?;
        list.iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| self.invalid(field, "a list of numbers", v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A string field restricted to the values of `T`.
    pub(crate) fn choice<T: Choice>(
        &self,
        field: &'static str,
        default: T,
    ) -> Result<T, SchedulerError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => {
                let s = v
                    .as_str()
                    .ok_or_else(|| self.invalid(field, "a string", v))?;
                T::parse(s).ok_or_else(|| self.unsupported(field, v, T::SUPPORTED))
            }
        }
    }

    pub(crate) fn unsupported(
        &self,
        field: &'static str,
        value: &Value,
        supported: &'static str,
    ) -> SchedulerError {
        SchedulerError::Unsupported {
            scheduler: self.scheduler,
            field,
            value: value.to_string(),
            supported,
        }
    }

    /// Errors unless `field` is missing or equal to `default`: for options diffusers has
    /// and this crate does not implement.
    pub(crate) fn require_default(
        &self,
        field: &'static str,
        default: Value,
        supported: &'static str,
    ) -> Result<(), SchedulerError> {
        match self.get(field) {
            Some(v) if *v != default => Err(self.unsupported(field, v, supported)),
            _ => Ok(()),
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A string-valued config field with a closed set of values.
pub(crate) trait Choice: Sized {
    /// The accepted values, for error messages.
    const SUPPORTED: &'static str;
    fn parse(s: &str) -> Option<Self>;
}

/// `beta_schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end)`.
    Linear,
    /// `linspace(sqrt(beta_start), sqrt(beta_end))^2`: Stable Diffusion's.
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal, betas capped at 0.999.
    SquaredcosCapV2,
}

impl Choice for BetaSchedule {
    const SUPPORTED: &'static str = "linear, scaled_linear, squaredcos_cap_v2";
    fn parse(s: &str) -> Option<Self> {
        match s {
            "linear" => Some(Self::Linear),
            "scaled_linear" => Some(Self::ScaledLinear),
            "squaredcos_cap_v2" => Some(Self::SquaredcosCapV2),
            _ => None,
        }
    }
}

/// `timestep_spacing`: how the inference timesteps are picked among the training ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// Multiples of `num_train_timesteps / n` from 0, plus `steps_offset`.
    Leading,
    /// Counting down from the last training timestep.
    Trailing,
    /// `linspace(0, num_train_timesteps - 1, n)`.
    Linspace,
}

impl Choice for TimestepSpacing {
    const SUPPORTED: &'static str = "leading, trailing, linspace";
    fn parse(s: &str) -> Option<Self> {
        match s {
            "leading" => Some(Self::Leading),
            "trailing" => Some(Self::Trailing),
            "linspace" => Some(Self::Linspace),
            _ => None,
        }
    }
}

/// `prediction_type`: what the UNet predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    /// The added noise (Stable Diffusion 1.x).
    Epsilon,
    /// The velocity `sqrt(abar) * noise - sqrt(1 - abar) * x0` (SD 2.x 768).
    VPrediction,
    /// The clean sample itself.
    Sample,
}

impl Choice for PredictionType {
    const SUPPORTED: &'static str = "epsilon, v_prediction, sample";
    fn parse(s: &str) -> Option<Self> {
        match s {
            "epsilon" => Some(Self::Epsilon),
            "v_prediction" => Some(Self::VPrediction),
            "sample" => Some(Self::Sample),
            _ => None,
        }
    }
}

/// `final_sigmas_type` (Euler, DPM-Solver): the sigma after the last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalSigmasType {
    /// Zero: the last step lands on the clean sample.
    Zero,
    /// The training schedule's smallest sigma.
    SigmaMin,
}

impl Choice for FinalSigmasType {
    const SUPPORTED: &'static str = "zero, sigma_min";
    fn parse(s: &str) -> Option<Self> {
        match s {
            "zero" => Some(Self::Zero),
            "sigma_min" => Some(Self::SigmaMin),
            _ => None,
        }
    }
}

/// The training noise schedule every scheduler starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct BetaConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    /// `None` when `trained_betas` is given: diffusers then ignores `beta_schedule`.
    pub beta_schedule: Option<BetaSchedule>,
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: bool,
}

impl BetaConfig {
    /// Reads the fields with the defaults shared by DDPM, DDIM, Euler and DPM-Solver.
    pub(crate) fn read(fields: &Fields) -> Result<Self, SchedulerError> {
        let num_train_timesteps = fields.usize_or("num_train_timesteps", 1000)?;
        let trained_betas = fields.f64_list("trained_betas")?;
        let beta_schedule = match trained_betas {
            Some(_) => None,
            None => Some(fields.choice("beta_schedule", BetaSchedule::Linear)?),
        };
        if num_train_timesteps < 2 {
            return Err(SchedulerError::InvalidConfig {
                scheduler: fields.scheduler(),
                message: format!(
                    "`num_train_timesteps` must be at least 2, got {num_train_timesteps}"
                ),
            });
        }
        if let Some(betas) = &trained_betas {
            if betas.len() != num_train_timesteps {
                return Err(SchedulerError::InvalidConfig {
                    scheduler: fields.scheduler(),
                    message: format!(
                        "`trained_betas` has {} values but `num_train_timesteps` is {num_train_timesteps}",
                        betas.len()
                    ),
                });
            }
        }
        Ok(Self {
            num_train_timesteps,
            beta_start: fields.f64_or("beta_start", 0.0001)?,
            beta_end: fields.f64_or("beta_end", 0.02)?,
            beta_schedule,
            trained_betas,
            rescale_betas_zero_snr: fields.bool_or("rescale_betas_zero_snr", false)?,
        })
    }

    /// `self.betas` (torch float32), after the optional zero-terminal-SNR rescale.
    pub fn betas(&self) -> Vec<f32> {
        let n = self.num_train_timesteps;
        let betas = match (&self.trained_betas, self.beta_schedule) {
            (Some(trained), _) => trained.iter().map(|&b| b as f32).collect(),
            (None, Some(BetaSchedule::ScaledLinear)) => {
                torch_linspace_f32(self.beta_start.powf(0.5), self.beta_end.powf(0.5), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            (None, Some(BetaSchedule::SquaredcosCapV2)) => betas_for_alpha_bar(n),
            (None, _) => torch_linspace_f32(self.beta_start, self.beta_end, n),
        };
        if self.rescale_betas_zero_snr {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        }
    }

    /// `self.alphas_cumprod` (torch float32).
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let alphas: Vec<f32> = self.betas().iter().map(|b| 1.0 - b).collect();
        torch_cumprod_f32(&alphas)
    }

    /// `alphas_cumprod` as Euler and DPM-Solver keep it: with zero-terminal SNR the last
    /// value is set to 2^-24 so that its sigma stays finite.
    pub(crate) fn alphas_cumprod_for_sigmas(&self) -> Vec<f32> {
        let mut ac = self.alphas_cumprod();
        if self.rescale_betas_zero_snr {
            if let Some(last) = ac.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        ac
    }
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32.
pub(crate) fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|&a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on CPU: the step is computed
/// in float32 and each value with one fused multiply-add, from the start for the first
/// half and from the end for the second (checked bit for bit against torch 2.x).
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// `torch.cumprod` of a float32 tensor on CPU: the running product is kept in float64.
pub(crate) fn torch_cumprod_f32(values: &[f32]) -> Vec<f32> {
    let mut acc = 1f64;
    values
        .iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform (Python floats, then float32).
fn betas_for_alpha_bar(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv 2305.08891, algorithm 1), in float32.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_bar: Vec<f32> = torch_cumprod_f32(&alphas)
        .iter()
        .map(|a| a.sqrt())
        .collect();
    let first = sqrt_bar[0];
    let last = sqrt_bar[sqrt_bar.len() - 1];
    let scale = first / (first - last);
    for x in &mut sqrt_bar {
        *x -= last;
        *x *= scale;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|x| x * x).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    out.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// `np.linspace(start, stop, num)` (float64, endpoint included).
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = if step == 0.0 {
        (0..num).map(|i| i as f64 / div * delta + start).collect()
    } else {
        (0..num).map(|i| i as f64 * step + start).collect()
    };
    y[num - 1] = stop;
    y
}

/// `np.arange(start, stop, step)` for floats: the length is `ceil((stop - start) / step)`
/// and element i is `start + i * (x1 - start)` with `x1 = start + step`, as numpy fills it.
/// The length rule is why "trailing" spacing sometimes yields one timestep too many.
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    // also catches NaN (a zero step)
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.interp(x, np.arange(len(fp)), fp)`, including numpy's exact-hit and clamping rules.
pub(crate) fn np_interp_arange(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / 1.0;
    let y = slope * (x - j as f64) + fp[j];
    if y.is_nan() {
        slope * (x - (j + 1) as f64) + fp[j + 1]
    } else {
        y
    }
}

/// diffusers' `_convert_to_karras` (Karras et al. 2022, rho = 7), in float64.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep of `sigma`, interpolating
/// linearly in log-sigma. `log_sigmas` are float32 (numpy's `np.log` of the float32
/// training sigmas), the arithmetic float64.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // the last index whose log-sigma is <= log_sigma (0 if none), at most len - 2
    let low_idx = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx] as f64;
    let high = log_sigmas[high_idx] as f64;
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Python's negative indexing, which diffusers relies on for a timestep of -1.
pub(crate) fn py_index<T: Copy>(values: &[T], index: i64) -> T {
    let len = values.len() as i64;
    let i = if index < 0 { len + index } else { index };
    values[usize::try_from(i).expect("index out of range")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arange_length_quirk() {
        // 1000 / 61 steps: numpy gives 62 values, the last one ~0 (rounded to 0 then -1).
        let v = np_arange(1000.0, 0.0, -(1000.0 / 61.0));
        assert_eq!(v.len(), 62);
        assert_eq!(np_arange(1000.0, 0.0, -100.0).len(), 10);
    }

    #[test]
    fn linspace_endpoints() {
        let v = np_linspace(0.0, 999.0, 4);
        assert_eq!(v, vec![0.0, 333.0, 666.0, 999.0]);
        let t = torch_linspace_f32(0.1, 0.9, 3);
        assert_eq!(t, vec![0.1f32, 0.5, 0.9]);
    }
}
