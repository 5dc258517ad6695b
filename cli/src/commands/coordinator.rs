use std::net::SocketAddr;
use std::time::Duration;

use atelier_coordinator::CoordinatorConfig;

use crate::error::{CliError, CliResult};
use crate::metrics_http;
use crate::settings::Settings;

#[derive(clap::Args, Debug, Default)]
#[group(skip)]
pub struct Args {
    /// Address to listen on (setting `listen`)
    #[arg(long)]
    pub listen: Option<String>,
    /// postgres://… or sqlite://… (setting `database_url`; default SQLite in data_dir)
    #[arg(long)]
    pub database_url: Option<String>,
    /// Publish events through Redis (setting `redis_url`)
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Redis channel for events (setting `redis_channel`)
    #[arg(long)]
    pub redis_channel: Option<String>,
    /// Seconds a lease lives without a heartbeat (setting `lease_ttl_secs`)
    #[arg(long)]
    pub lease_ttl: Option<f64>,
    /// Artifact directory (setting `artifact_dir`)
    #[arg(long)]
    pub artifact_dir: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics (setting `metrics_listen`;
    /// with `up`, the worker's too)
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Require a token on every call; the first start makes an admin token in
    /// DATA_DIR/admin.token (setting `auth`)
    #[arg(long)]
    pub auth: bool,
    /// Refuse uploads larger than this many GB (setting `max_upload_gb`, default 64)
    #[arg(long, value_name = "GB")]
    pub max_upload_gb: Option<f64>,
    /// Certificate chain, PEM: with --tls-key the gRPC port speaks TLS only (setting `tls_cert`)
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// Private key of --tls-cert, PEM (setting `tls_key`)
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<String>,
}

/// Where artifacts are kept, when not in `artifact_dir`.
#[derive(clap::Args, Debug, Default)]
#[group(skip)]
pub struct StoreArgs {
    /// s3://BUCKET[/PREFIX]: artifacts in an S3-compatible bucket (setting
    /// `artifact_store`; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
    #[arg(long, value_name = "URL")]
    pub artifact_store: Option<String>,
    /// The S3 endpoint, e.g. http://127.0.0.1:9000 (setting `s3_endpoint`; default AWS)
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The S3 region (setting `s3_region`)
    #[arg(long)]
    pub s3_region: Option<String>,
    /// Allow plain-text HTTP to the S3 endpoint (setting `s3_allow_http`)
    #[arg(long)]
    pub s3_allow_http: bool,
}

impl StoreArgs {
    pub fn apply(&self, s: &mut Settings) {
        if let Some(v) = &self.artifact_store {
            s.artifact_store = v.clone();
        }
        if let Some(v) = &self.s3_endpoint {
            s.s3_endpoint = v.clone();
        }
        if let Some(v) = &self.s3_region {
            s.s3_region = v.clone();
        }
        if self.s3_allow_http {
            s.s3_allow_http = true;
        }
    }
}

impl Args {
    pub fn config(&self, mut s: Settings) -> CliResult<CoordinatorConfig> {
        if let Some(v) = &self.listen {
            s.listen = v.clone();
        }
        if let Some(v) = &self.database_url {
            s.database_url = v.clone();
        }
        if let Some(v) = &self.redis_url {
            s.redis_url = v.clone();
        }
        if let Some(v) = &self.redis_channel {
            s.redis_channel = v.clone();
        }
        if let Some(v) = self.lease_ttl {
            s.lease_ttl_secs = v;
        }
        if let Some(v) = &self.artifact_dir {
            s.artifact_dir = v.clone();
        }
        self.store.apply(&mut s);
        if let Some(v) = &self.tls_cert {
            s.tls_cert = v.clone();
        }
        if let Some(v) = &self.tls_key {
            s.tls_key = v.clone();
        }
        if self.auth {
            s.auth = true;
        }
        if let Some(v) = self.max_upload_gb {
            s.max_upload_gb = v;
        }
        if !(s.max_upload_gb > 0.0 && s.max_upload_gb.is_finite()) {
            return Err(CliError::invalid(format!(
                "max_upload_gb {} must be a positive number",
                s.max_upload_gb
            )));
        }
        let listen: SocketAddr = s
            .listen
            .parse()
            .map_err(|e| CliError::invalid(format!("listen `{}`: {e}", s.listen)))?;
        if !(0.1..=86_400.0).contains(&s.lease_ttl_secs) {
            return Err(CliError::invalid(format!(
                "lease_ttl_secs {} is out of range (0.1..=86400)",
                s.lease_ttl_secs
            )));
        }
        std::fs::create_dir_all(&s.data_dir).map_err(|e| {
            CliError::failure(format!(
                "cannot create data_dir `{}`: {e}",
                s.data_dir.display()
            ))
        })?;
        Ok(CoordinatorConfig {
            database_url: s.database_url(),
            redis_url: s.redis_url(),
            redis_channel: s.redis_channel.clone(),
            artifact_dir: s.artifact_dir(),
            s3: s.s3().map_err(CliError::invalid)?,
            listen,
            lease_ttl: Duration::from_secs_f64(s.lease_ttl_secs),
            auth: s.auth,
            admin_token_file: s.data_dir.join("admin.token"),
            max_upload_bytes: (s.max_upload_gb * 1e9) as u64,
            tls: s.tls_files().map_err(CliError::invalid)?,
        })
    }

    /// Where to serve metrics: the flag, else the setting; empty: nowhere.
    pub fn metrics_listen(&self, s: &Settings) -> String {
        self.metrics_listen
            .clone()
            .unwrap_or_else(|| s.metrics_listen.clone())
    }

    pub async fn exec(self, settings: Settings) -> CliResult {
        let metrics = self.metrics_listen(&settings);
        let config = self.config(settings)?;
        let running = atelier_coordinator::server::start(config)
            .await
            .map_err(|e| CliError::failure(e.to_string()))?;
        crate::logging::banner(format!("atelier coordinator listening on {}", running.addr));
        if !metrics.is_empty() {
            let render = metrics_http::coordinator(running.coordinator.clone());
            metrics_http::serve(&metrics, "metrics_listen", "coordinator", render).await?;
        }
        running
            .wait()
            .await
            .map_err(|e| CliError::failure(e.to_string()))
    }
}
