//! One training step's loss, as diffusers' training scripts compute it, with every
//! random draw (the VAE sample's noise, the diffusion noise, the timesteps) passed
//! in: the caller owns the RNG, so a run can be replayed and resumed bit for bit.
//! With gradient accumulation a step is several micro-batches whose gradients
//! [`accumulate`] sums.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use crate::schedulers::Ddpm;
use crate::unet_2d::UNet2DConditionModel;
use crate::vae::AutoencoderKL;

/// The frozen VAE's latents for images in [-1, 1]: a sample of the latent
/// distribution (mean + std * `noise`) times the scaling factor.
pub fn encode_latents<B: Backend>(
    vae: &AutoencoderKL<B>,
    pixel_values: Tensor<B, 4>,
    noise: Tensor<B, 4>,
    scaling_factor: f64,
) -> Tensor<B, 4> {
    vae.encode(pixel_values).sample(noise).detach() * scaling_factor
}

/// The loss of a step and, with prior preservation, its two terms.
#[derive(Debug, Clone)]
pub struct Loss<B: Backend> {
    pub total: Tensor<B, 1>,
    /// DreamBooth: the instance half's MSE and the class half's MSE.
    pub instance: Option<Tensor<B, 1>>,
    pub prior: Option<Tensor<B, 1>>,
}

fn mse<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
    (a - b).powf_scalar(2.0).mean()
}

/// Noise the latents at `timesteps`, predict with the UNet conditioned on
/// `context`, and compare with the scheduler's training target. With
/// `prior_loss_weight`, the batch is [instances; class images] in equal halves and
/// the loss is MSE(instances) + weight * MSE(class images), as
/// `train_dreambooth_lora.py` with `--with_prior_preservation`.
pub fn diffusion_loss<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    ddpm: &Ddpm,
    latents: Tensor<B, 4>,
    noise: Tensor<B, 4>,
    timesteps: &[usize],
    context: &Tensor<B, 3>,
    prior_loss_weight: Option<f64>,
) -> Loss<B> {
    let noisy = ddpm.add_noise(latents.clone(), noise.clone(), timesteps);
    let target = ddpm.training_target(latents, noise, timesteps);
    let t: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
    let pred = unet.forward(noisy, &t, context);
    match prior_loss_weight {
        None => Loss {
            total: mse(pred, target),
            instance: None,
            prior: None,
        },
        Some(weight) => {
            let [pred_instance, pred_prior] = pred
                .chunk(2, 0)
                .try_into()
                .expect("an even batch: instances then class images");
            let [target_instance, target_prior] = target
                .chunk(2, 0)
                .try_into()
                .expect("an even batch: instances then class images");
            let instance = mse(pred_instance, target_instance);
            let prior = mse(pred_prior, target_prior);
            Loss {
                total: instance.clone() + prior.clone() * weight,
                instance: Some(instance),
                prior: Some(prior),
            }
        }
    }
}

/// The gradients of `module`'s parameters for one of `micro_batches` micro-batches
/// of an optimizer step: the loss divided by `micro_batches` before the backward
/// pass, as accelerate's `backward` does under `gradient_accumulation_steps`, so
/// that the summed gradients are those of the mean loss over the step's examples.
pub fn micro_batch_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    loss: Tensor<B, 1>,
    micro_batches: usize,
    module: &M,
) -> GradientsParams {
    let loss = if micro_batches > 1 {
        loss / micro_batches as f64
    } else {
        loss
    };
    GradientsParams::from_grads(loss.backward(), module)
}

/// Adds a micro-batch's gradients to the step's sum so far (None before the first
/// micro-batch): PyTorch's `.grad` accumulation between `zero_grad` calls.
pub fn accumulate<B: AutodiffBackend, M: AutodiffModule<B>>(
    sum: Option<GradientsParams>,
    next: GradientsParams,
    module: &M,
) -> GradientsParams {
    let Some(sum) = sum else {
        return next;
    };
    let mut accumulator = GradientsAccumulator::<M>::new();
    accumulator.accumulate::<B>(module, sum);
    accumulator.accumulate::<B>(module, next);
    accumulator.grads()
}
