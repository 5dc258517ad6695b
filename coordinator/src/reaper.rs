//! Re-queues jobs whose lease deadline passed: their worker died, hung, or lost its
//! network. Runs in every coordinator; `SKIP LOCKED` keeps two from doubling up.
//! Also completes queued jobs whose cached result exists (`store::cached`).

use std::sync::Arc;
use std::time::Duration;

use crate::service::Coordinator;

pub async fn run(coordinator: Arc<Coordinator>) {
    let period = (coordinator.config.lease_ttl / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match coordinator.store.expire_leases().await {
            Ok(changes) => {
                for c in &changes {
                    tracing::warn!(job = c.job_id, worker = %c.worker_id, to = %c.to, "{}", c.reason);
                }
                // The rest are jobs cancelled because an expired one failed.
                let expired = changes.iter().filter(|c| c.from == "running").count();
                coordinator.metrics.lease_expired(expired);
                coordinator.announce(&changes);
            }
            Err(e) => tracing::error!("expiring leases failed: {e}"),
        }
        // Jobs whose cached result became available where it was not settled at
        // once (see `store::cached`).
        match coordinator.store.settle_all_cached().await {
            Ok(changes) => coordinator.announce(&changes),
            Err(e) => tracing::error!("settling cached jobs failed: {e}"),
        }
    }
}
