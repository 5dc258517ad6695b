//! The `prepare` job: turn a trainset folder into a packed dataset.
//!
//! Every image is decoded, converted to RGB8 (alpha composited over white), centre
//! cropped to a square and resized, then packed into one u8 tensor that training
//! reads without touching the original files again.
//!
//! # Layout
//! - `scan`: walks the image folder, pairs images with their `.txt` captions
//! - `decode`: one file to a square RGB8 picture
//! - `manifest`: what was packed, rejected and left out as duplicate
//! - `pack`: writes `dataset.safetensors` with bounded memory
//! - `unpack`: reads it back into a folder of PNG files and captions (for training)
//!
//! The API is synchronous and blocking; the agent runs it in `spawn_blocking`.

pub(crate) mod decode;
mod manifest;
mod pack;
pub(crate) mod scan;
mod unpack;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use atelier_proto::kinds::PrepareParams;
use sha2::{Digest, Sha256};

pub use manifest::{Duplicate, Manifest, ManifestImage, Rejected, FORMAT};
pub use pack::TENSOR;
pub use unpack::{image_path, unpack};

/// File names inside the output folder.
pub const DATASET_FILE: &str = "dataset.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";
/// The held-out images (`PrepareParams::holdout`), in the dataset's format.
pub const HOLDOUT_FILE: &str = "holdout.safetensors";
pub const HOLDOUT_MANIFEST_FILE: &str = "holdout.json";

/// How many names of ignored files one log line lists before "and N more".
const IGNORED_LISTED: usize = 20;

/// What [`prepare`] reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum PrepareEvent {
    /// `done` of `total` image files handled (packed, rejected or duplicate).
    Progress { done: usize, total: usize },
    /// A line for the job's log.
    Log(String),
}

/// The output of a successful [`prepare`].
#[derive(Debug, Clone)]
pub struct PreparedDataset {
    /// `out_dir/dataset.safetensors`.
    pub dataset: PathBuf,
    /// `out_dir/manifest.json`.
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    /// `out_dir/holdout.safetensors` and `holdout.json`, when images were held out.
    pub holdout: Option<(PathBuf, PathBuf, Manifest)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("trainset folder `{}` does not exist", .0.display())]
    MissingFolder(PathBuf),
    #[error("trainset `{}` is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("image folder `{}` holds no files", .0.display())]
    EmptyFolder(PathBuf),
    #[error("resolution {0} is out of range (8..=4096)")]
    Resolution(u32),
    #[error("params.include: {0}")]
    Include(String),
    #[error("{0}")]
    TrainsetManifest(String),
    /// Only with `strict`; otherwise the file is listed in [`Manifest::rejected`].
    #[error("cannot decode `{}`: {reason}", .path.display())]
    Decode { path: PathBuf, reason: String },
    #[error(
        "only {usable} usable images in `{}`, at least {min} required \
         ({found} image files found: {rejected} rejected, {duplicates} duplicates)",
        .folder.display()
    )]
    TooFewImages {
        folder: PathBuf,
        usable: usize,
        min: u32,
        found: usize,
        rejected: usize,
        duplicates: usize,
    },
    #[error("prepare was cancelled")]
    Cancelled,
    // The I/O error is in the message rather than a `source` because job errors travel
    // to the coordinator as one string.
    #[error("failed to read `{}`: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("failed to write `{}`: {error}", .path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("failed to serialise the manifest: {0}")]
    Manifest(serde_json::Error),
    #[error("failed to build the safetensors header: {0}")]
    Header(String),
    #[error("`{}` is not a dataset `prepare` wrote: {message}", .path.display())]
    Dataset { path: PathBuf, message: String },
}

/// The caption `trainset.toml` gives an image without a `.txt` (its
/// `caption_template` with `token`), when the trainset has such a manifest with both.
fn manifest_caption(trainset: &Path) -> Result<Option<String>, PrepareError> {
    let path = trainset.join(crate::trainset::MANIFEST_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(PrepareError::Read { path, error }),
    };
    let manifest = crate::trainset::TrainsetManifest::parse(&text, &path)
        .map_err(|e| PrepareError::TrainsetManifest(e.to_string()))?;
    Ok(match (&manifest.token, &manifest.caption_template) {
        (Some(token), Some(template)) => Some(template.replace("{}", token)),
        _ => None,
    })
}

/// The folder holding a trainset's images: `trainset/images/` if that is a folder,
/// else `trainset` itself. It must hold at least one (non-hidden) file.
pub fn resolve_image_dir(trainset: &Path) -> Result<PathBuf, PrepareError> {
    let metadata = match fs::metadata(trainset) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PrepareError::MissingFolder(trainset.to_path_buf()))
        }
        Err(error) => {
            return Err(PrepareError::Read {
                path: trainset.to_path_buf(),
                error,
            })
        }
    };
    if !metadata.is_dir() {
        return Err(PrepareError::NotAFolder(trainset.to_path_buf()));
    }
    let images = trainset.join("images");
    let dir = if images.is_dir() {
        images
    } else {
        trainset.to_path_buf()
    };
    if !scan::has_files(&dir)? {
        return Err(PrepareError::EmptyFolder(dir));
    }
    Ok(dir)
}

/// Runs the `prepare` job: packs the images of `params.trainset` into
/// `out_dir/dataset.safetensors` and writes `out_dir/manifest.json`.
///
/// `cancelled` is polled between images; `on_event` gets progress and log lines.
pub fn prepare(
    params: &PrepareParams,
    out_dir: &Path,
    cancelled: &dyn Fn() -> bool,
    on_event: &mut dyn FnMut(PrepareEvent),
) -> Result<PreparedDataset, PrepareError> {
    if !(8..=4096).contains(&params.resolution) {
        return Err(PrepareError::Resolution(params.resolution));
    }
    let resolution = params.resolution;
    let image_dir = resolve_image_dir(Path::new(&params.trainset))?;
    let mut found = scan::scan(&image_dir)?;
    on_event(PrepareEvent::Log(format!(
        "found {} image files in `{}`",
        found.images.len(),
        image_dir.display()
    )));
    if !params.include.is_empty() {
        let patterns = params.include_patterns().map_err(PrepareError::Include)?;
        let before = found.images.len();
        found
            .images
            .retain(|c| patterns.iter().any(|p| p.matches(&c.rel)));
        if found.images.is_empty() {
            return Err(PrepareError::Include(format!(
                "include {:?} matches none of the {before} image files in `{}`",
                params.include,
                image_dir.display()
            )));
        }
        on_event(PrepareEvent::Log(format!(
            "include {:?}: {} of {before} image files",
            params.include,
            found.images.len()
        )));
    }
    if let Some(caption) = manifest_caption(Path::new(&params.trainset))? {
        let mut filled = 0;
        for candidate in found.images.iter_mut().filter(|c| c.caption.is_none()) {
            candidate.caption = Some(caption.clone());
            filled += 1;
        }
        if filled > 0 {
            on_event(PrepareEvent::Log(format!(
                "captioned {filled} images without a .txt from trainset.toml: `{caption}`"
            )));
        }
    }
    let total = found.images.len();
    if !found.ignored.is_empty() {
        on_event(PrepareEvent::Log(ignored_line(&found.ignored)));
    }

    fs::create_dir_all(out_dir).map_err(|error| PrepareError::Write {
        path: out_dir.to_path_buf(),
        error,
    })?;
    let mut packing = Packing {
        dataset: pack::Packer::new(out_dir, "dataset", resolution)?,
        holdout: pack::Packer::new(out_dir, "holdout", resolution)?,
        images: Vec::new(),
        holdout_images: Vec::new(),
        rejected: Vec::new(),
        duplicates: Vec::new(),
        seen_files: HashMap::new(),
        seen_pixels: HashMap::new(),
    };
    let mut progress = Progress::new(total);
    progress.report(0, on_event);
    let mut candidates: Vec<Option<scan::Candidate>> = found.images.into_iter().map(Some).collect();
    let mut done = 0;
    // Held-out images first, in the order of the sha256 of their names, until
    // `holdout` are usable: a choice that a re-run repeats, that passes over broken
    // files, and that makes any copy of a held-out image a duplicate left out of
    // training rather than a leak.
    if params.holdout > 0 {
        for i in holdout_order(&candidates) {
            if packing.holdout_images.len() >= params.holdout as usize {
                break;
            }
            if cancelled() {
                return Err(PrepareError::Cancelled);
            }
            let candidate = candidates[i].take().expect("each candidate once");
            packing.handle(candidate, true, params, resolution, on_event)?;
            done += 1;
            progress.report(done, on_event);
        }
    }
    for candidate in candidates.into_iter().flatten() {
        if cancelled() {
            return Err(PrepareError::Cancelled);
        }
        packing.handle(candidate, false, params, resolution, on_event)?;
        done += 1;
        progress.report(done, on_event);
    }
    let Packing {
        dataset: packer,
        holdout: holdout_packer,
        images,
        holdout_images,
        rejected,
        duplicates,
        ..
    } = packing;

    if !duplicates.is_empty() {
        on_event(PrepareEvent::Log(format!(
            "left out {} duplicate images",
            duplicates.len()
        )));
    }
    if images.len() < params.min_images as usize {
        return Err(PrepareError::TooFewImages {
            folder: image_dir,
            usable: images.len(),
            min: params.min_images,
            found: total,
            rejected: rejected.len(),
            duplicates: duplicates.len(),
        });
    }
    if cancelled() {
        return Err(PrepareError::Cancelled);
    }

    let holdout = if params.holdout > 0 {
        if holdout_images.len() < params.holdout as usize {
            on_event(PrepareEvent::Log(format!(
                "held out {} images, not {}: there are no more usable ones",
                holdout_images.len(),
                params.holdout
            )));
        }
        let manifest = Manifest {
            format: FORMAT.to_string(),
            source: image_dir.display().to_string(),
            resolution,
            count: holdout_images.len(),
            images: holdout_images,
            rejected: Vec::new(),
            duplicates: Vec::new(),
        };
        let path = out_dir.join(HOLDOUT_FILE);
        holdout_packer.finish(&path, &manifest)?;
        let manifest_path = write_manifest(&out_dir.join(HOLDOUT_MANIFEST_FILE), &manifest)?;
        on_event(PrepareEvent::Log(format!(
            "held out {} images for evaluation: {}",
            manifest.count,
            manifest
                .images
                .iter()
                .map(|i| format!("`{}`", i.file))
                .collect::<Vec<_>>()
                .join(", ")
        )));
        Some((path, manifest_path, manifest))
    } else {
        None
    };
    let manifest = Manifest {
        format: FORMAT.to_string(),
        source: image_dir.display().to_string(),
        resolution,
        count: images.len(),
        images,
        rejected,
        duplicates,
    };
    let dataset = out_dir.join(DATASET_FILE);
    packer.finish(&dataset, &manifest)?;
    let manifest_path = write_manifest(&out_dir.join(MANIFEST_FILE), &manifest)?;
    on_event(PrepareEvent::Log(format!(
        "packed {} images of {resolution}x{resolution} into `{}` ({} rejected, {} duplicates)",
        manifest.count,
        dataset.display(),
        manifest.rejected.len(),
        manifest.duplicates.len(),
    )));
    Ok(PreparedDataset {
        dataset,
        manifest_path,
        manifest,
        holdout,
    })
}

fn write_manifest(path: &Path, manifest: &Manifest) -> Result<PathBuf, PrepareError> {
    let mut json = serde_json::to_vec_pretty(manifest).map_err(PrepareError::Manifest)?;
    json.push(b'\n');
    fs::write(path, json).map_err(|error| PrepareError::Write {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(path.to_path_buf())
}

/// Candidate indexes by the sha256 of their relative path: the order in which
/// images are tried for the held-out set, independent of the other files.
fn holdout_order(candidates: &[Option<scan::Candidate>]) -> Vec<usize> {
    let mut keyed: Vec<([u8; 32], usize)> = candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            c.as_ref()
                .map(|c| (Sha256::digest(c.rel.as_bytes()).into(), i))
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// What has been packed so far, into the dataset and the held-out set, and what
/// was left out.
struct Packing {
    dataset: pack::Packer,
    holdout: pack::Packer,
    images: Vec<ManifestImage>,
    holdout_images: Vec<ManifestImage>,
    rejected: Vec<Rejected>,
    duplicates: Vec<Duplicate>,
    /// Hash of the file bytes, and of the packed pixels, to the file that had it first.
    seen_files: HashMap<String, String>,
    seen_pixels: HashMap<[u8; 32], String>,
}

impl Packing {
    /// Reads, decodes and packs one image (into the held-out set when `held`), or
    /// records it as rejected or duplicate.
    fn handle(
        &mut self,
        candidate: scan::Candidate,
        held: bool,
        params: &PrepareParams,
        resolution: u32,
        on_event: &mut dyn FnMut(PrepareEvent),
    ) -> Result<(), PrepareError> {
        let bytes = fs::read(&candidate.path).map_err(|error| PrepareError::Read {
            path: candidate.path.clone(),
            error,
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(first) = params
            .dedupe
            .then(|| self.seen_files.get(&sha256))
            .flatten()
        {
            self.duplicates.push(Duplicate {
                file: candidate.rel,
                same_as: first.clone(),
            });
            return Ok(());
        }
        let decoded = match decode::decode(&bytes, &candidate.path, resolution) {
            Ok(decoded) => decoded,
            Err(reason) if params.strict => {
                return Err(PrepareError::Decode {
                    path: candidate.path,
                    reason,
                })
            }
            Err(reason) => {
                on_event(PrepareEvent::Log(format!(
                    "rejected `{}`: {reason}",
                    candidate.rel
                )));
                self.rejected.push(Rejected {
                    file: candidate.rel,
                    reason,
                });
                return Ok(());
            }
        };
        let pixels_hash: [u8; 32] = Sha256::digest(decoded.pixels.as_raw()).into();
        if let Some(first) = params
            .dedupe
            .then(|| self.seen_pixels.get(&pixels_hash))
            .flatten()
        {
            self.duplicates.push(Duplicate {
                file: candidate.rel,
                same_as: first.clone(),
            });
            return Ok(());
        }
        let (packer, images) = if held {
            (&mut self.holdout, &mut self.holdout_images)
        } else {
            (&mut self.dataset, &mut self.images)
        };
        packer.push(decoded.pixels.as_raw())?;
        self.seen_files
            .insert(sha256.clone(), candidate.rel.clone());
        self.seen_pixels.insert(pixels_hash, candidate.rel.clone());
        images.push(ManifestImage {
            index: images.len(),
            file: candidate.rel,
            sha256,
            width: decoded.width,
            height: decoded.height,
            caption: candidate.caption,
        });
        Ok(())
    }
}

/// The log line listing files that are neither images nor captions.
fn ignored_line(ignored: &[String]) -> String {
    let mut names: Vec<String> = ignored
        .iter()
        .take(IGNORED_LISTED)
        .map(|name| format!("`{name}`"))
        .collect();
    if ignored.len() > IGNORED_LISTED {
        names.push(format!("and {} more", ignored.len() - IGNORED_LISTED));
    }
    format!(
        "ignored {} files that are not images or captions: {}",
        ignored.len(),
        names.join(", ")
    )
}

/// Progress events at every whole percent (so at every image below 100 images).
struct Progress {
    total: usize,
    last_percent: Option<usize>,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            last_percent: None,
        }
    }

    fn report(&mut self, done: usize, on_event: &mut dyn FnMut(PrepareEvent)) {
        let percent = (done * 100).checked_div(self.total).unwrap_or(100);
        if self.last_percent != Some(percent) || done == self.total {
            self.last_percent = Some(percent);
            on_event(PrepareEvent::Progress {
                done,
                total: self.total,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_reported_about_every_percent() {
        let mut events = Vec::new();
        let mut progress = Progress::new(1000);
        for done in 0..=1000 {
            progress.report(done, &mut |e| events.push(e));
        }
        assert_eq!(events.len(), 101);
        assert_eq!(
            events.last(),
            Some(&PrepareEvent::Progress {
                done: 1000,
                total: 1000
            })
        );
    }

    #[test]
    fn ignored_line_is_capped() {
        let names: Vec<String> = (0..25).map(|i| format!("f{i}.md")).collect();
        let line = ignored_line(&names);
        assert!(line.starts_with("ignored 25 files"), "{line}");
        assert!(line.ends_with("`f19.md`, and 5 more"), "{line}");
    }
}
