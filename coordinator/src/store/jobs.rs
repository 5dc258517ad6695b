//! Jobs as users see and steer them: listing, cancel, retry, priority, and the
//! cancellation of dependents when a job they need ends without success.

use std::collections::{HashSet, VecDeque};

use sqlx::{Any, Row, Transaction};

use super::rows::{AttemptRow, JobRow, JOB_COLUMNS};
use super::Store;
use crate::clock::now_ms;
use crate::error::{Error, Result};

/// One job's state transition, published as an event after its transaction commits.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub job_id: i64,
    pub experiment_id: i64,
    pub job_name: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub worker_id: String,
    pub attempt: i64,
    /// The job's kind and times (ms), for the metrics (`crate::metrics`).
    pub kind: String,
    pub created_at: i64,
    /// When the attempt that ends (or starts) with this change started.
    pub started_at: Option<i64>,
}

/// What a user command targets.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Job(i64),
    Experiment(i64),
}

pub const TERMINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];

impl Store {
    pub async fn get_job(&self, id: i64) -> Result<JobRow> {
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {id} does not exist")))
    }

    pub async fn list_jobs(
        &self,
        experiment_id: Option<i64>,
        state: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Vec<JobRow>> {
        self.list_jobs_of(None, experiment_id, state, limit).await
    }

    /// [`Store::list_jobs`], only of the experiments `owner` submitted when given.
    pub async fn list_jobs_of(
        &self,
        owner: Option<&str>,
        experiment_id: Option<i64>,
        state: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Vec<JobRow>> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
        let mut n = 0;
        if owner.is_some() {
            n += 1;
            sql.push_str(&format!(
                " AND experiment_id IN (SELECT id FROM experiments WHERE owner = ${n})"
            ));
        }
        if experiment_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND experiment_id = ${n}"));
        }
        if state.is_some() {
            n += 1;
            sql.push_str(&format!(" AND state = ${n}"));
        }
        sql.push_str(" ORDER BY id");
        if limit.is_some() {
            n += 1;
            sql.push_str(&format!(" LIMIT ${n}"));
        }
        let mut q = sqlx::query_as(&sql);
        if let Some(o) = owner {
            q = q.bind(o.to_string());
        }
        if let Some(e) = experiment_id {
            q = q.bind(e);
        }
        if let Some(s) = state {
            q = q.bind(s.to_string());
        }
        if let Some(l) = limit {
            q = q.bind(l);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// The jobs `job_id` needs: (id, name, state), in id order.
    pub async fn needs_of(&self, job_id: i64) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query(
            "SELECT j.id, j.name, j.state FROM job_needs n JOIN jobs j ON j.id = n.needs_id \
             WHERE n.job_id = $1 ORDER BY j.id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?, r.try_get("state")?)))
            .collect()
    }

    /// Needs of many jobs at once: (job_id, needs_id) pairs.
    pub async fn needs_edges(&self, experiment_id: Option<i64>) -> Result<Vec<(i64, i64)>> {
        let rows =
            match experiment_id {
                Some(e) => sqlx::query(
                    "SELECT n.job_id, n.needs_id FROM job_needs n JOIN jobs j ON j.id = n.job_id \
                     WHERE j.experiment_id = $1",
                )
                .bind(e)
                .fetch_all(&self.pool)
                .await?,
                None => {
                    sqlx::query("SELECT job_id, needs_id FROM job_needs")
                        .fetch_all(&self.pool)
                        .await?
                }
            };
        rows.into_iter()
            .map(|r| Ok((r.try_get("job_id")?, r.try_get("needs_id")?)))
            .collect()
    }

    /// Ended attempts from the history, then the running one from the job row.
    pub async fn attempts_of(&self, job_id: i64) -> Result<Vec<AttemptRow>> {
        let mut rows: Vec<AttemptRow> = sqlx::query_as(
            "SELECT job_id, lease_token, attempt, worker_id, started_at, ended_at, outcome, reason \
             FROM job_attempts WHERE job_id = $1 ORDER BY lease_token",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        let job = self.get_job(job_id).await?;
        if job.state == "running" {
            rows.push(AttemptRow {
                job_id,
                lease_token: job.lease_token,
                attempt: job.attempt,
                worker_id: job.worker_id.unwrap_or_default(),
                started_at: job.started_at.unwrap_or(0),
                ended_at: None,
                outcome: "running".into(),
                reason: String::new(),
            });
        }
        Ok(rows)
    }

    /// Queued jobs ahead of this one (higher priority, or same priority and older).
    pub async fn queue_position(&self, job: &JobRow) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND pending_needs = 0 \
             AND (priority > $1 OR (priority = $1 AND id < $2))",
        )
        .bind(job.priority)
        .bind(job.id)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn lock_jobs(
        &self,
        tx: &mut Transaction<'static, Any>,
        target: Target,
        states: &str,
    ) -> Result<Vec<JobRow>> {
        let (col, id) = match target {
            Target::Job(id) => ("id", id),
            Target::Experiment(id) => ("experiment_id", id),
        };
        Ok(sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE {col} = $1 AND state IN ({states}) ORDER BY id {}",
            self.for_update()
        ))
        .bind(id)
        .fetch_all(&mut **tx)
        .await?)
    }

    async fn ensure_target_exists(&self, target: Target) -> Result<()> {
        match target {
            Target::Job(id) => self.get_job(id).await.map(|_| ()),
            Target::Experiment(id) => self.experiment_name(id).await.map(|_| ()),
        }
    }

    /// Cancels the queued and running jobs of the target, and the jobs that need them.
    /// A running job's worker learns it at its next heartbeat.
    pub async fn cancel(&self, target: Target, reason: &str) -> Result<Vec<StateChange>> {
        self.ensure_target_exists(target).await?;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let jobs = self
            .lock_jobs(&mut tx, target, "'queued', 'running'")
            .await?;
        if jobs.is_empty() {
            // Release the transaction first: on SQLite it holds the only connection.
            tx.rollback().await?;
            if let Target::Job(id) = target {
                let job = self.get_job(id).await?;
                return Err(Error::Conflict(format!(
                    "job {id} is already {}; nothing to cancel",
                    job.state
                )));
            }
            return Ok(Vec::new());
        }
        let mut changes = Vec::new();
        for job in &jobs {
            self.end_job(&mut tx, job, "cancelled", reason, "cancelled", None, now)
                .await?;
            changes.push(change(job, "cancelled", reason));
        }
        let roots: Vec<_> = jobs.iter().map(|j| (j.id, j.name.clone())).collect();
        changes.extend(
            self.cancel_dependents(&mut tx, &roots, "was cancelled", now)
                .await?,
        );
        tx.commit().await?;
        Ok(changes)
    }

    /// Moves a job to a terminal state and closes its open attempt (with
    /// `attempt_reason`, the job's own `reason` otherwise).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn end_job(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: &JobRow,
        state: &str,
        reason: &str,
        outcome: &str,
        attempt_reason: Option<&str>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = $1, reason = $2, finished_at = $3, lease_deadline = NULL \
             WHERE id = $4",
        )
        .bind(state)
        .bind(reason)
        .bind(now)
        .bind(job.id)
        .execute(&mut **tx)
        .await?;
        if job.state == "running" {
            self.close_attempt(tx, job, outcome, attempt_reason.unwrap_or(reason), now)
                .await?;
        }
        Ok(())
    }

    /// Writes the history row of the attempt `job` is running. A running attempt
    /// lives in the job row itself; its history row is written once, when it ends,
    /// which keeps the lease and the completion one statement shorter each.
    pub(crate) async fn close_attempt(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: &JobRow,
        outcome: &str,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, \
             ended_at, outcome, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(job.id)
        .bind(job.lease_token)
        .bind(job.attempt)
        .bind(job.worker_id.clone().unwrap_or_default())
        .bind(job.started_at.unwrap_or(now))
        .bind(now)
        .bind(outcome)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Cancels, transitively, the queued jobs that need one of `roots`, which ended
    /// as `how` (`failed`, `was cancelled`); the reason names the job needed and,
    /// further down, the root whose end started it all.
    pub(crate) async fn cancel_dependents(
        &self,
        tx: &mut Transaction<'static, Any>,
        roots: &[(i64, String)],
        how: &str,
        now: i64,
    ) -> Result<Vec<StateChange>> {
        let mut changes = Vec::new();
        let mut queue: VecDeque<(i64, String, String)> = roots
            .iter()
            .map(|(id, name)| (*id, name.clone(), how.to_string()))
            .collect();
        while let Some((id, name, how)) = queue.pop_front() {
            let dependents: Vec<JobRow> = sqlx::query_as(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued' AND id IN \
                 (SELECT job_id FROM job_needs WHERE needs_id = $1)"
            ))
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
            for dep in dependents {
                let reason = format!("needs job {id} `{name}`, which {how}");
                self.end_job(tx, &dep, "cancelled", &reason, "cancelled", None, now)
                    .await?;
                changes.push(change(&dep, "cancelled", &reason));
                // `… which was cancelled because job 3 `train` failed`.
                let root = match how.split_once(" because ") {
                    Some((_, root)) => root.to_string(),
                    None => format!("job {id} `{name}` {how}"),
                };
                queue.push_back((
                    dep.id,
                    dep.name.clone(),
                    format!("was cancelled because {root}"),
                ));
            }
        }
        Ok(changes)
    }

    /// Re-queues failed and cancelled jobs with a fresh attempt budget. For one job,
    /// the jobs cancelled because of it come back too.
    pub async fn retry(&self, target: Target) -> Result<Vec<StateChange>> {
        self.ensure_target_exists(target).await?;
        let mut tx = self.pool.begin().await?;
        let mut jobs = self
            .lock_jobs(&mut tx, target, "'failed', 'cancelled'")
            .await?;
        if jobs.is_empty() {
            tx.rollback().await?;
            if let Target::Job(id) = target {
                let job = self.get_job(id).await?;
                return Err(Error::Conflict(format!(
                    "job {id} is {}; only failed or cancelled jobs can be retried",
                    job.state
                )));
            }
            return Ok(Vec::new());
        }
        if let Target::Job(_) = target {
            // Dependents that ended because of this job.
            let mut seen: HashSet<i64> = jobs.iter().map(|j| j.id).collect();
            let mut frontier: Vec<i64> = seen.iter().copied().collect();
            while let Some(id) = frontier.pop() {
                let deps: Vec<JobRow> = sqlx::query_as(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'cancelled' AND id IN \
                     (SELECT job_id FROM job_needs WHERE needs_id = $1)"
                ))
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                for d in deps {
                    if seen.insert(d.id) {
                        frontier.push(d.id);
                        jobs.push(d);
                    }
                }
            }
        }
        let retried: HashSet<i64> = jobs.iter().map(|j| j.id).collect();
        // A need that stays failed or cancelled would block the job forever.
        for job in &jobs {
            let blockers = sqlx::query(
                "SELECT j.id, j.name, j.state FROM job_needs n JOIN jobs j ON j.id = n.needs_id \
                 WHERE n.job_id = $1 AND j.state IN ('failed', 'cancelled')",
            )
            .bind(job.id)
            .fetch_all(&mut *tx)
            .await?;
            for b in blockers {
                let id: i64 = b.try_get("id")?;
                if !retried.contains(&id) {
                    let name: String = b.try_get("name")?;
                    let state: String = b.try_get("state")?;
                    return Err(Error::Conflict(format!(
                        "job {} `{}` needs job {id} `{name}`, which is {state}: retry that one \
                         (or the whole experiment)",
                        job.id, job.name
                    )));
                }
            }
        }
        let mut changes = Vec::new();
        for job in &jobs {
            let reason = format!("retried after: {}", job.reason);
            sqlx::query(
                "UPDATE jobs SET state = 'queued', attempt = 0, reason = $1, worker_id = NULL, \
                 lease_deadline = NULL, finished_at = NULL, progress = 0, progress_message = '', \
                 pending_needs = (SELECT COUNT(*) FROM job_needs n JOIN jobs d ON d.id = n.needs_id \
                 WHERE n.job_id = $2 AND d.state <> 'succeeded') WHERE id = $2",
            )
            .bind(&reason)
            .bind(job.id)
            .execute(&mut *tx)
            .await?;
            changes.push(change(job, "queued", &reason));
        }
        // A retried job whose result another job of its cache key has by now.
        let mut keys: Vec<&str> = jobs
            .iter()
            .map(|j| j.cache_key.as_str())
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys.dedup();
        let now = now_ms();
        for key in keys {
            changes.extend(self.settle_cached(&mut tx, key, now).await?);
        }
        tx.commit().await?;
        Ok(changes)
    }

    pub async fn set_priority(&self, target: Target, priority: i64) -> Result<Vec<i64>> {
        self.ensure_target_exists(target).await?;
        let (col, id) = match target {
            Target::Job(id) => ("id", id),
            Target::Experiment(id) => ("experiment_id", id),
        };
        let ids: Vec<i64> = sqlx::query_scalar(&format!(
            "UPDATE jobs SET priority = $1 WHERE {col} = $2 AND state IN ('queued', 'running') \
             RETURNING id"
        ))
        .bind(priority)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        if ids.is_empty() {
            if let Target::Job(id) = target {
                let job = self.get_job(id).await?;
                return Err(Error::Conflict(format!(
                    "job {id} is already {}; its priority no longer matters",
                    job.state
                )));
            }
        }
        Ok(ids)
    }
}

pub(crate) fn change(job: &JobRow, to: &str, reason: &str) -> StateChange {
    StateChange {
        job_id: job.id,
        experiment_id: job.experiment_id,
        job_name: job.name.clone(),
        from: job.state.clone(),
        to: to.to_string(),
        reason: reason.to_string(),
        worker_id: job.worker_id.clone().unwrap_or_default(),
        attempt: job.attempt,
        kind: job.kind.clone(),
        created_at: job.created_at,
        started_at: job.started_at,
    }
}
