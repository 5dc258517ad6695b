//! Workers as they registered, and when they were last heard from.

use super::rows::{GpuInfo, WorkerRow};
use super::Store;
use crate::clock::now_ms;
use crate::error::Result;

pub struct Registration<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub backend: &'a str,
    pub gpus: &'a [GpuInfo],
    pub labels: &'a std::collections::HashMap<String, String>,
    pub cpu_slots: u32,
    pub version: &'a str,
}

impl Store {
    /// Registers a worker, or refreshes it when it reconnects with the same id.
    pub async fn register_worker(&self, r: &Registration<'_>) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO workers (id, name, backend, gpus, labels, cpu_slots, version, \
             registered_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, backend = excluded.backend, \
             gpus = excluded.gpus, labels = excluded.labels, cpu_slots = excluded.cpu_slots, \
             version = excluded.version, last_seen = excluded.last_seen",
        )
        .bind(r.id)
        .bind(r.name)
        .bind(r.backend)
        .bind(serde_json::to_string(r.gpus).unwrap())
        .bind(serde_json::to_string(r.labels).unwrap())
        .bind(r.cpu_slots as i64)
        .bind(r.version)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_worker(&self, id: &str) -> Result<Option<WorkerRow>> {
        Ok(sqlx::query_as(
            "SELECT id, name, backend, gpus, labels, cpu_slots, version, registered_at, \
             last_seen, running FROM workers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn touch_worker(&self, id: &str) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE workers SET last_seen = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// Workers heard from in the last `within_ms` (all of them when `None`).
    pub async fn list_workers(&self, within_ms: Option<i64>) -> Result<Vec<WorkerRow>> {
        let since = within_ms.map(|w| now_ms() - w).unwrap_or(i64::MIN);
        Ok(sqlx::query_as(
            "SELECT id, name, backend, gpus, labels, cpu_slots, version, registered_at, \
             last_seen, running FROM workers WHERE last_seen >= $1 ORDER BY name, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }
}
