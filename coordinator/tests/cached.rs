//! Jobs completed from the cache (`store::cached`), on SQLite and on PostgreSQL:
//! `prepare` jobs on the same pushed content with the same params run once.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use atelier_coordinator::spec::{validate_jobs, JobSpec, Requirements};
use atelier_coordinator::store::{Capacity, Store};
use serde_json::json;

const TTL: i64 = 60_000;

fn sha() -> String {
    "ab".repeat(32)
}

fn prepare(name: &str, params: serde_json::Value) -> JobSpec {
    let mut p = json!({"trainset": format!("pushed:demo@{}", sha())});
    for (k, v) in params.as_object().unwrap() {
        p[k] = v.clone();
    }
    JobSpec {
        name: name.to_string(),
        kind: "prepare".to_string(),
        params: p,
        priority: 0,
        max_attempts: 3,
        requires: Requirements::default(),
        needs: Vec::new(),
        sweep_point: None,
    }
}

fn noop(name: &str, needs: &[&str]) -> JobSpec {
    JobSpec {
        name: name.to_string(),
        kind: "noop".to_string(),
        params: json!({}),
        priority: 0,
        max_attempts: 3,
        requires: Requirements::default(),
        needs: needs.iter().map(|n| n.to_string()).collect(),
        sweep_point: None,
    }
}

fn cpu(slots: u32) -> Capacity {
    Capacity {
        backend: "cpu".into(),
        free_gpus: Vec::new(),
        free_cpu_slots: slots,
        labels: BTreeMap::new(),
    }
}

async fn submit(
    store: &Store,
    name: &str,
    jobs: &[JobSpec],
) -> (Vec<i64>, Vec<atelier_coordinator::store::StateChange>) {
    validate_jobs("test", jobs).unwrap();
    let (_, ids, cached) = store.submit_experiment(name, "", jobs).await.unwrap();
    (ids, cached)
}

async fn leased(store: &Store, slots: u32) -> Vec<(i64, i64)> {
    let (grants, _) = store
        .lease("w", &cpu(slots), slots as usize, TTL)
        .await
        .unwrap();
    grants
        .iter()
        .map(|g| (g.job.id, g.job.lease_token))
        .collect()
}

both!(
    equal_content_and_params_run_once,
    equal_content_and_params_run_once
);
async fn equal_content_and_params_run_once(store: &Store) {
    // `b` spells out a default `a` leaves implicit: the same params.
    let (ids, cached) = submit(
        store,
        "sweep",
        &[
            prepare("a", json!({"resolution": 32})),
            prepare("b", json!({"resolution": 32, "dedupe": true})),
            noop("after", &["b"]),
            prepare("c", json!({"resolution": 64})),
        ],
    )
    .await;
    assert!(cached.is_empty());
    let [a, b, after, c] = ids[..] else { panic!() };

    // Room for four jobs: `a` and `c` run, `b` waits for `a`.
    let got = leased(store, 4).await;
    let got_ids: Vec<i64> = got.iter().map(|g| g.0).collect();
    assert_eq!(got_ids, [a, c]);
    let waiting = store.get_job(b).await.unwrap();
    let leader = store.cache_leader(&waiting).await.unwrap();
    assert_eq!(leader, Some((a, "a".to_string(), "running".to_string())));

    let token = got[0].1;
    let dataset = "cd".repeat(32);
    store
        .insert_artifact(a, token, "dataset.safetensors", &dataset, 1234)
        .await
        .unwrap();
    let (_, _, changes) = store
        .complete_and_lease(a, token, r#"{"images":12}"#, None)
        .await
        .unwrap();
    let settled: Vec<(i64, &str)> = changes.iter().map(|c| (c.job_id, c.to.as_str())).collect();
    assert_eq!(settled, [(b, "succeeded")]);

    let job = store.get_job(b).await.unwrap();
    assert_eq!(job.state, "succeeded");
    let result: serde_json::Value = serde_json::from_str(&job.result).unwrap();
    assert_eq!(result, json!({"images": 12, "cached_from": a}));
    assert!(
        job.reason.contains(&format!("job {a} `a`")),
        "{}",
        job.reason
    );
    assert!(store.attempts_of(b).await.unwrap().is_empty());
    let arts = store.artifacts_of(b).await.unwrap();
    assert_eq!(arts.len(), 1);
    assert_eq!(
        (arts[0].name.as_str(), arts[0].sha256.as_str(), arts[0].size),
        ("dataset.safetensors", dataset.as_str(), 1234)
    );
    let logs = store.logs_after(b, 0, 10).await.unwrap();
    assert!(
        logs[0].line.starts_with("cached: not run"),
        "{:?}",
        logs[0].line
    );
    // Its dependent starts at once.
    assert_eq!(store.get_job(after).await.unwrap().pending_needs, 0);
    let got_ids: Vec<i64> = leased(store, 4).await.iter().map(|g| g.0).collect();
    assert_eq!(got_ids, [after]);

    // A later experiment on the same content and params succeeds at submit.
    let (ids, cached) = submit(store, "again", &[prepare("x", json!({"resolution": 32}))]).await;
    assert_eq!(cached.len(), 1);
    let x = store.get_job(ids[0]).await.unwrap();
    assert_eq!(x.state, "succeeded");
    let result: serde_json::Value = serde_json::from_str(&x.result).unwrap();
    assert_eq!(result["cached_from"], a);
    assert_eq!(store.artifacts_of(x.id).await.unwrap()[0].sha256, dataset);
}

both!(
    a_failed_source_lets_the_next_run,
    a_failed_source_lets_the_next_run
);
async fn a_failed_source_lets_the_next_run(store: &Store) {
    let (ids, _) = submit(
        store,
        "fails",
        &[
            prepare("p", json!({"resolution": 16})),
            prepare("q", json!({"resolution": 16})),
        ],
    )
    .await;
    let [p, q] = ids[..] else { panic!() };
    let got = leased(store, 2).await;
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [p]);
    // `p` leaves an artifact of its own before it fails.
    store
        .insert_artifact(p, got[0].1, "dataset.safetensors", &"dd".repeat(32), 5)
        .await
        .unwrap();
    store.fail(p, got[0].1, "boom", false).await.unwrap();
    let got = leased(store, 2).await;
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [q]);
    store
        .insert_artifact(q, got[0].1, "dataset.safetensors", &"ee".repeat(32), 9)
        .await
        .unwrap();
    store.complete(q, got[0].1, "{}").await.unwrap();
    // Retried, `p` takes `q`'s result instead of running again.
    store
        .retry(atelier_coordinator::store::Target::Job(p))
        .await
        .unwrap();
    let job = store.get_job(p).await.unwrap();
    assert_eq!(job.state, "succeeded", "{}", job.reason);
    assert!(
        job.result.contains(&format!("\"cached_from\":{q}")),
        "{}",
        job.result
    );
    let arts = store.artifacts_of(p).await.unwrap();
    assert_eq!(arts.len(), 1);
    assert_eq!((arts[0].sha256.clone(), arts[0].size), ("ee".repeat(32), 9));
}
