//! `atelier trainset check N`: every file re-hashed and re-decoded against
//! `trainset.toml`; exits 7 naming every missing, changed, unreadable or extra file.

use atelier_worker::trainset::{self, CheckReport};

use super::{cli_error, progress_bar, DirArg};
use crate::error::{CliError, CliResult, Exit};
use crate::output::print_json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trainset name (a folder of DIR), or a path to a trainset folder
    name: String,
    #[command(flatten)]
    dir: DirArg,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> CliResult {
        let folder = trainset::locate(&self.dir.dir, &self.name);
        let bar = progress_bar(self.json);
        bar.set_message("checking");
        let report = trainset::check(&folder, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        });
        bar.finish_and_clear();
        let report = report.map_err(cli_error)?;
        if self.json {
            print_json(&report);
        } else {
            print_report(&report);
        }
        if report.is_clean() {
            return Ok(());
        }
        Err(CliError::new(
            Exit::JobsFailed,
            format!(
                "trainset `{}` differs from its trainset.toml: {} missing, {} changed, {} unreadable, {} extra",
                report.name,
                report.missing.len(),
                report.changed.len(),
                report.unreadable.len(),
                report.extra.len()
            ),
        ))
    }
}

fn print_report(r: &CheckReport) {
    for file in &r.missing {
        println!("missing `{file}`");
    }
    for c in &r.changed {
        println!("changed `{}`: {}", c.file, c.reason);
    }
    for u in &r.unreadable {
        println!("unreadable `{}`: {}", u.file, u.reason);
    }
    for file in &r.extra {
        println!("extra `{file}`");
    }
    if r.is_clean() {
        println!(
            "trainset `{}`: all {} files match trainset.toml",
            r.name, r.checked
        );
    }
}
