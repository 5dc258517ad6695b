//! The fleet across a network: the coordinator and two workers each in their own
//! network namespace (veth pairs on one bridge), TLS and tokens on, artifacts in
//! the S3-compatible server. A sweep completes and `pull` verifies every file; one
//! worker's cable is pulled mid-job, its jobs are re-queued after the lease deadline
//! and each finishes once (the cable plugged back in, that worker takes new jobs);
//! the metrics endpoint, scraped throughout, shows the jobs moving through their
//! states. Needs root, iproute2, PostgreSQL, Redis and the S3
//! server (`ATELIER_TEST_S3_ENDPOINT`), as `.ci/run` provides.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use atelier_coordinator::artifacts::{s3, BlobStore, S3BlobStore, S3Config};
use common::metrics::{scrape, sum, Samples};
use common::netns::{forward, Lab};
use common::tls::{make_certs, Certs};
use common::{block_on, files_under, wait_until, Db, Harness};
use serde_json::Value;
use sha2::{Digest, Sha256};

const GRPC_PORT: u16 = 7878;
const METRICS_PORT: u16 = 9464;
const WORKER_METRICS_PORT: u16 = 9465;
const LEASE_TTL: f64 = 3.0;
const JOBS: usize = 8;

/// Where a loopback URL's service is reached from the hosts: through a relay on
/// the router's address.
fn through_router(lab: &Lab, url: &str) -> String {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let host_port = rest.split(['/', '?']).next().unwrap();
    let host_port = host_port.rsplit('@').next().unwrap();
    let target: SocketAddr = host_port
        .parse()
        .unwrap_or_else(|e| panic!("`{host_port}` of `{url}` is not ip:port: {e}"));
    let relay = forward(&lab.router(), target);
    url.replacen(host_port, &relay.to_string(), 1)
}

struct Fleet {
    lab: Lab,
    h: Harness,
    certs: Certs,
    s3: S3Config,
    /// The S3 endpoint as the coordinator's namespace reaches it.
    s3_endpoint: String,
    database_url: String,
    redis_url: String,
    children: Vec<(String, Child)>,
}

impl Fleet {
    fn coordinator_url(&self) -> String {
        format!("https://{}:{GRPC_PORT}", self.lab.ip("coord"))
    }

    fn log(&self, label: &str) -> PathBuf {
        self.h.path(&format!("{label}.log"))
    }

    /// `atelier` in `host`'s namespace, with only the environment given here.
    fn spawn(&mut self, host: &str, label: &str, args: &[&str], env: &[(&str, &str)]) -> usize {
        let log = std::fs::File::create(self.log(label)).unwrap();
        let mut c = self.lab.command(host, common::BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.h.dir.path())
            .env("ATELIER_DATA_DIR", self.h.path(&format!("{label}-data")))
            .env("RUST_LOG", "info,sqlx=warn,h2=warn,tower=warn,hyper=warn")
            .envs(env.iter().copied())
            .args(args)
            .current_dir(self.h.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.children.push((label.into(), c.spawn().unwrap()));
        self.children.len() - 1
    }

    /// A client command from the test's own namespace, across the bridge.
    fn cli(&self, token: &str, args: &[&str]) -> Output {
        Command::new(common::BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.h.dir.path())
            .env("ATELIER_COORDINATOR", self.coordinator_url())
            .env("ATELIER_TLS_CA", &self.certs.ca)
            .env("ATELIER_TOKEN", token)
            .args(args)
            .current_dir(self.h.dir.path())
            .output()
            .unwrap()
    }

    fn json(&self, token: &str, args: &[&str]) -> Value {
        let out = self.cli(token, args);
        assert!(
            out.status.success(),
            "atelier {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "atelier {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    fn start_coordinator(&mut self) {
        let listen = format!("0.0.0.0:{GRPC_PORT}");
        let metrics = format!("0.0.0.0:{METRICS_PORT}");
        let ttl = LEASE_TTL.to_string();
        let (db, redis, s3_url, s3_endpoint) = (
            self.database_url.clone(),
            self.redis_url.clone(),
            self.s3.url(),
            self.s3_endpoint.clone(),
        );
        let (cert, key) = (
            self.certs.cert.display().to_string(),
            self.certs.key.display().to_string(),
        );
        let channel = format!("atelier-fleet-{:08x}", rand::random::<u32>());
        self.spawn(
            "coord",
            "coordinator",
            &[
                "coordinator",
                "--listen",
                &listen,
                "--database-url",
                &db,
                "--redis-url",
                &redis,
                "--redis-channel",
                &channel,
                "--lease-ttl",
                &ttl,
                "--metrics-listen",
                &metrics,
            ],
            &[
                ("ATELIER_AUTH", "true"),
                ("ATELIER_TLS_CERT", &cert),
                ("ATELIER_TLS_KEY", &key),
                ("ATELIER_ARTIFACT_STORE", &s3_url),
                ("ATELIER_S3_ENDPOINT", &s3_endpoint),
                ("ATELIER_S3_ALLOW_HTTP", "true"),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
            ],
        );
    }

    fn start_worker(&mut self, host: &str, token: &str) {
        let url = self.coordinator_url();
        let ca = self.certs.ca.display().to_string();
        let metrics = format!("0.0.0.0:{WORKER_METRICS_PORT}");
        self.spawn(
            host,
            host,
            &[
                "worker",
                "--name",
                host,
                "--slots",
                "2",
                "--metrics-listen",
                &metrics,
            ],
            &[
                ("ATELIER_COORDINATOR", &url),
                ("ATELIER_TLS_CA", &ca),
                ("ATELIER_TOKEN", token),
            ],
        );
    }

    fn metrics(&self) -> Samples {
        scrape(&format!("{}:{METRICS_PORT}", self.lab.ip("coord")))
    }

    fn logs(&self) -> String {
        self.children
            .iter()
            .map(|(label, _)| {
                format!(
                    "--- {label}\n{}",
                    std::fs::read_to_string(self.log(label)).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn jobs_in(samples: &Samples, state: &str) -> f64 {
    sum(
        samples,
        "atelier_jobs",
        &[("state", state), ("kind", "noop")],
    )
}

fn token_of(v: &Value) -> String {
    v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {v}"))
        .to_string()
}

#[test]
fn a_sweep_across_namespaces_survives_a_cut_cable() {
    let lab = Lab::new(&["coord", "w1", "w2"]);
    let h = Harness::new(Db::Postgres);
    let certs = make_certs(h.dir.path(), "fleet", &[&lab.ip("coord")]);

    let s3_local = std::env::var("ATELIER_TEST_S3_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let mut s3 = S3Config::parse(&format!(
        "s3://atelier-fleet-{:016x}/fleet",
        rand::random::<u64>()
    ))
    .unwrap();
    s3.endpoint = Some(s3_local.clone());
    s3.allow_http = true;
    s3.credentials = Some(("test".into(), "test".into()));
    block_on(s3::create_bucket(&s3)).unwrap_or_else(|e| {
        panic!("an S3-compatible server at {s3_local} (ATELIER_TEST_S3_ENDPOINT) is required: {e}")
    });

    let database_url = through_router(&lab, &h.database_url);
    let redis_url = through_router(&lab, &common::redis_url());
    let s3_endpoint = through_router(&lab, &s3_local);
    let mut f = Fleet {
        lab,
        h,
        certs,
        s3,
        s3_endpoint,
        database_url,
        redis_url,
        children: Vec::new(),
    };

    f.start_coordinator();
    let admin_file = f.h.path("coordinator-data/admin.token");
    wait_until(
        "the coordinator writes its first admin token",
        Duration::from_secs(30),
        || admin_file.exists(),
    );
    let admin = std::fs::read_to_string(&admin_file)
        .unwrap()
        .trim()
        .to_string();
    let start = Instant::now();
    loop {
        let out = f.cli(&admin, &["token", "list", "--json"]);
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the coordinator does not answer over TLS: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            f.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let worker_token = token_of(&f.json(
        &admin,
        &[
            "token",
            "create",
            "--name",
            "gpu-boxes",
            "--role",
            "worker",
            "--json",
        ],
    ));
    let alice = token_of(&f.json(
        &admin,
        &[
            "token", "create", "--name", "alice", "--role", "user", "--json",
        ],
    ));

    // Only w1 at first, so that it holds jobs when its cable is pulled.
    f.start_worker("w1", &worker_token);
    let mut yaml = String::from("name: fleet\njobs:\n");
    for i in 0..JOBS {
        yaml.push_str(&format!(
            "  - name: j{i}\n    kind: noop\n    params: {{seconds: 4, artifact: \"payload {i}\"}}\n"
        ));
    }
    let file = f.h.write("fleet.yaml", &yaml);
    let submitted = f.json(&alice, &["submit", file.to_str().unwrap(), "--json"]);
    let ids: Vec<i64> = submitted["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), JOBS);

    let mut scrapes = vec![f.metrics()];
    let jobs = |f: &Fleet| -> Vec<Value> {
        f.json(&alice, &["jobs", "--json"])
            .as_array()
            .cloned()
            .unwrap()
    };
    wait_until("w1 runs two jobs", Duration::from_secs(60), || {
        jobs(&f).iter().filter(|j| j["state"] == "running").count() == 2
    });
    scrapes.push(f.metrics());
    let on_w1: Vec<(i64, u64)> = jobs(&f)
        .iter()
        .filter(|j| j["state"] == "running")
        .map(|j| {
            let id = j["id"].as_i64().unwrap();
            let token = f.json(&alice, &["show", &id.to_string(), "--json"])["job"]["lease_token"]
                .as_u64()
                .unwrap();
            (id, token)
        })
        .collect();

    f.lab.set_link("w1", false);
    let cut = Instant::now();
    f.start_worker("w2", &worker_token);
    for (id, token) in &on_w1 {
        wait_until(
            &format!("job {id} is leased again after w1's cable was pulled"),
            Duration::from_secs(60),
            || {
                let j = f.json(&alice, &["show", &id.to_string(), "--json"]);
                j["job"]["lease_token"].as_u64().unwrap() > *token
            },
        );
    }
    let requeued_after = cut.elapsed();
    eprintln!(
        "jobs {:?} re-leased {requeued_after:?} after w1's cable was pulled",
        on_w1.iter().map(|j| j.0).collect::<Vec<_>>()
    );
    // w1's last heartbeat came at most a third of the lease before the cut.
    assert!(
        requeued_after >= Duration::from_secs_f64(LEASE_TTL * 2.0 / 3.0),
        "re-leased only after the lease deadline: {requeued_after:?}"
    );

    // w1 comes back while jobs are left: what it finished while cut off is refused
    // as stale, and it takes new jobs.
    f.lab.set_link("w1", true);

    let start = Instant::now();
    let ended = loop {
        scrapes.push(f.metrics());
        let now = jobs(&f);
        if now.iter().all(|j| {
            matches!(
                j["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        }) {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the sweep did not end: {now:#?}\n{}",
            f.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        ended.iter().all(|j| j["state"] == "succeeded"),
        "{ended:#?}\n{}",
        f.logs()
    );

    // Late writes from w1 had time to arrive (and be refused).
    std::thread::sleep(Duration::from_secs_f64(LEASE_TTL));
    let mut workers = BTreeSet::new();
    let mut shas = Vec::new();
    for id in &ids {
        let j = f.json(&alice, &["show", &id.to_string(), "--json"]);
        assert_eq!(j["job"]["state"], "succeeded", "{j:#}");
        let attempts = j["attempts"].as_array().unwrap();
        let succeeded = common::succeeded_once(*id, &j);
        workers.insert(succeeded["worker_id"].as_str().unwrap().to_string());
        if on_w1.iter().any(|(w1_id, _)| w1_id == id) {
            let outcomes: Vec<&str> = attempts
                .iter()
                .map(|a| a["outcome"].as_str().unwrap())
                .collect();
            assert_eq!(outcomes, ["lost", "succeeded"], "job {id}: {j:#}");
            assert!(
                attempts[0]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("lease expired"),
                "{j:#}"
            );
        }

        let out = f.h.path(&format!("pulled-{id}"));
        let pulled = f.json(
            &alice,
            &[
                "pull",
                &id.to_string(),
                "-o",
                out.to_str().unwrap(),
                "--json",
            ],
        );
        let pulled = pulled.as_array().unwrap();
        assert_eq!(pulled.len(), 1, "{pulled:?}");
        let a = &pulled[0];
        assert_eq!(a["verified"], true);
        let bytes = std::fs::read(a["path"].as_str().unwrap()).unwrap();
        let sha = a["sha256"].as_str().unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
        shas.push(sha.to_string());
    }
    assert_eq!(workers.len(), 2, "both workers finished jobs: {workers:?}");

    // The blobs are objects in the bucket; nothing is under the coordinator's own
    // artifact folder.
    let store = block_on(S3BlobStore::connect(f.s3.clone())).unwrap();
    for sha in &shas {
        assert!(block_on(store.contains(sha)).unwrap(), "blob {sha} in S3");
    }
    assert!(
        files_under(&f.h.path("coordinator-data/artifacts")).is_empty(),
        "no blob on the coordinator's disk"
    );

    // The scrapes saw the jobs queued, running and succeeded, the lost leases
    // counted, and the artifact bytes.
    eprintln!(
        "{} scrapes of the coordinator's /metrics; queued/running/succeeded:",
        scrapes.len()
    );
    for s in &scrapes {
        eprintln!(
            "  {} / {} / {}",
            jobs_in(s, "queued"),
            jobs_in(s, "running"),
            jobs_in(s, "succeeded")
        );
    }
    let first = &scrapes[0];
    let last = scrapes.last().unwrap();
    assert!(
        jobs_in(first, "queued") >= 1.0,
        "queued at the first scrape"
    );
    assert!(
        scrapes.iter().any(|s| jobs_in(s, "running") >= 1.0),
        "some scrape saw running jobs"
    );
    assert_eq!(jobs_in(last, "succeeded"), JOBS as f64);
    assert_eq!(jobs_in(last, "queued") + jobs_in(last, "running"), 0.0);
    assert!(
        sum(last, "atelier_lease_expiries_total", &[]) >= on_w1.len() as f64,
        "the lost leases are counted"
    );
    assert!(sum(last, "atelier_artifact_uploaded_bytes_total", &[]) > 0.0);
    // The worker that stayed connected reports its own endpoint.
    let w2 = scrape(&format!("{}:{WORKER_METRICS_PORT}", f.lab.ip("w2")));
    assert!(
        w2.keys()
            .any(|(name, _)| name.starts_with("atelier_worker_")),
        "w2's metrics: {w2:?}"
    );
}
