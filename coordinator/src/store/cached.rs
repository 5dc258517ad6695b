//! Jobs completed from the cache: a queued job whose cache key (`spec::cache_key`)
//! equals that of a succeeded job is not run; it succeeds at once with that job's
//! artifacts (new rows naming the same blobs, no bytes copied) and its result plus
//! `cached_from`.
//!
//! Where a job is settled so: at submit, when its key has succeeded before; when the
//! job it waited for succeeds (in the same transaction); after a retry; and by the
//! reaper, for a job whose source succeeded through a path that settles later.
//! Meanwhile [`NOT_CACHED`] keeps the lease query from handing it out, and while an
//! earlier job with its key is queued or running it waits for that one.

use sqlx::{Any, Row, Transaction};

use super::jobs::{change, StateChange};
use super::rows::{JobRow, JOB_COLUMNS};
use super::Store;
use crate::clock::now_ms;
use crate::error::Result;

/// The lease condition for candidate `c`: no cache key, or none of the same key
/// that succeeded, or is queued or running ahead of it.
pub(crate) const NOT_CACHED: &str = "(c.cache_key = '' OR NOT EXISTS (SELECT 1 FROM jobs o \
     WHERE o.cache_key = c.cache_key AND o.cache_key <> '' AND o.id <> c.id \
     AND (o.state = 'succeeded' OR (o.state IN ('queued', 'running') AND o.id < c.id))))";

impl Store {
    /// Completes the queued jobs with cache key `key` from the first succeeded job
    /// with that key, if there is one.
    pub(crate) async fn settle_cached(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &str,
        now: i64,
    ) -> Result<Vec<StateChange>> {
        if key.is_empty() {
            return Ok(Vec::new());
        }
        let source: Option<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE cache_key = $1 AND state = 'succeeded' \
             ORDER BY id LIMIT 1"
        ))
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(source) = source else {
            return Ok(Vec::new());
        };
        let waiting: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE cache_key = $1 AND state = 'queued' \
             ORDER BY id {}",
            self.for_update()
        ))
        .bind(key)
        .fetch_all(&mut **tx)
        .await?;
        if waiting.is_empty() {
            return Ok(Vec::new());
        }
        let mut result = match serde_json::from_str::<serde_json::Value>(&source.result) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        // A cached job's source is never itself cached: point at the job that ran.
        let ran = result
            .get("cached_from")
            .and_then(|v| v.as_i64())
            .unwrap_or(source.id);
        result.insert("cached_from".into(), ran.into());
        let result = serde_json::Value::Object(result).to_string();
        // Through the transaction: on SQLite it holds the only connection.
        let experiment: String = sqlx::query_scalar("SELECT name FROM experiments WHERE id = $1")
            .bind(source.experiment_id)
            .fetch_one(&mut **tx)
            .await?;
        let reason = format!(
            "not run: job {ran} `{}` of experiment `{experiment}` prepared the same content \
             with the same params; its artifacts are reused",
            source.name
        );
        let mut changes = Vec::with_capacity(waiting.len());
        for job in &waiting {
            sqlx::query(
                "UPDATE jobs SET state = 'succeeded', result = $1, reason = $2, progress = 1, \
                 progress_message = '', started_at = $3, finished_at = $3, lease_deadline = NULL \
                 WHERE id = $4",
            )
            .bind(&result)
            .bind(&reason)
            .bind(now)
            .bind(job.id)
            .execute(&mut **tx)
            .await?;
            // What an attempt of its own left (it ran once, failed and was re-queued)
            // makes way for the source's complete set.
            sqlx::query("DELETE FROM artifacts WHERE job_id = $1")
                .bind(job.id)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO artifacts (job_id, attempt, name, sha256, size, created_at) \
                 SELECT $1, 0, name, sha256, size, $2 FROM artifacts WHERE job_id = $3",
            )
            .bind(job.id)
            .bind(now)
            .bind(source.id)
            .execute(&mut **tx)
            .await?;
            sqlx::query("INSERT INTO job_logs (job_id, attempt, at, line) VALUES ($1, 0, $2, $3)")
                .bind(job.id)
                .bind(now)
                .bind(format!("cached: {reason}"))
                .execute(&mut **tx)
                .await?;
            if job.dependents > 0 {
                sqlx::query(
                    "UPDATE jobs SET pending_needs = pending_needs - 1 WHERE state = 'queued' \
                     AND id IN (SELECT job_id FROM job_needs WHERE needs_id = $1)",
                )
                .bind(job.id)
                .execute(&mut **tx)
                .await?;
            }
            changes.push(change(job, "succeeded", &reason));
        }
        Ok(changes)
    }

    /// [`Store::settle_cached`] for each of `keys`, in one transaction of its own.
    pub async fn settle_cached_keys(&self, keys: &[String]) -> Result<Vec<StateChange>> {
        let keys: Vec<&String> = keys.iter().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mut changes = Vec::new();
        for key in keys {
            changes.extend(self.settle_cached(&mut tx, key, now).await?);
        }
        tx.commit().await?;
        Ok(changes)
    }

    /// Settles every queued job whose key has a succeeded job (the reaper's sweep).
    pub async fn settle_all_cached(&self) -> Result<Vec<StateChange>> {
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT q.cache_key FROM jobs q WHERE q.state = 'queued' \
             AND q.cache_key <> '' AND EXISTS (SELECT 1 FROM jobs s \
             WHERE s.cache_key = q.cache_key AND s.cache_key <> '' AND s.state = 'succeeded')",
        )
        .fetch_all(&self.pool)
        .await?;
        self.settle_cached_keys(&keys).await
    }

    /// For a queued job with a cache key: the job of the same key it waits for (id,
    /// name, state), queued or running ahead of it.
    pub async fn cache_leader(&self, job: &JobRow) -> Result<Option<(i64, String, String)>> {
        if job.cache_key.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT id, name, state FROM jobs WHERE cache_key = $1 AND id < $2 \
             AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
        )
        .bind(&job.cache_key)
        .bind(job.id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("name")?, r.try_get("state")?)))
            .transpose()
    }
}
