//! A token secret to its caller. A live token is remembered for [`FRESH`], so a
//! revocation made on another coordinator of the database counts within that
//! time; one made here counts at once ([`Tokens::forget`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{secret, Caller, Role};
use crate::clock::now_ms;
use crate::error::Result;
use crate::store::Store;

/// How long a looked-up token is trusted without reading the store again.
pub const FRESH: Duration = Duration::from_secs(2);
/// `last_used_at` is written at most this often per token (ms).
const TOUCH_EVERY_MS: i64 = 60_000;

pub struct Tokens {
    store: Store,
    /// By the secret's hash; only live tokens.
    cache: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl Tokens {
    pub fn new(store: Store) -> Tokens {
        Tokens {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller a secret stands for; `None` when no live token has it.
    pub async fn resolve(&self, secret: &str) -> Result<Option<Caller>> {
        let hash = secret::hash(secret);
        if let Some((caller, at)) = self.cache.lock().expect("token cache").get(&hash) {
            if at.elapsed() < FRESH {
                return Ok(Some(caller.clone()));
            }
        }
        let row = self.store.token_by_hash(&hash).await?;
        let Some(row) = row.filter(|r| r.revoked_at.is_none()) else {
            self.cache.lock().expect("token cache").remove(&hash);
            return Ok(None);
        };
        let Some(role) = Role::parse(&row.role) else {
            tracing::error!(token = row.id, role = %row.role, "token has an unknown role; refused");
            return Ok(None);
        };
        let now = now_ms();
        if row.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY_MS) {
            self.store.touch_token(row.id, now).await?;
        }
        let caller = Caller {
            token_id: row.id,
            name: row.name,
            role,
        };
        self.cache
            .lock()
            .expect("token cache")
            .insert(hash, (caller.clone(), Instant::now()));
        Ok(Some(caller))
    }

    /// Drops token `id` from the cache: it was revoked here.
    pub fn forget(&self, id: i64) {
        self.cache
            .lock()
            .expect("token cache")
            .retain(|_, (c, _)| c.token_id != id);
    }
}
