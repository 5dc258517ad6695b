//! Fresh stores for the coordinator's integration tests: a SQLite file in a temporary
//! directory, or a PostgreSQL database of its own on the server named by
//! `ATELIER_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! PostgreSQL is required: a test that cannot reach it fails, it is never skipped.

#![allow(dead_code)]

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use atelier_coordinator::store::{Dialect, Store};
use sqlx::{Connection, Executor, PgConnection, Row};
use tempfile::TempDir;

/// Scratch databases are named `atelier_t_<16 hex digits>`.
pub const PG_PREFIX: &str = "atelier_t_";
/// A scratch database left behind (a killed test run) is dropped by a later run once
/// it is this old; younger ones may belong to a run going on beside this one.
const STALE_AFTER_SECS: u64 = 3600;

/// Generates `<name>::sqlite` and `<name>::postgres`, two tests that each run
/// `async fn body(store: &Store)` on a fresh store. With `with_url`, the body is
/// `async fn body(store: &Store, url: &str)`, `url` being the store's database, for
/// tests that connect a second `Store` to it.
///
/// (Test names are module paths rather than `<name>_sqlite`: `macro_rules!` cannot
/// build identifiers and the crate has no `paste`; `cargo test postgres` still picks
/// one database.)
macro_rules! both {
    ($name:ident, $body:ident) => {
        both!(@tests $name, |store, _url| super::$body(store));
    };
    ($name:ident, $body:ident, with_url) => {
        both!(@tests $name, |store, url| super::$body(store, url));
    };
    (@tests $name:ident, |$store:ident, $url:ident| $call:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let (store, dir) = $crate::common::sqlite_store().await;
                let url = $crate::common::sqlite_url(dir.path());
                {
                    let $store = &store;
                    let $url: &str = &url;
                    $call.await;
                }
                store.close().await;
                drop(dir);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let (store, scratch) = $crate::common::postgres_store().await;
                {
                    let $store = &store;
                    let $url: &str = &scratch.url;
                    $call.await;
                }
                store.close().await;
                drop(scratch);
            }
        }
    };
}

/// The database URL of the SQLite store in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("atelier.db").display())
}

/// A store on a new SQLite file; the file goes with the directory.
pub async fn sqlite_store() -> (Store, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = sqlite_url(dir.path());
    let store = Store::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("opening SQLite store {url}: {e}"));
    assert_eq!(store.dialect(), Dialect::Sqlite);
    (store, dir)
}

pub fn postgres_admin_url() -> String {
    std::env::var("ATELIER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A scratch PostgreSQL database, dropped (`WITH (FORCE)`) when this is dropped, also
/// when the test panics.
pub struct PgScratch {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, where no other runtime may block: do
        // it on a thread of its own, with a runtime of its own.
        let admin = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| {
                    rt.block_on(async {
                        let mut c = PgConnection::connect(&admin).await?;
                        c.execute(sql.as_str()).await?;
                        c.close().await
                    })
                })
        })
        .join();
        if !matches!(done, Ok(Ok(Ok(())))) {
            eprintln!(
                "could not drop scratch database {} (a later run drops it once stale)",
                self.name
            );
        }
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A store on a new PostgreSQL database. Panics, naming the server, when PostgreSQL
/// cannot be reached.
pub async fn postgres_store() -> (Store, PgScratch) {
    let admin_url = postgres_admin_url();
    let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {admin_url} is required by the store tests and could not be \
             reached: {e}\n(start it, or point ATELIER_TEST_POSTGRES_URL at a server where \
             this user may CREATE DATABASE)"
        )
    });
    drop_stale_scratch(&mut admin).await;
    let name = format!("{PG_PREFIX}{:016x}", rand::random::<u64>());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
    // The creation time, so that a later run can tell a leaked database from one in use.
    admin
        .execute(
            format!(
                "COMMENT ON DATABASE {name} IS 'atelier test scratch, created {}'",
                unix_secs()
            )
            .as_str(),
        )
        .await
        .unwrap_or_else(|e| panic!("COMMENT ON DATABASE {name}: {e}"));
    let _ = admin.close().await;
    let base = admin_url
        .split(['?', '#'])
        .next()
        .unwrap_or(&admin_url)
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or_else(|| panic!("ATELIER_TEST_POSTGRES_URL `{admin_url}` names no database"));
    let url = format!("{base}/{name}");
    let scratch = PgScratch {
        name,
        url,
        admin_url,
    };
    let store = Store::connect(&scratch.url)
        .await
        .unwrap_or_else(|e| panic!("opening PostgreSQL store {}: {e}", scratch.url));
    assert_eq!(store.dialect(), Dialect::Postgres);
    (store, scratch)
}

/// Best effort: drops scratch databases of earlier runs that were never dropped (a
/// run killed before its `Drop`), once older than [`STALE_AFTER_SECS`].
async fn drop_stale_scratch(admin: &mut PgConnection) {
    let Ok(rows) = sqlx::query(
        "SELECT datname, COALESCE(shobj_description(oid, 'pg_database'), '') AS note \
         FROM pg_database WHERE datname LIKE 'atelier\\_t\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    else {
        return;
    };
    let now = unix_secs();
    for row in rows {
        let (Ok(name), Ok(note)) = (
            row.try_get::<String, _>("datname"),
            row.try_get::<String, _>("note"),
        ) else {
            continue;
        };
        let created = note
            .rsplit_once("created ")
            .and_then(|(_, t)| t.trim().parse::<u64>().ok());
        // No note: interrupted between CREATE and COMMENT, or made by hand; leave it.
        let Some(created) = created else { continue };
        let is_scratch = name.len() == PG_PREFIX.len() + 16
            && name[PG_PREFIX.len()..]
                .chars()
                .all(|c| c.is_ascii_hexdigit());
        if is_scratch && now.saturating_sub(created) > STALE_AFTER_SECS {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
}
