//! The `eval` job's computation (`atelier_worker::eval::run`) on small hand-made
//! sample sets: what it measures, and its errors on bad input.

use std::path::{Path, PathBuf};

use atelier_metrics::lpips::LpipsNet;
use atelier_sd::weights::write_f32_safetensors;
use atelier_worker::eval::{self, EvalError, EvalSpec, Reference, SampleSet};
use atelier_worker::sample::{Provenance, Sample, SampleIndex, IMAGES_KEY};
use atelier_worker::train::Device;
use image::RgbImage;
use tempfile::TempDir;

const SIDE: u32 = 32;

/// The worker crate's folder, which holds the metrics crate (`metrics/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn picture(seed: u32) -> RgbImage {
    RgbImage::from_fn(SIDE, SIDE, |x, y| {
        let v = (x * 7 + y * 13 + seed * 31) % 256;
        image::Rgb([v as u8, ((x * y + seed * 5) % 256) as u8, (255 - v) as u8])
    })
}

/// [3, H, W] in [0, 1], exactly the 8-bit image.
fn chw(image: &RgbImage) -> Vec<f32> {
    let (w, h) = image.dimensions();
    let mut values = vec![0f32; (3 * w * h) as usize];
    for (x, y, p) in image.enumerate_pixels() {
        for c in 0..3 {
            values[(c * h * w + y * w + x) as usize] = p.0[c as usize] as f32 / 255.0;
        }
    }
    values
}

struct Setup {
    dir: TempDir,
    lpips: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = TempDir::new().unwrap();
        let lpips = dir.path().join("lpips_alex.safetensors");
        atelier_metrics::testing::write_test_weights(
            &lpips,
            LpipsNet::Alex,
            &repo().join("metrics/tests/fixtures/lpips/lin_alex.safetensors"),
        )
        .unwrap();
        Setup { dir, lpips }
    }

    fn references(&self, images: &[RgbImage]) -> Vec<Reference> {
        images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let png = self.dir.path().join(format!("ref{i}.png"));
                image.save(&png).unwrap();
                Reference {
                    file: format!("ref{i}.png"),
                    png,
                }
            })
            .collect()
    }

    fn samples(&self, name: &str, images: &[RgbImage]) -> SampleSet {
        let tensors = self.dir.path().join(format!("{name}.safetensors"));
        let values: Vec<f32> = images.iter().flat_map(chw).collect();
        write_f32_safetensors(
            &tensors,
            &[(
                IMAGES_KEY.to_string(),
                vec![images.len(), 3, SIDE as usize, SIDE as usize],
                values,
            )],
            &[],
        )
        .unwrap();
        SampleSet {
            job_id: 7,
            job_name: name.into(),
            index: SampleIndex {
                provenance: Provenance {
                    adapter: "lora".into(),
                    method: Some("lora".into()),
                    token: Some("<dots-style>".into()),
                    train_job: Some(3),
                    train_job_name: Some("lora".into()),
                },
                width: SIDE as usize,
                height: SIDE as usize,
                steps: 2,
                scheduler: "ddim".into(),
                guidance: 7.5,
                samples: (0..images.len())
                    .map(|i| Sample {
                        file: format!("samples/p00-k{i:02}.png"),
                        prompt: "a picture in the style of <dots-style>".into(),
                        prompt_index: 0,
                        seed: i as u64,
                    })
                    .collect(),
            },
            tensors,
        }
    }

    fn spec(&self, sets: Vec<SampleSet>, references: Vec<Reference>) -> EvalSpec {
        EvalSpec {
            net: LpipsNet::Alex,
            lpips_weights: self.lpips.clone(),
            clip_model: repo().join("metrics/tests/fixtures/tiny-clip"),
            device: Device::Cpu,
            batch: 4,
            sets,
            references,
        }
    }
}

fn run(spec: &EvalSpec) -> (Result<eval::EvalReport, EvalError>, Vec<String>) {
    let mut lines = Vec::new();
    let result = eval::run(spec, &|| false, &mut |l| lines.push(l), &mut |_, _, _| {});
    (result, lines)
}

#[test]
fn a_sample_equal_to_a_reference_is_at_distance_zero_from_it() {
    let s = Setup::new();
    let refs = [picture(1), picture(2), picture(3)];
    // Sample 0 is reference 2, pixel for pixel; sample 1 is new.
    let set = s.samples("sample-lora", &[refs[2].clone(), picture(9)]);
    let spec = s.spec(vec![set], s.references(&refs));
    let (report, lines) = run(&spec);
    let report = report.unwrap();
    assert_eq!(report.references, 3);
    assert_eq!(report.reference_files, ["ref0.png", "ref1.png", "ref2.png"]);
    let set = &report.sets[0];
    let [same, other] = &set.images[..] else {
        panic!("{set:#?}")
    };
    assert_eq!(same.nearest_reference, 2);
    assert!(same.lpips_nearest.abs() < 1e-6, "{}", same.lpips_nearest);
    assert!(same.lpips_pairwise > 0.0);
    assert!(other.lpips_nearest > 0.0);
    for image in &set.images {
        assert!(image.lpips_nearest <= image.lpips_pairwise);
        assert!((0.0..=100.0).contains(&image.clip_score));
    }
    assert_eq!(set.lpips_nearest.n, 2);
    let mean = (same.lpips_nearest + other.lpips_nearest) / 2.0;
    assert!((set.lpips_nearest.mean - mean).abs() < 1e-12);
    assert!(
        lines.iter().any(|l| l.contains("LPIPS nearest")),
        "{lines:?}"
    );
}

#[test]
fn references_of_another_size_are_resized_and_the_log_says_so() {
    let s = Setup::new();
    let big = RgbImage::from_fn(48, 48, |x, y| image::Rgb([x as u8 * 5, y as u8 * 5, 90]));
    let spec = s.spec(
        vec![s.samples("sample-lora", &[picture(4)])],
        s.references(&[big]),
    );
    let (report, lines) = run(&spec);
    assert_eq!(report.unwrap().reference_size, [48, 48]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("references resized from 48x48 to 32x32")),
        "{lines:?}"
    );
}

#[test]
fn bad_input_is_named() {
    let s = Setup::new();
    let refs = s.references(&[picture(1)]);

    // A corrupt reference image: the file is named.
    let corrupt = s.dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let mut bad_refs = refs.clone();
    bad_refs.push(Reference {
        file: "corrupt.png".into(),
        png: corrupt.clone(),
    });
    let spec = s.spec(vec![s.samples("sample-lora", &[picture(2)])], bad_refs);
    let e = run(&spec).0.unwrap_err().to_string();
    assert!(e.contains(&corrupt.display().to_string()), "{e}");

    // An empty sample set: the job is named.
    let mut empty = s.samples("sample-empty", &[picture(2)]);
    empty.index.samples.clear();
    let e = run(&s.spec(vec![empty], refs.clone()))
        .0
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("job 7 `sample-empty` has an empty sample set"),
        "{e}"
    );

    // Tensors that do not match samples.json: both shapes.
    let mut short = s.samples("sample-short", &[picture(2)]);
    short.index.samples.push(short.index.samples[0].clone());
    let e = run(&s.spec(vec![short], refs.clone()))
        .0
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[1, 3, 32, 32]") && e.contains("[2, 3, 32, 32]"),
        "{e}"
    );

    // No references at all.
    let e = run(&s.spec(vec![s.samples("sample-lora", &[picture(2)])], Vec::new()))
        .0
        .unwrap_err()
        .to_string();
    assert!(e.contains("held out none"), "{e}");

    // Missing CLIP model: the folder and what it should hold.
    let mut spec = s.spec(vec![s.samples("sample-lora", &[picture(2)])], refs.clone());
    spec.clip_model = s.dir.path().join("no-clip");
    let e = run(&spec).0.unwrap_err().to_string();
    assert!(
        e.contains("no-clip") && e.contains("clip-vit-large-patch14"),
        "{e}"
    );

    // VGG weights given as AlexNet: the tensor and both shapes.
    let vgg = s.dir.path().join("lpips_vgg.safetensors");
    atelier_metrics::testing::write_test_weights(
        &vgg,
        LpipsNet::Vgg,
        &repo().join("metrics/tests/fixtures/lpips/lin_vgg.safetensors"),
    )
    .unwrap();
    let mut spec = s.spec(vec![s.samples("sample-lora", &[picture(2)])], refs);
    spec.lpips_weights = vgg.clone();
    let e = run(&spec).0.unwrap_err().to_string();
    assert!(e.contains("lpips_vgg.safetensors"), "{e}");
}
