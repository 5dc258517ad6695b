//! Artifact rows: which job stored which blob under which name.

use super::rows::ArtifactRow;
use super::Store;
use crate::error::{Error, Result};

const COLUMNS: &str = "id, job_id, attempt, name, sha256, size, created_at";

impl Store {
    pub async fn artifacts_of(&self, job_id: i64) -> Result<Vec<ArtifactRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM artifacts WHERE job_id = $1 ORDER BY name"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_artifact(&self, id: i64) -> Result<ArtifactRow> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM artifacts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("artifact {id} does not exist")))
    }

    pub async fn artifact_by_sha(&self, sha256: &str) -> Result<ArtifactRow> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM artifacts WHERE sha256 = $1 ORDER BY id LIMIT 1"
        ))
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no artifact has sha256 {sha256}")))
    }
}
