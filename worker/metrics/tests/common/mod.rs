//! Shared helpers for the golden tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use atelier_sd::weights::SafetensorsFile;

pub type TestBackend = burn::backend::NdArray<f32>;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn floats(value: &serde_json::Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// A reference tensor as rows of its last dimension.
pub fn rows(file: &SafetensorsFile, name: &str) -> Vec<Vec<f32>> {
    let (shape, values) = file.read_f32(name).unwrap();
    values
        .chunks(*shape.last().unwrap())
        .map(<[f32]>::to_vec)
        .collect()
}

/// The largest absolute difference between two equally long lists.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn max_diff_rows(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row counts differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| max_diff(x, y))
        .fold(0.0, f32::max)
}

/// Panics with the measured difference when it exceeds `tolerance`; prints it otherwise.
pub fn assert_within(what: &str, diff: f32, tolerance: f32) {
    assert!(
        diff <= tolerance,
        "{what}: max abs difference {diff:e} exceeds {tolerance:e}"
    );
    eprintln!("{what}: max abs difference {diff:e} (tolerance {tolerance:e})");
}
