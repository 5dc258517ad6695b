//! What `ls` and `show` say about a trainset folder without reading its images:
//! the manifest, the image files present, and whether their names are the ones
//! the manifest lists (`check` compares the contents).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::TrainsetError;
use super::manifest::{TrainsetManifest, IMAGES_DIR};
use super::store;
use crate::prepare::scan;

#[derive(Debug, Clone, Serialize)]
pub struct Survey {
    /// The folder's name.
    pub name: String,
    pub trainset: PathBuf,
    /// `None` when `trainset.toml` is missing or invalid (`error` says which).
    #[serde(skip)]
    pub manifest: Option<TrainsetManifest>,
    pub token: Option<String>,
    pub resolution: Option<u32>,
    /// Image files (by extension) in `images/`, at any depth.
    pub found: usize,
    pub expected: Option<usize>,
    /// Images the last import stored.
    pub imported: Option<usize>,
    /// Listed files (images and captions) not in `images/`.
    pub missing: usize,
    /// Files in `images/` not listed.
    pub extra: usize,
    pub status: Status,
    /// Why the manifest could not be read.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every listed file present, nothing else.
    Ok,
    NoManifest,
    InvalidManifest,
    NoImages,
    /// Images present, but no import listed them.
    NotImported,
    /// Files missing or extra by name.
    Differs,
}

impl Survey {
    /// `ok`, `3 missing, 1 extra`, `not imported`, ….
    pub fn status_line(&self) -> String {
        match self.status {
            Status::Ok => "ok".into(),
            Status::NoManifest => "no trainset.toml".into(),
            Status::InvalidManifest => "invalid trainset.toml".into(),
            Status::NoImages => "no images".into(),
            Status::NotImported => "not imported".into(),
            Status::Differs => {
                let mut parts = Vec::new();
                if self.missing > 0 {
                    parts.push(format!("{} missing", self.missing));
                }
                if self.extra > 0 {
                    parts.push(format!("{} extra", self.extra));
                }
                parts.join(", ")
            }
        }
    }
}

/// Surveys one trainset folder. Only I/O failures are errors; a missing or invalid
/// manifest is a status.
pub fn survey(trainset: &Path) -> Result<Survey, TrainsetError> {
    let name = trainset
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| trainset.display().to_string());
    let (manifest, error) = match TrainsetManifest::load(trainset) {
        Ok(m) => (Some(m), None),
        Err(TrainsetError::NoManifest(_)) => (None, None),
        Err(e @ TrainsetError::Manifest(_)) => (None, Some(e.to_string())),
        Err(e) => return Err(e),
    };
    let images_dir = trainset.join(IMAGES_DIR);
    let found = if images_dir.is_dir() {
        scan::scan(&images_dir)?.images.len()
    } else {
        0
    };
    let present: HashSet<String> = store::list_files(&images_dir)?.into_iter().collect();
    let listed: HashSet<String> = manifest
        .iter()
        .flat_map(|m| &m.files)
        .flat_map(|f| {
            let caption = f.caption_sha256.as_ref().map(|_| f.caption_path());
            std::iter::once(f.path.clone()).chain(caption)
        })
        .collect();
    let missing = listed
        .iter()
        .filter(|f| fs::symlink_metadata(images_dir.join(f)).is_err())
        .count();
    let extra = present.difference(&listed).count();
    let imported = manifest
        .as_ref()
        .and_then(|m| m.import.as_ref())
        .map(|i| i.images);
    let status = if error.is_some() {
        Status::InvalidManifest
    } else if manifest.is_none() {
        Status::NoManifest
    } else if found == 0 && imported.is_none() {
        Status::NoImages
    } else if imported.is_none() {
        Status::NotImported
    } else if missing > 0 || extra > 0 {
        Status::Differs
    } else {
        Status::Ok
    };
    Ok(Survey {
        name,
        trainset: trainset.to_path_buf(),
        token: manifest.as_ref().and_then(|m| m.token.clone()),
        resolution: manifest.as_ref().map(|m| m.resolution),
        expected: manifest.as_ref().and_then(|m| m.expected_images),
        manifest,
        found,
        imported,
        missing,
        extra,
        status,
        error,
    })
}

/// Surveys every (non-hidden) folder of `dir`, in name order.
pub fn list(dir: &Path) -> Result<Vec<Survey>, TrainsetError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TrainsetError::MissingSource(dir.to_path_buf()))
        }
        Err(error) => return Err(TrainsetError::read(dir)(error)),
    };
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry.map_err(TrainsetError::read(dir))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.path().is_dir() {
            folders.push(entry.path());
        }
    }
    folders.sort();
    folders.iter().map(|f| survey(f)).collect()
}
