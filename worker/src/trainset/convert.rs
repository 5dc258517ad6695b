//! Which images are stored as they are and which become 8-bit RGB PNG files.
//!
//! Stored as they are: PNG files of 8-bit RGB (colour type 2, depth 8, no
//! transparency) and JPEG files of three components (YCbCr or RGB), named with their
//! format's extension and without an EXIF rotation. Every reader decodes these to
//! the same RGB8 pixels, and JPEG files stay small. Everything else is decoded the
//! way `prepare` decodes it (orientation applied, alpha over white, 16 bits rounded
//! to 8, CMYK converted, a GIF's first frame) and stored as an RGB8 PNG, so that the
//! training reader, diffusers and any image viewer see the same picture.

use std::io::Cursor;
use std::path::Path;

use image::{AnimationDecoder, ColorType, ImageFormat, RgbImage};

use crate::prepare::decode::Opened;

/// How one image is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Storage {
    AsIs,
    /// Re-encoded as an RGB8 PNG; `from` says what it was (`CMYK JPEG`).
    Convert {
        from: String,
    },
}

/// Decides the storage of `bytes`, the content of `path`, which decoded to `opened`.
pub(crate) fn storage(bytes: &[u8], path: &Path, opened: &Opened) -> Storage {
    let kind = describe(bytes, opened);
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let named_right = opened.format.extensions_str().contains(&extension.as_str());
    let fine = match opened.format {
        ImageFormat::Png => png_header(bytes) == Some((8, 2)) && opened.color == ColorType::Rgb8,
        ImageFormat::Jpeg => jpeg_components(bytes) == Some(3) && opened.color == ColorType::Rgb8,
        _ => false,
    };
    if opened.reoriented {
        Storage::Convert {
            from: format!("{kind} with an EXIF rotation"),
        }
    } else if !fine {
        Storage::Convert { from: kind }
    } else if !named_right {
        Storage::Convert {
            from: format!("{kind} named .{extension}"),
        }
    } else {
        Storage::AsIs
    }
}

/// The PNG file of `rgb`: what a converted image is stored as.
pub(crate) fn png_bytes(rgb: &RgbImage) -> Result<Vec<u8>, String> {
    let mut out = Cursor::new(Vec::new());
    rgb.write_to(&mut out, ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// `CMYK JPEG`, `16-bit RGB PNG`, `RGBA PNG`, `GIF, first of several frames`, `WEBP`.
fn describe(bytes: &[u8], opened: &Opened) -> String {
    match opened.format {
        ImageFormat::Jpeg => match jpeg_components(bytes) {
            Some(1) => "grayscale JPEG".into(),
            Some(4) => "CMYK JPEG".into(),
            _ => "JPEG".into(),
        },
        ImageFormat::Png => {
            let (depth, colour) = png_header(bytes).unwrap_or((8, 2));
            let kind = match colour {
                0 => "grayscale",
                3 => "palette",
                4 => "grayscale+alpha",
                6 => "RGBA",
                _ => "RGB",
            };
            let depth = if depth == 8 {
                String::new()
            } else {
                format!("{depth}-bit ")
            };
            // Colour types 0, 2 and 3 carry transparency in a `tRNS` chunk, which the
            // decoder turns into an alpha channel.
            let transparency = if opened.color.has_alpha() && !matches!(colour, 4 | 6) {
                " with transparency"
            } else {
                ""
            };
            format!("{depth}{kind} PNG{transparency}")
        }
        ImageFormat::Gif if gif_frames(bytes) > 1 => "GIF, first of several frames".into(),
        ImageFormat::WebP => "WebP".into(),
        other => other
            .extensions_str()
            .first()
            .map_or_else(|| format!("{other:?}"), |e| e.to_uppercase()),
    }
}

/// (bit depth, colour type) from a PNG's IHDR chunk, which the format puts first.
fn png_header(bytes: &[u8]) -> Option<(u8, u8)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    Some((*bytes.get(24)?, *bytes.get(25)?))
}

/// The number of components in a JPEG's frame header: 1 grayscale, 3 YCbCr (or
/// RGB), 4 CMYK or YCCK. The decoder converts CMYK to RGB without saying so.
pub(crate) fn jpeg_components(bytes: &[u8]) -> Option<u8> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        match marker {
            // Fill byte before a marker.
            0xFF => i += 1,
            // Markers without a length.
            0x01 | 0xD0..=0xD8 => i += 2,
            // Start of scan or end of image before any frame header.
            0xD9 | 0xDA => return None,
            _ => {
                // SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC): the frame header,
                // FF Cn, length (2), precision (1), height (2), width (2), components.
                if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
                    return bytes.get(i + 9).copied();
                }
                let length = u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]);
                i += 2 + usize::from(length);
            }
        }
    }
    None
}

/// Frames of a GIF, counting no further than 2.
fn gif_frames(bytes: &[u8]) -> usize {
    image::codecs::gif::GifDecoder::new(Cursor::new(bytes))
        .map(|decoder| decoder.into_frames().take(2).filter(Result::is_ok).count())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::decode;
    use image::{DynamicImage, ImageBuffer, Luma, Rgb, Rgba};

    fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn storage_of(bytes: &[u8], name: &str) -> Storage {
        let opened = decode::open(bytes, Path::new(name)).unwrap();
        storage(bytes, Path::new(name), &opened)
    }

    fn convert(from: &str) -> Storage {
        Storage::Convert { from: from.into() }
    }

    fn rgb() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(8, 6, |x, y| {
            Rgb([x as u8 * 30, y as u8 * 40, 7])
        }))
    }

    #[test]
    fn rgb_png_and_jpeg_are_kept() {
        assert_eq!(
            storage_of(&encode(rgb(), ImageFormat::Png), "a.png"),
            Storage::AsIs
        );
        let jpeg = encode(rgb(), ImageFormat::Jpeg);
        assert_eq!(jpeg_components(&jpeg), Some(3));
        assert_eq!(storage_of(&jpeg, "a.JPG"), Storage::AsIs);
        assert_eq!(storage_of(&jpeg, "a.jpeg"), Storage::AsIs);
    }

    #[test]
    fn other_kinds_are_converted_and_described() {
        let gray = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(4, 4, Luma([9])));
        assert_eq!(
            storage_of(&encode(gray.clone(), ImageFormat::Png), "g.png"),
            convert("grayscale PNG")
        );
        let gray_jpeg = encode(gray, ImageFormat::Jpeg);
        assert_eq!(jpeg_components(&gray_jpeg), Some(1));
        assert_eq!(storage_of(&gray_jpeg, "g.jpg"), convert("grayscale JPEG"));
        let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(4, 4, Rgba([1, 2, 3, 4])));
        assert_eq!(
            storage_of(&encode(rgba, ImageFormat::Png), "a.png"),
            convert("RGBA PNG")
        );
        let deep = DynamicImage::ImageRgb16(ImageBuffer::from_pixel(4, 4, Rgb([1, 2, 3])));
        assert_eq!(
            storage_of(&encode(deep, ImageFormat::Png), "d.png"),
            convert("16-bit RGB PNG")
        );
        assert_eq!(
            storage_of(&encode(rgb(), ImageFormat::Bmp), "b.bmp"),
            convert("BMP")
        );
        assert_eq!(
            storage_of(&encode(rgb(), ImageFormat::Gif), "b.gif"),
            convert("GIF")
        );
        assert_eq!(
            storage_of(&encode(rgb(), ImageFormat::Png), "p.jpg"),
            convert("RGB PNG named .jpg")
        );
    }

    #[test]
    fn the_frame_header_is_found_after_other_segments() {
        // SOI, an APP0 segment of 4 bytes, fill bytes, then SOF2 with 4 components.
        let bytes = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xFF, 0xC2, 0x00, 0x14, 0x08,
            0x00, 0x10, 0x00, 0x10, 0x04,
        ];
        assert_eq!(jpeg_components(&bytes), Some(4));
        assert_eq!(jpeg_components(&bytes[..18]), None);
        assert_eq!(jpeg_components(b"\x89PNG"), None);
    }

    #[test]
    fn converted_png_bytes_decode_to_the_pixels() {
        let pixels = rgb().into_rgb8();
        let png = png_bytes(&pixels).unwrap();
        assert_eq!(storage_of(&png, "x.png"), Storage::AsIs);
        assert_eq!(image::load_from_memory(&png).unwrap().into_rgb8(), pixels);
    }
}
