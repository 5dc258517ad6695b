//! `atelier trainset` as a user runs it: a folder of 200 image files made here
//! (procedural PNG and JPEG files, exact and pixel duplicates, two broken files,
//! a CMYK JPEG from `fixtures/`, a 16-bit PNG, an animated GIF, grayscale and RGBA
//! files, a text file) imported with every count, reject, duplicate and conversion
//! named; a re-import that changes nothing; `check` finding each kind of damage;
//! `--link`; `ls` and `show`; and bad input refused with its exit code.

mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Cursor;
use std::path::Path;
use std::process::Output;
use std::time::SystemTime;

use atelier_worker::trainset::TrainsetManifest;
use image::codecs::gif::{GifEncoder, Repeat};
use image::{DynamicImage, Frame, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use process::{atelier, repo, stderr};
use serde_json::Value;
use sha2::{Digest, Sha256};

const PAINTINGS: usize = 110;
const PHOTOS: usize = 66;
/// Every tenth painting has a caption.
const CAPTIONS: usize = 11;

/// A picture of gradients and a checker, different for every seed.
fn pattern(seed: u32) -> RgbImage {
    let (w, h) = (24 + (seed % 3) * 8, 16 + (seed % 2) * 8);
    RgbImage::from_fn(w, h, |x, y| {
        let checker = if (x / 4 + y / 4 + seed).is_multiple_of(2) {
            50
        } else {
            0
        };
        Rgb([
            ((x * 7 + seed * 37) % 200 + checker) as u8,
            ((y * 11 + seed * 53) % 200 + checker) as u8,
            (((x + y) * 5 + seed * 71) % 200 + checker) as u8,
        ])
    })
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn png(image: RgbImage) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(image), ImageFormat::Png)
}

fn jpeg(image: RgbImage) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(image), ImageFormat::Jpeg)
}

fn painting(i: usize) -> String {
    format!("paintings/p-{i:03}.png")
}

fn photo(i: usize) -> String {
    format!("photos/j-{i:03}.jpg")
}

/// A solid 16x16 frame.
fn frame(colour: [u8; 4]) -> Frame {
    Frame::new(RgbaImage::from_pixel(16, 16, Rgba(colour)))
}

/// Writes the 200 image files and one text file; see the constants below for what
/// `import` must make of them.
fn make_source(root: &Path) {
    for i in 0..PAINTINGS {
        write(root, &painting(i), &png(pattern(i as u32)));
        if i % 10 == 0 {
            write(
                root,
                &painting(i).replace(".png", ".txt"),
                format!("  painting {i}\n").as_bytes(),
            );
        }
    }
    for i in 0..PHOTOS {
        write(root, &photo(i), &jpeg(pattern(1000 + i as u32)));
    }
    for i in 0..2u32 {
        let rgba = RgbaImage::from_fn(20, 20, |x, y| {
            Rgba([200, (x * 10) as u8, 40 * i as u8, (y * 12) as u8])
        });
        write(
            root,
            &format!("alpha/a-{i}.png"),
            &encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
        );
        let gray = ImageBuffer::from_fn(20, 12, |x, y| Luma([(x * 9 + y * 3 + i * 50) as u8]));
        write(
            root,
            &format!("gray/g-{i}.png"),
            &encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Png),
        );
    }
    let gray = ImageBuffer::from_fn(20, 12, |x, _| Luma([(x * 12) as u8]));
    write(
        root,
        "gray/gj-0.jpg",
        &encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Jpeg),
    );
    write(
        root,
        "deep.png",
        &encode(&DynamicImage::ImageRgb16(deep()), ImageFormat::Png),
    );
    let mut gif = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut gif);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        encoder
            .encode_frames([frame([255, 0, 0, 255]), frame([0, 0, 255, 255])])
            .unwrap();
    }
    write(root, "anim.gif", &gif);
    let cmyk = fs::read(repo().join("cli/tests/fixtures/cmyk.jpg")).unwrap();
    write(root, "cmyk.jpg", &cmyk);

    let mut broken = b"\x89PNG\r\n\x1a\n".to_vec();
    broken.extend((0..200u32).map(|i| (i * 7 % 251) as u8));
    write(root, "broken.png", &broken);
    write(
        root,
        "not-an-image.jpg",
        b"this is a text file with a .jpg name\n",
    );
    write(root, "notes.txt", b"where these pictures came from\n");

    // Exact copies, in a folder that sorts after the originals.
    for rel in ["anim.gif", "photos/j-001.jpg", "photos/j-002.jpg"]
        .into_iter()
        .map(String::from)
        .chain((1..=5).map(painting))
    {
        let name = rel.rsplit('/').next().unwrap();
        write(
            root,
            &format!("zz-copies/{name}"),
            &fs::read(root.join(&rel)).unwrap(),
        );
    }
    // Other bytes, the same pixels.
    let opaque =
        |i: u32| DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(pattern(i)).into_rgba8());
    write(
        root,
        "zz-pixels/p-010-rgba.png",
        &encode(&opaque(10), ImageFormat::Png),
    );
    write(
        root,
        "zz-pixels/p-011-rgba.png",
        &encode(&opaque(11), ImageFormat::Png),
    );
    write(
        root,
        "zz-pixels/p-012.bmp",
        &encode(&DynamicImage::ImageRgb8(pattern(12)), ImageFormat::Bmp),
    );
    write(
        root,
        "zz-pixels/p-013.tiff",
        &encode(&DynamicImage::ImageRgb8(pattern(13)), ImageFormat::Tiff),
    );
    let decoded = image::load_from_memory(&fs::read(root.join(photo(5))).unwrap())
        .unwrap()
        .into_rgb8();
    write(root, "zz-pixels/j-005.png", &png(decoded));
    let g0 = image::open(root.join("gray/g-0.png")).unwrap().into_rgb8();
    write(root, "zz-pixels/g-0-as-rgb.png", &png(g0));
}

/// 16-bit RGB whose values do not all divide by 257.
fn deep() -> ImageBuffer<Rgb<u16>, Vec<u16>> {
    ImageBuffer::from_fn(10, 6, |x, y| {
        Rgb([x as u16 * 6000, y as u16 * 9000 + 128, 65535])
    })
}

/// (source file, stored as, what it was), in source order.
const CONVERTED: &[(&str, &str, &str)] = &[
    ("alpha/a-0.png", "alpha__a-0.png", "RGBA PNG"),
    ("alpha/a-1.png", "alpha__a-1.png", "RGBA PNG"),
    ("anim.gif", "anim.png", "GIF, first of several frames"),
    ("cmyk.jpg", "cmyk.png", "CMYK JPEG"),
    ("deep.png", "deep.png", "16-bit RGB PNG"),
    ("gray/g-0.png", "gray__g-0.png", "grayscale PNG"),
    ("gray/g-1.png", "gray__g-1.png", "grayscale PNG"),
    ("gray/gj-0.jpg", "gray__gj-0.png", "grayscale JPEG"),
];

/// (file, same as, same what), in source order.
const DUPLICATES: &[(&str, &str, &str)] = &[
    ("zz-copies/anim.gif", "anim.gif", "bytes"),
    ("zz-copies/j-001.jpg", "photos/j-001.jpg", "bytes"),
    ("zz-copies/j-002.jpg", "photos/j-002.jpg", "bytes"),
    ("zz-copies/p-001.png", "paintings/p-001.png", "bytes"),
    ("zz-copies/p-002.png", "paintings/p-002.png", "bytes"),
    ("zz-copies/p-003.png", "paintings/p-003.png", "bytes"),
    ("zz-copies/p-004.png", "paintings/p-004.png", "bytes"),
    ("zz-copies/p-005.png", "paintings/p-005.png", "bytes"),
    ("zz-pixels/g-0-as-rgb.png", "gray/g-0.png", "pixels"),
    ("zz-pixels/j-005.png", "photos/j-005.jpg", "pixels"),
    ("zz-pixels/p-010-rgba.png", "paintings/p-010.png", "pixels"),
    ("zz-pixels/p-011-rgba.png", "paintings/p-011.png", "pixels"),
    ("zz-pixels/p-012.bmp", "paintings/p-012.png", "pixels"),
    ("zz-pixels/p-013.tiff", "paintings/p-013.png", "pixels"),
];

/// (file, a piece of the decoder's message).
const REJECTED: &[(&str, &str)] = &[("broken.png", "Png"), ("not-an-image.jpg", "")];

/// Every file `images/` must hold after the import.
fn expected_files() -> BTreeSet<String> {
    let mut files: BTreeSet<String> = CONVERTED.iter().map(|c| c.1.to_string()).collect();
    for i in 0..PAINTINGS {
        files.insert(painting(i).replace('/', "__"));
        if i % 10 == 0 {
            files.insert(format!("paintings__p-{i:03}.txt"));
        }
    }
    files.extend((0..PHOTOS).map(|i| photo(i).replace('/', "__")));
    files
}

fn run(args: &[&str]) -> Output {
    atelier(args)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn import(source: &Path, into: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "trainset",
        "import",
        source.to_str().unwrap(),
        "--name",
        "mixed",
        "--into",
        into.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// Name -> (sha256, modification time) of every file in `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, (String, SystemTime)> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let modified = e.metadata().unwrap().modified().unwrap();
            (name, (sha256(&e.path()), modified))
        })
        .collect()
}

fn rgb_png(path: &Path) -> RgbImage {
    let bytes = fs::read(path).unwrap();
    assert_eq!(
        image::guess_format(&bytes).unwrap(),
        ImageFormat::Png,
        "{}",
        path.display()
    );
    match image::load_from_memory(&bytes).unwrap() {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => panic!("{} is {:?}, not RGB8", path.display(), other.color()),
    }
}

fn assert_near(actual: [u8; 3], expected: [u8; 3], tolerance: u8, what: &str) {
    for c in 0..3 {
        assert!(
            actual[c].abs_diff(expected[c]) <= tolerance,
            "{what}: {actual:?}, expected {expected:?} within {tolerance}"
        );
    }
}

#[test]
fn import_of_200_files_names_every_outcome_and_a_reimport_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let sets = tmp.path().join("sets");
    make_source(&source);
    let image_files = walk(&source)
        .iter()
        .filter(|f| !f.ends_with(".txt"))
        .count();
    assert_eq!(image_files, 200, "the source must hold 200 image files");

    let report = json(&import(
        &source,
        &sets,
        &["--json", "--token", "<mixed-style>"],
    ));
    assert_eq!(report["found"], 200);
    assert_eq!(report["images"], 184);
    assert_eq!(report["captions"], CAPTIONS);
    assert_eq!(report["changed"], true);
    assert_eq!(report["ignored"], serde_json::json!(["notes.txt"]));
    let converted: Vec<(String, String, String)> = report["converted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_string();
            (s("file"), s("stored_as"), s("from"))
        })
        .collect();
    let expected: Vec<(String, String, String)> = CONVERTED
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(converted, expected);
    let duplicates: Vec<(&str, &str, &str)> = report["duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["file"].as_str().unwrap(),
                d["same_as"].as_str().unwrap(),
                d["same"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(duplicates, DUPLICATES);
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), REJECTED.len());
    for (r, (file, piece)) in rejected.iter().zip(REJECTED) {
        assert_eq!(r["file"], *file);
        let reason = r["reason"].as_str().unwrap();
        assert!(
            !reason.is_empty() && reason.contains(piece),
            "{file}: {reason}"
        );
    }
    // Every stored file was new.
    assert_eq!(report["written"].as_array().unwrap().len(), 184 + CAPTIONS);
    assert_eq!(report["unchanged"], 0);

    let trainset = sets.join("mixed");
    let images = trainset.join("images");
    let stored: BTreeSet<String> = walk(&images).into_iter().collect();
    assert_eq!(stored, expected_files());

    // Files that needed nothing are the source's bytes; the rest are RGB8 PNG.
    for i in [0, 57, PAINTINGS - 1] {
        let name = painting(i).replace('/', "__");
        assert_eq!(
            sha256(&images.join(&name)),
            sha256(&source.join(painting(i)))
        );
    }
    for i in [0, PHOTOS - 1] {
        let name = photo(i).replace('/', "__");
        assert_eq!(sha256(&images.join(&name)), sha256(&source.join(photo(i))));
    }
    for (_, stored_as, _) in CONVERTED {
        rgb_png(&images.join(stored_as));
    }
    let cmyk = rgb_png(&images.join("cmyk.png"));
    assert_near(cmyk.get_pixel(3, 8).0, [255, 0, 0], 12, "CMYK red half");
    assert_near(cmyk.get_pixel(20, 8).0, [0, 0, 255], 12, "CMYK blue half");
    let deep_png = rgb_png(&images.join("deep.png"));
    for (x, y, p) in deep().enumerate_pixels() {
        let expected = p.0.map(|v| ((u32::from(v) + 128) / 257) as u8);
        assert_eq!(deep_png.get_pixel(x, y).0, expected, "16-bit ({x}, {y})");
    }
    let anim = rgb_png(&images.join("anim.png"));
    assert_near(
        anim.get_pixel(8, 8).0,
        [255, 0, 0],
        8,
        "the GIF's first frame",
    );
    let alpha = rgb_png(&images.join("alpha__a-0.png"));
    // (200, 0, 0) at alpha 0 is the white page; at alpha 228 it shows through.
    assert_eq!(alpha.get_pixel(0, 0).0, [255, 255, 255]);
    assert_near(
        alpha.get_pixel(0, 19).0,
        [206, 27, 27],
        1,
        "alpha over white",
    );
    assert_eq!(
        fs::read_to_string(images.join("paintings__p-030.txt")).unwrap(),
        "painting 30\n"
    );

    // The manifest: counts, and a sha256 per stored file that matches it.
    let manifest_path = trainset.join("trainset.toml");
    let manifest_bytes = fs::read(&manifest_path).unwrap();
    let manifest = TrainsetManifest::load(&trainset).unwrap();
    assert_eq!(manifest.token.as_deref(), Some("<mixed-style>"));
    let record = manifest.import.as_ref().unwrap();
    assert_eq!(
        (record.found, record.images, record.captions),
        (200, 184, CAPTIONS)
    );
    assert_eq!(
        (
            record.converted.len(),
            record.rejected.len(),
            record.duplicates.len()
        ),
        (8, 2, 14)
    );
    assert_eq!(manifest.files.len(), 184);
    for f in &manifest.files {
        assert_eq!(sha256(&images.join(&f.path)), f.sha256, "{}", f.path);
        if let Some(caption) = &f.caption_sha256 {
            assert_eq!(sha256(&images.join(f.caption_path())), *caption);
        }
    }

    // Again, in words: the same report, and nothing written.
    let before = snapshot(&images);
    let text = ok(&import(&source, &sets, &[]));
    for (file, stored_as, from) in CONVERTED {
        assert!(
            text.contains(&format!("converted `{file}` ({from}) -> `{stored_as}`")),
            "{text}"
        );
    }
    for (file, _) in REJECTED {
        assert!(text.contains(&format!("rejected `{file}`: ")), "{text}");
    }
    for (file, same_as, same) in DUPLICATES {
        let line = format!("duplicate `{file}`: same {same} as `{same_as}`");
        assert!(text.contains(&line), "{text}");
    }
    assert!(text.contains("ignored `notes.txt`"), "{text}");
    assert!(
        text.contains("200 image files in `") && text.contains(": 184 stored (8 converted, 11 with captions), 2 rejected, 14 duplicates; 1 other files ignored"),
        "{text}"
    );
    assert!(text.contains("nothing changed: `"), "{text}");
    assert_eq!(snapshot(&images), before, "a re-import rewrote files");
    assert_eq!(fs::read(&manifest_path).unwrap(), manifest_bytes);
    let again = json(&import(&source, &sets, &["--json"]));
    assert_eq!(again["changed"], false);
    assert_eq!(again["written"], serde_json::json!([]));
    assert_eq!(again["unchanged"], 184 + CAPTIONS);
    assert_eq!(fs::read(&manifest_path).unwrap(), manifest_bytes);

    // `check` passes, then names a changed, a deleted, a broken and an extra file.
    let dir = sets.to_str().unwrap();
    let clean = ok(&run(&["trainset", "check", "mixed", "--dir", dir]));
    assert!(clean.contains("all 195 files match"), "{clean}");
    fs::write(images.join("paintings__p-003.png"), png(pattern(500))).unwrap();
    fs::remove_file(images.join("photos__j-010.jpg")).unwrap();
    fs::remove_file(images.join("paintings__p-020.txt")).unwrap();
    let truncated = fs::read(images.join("paintings__p-004.png")).unwrap();
    fs::write(
        images.join("paintings__p-004.png"),
        &truncated[..truncated.len() / 2],
    )
    .unwrap();
    fs::write(images.join("stray.png"), png(pattern(501))).unwrap();
    let out = run(&["trainset", "check", "mixed", "--dir", dir, "--json"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checked"], 195);
    assert_eq!(
        report["missing"],
        serde_json::json!(["paintings__p-020.txt", "photos__j-010.jpg"])
    );
    assert_eq!(report["changed"].as_array().unwrap().len(), 1);
    assert_eq!(report["changed"][0]["file"], "paintings__p-003.png");
    assert_eq!(report["unreadable"].as_array().unwrap().len(), 1);
    assert_eq!(report["unreadable"][0]["file"], "paintings__p-004.png");
    assert_eq!(report["extra"], serde_json::json!(["stray.png"]));
    let out = run(&["trainset", "check", "mixed", "--dir", dir]);
    assert_eq!(out.status.code(), Some(7));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "missing `photos__j-010.jpg`",
        "missing `paintings__p-020.txt`",
        "changed `paintings__p-003.png`: sha256 is ",
        "unreadable `paintings__p-004.png`: ",
        "extra `stray.png`",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert!(
        stderr(&out).contains("trainset `mixed` differs from its trainset.toml: 2 missing, 1 changed, 1 unreadable, 1 extra"),
        "{}",
        stderr(&out)
    );

    // A re-import repairs it, and leaves the file no import wrote.
    let repaired = json(&import(&source, &sets, &["--json"]));
    assert_eq!(repaired["changed"], true);
    let written: BTreeSet<&str> = repaired["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(
        written,
        BTreeSet::from([
            "paintings__p-003.png",
            "paintings__p-004.png",
            "paintings__p-020.txt",
            "photos__j-010.jpg"
        ])
    );
    assert_eq!(repaired["foreign"], serde_json::json!(["stray.png"]));
    assert_eq!(fs::read(&manifest_path).unwrap(), manifest_bytes);
}

/// The committed demo manifest lists the committed demo images, hash for hash
/// (regenerating them means importing them again).
#[test]
fn the_committed_demo_set_checks_clean() {
    let dir = repo().join("trainsets");
    let out = run(&["trainset", "check", "demo", "--dir", dir.to_str().unwrap()]);
    assert!(ok(&out).contains("all 24 files match"));
}

#[test]
fn ls_and_show_report_counts_status_and_rejects() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let sets = tmp.path().join("sets");
    for i in 0..3 {
        write(&source, &format!("p-{i}.png"), &png(pattern(i)));
    }
    write(&source, "bad.png", b"not a png");
    ok(&import(
        &source,
        &sets,
        &["--token", "<m>", "--resolution", "256"],
    ));
    // A hand-written set with no images yet, as the study's are.
    fs::create_dir_all(sets.join("monet")).unwrap();
    fs::write(
        sets.join("monet/trainset.toml"),
        "name = \"monet\"\ntoken = \"<monet-style>\"\nexpected_images = 1365\n",
    )
    .unwrap();
    let dir = sets.to_str().unwrap();

    let listed = json(&run(&["trainset", "ls", "--dir", dir, "--json"]));
    let rows: Vec<(&str, u64, Option<u64>, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["found"].as_u64().unwrap(),
                s["expected"].as_u64(),
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("mixed", 3, None, "ok"),
            ("monet", 0, Some(1365), "no_images")
        ]
    );
    let table = ok(&run(&["trainset", "ls", "--dir", dir]));
    assert!(
        table.contains("<monet-style>") && table.contains("0 / 1365"),
        "{table}"
    );
    assert!(table.contains("3 / -") && table.contains("256"), "{table}");

    let shown = ok(&run(&["trainset", "show", "mixed", "--dir", dir]));
    assert!(shown.contains("token       <m>"), "{shown}");
    assert!(shown.contains("rejected    `bad.png`: "), "{shown}");
    assert!(shown.contains("4 image files, 3 stored"), "{shown}");
    let shown = json(&run(&["trainset", "show", "monet", "--dir", dir, "--json"]));
    assert_eq!(shown["manifest"]["expected_images"], 1365);
    assert_eq!(shown["status_line"], "no images");

    // A manifest with a wrong value: the file, line and field are named.
    fs::write(
        sets.join("monet/trainset.toml"),
        "name = \"monet\"\ntoken = \"<monet-style>\"\nresolution = \"large\"\n",
    )
    .unwrap();
    let out = run(&["trainset", "show", "monet", "--dir", dir]);
    assert_eq!(out.status.code(), Some(3));
    let message = stderr(&out);
    assert!(
        message.contains("monet/trainset.toml`, line 3, field `resolution`: invalid type"),
        "{message}"
    );
    let out = run(&["trainset", "ls", "--dir", dir]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid trainset.toml"));
    assert!(
        stderr(&out).contains("line 3, field `resolution`"),
        "{}",
        stderr(&out)
    );
    let out = run(&["trainset", "check", "monet", "--dir", dir]);
    assert_eq!(out.status.code(), Some(3));
}

#[cfg(unix)]
#[test]
fn link_imports_point_at_the_source_and_a_source_change_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let sets = tmp.path().join("sets");
    for i in 0..3 {
        write(&source, &format!("p-{i}.png"), &png(pattern(i)));
    }
    let gray = ImageBuffer::from_pixel(8, 8, Luma([90u8]));
    write(
        &source,
        "g.png",
        &encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Png),
    );
    let report = json(&import(&source, &sets, &["--link", "--json"]));
    assert_eq!(report["linked"], true);
    let images = sets.join("mixed/images");
    for i in 0..3 {
        let link = images.join(format!("p-{i}.png"));
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_link(&link).unwrap(),
            source.join(format!("p-{i}.png")).canonicalize().unwrap()
        );
    }
    // A converted image cannot be a link.
    assert!(fs::symlink_metadata(images.join("g.png"))
        .unwrap()
        .is_file());
    let dir = sets.to_str().unwrap();
    ok(&run(&["trainset", "check", "mixed", "--dir", dir]));
    assert_eq!(
        json(&import(&source, &sets, &["--link", "--json"]))["changed"],
        false
    );

    // Copies replace the links; an image gone from the source leaves the trainset.
    fs::remove_file(source.join("p-1.png")).unwrap();
    let report = json(&import(&source, &sets, &["--json"]));
    assert_eq!(report["removed"], serde_json::json!(["p-1.png"]));
    assert_eq!(report["written"], serde_json::json!(["p-0.png", "p-2.png"]));
    assert!(fs::symlink_metadata(images.join("p-0.png"))
        .unwrap()
        .is_file());
    assert_eq!(walk(&images), ["g.png", "p-0.png", "p-2.png"]);
    ok(&run(&["trainset", "check", "mixed", "--dir", dir]));
}

#[test]
fn bad_input_is_refused_with_its_exit_code_and_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let sets = tmp.path().join("sets");
    write(&source, "p.png", &png(pattern(1)));

    let out = import(&tmp.path().join("nowhere"), &sets, &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("nowhere` does not exist"),
        "{}",
        stderr(&out)
    );

    let cases: &[(&[&str], &str)] = &[
        (
            &["--resolution", "500"],
            "--resolution: 500 is not a multiple of 8",
        ),
        (
            &["--token", "two words"],
            "--token: `two words` is not one word",
        ),
        (
            &["--caption-template", "a {} painting"],
            "--caption-template: needs a token",
        ),
        (
            &["--token", "<t>", "--caption-template", "a painting"],
            "has no `{}`",
        ),
    ];
    for (flags, message) in cases {
        let out = import(&source, &sets, flags);
        assert_eq!(out.status.code(), Some(3), "{flags:?}");
        assert!(
            stderr(&out).contains(message),
            "{flags:?}: {}",
            stderr(&out)
        );
    }
    let out = run(&[
        "trainset",
        "import",
        source.to_str().unwrap(),
        "--name",
        "../up",
        "--into",
        sets.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("--name: `../up` is not a plain folder name"));

    // Importing a folder into itself would read its own output next time.
    let out = import(tmp.path(), &sets, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("overlap"), "{}", stderr(&out));

    let empty = tmp.path().join("empty");
    write(&empty, "broken.png", b"\x89PNG\r\n\x1a\nnothing");
    let out = import(&empty, &sets, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("no usable images in `")
            && stderr(&out).contains("1 image files found, 1 rejected"),
        "{}",
        stderr(&out)
    );
    assert!(!sets.exists(), "a refused import wrote files");
}

/// Every non-hidden file under `dir`, as sorted relative paths.
fn walk(dir: &Path) -> Vec<String> {
    fn go(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if fs::metadata(e.path()).map(|m| m.is_dir()).unwrap_or(false) {
                go(&e.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    go(dir, "", &mut out);
    out.sort();
    out
}
