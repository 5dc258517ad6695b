//! Reading images and turning them into the [-1, 1] tensors LPIPS takes.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::RgbImage;

use crate::error::{MetricsError, Result};

/// Decodes an image file (format from its content) as 8-bit RGB; alpha is dropped, as
/// PIL's `convert("RGB")` does.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| MetricsError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| MetricsError::io(path, e))?;
    let decoded = reader.decode().map_err(|e| MetricsError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(decoded.to_rgb8())
}

/// Checks that there is at least one image and that all have the first one's size;
/// returns it as (width, height).
pub(crate) fn common_size(images: &[&RgbImage]) -> Result<(u32, u32)> {
    let first = images.first().ok_or(MetricsError::Empty("images"))?;
    let size = first.dimensions();
    if let Some((index, other)) = images
        .iter()
        .enumerate()
        .find(|(_, image)| image.dimensions() != size)
    {
        return Err(MetricsError::ImageSizes {
            first_index: 0,
            first: size,
            other_index: index,
            other: other.dimensions(),
        });
    }
    Ok(size)
}

/// `[N, 3, H, W]` with values `x / 127.5 - 1` in [-1, 1] (f32, as
/// `tensor.float() / 127.5 - 1` in PyTorch). All images must have the same size.
pub fn to_signed_tensor<B: Backend>(
    images: &[RgbImage],
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let refs: Vec<&RgbImage> = images.iter().collect();
    let (width, height) = common_size(&refs)?;
    let (w, h) = (width as usize, height as usize);
    let plane = w * h;
    let mut values = vec![0f32; images.len() * 3 * plane];
    for (n, image) in images.iter().enumerate() {
        let out = &mut values[n * 3 * plane..(n + 1) * 3 * plane];
        for (i, pixel) in image.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = pixel[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(values, [images.len(), 3, h, w]),
        device,
    ))
}
