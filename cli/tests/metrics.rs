//! The Prometheus endpoints of a coordinator and a worker (real processes) follow a
//! job through its states, and `--log-format json` writes one JSON object per line
//! with the job's and the worker's ids; on SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use common::metrics::{get_one, parse, scrape, sum, Samples};
use common::{free_port, state, wait_until, Db, Harness};
use serde_json::Value;

fn noop_jobs(s: &Samples, state: &str) -> Option<f64> {
    get_one(s, "atelier_jobs", &[("state", state), ("kind", "noop")])
}

fn metrics_follow_a_job(db: Db) {
    let mut h = Harness::new(db);
    let metrics = format!("127.0.0.1:{}", free_port());
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", h.port);
    let database_url = h.database_url.clone();
    let coordinator = h.spawn(
        "coordinator",
        &[
            "--log-format",
            "json",
            "coordinator",
            "--listen",
            &listen,
            "--database-url",
            &database_url,
            "--lease-ttl",
            "3",
            "--metrics-listen",
            &metrics,
        ],
    );
    wait_until("the coordinator answers", Duration::from_secs(30), || {
        h.cli(&["experiments", "--json"]).status.success()
    });
    let empty = scrape(&metrics);
    assert_eq!(get_one(&empty, "atelier_workers_online", &[]), Some(0.0));
    assert_eq!(
        get_one(&empty, "atelier_lease_expiries_total", &[]),
        Some(0.0)
    );
    assert_eq!(noop_jobs(&empty, "queued"), None, "no jobs yet");

    let file = h.write(
        "one.yaml",
        "name: observed\njobs:\n  - name: nap\n    kind: noop\n    params: {seconds: 3, artifact: hello}\n",
    );
    let (_, ids) = h.submit(&file);
    let id = ids[0];
    let queued = scrape(&metrics);
    assert_eq!(noop_jobs(&queued, "queued"), Some(1.0));
    assert_eq!(noop_jobs(&queued, "running"), Some(0.0));
    assert_eq!(noop_jobs(&queued, "succeeded"), Some(0.0));
    // The job waits at least this long for a worker: its submit-to-start.
    std::thread::sleep(Duration::from_secs(1));

    let worker = h.start_worker(
        "observed",
        &["--log-format", "json", "--metrics-listen", &worker_metrics],
    );
    wait_until("the job runs", Duration::from_secs(20), || {
        state(&h.job(id)) == "running"
    });
    let running = scrape(&metrics);
    assert_eq!(noop_jobs(&running, "queued"), Some(0.0));
    assert_eq!(noop_jobs(&running, "running"), Some(1.0));
    assert_eq!(get_one(&running, "atelier_workers_online", &[]), Some(1.0));
    let waits = "atelier_job_submit_to_start_seconds";
    assert_eq!(
        get_one(&running, &format!("{waits}_count"), &[("kind", "noop")]),
        Some(1.0)
    );
    let waited = get_one(&running, &format!("{waits}_sum"), &[("kind", "noop")]).unwrap();
    assert!((1.0..60.0).contains(&waited), "submit to start: {waited} s");
    let on_worker = scrape(&worker_metrics);
    assert_eq!(
        get_one(&on_worker, "atelier_worker_jobs_running", &[]),
        Some(1.0)
    );
    // A CPU worker has no GPU to read: no GPU series at all, rather than zeros.
    assert!(
        !on_worker
            .keys()
            .any(|(n, _)| n.starts_with("atelier_worker_gpu")),
        "{on_worker:#?}"
    );
    wait_until(
        "the heartbeat reports the lease",
        Duration::from_secs(10),
        || get_one(&scrape(&metrics), "atelier_leases_held", &[]) == Some(1.0),
    );

    let jobs = h.wait_all_ended(Duration::from_secs(30));
    assert_eq!(jobs[0]["state"], "succeeded");
    let done = scrape(&metrics);
    assert_eq!(noop_jobs(&done, "running"), Some(0.0));
    assert_eq!(noop_jobs(&done, "succeeded"), Some(1.0));
    let ran = [("state", "succeeded"), ("kind", "noop")];
    assert_eq!(
        get_one(&done, "atelier_job_duration_seconds_count", &ran),
        Some(1.0)
    );
    let took = get_one(&done, "atelier_job_duration_seconds_sum", &ran).unwrap();
    assert!((3.0..60.0).contains(&took), "a 3 s nap took {took} s");
    assert_eq!(sum(&done, "atelier_job_requeues_total", &[]), 0.0);
    assert_eq!(
        get_one(&done, "atelier_artifact_uploaded_bytes_total", &[]),
        Some(5.0),
        "`hello`"
    );
    let out = h.path("pulled");
    h.json(&[
        "pull",
        &id.to_string(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    let pulled = scrape(&metrics);
    assert_eq!(
        get_one(&pulled, "atelier_artifact_downloaded_bytes_total", &[]),
        Some(5.0)
    );
    wait_until("the worker's job is over", Duration::from_secs(10), || {
        get_one(&scrape(&worker_metrics), "atelier_worker_jobs_running", &[]) == Some(0.0)
    });

    // JSON logs: every line parses; the job's lines name it, and its worker.
    let worker_id = jobs[0]["worker_id"].as_str().unwrap().to_string();
    let coordinator_lines = json_lines(&h.log_of(coordinator), "coordinator");
    assert!(
        coordinator_lines
            .iter()
            .any(|l| l["job"] == id && l["worker"] == worker_id.as_str()),
        "no coordinator line names job {id} and worker {worker_id}: {coordinator_lines:#?}"
    );
    let worker_lines = json_lines(&h.log_of(worker), "worker");
    assert!(
        worker_lines.iter().any(|l| l["job"] == id
            && l["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["worker"] == worker_id.as_str()))),
        "no worker line names job {id} in worker {worker_id}'s span: {worker_lines:#?}"
    );
}
both!(
    metrics_follow_a_job,
    metrics_follow_a_job_sqlite,
    metrics_follow_a_job_postgres
);

/// Every line of a `--log-format json` process's output, parsed.
fn json_lines(log: &str, who: &str) -> Vec<Value> {
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a {who} log line is not JSON ({e}): {l}"))
        })
        .collect();
    assert!(!lines.is_empty(), "the {who} logged nothing");
    lines
}

#[test]
fn parses_the_text_format() {
    let s = parse(
        "# HELP a Things.\n# TYPE a counter\na_total 3\n\
         h_bucket{le=\"+Inf\",kind=\"noop\"} 2\nq{x=\"a \\\"b\\\", c\",y=\"\"} 1.5 1700000000\n# EOF\n",
    )
    .unwrap();
    assert_eq!(get_one(&s, "a_total", &[]), Some(3.0));
    assert_eq!(get_one(&s, "h_bucket", &[("le", "+Inf")]), Some(2.0));
    assert_eq!(
        get_one(&s, "q", &[("x", "a \"b\", c"), ("y", "")]),
        Some(1.5)
    );
    assert_eq!(sum(&s, "missing", &[]), 0.0);
    assert!(parse("x{y=1} 2\n").is_err(), "an unquoted label value");
}
