//! Sweeps: which job field a parameter sets, the points of a grid or random search, and
//! the expansion of an experiment file into its jobs.

use std::collections::HashMap;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Number, Value};

use super::file::{Domain, Draft, ExperimentFile, JobDefaults, Method, RangeFile, SweepFile};
use super::{JobSpec, SpecError, MAX_JOBS};

/// The job field a sweep parameter sets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    Priority,
    MaxAttempts,
    Gpus,
    GpuMemGb,
    Backend,
    Label(String),
    /// `params.a.b` → `["a", "b"]`.
    Param(Vec<String>),
}

const SWEEPABLE: &str = "priority, max_attempts, requires.gpus, requires.gpu_mem_gb, \
                         requires.backend, requires.labels.<name>, params.<field>";

impl Target {
    /// `Err` holds the sentence after ``job `NAME` ``.
    fn parse(path: &str) -> Result<Target, String> {
        let target = match path {
            "priority" => Target::Priority,
            "max_attempts" => Target::MaxAttempts,
            "requires.gpus" => Target::Gpus,
            "requires.gpu_mem_gb" => Target::GpuMemGb,
            "requires.backend" => Target::Backend,
            "name" | "kind" | "needs" | "sweep" => {
                return Err(format!("`{path}` cannot be swept (sweepable: {SWEEPABLE})"))
            }
            _ => {
                if let Some(label) = path
                    .strip_prefix("requires.labels.")
                    .filter(|l| !l.is_empty())
                {
                    Target::Label(label.to_string())
                } else if let Some(rest) = path.strip_prefix("params.") {
                    let segments: Vec<String> = rest.split('.').map(str::to_string).collect();
                    if segments.iter().any(String::is_empty) {
                        return Err(format!("`{path}` is not a valid field path"));
                    }
                    Target::Param(segments)
                } else {
                    return Err(format!("has no field `{path}` (sweepable: {SWEEPABLE})"));
                }
            }
        };
        Ok(target)
    }

    /// Sets this field of `job` to `value`.
    fn apply(&self, job: &mut JobSpec, value: &Value) -> Result<(), String> {
        fn not_a(what: &str, value: &Value) -> String {
            format!("value `{value}` is not {what}")
        }
        match self {
            Target::Priority => {
                job.priority = value.as_i64().ok_or_else(|| not_a("an integer", value))?;
            }
            Target::MaxAttempts => {
                job.max_attempts = value
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| not_a("a count", value))?;
            }
            Target::Gpus => {
                job.requires.gpus = value
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| not_a("a GPU count", value))?;
            }
            Target::GpuMemGb => {
                job.requires.gpu_mem_gb = value.as_f64().ok_or_else(|| not_a("a number", value))?;
            }
            Target::Backend => {
                job.requires.backend = value
                    .as_str()
                    .ok_or_else(|| not_a("a string", value))?
                    .to_string();
            }
            Target::Label(key) => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(not_a("a string", value)),
                };
                job.requires.labels.insert(key.clone(), text);
            }
            Target::Param(segments) => {
                let params = job
                    .params
                    .as_object_mut()
                    .ok_or_else(|| "params is not a mapping".to_string())?;
                set_param(params, segments, value.clone())?;
            }
        }
        Ok(())
    }
}

fn set_param(
    params: &mut Map<String, Value>,
    segments: &[String],
    value: Value,
) -> Result<(), String> {
    let (last, parents) = segments.split_last().expect("at least one segment");
    let mut node = params;
    for (i, segment) in parents.iter().enumerate() {
        let child = node
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        node = child
            .as_object_mut()
            .ok_or_else(|| format!("`params.{}` is not a mapping", segments[..=i].join(".")))?;
    }
    node.insert(last.clone(), value);
    Ok(())
}

/// Whether `kind`'s params type has a field `field`. Asked of the type itself through
/// `kinds::validate`, which (with `deny_unknown_fields`) names an unknown field first.
fn kind_has_param(kind: &str, field: &str, cache: &mut HashMap<(String, String), bool>) -> bool {
    *cache
        .entry((kind.to_string(), field.to_string()))
        .or_insert_with(|| {
            let mut probe = Map::new();
            probe.insert(field.to_string(), Value::Null);
            match atelier_proto::kinds::validate(kind, &Value::Object(probe)) {
                Ok(()) => true,
                Err(e) => !e.contains(&format!("unknown field `{field}`")),
            }
        })
}

/// A sweep checked and sized, its points not drawn yet.
pub(crate) struct Plan<'a> {
    /// Where the sweep is written: `sweep` or `jobs[3].sweep`.
    at: String,
    targets: Vec<(&'a str, Target)>,
    domains: Vec<&'a Domain>,
    method: Method,
    seed: u64,
    /// Number of points.
    pub count: usize,
}

impl<'a> Plan<'a> {
    /// `first_job` is named in the error when a parameter is no job field at all.
    pub fn new(
        file: &str,
        at: String,
        sweep: &'a SweepFile,
        first_job: &str,
    ) -> Result<Plan<'a>, SpecError> {
        let err = |sub: &str, msg: String| {
            let path = if sub.is_empty() {
                at.clone()
            } else {
                format!("{at}.{sub}")
            };
            SpecError::new(file, format!("{path}: {msg}")).with_path(path)
        };
        if sweep.parameters.0.is_empty() {
            return Err(err(
                "parameters",
                "a sweep needs at least one parameter".into(),
            ));
        }
        let mut targets = Vec::new();
        let mut domains = Vec::new();
        for (path, domain) in &sweep.parameters.0 {
            let sub = format!("parameters.{path}");
            match domain {
                Domain::List(values) if values.is_empty() => {
                    return Err(err(&sub, "empty list of values".into()));
                }
                Domain::List(_) => {}
                Domain::Range(_) if sweep.method == Method::Grid => {
                    return Err(err(
                        &sub,
                        "a range {min, max} needs `method: random`; a grid takes a list of values"
                            .into(),
                    ));
                }
                Domain::Range(range) => check_range(range).map_err(|m| err(&sub, m))?,
            }
            let target = Target::parse(path).map_err(|m| {
                SpecError::new(file, format!("sweep over `{path}`: job `{first_job}` {m}"))
                    .with_path(format!("{at}.{sub}"))
                    .with_job(first_job)
            })?;
            targets.push((path.as_str(), target));
            domains.push(domain);
        }
        let count = match sweep.method {
            Method::Grid => {
                if sweep.samples.is_some() || sweep.seed.is_some() {
                    return Err(err(
                        "",
                        "`samples` and `seed` are for `method: random` only".into(),
                    ));
                }
                let mut count: usize = 1;
                for domain in &domains {
                    let Domain::List(values) = domain else {
                        unreachable!("checked above")
                    };
                    count = count.saturating_mul(values.len());
                }
                count
            }
            Method::Random => {
                let samples = sweep
                    .samples
                    .ok_or_else(|| err("samples", "`method: random` needs `samples`".into()))?;
                if samples == 0 {
                    return Err(err("samples", "must be at least 1".into()));
                }
                usize::try_from(samples).unwrap_or(usize::MAX)
            }
        };
        if count > MAX_JOBS {
            return Err(err(
                "",
                format!("the sweep has {count} points, more than the limit of {MAX_JOBS} jobs"),
            ));
        }
        Ok(Plan {
            at,
            targets,
            domains,
            method: sweep.method,
            seed: sweep.seed.unwrap_or(0),
            count,
        })
    }

    /// Checks that every parameter names a field `job` has.
    fn check_job(
        &self,
        file: &str,
        job: &Draft,
        cache: &mut HashMap<(String, String), bool>,
    ) -> Result<(), SpecError> {
        for (path, target) in &self.targets {
            if let Target::Param(segments) = target {
                let kind = job.kind.as_deref().unwrap_or("");
                if !kind_has_param(kind, &segments[0], cache) {
                    return Err(SpecError::new(
                        file,
                        format!(
                            "sweep over `{path}`: job `{}` (kind {kind}) has no field `{}`",
                            job.name, segments[0]
                        ),
                    )
                    .with_path(format!("{}.parameters.{path}", self.at))
                    .with_job(job.name.clone()));
                }
            }
        }
        Ok(())
    }

    /// The points, each a value per parameter in the order written. Grid: the cartesian
    /// product, the last parameter varying fastest. Random: ChaCha8 seeded with `seed`,
    /// parameters drawn in order, so a seed always gives the same points.
    fn points(&self) -> Vec<Vec<Value>> {
        let mut points = Vec::with_capacity(self.count);
        match self.method {
            Method::Grid => {
                let lists: Vec<&Vec<Value>> = self
                    .domains
                    .iter()
                    .map(|d| match d {
                        Domain::List(values) => values,
                        Domain::Range(_) => unreachable!("grid ranges refused in Plan::new"),
                    })
                    .collect();
                let mut index = vec![0usize; lists.len()];
                for _ in 0..self.count {
                    points.push(
                        index
                            .iter()
                            .zip(&lists)
                            .map(|(&i, l)| l[i].clone())
                            .collect(),
                    );
                    for k in (0..index.len()).rev() {
                        index[k] += 1;
                        if index[k] < lists[k].len() {
                            break;
                        }
                        index[k] = 0;
                    }
                }
            }
            Method::Random => {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                for _ in 0..self.count {
                    points.push(self.domains.iter().map(|d| sample(d, &mut rng)).collect());
                }
            }
        }
        points
    }
}

fn check_range(range: &RangeFile) -> Result<(), String> {
    let (min, max) = (
        range.min.as_f64().unwrap_or(f64::NAN),
        range.max.as_f64().unwrap_or(f64::NAN),
    );
    if !min.is_finite() || !max.is_finite() {
        return Err("min and max must be finite numbers".into());
    }
    if min > max {
        return Err(format!(
            "min {} is greater than max {}",
            range.min, range.max
        ));
    }
    if range.int && (range.min.as_i64().is_none() || range.max.as_i64().is_none()) {
        return Err("`int: true` needs integer min and max".into());
    }
    if range.log && min <= 0.0 {
        return Err(format!("`log: true` needs min > 0, got {}", range.min));
    }
    Ok(())
}

/// Uniform in [0, 1), from the top 53 bits.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform in 0..n (n >= 1), by rejection so that no value is favoured.
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    let rejected = (u64::MAX % n + 1) % n; // 2^64 mod n
    loop {
        let v = rng.next_u64();
        if rejected == 0 || v < u64::MAX - rejected + 1 {
            return v % n;
        }
    }
}

/// Drawn with our own arithmetic on the raw ChaCha8 stream rather than `rand`'s
/// distributions, so the points of a seed do not change with the `rand` version.
fn sample(domain: &Domain, rng: &mut ChaCha8Rng) -> Value {
    match domain {
        Domain::List(values) => values[below(rng, values.len() as u64) as usize].clone(),
        Domain::Range(r) if r.int => {
            let (min, max) = (r.min.as_i64().unwrap_or(0), r.max.as_i64().unwrap_or(0));
            let v = if r.log {
                let (lo, hi) = ((min as f64).ln(), ((max as f64) + 1.0).ln());
                ((lo + unit(rng) * (hi - lo)).exp().floor() as i64).clamp(min, max)
            } else {
                let span = (i128::from(max) - i128::from(min) + 1) as u128;
                if span > u128::from(u64::MAX) {
                    rng.next_u64() as i64
                } else {
                    (i128::from(min) + i128::from(below(rng, span as u64))) as i64
                }
            };
            Value::Number(v.into())
        }
        Domain::Range(r) => {
            let (min, max) = (r.min.as_f64().unwrap_or(0.0), r.max.as_f64().unwrap_or(0.0));
            let v = if r.log {
                let (lo, hi) = (min.ln(), max.ln());
                (lo + unit(rng) * (hi - lo)).exp()
            } else {
                min + unit(rng) * (max - min)
            };
            Value::Number(Number::from_f64(v.clamp(min, max)).expect("finite"))
        }
    }
}

/// Zero-padded to the width of `count`: 20 points → `00`..`19`.
fn suffix(i: usize, count: usize) -> String {
    let width = count.to_string().len();
    format!("{i:0width$}")
}

/// Expands the file into its jobs: defaults merged, the top-level sweep replicating the
/// job list, per-job sweeps expanding single jobs, `needs` wired to expanded names.
/// Returns each job with the index of the `jobs[]` entry it came from.
pub(crate) fn expand(
    file: &str,
    model: &ExperimentFile,
) -> Result<(Vec<JobSpec>, Vec<usize>), SpecError> {
    if model.jobs.is_empty() {
        return Err(SpecError::new(file, "jobs: at least one job is required").with_path("jobs"));
    }
    let no_defaults = JobDefaults::default();
    let defaults = model.defaults.as_ref().unwrap_or(&no_defaults);
    let drafts: Vec<Draft> = model
        .jobs
        .iter()
        .map(|j| j.with_defaults(defaults))
        .collect();

    // Names, kinds and needs of the jobs as written.
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, job) in drafts.iter().enumerate() {
        let origin = format!("jobs[{i}]");
        super::validate::check_name(&job.name)
            .map_err(|m| SpecError::for_job(file, &job.name, &origin, Some("name"), m))?;
        if let Some(first) = by_name.insert(&job.name, i) {
            return Err(SpecError::for_job(
                file,
                &job.name,
                &origin,
                Some("name"),
                format_args!("the name is already used by jobs[{first}]"),
            ));
        }
        match job.kind.as_deref() {
            None => {
                return Err(SpecError::for_job(
                    file,
                    &job.name,
                    &origin,
                    Some("kind"),
                    "missing; set `kind` on the job or under `defaults`",
                ))
            }
            Some(kind) if !atelier_proto::kinds::KINDS.contains(&kind) => {
                return Err(SpecError::for_job(
                    file,
                    &job.name,
                    &origin,
                    Some("kind"),
                    format_args!(
                        "unknown job kind `{kind}` (known: {})",
                        atelier_proto::kinds::KINDS.join(", ")
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    let mut needs: Vec<Vec<usize>> = Vec::with_capacity(drafts.len());
    for (i, job) in drafts.iter().enumerate() {
        let mut resolved = Vec::with_capacity(job.needs.len());
        for (k, need) in job.needs.iter().enumerate() {
            let &j = by_name.get(need.as_str()).ok_or_else(|| {
                SpecError::for_job(
                    file,
                    &job.name,
                    &format!("jobs[{i}]"),
                    Some(&format!("needs[{k}]")),
                    format_args!("`{need}` is not a job of this experiment"),
                )
            })?;
            if !resolved.contains(&j) {
                resolved.push(j);
            }
        }
        needs.push(resolved);
    }

    // Sweeps: checked against every job they touch, and sized before anything is drawn.
    let mut cache = HashMap::new();
    let top = match &model.sweep {
        Some(sweep) => {
            let plan = Plan::new(file, "sweep".into(), sweep, &drafts[0].name)?;
            for job in &drafts {
                plan.check_job(file, job, &mut cache)?;
            }
            Some(plan)
        }
        None => None,
    };
    let mut own: Vec<Option<Plan>> = Vec::with_capacity(drafts.len());
    for (i, (job, written)) in drafts.iter().zip(&model.jobs).enumerate() {
        own.push(match &written.sweep {
            Some(sweep) => {
                let plan = Plan::new(file, format!("jobs[{i}].sweep"), sweep, &job.name)?;
                plan.check_job(file, job, &mut cache)?;
                if let Some(top) = &top {
                    if let Some((path, _)) = plan.targets.iter().find(|(p, _)| top.targets.iter().any(|(q, _)| p == q)) {
                        return Err(SpecError::new(
                            file,
                            format!("sweep over `{path}`: swept both by the top-level sweep and by job `{}`", job.name),
                        )
                        .with_path(format!("jobs[{i}].sweep.parameters.{path}"))
                        .with_job(job.name.clone()));
                    }
                }
                Some(plan)
            }
            None => None,
        });
    }
    let replicas = top.as_ref().map_or(1, |p| p.count);
    let counts: Vec<usize> = own
        .iter()
        .map(|p| p.as_ref().map_or(1, |p| p.count))
        .collect();
    let per_replica = counts.iter().fold(0usize, |a, &c| a.saturating_add(c));
    let total = replicas.saturating_mul(per_replica);
    if total > MAX_JOBS {
        return Err(SpecError::new(
            file,
            format!("the experiment expands to {total} jobs, more than the limit of {MAX_JOBS}"),
        ));
    }
    // Where the expansions of job j in replica r start in the output.
    let mut first = Vec::with_capacity(counts.len());
    let mut offset = 0;
    for &c in &counts {
        first.push(offset);
        offset += c;
    }

    let top_points = top.as_ref().map(Plan::points);
    let own_points: Vec<Option<Vec<Vec<Value>>>> =
        own.iter().map(|p| p.as_ref().map(Plan::points)).collect();

    let mut jobs: Vec<JobSpec> = Vec::with_capacity(total);
    let mut origins: Vec<usize> = Vec::with_capacity(total);
    for r in 0..replicas {
        for (j, draft) in drafts.iter().enumerate() {
            let mut base = JobSpec {
                name: draft.name.clone(),
                kind: draft.kind.clone().unwrap_or_default(),
                params: Value::Object(draft.params.clone()),
                priority: draft.priority,
                max_attempts: draft.max_attempts,
                requires: draft.requires.clone(),
                needs: Vec::new(),
                sweep_point: None,
            };
            let mut point_values = Map::new();
            if let (Some(plan), Some(points)) = (&top, &top_points) {
                base.name = format!("{}-{}", draft.name, suffix(r, replicas));
                apply_point(file, plan, &points[r], &mut base, &mut point_values)?;
            }
            match (&own[j], &own_points[j]) {
                (Some(plan), Some(points)) => {
                    for (p, point) in points.iter().enumerate() {
                        let mut job = base.clone();
                        let mut values = point_values.clone();
                        job.name = format!("{}-{}", base.name, suffix(p, plan.count));
                        apply_point(file, plan, point, &mut job, &mut values)?;
                        job.sweep_point = Some(values);
                        jobs.push(job);
                        origins.push(j);
                    }
                }
                _ => {
                    if !point_values.is_empty() {
                        base.sweep_point = Some(point_values);
                    }
                    jobs.push(base);
                    origins.push(j);
                }
            }
        }
    }

    // A job needs every expansion of each job it names, within its own replica.
    for r in 0..replicas {
        for (j, &c) in counts.iter().enumerate() {
            let start = r * per_replica + first[j];
            if needs[j].is_empty() {
                continue;
            }
            let names: Vec<String> = needs[j]
                .iter()
                .flat_map(|&n| {
                    let from = r * per_replica + first[n];
                    from..from + counts[n]
                })
                .map(|k| jobs[k].name.clone())
                .collect();
            for job in &mut jobs[start..start + c] {
                job.needs.clone_from(&names);
            }
        }
    }
    Ok((jobs, origins))
}

fn apply_point(
    file: &str,
    plan: &Plan,
    point: &[Value],
    job: &mut JobSpec,
    values: &mut Map<String, Value>,
) -> Result<(), SpecError> {
    for ((path, target), value) in plan.targets.iter().zip(point) {
        target.apply(job, value).map_err(|m| {
            SpecError::new(
                file,
                format!("sweep over `{path}`: job `{}`: {m}", job.name),
            )
            .with_path(format!("{}.parameters.{path}", plan.at))
            .with_job(job.name.clone())
        })?;
        values.insert((*path).to_string(), value.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_width_follows_count() {
        assert_eq!(suffix(0, 20), "00");
        assert_eq!(suffix(19, 20), "19");
        assert_eq!(suffix(3, 5), "3");
        assert_eq!(suffix(7, 100), "007");
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = below(&mut rng, 7) as usize;
            seen[v] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("params.lr").unwrap(),
            Target::Param(vec!["lr".into()])
        );
        assert_eq!(
            Target::parse("requires.labels.gpu").unwrap(),
            Target::Label("gpu".into())
        );
        assert!(Target::parse("resolution")
            .unwrap_err()
            .contains("has no field `resolution`"));
        assert!(Target::parse("name")
            .unwrap_err()
            .contains("cannot be swept"));
        assert!(Target::parse("params.").is_err());
    }
}
