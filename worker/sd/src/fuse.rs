//! Fusing a LoRA into a model folder, as diffusers' `fuse_lora` followed by
//! `save_pretrained`: a new diffusers folder whose UNet and text encoder hold the
//! merged weights, loadable by anything that reads such folders (atelier, diffusers,
//! a later training run that starts from it).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use crate::error::{Result, SdError};
use crate::model_folder::{ModelFolder, Variant};
use crate::pipeline::StableDiffusion;
use crate::weights::save_module;

/// What [`fuse_lora`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fused {
    /// Linear layers that received a LoRA delta (UNet and text encoder together).
    pub layers: usize,
    /// The weight files written, relative to the new folder.
    pub written: Vec<PathBuf>,
}

/// The components whose weights [`fuse_lora`] rewrites; everything else is copied.
const REWRITTEN: [&str; 2] = ["unet", "text_encoder"];

/// Writes `out`: the folder `model` with `lora` merged at `scale` into its UNet and
/// text encoder, saved as f32. `out` must not exist yet; the folder is assembled
/// beside it and renamed into place, so a failure leaves nothing behind.
pub fn fuse_lora<B: Backend>(
    model: &Path,
    lora: &Path,
    scale: f64,
    out: &Path,
    device: &B::Device,
) -> Result<Fused> {
    if out.exists() {
        return Err(SdError::config(
            out,
            "the output folder already exists; name a new one (nothing was written)",
        ));
    }
    let folder = ModelFolder::open(model, Variant::Auto)?;
    let mut sd = StableDiffusion::<B>::load(&folder, device)?;
    let layers = sd.apply_lora(lora, scale)?;
    if layers == 0 {
        return Err(SdError::config(
            lora,
            format!(
                "no layer of the model `{}` matches this LoRA file",
                model.display()
            ),
        ));
    }

    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "fused".into());
    let staging = out.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let result = (|| {
        copy_except_weights(folder.root(), &staging, Path::new(""))?;
        let unet = PathBuf::from("unet/diffusion_pytorch_model.safetensors");
        let text_encoder = PathBuf::from("text_encoder/model.safetensors");
        save_module(&sd.unet, &staging.join(&unet), false)?;
        save_module(&sd.text_encoder, &staging.join(&text_encoder), false)?;
        std::fs::rename(&staging, out).map_err(|e| SdError::io(out, e))?;
        Ok(Fused {
            layers,
            written: vec![unet, text_encoder],
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Copies the folder tree, leaving out the weight files of the components that are
/// rewritten (any variant, shard or index of them).
fn copy_except_weights(from_root: &Path, to_root: &Path, relative: &Path) -> Result<()> {
    let from = from_root.join(relative);
    let to = to_root.join(relative);
    std::fs::create_dir_all(&to).map_err(|e| SdError::io(&to, e))?;
    let entries = std::fs::read_dir(&from).map_err(|e| SdError::io(&from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SdError::io(&from, e))?;
        let child = relative.join(entry.file_name());
        let path = entry.path();
        if path.is_dir() {
            copy_except_weights(from_root, to_root, &child)?;
        } else if !is_rewritten_weights(&child) {
            std::fs::copy(&path, to_root.join(&child)).map_err(|e| SdError::io(&path, e))?;
        }
    }
    Ok(())
}

fn is_rewritten_weights(relative: &Path) -> bool {
    let mut parts = relative.iter();
    let (Some(component), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let file = file.to_string_lossy();
    REWRITTEN.iter().any(|c| component == *c)
        && (file.contains(".safetensors") || file.ends_with(".bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_rewritten_components_weights_are_left_out() {
        for (path, left_out) in [
            ("unet/diffusion_pytorch_model.safetensors", true),
            ("unet/diffusion_pytorch_model.fp16.safetensors", true),
            ("unet/diffusion_pytorch_model.safetensors.index.json", true),
            ("text_encoder/pytorch_model.bin", true),
            ("unet/config.json", false),
            ("vae/diffusion_pytorch_model.safetensors", false),
            ("model_index.json", false),
            ("tokenizer/vocab.json", false),
        ] {
            assert_eq!(is_rewritten_weights(Path::new(path)), left_out, "{path}");
        }
    }
}
