use std::path::PathBuf;

use atelier_coordinator::spec::{self, ExperimentSpec};
use atelier_proto::v1;

use crate::error::{CliError, CliResult};
use crate::output::{print_json, shorten, table};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment file (YAML)
    pub file: PathBuf,
    /// Override a var or a field before validation: `--set model=/path`, `--set defaults.priority=5`
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Validate and print the jobs without submitting
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// Reads, expands and validates an experiment file; nothing is sent when it fails.
pub fn load(file: &std::path::Path, sets: &[String]) -> CliResult<ExperimentSpec> {
    let label = file.display().to_string();
    let source = std::fs::read_to_string(file)
        .map_err(|e| CliError::invalid(format!("cannot read `{label}`: {e}")))?;
    let sets = sets
        .iter()
        .map(|s| {
            spec::parse_set(s)
                .map(|(key, value)| (key, absolute_if_here(value)))
                .map_err(|e| CliError::invalid(format!("--set `{s}`: {e}")))
        })
        .collect::<CliResult<Vec<_>>>()?;
    let mut exp = spec::parse_experiment(&source, &label, &sets)
        .map_err(|e| CliError::invalid(e.to_string()))?;
    let base = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(std::path::Path::new("."));
    spec::resolve_paths(&mut exp, base).map_err(|mut e| {
        e.file = label.clone();
        CliError::invalid(e.to_string())
    })?;
    Ok(exp)
}

/// A `--set` value that looks like a path (it has a `/`) and names an existing file
/// or folder relative to the current directory, made absolute: what a user typing
/// `--set model=models/sd15` in a shell means. Other values are left as they are;
/// relative paths among them are taken against the experiment file's folder, as
/// paths written in the file are.
fn absolute_if_here(value: String) -> String {
    let path = std::path::Path::new(&value);
    if !value.contains('/') || path.is_absolute() || !path.exists() {
        return value;
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(path).display().to_string(),
        Err(_) => value,
    }
}

pub fn to_request(exp: &ExperimentSpec) -> v1::SubmitRequest {
    v1::SubmitRequest {
        name: exp.name.clone(),
        source: exp.source.clone(),
        jobs: exp
            .jobs
            .iter()
            .map(|j| v1::JobSpec {
                name: j.name.clone(),
                kind: j.kind.clone(),
                params_json: j.params.to_string(),
                priority: j.priority,
                max_attempts: j.max_attempts,
                requires: Some(v1::Requirements {
                    gpus: j.requires.gpus,
                    gpu_mem_gb: j.requires.gpu_mem_gb,
                    backend: j.requires.backend.clone(),
                    labels: j.requires.labels.clone().into_iter().collect(),
                }),
                needs: j.needs.clone(),
                sweep_point_json: j
                    .sweep_point
                    .as_ref()
                    .map(|m| serde_json::Value::Object(m.clone()).to_string())
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let exp = load(&self.file, &self.sets)?;
        if self.dry_run {
            if self.json {
                let jobs: Vec<_> = exp
                    .jobs
                    .iter()
                    .map(|j| serde_json::json!({"name": j.name, "kind": j.kind, "params": j.params, "needs": j.needs, "priority": j.priority}))
                    .collect();
                print_json(&serde_json::json!({"name": exp.name, "jobs": jobs}));
            } else {
                let mut t = table(&["NAME", "KIND", "PRIORITY", "NEEDS", "REQUIRES", "PARAMS"]);
                for j in &exp.jobs {
                    t.add_row(vec![
                        j.name.clone(),
                        j.kind.clone(),
                        j.priority.to_string(),
                        j.needs.join(", "),
                        requirements(&j.requires),
                        shorten(&j.params.to_string(), PARAMS_SHOWN),
                    ]);
                }
                println!("{t}");
                println!(
                    "{}: {} jobs, valid (not submitted)",
                    exp.name,
                    exp.jobs.len()
                );
            }
            return Ok(());
        }
        let mut api = super::connect(&settings)?;
        let resp = api.submit(to_request(&exp)).await?.into_inner();
        if self.json {
            print_json(&serde_json::json!({
                "experiment_id": resp.experiment_id,
                "name": exp.name,
                "job_ids": resp.job_ids,
            }));
        } else {
            println!(
                "submitted experiment e{} `{}`: {} jobs (follow with `atelier watch e{}`)",
                resp.experiment_id,
                exp.name,
                resp.job_ids.len(),
                resp.experiment_id
            );
        }
        Ok(())
    }
}

/// Characters of a job's params the dry-run table shows (`--json` has them all).
const PARAMS_SHOWN: usize = 100;

/// `1 GPU (cuda)`, `cpu`, `2 GPUs ≥ 24 GB, labels zone=a`: what a worker must offer.
fn requirements(r: &atelier_coordinator::spec::Requirements) -> String {
    let mut parts = Vec::new();
    match r.gpus {
        0 => parts.push(r.backend.clone()),
        n => parts.push(format!(
            "{n} GPU{} ({})",
            if n == 1 { "" } else { "s" },
            r.backend
        )),
    }
    if r.gpu_mem_gb > 0.0 {
        parts.push(format!("≥ {} GB each", r.gpu_mem_gb));
    }
    if !r.labels.is_empty() {
        let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("labels {}", labels.join(",")));
    }
    parts.join(", ")
}
