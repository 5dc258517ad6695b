//! What a coordinator needs to start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// `sqlite://path?mode=rwc` or `postgres://…`.
    pub database_url: String,
    /// Publish job events through Redis pub/sub when set; in-process otherwise.
    pub redis_url: Option<String>,
    /// The Redis channel; installations sharing one Redis each need their own.
    pub redis_channel: String,
    pub artifact_dir: PathBuf,
    /// Artifacts in this S3-compatible bucket instead of `artifact_dir` (setting
    /// `artifact_store = "s3://…"`).
    pub s3: Option<crate::artifacts::S3Config>,
    pub listen: SocketAddr,
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// Require a token on every call (`crate::auth`); off, everything is open.
    pub auth: bool,
    /// Where the first admin token is written when auth is on and none exists.
    pub admin_token_file: PathBuf,
    /// An upload (artifact or pushed trainset) larger than this is refused.
    pub max_upload_bytes: u64,
    /// Serve gRPC over TLS only, with this certificate and key.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl CoordinatorConfig {
    /// Workers heartbeat this often: a third of the lease, and at most every 2 s so
    /// that a cancel reaches a running job within seconds.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.lease_ttl / 3).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// A worker not heard from for this long is shown offline.
    pub fn worker_offline_after(&self) -> Duration {
        self.heartbeat_interval() * 3
    }
}
