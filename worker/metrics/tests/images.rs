//! Reading images and the [-1, 1] tensors.

mod common;

use atelier_metrics::images::{load_rgb, to_signed_tensor};
use atelier_metrics::MetricsError;
use common::{fixture, TestBackend};
use image::{Rgb, RgbImage};

#[test]
fn values_are_x_over_127_5_minus_1_in_nchw() {
    let mut a = RgbImage::new(2, 1);
    a.put_pixel(0, 0, Rgb([0, 255, 51]));
    a.put_pixel(1, 0, Rgb([128, 1, 254]));
    let b = RgbImage::from_pixel(2, 1, Rgb([10, 20, 30]));
    let t = to_signed_tensor::<TestBackend>(&[a, b], &Default::default()).unwrap();
    assert_eq!(t.dims(), [2, 3, 1, 2]);
    let v: Vec<f32> = t.into_data().convert::<f32>().into_vec().unwrap();
    let s = |x: u8| x as f32 / 127.5 - 1.0;
    assert_eq!(
        v,
        [0, 128, 255, 1, 51, 254, 10, 10, 20, 20, 30, 30]
            .map(s)
            .to_vec()
    );
    assert_eq!(v[0], -1.0);
    assert_eq!(v[2], 1.0);
}

#[test]
fn images_of_different_sizes_name_both_sizes() {
    let images = [
        RgbImage::new(64, 48),
        RgbImage::new(64, 48),
        RgbImage::new(32, 40),
    ];
    let err = to_signed_tensor::<TestBackend>(&images, &Default::default()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("image 0 is 64x48") && message.contains("image 2 is 32x40"),
        "{message}"
    );
}

#[test]
fn an_empty_list_is_refused() {
    let err = to_signed_tensor::<TestBackend>(&[], &Default::default()).unwrap_err();
    assert!(matches!(err, MetricsError::Empty("images")));
    assert_eq!(err.to_string(), "no images given");
}

#[test]
fn corrupt_and_missing_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\nthis is not a picture").unwrap();
    let truncated = dir.path().join("truncated.png");
    let png = std::fs::read(fixture("lpips/pair07_a.png")).unwrap();
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let unknown = dir.path().join("unknown.bin");
    std::fs::write(&unknown, b"plain text").unwrap();
    for path in [&garbage, &truncated, &unknown] {
        let err = load_rgb(path).unwrap_err();
        let message = err.to_string();
        eprintln!("{message}");
        assert!(matches!(err, MetricsError::Image { .. }), "{message}");
        assert!(
            message.contains(&format!("`{}`", path.display())),
            "{message}"
        );
    }
    let missing = dir.path().join("missing.png");
    let message = load_rgb(&missing).unwrap_err().to_string();
    assert!(
        message.contains(&format!("`{}`", missing.display())),
        "{message}"
    );
}

#[test]
fn a_png_loads_with_its_size() {
    let image = load_rgb(&fixture("lpips/pair09_a.png")).unwrap();
    assert_eq!(image.dimensions(), (90, 45));
}
