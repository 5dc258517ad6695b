//! End-to-end: a coordinator and worker processes (real OS processes), driven by
//! the `atelier` CLI, on SQLite and on PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{fixture_trainset, state, wait_until, Db, Harness};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// 20 `prepare` jobs from a grid sweep on two worker processes; every artifact
/// pulled and its sha256 checked independently.
fn sweep_of_prepare_jobs(db: Db) {
    let mut h = Harness::new(db);
    h.start_coordinator();
    h.start_worker("alpha", &["--slots", "2"]);
    h.start_worker("beta", &["--slots", "2"]);
    let file = h.write(
        "sweep.yaml",
        &format!(
            "name: prep-sweep\n\
             defaults:\n  kind: prepare\n  params: {{trainset: \"{}\"}}\n\
             jobs:\n  - name: prep\n    sweep:\n      parameters:\n\
             \x20       params.resolution: [16, 24, 32, 40, 48]\n\
             \x20       params.dedupe: [true, false]\n\
             \x20       params.min_images: [1, 2]\n",
            fixture_trainset().display()
        ),
    );
    let (_exp, ids) = h.submit(&file);
    assert_eq!(ids.len(), 20);
    let jobs = h.wait_all_ended(Duration::from_secs(180));
    assert!(
        jobs.iter().all(|j| j["state"] == "succeeded"),
        "not all succeeded: {jobs:#?}"
    );
    let workers: std::collections::BTreeSet<&str> = jobs
        .iter()
        .map(|j| j["worker_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "both worker processes ran jobs: {workers:?}"
    );

    for id in &ids {
        let shown = h.job(*id);
        let arts = shown["artifacts"].as_array().unwrap();
        let names: Vec<&str> = arts.iter().map(|a| a["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["dataset.safetensors", "manifest.json"]);
        let out = h.path(&format!("pulled-{id}"));
        let pulled = h.json(&[
            "pull",
            &id.to_string(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(pulled.as_array().unwrap().len(), 2);
        for a in arts {
            let bytes = std::fs::read(out.join(a["name"].as_str().unwrap())).unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                a["sha256"].as_str().unwrap()
            );
            assert_eq!(bytes.len() as u64, a["size"].as_u64().unwrap());
        }
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        let rejected: Vec<&str> = manifest["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["file"].as_str().unwrap())
            .collect();
        assert_eq!(
            rejected,
            ["broken.png"],
            "the corrupt image is rejected by name"
        );
        let res = shown["job"]["sweep_point_json"].as_str().unwrap();
        let point: Value = serde_json::from_str(res).unwrap();
        assert_eq!(manifest["resolution"], point["params.resolution"]);
    }
    // The rejection is also in the job's stored log.
    let logs = h.cli(&["logs", &ids[0].to_string()]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("rejected `broken.png`"));
}
both!(
    sweep_of_prepare_jobs,
    sweep_of_prepare_jobs_sqlite,
    sweep_of_prepare_jobs_postgres
);

/// A worker killed with SIGKILL mid-job: the job is leased again after the
/// deadline, ends exactly once, and the dead worker's token is refused.
fn killed_worker(db: Db) {
    let mut h = Harness::new(db);
    h.lease_ttl = 2.0;
    h.start_coordinator();
    let a = h.start_worker("doomed", &[]);
    let file = h.write(
        "one.yaml",
        "name: kill-worker\njobs:\n  - name: slow\n    kind: noop\n    params: {seconds: 4, artifact: done}\n",
    );
    let (_, ids) = h.submit(&file);
    let id = ids[0];
    wait_until(
        "the job runs on the doomed worker",
        Duration::from_secs(20),
        || state(&h.job(id)) == "running",
    );
    let first = h.job(id);
    let dead_token = first["job"]["lease_token"].as_u64().unwrap();
    let killed_at = Instant::now();
    h.kill(a);
    h.start_worker("rescuer", &[]);
    wait_until("the job is leased again", Duration::from_secs(20), || {
        let j = h.job(id);
        j["job"]["lease_token"].as_u64().unwrap() > dead_token && state(&j) == "running"
    });
    let releasing = killed_at.elapsed();
    // The last heartbeat came at most one interval (TTL / 3) before the kill, so the
    // deadline was at least TTL - TTL / 3 = 1.33 s after it.
    assert!(
        releasing >= Duration::from_millis(1300),
        "re-leased only after the deadline: {releasing:?}"
    );

    // Writes with the dead worker's token are refused while the rescuer holds the job.
    let refused = stale_writes(&h, id, dead_token);
    assert!(refused.iter().all(|m| m.contains("stale")), "{refused:?}");

    let jobs = h.wait_all_ended(Duration::from_secs(30));
    assert_eq!(jobs[0]["state"], "succeeded");
    let attempts = h.job(id)["attempts"].as_array().unwrap().clone();
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["lost", "succeeded"], "{attempts:#?}");
    assert!(attempts[0]["reason"]
        .as_str()
        .unwrap()
        .contains("lease expired"));
    assert!(attempts[1]["worker_id"]
        .as_str()
        .unwrap()
        .starts_with("rescuer"));
    // And after the end, too.
    let refused = stale_writes(&h, id, dead_token);
    assert!(
        refused.iter().all(|m| m.contains("no longer valid")),
        "{refused:?}"
    );
}
both!(killed_worker, killed_worker_sqlite, killed_worker_postgres);

/// Sends complete, progress and log writes with `token`; returns the refusals.
fn stale_writes(h: &Harness, job_id: i64, token: u64) -> Vec<String> {
    use atelier_proto::v1;
    let url = h.url();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let mut api = v1::worker_api_client::WorkerApiClient::connect(url)
                .await
                .unwrap();
            let mut refused = Vec::new();
            let r = api
                .complete(v1::CompleteRequest {
                    job_id,
                    lease_token: token,
                    result_json: "{}".into(),
                    lease_next: None,
                })
                .await;
            refused.push(r.expect_err("a stale complete must be refused"));
            let r = api
                .report_progress(v1::ProgressRequest {
                    job_id,
                    lease_token: token,
                    fraction: 0.5,
                    ..Default::default()
                })
                .await;
            refused.push(r.expect_err("a stale progress report must be refused"));
            let r = api
                .append_logs(v1::AppendLogsRequest {
                    job_id,
                    lease_token: token,
                    lines: vec!["zombie".into()],
                })
                .await;
            refused.push(r.expect_err("stale log lines must be refused"));
            refused
                .into_iter()
                .map(|s| {
                    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
                    s.message().to_string()
                })
                .collect()
        })
}

/// The coordinator killed with SIGKILL while jobs run, then restarted: workers
/// reconnect and every job ends exactly once.
fn killed_coordinator(db: Db) {
    let mut h = Harness::new(db);
    h.lease_ttl = 3.0;
    let c = h.start_coordinator();
    h.start_worker("w1", &["--slots", "2"]);
    h.start_worker("w2", &["--slots", "2"]);
    let mut yaml = String::from("name: survive\njobs:\n");
    for i in 0..12 {
        yaml.push_str(&format!(
            "  - name: j{i}\n    kind: noop\n    params: {{seconds: 1.5, artifact: \"payload {i}\"}}\n"
        ));
    }
    let (_, ids) = h.submit(&h.write("many.yaml", &yaml));
    wait_until("jobs are running", Duration::from_secs(20), || {
        h.jobs().iter().filter(|j| j["state"] == "running").count() >= 2
    });
    h.kill(c);
    std::thread::sleep(Duration::from_secs(2));
    h.start_coordinator();
    let jobs = h.wait_all_ended(Duration::from_secs(90));
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:#?}");
    for id in ids {
        let j = h.job(id);
        common::succeeded_once(id, &j);
        assert_eq!(
            j["artifacts"].as_array().unwrap().len(),
            1,
            "job {id} kept its artifact"
        );
    }
}
both!(
    killed_coordinator,
    killed_coordinator_sqlite,
    killed_coordinator_postgres
);

/// `show` says why a job cannot start; cancelling an experiment stops its running
/// job on the worker within 5 s.
fn explain_and_cancel(db: Db) {
    let mut h = Harness::new(db);
    h.start_coordinator();
    let cpu = h.start_worker("cpubox", &[]);
    h.start_worker(
        "gpubox",
        &[
            "--backend",
            "cuda",
            "--gpus",
            "0",
            "--gpu-memory-gb",
            "24",
            "--slots",
            "0",
        ],
    );
    let file = h.write(
        "big.yaml",
        "name: too-big\njobs:\n\
         \x20 - name: huge\n    kind: noop\n    requires: {gpus: 1, gpu_mem_gb: 80, backend: cuda}\n\
         \x20 - name: long\n    kind: noop\n    params: {seconds: 120}\n",
    );
    let (exp, ids) = h.submit(&file);
    wait_until("the long job runs", Duration::from_secs(20), || {
        state(&h.job(ids[1])) == "running"
    });
    let huge = h.job(ids[0]);
    assert_eq!(state(&huge), "queued");
    assert_eq!(
        huge["waiting_reason"],
        "no connected worker can run it: needs 80 GB GPU memory and the largest connected worker has 24 GB"
    );
    let text = String::from_utf8_lossy(&h.cli(&["show", &ids[0].to_string()]).stdout).to_string();
    assert!(
        text.contains("waiting    no connected worker can run it"),
        "{text}"
    );

    let started = Instant::now();
    let out = h.cli(&["cancel", &format!("e{exp}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the worker stops the job", Duration::from_secs(5), || {
        h.log_of(cpu).contains("stopped")
    });
    let stopped = started.elapsed();
    assert!(stopped < Duration::from_secs(5), "{stopped:?}");
    wait_until(
        "the worker reports no running job",
        Duration::from_secs(5),
        || {
            h.workers().iter().any(|w| {
                w["name"] == "cpubox" && w["running_jobs"].as_array().is_none_or(|r| r.is_empty())
            })
        },
    );
    for id in ids {
        let j = h.job(id);
        assert_eq!(state(&j), "cancelled");
        assert_eq!(j["job"]["reason"], "cancelled by user");
    }
    eprintln!("cancel reached the worker in {stopped:?}");
    // A finished job cannot be cancelled again: exit code 6.
    assert_eq!(h.cli(&["cancel", "2"]).status.code(), Some(6));
    assert_eq!(h.cli(&["show", "999"]).status.code(), Some(4));
}
both!(
    explain_and_cancel,
    explain_and_cancel_sqlite,
    explain_and_cancel_postgres
);

/// Invalid experiment files are refused with the line, field or path at fault,
/// exit code 3, and nothing is written.
fn bad_input(db: Db) {
    let mut h = Harness::new(db);
    h.start_coordinator();
    let ts = fixture_trainset();
    let cases = [
        ("syntax.yaml", "name: x\njobs:\n  - name: a\n   kind: noop\n".to_string(), "line 4 column"),
        ("unknown.yaml", format!("name: x\njobs:\n  - name: a\n    kind: prepare\n    params: {{trainset: \"{}\", resolutoin: 64}}\n", ts.display()), "unknown field `resolutoin`"),
        ("sweep.yaml", format!("name: x\njobs:\n  - name: a\n    kind: prepare\n    params: {{trainset: \"{}\"}}\n    sweep:\n      parameters:\n        params.foo: [1, 2]\n", ts.display()), "sweep over `params.foo`"),
        ("missing.yaml", "name: x\njobs:\n  - name: a\n    kind: prepare\n    params: {trainset: ./no-such-folder}\n".to_string(), "does not exist"),
        ("needs.yaml", "name: x\njobs:\n  - name: a\n    kind: noop\n    needs: [ghost]\n".to_string(), "ghost"),
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
        assert!(err.contains(name), "{name}: the file is named in: {err}");
    }
    assert_eq!(
        h.json(&["experiments", "--json"]),
        serde_json::json!([]),
        "nothing was written"
    );

    // A corrupt image fails a strict prepare job, naming the file.
    let file = h.write(
        "strict.yaml",
        &format!("name: strict\njobs:\n  - name: a\n    kind: prepare\n    params: {{trainset: \"{}\", strict: true}}\n", ts.display()),
    );
    h.start_worker("w", &[]);
    let (_, ids) = h.submit(&file);
    h.wait_all_ended(Duration::from_secs(60));
    let j = h.job(ids[0]);
    assert_eq!(state(&j), "failed");
    let reason = j["job"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("broken.png") && reason.contains("not retryable"),
        "{reason}"
    );
}
both!(bad_input, bad_input_sqlite, bad_input_postgres);

/// SIGTERM (what systemd sends) makes a worker hand its running job back at once,
/// long before the lease would expire.
fn graceful_worker_stop(db: Db) {
    let mut h = Harness::new(db);
    h.lease_ttl = 60.0;
    h.start_coordinator();
    let w = h.start_worker("leaving", &[]);
    let file = h.write(
        "long.yaml",
        "name: long\njobs:\n  - name: l\n    kind: noop\n    params: {seconds: 120}\n",
    );
    let (_, ids) = h.submit(&file);
    wait_until("the job runs", Duration::from_secs(20), || {
        state(&h.job(ids[0])) == "running"
    });
    let pid = h.pid(w).to_string();
    let sent = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_until(
        "the job is back in the queue",
        Duration::from_secs(10),
        || state(&h.job(ids[0])) == "queued",
    );
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
    let j = h.job(ids[0]);
    let reason = j["job"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("shut down") && reason.contains("re-queued"),
        "{reason}"
    );
    assert!(
        h.wait_exit(w, Duration::from_secs(15)),
        "the worker exits after SIGTERM"
    );
}
both!(
    graceful_worker_stop,
    graceful_worker_stop_sqlite,
    graceful_worker_stop_postgres
);

/// `atelier worker --drain`: SIGTERM lets the running job finish (and be reported
/// by this worker), leases nothing more, and the worker leaves by itself; the
/// queued job is still queued for the next worker.
fn draining_worker(db: Db) {
    let mut h = Harness::new(db);
    h.lease_ttl = 60.0;
    h.start_coordinator();
    let w = h.start_worker("draining", &["--drain"]);
    let file = h.write(
        "two.yaml",
        "name: two\njobs:\n  - {name: first, kind: noop, params: {seconds: 3}}\n  - {name: second, kind: noop, needs: [first], params: {seconds: 1}}\n  - {name: other, kind: noop, priority: -1, params: {seconds: 1}}\n",
    );
    let (_, ids) = h.submit(&file);
    wait_until("the first job runs", Duration::from_secs(20), || {
        state(&h.job(ids[0])) == "running"
    });
    let pid = h.pid(w).to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        h.wait_exit(w, Duration::from_secs(20)),
        "the draining worker leaves once its job has ended"
    );
    let first = h.job(ids[0]);
    assert_eq!(state(&first), "succeeded", "{first:#}");
    assert_eq!(first["job"]["attempt"], 1, "{first:#}");
    // Nothing else was taken: `second` became ready when `first` succeeded, and
    // `other` waited for the only slot; both are still queued.
    for id in &ids[1..] {
        let j = h.job(*id);
        assert_eq!(state(&j), "queued", "{j:#}");
    }
    let log = h.log_of(w);
    assert!(log.contains("draining"), "{log}");

    // A second worker takes what is left.
    h.start_worker("next", &[]);
    wait_until("the rest succeeds", Duration::from_secs(30), || {
        ids[1..].iter().all(|id| state(&h.job(*id)) == "succeeded")
    });
}
both!(
    draining_worker,
    draining_worker_sqlite,
    draining_worker_postgres
);
