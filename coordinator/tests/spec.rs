//! Experiment files: parsing, sweeps, vars, `--set`, validation and their messages.

#![allow(clippy::result_large_err)] // helpers return `SpecError` as the API does

use std::collections::BTreeMap;

use atelier_coordinator::spec::{
    parse_experiment, parse_set, resolve_paths, validate_jobs, ExperimentSpec, JobSpec,
    Requirements, SpecError, DEFAULT_MAX_ATTEMPTS,
};
use serde_json::json;

fn parse(source: &str) -> Result<ExperimentSpec, SpecError> {
    parse_experiment(source, "exp.yaml", &[])
}

fn parse_with(source: &str, sets: &[&str]) -> Result<ExperimentSpec, SpecError> {
    let sets: Vec<(String, String)> = sets.iter().map(|s| parse_set(s).unwrap()).collect();
    parse_experiment(source, "exp.yaml", &sets)
}

fn err(source: &str) -> SpecError {
    match parse(source) {
        Ok(spec) => panic!("expected an error, got {} jobs", spec.jobs.len()),
        Err(e) => e,
    }
}

fn names(spec: &ExperimentSpec) -> Vec<&str> {
    spec.jobs.iter().map(|j| j.name.as_str()).collect()
}

fn job<'a>(spec: &'a ExperimentSpec, name: &str) -> &'a JobSpec {
    spec.jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job `{name}` in {:?}", names(spec)))
}

const MINIMAL: &str = "\
name: demo
jobs:
  - name: prep
    kind: prepare
    params: {trainset: ./trainsets/demo}
";

#[test]
fn minimal_file_gets_the_defaults() {
    let spec = parse(MINIMAL).unwrap();
    assert_eq!(spec.name, "demo");
    assert_eq!(spec.description, None);
    assert_eq!(spec.source, MINIMAL);
    let j = &spec.jobs[0];
    assert_eq!(j.name, "prep");
    assert_eq!(j.kind, "prepare");
    assert_eq!(j.params, json!({"trainset": "./trainsets/demo"}));
    assert_eq!(j.priority, 0);
    assert_eq!(j.max_attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(j.requires, Requirements::default());
    assert_eq!(j.requires.backend, "any");
    assert!(j.needs.is_empty());
    assert_eq!(j.sweep_point, None);
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = err("name: demo\njobs:\n  - name: a\n    kind: noop\n   params: {}\n");
    assert_eq!((e.line, e.column), (Some(5), Some(4)), "{e}");
    assert!(e.message.contains("did not find expected"), "{e}");
    assert!(
        e.to_string().starts_with("`exp.yaml` line 5 column 4: "),
        "{e}"
    );
    assert!(!e.to_string().contains('\n'));

    let e = err("name: demo\njobs: [\n");
    assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
}

#[test]
fn unknown_fields_are_named_with_their_line() {
    let e = err("name: demo\njobs:\n  - name: a\n    kind: noop\n    prioirty: 3\n");
    assert!(e.message.contains("unknown field `prioirty`"), "{e}");
    assert!(e.message.contains("expected one of"), "{e}");
    assert_eq!(e.line, Some(5), "{e}");
    assert_eq!(e.path.as_deref(), Some("jobs[0]"));

    let e = err("name: demo\nversion: 2\njobs: []\n");
    assert!(e.message.contains("unknown field `version`"), "{e}");
    assert_eq!(e.line, Some(2));

    let e = err("name: d\njobs:\n  - name: a\n    kind: noop\n    requires: {gpu: 1}\n");
    assert!(e.message.contains("unknown field `gpu`"), "{e}");
    assert_eq!(e.path.as_deref(), Some("jobs[0].requires"));

    let e = err("name: d\ndefaults: {name: x}\njobs:\n  - {name: a, kind: noop}\n");
    assert!(e.message.contains("unknown field `name`"), "{e}");

    let e = err("name: d\njobs:\n  - {name: a, kind: noop}\nsweep: {parameters: {priority: {min: 0, max: 1, step: 1}}, method: random, samples: 1}\n");
    assert!(e.message.contains("unknown field `step`"), "{e}");

    // Still found, with its line, when `--set` rewrote the document.
    let e = parse_with(
        "name: d\njobs:\n  - name: a\n    kind: noop\n    prioirty: 3\n",
        &["name=e"],
    )
    .unwrap_err();
    assert!(e.message.contains("unknown field `prioirty`"), "{e}");
    assert_eq!(e.line, Some(5), "{e}");
}

#[test]
fn unknown_params_field_names_the_job_and_field() {
    let e = err("name: d\njobs:\n  - name: prep\n    kind: prepare\n    params: {trainset: x, resolutoin: 64}\n");
    assert!(
        e.to_string().starts_with(
            "`exp.yaml`: job `prep` (jobs[0]): params: unknown field `resolutoin`, expected one of `trainset`, `resolution`"
        ),
        "{e}"
    );
    assert_eq!(e.job.as_deref(), Some("prep"));
    assert_eq!(e.path.as_deref(), Some("jobs[0].params"));

    // After expansion the job is named by its expanded name and its origin.
    let e = err("name: d\njobs:\n  - name: prep\n    kind: prepare\n    params: {trainset: x, resolutoin: 64}\n    sweep: {parameters: {params.resolution: [32, 64, 128, 256]}}\n");
    assert!(
        e.to_string()
            .starts_with("`exp.yaml`: job `prep-0` (jobs[0]): params: unknown field `resolutoin`"),
        "{e}"
    );
}

#[test]
fn field_errors() {
    let job = |extra: &str| format!("name: d\njobs:\n  - name: j\n    kind: noop\n{extra}");
    let cases = [
        ("    kind: evaluate\n", "unknown job kind `evaluate`"),
        (
            "    params: {seconds: -1}\n",
            "params: seconds -1 is out of range",
        ),
        (
            "    max_attempts: 0\n",
            "max_attempts: 0 is out of range (1..=100)",
        ),
        (
            "    max_attempts: 101\n",
            "max_attempts: 101 is out of range",
        ),
        (
            "    requires: {gpus: 65}\n",
            "requires.gpus: 65 is out of range (0..=64)",
        ),
        (
            "    requires: {gpu_mem_gb: -1}\n",
            "requires.gpu_mem_gb: -1 must be a number >= 0",
        ),
        ("    requires: {backend: rocm}\n", "unknown backend `rocm`"),
        (
            "    needs: [nope]\n",
            "needs[0]: `nope` is not a job of this experiment",
        ),
        ("    priority: 1.5\n", "priority"),
    ];
    for (extra, expected) in cases {
        // `kind: evaluate` replaces the `kind: noop` line.
        let source = if extra.contains("kind:") {
            format!("name: d\njobs:\n  - name: j\n{extra}")
        } else {
            job(extra)
        };
        let e = parse(&source).expect_err(extra);
        assert!(e.to_string().contains(expected), "{extra:?}: {e}");
    }
    let e = err("name: d\njobs:\n  - name: j\n");
    assert!(e.to_string().contains("kind: missing"), "{e}");

    let ok = parse(&job("    priority: -9223372036854775808\n    max_attempts: 100\n    requires: {gpus: 64, gpu_mem_gb: 79.5, backend: cuda}\n")).unwrap();
    assert_eq!(ok.jobs[0].priority, i64::MIN);
    assert_eq!(ok.jobs[0].requires.gpus, 64);
    assert_eq!(ok.jobs[0].requires.gpu_mem_gb, 79.5);
}

#[test]
fn names_must_be_valid_and_unique() {
    let e = err("name: 'my exp'\njobs:\n  - {name: a, kind: noop}\n");
    assert!(e.to_string().contains("name: `my exp` contains ` `"), "{e}");
    let e = err("name: ''\njobs:\n  - {name: a, kind: noop}\n");
    assert!(e.to_string().contains("name: the name is empty"), "{e}");
    let e = err("name: d\njobs:\n  - {name: a/b, kind: noop}\n");
    assert!(e.to_string().contains("job `a/b` (jobs[0]): name:"), "{e}");
    let e = err("name: d\njobs:\n  - {name: a, kind: noop}\n  - {name: a, kind: noop}\n");
    assert!(e.to_string().contains("already used by jobs[0]"), "{e}");
    assert_eq!(e.path.as_deref(), Some("jobs[1].name"));
    let e = err("name: d\njobs: []\n");
    assert!(e.to_string().contains("at least one job"), "{e}");
    // Unique after expansion: `a` expands into a-0, a-1 and clashes with a job `a-1`.
    let e = err("name: d\njobs:\n  - {name: a, kind: noop, sweep: {parameters: {priority: [1, 2]}}}\n  - {name: a-1, kind: noop}\n");
    assert!(
        e.to_string()
            .contains("`a-1` is also the name of a job from jobs[0]"),
        "{e}"
    );
}

#[test]
fn cycles_are_listed() {
    let e = err("name: d\ndefaults: {kind: noop}\njobs:\n  - {name: a, needs: [b]}\n  - {name: b, needs: [c]}\n  - {name: c, needs: [a]}\n  - {name: e}\n");
    assert_eq!(
        e.to_string(),
        "`exp.yaml`: dependency cycle: a -> b -> c -> a"
    );
    let e = err("name: d\njobs:\n  - {name: a, kind: noop, needs: [a]}\n");
    assert!(e.to_string().contains("dependency cycle: a -> a"), "{e}");
    // A diamond is no cycle.
    parse("name: d\ndefaults: {kind: noop}\njobs:\n  - {name: a}\n  - {name: b, needs: [a]}\n  - {name: c, needs: [a]}\n  - {name: e, needs: [b, c]}\n").unwrap();
}

#[test]
fn too_many_jobs() {
    let list = |n: usize| {
        (0..n)
            .map(|i| (i + 1).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // One sweep too large on its own: refused before any point is drawn.
    let e = err(&format!(
        "name: d\njobs:\n  - {{name: a, kind: noop}}\nsweep:\n  parameters:\n    priority: [{}]\n    params.seconds: [{}]\n",
        list(400),
        list(300)
    ));
    assert!(
        e.to_string()
            .contains("sweep: the sweep has 120000 points, more than the limit of 100000 jobs"),
        "{e}"
    );
    // 40,000 replicas of 3 jobs.
    let e = err(&format!(
        "name: d\ndefaults: {{kind: noop}}\njobs:\n  - {{name: a}}\n  - {{name: b}}\n  - {{name: c}}\nsweep:\n  parameters:\n    priority: [{}]\n    params.seconds: [{}]\n",
        list(400),
        list(100)
    ));
    assert_eq!(
        e.to_string(),
        "`exp.yaml`: the experiment expands to 120000 jobs, more than the limit of 100000"
    );
    let e = err("name: d\njobs:\n  - name: a\n    kind: noop\n    sweep: {method: random, samples: 100001, parameters: {priority: [1]}}\n");
    assert!(e.to_string().contains("100001 points"), "{e}");
}

const GRID: &str = "\
name: grid
defaults:
  kind: prepare
  params: {trainset: ts, dedupe: false}
jobs:
  - name: prep
    sweep:
      parameters:
        params.resolution: [16, 24, 32, 64]
        params.min_images: [1, 2, 3, 4, 5]
";

#[test]
fn grid_is_the_cartesian_product_in_order() {
    let spec = parse(GRID).unwrap();
    assert_eq!(spec.jobs.len(), 20);
    let expected: Vec<String> = (0..20).map(|i| format!("prep-{i:02}")).collect();
    assert_eq!(names(&spec), expected);
    for (i, j) in spec.jobs.iter().enumerate() {
        let res = [16, 24, 32, 64][i / 5];
        let min = i % 5 + 1;
        assert_eq!(
            j.params,
            json!({"trainset": "ts", "dedupe": false, "resolution": res, "min_images": min}),
            "{}",
            j.name
        );
        let point = j.sweep_point.as_ref().unwrap();
        assert_eq!(point.len(), 2);
        assert_eq!(point["params.resolution"], json!(res));
        assert_eq!(point["params.min_images"], json!(min));
    }
}

const RANDOM: &str = "\
name: rnd
jobs:
  - name: n
    kind: noop
    sweep:
      method: random
      seed: 7
      samples: 200
      parameters:
        params.seconds: {min: 1.0e-4, max: 1.0e-3, log: true}
        priority: {min: 0, max: 5, int: true}
        params.artifact: [a, b, c]
        requires.gpu_mem_gb: {min: 8, max: 80}
";

#[test]
fn random_is_reproducible_and_in_bounds() {
    let a = parse(RANDOM).unwrap();
    let b = parse(RANDOM).unwrap();
    assert_eq!(a.jobs, b.jobs);
    assert_eq!(a.jobs.len(), 200);
    assert_eq!(a.jobs[0].name, "n-000");
    assert_eq!(a.jobs[199].name, "n-199");
    let other = parse(&RANDOM.replace("seed: 7", "seed: 8")).unwrap();
    assert_ne!(a.jobs, other.jobs);
    let unseeded = parse(&RANDOM.replace("      seed: 7\n", "")).unwrap();
    assert_eq!(
        unseeded.jobs,
        parse(&RANDOM.replace("seed: 7", "seed: 0")).unwrap().jobs
    );

    let mut low = 0;
    let mut priorities = BTreeMap::new();
    let mut artifacts = BTreeMap::new();
    for j in &a.jobs {
        let s = j.params["seconds"].as_f64().unwrap();
        assert!((1.0e-4..=1.0e-3).contains(&s), "{s}");
        // Log-uniform: half the mass below the geometric mean (3.16e-4).
        if s < 3.1623e-4 {
            low += 1;
        }
        assert!((0..=5).contains(&j.priority));
        *priorities.entry(j.priority).or_insert(0) += 1;
        *artifacts
            .entry(j.params["artifact"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
        assert!((8.0..=80.0).contains(&j.requires.gpu_mem_gb));
        let point = j.sweep_point.as_ref().unwrap();
        assert_eq!(point["priority"], json!(j.priority));
        assert_eq!(point.len(), 4);
    }
    assert!(
        (70..=130).contains(&low),
        "{low} of 200 below the geometric mean"
    );
    assert_eq!(
        priorities.len(),
        6,
        "both ends of an int range: {priorities:?}"
    );
    assert_eq!(artifacts.len(), 3);
}

/// The points of a seed are part of the file format: a stored experiment re-expanded
/// later (another build, another `rand`) must give the same jobs.
#[test]
fn random_points_of_a_seed_are_pinned() {
    let spec = parse(
        "\
name: r
jobs:
  - name: n
    kind: noop
    sweep:
      method: random
      seed: 7
      samples: 3
      parameters:
        params.seconds: {min: 1.0e-4, max: 1.0e-3, log: true}
        priority: {min: 0, max: 5, int: true}
        params.artifact: [a, b, c]
",
    )
    .unwrap();
    let got: Vec<(i64, &str)> = spec
        .jobs
        .iter()
        .map(|j| (j.priority, j.params["artifact"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [(2, "a"), (4, "c"), (0, "c")]);
    let seconds = [
        1.438123215179877e-4,
        5.330172897863225e-4,
        1.2107640761978222e-4,
    ];
    for (j, expected) in spec.jobs.iter().zip(seconds) {
        let s = j.params["seconds"].as_f64().unwrap();
        assert!((s - expected).abs() < 1e-15, "{s} != {expected}");
    }
}

#[test]
fn sweep_mistakes() {
    let base = "name: d\njobs:\n  - {name: prep, kind: prepare, params: {trainset: x}}\n";
    let e = err(&format!(
        "{base}sweep:\n  parameters:\n    params.foo: [1, 2]\n"
    ));
    assert_eq!(
        e.to_string(),
        "`exp.yaml`: sweep over `params.foo`: job `prep` (kind prepare) has no field `foo`"
    );
    assert_eq!(e.path.as_deref(), Some("sweep.parameters.params.foo"));
    assert_eq!(e.job.as_deref(), Some("prep"));

    // Checked against every job the sweep touches: `noop` has no `resolution`.
    let e = err(&format!("{base}  - {{name: wait, kind: noop}}\nsweep:\n  parameters:\n    params.resolution: [32, 64]\n"));
    assert!(
        e.to_string().contains(
            "sweep over `params.resolution`: job `wait` (kind noop) has no field `resolution`"
        ),
        "{e}"
    );

    let e = err(&format!(
        "{base}sweep:\n  parameters:\n    resolution: [1, 2]\n"
    ));
    assert!(
        e.to_string()
            .contains("sweep over `resolution`: job `prep` has no field `resolution`"),
        "{e}"
    );
    let e = err(&format!(
        "{base}sweep:\n  parameters:\n    requires.foo: [1, 2]\n"
    ));
    assert!(e.to_string().contains("sweep over `requires.foo`"), "{e}");
    let e = err(&format!("{base}sweep:\n  parameters:\n    name: [a, b]\n"));
    assert!(e.to_string().contains("`name` cannot be swept"), "{e}");

    // Per-job sweeps name their own place.
    let e = err("name: d\njobs:\n  - name: w\n    kind: noop\n    sweep: {parameters: {params.resolution: [1]}}\n");
    assert_eq!(
        e.path.as_deref(),
        Some("jobs[0].sweep.parameters.params.resolution")
    );

    let e = err(&format!(
        "{base}sweep:\n  parameters:\n    priority: {{min: 0, max: 3}}\n"
    ));
    assert!(e.to_string().contains("needs `method: random`"), "{e}");
    let e = err(&format!(
        "{base}sweep:\n  method: random\n  parameters:\n    priority: [1]\n"
    ));
    assert!(
        e.to_string()
            .contains("sweep.samples: `method: random` needs `samples`"),
        "{e}"
    );
    let e = err(&format!(
        "{base}sweep:\n  seed: 3\n  parameters:\n    priority: [1]\n"
    ));
    assert!(e.to_string().contains("for `method: random` only"), "{e}");
    let e = err(&format!("{base}sweep:\n  parameters:\n    priority: []\n"));
    assert!(e.to_string().contains("empty list"), "{e}");
    let e = err(&format!("{base}sweep:\n  method: random\n  samples: 2\n  parameters:\n    params.resolution: {{min: 0, max: 10, log: true}}\n"));
    assert!(e.to_string().contains("needs min > 0"), "{e}");
    let e = err(&format!("{base}sweep:\n  method: random\n  samples: 2\n  parameters:\n    priority: {{min: 0.5, max: 10, int: true}}\n"));
    assert!(e.to_string().contains("integer min and max"), "{e}");
    let e = err(&format!(
        "{base}sweep:\n  method: bayes\n  parameters:\n    priority: [1]\n"
    ));
    assert!(e.to_string().contains("unknown variant `bayes`"), "{e}");
    let e = err(&format!("{base}sweep:\n  parameters:\n    priority: [a]\n"));
    assert!(
        e.to_string()
            .contains("sweep over `priority`: job `prep-0`: value `\"a\"` is not an integer"),
        "{e}"
    );
    // Sweep values go through the same validation as written values.
    let e = err(&format!(
        "{base}sweep:\n  parameters:\n    params.resolution: [64, 2]\n"
    ));
    assert!(
        e.to_string()
            .contains("job `prep-1` (jobs[0]): params: resolution 2 is out of range"),
        "{e}"
    );
    let e = err(&format!(
        "{base}sweep:\n  parameters:\n    max_attempts: [3, 0]\n"
    ));
    assert!(
        e.to_string().contains("max_attempts: 0 is out of range"),
        "{e}"
    );
    let e = err(&format!("{base}sweep:\n  parameters:\n    params.resolution: [64, 32]\n    params.resolution: [1]\n"));
    assert!(
        e.to_string()
            .contains("duplicate entry with key \"params.resolution\""),
        "{e}"
    );
    assert_eq!(e.line, Some(6));
}

#[test]
fn top_level_sweep_replicates_jobs_and_needs_stay_in_their_replica() {
    let spec = parse(
        "\
name: rep
defaults: {kind: noop}
jobs:
  - name: train
  - name: eval
    needs: [train]
sweep:
  parameters:
    params.seconds: [1, 2, 3]
",
    )
    .unwrap();
    assert_eq!(
        names(&spec),
        ["train-0", "eval-0", "train-1", "eval-1", "train-2", "eval-2"]
    );
    for r in 0..3 {
        let eval = job(&spec, &format!("eval-{r}"));
        assert_eq!(eval.needs, [format!("train-{r}")]);
        assert_eq!(eval.params, json!({"seconds": r + 1}));
        assert_eq!(
            job(&spec, &format!("train-{r}")).params,
            json!({"seconds": r + 1})
        );
        assert_eq!(
            eval.sweep_point.as_ref().unwrap()["params.seconds"],
            json!(r + 1)
        );
    }
}

#[test]
fn per_job_sweep_and_needs_on_all_expansions() {
    let spec = parse(
        "\
name: pj
defaults: {kind: noop}
jobs:
  - name: train
    sweep: {parameters: {params.seconds: [1, 2, 3]}}
  - name: eval
    needs: [train]
  - name: report
    needs: [eval, train, eval]
",
    )
    .unwrap();
    assert_eq!(
        names(&spec),
        ["train-0", "train-1", "train-2", "eval", "report"]
    );
    assert_eq!(job(&spec, "eval").needs, ["train-0", "train-1", "train-2"]);
    assert_eq!(
        job(&spec, "report").needs,
        ["eval", "train-0", "train-1", "train-2"]
    );
    assert_eq!(job(&spec, "eval").sweep_point, None);

    // Both sweeps: `<name>-<replica>-<point>`, needs within the replica.
    let spec = parse(
        "\
name: both
defaults: {kind: noop}
jobs:
  - name: train
    sweep: {parameters: {params.seconds: [1, 2]}}
  - name: eval
    needs: [train]
sweep:
  parameters:
    priority: [5, 6]
",
    )
    .unwrap();
    assert_eq!(
        names(&spec),
        [
            "train-0-0",
            "train-0-1",
            "eval-0",
            "train-1-0",
            "train-1-1",
            "eval-1"
        ]
    );
    assert_eq!(job(&spec, "eval-1").needs, ["train-1-0", "train-1-1"]);
    let t = job(&spec, "train-1-0");
    assert_eq!(t.priority, 6);
    assert_eq!(t.params, json!({"seconds": 1}));
    assert_eq!(
        t.sweep_point.clone().unwrap(),
        json!({"priority": 6, "params.seconds": 1})
            .as_object()
            .unwrap()
            .clone()
    );
}

#[test]
fn sweeps_over_job_fields() {
    let spec = parse(
        "\
name: jf
jobs:
  - name: n
    kind: noop
    requires: {labels: {site: lab}}
    sweep:
      parameters:
        requires.labels.gpu: [a100, h100]
        requires.gpus: [1, 2]
        requires.backend: [cuda]
        requires.gpu_mem_gb: [40, 80.5]
        max_attempts: [5]
",
    )
    .unwrap();
    assert_eq!(spec.jobs.len(), 8);
    let j = job(&spec, "n-7");
    assert_eq!(j.requires.labels["gpu"], "h100");
    assert_eq!(j.requires.labels["site"], "lab");
    assert_eq!(j.requires.gpus, 2);
    assert_eq!(j.requires.backend, "cuda");
    assert_eq!(j.requires.gpu_mem_gb, 80.5);
    assert_eq!(j.max_attempts, 5);
    assert_eq!(job(&spec, "n-0").requires.gpu_mem_gb, 40.0);

    // The same path in both sweeps is refused rather than silently overridden.
    let e = err("name: d\njobs:\n  - {name: a, kind: noop, sweep: {parameters: {priority: [1]}}}\nsweep: {parameters: {priority: [2]}}\n");
    assert!(
        e.to_string()
            .contains("sweep over `priority`: swept both by the top-level sweep and by job `a`"),
        "{e}"
    );
}

#[test]
fn defaults_merge_deeply() {
    let spec = parse(
        "\
name: dm
defaults:
  kind: prepare
  priority: 4
  max_attempts: 7
  requires: {gpus: 1, gpu_mem_gb: 16, backend: cuda, labels: {site: lab, tier: a}}
  params: {trainset: shared, resolution: 64, extra: {}}
jobs:
  - name: a
  - name: b
    priority: -1
    requires: {gpu_mem_gb: 40, labels: {tier: b}}
    params: {resolution: 128}
",
    );
    // `extra` is no field of prepare: deep-merged params are validated too.
    let e = spec.unwrap_err();
    assert!(
        e.to_string()
            .contains("job `a` (jobs[0]): params: unknown field `extra`"),
        "{e}"
    );

    let spec = parse(
        "\
name: dm
defaults:
  kind: prepare
  priority: 4
  max_attempts: 7
  requires: {gpus: 1, gpu_mem_gb: 16, backend: cuda, labels: {site: lab, tier: a}}
  params: {trainset: shared, resolution: 64}
jobs:
  - name: a
  - name: b
    kind: prepare
    priority: -1
    requires: {gpu_mem_gb: 40, labels: {tier: b}}
    params: {resolution: 128, strict: true}
",
    )
    .unwrap();
    let a = job(&spec, "a");
    assert_eq!(a.priority, 4);
    assert_eq!(a.max_attempts, 7);
    assert_eq!(a.params, json!({"trainset": "shared", "resolution": 64}));
    assert_eq!(a.requires.gpus, 1);
    let b = job(&spec, "b");
    assert_eq!(b.priority, -1);
    assert_eq!(b.max_attempts, 7);
    assert_eq!(
        b.params,
        json!({"trainset": "shared", "resolution": 128, "strict": true})
    );
    assert_eq!(
        b.requires,
        Requirements {
            gpus: 1,
            gpu_mem_gb: 40.0,
            backend: "cuda".into(),
            labels: [("site", "lab"), ("tier", "b")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    );
}

const VARS: &str = "\
name: v-${model}
vars: {model: null, res: 64, ts: ./trainsets/demo}
jobs:
  - name: prep
    kind: prepare
    params: {trainset: '${ts}/${model}', resolution: '${res}'}
";

#[test]
fn vars_and_set() {
    let e = err(VARS);
    assert!(
        e.to_string()
            .contains("var `model` is used but has no value"),
        "{e}"
    );

    let spec = parse_with(VARS, &["model=sd15"]).unwrap();
    assert_eq!(spec.name, "v-sd15");
    // A string that is exactly `${res}` keeps the var's type.
    assert_eq!(
        spec.jobs[0].params,
        json!({"trainset": "./trainsets/demo/sd15", "resolution": 64})
    );
    assert!(spec.source.starts_with(VARS));
    assert!(
        spec.source.ends_with("# --set model=sd15\n"),
        "{}",
        spec.source
    );

    let spec = parse_with(VARS, &["model=sd15", "res=128", "jobs.0.kind=prepare"]).unwrap();
    assert_eq!(spec.jobs[0].params["resolution"], json!(128));

    // `--set` of a path: numbers stay numbers, `name` and `defaults`-like paths work.
    let spec = parse_with(
        "name: s\ndefaults: {kind: noop, priority: 1}\njobs:\n  - {name: a, params: {seconds: 1, fail: false}}\n",
        &["defaults.priority=5", "name=other", "jobs.0.params.seconds=2.5", "jobs[0].params.fail=true"],
    )
    .unwrap();
    assert_eq!(spec.name, "other");
    assert_eq!(spec.jobs[0].priority, 5);
    assert_eq!(spec.jobs[0].params, json!({"seconds": 2.5, "fail": true}));

    // Sweep keys contain dots; `--set` finds them, and can set a list.
    let e = parse_with(GRID, &["sweep.parameters.params.resolution=[8, 16]"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("is neither a declared var nor a path"),
        "{e}"
    );
    let spec = parse_with(GRID, &["jobs.0.sweep.parameters.params.resolution=[8, 16]"]).unwrap();
    assert_eq!(spec.jobs.len(), 10);

    let e = parse_with(VARS, &["model=x", "jobs.0.params.dedupe=false"]).unwrap_err();
    assert!(
        e.to_string().contains("--set `jobs.0.params.dedupe=false`: `jobs.0.params.dedupe` is neither a declared var nor a path in the document"),
        "{e}"
    );
    let e = parse_with(VARS, &["modle=x"]).unwrap_err();
    assert!(
        e.to_string().contains("`modle` is neither a declared var"),
        "{e}"
    );

    let e = err("name: d\njobs:\n  - {name: a, kind: noop, params: {artifact: '${x}'}}\n");
    assert!(
        e.to_string()
            .contains("jobs[0].params.artifact: `${x}` uses var `x`, which is not declared"),
        "{e}"
    );

    // A type error after substitution: path, no line (the text was rewritten).
    let e = parse_with(VARS, &["model=x", "res=abc"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`exp.yaml`: job `prep` (jobs[0]): params.resolution: invalid type: string \"abc\", expected u32"
    );
    assert_eq!(e.path.as_deref(), Some("jobs[0].params.resolution"));
    let e = parse_with(
        "name: d\nvars: {p: x}\njobs:\n  - {name: a, kind: noop, priority: '${p}'}\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(e.line, None, "{e}");
    assert_eq!(e.path.as_deref(), Some("jobs[0].priority"), "{e}");
}

#[test]
fn parse_set_splits_at_the_first_equals() {
    assert_eq!(parse_set("a=b=c").unwrap(), ("a".into(), "b=c".into()));
    assert_eq!(parse_set("a=").unwrap(), ("a".into(), "".into()));
    assert!(parse_set("novalue")
        .unwrap_err()
        .contains("expected `key=value`"));
    assert!(parse_set("=3").is_err());
}

#[test]
fn resolve_paths_makes_trainsets_absolute_and_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trainsets/demo")).unwrap();
    std::fs::write(dir.path().join("trainsets/file"), b"x").unwrap();
    std::fs::create_dir_all(dir.path().join("experiments")).unwrap();
    let base = dir.path().join("experiments");

    let mut spec = parse(&GRID.replace("trainset: ts", "trainset: ../trainsets/demo")).unwrap();
    resolve_paths(&mut spec, &base).unwrap();
    let expected = std::fs::canonicalize(dir.path().join("trainsets/demo")).unwrap();
    for j in &spec.jobs {
        assert_eq!(j.params["trainset"], json!(expected.to_str().unwrap()));
    }

    let mut spec = parse(&GRID.replace("trainset: ts", "trainset: ../trainsets/missing")).unwrap();
    let e = resolve_paths(&mut spec, &base).unwrap_err();
    assert_eq!(e.job.as_deref(), Some("prep-00"));
    assert!(
        e.message
            .contains("job `prep-00`: params.trainset: `../trainsets/missing`"),
        "{e}"
    );
    assert!(e.message.contains("does not exist"), "{e}");

    let mut spec = parse(&GRID.replace("trainset: ts", "trainset: ../trainsets/file")).unwrap();
    let e = resolve_paths(&mut spec, &base).unwrap_err();
    assert!(e.message.contains("is not a directory"), "{e}");

    // Other kinds are left alone.
    let mut spec = parse("name: d\njobs:\n  - {name: a, kind: noop}\n").unwrap();
    resolve_paths(&mut spec, &base).unwrap();
}

fn noop(name: &str, needs: &[&str]) -> JobSpec {
    JobSpec {
        name: name.into(),
        kind: "noop".into(),
        params: json!({}),
        priority: 0,
        max_attempts: 3,
        requires: Requirements::default(),
        needs: needs.iter().map(|s| s.to_string()).collect(),
        sweep_point: None,
    }
}

#[test]
fn validate_jobs_checks_jobs_from_grpc() {
    validate_jobs("<request>", &[noop("a", &[]), noop("b", &["a"])]).unwrap();
    let e = validate_jobs("<request>", &[noop("a", &["b"]), noop("b", &["a"])]).unwrap_err();
    assert_eq!(e.to_string(), "`<request>`: dependency cycle: a -> b -> a");
    let e = validate_jobs("<request>", &[noop("a", &[]), noop("a", &[])]).unwrap_err();
    assert_eq!(e.path.as_deref(), Some("jobs[1].name"));
    let mut bad = noop("a", &[]);
    bad.params = json!([1]);
    let e = validate_jobs("<request>", &[bad]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`<request>`: job `a` (jobs[0]): params: expected a mapping"
    );
    let mut bad = noop("a", &[]);
    bad.requires.gpu_mem_gb = f64::NAN;
    assert!(validate_jobs("<request>", &[bad]).is_err());
    assert!(validate_jobs("<request>", &[]).is_err());
    // A long chain: no stack overflow in the cycle search.
    let chain: Vec<JobSpec> = (0..100_000)
        .map(|i| {
            let mut job = noop(&format!("j{i}"), &[]);
            if i + 1 < 100_000 {
                job.needs.push(format!("j{}", i + 1));
            }
            job
        })
        .collect();
    validate_jobs("<request>", &chain).unwrap();
    let too_many: Vec<JobSpec> = (0..100_001).map(|i| noop(&format!("j{i}"), &[])).collect();
    let e = validate_jobs("<request>", &too_many).unwrap_err();
    assert!(
        e.to_string().contains("more than the limit of 100000"),
        "{e}"
    );
}

#[test]
fn ten_thousand_jobs_expand_quickly() {
    let values = |n: usize| {
        (0..n)
            .map(|i| (i + 1).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // 50 replicas of (200 prepare jobs + one check that needs all of them).
    let source = format!(
        "\
name: big
defaults: {{kind: prepare}}
jobs:
  - name: prep
    params: {{trainset: ts}}
    sweep:
      parameters:
        params.min_images: [{}]
        params.dedupe: [true, false]
  - name: check
    kind: noop
    needs: [prep]
sweep:
  parameters:
    priority: [{}]
",
        values(100),
        values(50)
    );
    let start = std::time::Instant::now();
    let spec = parse(&source).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(spec.jobs.len(), 10_050);
    let last = &spec.jobs[10_049];
    assert_eq!(last.name, "check-49");
    assert_eq!(last.priority, 50);
    assert_eq!(last.needs.len(), 200);
    assert_eq!(last.needs[0], "prep-49-000");
    assert_eq!(last.needs[199], "prep-49-199");
    eprintln!("10,050 jobs expanded and validated in {elapsed:?}");
    // Generous for unoptimised test builds; release takes a few milliseconds.
    assert!(elapsed.as_secs_f64() < 2.0, "{elapsed:?}");
}

#[test]
fn example_experiment_file_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../experiments/prepare-sweep.yaml"
    );
    let Ok(source) = std::fs::read_to_string(path) else {
        panic!("cannot read {path}");
    };
    let spec = parse_experiment(&source, "prepare-sweep.yaml", &[]).unwrap();
    assert_eq!(spec.jobs.len(), 20);
    assert!(spec.jobs.iter().all(|j| j.kind == "prepare"));
    assert!(spec
        .jobs
        .iter()
        .all(|j| j.params["trainset"] == "../trainsets/demo"));
}

const TRAIN: &str = "\
name: t
jobs:
  - name: prep
    kind: prepare
    params: {trainset: ./ts, resolution: 64}
  - name: train
    kind: train
    needs: [prep]
    params: {model: ./sd, token: <s>, steps: 10, rank: 2}
";

#[test]
fn train_jobs_take_their_dataset_from_one_prepare_job_or_a_folder() {
    let spec = parse(TRAIN).unwrap();
    let t = job(&spec, "train");
    assert_eq!(t.kind, "train");
    assert_eq!(t.params["rank"], 2);
    // Sweeps reach the training fields.
    let swept = parse(&format!(
        "{TRAIN}    sweep:\n      parameters:\n        params.lr: [1.0e-4, 1.0e-3]\n"
    ))
    .unwrap();
    assert_eq!(names(&swept), ["prep", "train-0", "train-1"]);
    assert_eq!(job(&swept, "train-1").params["lr"], json!(1.0e-3));

    // No dataset at all.
    let e = err(&TRAIN.replace("    needs: [prep]\n", ""));
    assert_eq!(e.path.as_deref(), Some("jobs[1].params.trainset"), "{e}");
    assert!(e.message.contains("`prepare` job"), "{e}");
    // A folder instead of a prepare job.
    parse(&TRAIN.replace(
        "    needs: [prep]\n    params: {",
        "    params: {trainset: ./ts, ",
    ))
    .unwrap();
    // Two prepare jobs: which dataset?
    let e = err(&TRAIN.replace(
        "    params: {trainset: ./ts, resolution: 64}\n",
        "    params: {trainset: ./ts, resolution: 64}\n    sweep: {parameters: {params.dedupe: [true, false]}}\n",
    ));
    assert_eq!(e.path.as_deref(), Some("jobs[1].needs"), "{e}");
    assert!(e.message.contains("prep-0, prep-1"), "{e}");
}

#[test]
fn train_params_are_checked_by_field() {
    for (change, path, needle) in [
        ("rank: 0", "jobs[1].params", "`rank` must be at least 1"),
        (
            "rank: 2, stpes: 3",
            "jobs[1].params",
            "unknown field `stpes`",
        ),
        ("rank: x", "jobs[1].params.rank", "invalid type"),
        (
            "rank: 2, backend: cuda",
            "jobs[1].params.backend",
            "requires: {gpus: 1, backend: cuda}",
        ),
    ] {
        let e = err(&TRAIN.replace("rank: 2", change));
        assert_eq!(e.path.as_deref(), Some(path), "{change}: {e}");
        assert!(e.message.contains(needle), "{change}: {e}");
    }
    // With a GPU asked for, cuda is fine.
    parse(&TRAIN.replace(
        "rank: 2}\n",
        "rank: 2, backend: cuda}\n    requires: {gpus: 1, backend: cuda}\n",
    ))
    .unwrap();
}

#[test]
fn resolve_paths_makes_a_train_jobs_model_and_trainset_absolute() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["ts", "sd"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let mut spec = parse(TRAIN).unwrap();
    resolve_paths(&mut spec, dir.path()).unwrap();
    let abs = |d: &str| {
        json!(std::fs::canonicalize(dir.path().join(d))
            .unwrap()
            .to_str()
            .unwrap())
    };
    assert_eq!(job(&spec, "train").params["model"], abs("sd"));
    assert_eq!(job(&spec, "prep").params["trainset"], abs("ts"));

    let mut spec = parse(&TRAIN.replace("model: ./sd", "model: ./nope")).unwrap();
    let e = resolve_paths(&mut spec, dir.path()).unwrap_err();
    assert_eq!(e.job.as_deref(), Some("train"));
    assert!(
        e.message.contains("params.model: `./nope`") && e.message.contains("does not exist"),
        "{e}"
    );
    let mut spec = parse(&TRAIN.replace(
        "    needs: [prep]\n    params: {",
        "    params: {trainset: ./missing, ",
    ))
    .unwrap();
    let e = resolve_paths(&mut spec, dir.path()).unwrap_err();
    assert!(e.message.contains("params.trainset: `./missing`"), "{e}");
}

#[test]
fn example_train_file_is_valid_and_its_folders_exist() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments");
    let path = format!("{dir}/train-demo.yaml");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut spec = parse_experiment(&source, "train-demo.yaml", &[]).unwrap();
    assert_eq!(names(&spec), ["prep", "lora-0", "lora-1"]);
    assert_eq!(job(&spec, "lora-1").params["lr"], json!(1.0e-3));
    assert_eq!(job(&spec, "lora-0").params["steps"], 20);
    assert_eq!(job(&spec, "lora-0").needs, ["prep"]);
    resolve_paths(&mut spec, std::path::Path::new(dir)).unwrap();
    let model = job(&spec, "lora-0").params["model"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(std::path::Path::new(&model)
        .join("model_index.json")
        .is_file());
}

#[test]
fn example_eval_file_is_valid_and_its_folders_exist() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments");
    let path = format!("{dir}/eval-demo.yaml");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut spec = parse_experiment(
        &source,
        "eval-demo.yaml",
        &[parse_set("lpips_weights=weights/lpips_alex.safetensors").unwrap()],
    )
    .unwrap();
    assert_eq!(
        names(&spec),
        [
            "prep",
            "lora",
            "dreambooth",
            "ti",
            "sample-lora",
            "sample-dreambooth",
            "sample-ti",
            "eval-lora",
            "eval-dreambooth",
            "eval-ti"
        ]
    );
    assert_eq!(job(&spec, "prep").params["holdout"], 3);
    assert_eq!(job(&spec, "eval-ti").needs, ["prep", "sample-ti"]);
    assert_eq!(job(&spec, "sample-ti").params["images_per_prompt"], 2);
    resolve_paths(&mut spec, std::path::Path::new(dir)).unwrap();
    // Sample models are checked like train models; weights are made absolute but
    // left for the worker to check.
    let model = job(&spec, "sample-lora").params["model"].as_str().unwrap();
    assert!(std::path::Path::new(model)
        .join("model_index.json")
        .is_file());
    let weights = job(&spec, "eval-lora").params["lpips_weights"]
        .as_str()
        .unwrap();
    assert_eq!(
        weights,
        std::path::Path::new(dir)
            .join("weights/lpips_alex.safetensors")
            .display()
            .to_string()
    );
    assert_eq!(
        job(&spec, "eval-lora").params["clip_model"],
        "/models/clip-vit-large-patch14"
    );
}

const EVAL: &str = "\
name: e
jobs:
  - name: prep
    kind: prepare
    params: {trainset: ./ts, holdout: 2}
  - name: train
    kind: train
    needs: [prep]
    params: {model: ./sd, token: <s>, steps: 10}
  - name: sample
    kind: sample
    needs: [train]
    params: {model: ./sd, prompts: [\"a {token}\"], images_per_prompt: 2}
  - name: eval
    kind: eval
    needs: [prep, sample]
    params: {lpips_weights: ./w.safetensors, clip_model: ./clip}
";

#[test]
fn sample_and_eval_jobs_are_checked_by_field_and_by_what_they_need() {
    parse(EVAL).unwrap();
    for (from, to, path, needle) in [
        (
            "needs: [prep, sample]",
            "needs: [sample]",
            "jobs[3].needs",
            "held-out images of one `prepare` job",
        ),
        (
            "needs: [prep, sample]",
            "needs: [prep, train]",
            "jobs[3].needs",
            "add at least one",
        ),
        (
            "prompts: [\"a {token}\"]",
            "prompts: []",
            "jobs[2].params",
            "`prompts` is empty",
        ),
        (
            "images_per_prompt: 2",
            "images_per_prompt: 0",
            "jobs[2].params",
            "`images_per_prompt` must be at least 1",
        ),
        (
            "images_per_prompt: 2}",
            "images_per_prompt: 2, scheduler: pndm}",
            "jobs[2].params",
            "`scheduler` `pndm`",
        ),
        (
            "clip_model: ./clip}",
            "clip_model: ./clip, lpips_net: squeeze}",
            "jobs[3].params",
            "`lpips_net` `squeeze`",
        ),
        (
            "clip_model: ./clip}",
            "clip_model: ./clip, backend: cuda}",
            "jobs[3].params.backend",
            "requires: {gpus: 1, backend: cuda}",
        ),
        (
            "lpips_weights: ./w.safetensors, ",
            "",
            "jobs[3].params",
            "missing field `lpips_weights`",
        ),
        (
            "holdout: 2",
            "holdout: 200000",
            "jobs[0].params",
            "holdout 200000 is out of range",
        ),
    ] {
        let source = EVAL.replace(from, to);
        assert_ne!(source, EVAL, "{from}");
        let e = err(&source);
        assert_eq!(e.path.as_deref(), Some(path), "{to}: {e}");
        assert!(e.message.contains(needle), "{to}: {e}");
    }
    // A sample job without a train job samples the base model.
    parse(&EVAL.replace(
        "    needs: [train]\n    params: {model",
        "    params: {model",
    ))
    .unwrap();
}

#[test]
fn the_study_file_is_valid_with_its_needs_and_requirements() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments");
    let path = format!("{dir}/study.yaml");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let spec = parse_experiment(
        &source,
        "study.yaml",
        &[parse_set("model=/m/sd15").unwrap()],
    )
    .unwrap();
    assert_eq!(spec.jobs.len(), 4 + 6 + 6 + 4, "{:?}", names(&spec));
    for style in ["monet", "vangogh", "francis"] {
        let train = job(&spec, &format!("lora-{style}"));
        assert_eq!(train.needs, [format!("prep-{style}")]);
        assert_eq!(train.params["token"], format!("<{style}-style>"));
        // The original study's hyper-parameters.
        assert_eq!(
            (
                &train.params["rank"],
                &train.params["alpha"],
                &train.params["lr"],
                &train.params["steps"],
                &train.params["resolution"],
                &train.params["batch"],
                &train.params["precision"],
            ),
            (
                &json!(4),
                &json!(4),
                &json!(5.0e-4),
                &json!(200),
                &json!(512),
                &json!(1),
                &json!("f16")
            )
        );
        assert_eq!(train.params["model"], "/m/sd15");
        assert_eq!(
            (train.requires.gpus, train.requires.backend.as_str()),
            (1, "cuda")
        );
        assert_eq!(
            job(&spec, &format!("eval-lora-{style}")).needs,
            [format!("prep-{style}"), format!("sample-lora-{style}")]
        );
    }
    let prep = job(&spec, "prep-anime");
    assert_eq!(
        (prep.requires.gpus, prep.requires.backend.as_str()),
        (0, "any")
    );
    assert_eq!(prep.params["holdout"], 20);
    let db = job(&spec, "dreambooth-anime");
    assert_eq!(db.params["method"], "dreambooth");
    assert_eq!(db.params["class_images"], 100);
    assert_eq!(db.params["class_prompt"], "an anime character");
    let ti = job(&spec, "ti-anime");
    assert_eq!(
        (&ti.params["steps"], &ti.params["lr"]),
        (&json!(800), &json!(5.0e-4))
    );
    assert_eq!(
        job(&spec, "eval-anime").needs,
        [
            "prep-anime",
            "sample-lora-anime",
            "sample-dreambooth-anime",
            "sample-ti-anime"
        ]
    );

    // The same file on the CPU with the tiny model: no GPU asked for.
    let small = parse_experiment(
        &source,
        "study.yaml",
        &[
            parse_set("backend=cpu").unwrap(),
            parse_set("gpus=0").unwrap(),
            parse_set("precision=f32").unwrap(),
        ],
    )
    .unwrap();
    let train = job(&small, "ti-anime");
    assert_eq!(
        (train.requires.gpus, train.requires.backend.as_str()),
        (0, "cpu")
    );
    assert_eq!(train.params["backend"], "cpu");
}

#[test]
fn the_sweep_beside_the_study_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments");
    let source = std::fs::read_to_string(format!("{dir}/study-sweep.yaml")).unwrap();
    let spec = parse_experiment(&source, "study-sweep.yaml", &[]).unwrap();
    assert_eq!(
        names(&spec),
        ["prep", "lora-0", "lora-1", "lora-2", "lora-3", "lora-4", "lora-5"]
    );
    let last = job(&spec, "lora-5");
    assert_eq!(
        (&last.params["rank"], &last.params["lr"]),
        (&json!(8), &json!(1.0e-3))
    );
    assert_eq!(last.needs, ["prep"]);
}

#[test]
fn yaml_merge_keys_share_params_between_jobs() {
    let spec = parse(
        "\
name: merged
jobs:
  - name: a
    kind: noop
    params: &base {seconds: 1, fail: false}
  - name: b
    kind: noop
    params:
      <<: *base
      seconds: 2
",
    )
    .unwrap();
    assert_eq!(job(&spec, "a").params, json!({"seconds": 1, "fail": false}));
    // The job's own keys win over the merged ones.
    assert_eq!(job(&spec, "b").params, json!({"seconds": 2, "fail": false}));
}

#[test]
fn the_quickstart_file_is_the_study_in_miniature() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments");
    let source = std::fs::read_to_string(format!("{dir}/quickstart.yaml")).unwrap();
    let model = format!("model={dir}/../worker/sd/tests/fixtures/tiny-sd");
    let mut spec =
        parse_experiment(&source, "quickstart.yaml", &[parse_set(&model).unwrap()]).unwrap();
    assert_eq!(
        names(&spec),
        [
            "prep-dots",
            "prep-stripes",
            "prep-waves",
            "lora-dots",
            "lora-stripes",
            "lora-waves",
            "dreambooth-dots",
            "ti-dots",
            "sample-lora-dots",
            "sample-lora-stripes",
            "sample-lora-waves",
            "sample-dreambooth-dots",
            "sample-ti-dots",
            "eval-dots",
            "eval-stripes",
            "eval-waves"
        ]
    );
    assert_eq!(
        job(&spec, "prep-waves").params["include"],
        json!(["waves-*"])
    );
    let db = job(&spec, "dreambooth-dots");
    assert_eq!(
        (
            &db.params["method"],
            &db.params["token"],
            &db.params["rank"]
        ),
        (&json!("dreambooth"), &json!("<dots-style>"), &json!(4))
    );
    assert_eq!(job(&spec, "lora-waves").params["token"], "<waves-style>");
    assert_eq!(
        job(&spec, "eval-dots").needs,
        [
            "prep-dots",
            "sample-lora-dots",
            "sample-dreambooth-dots",
            "sample-ti-dots"
        ]
    );
    // Its trainset is the bundled demo folder, found from the file's folder.
    resolve_paths(&mut spec, std::path::Path::new(dir)).unwrap();
    let trainset = job(&spec, "prep-dots").params["trainset"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(trainset.ends_with("trainsets/demo"), "{trainset}");
}
