//! `experiments/study.yaml`, the study itself: its dry run shows the jobs, their
//! needs and requirements; with the tiny model in place of SD1.5, four small
//! trainsets and CPU settings it runs to the end through a coordinator on
//! PostgreSQL and two worker processes, and `atelier report` draws it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{by_name, repo, result_of, Db, Harness};
use serde_json::Value;

const STUDY: &str = "experiments/study.yaml";
const TINY_SD: &str = "worker/sd/tests/fixtures/tiny-sd";

/// The study's four trainsets, each a copy of the demo images of one style (anime
/// gets them all), in the layout of `trainsets/`: `<name>/images/`.
fn trainsets(h: &Harness) -> PathBuf {
    let root = h.path("trainsets");
    let demo = repo().join("trainsets/demo/images");
    for (name, prefix) in [
        ("monet", "dots-"),
        ("vangogh", "stripes-"),
        ("francis", "waves-"),
        ("anime", ""),
    ] {
        let images = root.join(name).join("images");
        std::fs::create_dir_all(&images).unwrap();
        for entry in std::fs::read_dir(&demo).unwrap() {
            let entry = entry.unwrap();
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with(prefix) && file.ends_with(".png") {
                std::fs::copy(entry.path(), images.join(&file)).unwrap();
            }
        }
    }
    root
}

#[test]
fn dry_run_shows_the_jobs_their_needs_and_requirements() {
    let h = Harness::new(Db::Sqlite);
    let model = repo().join(TINY_SD);
    let out = h.cli(&[
        "submit",
        repo().join(STUDY).to_str().unwrap(),
        "--set",
        &format!("model={}", model.display()),
        "--dry-run",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("study: 20 jobs, valid (not submitted)"),
        "{stdout}"
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
            .to_string()
    };
    let eval = line("eval-anime");
    assert!(
        eval.contains("prep-anime, sample-lora-anime,") && eval.contains("1 GPU (cuda)"),
        "{eval}"
    );
    let prep = line("prep-monet");
    assert!(prep.contains("prepare") && prep.contains(" any "), "{prep}");
    let lora = line("lora-vangogh");
    assert!(
        lora.contains("prep-vangogh") && lora.contains("1 GPU (cuda)"),
        "{lora}"
    );
}

/// `--set` for the tiny model on the CPU: every job of the file, fewer and smaller
/// steps (a debug build on two cores).
fn tiny_settings(model: &Path, trainsets: &Path, lpips: &Path, clip: &Path) -> Vec<String> {
    [
        format!("model={}", model.display()),
        format!("trainsets={}", trainsets.display()),
        format!("lpips_weights={}", lpips.display()),
        format!("clip_model={}", clip.display()),
        "backend=cpu".into(),
        "gpus=0".into(),
        "precision=f32".into(),
        "resolution=32".into(),
        "steps=4".into(),
        "ti_steps=4".into(),
        "class_images=2".into(),
        "class_steps=2".into(),
        "holdout=1".into(),
        "samples=1".into(),
        "sample_steps=2".into(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

#[test]
fn the_study_runs_to_the_end_on_the_tiny_model_postgres() {
    let started = std::time::Instant::now();
    let mut h = Harness::new(Db::Postgres);
    h.start_coordinator();
    h.start_worker("w1", &[]);
    h.start_worker("w2", &[]);
    let lpips = h.path("lpips_alex.safetensors");
    atelier_metrics::testing::write_test_weights(
        &lpips,
        atelier_metrics::lpips::LpipsNet::Alex,
        &repo().join("worker/metrics/tests/fixtures/lpips/lin_alex.safetensors"),
    )
    .unwrap();
    let clip = repo().join("worker/metrics/tests/fixtures/tiny-clip");
    let trainsets = trainsets(&h);
    let mut args = vec![
        "submit".to_string(),
        repo().join(STUDY).display().to_string(),
    ];
    args.extend(tiny_settings(
        &repo().join(TINY_SD),
        &trainsets,
        &lpips,
        &clip,
    ));
    args.push("--json".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let submitted = h.json(&args);
    assert_eq!(submitted["job_ids"].as_array().unwrap().len(), 20);

    let jobs = h.wait_all_ended(Duration::from_secs(1200));
    eprintln!("all 20 jobs ended after {:?}", started.elapsed());
    for job in &jobs {
        assert_eq!(job["state"], "succeeded", "{job:#}");
    }
    // Both workers took part.
    let workers: std::collections::BTreeSet<&str> = jobs
        .iter()
        .filter_map(|j| j["worker_id"].as_str())
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");

    let at = |j: &Value, k: &str| j[k].as_i64().unwrap();
    for (train, style) in [
        ("lora-monet", "monet"),
        ("lora-vangogh", "vangogh"),
        ("lora-francis", "francis"),
        ("lora-anime", "anime"),
        ("dreambooth-anime", "anime"),
        ("ti-anime", "anime"),
    ] {
        let prep = by_name(&jobs, &format!("prep-{style}"));
        let train_job = by_name(&jobs, train);
        let sample = by_name(&jobs, &format!("sample-{train}"));
        assert!(at(train_job, "started_at_ms") >= at(prep, "finished_at_ms"));
        assert!(at(sample, "started_at_ms") >= at(train_job, "finished_at_ms"));
        let sampled = result_of(sample);
        assert_eq!(
            sampled["images"], 3,
            "three prompts, one image each: {sampled:#}"
        );
        let token = format!("<{style}-style>");
        assert!(
            sampled["prompts"][0].as_str().unwrap().contains(&token),
            "{sampled:#}"
        );
    }
    let prep = result_of(by_name(&jobs, "prep-monet"));
    assert_eq!(
        (&prep["images"], &prep["holdout"]["images"]),
        (&Value::from(3), &Value::from(1))
    );
    let anime = result_of(by_name(&jobs, "eval-anime"));
    let methods: Vec<&str> = anime["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["lora", "dreambooth", "ti"]);

    // One report for the whole study.
    let out = std::env::var_os("ATELIER_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| h.path("report"));
    let report = h.json(&["report", "study", "-o", out.to_str().unwrap(), "--json"]);
    for file in ["comparison.png", "samples.png", "loss.png", "report.md"] {
        assert!(out.join(file).is_file(), "no {file}: {report:#}");
    }
    let rows = report["report"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "3 styles + 3 anime methods: {report:#}");
    assert_eq!(report["report"]["trainings"].as_array().unwrap().len(), 6);
    eprintln!("done in {:?}", started.elapsed());
}

#[test]
fn a_set_path_is_taken_against_the_shells_folder() {
    let h = Harness::new(Db::Sqlite);
    std::fs::create_dir_all(h.path("exp")).unwrap();
    let file = h.write(
        "exp/e.yaml",
        "name: e\nvars: {trainset: ../nowhere}\njobs:\n  - {name: prep, kind: prepare, params: {trainset: \"${trainset}\"}}\n",
    );
    let sets = h.path("sets/demo");
    std::fs::create_dir_all(&sets).unwrap();
    std::fs::copy(
        repo().join("trainsets/demo/images/dots-0.png"),
        sets.join("dots-0.png"),
    )
    .unwrap();
    // The harness runs commands in its folder, where `sets/demo` is; the file's
    // folder `exp/` has no `sets/`.
    let plan = h.json(&[
        "submit",
        file.to_str().unwrap(),
        "--set",
        "trainset=sets/demo",
        "--dry-run",
        "--json",
    ]);
    let trainset = plan["jobs"][0]["params"]["trainset"].as_str().unwrap();
    assert_eq!(
        std::path::Path::new(trainset).canonicalize().unwrap(),
        sets.canonicalize().unwrap()
    );
    // A path that exists only beside the file is still taken from there.
    std::fs::create_dir_all(h.path("exp/local/set")).unwrap();
    std::fs::copy(sets.join("dots-0.png"), h.path("exp/local/set/dots-0.png")).unwrap();
    let plan = h.json(&[
        "submit",
        file.to_str().unwrap(),
        "--set",
        "trainset=local/set",
        "--dry-run",
        "--json",
    ]);
    let trainset = plan["jobs"][0]["params"]["trainset"].as_str().unwrap();
    assert_eq!(
        std::path::Path::new(trainset).canonicalize().unwrap(),
        h.path("exp/local/set").canonicalize().unwrap()
    );
}
