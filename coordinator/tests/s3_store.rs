//! The S3 artifact store against a real S3-compatible server: the one named by
//! `ATELIER_TEST_S3_ENDPOINT` (default `http://127.0.0.1:5000`, moto as `.ci/run`
//! starts it). Each test makes a bucket of its own. A test that cannot reach the
//! server fails, it is never skipped.

use std::time::{Duration, Instant};

use atelier_coordinator::artifacts::s3::{self, PART_SIZE};
use atelier_coordinator::artifacts::{BlobStore, S3BlobStore, S3Config};
use atelier_coordinator::Error;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

fn endpoint() -> String {
    std::env::var("ATELIER_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

fn config(bucket: &str, prefix: &str) -> S3Config {
    let mut c = S3Config::parse(&format!("s3://{bucket}/{prefix}")).unwrap();
    c.endpoint = Some(endpoint());
    c.allow_http = true;
    c.region = Some("us-east-1".into());
    c.credentials = Some(("test".into(), "test".into()));
    c
}

/// A store on a new bucket, under prefix `artifacts`.
async fn fresh() -> (S3BlobStore, S3Config) {
    let bucket = format!("atelier-test-{:016x}", rand::random::<u64>());
    let c = config(&bucket, "artifacts");
    s3::create_bucket(&c).await.unwrap_or_else(|e| {
        panic!(
            "an S3-compatible server at {} (ATELIER_TEST_S3_ENDPOINT) is required: {e}",
            endpoint()
        )
    });
    (S3BlobStore::connect(c.clone()).await.unwrap(), c)
}

/// Deterministic bytes that do not repeat at part boundaries.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

async fn store_blob(store: &S3BlobStore, data: &[u8]) -> (String, u64) {
    let mut w = store.begin().await.unwrap();
    for chunk in data.chunks(1024 * 1024) {
        w.write(chunk).await.unwrap();
    }
    w.finish().await.unwrap()
}

async fn read_blob(store: &S3BlobStore, sha: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .open(sha)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

fn blob_key(sha: &str) -> String {
    format!("artifacts/sha256/{}/{sha}", &sha[..2])
}

#[tokio::test]
async fn stores_once_by_hash_and_streams_back() {
    let (store, _) = fresh().await;
    let small = b"hello world".to_vec();
    // Over two parts: the multipart path, then the copy to the hash key.
    let large = bytes(2 * PART_SIZE + 12345, 7);
    let mut shas = Vec::new();
    for data in [&small, &large] {
        let (sha, size) = store_blob(&store, data).await;
        assert_eq!(sha, hex::encode(Sha256::digest(data)));
        assert_eq!(size, data.len() as u64);
        assert!(store.contains(&sha).await.unwrap());
        assert_eq!(&read_blob(&store, &sha).await, data);
        // The same bytes again: the same name, still one object.
        assert_eq!(store_blob(&store, data).await.0, sha);
        shas.push(sha);
    }
    let mut expected: Vec<String> = shas.iter().map(|s| blob_key(s)).collect();
    expected.sort();
    assert_eq!(store.keys().await.unwrap(), expected);
}

#[tokio::test]
async fn parallel_writers_of_the_same_bytes_leave_one_object() {
    let (store, c) = fresh().await;
    let store = std::sync::Arc::new(store);
    let data = std::sync::Arc::new(bytes(PART_SIZE + 4096, 3));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (store, data) = (store.clone(), data.clone());
            tokio::spawn(async move { store_blob(&store, &data).await.0 })
        })
        .collect();
    let mut shas = Vec::new();
    for w in writers {
        shas.push(w.await.unwrap());
    }
    let sha = hex::encode(Sha256::digest(data.as_slice()));
    assert!(shas.iter().all(|s| *s == sha), "{shas:?}");
    assert_eq!(store.keys().await.unwrap(), vec![blob_key(&sha)]);
    assert_eq!(
        s3::multipart_uploads(&c).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(read_blob(&store, &sha).await, *data);
}

#[tokio::test]
async fn a_broken_off_upload_leaves_nothing() {
    let (store, c) = fresh().await;
    let mut w = store.begin().await.unwrap();
    for chunk in bytes(PART_SIZE * 2, 9).chunks(1024 * 1024) {
        w.write(chunk).await.unwrap();
    }
    assert_eq!(
        s3::multipart_uploads(&c).await.unwrap().len(),
        1,
        "two parts written: a multipart upload is under way"
    );
    drop(w);
    // The abort runs in the background; wait for it (not a timing assertion).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s3::multipart_uploads(&c).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the multipart upload was never aborted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.keys().await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_missing_blob_is_not_found_naming_the_key() {
    let (store, c) = fresh().await;
    let missing = "ab".repeat(32);
    assert!(!store.contains(&missing).await.unwrap());
    match store.open(&missing).await {
        Err(Error::NotFound(m)) => {
            let key = format!("s3://{}/{}", c.bucket, blob_key(&missing));
            assert!(m.contains(&key), "{m}");
            assert!(m.contains(&endpoint()), "{m}");
        }
        Err(e) => panic!("expected NotFound, got {e}"),
        Ok(_) => panic!("expected NotFound, got a reader"),
    }
    assert!(matches!(store.open("../etc").await, Err(Error::Invalid(_))));
}

#[tokio::test]
async fn a_bucket_that_is_not_there_stops_the_start_naming_the_setting() {
    let c = config(
        &format!("atelier-absent-{:016x}", rand::random::<u64>()),
        "",
    );
    let err = S3BlobStore::connect(c.clone())
        .await
        .err()
        .expect("a missing bucket must be refused");
    let m = err.to_string();
    assert!(m.contains("artifact_store") && m.contains(&c.bucket), "{m}");

    // No server at all: a port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut c = config("atelier-nowhere", "");
    c.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let m = S3BlobStore::connect(c)
        .await
        .err()
        .expect("an endpoint nobody answers must be refused")
        .to_string();
    assert!(
        m.contains("artifact_store") && m.contains(&port.to_string()),
        "{m}"
    );
}

#[test]
fn artifact_store_urls_are_checked() {
    let c = S3Config::parse("s3://my-bucket/some/prefix/").unwrap();
    assert_eq!(
        (c.bucket.as_str(), c.prefix.as_str()),
        ("my-bucket", "some/prefix")
    );
    assert_eq!(S3Config::parse("s3://my-bucket").unwrap().prefix, "");
    for bad in [
        "my-bucket",
        "s3://",
        "s3://My_Bucket/x",
        "s3://b/x",
        "s3://bucket/a/../b",
        "file:///tmp",
    ] {
        assert!(S3Config::parse(bad).is_err(), "{bad} was accepted");
    }
}
