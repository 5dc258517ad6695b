//! `torch.optim.AdamW` (the single-tensor implementation PyTorch runs on the CPU)
//! with `torch.nn.utils.clip_grad_norm_` before it, over every parameter of a
//! module that has a gradient. The operations follow PyTorch's order so that
//! results agree to rounding.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

/// Hyper-parameters; the defaults are diffusers' training scripts' (and PyTorch's
/// betas and eps), not burn's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// The rate of the next step: a schedule sets it before each step.
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global L2 norm the gradients are scaled down to; None: no clipping.
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            max_grad_norm: Some(1.0),
        }
    }
}

/// One parameter's moments, on the inner (non-autodiff) backend.
#[derive(Debug, Clone)]
pub struct Moments<B: Backend> {
    pub exp_avg: Tensor<B, 1>,
    pub exp_avg_sq: Tensor<B, 1>,
}

#[derive(Debug, Clone)]
pub struct AdamW<B: AutodiffBackend> {
    pub config: AdamWConfig,
    /// Optimizer steps taken (PyTorch keeps one per parameter; they move together).
    pub steps: u64,
    pub state: HashMap<ParamId, Moments<B::InnerBackend>>,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    pub parameters_updated: usize,
}

impl<B: AutodiffBackend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            steps: 0,
            state: HashMap::new(),
        }
    }

    /// Clips the gradients to the global norm and updates every parameter that has
    /// a gradient in `grads` (`GradientsParams::from_grads(loss.backward(), &module)`,
    /// or a sum of micro-batches' from [`crate::train::step::accumulate`]).
    pub fn step<M: AutodiffModule<B>>(
        &mut self,
        module: M,
        grads: &GradientsParams,
    ) -> (M, StepReport) {
        let mut norm = NormVisitor {
            grads,
            squares: Vec::new(),
        };
        module.visit(&mut norm);
        // torch takes the norm of the per-tensor norms: the same number.
        let grad_norm = norm.squares.iter().sum::<f64>().sqrt();
        let clip = match self.config.max_grad_norm {
            Some(max) => (max / (grad_norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        self.steps += 1;
        let mut updater = Updater {
            grads,
            clip,
            optimizer: self,
            updated: 0,
        };
        let module = module.map(&mut updater);
        let parameters_updated = updater.updated;
        (
            module,
            StepReport {
                grad_norm,
                parameters_updated,
            },
        )
    }
}

struct NormVisitor<'a> {
    grads: &'a GradientsParams,
    squares: Vec<f64>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for NormVisitor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sum: f64 = grad.powf_scalar(2.0).sum().into_scalar().elem();
            self.squares.push(sum);
        }
    }
}

struct Updater<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    clip: f64,
    optimizer: &'a mut AdamW<B>,
    updated: usize,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Updater<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) else {
            return param;
        };
        let value = param.val();
        let shape = grad.shape();
        let grad: Tensor<B::InnerBackend, 1> = grad.reshape([-1]);
        let grad = if self.clip < 1.0 {
            grad * self.clip
        } else {
            grad
        };
        let weights: Tensor<B::InnerBackend, 1> = value.inner().reshape([-1]);
        let c = self.optimizer.config;
        let t = self.optimizer.steps as i32;
        let moments = self
            .optimizer
            .state
            .remove(&param.id)
            .unwrap_or_else(|| Moments {
                exp_avg: grad.zeros_like(),
                exp_avg_sq: grad.zeros_like(),
            });
        // param.mul_(1 - lr * weight_decay)
        let weights = weights * (1.0 - c.lr * c.weight_decay);
        // exp_avg.lerp_(grad, 1 - beta1)
        let exp_avg = moments.exp_avg.clone() + (grad.clone() - moments.exp_avg) * (1.0 - c.beta1);
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        let exp_avg_sq = moments.exp_avg_sq * c.beta2 + grad.clone() * grad * (1.0 - c.beta2);
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2 = 1.0 - c.beta2.powi(t);
        let step_size = c.lr / bias_correction1;
        let denom = exp_avg_sq.clone().sqrt() / bias_correction2.sqrt() + c.eps;
        let weights = weights - exp_avg.clone() / denom * step_size;
        self.optimizer.state.insert(
            param.id,
            Moments {
                exp_avg,
                exp_avg_sq,
            },
        );
        self.updated += 1;
        let id = param.id;
        let updated = Tensor::<B, D>::from_inner(weights.reshape(shape)).require_grad();
        Param::initialized(id, updated)
    }
}
