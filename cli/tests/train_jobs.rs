//! The `train` job kind end to end: real coordinator and worker processes on the
//! tiny diffusers pipeline of the model library's fixtures and the demo trainset,
//! on SQLite and on PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{repo, state, wait_until, Db, Harness};
use serde_json::Value;

/// Steps of the runs, and a checkpoint every `EVERY`: enough steps after the first
/// checkpoint that the run is still going when the test kills its worker.
const STEPS: usize = 10;
const EVERY: usize = 2;
const WEIGHTS: &str = "pytorch_lora_weights.safetensors";

fn tiny_sd() -> String {
    repo()
        .join("worker/sd/tests/fixtures/tiny-sd")
        .display()
        .to_string()
}

fn demo() -> String {
    repo().join("trainsets/demo").display().to_string()
}

/// A train job's params: LoRA rank 2 at 32 px (about 0.6 s a step in a debug
/// build), `steps` steps.
fn train_params(steps: usize, extra: &str) -> String {
    format!(
        "{{model: \"{}\", method: lora, token: \"<dots-style>\", steps: {steps}, rank: 2, \
         alpha: 2, lr: 0.001, resolution: 32, seed: 3{extra}}}",
        tiny_sd()
    )
}

fn artifacts(job: &Value) -> Vec<Value> {
    job["artifacts"].as_array().cloned().unwrap_or_default()
}

fn artifact<'a>(arts: &'a [Value], name: &str) -> &'a Value {
    arts.iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no artifact `{name}` in {arts:#?}"))
}

/// The steps of the checkpoints whose four files were all uploaded.
fn complete_checkpoints(arts: &[Value]) -> Vec<usize> {
    let names: Vec<&str> = arts.iter().filter_map(|a| a["name"].as_str()).collect();
    let mut steps: Vec<usize> = (1..STEPS)
        .filter(|step| {
            [
                WEIGHTS,
                "training.json",
                "optimizer.safetensors",
                "state.json",
            ]
            .iter()
            .all(|f| names.contains(&format!("checkpoint-{step}/{f}").as_str()))
        })
        .collect();
    steps.sort();
    steps
}

/// prepare, then two train jobs with the same params: `reference` runs through,
/// `train` loses its worker to SIGKILL after its first checkpoint was uploaded, is
/// leased again once its lease ran out, resumes from its last complete checkpoint
/// and ends with weights equal, byte for byte, to the reference's.
fn killed_train_worker_resumes(db: Db) {
    let started = Instant::now();
    let mut h = Harness::new(db);
    h.lease_ttl = 2.0;
    h.start_coordinator();
    let doomed = h.start_worker("doomed", &[]);
    let params = train_params(STEPS, &format!(", checkpoint_every: {EVERY}"));
    let file = h.write(
        "train.yaml",
        &format!(
            "name: train-resume\n\
             jobs:\n\
             \x20 - name: prep\n    kind: prepare\n    params: {{trainset: \"{}\", resolution: 32}}\n\
             \x20 - name: reference\n    kind: train\n    priority: 2\n    needs: [prep]\n    params: {params}\n\
             \x20 - name: train\n    kind: train\n    priority: 1\n    needs: [prep]\n    params: {params}\n",
            demo()
        ),
    );
    let (_, ids) = h.submit(&file);
    let [_prep, reference, train] = ids[..] else {
        panic!("{ids:?}")
    };

    // The doomed worker has one slot: prep, the reference, then `train`.
    wait_until(
        "a complete checkpoint of `train` is uploaded",
        Duration::from_secs(240),
        || !complete_checkpoints(&artifacts(&h.job(train))).is_empty(),
    );
    let killed_at = Instant::now();
    h.kill(doomed);
    let dead = h.job(train);
    assert_eq!(state(&dead), "running", "killed mid-run: {dead:#}");
    let dead_token = dead["job"]["lease_token"].as_u64().unwrap();
    // The last complete checkpoint the dead worker left behind.
    let resume_step = *complete_checkpoints(&artifacts(&dead)).last().unwrap();
    assert!(resume_step < STEPS);

    h.start_worker("rescuer", &[]);
    wait_until("`train` is leased again", Duration::from_secs(30), || {
        let j = h.job(train);
        j["job"]["lease_token"].as_u64().unwrap() > dead_token
    });
    let releasing = killed_at.elapsed();
    // The deadline was at least TTL - one heartbeat interval (TTL / 3) after the kill.
    assert!(
        releasing >= Duration::from_millis(1300),
        "re-leased only after the deadline: {releasing:?}"
    );
    let jobs = h.wait_all_ended(Duration::from_secs(240));
    assert!(
        jobs.iter().all(|j| j["state"] == "succeeded"),
        "not all succeeded: {jobs:#?}"
    );

    let trained = h.job(train);
    let outcomes: Vec<&str> = trained["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["lost", "succeeded"], "{trained:#}");
    assert!(trained["attempts"][1]["worker_id"]
        .as_str()
        .unwrap()
        .starts_with("rescuer"));
    let logs = String::from_utf8_lossy(&h.cli(&["logs", &train.to_string()]).stdout).to_string();
    let resumed = format!(
        "resuming from checkpoint-{resume_step} (step {resume_step} of {STEPS}), uploaded by attempt 1"
    );
    let at = logs
        .find(&resumed)
        .unwrap_or_else(|| panic!("no `{resumed}` in the log:\n{logs}"));
    // The second attempt went on from there rather than from step 1.
    let after = &logs[at..];
    assert!(
        after.contains(&format!("step {}/{STEPS}", resume_step + 1)) && !after.contains("step 1/"),
        "{after}"
    );
    let result: Value =
        serde_json::from_str(trained["job"]["result_json"].as_str().unwrap()).unwrap();
    assert_eq!(result["resumed_from_step"], resume_step);
    assert_eq!(result["steps"], STEPS);

    // Bit for bit: the same sha256, and the same bytes once pulled (hash-checked).
    let (got, want) = (artifacts(&trained), artifacts(&h.job(reference)));
    for name in [WEIGHTS, "training.json"] {
        assert_eq!(
            artifact(&got, name)["sha256"],
            artifact(&want, name)["sha256"],
            "`{name}` of the resumed run differs from the uninterrupted run's"
        );
    }
    let pulled = h.path("pulled-train");
    h.json(&[
        "pull",
        &train.to_string(),
        "-o",
        pulled.to_str().unwrap(),
        "--json",
    ]);
    let reference_dir = h.path("pulled-reference");
    h.json(&[
        "pull",
        &reference.to_string(),
        "-o",
        reference_dir.to_str().unwrap(),
        "--name",
        WEIGHTS,
        "--json",
    ]);
    assert_eq!(
        std::fs::read(pulled.join(WEIGHTS)).unwrap(),
        std::fs::read(reference_dir.join(WEIGHTS)).unwrap()
    );
    // Checkpoints pull into their folders, ready for `atelier train --resume`.
    let state_file = pulled.join(format!("checkpoint-{resume_step}/state.json"));
    let saved: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(saved["step"], resume_step);
    // Progress carried the step, loss and speed.
    let progress = trained["job"]["progress_message"].as_str().unwrap();
    assert!(
        progress.contains("step/s") || progress.contains("uploading"),
        "{progress}"
    );
    eprintln!(
        "{db:?}: resumed from step {resume_step} in {:?}",
        started.elapsed()
    );
}
both!(
    killed_train_worker_resumes,
    killed_train_worker_resumes_sqlite,
    killed_train_worker_resumes_postgres
);

/// Bad train params are refused at submit with the field named (exit 3); what only
/// the worker can see (a folder that is no diffusers model) fails the job at once,
/// not retried, naming the field; a train job on a trainset folder runs through.
fn bad_train_params(db: Db) {
    let mut h = Harness::new(db);
    h.start_coordinator();
    let prep = format!(
        "  - name: prep\n    kind: prepare\n    params: {{trainset: \"{}\", resolution: 32}}\n",
        demo()
    );
    let cases = [
        (
            "rank.yaml",
            format!(
                "name: x\njobs:\n{prep}  - name: t\n    kind: train\n    needs: [prep]\n    params: {}\n",
                train_params(2, ", rank: 0").replace("rank: 2, ", "")
            ),
            "`rank` must be at least 1",
        ),
        (
            "typo.yaml",
            format!(
                "name: x\njobs:\n{prep}  - name: t\n    kind: train\n    needs: [prep]\n    params: {}\n",
                train_params(2, ", stpes: 3")
            ),
            "unknown field `stpes`",
        ),
        (
            "nodata.yaml",
            format!(
                "name: x\njobs:\n  - name: t\n    kind: train\n    params: {}\n",
                train_params(2, "")
            ),
            "params.trainset",
        ),
        (
            "nomodel.yaml",
            format!(
                "name: x\njobs:\n{prep}  - name: t\n    kind: train\n    needs: [prep]\n    params: {}\n",
                train_params(2, "").replace(&tiny_sd(), "./no-such-model")
            ),
            "params.model",
        ),
        (
            "cuda.yaml",
            format!(
                "name: x\njobs:\n{prep}  - name: t\n    kind: train\n    needs: [prep]\n    params: {}\n",
                train_params(2, ", backend: cuda")
            ),
            "requires: {gpus: 1, backend: cuda}",
        ),
    ];
    for (name, text, expect) in cases {
        let file = h.write(name, &text);
        let out = h.cli(&["submit", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{name}: {err}");
        assert!(
            err.contains(expect),
            "{name}: expected `{expect}` in: {err}"
        );
    }
    assert_eq!(h.json(&["experiments", "--json"]), serde_json::json!([]));

    // A folder that exists but holds no model passes submit; the worker refuses it.
    let direct = train_params(2, &format!(", trainset: \"{}\"", demo()));
    let not_a_model = direct.replace(&tiny_sd(), &demo());
    let endless = train_params(
        1_000_000,
        &format!(", trainset: \"{}\", checkpoint_every: null", demo()),
    );
    let file = h.write(
        "worker.yaml",
        &format!(
            "name: checked-by-the-worker\njobs:\n\
             \x20 - name: bad\n    kind: train\n    priority: 2\n    params: {not_a_model}\n\
             \x20 - name: direct\n    kind: train\n    priority: 1\n    params: {direct}\n\
             \x20 - name: endless\n    kind: train\n    params: {endless}\n"
        ),
    );
    let w = h.start_worker("w", &[]);
    let (_, ids) = h.submit(&file);

    // A cancel stops a run mid-way, within a step, and frees the worker.
    wait_until("the endless run steps", Duration::from_secs(120), || {
        let j = h.job(ids[2]);
        j["job"]["progress_message"]
            .as_str()
            .is_some_and(|m| m.contains("step/s"))
    });
    let cancelled_at = Instant::now();
    let out = h.cli(&["cancel", &ids[2].to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the worker is free again", Duration::from_secs(10), || {
        h.log_of(w).contains("stopped")
            && h.workers().iter().any(|w| {
                w["name"] == "w" && w["running_jobs"].as_array().is_none_or(|r| r.is_empty())
            })
    });
    eprintln!("cancel stopped the run in {:?}", cancelled_at.elapsed());
    h.wait_all_ended(Duration::from_secs(60));
    assert_eq!(state(&h.job(ids[2])), "cancelled");

    let bad = h.job(ids[0]);
    assert_eq!(state(&bad), "failed");
    assert_eq!(bad["attempts"].as_array().unwrap().len(), 1, "{bad:#}");
    let reason = bad["job"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("params.model")
            && reason.contains("model_index.json")
            && reason.contains("not retryable"),
        "{reason}"
    );
    let direct = h.job(ids[1]);
    assert_eq!(state(&direct), "succeeded", "{direct:#}");
    let names: Vec<&str> = direct["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    // Two steps, a checkpoint every 100 by default: only the final files.
    assert_eq!(names, [WEIGHTS, "training.json"]);
}
both!(
    bad_train_params,
    bad_train_params_sqlite,
    bad_train_params_postgres
);

/// A worker whose disk would keep less than `--min-free-disk-gb` after a download
/// fails the job before writing anything, saying how much was needed and free.
#[test]
fn a_download_that_would_fill_the_disk_fails_with_the_numbers() {
    let mut h = Harness::new(Db::Sqlite);
    h.start_coordinator();
    // A petabyte kept free: no disk here has that.
    h.start_worker("full", &["--min-free-disk-gb", "1000000"]);
    let file = h.write(
        "disk.yaml",
        &format!(
            "name: disk\njobs:\n\
             \x20 - {{name: prep, kind: prepare, params: {{trainset: \"{trainset}\", resolution: 32}}}}\n\
             \x20 - {{name: train, kind: train, needs: [prep], max_attempts: 1, params: {{model: \"{model}\", token: \"<x>\", steps: 1, resolution: 32}}}}\n",
            trainset = repo().join("trainsets/demo").display(),
            model = repo().join("worker/sd/tests/fixtures/tiny-sd").display(),
        ),
    );
    let (_, ids) = h.submit(&file);
    wait_until("the train job ends", Duration::from_secs(60), || {
        state(&h.job(ids[1])) == "failed"
    });
    // `prepare` reads a folder and downloads nothing: it ran.
    assert_eq!(state(&h.job(ids[0])), "succeeded");
    let train = h.job(ids[1]);
    let reason = train["job"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("not enough disk space for `dataset.safetensors`")
            && reason.contains("1000000.00 GB kept free (`--min-free-disk-gb`)"),
        "{reason}"
    );
}
