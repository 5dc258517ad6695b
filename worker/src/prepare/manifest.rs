//! The dataset manifest: what went into `dataset.safetensors`, and what did not.
//!
//! It is written twice: pretty-printed as `manifest.json` beside the dataset, and as
//! compact JSON under the `manifest` key of the safetensors metadata, so the packed
//! file alone is enough to train from and to trace each image back to its source.

use serde::{Deserialize, Serialize};

/// Value of [`Manifest::format`] and of the `format` safetensors metadata key.
pub const FORMAT: &str = "atelier-dataset-v1";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Always [`FORMAT`]; readers check it before trusting the rest.
    pub format: String,
    /// The image folder as the worker saw it (the trainset folder or its `images/`);
    /// every `file` below is relative to it.
    pub source: String,
    /// Side of every packed image, in pixels.
    pub resolution: u32,
    /// Number of packed images, `images.len()`; the first dimension of the tensor.
    pub count: usize,
    /// Packed images, in tensor order (which is the sorted order of their paths).
    pub images: Vec<ManifestImage>,
    /// Files with an image extension that could not be decoded.
    pub rejected: Vec<Rejected>,
    /// Images left out because an earlier image has the same bytes or pixels.
    pub duplicates: Vec<Duplicate>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ManifestImage {
    /// Position in the `images` tensor.
    pub index: usize,
    /// Path relative to the image folder, with `/` separators on every platform.
    pub file: String,
    /// Hex sha256 of the file's bytes, so a later run can tell whether it changed.
    pub sha256: String,
    /// Size as displayed (after the EXIF orientation), before the crop and resize.
    pub width: u32,
    pub height: u32,
    /// Trimmed content of the `.txt` file with the same stem, if any and not empty.
    pub caption: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Path relative to the image folder.
    pub file: String,
    /// The decoder's message.
    pub reason: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Duplicate {
    /// Path relative to the image folder of the image left out.
    pub file: String,
    /// Path of the packed image it duplicates.
    pub same_as: String,
}
