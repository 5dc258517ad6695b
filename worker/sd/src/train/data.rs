//! A trainset folder: images (and optional `<stem>.txt` captions beside them),
//! checked when opened, cropped and normalised as diffusers' scripts do
//! (resize the short side, centre or random crop, optional flip, [-1, 1]).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::imageops::FilterType;
use rand::Rng;

use crate::error::{Result, SdError};

const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"];

#[derive(Debug, Clone)]
pub struct Example {
    pub path: PathBuf,
    pub caption: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Trainset {
    pub root: PathBuf,
    pub examples: Vec<Example>,
}

impl Trainset {
    /// `dir/images/` if it exists, else `dir` itself. Every image is decoded once
    /// here so that a broken file stops the run before its first step.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(SdError::Invalid(format!(
                "trainset `{}` is not a folder",
                dir.display()
            )));
        }
        let images_dir = if dir.join("images").is_dir() {
            dir.join("images")
        } else {
            dir.to_path_buf()
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&images_dir)
            .map_err(|e| SdError::io(&images_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(SdError::Invalid(format!(
                "trainset `{}` has no images ({})",
                images_dir.display(),
                EXTENSIONS.join(", ")
            )));
        }
        let mut examples = Vec::with_capacity(paths.len());
        for path in paths {
            image::open(&path).map_err(|e| {
                SdError::Invalid(format!("image `{}` cannot be read: {e}", path.display()))
            })?;
            let caption_path = path.with_extension("txt");
            let caption = if caption_path.is_file() {
                let text = std::fs::read_to_string(&caption_path)
                    .map_err(|e| SdError::io(&caption_path, e))?;
                Some(text.trim().to_string()).filter(|t| !t.is_empty())
            } else {
                None
            };
            examples.push(Example { path, caption });
        }
        Ok(Trainset {
            root: images_dir,
            examples,
        })
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
}

/// An image as pixel values [3, size, size] in [-1, 1]: the short side resized to
/// `size` (bilinear), then a centre or random crop and an optional flip.
pub fn load_pixels(
    path: &Path,
    size: usize,
    center_crop: bool,
    flip: bool,
    rng: &mut impl Rng,
) -> Result<Vec<f32>> {
    let image = image::open(path)
        .map_err(|e| SdError::Invalid(format!("image `{}` cannot be read: {e}", path.display())))?
        .to_rgb8();
    let (w, h) = image.dimensions();
    let scale = size as f64 / w.min(h) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(size as u32),
        ((h as f64 * scale).round() as u32).max(size as u32),
    );
    let resized = image::imageops::resize(&image, nw, nh, FilterType::Triangle);
    let (x0, y0) = if center_crop {
        ((nw - size as u32) / 2, (nh - size as u32) / 2)
    } else {
        (
            rng.gen_range(0..=nw - size as u32),
            rng.gen_range(0..=nh - size as u32),
        )
    };
    let mirror = flip && rng.gen_bool(0.5);
    let mut out = vec![0f32; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            let sx = if mirror { size - 1 - x } else { x };
            let p = resized.get_pixel(x0 + sx as u32, y0 + y as u32);
            for c in 0..3 {
                out[c * size * size + y * size + x] = (p[c] as f32 / 255.0 - 0.5) / 0.5;
            }
        }
    }
    Ok(out)
}

/// Stacks images of one size into [n, 3, size, size].
pub fn batch<B: Backend>(images: Vec<Vec<f32>>, size: usize, device: &B::Device) -> Tensor<B, 4> {
    let n = images.len();
    let flat: Vec<f32> = images.into_iter().flatten().collect();
    Tensor::from_data(TensorData::new(flat, [n, 3, size, size]), device)
}
