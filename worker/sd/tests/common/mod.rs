//! Shared helpers for the golden tests.
#![allow(dead_code)]

use std::path::PathBuf;

use atelier_sd::weights::SafetensorsFile;
use burn::tensor::Tensor;

/// The backend the golden tests run on: ndarray, or CUDA with the `test-cuda`
/// feature (`cargo test -p atelier-sd --features test-cuda`, on a machine with a GPU).
#[cfg(not(feature = "test-cuda"))]
pub type TestBackend = burn::backend::NdArray<f32>;
#[cfg(feature = "test-cuda")]
pub type TestBackend = burn::backend::Cuda<f32>;

/// A CPU tolerance, widened to the 1e-3 that GPU kernels (other summation orders,
/// TF32 matmuls) are held to.
pub fn tolerance(cpu: f32) -> f32 {
    if cfg!(feature = "test-cuda") {
        cpu.max(1e-3)
    } else {
        cpu
    }
}

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
    actual: Tensor<TestBackend, D>,
    expected: Tensor<TestBackend, D>,
    tolerance: f32,
) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shapes differ");
    let diff = max_abs_diff(actual, expected);
    let tolerance = self::tolerance(tolerance);
    assert!(
        diff <= tolerance,
        "{what}: max abs error {diff:e} exceeds {tolerance:e}"
    );
    eprintln!("{what}: max abs error {diff:e}");
}

pub fn max_abs_diff<const D: usize>(a: Tensor<TestBackend, D>, b: Tensor<TestBackend, D>) -> f32 {
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
