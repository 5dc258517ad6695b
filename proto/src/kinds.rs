//! Parameters of each job kind: the `params:` mapping of a job in an experiment file.
//!
//! These are part of the API: the coordinator validates them at submit time and the
//! worker deserialises the same types when it runs a job, so a field added here is
//! known to both sides at once.

use serde::{Deserialize, Serialize};

mod eval;
mod sample;
mod train;

pub use eval::{EvalParams, LPIPS_NETS};
pub use sample::{SampleParams, MAX_SAMPLES, SAMPLE_SCHEDULERS};
pub use train::{TrainParams, METHODS, PLACEMENT_FIELDS, TRAIN_BACKENDS};

/// The job kinds this version of atelier knows.
pub const KINDS: &[&str] = &["prepare", "train", "sample", "eval", "noop"];

/// `prepare`: turn a trainset folder into a packed dataset artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareParams {
    /// Folder of images (or a trainset folder with an `images/` sub-folder), as the
    /// worker sees it. `atelier submit` makes a relative path absolute against the
    /// experiment file's folder and checks that it exists.
    pub trainset: String,
    /// Side of the square output images, in pixels.
    #[serde(default = "default_resolution")]
    pub resolution: u32,
    /// Drop images whose content hash equals an earlier image's.
    #[serde(default = "default_true")]
    pub dedupe: bool,
    /// Fail the job when fewer usable images than this remain.
    #[serde(default = "default_min_images")]
    pub min_images: u32,
    /// Fail the job, instead of skipping the file, when an image cannot be decoded.
    #[serde(default)]
    pub strict: bool,
    /// Keep this many images out of `dataset.safetensors`, in `holdout.safetensors`,
    /// as references for `eval` jobs. Which ones is fixed by their file names (the
    /// smallest sha256 of the relative path), so a re-run holds out the same images.
    #[serde(default)]
    pub holdout: u32,
    /// Only the image files whose path relative to the image folder matches one of
    /// these glob patterns (`dots-*`, `monet/**/*.jpg`); empty: every image. Lets one
    /// folder hold several trainsets, as the bundled demo set does.
    #[serde(default)]
    pub include: Vec<String>,
}

impl PrepareParams {
    /// The compiled `include` patterns; `Err` names the first bad one.
    pub fn include_patterns(&self) -> Result<Vec<glob::Pattern>, String> {
        self.include
            .iter()
            .map(|p| glob::Pattern::new(p).map_err(|e| format!("include pattern `{p}`: {e}")))
            .collect()
    }
}

fn default_resolution() -> u32 {
    512
}
fn default_true() -> bool {
    true
}
fn default_min_images() -> u32 {
    1
}

/// `noop`: does nothing for a while, reporting progress; used by tests and benchmarks
/// of the job system itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopParams {
    /// How long the job runs, in seconds.
    #[serde(default)]
    pub seconds: f64,
    /// End with an error instead of succeeding (after `seconds`).
    #[serde(default)]
    pub fail: bool,
    /// Upload a small artifact with this text as content.
    #[serde(default)]
    pub artifact: Option<String>,
}

/// Checks that `params` are valid parameters for `kind`; the error names the field.
pub fn validate(kind: &str, params: &serde_json::Value) -> Result<(), String> {
    fn check<T: serde::de::DeserializeOwned>(params: &serde_json::Value) -> Result<(), String> {
        T::deserialize(params)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    match kind {
        "prepare" => {
            check::<PrepareParams>(params)?;
            let p = PrepareParams::deserialize(params).map_err(|e| e.to_string())?;
            if p.resolution < 8 || p.resolution > 4096 {
                return Err(format!(
                    "resolution {} is out of range (8..=4096)",
                    p.resolution
                ));
            }
            if p.trainset.trim().is_empty() {
                return Err("trainset is empty".into());
            }
            p.include_patterns()?;
            if p.holdout > 100_000 {
                return Err(format!(
                    "holdout {} is out of range (0..=100000)",
                    p.holdout
                ));
            }
            Ok(())
        }
        "train" => TrainParams::deserialize(params)
            .map_err(|e| e.to_string())?
            .check(),
        "sample" => SampleParams::deserialize(params)
            .map_err(|e| e.to_string())?
            .check(),
        "eval" => EvalParams::deserialize(params)
            .map_err(|e| e.to_string())?
            .check(),
        "noop" => {
            let p = NoopParams::deserialize(params).map_err(|e| e.to_string())?;
            if !(0.0..=86_400.0).contains(&p.seconds) {
                return Err(format!("seconds {} is out of range (0..=86400)", p.seconds));
            }
            Ok(())
        }
        other => Err(format!(
            "unknown job kind `{other}` (known: {})",
            KINDS.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prepare_defaults_and_unknown_fields() {
        let p: PrepareParams = serde_json::from_value(json!({"trainset": "x"})).unwrap();
        assert_eq!(p.resolution, 512);
        assert!(p.dedupe);
        let err = validate("prepare", &json!({"trainset": "x", "resolutoin": 64})).unwrap_err();
        assert!(err.contains("unknown field `resolutoin`"), "{err}");
        let err = validate("prepare", &json!({"resolution": 64})).unwrap_err();
        assert!(err.contains("missing field `trainset`"), "{err}");
        assert!(validate("prepare", &json!({"trainset": "x", "resolution": 2})).is_err());
        assert!(validate("tarin", &json!({}))
            .unwrap_err()
            .contains("unknown job kind"));
    }

    #[test]
    fn train_defaults_and_errors_name_the_field() {
        let p: TrainParams =
            serde_json::from_value(json!({"model": "/m", "token": "<t>"})).unwrap();
        assert_eq!((p.method.as_str(), p.steps, p.rank), ("lora", 200, 4));
        assert_eq!(p.checkpoint_every, Some(100));
        assert_eq!(p.backend, "cpu");
        assert_eq!(p.trainset, None);
        let config = p.config_json();
        assert!(config.get("model").is_none() && config.get("backend").is_none());
        assert_eq!(config["token"], "<t>");

        let ok = json!({"model": "/m", "token": "<t>"});
        assert_eq!(validate("train", &ok), Ok(()));
        for (change, needle) in [
            (json!({"rank": 0}), "`rank` must be at least 1"),
            (json!({"resolution": 100}), "`resolution` 100"),
            (
                json!({"method": "dreambooth"}),
                "`class_prompt` is required",
            ),
            (json!({"method": "lorra"}), "`method` `lorra`"),
            (json!({"backend": "tpu"}), "`backend` `tpu`"),
            (json!({"lr": -1.0}), "`lr` must be a positive number"),
            (json!({"checkpoint_every": 0}), "`checkpoint_every`"),
            (json!({"token": " "}), "`token` is empty"),
            (json!({"stpes": 3}), "unknown field `stpes`"),
        ] {
            let mut params = ok.clone();
            for (k, v) in change.as_object().unwrap() {
                params[k] = v.clone();
            }
            let err = validate("train", &params).unwrap_err();
            assert!(err.contains(needle), "{change}: {err}");
        }
        let err = validate("train", &json!({"token": "<t>"})).unwrap_err();
        assert!(err.contains("missing field `model`"), "{err}");
        let none = json!({"model": "/m", "token": "<t>", "checkpoint_every": null});
        let p: TrainParams = serde_json::from_value(none).unwrap();
        assert_eq!(p.checkpoint_every, None);
    }
}
