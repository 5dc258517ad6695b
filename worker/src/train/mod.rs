//! The `train` job's blocking half: the job's params as the model library's
//! [`TrainConfig`], the run itself on the CPU or a CUDA device, and which uploaded
//! checkpoint a later attempt resumes from.
//!
//! # Layout
//! - `checkpoints`: the artifact names of checkpoints, and the latest complete one.
//! - `run`: a training run on the job's backend, stoppable after any step.
//!
//! The API is synchronous and blocking; the agent runs it in `spawn_blocking`.

pub mod checkpoints;
mod run;

use atelier_proto::kinds::TrainParams;
use atelier_sd::train::config::TrainConfig;

pub use run::{run, Device, RunError, RunSpec};

/// The training fields of a job's params, as the model library reads them.
pub fn config(params: &TrainParams) -> Result<TrainConfig, String> {
    serde_json::from_value(params.config_json()).map_err(|e| format!("params: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn keys(value: &serde_json::Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    /// The proto crate spells out `TrainConfig`'s fields; they must not drift apart.
    #[test]
    fn params_carry_every_training_field_with_its_default() {
        let params: TrainParams =
            serde_json::from_value(serde_json::json!({"model": "/m", "token": "<t>"})).unwrap();
        let library = serde_json::to_value(TrainConfig::default()).unwrap();
        assert_eq!(keys(&params.config_json()), keys(&library));
        let converted = config(&params).unwrap();
        let expected = TrainConfig {
            token: "<t>".into(),
            // The one default a job changes: a job resumes from its checkpoints.
            checkpoint_every: Some(100),
            ..TrainConfig::default()
        };
        assert_eq!(converted, expected);
    }

    #[test]
    fn every_field_converts() {
        let params: TrainParams = serde_json::from_value(serde_json::json!({
            "model": "/m", "trainset": "/t", "backend": "cuda",
            "method": "dreambooth", "token": "<t>", "steps": 7, "lr": 0.001, "rank": 2,
            "alpha": 3.0, "resolution": 64, "batch": 2, "seed": 9,
            "caption_template": "x {}", "initializer_token": "art",
            "class_prompt": "a painting", "class_images": 3, "class_steps": 4,
            "prior_loss_weight": 0.5, "max_grad_norm": null, "checkpoint_every": 5,
            "random_flip": true, "center_crop": false, "lr_scheduler": "cosine",
            "lr_warmup_steps": 2, "gradient_accumulation_steps": 3, "lora_dropout": 0.1,
            "precision": "bf16", "kohya_file": true,
        }))
        .unwrap();
        let c = config(&params).unwrap();
        assert_eq!(c.method, atelier_sd::train::config::Method::Dreambooth);
        assert_eq!(
            (c.steps, c.rank, c.resolution, c.batch, c.seed),
            (7, 2, 64, 2, 9)
        );
        assert_eq!(c.class_prompt.as_deref(), Some("a painting"));
        assert_eq!(c.max_grad_norm, None);
        assert_eq!(c.checkpoint_every, Some(5));
        assert!(c.random_flip && !c.center_crop);
        assert_eq!(
            c.lr_scheduler,
            atelier_sd::train::schedule::LrScheduler::Cosine
        );
        assert_eq!((c.lr_warmup_steps, c.gradient_accumulation_steps), (2, 3));
        assert_eq!(c.lora_dropout, 0.1);
        assert_eq!(c.precision, atelier_sd::precision::Precision::Bf16);
        assert!(c.kohya_file);
        c.validate().unwrap();
    }
}
