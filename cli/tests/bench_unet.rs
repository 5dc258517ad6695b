//! `atelier bench unet` runs on the tiny config and prints a row. No time is
//! asserted: benchmarks print figures, tests only check that they come out.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_atelier");

fn bench(python: Option<&str>) -> Value {
    let mut c = Command::new(BIN);
    c.args([
        "bench",
        "unet",
        "--configs",
        "tiny",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    match python {
        Some(p) => c.env("ATELIER_PYTHON", p),
        None => c.env_remove("ATELIER_PYTHON"),
    };
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn tiny_unet_without_python_prints_a_row() {
    let rows = bench(None);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["config"], "tiny");
    assert_eq!(row["batch"], 2);
    assert_eq!(row["latent"], serde_json::json!([16, 16]));
    assert!(row["params"].as_u64().unwrap() > 0);
    assert!(row["atelier"]["median_ms"].as_f64().unwrap() > 0.0);
    assert!(row["pytorch"].is_null());
    assert!(row["ratio"].is_null());

    let table = Command::new(BIN)
        .args([
            "bench",
            "unet",
            "--configs",
            "tiny",
            "--iters",
            "1",
            "--warmup",
            "0",
        ])
        .env_remove("ATELIER_PYTHON")
        .output()
        .unwrap();
    assert!(table.status.success());
    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("tiny") && l.contains("16x16")),
        "{stdout}"
    );
}

/// With a Python that has torch and diffusers (ATELIER_PYTHON), both sides run on
/// the same weights and inputs and agree.
#[test]
fn tiny_unet_matches_pytorch_when_python_is_configured() {
    let Some(python) = std::env::var("ATELIER_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        eprintln!("ATELIER_PYTHON not set: skipping the PyTorch side");
        return;
    };
    let rows = bench(Some(&python));
    let row = &rows[0];
    assert_eq!(row["pytorch"]["params"], row["params"]);
    let diff = row["max_abs_diff"].as_f64().unwrap();
    let scale = row["max_abs_out"].as_f64().unwrap();
    assert!(diff <= 1e-4 * scale.max(1.0), "{row:#}");
}
