//! `atelier trainset`: turn a folder of images into a trainset (`import`), list
//! trainsets (`ls`), describe one (`show`), verify one against its manifest
//! (`check`) and store one in the coordinator's artifact store (`push`). One file
//! per sub-verb; the work is `atelier_worker::trainset`'s.

mod check;
mod import;
mod ls;
mod push;
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
    /// Store a trainset in the coordinator's artifact store, for `prepare` jobs on `pushed:NAME`
    ///
    /// The folder's trainset.toml and the image and .txt caption files of its images/
    /// (or of the folder itself, when it has no images/) are packed into one
    /// uncompressed tar, names sorted, times and modes fixed: the same files give the
    /// same bytes, so the same sha256. Content the coordinator has already is not sent
    /// again; the name then just points at it. A progress bar shows on a terminal.
    ///
    /// A prepare job reads it with `params: {trainset: pushed:NAME}`. At submit the
    /// coordinator pins the name to the content pushed last (`pushed:NAME@SHA256` in
    /// the stored params), so every job of an experiment reads the same bytes
    /// whatever is pushed later; `pushed:NAME@HEX` (8 or more hex digits of the
    /// sha256) or `sha256:HEX` name one content exactly. Each worker downloads it
    /// once (sha256 checked) and keeps it unpacked in DATA_DIR/cache/trainsets/.
    ///
    /// Prepare jobs on the same pushed content with equal params run once: the
    /// others succeed without running, with that job's artifacts and
    /// `"cached_from": <job id>` in their result.
    ///
    /// Examples:
    ///   atelier trainset push trainsets/monet                # pushed as `monet`
    ///   atelier trainset push ~/sets/v2 --name monet --json  # `monet` now means v2
    #[command(verbatim_doc_comment)]
    Push(push::Args),
}

impl Trainset {
    pub async fn exec(self, settings: Settings) -> CliResult {
        if let Trainset::Push(a) = self {
            return a.exec(settings).await;
        }
        tokio::task::spawn_blocking(move || match self {
            Trainset::Import(a) => a.run(),
            Trainset::Ls(a) => a.run(),
            Trainset::Show(a) => a.run(),
            Trainset::Check(a) => a.run(),
            Trainset::Push(_) => unreachable!("handled above"),
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
