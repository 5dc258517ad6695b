//! The `prepare` job on `tests/fixtures/trainset_mixed` (written by
//! `tools/make_image_fixtures.py`, whose docstring says what each file is for).

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};

use atelier_proto::kinds::PrepareParams;
use atelier_worker::prepare::{
    self, Duplicate, Manifest, PrepareError, PrepareEvent, PreparedDataset, DATASET_FILE, FORMAT,
    HOLDOUT_FILE, HOLDOUT_MANIFEST_FILE, MANIFEST_FILE,
};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const RES: u32 = 32;

/// Packed images of the fixture, in order.
const PACKED: &[&str] = &[
    "cmyk.jpg",
    "gray.jpg",
    "gray16.png",
    "leaves.webp",
    "mislabeled.jpg",
    "more/tile.bmp",
    "more/tile.tiff",
    "palette.gif",
    "photo.png",
    "rgba.png",
    "rotated.jpg",
    "scene.png",
];
/// Files with an image extension: packed, rejected (`broken.png`) and duplicates.
const IMAGE_FILES: usize = 15;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trainset_mixed")
}

fn params(trainset: &Path) -> PrepareParams {
    PrepareParams {
        trainset: trainset.display().to_string(),
        resolution: RES,
        dedupe: true,
        min_images: 1,
        strict: false,
        holdout: 0,
        include: Vec::new(),
    }
}

struct Run {
    result: Result<PreparedDataset, PrepareError>,
    events: Vec<PrepareEvent>,
    out: TempDir,
}

fn run_with(params: &PrepareParams, cancelled: &dyn Fn() -> bool) -> Run {
    let out = TempDir::new().unwrap();
    let mut events = Vec::new();
    let result = prepare::prepare(params, out.path(), cancelled, &mut |e| events.push(e));
    Run {
        result,
        events,
        out,
    }
}

fn run(params: &PrepareParams) -> Run {
    run_with(params, &|| false)
}

fn logs(events: &[PrepareEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            PrepareEvent::Log(line) => Some(line.as_str()),
            PrepareEvent::Progress { .. } => None,
        })
        .collect()
}

/// The packed tensor, read back with the safetensors crate.
struct Packed {
    bytes: Vec<u8>,
}

impl Packed {
    fn read(dataset: &Path) -> Self {
        Self {
            bytes: fs::read(dataset).unwrap(),
        }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    /// RGB of pixel (`x`, `y`) of the image packed from `file`.
    fn pixel(&self, manifest: &Manifest, file: &str, x: u32, y: u32) -> [u8; 3] {
        let index = manifest
            .images
            .iter()
            .find(|image| image.file == file)
            .unwrap_or_else(|| panic!("{file} is not packed"))
            .index;
        let r = manifest.resolution as usize;
        let tensors = self.tensors();
        let data = tensors.tensor("images").unwrap().data();
        let at = ((index * r + y as usize) * r + x as usize) * 3;
        [data[at], data[at + 1], data[at + 2]]
    }
}

fn assert_near(actual: [u8; 3], expected: [u8; 3], tolerance: u8, what: &str) {
    let close = actual
        .iter()
        .zip(expected)
        .all(|(&a, e)| a.abs_diff(e) <= tolerance);
    assert!(
        close,
        "{what}: got {actual:?}, expected {expected:?} ± {tolerance}"
    );
}

/// Files of `dir` (recursively), relative, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                found.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found.sort();
    found
}

/// Copies the fixture's images (flat list of relative paths) into a fresh folder.
fn copy_images(files: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new().unwrap();
    let src = fixture().join("images");
    for (from, to) in files {
        let to = dir.path().join(to);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(src.join(from), to).unwrap();
    }
    dir
}

#[test]
fn mixed_trainset_is_packed_rejected_and_deduplicated() {
    let run = run(&params(&fixture()));
    let prepared = run.result.unwrap();
    let manifest = &prepared.manifest;

    let files: Vec<&str> = manifest.images.iter().map(|i| i.file.as_str()).collect();
    assert_eq!(files, PACKED);
    assert_eq!(manifest.count, PACKED.len());
    assert_eq!(
        manifest.images.iter().map(|i| i.index).collect::<Vec<_>>(),
        (0..PACKED.len()).collect::<Vec<_>>()
    );

    assert_eq!(manifest.rejected.len(), 1);
    assert_eq!(manifest.rejected[0].file, "broken.png");
    assert!(!manifest.rejected[0].reason.is_empty());

    assert_eq!(
        manifest.duplicates,
        vec![
            // Same bytes.
            Duplicate {
                file: "photo_copy.png".into(),
                same_as: "photo.png".into(),
            },
            // Same pixels, another format.
            Duplicate {
                file: "scene.webp".into(),
                same_as: "scene.png".into(),
            },
        ]
    );

    assert_eq!(manifest.format, FORMAT);
    assert_eq!(manifest.resolution, RES);
    assert_eq!(
        Path::new(&manifest.source),
        fixture().join("images").as_path()
    );
    assert_eq!(prepared.dataset, run.out.path().join(DATASET_FILE));
    assert_eq!(prepared.manifest_path, run.out.path().join(MANIFEST_FILE));
    // Nothing else is left in the output folder (no scratch files).
    assert_eq!(files_in(run.out.path()), vec![DATASET_FILE, MANIFEST_FILE]);
}

#[test]
fn manifest_records_captions_sizes_and_hashes() {
    let run = run(&params(&fixture()));
    let manifest = run.result.unwrap().manifest;
    for image in &manifest.images {
        let bytes = fs::read(fixture().join("images").join(&image.file)).unwrap();
        assert_eq!(
            image.sha256,
            hex::encode(Sha256::digest(&bytes)),
            "{}",
            image.file
        );
        let expected_size = if image.file == "rotated.jpg" {
            (24, 40) // as displayed, after the EXIF orientation
        } else {
            (40, 24)
        };
        assert_eq!((image.width, image.height), expected_size, "{}", image.file);
        let expected_caption =
            (image.file == "photo.png").then_some("a photo of a checkered gradient");
        assert_eq!(image.caption.as_deref(), expected_caption, "{}", image.file);
    }
}

#[test]
fn events_report_rejects_ignored_files_and_every_image() {
    let run = run(&params(&fixture()));
    run.result.unwrap();
    let logs = logs(&run.events);
    assert!(
        logs.iter()
            .any(|l| l.starts_with("rejected `broken.png`: ") && l.len() > 22),
        "{logs:#?}"
    );
    assert!(
        logs.contains(&"ignored 2 files that are not images or captions: `notes.md`, `orphan.txt`"),
        "{logs:#?}"
    );
    let progress: Vec<(usize, usize)> = run
        .events
        .iter()
        .filter_map(|e| match e {
            PrepareEvent::Progress { done, total } => Some((*done, *total)),
            PrepareEvent::Log(_) => None,
        })
        .collect();
    let expected: Vec<(usize, usize)> = (0..=IMAGE_FILES).map(|d| (d, IMAGE_FILES)).collect();
    assert_eq!(progress, expected);
}

#[test]
fn without_dedupe_duplicates_are_packed() {
    let run = run(&PrepareParams {
        dedupe: false,
        ..params(&fixture())
    });
    let manifest = run.result.unwrap().manifest;
    assert_eq!(manifest.count, PACKED.len() + 2);
    assert!(manifest.duplicates.is_empty());
    assert_eq!(manifest.rejected.len(), 1);
}

#[test]
fn tensor_is_u8_nhwc_with_manifest_metadata() {
    let run = run(&params(&fixture()));
    let prepared = run.result.unwrap();
    let packed = Packed::read(&prepared.dataset);

    let tensors = packed.tensors();
    assert_eq!(tensors.names(), vec!["images"]);
    let images = tensors.tensor("images").unwrap();
    assert_eq!(images.dtype(), Dtype::U8);
    let r = RES as usize;
    assert_eq!(images.shape(), &[PACKED.len(), r, r, 3]);
    assert_eq!(images.data().len(), PACKED.len() * r * r * 3);

    let (_, metadata) = SafeTensors::read_metadata(&packed.bytes).unwrap();
    let metadata = metadata.metadata().clone().unwrap();
    assert_eq!(metadata["format"], FORMAT);
    let embedded: Manifest = serde_json::from_str(&metadata["manifest"]).unwrap();
    assert_eq!(embedded, prepared.manifest);
}

#[test]
fn manifest_json_round_trips() {
    let run = run(&params(&fixture()));
    let prepared = run.result.unwrap();
    let text = fs::read_to_string(&prepared.manifest_path).unwrap();
    assert!(
        text.contains("\n  \"format\": \"atelier-dataset-v1\""),
        "not pretty: {text}"
    );
    let read: Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(read, prepared.manifest);
    let again: Manifest = serde_json::from_str(&serde_json::to_string(&read).unwrap()).unwrap();
    assert_eq!(again, read);
}

#[test]
fn output_is_byte_for_byte_deterministic() {
    let a = run(&params(&fixture()));
    let b = run(&params(&fixture()));
    let a = fs::read(a.result.unwrap().dataset).unwrap();
    let b = fs::read(b.result.unwrap().dataset).unwrap();
    assert!(a == b, "two runs on the same trainset differ");
}

#[test]
fn cmyk_jpeg_keeps_its_colour() {
    let run = run(&params(&fixture()));
    let prepared = run.result.unwrap();
    let packed = Packed::read(&prepared.dataset);
    // The file is C0 M255 Y255 K0 everywhere: red.
    for (x, y) in [(0, 0), (16, 16), (31, 31), (5, 27)] {
        assert_near(
            packed.pixel(&prepared.manifest, "cmyk.jpg", x, y),
            [255, 0, 0],
            6,
            &format!("cmyk.jpg at ({x}, {y})"),
        );
    }
}

#[test]
fn rgba_is_composited_over_white() {
    let run = run(&params(&fixture()));
    let prepared = run.result.unwrap();
    let packed = Packed::read(&prepared.dataset);
    // Left half transparent red: white, not red. Right half opaque blue.
    for y in [2, 16, 29] {
        assert_near(
            packed.pixel(&prepared.manifest, "rgba.png", 3, y),
            [255, 255, 255],
            2,
            "rgba.png transparent half",
        );
        assert_near(
            packed.pixel(&prepared.manifest, "rgba.png", 28, y),
            [0, 0, 255],
            2,
            "rgba.png opaque half",
        );
    }
}

#[test]
fn sixteen_bit_gray_becomes_rgb8() {
    let run = run(&params(&fixture()));
    let prepared = run.result.unwrap();
    let packed = Packed::read(&prepared.dataset);
    // Top half 0x4000 (64 in 8 bits), bottom half 0xC000 (191).
    for x in [0, 16, 31] {
        let top = packed.pixel(&prepared.manifest, "gray16.png", x, 3);
        let bottom = packed.pixel(&prepared.manifest, "gray16.png", x, 28);
        assert_near(top, [64, 64, 64], 1, "gray16.png top");
        assert_near(bottom, [191, 191, 191], 1, "gray16.png bottom");
        assert!(top[0] == top[1] && top[1] == top[2], "{top:?} is not gray");
    }
}

#[test]
fn exif_orientation_is_applied() {
    let run = run(&params(&fixture()));
    let prepared = run.result.unwrap();
    let packed = Packed::read(&prepared.dataset);
    // Stored left red / right blue, shown turned: top red / bottom blue.
    let top = packed.pixel(&prepared.manifest, "rotated.jpg", 16, 3);
    let bottom = packed.pixel(&prepared.manifest, "rotated.jpg", 16, 28);
    assert_near(top, [255, 0, 0], 8, "rotated.jpg top");
    assert_near(bottom, [0, 0, 255], 8, "rotated.jpg bottom");
}

#[test]
fn image_is_the_centre_square() {
    // At a resolution equal to the short side there is no resize: the packed pixels
    // are exactly the centre 24x24 of the 40x24 file.
    let run = run(&PrepareParams {
        resolution: 24,
        ..params(&fixture())
    });
    let prepared = run.result.unwrap();
    let packed = Packed::read(&prepared.dataset);
    let original = image::open(fixture().join("images/photo.png"))
        .unwrap()
        .into_rgb8();
    for (x, y) in [(0, 0), (23, 0), (11, 12), (23, 23)] {
        assert_eq!(
            packed.pixel(&prepared.manifest, "photo.png", x, y),
            original.get_pixel(x + 8, y).0,
            "photo.png at ({x}, {y})"
        );
    }
}

#[test]
fn strict_fails_naming_the_broken_file() {
    let run = run(&PrepareParams {
        strict: true,
        ..params(&fixture())
    });
    let err = run.result.unwrap_err();
    assert!(matches!(err, PrepareError::Decode { .. }), "{err:?}");
    let path = fixture().join("images/broken.png");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot decode `{}`: ", path.display())),
        "{message}"
    );
    assert!(
        files_in(run.out.path()).is_empty(),
        "left {:?}",
        files_in(run.out.path())
    );
}

#[test]
fn too_few_images_fails_with_the_counts() {
    let run = run(&PrepareParams {
        min_images: PACKED.len() as u32 + 1,
        ..params(&fixture())
    });
    let message = run.result.unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "only 12 usable images in `{}`, at least 13 required \
             (15 image files found: 1 rejected, 2 duplicates)",
            fixture().join("images").display()
        )
    );
    assert!(
        files_in(run.out.path()).is_empty(),
        "left {:?}",
        files_in(run.out.path())
    );

    // Exactly enough is fine.
    let run = self::run(&PrepareParams {
        min_images: PACKED.len() as u32,
        ..params(&fixture())
    });
    assert_eq!(run.result.unwrap().manifest.count, PACKED.len());
}

#[test]
fn missing_folder_and_file_are_clear_errors() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("no-such-trainset");
    let err = prepare::resolve_image_dir(&missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("trainset folder `{}` does not exist", missing.display())
    );
    let run = run(&params(&missing));
    assert_eq!(run.result.unwrap_err().to_string(), err.to_string());

    let file = dir.path().join("trainset.toml");
    fs::write(&file, "x").unwrap();
    assert_eq!(
        prepare::resolve_image_dir(&file).unwrap_err().to_string(),
        format!("trainset `{}` is not a folder", file.display())
    );

    // Hidden files do not count.
    let empty = dir.path().join("empty");
    fs::create_dir_all(empty.join(".cache")).unwrap();
    fs::write(empty.join(".DS_Store"), "x").unwrap();
    fs::write(empty.join(".cache/a.png"), "x").unwrap();
    assert_eq!(
        prepare::resolve_image_dir(&empty).unwrap_err().to_string(),
        format!("image folder `{}` holds no files", empty.display())
    );
}

#[test]
fn images_sub_folder_is_used_when_present() {
    assert_eq!(
        prepare::resolve_image_dir(&fixture()).unwrap(),
        fixture().join("images")
    );
    assert_eq!(
        prepare::resolve_image_dir(&fixture().join("images")).unwrap(),
        fixture().join("images")
    );
    // A trainset whose images sit in nested folders only is not empty.
    let dir = copy_images(&[("photo.png", "a/b/photo.png")]);
    assert_eq!(prepare::resolve_image_dir(dir.path()).unwrap(), dir.path());
}

#[test]
fn hidden_files_are_skipped_and_captions_paired_by_folder() {
    let dir = copy_images(&[
        ("photo.png", "a.png"),
        ("scene.png", ".hidden.png"),
        ("leaves.webp", ".git/c.webp"),
        ("gray.jpg", "sub/a.JPG"),
    ]);
    fs::write(dir.path().join("sub/a.txt"), "\n  sub caption \t\n").unwrap();
    fs::write(dir.path().join("a.txt"), "   \n").unwrap();
    let run = run(&params(dir.path()));
    let manifest = run.result.unwrap().manifest;
    let packed: Vec<(&str, Option<&str>)> = manifest
        .images
        .iter()
        .map(|i| (i.file.as_str(), i.caption.as_deref()))
        .collect();
    // An empty caption file is no caption.
    assert_eq!(
        packed,
        vec![("a.png", None), ("sub/a.JPG", Some("sub caption"))]
    );
    assert!(
        !logs(&run.events).iter().any(|l| l.starts_with("ignored")),
        "{:#?}",
        run.events
    );
}

#[test]
fn cancellation_stops_between_images() {
    let polls = Cell::new(0);
    let cancelled = || {
        polls.set(polls.get() + 1);
        polls.get() > 3
    };
    let run = run_with(&params(&fixture()), &cancelled);
    let err = run.result.unwrap_err();
    assert!(matches!(err, PrepareError::Cancelled), "{err:?}");
    assert_eq!(err.to_string(), "prepare was cancelled");
    assert_eq!(polls.get(), 4);
    let last_progress = run.events.iter().rev().find_map(|e| match e {
        PrepareEvent::Progress { done, .. } => Some(*done),
        PrepareEvent::Log(_) => None,
    });
    assert_eq!(last_progress, Some(3));
    assert!(
        files_in(run.out.path()).is_empty(),
        "left {:?}",
        files_in(run.out.path())
    );
}

#[test]
fn resolution_out_of_range_is_refused() {
    let run = run(&PrepareParams {
        resolution: 0,
        ..params(&fixture())
    });
    assert_eq!(
        run.result.unwrap_err().to_string(),
        "resolution 0 is out of range (8..=4096)"
    );
}

#[test]
fn unpack_gives_back_every_pixel_and_caption_in_packed_order() {
    let run = run(&params(&fixture()));
    let prepared = run.result.unwrap();
    let manifest = &prepared.manifest;
    let folder = TempDir::new().unwrap();
    let unpacked = prepare::unpack(&prepared.dataset, folder.path(), &|| false).unwrap();
    assert_eq!(&unpacked, manifest);

    let packed = Packed::read(&prepared.dataset);
    let tensors = packed.tensors();
    let data = tensors.tensor("images").unwrap().data();
    let image_len = (RES * RES * 3) as usize;
    let mut expected_files = Vec::new();
    for image in &manifest.images {
        let png = prepare::image_path(folder.path(), image.index);
        let name = png.file_name().unwrap().to_string_lossy().into_owned();
        expected_files.push(name.clone());
        let rgb = image::open(&png).unwrap().to_rgb8();
        assert_eq!(rgb.dimensions(), (RES, RES));
        assert_eq!(
            rgb.as_raw().as_slice(),
            &data[image.index * image_len..][..image_len],
            "{name} ({}) is the packed image",
            image.file
        );
        let txt = png.with_extension("txt");
        match &image.caption {
            Some(caption) => {
                assert_eq!(&fs::read_to_string(&txt).unwrap(), caption);
                expected_files.push(txt.file_name().unwrap().to_string_lossy().into_owned());
            }
            None => assert!(!txt.exists(), "{}", txt.display()),
        }
    }
    assert!(
        manifest.images.iter().any(|i| i.caption.is_some()),
        "the fixture has captions"
    );
    expected_files.sort();
    // Names sort in packed order, as the trainset reader sorts them.
    assert_eq!(files_in(folder.path()), expected_files);
}

#[test]
fn unpack_refuses_what_prepare_did_not_write() {
    let run = run(&params(&fixture()));
    let prepared = run.result.unwrap();
    let folder = TempDir::new().unwrap();
    // Cut short: the data no longer fills the tensor.
    let bytes = fs::read(&prepared.dataset).unwrap();
    let cut = folder.path().join("cut.safetensors");
    fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let err = prepare::unpack(&cut, &folder.path().join("a"), &|| false).unwrap_err();
    assert!(matches!(err, PrepareError::Dataset { .. }), "{err}");
    assert!(err.to_string().contains("cut.safetensors"), "{err}");
    // Another safetensors file.
    let other = folder.path().join("other.safetensors");
    let tensors = vec![(
        "x",
        safetensors::tensor::TensorView::new(Dtype::U8, vec![2], &[1u8, 2]).unwrap(),
    )];
    safetensors::serialize_to_file(tensors, None, &other).unwrap();
    let err = prepare::unpack(&other, &folder.path().join("b"), &|| false).unwrap_err();
    assert!(err.to_string().contains("format"), "{err}");
    // Cancelled.
    let err = prepare::unpack(&prepared.dataset, &folder.path().join("c"), &|| true).unwrap_err();
    assert!(matches!(err, PrepareError::Cancelled), "{err}");
}

#[test]
fn holdout_keeps_images_out_of_the_dataset_by_their_names() {
    let run = run(&PrepareParams {
        holdout: 3,
        ..params(&fixture())
    });
    let prepared = run.result.unwrap();
    let (holdout_path, holdout_manifest_path, held) = prepared.holdout.clone().unwrap();
    assert_eq!(holdout_path, run.out.path().join(HOLDOUT_FILE));
    assert_eq!(
        holdout_manifest_path,
        run.out.path().join(HOLDOUT_MANIFEST_FILE)
    );
    assert_eq!(held.count, 3);
    assert_eq!(prepared.manifest.count, PACKED.len() - 3);
    let held_files: Vec<&str> = held.images.iter().map(|i| i.file.as_str()).collect();
    eprintln!("held out: {held_files:?}");
    // Held-out images are packed first, so a copy of one is the duplicate left out
    // of training: `scene.webp` is held out and `scene.png`, the same pixels, is not
    // trained on.
    assert!(held_files.contains(&"scene.webp"), "{held_files:?}");
    assert!(prepared.manifest.duplicates.contains(&Duplicate {
        file: "scene.png".into(),
        same_as: "scene.webp".into(),
    }));
    let mut all: Vec<&str> = prepared
        .manifest
        .images
        .iter()
        .chain(&held.images)
        .map(|i| i.file.as_str())
        .collect();
    all.sort();
    let expected: Vec<&str> = PACKED
        .iter()
        .map(|f| if *f == "scene.png" { "scene.webp" } else { f })
        .collect();
    assert_eq!(all, expected);
    // The held-out file reads back like a dataset.
    let unpacked = TempDir::new().unwrap();
    let back = prepare::unpack(&holdout_path, unpacked.path(), &|| false).unwrap();
    assert_eq!(back, held);
    let logs = logs(&run.events).join("\n");
    assert!(logs.contains("held out 3 images for evaluation"), "{logs}");

    // The choice depends on the names only: the same three on a re-run, and the
    // same three with another file added to the folder.
    let again = self::run(&PrepareParams {
        holdout: 3,
        ..params(&fixture())
    });
    let again_held = again.result.unwrap().holdout.unwrap().2;
    assert_eq!(again_held, held);
    let folder = TempDir::new().unwrap();
    copy_dir(&fixture().join("images"), folder.path());
    image::RgbImage::from_pixel(40, 40, image::Rgb([1, 2, 3]))
        .save(folder.path().join("zz-extra.png"))
        .unwrap();
    let grown = self::run(&PrepareParams {
        holdout: 3,
        ..params(folder.path())
    });
    let grown_files: Vec<String> = grown
        .result
        .unwrap()
        .holdout
        .unwrap()
        .2
        .images
        .iter()
        .map(|i| i.file.clone())
        .collect();
    let held_files: Vec<String> = held.images.iter().map(|i| i.file.clone()).collect();
    let kept = held_files
        .iter()
        .filter(|f| grown_files.contains(f))
        .count();
    // One of the three may give way to the new file, no more.
    assert!(kept >= 2, "{held_files:?} -> {grown_files:?}");

    // Without `holdout` no file is written.
    let plain = self::run(&params(&fixture()));
    assert!(plain.result.unwrap().holdout.is_none());
    assert!(!plain.out.path().join(HOLDOUT_FILE).exists());
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn demo_trainset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainsets/demo")
}

#[test]
fn include_keeps_only_matching_images() {
    let run = run(&PrepareParams {
        include: vec!["dots-*".into(), "waves-3.*".into()],
        ..params(&demo_trainset())
    });
    let manifest = run.result.unwrap().manifest;
    let names: Vec<&str> = manifest.images.iter().map(|i| i.file.as_str()).collect();
    assert_eq!(
        names,
        [
            "dots-0.png",
            "dots-1.png",
            "dots-2.png",
            "dots-3.png",
            "waves-3.png"
        ]
    );
    assert!(
        logs(&run.events).contains(&"include [\"dots-*\", \"waves-3.*\"]: 5 of 12 image files"),
        "{:?}",
        logs(&run.events)
    );
}

#[test]
fn include_matching_nothing_is_an_error_naming_the_patterns() {
    let run = run(&PrepareParams {
        include: vec!["monet-*".into()],
        ..params(&demo_trainset())
    });
    let err = run.result.unwrap_err().to_string();
    assert!(
        err.starts_with(
            "params.include: include [\"monet-*\"] matches none of the 12 image files in"
        ),
        "{err}"
    );
}

#[test]
fn trainset_toml_captions_images_without_a_txt() {
    let dir = TempDir::new().unwrap();
    let images = dir.path().join("images");
    fs::create_dir_all(&images).unwrap();
    let demo = demo_trainset().join("images");
    for file in ["dots-0.png", "dots-1.png", "dots-1.txt"] {
        fs::copy(demo.join(file), images.join(file)).unwrap();
    }
    fs::write(
        dir.path().join("trainset.toml"),
        "name = \"x\"\ntoken = \"<x-style>\"\ncaption_template = \"a painting in the style of {}\"\n",
    )
    .unwrap();
    let run = run(&params(dir.path()));
    let manifest = run.result.unwrap().manifest;
    let captions: Vec<Option<&str>> = manifest
        .images
        .iter()
        .map(|i| i.caption.as_deref())
        .collect();
    // The .txt wins; the other image gets the manifest's caption.
    assert_eq!(
        captions,
        [
            Some("a painting in the style of <x-style>"),
            Some("a picture in the style of <dots-style>")
        ]
    );
    assert!(logs(&run.events).contains(
        &"captioned 1 images without a .txt from trainset.toml: `a painting in the style of <x-style>`"
    ));

    // A malformed manifest is an error naming it, not a silent default.
    fs::write(
        dir.path().join("trainset.toml"),
        "name = \"x\"\nresolution = 500\n",
    )
    .unwrap();
    let err = run_with(&params(dir.path()), &|| false)
        .result
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("trainset.toml") && err.contains("resolution"),
        "{err}"
    );
}
