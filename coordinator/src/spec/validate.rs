//! Checks on expanded jobs, shared by `parse_experiment` and the gRPC handlers (which
//! receive jobs already expanded by a client and trust nothing about them).

use std::collections::HashMap;

use super::{JobSpec, SpecError, MAX_JOBS};

/// Backends a job may ask for; `any` places it on any worker.
pub const BACKENDS: &[&str] = &["any", "cpu", "cuda"];
/// More GPUs than any one box has; a job asking for more could never be placed.
pub const MAX_GPUS: u32 = 64;
/// Retries beyond this are a mistake (a job failing 100 times will fail the 101st).
pub const MAX_ATTEMPTS: u32 = 100;

/// Checks a list of expanded jobs: each job's fields (kind known, params valid for the
/// kind, limits), names unique, `needs` naming jobs of the list, no dependency cycle,
/// at most [`MAX_JOBS`]. Errors name jobs by their index in `jobs` (`jobs[i]`).
pub fn validate_jobs(file: &str, jobs: &[JobSpec]) -> Result<(), SpecError> {
    validate_with(file, jobs, &|i| format!("jobs[{i}]"))
}

/// `origin(i)`: where job `i` was written, for messages (`jobs[0]` for all the
/// expansions of the first job of a file).
pub(crate) fn validate_with(
    file: &str,
    jobs: &[JobSpec],
    origin: &dyn Fn(usize) -> String,
) -> Result<(), SpecError> {
    if jobs.is_empty() {
        return Err(SpecError::new(file, "jobs: at least one job is required").with_path("jobs"));
    }
    if jobs.len() > MAX_JOBS {
        return Err(SpecError::new(
            file,
            format!("{} jobs, more than the limit of {MAX_JOBS}", jobs.len()),
        )
        .with_path("jobs"));
    }
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let fail = |field: &str, msg: String| {
            SpecError::for_job(file, &job.name, &origin(i), Some(field), msg)
        };
        check_name(&job.name).map_err(|m| fail("name", m))?;
        if let Some(first) = by_name.insert(&job.name, i) {
            return Err(fail(
                "name",
                format!(
                    "`{}` is also the name of a job from {}",
                    job.name,
                    origin(first)
                ),
            ));
        }
        check_job(job).map_err(|(field, msg)| fail(&field, msg))?;
    }
    for (i, job) in jobs.iter().enumerate() {
        for (k, need) in job.needs.iter().enumerate() {
            if !by_name.contains_key(need.as_str()) {
                return Err(SpecError::for_job(
                    file,
                    &job.name,
                    &origin(i),
                    Some(&format!("needs[{k}]")),
                    format_args!("`{need}` is not a job of this experiment"),
                ));
            }
        }
    }
    for (i, job) in jobs.iter().enumerate() {
        check_dataset(job, jobs, &by_name)
            .and_then(|()| check_eval_inputs(job, jobs, &by_name))
            .map_err(|(field, msg)| {
                SpecError::for_job(file, &job.name, &origin(i), Some(&field), msg)
            })?;
    }
    if let Some(cycle) = find_cycle(jobs, &by_name) {
        let names: Vec<&str> = cycle.iter().map(|&i| jobs[i].name.as_str()).collect();
        let first = cycle[0];
        return Err(SpecError::new(
            file,
            format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
        )
        .with_path(format!("{}.needs", origin(first)))
        .with_job(jobs[first].name.clone()));
    }
    Ok(())
}

/// Job and experiment names: non-empty `[A-Za-z0-9._-]+`, at most 200 characters (they
/// end up in paths, URLs and terminal tables).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > 200 {
        return Err(format!("`{name}` is longer than 200 characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{name}` contains `{bad}`; names use letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

/// The field a params error is about, when serde did not say (`invalid type: string
/// "abc", expected u32`): the one field that alone gives the same error.
fn param_field<'a>(kind: &str, params: &'a serde_json::Value, error: &str) -> Option<&'a str> {
    // serde's "invalid type: ...", "invalid value: ..."; other errors name their field.
    if !error.starts_with("invalid ") {
        return None;
    }
    params.as_object()?.iter().find_map(|(key, value)| {
        let alone = serde_json::json!({ key: value });
        let same = atelier_proto::kinds::validate(kind, &alone)
            .err()
            .as_deref()
            == Some(error);
        same.then_some(key.as_str())
    })
}

/// One job's own fields; `Err((field, message))`.
fn check_job(job: &JobSpec) -> Result<(), (String, String)> {
    if !atelier_proto::kinds::KINDS.contains(&job.kind.as_str()) {
        return Err((
            "kind".into(),
            format!(
                "unknown job kind `{}` (known: {})",
                job.kind,
                atelier_proto::kinds::KINDS.join(", ")
            ),
        ));
    }
    if !job.params.is_object() {
        return Err(("params".into(), "expected a mapping".into()));
    }
    if let Err(e) = atelier_proto::kinds::validate(&job.kind, &job.params) {
        let field = param_field(&job.kind, &job.params, &e)
            .map_or_else(|| "params".to_string(), |key| format!("params.{key}"));
        return Err((field, e));
    }
    if !(1..=MAX_ATTEMPTS).contains(&job.max_attempts) {
        return Err((
            "max_attempts".into(),
            format!("{} is out of range (1..={MAX_ATTEMPTS})", job.max_attempts),
        ));
    }
    let r = &job.requires;
    if r.gpus > MAX_GPUS {
        return Err((
            "requires.gpus".into(),
            format!("{} is out of range (0..={MAX_GPUS})", r.gpus),
        ));
    }
    if !(r.gpu_mem_gb.is_finite() && r.gpu_mem_gb >= 0.0) {
        return Err((
            "requires.gpu_mem_gb".into(),
            format!("{} must be a number >= 0", r.gpu_mem_gb),
        ));
    }
    if !BACKENDS.contains(&r.backend.as_str()) {
        return Err((
            "requires.backend".into(),
            format!(
                "unknown backend `{}` (expected one of {})",
                r.backend,
                BACKENDS.join(", ")
            ),
        ));
    }
    if let Some(key) = r.labels.keys().find(|k| k.is_empty()) {
        return Err((
            "requires.labels".into(),
            format!("empty label name `{key}`"),
        ));
    }
    check_train_backend(job)
}

/// A `train` job without `params.trainset` trains on the dataset of the `prepare`
/// job it needs: there must be exactly one. `needs` are known to name jobs of `jobs`.
fn check_dataset(
    job: &JobSpec,
    jobs: &[JobSpec],
    by_name: &HashMap<&str, usize>,
) -> Result<(), (String, String)> {
    if job.kind != "train" || job.params.get("trainset").is_some_and(|t| !t.is_null()) {
        return Ok(());
    }
    let prepares: Vec<&str> = job
        .needs
        .iter()
        .filter(|n| jobs[by_name[n.as_str()]].kind == "prepare")
        .map(String::as_str)
        .collect();
    match prepares.len() {
        1 => Ok(()),
        0 => Err((
            "params.trainset".into(),
            "a train job needs a dataset: set `trainset` (a folder) or add the `prepare` job \
             whose dataset it trains on to `needs:`"
                .into(),
        )),
        _ => Err((
            "needs".into(),
            format!(
                "a train job without `params.trainset` trains on the dataset of one `prepare` \
                 job, but it needs {}: {}",
                prepares.len(),
                prepares.join(", ")
            ),
        )),
    }
}

/// A `sample` job takes its adapter from at most one `train` job; an `eval` job
/// scores the images of one or more `sample` jobs against the held-out images of
/// one `prepare` job. `needs` are known to name jobs of `jobs`.
fn check_eval_inputs(
    job: &JobSpec,
    jobs: &[JobSpec],
    by_name: &HashMap<&str, usize>,
) -> Result<(), (String, String)> {
    let needed = |kind: &str| -> Vec<&str> {
        job.needs
            .iter()
            .filter(|n| jobs[by_name[n.as_str()]].kind == kind)
            .map(String::as_str)
            .collect()
    };
    match job.kind.as_str() {
        "sample" => {
            let trains = needed("train");
            if trains.len() > 1 {
                return Err((
                    "needs".into(),
                    format!(
                        "a sample job applies the adapter of at most one `train` job, but it \
                         needs {}: {}",
                        trains.len(),
                        trains.join(", ")
                    ),
                ));
            }
        }
        "eval" => {
            if needed("sample").is_empty() {
                return Err((
                    "needs".into(),
                    "an eval job scores the images of the `sample` jobs it needs: add at least \
                     one to `needs:`"
                        .into(),
                ));
            }
            let prepares = needed("prepare");
            if prepares.len() != 1 {
                return Err((
                    "needs".into(),
                    format!(
                        "an eval job compares with the held-out images of one `prepare` job \
                         (`holdout: N`), but it needs {}{}",
                        prepares.len(),
                        if prepares.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", prepares.join(", "))
                        }
                    ),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Kinds that compute on the worker's backend (`params.backend`).
const BACKEND_KINDS: &[&str] = &["train", "sample", "eval"];

/// A job on `cuda` must be given a GPU by the scheduler.
fn check_train_backend(job: &JobSpec) -> Result<(), (String, String)> {
    if !BACKEND_KINDS.contains(&job.kind.as_str())
        || job.params.get("backend").and_then(|b| b.as_str()) != Some("cuda")
    {
        return Ok(());
    }
    if job.requires.gpus == 0 || job.requires.backend == "cpu" {
        return Err((
            "params.backend".into(),
            format!(
                "cuda needs a GPU: add `requires: {{gpus: 1, backend: cuda}}` (it has gpus: {}, \
                 backend: {})",
                job.requires.gpus, job.requires.backend
            ),
        ));
    }
    Ok(())
}

/// A dependency cycle as job indices in `needs` order, if there is one. Iterative DFS,
/// so 100,000 jobs in a chain do not overflow the stack.
fn find_cycle(jobs: &[JobSpec], by_name: &HashMap<&str, usize>) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let edges: Vec<Vec<usize>> = jobs
        .iter()
        .map(|j| j.needs.iter().map(|n| by_name[n.as_str()]).collect())
        .collect();
    let mut mark = vec![Mark::New; jobs.len()];
    for root in 0..jobs.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, index of the next edge to follow)
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&child) = edges[node].get(*next) {
                *next += 1;
                match mark[child] {
                    Mark::New => {
                        mark[child] = Mark::OnPath;
                        stack.push((child, 0));
                    }
                    Mark::OnPath => {
                        let at = stack
                            .iter()
                            .position(|&(n, _)| n == child)
                            .expect("on path");
                        return Some(stack[at..].iter().map(|&(n, _)| n).collect());
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}
