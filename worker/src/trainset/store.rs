//! The files of a trainset's `images/` folder: listing them, hashing them, and
//! putting a file in place only when it differs, so that a re-import touches
//! nothing that is already right.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::TrainsetError;

/// What a stored file should be.
pub(crate) enum Content<'a> {
    /// These bytes, in a plain file.
    Bytes(&'a [u8]),
    /// A symbolic link to this (absolute) file.
    Link(&'a Path),
}

/// Whether [`put`] changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    Written,
    Unchanged,
}

/// Makes `dest` hold `content`, unless it already does. The new file is written
/// beside it under a hidden name and renamed over it, so that an interrupted import
/// never leaves half a file under the real name.
pub(crate) fn put(dest: &Path, content: Content) -> Result<Put, TrainsetError> {
    let current = fs::symlink_metadata(dest).ok();
    let is_link = current.as_ref().is_some_and(|m| m.file_type().is_symlink());
    let unchanged = match &content {
        Content::Bytes(bytes) => {
            current
                .as_ref()
                .is_some_and(|m| m.is_file() && m.len() == bytes.len() as u64)
                && fs::read(dest).map_err(TrainsetError::read(dest))? == *bytes
        }
        Content::Link(target) => is_link && fs::read_link(dest).ok().as_deref() == Some(*target),
    };
    if unchanged {
        return Ok(Put::Unchanged);
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = dest.with_file_name(format!(".{name}.partial"));
    let _ = fs::remove_file(&partial);
    let result = match content {
        Content::Bytes(bytes) => fs::write(&partial, bytes),
        Content::Link(target) => symlink(target, &partial),
    }
    .and_then(|()| {
        // A rename does not replace a folder; a folder in the way is the user's.
        fs::rename(&partial, dest)
    });
    if let Err(error) = result {
        let _ = fs::remove_file(&partial);
        return Err(TrainsetError::Write {
            path: dest.to_path_buf(),
            error,
        });
    }
    Ok(Put::Written)
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The non-hidden files under `dir`, as sorted `/`-separated relative paths; links
/// count as files (a broken one too), folders are entered, a missing `dir` is empty.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<String>, TrainsetError> {
    let mut out = Vec::new();
    if dir.is_dir() {
        walk(dir, "", &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), TrainsetError> {
    for entry in fs::read_dir(dir).map_err(TrainsetError::read(dir))? {
        let entry = entry.map_err(TrainsetError::read(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        if entry
            .file_type()
            .map_err(TrainsetError::read(dir))?
            .is_dir()
        {
            walk(&entry.path(), &format!("{rel}/"), out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// `path` made absolute with its links resolved, as far as it exists: a folder
/// that `import` has yet to create still compares with the source's path.
pub(crate) fn resolve(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => resolve(parent).join(name),
        _ => std::env::current_dir().unwrap_or_default().join(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_writes_once_and_then_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.png");
        assert_eq!(put(&dest, Content::Bytes(b"one")).unwrap(), Put::Written);
        assert_eq!(put(&dest, Content::Bytes(b"one")).unwrap(), Put::Unchanged);
        assert_eq!(put(&dest, Content::Bytes(b"two")).unwrap(), Put::Written);
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(list_files(dir.path()).unwrap(), ["a.png"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_replaces_a_copy_and_is_kept_when_it_points_right() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("source.png");
        fs::write(&target, b"pixels").unwrap();
        let dest = dir.path().join("a.png");
        put(&dest, Content::Bytes(b"pixels")).unwrap();
        assert_eq!(put(&dest, Content::Link(&target)).unwrap(), Put::Written);
        assert_eq!(fs::read_link(&dest).unwrap(), target);
        assert_eq!(put(&dest, Content::Link(&target)).unwrap(), Put::Unchanged);
        // And back: a copy is not a link, even to the same bytes.
        assert_eq!(put(&dest, Content::Bytes(b"pixels")).unwrap(), Put::Written);
        assert!(!fs::symlink_metadata(&dest)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn resolve_reaches_through_folders_yet_to_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(resolve(&dir.path().join("x/y")), real.join("x/y"));
    }
}
