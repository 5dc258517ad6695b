//! End-to-end on the S3 artifact store: a coordinator process with
//! `artifact_store = "s3://…"` (settings from `ATELIER_*` variables, credentials from
//! `AWS_*`) runs prepare jobs; `pull` verifies every file; the blobs are objects in
//! the bucket and nothing is under the local artifact directory. The S3-compatible
//! server is `ATELIER_TEST_S3_ENDPOINT` (default `http://127.0.0.1:5000`, moto as
//! `.ci/run` starts it); without it the test fails.

mod common;

use std::time::Duration;

use atelier_coordinator::artifacts::{s3, S3BlobStore, S3Config};
use common::{block_on, files_under, fixture_trainset, Db, Harness};
use sha2::{Digest, Sha256};

#[test]
fn prepare_jobs_store_artifacts_in_s3_and_pull_verifies_them() {
    let endpoint = std::env::var("ATELIER_TEST_S3_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let url = format!("s3://atelier-e2e-{:016x}/fleet", rand::random::<u64>());
    let mut config = S3Config::parse(&url).unwrap();
    config.endpoint = Some(endpoint.clone());
    config.allow_http = true;
    config.credentials = Some(("test".into(), "test".into()));
    block_on(s3::create_bucket(&config)).unwrap_or_else(|e| {
        panic!("an S3-compatible server at {endpoint} (ATELIER_TEST_S3_ENDPOINT) is required: {e}")
    });

    let mut h = Harness::new(Db::Sqlite);
    h.env = [
        ("ATELIER_ARTIFACT_STORE", url.as_str()),
        ("ATELIER_S3_ENDPOINT", endpoint.as_str()),
        ("ATELIER_S3_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    h.start_coordinator();
    h.start_worker("alpha", &["--slots", "2"]);
    let file = h.write(
        "prep.yaml",
        &format!(
            "name: prep-s3\n\
             defaults:\n  kind: prepare\n  params: {{trainset: \"{}\"}}\n\
             jobs:\n  - name: prep\n    sweep:\n      parameters:\n\
             \x20       params.resolution: [16, 24]\n",
            fixture_trainset().display()
        ),
    );
    let (_exp, ids) = h.submit(&file);
    let jobs = h.wait_all_ended(Duration::from_secs(180));
    assert!(
        jobs.iter().all(|j| j["state"] == "succeeded"),
        "not all succeeded: {jobs:#?}"
    );

    let mut shas = Vec::new();
    for id in &ids {
        let out = h.path(&format!("pulled-{id}"));
        let pulled = h.json(&[
            "pull",
            &id.to_string(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ]);
        let pulled = pulled.as_array().unwrap();
        assert_eq!(pulled.len(), 2);
        for a in pulled {
            assert_eq!(a["verified"], true);
            let bytes = std::fs::read(a["path"].as_str().unwrap()).unwrap();
            let sha = a["sha256"].as_str().unwrap();
            assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
            shas.push(sha.to_string());
        }
    }

    // Every blob is an object at its hash key, nothing else is in the bucket's
    // prefix, and the local artifact directory holds no blob.
    let store = block_on(S3BlobStore::connect(config)).unwrap();
    let keys = block_on(store.keys()).unwrap();
    shas.sort();
    shas.dedup();
    let mut expected: Vec<String> = shas.iter().map(|s| store.blob_key(s)).collect();
    expected.sort();
    assert_eq!(keys, expected);
    let local = h.path("data/artifacts");
    let local_files = files_under(&local);
    assert!(
        local_files.is_empty(),
        "files under {}: {local_files:?}",
        local.display()
    );
}

/// A bad `artifact_store`, or a bucket that is not there, stops the coordinator at
/// startup with an error naming the setting.
#[test]
fn a_bad_artifact_store_stops_the_coordinator() {
    let endpoint = std::env::var("ATELIER_TEST_S3_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let h = Harness::new(Db::Sqlite);
    let listen = format!("127.0.0.1:{}", h.port);
    let absent = format!("s3://atelier-absent-{:016x}", rand::random::<u64>());
    for (store, why) in [
        ("/var/lib/atelier/artifacts", "is not s3://"),
        (absent.as_str(), "cannot list bucket"),
    ] {
        let out = h.cli_env(
            &[
                "coordinator",
                "--listen",
                &listen,
                "--artifact-store",
                store,
            ],
            &[
                ("ATELIER_S3_ENDPOINT", Some(endpoint.as_str())),
                ("ATELIER_S3_ALLOW_HTTP", Some("true")),
                ("AWS_ACCESS_KEY_ID", Some("test")),
                ("AWS_SECRET_ACCESS_KEY", Some("test")),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{store} was accepted: {err}");
        assert!(
            err.contains("artifact_store") && err.contains(why),
            "{store}: {err}"
        );
    }
}
