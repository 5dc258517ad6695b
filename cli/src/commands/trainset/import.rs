//! `atelier trainset import SRC --name N`: every valid image of SRC into
//! `DIR/N/images/`, with what was rejected, left out as duplicate, converted and
//! ignored named, and counts and hashes in `DIR/N/trainset.toml`.

use std::path::PathBuf;

use atelier_worker::trainset::{self, ImportEvent, ImportOptions, ImportReport, Sameness};

use super::{cli_error, progress_bar};
use crate::error::CliResult;
use crate::output::print_json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of images, searched recursively; `name.txt` beside `name.png` is its caption
    #[arg(value_name = "SRC")]
    pub source: PathBuf,
    /// The trainset's name: its folder is DIR/NAME
    #[arg(long)]
    pub name: String,
    /// Folder of trainsets
    #[arg(long, default_value = "trainsets", value_name = "DIR")]
    pub into: PathBuf,
    /// Link the images that need no conversion to their source files instead of copying
    #[arg(long)]
    pub link: bool,
    /// Token training learns (`<monet-style>`); kept from trainset.toml when not given
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Caption of images without a .txt file; `{}` is the token
    #[arg(long, value_name = "T")]
    pub caption_template: Option<String>,
    /// Training resolution in pixels, a multiple of 8 (default 512)
    #[arg(long, value_name = "PX")]
    pub resolution: Option<u32>,
    /// Print a JSON summary
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub fn run(self) -> CliResult {
        let options = ImportOptions {
            source: self.source,
            into: self.into,
            name: self.name,
            link: self.link,
            token: self.token,
            caption_template: self.caption_template,
            resolution: self.resolution,
        };
        let bar = progress_bar(self.json);
        let report = trainset::import(&options, &mut |event| {
            let (what, done, total) = match event {
                ImportEvent::Checked { done, total } => ("decoding", done, total),
                ImportEvent::Stored { done, total } => ("storing", done, total),
            };
            bar.set_message(what);
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
        Ok(())
    }
}

fn print_report(r: &ImportReport) {
    for c in &r.converted {
        println!("converted `{}` ({}) -> `{}`", c.file, c.from, c.stored_as);
    }
    for rejected in &r.rejected {
        println!("rejected `{}`: {}", rejected.file, rejected.reason);
    }
    for d in &r.duplicates {
        let same = match d.same {
            Sameness::Bytes => "same bytes",
            Sameness::Pixels => "same pixels",
        };
        println!("duplicate `{}`: {same} as `{}`", d.file, d.same_as);
    }
    for file in &r.ignored {
        println!("ignored `{file}`: not an image or a caption");
    }
    for file in &r.removed {
        println!("removed `{file}`: the previous import stored it, this one did not");
    }
    for file in &r.foreign {
        println!("left `{file}` in images/: no import put it there");
    }
    println!(
        "{} image files in `{}`: {} stored ({} converted, {} with captions{}), {} rejected, {} duplicates; {} other files ignored",
        r.found,
        r.from,
        r.images,
        r.converted.len(),
        r.captions,
        if r.linked { ", linked" } else { "" },
        r.rejected.len(),
        r.duplicates.len(),
        r.ignored.len(),
    );
    let files = r.written.len() + r.unchanged;
    if r.changed {
        println!(
            "`{}`: {} of {files} files written, {} removed; `{}` {}",
            r.trainset.display(),
            r.written.len(),
            r.removed.len(),
            r.manifest.display(),
            if r.manifest_written {
                "written"
            } else {
                "unchanged"
            },
        );
    } else {
        println!(
            "nothing changed: `{}` already holds these {files} files and this trainset.toml",
            r.trainset.display()
        );
    }
}
