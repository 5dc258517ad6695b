//! Shared helpers for the golden tests.
#![allow(dead_code)]

use std::path::PathBuf;

use atelier_sd::weights::SafetensorsFile;
use burn::tensor::Tensor;

pub type Cpu = burn::backend::NdArray<f32>;

/// The two tiny pipelines `tools/make_sd_fixtures.py` makes: SD1.x-shaped in f32,
/// and another config stored only as fp16 variant files.
pub const PIPELINES: [&str; 2] = ["tiny-sd", "tiny-sd-alt"];

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

pub fn reference(name: &str) -> SafetensorsFile {
    SafetensorsFile::open(
        fixtures()
            .join("reference")
            .join(format!("{name}.safetensors")),
    )
    .unwrap()
}

pub fn reference_json(name: &str) -> PathBuf {
    fixtures().join("reference").join(format!("{name}.json"))
}

/// Panics with the largest difference when `actual` and `expected` differ by more
/// than `tolerance` anywhere (or differ in shape).
pub fn assert_close<const D: usize>(
    what: &str,
    actual: Tensor<Cpu, D>,
    expected: Tensor<Cpu, D>,
    tolerance: f32,
) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shapes differ");
    let diff = max_abs_diff(actual, expected);
    assert!(
        diff <= tolerance,
        "{what}: max abs error {diff:e} exceeds {tolerance:e}"
    );
    eprintln!("{what}: max abs error {diff:e}");
}

pub fn max_abs_diff<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
    let values = (a - b)
        .abs()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap();
    if values.iter().any(|v| v.is_nan()) {
        return f32::NAN;
    }
    values.into_iter().fold(0.0f32, f32::max)
}
