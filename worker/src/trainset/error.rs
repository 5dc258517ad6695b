//! What can go wrong with a trainset, each error naming the file, field or flag.

use std::fmt;
use std::path::PathBuf;

use crate::prepare::PrepareError;

#[derive(Debug, thiserror::Error)]
pub enum TrainsetError {
    /// A `trainset.toml` that does not parse or whose values are out of range.
    #[error("{0}")]
    Manifest(ManifestError),
    #[error("no `trainset.toml` in `{}`", .0.display())]
    NoManifest(PathBuf),
    #[error("`{}` does not exist", .0.display())]
    MissingSource(PathBuf),
    #[error("`{}` is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error(
        "`{}` and the trainset's image folder `{}` overlap: import from a folder outside \
         the trainset (move the images out of `images/` first)",
        .from.display(), .images.display()
    )]
    Overlap { from: PathBuf, images: PathBuf },
    /// A command-line value: `--name`, `--token`, `--resolution`, ….
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error(
        "no usable images in `{}`: {found} image files found, {rejected} rejected, \
         {duplicates} duplicates",
        .from.display()
    )]
    NoImages {
        from: PathBuf,
        found: usize,
        rejected: usize,
        duplicates: usize,
    },
    #[error(
        "`{}` lists no imported files: run `atelier trainset import SRC --name {name}` first",
        .manifest.display()
    )]
    NotImported { manifest: PathBuf, name: String },
    #[error("`{}` changed while it was imported", .0.display())]
    SourceChanged(PathBuf),
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
    #[error("failed to encode `{}`: {message}", .path.display())]
    Encode { path: PathBuf, message: String },
    #[error(transparent)]
    Scan(#[from] PrepareError),
}

impl TrainsetError {
    /// Whether the user's input is at fault (a file, a flag, a folder), as opposed to
    /// the system (a failed read or write).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            TrainsetError::Manifest(_)
                | TrainsetError::NotAFolder(_)
                | TrainsetError::Overlap { .. }
                | TrainsetError::Flag { .. }
                | TrainsetError::NoImages { .. }
                | TrainsetError::NotImported { .. }
        )
    }

    /// Whether a named thing is not there (`trainset.toml`, the source folder).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            TrainsetError::NoManifest(_) | TrainsetError::MissingSource(_)
        )
    }

    pub(crate) fn read(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |error| TrainsetError::Read { path, error }
    }

    pub(crate) fn write(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |error| TrainsetError::Write { path, error }
    }
}

/// An invalid `trainset.toml`: which file, where in it, and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestError {
    pub path: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// Dotted, with array positions: `resolution`, `import.images`, `files[3].sha256`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl From<ManifestError> for TrainsetError {
    fn from(e: ManifestError) -> Self {
        TrainsetError::Manifest(e)
    }
}
