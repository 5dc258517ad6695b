//! `atelier quickstart`, the README's first command: the study in miniature runs
//! to the end in one process, prints the job table, pulls the weights and writes
//! the report; then its state is served again with `atelier up`, `atelier pull`
//! fetches a LoRA and `atelier generate --lora` uses it.

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, Db, Harness};

#[test]
fn quickstart_runs_the_study_in_miniature_and_its_lora_is_pulled_and_used() {
    let started = Instant::now();
    let mut h = Harness::new(Db::Sqlite);
    let qs = h.path("qs");
    // Fewer steps than the defaults: a debug build on two cores.
    let out = h.cli(&[
        "quickstart",
        "-o",
        qs.to_str().unwrap(),
        "--steps",
        "3",
        "--sample-steps",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("quickstart took {:?}", started.elapsed());
    assert!(
        stdout.contains(": 16 jobs, 16 succeeded, 0 failed, 0 cancelled"),
        "{stdout}"
    );
    // The final job table, every job in it.
    for name in ["prep-waves", "dreambooth-dots", "ti-dots", "eval-stripes"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&format!(" {name} ")) && l.contains("succeeded")),
            "no succeeded row for {name}:\n{stdout}"
        );
    }
    let listed = |prefix: &str| -> Vec<std::path::PathBuf> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|p| p.trim().into())
            .collect()
    };
    let weights = listed("weights:");
    assert_eq!(weights.len(), 5, "{stdout}");
    let report = listed("report:");
    assert_eq!(report.len(), 4, "{stdout}");
    for path in weights.iter().chain(&report) {
        assert!(path.is_file(), "{} is not a file", path.display());
    }
    let lora = qs.join("weights/lora-dots/pytorch_lora_weights.safetensors");
    assert!(weights.contains(&lora), "{weights:?}");
    assert!(qs
        .join("weights/ti-dots/learned_embeds.safetensors")
        .is_file());
    let md = std::fs::read_to_string(qs.join("report/report.md")).unwrap();
    assert!(
        md.contains("> Quick start: a tiny random base model, LPIPS with a random AlexNet"),
        "{md}"
    );
    for method in ["| lora |", "| dreambooth |", "| ti |"] {
        assert!(md.contains(method), "{method} not in\n{md}");
    }

    // Its state served again: `up` with the settings file the quick start wrote.
    let settings = qs.join("atelier.toml");
    let listen = h.url().trim_start_matches("http://").to_string();
    h.spawn_without(
        "up",
        &[
            "--config",
            settings.to_str().unwrap(),
            "up",
            "--listen",
            &listen,
        ],
        &["ATELIER_DATA_DIR"],
    );
    wait_until(
        "the served coordinator answers",
        Duration::from_secs(30),
        || h.cli(&["jobs", "--json"]).status.success(),
    );
    let jobs = h.jobs();
    assert_eq!(jobs.len(), 16);
    let lora_job = jobs.iter().find(|j| j["name"] == "lora-dots").unwrap();
    let id = lora_job["id"].as_i64().unwrap().to_string();
    let pulled = h.path("lora-dots");
    let out = h.cli(&["pull", &id, "-o", pulled.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = pulled.join("pytorch_lora_weights.safetensors");
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&lora).unwrap());

    // `generate --lora` uses it: at a large scale the image moves away from the
    // base model's, from the same seed.
    let generate = |extra: &[&str], name: &str| {
        let png = h.path(&format!("{name}.png"));
        let raw = h.path(&format!("{name}.safetensors"));
        let model = qs.join("model");
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a house in the style of <dots-style>",
            "--size",
            "32",
            "--steps",
            "2",
            "--seed",
            "7",
            "-o",
            png.to_str().unwrap(),
            "--raw",
            raw.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = h.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(image::open(&png).unwrap().width(), 32);
        std::fs::read(raw).unwrap()
    };
    let base = generate(&[], "base");
    let with_lora = format!("{}:100", file.display());
    let adapted = generate(&["--lora", &with_lora], "adapted");
    assert_ne!(base, adapted, "the LoRA changed nothing");
    eprintln!("done in {:?}", started.elapsed());
}
