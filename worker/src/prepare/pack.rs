//! Writing `dataset.safetensors` without holding every image in memory.
//!
//! A safetensors file is an 8-byte little-endian header length, a JSON header, then
//! the tensor bytes. The header holds the image count and the manifest, which are
//! only known at the end, so the pixels go to a side file as they are produced and
//! are copied behind the header once it can be written. Memory stays at one image
//! whatever the size of the trainset.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;

use super::manifest::{Manifest, FORMAT};
use super::PrepareError;

/// Name of the one tensor: u8, `[count, resolution, resolution, 3]`, HWC.
pub const TENSOR: &str = "images";

/// Collects images in tensor order, then writes the safetensors file.
pub(crate) struct Packer {
    pixels_path: PathBuf,
    pixels: Option<BufWriter<File>>,
    image_len: usize,
    count: usize,
}

impl Packer {
    /// Starts a packer whose side file, `<stem>.pixels.partial`, lies in `out_dir`.
    pub fn new(out_dir: &Path, stem: &str, resolution: u32) -> Result<Self, PrepareError> {
        let pixels_path = out_dir.join(format!("{stem}.pixels.partial"));
        let file = File::create(&pixels_path).map_err(|error| PrepareError::Write {
            path: pixels_path.clone(),
            error,
        })?;
        let side = resolution as usize;
        Ok(Self {
            pixels_path,
            pixels: Some(BufWriter::new(file)),
            image_len: side * side * 3,
            count: 0,
        })
    }

    /// Appends one image of `resolution` x `resolution` x 3 bytes.
    pub fn push(&mut self, rgb: &[u8]) -> Result<(), PrepareError> {
        assert_eq!(
            rgb.len(),
            self.image_len,
            "image size differs from resolution"
        );
        let writer = self.pixels.as_mut().expect("packer already finished");
        writer.write_all(rgb).map_err(|error| PrepareError::Write {
            path: self.pixels_path.clone(),
            error,
        })?;
        self.count += 1;
        Ok(())
    }

    /// Writes `path` (through a `.partial` file renamed at the end, so a reader never
    /// sees half a dataset) with the pushed images and `manifest` as metadata.
    pub fn finish(mut self, path: &Path, manifest: &Manifest) -> Result<(), PrepareError> {
        assert_eq!(
            manifest.count, self.count,
            "manifest count differs from images"
        );
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |error| PrepareError::Write { path, error }
        };
        let writer = self.pixels.take().expect("packer already finished");
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .map_err(write_err(&self.pixels_path))?;

        let header = header(manifest, self.count, self.image_len)?;
        let partial = path.with_extension("safetensors.partial");
        let result = (|| -> io::Result<()> {
            let mut out = BufWriter::new(File::create(&partial)?);
            out.write_all(&(header.len() as u64).to_le_bytes())?;
            out.write_all(&header)?;
            io::copy(&mut File::open(&self.pixels_path)?, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            fs::rename(&partial, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&partial);
        }
        result.map_err(write_err(path))
    }
}

impl Drop for Packer {
    fn drop(&mut self) {
        // On success and on error alike the side file is only scratch.
        self.pixels.take();
        let _ = fs::remove_file(&self.pixels_path);
    }
}

/// The JSON header, padded with spaces to a multiple of 8 bytes as the safetensors
/// crate itself does, so that the tensor data starts aligned.
///
/// The crate's own `Metadata` keeps `__metadata__` in a `HashMap`, whose order
/// changes from run to run; the same trainset should give the same bytes, so that a
/// re-run is recognisable by its hash. The header is serialised here with a fixed key
/// order, and `Metadata` still checks the tensor info.
fn header(manifest: &Manifest, count: usize, image_len: usize) -> Result<Vec<u8>, PrepareError> {
    let side = manifest.resolution as usize;
    let info = TensorInfo {
        dtype: Dtype::U8,
        shape: vec![count, side, side, 3],
        data_offsets: (0, count * image_len),
    };
    let metadata = BTreeMap::from([
        ("format", FORMAT.to_string()),
        (
            "manifest",
            serde_json::to_string(manifest).map_err(PrepareError::Manifest)?,
        ),
    ]);
    Metadata::new(None, vec![(TENSOR.to_string(), info.clone())])
        .map_err(|e| PrepareError::Header(e.to_string()))?;
    // serde_json's map is sorted (or, with `preserve_order`, in insertion order): either
    // way `__metadata__` comes first, as the crate writes it.
    let header = serde_json::json!({ "__metadata__": metadata, (TENSOR): info });
    let mut header = serde_json::to_vec(&header).map_err(PrepareError::Manifest)?;
    header.resize(header.len().next_multiple_of(8), b' ');
    Ok(header)
}
