//! Job events through Redis pub/sub and in-process, seen by `atelier watch --json`
//! and (for Redis) by a plain Redis subscriber.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{state, Db, Harness, BIN};
use serde_json::Value;

fn watch_lines(h: &Harness) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child = Command::new(BIN)
        .args(["watch", "--json", "--forever"])
        .env("ATELIER_COORDINATOR", h.url())
        .env("HOME", h.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    (child, rx)
}

/// Collects events until a `succeeded` state change arrives for `job_id`.
fn until_succeeded(rx: &mpsc::Receiver<Value>, job_id: i64) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(ev) = rx.recv_timeout(Duration::from_millis(200)) {
            let done = ev["job_id"] == job_id && ev["kind"]["State"]["to"] == "succeeded";
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }
    panic!("no `succeeded` event for job {job_id}; saw {seen:#?}");
}

fn run_one_job(h: &mut Harness) -> i64 {
    h.start_worker("w", &[]);
    let file = h.write(
        "one.yaml",
        "name: ev\njobs:\n  - name: a\n    kind: noop\n    params: {seconds: 0.6, artifact: x}\n",
    );
    h.submit(&file).1[0]
}

fn states_of(events: &[Value], job_id: i64) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["job_id"] == job_id)
        .filter_map(|e| e["kind"]["State"]["to"].as_str().map(String::from))
        .collect()
}

#[test]
fn in_process_events_reach_watch() {
    let mut h = Harness::new(Db::Sqlite);
    h.start_coordinator();
    let (mut watcher, rx) = watch_lines(&h);
    std::thread::sleep(Duration::from_millis(500));
    let id = run_one_job(&mut h);
    let events = until_succeeded(&rx, id);
    assert_eq!(states_of(&events, id), ["running", "succeeded"]);
    assert!(events
        .iter()
        .any(|e| e["job_id"] == id && e["kind"]["Log"]["line"].as_str().is_some()));
    assert!(events
        .iter()
        .any(|e| e["job_id"] == id && e["kind"]["Artifact"]["name"] == "noop.txt"));
    let _ = watcher.kill();

    // `logs -f` prints the stored lines and ends with the job.
    let slow = h.write(
        "slow.yaml",
        "name: slow\njobs:\n  - name: s\n    kind: noop\n    params: {seconds: 1.5, artifact: y}\n",
    );
    let id = h.submit(&slow).1[0];
    let out = h.cli(&["logs", &id.to_string(), "-f"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[attempt 1] sleeping 1.5 s"), "{text}");
    assert!(text.contains("stored artifact `noop.txt`"), "{text}");
    assert_eq!(
        state(&h.job(id)),
        "succeeded",
        "logs -f returned when the job ended"
    );
}

#[test]
fn redis_events_reach_watch_and_subscribers() {
    let mut h = Harness::new(Db::Postgres);
    let channel = format!("atelier-test-{:08x}", rand::random::<u32>());
    h.redis = Some((common::redis_url(), channel.clone()));
    h.start_coordinator();

    // A plain Redis subscriber, as another tool would be.
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client
        .get_connection()
        .unwrap_or_else(|e| panic!("Redis at {} is required: {e}", common::redis_url()));
    let (tx, rx) = mpsc::channel::<Value>();
    let ch = channel.clone();
    std::thread::spawn(move || {
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe(&ch).unwrap();
        pubsub
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        while let Ok(msg) = pubsub.get_message() {
            let payload: String = msg.get_payload().unwrap();
            if tx.send(serde_json::from_str(&payload).unwrap()).is_err() {
                break;
            }
        }
    });
    let (mut watcher, watch_rx) = watch_lines(&h);
    std::thread::sleep(Duration::from_millis(500));
    let id = run_one_job(&mut h);
    let from_redis = until_succeeded(&rx, id);
    assert_eq!(states_of(&from_redis, id), ["running", "succeeded"]);
    let from_watch = until_succeeded(&watch_rx, id);
    assert_eq!(states_of(&from_watch, id), ["running", "succeeded"]);
    let _ = watcher.kill();
}
