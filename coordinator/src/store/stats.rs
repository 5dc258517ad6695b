//! Counts the metrics endpoint reads at each scrape (`crate::metrics`).

use sqlx::Row;

use super::Store;
use crate::error::Result;

impl Store {
    /// How many jobs are in each (state, kind).
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT state, kind, COUNT(*) AS n FROM jobs GROUP BY state, kind")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("kind")?, r.try_get("n")?)))
            .collect()
    }
}
