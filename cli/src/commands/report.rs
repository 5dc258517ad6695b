//! `atelier report EXP -o DIR`: gathers an experiment's evaluation metrics,
//! samples and training losses from the coordinator (every file sha256-checked)
//! and writes `comparison.png`, `samples.png`, `loss.png`, `report.json` and
//! `report.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use atelier_proto::v1;
use atelier_worker::client::UserApi;
use atelier_worker::eval::EvalReport;
use atelier_worker::sample::SampleIndex;
use indicatif::ProgressBar;

use super::pull::download;
use crate::error::{CliError, CliResult, Exit};
use crate::output::{now_ms, print_json};
use crate::report::markdown::{self, Pictures};
use crate::report::{
    comparison, loss_curves, samples_grid, MetricSummary, Report, Row, SampleGrid, TrainingCurve,
};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment (`e3` or a name)
    pub experiment: String,
    /// Folder to write the report into
    #[arg(long, short, value_name = "DIR")]
    pub output: PathBuf,
    /// Most images per prompt shown in samples.png
    #[arg(long, default_value_t = 4)]
    pub images_per_prompt: usize,
    /// A line under the title of comparison.png and report.md, e.g. what the
    /// figures cannot say
    #[arg(long)]
    pub note: Option<String>,
    /// Print JSON (the paths written and report.json's content)
    #[arg(long)]
    pub json: bool,
}

/// Method order in tables and pictures.
const METHOD_ORDER: &[&str] = &["base", "lora", "dreambooth", "ti"];

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let mut api = super::connect(&settings)?;
        let experiment_id = crate::refs::experiment_id(&mut api, &self.experiment).await?;
        let jobs = api
            .list_jobs(v1::ListJobsRequest {
                experiment_id,
                state: String::new(),
                limit: 0,
            })
            .await?
            .into_inner()
            .jobs;
        let Some(first) = jobs.first() else {
            return Err(CliError::new(
                Exit::NotFound,
                format!("experiment e{experiment_id} has no jobs"),
            ));
        };
        let experiment = first.experiment_name.clone();
        let out = self.output.clone();
        let data = out.join("data");
        create_dir(&data)?;
        let mut gather = Gather {
            api: &mut api,
            data: &data,
            missing: Vec::new(),
            artifacts: HashMap::new(),
        };

        let mut rows = Vec::new();
        for job in jobs.iter().filter(|j| j.kind == "eval") {
            let Some(path) = gather.file(job, "metrics.json").await? else {
                continue;
            };
            let report: EvalReport = read_json(&path)?;
            rows.extend(report.sets.iter().map(|s| Row {
                method: s.provenance.method.clone().unwrap_or_else(|| {
                    if s.provenance.adapter == "none" {
                        "base".into()
                    } else {
                        s.provenance.adapter.clone()
                    }
                }),
                token: s.provenance.token.clone(),
                train_job: s.provenance.train_job,
                sample_job: s.sample_job,
                sample_job_name: s.sample_job_name.clone(),
                eval_job: job.id,
                eval_job_name: job.name.clone(),
                lpips_net: report.lpips_net.clone(),
                lpips_nearest: summary(s.lpips_nearest),
                lpips_pairwise: summary(s.lpips_pairwise),
                clip_score: summary(s.clip_score),
            }));
        }
        rows.sort_by_key(|r| {
            (
                method_rank(&r.method),
                r.token.clone(),
                r.sample_job,
                r.eval_job,
            )
        });

        let mut trainings = Vec::new();
        for job in jobs.iter().filter(|j| j.kind == "train") {
            let Some(path) = gather.file(job, "training.json").await? else {
                continue;
            };
            let summary: serde_json::Value = read_json(&path)?;
            let losses = summary["losses"]
                .as_array()
                .map(|l| l.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
                .unwrap_or_default();
            trainings.push(TrainingCurve {
                train_job: job.id,
                train_job_name: job.name.clone(),
                method: summary["config"]["method"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
                token: summary["config"]["token"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
                losses,
            });
        }
        trainings.sort_by_key(|t| (method_rank(&t.method), t.token.clone(), t.train_job));

        // The grid shows the sample sets the table compares, in its order, then
        // sample jobs no eval has scored yet.
        let mut sample_jobs: Vec<&v1::Job> = Vec::new();
        for r in &rows {
            if let Some(j) = jobs.iter().find(|j| j.id == r.sample_job) {
                if !sample_jobs.iter().any(|s| s.id == j.id) {
                    sample_jobs.push(j);
                }
            }
        }
        for j in jobs.iter().filter(|j| j.kind == "sample") {
            if !sample_jobs.iter().any(|s| s.id == j.id) {
                sample_jobs.push(j);
            }
        }
        let mut grid = Vec::new();
        let mut grid_methods = Vec::new();
        let mut prompts: Vec<String> = Vec::new();
        for job in sample_jobs {
            let Some(path) = gather.file(job, "samples.json").await? else {
                continue;
            };
            let index: SampleIndex = read_json(&path)?;
            if prompts.is_empty() {
                prompts = serde_json::from_str::<serde_json::Value>(&job.params_json)
                    .ok()
                    .and_then(|p| serde_json::from_value(p["prompts"].clone()).ok())
                    .unwrap_or_default();
            }
            let mut by_prompt: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for s in &index.samples {
                let images = by_prompt.entry(s.prompt_index).or_default();
                if images.len() < self.images_per_prompt {
                    images.push(s.file.clone());
                }
            }
            let mut images = Vec::new();
            for files in by_prompt.values() {
                let mut local = Vec::new();
                for file in files {
                    if let Some(p) = gather.file(job, file).await? {
                        local.push(relative(&out, &p));
                    }
                }
                images.push(local);
            }
            let p = &index.provenance;
            let method = p.method.clone().unwrap_or_else(|| "base".into());
            let label = match &p.token {
                Some(token) => format!("{method} · {}", crate::report::data::short_token(token)),
                None => method.clone(),
            };
            grid_methods.push(method);
            grid.push(SampleGrid {
                label,
                sample_job: job.id,
                images,
            });
        }
        let missing = gather.missing;

        let report = Report {
            experiment: experiment.clone(),
            experiment_id,
            created_at_ms: now_ms(),
            prompts,
            rows,
            trainings,
            grid,
            missing,
            note: self.note.clone(),
        };
        let title = format!("{experiment} (e{experiment_id})");
        let mut written: Vec<PathBuf> = Vec::new();
        let mut pictures = Pictures {
            comparison: false,
            samples: false,
            loss: false,
        };
        if !report.rows.is_empty() {
            let path = out.join("comparison.png");
            comparison::write(
                &path,
                &format!("{title}: methods compared"),
                report.note.as_deref(),
                &report.rows,
            )
            .map_err(CliError::failure)?;
            pictures.comparison = true;
            written.push(path);
        }
        if !report.grid.is_empty() {
            let path = out.join("samples.png");
            samples_grid::write(
                &path,
                &out,
                &format!("{title}: samples"),
                &report.prompts,
                &report.grid,
                &grid_methods,
            )
            .map_err(CliError::failure)?;
            pictures.samples = true;
            written.push(path);
        }
        if report.trainings.iter().any(|t| !t.losses.is_empty()) {
            let path = out.join("loss.png");
            loss_curves::write(&path, &format!("{title}: training loss"), &report.trainings)
                .map_err(CliError::failure)?;
            pictures.loss = true;
            written.push(path);
        }
        let json_path = out.join("report.json");
        write_file(
            &json_path,
            serde_json::to_string_pretty(&report).expect("serialisable") + "\n",
        )?;
        written.push(json_path);
        let md_path = out.join("report.md");
        write_file(&md_path, markdown::render(&report, &pictures))?;
        written.push(md_path);

        if self.json {
            print_json(&serde_json::json!({"written": written, "report": report}));
        } else {
            for path in &written {
                println!("wrote {}", path.display());
            }
            for m in &report.missing {
                println!("not in the report: {m}");
            }
        }
        if report.rows.is_empty() && report.grid.is_empty() && report.trainings.is_empty() {
            return Err(CliError::new(
                Exit::NotFound,
                format!(
                    "experiment e{experiment_id} `{experiment}` has no finished train, sample or \
                     eval job to report on yet"
                ),
            ));
        }
        Ok(())
    }
}

/// Downloads the artifacts a report needs into `data/<job id>/`, once each,
/// noting jobs that have not succeeded.
struct Gather<'a> {
    api: &'a mut UserApi,
    data: &'a Path,
    missing: Vec<String>,
    /// Each job's artifacts, listed once.
    artifacts: HashMap<i64, Vec<v1::Artifact>>,
}

impl Gather<'_> {
    /// The local copy of artifact `name` of `job`; `None` (and a note) when the job
    /// has not succeeded or has no such artifact.
    async fn file(&mut self, job: &v1::Job, name: &str) -> CliResult<Option<PathBuf>> {
        if job.state != "succeeded" {
            let note = format!(
                "{} job {} `{}` is {}{}",
                job.kind,
                job.id,
                job.name,
                job.state,
                if job.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", job.reason)
                }
            );
            if !self.missing.contains(&note) {
                self.missing.push(note);
            }
            return Ok(None);
        }
        let dest = self.data.join(job.id.to_string()).join(name);
        if dest.is_file() {
            return Ok(Some(dest));
        }
        if !self.artifacts.contains_key(&job.id) {
            let listed = self
                .api
                .get_job(v1::GetJobRequest { job_id: job.id })
                .await?
                .into_inner()
                .artifacts;
            self.artifacts.insert(job.id, listed);
        }
        let Some(artifact) = self.artifacts[&job.id]
            .iter()
            .find(|a| a.name == name)
            .cloned()
        else {
            self.missing.push(format!(
                "{} job {} `{}` has no artifact `{name}`",
                job.kind, job.id, job.name
            ));
            return Ok(None);
        };
        atelier_proto::artifact_name::check(&artifact.name)
            .map_err(|e| CliError::failure(format!("job {}: {e}; not written", job.id)))?;
        if let Some(folder) = dest.parent() {
            create_dir(folder)?;
        }
        download(self.api, job.id, &artifact, &dest, &ProgressBar::hidden()).await?;
        Ok(Some(dest))
    }
}

fn method_rank(method: &str) -> usize {
    METHOD_ORDER
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHOD_ORDER.len())
}

fn summary(s: atelier_worker::eval::Summary) -> MetricSummary {
    MetricSummary {
        mean: s.mean,
        std: s.std,
        n: s.n,
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> CliResult<T> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::failure(format!("cannot read `{}`: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CliError::failure(format!(
            "`{}` is not what was expected: {e}",
            path.display()
        ))
    })
}

pub(super) fn create_dir(dir: &Path) -> CliResult {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::failure(format!("cannot create `{}`: {e}", dir.display())))
}

pub(super) fn write_file(path: &Path, text: String) -> CliResult {
    std::fs::write(path, text)
        .map_err(|e| CliError::failure(format!("failed to write `{}`: {e}", path.display())))
}
