//! Blobs as objects in an S3-compatible bucket, at `<prefix>/sha256/<ab>/<hash>`.
//!
//! The hash is known only when the last byte has arrived, so a blob larger than one
//! part is streamed as a multipart upload to `<prefix>/tmp/<random>` (a few parts in
//! flight, never the whole blob in memory), then copied to its hash key, and the
//! temporary object deleted. An object under a hash key is therefore always whole.
//! A smaller blob is one PUT straight to its hash key. An upload broken off is
//! aborted, so no parts are left behind.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

use super::{check_sha256, BlobStore, BlobWriter};
use crate::error::{Error, Result};

/// Bytes per multipart part (S3's minimum is 5 MiB, except for the last part).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once: with the part being filled, what one upload holds in memory.
const PARTS_IN_FLIGHT: usize = 4;
/// S3's CopyObject (temporary key to hash key) takes objects up to 5 GiB.
const MAX_BLOB: u64 = 5 * 1024 * 1024 * 1024;

/// Where the blobs live: the `artifact_store`, `s3_endpoint`, `s3_region` and
/// `s3_allow_http` settings.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// e.g. `http://127.0.0.1:9000` for MinIO; `None`: AWS (or `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// `None`: `AWS_REGION` / `AWS_DEFAULT_REGION`, else us-east-1.
    pub region: Option<String>,
    /// Plain-text HTTP to the endpoint (local test servers).
    pub allow_http: bool,
    /// `None`: from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, or instance and container credentials).
    pub credentials: Option<(String, String)>,
}

impl S3Config {
    /// Reads `s3://BUCKET[/PREFIX]`; the other fields empty.
    pub fn parse(url: &str) -> std::result::Result<S3Config, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{url}` is not s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return Err(format!(
                "`{url}`: bucket `{bucket}` is not an S3 bucket name (3 to 63 of a-z, 0-9, `.`, `-`)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(format!(
                "`{url}`: prefix `{prefix}` has an empty, `.` or `..` part"
            ));
        }
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: None,
            allow_http: false,
            credentials: None,
        })
    }

    /// `s3://bucket/prefix`, as the setting is written.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn endpoint_name(&self) -> &str {
        self.endpoint.as_deref().unwrap_or("the AWS endpoint")
    }

    fn build(&self, retry: RetryConfig) -> Result<AmazonS3> {
        // reqwest is built without a crypto provider of its own (see the workspace
        // Cargo.toml); ring is the one tonic's TLS uses too. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_allow_http(self.allow_http)
            .with_retry(retry)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(self.allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    // Per read, not per request: a large GET streams for minutes.
                    .with_read_timeout(Duration::from_secs(60))
                    .with_timeout(Duration::from_secs(600)),
            );
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        if let Some((id, secret)) = &self.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        b.build().map_err(|e| {
            Error::Invalid(format!(
                "artifact_store `{}` at {}: {e}",
                self.url(),
                self.endpoint_name()
            ))
        })
    }
}

/// Retries with exponential back-off (0.1 s doubling to 10 s) for up to 2 minutes;
/// object_store retries 5xx, throttling and connection errors, and a GET stream
/// broken mid-body resumes at the byte it reached.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(120),
    }
}

/// The bucket a store and its writers share (a writer's abort outlives the writer).
struct Bucket {
    s3: AmazonS3,
    config: S3Config,
}

pub struct S3BlobStore {
    bucket: Arc<Bucket>,
}

impl S3BlobStore {
    /// Connects and lists the prefix once, so that a wrong bucket, endpoint or
    /// credentials stop the coordinator at startup, naming the setting.
    pub async fn connect(config: S3Config) -> Result<S3BlobStore> {
        let probe = config.build(RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..retry_config()
        })?;
        let root = Path::from(config.prefix.as_str());
        let listed = tokio::time::timeout(
            Duration::from_secs(30),
            probe.list_with_delimiter((!config.prefix.is_empty()).then_some(&root)),
        )
        .await;
        let failure = match listed {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer in 30 s".to_string()),
        };
        if let Some(why) = failure {
            return Err(Error::Invalid(format!(
                "artifact_store `{}`: cannot list bucket `{}` at {}: {why}",
                config.url(),
                config.bucket,
                config.endpoint_name()
            )));
        }
        Ok(S3BlobStore {
            bucket: Arc::new(Bucket {
                s3: config.build(retry_config())?,
                config,
            }),
        })
    }

    /// The key of blob `sha256`: `<prefix>/sha256/<ab>/<hash>`.
    pub fn blob_key(&self, sha256: &str) -> String {
        self.bucket.blob_key(sha256).to_string()
    }

    /// Every key under the prefix (blobs, and temporary objects of uploads under way).
    pub async fn keys(&self) -> Result<Vec<String>> {
        let b = &self.bucket;
        let root = Path::from(b.config.prefix.as_str());
        let mut keys = Vec::new();
        let mut listing = b.s3.list((!b.config.prefix.is_empty()).then_some(&root));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| b.err("LIST", &root, e))?;
            keys.push(meta.location.to_string());
        }
        keys.sort();
        Ok(keys)
    }
}

impl Bucket {
    fn key(&self, rest: &str) -> Path {
        if self.config.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.config.prefix))
        }
    }

    fn blob_key(&self, sha256: &str) -> Path {
        self.key(&format!("sha256/{}/{sha256}", &sha256[..2]))
    }

    /// An error of `op` on `key`, naming the bucket and endpoint.
    fn err(&self, op: &str, key: &Path, e: object_store::Error) -> Error {
        Error::Io(std::io::Error::other(format!(
            "S3 {op} of `s3://{}/{key}` at {}: {e}",
            self.config.bucket,
            self.config.endpoint_name()
        )))
    }

    /// Copies the finished temporary object to its hash key (unless a writer of
    /// the same bytes got there first) and deletes it.
    async fn settle(&self, tmp: &Path, dest: &Path) -> Result<()> {
        let exists = match self.s3.head(dest).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(self.err("HEAD", dest, e)),
        };
        if !exists {
            // Two writers of the same bytes may both copy: the result is the same.
            self.s3
                .copy(tmp, dest)
                .await
                .map_err(|e| self.err(&format!("copy from `{tmp}`"), dest, e))?;
        }
        self.s3
            .delete(tmp)
            .await
            .map_err(|e| self.err("DELETE", tmp, e))
    }
}

enum State {
    /// Under one part so far: kept in memory, sent as one PUT to the hash key.
    Small(Vec<u8>),
    /// A multipart upload to the temporary key `tmp`.
    Multipart {
        tmp: Path,
        upload: WriteMultipart,
    },
    Finished,
}

struct S3Writer {
    bucket: Arc<Bucket>,
    state: State,
    hasher: Sha256,
    size: u64,
}

impl Drop for S3Writer {
    /// An upload that broke off is aborted: S3 drops its parts.
    fn drop(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Finished);
        if let State::Multipart { tmp, upload } = state {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let bucket = self.bucket.clone();
            rt.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!("{}", bucket.err("multipart abort", &tmp, e));
                }
            });
        }
    }
}

impl S3Writer {
    async fn start_multipart(&mut self, first: Vec<u8>) -> Result<()> {
        let b = &self.bucket;
        let tmp = b.key(&format!("tmp/{:032x}", rand::random::<u128>()));
        let upload =
            b.s3.put_multipart(&tmp)
                .await
                .map_err(|e| b.err("multipart start", &tmp, e))?;
        let mut upload = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        upload.put(Bytes::from(first));
        self.state = State::Multipart { tmp, upload };
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        if self.size > MAX_BLOB {
            return Err(Error::Invalid(format!(
                "artifact store `{}`: blobs above {MAX_BLOB} bytes are not supported \
                 (S3 copies objects of at most 5 GiB)",
                self.bucket.config.url()
            )));
        }
        match &mut self.state {
            State::Small(buf) => {
                buf.extend_from_slice(data);
                if buf.len() >= PART_SIZE {
                    let first = std::mem::take(buf);
                    self.start_multipart(first).await?;
                }
            }
            State::Multipart { tmp, upload } => {
                if let Err(e) = upload.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    return Err(self.bucket.err("part upload", tmp, e));
                }
                upload.write(data);
            }
            State::Finished => return Err(Error::Invalid("blob written after finish".into())),
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(String, u64)> {
        let sha = hex::encode(self.hasher.finalize_reset());
        let b = self.bucket.clone();
        let dest = b.blob_key(&sha);
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Small(buf) => {
                b.s3.put(&dest, PutPayload::from(buf))
                    .await
                    .map_err(|e| b.err("PUT", &dest, e))?;
            }
            State::Multipart { tmp, upload } => {
                // `finish` aborts the upload itself when it fails.
                upload
                    .finish()
                    .await
                    .map_err(|e| b.err("multipart complete", &tmp, e))?;
                if let Err(e) = b.settle(&tmp, &dest).await {
                    let _ = b.s3.delete(&tmp).await;
                    return Err(e);
                }
            }
            State::Finished => return Err(Error::Invalid("blob finished twice".into())),
        }
        Ok((sha, self.size))
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn begin(&self) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(S3Writer {
            bucket: self.bucket.clone(),
            state: State::Small(Vec::new()),
            hasher: Sha256::new(),
            size: 0,
        }))
    }

    async fn open(&self, sha256: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        check_sha256(sha256)?;
        let b = &self.bucket;
        let key = b.blob_key(sha256);
        match b.s3.get(&key).await {
            Ok(r) => {
                let bytes = r.into_stream().map(|r| r.map_err(std::io::Error::from));
                Ok(Box::new(StreamReader::new(bytes)))
            }
            Err(object_store::Error::NotFound { .. }) => Err(Error::NotFound(format!(
                "blob {sha256} is missing from the artifact store: no object `s3://{}/{key}` at {}",
                b.config.bucket,
                b.config.endpoint_name()
            ))),
            Err(e) => Err(b.err("GET", &key, e)),
        }
    }

    async fn contains(&self, sha256: &str) -> Result<bool> {
        check_sha256(sha256)?;
        let b = &self.bucket;
        let key = b.blob_key(sha256);
        match b.s3.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(b.err("HEAD", &key, e)),
        }
    }
}

/// Creates the bucket (for tests and benchmarks against a scratch server); one
/// that exists and is ours already is fine.
pub async fn create_bucket(config: &S3Config) -> Result<()> {
    let s3 = config.build(retry_config())?;
    let url = s3
        .signed_url(Method::PUT, &Path::from(""), Duration::from_secs(300))
        .await
        .map_err(|e| Error::Invalid(format!("signing CreateBucket `{}`: {e}", config.bucket)))?;
    let resp = reqwest::Client::new()
        .put(url)
        // S3 servers want a Content-Length, which reqwest leaves out for no body.
        .header(reqwest::header::CONTENT_LENGTH, "0")
        .send()
        .await
        .map_err(|e| {
            Error::Io(std::io::Error::other(format!(
                "CreateBucket `{}` at {}: {e}",
                config.bucket,
                config.endpoint_name()
            )))
        })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.is_success() || body.contains("BucketAlreadyOwnedByYou") {
        return Ok(());
    }
    Err(Error::Io(std::io::Error::other(format!(
        "CreateBucket `{}` at {}: {status}: {body}",
        config.bucket,
        config.endpoint_name()
    ))))
}

/// Lists the multipart uploads in progress in the bucket (tests check that a
/// broken-off upload left none): their keys.
pub async fn multipart_uploads(config: &S3Config) -> Result<Vec<String>> {
    let s3 = config.build(retry_config())?;
    let options = SignedUrlOptions::default().with_query([("uploads", "")]);
    let url = s3
        .signed_url_opts(
            Method::GET,
            &Path::from(""),
            Duration::from_secs(300),
            &options,
        )
        .await
        .map_err(|e| Error::Invalid(format!("signing ListMultipartUploads: {e}")))?;
    let body = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::Io(std::io::Error::other(format!("ListMultipartUploads: {e}"))))?
        .text()
        .await
        .map_err(|e| Error::Io(std::io::Error::other(format!("ListMultipartUploads: {e}"))))?;
    Ok(body
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
        .collect())
}
