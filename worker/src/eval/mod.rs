//! The `eval` job's blocking half: LPIPS of generated samples against held-out
//! reference images, and CLIP score against their prompts.
//!
//! For every sample set (one `sample` job) and every image in it:
//! - `lpips_pairwise`: the mean LPIPS distance to each reference image;
//! - `lpips_nearest`: the distance to the closest reference (and which one);
//! - `clip_score`: max(100 x cosine(image, prompt), 0), as torchmetrics' CLIPScore.
//!
//! LPIPS sees the samples before 8-bit quantisation (`samples.safetensors`) and
//! the references as packed by `prepare`, both in [-1, 1] at full resolution;
//! CLIP sees the 8-bit images, as torchmetrics does. LPIPS compares images of one
//! size: references of another size are resized (Lanczos 3) to the samples' size,
//! and the log says so.

mod stats;

use std::path::PathBuf;

use atelier_metrics::clip::ClipScorer;
use atelier_metrics::images::{load_rgb, to_signed_tensor};
use atelier_metrics::lpips::{Lpips, LpipsNet};
use atelier_metrics::MetricsError;
use atelier_sd::pipeline::to_rgb8;
use atelier_sd::weights::SafetensorsFile;
use atelier_sd::SdError;
use burn::tensor::backend::Backend;
use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use stats::Summary;

use crate::sample::{Provenance, SampleIndex, IMAGES_KEY};
use crate::train::Device;

/// The eval job's output file.
pub const METRICS_FILE: &str = "metrics.json";

/// One `sample` job's images, downloaded.
#[derive(Debug, Clone)]
pub struct SampleSet {
    pub job_id: i64,
    pub job_name: String,
    pub index: SampleIndex,
    /// Its `samples.safetensors`.
    pub tensors: PathBuf,
}

#[derive(Debug, Clone)]
pub struct EvalSpec {
    pub net: LpipsNet,
    pub lpips_weights: PathBuf,
    pub clip_model: PathBuf,
    pub device: Device,
    pub batch: usize,
    pub sets: Vec<SampleSet>,
    /// The held-out images of the prepare job, unpacked.
    pub references: Vec<Reference>,
}

/// A held-out image: its file in the trainset, and where it was unpacked.
#[derive(Debug, Clone)]
pub struct Reference {
    pub file: String,
    pub png: PathBuf,
}

/// Metrics of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMetrics {
    pub file: String,
    pub prompt: String,
    pub lpips_pairwise: f64,
    pub lpips_nearest: f64,
    /// Index of the closest reference in the held-out set.
    pub nearest_reference: usize,
    pub clip_score: f64,
}

/// Metrics of one sample set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetMetrics {
    pub sample_job: i64,
    pub sample_job_name: String,
    #[serde(flatten)]
    pub provenance: Provenance,
    pub lpips_pairwise: Summary,
    pub lpips_nearest: Summary,
    pub clip_score: Summary,
    pub images: Vec<ImageMetrics>,
}

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub lpips_net: String,
    pub references: usize,
    pub reference_files: Vec<String>,
    /// Side of the references as packed, before any resize.
    pub reference_size: [usize; 2],
    pub sets: Vec<SetMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Sd(#[from] SdError),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Device(String),
    #[error("evaluation was cancelled")]
    Cancelled,
}

/// Scores every set; `on_set` hears each as it is done, `log` gets lines for the
/// job's log, `cancelled` is asked between sets.
pub fn run(
    spec: &EvalSpec,
    cancelled: &dyn Fn() -> bool,
    log: &mut dyn FnMut(String),
    on_set: &mut dyn FnMut(&SetMetrics, usize, usize),
) -> Result<EvalReport, EvalError> {
    match spec.device {
        Device::Cpu => {
            run_on::<atelier_sd::backend::Cpu>(spec, &Default::default(), cancelled, log, on_set)
        }
        Device::Cuda(index) => {
            let device = atelier_sd::backend::cuda_device(index).map_err(EvalError::Device)?;
            run_on::<atelier_sd::backend::Cuda>(spec, &device, cancelled, log, on_set)
        }
    }
}

fn run_on<B: Backend>(
    spec: &EvalSpec,
    device: &B::Device,
    cancelled: &dyn Fn() -> bool,
    log: &mut dyn FnMut(String),
    on_set: &mut dyn FnMut(&SetMetrics, usize, usize),
) -> Result<EvalReport, EvalError> {
    // Both models first: a missing file fails the job before any work.
    let lpips = Lpips::<B>::load(&spec.lpips_weights, spec.net, device)?;
    let clip = ClipScorer::<B>::load(&spec.clip_model, device)?;
    let (reference_files, packed_refs) = read_references(&spec.references)?;
    if packed_refs.is_empty() {
        return Err(EvalError::Input(
            "no reference images: the prepare job held out none (set its `holdout`)".into(),
        ));
    }
    let reference_size = [
        packed_refs[0].height() as usize,
        packed_refs[0].width() as usize,
    ];
    let mut sets = Vec::with_capacity(spec.sets.len());
    for (i, set) in spec.sets.iter().enumerate() {
        if cancelled() {
            return Err(EvalError::Cancelled);
        }
        let samples = read_samples(set)?;
        let (w, h) = (set.index.width as u32, set.index.height as u32);
        let refs: Vec<RgbImage> = if (w, h) == packed_refs[0].dimensions() {
            packed_refs.clone()
        } else {
            log(format!(
                "references resized from {}x{} to {w}x{h}, the size of the samples of job {} `{}` \
                 (LPIPS compares images of one size)",
                reference_size[1], reference_size[0], set.job_id, set.job_name
            ));
            packed_refs
                .iter()
                .map(|r| image::imageops::resize(r, w, h, image::imageops::FilterType::Lanczos3))
                .collect()
        };
        let metrics = score_set::<B>(&lpips, &clip, set, &samples, &refs, spec.batch, device)?;
        log(format!(
            "job {} `{}` ({}): LPIPS nearest {:.4} ± {:.4}, pairwise {:.4} ± {:.4}, \
             CLIP score {:.2} ± {:.2} ({} images)",
            set.job_id,
            set.job_name,
            label(&set.index.provenance),
            metrics.lpips_nearest.mean,
            metrics.lpips_nearest.std,
            metrics.lpips_pairwise.mean,
            metrics.lpips_pairwise.std,
            metrics.clip_score.mean,
            metrics.clip_score.std,
            metrics.images.len(),
        ));
        on_set(&metrics, i + 1, spec.sets.len());
        sets.push(metrics);
    }
    Ok(EvalReport {
        lpips_net: spec.net.to_string(),
        references: packed_refs.len(),
        reference_files,
        reference_size,
        sets,
    })
}

/// `method` (or the adapter kind, or "base model") for log lines.
pub fn label(p: &Provenance) -> String {
    match (&p.method, p.adapter.as_str()) {
        (Some(method), _) => method.clone(),
        (None, "none") => "base model".into(),
        (None, other) => other.to_string(),
    }
}

/// A set's samples as (raw [3,H,W] in [0,1] values, 8-bit image), in index order.
struct Samples {
    raw: Vec<Vec<f32>>,
    rgb: Vec<RgbImage>,
}

fn read_samples(set: &SampleSet) -> Result<Samples, EvalError> {
    let file = SafetensorsFile::open(&set.tensors)?;
    let (shape, values) = file.read_f32(IMAGES_KEY)?;
    let (w, h, n) = (set.index.width, set.index.height, set.index.samples.len());
    if n == 0 {
        return Err(EvalError::Input(format!(
            "job {} `{}` has an empty sample set",
            set.job_id, set.job_name
        )));
    }
    if shape != [n, 3, h, w] {
        return Err(EvalError::Input(format!(
            "`{}` of job {} `{}`: `{IMAGES_KEY}` has shape {shape:?}, but samples.json lists \
             {n} images of {w}x{h} ([{n}, 3, {h}, {w}])",
            set.tensors.display(),
            set.job_id,
            set.job_name
        )));
    }
    let raw: Vec<Vec<f32>> = values
        .chunks_exact(3 * h * w)
        .map(<[f32]>::to_vec)
        .collect();
    let rgb = raw.iter().map(|chw| to_rgb8(chw, w, h)).collect();
    Ok(Samples { raw, rgb })
}

/// The held-out images, as `prepare::unpack` wrote them.
fn read_references(refs: &[Reference]) -> Result<(Vec<String>, Vec<RgbImage>), EvalError> {
    let mut names = Vec::with_capacity(refs.len());
    let mut images = Vec::with_capacity(refs.len());
    for r in refs {
        names.push(r.file.clone());
        images.push(load_rgb(&r.png)?);
    }
    Ok((names, images))
}

fn score_set<B: Backend>(
    lpips: &Lpips<B>,
    clip: &ClipScorer<B>,
    set: &SampleSet,
    samples: &Samples,
    refs: &[RgbImage],
    batch: usize,
    device: &B::Device,
) -> Result<SetMetrics, EvalError> {
    let (w, h) = (set.index.width, set.index.height);
    // distances[s][r]
    let mut distances: Vec<Vec<f64>> = vec![Vec::with_capacity(refs.len()); samples.raw.len()];
    let pairs: Vec<(usize, usize)> = (0..samples.raw.len())
        .flat_map(|s| (0..refs.len()).map(move |r| (s, r)))
        .collect();
    for chunk in pairs.chunks(batch.max(1)) {
        let mut a = Vec::with_capacity(chunk.len() * 3 * h * w);
        for &(s, _) in chunk {
            a.extend(samples.raw[s].iter().map(|v| v * 2.0 - 1.0));
        }
        let a = burn::tensor::Tensor::<B, 4>::from_data(
            burn::tensor::TensorData::new(a, [chunk.len(), 3, h, w]),
            device,
        );
        let chunk_refs: Vec<RgbImage> = chunk.iter().map(|&(_, r)| refs[r].clone()).collect();
        let b = to_signed_tensor::<B>(&chunk_refs, device)?;
        for (&(s, _), d) in chunk.iter().zip(lpips.distance(a, b)?) {
            distances[s].push(d as f64);
        }
    }
    let prompts: Vec<&str> = set
        .index
        .samples
        .iter()
        .map(|s| s.prompt.as_str())
        .collect();
    let mut scores = Vec::with_capacity(prompts.len());
    for (images, prompts) in samples
        .rgb
        .chunks(batch.max(1))
        .zip(prompts.chunks(batch.max(1)))
    {
        scores.extend(clip.score(images, prompts)?.into_iter().map(f64::from));
    }
    let images: Vec<ImageMetrics> = set
        .index
        .samples
        .iter()
        .zip(&distances)
        .zip(&scores)
        .map(|((sample, d), &clip_score)| {
            let (nearest_reference, lpips_nearest) = d
                .iter()
                .copied()
                .enumerate()
                .min_by(|x, y| x.1.total_cmp(&y.1))
                .expect("at least one reference");
            ImageMetrics {
                file: sample.file.clone(),
                prompt: sample.prompt.clone(),
                lpips_pairwise: d.iter().sum::<f64>() / d.len() as f64,
                lpips_nearest,
                nearest_reference,
                clip_score,
            }
        })
        .collect();
    let summary = |f: fn(&ImageMetrics) -> f64| {
        Summary::of(&images.iter().map(f).collect::<Vec<_>>()).expect("a non-empty set")
    };
    Ok(SetMetrics {
        sample_job: set.job_id,
        sample_job_name: set.job_name.clone(),
        provenance: set.index.provenance.clone(),
        lpips_pairwise: summary(|m| m.lpips_pairwise),
        lpips_nearest: summary(|m| m.lpips_nearest),
        clip_score: summary(|m| m.clip_score),
        images,
    })
}
