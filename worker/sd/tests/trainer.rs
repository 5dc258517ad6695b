//! Whole training runs on the tiny pipeline and the bundled demo images: the
//! files each method writes load back, a run is reproducible from its seed, and bad
//! input stops before the first step with a clear error.

mod common;

use std::path::{Path, PathBuf};

use atelier_sd::model_folder::{ModelFolder, Variant};
use atelier_sd::pipeline::StableDiffusion;
use atelier_sd::train::config::{Method, TrainConfig};
use atelier_sd::train::trainer::train;
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
        resolution: 64,
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
fn resume_equals_uninterrupted(method: Method, file: &str) {
    use atelier_sd::train::trainer::train_from;
    let mut cfg = config(method);
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
    for name in [file, "training.json"] {
        let same = std::fs::read(whole.path().join(name)).unwrap()
            == std::fs::read(stopped.path().join(name)).unwrap();
        assert!(same, "{method}: {name} differs after resuming");
    }
}

#[test]
fn lora_resume_is_bit_exact() {
    resume_equals_uninterrupted(Method::Lora, "pytorch_lora_weights.safetensors");
}

#[test]
fn textual_inversion_resume_is_bit_exact() {
    resume_equals_uninterrupted(Method::Ti, "learned_embeds.safetensors");
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
