//! Pushed trainsets end to end, with real coordinator and worker processes on
//! SQLite and on PostgreSQL: `atelier trainset push` stores a trainset once per
//! content; `prepare` jobs on `pushed:NAME` are pinned to that content at submit,
//! read it from the worker's cache, and run once per content and params (the
//! others reuse that job's artifacts); a train job trains on such a cached job.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{by_name, repo, Db, Harness};
use serde_json::Value;

fn demo() -> PathBuf {
    repo().join("trainsets/demo")
}

fn tiny_sd() -> String {
    repo()
        .join("worker/sd/tests/fixtures/tiny-sd")
        .display()
        .to_string()
}

/// Every blob file of the coordinator's artifact store.
fn blobs(h: &Harness) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = h.path("data/artifacts/sha256");
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn result(job: &Value) -> Value {
    serde_json::from_str(job["job"]["result_json"].as_str().unwrap_or("")).unwrap_or(Value::Null)
}

fn logs(h: &Harness, id: i64) -> String {
    String::from_utf8_lossy(&h.cli(&["logs", &id.to_string()]).stdout).into_owned()
}

fn artifact_shas(job: &Value) -> Vec<(String, String)> {
    job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Push twice (the second stores nothing), then an experiment with two prepare jobs
/// on `pushed:demo` with equal params: one runs (on a worker with room for both),
/// the other is `cached_from` it, and a train job trains on the cached one. A
/// later experiment on the same content succeeds at submit; one with other params
/// runs, from the worker's unpacked copy.
fn push_prepare_once_and_train(db: Db) {
    let started = Instant::now();
    let mut h = Harness::new(db);
    h.start_coordinator();

    let first = h.json(&["trainset", "push", demo().to_str().unwrap(), "--json"]);
    assert_eq!(first["name"], "demo");
    assert_eq!(first["uploaded"], true, "{first:#}");
    assert_eq!(first["files"], 25, "12 images, 12 captions, trainset.toml");
    assert_eq!(first["reference"], "pushed:demo");
    let sha = first["sha256"].as_str().unwrap().to_string();
    assert_eq!(blobs(&h).len(), 1);
    // Again, and the same files elsewhere under another name: nothing sent.
    let again = h.json(&["trainset", "push", demo().to_str().unwrap(), "--json"]);
    assert_eq!(
        (&again["uploaded"], &again["sha256"]),
        (&Value::Bool(false), &first["sha256"])
    );
    let copy = h.path("elsewhere/demo-copy");
    copy_dir(&demo(), &copy);
    let out = h.cli(&["trainset", "push", copy.to_str().unwrap(), "--name", "dots"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nothing uploaded"), "{text}");
    assert!(text.contains("trainset: pushed:dots"), "{text}");
    assert_eq!(blobs(&h).len(), 1, "one blob for one content");

    let train = format!(
        "{{model: \"{}\", method: lora, token: \"<dots-style>\", steps: 2, rank: 2, alpha: 2, \
         lr: 0.001, resolution: 32, seed: 3, checkpoint_every: null}}",
        tiny_sd()
    );
    let file = h.write(
        "pushed.yaml",
        &format!(
            "name: pushed\n\
             jobs:\n\
             \x20 - name: prep-a\n    kind: prepare\n    params: {{trainset: pushed:demo, resolution: 32}}\n\
             \x20 - name: prep-b\n    kind: prepare\n    params: {{trainset: pushed:dots, resolution: 32, dedupe: true}}\n\
             \x20 - name: train\n    kind: train\n    needs: [prep-b]\n    params: {train}\n"
        ),
    );
    let (_, ids) = h.submit(&file);
    let [a, b, t] = ids[..] else {
        panic!("{ids:?}")
    };
    // Pinned at submit: a later push under the name changes nothing for this job.
    let prep_a = h.job(a);
    let params: Value =
        serde_json::from_str(prep_a["job"]["params_json"].as_str().unwrap()).unwrap();
    assert_eq!(params["trainset"], format!("pushed:demo@{sha}"));
    let waiting = h.job(b);
    assert!(
        waiting["waiting_reason"]
            .as_str()
            .unwrap()
            .contains(&format!("job {a} `prep-a`")),
        "{waiting:#}"
    );

    // Room for both prepare jobs at once: still only one runs.
    h.start_worker("w", &["--slots", "2"]);
    let jobs = h.wait_all_ended(Duration::from_secs(240));
    assert!(
        jobs.iter().all(|j| j["state"] == "succeeded"),
        "not all succeeded: {jobs:#?}"
    );
    let (prep_a, prep_b) = (h.job(a), h.job(b));
    assert_eq!(result(&prep_b)["cached_from"], a, "{prep_b:#}");
    assert_eq!(result(&prep_b)["images"], result(&prep_a)["images"]);
    assert!(
        prep_b["attempts"].as_array().is_none_or(|a| a.is_empty()),
        "{prep_b:#}"
    );
    assert_eq!(prep_a["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(artifact_shas(&prep_a), artifact_shas(&prep_b));
    assert!(logs(&h, b).contains(&format!("cached: not run: job {a} `prep-a`")));
    assert!(
        logs(&h, a).contains("downloaded (sha256 checked) and unpacked"),
        "{}",
        logs(&h, a)
    );
    assert!(by_name(&jobs, "train")["state"] == "succeeded");
    let trained = h.job(t);
    assert!(
        artifact_shas(&trained)
            .iter()
            .any(|(n, _)| n == "pytorch_lora_weights.safetensors"),
        "{trained:#}"
    );
    // `pull` of the cached job: the same files, sha256 checked.
    let pulled = h.json(&["pull", &b.to_string(), "-o", "prep-b", "--json"]);
    assert!(pulled
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["verified"] == true));
    assert!(h.path("prep-b/dataset.safetensors").is_file());

    // Later: the same content and params succeed at submit, without a worker's help;
    // other params run, from the unpacked copy the worker kept.
    let file = h.write(
        "later.yaml",
        &format!(
            "name: later\n\
             jobs:\n\
             \x20 - name: same\n    kind: prepare\n    params: {{trainset: \"sha256:{sha}\", resolution: 32}}\n\
             \x20 - name: other\n    kind: prepare\n    params: {{trainset: pushed:demo, resolution: 16}}\n"
        ),
    );
    let (_, ids) = h.submit(&file);
    let same = h.job(ids[0]);
    assert_eq!(common::state(&same), "succeeded", "{same:#}");
    assert_eq!(result(&same)["cached_from"], a);
    h.wait_all_ended(Duration::from_secs(120));
    let other = h.job(ids[1]);
    assert_eq!(common::state(&other), "succeeded", "{other:#}");
    assert!(result(&other).get("cached_from").is_none());
    assert!(logs(&h, ids[1]).contains("reusing"), "{}", logs(&h, ids[1]));
    eprintln!(
        "push_prepare_once_and_train ({db:?}): {:?}",
        started.elapsed()
    );
}
both!(
    push_prepare_once_and_train,
    push_prepare_once_and_train_sqlite,
    push_prepare_once_and_train_postgres
);

/// An unknown name is refused at submit naming the job and the field; a reference
/// that is not one is refused by the CLI; a blob cut short in the artifact store
/// fails the job clearly, not retried.
fn bad_pushed_trainsets(db: Db) {
    let started = Instant::now();
    let mut h = Harness::new(db);
    h.start_coordinator();
    let file = h.write(
        "unknown.yaml",
        "name: unknown\njobs:\n  - name: prep\n    kind: prepare\n    params: {trainset: pushed:nope}\n",
    );
    let out = h.cli(&["submit", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("job `prep`: params.trainset: no trainset was pushed as `nope`"),
        "{err}"
    );
    let file = h.write(
        "malformed.yaml",
        "name: malformed\njobs:\n  - name: prep\n    kind: prepare\n    params: {trainset: \"sha256:abc\"}\n",
    );
    let out = h.cli(&["submit", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("job `prep`: params.trainset"), "{err}");
    assert!(h
        .json(&["experiments", "--json"])
        .as_array()
        .unwrap()
        .is_empty());

    // Two images of the demo set, pushed, then their blob cut short.
    let small = h.path("small");
    std::fs::create_dir_all(&small).unwrap();
    for f in ["dots-0.png", "dots-0.txt", "dots-1.png"] {
        std::fs::copy(demo().join("images").join(f), small.join(f)).unwrap();
    }
    let pushed = h.json(&["trainset", "push", small.to_str().unwrap(), "--json"]);
    assert_eq!(pushed["files"], 3);
    let [blob] = &blobs(&h)[..] else { panic!() };
    let bytes = std::fs::read(blob).unwrap();
    std::fs::write(blob, &bytes[..bytes.len() / 2]).unwrap();

    let file = h.write(
        "cut.yaml",
        "name: cut\njobs:\n  - name: prep\n    kind: prepare\n    params: {trainset: pushed:small, resolution: 16}\n",
    );
    let (_, ids) = h.submit(&file);
    h.start_worker("w", &[]);
    h.wait_all_ended(Duration::from_secs(60));
    let job = h.job(ids[0]);
    assert_eq!(common::state(&job), "failed", "{job:#}");
    let reason = job["job"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("trainset pushed:small@")
            && reason.contains(&format!("expected {} bytes with sha256", bytes.len()))
            && reason.contains("not retryable"),
        "{reason}"
    );
    assert!(
        !h.path("data/cache/trainsets")
            .join(pushed["sha256"].as_str().unwrap())
            .exists(),
        "nothing kept in the worker's cache"
    );
    eprintln!("bad_pushed_trainsets ({db:?}): {:?}", started.elapsed());
}
both!(
    bad_pushed_trainsets,
    bad_pushed_trainsets_sqlite,
    bad_pushed_trainsets_postgres
);
