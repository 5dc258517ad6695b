//! LoRA and textual-inversion files against diffusers (`tools/make_adapter_fixtures.py`,
//! fixtures in `tests/fixtures/adapters/`).
//!
//! One random rank-2 LoRA on every UNet attention projection and every text-encoder
//! attention projection of `tiny-sd`, in four layouts (diffusers, peft with the alpha in
//! the header's adapter metadata, kohya with `.alpha` tensors, the old diffusers
//! attention-processor keys), is merged with `apply_lora(file, scale)` and must give
//! diffusers' UNet and text-encoder outputs (`load_lora_weights` + `set_adapters` at the
//! same scale) within 1e-4. Textual inversion: the token ids must be diffusers' exactly
//! and the hidden states within 1e-4. Broken files must be refused by name, leaving the
//! model as it was.

mod common;

use std::path::PathBuf;

use atelier_sd::fuse::fuse_lora;
use atelier_sd::model_folder::{ModelFolder, Variant};
use atelier_sd::pipeline::StableDiffusion;
use atelier_sd::weights::SafetensorsFile;
use burn::tensor::{Int, Tensor};
use common::{assert_close, fixture, reference, TestBackend};

const TOLERANCE: f32 = 1e-4;
const LAYOUTS: [&str; 4] = ["diffusers", "peft", "kohya", "diffusers-old"];
/// to_q/to_k/to_v/to_out.0 of 32 attentions, q/k/v/out_proj of 3 text layers.
const LORA_LAYERS: usize = 128 + 12;

fn adapters(name: &str) -> PathBuf {
    fixture("adapters").join(name)
}

fn expected() -> SafetensorsFile {
    SafetensorsFile::open(adapters("expected.safetensors")).unwrap()
}

fn json() -> serde_json::Value {
    atelier_sd::config::read_json(&adapters("adapters.json"), "adapter fixtures").unwrap()
}

fn load() -> StableDiffusion<TestBackend> {
    let folder = ModelFolder::open(fixture("tiny-sd"), Variant::Auto).unwrap();
    StableDiffusion::load(&folder, &Default::default()).unwrap()
}

fn strings(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

fn ids(tensor: Tensor<TestBackend, 2, Int>) -> Vec<i64> {
    tensor
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .unwrap()
}

/// The tiny-sd UNet on the reference inputs.
fn unet_out(sd: &StableDiffusion<TestBackend>) -> Tensor<TestBackend, 4> {
    let refs = reference("tiny-sd");
    let device = Default::default();
    let sample = refs
        .tensor::<TestBackend, 4>("unet.sample", &device)
        .unwrap();
    let context = refs
        .tensor::<TestBackend, 3>("unet.encoder_hidden_states", &device)
        .unwrap();
    let (_, timesteps) = refs.read_f32("unet.timesteps").unwrap();
    let timesteps: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
    sd.unet.forward(sample, &timesteps, &context)
}

fn error_text<T>(result: atelier_sd::error::Result<T>) -> String {
    match result {
        Ok(_) => panic!("the file was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn lora_layouts_match_diffusers() {
    let json = json();
    let lora = &json["lora"];
    let scale = lora["scale"].as_f64().unwrap();
    assert_ne!(scale, 1.0, "a scale of 1 would not test the scale");
    let prompts = strings(&lora["prompts"]);
    let expected = expected();
    let (_, prompt_ids) = expected.read_i64("lora.input_ids").unwrap();
    let device = Default::default();
    for layout in LAYOUTS {
        let info = &lora["layouts"][layout];
        let file = adapters(info["file"].as_str().unwrap());
        let mut sd = load();
        let changed = sd.apply_lora(&file, scale).unwrap();
        assert_eq!(changed, LORA_LAYERS, "{layout}: layers changed");
        assert_eq!(ids(sd.token_ids(&prompts)), prompt_ids, "{layout}");

        let alpha_over_rank = info["alpha_over_rank"].as_f64().unwrap();
        let what = format!("{layout} LoRA (scale {scale}, alpha/rank {alpha_over_rank})");
        assert_close(
            &format!("{what}: text encoder"),
            sd.encode_prompts(&prompts),
            expected
                .tensor::<TestBackend, 3>(&format!("{layout}.text.last_hidden_state"), &device)
                .unwrap(),
            TOLERANCE,
        );
        assert_close(
            &format!("{what}: UNet"),
            unet_out(&sd),
            expected
                .tensor::<TestBackend, 4>(&format!("{layout}.unet.out"), &device)
                .unwrap(),
            TOLERANCE,
        );
    }
}

#[test]
fn textual_inversion_matches_diffusers() {
    let json = json();
    let ti = &json["textual_inversion"];
    let mut sd = load();
    let base_rows = sd.text_encoder.vocab_rows();
    for (file, info) in strings(&ti["load_order"])
        .into_iter()
        .zip(ti["files"].as_array().unwrap())
    {
        let placeholders = sd.load_textual_inversion(&adapters(file)).unwrap();
        assert_eq!(placeholders, [info["token"].as_str().unwrap()], "{file}");
    }
    for (token, id) in ti["added_token_ids"].as_object().unwrap() {
        let id = id.as_u64().unwrap() as u32;
        assert_eq!(sd.tokenizer.token_id(token), Some(id), "{token}");
    }
    assert_eq!(sd.text_encoder.vocab_rows(), base_rows + 6);

    let prompts = strings(&ti["prompts"]);
    let expected = expected();
    let (_, expected_ids) = expected.read_i64("ti.input_ids").unwrap();
    assert_eq!(ids(sd.token_ids(&prompts)), expected_ids);
    assert_close(
        "textual inversion: text encoder",
        sd.encode_prompts(&prompts),
        expected
            .tensor::<TestBackend, 3>("ti.last_hidden_state", &Default::default())
            .unwrap(),
        TOLERANCE,
    );
}

#[test]
fn lora_pair_that_does_not_fit_its_layer_is_refused() {
    let mut sd = load();
    let before = unet_out(&sd);
    let file = adapters("bad/lora-wrong-shape.safetensors");
    let message = error_text(sd.apply_lora(&file, 1.0));
    for part in [
        "lora-wrong-shape.safetensors",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "[8, 7]",
    ] {
        assert!(message.contains(part), "`{part}` not in: {message}");
    }
    assert_close("UNet after a refused LoRA", unet_out(&sd), before, 0.0);
}

#[test]
fn lora_file_with_half_a_pair_is_refused() {
    let mut sd = load();
    let file = adapters("bad/lora-half-pair.safetensors");
    let message = error_text(sd.apply_lora(&file, 1.0));
    for part in [
        "lora-half-pair.safetensors",
        "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        "half",
    ] {
        assert!(message.contains(part), "`{part}` not in: {message}");
    }
}

#[test]
fn embedding_of_the_wrong_width_is_refused() {
    let mut sd = load();
    let rows = sd.text_encoder.vocab_rows();
    let file = adapters("bad/ti-wrong-width.safetensors");
    let message = error_text(sd.load_textual_inversion(&file));
    for part in ["ti-wrong-width.safetensors", "<narrow-style>", "12", "16"] {
        assert!(message.contains(part), "`{part}` not in: {message}");
    }
    assert_eq!(sd.tokenizer.token_id("<narrow-style>"), None);
    assert_eq!(sd.text_encoder.vocab_rows(), rows);
}

#[test]
fn loading_an_embedding_twice_is_refused() {
    let mut sd = load();
    let file = adapters("ti/vangogh-style/learned_embeds.safetensors");
    sd.load_textual_inversion(&file).unwrap();
    let rows = sd.text_encoder.vocab_rows();
    let message = error_text(sd.load_textual_inversion(&file));
    for part in ["learned_embeds.safetensors", "<vangogh-style>", "already"] {
        assert!(message.contains(part), "`{part}` not in: {message}");
    }
    assert_eq!(sd.text_encoder.vocab_rows(), rows);
    assert_eq!(sd.expansions.len(), 1);
}

/// `fuse_lora` writes a folder that loads as the base with the LoRA merged: its
/// outputs are diffusers' `load_lora_weights` + `set_adapters` outputs within 1e-4.
#[test]
fn fused_folder_matches_diffusers_with_the_lora() {
    let json = json();
    let scale = json["lora"]["scale"].as_f64().unwrap();
    let prompts = strings(&json["lora"]["prompts"]);
    let file = adapters(
        json["lora"]["layouts"]["diffusers"]["file"]
            .as_str()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fused");
    let device = Default::default();
    let fused = fuse_lora::<TestBackend>(&fixture("tiny-sd"), &file, scale, &out, &device).unwrap();
    assert_eq!(fused.layers, LORA_LAYERS);

    let folder = ModelFolder::open(&out, Variant::Auto).unwrap();
    let sd = StableDiffusion::<TestBackend>::load(&folder, &device).unwrap();
    let expected = expected();
    assert_close(
        "fused folder: text encoder",
        sd.encode_prompts(&prompts),
        expected
            .tensor::<TestBackend, 3>("diffusers.text.last_hidden_state", &device)
            .unwrap(),
        TOLERANCE,
    );
    assert_close(
        "fused folder: UNet",
        unet_out(&sd),
        expected
            .tensor::<TestBackend, 4>("diffusers.unet.out", &device)
            .unwrap(),
        TOLERANCE,
    );
    // The VAE and everything else are the base folder's files, unchanged.
    for file in [
        "vae/diffusion_pytorch_model.safetensors",
        "model_index.json",
    ] {
        assert_eq!(
            std::fs::read(fixture("tiny-sd").join(file)).unwrap(),
            std::fs::read(out.join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn fusing_is_refused_without_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let good = adapters("lora-diffusers.safetensors");

    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let message = error_text(fuse_lora::<TestBackend>(
        &fixture("tiny-sd"),
        &good,
        1.0,
        &existing,
        &device,
    ));
    assert!(message.contains("already exists"), "{message}");
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 0);

    let message = error_text(fuse_lora::<TestBackend>(
        &fixture("tiny-sd"),
        &adapters("bad/lora-wrong-shape.safetensors"),
        1.0,
        &dir.path().join("fused"),
        &device,
    ));
    assert!(
        message.contains("lora-wrong-shape.safetensors"),
        "{message}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("existing")]);
}
