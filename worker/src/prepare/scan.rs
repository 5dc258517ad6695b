//! Finding the images of a folder, and their captions.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::PrepareError;

/// Extensions (lower-case) of the files tried as images. The content decides the
/// format; the extension only decides whether a file is tried at all.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"];

/// An image file found by [`scan`].
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    /// Path relative to the image folder, `/`-separated; the sort key.
    pub rel: String,
    pub path: PathBuf,
    pub caption: Option<String>,
}

/// What [`scan`] found in an image folder.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Image files, sorted by `rel`.
    pub images: Vec<Candidate>,
    /// Files that are neither images nor captions of one, sorted, relative paths.
    pub ignored: Vec<String>,
}

/// One non-hidden file of the walk.
struct Entry {
    rel: String,
    path: PathBuf,
}

/// Walks `dir` recursively and sorts its files into images, captions and the rest.
pub(crate) fn scan(dir: &Path) -> Result<Scan, PrepareError> {
    let mut files = Vec::new();
    walk(dir, "", &mut files, &mut |_| true)?;
    files.sort_by(|a, b| a.rel.cmp(&b.rel));

    // Captions by (folder, stem): `a/photo.txt` captions `a/photo.png`.
    let mut captions: HashMap<(String, String), Entry> = HashMap::new();
    let mut images = Vec::new();
    let mut others = Vec::new();
    for entry in files {
        match extension(&entry.rel).as_deref() {
            Some("txt") => {
                captions.insert(stem_key(&entry.rel), entry);
            }
            Some(ext) if IMAGE_EXTENSIONS.contains(&ext) => images.push(entry),
            _ => others.push(entry.rel),
        }
    }

    let mut scan = Scan::default();
    for entry in images {
        let caption = match captions.get(&stem_key(&entry.rel)) {
            Some(txt) => read_caption(&txt.path)?,
            None => None,
        };
        scan.images.push(Candidate {
            rel: entry.rel,
            path: entry.path,
            caption,
        });
    }
    // A caption is used when some image, decodable or not, has its stem.
    let used: std::collections::HashSet<(String, String)> =
        scan.images.iter().map(|c| stem_key(&c.rel)).collect();
    others.extend(
        captions
            .into_iter()
            .filter(|(key, _)| !used.contains(key))
            .map(|(_, entry)| entry.rel),
    );
    others.sort();
    scan.ignored = others;
    Ok(scan)
}

/// Whether `dir` holds at least one non-hidden file, at any depth.
pub(crate) fn has_files(dir: &Path) -> Result<bool, PrepareError> {
    let mut found = false;
    walk(dir, "", &mut Vec::new(), &mut |_| {
        found = true;
        false
    })?;
    Ok(found)
}

/// Appends the non-hidden files under `dir` to `out`; `keep_going` is called with
/// each file and stops the walk when it returns false. Symbolic links to files are
/// followed, those to folders are not (a link cycle would never end).
fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<Entry>,
    keep_going: &mut dyn FnMut(&Entry) -> bool,
) -> Result<bool, PrepareError> {
    let read_err = |error| PrepareError::Read {
        path: dir.to_path_buf(),
        error,
    };
    let mut entries = fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let path = entry.path();
        let file_type = entry.file_type().map_err(read_err)?;
        if file_type.is_dir() {
            if !walk(&path, &format!("{rel}/"), out, keep_going)? {
                return Ok(false);
            }
            continue;
        }
        // `fs::metadata` follows a link; a dangling one counts as a file and fails
        // later with its own name.
        let is_file = file_type.is_file() || fs::metadata(&path).map_or(true, |m| m.is_file());
        if !is_file {
            continue;
        }
        let entry = Entry { rel, path };
        if !keep_going(&entry) {
            return Ok(false);
        }
        out.push(entry);
    }
    Ok(true)
}

/// Lower-case extension of a relative path, if it has one (a hidden-file style
/// name such as `a/.png` was skipped by the walk already).
fn extension(rel: &str) -> Option<String> {
    Path::new(rel)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// (folder, stem) of a relative path, the key that pairs an image with its caption.
fn stem_key(rel: &str) -> (String, String) {
    let (folder, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    (folder.to_string(), stem.to_string())
}

fn read_caption(path: &Path) -> Result<Option<String>, PrepareError> {
    let bytes = fs::read(path).map_err(|error| PrepareError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    Ok((!text.is_empty()).then(|| text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stem_key_pairs_image_and_caption() {
        assert_eq!(stem_key("a/b/photo.png"), stem_key("a/b/photo.txt"));
        assert_ne!(stem_key("a/photo.png"), stem_key("b/photo.txt"));
        assert_eq!(stem_key("x.tar.png"), ("".to_string(), "x.tar".to_string()));
    }

    #[test]
    fn extension_is_lower_case() {
        assert_eq!(extension("IMG_0001.JPG").as_deref(), Some("jpg"));
        assert_eq!(extension("README").as_deref(), None);
    }
}
