//! `atelier trainset push DIR [--name N]`: a trainset folder into the coordinator's
//! artifact store, once per content, for `prepare` jobs on any worker.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use atelier_proto::trainset_ref;
use atelier_proto::v1;
use atelier_worker::trainset::archive::{self, PackProgress, Packed};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;

use super::cli_error;
use crate::error::{CliError, CliResult};
use crate::output::{bytes, print_json};
use crate::settings::Settings;

/// Bytes per message of the upload (the coordinator accepts up to 4 MiB).
const CHUNK: usize = 1024 * 1024;
/// Hex digits of the sha256 in the printed `pushed:NAME@HEX`.
const SHOWN_DIGITS: usize = 12;

/// The long help is the `Push` variant's doc comment (`trainset/mod.rs`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trainset folder (with trainset.toml and images/), or a folder of images
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Name to push it as (default: the folder's name)
    #[arg(long)]
    pub name: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let name = match &self.name {
            Some(n) => n.clone(),
            None => folder_name(&self.dir)?,
        };
        trainset_ref::check_name(&name).map_err(|e| CliError::invalid(format!("--name: {e}")))?;
        let show_bar = !self.json && std::io::stderr().is_terminal();
        let tar = tempfile::Builder::new()
            .prefix("atelier-push-")
            .suffix(".tar")
            .tempfile()
            .map_err(|e| CliError::failure(format!("cannot create a temporary file: {e}")))?;
        let packed = pack(&self.dir, tar.path(), show_bar).await?;

        let mut api = super::super::connect(&settings)?;
        let header = v1::PushTrainsetHeader {
            name: name.clone(),
            sha256: packed.sha256.clone(),
            size: packed.size,
            files: packed.files,
        };
        // The header alone first: content the coordinator has is not sent again.
        let first = api
            .push_trainset(futures::stream::iter([header_chunk(&header)]))
            .await?
            .into_inner();
        let resp = if first.missing {
            let bar = bar(show_bar, packed.size, "uploading");
            let resp = upload(&mut api, &header, tar.path(), &bar).await?;
            bar.finish_and_clear();
            resp
        } else {
            first
        };
        let stored = resp.trainset.unwrap_or_default();
        let reference = format!("pushed:{}", stored.name);
        let pinned = format!("pushed:{}@{}", stored.name, stored.sha256);
        if self.json {
            print_json(&serde_json::json!({
                "name": stored.name,
                "sha256": stored.sha256,
                "size": stored.size,
                "files": stored.files,
                "uploaded": resp.uploaded,
                "skipped": packed.skipped,
                "reference": reference,
                "pinned": pinned,
            }));
            return Ok(());
        }
        for file in &packed.skipped {
            println!("skipped `{file}`: not an image or a caption");
        }
        println!(
            "packed `{}`: {} files, {}, sha256 {}",
            self.dir.display(),
            packed.files,
            bytes(packed.size),
            packed.sha256
        );
        if resp.uploaded {
            println!(
                "uploaded {} to {} as trainset `{}`",
                bytes(packed.size),
                settings.coordinator,
                stored.name
            );
        } else {
            println!(
                "the artifact store has this content already: nothing uploaded; `{}` names it",
                stored.name
            );
        }
        println!(
            "trainset: {reference}   (this content only: pushed:{}@{})",
            stored.name,
            &stored.sha256[..SHOWN_DIGITS.min(stored.sha256.len())]
        );
        Ok(())
    }
}

/// The last component of `dir` as written or, for `.` and the like, as resolved.
fn folder_name(dir: &Path) -> CliResult<String> {
    let resolved = std::fs::canonicalize(dir)
        .map_err(|e| CliError::invalid(format!("`{}`: {e}", dir.display())))?;
    resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            CliError::invalid(format!(
                "`{}` has no folder name: give one with --name",
                dir.display()
            ))
        })
}

async fn pack(dir: &Path, out: &Path, show_bar: bool) -> CliResult<Packed> {
    let bar = bar(show_bar, 0, "packing");
    let (dir, out, b) = (dir.to_path_buf(), out.to_path_buf(), bar.clone());
    let packed = tokio::task::spawn_blocking(move || {
        archive::pack(&dir, &out, &mut |p| match p {
            PackProgress::Total(t) => b.set_length(t),
            PackProgress::Packed(n) => b.inc(n),
        })
    })
    .await
    .map_err(|e| CliError::failure(e.to_string()))?;
    bar.finish_and_clear();
    packed.map_err(cli_error)
}

fn bar(show: bool, len: u64, what: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:10} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what);
    bar
}

fn header_chunk(h: &v1::PushTrainsetHeader) -> v1::PushTrainsetChunk {
    v1::PushTrainsetChunk {
        part: Some(v1::push_trainset_chunk::Part::Header(h.clone())),
    }
}

/// The header, then the archive's bytes in chunks of [`CHUNK`].
async fn upload(
    api: &mut atelier_worker::client::UserApi,
    header: &v1::PushTrainsetHeader,
    tar: &Path,
    bar: &ProgressBar,
) -> CliResult<v1::PushTrainsetResponse> {
    use futures::StreamExt;
    let file = tokio::fs::File::open(tar)
        .await
        .map_err(|e| CliError::failure(format!("cannot read `{}`: {e}", tar.display())))?;
    let data = futures::stream::unfold((file, bar.clone()), |(mut file, bar)| async move {
        let mut buf = vec![0u8; CHUNK];
        // A read error ends the stream short: the coordinator then refuses the
        // push, as the bytes do not match the header's sha256.
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                bar.inc(n as u64);
                let chunk = v1::PushTrainsetChunk {
                    part: Some(v1::push_trainset_chunk::Part::Data(buf)),
                };
                Some((chunk, (file, bar)))
            }
        }
    });
    let stream = futures::stream::iter([header_chunk(header)]).chain(data);
    Ok(api.push_trainset(stream).await?.into_inner())
}
