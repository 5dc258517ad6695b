//! A diffusers folder with random weights, built from a folder of configs (such as
//! `worker/sd/configs/sd15`): full-size models for benchmarks and memory checks,
//! tiny ones for tests and the quick start. No weights need downloading.

use std::path::Path;

use burn::tensor::backend::Backend;

use crate::clip::ClipTextConfig;
use crate::error::{Result, SdError};
use crate::unet_2d::UNet2DConditionConfig;
use crate::vae::AutoencoderKLConfig;
use crate::weights::save_module;

/// What was written, per component: (name, parameter count, bytes on disk).
pub type Written = Vec<(String, usize, u64)>;

/// Writes `out` from `configs` (model_index.json, scheduler/, tokenizer/ copied;
/// text_encoder/, unet/, vae/ get their config and random weights). `half` writes
/// the fp16 variant files instead of f32 ones. Components are built one at a time,
/// so memory peaks at the largest one.
pub fn write_random_model<B: Backend>(
    configs: &Path,
    out: &Path,
    seed: u64,
    half: bool,
    device: &B::Device,
) -> Result<Written> {
    B::seed(device, seed);
    copy_file(
        &configs.join("model_index.json"),
        &out.join("model_index.json"),
    )?;
    for folder in ["scheduler", "tokenizer"] {
        copy_folder(&configs.join(folder), &out.join(folder))?;
    }
    let suffix = if half { ".fp16" } else { "" };
    let mut written = Vec::new();

    let text = ClipTextConfig::from_file(&configs.join("text_encoder/config.json"))?;
    let model = text.init::<B>(device);
    written.push(write_component(
        configs,
        out,
        "text_encoder",
        &format!("model{suffix}.safetensors"),
        |path| save_module(&model, path, half),
        crate::weights::parameter_count(&model),
    )?);
    drop(model);

    let unet = UNet2DConditionConfig::from_file(&configs.join("unet/config.json"))?;
    let model = unet.init::<B>(device)?;
    written.push(write_component(
        configs,
        out,
        "unet",
        &format!("diffusion_pytorch_model{suffix}.safetensors"),
        |path| save_module(&model, path, half),
        crate::weights::parameter_count(&model),
    )?);
    drop(model);

    let vae = AutoencoderKLConfig::from_file(&configs.join("vae/config.json"))?;
    let model = vae.init::<B>(device)?;
    written.push(write_component(
        configs,
        out,
        "vae",
        &format!("diffusion_pytorch_model{suffix}.safetensors"),
        |path| save_module(&model, path, half),
        crate::weights::parameter_count(&model),
    )?);
    Ok(written)
}

fn write_component(
    configs: &Path,
    out: &Path,
    component: &str,
    file_name: &str,
    save: impl FnOnce(&Path) -> Result<()>,
    params: usize,
) -> Result<(String, usize, u64)> {
    let dir = out.join(component);
    std::fs::create_dir_all(&dir).map_err(|e| SdError::io(&dir, e))?;
    copy_file(
        &configs.join(component).join("config.json"),
        &dir.join("config.json"),
    )?;
    let path = dir.join(file_name);
    save(&path)?;
    let bytes = std::fs::metadata(&path)
        .map_err(|e| SdError::io(&path, e))?
        .len();
    Ok((component.to_string(), params, bytes))
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| SdError::io(parent, e))?;
    }
    std::fs::copy(from, to).map_err(|e| SdError::io(from, e))?;
    Ok(())
}

fn copy_folder(from: &Path, to: &Path) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| SdError::io(from, e))?;
    std::fs::create_dir_all(to).map_err(|e| SdError::io(to, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SdError::io(from, e))?;
        if entry.path().is_file() {
            copy_file(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
