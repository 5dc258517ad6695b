//! Image metrics for atelier's evaluation jobs: LPIPS and CLIP score, in burn.
//!
//! Both are checked against the Python packages that define them: LPIPS against the
//! `lpips` package (v0.1 weights) and CLIP score against transformers' `CLIPModel` with
//! the image processor torchmetrics' `CLIPScore` uses. Weights are read from files the
//! user supplies; a missing file's error says how to get it.
//!
//! # Layout
//! - [`error`]: the crate's error type; messages name the file, tensor or image.
//! - [`images`]: reading images, and the [-1, 1] tensors LPIPS takes.
//! - [`lpips`]: LPIPS with AlexNet or VGG16 (`lpips.LPIPS(version="0.1")`).
//! - [`clip`]: CLIP image and text embeddings and the CLIP score (`CLIPScore`).
//! - [`testing`]: LPIPS weight files with random backbones, for tests.
#![recursion_limit = "256"]

pub mod clip;
pub mod error;
pub mod images;
pub mod lpips;
pub mod testing;

pub use error::{MetricsError, Result};
