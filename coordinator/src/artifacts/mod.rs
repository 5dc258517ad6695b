//! Content-addressed blob storage. Blobs are named by the sha256 of their bytes, so a
//! blob stored twice is kept once, and whoever reads one can check it.
//!
//! - [`local`]: files under a directory (the default, `artifact_dir`).
//! - [`s3`]: objects in an S3-compatible bucket (`artifact_store = "s3://…"`).

mod local;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use crate::config::CoordinatorConfig;
use crate::error::{Error, Result};

pub use local::LocalBlobStore;
pub use s3::{S3BlobStore, S3Config};

/// A blob being written: bytes go in, the hash comes out at the end. Dropped
/// unfinished, it leaves nothing behind.
#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Makes the blob durable and returns (sha256 hex, size).
    async fn finish(self: Box<Self>) -> Result<(String, u64)>;
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn begin(&self) -> Result<Box<dyn BlobWriter>>;
    async fn open(&self, sha256: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>>;
    async fn contains(&self, sha256: &str) -> Result<bool>;
}

/// The store the configuration names: the S3 bucket when `artifact_store` is set
/// (checked to be reachable now), the local `artifact_dir` otherwise.
pub async fn open_store(config: &CoordinatorConfig) -> Result<Arc<dyn BlobStore>> {
    match &config.s3 {
        Some(s3) => Ok(Arc::new(S3BlobStore::connect(s3.clone()).await?)),
        None => Ok(Arc::new(LocalBlobStore::new(&config.artifact_dir)?)),
    }
}

/// `sha256` as a blob name: 64 hex digits, nothing that could walk out of a folder.
fn check_sha256(sha256: &str) -> Result<()> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!(
            "`{sha256}` is not a sha256 hex digest"
        )));
    }
    Ok(())
}
