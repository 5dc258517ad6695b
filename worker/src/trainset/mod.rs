//! Trainsets: a folder per set, `trainset.toml` (what the set is, and what
//! `import` stored, with a sha256 per file) and `images/` (flat: 8-bit RGB PNG or
//! RGB JPEG files, `<stem>.txt` captions beside them).
//!
//! # Layout
//! - `manifest`: `trainset.toml` read, validated (errors name the file, line and
//!   field) and written
//! - `position`: where a field is in a TOML text, for those errors
//! - `convert`: which images are stored as they are and which become RGB8 PNG
//! - `store`: writing into `images/` only what differs, listing and hashing files
//! - `import`: a folder of images in, a trainset out (`atelier trainset import`)
//! - `check`: a trainset re-hashed and re-decoded against its manifest
//! - `survey`: a trainset's status by file names alone (`ls`, `show`)
//! - `archive`: a trainset as one deterministic tar (`push`), and back
//!
//! Decoding and scanning are `prepare`'s, so that `import` accepts and rejects
//! exactly what the `prepare` job does. The API is blocking.

pub mod archive;
mod check;
mod convert;
mod error;
mod import;
mod manifest;
mod position;
mod store;
mod survey;

use std::path::{Path, PathBuf};

pub use check::{check, Changed, CheckReport};
pub use error::{ManifestError, TrainsetError};
pub use import::{import, ImportEvent, ImportOptions, ImportReport};
pub use manifest::{
    caption_path, Conversion, DuplicateOf, FileEntry, ImportRecord, Sameness, Source,
    TrainsetManifest, DEFAULT_RESOLUTION, IMAGES_DIR, MANIFEST_FILE,
};
pub use survey::{list, survey, Status, Survey};

/// The folder of trainset `name` in `dir`; a `name` with a path separator is a
/// path of its own (`atelier trainset check ../sets/monet`).
pub fn locate(dir: &Path, name: &str) -> PathBuf {
    if name.contains(['/', std::path::MAIN_SEPARATOR]) {
        PathBuf::from(name)
    } else {
        dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every folder of `trainsets/` has a manifest that reads back and is in the
    /// form `import` writes (so that an import changes only what it adds).
    #[test]
    fn committed_manifests_are_valid_and_in_written_form() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainsets");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&root).unwrap() {
            let dir = entry.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            let manifest = TrainsetManifest::load(&dir).unwrap_or_else(|e| panic!("{e}"));
            let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
            assert_eq!(manifest.to_toml(), text, "{}", dir.display());
            seen.push(manifest.name);
        }
        for name in ["anime", "demo", "francis", "monet", "vangogh"] {
            assert!(
                seen.iter().any(|s| s == name),
                "no trainsets/{name}/trainset.toml"
            );
        }
    }

    #[test]
    fn the_study_sets_state_their_tokens_and_counts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainsets");
        let expect = [
            ("monet", "<monet-style>", Some(1365)),
            ("vangogh", "<vangogh-style>", Some(1929)),
            ("francis", "<francis-style>", Some(370)),
        ];
        for (name, token, count) in expect {
            let m = TrainsetManifest::load(&root.join(name)).unwrap();
            assert_eq!(m.token.as_deref(), Some(token));
            assert_eq!(m.expected_images, count);
        }
        let anime = TrainsetManifest::load(&root.join("anime")).unwrap();
        assert_eq!(anime.token.as_deref(), Some("<anime-style>"));
        assert!(anime.class_prompt.is_some());
    }

    #[test]
    fn a_name_is_a_folder_of_dir_and_a_path_is_itself() {
        assert_eq!(locate(Path::new("sets"), "monet"), Path::new("sets/monet"));
        assert_eq!(
            locate(Path::new("sets"), "../x/monet"),
            Path::new("../x/monet")
        );
    }
}
