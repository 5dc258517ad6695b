//! `atelier token create|list|revoke` against `atelier coordinator --auth`: the
//! first admin token in DATA_DIR/admin.token, tokens sent from `ATELIER_TOKEN`,
//! secrets printed once and never listed, roles and revocation enforced.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{wait_until, Db, Harness};
use serde_json::Value;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn token_commands(db: Db) {
    let mut h = Harness::new(db);
    let listen = format!("127.0.0.1:{}", h.port);
    let database_url = h.database_url.clone();
    let coordinator = h.spawn(
        "coordinator",
        &[
            "coordinator",
            "--listen",
            &listen,
            "--database-url",
            &database_url,
            "--auth",
        ],
    );
    let file = h.path("data/admin.token");
    wait_until("admin.token is written", Duration::from_secs(30), || {
        file.exists()
    });
    let root = std::fs::read_to_string(&file).unwrap().trim().to_string();
    let as_token = |token: &str, args: &[&str]| h.cli_env(args, &[("ATELIER_TOKEN", Some(token))]);
    wait_until("the coordinator answers", Duration::from_secs(30), || {
        as_token(&root, &["experiments", "--json"]).status.success()
    });
    assert!(
        h.log_of(coordinator).contains("admin.token"),
        "the coordinator logs where the admin token is: {}",
        h.log_of(coordinator)
    );

    // Without a token: refused, saying what to send.
    let none = h.cli(&["jobs"]);
    assert!(!none.status.success());
    assert!(stderr(&none).contains("no token"), "{}", stderr(&none));

    let create = |name: &str, role: &str| -> Value {
        let out = as_token(
            &root,
            &["token", "create", "--name", name, "--role", role, "--json"],
        );
        assert!(
            out.status.success(),
            "token create {name}: {}",
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let alice = create("alice", "user")["token"]
        .as_str()
        .unwrap()
        .to_string();
    let w1 = create("w1", "worker")["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(alice.starts_with("atl_"));
    // Plain output: the token alone on stdout, for `> file`.
    let plain = as_token(
        &root,
        &["token", "create", "--name", "bob", "--role", "user"],
    );
    assert!(plain.status.success(), "{}", stderr(&plain));
    let bob = String::from_utf8(plain.stdout).unwrap().trim().to_string();
    assert!(bob.starts_with("atl_") && bob.len() == 68, "{bob}");

    // Listing shows names and roles, never a secret; a user may not list.
    let list = as_token(&root, &["token", "list", "--json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let text = String::from_utf8_lossy(&list.stdout);
    for secret in [&root, &alice, &w1, &bob] {
        assert!(!text.contains(secret.as_str()), "{text}");
    }
    let listed: Vec<Value> = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "alice", "w1", "bob"]);
    let table = as_token(&root, &["token", "list"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("LAST USED"));
    let by_user = as_token(&alice, &["token", "list"]);
    assert!(!by_user.status.success());
    assert!(
        stderr(&by_user).contains("only admin"),
        "{}",
        stderr(&by_user)
    );

    // A user reads the user service; a worker token may not.
    assert!(as_token(&alice, &["jobs", "--json"]).status.success());
    let by_worker = as_token(&w1, &["cancel", "1"]);
    assert!(!by_worker.status.success());
    assert!(
        stderr(&by_worker).contains("role worker"),
        "{}",
        stderr(&by_worker)
    );

    // Revoked by name: the next call is refused.
    let revoke = as_token(&root, &["token", "revoke", "alice"]);
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    assert!(String::from_utf8_lossy(&revoke.stdout).contains("revoked token"));
    let after = as_token(&alice, &["jobs"]);
    assert!(!after.status.success());
    assert!(
        stderr(&after).contains("unknown or revoked"),
        "{}",
        stderr(&after)
    );
    // By id, and a second time: refused as already revoked.
    let w1_id = listed[2]["id"].as_i64().unwrap().to_string();
    assert!(as_token(&root, &["token", "revoke", &w1_id])
        .status
        .success());
    let twice = as_token(&root, &["token", "revoke", &w1_id]);
    assert!(!twice.status.success());
    assert!(
        stderr(&twice).contains("revoked already"),
        "{}",
        stderr(&twice)
    );

    for verb in ["create", "list", "revoke"] {
        assert!(h.cli(&["token", verb, "--help"]).status.success());
    }
}

both!(
    token_commands,
    token_commands_sqlite,
    token_commands_postgres
);
