//! Runs real `atelier` processes (coordinator, workers, client commands) against a
//! fresh SQLite file or a fresh PostgreSQL database.

#![allow(dead_code)]

pub mod metrics;
pub mod netns;
pub mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_atelier");

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Generates `<name>_sqlite` and `<name>_postgres` tests from `fn <name>(db: Db)`.
#[macro_export]
macro_rules! both {
    ($name:ident, $sqlite:ident, $postgres:ident) => {
        #[test]
        fn $sqlite() {
            $name($crate::common::Db::Sqlite)
        }
        #[test]
        fn $postgres() {
            $name($crate::common::Db::Postgres)
        }
    };
}

pub fn postgres_admin_url() -> String {
    std::env::var("ATELIER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("ATELIER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn create_postgres_db() -> (String, String) {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let name = format!("atelier_e2e_{:016x}", rand::random::<u64>());
    block_on(async {
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for this test: {e}"));
        sqlx::Executor::execute(&mut c, format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
    });
    let base = admin.rsplit_once('/').unwrap().0;
    (format!("{base}/{name}"), name)
}

fn drop_postgres_db(name: &str) {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    block_on(async {
        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
            let _ = sqlx::Executor::execute(
                &mut c,
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
            )
            .await;
        }
    });
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One installation: a database, a data dir, a port; processes it started are
/// killed when it is dropped.
pub struct Harness {
    pub db: Db,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pg_name: Option<String>,
    pub port: u16,
    pub lease_ttl: f64,
    pub redis: Option<(String, String)>,
    /// Serve TLS with these certificates; clients get `https://` and the CA.
    pub tls: Option<tls::Certs>,
    /// Set for every process started (e.g. an S3 store and its credentials).
    pub env: Vec<(String, String)>,
    children: Vec<(String, Child)>,
}

impl Harness {
    pub fn new(db: Db) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (database_url, pg_name) = match db {
            Db::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("atelier.db").display()
                ),
                None,
            ),
            Db::Postgres => {
                let (url, name) = create_postgres_db();
                (url, Some(name))
            }
        };
        Harness {
            db,
            dir,
            database_url,
            pg_name,
            port: free_port(),
            lease_ttl: 3.0,
            redis: None,
            tls: None,
            env: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("ATELIER_DATA_DIR", self.dir.path().join("data"))
            .env("ATELIER_COORDINATOR", self.url())
            .env("RUST_LOG", "info,sqlx=warn,h2=warn,tower=warn,hyper=warn")
            .current_dir(self.dir.path());
        if let Some(certs) = &self.tls {
            c.env("ATELIER_TLS_CA", &certs.ca);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn spawn(&mut self, label: &str, args: &[&str]) -> usize {
        self.spawn_without(label, args, &[])
    }

    /// [`Harness::spawn`] without the environment variables `unset` (e.g.
    /// `ATELIER_DATA_DIR`, which would win over a `--config` file's `data_dir`).
    pub fn spawn_without(&mut self, label: &str, args: &[&str], unset: &[&str]) -> usize {
        let log = std::fs::File::create(self.path(&format!("{label}.log"))).unwrap();
        let mut command = self.command();
        for name in unset {
            command.env_remove(name);
        }
        let child = command
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push((label.to_string(), child));
        self.children.len() - 1
    }

    /// Starts the coordinator and waits until it answers.
    pub fn start_coordinator(&mut self) -> usize {
        let listen = format!("127.0.0.1:{}", self.port);
        let ttl = self.lease_ttl.to_string();
        let mut args = vec![
            "coordinator",
            "--listen",
            &listen,
            "--database-url",
            &self.database_url,
            "--lease-ttl",
            &ttl,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if let Some((url, channel)) = &self.redis {
            args.extend([
                "--redis-url".into(),
                url.clone(),
                "--redis-channel".into(),
                channel.clone(),
            ]);
        }
        if let Some(certs) = &self.tls {
            args.extend([
                "--tls-cert".into(),
                certs.cert.display().to_string(),
                "--tls-key".into(),
                certs.key.display().to_string(),
            ]);
        }
        let n = self
            .children
            .iter()
            .filter(|c| c.0.starts_with("coordinator"))
            .count();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let idx = self.spawn(&format!("coordinator{n}"), &argv);
        wait_until("coordinator answers", Duration::from_secs(30), || {
            self.cli(&["experiments", "--json"]).status.success()
        });
        idx
    }

    /// Starts a worker process named `name` and waits until it is registered.
    pub fn start_worker(&mut self, name: &str, extra: &[&str]) -> usize {
        let mut args = vec!["worker", "--name", name];
        args.extend_from_slice(extra);
        let idx = self.spawn(&format!("worker-{name}"), &args);
        wait_until(
            &format!("worker {name} registers"),
            Duration::from_secs(30),
            || {
                self.workers()
                    .iter()
                    .any(|w| w["name"] == name && w["online"] == true)
            },
        );
        idx
    }

    /// kill -9
    pub fn kill(&mut self, idx: usize) {
        let child = &mut self.children[idx].1;
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn pid(&self, idx: usize) -> u32 {
        self.children[idx].1.id()
    }

    /// Waits for a child to exit by itself.
    pub fn wait_exit(&mut self, idx: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.children[idx].1.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn log_of(&self, idx: usize) -> String {
        std::fs::read_to_string(self.path(&format!("{}.log", self.children[idx].0)))
            .unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// [`Harness::cli`] with environment variables set (`(name, Some(value))`) or
    /// removed (`(name, None)`), e.g. another coordinator address or CA.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let mut command = self.command();
        for (name, value) in env {
            match value {
                Some(v) => command.env(name, v),
                None => command.env_remove(name),
            };
        }
        command.args(args).output().unwrap()
    }

    /// Runs a command that must succeed and prints JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
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

    pub fn workers(&self) -> Vec<Value> {
        let out = self.cli(&["workers", "--json"]);
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    pub fn jobs(&self) -> Vec<Value> {
        self.json(&["jobs", "--json"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn job(&self, id: i64) -> Value {
        self.json(&["show", &id.to_string(), "--json"])
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Submits a YAML file; returns (experiment id, job ids).
    pub fn submit(&self, file: &Path) -> (i64, Vec<i64>) {
        let v = self.json(&["submit", file.to_str().unwrap(), "--json"]);
        let ids = v["job_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_i64().unwrap())
            .collect();
        (v["experiment_id"].as_i64().unwrap(), ids)
    }

    /// Waits until every job is succeeded, failed or cancelled.
    pub fn wait_all_ended(&self, timeout: Duration) -> Vec<Value> {
        let mut last = Vec::new();
        let start = Instant::now();
        while start.elapsed() < timeout {
            let out = self.cli(&["jobs", "--json"]);
            if out.status.success() {
                last = serde_json::from_slice::<Value>(&out.stdout)
                    .unwrap()
                    .as_array()
                    .cloned()
                    .unwrap();
                if !last.is_empty()
                    && last.iter().all(|j| {
                        matches!(
                            j["state"].as_str(),
                            Some("succeeded" | "failed" | "cancelled")
                        )
                    })
                {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "jobs did not end within {timeout:?}: {}",
            serde_json::to_string_pretty(&last).unwrap()
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(name) = &self.pg_name {
            drop_postgres_db(name);
        }
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting until {what}");
}

pub fn state(job: &Value) -> &str {
    job["job"]["state"].as_str().unwrap_or("")
}

pub fn fixture_trainset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/tests/fixtures/trainset_mixed")
}

/// The repository's root folder.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The job named `name` in a `jobs --json` list.
pub fn by_name<'a>(jobs: &'a [Value], name: &str) -> &'a Value {
    jobs.iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job `{name}` in {jobs:#?}"))
}

/// A job's result (from a `jobs --json` list), `null` when it has none.
pub fn result_of(job: &Value) -> Value {
    serde_json::from_str(job["result_json"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

/// Every file below `dir`, at any depth (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The one succeeded attempt of a shown job (`show --json`); fails the test when
/// the job did not end exactly once.
pub fn succeeded_once(id: i64, shown: &Value) -> &Value {
    let succeeded: Vec<&Value> = shown["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == "succeeded")
        .collect();
    assert_eq!(succeeded.len(), 1, "job {id} ended exactly once: {shown:#}");
    succeeded[0]
}
