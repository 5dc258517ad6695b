//! Experiments: inserted with all their jobs in one transaction, listed with counts.

use std::collections::HashMap;

use sqlx::Row;

use super::rows::ExperimentRow;
use super::Store;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::spec::JobSpec;

/// Rows per multi-row INSERT: 16 bound values each stays far below both databases'
/// limits on bound parameters.
const INSERT_CHUNK: usize = 500;

/// `($1, $2, …), (…)` for `rows` rows of `cols` values.
fn values_placeholders(rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

pub struct ExperimentCounts {
    pub experiment: ExperimentRow,
    pub counts: HashMap<String, i64>,
}

impl Store {
    /// Writes an experiment and all its jobs, or nothing. `jobs` must be validated.
    pub async fn insert_experiment(
        &self,
        name: &str,
        source: &str,
        jobs: &[JobSpec],
    ) -> Result<(i64, Vec<i64>)> {
        let (id, job_ids, _) = self.submit_experiment(name, source, jobs).await?;
        Ok((id, job_ids))
    }

    /// [`Store::insert_experiment`], and the jobs it completed at once from the
    /// cache (`store::cached`): their state changes, to announce.
    pub async fn submit_experiment(
        &self,
        name: &str,
        source: &str,
        jobs: &[JobSpec],
    ) -> Result<(i64, Vec<i64>, Vec<super::StateChange>)> {
        self.submit_experiment_as("", name, source, jobs).await
    }

    /// [`Store::submit_experiment`] for `owner`, the name of the caller's token
    /// ('' when auth is off).
    pub async fn submit_experiment_as(
        &self,
        owner: &str,
        name: &str,
        source: &str,
        jobs: &[JobSpec],
    ) -> Result<(i64, Vec<i64>, Vec<super::StateChange>)> {
        let now = now_ms();
        let keys: Vec<String> = jobs
            .iter()
            .map(|j| crate::spec::cache_key(j).unwrap_or_default())
            .collect();
        let mut tx = self.pool.begin().await?;
        let exp_id: i64 = sqlx::query_scalar(
            "INSERT INTO experiments (name, source, created_at, owner) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(name)
        .bind(source)
        .bind(now)
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?;

        let mut dependents: HashMap<&str, i64> = HashMap::new();
        for job in jobs {
            for need in &job.needs {
                *dependents.entry(need.as_str()).or_default() += 1;
            }
        }
        let mut ids: HashMap<String, i64> = HashMap::with_capacity(jobs.len());
        for (n, chunk) in jobs.chunks(INSERT_CHUNK).enumerate() {
            let offset = n * INSERT_CHUNK;
            let sql = format!(
                "INSERT INTO jobs (experiment_id, name, kind, params, sweep_point, state, priority, \
                 max_attempts, req_gpus, req_gpu_mem_gb, req_backend, req_labels, pending_needs, \
                 dependents, created_at, cache_key) VALUES {} RETURNING id, name",
                values_placeholders(chunk.len(), 16)
            );
            let mut q = sqlx::query(&sql);
            for (job, key) in chunk.iter().zip(&keys[offset..]) {
                let sweep = job
                    .sweep_point
                    .as_ref()
                    .map(|m| serde_json::Value::Object(m.clone()).to_string())
                    .unwrap_or_default();
                q = q
                    .bind(exp_id)
                    .bind(job.name.clone())
                    .bind(job.kind.clone())
                    .bind(job.params.to_string())
                    .bind(sweep)
                    .bind("queued")
                    .bind(job.priority)
                    .bind(job.max_attempts as i64)
                    .bind(job.requires.gpus as i64)
                    .bind(job.requires.gpu_mem_gb)
                    .bind(job.requires.backend.clone())
                    .bind(serde_json::to_string(&job.requires.labels).unwrap_or_default())
                    .bind(job.needs.len() as i64)
                    .bind(dependents.get(job.name.as_str()).copied().unwrap_or(0))
                    .bind(now)
                    .bind(key.clone());
            }
            for row in q.fetch_all(&mut *tx).await? {
                ids.insert(row.try_get("name")?, row.try_get("id")?);
            }
        }

        let mut edges = Vec::new();
        for job in jobs {
            for need in &job.needs {
                let (Some(&a), Some(&b)) = (ids.get(&job.name), ids.get(need)) else {
                    return Err(Error::Invalid(format!(
                        "job `{}` needs `{need}`, which is not in the experiment",
                        job.name
                    )));
                };
                edges.push((a, b));
            }
        }
        for chunk in edges.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO job_needs (job_id, needs_id) VALUES {}",
                values_placeholders(chunk.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for (a, b) in chunk {
                q = q.bind(*a).bind(*b);
            }
            q.execute(&mut *tx).await?;
        }
        let mut distinct: Vec<&String> = keys.iter().filter(|k| !k.is_empty()).collect();
        distinct.sort();
        distinct.dedup();
        let mut cached = Vec::new();
        for key in distinct {
            cached.extend(self.settle_cached(&mut tx, key, now).await?);
        }
        tx.commit().await?;
        let job_ids = jobs.iter().map(|j| ids[&j.name]).collect();
        Ok((exp_id, job_ids, cached))
    }

    pub async fn list_experiments(&self, name: Option<&str>) -> Result<Vec<ExperimentCounts>> {
        self.list_experiments_of(None, name).await
    }

    /// [`Store::list_experiments`], only those `owner` submitted when given.
    pub async fn list_experiments_of(
        &self,
        owner: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<ExperimentCounts>> {
        let mut sql = "SELECT id, name, created_at FROM experiments WHERE 1 = 1".to_string();
        let mut n = 0;
        if name.is_some() {
            n += 1;
            sql.push_str(&format!(" AND name = ${n}"));
        }
        if owner.is_some() {
            n += 1;
            sql.push_str(&format!(" AND owner = ${n}"));
        }
        sql.push_str(" ORDER BY id");
        let mut q = sqlx::query_as(&sql);
        if let Some(v) = name {
            q = q.bind(v.to_string());
        }
        if let Some(v) = owner {
            q = q.bind(v.to_string());
        }
        let rows: Vec<ExperimentRow> = q.fetch_all(&self.pool).await?;
        let counts = sqlx::query(
            "SELECT experiment_id, state, COUNT(*) AS n FROM jobs GROUP BY experiment_id, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_exp: HashMap<i64, HashMap<String, i64>> = HashMap::new();
        for row in counts {
            let exp: i64 = row.try_get("experiment_id")?;
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            by_exp.entry(exp).or_default().insert(state, n);
        }
        Ok(rows
            .into_iter()
            .map(|e| ExperimentCounts {
                counts: by_exp.remove(&e.id).unwrap_or_default(),
                experiment: e,
            })
            .collect())
    }

    pub async fn experiment_name(&self, id: i64) -> Result<String> {
        sqlx::query_scalar("SELECT name FROM experiments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("experiment {id} does not exist")))
    }

    pub async fn experiment_names(&self) -> Result<HashMap<i64, String>> {
        let rows = sqlx::query("SELECT id, name FROM experiments")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
            .collect()
    }
}
