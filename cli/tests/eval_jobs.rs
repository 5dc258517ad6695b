//! The `sample` and `eval` job kinds end to end: `experiments/eval-demo.yaml`
//! (LoRA, DreamBooth-LoRA and textual inversion on the demo trainset, sampled and
//! scored) through a real coordinator and two worker processes on the tiny
//! pipeline, then `atelier report`; and what happens when a train job fails or the
//! metric weights are missing.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{by_name, repo, result_of, Db, Harness};
use serde_json::Value;

/// LPIPS weights for the test: random AlexNet and the lpips package's linear
/// layers (the metric library's test weights), written into the harness folder.
fn lpips_weights(h: &Harness) -> PathBuf {
    let path = h.path("lpips_alex.safetensors");
    atelier_metrics::testing::write_test_weights(
        &path,
        atelier_metrics::lpips::LpipsNet::Alex,
        &repo().join(LPIPS_LIN_ALEX),
    )
    .unwrap();
    path
}

const LPIPS_LIN_ALEX: &str = "worker/metrics/tests/fixtures/lpips/lin_alex.safetensors";
const TINY_CLIP: &str = "worker/metrics/tests/fixtures/tiny-clip";

fn eval_experiment(db: Db) {
    let started = std::time::Instant::now();
    let mut h = Harness::new(db);
    h.start_coordinator();
    h.start_worker("w1", &[]);
    h.start_worker("w2", &[]);
    let lpips = lpips_weights(&h);
    let clip = repo().join(TINY_CLIP);
    let demo = repo().join("experiments/eval-demo.yaml");
    let submitted = h.json(&[
        "submit",
        demo.to_str().unwrap(),
        "--set",
        &format!("lpips_weights={}", lpips.display()),
        "--set",
        &format!("clip_model={}", clip.display()),
        // Fewer steps than the file's: the test checks the plumbing, and a debug
        // build on two cores samples a 32 px image in seconds, not milliseconds.
        "--set",
        "steps=8",
        "--set",
        "sample_steps=4",
        "--set",
        "class_images=2",
        "--set",
        "class_steps=2",
        "--json",
    ]);
    assert_eq!(submitted["job_ids"].as_array().unwrap().len(), 10);

    // A second experiment: a train job that fails (the folder is no model), whose
    // sample and eval jobs must be cancelled with the reason; and an eval of the
    // base model whose LPIPS weights are missing, which must say how to make them.
    let not_a_model = h.path("not-a-model");
    std::fs::create_dir_all(&not_a_model).unwrap();
    let trainset = repo().join("trainsets/demo");
    let model = repo().join("worker/sd/tests/fixtures/tiny-sd");
    let missing = h.path("nowhere/lpips_alex.safetensors");
    let broken = h.write(
        "broken.yaml",
        &format!(
            "name: broken\n\
             jobs:\n\
             \x20 - {{name: prep, kind: prepare, params: {{trainset: \"{trainset}\", resolution: 32, holdout: 1}}}}\n\
             \x20 - {{name: bad-train, kind: train, needs: [prep], params: {{model: \"{bad}\", token: \"<x>\", steps: 2, resolution: 32}}}}\n\
             \x20 - {{name: sample-bad, kind: sample, needs: [bad-train], params: {{model: \"{model}\", prompts: [\"a {{token}}\"], images_per_prompt: 1, steps: 2, size: 32}}}}\n\
             \x20 - {{name: eval-bad, kind: eval, needs: [prep, sample-bad], params: {{lpips_weights: \"{lpips}\", clip_model: \"{clip}\"}}}}\n\
             \x20 - {{name: sample-base, kind: sample, params: {{model: \"{model}\", prompts: [\"a picture\"], images_per_prompt: 1, steps: 2, size: 32}}}}\n\
             \x20 - {{name: eval-noweights, kind: eval, needs: [prep, sample-base], params: {{lpips_weights: \"{missing}\", clip_model: \"{clip}\"}}}}\n",
            trainset = trainset.display(),
            bad = not_a_model.display(),
            model = model.display(),
            lpips = lpips.display(),
            clip = clip.display(),
            missing = missing.display(),
        ),
    );
    h.submit(&broken);

    let jobs = h.wait_all_ended(Duration::from_secs(900));
    eprintln!("{db:?}: all jobs ended after {:?}", started.elapsed());
    let demo_jobs: Vec<Value> = jobs
        .iter()
        .filter(|j| j["experiment_name"] == "eval-demo")
        .cloned()
        .collect();
    for job in &demo_jobs {
        assert_eq!(job["state"], "succeeded", "{job:#}");
    }

    // Each eval started only after its sample job, which started only after its
    // train job had finished.
    for method in ["lora", "dreambooth", "ti"] {
        let train = by_name(&demo_jobs, method);
        let sample = by_name(&demo_jobs, &format!("sample-{method}"));
        let eval = by_name(&demo_jobs, &format!("eval-{method}"));
        let at = |j: &Value, k: &str| j[k].as_i64().unwrap();
        assert!(at(sample, "started_at_ms") >= at(train, "finished_at_ms"));
        assert!(at(eval, "started_at_ms") >= at(sample, "finished_at_ms"));

        let sampled = result_of(sample);
        assert_eq!(sampled["images"], 4, "{sampled:#}");
        assert_eq!(sampled["method"], method);
        assert_eq!(sampled["width"], 32);
        let prompts = sampled["prompts"].as_array().unwrap();
        assert_eq!(prompts[0], "a picture in the style of <dots-style>");

        let scored = result_of(eval);
        assert_eq!(scored["references"], 3, "{scored:#}");
        let set = &scored["sets"][0];
        assert_eq!(set["method"], method);
        for metric in ["lpips_nearest", "lpips_pairwise"] {
            let mean = set[metric]["mean"].as_f64().unwrap();
            assert!(mean.is_finite() && mean > 0.0, "{metric} {mean}");
            assert_eq!(set[metric]["n"], 4);
        }
        let nearest = set["lpips_nearest"]["mean"].as_f64().unwrap();
        let pairwise = set["lpips_pairwise"]["mean"].as_f64().unwrap();
        assert!(
            nearest <= pairwise + 1e-9,
            "nearest {nearest} > mean {pairwise}"
        );
        let clip_score = set["clip_score"]["mean"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&clip_score), "{clip_score}");
        let eval_id = eval["id"].as_i64().unwrap();
        let logs =
            String::from_utf8_lossy(&h.cli(&["logs", &eval_id.to_string()]).stdout).to_string();
        assert!(logs.contains("LPIPS nearest"), "{logs}");
    }

    // The failed train job cancelled what depended on it, saying why.
    let broken_jobs: Vec<Value> = jobs
        .iter()
        .filter(|j| j["experiment_name"] == "broken")
        .cloned()
        .collect();
    let bad_train = by_name(&broken_jobs, "bad-train");
    assert_eq!(bad_train["state"], "failed", "{bad_train:#}");
    assert!(
        bad_train["reason"]
            .as_str()
            .unwrap()
            .contains("params.model"),
        "{bad_train:#}"
    );
    for name in ["sample-bad", "eval-bad"] {
        let job = by_name(&broken_jobs, name);
        assert_eq!(job["state"], "cancelled", "{job:#}");
        let reason = job["reason"].as_str().unwrap();
        assert!(
            reason.contains("bad-train") && reason.contains("failed"),
            "{reason}"
        );
    }
    // Missing weights: no number, and the way to make the file.
    let no_weights = by_name(&broken_jobs, "eval-noweights");
    assert_eq!(no_weights["state"], "failed", "{no_weights:#}");
    assert_eq!(no_weights["attempt"], 1, "not retried: {no_weights:#}");
    let reason = no_weights["reason"].as_str().unwrap();
    assert!(
        reason.contains(&missing.display().to_string())
            && reason.contains("tools/convert_lpips_weights.py"),
        "{reason}"
    );
    assert!(no_weights["result_json"].as_str().unwrap_or("").is_empty());

    // The report: three pictures, the table, and every method in report.json.
    // ATELIER_REPORT_DIR=/some/dir keeps the report to look at.
    let out = std::env::var_os("ATELIER_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| h.path("report"));
    let report = h.json(&["report", "eval-demo", "-o", out.to_str().unwrap(), "--json"]);
    for file in [
        "comparison.png",
        "samples.png",
        "loss.png",
        "report.json",
        "report.md",
    ] {
        assert!(out.join(file).is_file(), "no {file}: {report:#}");
    }
    let rows = report["report"]["rows"].as_array().unwrap();
    let methods: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["lora", "dreambooth", "ti"]);
    assert_eq!(report["report"]["trainings"].as_array().unwrap().len(), 3);
    let grid = image::open(out.join("samples.png")).unwrap();
    assert!(grid.height() > 3 * 160, "three rows of samples");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("![comparison](comparison.png)") && md.contains("| dreambooth |"));
    eprintln!("{db:?}: done in {:?}", started.elapsed());
}

both!(
    eval_experiment,
    eval_experiment_runs_end_to_end_sqlite,
    eval_experiment_runs_end_to_end_postgres
);
