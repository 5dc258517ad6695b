//! `noop`: runs for a while doing nothing but report; exercises the job system.

use std::time::{Duration, Instant};

use atelier_proto::kinds::NoopParams;

use super::{JobContext, JobError};

pub async fn run(ctx: &JobContext) -> Result<serde_json::Value, JobError> {
    let p: NoopParams = serde_json::from_str(&ctx.job.params_json)
        .map_err(|e| JobError::permanent(format!("params: {e}")))?;
    let total = Duration::from_secs_f64(p.seconds);
    let start = Instant::now();
    if !total.is_zero() {
        ctx.log(format!("sleeping {:.1} s", p.seconds));
    }
    while start.elapsed() < total {
        if ctx.is_cancelled() {
            return Err(JobError::permanent("cancelled"));
        }
        let done = start.elapsed().as_secs_f64() / total.as_secs_f64();
        ctx.progress(done, format!("{:.0}%", done * 100.0)).await;
        let left = total.saturating_sub(start.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(left.min(Duration::from_millis(100))) => {}
            _ = ctx.cancel.cancelled() => {}
        }
    }
    let mut result = serde_json::json!({ "slept_s": start.elapsed().as_secs_f64() });
    if let Some(text) = &p.artifact {
        let path = ctx.work_dir().await?.join("noop.txt");
        tokio::fs::write(&path, text)
            .await
            .map_err(|e| JobError::retryable(format!("writing `{}`: {e}", path.display())))?;
        let a = ctx.upload("noop.txt", &path).await?;
        result["artifact_sha256"] = a.sha256.into();
    }
    if p.fail {
        return Err(JobError::permanent(
            "failed on purpose (params.fail is true)",
        ));
    }
    Ok(result)
}
