//! TLS on the gRPC port and the client side of the connection: a sweep through a
//! TLS coordinator, clients that cannot verify it or speak plain text refused (and
//! nothing written), bad PEM files named at startup, and an address list of two
//! coordinator replicas that keeps working when one is killed.

mod common;

use std::time::{Duration, Instant};

use common::tls::make_certs;
use common::{wait_until, Db, Harness};

/// A harness whose coordinator serves TLS with certificates made for this test.
fn tls_harness(db: Db) -> Harness {
    let mut h = Harness::new(db);
    h.tls = Some(make_certs(h.dir.path(), "ok", &[]));
    h
}

fn noop_sweep(n: usize, seconds: f64) -> String {
    let mut yaml = String::from("name: sweep\njobs:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - name: j{i}\n    kind: noop\n    params: {{seconds: {seconds}, artifact: \"payload {i}\"}}\n"
        ));
    }
    yaml
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Submit, run on a worker and pull, all over TLS with the test CA.
#[test]
fn sweep_runs_and_pulls_over_tls() {
    let mut h = tls_harness(Db::Sqlite);
    assert!(h.url().starts_with("https://"));
    let c = h.start_coordinator();
    assert!(
        h.log_of(c).contains("(TLS)"),
        "the coordinator says it serves TLS: {}",
        h.log_of(c)
    );
    h.start_worker("tls-worker", &["--slots", "2"]);
    let (_, ids) = h.submit(&h.write("sweep.yaml", &noop_sweep(4, 0.2)));
    let jobs = h.wait_all_ended(Duration::from_secs(60));
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:#?}");
    let out = h.path("pulled");
    let pulled = h.json(&[
        "pull",
        &ids[2].to_string(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(pulled.as_array().unwrap().len(), 1, "{pulled:#}");
    assert_eq!(
        std::fs::read_to_string(out.join("noop.txt")).unwrap(),
        "payload 2"
    );
}

/// Clients that cannot check the coordinator's certificate (no CA: the system's
/// roots; another CA) and plain-text clients are refused with UNAVAILABLE (exit 5)
/// and a message that says why; none of their submissions is written.
#[test]
fn unverifiable_and_plain_text_clients_are_refused() {
    let mut h = tls_harness(Db::Sqlite);
    h.start_coordinator();
    let file = h.write("sweep.yaml", &noop_sweep(1, 0.1));
    let submit = ["submit", file.to_str().unwrap()];

    let no_ca = h.cli_env(&submit, &[("ATELIER_TLS_CA", None)]);
    assert_eq!(no_ca.status.code(), Some(5), "{}", stderr(&no_ca));
    assert!(
        stderr(&no_ca).contains("invalid peer certificate"),
        "{}",
        stderr(&no_ca)
    );

    let other = make_certs(h.dir.path(), "other", &[]);
    let wrong_ca = h.cli_env(
        &submit,
        &[("ATELIER_TLS_CA", Some(other.ca.to_str().unwrap()))],
    );
    assert_eq!(wrong_ca.status.code(), Some(5), "{}", stderr(&wrong_ca));
    assert!(
        stderr(&wrong_ca).contains("invalid peer certificate"),
        "{}",
        stderr(&wrong_ca)
    );

    let plain_url = format!("http://127.0.0.1:{}", h.port);
    let plain = h.cli_env(&submit, &[("ATELIER_COORDINATOR", Some(&plain_url))]);
    assert_eq!(plain.status.code(), Some(5), "{}", stderr(&plain));
    assert!(
        stderr(&plain).contains("speaks TLS, use https://"),
        "{}",
        stderr(&plain)
    );

    // The same coordinator, verified: nothing of the three reached the database.
    let experiments = h.json(&["experiments", "--json"]);
    assert_eq!(experiments.as_array().unwrap().len(), 0, "{experiments:#}");
    h.submit(&file);
    assert_eq!(
        h.json(&["experiments", "--json"]).as_array().unwrap().len(),
        1
    );
}

/// A missing or non-PEM certificate or key stops the coordinator at startup with
/// a message naming the setting and the file.
#[test]
fn bad_certificate_files_are_named_at_startup() {
    let h = Harness::new(Db::Sqlite);
    let good = make_certs(h.dir.path(), "good", &[]);
    let not_pem = h.write("not-pem.txt", "hello\n");
    let missing = h.path("missing.pem");
    let cases = [
        (&not_pem, &good.key, "tls_cert"),
        (&good.cert, &not_pem, "tls_key"),
        (&missing, &good.key, "tls_cert"),
        (&good.cert, &missing, "tls_key"),
    ];
    for (cert, key, setting) in cases {
        let err = refused_start(&h, cert, key);
        let named = if setting == "tls_cert" { cert } else { key };
        assert!(
            err.contains(&format!("{setting} `{}`", named.display())),
            "{setting}: {err}"
        );
    }
    // A key that is not the certificate's.
    let other = make_certs(h.dir.path(), "other", &[]);
    let err = refused_start(&h, &good.cert, &other.key);
    assert!(
        err.contains(&format!("tls_cert `{}`", good.cert.display())),
        "{err}"
    );
}

/// Starts a coordinator with `cert` and `key`, which must exit with an error within
/// 20 s; returns what it printed.
fn refused_start(h: &Harness, cert: &std::path::Path, key: &std::path::Path) -> String {
    let log = h.path("refused.log");
    let mut child = std::process::Command::new(common::BIN)
        .args(["coordinator", "--listen"])
        .arg(format!("127.0.0.1:{}", h.port))
        .args(["--database-url", &h.database_url, "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env_clear()
        .env("HOME", h.dir.path())
        .env("ATELIER_DATA_DIR", h.path("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the coordinator started with cert {cert:?} and key {key:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{err}");
    err
}

/// Two coordinators on one PostgreSQL database and one Redis channel, TLS on; two
/// workers and the CLI use the address list. `kill -9` of the replica everyone
/// uses: every CLI call after it succeeds, and the sweep ends with every job
/// succeeded exactly once.
#[test]
fn address_list_survives_a_killed_replica() {
    let mut h = tls_harness(Db::Postgres);
    h.lease_ttl = 3.0;
    h.redis = Some((
        common::redis_url(),
        format!("atelier-tls-{:08x}", rand::random::<u32>()),
    ));
    let first_port = h.port;
    let first = h.start_coordinator();
    let second_port = common::free_port();
    h.port = second_port;
    h.start_coordinator();
    let list = format!("https://127.0.0.1:{first_port},https://127.0.0.1:{second_port}");
    h.port = first_port;

    // Every process from here on gets the list.
    let env = [("ATELIER_COORDINATOR", Some(list.as_str()))];
    let names = ["replicas-a", "replicas-b"];
    let mut workers: Vec<std::process::Child> = names
        .iter()
        .map(|name| {
            let log = std::fs::File::create(h.path(&format!("worker-{name}.log"))).unwrap();
            std::process::Command::new(common::BIN)
                .args(["worker", "--name", name, "--slots", "2"])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", h.dir.path())
                .env("ATELIER_COORDINATOR", &list)
                .env("ATELIER_TLS_CA", &h.tls.as_ref().unwrap().ca)
                .env("ATELIER_DATA_DIR", h.path(&format!("{name}-data")))
                .env("RUST_LOG", "info,sqlx=warn,h2=warn,tower=warn,hyper=warn")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap()
        })
        .collect();

    let file = h.write("sweep.yaml", &noop_sweep(12, 1.0));
    let out = h.cli_env(&["submit", file.to_str().unwrap(), "--json"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let submitted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<i64> = submitted["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_i64().unwrap())
        .collect();
    // `watch` follows the sweep across the kill (its event stream is on the
    // replica that dies) and exits 0 when every job succeeded.
    let watch_log = std::fs::File::create(h.path("watch.log")).unwrap();
    let mut watch = std::process::Command::new(common::BIN)
        .args(["watch", &format!("e{}", submitted["experiment_id"])])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", h.dir.path())
        .env("ATELIER_COORDINATOR", &list)
        .env("ATELIER_TLS_CA", &h.tls.as_ref().unwrap().ca)
        .stdout(watch_log.try_clone().unwrap())
        .stderr(watch_log)
        .spawn()
        .unwrap();
    let jobs_via_list = |h: &Harness| -> Vec<serde_json::Value> {
        let out = h.cli_env(&["jobs", "--json"], &env);
        assert!(out.status.success(), "jobs via the list: {}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap()
    };
    wait_until("jobs run", Duration::from_secs(30), || {
        jobs_via_list(&h).iter().any(|j| j["state"] == "running")
    });

    h.kill(first);
    let killed = Instant::now();
    // Each call is a fresh process: none may fail, and each answers quickly.
    let left = jobs_via_list(&h)
        .iter()
        .filter(|j| j["state"] != "succeeded")
        .count();
    assert!(
        left > 0,
        "the sweep was still running when the replica died"
    );
    for _ in 0..5 {
        let t = Instant::now();
        jobs_via_list(&h);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a call took {:?}",
            t.elapsed()
        );
    }
    let mut last = Vec::new();
    while killed.elapsed() < Duration::from_secs(90) {
        last = jobs_via_list(&h);
        if last.iter().all(|j| {
            matches!(
                j["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        }) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let watch_start = Instant::now();
    let watched = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(
            watch_start.elapsed() < Duration::from_secs(15),
            "watch did not end with the sweep: {}",
            std::fs::read_to_string(h.path("watch.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let watch_out = std::fs::read_to_string(h.path("watch.log")).unwrap_or_default();
    assert!(
        watched.success(),
        "watch across the kill: {watched:?}\n{watch_out}"
    );
    assert!(
        watch_out.contains("event stream lost"),
        "watch reconnected: {watch_out}"
    );
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let logs: Vec<String> = names
        .iter()
        .map(|name| std::fs::read_to_string(h.path(&format!("worker-{name}.log"))).unwrap())
        .collect();
    assert!(
        last.iter().all(|j| j["state"] == "succeeded"),
        "every job succeeded after the replica died: {last:#?}\nworker logs:\n{logs:#?}"
    );
    for log in &logs {
        assert!(
            log.contains(&format!(
                "coordinator https://127.0.0.1:{first_port} unreachable; using the others"
            )),
            "the worker moved to the other replica: {log}"
        );
    }
    let ran_on: std::collections::BTreeSet<&str> = last
        .iter()
        .map(|j| j["worker_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ran_on.len(), 2, "both workers ran jobs: {ran_on:?}");
    for id in ids {
        let out = h.cli_env(&["show", &id.to_string(), "--json"], &env);
        assert!(out.status.success(), "{}", stderr(&out));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        common::succeeded_once(id, &j);
    }
}

/// `atelier up` with TLS: its own worker connects over `https://` and runs a job
/// that a CLI command submitted over TLS.
#[test]
fn up_serves_tls_to_its_own_worker() {
    let mut h = tls_harness(Db::Sqlite);
    let certs = h.tls.clone().unwrap();
    let listen = format!("127.0.0.1:{}", h.port);
    h.spawn(
        "up",
        &[
            "up",
            "--listen",
            &listen,
            "--database-url",
            &h.database_url.clone(),
            "--tls-cert",
            certs.cert.to_str().unwrap(),
            "--tls-key",
            certs.key.to_str().unwrap(),
        ],
    );
    wait_until("up's worker registers", Duration::from_secs(30), || {
        h.workers().iter().any(|w| w["online"] == true)
    });
    h.submit(&h.write("one.yaml", &noop_sweep(1, 0.1)));
    let jobs = h.wait_all_ended(Duration::from_secs(30));
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:#?}");
}
