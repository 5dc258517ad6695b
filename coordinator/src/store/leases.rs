//! Leases: a worker takes a job under a deadline and a lease token (a fencing number
//! that grows on every lease of the job). Every write from a worker names its token;
//! the store refuses writes whose token is not the job's current one.

use sqlx::{Any, Transaction};

use super::cached::NOT_CACHED;
use super::jobs::{change, StateChange};
use super::rows::{format_index_list, JobRow, JOB_COLUMNS};
use super::Store;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::scheduler::{self, Candidate};

pub use crate::scheduler::Capacity;

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct LeaseGrant {
    pub job: JobRow,
    pub gpu_indexes: Vec<u32>,
}

/// What a heartbeat says about one lease the worker holds.
#[derive(Debug, Clone)]
pub struct LeaseCheck {
    pub job_id: i64,
    pub keep_running: bool,
    pub reason: String,
}

impl Store {
    /// Leases up to `max_jobs` queued jobs that fit `cap`, in priority then FIFO order.
    pub async fn lease(
        &self,
        worker_id: &str,
        cap: &Capacity,
        max_jobs: usize,
        ttl_ms: i64,
    ) -> Result<(Vec<LeaseGrant>, Vec<StateChange>)> {
        if max_jobs == 0 || (cap.free_gpus.is_empty() && cap.free_cpu_slots == 0) {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut tx = self.pool.begin().await?;
        let out = self
            .lease_in(&mut tx, worker_id, cap, max_jobs, ttl_ms)
            .await?;
        if out.0.is_empty() {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(out)
    }

    /// Leases inside the caller's transaction (see [`Store::lease`]).
    async fn lease_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        worker_id: &str,
        cap: &Capacity,
        max_jobs: usize,
        ttl_ms: i64,
    ) -> Result<(Vec<LeaseGrant>, Vec<StateChange>)> {
        if max_jobs == 0 || (cap.free_gpus.is_empty() && cap.free_cpu_slots == 0) {
            return Ok((Vec::new(), Vec::new()));
        }
        let now = now_ms();
        // Every job SQL offers fits this worker on its own (`scheduler::assign` then
        // packs them), so a worker never stalls behind a long run of jobs it cannot
        // take, whatever their priority:
        // - GPUs: a job wanting n GPUs of m GB fits when the n-th largest free GPU has
        //   m GB; a CPU job needs a slot and no GPU memory.
        // - Labels: the job's labels (a sorted JSON map, as `insert_experiment` writes
        //   them) must be a subset of the worker's; up to `EXACT_LABELS` labels the
        //   subsets are listed, beyond that `assign` filters from a longer list.
        let mut mems: Vec<f64> = cap.free_gpus.iter().map(|g| g.memory_gb).collect();
        mems.sort_by(|a, b| b.total_cmp(a));
        // `c`: the candidate, as `NOT_CACHED` names it.
        let mut sql = format!(
            "FROM jobs c WHERE state = 'queued' AND pending_needs = 0 AND {NOT_CACHED} \
             AND (req_backend = 'any' OR req_backend = $1) \
             AND ((req_gpus = 0 AND $2 > 0 AND req_gpu_mem_gb <= 0)",
        );
        let mut n = 2;
        for i in 1..=mems.len() {
            n += 1;
            sql.push_str(&format!(" OR (req_gpus = {i} AND req_gpu_mem_gb <= ${n})"));
        }
        sql.push(')');
        let label_sets = label_subsets(&cap.labels);
        let limit = match &label_sets {
            Some(sets) => {
                let list: Vec<String> =
                    (0..sets.len()).map(|i| format!("${}", n + 1 + i)).collect();
                n += sets.len();
                sql.push_str(&format!(" AND req_labels IN ({})", list.join(", ")));
                max_jobs * 2 + 2
            }
            None => max_jobs * 4 + 60,
        };
        sql.push_str(&format!(
            " ORDER BY priority DESC, id LIMIT ${} {}",
            n + 1,
            self.skip_locked()
        ));
        // One CPU slot and an exact label filter: the first job SQL finds is the one
        // `assign` would pick, so pick and lease it in a single statement.
        if max_jobs == 1 && cap.free_gpus.is_empty() && label_sets.is_some() {
            let update = format!(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, \
                 lease_token = lease_token + 1, worker_id = ${}, lease_deadline = ${}, \
                 started_at = ${}, gpu_indexes = '', progress = 0, progress_message = '' \
                 WHERE id = (SELECT id {sql}) RETURNING {JOB_COLUMNS}",
                n + 2,
                n + 3,
                n + 4
            );
            let mut q = sqlx::query_as(&update)
                .bind(cap.backend.clone())
                .bind(cap.free_cpu_slots as i64);
            for set in label_sets.iter().flatten() {
                q = q.bind(set.clone());
            }
            let leased: Option<JobRow> = q
                .bind(1i64)
                .bind(worker_id)
                .bind(now + ttl_ms)
                .bind(now)
                .fetch_optional(&mut **tx)
                .await?;
            let Some(job) = leased else {
                return Ok((Vec::new(), Vec::new()));
            };
            return Ok(Self::granted(job, Vec::new()));
        }
        let select = format!("SELECT {JOB_COLUMNS} {sql}");
        let mut q = sqlx::query_as(&select)
            .bind(cap.backend.clone())
            .bind(cap.free_cpu_slots as i64);
        for m in &mems {
            q = q.bind(*m);
        }
        for set in label_sets.iter().flatten() {
            q = q.bind(set.clone());
        }
        let candidates: Vec<JobRow> = q.bind(limit as i64).fetch_all(&mut **tx).await?;
        if candidates.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let offered: Vec<Candidate> = candidates
            .iter()
            .map(|j| Candidate {
                id: j.id,
                requires: j.requirements(),
            })
            .collect();
        let picks = scheduler::assign(&offered, cap, max_jobs);
        let mut grants = Vec::with_capacity(picks.len());
        let mut changes = Vec::with_capacity(picks.len());
        for (id, gpus) in picks {
            let job: JobRow = sqlx::query_as(&format!(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, \
                 lease_token = lease_token + 1, worker_id = $1, lease_deadline = $2, \
                 started_at = $3, gpu_indexes = $4, progress = 0, progress_message = '' \
                 WHERE id = $5 RETURNING {JOB_COLUMNS}"
            ))
            .bind(worker_id)
            .bind(now + ttl_ms)
            .bind(now)
            .bind(format_index_list(&gpus))
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
            let (g, c) = Self::granted(job, gpus);
            grants.extend(g);
            changes.extend(c);
        }
        Ok((grants, changes))
    }

    /// A job just leased, as a grant and an event. (Its attempt lives in the job row
    /// until it ends; see `close_attempt`.)
    fn granted(job: JobRow, gpu_indexes: Vec<u32>) -> (Vec<LeaseGrant>, Vec<StateChange>) {
        let mut c = change(&job, "running", "");
        c.from = "queued".into();
        (vec![LeaseGrant { job, gpu_indexes }], vec![c])
    }

    /// Why a write with `token` for `job_id` is refused, or the job row if it holds.
    fn stale_reason(job: &JobRow, token: i64) -> Option<String> {
        if job.state != "running" {
            let why = if job.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", job.reason)
            };
            return Some(format!(
                "job {} is {}{why}; lease token {token} is no longer valid",
                job.id, job.state
            ));
        }
        if job.lease_token != token {
            return Some(format!(
                "lease token {token} of job {} is stale: the job was leased again (token {})",
                job.id, job.lease_token
            ));
        }
        None
    }

    /// Locks the job row and checks the token; the transaction keeps the lock.
    async fn check_lease_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        job_id: i64,
        token: i64,
    ) -> Result<JobRow> {
        let job: JobRow = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 {}",
            self.for_update()
        ))
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("job {job_id} does not exist")))?;
        match Self::stale_reason(&job, token) {
            Some(why) => Err(Error::StaleLease(why)),
            None => Ok(job),
        }
    }

    /// Extends the leases a worker still holds and tells it which to stop.
    pub async fn heartbeat(
        &self,
        worker_id: &str,
        held: &[(i64, i64)],
        ttl_ms: i64,
    ) -> Result<Vec<LeaseCheck>> {
        let now = now_ms();
        let known = sqlx::query("UPDATE workers SET last_seen = $1, running = $2 WHERE id = $3")
            .bind(now)
            .bind(serde_json::to_string(&held.iter().map(|h| h.0).collect::<Vec<_>>()).unwrap())
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        if known.rows_affected() == 0 {
            return Err(Error::NotFound(format!(
                "worker {worker_id} is not registered"
            )));
        }
        let mut out = Vec::with_capacity(held.len());
        for &(job_id, token) in held {
            let extended = sqlx::query(
                "UPDATE jobs SET lease_deadline = $1 WHERE id = $2 AND lease_token = $3 \
                 AND state = 'running' AND worker_id = $4",
            )
            .bind(now + ttl_ms)
            .bind(job_id)
            .bind(token)
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
            if extended.rows_affected() == 1 {
                out.push(LeaseCheck {
                    job_id,
                    keep_running: true,
                    reason: String::new(),
                });
                continue;
            }
            let reason = match self.get_job(job_id).await {
                Ok(job) => Self::stale_reason(&job, token)
                    .unwrap_or_else(|| format!("job {job_id} is leased to another worker")),
                Err(e) => e.to_string(),
            };
            out.push(LeaseCheck {
                job_id,
                keep_running: false,
                reason,
            });
        }
        Ok(out)
    }

    pub async fn report_progress(
        &self,
        job_id: i64,
        token: i64,
        fraction: f64,
        message: &str,
    ) -> Result<JobRow> {
        let updated: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE jobs SET progress = $1, progress_message = $2 \
             WHERE id = $3 AND lease_token = $4 AND state = 'running' RETURNING {JOB_COLUMNS}"
        ))
        .bind(fraction.clamp(0.0, 1.0))
        .bind(message)
        .bind(job_id)
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        match updated {
            Some(job) => Ok(job),
            None => Err(self.refusal(job_id, token).await),
        }
    }

    /// Why a write guarded by `lease_token = token` matched no row, for the worker.
    async fn refusal(&self, job_id: i64, token: i64) -> Error {
        match self.check_lease(job_id, token).await {
            Err(e) => e,
            // The row changed between the write and this look.
            Ok(_) => Error::StaleLease(format!("job {job_id} changed during the write; retry")),
        }
    }

    /// Stores log lines of the current attempt; refused for a stale token.
    pub async fn append_logs(
        &self,
        job_id: i64,
        token: i64,
        lines: &[String],
    ) -> Result<(JobRow, Vec<super::LogRow>)> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let job = match self.check_lease_in(&mut tx, job_id, token).await {
            Ok(job) => job,
            Err(e) => return Err(rollback(tx, e).await),
        };
        let mut rows = Vec::with_capacity(lines.len());
        for line in lines {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO job_logs (job_id, attempt, at, line) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(job_id)
            .bind(job.attempt)
            .bind(now)
            .bind(line)
            .fetch_one(&mut *tx)
            .await?;
            rows.push(super::LogRow {
                id,
                job_id,
                attempt: job.attempt,
                at: now,
                line: line.clone(),
            });
        }
        tx.commit().await?;
        Ok((job, rows))
    }

    /// Ends a job in success and unblocks the jobs that need it.
    pub async fn complete(&self, job_id: i64, token: i64, result: &str) -> Result<StateChange> {
        Ok(self
            .complete_and_lease(job_id, token, result, None)
            .await?
            .0)
    }

    /// Ends a job in success and, in the same transaction, leases the worker its next
    /// jobs for the slot the finished job frees (`next`: worker, capacity, max jobs,
    /// TTL). One round trip and one commit per job instead of two.
    pub async fn complete_and_lease(
        &self,
        job_id: i64,
        token: i64,
        result: &str,
        next: Option<(&str, &Capacity, usize, i64)>,
    ) -> Result<(StateChange, Vec<LeaseGrant>, Vec<StateChange>)> {
        if let Some((worker, cap, 1, ttl_ms)) = next {
            if self.dialect == super::Dialect::Postgres && cap.free_gpus.is_empty() {
                if let Some(sets) = label_subsets(&cap.labels) {
                    return self
                        .complete_and_lease_one_statement(
                            job_id, token, result, worker, cap, &sets, ttl_ms,
                        )
                        .await;
                }
            }
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // The token check is the UPDATE's own condition: one statement, and the
        // row stays locked to the end of the transaction.
        let ended: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE jobs SET state = 'succeeded', result = $1, progress = 1, finished_at = $2, \
             lease_deadline = NULL, reason = '' \
             WHERE id = $3 AND lease_token = $4 AND state = 'running' RETURNING {JOB_COLUMNS}"
        ))
        .bind(result)
        .bind(now)
        .bind(job_id)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut job) = ended else {
            tx.rollback().await?;
            return Err(self.refusal(job_id, token).await);
        };
        job.state = "running".into();
        self.close_attempt(&mut tx, &job, "succeeded", "", now)
            .await?;
        if job.dependents > 0 {
            sqlx::query(
                "UPDATE jobs SET pending_needs = pending_needs - 1 WHERE state = 'queued' \
                 AND id IN (SELECT job_id FROM job_needs WHERE needs_id = $1)",
            )
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        }
        // Jobs with the same cache key reuse this one's result, before `lease_in`
        // could hand them out.
        let settled = self.settle_cached(&mut tx, &job.cache_key, now).await?;
        // A job others need leases nothing along: the jobs it unblocks may come
        // first in the queue, and the one-statement path cannot see them yet.
        let next = next.filter(|_| job.dependents == 0);
        let (grants, leased) = match next {
            Some((worker, cap, max_jobs, ttl_ms)) => {
                self.lease_in(&mut tx, worker, cap, max_jobs, ttl_ms)
                    .await?
            }
            None => (Vec::new(), Vec::new()),
        };
        tx.commit().await?;
        let mut changes = settled;
        changes.extend(leased);
        Ok((change(&job, "succeeded", ""), grants, changes))
    }

    /// PostgreSQL, one CPU slot: the completion, its history row, the unblocking of
    /// dependents and the next lease as one statement (data-modifying CTEs), so one
    /// round trip and one commit per job. Same effects as the general path: all CTEs
    /// see one snapshot, so a job with dependents leases nothing along (as there).
    #[allow(clippy::too_many_arguments)]
    async fn complete_and_lease_one_statement(
        &self,
        job_id: i64,
        token: i64,
        result: &str,
        worker: &str,
        cap: &Capacity,
        label_sets: &[String],
        ttl_ms: i64,
    ) -> Result<(StateChange, Vec<LeaseGrant>, Vec<StateChange>)> {
        use sqlx::{FromRow, Row};
        let now = now_ms();
        let labels: Vec<String> = (0..label_sets.len())
            .map(|i| format!("${}", 9 + i))
            .collect();
        let sql = format!(
            "WITH done AS ( \
               UPDATE jobs SET state = 'succeeded', result = $1, progress = 1, finished_at = $2, \
               lease_deadline = NULL, reason = '' \
               WHERE id = $3 AND lease_token = $4 AND state = 'running' RETURNING *), \
             hist AS ( \
               INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, \
               ended_at, outcome, reason) \
               SELECT id, lease_token, attempt, COALESCE(worker_id, ''), COALESCE(started_at, $2), \
               $2, 'succeeded', '' FROM done), \
             unblock AS ( \
               UPDATE jobs SET pending_needs = pending_needs - 1 WHERE state = 'queued' AND id IN \
               (SELECT n.job_id FROM job_needs n JOIN done d ON n.needs_id = d.id \
                WHERE d.dependents > 0)), \
             next AS ( \
               UPDATE jobs SET state = 'running', attempt = attempt + 1, \
               lease_token = lease_token + 1, worker_id = $5, lease_deadline = $6, \
               started_at = $2, gpu_indexes = '', progress = 0, progress_message = '' \
               WHERE EXISTS (SELECT 1 FROM done WHERE dependents = 0) AND id = (SELECT id FROM jobs c \
                 WHERE state = 'queued' AND pending_needs = 0 AND {NOT_CACHED} \
                 AND (req_backend = 'any' OR req_backend = $7) \
                 AND req_gpus = 0 AND $8 > 0 AND req_gpu_mem_gb <= 0 \
                 AND req_labels IN ({}) \
                 ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
               RETURNING *) \
             SELECT 'done' AS which, {JOB_COLUMNS} FROM done \
             UNION ALL SELECT 'next' AS which, {JOB_COLUMNS} FROM next",
            labels.join(", ")
        );
        let mut q = sqlx::query(&sql)
            .bind(result)
            .bind(now)
            .bind(job_id)
            .bind(token)
            .bind(worker)
            .bind(now + ttl_ms)
            .bind(cap.backend.clone())
            .bind(cap.free_cpu_slots as i64);
        for set in label_sets {
            q = q.bind(set.clone());
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut done = None;
        let mut next = None;
        for row in &rows {
            let which: String = row.try_get("which")?;
            let job = JobRow::from_row(row)?;
            if which == "done" {
                done = Some(job);
            } else {
                next = Some(job);
            }
        }
        let Some(mut job) = done else {
            return Err(self.refusal(job_id, token).await);
        };
        job.state = "running".into();
        let (grants, mut leased) = match next {
            Some(n) => Self::granted(n, Vec::new()),
            None => (Vec::new(), Vec::new()),
        };
        // The jobs waiting for this one's result: `NOT_CACHED` keeps them from
        // being leased until then.
        if !job.cache_key.is_empty() {
            leased.extend(self.settle_cached_keys(&[job.cache_key.clone()]).await?);
        }
        Ok((change(&job, "succeeded", ""), grants, leased))
    }

    /// Ends an attempt in failure: re-queued while attempts remain and `retryable`,
    /// failed otherwise (and the jobs that need it cancelled).
    pub async fn fail(
        &self,
        job_id: i64,
        token: i64,
        error: &str,
        retryable: bool,
    ) -> Result<Vec<StateChange>> {
        let mut tx = self.pool.begin().await?;
        let job = match self.check_lease_in(&mut tx, job_id, token).await {
            Ok(job) => job,
            Err(e) => return Err(rollback(tx, e).await),
        };
        let changes = self
            .end_attempt(&mut tx, &job, error, retryable, "failed")
            .await?;
        tx.commit().await?;
        Ok(changes)
    }

    async fn end_attempt(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: &JobRow,
        error: &str,
        retryable: bool,
        outcome: &str,
    ) -> Result<Vec<StateChange>> {
        let now = now_ms();
        let worker = job.worker_id.clone().unwrap_or_default();
        let attempt_note = format!("attempt {} of {}", job.attempt, job.max_attempts);
        if retryable && job.attempt < job.max_attempts {
            let reason = format!("{error} (worker {worker}, {attempt_note}); re-queued");
            self.close_attempt(tx, job, outcome, error, now).await?;
            sqlx::query(
                "UPDATE jobs SET state = 'queued', reason = $1, worker_id = NULL, \
                 lease_deadline = NULL, gpu_indexes = '' WHERE id = $2",
            )
            .bind(&reason)
            .bind(job.id)
            .execute(&mut **tx)
            .await?;
            return Ok(vec![change(job, "queued", &reason)]);
        }
        let reason = if retryable {
            format!("{error} (worker {worker}, {attempt_note}; no attempts left)")
        } else {
            format!("{error} (worker {worker}, {attempt_note}; not retryable)")
        };
        // The attempt keeps the short error; the job the long reason.
        self.end_job(tx, job, "failed", &reason, outcome, Some(error), now)
            .await?;
        let mut changes = vec![change(job, "failed", &reason)];
        changes.extend(
            self.cancel_dependents(tx, &[(job.id, job.name.clone())], "failed", now)
                .await?,
        );
        Ok(changes)
    }

    /// Re-queues (or fails, when out of attempts) every running job whose lease
    /// deadline has passed.
    pub async fn expire_leases(&self) -> Result<Vec<StateChange>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mut expired: Vec<JobRow> = sqlx::query_as(&format!(
            // No ORDER BY: it would lead SQLite's planner away from `jobs_running`.
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND lease_deadline < $1 {}",
            self.skip_locked()
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        expired.sort_by_key(|j| j.id);
        let mut changes = Vec::new();
        for job in &expired {
            let silent_ms = now - job.lease_deadline.unwrap_or(now);
            let error = format!(
                "lease expired: worker {} sent no heartbeat before the deadline ({} ms late)",
                job.worker_id.clone().unwrap_or_default(),
                silent_ms
            );
            changes.extend(self.end_attempt(&mut tx, job, &error, true, "lost").await?);
        }
        tx.commit().await?;
        Ok(changes)
    }

    /// After a coordinator restart, gives running jobs a full lease so that their
    /// workers have time to reconnect before anything is re-queued.
    pub async fn extend_running_leases(&self, ttl_ms: i64) -> Result<u64> {
        let deadline = now_ms() + ttl_ms;
        Ok(sqlx::query(
            "UPDATE jobs SET lease_deadline = $1 WHERE state = 'running' AND lease_deadline < $1",
        )
        .bind(deadline)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Checks a token outside any other write (used before streaming an upload).
    pub async fn check_lease(&self, job_id: i64, token: i64) -> Result<JobRow> {
        let job = self.get_job(job_id).await?;
        match Self::stale_reason(&job, token) {
            Some(why) => Err(Error::StaleLease(why)),
            None => Ok(job),
        }
    }

    /// Records an uploaded blob as an artifact of the job, if the lease still holds.
    pub async fn insert_artifact(
        &self,
        job_id: i64,
        token: i64,
        name: &str,
        sha256: &str,
        size: i64,
    ) -> Result<(JobRow, super::ArtifactRow)> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let job = match self.check_lease_in(&mut tx, job_id, token).await {
            Ok(job) => job,
            Err(e) => return Err(rollback(tx, e).await),
        };
        let row: super::ArtifactRow = sqlx::query_as(
            "INSERT INTO artifacts (job_id, attempt, name, sha256, size, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (job_id, name) DO UPDATE SET attempt = excluded.attempt, \
             sha256 = excluded.sha256, size = excluded.size, created_at = excluded.created_at \
             RETURNING id, job_id, attempt, name, sha256, size, created_at",
        )
        .bind(job_id)
        .bind(job.attempt)
        .bind(name)
        .bind(sha256)
        .bind(size)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((job, row))
    }
}

/// Ends a transaction that failed with `e`, and returns `e`. Dropped instead, a
/// transaction's rollback waits for the pool to get to its connection, and until then
/// it keeps its row locks: PostgreSQL's `SKIP LOCKED` in `lease` and `expire_leases`
/// would pass over a job just because a stale worker's write to it was refused.
async fn rollback(tx: Transaction<'static, Any>, e: Error) -> Error {
    if let Err(r) = tx.rollback().await {
        tracing::warn!("rollback after `{e}`: {r}");
    }
    e
}

/// Workers with more labels than this are matched by `scheduler::assign` alone.
const EXACT_LABELS: usize = 6;

/// The `req_labels` texts of every label set `labels` satisfies (all its subsets,
/// `{}` included), or `None` when there are too many to list.
fn label_subsets(labels: &std::collections::BTreeMap<String, String>) -> Option<Vec<String>> {
    if labels.len() > EXACT_LABELS {
        return None;
    }
    let pairs: Vec<(&String, &String)> = labels.iter().collect();
    Some(
        (0..1u32 << pairs.len())
            .map(|mask| {
                let subset: std::collections::BTreeMap<&String, &String> = pairs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, &(k, v))| (k, v))
                    .collect();
                serde_json::to_string(&subset).unwrap_or_default()
            })
            .collect(),
    )
}
