//! The store's semantics, each test run on SQLite and on PostgreSQL: lease fencing,
//! attempts, failure and retry, priority and FIFO, needs, cancel, placement, exactly-once
//! leasing under concurrency, heartbeats and restarts, logs and artifacts, bulk submit.
//!
//! PostgreSQL is required (see `common`): without it the `::postgres` tests fail.

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use atelier_coordinator::scheduler::FreeGpu;
use atelier_coordinator::spec::{validate_jobs, JobSpec, Requirements};
use atelier_coordinator::store::workers::Registration;
use atelier_coordinator::store::{Capacity, JobRow, LeaseGrant, Store, Target};
use atelier_coordinator::Error;
use serde_json::json;

/// Long enough that no lease runs out during a test unless the test waits for it.
const TTL: i64 = 60_000;
/// A lease a test lets run out.
const SHORT_TTL: i64 = 50;

// ---------------------------------------------------------------- helpers

fn job(name: &str) -> JobSpec {
    JobSpec {
        name: name.to_string(),
        kind: "noop".to_string(),
        params: json!({}),
        priority: 0,
        max_attempts: 3,
        requires: Requirements::default(),
        needs: Vec::new(),
        sweep_point: None,
    }
}

fn with_priority(mut j: JobSpec, priority: i64) -> JobSpec {
    j.priority = priority;
    j
}

fn with_attempts(mut j: JobSpec, max_attempts: u32) -> JobSpec {
    j.max_attempts = max_attempts;
    j
}

fn needing(mut j: JobSpec, needs: &[&str]) -> JobSpec {
    j.needs = needs.iter().map(|n| n.to_string()).collect();
    j
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Validates like a submission would, then stores.
async fn submit(store: &Store, name: &str, jobs: &[JobSpec]) -> (i64, Vec<i64>) {
    validate_jobs("test", jobs).unwrap_or_else(|e| panic!("invalid test jobs: {e}"));
    store
        .insert_experiment(name, "# built by tests/store.rs", jobs)
        .await
        .unwrap()
}

/// A worker with `slots` CPU slots and no GPU.
fn cpu(slots: u32) -> Capacity {
    Capacity {
        backend: "cpu".into(),
        free_gpus: Vec::new(),
        free_cpu_slots: slots,
        labels: BTreeMap::new(),
    }
}

/// A CUDA worker with these (index, GB) GPUs and no CPU slot.
fn cuda(gpus: &[(u32, f64)]) -> Capacity {
    Capacity {
        backend: "cuda".into(),
        free_gpus: gpus
            .iter()
            .map(|&(index, memory_gb)| FreeGpu { index, memory_gb })
            .collect(),
        free_cpu_slots: 0,
        labels: BTreeMap::new(),
    }
}

async fn lease(store: &Store, worker: &str, cap: &Capacity, max: usize) -> Vec<LeaseGrant> {
    store.lease(worker, cap, max, TTL).await.unwrap().0
}

async fn lease_one(store: &Store, worker: &str, cap: &Capacity) -> Option<LeaseGrant> {
    let mut got = lease(store, worker, cap, 1).await;
    assert!(got.len() <= 1, "asked for one job, got {}", got.len());
    got.pop()
}

fn ids(grants: &[LeaseGrant]) -> Vec<i64> {
    grants.iter().map(|g| g.job.id).collect()
}

async fn get(store: &Store, id: i64) -> JobRow {
    store.get_job(id).await.unwrap()
}

async fn outcomes(store: &Store, id: i64) -> Vec<String> {
    store
        .attempts_of(id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect()
}

/// Whether `text` names job `id` (`job 12`, not `job 123`).
fn names_job(text: &str, id: i64) -> bool {
    let needle = format!("job {id}");
    text.match_indices(&needle).any(|(at, _)| {
        !text[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[track_caller]
fn assert_reason(job: &JobRow, state: &str, parts: &[&str]) {
    assert_eq!(
        job.state, state,
        "job {} `{}`: reason {:?}",
        job.id, job.name, job.reason
    );
    for p in parts {
        assert!(
            job.reason.contains(p),
            "job {} `{}` ({state}): reason {:?} should contain {p:?}",
            job.id,
            job.name,
            job.reason
        );
    }
}

/// The message of an `Error::StaleLease` that names `job_id`; panics on anything else.
#[track_caller]
fn stale<T: std::fmt::Debug>(r: Result<T, Error>, job_id: i64) -> String {
    match r {
        Err(Error::StaleLease(m)) => {
            assert!(names_job(&m, job_id), "{m:?} does not name job {job_id}");
            m
        }
        other => panic!("expected StaleLease for job {job_id}, got {other:?}"),
    }
}

#[track_caller]
fn conflict<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Conflict(m)) => m,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

async fn register(store: &Store, id: &str, labels: &BTreeMap<String, String>) {
    let labels: HashMap<String, String> = labels.clone().into_iter().collect();
    store
        .register_worker(&Registration {
            id,
            name: id,
            backend: "cpu",
            gpus: &[],
            labels: &labels,
            cpu_slots: 4,
            version: "test",
        })
        .await
        .unwrap();
}

/// Waits until a lease granted with [`SHORT_TTL`] is past its deadline.
async fn let_short_lease_run_out() {
    tokio::time::sleep(Duration::from_millis(SHORT_TTL as u64 + 60)).await;
}

// ---------------------------------------------------------------- 1. fencing

both!(lease_fencing, lease_fencing);
async fn lease_fencing(store: &Store) {
    let (_, jobs) = submit(store, "fencing", &[job("train")]).await;
    let id = jobs[0];
    let (grants, changes) = store.lease("w1", &cpu(1), 1, SHORT_TTL).await.unwrap();
    assert_eq!(ids(&grants), vec![id]);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].from.as_str(), changes[0].to.as_str()),
        ("queued", "running")
    );
    let first = &grants[0].job;
    assert_eq!(first.lease_token, 1);
    assert_eq!(first.attempt, 1);
    assert_eq!(first.state, "running");
    assert_eq!(first.worker_id.as_deref(), Some("w1"));

    // Tokens other than the current one are refused, and write nothing.
    for token in [0, 2] {
        stale(store.complete(id, token, "{}").await, id);
        stale(store.report_progress(id, token, 0.5, "half").await, id);
        stale(store.append_logs(id, token, &["x".to_string()]).await, id);
        stale(store.insert_artifact(id, token, "w.bin", "aa", 1).await, id);
        stale(store.check_lease(id, token).await, id);
        stale(store.fail(id, token, "boom", false).await, id);
    }
    let job = get(store, id).await;
    assert_eq!((job.state.as_str(), job.progress), ("running", 0.0));
    assert!(store.logs_after(id, 0, 100).await.unwrap().is_empty());
    assert!(store.artifacts_of(id).await.unwrap().is_empty());
    // The current token is accepted.
    let job = store.report_progress(id, 1, 0.25, "quarter").await.unwrap();
    assert_eq!(
        (job.progress, job.progress_message.as_str()),
        (0.25, "quarter")
    );

    // The lease runs out: back to the queue, the attempt counted and explained.
    let_short_lease_run_out().await;
    let changes = store.expire_leases().await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!((changes[0].job_id, changes[0].to.as_str()), (id, "queued"));
    let job = get(store, id).await;
    assert_reason(&job, "queued", &["lease expired", "w1", "re-queued"]);
    assert_eq!((job.attempt, job.lease_token), (1, 1));
    assert_eq!((job.worker_id.as_deref(), job.lease_deadline), (None, None));
    // While queued, the old token is no good either.
    let m = stale(store.complete(id, 1, "{}").await, id);
    assert!(m.contains("queued"), "{m}");

    // Leased again: token 2; token 1 is stale from now on.
    let g = lease_one(store, "w2", &cpu(1))
        .await
        .expect("job leased again");
    assert_eq!((g.job.id, g.job.lease_token, g.job.attempt), (id, 2, 2));
    let m = stale(store.complete(id, 1, "{}").await, id);
    assert!(m.contains("stale"), "{m}");
    stale(store.append_logs(id, 1, &["late".into()]).await, id);
    stale(store.insert_artifact(id, 1, "w.bin", "aa", 1).await, id);
    let change = store.complete(id, 2, r#"{"loss":0.1}"#).await.unwrap();
    assert_eq!(
        (change.from.as_str(), change.to.as_str()),
        ("running", "succeeded")
    );
    let job = get(store, id).await;
    assert_eq!(job.state, "succeeded");
    assert_eq!(
        (job.result.as_str(), job.progress),
        (r#"{"loss":0.1}"#, 1.0)
    );
    // Completing twice is refused too.
    stale(store.complete(id, 2, "{}").await, id);

    let attempts = store.attempts_of(id).await.unwrap();
    let seen: Vec<_> = attempts
        .iter()
        .map(|a| {
            (
                a.lease_token,
                a.attempt,
                a.worker_id.as_str(),
                a.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(seen, vec![(1, 1, "w1", "lost"), (2, 2, "w2", "succeeded")]);
    assert!(attempts[0].reason.contains("lease expired"), "{attempts:?}");
    assert!(
        attempts.iter().all(|a| a.ended_at.is_some()),
        "{attempts:?}"
    );
}

// ---------------------------------------------------------------- 2. max_attempts

both!(max_attempts, max_attempts);
async fn max_attempts(store: &Store) {
    let (_, jobs) = submit(
        store,
        "attempts",
        &[
            with_attempts(job("train"), 2),
            needing(job("eval"), &["train"]),
            needing(job("report"), &["eval"]),
            job("other"),
        ],
    )
    .await;
    let [train, eval, report, other] = jobs[..] else {
        panic!("{jobs:?}")
    };

    for attempt in 1..=2 {
        let (grants, _) = store.lease("w", &cpu(1), 1, SHORT_TTL).await.unwrap();
        assert_eq!(ids(&grants), vec![train], "attempt {attempt}");
        assert_eq!(grants[0].job.attempt, attempt);
        let_short_lease_run_out().await;
        store.expire_leases().await.unwrap();
        let job = get(store, train).await;
        if attempt == 1 {
            assert_reason(
                &job,
                "queued",
                &["lease expired", "attempt 1 of 2", "re-queued"],
            );
        } else {
            assert_reason(&job, "failed", &["lease expired", "no attempts left"]);
        }
    }
    assert_eq!(outcomes(store, train).await, ["lost", "lost"]);
    let eval_job = get(store, eval).await;
    assert_reason(&eval_job, "cancelled", &["`train`", "which failed"]);
    assert!(names_job(&eval_job.reason, train), "{}", eval_job.reason);
    let report_job = get(store, report).await;
    assert_reason(&report_job, "cancelled", &["`eval`", "which was cancelled"]);
    assert!(names_job(&report_job.reason, eval), "{}", report_job.reason);
    // Two levels down, the reason still names the job that failed.
    assert!(
        report_job
            .reason
            .ends_with(&format!("because job {train} `train` failed")),
        "{}",
        report_job.reason
    );
    assert!(outcomes(store, eval).await.is_empty());
    // The unrelated job is untouched, and it is all that is left to lease.
    assert_eq!(get(store, other).await.state, "queued");
    assert_eq!(ids(&lease(store, "w", &cpu(8), 8).await), vec![other]);
}

// ---------------------------------------------------------------- 3. fail

both!(fail_retryable_or_not, fail_retryable_or_not);
async fn fail_retryable_or_not(store: &Store) {
    let (_, jobs) = submit(
        store,
        "fail",
        &[
            with_attempts(job("flaky"), 3),
            with_attempts(job("last"), 1),
            needing(job("after"), &["flaky"]),
        ],
    )
    .await;
    let [flaky, last, after] = jobs[..] else {
        panic!("{jobs:?}")
    };

    let g = lease_one(store, "w", &cpu(1)).await.unwrap();
    assert_eq!(g.job.id, flaky);
    let changes = store
        .fail(flaky, 1, "CUDA error: unspecified launch failure", true)
        .await
        .unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].to, "queued");
    let job = get(store, flaky).await;
    assert_reason(&job, "queued", &["unspecified launch failure", "re-queued"]);
    assert_eq!(get(store, after).await.state, "queued");
    // A stale token cannot fail it again.
    stale(store.fail(flaky, 1, "again", true).await, flaky);

    // Not retryable: failed at once, though attempts remain.
    let g = lease_one(store, "w", &cpu(1)).await.unwrap();
    assert_eq!((g.job.id, g.job.lease_token, g.job.attempt), (flaky, 2, 2));
    let changes = store
        .fail(flaky, 2, "params.trainset does not exist", false)
        .await
        .unwrap();
    let job = get(store, flaky).await;
    assert_reason(
        &job,
        "failed",
        &["params.trainset does not exist", "not retryable"],
    );
    assert!(!job.reason.contains("re-queued"), "{}", job.reason);
    assert_eq!(job.attempt, 2);
    let attempts = store.attempts_of(flaky).await.unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.outcome.as_str())
            .collect::<Vec<_>>(),
        ["failed", "failed"]
    );
    assert_eq!(attempts[1].reason, "params.trainset does not exist");
    // The dependent is cancelled in the same transition.
    let dep = get(store, after).await;
    assert_reason(&dep, "cancelled", &["`flaky`", "which failed"]);
    let moved: HashSet<(i64, &str)> = changes.iter().map(|c| (c.job_id, c.to.as_str())).collect();
    assert_eq!(
        moved,
        HashSet::from([(flaky, "failed"), (after, "cancelled")])
    );

    // Retryable, but the last attempt: failed, saying so.
    let g = lease_one(store, "w", &cpu(1)).await.unwrap();
    assert_eq!(g.job.id, last);
    store.fail(last, 1, "killed by OOM", true).await.unwrap();
    assert_reason(
        &get(store, last).await,
        "failed",
        &["killed by OOM", "no attempts left"],
    );
    assert!(lease(store, "w", &cpu(8), 8).await.is_empty());
}

// ---------------------------------------------------------------- 4. priority

both!(priority_then_fifo, priority_then_fifo);
async fn priority_then_fifo(store: &Store) {
    let (_, jobs) = submit(
        store,
        "prio",
        &[
            with_priority(job("p0"), 0),
            with_priority(job("p5a"), 5),
            with_priority(job("p5b"), 5),
            with_priority(job("p1"), 1),
        ],
    )
    .await;
    let [p0, p5a, p5b, p1] = jobs[..] else {
        panic!("{jobs:?}")
    };
    let p0_row = get(store, p0).await;
    assert_eq!(store.queue_position(&p0_row).await.unwrap(), 3);
    assert_eq!(
        store.queue_position(&get(store, p5b).await).await.unwrap(),
        1
    );
    let mut order = Vec::new();
    while let Some(g) = lease_one(store, "w", &cpu(1)).await {
        order.push(g.job.id);
    }
    assert_eq!(order, vec![p5a, p5b, p1, p0]);

    // Several at once: the same order within one lease.
    let (_, jobs) = submit(
        store,
        "prio-batch",
        &[
            with_priority(job("a"), -1),
            with_priority(job("b"), 2),
            with_priority(job("c"), 2),
        ],
    )
    .await;
    let [a, b, c] = jobs[..] else {
        panic!("{jobs:?}")
    };
    assert_eq!(ids(&lease(store, "w", &cpu(3), 3).await), vec![b, c, a]);

    // set_priority moves a queued job ahead.
    let (_, jobs) = submit(store, "reprio", &[job("q0"), job("q1"), job("q2")]).await;
    let [q0, q1, q2] = jobs[..] else {
        panic!("{jobs:?}")
    };
    assert_eq!(
        store.queue_position(&get(store, q2).await).await.unwrap(),
        2
    );
    assert_eq!(
        store.set_priority(Target::Job(q2), 10).await.unwrap(),
        vec![q2]
    );
    let q2_row = get(store, q2).await;
    assert_eq!(q2_row.priority, 10);
    assert_eq!(store.queue_position(&q2_row).await.unwrap(), 0);
    assert_eq!(ids(&lease(store, "w", &cpu(1), 1).await), vec![q2]);
    // ... and one further back.
    store.set_priority(Target::Job(q0), -3).await.unwrap();
    assert_eq!(ids(&lease(store, "w", &cpu(2), 2).await), vec![q1, q0]);
    // A finished job's priority no longer matters.
    store.complete(p0, 1, "{}").await.unwrap();
    let m = conflict(store.set_priority(Target::Job(p0), 1).await);
    assert!(m.contains("succeeded"), "{m}");
}

// ---------------------------------------------------------------- 5. needs

both!(needs_chain, needs_chain);
async fn needs_chain(store: &Store) {
    let (_, jobs) = submit(
        store,
        "chain",
        &[
            job("a"),
            needing(job("b"), &["a"]),
            needing(job("c"), &["b"]),
        ],
    )
    .await;
    let [a, b, c] = jobs[..] else {
        panic!("{jobs:?}")
    };
    assert_eq!(get(store, a).await.pending_needs, 0);
    assert_eq!(get(store, b).await.pending_needs, 1);
    let needs: Vec<_> = store.needs_of(c).await.unwrap();
    assert_eq!(needs, vec![(b, "b".to_string(), "queued".to_string())]);

    // Only `a` can run, even with room for all three.
    assert_eq!(ids(&lease(store, "w", &cpu(3), 3).await), vec![a]);
    assert!(lease(store, "w", &cpu(3), 3).await.is_empty());
    store.complete(a, 1, "{}").await.unwrap();
    assert_eq!(get(store, b).await.pending_needs, 0);
    assert_eq!(get(store, c).await.pending_needs, 1);
    assert_eq!(ids(&lease(store, "w", &cpu(3), 3).await), vec![b]);

    // `b` fails: `c` can never run and is cancelled, naming `b`.
    store.fail(b, 1, "diverged", false).await.unwrap();
    let c_row = get(store, c).await;
    assert_reason(&c_row, "cancelled", &["needs job", "`b`", "which failed"]);
    assert!(names_job(&c_row.reason, b), "{}", c_row.reason);

    // `c` alone cannot be retried while `b` is still failed.
    let m = conflict(store.retry(Target::Job(c)).await);
    assert!(names_job(&m, b) && m.contains("`b`"), "{m}");
    assert_eq!(get(store, c).await.state, "cancelled");

    // Retrying `b` brings `c` back, waiting for `b` again.
    let changes = store.retry(Target::Job(b)).await.unwrap();
    let moved: HashSet<(i64, &str)> = changes.iter().map(|c| (c.job_id, c.to.as_str())).collect();
    assert_eq!(moved, HashSet::from([(b, "queued"), (c, "queued")]));
    let b_row = get(store, b).await;
    assert_eq!((b_row.state.as_str(), b_row.attempt), ("queued", 0));
    assert_eq!(b_row.pending_needs, 0);
    assert!(b_row.reason.contains("retried"), "{}", b_row.reason);
    let c_row = get(store, c).await;
    assert_eq!((c_row.state.as_str(), c_row.pending_needs), ("queued", 1));
    // Retrying what is not failed or cancelled is refused.
    let m = conflict(store.retry(Target::Job(c)).await);
    assert!(m.contains("queued"), "{m}");

    let g = lease(store, "w", &cpu(3), 3).await;
    assert_eq!(ids(&g), vec![b]);
    // The token keeps growing across a retry, so the failed attempt's stays stale.
    assert_eq!((g[0].job.lease_token, g[0].job.attempt), (2, 1));
    stale(store.complete(b, 1, "{}").await, b);
    store.complete(b, 2, "{}").await.unwrap();
    assert_eq!(ids(&lease(store, "w", &cpu(3), 3).await), vec![c]);
    store.complete(c, 1, "{}").await.unwrap();
    for id in [a, b, c] {
        assert_eq!(get(store, id).await.state, "succeeded");
    }
}

// ---------------------------------------------------------------- 6. cancel

both!(cancel, cancel_body);
async fn cancel_body(store: &Store) {
    register(store, "w", &BTreeMap::new()).await;
    let (exp, jobs) = submit(
        store,
        "sweep",
        &[
            job("run"),
            job("q1"),
            job("q2"),
            needing(job("dep"), &["q1"]),
        ],
    )
    .await;
    let [run, q1, q2, dep] = jobs[..] else {
        panic!("{jobs:?}")
    };
    let (_, others) = submit(store, "keep", &[job("done"), job("waiting")]).await;
    let [done, waiting] = others[..] else {
        panic!("{others:?}")
    };

    let g = lease_one(store, "w", &cpu(1)).await.unwrap();
    assert_eq!(g.job.id, run);
    let token = g.job.lease_token;
    let beat = store.heartbeat("w", &[(run, token)], TTL).await.unwrap();
    assert!(beat[0].keep_running, "{beat:?}");

    let changes = store
        .cancel(Target::Experiment(exp), "wrong learning rate")
        .await
        .unwrap();
    let moved: HashSet<(i64, &str, &str)> = changes
        .iter()
        .map(|c| (c.job_id, c.from.as_str(), c.to.as_str()))
        .collect();
    assert_eq!(
        moved,
        HashSet::from([
            (run, "running", "cancelled"),
            (q1, "queued", "cancelled"),
            (q2, "queued", "cancelled"),
            (dep, "queued", "cancelled"),
        ])
    );
    for id in [run, q1, q2, dep] {
        assert_reason(&get(store, id).await, "cancelled", &[]);
    }
    for id in [run, q1, q2] {
        assert_reason(&get(store, id).await, "cancelled", &["wrong learning rate"]);
    }
    assert_eq!(outcomes(store, run).await, ["cancelled"]);
    let run_row = get(store, run).await;
    assert_eq!(run_row.lease_deadline, None);

    // The running worker hears it at its next heartbeat, and can write nothing more.
    let beat = store.heartbeat("w", &[(run, token)], TTL).await.unwrap();
    assert_eq!(beat.len(), 1);
    assert!(!beat[0].keep_running, "{beat:?}");
    assert!(beat[0].reason.contains("cancelled"), "{beat:?}");
    assert!(beat[0].reason.contains("wrong learning rate"), "{beat:?}");
    stale(store.complete(run, token, "{}").await, run);

    // The other experiment is untouched.
    assert_eq!(get(store, done).await.state, "queued");
    assert_eq!(get(store, waiting).await.state, "queued");

    // Nothing left to cancel in a finished job.
    let g = lease_one(store, "w", &cpu(1)).await.unwrap();
    assert_eq!(g.job.id, done);
    store.complete(done, g.job.lease_token, "{}").await.unwrap();
    let m = conflict(store.cancel(Target::Job(done), "too late").await);
    assert!(names_job(&m, done) && m.contains("succeeded"), "{m}");
    let m = conflict(store.cancel(Target::Job(run), "again").await);
    assert!(m.contains("cancelled"), "{m}");
    assert_eq!(get(store, done).await.state, "succeeded");

    // One queued job, and the jobs that need it.
    let (_, jobs) = submit(store, "single", &[job("x"), needing(job("y"), &["x"])]).await;
    let [x, y] = jobs[..] else { panic!("{jobs:?}") };
    let changes = store.cancel(Target::Job(x), "not needed").await.unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_reason(&get(store, x).await, "cancelled", &["not needed"]);
    let y_row = get(store, y).await;
    assert_reason(&y_row, "cancelled", &["`x`", "which was cancelled"]);
    assert!(names_job(&y_row.reason, x), "{}", y_row.reason);
    assert!(matches!(
        store.cancel(Target::Job(999_999), "x").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(get(store, waiting).await.state, "queued");
}

// ---------------------------------------------------------------- 7. placement

both!(placement, placement);
async fn placement(store: &Store) {
    let big = Requirements {
        gpus: 1,
        gpu_mem_gb: 40.0,
        backend: "cuda".into(),
        labels: BTreeMap::new(),
    };
    let mut train = job("train-40g");
    train.requires = big;
    let (_, jobs) = submit(store, "gpu", &[train]).await;
    let id = jobs[0];

    assert!(lease(store, "cpu-box", &cpu(8), 4).await.is_empty());
    assert!(lease(store, "small", &cuda(&[(0, 24.0), (1, 24.0)]), 4)
        .await
        .is_empty());
    // A CPU backend with a big GPU is still the wrong backend.
    let mut odd = cuda(&[(0, 80.0)]);
    odd.backend = "cpu".into();
    assert!(lease(store, "odd", &odd, 4).await.is_empty());
    assert_eq!(get(store, id).await.state, "queued");
    // The 80 GB card is index 1 here; it must be the one handed out.
    let g = lease(store, "big", &cuda(&[(0, 24.0), (1, 80.0)]), 4).await;
    assert_eq!(ids(&g), vec![id]);
    assert_eq!(g[0].gpu_indexes, vec![1]);
    assert_eq!(get(store, id).await.gpu_index_list(), vec![1]);

    // Labels: only a worker with zone=eu takes the job.
    let mut eu = job("eu-only");
    eu.requires.labels = labels(&[("zone", "eu")]);
    let (_, jobs) = submit(store, "labels", &[eu]).await;
    let eu_id = jobs[0];
    assert!(lease(store, "plain", &cpu(4), 4).await.is_empty());
    let us = Capacity {
        labels: labels(&[("zone", "us"), ("rack", "2")]),
        ..cpu(4)
    };
    assert!(lease(store, "us", &us, 4).await.is_empty());
    let eu_box = Capacity {
        labels: labels(&[("zone", "eu"), ("rack", "7")]),
        ..cpu(4)
    };
    assert_eq!(ids(&lease(store, "eu", &eu_box, 4).await), vec![eu_id]);

    // 100 label-requiring jobs ahead of a plain one do not stall a label-less worker.
    let mut specs: Vec<JobSpec> = (0..100)
        .map(|i| {
            let mut j = with_priority(job(&format!("eu-{i:03}")), 10);
            j.requires.labels = labels(&[("zone", "eu")]);
            j
        })
        .collect();
    specs.push(job("plain"));
    let (_, jobs) = submit(store, "crowd", &specs).await;
    let plain = *jobs.last().unwrap();
    let g = lease(store, "plain", &cpu(1), 1).await;
    assert_eq!(ids(&g), vec![plain]);
    // ... nor a worker whose labels they do not match.
    let (_, more) = submit(store, "crowd-2", &[job("plain-2")]).await;
    assert_eq!(ids(&lease(store, "us", &us, 1).await), more);
    // ... and a labelled worker still takes the labelled ones first.
    let g = lease(store, "eu", &eu_box, 2).await;
    assert_eq!(ids(&g), jobs[..2].to_vec());
    for rest in jobs[2..100].chunks(4) {
        assert_eq!(ids(&lease(store, "eu", &eu_box, 4).await), rest.to_vec());
    }

    // A job asking for several labels goes to a worker that has them all (and more).
    let mut two = job("two-labels");
    two.requires.labels = labels(&[("zone", "eu"), ("rack", "7")]);
    let mut wrong_rack = job("wrong-rack");
    wrong_rack.requires.labels = labels(&[("zone", "eu"), ("rack", "8")]);
    let mut rack_only = job("rack-only");
    rack_only.requires.labels = labels(&[("rack", "7")]);
    let (_, jobs) = submit(store, "multi-label", &[two, wrong_rack, rack_only]).await;
    let many = Capacity {
        labels: labels(&[
            ("zone", "eu"),
            ("rack", "7"),
            ("gpu", "a100"),
            ("os", "linux"),
        ]),
        ..cpu(4)
    };
    assert_eq!(
        ids(&lease(store, "many", &many, 4).await),
        vec![jobs[0], jobs[2]]
    );
    assert_eq!(get(store, jobs[1]).await.state, "queued");

    // Jobs needing two 40 GB GPUs do not stall a worker with one 80 GB and one
    // 24 GB GPU, which can take neither of them but can take a one-GPU job.
    let mut specs: Vec<JobSpec> = (0..20)
        .map(|i| {
            let mut j = with_priority(job(&format!("pair-{i:02}")), 10);
            j.requires.gpus = 2;
            j.requires.gpu_mem_gb = 40.0;
            j
        })
        .collect();
    let mut single = job("single-16g");
    single.requires.gpus = 1;
    single.requires.gpu_mem_gb = 16.0;
    specs.push(single);
    let (_, jobs) = submit(store, "pairs", &specs).await;
    let mixed = cuda(&[(0, 80.0), (1, 24.0)]);
    let g = lease(store, "mixed", &mixed, 1).await;
    assert_eq!(ids(&g), vec![jobs[20]]);
    // The smallest GPU that is large enough.
    assert_eq!(g[0].gpu_indexes, vec![1]);
    let g = lease(
        store,
        "pair-box",
        &cuda(&[(0, 48.0), (1, 48.0), (2, 80.0)]),
        1,
    )
    .await;
    assert_eq!(ids(&g), vec![jobs[0]]);
    assert_eq!(g[0].gpu_indexes, vec![0, 1]);
}

// ---------------------------------------------------------------- 8. concurrency

both!(exactly_once, exactly_once);
async fn exactly_once(store: &Store) {
    const JOBS: usize = 300;
    const WORKERS: usize = 8;
    let specs: Vec<JobSpec> = (0..JOBS).map(|i| job(&format!("j{i:03}"))).collect();
    let (exp, ids_in) = submit(store, "crowd", &specs).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let (grants, _) = store.lease(&worker, &cpu(1), 1, TTL).await.unwrap();
                match grants.as_slice() {
                    [] => {
                        // Nothing offered: done, unless others hold rows they may
                        // still hand back (PostgreSQL skips rows locked by others).
                        let left = store
                            .list_jobs(Some(exp), Some("queued"), Some(1))
                            .await
                            .unwrap();
                        if left.is_empty() {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    [g] => {
                        assert_eq!((g.job.lease_token, g.job.attempt), (1, 1), "{:?}", g.job);
                        store
                            .complete(g.job.id, g.job.lease_token, "{}")
                            .await
                            .unwrap_or_else(|e| panic!("{worker}: complete {}: {e}", g.job.id));
                        mine.push(g.job.id);
                    }
                    more => panic!("{worker}: max_jobs 1 but {} grants", more.len()),
                }
            }
            mine
        }));
    }
    let mut leased = Vec::new();
    let mut per_worker = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        per_worker.push(mine.len());
        leased.extend(mine);
    }
    let elapsed = started.elapsed();
    let unique: HashSet<i64> = leased.iter().copied().collect();
    assert_eq!(leased.len(), JOBS, "leases handed out: {}", leased.len());
    assert_eq!(unique.len(), JOBS, "some job was leased twice");
    assert_eq!(unique, ids_in.iter().copied().collect::<HashSet<_>>());
    let rows = store.list_jobs(Some(exp), None, None).await.unwrap();
    assert_eq!(rows.len(), JOBS);
    for r in &rows {
        assert_eq!(
            (r.state.as_str(), r.attempt, r.lease_token),
            ("succeeded", 1, 1),
            "job {}",
            r.id
        );
    }
    for id in &ids_in {
        let attempts = store.attempts_of(*id).await.unwrap();
        assert_eq!(attempts.len(), 1, "job {id}: {attempts:?}");
        assert_eq!(attempts[0].outcome, "succeeded");
    }
    eprintln!(
        "{:?}: {JOBS} jobs leased+completed by {WORKERS} tasks in {elapsed:?} (per task {per_worker:?})",
        store.dialect()
    );
}

// ---------------------------------------------------------------- 9. heartbeat, restart

both!(heartbeat_and_restart, heartbeat_and_restart, with_url);
async fn heartbeat_and_restart(store: &Store, url: &str) {
    register(store, "w", &BTreeMap::new()).await;
    register(store, "other", &BTreeMap::new()).await;
    let (_, jobs) = submit(store, "beat", &[job("long"), job("restart")]).await;
    let [long, restarted] = jobs[..] else {
        panic!("{jobs:?}")
    };
    const BEAT_TTL: i64 = 600;
    let (grants, _) = store.lease("w", &cpu(1), 1, BEAT_TTL).await.unwrap();
    assert_eq!(ids(&grants), vec![long]);
    let first_deadline = grants[0].job.lease_deadline.unwrap();

    tokio::time::sleep(Duration::from_millis(400)).await;
    let beat = store.heartbeat("w", &[(long, 1)], BEAT_TTL).await.unwrap();
    assert!(beat[0].keep_running, "{beat:?}");
    let extended = get(store, long).await.lease_deadline.unwrap();
    assert!(
        extended >= first_deadline + 300,
        "deadline {first_deadline} -> {extended}"
    );
    // Past the first deadline, but not the extended one: nothing expires.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(clock_ms() > first_deadline);
    assert!(store.expire_leases().await.unwrap().is_empty());
    let row = get(store, long).await;
    assert_eq!((row.state.as_str(), row.lease_token), ("running", 1));

    // Heartbeats that do not hold the lease are told to stop, and extend nothing.
    let beat = store
        .heartbeat("w", &[(long, 2), (long, 1)], BEAT_TTL)
        .await
        .unwrap();
    assert!(
        !beat[0].keep_running && beat[0].reason.contains("stale"),
        "{beat:?}"
    );
    assert!(beat[1].keep_running, "{beat:?}");
    let beat = store
        .heartbeat("other", &[(long, 1)], 60_000)
        .await
        .unwrap();
    assert!(!beat[0].keep_running, "{beat:?}");
    assert!(get(store, long).await.lease_deadline.unwrap() < clock_ms() + 1_000);
    assert!(matches!(
        store.heartbeat("nobody", &[], TTL).await,
        Err(Error::NotFound(_))
    ));
    // Without heartbeats the lease does run out.
    tokio::time::sleep(Duration::from_millis(BEAT_TTL as u64 + 100)).await;
    let changes = store.expire_leases().await.unwrap();
    assert_eq!(ids_of(&changes), vec![long]);
    assert_eq!(get(store, long).await.state, "queued");

    // A "restart": the lease ran out while no coordinator was up; the new one gives
    // running jobs a full lease before it expires anything.
    let (grants, _) = store.lease("w", &cpu(1), 1, SHORT_TTL).await.unwrap();
    assert_eq!(ids(&grants), vec![long]);
    let (grants, _) = store.lease("w", &cpu(1), 1, SHORT_TTL).await.unwrap();
    assert_eq!(ids(&grants), vec![restarted]);
    let_short_lease_run_out().await;
    let again = Store::connect(url).await.unwrap();
    let before = clock_ms();
    assert_eq!(again.extend_running_leases(10_000).await.unwrap(), 2);
    assert!(again.expire_leases().await.unwrap().is_empty());
    for id in [long, restarted] {
        let row = again.get_job(id).await.unwrap();
        assert_eq!(row.state, "running");
        assert!(row.lease_deadline.unwrap() >= before + 10_000, "{row:?}");
    }
    // Deadlines already further out are not pulled in.
    assert_eq!(again.extend_running_leases(1_000).await.unwrap(), 0);
    assert!(get(store, restarted).await.lease_deadline.unwrap() >= before + 10_000);
    // The workers' tokens still hold on the new coordinator.
    again.complete(restarted, 1, "{}").await.unwrap();
    again.complete(long, 2, "{}").await.unwrap();
    again.close().await;
    assert_eq!(get(store, restarted).await.state, "succeeded");
}

fn ids_of(changes: &[atelier_coordinator::store::StateChange]) -> Vec<i64> {
    changes.iter().map(|c| c.job_id).collect()
}

fn clock_ms() -> i64 {
    atelier_coordinator::clock::now_ms()
}

// ---------------------------------------------------------------- 10. logs, artifacts

both!(logs_and_artifacts, logs_and_artifacts);
async fn logs_and_artifacts(store: &Store) {
    let (_, jobs) = submit(store, "logs", &[job("train"), job("quiet")]).await;
    let [id, quiet] = jobs[..] else {
        panic!("{jobs:?}")
    };
    let g = lease_one(store, "w", &cpu(1)).await.unwrap();
    assert_eq!(g.job.id, id);
    let (_, rows) = store
        .append_logs(id, 1, &["step 1".into(), "step 2".into()])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].id < rows[1].id);
    let (_, ckpt) = store
        .insert_artifact(id, 1, "checkpoint-100", &"a".repeat(64), 1000)
        .await
        .unwrap();
    assert_eq!(ckpt.attempt, 1);

    // The worker dies; the next attempt logs on, and finds its checkpoint.
    store.fail(id, 1, "worker lost", true).await.unwrap();
    let g = lease_one(store, "w2", &cpu(1)).await.unwrap();
    assert_eq!((g.job.id, g.job.lease_token), (id, 2));
    assert_eq!(store.artifacts_of(id).await.unwrap().len(), 1);
    store
        .append_logs(id, 2, &["resumed from checkpoint-100".into(), "".into()])
        .await
        .unwrap();
    store.append_logs(id, 2, &["step 3".into()]).await.unwrap();

    let all = store.logs_after(id, 0, 100).await.unwrap();
    let seen: Vec<(i64, &str)> = all.iter().map(|l| (l.attempt, l.line.as_str())).collect();
    assert_eq!(
        seen,
        vec![
            (1, "step 1"),
            (1, "step 2"),
            (2, "resumed from checkpoint-100"),
            (2, ""),
            (2, "step 3"),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert!(all.iter().all(|l| l.job_id == id));
    let tail = store.logs_after(id, all[1].id, 100).await.unwrap();
    assert_eq!(
        tail.iter().map(|l| l.id).collect::<Vec<_>>(),
        ids_of_logs(&all[2..])
    );
    let page = store.logs_after(id, 0, 2).await.unwrap();
    assert_eq!(ids_of_logs(&page), ids_of_logs(&all[..2]));
    assert!(store.logs_after(quiet, 0, 100).await.unwrap().is_empty());

    // Artifacts: one row per (job, name); a second upload of a name replaces it.
    let (_, w1) = store
        .insert_artifact(id, 2, "weights.safetensors", &"b".repeat(64), 2000)
        .await
        .unwrap();
    let (_, w2) = store
        .insert_artifact(id, 2, "weights.safetensors", &"c".repeat(64), 3000)
        .await
        .unwrap();
    assert_eq!(w1.id, w2.id);
    let (_, ckpt2) = store
        .insert_artifact(id, 2, "checkpoint-100", &"d".repeat(64), 1100)
        .await
        .unwrap();
    assert_eq!(ckpt2.id, ckpt.id);
    let arts = store.artifacts_of(id).await.unwrap();
    let seen: Vec<(&str, String, i64, i64)> = arts
        .iter()
        .map(|a| (a.name.as_str(), a.sha256.clone(), a.size, a.attempt))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("checkpoint-100", "d".repeat(64), 1100, 2),
            ("weights.safetensors", "c".repeat(64), 3000, 2),
        ]
    );
    assert!(store.artifacts_of(quiet).await.unwrap().is_empty());
    store.complete(id, 2, "{}").await.unwrap();
    // Nothing more after the end.
    stale(store.append_logs(id, 2, &["late".into()]).await, id);
    stale(store.insert_artifact(id, 2, "late", "e", 1).await, id);
    assert_eq!(store.logs_after(id, 0, 100).await.unwrap().len(), 5);
    assert_eq!(store.artifacts_of(id).await.unwrap().len(), 2);
}

both!(job_inputs, job_inputs);
async fn job_inputs(store: &Store) {
    let jobs = [
        job("prep"),
        job("other"),
        needing(job("train"), &["prep", "other"]),
    ];
    let (_, ids) = submit(store, "inputs", &jobs).await;
    let [prep, other, train] = ids[..] else {
        panic!("{ids:?}")
    };
    let sha = |c: &str| c.repeat(64);
    for _ in 0..2 {
        let g = lease_one(store, "w", &cpu(1)).await.unwrap();
        let (id, token) = (g.job.id, g.job.lease_token);
        if id == prep {
            for name in ["dataset.safetensors", "manifest.json"] {
                store
                    .insert_artifact(id, token, name, &sha("a"), 10)
                    .await
                    .unwrap();
            }
        }
        store.complete(id, token, "{}").await.unwrap();
    }
    let g = lease_one(store, "w", &cpu(1)).await.unwrap();
    let first = g.job.lease_token;
    assert_eq!(g.job.id, train);
    let inputs = store.job_inputs(train, first).await.unwrap();
    let needs: Vec<(i64, &str, &str, Vec<&str>)> = inputs
        .needs
        .iter()
        .map(|n| {
            let names = n.artifacts.iter().map(|a| a.name.as_str()).collect();
            (n.id, n.name.as_str(), n.kind.as_str(), names)
        })
        .collect();
    assert_eq!(
        needs,
        vec![
            (
                prep,
                "prep",
                "noop",
                vec!["dataset.safetensors", "manifest.json"]
            ),
            (other, "other", "noop", vec![]),
        ]
    );
    assert!(inputs.own.is_empty());

    // The attempt uploads a checkpoint and is lost; the next one finds it, and the
    // lost attempt's token reads nothing more.
    store
        .insert_artifact(train, first, "checkpoint-3/state.json", &sha("b"), 5)
        .await
        .unwrap();
    store.fail(train, first, "worker lost", true).await.unwrap();
    stale(store.job_inputs(train, first).await, train);
    let g = lease_one(store, "w2", &cpu(1)).await.unwrap();
    let inputs = store.job_inputs(train, g.job.lease_token).await.unwrap();
    let own: Vec<(&str, i64)> = inputs
        .own
        .iter()
        .map(|a| (a.name.as_str(), a.attempt))
        .collect();
    assert_eq!(own, vec![("checkpoint-3/state.json", 1)]);
    assert_eq!(inputs.needs.len(), 2);
}

fn ids_of_logs(rows: &[atelier_coordinator::store::LogRow]) -> Vec<i64> {
    rows.iter().map(|l| l.id).collect()
}

// ---------------------------------------------------------------- 11. bulk submit

both!(ten_thousand_jobs, ten_thousand_jobs);
async fn ten_thousand_jobs(store: &Store) {
    const N: usize = 10_000;
    let specs: Vec<JobSpec> = (0..N)
        .map(|i| {
            let mut j = with_priority(job(&format!("point-{i:05}")), (i % 3) as i64);
            j.params = json!({ "seconds": i as f64 / 1000.0 });
            j.requires.labels = if i % 7 == 0 {
                labels(&[("zone", "eu")])
            } else {
                BTreeMap::new()
            };
            // Every tenth job waits for the one before it.
            if i % 10 == 9 {
                j.needs = vec![format!("point-{:05}", i - 1)];
            }
            j
        })
        .collect();
    let started = Instant::now();
    let (exp, job_ids) = submit(store, "big-sweep", &specs).await;
    let took = started.elapsed();
    assert_eq!(job_ids.len(), N);
    assert!(
        job_ids.windows(2).all(|w| w[0] < w[1]),
        "ids not in spec order"
    );
    for i in [0, 1, 499, 500, 501, 4_999, 9_998, 9_999] {
        let row = get(store, job_ids[i]).await;
        assert_eq!(row.name, specs[i].name);
        assert_eq!(row.experiment_id, exp);
        assert_eq!(row.priority, (i % 3) as i64);
        assert_eq!(row.pending_needs, (i % 10 == 9) as i64);
        assert_eq!(row.labels().len(), (i % 7 == 0) as usize);
        assert_eq!(
            row.params,
            json!({ "seconds": i as f64 / 1000.0 }).to_string()
        );
    }
    assert_eq!(
        store.needs_of(job_ids[9_999]).await.unwrap(),
        vec![(
            job_ids[9_998],
            "point-09998".to_string(),
            "queued".to_string()
        )]
    );
    assert_eq!(store.needs_edges(Some(exp)).await.unwrap().len(), N / 10);
    let rows = store.list_jobs(Some(exp), None, None).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        job_ids,
        "list_jobs order"
    );
    assert!(rows.iter().zip(&specs).all(|(r, s)| r.name == s.name));

    let listed = store.list_experiments(Some("big-sweep")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].experiment.id, exp);
    assert_eq!(
        listed[0].counts,
        HashMap::from([("queued".to_string(), N as i64)])
    );
    assert_eq!(store.list_experiments(None).await.unwrap().len(), 1);
    // The queue's head is right with 10,000 jobs in it.
    let g = lease(store, "w", &cpu(2), 2).await;
    assert_eq!(ids(&g), vec![job_ids[2], job_ids[5]]);
    eprintln!(
        "{:?}: insert_experiment of {N} jobs took {took:?}",
        store.dialect()
    );
}

both!(complete_and_lease_next, complete_and_lease_next);
/// A completion that also leases the worker's next job (one statement on
/// PostgreSQL, one transaction on SQLite) has the same effects as the two apart.
async fn complete_and_lease_next(store: &Store) {
    let (_, ids_) = submit(
        store,
        "chain",
        &[
            job("a"),
            needing(job("b"), &["a"]),
            with_priority(job("c"), -1),
            with_priority(job("zone"), 5),
        ],
    )
    .await;
    let (a, b, c, zone_job) = (ids_[0], ids_[1], ids_[2], ids_[3]);
    // Make `zone` need a label the worker lacks, so the next lease must skip it.
    let mut eu = job("eu-only");
    eu.requires.labels = labels(&[("zone", "eu")]);
    eu.priority = 10;
    let (_, eu_ids) = submit(store, "eu", &[eu]).await;

    let first = lease_one(store, "w", &cpu(1)).await.expect("a job");
    assert_eq!(
        first.job.id, zone_job,
        "highest priority without labels first"
    );
    let (done, grants, events) = store
        .complete_and_lease(
            zone_job,
            first.job.lease_token,
            "{}",
            Some(("w", &cpu(1), 1, TTL)),
        )
        .await
        .unwrap();
    assert_eq!(
        (done.from.as_str(), done.to.as_str()),
        ("running", "succeeded")
    );
    assert_eq!(
        ids(&grants),
        [a],
        "the next job in the queue, skipping eu-only"
    );
    assert_eq!(events.len(), 1);
    assert_eq!(grants[0].job.lease_token, 1);
    assert_eq!(outcomes(store, zone_job).await, ["succeeded"]);
    assert_eq!(outcomes(store, a).await, ["running"]);

    // Completing `a` unblocks `b`, which comes before `c` in the queue: a job that
    // others need leases nothing along, and the next lease takes `b`.
    let (_, grants, _) = store
        .complete_and_lease(a, 1, "{\"ok\":true}", Some(("w", &cpu(1), 1, TTL)))
        .await
        .unwrap();
    assert_eq!(get(store, a).await.state, "succeeded");
    assert_eq!(get(store, a).await.result, "{\"ok\":true}");
    assert_eq!(get(store, b).await.pending_needs, 0);
    assert!(grants.is_empty());
    assert_eq!(
        lease_one(store, "w", &cpu(1)).await.map(|g| g.job.id),
        Some(b)
    );

    // A stale token completes nothing and leases nothing.
    let err = store
        .complete_and_lease(b, 7, "{}", Some(("w", &cpu(1), 1, TTL)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StaleLease(_)), "{err}");
    assert_eq!(get(store, b).await.state, "running");
    assert_eq!(get(store, c).await.state, "queued");

    // The last one: nothing left for this worker (eu-only needs a label).
    let (_, grants, _) = store
        .complete_and_lease(b, 1, "{}", Some(("w", &cpu(1), 1, TTL)))
        .await
        .unwrap();
    assert_eq!(ids(&grants), [c]);
    let (_, grants, _) = store
        .complete_and_lease(c, 1, "{}", Some(("w", &cpu(1), 1, TTL)))
        .await
        .unwrap();
    assert!(grants.is_empty());
    assert_eq!(get(store, eu_ids[0]).await.state, "queued");
}
