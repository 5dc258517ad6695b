//! Artifact rows: which job stored which blob under which name.

use sqlx::Row;

use super::rows::ArtifactRow;
use super::Store;
use crate::error::{Error, Result};

const COLUMNS: &str = "id, job_id, attempt, name, sha256, size, created_at";

/// What a running job may read: see [`Store::job_inputs`].
#[derive(Debug, Clone, Default)]
pub struct JobInputs {
    /// The jobs it needs, by id, each with its artifacts by name.
    pub needs: Vec<NeededJob>,
    /// Its own artifacts (stored by earlier attempts, or this one), by name.
    pub own: Vec<ArtifactRow>,
}

#[derive(Debug, Clone)]
pub struct NeededJob {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub artifacts: Vec<ArtifactRow>,
}

impl Store {
    pub async fn artifacts_of(&self, job_id: i64) -> Result<Vec<ArtifactRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM artifacts WHERE job_id = $1 ORDER BY name"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The artifacts a job holding lease `token` may read: those of the jobs it
    /// needs and its own. A stale token is refused like a write.
    pub async fn job_inputs(&self, job_id: i64, token: i64) -> Result<JobInputs> {
        self.check_lease(job_id, token).await?;
        let needs = sqlx::query(
            "SELECT j.id, j.name, j.kind FROM job_needs n JOIN jobs j ON j.id = n.needs_id \
             WHERE n.job_id = $1 ORDER BY j.id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        let mut inputs = JobInputs::default();
        for r in needs {
            inputs.needs.push(NeededJob {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                kind: r.try_get("kind")?,
                artifacts: Vec::new(),
            });
        }
        let rows: Vec<ArtifactRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM artifacts WHERE job_id = $1 \
             OR job_id IN (SELECT needs_id FROM job_needs WHERE job_id = $1) \
             ORDER BY job_id, name"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            if row.job_id == job_id {
                inputs.own.push(row);
            } else if let Some(need) = inputs.needs.iter_mut().find(|n| n.id == row.job_id) {
                need.artifacts.push(row);
            }
        }
        Ok(inputs)
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
