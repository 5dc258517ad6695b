//! Reading `dataset.safetensors` back: the inverse of `pack`, for the jobs that
//! train on a prepared dataset.
//!
//! The images become lossless PNG files named by their position in the tensor
//! (`000000.png`, …), each with its caption beside it (`000000.txt`) when it has
//! one: a folder the model library's trainset reader opens, in the packed order.
//! The file is read one image at a time, so memory stays at one image.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::manifest::{Manifest, FORMAT};
use super::pack::TENSOR;
use super::PrepareError;

/// Headers larger than this are not an atelier dataset (the manifest of a
/// million-image set is well below it).
const MAX_HEADER: u64 = 1 << 30;

/// Writes the images of the packed dataset `dataset` into `out_dir` as
/// `<index>.png` (+ `<index>.txt` captions) and returns its manifest. Checks the
/// format, the tensor's type and shape against the manifest, and the file's length.
pub fn unpack(
    dataset: &Path,
    out_dir: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<Manifest, PrepareError> {
    let read_err = |error| PrepareError::Read {
        path: dataset.to_path_buf(),
        error,
    };
    let bad = |message: String| PrepareError::Dataset {
        path: dataset.to_path_buf(),
        message,
    };
    let file = File::open(dataset).map_err(read_err)?;
    let length = file.metadata().map_err(read_err)?.len();
    let mut reader = BufReader::new(file);
    let mut len = [0u8; 8];
    reader.read_exact(&mut len).map_err(read_err)?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || header_len + 8 > length {
        return Err(bad(format!(
            "header length {header_len} does not fit a file of {length} bytes"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    reader.read_exact(&mut header).map_err(read_err)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("the header is not JSON: {e}")))?;
    let meta = &header["__metadata__"];
    if meta["format"] != FORMAT {
        return Err(bad(format!(
            "metadata `format` is {}, expected `{FORMAT}`",
            meta["format"]
        )));
    }
    let manifest: Manifest = meta["manifest"]
        .as_str()
        .ok_or_else(|| bad("metadata has no `manifest`".into()))
        .and_then(|m| {
            serde_json::from_str(m).map_err(|e| bad(format!("metadata `manifest`: {e}")))
        })?;
    let side = manifest.resolution as usize;
    let image_len = side * side * 3;
    let info = &header[TENSOR];
    let shape: Vec<usize> = info["shape"]
        .as_array()
        .map(|dims| {
            dims.iter()
                .filter_map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        })
        .unwrap_or_default();
    let expected = [manifest.count, side, side, 3];
    if info["dtype"] != "U8" || shape != expected {
        return Err(bad(format!(
            "tensor `{TENSOR}` is {} {:?}, the manifest says U8 {expected:?}",
            info["dtype"], shape
        )));
    }
    let data = (manifest.count * image_len) as u64;
    let offsets = [serde_json::json!(0), serde_json::json!(data)];
    if info["data_offsets"].as_array().map(Vec::as_slice) != Some(&offsets[..])
        || 8 + header_len + data != length
    {
        return Err(bad(format!(
            "tensor `{TENSOR}` should hold {data} bytes after the header; the file has {} \
             (data_offsets {})",
            length - 8 - header_len,
            info["data_offsets"]
        )));
    }
    if manifest.images.len() != manifest.count {
        return Err(bad(format!(
            "the manifest lists {} images but counts {}",
            manifest.images.len(),
            manifest.count
        )));
    }
    fs::create_dir_all(out_dir).map_err(|error| PrepareError::Write {
        path: out_dir.to_path_buf(),
        error,
    })?;
    let mut pixels = vec![0u8; image_len];
    for (index, image) in manifest.images.iter().enumerate() {
        if cancelled() {
            return Err(PrepareError::Cancelled);
        }
        reader.read_exact(&mut pixels).map_err(read_err)?;
        let png = image_path(out_dir, index);
        image::save_buffer(
            &png,
            &pixels,
            side as u32,
            side as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| PrepareError::Write {
            path: png.clone(),
            error: std::io::Error::other(e),
        })?;
        if let Some(caption) = &image.caption {
            let txt = png.with_extension("txt");
            fs::write(&txt, caption).map_err(|error| PrepareError::Write { path: txt, error })?;
        }
    }
    Ok(manifest)
}

/// Where [`unpack`] writes image `index`.
pub fn image_path(out_dir: &Path, index: usize) -> PathBuf {
    out_dir.join(format!("{index:06}.png"))
}
