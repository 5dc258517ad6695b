//! Job log lines, kept by the coordinator so that they outlive the worker.

use super::rows::LogRow;
use super::Store;
use crate::error::Result;

impl Store {
    pub async fn logs_after(&self, job_id: i64, after: i64, limit: i64) -> Result<Vec<LogRow>> {
        Ok(sqlx::query_as(
            "SELECT id, job_id, attempt, at, line FROM job_logs WHERE job_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
