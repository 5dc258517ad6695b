//! A training run: LoRA, DreamBooth-LoRA with prior preservation, or textual
//! inversion, on a diffusers folder and a folder of images, writing the files
//! diffusers, kohya and A1111 tools load.
//!
//! Every random draw (example order, crops, flips, templates, the VAE sample's
//! noise, the diffusion noise, timesteps) comes from one seeded ChaCha generator,
//! so a run is reproducible from its seed.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::clip::ClipTextModel;
use crate::error::{Result, SdError};
use crate::model_folder::{ModelFolder, Variant};
use crate::pipeline::{gaussian, GenerateOptions, StableDiffusion};
use crate::precision::{cast_frozen, Precision};
use crate::schedulers::{Ddpm, SchedulerKind};
use crate::tokenizer::ClipTokenizer;
use crate::train::adamw::{AdamW, AdamWConfig};
use crate::train::adapters::{
    add_unet_lora, save_diffusers_lora, save_kohya_lora, seed_lora_dropout, set_adapter_tensors,
    LoraShape,
};
use crate::train::checkpoint;
use crate::train::config::{Method, TrainConfig, STYLE_TEMPLATES};
use crate::train::data::{batch, load_pixels, Trainset};
use crate::train::step::{accumulate, diffusion_loss, encode_latents, micro_batch_gradients};
use crate::weights::{write_f32_safetensors, SafetensorsFile};

/// What the caller hears after each step.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub step: usize,
    pub steps: usize,
    /// The mean loss of the step's micro-batches.
    pub loss: f64,
    /// The learning rate of the step's update (the schedule's value).
    pub lr: f64,
    /// Seconds since training started (class images excluded).
    pub seconds: f64,
    /// The checkpoint folder written after this step, complete, if one was due.
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub files: Vec<PathBuf>,
    pub losses: Vec<f64>,
    pub trainable_parameters: usize,
    pub images: usize,
    pub class_images: usize,
}

/// Trains and writes the outputs into `out`.
pub fn train<B: AutodiffBackend>(
    model: &Path,
    trainset: &Path,
    config: &TrainConfig,
    out: &Path,
    device: &B::Device,
    on_step: impl FnMut(&StepReport),
) -> Result<TrainOutcome> {
    train_from::<B>(model, trainset, config, out, None, device, on_step)
}

/// Like [`train`], continuing from a checkpoint folder (`out/checkpoint-N`) of a
/// run with the same config: the result equals the uninterrupted run's, bit for
/// bit on the same backend.
pub fn train_from<B: AutodiffBackend>(
    model: &Path,
    trainset: &Path,
    config: &TrainConfig,
    out: &Path,
    resume: Option<&Path>,
    device: &B::Device,
    mut on_step: impl FnMut(&StepReport),
) -> Result<TrainOutcome> {
    train_until::<B>(model, trainset, config, out, resume, device, |report| {
        on_step(report);
        ControlFlow::Continue(())
    })
}

/// Like [`train_from`], where `on_step` decides whether to go on: `Break` ends the
/// run after that step (and its checkpoint, if one was due) with
/// [`SdError::Stopped`]; a job system uses it to honour a cancel.
pub fn train_until<B: AutodiffBackend>(
    model: &Path,
    trainset: &Path,
    config: &TrainConfig,
    out: &Path,
    resume: Option<&Path>,
    device: &B::Device,
    mut on_step: impl FnMut(&StepReport) -> ControlFlow<()>,
) -> Result<TrainOutcome> {
    config
        .validate()
        .map_err(|m| SdError::Invalid(format!("training config: {m}")))?;
    let set = Trainset::open(trainset)?;
    if set.len() < config.batch {
        return Err(SdError::Invalid(format!(
            "trainset `{}` has {} image(s), fewer than the batch of {}",
            set.root.display(),
            set.len(),
            config.batch
        )));
    }
    let folder = ModelFolder::open(model, Variant::Auto)?;
    let vae_config = folder.vae_config()?;
    let factor = vae_config.downscale();
    if !config.resolution.is_multiple_of(factor) {
        return Err(SdError::Invalid(format!(
            "training config: `resolution` {} is not a multiple of the VAE's factor {factor}",
            config.resolution
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| SdError::io(out, e))?;
    B::seed(device, config.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);

    let mut tokenizer = ClipTokenizer::from_dir(&folder.component("tokenizer")?)?;
    let mut vae = folder.load_vae::<B>(device)?.no_grad();
    let mut text = folder.load_text_encoder::<B>(device)?.no_grad();
    let ddpm = Ddpm::new(&folder.scheduler_config()?)?;
    let mut unet = folder.load_unet::<B>(device)?;

    // Method set-up: what is trainable.
    let mut ti: Option<TiState<B>> = None;
    let trainable_parameters = match config.method {
        Method::Lora | Method::Dreambooth => {
            let shape = LoraShape {
                rank: config.rank,
                alpha: config.alpha,
            };
            let before = crate::weights::parameter_count(&unet);
            let (adapted, _) = add_unet_lora(unet, shape, &mut rng, device);
            unet = adapted;
            crate::weights::parameter_count(&unet) - before
        }
        Method::Ti => {
            unet = unet.no_grad();
            let state = TiState::prepare(&mut tokenizer, &mut text, config, &folder)?;
            let hidden = text.hidden_size();
            ti = Some(state);
            hidden
        }
    };

    if config.precision != Precision::F32 {
        let dtype = config.precision.dtype();
        unet = cast_frozen(unet, dtype);
        vae = cast_frozen(vae, dtype);
    }

    let class_images = match config.method {
        Method::Dreambooth => class_images::<B::InnerBackend>(&folder, config, out, device)?,
        _ => Vec::new(),
    };

    let mut optimizer = AdamW::<B>::new(AdamWConfig {
        lr: config.lr,
        // diffusers' textual-inversion script does not clip.
        max_grad_norm: match config.method {
            Method::Ti => None,
            _ => config.max_grad_norm,
        },
        ..AdamWConfig::default()
    });
    let steps = config.steps;
    let num_train_timesteps = ddpm.num_train_timesteps();
    let latent = config.resolution / factor;
    let latent_channels = folder.unet_config()?.in_channels;
    let mut order: Vec<usize> = Vec::new();
    let mut losses = Vec::with_capacity(steps);
    let mut first = 1;
    if let Some(dir) = resume {
        let state = checkpoint::read_state(dir)?;
        let refuse = |message: String| {
            SdError::Invalid(format!("checkpoint `{}`: {message}", dir.display()))
        };
        // Settings that change what is written, not what is trained, may differ.
        let mut saved = state.config.clone();
        saved.checkpoint_every = config.checkpoint_every;
        saved.kohya_file = config.kohya_file;
        if saved != *config {
            return Err(refuse(format!(
                "made with other settings: {}",
                serde_json::to_string(&state.config).expect("serialisable")
            )));
        }
        if state.rng_seed != config.seed {
            return Err(refuse(format!(
                "made with seed {}, this run has seed {}",
                state.rng_seed, config.seed
            )));
        }
        if state.step >= steps {
            return Err(refuse(format!("already at step {} of {steps}", state.step)));
        }
        match &ti {
            None => {
                let file = SafetensorsFile::open(dir.join("pytorch_lora_weights.safetensors"))?;
                let names: Vec<String> = file.names().map(str::to_string).collect();
                let mut tensors = std::collections::HashMap::new();
                for name in names {
                    tensors.insert(name.clone(), file.read_f32(&name)?);
                }
                unet = set_adapter_tensors(unet, &tensors)?;
                checkpoint::load_optimizer(dir, &unet, &mut optimizer, &state, device)?;
            }
            Some(ti_state) => {
                let file = SafetensorsFile::open(dir.join("learned_embeds.safetensors"))?;
                let (_, values) = file.read_f32(&config.token)?;
                text = ti_state.set_learned(text, values);
                checkpoint::load_optimizer(dir, &text, &mut optimizer, &state, device)?;
            }
        }
        let word_pos: u128 = state
            .rng_word_pos
            .parse()
            .map_err(|_| refuse(format!("bad `rng_word_pos` {:?}", state.rng_word_pos)))?;
        rng.set_word_pos(word_pos);
        order = state.order;
        losses = state.losses;
        first = state.step + 1;
    }
    let started = Instant::now();
    let micro_batches = config.gradient_accumulation_steps;
    for step in first..=steps {
        optimizer.config.lr = config.lr
            * config
                .lr_scheduler
                .factor(step - 1, config.lr_warmup_steps, steps);
        let mut grads: Option<GradientsParams> = None;
        let mut loss_sum = 0.0;
        for _ in 0..micro_batches {
            // 1. the micro-batch: examples in a shuffled order, epoch after epoch
            let mut pixels = Vec::with_capacity(config.batch * 2);
            let mut captions = Vec::with_capacity(config.batch * 2);
            for _ in 0..config.batch {
                if order.is_empty() {
                    order = (0..set.len()).collect();
                    order.shuffle(&mut rng);
                }
                let example = &set.examples[order.pop().expect("refilled above")];
                pixels.push(load_pixels(
                    &example.path,
                    config.resolution,
                    config.center_crop,
                    config.random_flip,
                    &mut rng,
                )?);
                captions.push(caption(config, example.caption.as_deref(), &mut rng));
            }
            let prior = if config.method == Method::Dreambooth {
                let class_prompt = config.class_prompt.clone().unwrap_or_default();
                for _ in 0..config.batch {
                    let path = &class_images[rng.gen_range(0..class_images.len())];
                    pixels.push(load_pixels(path, config.resolution, true, false, &mut rng)?);
                    captions.push(class_prompt.clone());
                }
                Some(config.prior_loss_weight)
            } else {
                None
            };
            let n = pixels.len();
            let pixel_values = batch::<B>(pixels, config.resolution, device);
            let ids = token_ids::<B>(&tokenizer, &captions, device);

            // 2. the random draws of the micro-batch
            let vae_noise =
                gaussian::<B, 4>(rng.gen(), [n, latent_channels, latent, latent], device);
            let noise = gaussian::<B, 4>(rng.gen(), [n, latent_channels, latent, latent], device);
            let timesteps: Vec<usize> = (0..n)
                .map(|_| rng.gen_range(0..num_train_timesteps))
                .collect();
            if config.lora_dropout > 0.0 {
                seed_lora_dropout(&mut unet, config.lora_dropout, &mut rng);
            }

            // 3. loss and gradients, summed over the micro-batches
            let context = match config.method {
                Method::Ti => text.forward(ids),
                _ => text.forward(ids).detach(),
            };
            let latents = encode_latents(&vae, pixel_values, vae_noise, vae_config.scaling_factor);
            let loss = diffusion_loss(&unet, &ddpm, latents, noise, &timesteps, &context, prior);
            let value: f64 = loss.total.clone().into_scalar().elem();
            if !value.is_finite() {
                return Err(SdError::Invalid(format!(
                    "the loss is {value} at step {step}: training stopped (outputs of earlier \
                     checkpoints in `{}` are kept)",
                    out.display()
                )));
            }
            loss_sum += value;
            grads = Some(match &ti {
                Some(_) => {
                    let micro = micro_batch_gradients(loss.total, micro_batches, &text);
                    accumulate(grads.take(), micro, &text)
                }
                None => {
                    let micro = micro_batch_gradients(loss.total, micro_batches, &unet);
                    accumulate(grads.take(), micro, &unet)
                }
            });
        }

        // 4. one optimizer step (clipping, schedule) for the accumulated gradients
        let grads = grads.expect("at least one micro-batch");
        match &ti {
            Some(state) => {
                let (next, _) = optimizer.step(text, &grads);
                text = state.restore_rows(next);
            }
            None => {
                let (next, _) = optimizer.step(unet, &grads);
                unet = next;
            }
        }
        // The mean over the step's micro-batches: the loss of the whole step's batch.
        let value = loss_sum / micro_batches as f64;
        losses.push(value);
        let checkpoint = if config
            .checkpoint_every
            .is_some_and(|every| step % every == 0 && step < steps)
        {
            let dir = out.join(format!("checkpoint-{step}"));
            std::fs::create_dir_all(&dir).map_err(|e| SdError::io(&dir, e))?;
            write_outputs(config, &unet, &text, ti.as_ref(), &dir, &losses)?;
            let state = checkpoint::TrainerState {
                step,
                optimizer_steps: optimizer.steps,
                rng_seed: config.seed,
                rng_word_pos: rng.get_word_pos().to_string(),
                order: order.clone(),
                losses: losses.clone(),
                config: config.clone(),
            };
            match &ti {
                None => checkpoint::save(&dir, &unet, &optimizer, &state)?,
                Some(_) => checkpoint::save(&dir, &text, &optimizer, &state)?,
            }
            Some(dir)
        } else {
            None
        };
        let flow = on_step(&StepReport {
            step,
            steps,
            loss: value,
            lr: optimizer.config.lr,
            seconds: started.elapsed().as_secs_f64(),
            checkpoint,
        });
        if flow.is_break() {
            return Err(SdError::Stopped { step });
        }
    }

    let files = write_outputs(config, &unet, &text, ti.as_ref(), out, &losses)?;
    Ok(TrainOutcome {
        files,
        losses,
        trainable_parameters,
        images: set.len(),
        class_images: class_images.len(),
    })
}

fn caption(config: &TrainConfig, own: Option<&str>, rng: &mut impl Rng) -> String {
    match (config.method, own) {
        (Method::Ti, _) => {
            STYLE_TEMPLATES[rng.gen_range(0..STYLE_TEMPLATES.len())].replace("{}", &config.token)
        }
        (_, Some(caption)) => caption.to_string(),
        (_, None) => config.caption_template.replace("{}", &config.token),
    }
}

fn token_ids<B: Backend>(
    tokenizer: &ClipTokenizer,
    captions: &[String],
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let rows: Vec<Vec<u32>> = captions
        .iter()
        .map(|c| tokenizer.encode_padded(c))
        .collect();
    let len = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&id| id as i64).collect();
    Tensor::from_data(TensorData::new(flat, [captions.len(), len]), device)
}

/// Textual inversion: the new row and a copy of every other row, which is put
/// back after each optimizer step (diffusers' `index_no_updates`).
struct TiState<B: AutodiffBackend> {
    placeholder: usize,
    original: Tensor<B::InnerBackend, 2>,
}

impl<B: AutodiffBackend> TiState<B> {
    fn prepare(
        tokenizer: &mut ClipTokenizer,
        text: &mut ClipTextModel<B>,
        config: &TrainConfig,
        folder: &ModelFolder,
    ) -> Result<Self> {
        let tokenizer_dir = folder.root().join("tokenizer");
        if tokenizer.token_id(&config.token).is_some() {
            return Err(SdError::Invalid(format!(
                "token `{}` is already in the vocabulary of `{}`: textual inversion needs a \
                 new placeholder such as `<my-style>`",
                config.token,
                tokenizer_dir.display()
            )));
        }
        let init = tokenizer.encode(&config.initializer_token);
        // BOS, one token, EOS.
        if init.len() != 3 {
            return Err(SdError::Invalid(format!(
                "initializer token `{}` is {} tokens, not one",
                config.initializer_token,
                init.len().saturating_sub(2)
            )));
        }
        let init_id = init[1] as usize;
        let placeholder = text.vocab_rows();
        let ids = tokenizer.add_tokens(&[config.token.as_str()]);
        if ids != [placeholder as u32] {
            return Err(SdError::Invalid(format!(
                "the tokenizer gave `{}` id {ids:?}, but the embedding table has {placeholder} rows",
                config.token
            )));
        }
        let table = text.text_model.embeddings.token_embedding.weight.val();
        let row: Vec<f32> = table
            .narrow(0, init_id, 1)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| SdError::Invalid(format!("{e:?}")))?;
        text.append_token_embeddings(row, 1);
        let embedding = &mut text.text_model.embeddings.token_embedding;
        let original = embedding.weight.val().inner();
        let id = embedding.weight.id;
        embedding.weight = Param::initialized(id, embedding.weight.val().detach().require_grad());
        Ok(TiState {
            placeholder,
            original,
        })
    }

    fn restore_rows(&self, mut text: ClipTextModel<B>) -> ClipTextModel<B> {
        let embedding = &mut text.text_model.embeddings.token_embedding;
        let trained = embedding.weight.val().inner();
        let rows = trained.dims()[0];
        let restored = Tensor::cat(
            vec![
                self.original.clone().narrow(0, 0, self.placeholder),
                trained.narrow(0, self.placeholder, rows - self.placeholder),
            ],
            0,
        );
        let id = embedding.weight.id;
        embedding.weight = Param::initialized(id, Tensor::from_inner(restored).require_grad());
        text
    }

    /// Sets the learned rows (row-major [n, hidden]) after the original ones.
    fn set_learned(&self, mut text: ClipTextModel<B>, values: Vec<f32>) -> ClipTextModel<B> {
        let embedding = &mut text.text_model.embeddings.token_embedding;
        let [_, hidden] = self.original.dims();
        let rows = values.len() / hidden;
        let device = self.original.device();
        let learned = Tensor::<B::InnerBackend, 2>::from_data(
            TensorData::new(values, [rows, hidden]),
            &device,
        );
        let table = Tensor::cat(
            vec![
                self.original.clone().narrow(0, 0, self.placeholder),
                learned,
            ],
            0,
        );
        let id = embedding.weight.id;
        embedding.weight = Param::initialized(id, Tensor::from_inner(table).require_grad());
        text
    }

    /// The learned rows, [n, hidden].
    fn learned(&self, text: &ClipTextModel<B>) -> (Vec<usize>, Vec<f32>) {
        let table = text
            .text_model
            .embeddings
            .token_embedding
            .weight
            .val()
            .inner();
        let [rows, hidden] = table.dims();
        let values = table
            .narrow(0, self.placeholder, rows - self.placeholder)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("converted to f32");
        (vec![rows - self.placeholder, hidden], values)
    }
}

/// Writes the method's files into `dir`: `pytorch_lora_weights.safetensors` (and
/// with `kohya_file` `pytorch_lora_weights_kohya.safetensors`), or
/// `learned_embeds.safetensors`; and `training.json` (config and losses).
fn write_outputs<B: AutodiffBackend>(
    config: &TrainConfig,
    unet: &crate::unet_2d::UNet2DConditionModel<B>,
    text: &ClipTextModel<B>,
    ti: Option<&TiState<B>>,
    dir: &Path,
    losses: &[f64],
) -> Result<Vec<PathBuf>> {
    let config_json = serde_json::to_string(config).expect("a config serialises");
    let mut files = Vec::new();
    match ti {
        None => {
            let path = dir.join("pytorch_lora_weights.safetensors");
            save_diffusers_lora(
                unet,
                &path,
                &[
                    ("atelier_training_config", config_json.clone()),
                    ("lora_adapter_metadata", adapter_metadata(config)),
                ],
            )?;
            files.push(path);
            if config.kohya_file {
                let path = dir.join("pytorch_lora_weights_kohya.safetensors");
                let shape = LoraShape {
                    rank: config.rank,
                    alpha: config.alpha,
                };
                save_kohya_lora(unet, &path, shape, &kohya_metadata(config, &config_json))?;
                files.push(path);
            }
        }
        Some(state) => {
            let (shape, values) = state.learned(text);
            let path = dir.join("learned_embeds.safetensors");
            write_f32_safetensors(
                &path,
                &[(config.token.clone(), shape, values)],
                &[
                    ("format", "pt".to_string()),
                    ("atelier_training_config", config_json.clone()),
                ],
            )?;
            files.push(path);
        }
    }
    let summary = dir.join("training.json");
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "config": config,
        "losses": losses,
    }))
    .expect("serialisable");
    std::fs::write(&summary, text).map_err(|e| SdError::io(&summary, e))?;
    files.push(summary);
    Ok(files)
}

/// peft's `LoraConfig` fields that set the scale, as diffusers writes them into
/// the safetensors header (`lora_adapter_metadata`, keys prefixed by the
/// component): without them diffusers and atelier take alpha = rank.
fn adapter_metadata(config: &TrainConfig) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "unet.r": config.rank,
        "unet.lora_alpha": config.alpha,
        "unet.target_modules": ["to_k", "to_out.0", "to_q", "to_v"],
    }))
    .expect("serialisable")
}

/// The training settings kohya's sd-scripts record (`ss_*`, values as Python's
/// `str`) beside atelier's own config.
fn kohya_metadata(config: &TrainConfig, config_json: &str) -> Vec<(&'static str, String)> {
    vec![
        ("atelier_training_config", config_json.to_string()),
        ("ss_learning_rate", format!("{:?}", config.lr)),
        ("ss_lr_scheduler", config.lr_scheduler.to_string()),
        ("ss_lr_warmup_steps", config.lr_warmup_steps.to_string()),
        ("ss_max_train_steps", config.steps.to_string()),
        (
            "ss_gradient_accumulation_steps",
            config.gradient_accumulation_steps.to_string(),
        ),
        ("ss_train_batch_size", config.batch.to_string()),
        ("ss_network_dropout", format!("{:?}", config.lora_dropout)),
        ("ss_seed", config.seed.to_string()),
        (
            "ss_training_comment",
            format!("atelier {} `{}`", config.method, config.token),
        ),
    ]
}

/// DreamBooth's class images: drawn by the base model from the class prompt before
/// training, cached under `out/class_images/` and reused by later runs.
fn class_images<B: Backend>(
    folder: &ModelFolder,
    config: &TrainConfig,
    out: &Path,
    device: &B::Device,
) -> Result<Vec<PathBuf>> {
    let prompt = config.class_prompt.clone().unwrap_or_default();
    let dir = out.join("class_images");
    std::fs::create_dir_all(&dir).map_err(|e| SdError::io(&dir, e))?;
    let path = |i: usize| dir.join(format!("class-{i:04}.png"));
    let prompt_file = dir.join("prompt.txt");
    let cached_prompt = std::fs::read_to_string(&prompt_file).unwrap_or_default();
    let existing = if cached_prompt == prompt {
        (0..config.class_images)
            .take_while(|&i| path(i).is_file())
            .count()
    } else {
        0
    };
    if existing < config.class_images {
        let sd = StableDiffusion::<B>::load(folder, device)?;
        std::fs::write(&prompt_file, &prompt).map_err(|e| SdError::io(&prompt_file, e))?;
        let options = GenerateOptions {
            prompt: prompt.clone(),
            negative_prompt: None,
            steps: config.class_steps,
            guidance: 7.5,
            scheduler: SchedulerKind::Ddim,
        };
        for i in existing..config.class_images {
            let latents = sd.random_latents(config.seed.wrapping_add(i as u64 + 1), None);
            let image = sd.generate(&options, latents, |_, _| {})?;
            let [_, _, h, w] = image.dims();
            let values: Vec<f32> = image
                .into_data()
                .convert::<f32>()
                .into_vec()
                .map_err(|e| SdError::Invalid(format!("{e:?}")))?;
            let plane = h * w;
            let mut rgb = Vec::with_capacity(plane * 3);
            for p in 0..plane {
                for c in 0..3 {
                    rgb.push((values[c * plane + p] * 255.0).round().clamp(0.0, 255.0) as u8);
                }
            }
            let target = path(i);
            image::RgbImage::from_raw(w as u32, h as u32, rgb)
                .expect("buffer of the image's size")
                .save(&target)
                .map_err(|e| {
                    SdError::Invalid(format!("cannot write `{}`: {e}", target.display()))
                })?;
        }
    }
    Ok((0..config.class_images).map(path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_caption_wins_over_the_template_but_not_for_textual_inversion() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut config = TrainConfig {
            token: "<x-style>".into(),
            caption_template: "art in the style of {}".into(),
            ..TrainConfig::default()
        };
        for method in [Method::Lora, Method::Dreambooth] {
            config.method = method;
            let own = caption(&config, Some("a red ramp, <x-style>"), &mut rng);
            assert_eq!(own, "a red ramp, <x-style>");
            let templated = caption(&config, None, &mut rng);
            assert_eq!(templated, "art in the style of <x-style>");
        }
        assert_eq!(rng.get_word_pos(), 0, "LoRA captions draw nothing");
        config.method = Method::Ti;
        let drawn: std::collections::BTreeSet<String> = (0..200)
            .map(|_| caption(&config, Some("ignored"), &mut rng))
            .collect();
        let templates: std::collections::BTreeSet<String> = STYLE_TEMPLATES
            .iter()
            .map(|t| t.replace("{}", "<x-style>"))
            .collect();
        assert_eq!(drawn, templates, "ti draws every style template");
    }
}
