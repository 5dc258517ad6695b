//! The content of a report (`report.json`).

use serde::{Deserialize, Serialize};

/// Mean, standard deviation and count of one metric over a sample set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

/// One sample set as one eval job scored it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `lora`, `dreambooth`, `ti`, or `base` for the model without an adapter.
    pub method: String,
    /// The trained token (`<monet-style>`), if any.
    pub token: Option<String>,
    pub train_job: Option<i64>,
    pub sample_job: i64,
    pub sample_job_name: String,
    pub eval_job: i64,
    pub eval_job_name: String,
    pub lpips_net: String,
    pub lpips_nearest: MetricSummary,
    pub lpips_pairwise: MetricSummary,
    pub clip_score: MetricSummary,
}

impl Row {
    /// `lora · dots`: the method and the token without `<`, `>` and `-style`.
    pub fn label(&self) -> String {
        match &self.token {
            Some(token) => format!("{} · {}", self.method, short_token(token)),
            None => self.method.clone(),
        }
    }
}

/// `<monet-style>` -> `monet`.
pub fn short_token(token: &str) -> &str {
    let t = token.trim_start_matches('<').trim_end_matches('>');
    t.strip_suffix("-style").unwrap_or(t)
}

/// A training run's losses, one per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingCurve {
    pub train_job: i64,
    pub train_job_name: String,
    pub method: String,
    pub token: String,
    pub losses: Vec<f64>,
}

impl TrainingCurve {
    pub fn label(&self) -> String {
        format!("{} · {}", self.method, short_token(&self.token))
    }
}

/// One row of the sample grid: a sample set's images, by prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleGrid {
    pub label: String,
    pub sample_job: i64,
    /// Paths (inside the report folder) of the images, `[prompt][k]`.
    pub images: Vec<Vec<String>>,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub experiment: String,
    pub experiment_id: i64,
    pub created_at_ms: i64,
    pub prompts: Vec<String>,
    pub rows: Vec<Row>,
    pub trainings: Vec<TrainingCurve>,
    pub grid: Vec<SampleGrid>,
    /// Jobs that did not succeed and what is missing because of them.
    pub missing: Vec<String>,
    /// `--note`: a line under the title (what the figures cannot say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
