//! Decoding one image file into the square RGB8 picture that gets packed.

use std::io::Cursor;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use image::imageops::{self, FilterType};
use image::metadata::Orientation;
use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// Lanczos3, the filter of PIL's `LANCZOS` that diffusers' and kohya's dataset
/// loaders use. CatmullRom has two thirds of its taps: not enough of a saving to
/// trade sharpness for in a job that runs once per trainset.
pub(crate) const FILTER: FilterType = FilterType::Lanczos3;

/// An image decoded, composited and resized.
pub(crate) struct Decoded {
    /// Size as displayed, before the crop and resize.
    pub width: u32,
    pub height: u32,
    /// `resolution` x `resolution` RGB8, row-major, HWC.
    pub pixels: RgbImage,
}

/// An image file decoded at full size, as displayed, before any conversion.
pub(crate) struct Opened {
    /// The format the content decoded as (the content decides, not the name).
    pub format: ImageFormat,
    /// The decoder's colour type. A CMYK JPEG reads as RGB8: the decoder converts it.
    pub color: ColorType,
    /// Whether an EXIF orientation other than the identity was applied.
    pub reoriented: bool,
    pub image: DynamicImage,
}

/// Decodes `bytes` (the content of `path`) into a `resolution`-sided square.
///
/// The content decides the format; `path`'s extension is only the fallback when the
/// content is not recognised. The error is the decoder's message.
pub(crate) fn decode(bytes: &[u8], path: &Path, resolution: u32) -> Result<Decoded, String> {
    catching_panics(|| {
        let opened = open_inner(bytes, path)?;
        let (width, height) = (opened.image.width(), opened.image.height());
        let rgb = to_rgb8_over_white(opened.image);
        Ok(Decoded {
            width,
            height,
            pixels: square(&rgb, resolution),
        })
    })
}

/// Decodes `bytes` (the content of `path`) at full size, with its EXIF orientation
/// applied; what [`decode`] starts from. Same errors as [`decode`].
pub(crate) fn open(bytes: &[u8], path: &Path) -> Result<Opened, String> {
    catching_panics(|| open_inner(bytes, path))
}

fn catching_panics<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    // Decoders are fed untrusted files; one that panics rejects the file rather than
    // taking the worker down.
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(format!("decoder panicked: {message}"))
        }
    }
}

fn open_inner(bytes: &[u8], path: &Path) -> Result<Opened, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes));
    if let Ok(format) = ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    let format = reader.format();
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let color = decoder.color_type();
    // A broken EXIF block is no reason to lose the picture.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    image.apply_orientation(orientation);

    let (width, height) = (image.width(), image.height());
    if width == 0 || height == 0 {
        return Err(format!("image is {width}x{height} pixels"));
    }
    Ok(Opened {
        // `into_decoder` fails when no format was set or guessed.
        format: format.ok_or("image format could not be determined")?,
        color,
        reoriented: orientation != Orientation::NoTransforms,
        image,
    })
}

/// Converts any colour type to RGB8, compositing alpha over white: a transparent
/// background should read as the white page it is shown on, not as whatever colour
/// the editor left under it. Gray is replicated; 16-bit and float are rounded.
pub(crate) fn to_rgb8_over_white(image: DynamicImage) -> RgbImage {
    let color = image.color();
    if !color.has_alpha() {
        return image.into_rgb8();
    }
    let (width, height) = (image.width(), image.height());
    let mut out = RgbImage::new(width, height);
    if color.bytes_per_pixel() / color.channel_count() == 1 {
        let rgba = image.into_rgba8();
        for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
            let a = u32::from(src[3]);
            for c in 0..3 {
                // c·a + 255·(255 − a), over 255, rounded.
                let v = u32::from(src[c]) * a + 255 * (255 - a);
                dst[c] = ((v + 127) / 255) as u8;
            }
        }
    } else {
        let rgba = image.into_rgba16();
        for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
            let a = u64::from(src[3]);
            for c in 0..3 {
                // Composite in 16 bits, then 65535 -> 255 (a division by 257).
                let v = u64::from(src[c]) * a + 65535 * (65535 - a);
                let v16 = (v + 32767) / 65535;
                dst[c] = ((v16 + 128) / 257) as u8;
            }
        }
    }
    out
}

/// The largest centred square of `rgb`, resized to `resolution` x `resolution`.
pub(crate) fn square(rgb: &RgbImage, resolution: u32) -> RgbImage {
    let (width, height) = rgb.dimensions();
    let side = width.min(height);
    let view = imageops::crop_imm(rgb, (width - side) / 2, (height - side) / 2, side, side);
    if side == resolution {
        return view.to_image();
    }
    imageops::resize(&*view, resolution, resolution, FILTER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgba};

    #[test]
    fn alpha_is_composited_over_white() {
        let mut rgba = ImageBuffer::<Rgba<u8>, _>::new(3, 1);
        rgba.put_pixel(0, 0, Rgba([255, 0, 0, 0]));
        rgba.put_pixel(1, 0, Rgba([0, 0, 0, 128]));
        rgba.put_pixel(2, 0, Rgba([10, 20, 30, 255]));
        let rgb = to_rgb8_over_white(DynamicImage::ImageRgba8(rgba));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [127, 127, 127]);
        assert_eq!(rgb.get_pixel(2, 0).0, [10, 20, 30]);
    }

    #[test]
    fn sixteen_bit_alpha_is_composited_over_white() {
        let mut rgba = ImageBuffer::<Rgba<u16>, _>::new(2, 1);
        rgba.put_pixel(0, 0, Rgba([0, 65535, 0, 0]));
        rgba.put_pixel(1, 0, Rgba([0, 32896, 65535, 65535]));
        let rgb = to_rgb8_over_white(DynamicImage::ImageRgba16(rgba));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [0, 128, 255]);
    }

    #[test]
    fn square_takes_the_centre() {
        // 6x2: columns 0,1 and 4,5 are cropped away, 2 and 3 kept.
        let rgb = RgbImage::from_fn(6, 2, |x, _| image::Rgb([x as u8 * 10, 0, 0]));
        let sq = square(&rgb, 2);
        assert_eq!(sq.dimensions(), (2, 2));
        assert_eq!(sq.get_pixel(0, 0).0, [20, 0, 0]);
        assert_eq!(sq.get_pixel(1, 1).0, [30, 0, 0]);
    }
}
