//! CLIP score against transformers 5 and torchmetrics 1.9 on a tiny random CLIPModel
//! (fixtures from `tools/make_eval_fixtures.py`).
//!
//! Tolerances: preprocessing is exact (the same integer resize and f32 normalisation as
//! torchvision; allowed 1e-6); embeddings and scores 1e-4 absolute (scores are on the
//! 0..100 scale).

mod common;

use std::path::{Path, PathBuf};

use atelier_metrics::clip::config::ClipConfig;
use atelier_metrics::clip::preprocess::{preprocess_image, PreprocessConfig};
use atelier_metrics::clip::{raw_scores, ClipScorer};
use atelier_metrics::images::load_rgb;
use atelier_metrics::MetricsError;
use atelier_sd::weights::SafetensorsFile;
use burn::tensor::{Tensor, TensorData};
use common::{
    assert_within, fixture, floats, max_diff, max_diff_rows, read_json, rows, TestBackend,
};
use image::RgbImage;

const PIXELS: f32 = 1e-6;
const EMBEDS: f32 = 1e-4;

fn tiny_clip() -> PathBuf {
    fixture("tiny-clip")
}

fn reference_json() -> serde_json::Value {
    read_json(&fixture("clip/reference.json"))
}

fn reference() -> SafetensorsFile {
    SafetensorsFile::open(fixture("clip/reference.safetensors")).unwrap()
}

fn scorer() -> ClipScorer<TestBackend> {
    ClipScorer::load(&tiny_clip(), &Default::default()).unwrap()
}

fn images() -> Vec<RgbImage> {
    reference_json()["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| load_rgb(&fixture("clip").join(i["file"].as_str().unwrap())).unwrap())
        .collect()
}

fn prompts() -> Vec<String> {
    reference_json()["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

fn pixel_rows(config: &PreprocessConfig) -> Vec<Vec<f32>> {
    images()
        .iter()
        .map(|i| preprocess_image(i, config).0)
        .collect()
}

/// A reference [N, ...] tensor as one row per item.
fn items(name: &str) -> Vec<Vec<f32>> {
    let (shape, values) = reference().read_f32(name).unwrap();
    values
        .chunks(shape[1..].iter().product())
        .map(<[f32]>::to_vec)
        .collect()
}

#[test]
fn preprocessing_matches_the_processor_torchmetrics_uses() {
    let scorer = scorer();
    let actual = pixel_rows(scorer.preprocess_config());
    assert_within(
        "pixel_values (torchvision backend)",
        max_diff_rows(&actual, &items("pixel_values")),
        PIXELS,
    );

    // The batch tensor is the same.
    let batch = scorer.preprocess(&images()).unwrap();
    assert_eq!(batch.dims(), [6, 3, 32, 32]);
    let flat: Vec<f32> = batch.into_data().convert::<f32>().into_vec().unwrap();
    assert_eq!(flat, actual.concat());

    // transformers 4's PIL resampler is one u8 step away in places.
    let pil = max_diff_rows(&actual, &items("pixel_values_pil"));
    let recorded = reference_json()["pixel_values_pil_max_abs_diff"]
        .as_f64()
        .unwrap() as f32;
    eprintln!(
        "pixel_values vs the PIL processor: max abs difference {pil:e} (one u8 step / 255 / std)"
    );
    assert!(
        (pil - recorded).abs() < 1e-6 && pil < 0.0151,
        "{pil} vs {recorded}"
    );
}

#[test]
fn preprocessing_with_dict_sizes_padding_and_other_statistics() {
    let config = PreprocessConfig::from_file(&fixture("clip/preprocessor_alt.json")).unwrap();
    assert_eq!(config.crop_size, (44, 36));
    let actual = pixel_rows(&config);
    let (shape, _) = reference().read_f32("pixel_values_alt").unwrap();
    assert_eq!(shape, [6, 3, 44, 36]);
    assert_within(
        "pixel_values (alt config)",
        max_diff_rows(&actual, &items("pixel_values_alt")),
        PIXELS,
    );
}

#[test]
fn image_embeds_match_transformers() {
    let scorer = scorer();
    let (shape, values) = reference().read_f32("pixel_values").unwrap();
    let pixels =
        Tensor::<TestBackend, 4>::from_data(TensorData::new(values, shape), &Default::default());
    let actual = scorer.image_embeds_from_pixels(pixels).unwrap();
    let expected = rows(&reference(), "image_embeds");
    assert_within(
        "image_embeds (same pixel_values)",
        max_diff_rows(&actual, &expected),
        EMBEDS,
    );
    let from_images = scorer.image_embeds(&images()).unwrap();
    assert_within(
        "image_embeds (from the PNGs)",
        max_diff_rows(&from_images, &expected),
        EMBEDS,
    );
}

#[test]
fn text_embeds_match_transformers() {
    let scorer = scorer();
    let prompts = prompts();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (_, reference_ids) = reference().read_i64("input_ids").unwrap();
    let ids = scorer.input_ids(&prompts);
    // transformers' rows are padded to 77 with <|endoftext|>.
    let padded: Vec<i64> = ids
        .iter()
        .flat_map(|row| {
            let mut row: Vec<i64> = row.iter().map(|&t| t as i64).collect();
            row.resize(77, 49407);
            row
        })
        .collect();
    assert_eq!(padded, reference_ids);
    let long = reference_json()["long_prompt_index"].as_u64().unwrap() as usize;
    assert_eq!(ids[long].len(), 77);
    assert_eq!(ids[long][76], 49407);

    let expected = rows(&reference(), "text_embeds");
    let actual = scorer.text_embeds(&prompts).unwrap();
    assert_within("text_embeds", max_diff_rows(&actual, &expected), EMBEDS);
    // One prompt at a time (no padding) gives the same.
    for (k, prompt) in prompts.iter().enumerate() {
        let single = scorer.text_embeds(&[prompt]).unwrap();
        assert_within(
            "text_embeds, one prompt",
            max_diff(&single[0], &expected[k]),
            EMBEDS,
        );
    }
}

#[test]
fn scores_match_transformers_and_torchmetrics() {
    let scorer = scorer();
    let reference = reference_json();
    let prompts = prompts();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();

    let raw = raw_scores(
        &rows(&self::reference(), "image_embeds"),
        &rows(&self::reference(), "text_embeds"),
    );
    assert_within(
        "raw scores (reference embeddings)",
        max_diff(&raw, &floats(&reference["raw_scores"])),
        EMBEDS,
    );

    let scores = scorer.score(&images(), &prompts).unwrap();
    let expected = floats(&reference["scores"]);
    assert!(expected.contains(&0.0) && expected.iter().any(|s| *s > 10.0));
    assert_within(
        "scores (PNG -> score)",
        max_diff(&scores, &expected),
        EMBEDS,
    );

    // torchmetrics agrees except on the prompt over 77 tokens (see the clip module).
    let long = reference["long_prompt_index"].as_u64().unwrap() as usize;
    let torchmetrics = floats(&reference["scores_torchmetrics"]);
    let raw_torchmetrics = floats(&reference["raw_scores_torchmetrics"]);
    let others: Vec<usize> = (0..scores.len()).filter(|&k| k != long).collect();
    let diff = others
        .iter()
        .map(|&k| (scores[k] - torchmetrics[k]).abs())
        .fold(0.0, f32::max);
    assert_within(
        "scores vs torchmetrics (prompts <= 77 tokens)",
        diff,
        EMBEDS,
    );
    assert!((raw_torchmetrics[long] - floats(&reference["raw_scores"])[long]).abs() > 1.0);
}

#[test]
fn config_json_follows_transformers_rules() {
    let cases = read_json(&fixture("clip/config_cases.json"));
    for (name, case) in cases.as_object().unwrap() {
        let config = ClipConfig::from_json(&case["config"]).unwrap();
        let effective = &case["effective"];
        let text = &effective["text"];
        let vision = &effective["vision"];
        let usize_of = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
        assert_eq!(
            config.projection_dim,
            usize_of(&effective["projection_dim"]),
            "{name}"
        );
        assert_eq!(
            config.text.hidden_size,
            usize_of(&text["hidden_size"]),
            "{name}"
        );
        assert_eq!(
            config.text.intermediate_size,
            usize_of(&text["intermediate_size"]),
            "{name}"
        );
        assert_eq!(
            config.text.num_hidden_layers,
            usize_of(&text["num_hidden_layers"]),
            "{name}"
        );
        assert_eq!(
            config.text.num_attention_heads,
            usize_of(&text["num_attention_heads"]),
            "{name}"
        );
        assert_eq!(
            config.text.max_position_embeddings,
            usize_of(&text["max_position_embeddings"]),
            "{name}"
        );
        assert_eq!(
            config.text.vocab_size,
            usize_of(&text["vocab_size"]),
            "{name}"
        );
        assert_eq!(
            config.text.eos_token_id,
            text["eos_token_id"].as_i64().unwrap(),
            "{name}"
        );
        assert_eq!(
            config.text.layer_norm_eps,
            text["layer_norm_eps"].as_f64().unwrap(),
            "{name}"
        );
        assert_eq!(
            serde_json::to_value(config.text.hidden_act).unwrap(),
            text["hidden_act"],
            "{name}"
        );
        assert_eq!(
            config.vision.hidden_size,
            usize_of(&vision["hidden_size"]),
            "{name}"
        );
        assert_eq!(
            config.vision.intermediate_size,
            usize_of(&vision["intermediate_size"]),
            "{name}"
        );
        assert_eq!(
            config.vision.num_hidden_layers,
            usize_of(&vision["num_hidden_layers"]),
            "{name}"
        );
        assert_eq!(
            config.vision.num_attention_heads,
            usize_of(&vision["num_attention_heads"]),
            "{name}"
        );
        assert_eq!(
            config.vision.image_size,
            usize_of(&vision["image_size"]),
            "{name}"
        );
        assert_eq!(
            config.vision.patch_size,
            usize_of(&vision["patch_size"]),
            "{name}"
        );
        assert_eq!(
            config.vision.layer_norm_eps,
            vision["layer_norm_eps"].as_f64().unwrap(),
            "{name}"
        );
        assert_eq!(
            serde_json::to_value(config.vision.hidden_act).unwrap(),
            vision["hidden_act"],
            "{name}"
        );
    }
}

/// A copy of tiny-clip (symlinks resolved) without `skip`.
fn copy_without(skip: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(tiny_clip()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    dir
}

fn load_err(dir: &Path) -> MetricsError {
    ClipScorer::<TestBackend>::load(dir, &Default::default()).unwrap_err()
}

#[test]
fn missing_files_name_the_file_and_the_hub_layout() {
    for file in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
    ] {
        let dir = copy_without(&[file]);
        let err = load_err(dir.path());
        assert!(matches!(err, MetricsError::MissingClipFile { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("`{}` has no `{file}`", dir.path().display())),
            "{message}"
        );
        assert!(
            message.contains("openai/clip-vit-large-patch14"),
            "{message}"
        );
        assert!(
            message.contains("config.json, model.safetensors, vocab.json"),
            "{message}"
        );
    }
    // Without preprocessor_config.json, CLIP's defaults (224) apply.
    let dir = copy_without(&["preprocessor_config.json"]);
    let scorer = ClipScorer::<TestBackend>::load(dir.path(), &Default::default()).unwrap();
    assert_eq!(scorer.preprocess_config(), &PreprocessConfig::default());
    let err = scorer.image_embeds(&images()).unwrap_err().to_string();
    assert!(
        err.contains("[6, 3, 224, 224]") && err.contains("[N, 3, 32, 32]"),
        "{err}"
    );
}

#[test]
fn weights_of_another_config_name_tensor_file_and_shapes() {
    let dir = copy_without(&[]);
    let config_path = dir.path().join("config.json");
    let mut config = read_json(&config_path);
    config["vision_config"]["hidden_size"] = 32.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = load_err(dir.path()).to_string();
    eprintln!("{err}");
    let weights = dir.path().join("model.safetensors");
    assert!(err.contains(&format!("`{}`", weights.display())), "{err}");
    assert!(
        err.contains("`vision_model.embeddings.class_embedding`"),
        "{err}"
    );
    assert!(err.contains("has shape [16], expected [32]"), "{err}");
}

#[test]
fn bad_inputs_are_refused() {
    let scorer = scorer();
    let images = images();
    let err = scorer.score(&images[..2], &["a"]).unwrap_err().to_string();
    assert!(err.contains("2 images, 1 prompts"), "{err}");
    assert!(matches!(
        scorer.image_embeds(&[]),
        Err(MetricsError::Empty("images"))
    ));
    assert!(matches!(
        scorer.text_embeds(&[]),
        Err(MetricsError::Empty("prompts"))
    ));
    assert!(matches!(
        scorer.score(&[], &[]),
        Err(MetricsError::Empty(_))
    ));
}
