//! `check`: every file the manifest lists re-hashed and re-decoded, and every
//! file of `images/` it does not list named.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::TrainsetError;
use super::manifest::{TrainsetManifest, IMAGES_DIR, MANIFEST_FILE};
use super::store;
use crate::prepare::decode;
use crate::prepare::Rejected;

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub trainset: PathBuf,
    /// Files the manifest lists: images and their captions.
    pub checked: usize,
    pub missing: Vec<String>,
    pub changed: Vec<Changed>,
    /// Listed images that no longer decode (the reason is the decoder's).
    pub unreadable: Vec<Rejected>,
    /// Files in `images/` the manifest does not list.
    pub extra: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Changed {
    pub file: String,
    pub reason: String,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.changed.is_empty()
            && self.unreadable.is_empty()
            && self.extra.is_empty()
    }
}

/// Checks the trainset folder `trainset` against its manifest; `on_progress` gets
/// (images checked, images listed).
pub fn check(
    trainset: &Path,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<CheckReport, TrainsetError> {
    let manifest = TrainsetManifest::load(trainset)?;
    if manifest.import.is_none() {
        return Err(TrainsetError::NotImported {
            manifest: trainset.join(MANIFEST_FILE),
            name: manifest.name,
        });
    }
    let images_dir = trainset.join(IMAGES_DIR);
    let mut report = CheckReport {
        name: manifest.name.clone(),
        trainset: trainset.to_path_buf(),
        checked: 0,
        missing: Vec::new(),
        changed: Vec::new(),
        unreadable: Vec::new(),
        extra: Vec::new(),
    };
    let mut listed = HashSet::new();
    let total = manifest.files.len();
    on_progress(0, total);
    for (i, file) in manifest.files.iter().enumerate() {
        let path = images_dir.join(&file.path);
        listed.insert(file.path.clone());
        report.checked += 1;
        if let Some(bytes) = read(&path, &file.path, &mut report)? {
            let sha256 = store::sha256(&bytes);
            match decode::open(&bytes, &path) {
                Err(reason) => report.unreadable.push(Rejected {
                    file: file.path.clone(),
                    reason,
                }),
                Ok(_) if sha256 != file.sha256 => report.changed.push(Changed {
                    file: file.path.clone(),
                    reason: hash_differs(&sha256, &file.sha256),
                }),
                Ok(opened)
                    if (opened.image.width(), opened.image.height())
                        != (file.width, file.height) =>
                {
                    report.changed.push(Changed {
                        file: file.path.clone(),
                        reason: format!(
                            "decodes to {}x{} pixels, the manifest says {}x{}",
                            opened.image.width(),
                            opened.image.height(),
                            file.width,
                            file.height
                        ),
                    })
                }
                Ok(_) => {}
            }
        }
        if let Some(expected) = &file.caption_sha256 {
            let caption = file.caption_path();
            listed.insert(caption.clone());
            report.checked += 1;
            if let Some(bytes) = read(&images_dir.join(&caption), &caption, &mut report)? {
                let sha256 = store::sha256(&bytes);
                if sha256 != *expected {
                    report.changed.push(Changed {
                        reason: hash_differs(&sha256, expected),
                        file: caption,
                    });
                }
            }
        }
        on_progress(i + 1, total);
    }
    report.extra = store::list_files(&images_dir)?
        .into_iter()
        .filter(|f| !listed.contains(f))
        .collect();
    Ok(report)
}

/// The file's bytes; `None` when it is missing (a broken link too) or unreadable,
/// which goes into the report.
fn read(
    path: &Path,
    name: &str,
    report: &mut CheckReport,
) -> Result<Option<Vec<u8>>, TrainsetError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.missing.push(name.to_string());
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            report.unreadable.push(Rejected {
                file: name.to_string(),
                reason: e.to_string(),
            });
            Ok(None)
        }
        Err(error) => Err(TrainsetError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

fn hash_differs(actual: &str, expected: &str) -> String {
    format!(
        "sha256 is {}…, the manifest says {}…",
        &actual[..12],
        &expected[..expected.len().min(12)]
    )
}
