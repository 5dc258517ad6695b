//! Job events (state changes, progress, log lines, stored artifacts). Published
//! through Redis pub/sub when a `redis_url` is configured, so that every coordinator
//! and any other subscriber sees them; in-process otherwise.

use std::sync::Arc;
use std::time::Duration;

use atelier_proto::v1::{self, event::Kind};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};

use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::store::{LogRow, StateChange};

/// The default Redis channel; payloads are `atelier.v1.Event` as JSON.
pub const REDIS_CHANNEL: &str = "atelier:events";

const LOCAL_CAPACITY: usize = 16_384;

pub trait EventBus: Send + Sync {
    fn publish(&self, event: v1::Event);
    fn subscribe(&self) -> broadcast::Receiver<v1::Event>;
}

/// Events delivered within this process only.
pub struct LocalBus {
    tx: broadcast::Sender<v1::Event>,
}

impl LocalBus {
    pub fn new() -> Arc<LocalBus> {
        Arc::new(LocalBus {
            tx: broadcast::channel(LOCAL_CAPACITY).0,
        })
    }
}

impl EventBus for LocalBus {
    fn publish(&self, event: v1::Event) {
        let _ = self.tx.send(event);
    }
    fn subscribe(&self) -> broadcast::Receiver<v1::Event> {
        self.tx.subscribe()
    }
}

/// Events published to Redis in order by one task, and read back from Redis by
/// another that feeds this process's subscribers.
pub struct RedisBus {
    outgoing: mpsc::UnboundedSender<v1::Event>,
    incoming: broadcast::Sender<v1::Event>,
}

impl RedisBus {
    pub async fn connect(url: &str, channel: &str) -> Result<Arc<RedisBus>> {
        let channel = channel.to_string();
        let sub_channel = channel.clone();
        let client = redis::Client::open(url)
            .map_err(|e| Error::Events(format!("redis_url `{url}`: {e}")))?;
        let manager = redis::aio::ConnectionManager::new(client.clone())
            .await
            .map_err(|e| Error::Events(format!("cannot connect to Redis at `{url}`: {e}")))?;
        let (outgoing, mut rx) = mpsc::unbounded_channel::<v1::Event>();
        let incoming = broadcast::channel(LOCAL_CAPACITY).0;
        tokio::spawn(async move {
            let mut conn = manager;
            while let Some(ev) = rx.recv().await {
                let payload = serde_json::to_string(&ev).unwrap_or_default();
                let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(payload)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!("publishing an event to Redis failed: {e}");
                }
            }
        });
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let feed = incoming.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if let Err(e) = pubsub.subscribe(&sub_channel).await {
                            tracing::warn!("subscribing to Redis failed: {e}");
                        } else {
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                let payload: String = msg.get_payload().unwrap_or_default();
                                match serde_json::from_str::<v1::Event>(&payload) {
                                    Ok(ev) => {
                                        let _ = feed.send(ev);
                                    }
                                    Err(e) => tracing::warn!("unreadable event from Redis: {e}"),
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!("Redis subscription lost: {e}; reconnecting"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        // Subscribed before any event is published, so none is missed at start.
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        Ok(Arc::new(RedisBus { outgoing, incoming }))
    }
}

impl EventBus for RedisBus {
    fn publish(&self, event: v1::Event) {
        let _ = self.outgoing.send(event);
    }
    fn subscribe(&self) -> broadcast::Receiver<v1::Event> {
        self.incoming.subscribe()
    }
}

pub fn state_event(c: &StateChange) -> v1::Event {
    v1::Event {
        job_id: c.job_id,
        experiment_id: c.experiment_id,
        at_ms: now_ms(),
        kind: Some(Kind::State(v1::StateChanged {
            job_name: c.job_name.clone(),
            from: c.from.clone(),
            to: c.to.clone(),
            reason: c.reason.clone(),
            worker_id: c.worker_id.clone(),
            attempt: c.attempt as u32,
        })),
    }
}

pub fn progress_event(
    job_id: i64,
    experiment_id: i64,
    fraction: f64,
    message: &str,
    metrics_json: &str,
) -> v1::Event {
    v1::Event {
        job_id,
        experiment_id,
        at_ms: now_ms(),
        kind: Some(Kind::Progress(v1::ProgressChanged {
            fraction,
            message: message.to_string(),
            metrics_json: metrics_json.to_string(),
        })),
    }
}

pub fn log_event(experiment_id: i64, row: &LogRow) -> v1::Event {
    v1::Event {
        job_id: row.job_id,
        experiment_id,
        at_ms: row.at,
        kind: Some(Kind::Log(row.to_proto())),
    }
}
