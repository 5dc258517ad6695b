//! `atelier trainset ls`: the trainsets of a folder, one row each.

use atelier_worker::trainset::{self, Status};

use super::{cli_error, DirArg};
use crate::error::{CliError, CliResult};
use crate::output::{print_json, table};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    dir: DirArg,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> CliResult {
        let surveys = trainset::list(&self.dir.dir).map_err(cli_error)?;
        if self.json {
            print_json(&surveys);
        } else {
            let mut t = table(&["name", "token", "images", "resolution", "status"]);
            for s in &surveys {
                let expected = s.expected.map_or("-".to_string(), |n| n.to_string());
                t.add_row(vec![
                    s.name.clone(),
                    s.token.clone().unwrap_or_else(|| "-".into()),
                    format!("{} / {expected}", s.found),
                    s.resolution.map_or("-".to_string(), |r| r.to_string()),
                    s.status_line(),
                ]);
            }
            println!("{t}");
        }
        let invalid: Vec<&str> = surveys
            .iter()
            .filter(|s| s.status == Status::InvalidManifest)
            .filter_map(|s| s.error.as_deref())
            .collect();
        if invalid.is_empty() {
            Ok(())
        } else {
            Err(CliError::invalid(invalid.join("\n")))
        }
    }
}
