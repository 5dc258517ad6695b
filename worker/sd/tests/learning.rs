//! Does training learn? On the tiny pipeline and the bundled demo images, 300 steps
//! at 64 px with the study's settings (rank 4, alpha 4, lr 5e-4, batch 1) for each
//! method and seeds 1, 2 and 3: the mean loss of the last 50 steps against that of
//! the first 50. Each step's loss is one draw of image, noise and timestep (the
//! metric is not smoothed by fixing them or averaging more samples per step).
//!
//! LoRA and DreamBooth must lower it for every seed. Textual inversion cannot show
//! it this way on the tiny model: its random UNet barely listens to the text (any
//! prompt moves the mean loss by at most ~0.006, `zebra giraffe` against `style`
//! +0.003, the empty prompt -0.003), so the most a learned token can gain is
//! ~0.0065, while the difference of two 50-step means of single-draw losses (0.10
//! per step) has a standard deviation of ~0.02: the sign is the draws', at every
//! learning rate (5e-4, 5e-3 and 5e-2 give the same figures within 0.005). So for
//! textual inversion the test measures what training can change: the loss on 256
//! fixed held-out draws (the same for both) with the learned embedding against the
//! initial one must be lower by more than three standard errors.
//!
//! Minutes on the CPU, so ignored by default; it prints the figures:
//! `cargo test --release -p atelier-sd --test learning -- --ignored --nocapture`

mod common;

use std::path::{Path, PathBuf};

use atelier_sd::model_folder::{ModelFolder, Variant};
use atelier_sd::pipeline::{gaussian, StableDiffusion};
use atelier_sd::schedulers::Ddpm;
use atelier_sd::train::config::{Method, TrainConfig, STYLE_TEMPLATES};
use atelier_sd::train::data::{batch, load_pixels, Trainset};
use atelier_sd::train::step::{diffusion_loss, encode_latents};
use atelier_sd::train::trainer::train;
use burn::tensor::ElementConversion;
use common::{fixture, TestBackend};
use rand::{Rng, SeedableRng};

type Train = burn::backend::Autodiff<TestBackend>;

const STEPS: usize = 300;
const WINDOW: usize = 50;
const RESOLUTION: usize = 64;
const TOKEN: &str = "<demo-style>";

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../trainsets/demo")
}

fn settings(method: Method, seed: u64) -> TrainConfig {
    TrainConfig {
        method,
        token: TOKEN.into(),
        steps: STEPS,
        resolution: RESOLUTION,
        seed,
        class_prompt: Some("a picture".into()),
        class_images: 12,
        ..TrainConfig::default()
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Per-draw losses of the base model on 256 held-out draws (image, template,
/// VAE noise, noise, timestep from a fixed seed), with `embeds` loaded and `{}`
/// of the templates replaced by `word`.
fn held_out_losses(embeds: Option<&Path>, word: &str) -> Vec<f64> {
    let device = Default::default();
    let folder = ModelFolder::open(fixture("tiny-sd"), Variant::Auto).unwrap();
    let mut sd = StableDiffusion::<TestBackend>::load(&folder, &device).unwrap();
    if let Some(file) = embeds {
        sd.load_textual_inversion(file).unwrap();
    }
    let ddpm = Ddpm::new(&folder.scheduler_config().unwrap()).unwrap();
    let set = Trainset::open(&demo()).unwrap();
    let latent = RESOLUTION / sd.vae_config.downscale();
    let shape = [1, sd.latent_channels, latent, latent];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12_345);
    (0..256)
        .map(|i| {
            let example = &set.examples[i % set.len()];
            let template = STYLE_TEMPLATES[rng.gen_range(0..STYLE_TEMPLATES.len())];
            let (vae_seed, noise_seed) = (rng.gen(), rng.gen());
            let t = rng.gen_range(0..ddpm.num_train_timesteps());
            let pixels = load_pixels(&example.path, RESOLUTION, true, false, &mut rng).unwrap();
            let pixels = batch::<TestBackend>(vec![pixels], RESOLUTION, &device);
            let context = sd.encode_prompts(&[&template.replace("{}", word)]);
            let latents = encode_latents(
                &sd.vae,
                pixels,
                gaussian::<TestBackend, 4>(vae_seed, shape, &device),
                sd.vae_config.scaling_factor,
            );
            let noise = gaussian::<TestBackend, 4>(noise_seed, shape, &device);
            let loss = diffusion_loss(&sd.unet, &ddpm, latents, noise, &[t], &context, None);
            loss.total.into_scalar().elem::<f64>()
        })
        .collect()
}

#[test]
#[ignore = "minutes on the CPU: cargo test --release -p atelier-sd --test learning -- --ignored --nocapture"]
fn lora_and_dreambooth_lower_the_loss_and_textual_inversion_the_held_out_loss() {
    // The new row starts as `style`'s, so `style` in the templates is the start.
    let initial = held_out_losses(None, "style");
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for method in [Method::Lora, Method::Dreambooth, Method::Ti] {
        for seed in 1..=3 {
            let cfg = settings(method, seed);
            let out = tempfile::tempdir().unwrap();
            let outcome = train::<Train>(
                &fixture("tiny-sd"),
                &demo(),
                &cfg,
                out.path(),
                &Default::default(),
                |_| {},
            )
            .unwrap();
            let losses = &outcome.losses;
            assert_eq!(losses.len(), STEPS);
            let first = mean(&losses[..WINDOW]);
            let last = mean(&losses[STEPS - WINDOW..]);
            let held_out = (method == Method::Ti).then(|| {
                let learned =
                    held_out_losses(Some(&out.path().join("learned_embeds.safetensors")), TOKEN);
                let diffs: Vec<f64> = learned.iter().zip(&initial).map(|(l, i)| l - i).collect();
                let d = mean(&diffs);
                let n = diffs.len() as f64;
                let se = (diffs.iter().map(|x| (x - d).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
                    / n.sqrt();
                (mean(&initial), mean(&learned), d, se)
            });
            eprintln!("{method} seed {seed}: first {WINDOW} {first:.4}, last {WINDOW} {last:.4}");
            match held_out {
                None if last >= first => failed.push(format!("{method} seed {seed}")),
                Some((_, _, d, se)) if d >= -3.0 * se => {
                    failed.push(format!("{method} seed {seed} (held-out {d:+.5} ± {se:.5})"))
                }
                _ => {}
            }
            rows.push((method, seed, cfg.lr, first, last, held_out));
        }
    }
    println!(
        "| method | seed | lr | mean loss, steps 1-{WINDOW} | steps {}-{STEPS} | change | \
         held-out loss, initial -> learned (difference ± s.e.) |",
        STEPS - WINDOW + 1
    );
    println!("|---|---|---|---|---|---|---|");
    for (method, seed, lr, first, last, held_out) in &rows {
        let held_out = match held_out {
            Some((initial, learned, d, se)) => {
                format!("{initial:.4} -> {learned:.4} ({d:+.5} ± {se:.5})")
            }
            None => "-".into(),
        };
        println!(
            "| {method} | {seed} | {lr:.0e} | {first:.4} | {last:.4} | {:+.4} | {held_out} |",
            last - first
        );
    }
    assert!(failed.is_empty(), "did not learn: {}", failed.join(", "));
}
