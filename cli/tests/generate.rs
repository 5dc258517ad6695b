//! `atelier generate` as a user runs it: the tiny diffusers pipeline from the
//! model library's fixtures, diffusers' initial latents, and the raw image compared
//! with `StableDiffusionPipeline`'s output (max abs error 1e-3); bad input gives an
//! error naming the file.

mod process;

use std::path::{Path, PathBuf};

use process::{atelier, sd_fixture, stderr};

fn sd_fixtures() -> PathBuf {
    sd_fixture("")
}

/// Reads tensor `name` of a safetensors file as f32 values with its shape.
fn read_f32(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), values)
}

/// Writes diffusers' initial latents under the key `generate --latents` reads.
fn write_latents(dir: &Path) -> PathBuf {
    let reference = sd_fixtures().join("reference/tiny-sd.safetensors");
    let (shape, values) = read_f32(&reference, "pipeline.latents");
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes).unwrap();
    let path = dir.join("latents.safetensors");
    safetensors::serialize_to_file([("latents", view)], None, &path).unwrap();
    path
}

#[test]
fn generate_matches_diffusers_from_the_same_latents() {
    let dir = tempfile::tempdir().unwrap();
    let latents = write_latents(dir.path());
    let png = dir.path().join("out.png");
    let raw = dir.path().join("out.safetensors");
    let model = sd_fixtures().join("tiny-sd");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sd_fixtures().join("reference/tiny-sd.json"))
            .unwrap()
            .replace("-Infinity", "null"),
    )
    .unwrap();
    let settings = &reference["pipelines"]["dpmpp2m"];
    let steps = settings["num_inference_steps"].to_string();
    let out = atelier(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        settings["prompt"].as_str().unwrap(),
        "--negative-prompt",
        settings["negative_prompt"].as_str().unwrap(),
        "--steps",
        &steps,
        "--scheduler",
        "dpmpp2m",
        "--guidance",
        "7.5",
        "--latents",
        latents.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
        "--raw",
        raw.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["width"], 128);
    assert_eq!(report["steps"], 5);

    let (shape, image) = read_f32(&raw, "image");
    let (expected_shape, expected) = read_f32(
        &sd_fixtures().join("reference/tiny-sd.safetensors"),
        "pipeline.dpmpp2m.image",
    );
    assert_eq!(shape, expected_shape);
    let max_err = image
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_err <= 1e-3, "max abs error {max_err}");

    let png = image::open(&png).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (128, 128));
    // Pixel (0, 0) is the raw value quantised as diffusers does.
    let plane = 128 * 128;
    for c in 0..3 {
        let want = (image[c * plane] * 255.0).round() as u8;
        assert_eq!(png.get_pixel(0, 0)[c], want);
    }
}

#[test]
fn generate_from_a_seed_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let model = sd_fixtures().join("tiny-sd-alt");
    let run = |name: &str| generate_seeded(dir.path(), name, &model, &[]);
    assert_eq!(run("a"), run("b"));
}

/// `generate` of "a lighthouse", 2 steps from seed 7, with `extra` arguments; the
/// raw image.
fn generate_seeded(dir: &Path, name: &str, model: &Path, extra: &[&str]) -> Vec<f32> {
    let raw = dir.join(format!("{name}.safetensors"));
    let png = dir.join(format!("{name}.png"));
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a lighthouse",
        "--steps",
        "2",
        "--seed",
        "7",
        "-o",
        png.to_str().unwrap(),
        "--raw",
        raw.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = atelier(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("seed 7"));
    read_f32(&raw, "image").1
}

/// `atelier model fuse` writes a folder that generates what the base folder does
/// with `--lora FILE:SCALE`; a second fuse into the same folder is refused.
#[test]
fn fused_model_generates_as_the_base_with_the_lora() {
    let dir = tempfile::tempdir().unwrap();
    let base = sd_fixtures().join("tiny-sd");
    let lora = sd_fixtures().join("adapters/lora-kohya.safetensors");
    let fused = dir.path().join("fused");
    let fuse = |output: &Path| {
        atelier(&[
            "model",
            "fuse",
            base.to_str().unwrap(),
            "--lora",
            lora.to_str().unwrap(),
            "--scale",
            "0.7",
            "-o",
            output.to_str().unwrap(),
            "--json",
        ])
    };
    let out = fuse(&fused);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["layers"], 140);

    let with_lora = format!("{}:0.7", lora.display());
    let merged_at_load = generate_seeded(dir.path(), "lora", &base, &["--lora", &with_lora]);
    let from_fused = generate_seeded(dir.path(), "fused", &fused, &[]);
    let plain = generate_seeded(dir.path(), "plain", &base, &[]);
    assert_eq!(from_fused, merged_at_load);
    assert_ne!(from_fused, plain, "the LoRA changed nothing");

    let again = fuse(&fused);
    let message = stderr(&again);
    assert_eq!(again.status.code(), Some(3), "{message}");
    assert!(message.contains("already exists"), "{message}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn missing_tokenizer_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&sd_fixtures().join("tiny-sd"), &model);
    let tokenizer = model.join("tokenizer");
    std::fs::remove_file(tokenizer.join("tokenizer.json")).unwrap();
    std::fs::remove_file(tokenizer.join("merges.txt")).unwrap();
    let out = atelier(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "x",
        "-o",
        dir.path().join("x.png").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("merges.txt"), "{message}");
    assert!(!dir.path().join("x.png").exists());
}

#[test]
fn latents_of_the_wrong_shape_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = vec![0u8; 4 * 3 * 8 * 8];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 3, 8, 8], &bytes)
            .unwrap();
    let latents = dir.path().join("latents.safetensors");
    safetensors::serialize_to_file([("latents", view)], None, &latents).unwrap();
    let out = atelier(&[
        "generate",
        "--model",
        sd_fixtures().join("tiny-sd").to_str().unwrap(),
        "--prompt",
        "x",
        "--latents",
        latents.to_str().unwrap(),
        "-o",
        dir.path().join("x.png").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("latents.safetensors") && message.contains("[1, 3, 8, 8]"),
        "{message}"
    );
}
