//! Who owns what: an experiment belongs to the name of the token that submitted
//! it, and its jobs, logs, events and artifacts with it.

use super::rows::ArtifactRow;
use super::Store;
use crate::error::{Error, Result};

impl Store {
    pub async fn experiment_owner(&self, id: i64) -> Result<String> {
        sqlx::query_scalar("SELECT owner FROM experiments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("experiment {id} does not exist")))
    }

    pub async fn job_owner(&self, job_id: i64) -> Result<String> {
        sqlx::query_scalar(
            "SELECT e.owner FROM jobs j JOIN experiments e ON e.id = j.experiment_id \
             WHERE j.id = $1",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("job {job_id} does not exist")))
    }

    /// The first artifact with content `sha256` among `owner`'s jobs.
    pub async fn artifact_by_sha_of(
        &self,
        owner: &str,
        sha256: &str,
    ) -> Result<Option<ArtifactRow>> {
        Ok(sqlx::query_as(
            "SELECT a.id, a.job_id, a.attempt, a.name, a.sha256, a.size, a.created_at \
             FROM artifacts a JOIN jobs j ON j.id = a.job_id \
             JOIN experiments e ON e.id = j.experiment_id \
             WHERE a.sha256 = $1 AND e.owner = $2 ORDER BY a.id LIMIT 1",
        )
        .bind(sha256)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?)
    }
}
