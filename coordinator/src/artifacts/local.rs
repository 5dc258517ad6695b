//! Blobs as files under a local directory.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::{check_sha256, BlobStore, BlobWriter};
use crate::error::{Error, Result};

/// Blobs as files under `<root>/sha256/<first two hex digits>/<hash>`.
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    pub fn new(root: impl Into<PathBuf>) -> Result<LocalBlobStore> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::create_dir_all(root.join("sha256"))?;
        Ok(LocalBlobStore { root })
    }

    fn path_of(&self, sha256: &str) -> Result<PathBuf> {
        check_sha256(sha256)?;
        Ok(self.root.join("sha256").join(&sha256[..2]).join(sha256))
    }
}

struct LocalWriter {
    file: tokio::fs::File,
    tmp: PathBuf,
    hasher: Sha256,
    size: u64,
    root: PathBuf,
    finished: bool,
}

impl Drop for LocalWriter {
    /// An upload that broke off leaves no temporary file behind.
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[async_trait]
impl BlobWriter for LocalWriter {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        self.file.write_all(data).await?;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(String, u64)> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        self.finished = true;
        let sha = hex::encode(self.hasher.finalize_reset());
        let dir = self.root.join("sha256").join(&sha[..2]);
        tokio::fs::create_dir_all(&dir).await?;
        let dest = dir.join(&sha);
        if tokio::fs::try_exists(&dest).await? {
            tokio::fs::remove_file(&self.tmp).await?;
        } else {
            tokio::fs::rename(&self.tmp, &dest).await?;
        }
        Ok((sha, self.size))
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn begin(&self) -> Result<Box<dyn BlobWriter>> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{:016x}", rand::random::<u64>()));
        let file = tokio::fs::File::create(&tmp).await?;
        Ok(Box::new(LocalWriter {
            file,
            tmp,
            hasher: Sha256::new(),
            size: 0,
            root: self.root.clone(),
            finished: false,
        }))
    }

    async fn open(&self, sha256: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let path = self.path_of(sha256)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(format!(
                "blob {sha256} is missing from the artifact store at `{}`",
                display(&self.root)
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn contains(&self, sha256: &str) -> Result<bool> {
        Ok(tokio::fs::try_exists(self.path_of(sha256)?).await?)
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn stores_by_hash_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::new(dir.path()).unwrap();
        let mut w = store.begin().await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        let (sha, size) = w.finish().await.unwrap();
        assert_eq!(size, 11);
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello world")));
        let mut again = store.begin().await.unwrap();
        again.write(b"hello world").await.unwrap();
        assert_eq!(again.finish().await.unwrap().0, sha);
        let mut buf = String::new();
        store
            .open(&sha)
            .await
            .unwrap()
            .read_to_string(&mut buf)
            .await
            .unwrap();
        assert_eq!(buf, "hello world");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        let missing = "0".repeat(64);
        assert!(matches!(
            store.open(&missing).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(store.open("../etc").await, Err(Error::Invalid(_))));
    }
}
