//! Security tests against a real coordinator with `auth` on, on SQLite and on
//! PostgreSQL, through gRPC clients that add `authorization: Bearer …` by hand:
//! no token, an unknown or revoked token, a worker token on a user RPC, a user
//! token on a worker or admin RPC, a user reading another user's experiment, a
//! path-traversal artifact name and an oversized upload are each refused with
//! their gRPC status, and nothing is written (rows and blob files checked).

#[macro_use]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atelier_coordinator::auth;
use atelier_coordinator::server::{self, RunningCoordinator};
use atelier_coordinator::store::Store;
use atelier_coordinator::CoordinatorConfig;
use atelier_proto::v1::worker_api_client::WorkerApiClient;
use atelier_proto::v1::{self, admin_client::AdminClient, atelier_client::AtelierClient};
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Uploads above this many bytes are refused in these tests.
const LIMIT: u64 = 1_000_000;

async fn start(url: &str, dir: &Path) -> RunningCoordinator {
    server::start(CoordinatorConfig {
        database_url: url.to_string(),
        redis_url: None,
        redis_channel: String::new(),
        artifact_dir: dir.join("artifacts"),
        s3: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        lease_ttl: Duration::from_secs(30),
        tls: None,
        auth: true,
        admin_token_file: dir.join("admin.token"),
        max_upload_bytes: LIMIT,
    })
    .await
    .unwrap_or_else(|e| panic!("starting a coordinator on {url}: {e}"))
}

fn with<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    r
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => s.code(),
    }
}

fn noop_experiment(name: &str) -> v1::SubmitRequest {
    v1::SubmitRequest {
        name: name.into(),
        source: String::new(),
        jobs: vec![v1::JobSpec {
            name: "n".into(),
            kind: "noop".into(),
            params_json: "{}".into(),
            max_attempts: 3,
            ..Default::default()
        }],
    }
}

fn upload_of(
    job_id: i64,
    lease_token: u64,
    name: &str,
    announced: u64,
    data: Vec<u8>,
) -> impl tokio_stream::Stream<Item = v1::UploadChunk> {
    let mut chunks = vec![v1::UploadChunk {
        part: Some(v1::upload_chunk::Part::Header(v1::UploadHeader {
            job_id,
            lease_token,
            name: name.into(),
            size: announced,
            sha256: String::new(),
        })),
    }];
    for c in data.chunks(256 * 1024) {
        chunks.push(v1::UploadChunk {
            part: Some(v1::upload_chunk::Part::Data(c.to_vec())),
        });
    }
    tokio_stream::iter(chunks)
}

/// Blob files under the artifact directory, temporary ones included.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

async fn create(admin: &mut AdminClient<Channel>, root: &str, name: &str, role: &str) -> String {
    admin
        .create_token(with(
            v1::CreateTokenRequest {
                name: name.into(),
                role: role.into(),
            },
            root,
        ))
        .await
        .unwrap_or_else(|e| panic!("creating token {name}: {e}"))
        .into_inner()
        .token
}

async fn security(store: &Store, url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let running = start(url, dir.path()).await;
    let artifacts = dir.path().join("artifacts");

    // Bootstrap: one admin token, in a file only its owner reads.
    let file = dir.path().join("admin.token");
    let root = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(root.starts_with("atl_") && root.len() == 68, "{root}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "admin.token mode {mode:o}");
    }
    // A second start (or replica) makes none: an admin token exists.
    let again = dir.path().join("again.token");
    auth::ensure_admin(store, &again).await.unwrap();
    assert!(!again.exists());
    assert_eq!(store.list_tokens().await.unwrap().len(), 1);

    let ch = Channel::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminClient::new(ch.clone());
    let mut user = AtelierClient::new(ch.clone());
    let mut worker_api = WorkerApiClient::new(ch.clone());

    let alice = create(&mut admin, &root, "alice", "user").await;
    let bob = create(&mut admin, &root, "bob", "user").await;
    let w1 = create(&mut admin, &root, "w1", "worker").await;
    // A live name cannot get a second token.
    let dup = admin
        .create_token(with(
            v1::CreateTokenRequest {
                name: "alice".into(),
                role: "user".into(),
            },
            &root,
        ))
        .await;
    assert_eq!(code(dup), Code::FailedPrecondition);

    // No token, a malformed header, an unknown token: UNAUTHENTICATED.
    let none = user.list_jobs(v1::ListJobsRequest::default()).await;
    assert_eq!(code(none), Code::Unauthenticated);
    let mut bad = Request::new(v1::ListJobsRequest::default());
    bad.metadata_mut()
        .insert("authorization", alice.parse().unwrap());
    assert_eq!(code(user.list_jobs(bad).await), Code::Unauthenticated);
    let unknown = user
        .list_jobs(with(v1::ListJobsRequest::default(), &auth::generate()))
        .await;
    assert_eq!(code(unknown), Code::Unauthenticated);
    let upload_without = worker_api
        .upload(tokio_stream::iter(Vec::<v1::UploadChunk>::new()))
        .await;
    assert_eq!(code(upload_without), Code::Unauthenticated);

    // A worker token on the user service: PERMISSION_DENIED, nothing submitted.
    let by_worker = user.submit(with(noop_experiment("w"), &w1)).await;
    assert_eq!(code(by_worker), Code::PermissionDenied);
    let cancel_by_worker = user
        .cancel(with(
            v1::TargetRequest {
                target: Some(v1::target_request::Target::JobId(1)),
                reason: String::new(),
            },
            &w1,
        ))
        .await;
    assert_eq!(code(cancel_by_worker), Code::PermissionDenied);
    assert!(store.list_experiments(None).await.unwrap().is_empty());

    // A user token on the worker and admin services: PERMISSION_DENIED.
    let register = |token: &str| {
        with(
            v1::RegisterRequest {
                worker_id: "w-1".into(),
                name: "w-1".into(),
                backend: "cpu".into(),
                cpu_slots: 1,
                ..Default::default()
            },
            token,
        )
    };
    let by_user = worker_api.register(register(&alice)).await;
    assert_eq!(code(by_user), Code::PermissionDenied);
    assert!(store.get_worker("w-1").await.unwrap().is_none());
    let mint = admin
        .create_token(with(
            v1::CreateTokenRequest {
                name: "mallory".into(),
                role: "admin".into(),
            },
            &alice,
        ))
        .await;
    assert_eq!(code(mint), Code::PermissionDenied);
    assert_eq!(store.list_tokens().await.unwrap().len(), 4);

    // Alice's experiment is hers; the worker runs it and stores an artifact.
    let submitted = user
        .submit(with(noop_experiment("alices"), &alice))
        .await
        .unwrap()
        .into_inner();
    let job = submitted.job_ids[0];
    assert_eq!(
        store
            .experiment_owner(submitted.experiment_id)
            .await
            .unwrap(),
        "alice"
    );
    worker_api.register(register(&w1)).await.unwrap();
    let mut bob_watch = user
        .watch(with(v1::WatchRequest::default(), &bob))
        .await
        .unwrap()
        .into_inner();
    let leased = worker_api
        .lease(with(
            v1::LeaseRequest {
                worker_id: "w-1".into(),
                free_cpu_slots: 1,
                max_jobs: 1,
                wait_ms: 5000,
                ..Default::default()
            },
            &w1,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leased.jobs.len(), 1);
    let lease_token = leased.jobs[0].lease_token;
    let body = b"alice's weights".to_vec();
    let stored = worker_api
        .upload(with(
            upload_of(
                job,
                lease_token,
                "model.bin",
                body.len() as u64,
                body.clone(),
            ),
            &w1,
        ))
        .await
        .unwrap()
        .into_inner()
        .artifact
        .unwrap();
    let sha = hex::encode(Sha256::digest(&body));
    assert_eq!(stored.sha256, sha);
    let blobs_before = files_under(&artifacts);

    // A path-traversal name: INVALID_ARGUMENT, no row, no file.
    let traversal = worker_api
        .upload(with(
            upload_of(job, lease_token, "../../etc/evil", 4, b"evil".to_vec()),
            &w1,
        ))
        .await;
    assert_eq!(code(traversal), Code::InvalidArgument);
    // Oversized, announced or not: RESOURCE_EXHAUSTED, no row, no file.
    let big: Vec<u8> = (0..LIMIT + 300_000).map(|i| (i % 251) as u8).collect();
    let big_sha = hex::encode(Sha256::digest(&big));
    let announced = worker_api
        .upload(with(
            upload_of(job, lease_token, "big.bin", big.len() as u64, big.clone()),
            &w1,
        ))
        .await;
    assert_eq!(code(announced), Code::ResourceExhausted);
    let unannounced = worker_api
        .upload(with(
            upload_of(job, lease_token, "big.bin", 0, big.clone()),
            &w1,
        ))
        .await;
    assert_eq!(code(unannounced), Code::ResourceExhausted);
    let rows = store.artifacts_of(job).await.unwrap();
    assert_eq!(
        rows.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["model.bin"]
    );
    // The coordinator drops the partial blob as the refusal is sent; allow it a moment.
    let mut after = files_under(&artifacts);
    for _ in 0..50 {
        if after == blobs_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = files_under(&artifacts);
    }
    assert_eq!(after, blobs_before, "files written by refused uploads");
    assert!(!after.iter().any(|f| f.ends_with(&big_sha)));

    worker_api
        .complete(with(
            v1::CompleteRequest {
                job_id: job,
                lease_token,
                result_json: "{}".into(),
                lease_next: None,
            },
            &w1,
        ))
        .await
        .unwrap();

    // Bob sees none of it: listings are empty, ids answer NOT_FOUND.
    let bobs_exps = user
        .list_experiments(with(v1::ListExperimentsRequest::default(), &bob))
        .await
        .unwrap()
        .into_inner();
    assert!(bobs_exps.experiments.is_empty());
    let bobs_jobs = user
        .list_jobs(with(v1::ListJobsRequest::default(), &bob))
        .await
        .unwrap()
        .into_inner();
    assert!(bobs_jobs.jobs.is_empty());
    let get = user
        .get_job(with(v1::GetJobRequest { job_id: job }, &bob))
        .await;
    assert_eq!(code(get), Code::NotFound);
    let retry = user
        .retry(with(
            v1::TargetRequest {
                target: Some(v1::target_request::Target::ExperimentId(
                    submitted.experiment_id,
                )),
                reason: String::new(),
            },
            &bob,
        ))
        .await;
    assert_eq!(code(retry), Code::NotFound);
    let logs = user
        .logs(with(
            v1::LogsRequest {
                job_id: job,
                ..Default::default()
            },
            &bob,
        ))
        .await;
    assert_eq!(code(logs.map(|_| ())), Code::NotFound);
    let watch_alices = user
        .watch(with(
            v1::WatchRequest {
                experiment_id: submitted.experiment_id,
            },
            &bob,
        ))
        .await;
    assert_eq!(code(watch_alices.map(|_| ())), Code::NotFound);
    for what in [
        v1::download_request::What::ArtifactId(stored.id),
        v1::download_request::What::Sha256(sha.clone()),
    ] {
        let pull = user
            .download(with(
                v1::DownloadRequest {
                    what: Some(what.clone()),
                },
                &bob,
            ))
            .await;
        assert_eq!(code(pull.map(|_| ())), Code::NotFound, "bob pulls {what:?}");
    }
    // Alice and the admin read it.
    for token in [&alice, &root] {
        let mut pulled = user
            .download(with(
                v1::DownloadRequest {
                    what: Some(v1::download_request::What::ArtifactId(stored.id)),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(c) = pulled.next().await {
            bytes.extend(c.unwrap().data);
        }
        assert_eq!(bytes, body);
    }
    assert_eq!(
        user.get_job(with(v1::GetJobRequest { job_id: job }, &alice))
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap()
            .state,
        "succeeded"
    );

    // Bob's watch carried none of Alice's events: the first it gets is his own.
    let bobs = user
        .submit(with(noop_experiment("bobs"), &bob))
        .await
        .unwrap()
        .into_inner();
    worker_api
        .lease(with(
            v1::LeaseRequest {
                worker_id: "w-1".into(),
                free_cpu_slots: 1,
                max_jobs: 1,
                wait_ms: 5000,
                ..Default::default()
            },
            &w1,
        ))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), bob_watch.next())
        .await
        .expect("bob's watch got no event")
        .unwrap()
        .unwrap();
    assert_eq!(first.experiment_id, bobs.experiment_id, "{first:?}");

    // Listing tokens never shows a secret; last use is recorded.
    let listed = admin
        .list_tokens(with(v1::ListTokensRequest {}, &root))
        .await
        .unwrap()
        .into_inner();
    let text = format!("{listed:?}");
    for secret in [&root, &alice, &bob, &w1] {
        assert!(!text.contains(secret.as_str()));
    }
    let alice_info = listed.tokens.iter().find(|t| t.name == "alice").unwrap();
    assert!(alice_info.last_used_at_ms > 0);
    assert_eq!(alice_info.revoked_at_ms, 0);

    // Revoked: refused from the next call on. A new token for the name owns the same.
    let revoked = admin
        .revoke_token(with(
            v1::RevokeTokenRequest {
                which: Some(v1::revoke_token_request::Which::Name("alice".into())),
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert!(revoked.revoked_at_ms > 0);
    let after_revoke = user
        .list_jobs(with(v1::ListJobsRequest::default(), &alice))
        .await;
    assert_eq!(code(after_revoke), Code::Unauthenticated);
    let again = admin
        .revoke_token(with(
            v1::RevokeTokenRequest {
                which: Some(v1::revoke_token_request::Which::Id(revoked.id)),
            },
            &root,
        ))
        .await;
    assert_eq!(code(again), Code::FailedPrecondition);
    let alice2 = create(&mut admin, &root, "alice", "user").await;
    let hers = user
        .list_jobs(with(v1::ListJobsRequest::default(), &alice2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        hers.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![job]
    );

    // A graceful stop waits for open calls: end the watch and the connection first.
    drop((bob_watch, user, admin, worker_api, ch));
    running.stop().await;
}

both!(security_refusals, security, with_url);

/// Coordinators starting together on one database make one admin token between
/// them: the database decides.
async fn one_bootstrap_among_many(store: &Store, url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(Store::connect(url).await.unwrap()));
    }
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.clone();
            let file = dir.path().join(format!("admin-{i}.token"));
            tokio::spawn(async move { auth::ensure_admin(&s, &file).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        // SQLite may refuse a racing writer (busy): that start fails, none doubles.
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert!(ok >= 1);
    let tokens = store.list_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let secret = std::fs::read_to_string(dir.path().join(&written[0])).unwrap();
    assert_eq!(auth::hash(secret.trim()), tokens[0].hash);
    for s in stores {
        s.close().await;
    }
}

both!(bootstrap_once, one_bootstrap_among_many, with_url);
