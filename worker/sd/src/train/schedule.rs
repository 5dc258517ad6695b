//! Learning-rate schedules with warm-up: the lambdas of diffusers' `get_scheduler`
//! (`diffusers/optimization.py`, the same as transformers'), which PyTorch's
//! `LambdaLR` multiplies into the base learning rate.
//!
//! `LambdaLR` evaluates the lambda at `last_epoch`, the number of scheduler steps
//! taken so far; the training scripts step it once per optimizer step (accelerate
//! skips the calls between accumulated micro-batches), so optimizer step `k`
//! (1-based) runs at `lr * factor(k - 1)`. With warm-up the first step therefore
//! has learning rate 0, as in diffusers.

use std::f64::consts::PI;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduler {
    /// `get_constant_schedule`: 1 at every step (diffusers ignores warm-up here;
    /// atelier refuses it, see `TrainConfig::validate`).
    #[default]
    Constant,
    /// `get_constant_schedule_with_warmup`: linear from 0 over the warm-up, then 1.
    ConstantWithWarmup,
    /// `get_linear_schedule_with_warmup`: warm-up, then linear down to 0 at the
    /// last step.
    Linear,
    /// `get_cosine_schedule_with_warmup` with `num_cycles` 0.5: warm-up, then half
    /// a cosine down to 0 at the last step.
    Cosine,
}

impl LrScheduler {
    pub const NAMES: &'static str = "constant, constant_with_warmup, linear or cosine";

    /// The factor on the base learning rate after `step` optimizer steps, for a
    /// run of `total` steps with `warmup` warm-up steps.
    pub fn factor(self, step: usize, warmup: usize, total: usize) -> f64 {
        let (step, warmup, total) = (step as f64, warmup as f64, total as f64);
        let warming = step < warmup;
        let warm_up = step / warmup.max(1.0);
        match self {
            LrScheduler::Constant => 1.0,
            LrScheduler::ConstantWithWarmup if warming => warm_up,
            LrScheduler::ConstantWithWarmup => 1.0,
            LrScheduler::Linear if warming => warm_up,
            LrScheduler::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
            LrScheduler::Cosine if warming => warm_up,
            LrScheduler::Cosine => {
                let num_cycles = 0.5;
                let progress = (step - warmup) / (total - warmup).max(1.0);
                (0.5 * (1.0 + (PI * num_cycles * 2.0 * progress).cos())).max(0.0)
            }
        }
    }
}

impl FromStr for LrScheduler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(LrScheduler::Constant),
            "constant_with_warmup" => Ok(LrScheduler::ConstantWithWarmup),
            "linear" => Ok(LrScheduler::Linear),
            "cosine" => Ok(LrScheduler::Cosine),
            other => Err(format!(
                "unknown lr scheduler `{other}` ({})",
                LrScheduler::NAMES
            )),
        }
    }
}

impl std::fmt::Display for LrScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LrScheduler::Constant => "constant",
            LrScheduler::ConstantWithWarmup => "constant_with_warmup",
            LrScheduler::Linear => "linear",
            LrScheduler::Cosine => "cosine",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_factor(scheduler: LrScheduler, step: usize, expected: f64) {
        // 100 steps, 10 of warm-up.
        let got = scheduler.factor(step, 10, 100);
        assert!(
            (got - expected).abs() <= 1e-15,
            "{scheduler} at step {step}: {got}, expected {expected}"
        );
    }

    /// Values worked out by hand from diffusers' lambdas for 100 steps and 10 of
    /// warm-up: warm-up step/10; linear (100 - step)/90; cosine
    /// 0.5 (1 + cos(pi (step - 10)/90)).
    #[test]
    fn factors_are_diffusers_lambdas() {
        use LrScheduler::*;
        for scheduler in [ConstantWithWarmup, Linear, Cosine] {
            assert_factor(scheduler, 0, 0.0);
            assert_factor(scheduler, 1, 0.1);
            assert_factor(scheduler, 5, 0.5);
            assert_factor(scheduler, 9, 0.9);
            assert_factor(scheduler, 10, 1.0);
        }
        for step in [0, 1, 10, 55, 99, 100] {
            assert_factor(Constant, step, 1.0);
        }
        assert_factor(ConstantWithWarmup, 55, 1.0);
        assert_factor(ConstantWithWarmup, 99, 1.0);
        // linear: (100 - 55) / 90 = 0.5, (100 - 99) / 90, 0 at the end.
        assert_factor(Linear, 55, 0.5);
        assert_factor(Linear, 99, 1.0 / 90.0);
        assert_factor(Linear, 100, 0.0);
        // cosine: half-way (step 55) cos(pi/2) = 0 -> 0.5; a third of the way
        // (step 40) cos(pi/3) = 0.5 -> 0.75; the end cos(pi) = -1 -> 0.
        assert_factor(Cosine, 55, 0.5);
        assert_factor(Cosine, 40, 0.75);
        assert_factor(Cosine, 100, 0.0);
        // Without warm-up the first step has the full rate.
        assert_eq!(Linear.factor(0, 0, 100), 1.0);
        assert_eq!(Cosine.factor(0, 0, 100), 1.0);
        assert_eq!(ConstantWithWarmup.factor(0, 0, 100), 1.0);
    }

    #[test]
    fn names_round_trip() {
        use LrScheduler::*;
        for scheduler in [Constant, ConstantWithWarmup, Linear, Cosine] {
            assert_eq!(
                scheduler.to_string().parse::<LrScheduler>().unwrap(),
                scheduler
            );
            let json = serde_json::to_string(&scheduler).unwrap();
            assert_eq!(json, format!("\"{scheduler}\""));
        }
        let err = "cosine_with_restarts".parse::<LrScheduler>().unwrap_err();
        assert!(err.contains("cosine_with_restarts"), "{err}");
    }
}
