//! Model folders: the full SD1.5 configs build with diffusers' parameter counts,
//! and bad input (a truncated file, a wrong shape, a missing or unexpected tensor,
//! an unknown block type, missing weights) gives an error naming what is wrong.

mod common;

use std::path::{Path, PathBuf};

use atelier_sd::clip::ClipTextConfig;
use atelier_sd::model_folder::{ModelFolder, Variant};
use atelier_sd::unet_2d::UNet2DConditionConfig;
use atelier_sd::vae::AutoencoderKLConfig;
use atelier_sd::weights::parameter_count;
use common::{fixture, TestBackend};

fn sd15_config(component: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("configs/sd15")
        .join(component)
        .join("config.json")
}

#[test]
fn sd15_configs_build_with_diffusers_parameter_counts() {
    let device = Default::default();
    let counts: serde_json::Value = atelier_sd::config::read_json(
        &common::fixtures().join("reference/sd15_param_counts.json"),
        "parameter counts",
    )
    .unwrap();
    let counts = &counts["param_counts"];
    let unet = UNet2DConditionConfig::from_file(&sd15_config("unet"))
        .unwrap()
        .init::<TestBackend>(&device)
        .unwrap();
    let vae = AutoencoderKLConfig::from_file(&sd15_config("vae"))
        .unwrap()
        .init::<TestBackend>(&device)
        .unwrap();
    let text = ClipTextConfig::from_file(&sd15_config("text_encoder"))
        .unwrap()
        .init::<TestBackend>(&device);
    // The figure the SD1.5 model card and diffusers give.
    assert_eq!(parameter_count(&unet), 859_520_964);
    assert_eq!(
        parameter_count(&unet) as u64,
        counts["unet"].as_u64().unwrap()
    );
    assert_eq!(
        parameter_count(&vae) as u64,
        counts["vae"].as_u64().unwrap()
    );
    assert_eq!(
        parameter_count(&text) as u64,
        counts["text_encoder"].as_u64().unwrap()
    );
}

/// A copy of a fixture pipeline that a test may break.
fn scratch_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), dir.path());
    dir
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

/// Rewrites a safetensors file through `edit`, which sees (name, shape, bytes).
fn rewrite_safetensors(
    path: &Path,
    edit: impl Fn(&mut Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)>),
) {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                view.shape().to_vec(),
                view.dtype(),
                view.data().to_vec(),
            )
        })
        .collect();
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, shape, dtype, data)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn unet_error(dir: &Path) -> String {
    let folder = ModelFolder::open(dir, Variant::Auto).unwrap();
    folder
        .load_unet::<TestBackend>(&Default::default())
        .map(|_| ())
        .expect_err("loading should fail")
        .to_string()
}

#[test]
fn truncated_safetensors_names_the_file() {
    let dir = scratch_copy("tiny-sd");
    let path = dir.path().join("unet/diffusion_pytorch_model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 2).unwrap();
    let message = unet_error(dir.path());
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("not a readable safetensors file"),
        "{message}"
    );
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let dir = scratch_copy("tiny-sd");
    let path = dir.path().join("unet/diffusion_pytorch_model.safetensors");
    rewrite_safetensors(&path, |tensors| {
        let conv_in = tensors
            .iter_mut()
            .find(|t| t.0 == "conv_in.weight")
            .unwrap();
        // [8, 4, 3, 3] -> [8, 2, 3, 6]: same byte count, wrong shape.
        conv_in.1 = vec![8, 2, 3, 6];
    });
    let message = unet_error(dir.path());
    assert!(
        message.contains("tensor `conv_in.weight`")
            && message.contains("has shape [8, 2, 3, 6], expected [8, 4, 3, 3]"),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let dir = scratch_copy("tiny-sd");
    let path = dir.path().join("unet/diffusion_pytorch_model.safetensors");
    rewrite_safetensors(&path, |tensors| {
        tensors.retain(|t| t.0 != "mid_block.attentions.0.proj_in.weight");
        let extra = tensors
            .iter()
            .find(|t| t.0 == "conv_in.bias")
            .unwrap()
            .clone();
        tensors.push(("conv_in.extra_bias".into(), extra.1, extra.2, extra.3));
    });
    let message = unet_error(dir.path());
    assert!(
        message.contains("missing tensor `mid_block.attentions.0.proj_in.weight`"),
        "{message}"
    );
    assert!(
        message.contains("unexpected tensor `conv_in.extra_bias`"),
        "{message}"
    );
}

#[test]
fn unknown_block_type_names_the_config_field() {
    let dir = scratch_copy("tiny-sd");
    let config = dir.path().join("unet/config.json");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "\"DownBlock2D\"",
        "\"AttnDownBlock2D\"",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let message = unet_error(dir.path());
    assert!(message.contains(&config.display().to_string()), "{message}");
    assert!(
        message.contains("`down_block_types` has unknown block type `AttnDownBlock2D`"),
        "{message}"
    );
}

#[test]
fn malformed_config_names_the_file() {
    let dir = scratch_copy("tiny-sd");
    let config = dir.path().join("vae/config.json");
    std::fs::write(&config, "{\"block_out_channels\": [8, 16,").unwrap();
    let folder = ModelFolder::open(dir.path(), Variant::Auto).unwrap();
    let message = folder
        .load_vae::<TestBackend>(&Default::default())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(message.contains(&config.display().to_string()), "{message}");
}

#[test]
fn missing_weights_list_the_files_looked_for() {
    let dir = scratch_copy("tiny-sd");
    std::fs::remove_file(dir.path().join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let message = unet_error(dir.path());
    assert!(
        message.contains("`unet/` has no weights")
            && message.contains("`diffusion_pytorch_model.fp16.safetensors`"),
        "{message}"
    );
}

#[test]
fn fp16_variant_is_preferred_only_when_asked() {
    let dir = scratch_copy("tiny-sd");
    let unet = dir.path().join("unet");
    // A corrupt fp16 file beside the good f32 one: Auto never opens it.
    std::fs::write(
        unet.join("diffusion_pytorch_model.fp16.safetensors"),
        b"junk",
    )
    .unwrap();
    let device = Default::default();
    ModelFolder::open(dir.path(), Variant::Auto)
        .unwrap()
        .load_unet::<TestBackend>(&device)
        .unwrap();
    let message = ModelFolder::open(dir.path(), Variant::Fp16)
        .unwrap()
        .load_unet::<TestBackend>(&device)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("diffusion_pytorch_model.fp16.safetensors"),
        "{message}"
    );
}

#[test]
fn not_a_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    let message = ModelFolder::open(dir.path(), Variant::Auto)
        .unwrap_err()
        .to_string();
    assert!(message.contains("no `model_index.json`"), "{message}");
}
