//! `atelier trainset show N`: one trainset's manifest, its counts, and the first
//! files its last import rejected.

use atelier_worker::trainset::{self, Survey, TrainsetManifest};

use super::{cli_error, first_names, DirArg};
use crate::error::CliResult;
use crate::output::print_json;

/// Rejects listed with their reasons; the rest are counted.
const REJECTS_SHOWN: usize = 10;

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
        // A missing or invalid manifest is an error here, named by `load`.
        let manifest = TrainsetManifest::load(&folder).map_err(cli_error)?;
        let survey = trainset::survey(&folder).map_err(cli_error)?;
        if self.json {
            let files = manifest.files.len();
            let manifest = TrainsetManifest {
                files: Vec::new(),
                ..manifest
            };
            print_json(&serde_json::json!({
                "trainset": survey,
                "status_line": survey.status_line(),
                "manifest": manifest,
                "files": files,
            }));
        } else {
            print_text(&manifest, &survey);
        }
        Ok(())
    }
}

fn print_text(m: &TrainsetManifest, s: &Survey) {
    let or_dash = |v: Option<&String>| v.cloned().unwrap_or_else(|| "-".into());
    println!("trainset    {} (`{}`)", m.name, s.trainset.display());
    println!("token       {}", or_dash(m.token.as_ref()));
    println!(
        "captions    {}",
        m.caption_template.as_ref().map_or_else(
            || "per image (name.txt)".to_string(),
            |t| format!("\"{t}\" where an image has no name.txt")
        )
    );
    println!("class       {}", or_dash(m.class_prompt.as_ref()));
    println!("resolution  {}", m.resolution);
    println!(
        "images      {} found / {} expected",
        s.found,
        m.expected_images.map_or("-".into(), |n| n.to_string())
    );
    println!("status      {}", s.status_line());
    for (label, value) in [
        ("source", &m.source.description),
        ("where", &m.source.where_found),
        ("licence", &m.source.licence),
    ] {
        if let Some(text) = value {
            let mut lines = text.trim().lines();
            println!("{label:<11} {}", lines.next().unwrap_or_default());
            for line in lines {
                println!("            {line}");
            }
        }
    }
    let Some(import) = &m.import else {
        println!(
            "import      none yet: atelier trainset import SRC --name {}",
            m.name
        );
        return;
    };
    println!(
        "import      from `{}` ({}): {} image files, {} stored ({} with captions), {} converted, \
         {} rejected, {} duplicates, {} other files ignored",
        import.from,
        if import.linked { "linked" } else { "copied" },
        import.found,
        import.images,
        import.captions,
        import.converted.len(),
        import.rejected.len(),
        import.duplicates.len(),
        import.ignored.len(),
    );
    for r in import.rejected.iter().take(REJECTS_SHOWN) {
        println!("rejected    `{}`: {}", r.file, r.reason);
    }
    if import.rejected.len() > REJECTS_SHOWN {
        println!(
            "            and {} more rejects (trainset.toml lists them)",
            import.rejected.len() - REJECTS_SHOWN
        );
    }
    if !import.converted.is_empty() {
        let names = import.converted.iter().map(|c| c.file.as_str());
        println!("converted   {}", first_names(names, REJECTS_SHOWN));
    }
}
