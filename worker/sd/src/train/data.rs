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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A 12 x 8 image whose red channel is 20 x column and green 20 x row.
    fn write_ramp(path: &Path) {
        image::RgbImage::from_fn(12, 8, |x, y| {
            image::Rgb([(x * 20) as u8, (y * 20) as u8, 0])
        })
        .save(path)
        .unwrap();
    }

    /// The red value (0..=255) of the first row's pixels of a loaded 8 x 8 crop.
    fn first_row_red(pixels: &[f32]) -> Vec<u8> {
        (0..8)
            .map(|x| ((pixels[x] * 0.5 + 0.5) * 255.0).round() as u8)
            .collect()
    }

    #[test]
    fn captions_come_from_text_files_beside_the_images() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.png", "a.png", "c.png"] {
            write_ramp(&dir.path().join(name));
        }
        std::fs::write(dir.path().join("a.txt"), "  a red ramp, <x-style>\n").unwrap();
        std::fs::write(dir.path().join("c.txt"), "\n").unwrap();
        std::fs::write(dir.path().join("notes.md"), "not an image").unwrap();
        let set = Trainset::open(dir.path()).unwrap();
        let found: Vec<(String, Option<String>)> = set
            .examples
            .iter()
            .map(|e| {
                (
                    e.path.file_name().unwrap().to_string_lossy().into_owned(),
                    e.caption.clone(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("a.png".into(), Some("a red ramp, <x-style>".into())),
                ("b.png".into(), None),
                // An empty caption file is no caption.
                ("c.png".into(), None),
            ]
        );
    }

    #[test]
    fn centre_and_random_crops_and_flips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ramp.png");
        write_ramp(&path);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // The short side is already 8: the centre crop starts at column (12 - 8) / 2.
        let centre = load_pixels(&path, 8, true, false, &mut rng).unwrap();
        assert_eq!(centre.len(), 3 * 8 * 8);
        assert_eq!(
            first_row_red(&centre),
            (2..10).map(|x| x * 20).collect::<Vec<u8>>()
        );
        assert_eq!(rng.get_word_pos(), 0, "a centre crop draws nothing");

        // Random crops start anywhere in columns 0..=4, and the same seed gives the
        // same crops.
        let crops = |seed: u64, flip: bool| -> Vec<Vec<u8>> {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..40)
                .map(|_| first_row_red(&load_pixels(&path, 8, false, flip, &mut rng).unwrap()))
                .collect()
        };
        let random = crops(1, false);
        assert_eq!(random, crops(1, false));
        let mut starts: Vec<u8> = random.iter().map(|row| row[0] / 20).collect();
        for row in &random {
            let x0 = row[0] / 20;
            assert_eq!(*row, (x0..x0 + 8).map(|x| x * 20).collect::<Vec<u8>>());
        }
        starts.sort();
        starts.dedup();
        assert_eq!(starts, vec![0, 1, 2, 3, 4], "every offset is drawn");

        // With flips, some crops run right to left.
        let flipped = crops(2, true);
        let mirrored = flipped.iter().filter(|row| row[0] > row[7]).count();
        assert!(
            mirrored > 5 && mirrored < 35,
            "{mirrored} of 40 crops mirrored"
        );
        for row in flipped.iter().filter(|row| row[0] > row[7]) {
            let x0 = row[7] / 20;
            assert_eq!(
                *row,
                (x0..x0 + 8).rev().map(|x| x * 20).collect::<Vec<u8>>()
            );
        }
    }
}
