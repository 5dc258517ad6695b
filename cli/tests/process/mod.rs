//! Running the `atelier` binary as a user does, and the model library's fixtures
//! the model tests use.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `worker/sd/tests/fixtures/<name>`.
pub fn sd_fixture(name: &str) -> PathBuf {
    repo().join("worker/sd/tests/fixtures").join(name)
}

pub fn atelier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(args)
        .output()
        .expect("the atelier binary runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
