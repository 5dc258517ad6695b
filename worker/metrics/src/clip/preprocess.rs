//! CLIP's image preprocessing, as transformers 5's `CLIPImageProcessor` runs it for
//! torchmetrics' `CLIPScore` (which hands it `uint8 [3, H, W]` tensors).
//!
//! In transformers 5 `CLIPImageProcessor` is the torchvision backend (the old "fast"
//! processor); the PIL one is `CLIPImageProcessorPil`. Its steps:
//!
//! 1. resize so that the shortest edge is `size` (the long edge `int(size * long /
//!    short)`) with torchvision's antialiased bicubic on the `uint8` tensor, which on
//!    the CPU is torch's PIL-style separable resampler: filter weights in f64
//!    normalised per output pixel, turned into int16 with a precision picked from the
//!    largest weight, integer accumulation with rounding, clamped to 0..255; width pass
//!    first, then height, through a `uint8` intermediate. Written out here to the bit
//!    (`resize_bicubic`);
//! 2. centre crop to `crop_size` (zero padding where the image is smaller);
//! 3. rescale and normalise fused in f32: `(x - mean * 255) / (std * 255)` with
//!    `mean * 255` and `std * 255` rounded to f32, as torchvision's `normalize` gets them.
//!
//! PIL's resampler (transformers 4, `CLIPImageProcessorPil`) differs only in the
//! weights' precision (22 bits): at most one `uint8` step in some pixels, 0.015 in
//! pixel_values.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::RgbImage;
use serde_json::Value;

use crate::error::{MetricsError, Result};

/// transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`.
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
/// PIL's code for bicubic (`PILImageResampling.BICUBIC`).
const BICUBIC: u64 = 3;

/// How the processor sizes an image before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// `{"shortest_edge": n}` (or a plain `n`): keep the aspect ratio.
    ShortestEdge(usize),
    /// `{"height": h, "width": w}`.
    Exact { height: usize, width: usize },
}

/// `preprocessor_config.json`, with `CLIPImageProcessor`'s defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub do_resize: bool,
    pub size: ResizeTo,
    pub do_center_crop: bool,
    /// (height, width)
    pub crop_size: (usize, usize),
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            do_resize: true,
            size: ResizeTo::ShortestEdge(224),
            do_center_crop: true,
            crop_size: (224, 224),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
        }
    }
}

impl PreprocessConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| MetricsError::io(path, e))?;
        let json: Value = atelier_sd::config::parse_json(&text)
            .map_err(|e| MetricsError::config(path, format!("not valid JSON: {e}")))?;
        Self::from_json(&json).map_err(|m| MetricsError::config(path, m))
    }

    pub fn from_json(json: &Value) -> std::result::Result<Self, String> {
        let object = json
            .as_object()
            .ok_or("a preprocessor config must be a JSON object")?;
        let get = |key: &str| object.get(key).filter(|v| !v.is_null());
        let mut config = PreprocessConfig::default();
        let flag = |key: &str, default: bool| match get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("`{key}` is {v}, expected true or false")),
        };
        config.do_resize = flag("do_resize", true)?;
        config.do_center_crop = flag("do_center_crop", true)?;
        config.do_rescale = flag("do_rescale", true)?;
        config.do_normalize = flag("do_normalize", true)?;
        if let Some(v) = get("size") {
            config.size = parse_size(v)?;
        }
        if let Some(v) = get("crop_size") {
            config.crop_size = match parse_size(v)? {
                ResizeTo::Exact { height, width } => (height, width),
                // A plain number is a square crop.
                ResizeTo::ShortestEdge(n) if v.is_number() => (n, n),
                ResizeTo::ShortestEdge(_) => {
                    return Err(format!("`crop_size` is {v}, expected a height and a width"))
                }
            };
        }
        if let Some(v) = get("resample") {
            if v.as_u64() != Some(BICUBIC) {
                return Err(format!(
                    "`resample` is {v}: atelier resizes with bicubic only (3), as CLIP's processor"
                ));
            }
        }
        if let Some(v) = get("rescale_factor") {
            config.rescale_factor = v
                .as_f64()
                .ok_or_else(|| format!("`rescale_factor` is {v}, expected a number"))?;
        }
        if let Some(v) = get("image_mean") {
            config.image_mean = parse_triple("image_mean", v)?;
        }
        if let Some(v) = get("image_std") {
            config.image_std = parse_triple("image_std", v)?;
        }
        if config.image_std.contains(&0.0) {
            return Err("`image_std` has a zero".into());
        }
        Ok(config)
    }

    /// The (height, width) an image of (height, width) is resized to.
    pub fn resized_size(&self, height: usize, width: usize) -> (usize, usize) {
        if !self.do_resize {
            return (height, width);
        }
        match self.size {
            ResizeTo::Exact { height, width } => (height, width),
            // transformers' `get_resize_output_image_size(default_to_square=False)`.
            ResizeTo::ShortestEdge(size) => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                let new_long = ((size * long) as f64 / short as f64) as usize;
                if width <= height {
                    (new_long, size)
                } else {
                    (size, new_long)
                }
            }
        }
    }
}

fn parse_size(v: &Value) -> std::result::Result<ResizeTo, String> {
    let positive = |key: &str, v: &Value| match v.as_u64() {
        Some(n) if n > 0 => Ok(n as usize),
        _ => Err(format!("`{key}` is {v}, expected a positive integer")),
    };
    if v.is_number() {
        return Ok(ResizeTo::ShortestEdge(positive("size", v)?));
    }
    let object = v
        .as_object()
        .ok_or_else(|| format!("a size is {v}, expected a number or an object"))?;
    let field = |key: &str| object.get(key).filter(|v| !v.is_null());
    match (
        field("shortest_edge"),
        field("height"),
        field("width"),
        field("longest_edge"),
    ) {
        (Some(s), None, None, None) => Ok(ResizeTo::ShortestEdge(positive("shortest_edge", s)?)),
        (None, Some(h), Some(w), None) => Ok(ResizeTo::Exact {
            height: positive("height", h)?,
            width: positive("width", w)?,
        }),
        _ => Err(format!(
            "the size {v} is not supported: expected {{\"shortest_edge\": n}} or {{\"height\": h, \"width\": w}}"
        )),
    }
}

fn parse_triple(key: &str, v: &Value) -> std::result::Result<[f64; 3], String> {
    if let Some(x) = v.as_f64() {
        return Ok([x; 3]);
    }
    let bad = || format!("`{key}` is {v}, expected a number or three numbers");
    let list = v.as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
    let mut out = [0.0; 3];
    for (o, x) in out.iter_mut().zip(list) {
        *o = x.as_f64().ok_or_else(bad)?;
    }
    Ok(out)
}

/// An 8-bit image as three planes, [3, height, width].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planes {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl Planes {
    pub fn from_rgb(image: &RgbImage) -> Self {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let plane = width * height;
        let mut data = vec![0u8; 3 * plane];
        for (i, pixel) in image.pixels().enumerate() {
            for c in 0..3 {
                data[c * plane + i] = pixel[c];
            }
        }
        Planes {
            height,
            width,
            data,
        }
    }
}

/// PIL's and torch's bicubic filter (Keys, a = -0.5), in torch's operation order.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// Integer taps of one axis: per output pixel the first input pixel and the weights,
/// and the fixed-point precision (torch's `_compute_indices_int16_weights_aa`).
struct AxisTaps {
    precision: u32,
    taps: Vec<(usize, Vec<i32>)>,
}

fn axis_taps(input: usize, output: usize) -> AxisTaps {
    let scale = input as f64 / output as f64;
    let (support, invscale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    let rows: Vec<(usize, Vec<f64>)> = (0..output)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let start = ((center - support + 0.5) as i64).max(0);
            let end = ((center + support + 0.5) as i64).min(input as i64);
            let mut weights: Vec<f64> = (start..end)
                .map(|j| cubic((j as f64 - center + 0.5) * invscale))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (start as usize, weights)
        })
        .collect();
    // The largest weight (torch also sees the zero padding, hence the 0.0 start).
    let w_max = rows
        .iter()
        .flat_map(|(_, w)| w.iter().copied())
        .fold(0.0f64, f64::max);
    let mut precision = 0;
    while precision < 22 {
        if (0.5 + w_max * (1u64 << (precision + 1)) as f64) as i64 >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let unit = (1u64 << precision) as f64;
    let taps = rows
        .into_iter()
        .map(|(start, weights)| {
            let ints = weights
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * unit) as i32
                    } else {
                        (0.5 + v * unit) as i32
                    }
                })
                .collect();
            (start, ints)
        })
        .collect();
    AxisTaps { precision, taps }
}

fn convolve(values: impl Iterator<Item = u8>, weights: &[i32], precision: u32) -> u8 {
    let sum = values
        .zip(weights)
        .fold(1i32 << (precision - 1), |acc, (v, &w)| acc + v as i32 * w);
    (sum >> precision).clamp(0, 255) as u8
}

/// torchvision's `resize(uint8 tensor, (height, width), BICUBIC, antialias=True)` on the
/// CPU, to the bit.
pub fn resize_bicubic(image: &Planes, height: usize, width: usize) -> Planes {
    let mut current = image.clone();
    if width != current.width {
        let AxisTaps { precision, taps } = axis_taps(current.width, width);
        let (h, w) = (current.height, current.width);
        let mut data = vec![0u8; 3 * h * width];
        for row in 0..3 * h {
            let src = &current.data[row * w..(row + 1) * w];
            for (x, (start, weights)) in taps.iter().enumerate() {
                data[row * width + x] = convolve(src[*start..].iter().copied(), weights, precision);
            }
        }
        current = Planes {
            height: h,
            width,
            data,
        };
    }
    if height != current.height {
        let AxisTaps { precision, taps } = axis_taps(current.height, height);
        let (h, w) = (current.height, current.width);
        let mut data = vec![0u8; 3 * height * w];
        for c in 0..3 {
            let src = &current.data[c * h * w..(c + 1) * h * w];
            for (y, (start, weights)) in taps.iter().enumerate() {
                for x in 0..w {
                    let column = (*start..h).map(|yy| src[yy * w + x]);
                    data[(c * height + y) * w + x] = convolve(column, weights, precision);
                }
            }
        }
        current = Planes {
            height,
            width: w,
            data,
        };
    }
    current
}

/// torchvision's `center_crop` as transformers' torchvision backend calls it: zero
/// padding first where the image is smaller than the crop.
pub fn center_crop(image: &Planes, height: usize, width: usize) -> Planes {
    let pad_top = height.saturating_sub(image.height) / 2;
    let pad_left = width.saturating_sub(image.width) / 2;
    let pad_bottom = height.saturating_sub(image.height).div_ceil(2);
    let pad_right = width.saturating_sub(image.width).div_ceil(2);
    let (ph, pw) = (
        image.height + pad_top + pad_bottom,
        image.width + pad_left + pad_right,
    );
    let top = (ph - height) / 2;
    let left = (pw - width) / 2;
    let mut data = vec![0u8; 3 * height * width];
    for c in 0..3 {
        for y in 0..height {
            // Row in the padded image, then in the original.
            let Some(sy) = (top + y).checked_sub(pad_top).filter(|&s| s < image.height) else {
                continue;
            };
            for x in 0..width {
                let Some(sx) = (left + x)
                    .checked_sub(pad_left)
                    .filter(|&s| s < image.width)
                else {
                    continue;
                };
                data[(c * height + y) * width + x] =
                    image.data[(c * image.height + sy) * image.width + sx];
            }
        }
    }
    Planes {
        height,
        width,
        data,
    }
}

/// One image: resized, cropped, as f32 [3, h, w] values with its (h, w).
pub fn preprocess_image(image: &RgbImage, config: &PreprocessConfig) -> (Vec<f32>, usize, usize) {
    let mut planes = Planes::from_rgb(image);
    let (height, width) = config.resized_size(planes.height, planes.width);
    if (height, width) != (planes.height, planes.width) {
        planes = resize_bicubic(&planes, height, width);
    }
    if config.do_center_crop {
        let (h, w) = config.crop_size;
        planes = center_crop(&planes, h, w);
    }
    let plane = planes.height * planes.width;
    // torch: `tensor(mean, f32) * (1 / rescale_factor)` and `sub_(mean).div_(std)` in f32.
    let (mean, std, scale): ([f32; 3], [f32; 3], Option<f32>) =
        match (config.do_rescale, config.do_normalize) {
            (true, true) => {
                let inverse = (1.0 / config.rescale_factor) as f32;
                (
                    config.image_mean.map(|m| m as f32 * inverse),
                    config.image_std.map(|s| s as f32 * inverse),
                    None,
                )
            }
            (false, true) => (
                config.image_mean.map(|m| m as f32),
                config.image_std.map(|s| s as f32),
                None,
            ),
            (true, false) => ([0.0; 3], [1.0; 3], Some(config.rescale_factor as f32)),
            (false, false) => ([0.0; 3], [1.0; 3], None),
        };
    let values = planes
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / plane;
            let x = v as f32;
            match scale {
                Some(s) => x * s,
                None if config.do_normalize => (x - mean[c]) / std[c],
                None => x,
            }
        })
        .collect();
    (values, planes.height, planes.width)
}

/// `pixel_values` [N, 3, h, w] for a batch (all images must come out the same size,
/// which the centre crop ensures).
pub fn preprocess<B: Backend>(
    images: &[RgbImage],
    config: &PreprocessConfig,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    if images.is_empty() {
        return Err(MetricsError::Empty("images"));
    }
    let mut values = Vec::new();
    let mut size = None;
    for (index, image) in images.iter().enumerate() {
        let (v, h, w) = preprocess_image(image, config);
        match size {
            None => size = Some((h, w)),
            Some((h0, w0)) if (h0, w0) != (h, w) => {
                return Err(MetricsError::Invalid(format!(
                    "preprocessed images differ in size (no centre crop): image 0 gives {w0}x{h0}, image {index} {w}x{h}"
                )))
            }
            Some(_) => {}
        }
        values.extend(v);
    }
    let (h, w) = size.expect("at least one image");
    Ok(Tensor::from_data(
        TensorData::new(values, [images.len(), 3, h, w]),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_and_dict_layouts_parse() {
        let hub = PreprocessConfig::from_json(&serde_json::json!({
            "crop_size": 224, "size": 224, "resample": 3,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "feature_extractor_type": "CLIPFeatureExtractor"
        }))
        .unwrap();
        assert_eq!(hub, PreprocessConfig::default());
        let dict = PreprocessConfig::from_json(&serde_json::json!({
            "crop_size": {"height": 30, "width": 20}, "size": {"height": 40, "width": 50},
            "image_mean": 0.5, "do_center_crop": false
        }))
        .unwrap();
        assert_eq!(dict.crop_size, (30, 20));
        assert_eq!(dict.resized_size(7, 9), (40, 50));
        assert_eq!(dict.image_mean, [0.5; 3]);
        assert!(!dict.do_center_crop);
    }

    #[test]
    fn unsupported_settings_are_refused() {
        for (json, field) in [
            (serde_json::json!({"resample": 2}), "resample"),
            (
                serde_json::json!({"size": {"shortest_edge": 3, "longest_edge": 9}}),
                "not supported",
            ),
            (serde_json::json!({"image_std": [1, 2]}), "image_std"),
            (serde_json::json!({"do_resize": "yes"}), "do_resize"),
        ] {
            let err = PreprocessConfig::from_json(&json).unwrap_err();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn shortest_edge_sizes_follow_transformers() {
        let config = PreprocessConfig::default();
        assert_eq!(config.resized_size(512, 768), (224, 336));
        assert_eq!(config.resized_size(768, 512), (336, 224));
        // int(224 * 333 / 100) = 745
        assert_eq!(config.resized_size(100, 333), (224, 745));
        assert_eq!(config.resized_size(50, 50), (224, 224));
    }

    #[test]
    fn same_size_resize_and_full_crop_are_identity() {
        let planes = Planes {
            height: 2,
            width: 3,
            data: (0..18).collect(),
        };
        assert_eq!(resize_bicubic(&planes, 2, 3), planes);
        assert_eq!(center_crop(&planes, 2, 3), planes);
        let cropped = center_crop(&planes, 4, 1);
        // padded by one row above and below, middle column
        assert_eq!(cropped.data[..4], [0, 1, 4, 0]);
    }
}
