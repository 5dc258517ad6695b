//! A trainset as one file, for the artifact store (`atelier trainset push`) and back
//! on a worker (a `prepare` job on `pushed:NAME`).
//!
//! The archive is an uncompressed tar of `trainset.toml` (when there is one) and
//! `images/<path>` for every image and `.txt` file of the image folder (the
//! trainset's `images/`, or the folder itself), hidden files left out. Entries are
//! sorted by name and carry fixed times, owners and modes, so the same files always
//! give the same bytes and so the same sha256: pushing a folder again stores nothing.
//! Images are not recompressed (they are PNG or JPEG already).

use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::TrainsetError;
use super::manifest::{IMAGES_DIR, MANIFEST_FILE};

/// Extensions (lower-case) packed from the image folder: what `prepare` tries as
/// images, and captions.
const PACKED_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "txt",
];

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub sha256: String,
    pub size: u64,
    /// Files in the archive.
    pub files: u32,
    /// Files of the image folder left out (neither images nor `.txt`), relative.
    pub skipped: Vec<String>,
}

/// One file to pack: its name in the archive, where it is, its size.
struct Entry {
    name: String,
    path: PathBuf,
    size: u64,
}

/// Packs trainset folder `dir` into `out` (see the module doc). `on_bytes` gets
/// the total bytes of the files to pack once, then the bytes of each file packed.
pub fn pack(
    dir: &Path,
    out: &Path,
    on_bytes: &mut dyn FnMut(PackProgress),
) -> Result<Packed, TrainsetError> {
    let meta = fs::metadata(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TrainsetError::MissingSource(dir.to_path_buf()),
        _ => TrainsetError::Read {
            path: dir.to_path_buf(),
            error: e,
        },
    })?;
    if !meta.is_dir() {
        return Err(TrainsetError::NotAFolder(dir.to_path_buf()));
    }
    let images = dir.join(IMAGES_DIR);
    let image_dir = if images.is_dir() {
        images
    } else {
        dir.to_path_buf()
    };
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    walk(&image_dir, "", &mut entries, &mut skipped)?;
    if entries.is_empty() {
        return Err(TrainsetError::NoImages {
            from: image_dir.clone(),
            found: 0,
            rejected: 0,
            duplicates: 0,
        });
    }
    let manifest = dir.join(MANIFEST_FILE);
    if let Ok(m) = fs::metadata(&manifest) {
        if m.is_file() {
            entries.push(Entry {
                name: MANIFEST_FILE.to_string(),
                path: manifest,
                size: m.len(),
            });
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    on_bytes(PackProgress::Total(entries.iter().map(|e| e.size).sum()));

    let write_err = |error: std::io::Error| TrainsetError::Write {
        path: out.to_path_buf(),
        error,
    };
    let file = fs::File::create(out).map_err(write_err)?;
    let mut hashed = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        size: 0,
    };
    {
        let mut builder = tar::Builder::new(&mut hashed);
        for e in &entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(e.size);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            let reader = fs::File::open(&e.path).map_err(|error| TrainsetError::Read {
                path: e.path.clone(),
                error,
            })?;
            // Exactly the size announced in the header, or the archive is broken:
            // a file that changes while it is packed is an error.
            let mut limited = ExactReader {
                inner: reader,
                left: e.size,
            };
            builder
                .append_data(&mut header, &e.name, &mut limited)
                .map_err(|error| {
                    let error = if error.kind() == std::io::ErrorKind::UnexpectedEof {
                        std::io::Error::other("the file changed while it was packed")
                    } else {
                        error
                    };
                    TrainsetError::Read {
                        path: e.path.clone(),
                        error,
                    }
                })?;
            on_bytes(PackProgress::Packed(e.size));
        }
        builder.finish().map_err(write_err)?;
    }
    hashed.inner.flush().map_err(write_err)?;
    Ok(Packed {
        sha256: hex::encode(hashed.hasher.finalize()),
        size: hashed.size,
        files: entries.len() as u32,
        skipped,
    })
}

/// What [`pack`] reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackProgress {
    /// Bytes of all files to pack.
    Total(u64),
    /// Bytes of one more file packed.
    Packed(u64),
}

fn walk(
    dir: &Path,
    prefix: &str,
    entries: &mut Vec<Entry>,
    skipped: &mut Vec<String>,
) -> Result<(), TrainsetError> {
    let read_err = |error| TrainsetError::Read {
        path: dir.to_path_buf(),
        error,
    };
    for item in fs::read_dir(dir).map_err(read_err)? {
        let item = item.map_err(read_err)?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let path = item.path();
        // Links are followed (`trainset import --link` stores links to files).
        let meta = fs::metadata(&path).map_err(|error| TrainsetError::Read {
            path: path.clone(),
            error,
        })?;
        if meta.is_dir() {
            if !item.file_type().map_err(read_err)?.is_symlink() {
                walk(&path, &format!("{rel}/"), entries, skipped)?;
            }
            continue;
        }
        let ext = Path::new(&name)
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if meta.is_file() && ext.is_some_and(|e| PACKED_EXTENSIONS.contains(&e.as_str())) {
            entries.push(Entry {
                name: format!("{IMAGES_DIR}/{rel}"),
                path,
                size: meta.len(),
            });
        } else {
            skipped.push(rel);
        }
    }
    skipped.sort();
    Ok(())
}

/// Unpacks an archive [`pack`] wrote into `dest` (which must not exist yet; it is
/// created). Only plain files at relative paths are accepted: anything else (links,
/// `..`, absolute paths, devices) is an error naming the entry. Returns the number
/// of files.
pub fn unpack(archive: &Path, dest: &Path) -> Result<u32, String> {
    let file = fs::File::open(archive).map_err(|e| format!("`{}`: {e}", archive.display()))?;
    fs::create_dir_all(dest).map_err(|e| format!("cannot create `{}`: {e}", dest.display()))?;
    let mut tar = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut files = 0u32;
    let bad = |what: String| format!("`{}` is not a trainset archive: {what}", archive.display());
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let shown = path.display().to_string();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!("`{shown}` is not a plain file")));
        }
        if path.as_os_str().is_empty()
            || !path.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(bad(format!(
                "`{shown}` is not a relative path of plain names"
            )));
        }
        let target = dest.join(&path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create `{}`: {e}", parent.display()))?;
        }
        let mut out = fs::File::create(&target)
            .map_err(|e| format!("cannot write `{}`: {e}", target.display()))?;
        let expected = entry.header().size().map_err(|e| bad(e.to_string()))?;
        let copied =
            std::io::copy(&mut entry, &mut out).map_err(|e| bad(format!("`{shown}`: {e}")))?;
        if copied != expected {
            return Err(bad(format!(
                "`{shown}` ends after {copied} of its {expected} bytes"
            )));
        }
        files += 1;
    }
    Ok(files)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly `left` bytes: fewer is `UnexpectedEof`, more are not read.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(root: &Path) {
        fs::create_dir_all(root.join("images/sub")).unwrap();
        fs::write(root.join("trainset.toml"), "name = \"t\"\n").unwrap();
        fs::write(root.join("images/b.png"), b"png bytes").unwrap();
        fs::write(root.join("images/b.txt"), b"a caption").unwrap();
        fs::write(root.join("images/sub/a.jpg"), b"jpeg bytes").unwrap();
        fs::write(root.join("images/notes.md"), b"left out").unwrap();
        fs::write(root.join("images/.hidden.png"), b"left out").unwrap();
    }

    #[test]
    fn same_files_same_bytes_and_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        folder(&a);
        folder(&b);
        // Other times and modes, created in another order: the same archive.
        fs::write(b.join("images/sub/a.jpg"), b"jpeg bytes").unwrap();
        let mut total = 0;
        let pa = pack(&a, &tmp.path().join("a.tar"), &mut |p| {
            if let PackProgress::Total(t) = p {
                total = t
            }
        })
        .unwrap();
        let pb = pack(&b, &tmp.path().join("b.tar"), &mut |_| {}).unwrap();
        assert_eq!(pa, pb);
        assert_eq!(pa.files, 4);
        assert_eq!(total, 11 + 9 + 9 + 10);
        assert_eq!(pa.skipped, ["notes.md"]);
        let bytes = fs::read(tmp.path().join("a.tar")).unwrap();
        assert_eq!(pa.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(pa.size, bytes.len() as u64);

        let out = tmp.path().join("out");
        assert_eq!(unpack(&tmp.path().join("a.tar"), &out).unwrap(), 4);
        assert_eq!(fs::read(out.join("images/b.txt")).unwrap(), b"a caption");
        assert_eq!(
            fs::read(out.join("images/sub/a.jpg")).unwrap(),
            b"jpeg bytes"
        );
        assert!(out.join("trainset.toml").is_file());
        assert!(!out.join("images/notes.md").exists());

        // A change of content changes the hash.
        fs::write(b.join("images/b.txt"), b"another caption").unwrap();
        let pc = pack(&b, &tmp.path().join("c.tar"), &mut |_| {}).unwrap();
        assert_ne!(pc.sha256, pa.sha256);
    }

    #[test]
    fn a_plain_image_folder_packs_under_images() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("plain");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("x.png"), b"x").unwrap();
        let p = pack(&dir, &tmp.path().join("p.tar"), &mut |_| {}).unwrap();
        assert_eq!(p.files, 1);
        let out = tmp.path().join("out");
        unpack(&tmp.path().join("p.tar"), &out).unwrap();
        assert_eq!(fs::read(out.join("images/x.png")).unwrap(), b"x");
        let empty = tmp.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        assert!(pack(&empty, &tmp.path().join("e.tar"), &mut |_| {}).is_err());
    }

    #[test]
    fn truncated_archive_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        folder(&dir);
        let tar = tmp.path().join("t.tar");
        pack(&dir, &tar, &mut |_| {}).unwrap();
        let bytes = fs::read(&tar).unwrap();
        // Cut inside the second file's data.
        fs::write(&tar, &bytes[..512 * 3 + 4]).unwrap();
        let err = unpack(&tar, &tmp.path().join("out")).unwrap_err();
        assert!(err.contains("is not a trainset archive"), "{err}");
    }
}
