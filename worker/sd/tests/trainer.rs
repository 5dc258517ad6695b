//! Whole training runs on the tiny pipeline and the bundled demo images: the
//! files each method writes load back, a run is reproducible from its seed, and bad
//! input stops before the first step with a clear error.

mod common;

use std::path::{Path, PathBuf};

use atelier_sd::lora::{LoraFile, Target};
use atelier_sd::model_folder::{ModelFolder, Variant};
use atelier_sd::pipeline::StableDiffusion;
use atelier_sd::train::config::{Method, TrainConfig};
use atelier_sd::train::schedule::LrScheduler;
use atelier_sd::train::trainer::train;
use atelier_sd::weights::{named_tensors, SafetensorsFile};
use common::{fixture, TestBackend};

type Train = burn::backend::Autodiff<TestBackend>;

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../trainsets/demo")
}

fn config(method: Method) -> TrainConfig {
    TrainConfig {
        method,
        token: "<demo-style>".into(),
        steps: 2,
        lr: 1e-3,
        rank: 2,
        alpha: 2.0,
        resolution: 32,
        batch: 1,
        seed: 7,
        class_prompt: Some("a painting".into()),
        class_images: 2,
        class_steps: 2,
        ..TrainConfig::default()
    }
}

fn run(
    config: &TrainConfig,
    out: &Path,
) -> atelier_sd::Result<atelier_sd::train::trainer::TrainOutcome> {
    let mut seen = Vec::new();
    let outcome = train::<Train>(
        &fixture("tiny-sd"),
        &demo(),
        config,
        out,
        &Default::default(),
        |r| seen.push(r.step),
    )?;
    assert_eq!(seen, (1..=config.steps).collect::<Vec<_>>());
    Ok(outcome)
}

fn load_sd() -> StableDiffusion<TestBackend> {
    let folder = ModelFolder::open(fixture("tiny-sd"), Variant::Auto).unwrap();
    StableDiffusion::load(&folder, &Default::default()).unwrap()
}

#[test]
fn lora_run_writes_a_loadable_file_and_is_reproducible() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let cfg = config(Method::Lora);
    let first = run(&cfg, a.path()).unwrap();
    let second = run(&cfg, b.path()).unwrap();
    assert_eq!(first.losses, second.losses);
    assert!(first.losses.iter().all(|l| l.is_finite()));
    let file = a.path().join("pytorch_lora_weights.safetensors");
    let same = std::fs::read(&file).unwrap()
        == std::fs::read(b.path().join("pytorch_lora_weights.safetensors")).unwrap();
    assert!(same, "same seed, same adapter bytes");
    let mut sd = load_sd();
    // 2 attentions x 4 projections per transformer block; tiny-sd has 16 blocks.
    assert_eq!(sd.apply_lora(&file, 1.0).unwrap(), 128);
}

#[test]
fn dreambooth_run_draws_and_reuses_class_images() {
    let out = tempfile::tempdir().unwrap();
    let cfg = config(Method::Dreambooth);
    let outcome = run(&cfg, out.path()).unwrap();
    assert_eq!(outcome.class_images, 2);
    let class = out.path().join("class_images/class-0000.png");
    let modified = std::fs::metadata(&class).unwrap().modified().unwrap();
    run(&cfg, out.path()).unwrap();
    assert_eq!(
        std::fs::metadata(&class).unwrap().modified().unwrap(),
        modified,
        "cached class images are reused"
    );
}

#[test]
fn textual_inversion_run_writes_learned_embeds() {
    let out = tempfile::tempdir().unwrap();
    let outcome = run(&config(Method::Ti), out.path()).unwrap();
    assert_eq!(outcome.trainable_parameters, 16);
    let mut sd = load_sd();
    let tokens = sd
        .load_textual_inversion(&out.path().join("learned_embeds.safetensors"))
        .unwrap();
    assert_eq!(tokens, vec!["<demo-style>".to_string()]);
}

#[test]
fn bad_input_stops_before_the_first_step() {
    let out = tempfile::tempdir().unwrap();
    let error = |cfg: &TrainConfig, trainset: &Path| {
        train::<Train>(
            &fixture("tiny-sd"),
            trainset,
            cfg,
            out.path(),
            &Default::default(),
            |_| panic!("no step may run"),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let mut cfg = config(Method::Ti);
    cfg.token = "style".into();
    let message = error(&cfg, &demo());
    assert!(
        message.contains("token `style` is already in the vocabulary"),
        "{message}"
    );

    let mut cfg = config(Method::Lora);
    cfg.batch = 100;
    let message = error(&cfg, &demo());
    assert!(message.contains("fewer than the batch of 100"), "{message}");

    let broken = tempfile::tempdir().unwrap();
    std::fs::copy(
        demo().join("images/dots-0.png"),
        broken.path().join("ok.png"),
    )
    .unwrap();
    std::fs::write(broken.path().join("broken.png"), b"not a png").unwrap();
    let message = error(&config(Method::Lora), broken.path());
    assert!(
        message.contains("broken.png") && message.contains("cannot be read"),
        "{message}"
    );

    let message = error(&config(Method::Lora), &out.path().join("missing"));
    assert!(
        message.contains("missing") && message.contains("not a folder"),
        "{message}"
    );
}

/// A run stopped after step 4 and resumed from its step-3 checkpoint ends with the
/// same file, byte for byte, as the run that was never stopped.
fn resume_equals_uninterrupted(cfg: TrainConfig, files: &[&str]) {
    use atelier_sd::train::trainer::train_from;
    let method = cfg.method;
    let mut cfg = cfg;
    cfg.steps = 6;
    cfg.checkpoint_every = Some(3);
    let whole = tempfile::tempdir().unwrap();
    run(&cfg, whole.path()).unwrap();

    let stopped = tempfile::tempdir().unwrap();
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train::<Train>(
            &fixture("tiny-sd"),
            &demo(),
            &cfg,
            stopped.path(),
            &Default::default(),
            |r| assert!(r.step < 4, "stopped at step {}", r.step),
        )
    }));
    assert!(killed.is_err(), "the run was stopped mid-way");
    let checkpoint = stopped.path().join("checkpoint-3");
    assert!(checkpoint.join("optimizer.safetensors").is_file());
    let mut resumed_steps = Vec::new();
    train_from::<Train>(
        &fixture("tiny-sd"),
        &demo(),
        &cfg,
        stopped.path(),
        Some(&checkpoint),
        &Default::default(),
        |r| resumed_steps.push(r.step),
    )
    .unwrap();
    assert_eq!(resumed_steps, vec![4, 5, 6]);
    let mut other = cfg.clone();
    other.lr *= 2.0;
    let refused = train_from::<Train>(
        &fixture("tiny-sd"),
        &demo(),
        &other,
        stopped.path(),
        Some(&checkpoint),
        &Default::default(),
        |_| panic!("no step may run"),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(refused.contains("made with other settings"), "{refused}");
    for name in files.iter().chain(&["training.json"]) {
        let same = std::fs::read(whole.path().join(name)).unwrap()
            == std::fs::read(stopped.path().join(name)).unwrap();
        assert!(same, "{method}: {name} differs after resuming");
    }
}

#[test]
fn lora_resume_is_bit_exact() {
    resume_equals_uninterrupted(config(Method::Lora), &["pytorch_lora_weights.safetensors"]);
}

#[test]
fn dreambooth_resume_is_bit_exact() {
    resume_equals_uninterrupted(
        config(Method::Dreambooth),
        &["pytorch_lora_weights.safetensors"],
    );
}

#[test]
fn textual_inversion_resume_is_bit_exact() {
    resume_equals_uninterrupted(config(Method::Ti), &["learned_embeds.safetensors"]);
}

/// The schedule, accumulation and dropout keep a resume bit-exact: the schedule
/// follows the step, the dropout masks come from the run's generator.
#[test]
fn resume_with_a_schedule_accumulation_and_dropout_is_bit_exact() {
    let cfg = TrainConfig {
        lr_scheduler: LrScheduler::Cosine,
        lr_warmup_steps: 2,
        gradient_accumulation_steps: 2,
        lora_dropout: 0.25,
        kohya_file: true,
        ..config(Method::Lora)
    };
    resume_equals_uninterrupted(
        cfg,
        &[
            "pytorch_lora_weights.safetensors",
            "pytorch_lora_weights_kohya.safetensors",
        ],
    );
}

/// Each step's rate is the schedule's (diffusers' lambdas: the first step of a
/// warm-up at 0), and the optimizer uses it: a one-step run whose only step is
/// in the warm-up leaves the adapters as they were initialised (up = 0).
#[test]
fn the_schedule_sets_each_steps_learning_rate() {
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        steps: 4,
        lr_scheduler: LrScheduler::Linear,
        lr_warmup_steps: 2,
        ..config(Method::Lora)
    };
    let mut rates = Vec::new();
    train::<Train>(
        &fixture("tiny-sd"),
        &demo(),
        &cfg,
        out.path(),
        &Default::default(),
        |r| rates.push(r.lr),
    )
    .unwrap();
    // lr 1e-3 x [0/2, 1/2, (4-2)/(4-2), (4-3)/(4-2)]
    assert_eq!(rates, vec![0.0, 5e-4, 1e-3, 5e-4]);

    let up_values = |cfg: &TrainConfig| -> Vec<f32> {
        let out = tempfile::tempdir().unwrap();
        run(cfg, out.path()).unwrap();
        let file =
            SafetensorsFile::open(out.path().join("pytorch_lora_weights.safetensors")).unwrap();
        let names: Vec<String> = file
            .names()
            .filter(|n| n.ends_with(".lora.up.weight"))
            .map(str::to_string)
            .collect();
        assert_eq!(names.len(), 128);
        names
            .iter()
            .flat_map(|n| file.read_f32(n).unwrap().1)
            .collect()
    };
    let warming = TrainConfig {
        steps: 1,
        lr_scheduler: LrScheduler::ConstantWithWarmup,
        lr_warmup_steps: 1,
        ..config(Method::Lora)
    };
    assert!(up_values(&warming).iter().all(|&v| v == 0.0));
    let constant = TrainConfig {
        steps: 1,
        ..config(Method::Lora)
    };
    assert!(up_values(&constant).iter().any(|&v| v != 0.0));
}

/// Accumulation makes each step take `gradient_accumulation_steps` batches
/// (`steps` counts optimizer steps) and changes the result; LoRA dropout draws
/// its masks from the run's seed (the same seed, the same file) and changes the
/// result.
#[test]
fn accumulation_and_dropout_are_seeded_and_change_the_run() {
    let adapters = |cfg: &TrainConfig| -> (Vec<u8>, usize) {
        let out = tempfile::tempdir().unwrap();
        let outcome = run(cfg, out.path()).unwrap();
        (
            std::fs::read(out.path().join("pytorch_lora_weights.safetensors")).unwrap(),
            outcome.losses.len(),
        )
    };
    let plain = config(Method::Lora);
    let (plain_file, plain_steps) = adapters(&plain);
    let accumulated = TrainConfig {
        gradient_accumulation_steps: 3,
        ..plain.clone()
    };
    let (accumulated_file, accumulated_steps) = adapters(&accumulated);
    assert_eq!((plain_steps, accumulated_steps), (2, 2));
    assert_ne!(accumulated_file, plain_file);
    let dropout = TrainConfig {
        lora_dropout: 0.5,
        ..plain.clone()
    };
    let (first, _) = adapters(&dropout);
    let (second, _) = adapters(&dropout);
    assert!(first == second, "same seed, same masks, same file");
    assert_ne!(first, plain_file);
}

/// The kohya file has kohya's keys, alpha tensors and `ss_*` metadata, parses with
/// atelier's kohya reader, and merges into the same weights as the diffusers file
/// (whose header carries the alpha, here not equal to the rank).
#[test]
fn the_kohya_file_merges_like_the_diffusers_file() {
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        rank: 2,
        alpha: 3.0,
        kohya_file: true,
        ..config(Method::Lora)
    };
    let outcome = run(&cfg, out.path()).unwrap();
    let diffusers = out.path().join("pytorch_lora_weights.safetensors");
    let kohya = out.path().join("pytorch_lora_weights_kohya.safetensors");
    assert!(outcome.files.contains(&kohya), "{:?}", outcome.files);

    let parsed = LoraFile::read(&kohya).unwrap();
    assert!(parsed.kohya);
    assert_eq!(parsed.pairs.len(), 128);
    for ((target, module), pair) in &parsed.pairs {
        assert_eq!(*target, Target::Unet);
        assert!(module.contains("_attn"), "{module}");
        assert_eq!((pair.rank(), pair.alpha), (2, Some(3.0)), "{module}");
    }
    assert!(parsed.pairs.contains_key(&(
        Target::Unet,
        "mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0".into()
    )));
    let bytes = std::fs::read(&kohya).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap();
    for (key, value) in [
        ("ss_network_module", "networks.lora"),
        ("ss_network_dim", "2"),
        ("ss_network_alpha", "3.0"),
        ("ss_base_model_version", "sd_v1"),
    ] {
        assert_eq!(metadata.get(key).map(String::as_str), Some(value), "{key}");
    }
    // The diffusers file's alpha comes from its adapter metadata.
    let from_diffusers = LoraFile::read(&diffusers).unwrap();
    assert!(from_diffusers.pairs.values().all(|p| p.alpha == Some(3.0)));

    let merged = |file: &Path| {
        let mut sd = load_sd();
        assert_eq!(sd.apply_lora(file, 1.0).unwrap(), 128);
        named_tensors(&sd.unet)
    };
    let base = named_tensors(&load_sd().unet);
    let via_kohya = merged(&kohya);
    let via_diffusers = merged(&diffusers);
    assert!(via_kohya == via_diffusers, "the two files merge alike");
    assert!(via_kohya != base, "the LoRA changed the weights");
}

#[test]
fn a_nan_loss_stops_with_the_step_named_and_keeps_the_checkpoints() {
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(Method::Lora);
    // An absurd learning rate overflows the adapters after the first update.
    cfg.lr = 1e38;
    cfg.steps = 6;
    cfg.checkpoint_every = Some(1);
    let mut last = 0;
    let message = train::<Train>(
        &fixture("tiny-sd"),
        &demo(),
        &cfg,
        out.path(),
        &Default::default(),
        |r| last = r.step,
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    let failed = last + 1;
    eprintln!("{message}");
    assert!(message.contains(&format!("at step {failed}")), "{message}");
    assert!(failed <= cfg.steps, "{message}");
    for step in 1..failed {
        assert!(
            out.path()
                .join(format!(
                    "checkpoint-{step}/pytorch_lora_weights.safetensors"
                ))
                .is_file(),
            "checkpoint {step} kept"
        );
    }
}

#[test]
fn on_step_can_stop_the_run_after_a_checkpoint() {
    use atelier_sd::train::trainer::train_until;
    use std::ops::ControlFlow;
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(Method::Lora);
    cfg.steps = 4;
    cfg.checkpoint_every = Some(2);
    let mut seen = Vec::new();
    let stopped = train_until::<Train>(
        &fixture("tiny-sd"),
        &demo(),
        &cfg,
        out.path(),
        None,
        &Default::default(),
        |r| {
            seen.push((r.step, r.checkpoint.clone()));
            if r.step == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .map(|_| ())
    .unwrap_err();
    assert!(
        matches!(stopped, atelier_sd::SdError::Stopped { step: 2 }),
        "{stopped}"
    );
    let checkpoint = out.path().join("checkpoint-2");
    assert_eq!(seen, vec![(1, None), (2, Some(checkpoint.clone()))]);
    // The folder is complete when the step is reported.
    for name in [
        "pytorch_lora_weights.safetensors",
        "training.json",
        "optimizer.safetensors",
        "state.json",
    ] {
        assert!(checkpoint.join(name).is_file(), "{name}");
    }
    assert!(!out.path().join("pytorch_lora_weights.safetensors").exists());
}
