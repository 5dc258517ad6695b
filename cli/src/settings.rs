//! Settings: built-in defaults, then `atelier.toml` (or the file named by `--config`
//! / `ATELIER_CONFIG`), then `ATELIER_*` environment variables, then flags.
//! With none of them, everything is embedded: SQLite and artifacts under `data_dir`.

use std::path::{Path, PathBuf};

use atelier_coordinator::artifacts::S3Config;
use atelier_coordinator::tls::TlsFiles;
use atelier_worker::client::ConnectOptions;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the embedded database, artifacts and job folders live.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; default: SQLite in `data_dir`.
    pub database_url: String,
    /// Publish events through Redis when set.
    pub redis_url: String,
    /// Redis channel for events (one per installation sharing a Redis).
    pub redis_channel: String,
    /// Artifact directory; default `data_dir/artifacts`.
    pub artifact_dir: String,
    /// Where the coordinator keeps artifacts: empty for `artifact_dir`, or
    /// `s3://BUCKET[/PREFIX]` for an S3-compatible bucket (credentials from
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    pub artifact_store: String,
    /// The S3 endpoint URL (MinIO, moto, …); empty: AWS.
    pub s3_endpoint: String,
    /// The S3 region; empty: `AWS_REGION`, else us-east-1.
    pub s3_region: String,
    /// Allow plain-text HTTP to `s3_endpoint`.
    pub s3_allow_http: bool,
    /// Address the coordinator listens on.
    pub listen: String,
    /// The coordinator that CLI commands and workers talk to.
    pub coordinator: String,
    /// Seconds a lease lives without a heartbeat.
    pub lease_ttl_secs: f64,
    /// Address of the coordinator's Prometheus endpoint (`/metrics`); empty: none.
    pub metrics_listen: String,
    /// Address of a worker's Prometheus endpoint (`/metrics`); empty: none.
    pub worker_metrics_listen: String,
    /// `text` (default) or `json`: one JSON object per log line, with job and
    /// worker ids as fields.
    pub log_format: String,
    /// The coordinator requires a token on every call (`atelier token`); off by
    /// default, so that the embedded setup works without one.
    pub auth: bool,
    /// The coordinator refuses an upload (artifact or trainset push) larger than this.
    pub max_upload_gb: f64,
    /// The token CLI commands and workers send (`authorization: Bearer …`).
    pub token: String,
    /// A file holding the token (read once, trimmed), instead of `token`.
    pub token_file: String,
    /// The coordinator's certificate chain (PEM); with `tls_key`, gRPC is TLS only.
    pub tls_cert: String,
    /// The coordinator's private key (PEM).
    pub tls_key: String,
    /// The CA (PEM) clients check the coordinator's certificate against; default:
    /// the system's roots.
    pub tls_ca: String,
}

/// The setting names, as in `atelier.toml` (and `ATELIER_<NAME>` in capitals).
const KEYS: &[&str] = &[
    "data_dir",
    "database_url",
    "redis_url",
    "redis_channel",
    "artifact_dir",
    "artifact_store",
    "s3_endpoint",
    "s3_region",
    "s3_allow_http",
    "listen",
    "coordinator",
    "lease_ttl_secs",
    "metrics_listen",
    "worker_metrics_listen",
    "log_format",
    "auth",
    "max_upload_gb",
    "token",
    "token_file",
    "tls_cert",
    "tls_key",
    "tls_ca",
];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: default_data_dir(),
            database_url: String::new(),
            redis_url: String::new(),
            redis_channel: atelier_coordinator::events::REDIS_CHANNEL.into(),
            artifact_dir: String::new(),
            artifact_store: String::new(),
            s3_endpoint: String::new(),
            s3_region: String::new(),
            s3_allow_http: false,
            listen: "127.0.0.1:7878".into(),
            coordinator: "http://127.0.0.1:7878".into(),
            lease_ttl_secs: 30.0,
            metrics_listen: String::new(),
            worker_metrics_listen: String::new(),
            log_format: "text".into(),
            auth: false,
            max_upload_gb: 64.0,
            token: String::new(),
            token_file: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    if let Ok(x) = std::env::var("XDG_DATA_HOME") {
        return PathBuf::from(x).join("atelier");
    }
    match std::env::var("HOME") {
        Ok(h) => PathBuf::from(h).join(".local/share/atelier"),
        Err(_) => PathBuf::from(".atelier"),
    }
}

impl Settings {
    pub fn load(file: Option<&Path>) -> Result<Settings, String> {
        Self::load_with_env(file, std::env::vars())
    }

    /// `load` with `vars` in place of the process environment (the deploy examples'
    /// tests load the variables a container would get).
    pub fn load_with_env(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, String> {
        let vars: std::collections::HashMap<String, String> = vars.into_iter().collect();
        let mut b = config::Config::builder();
        let explicit = file
            .map(Path::to_path_buf)
            .or_else(|| vars.get("ATELIER_CONFIG").map(PathBuf::from));
        match &explicit {
            Some(f) => {
                if !f.exists() {
                    return Err(format!("config file `{}` does not exist", f.display()));
                }
                b = b.add_source(config::File::from(f.as_path()));
            }
            None => {
                b = b.add_source(config::File::with_name("atelier.toml").required(false));
            }
        }
        // Only the variables that name a setting: others may share the prefix
        // (ATELIER_CONFIG names the file, tests have ATELIER_TEST_*).
        let env: std::collections::HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| {
                k.strip_prefix("ATELIER_")
                    .is_some_and(|key| KEYS.contains(&key.to_ascii_lowercase().as_str()))
            })
            .collect();
        b = b.add_source(
            config::Environment::with_prefix("ATELIER")
                .source(Some(env))
                .try_parsing(true)
                .ignore_empty(true),
        );
        b.build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| format!("settings: {e}"))
    }

    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("atelier.db").display()
            )
        } else {
            self.database_url.clone()
        }
    }

    pub fn artifact_dir(&self) -> PathBuf {
        if self.artifact_dir.is_empty() {
            self.data_dir.join("artifacts")
        } else {
            PathBuf::from(&self.artifact_dir)
        }
    }

    /// The S3 bucket of `artifact_store`, with `s3_endpoint`, `s3_region` and
    /// `s3_allow_http`; `None` when artifacts stay in `artifact_dir`.
    pub fn s3(&self) -> Result<Option<S3Config>, String> {
        if self.artifact_store.is_empty() {
            return Ok(None);
        }
        let mut c = S3Config::parse(&self.artifact_store).map_err(|e| {
            format!("artifact_store: {e}; leave it empty for the local artifact_dir")
        })?;
        c.endpoint = (!self.s3_endpoint.is_empty()).then(|| self.s3_endpoint.clone());
        c.region = (!self.s3_region.is_empty()).then(|| self.s3_region.clone());
        c.allow_http = self.s3_allow_http;
        Ok(Some(c))
    }

    pub fn redis_url(&self) -> Option<String> {
        (!self.redis_url.is_empty()).then(|| self.redis_url.clone())
    }

    /// How to reach the coordinator: `coordinator` (one URL or a list), the token
    /// from `token` or `token_file`, and `tls_ca`.
    pub fn connect_options(&self) -> Result<ConnectOptions, String> {
        let token = match (self.token.is_empty(), self.token_file.is_empty()) {
            (true, true) => None,
            (false, true) => Some(self.token.trim().to_string()),
            (true, false) => Some(read_token_file(Path::new(&self.token_file))?),
            (false, false) => {
                return Err("token and token_file are both set; set one of them".into())
            }
        };
        Ok(ConnectOptions {
            coordinator: self.coordinator.clone(),
            token,
            tls_ca: (!self.tls_ca.is_empty()).then(|| PathBuf::from(&self.tls_ca)),
        })
    }

    /// The coordinator's certificate and key, when both are set.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, String> {
        match (self.tls_cert.is_empty(), self.tls_key.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Ok(Some(TlsFiles {
                cert: PathBuf::from(&self.tls_cert),
                key: PathBuf::from(&self.tls_key),
            })),
            (false, true) => Err(format!(
                "tls_cert `{}` is set but tls_key is not; TLS needs both",
                self.tls_cert
            )),
            (true, false) => Err(format!(
                "tls_key `{}` is set but tls_cert is not; TLS needs both",
                self.tls_key
            )),
        }
    }
}

fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("token_file `{}`: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("token_file `{}` is empty", path.display()));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod deploy_examples;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cover_every_setting() {
        let json = serde_json::to_value(Settings::default()).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        fields.sort_unstable();
        let mut keys = KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(fields, keys);
    }

    #[test]
    fn artifact_store_is_local_or_an_s3_url() {
        let mut s = Settings::default();
        assert!(s.s3().unwrap().is_none());
        s.artifact_store = "s3://atelier-artifacts/fleet".into();
        s.s3_endpoint = "http://127.0.0.1:9000".into();
        s.s3_allow_http = true;
        let c = s.s3().unwrap().unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("atelier-artifacts", "fleet")
        );
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(c.allow_http && c.region.is_none());
        s.artifact_store = "/var/lib/atelier/artifacts".into();
        let err = s.s3().unwrap_err();
        assert!(err.starts_with("artifact_store:"), "{err}");
    }

    #[test]
    fn a_file_with_a_typo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("atelier.toml");
        std::fs::write(&file, "lease_ttl_secs = 5\nlisten_addr = \"x\"\n").unwrap();
        let err = Settings::load(Some(&file)).unwrap_err();
        assert!(err.contains("listen_addr"), "{err}");
        std::fs::write(&file, "lease_ttl_secs = 5\n").unwrap();
        assert_eq!(Settings::load(Some(&file)).unwrap().lease_ttl_secs, 5.0);
    }

    #[test]
    fn token_comes_from_token_or_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  secret-1\n").unwrap();
        let mut s = Settings {
            coordinator: "https://a:7878, https://b:7878".into(),
            tls_ca: "/etc/atelier/ca.pem".into(),
            ..Settings::default()
        };
        let none = s.connect_options().unwrap();
        assert_eq!(none.token, None);
        assert_eq!(none.urls(), ["https://a:7878", "https://b:7878"]);
        assert_eq!(none.tls_ca, Some(PathBuf::from("/etc/atelier/ca.pem")));
        s.token_file = file.display().to_string();
        assert_eq!(
            s.connect_options().unwrap().token.as_deref(),
            Some("secret-1")
        );
        s.token = "secret-2".into();
        let both = s.connect_options().unwrap_err();
        assert!(both.contains("token and token_file"), "{both}");
        s.token_file = dir.path().join("absent").display().to_string();
        s.token.clear();
        let absent = s.connect_options().unwrap_err();
        assert!(absent.contains("token_file `"), "{absent}");
        std::fs::write(&file, "\n").unwrap();
        s.token_file = file.display().to_string();
        let empty = s.connect_options().unwrap_err();
        assert!(empty.contains("is empty"), "{empty}");
    }

    #[test]
    fn tls_needs_both_cert_and_key() {
        let mut s = Settings::default();
        assert!(s.tls_files().unwrap().is_none());
        s.tls_cert = "cert.pem".into();
        let err = s.tls_files().unwrap_err();
        assert!(err.contains("tls_key is not"), "{err}");
        s.tls_key = "key.pem".into();
        let files = s.tls_files().unwrap().unwrap();
        assert_eq!(files.cert, PathBuf::from("cert.pem"));
        assert_eq!(files.key, PathBuf::from("key.pem"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("atelier.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1111\"\n").unwrap();
        assert_eq!(
            Settings::load(Some(&file)).unwrap().listen,
            "127.0.0.1:1111"
        );
        // Only this test touches ATELIER_LISTEN.
        std::env::set_var("ATELIER_LISTEN", "127.0.0.1:2222");
        let s = Settings::load(Some(&file));
        std::env::remove_var("ATELIER_LISTEN");
        assert_eq!(s.unwrap().listen, "127.0.0.1:2222");
    }
}
