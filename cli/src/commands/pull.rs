use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use atelier_proto::v1;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use crate::error::{CliError, CliResult, Exit};
use crate::output::{bytes, print_json};
use crate::settings::Settings;
use atelier_worker::client::UserApi;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Job number
    pub job: String,
    /// Folder to write into (default: ./<job name>)
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Only this artifact (by name), or those in this folder (`checkpoint-200`)
    #[arg(long)]
    pub name: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let job_id = crate::refs::job_id(&self.job)?;
        let mut api = super::connect(&settings)?;
        let r = api
            .get_job(v1::GetJobRequest { job_id })
            .await?
            .into_inner();
        let job = r.job.unwrap_or_default();
        let artifacts: Vec<v1::Artifact> = r
            .artifacts
            .into_iter()
            .filter(|a| {
                self.name.as_ref().is_none_or(|n| {
                    a.name == *n || a.name.starts_with(&format!("{}/", n.trim_end_matches('/')))
                })
            })
            .collect();
        if artifacts.is_empty() {
            return Err(CliError::new(
                Exit::NotFound,
                format!(
                    "job {job_id} `{}` has no artifacts{}",
                    job.name,
                    self.name
                        .as_ref()
                        .map(|n| format!(" named `{n}`"))
                        .unwrap_or_default()
                ),
            ));
        }
        let dir = self
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from(&job.name));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| CliError::failure(format!("cannot create `{}`: {e}", dir.display())))?;
        let show_bar = std::io::stderr().is_terminal() && !self.json;
        let mut pulled = Vec::new();
        for a in &artifacts {
            // Names are relative paths (`checkpoint-200/state.json`); refuse any that
            // would leave `dir`, whatever the coordinator sent.
            atelier_proto::artifact_name::check(&a.name)
                .map_err(|e| CliError::failure(format!("job {job_id}: {e}; not written")))?;
            let dest = dir.join(&a.name);
            let folder = dest.parent().unwrap_or(&dir).to_path_buf();
            tokio::fs::create_dir_all(&folder).await.map_err(|e| {
                CliError::failure(format!("cannot create `{}`: {e}", folder.display()))
            })?;
            let bar = if show_bar {
                ProgressBar::new(a.size)
            } else {
                ProgressBar::hidden()
            };
            download(&mut api, job_id, a, &dest, &bar).await?;
            if !self.json {
                println!(
                    "{}  {}  {} (sha256 verified)",
                    a.sha256,
                    dest.display(),
                    bytes(a.size)
                );
            }
            pulled.push(serde_json::json!({
                "name": a.name, "path": dest, "size": a.size, "sha256": a.sha256, "verified": true,
            }));
        }
        if self.json {
            print_json(&pulled);
        }
        Ok(())
    }
}

/// Downloads artifact `a` of job `job_id` to `dest` (through a hidden `.partial`
/// file beside it), checking its sha256; nothing is written when it differs.
pub async fn download(
    api: &mut UserApi,
    job_id: i64,
    a: &v1::Artifact,
    dest: &Path,
    bar: &ProgressBar,
) -> CliResult {
    let folder = dest.parent().unwrap_or(Path::new(".")).to_path_buf();
    let file_name = dest.file_name().unwrap_or_default().to_string_lossy();
    let partial = folder.join(format!(".{file_name}.partial"));
    bar.set_style(
        ProgressStyle::with_template("{msg:24} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap(),
    );
    bar.set_message(a.name.clone());
    let mut stream = api
        .download(v1::DownloadRequest {
            what: Some(v1::download_request::What::ArtifactId(a.id)),
        })
        .await?
        .into_inner();
    let mut file = tokio::fs::File::create(&partial).await?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk.data);
        file.write_all(&chunk.data).await?;
        bar.inc(chunk.data.len() as u64);
    }
    file.flush().await?;
    drop(file);
    bar.finish_and_clear();
    let got = hex::encode(hasher.finalize());
    if got != a.sha256 {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(CliError::new(
            Exit::JobsFailed,
            format!(
                "`{}` of job {job_id}: downloaded bytes have sha256 {got}, expected {}; \
                 nothing written",
                a.name, a.sha256
            ),
        ));
    }
    tokio::fs::rename(&partial, dest).await?;
    Ok(())
}
