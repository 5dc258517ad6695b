//! `atelier trainset`: turn a folder of images into a trainset (`import`), list
//! trainsets (`ls`), describe one (`show`) and verify one against its manifest
//! (`check`). One file per sub-verb; the work is `atelier_worker::trainset`'s.

mod check;
mod import;
mod ls;
mod show;

use std::io::IsTerminal;
use std::path::PathBuf;

use atelier_worker::trainset::TrainsetError;
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{CliError, CliResult, Exit};
use crate::settings::Settings;

#[derive(clap::Subcommand, Debug)]
pub enum Trainset {
    /// Copy (or link) the valid images of a folder into DIR/NAME/images and write trainset.toml
    Import(import::Args),
    /// List the trainsets of a folder: token, images found / expected, resolution, status
    Ls(ls::Args),
    /// Show a trainset: its manifest, counts and first rejects
    Show(show::Args),
    /// Re-hash and re-decode every file against trainset.toml; exit 7 naming each difference
    Check(check::Args),
}

impl Trainset {
    pub async fn exec(self, _settings: Settings) -> CliResult {
        tokio::task::spawn_blocking(move || match self {
            Trainset::Import(a) => a.run(),
            Trainset::Ls(a) => a.run(),
            Trainset::Show(a) => a.run(),
            Trainset::Check(a) => a.run(),
        })
        .await
        .map_err(|e| CliError::failure(e.to_string()))?
    }
}

/// The folder of trainsets, shared by `ls`, `show` and `check`.
#[derive(clap::Args, Debug)]
struct DirArg {
    /// Folder of trainsets
    #[arg(long, default_value = "trainsets", value_name = "DIR")]
    dir: PathBuf,
}

/// A library error with the exit code scripts rely on.
fn cli_error(e: TrainsetError) -> CliError {
    let exit = if e.is_invalid_input() {
        Exit::Invalid
    } else if e.is_not_found() {
        Exit::NotFound
    } else {
        Exit::Failure
    };
    CliError::new(exit, e.to_string())
}

/// A bar on stderr when it is a terminal and the output is not JSON.
fn progress_bar(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:10} {bar:30} {pos}/{len}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// `a`, `a and b`, then `a, b, … and N more` past `max` names.
fn first_names<'a>(names: impl ExactSizeIterator<Item = &'a str>, max: usize) -> String {
    let total = names.len();
    let mut listed: Vec<String> = names.take(max).map(|n| format!("`{n}`")).collect();
    if total > max {
        listed.push(format!("and {} more", total - max));
    }
    listed.join(", ")
}
