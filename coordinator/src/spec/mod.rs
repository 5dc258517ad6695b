//! Experiment files: YAML in, a validated list of jobs out, nothing partial.
//!
//! # Format
//! ```yaml
//! name: demo                 # required, [A-Za-z0-9._-]+
//! description: optional text
//! vars: {model: null, res: 64}
//! defaults:                  # merged under every job
//!   kind: prepare
//!   priority: 0              # any integer; higher runs first
//!   max_attempts: 3          # 1..=100
//!   requires: {gpus: 0, gpu_mem_gb: 0, backend: any, labels: {}}
//!   params: {resolution: 64}
//! jobs:                      # at least one
//!   - name: prep             # unique, [A-Za-z0-9._-]+
//!     kind: prepare          # see `atelier_proto::kinds`
//!     params: {trainset: ./trainsets/demo}
//!     needs: [other-job]     # names of jobs in this file
//!     sweep: {...}           # this job alone expands into several
//! sweep:                     # the whole job list is replicated per point
//!   method: grid             # grid (default) | random
//!   seed: 7                  # random only (default 0)
//!   samples: 10              # random only, required there
//!   parameters:
//!     params.resolution: [64, 128]                        # values: grid axis / random choice
//!     params.lr: {min: 1.0e-4, max: 1.0e-3, log: true}   # random only: uniform float
//!     priority: {min: 0, max: 5, int: true}               # random only: integer, both ends included
//! ```
//!
//! Unknown keys are errors everywhere (`params` included, checked against the kind's
//! parameter type).
//!
//! **Vars.** `${name}` inside any string value outside `vars:` is replaced by the var's
//! value. A string that is exactly `${name}` takes the value with its type
//! (`resolution: ${res}` is the number 64); elsewhere the value is spliced in as text.
//! `$${` is a literal `${`. A var that is used must be declared and not null.
//!
//! **`--set key=value`.** The value is read as a YAML scalar (`3` a number, `true` a
//! bool, `abc` a string; `[16, 32]` a list). A key naming a declared var sets the var;
//! any other key is a dotted path to a value already in the document
//! (`defaults.priority`, `name`, `jobs.0.params.resolution`), replaced before vars are
//! substituted.
//!
//! **Defaults.** Merged under each job: the job's own value wins; `requires` is merged
//! field by field (`labels` key by key) and `params` deeply (mappings merged, lists and
//! scalars replaced).
//!
//! **Sweeps.** Parameter keys are job field paths: `priority`, `max_attempts`,
//! `requires.gpus`, `requires.gpu_mem_gb`, `requires.backend`, `requires.labels.<name>`,
//! `params.<field>`; a field the job (or its kind's params) does not have is an error.
//! A grid is the cartesian product in the order written, the last parameter varying
//! fastest; random draws `samples` points from ChaCha8 seeded with `seed` (same seed,
//! same jobs, whatever the `rand` version). Expansions are named `<name>-<i>`, `i`
//! zero-padded to the width of the count (`prep-00`..`prep-19`); a job under both
//! sweeps is `<name>-<replica>-<point>`. `JobSpec::sweep_point` holds the values used,
//! keyed by path. `needs` of a replica name jobs of the same replica; naming a job
//! with its own sweep means all its expansions.
//!
//! **Limits.** Job names unique after expansion, `needs` without cycles, at most
//! [`MAX_JOBS`] jobs, `requires.gpus` <= 64, `requires.gpu_mem_gb` >= 0,
//! `requires.backend` one of `any`, `cpu`, `cuda`. A `train` job without
//! `params.trainset` needs exactly one `prepare` job (whose dataset it trains on); one
//! with `params.backend: cuda` asks for a GPU (`requires.gpus` >= 1, backend not
//! `cpu`).
//!
//! **Paths.** [`resolve_paths`] (called by `atelier submit`, which knows the file's
//! folder) makes the folder params of [`PATH_PARAMS`] absolute and checks them; a
//! `prepare` job's `trainset` may instead name a pushed trainset (`pushed:NAME`,
//! `sha256:HEX`, see `atelier_proto::trainset_ref`), which the coordinator resolves.
//!
//! # Layout
//! - `file`: the serde model of the file, and the merge of `defaults`.
//! - `vars`: `--set` and `${var}` on the untyped document.
//! - `sweep`: sweep parameters, grid and random points, expansion into jobs.
//! - `validate`: checks on expanded jobs, also used on jobs received over gRPC.
//! - `cache`: [`cache_key`], which jobs give the same artifacts.
//! - `error`: [`SpecError`].

// `SpecError` is a plain struct of strings (the API callers match on); it is returned
// once per submission, so its size on the error path costs nothing worth a `Box`.
#![allow(clippy::result_large_err)]

mod cache;
mod error;
mod file;
mod sweep;
mod validate;
mod vars;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use atelier_proto::trainset_ref::TrainsetRef;
use serde::{Deserialize, Serialize};

pub use cache::cache_key;
pub use error::SpecError;
pub use validate::{validate_jobs, BACKENDS, MAX_ATTEMPTS, MAX_GPUS};

/// `max_attempts` of a job that sets none (Determined's default is 5 restarts; three
/// attempts is enough to get past a flaky host without hiding a real bug).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Most jobs one experiment may hold after expansion.
pub const MAX_JOBS: usize = 100_000;

/// What a job needs from the worker that runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Requirements {
    pub gpus: u32,
    /// Per GPU, in GiB, as workers report it.
    pub gpu_mem_gb: f64,
    /// `any`, `cpu` or `cuda`.
    pub backend: String,
    /// All must equal the worker's labels of the same name.
    pub labels: BTreeMap<String, String>,
}

impl Default for Requirements {
    fn default() -> Self {
        Requirements {
            gpus: 0,
            gpu_mem_gb: 0.0,
            backend: "any".to_string(),
            labels: BTreeMap::new(),
        }
    }
}

/// One job after defaults and sweeps, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub kind: String,
    /// Always a JSON object, valid for `kind`.
    pub params: serde_json::Value,
    pub priority: i64,
    pub max_attempts: u32,
    pub requires: Requirements,
    /// Names of jobs of the same experiment that must succeed first.
    pub needs: Vec<String>,
    /// The sweep values this job was made with, keyed by path (`params.resolution`).
    pub sweep_point: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone)]
pub struct ExperimentSpec {
    pub name: String,
    pub description: Option<String>,
    pub jobs: Vec<JobSpec>,
    /// The file as given; `--set` overrides are appended as `# --set key=value`
    /// comments, so that the stored text says how the jobs were made.
    pub source: String,
}

/// Parses, expands and validates an experiment file. `file` is only used in errors.
pub fn parse_experiment(
    source: &str,
    file: &str,
    sets: &[(String, String)],
) -> Result<ExperimentSpec, SpecError> {
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(source).map_err(|e| SpecError::from_yaml(file, &e, true))?;
    if !doc.is_mapping() {
        return Err(SpecError::new(
            file,
            "expected a mapping with `name` and `jobs` at the top level",
        ));
    }
    // YAML merge keys (`<<: *lora`) let jobs share params; serde_yaml leaves them
    // as plain `<<` keys unless asked.
    let merges = source.contains("<<");
    if merges {
        doc.apply_merge()
            .map_err(|e| SpecError::from_yaml(file, &e, false))?;
    }
    let changed = vars::apply(file, &mut doc, sets)? || merges;
    let model: file::ExperimentFile = if changed {
        // Keys are the same before and after `--set` and vars, so a misspelt one is
        // reported with its position in the user's text.
        if let Err(e) = serde_yaml::from_str::<file::ExperimentFile>(source) {
            if e.to_string().contains("unknown field") {
                return Err(SpecError::from_yaml(file, &e, true));
            }
        }
        // Through text rather than `from_value`, whose errors do not say where.
        let text =
            serde_yaml::to_string(&doc).map_err(|e| SpecError::from_yaml(file, &e, false))?;
        serde_yaml::from_str(&text).map_err(|e| SpecError::from_yaml(file, &e, false))?
    } else {
        serde_yaml::from_str(source).map_err(|e| SpecError::from_yaml(file, &e, true))?
    };
    validate::check_name(&model.name)
        .map_err(|m| SpecError::new(file, format!("name: {m}")).with_path("name"))?;

    let (jobs, origins) = sweep::expand(file, &model)?;
    validate::validate_with(file, &jobs, &|i| format!("jobs[{}]", origins[i]))?;

    let mut source = source.to_string();
    if !sets.is_empty() {
        if !source.is_empty() && !source.ends_with('\n') {
            source.push('\n');
        }
        for (key, value) in sets {
            source.push_str(&format!("# --set {key}={}\n", value.replace('\n', " ")));
        }
    }
    Ok(ExperimentSpec {
        name: model.name,
        description: model.description,
        jobs,
        source,
    })
}

/// The params that are folders the worker reads, by kind: made absolute by
/// [`resolve_paths`].
pub const PATH_PARAMS: &[(&str, &[&str])] = &[
    ("prepare", &["trainset"]),
    ("train", &["model", "trainset"]),
    ("sample", &["model"]),
];

/// Params that name files or folders on the worker which the submitting machine
/// need not have (metric weights): made absolute by [`resolve_paths`] like
/// [`PATH_PARAMS`], but not checked; the worker that runs the job checks them and
/// says how to make what is missing.
pub const WORKER_PATH_PARAMS: &[(&str, &[&str])] = &[("eval", &["lpips_weights", "clip_model"])];

/// Makes the folder params of every job ([`PATH_PARAMS`]: a `prepare` job's
/// `trainset`, a `train` job's `model` and `trainset`) absolute, against `base_dir`
/// (the experiment file's folder) when relative, and checks that each is a
/// directory. Errors name the job and both paths; their `file` is `base_dir`, as the
/// spec does not keep its file name.
pub fn resolve_paths(spec: &mut ExperimentSpec, base_dir: &Path) -> Result<(), SpecError> {
    // Sweeps repeat one folder in thousands of jobs: look each up once.
    let mut resolved: HashMap<String, Result<String, String>> = HashMap::new();
    let file = base_dir.display().to_string();
    for job in &mut spec.jobs {
        if let Some((_, keys)) = WORKER_PATH_PARAMS
            .iter()
            .find(|(kind, _)| *kind == job.kind)
        {
            for key in *keys {
                if let Some(path) = job.params.get(*key).and_then(|v| v.as_str()) {
                    if !path.is_empty() && Path::new(path).is_relative() {
                        let joined = base_dir.join(path);
                        job.params[*key] = serde_json::Value::String(joined.display().to_string());
                    }
                }
            }
        }
        let Some((_, keys)) = PATH_PARAMS.iter().find(|(kind, _)| *kind == job.kind) else {
            continue;
        };
        for key in *keys {
            let Some(path) = job.params.get(*key).and_then(|v| v.as_str()) else {
                continue;
            };
            // `pushed:NAME`, `sha256:HEX`: content in the artifact store, which the
            // coordinator resolves; not a folder here.
            if job.kind == "prepare" && *key == "trainset" {
                match TrainsetRef::parse(path) {
                    None => {}
                    Some(Ok(_)) => continue,
                    Some(Err(msg)) => {
                        return Err(SpecError::new(
                            &file,
                            format!("job `{}`: params.{key}: {msg}", job.name),
                        )
                        .with_path(format!("params.{key}"))
                        .with_job(job.name.clone()))
                    }
                }
            }
            let result = resolved
                .entry(path.to_string())
                .or_insert_with(|| resolve_dir(base_dir, path))
                .clone();
            match result {
                Ok(absolute) => job.params[*key] = serde_json::Value::String(absolute),
                Err(msg) => {
                    return Err(SpecError::new(
                        &file,
                        format!("job `{}`: params.{key}: {msg}", job.name),
                    )
                    .with_path(format!("params.{key}"))
                    .with_job(job.name.clone()))
                }
            }
        }
    }
    Ok(())
}

fn resolve_dir(base_dir: &Path, path: &str) -> Result<String, String> {
    let joined = base_dir.join(path);
    let shown = if Path::new(path).is_absolute() {
        format!("`{path}`")
    } else {
        format!("`{path}` (`{}`)", joined.display())
    };
    match std::fs::metadata(&joined) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{shown} does not exist"))
        }
        Err(e) => return Err(format!("{shown}: {e}")),
        Ok(meta) if !meta.is_dir() => return Err(format!("{shown} is not a directory")),
        Ok(_) => {}
    }
    let absolute = std::fs::canonicalize(&joined).map_err(|e| format!("{shown}: {e}"))?;
    absolute
        .into_os_string()
        .into_string()
        .map_err(|p| format!("{shown}: `{}` is not valid UTF-8", p.to_string_lossy()))
}

/// Reads a `--set key=value` argument.
pub fn parse_set(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected `key=value`, got `{arg}`")),
    }
}
