//! `atelier train` as a user runs it, on the tiny diffusers pipeline of the model
//! library's fixtures and the demo trainset: a few steps at 64 px, the files it
//! writes (diffusers LoRA keys, learned embeddings, `training.json`, `loss.png`),
//! and bad input refused with exit code 3 and a message naming what is wrong.

mod process;

use std::path::{Path, PathBuf};

use process::{atelier, repo, sd_fixture, stderr};

fn tiny_sd() -> PathBuf {
    sd_fixture("tiny-sd")
}

fn demo_images() -> PathBuf {
    repo().join("trainsets/demo/images")
}

fn tensors(path: &Path) -> Vec<(String, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<usize>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    out.sort();
    out
}

fn assert_loss_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    let image = image::load_from_memory(&bytes).unwrap();
    assert!(image.width() >= 600 && image.height() >= 300);
}

#[test]
fn lora_run_writes_diffusers_weights_a_summary_and_a_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = atelier(&[
        "train",
        "--method",
        "lora",
        "--model",
        tiny_sd().to_str().unwrap(),
        "--trainset",
        demo_images().to_str().unwrap(),
        "--token",
        "<demo-style>",
        "--steps",
        "4",
        "--resolution",
        "64",
        "--batch",
        "1",
        "--seed",
        "1",
        "-o",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["method"], "lora");
    assert_eq!(report["token"], "<demo-style>");
    assert_eq!(report["steps"], 4);
    assert_eq!(report["images"], 12);
    assert!(report["final_loss"].as_f64().unwrap().is_finite());
    assert_eq!(report["config"]["resolution"], 64);

    // Every attention projection of the tiny UNet (16 transformer blocks x attn1/attn2
    // x to_q/to_k/to_v/to_out.0 = 128 layers): a down and an up matrix each.
    let lora = out_dir.join("pytorch_lora_weights.safetensors");
    let names = tensors(&lora);
    assert_eq!(names.len(), 256);
    let key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight";
    let (_, shape) = names.iter().find(|(n, _)| n == key).expect(key);
    assert_eq!(shape[0], 4, "rank 4 by default");
    assert!(names.iter().all(|(n, _)| n.starts_with("unet.")
        && (n.ends_with(".lora.down.weight") || n.ends_with(".lora.up.weight"))));

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("training.json")).unwrap())
            .unwrap();
    assert_eq!(summary["losses"].as_array().unwrap().len(), 4);
    assert_loss_png(&out_dir.join("loss.png"));
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(files.iter().any(|f| f.ends_with("loss.png")), "{files:?}");
}

#[test]
fn schedule_accumulation_dropout_flags_and_a_kohya_file() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = atelier(&[
        "train",
        "--model",
        tiny_sd().to_str().unwrap(),
        "--trainset",
        demo_images().to_str().unwrap(),
        "--token",
        "<demo-style>",
        "--steps",
        "2",
        "--resolution",
        "64",
        "--rank",
        "2",
        "--alpha",
        "3",
        "--lr-scheduler",
        "cosine",
        "--lr-warmup-steps",
        "1",
        "--grad-accum",
        "2",
        "--lora-dropout",
        "0.1",
        "--kohya",
        "-o",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"], 2);
    assert_eq!(report["config"]["lr_scheduler"], "cosine");
    assert_eq!(report["config"]["lr_warmup_steps"], 1);
    assert_eq!(report["config"]["gradient_accumulation_steps"], 2);
    assert_eq!(report["config"]["lora_dropout"], 0.1);
    // 128 adapted layers: down, up and alpha each, under kohya's names.
    let kohya = out_dir.join("pytorch_lora_weights_kohya.safetensors");
    let names = tensors(&kohya);
    assert_eq!(names.len(), 3 * 128);
    let layer = "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0";
    for (suffix, shape) in [
        (".alpha", vec![]),
        (".lora_down.weight", vec![2, 8]),
        (".lora_up.weight", vec![8, 2]),
    ] {
        let name = format!("{layer}{suffix}");
        assert!(names.contains(&(name.clone(), shape)), "{name}: {names:?}");
    }
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("_kohya.safetensors")),
        "{files:?}"
    );
}

#[test]
fn textual_inversion_from_a_yaml_file_with_a_flag_over_it() {
    let dir = tempfile::tempdir().unwrap();
    // Paths in the file are relative to its folder.
    let file = dir.path().join("run.yaml");
    std::fs::write(
        &file,
        format!(
            "method: ti\ntoken: <demo-style>\nsteps: 50\nresolution: 64\nseed: 2\n\
             model: {}\ntrainset: {}\noutput: out\n",
            tiny_sd().display(),
            demo_images().display()
        ),
    )
    .unwrap();
    let out = atelier(&[
        "train",
        "--from",
        file.to_str().unwrap(),
        "--steps",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["method"], "ti");
    assert_eq!(report["steps"], 2);
    let out_dir = dir.path().join("out");
    // diffusers' learned_embeds: the placeholder as the key, [vectors, hidden].
    let names = tensors(&out_dir.join("learned_embeds.safetensors"));
    assert_eq!(names, vec![("<demo-style>".to_string(), vec![1, 16])]);
    assert_loss_png(&out_dir.join("loss.png"));
}

#[test]
fn a_missing_trainset_is_invalid_input_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-trainset");
    let out = atelier(&[
        "train",
        "--model",
        tiny_sd().to_str().unwrap(),
        "--trainset",
        missing.to_str().unwrap(),
        "--token",
        "<demo-style>",
        "-o",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no-such-trainset"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("out").exists(), "nothing is written");
}

#[test]
fn textual_inversion_refuses_a_token_already_in_the_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let out = atelier(&[
        "train",
        "--method",
        "ti",
        "--model",
        tiny_sd().to_str().unwrap(),
        "--trainset",
        demo_images().to_str().unwrap(),
        "--token",
        "style",
        "--resolution",
        "64",
        "-o",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`style`") && err.contains("vocabulary"),
        "{err}"
    );
}

#[test]
fn bad_settings_are_refused_before_loading_anything() {
    let dir = tempfile::tempdir().unwrap();
    let common = |extra: &[&str]| {
        let mut args = vec![
            "train".to_string(),
            "--model".into(),
            tiny_sd().display().to_string(),
            "--trainset".into(),
            demo_images().display().to_string(),
            "-o".into(),
            dir.path().join("out").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        atelier(&args)
    };
    for (extra, needle) in [
        (&["--token", "<t>", "--resolution", "60"][..], "resolution"),
        (
            &["--token", "<t>", "--method", "dreambooth"][..],
            "class_prompt",
        ),
        (&[][..], "--token"),
        (
            &["--token", "<t>", "--lr-warmup-steps", "5"][..],
            "needs a schedule with warm-up",
        ),
    ] {
        let out = common(extra);
        assert_eq!(out.status.code(), Some(3), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
    }
    // clap refuses an unknown method (usage error, exit 2) and lists the choices.
    let out = common(&["--token", "<t>", "--method", "hypernetwork"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lora, dreambooth or ti"),
        "{}",
        stderr(&out)
    );
    let out = common(&["--token", "<t>", "--lr-scheduler", "step"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("constant, constant_with_warmup, linear or cosine"),
        "{}",
        stderr(&out)
    );
}
