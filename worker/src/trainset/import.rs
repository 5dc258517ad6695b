//! `import`: a folder of images in, a trainset out: every file decoded, rejects
//! and duplicates named, what needs it converted, the rest copied or linked, and
//! counts and hashes written into `trainset.toml`.
//!
//! It runs in two passes over the source, in the sorted order of its paths: the
//! first decodes and classifies every file (nothing is written if no image is
//! usable), the second stores the images. The same source gives the same names,
//! bytes and manifest, so a re-import finds every file in place and writes nothing.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::convert::{self, Storage};
use super::error::{ManifestError, TrainsetError};
use super::manifest::{
    caption_path, check_caption_template, check_name, check_resolution, check_token, Conversion,
    DuplicateOf, FileEntry, ImportRecord, Sameness, TrainsetManifest, IMAGES_DIR, MANIFEST_FILE,
};
use super::store::{self, Content, Put};
use crate::prepare::decode::{self, to_rgb8_over_white};
use crate::prepare::scan::{self, Candidate};
use crate::prepare::Rejected;

/// What to import, and where; `None` keeps the manifest's value (or the default).
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub source: PathBuf,
    /// The folder of trainsets: the trainset is `into/name`.
    pub into: PathBuf,
    pub name: String,
    /// Link the images stored as they are to the source files instead of copying.
    pub link: bool,
    pub token: Option<String>,
    pub caption_template: Option<String>,
    pub resolution: Option<u32>,
}

/// Progress: `done` of `total` source images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportEvent {
    /// Decoded and classified (first pass).
    Checked { done: usize, total: usize },
    /// Stored in `images/` (second pass, over the usable images only).
    Stored { done: usize, total: usize },
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub name: String,
    /// `into/name`.
    pub trainset: PathBuf,
    pub manifest: PathBuf,
    pub from: String,
    pub linked: bool,
    /// Image files found in the source (by extension).
    pub found: usize,
    /// Images stored.
    pub images: usize,
    /// Stored images with a caption.
    pub captions: usize,
    pub converted: Vec<Conversion>,
    pub rejected: Vec<Rejected>,
    pub duplicates: Vec<DuplicateOf>,
    /// Source files that are neither images nor captions of one.
    pub ignored: Vec<String>,
    /// Files of `images/` written because they were new or different.
    pub written: Vec<String>,
    /// Files of `images/` already as they should be.
    pub unchanged: usize,
    /// Files the previous import stored and this one does not: removed.
    pub removed: Vec<String>,
    /// Files in `images/` that no import put there: left alone (`check` lists them).
    pub foreign: Vec<String>,
    pub manifest_written: bool,
    /// Whether anything on disk changed.
    pub changed: bool,
}

/// A usable image of the first pass.
struct Usable {
    candidate: Candidate,
    sha256: String,
    storage: Storage,
    width: u32,
    height: u32,
}

/// The first pass's verdicts.
#[derive(Default)]
struct Classified {
    usable: Vec<Usable>,
    rejected: Vec<Rejected>,
    duplicates: Vec<DuplicateOf>,
}

pub fn import(
    options: &ImportOptions,
    on_event: &mut dyn FnMut(ImportEvent),
) -> Result<ImportReport, TrainsetError> {
    let source = &options.source;
    match fs::metadata(source) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(TrainsetError::NotAFolder(source.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TrainsetError::MissingSource(source.clone()))
        }
        Err(error) => return Err(TrainsetError::read(source)(error)),
    }
    check_name(&options.name).map_err(|message| flag("--name", message))?;
    let trainset = options.into.join(&options.name);
    let images_dir = trainset.join(IMAGES_DIR);
    let manifest_path = trainset.join(MANIFEST_FILE);
    let (from_real, images_real) = (store::resolve(source), store::resolve(&images_dir));
    if from_real.starts_with(&images_real) || images_real.starts_with(&from_real) {
        return Err(TrainsetError::Overlap {
            from: source.clone(),
            images: images_dir,
        });
    }
    let previous = match TrainsetManifest::load(&trainset) {
        Ok(m) => Some(m),
        Err(TrainsetError::NoManifest(_)) => None,
        Err(e) => return Err(e),
    };
    // The flags are checked, against what the manifest already says, before any
    // file is written.
    let mut manifest = with_flags(
        previous
            .clone()
            .unwrap_or_else(|| TrainsetManifest::new(&options.name)),
        options,
        &manifest_path,
    )?;

    let found = scan::scan(source)?;
    let total = found.images.len();
    let classified = classify(found.images, on_event)?;
    if classified.usable.is_empty() {
        return Err(TrainsetError::NoImages {
            from: source.clone(),
            found: total,
            rejected: classified.rejected.len(),
            duplicates: classified.duplicates.len(),
        });
    }
    let names = names(&classified.usable);

    fs::create_dir_all(&images_dir).map_err(TrainsetError::write(&images_dir))?;
    let mut written = Vec::new();
    let mut unchanged = 0;
    let mut note = |name: &str, put: Put| match put {
        Put::Written => written.push(name.to_string()),
        Put::Unchanged => unchanged += 1,
    };
    let mut files = Vec::with_capacity(names.len());
    let mut converted = Vec::new();
    let stored_total = classified.usable.len();
    for (i, (image, name)) in classified.usable.iter().zip(&names).enumerate() {
        let dest = images_dir.join(name);
        let source_file = &image.candidate.path;
        let bytes = fs::read(source_file).map_err(TrainsetError::read(source_file))?;
        if store::sha256(&bytes) != image.sha256 {
            return Err(TrainsetError::SourceChanged(source_file.clone()));
        }
        let (put, sha256) = match &image.storage {
            Storage::AsIs if options.link => {
                let target = source_file
                    .canonicalize()
                    .map_err(TrainsetError::read(source_file))?;
                (
                    store::put(&dest, Content::Link(&target))?,
                    image.sha256.clone(),
                )
            }
            Storage::AsIs => (
                store::put(&dest, Content::Bytes(&bytes))?,
                image.sha256.clone(),
            ),
            Storage::Convert { from } => {
                let opened = decode::open(&bytes, source_file)
                    .map_err(|_| TrainsetError::SourceChanged(source_file.clone()))?;
                let png =
                    convert::png_bytes(&to_rgb8_over_white(opened.image)).map_err(|message| {
                        TrainsetError::Encode {
                            path: dest.clone(),
                            message,
                        }
                    })?;
                converted.push(Conversion {
                    file: image.candidate.rel.clone(),
                    stored_as: name.clone(),
                    from: from.clone(),
                });
                (
                    store::put(&dest, Content::Bytes(&png))?,
                    store::sha256(&png),
                )
            }
        };
        note(name, put);
        let caption_sha256 = match &image.candidate.caption {
            Some(text) => {
                let body = format!("{text}\n");
                let caption = caption_path(name);
                note(
                    &caption,
                    store::put(&images_dir.join(&caption), Content::Bytes(body.as_bytes()))?,
                );
                Some(store::sha256(body.as_bytes()))
            }
            None => None,
        };
        files.push(FileEntry {
            path: name.clone(),
            sha256,
            width: image.width,
            height: image.height,
            caption_sha256,
        });
        on_event(ImportEvent::Stored {
            done: i + 1,
            total: stored_total,
        });
    }

    let stored: HashSet<String> = files
        .iter()
        .flat_map(|f| {
            let caption = f.caption_sha256.as_ref().map(|_| f.caption_path());
            std::iter::once(f.path.clone()).chain(caption)
        })
        .collect();
    let removed = remove_stale(previous.as_ref(), &stored, &images_dir)?;
    let foreign: Vec<String> = store::list_files(&images_dir)?
        .into_iter()
        .filter(|f| !stored.contains(f))
        .collect();

    let captions = files.iter().filter(|f| f.caption_sha256.is_some()).count();
    manifest.import = Some(ImportRecord {
        from: source.display().to_string(),
        linked: options.link,
        found: total,
        images: files.len(),
        captions,
        ignored: found.ignored.clone(),
        converted: converted.clone(),
        rejected: classified.rejected.clone(),
        duplicates: classified.duplicates.clone(),
    });
    manifest.files = files;
    let manifest_written = store::put(
        &manifest_path,
        Content::Bytes(manifest.to_toml().as_bytes()),
    )? == Put::Written;
    Ok(ImportReport {
        name: options.name.clone(),
        trainset,
        manifest: manifest_path,
        from: source.display().to_string(),
        linked: options.link,
        found: total,
        images: names.len(),
        captions,
        converted,
        rejected: classified.rejected,
        duplicates: classified.duplicates,
        ignored: found.ignored,
        changed: !written.is_empty() || !removed.is_empty() || manifest_written,
        written,
        unchanged,
        removed,
        foreign,
        manifest_written,
    })
}

fn flag(flag: &'static str, message: String) -> TrainsetError {
    TrainsetError::Flag { flag, message }
}

/// `manifest` with the flags' values, checked together.
fn with_flags(
    mut manifest: TrainsetManifest,
    options: &ImportOptions,
    path: &Path,
) -> Result<TrainsetManifest, TrainsetError> {
    if let Some(token) = &options.token {
        check_token(token).map_err(|m| flag("--token", m))?;
        manifest.token = Some(token.clone());
    }
    if let Some(template) = &options.caption_template {
        check_caption_template(template).map_err(|m| flag("--caption-template", m))?;
        manifest.caption_template = Some(template.clone());
    }
    if let Some(resolution) = options.resolution {
        check_resolution(resolution).map_err(|m| flag("--resolution", m))?;
        manifest.resolution = resolution;
    }
    if manifest.caption_template.is_some() && manifest.token.is_none() {
        return Err(flag(
            "--caption-template",
            "needs a token for its `{}`: give --token too".into(),
        ));
    }
    // What the flags did not touch was checked when the manifest was read.
    if let Err((field, message)) = manifest.validate() {
        return Err(ManifestError {
            path: path.to_path_buf(),
            line: None,
            field: Some(field),
            message,
        }
        .into());
    }
    Ok(manifest)
}

/// The first pass: decodes every candidate, in order, and sorts it into usable,
/// rejected, or duplicate of an earlier usable image.
fn classify(
    candidates: Vec<Candidate>,
    on_event: &mut dyn FnMut(ImportEvent),
) -> Result<Classified, TrainsetError> {
    let total = candidates.len();
    let mut out = Classified::default();
    // sha256 of the file, and of the decoded RGB8 pixels, to the source path that
    // had it first.
    let mut by_bytes: HashMap<String, String> = HashMap::new();
    let mut by_pixels: HashMap<[u8; 32], String> = HashMap::new();
    for (i, candidate) in candidates.into_iter().enumerate() {
        on_event(ImportEvent::Checked { done: i, total });
        let bytes = fs::read(&candidate.path).map_err(TrainsetError::read(&candidate.path))?;
        let sha256 = store::sha256(&bytes);
        if let Some(first) = by_bytes.get(&sha256) {
            out.duplicates.push(DuplicateOf {
                file: candidate.rel,
                same_as: first.clone(),
                same: Sameness::Bytes,
            });
            continue;
        }
        let opened = match decode::open(&bytes, &candidate.path) {
            Ok(opened) => opened,
            Err(reason) => {
                out.rejected.push(Rejected {
                    file: candidate.rel,
                    reason,
                });
                continue;
            }
        };
        let storage = convert::storage(&bytes, &candidate.path, &opened);
        let rgb = to_rgb8_over_white(opened.image);
        let (width, height) = rgb.dimensions();
        let pixels: [u8; 32] = Sha256::new()
            .chain_update(width.to_le_bytes())
            .chain_update(height.to_le_bytes())
            .chain_update(rgb.as_raw())
            .finalize()
            .into();
        if let Some(first) = by_pixels.get(&pixels) {
            out.duplicates.push(DuplicateOf {
                file: candidate.rel,
                same_as: first.clone(),
                same: Sameness::Pixels,
            });
            continue;
        }
        by_bytes.insert(sha256.clone(), candidate.rel.clone());
        by_pixels.insert(pixels, candidate.rel.clone());
        out.usable.push(Usable {
            candidate,
            sha256,
            storage,
            width,
            height,
        });
    }
    on_event(ImportEvent::Checked { done: total, total });
    Ok(out)
}

/// The name of each usable image in `images/`, which is flat: the training reader
/// does not enter sub-folders. `a/b.png` becomes `a__b.png`; a converted image
/// takes its stem and `.png`. Stems are unique regardless of case, so that each
/// image has a caption file of its own on any file system: images stored as they
/// are choose first (they keep their names), then the converted ones (`x.gif`
/// becomes `x-gif.png` beside an `x.png`), then `-2`, `-3`, … as a last resort.
fn names(usable: &[Usable]) -> Vec<String> {
    let mut taken: HashSet<String> = HashSet::new();
    let mut names = vec![String::new(); usable.len()];
    for as_is in [true, false] {
        for (image, slot) in usable.iter().zip(names.iter_mut()) {
            if (image.storage == Storage::AsIs) != as_is {
                continue;
            }
            let flat = image.candidate.rel.replace('/', "__");
            let (stem, extension) = flat.rsplit_once('.').unwrap_or((&flat, ""));
            let (extension, mut stems) = if as_is {
                (extension.to_string(), vec![stem.to_string()])
            } else {
                let alternative = format!("{stem}-{}", extension.to_ascii_lowercase());
                ("png".to_string(), vec![stem.to_string(), alternative])
            };
            stems.extend((2..).map(|n| format!("{stem}-{n}")).take(usable.len() + 1));
            let stem = stems
                .into_iter()
                .find(|s| taken.insert(s.to_lowercase()))
                .expect("more numbered stems than images");
            *slot = format!("{stem}.{extension}");
        }
    }
    names
}

/// Removes the files `previous` stored that are not in `stored`; returns their names.
fn remove_stale(
    previous: Option<&TrainsetManifest>,
    stored: &HashSet<String>,
    images_dir: &Path,
) -> Result<Vec<String>, TrainsetError> {
    let mut removed = Vec::new();
    for file in previous.map(|m| m.files.as_slice()).unwrap_or_default() {
        let caption = file.caption_sha256.as_ref().map(|_| file.caption_path());
        for name in std::iter::once(file.path.clone()).chain(caption) {
            let path = images_dir.join(&name);
            if stored.contains(&name) || fs::symlink_metadata(&path).is_err() {
                continue;
            }
            fs::remove_file(&path).map_err(TrainsetError::write(&path))?;
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable(rel: &str, storage: Storage) -> Usable {
        Usable {
            candidate: Candidate {
                rel: rel.into(),
                path: PathBuf::from(rel),
                caption: None,
            },
            sha256: String::new(),
            storage,
            width: 1,
            height: 1,
        }
    }

    fn convert(rel: &str) -> Usable {
        usable(rel, Storage::Convert { from: "GIF".into() })
    }

    #[test]
    fn names_are_flat_and_unique_by_stem_with_kept_files_first() {
        let images = [
            convert("a.gif"),
            usable("a.png", Storage::AsIs),
            convert("b.bmp"),
            usable("sub/c.jpg", Storage::AsIs),
            usable("sub__c.jpeg", Storage::AsIs),
            convert("A.tif"),
            usable("d.JPG", Storage::AsIs),
        ];
        assert_eq!(
            names(&images),
            [
                "a-gif.png",
                "a.png",
                "b.png",
                "sub__c.jpg",
                "sub__c-2.jpeg",
                "A-tif.png",
                "d.JPG"
            ]
        );
    }
}
