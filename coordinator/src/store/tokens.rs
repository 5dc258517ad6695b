//! API tokens: kept as the sha256 of the secret, with a name, a role and their
//! history (created, last used, revoked).

use atelier_proto::v1;

use super::{Dialect, Store};
use crate::clock::now_ms;
use crate::error::{Error, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    /// sha256 hex of the secret.
    pub hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TokenRow {
    pub fn to_proto(&self) -> v1::TokenInfo {
        v1::TokenInfo {
            id: self.id,
            name: self.name.clone(),
            role: self.role.clone(),
            created_at_ms: self.created_at,
            last_used_at_ms: self.last_used_at.unwrap_or(0),
            revoked_at_ms: self.revoked_at.unwrap_or(0),
        }
    }
}

const COLUMNS: &str = "id, name, role, hash, created_at, last_used_at, revoked_at";

/// Which token to revoke.
#[derive(Debug, Clone)]
pub enum TokenRef {
    Id(i64),
    /// The live token of that name.
    Name(String),
}

impl Store {
    /// Stores a token's hash under `name`. A name has at most one live token:
    /// `Error::Conflict` when it has one.
    pub async fn create_token(&self, name: &str, role: &str, hash: &str) -> Result<TokenRow> {
        let mut tx = self.pool.begin().await?;
        let row = self.insert_token(&mut tx, name, role, hash).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn insert_token(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        name: &str,
        role: &str,
        hash: &str,
    ) -> Result<TokenRow> {
        let live: Option<i64> =
            sqlx::query_scalar("SELECT id FROM tokens WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(id) = live {
            return Err(Error::Conflict(format!(
                "token name `{name}` is taken by live token {id}: revoke it first or pick another name"
            )));
        }
        Ok(sqlx::query_as(&format!(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {COLUMNS}"
        ))
        .bind(name)
        .bind(role)
        .bind(hash)
        .bind(now_ms())
        .fetch_one(&mut **tx)
        .await?)
    }

    /// Every token, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM tokens ORDER BY id"))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The token whose secret hashes to `hash`, revoked or not.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM tokens WHERE hash = $1"))
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records a use of token `id` at `at`.
    pub async fn touch_token(&self, id: i64, at: i64) -> Result<()> {
        sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes a live token; `Error::NotFound` when there is none by that id or name,
    /// `Error::Conflict` when the id names a token revoked already.
    pub async fn revoke_token(&self, which: &TokenRef) -> Result<TokenRow> {
        let mut tx = self.pool.begin().await?;
        let found: Option<TokenRow> = match which {
            TokenRef::Id(id) => {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM tokens WHERE id = $1 {}",
                    self.for_update()
                ))
                .bind(*id)
                .fetch_optional(&mut *tx)
                .await?
            }
            TokenRef::Name(name) => {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM tokens WHERE name = $1 AND revoked_at IS NULL {}",
                    self.for_update()
                ))
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        let Some(row) = found else {
            tx.rollback().await?;
            return Err(Error::NotFound(match which {
                TokenRef::Id(id) => format!("token {id} does not exist"),
                TokenRef::Name(n) => format!("no live token is named `{n}`"),
            }));
        };
        if row.revoked_at.is_some() {
            tx.rollback().await?;
            return Err(Error::Conflict(format!(
                "token {} `{}` is revoked already",
                row.id, row.name
            )));
        }
        let row: TokenRow = sqlx::query_as(&format!(
            "UPDATE tokens SET revoked_at = $1 WHERE id = $2 RETURNING {COLUMNS}"
        ))
        .bind(now_ms())
        .bind(row.id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Stores `hash` as an admin token named `name` unless a live admin token exists;
    /// `Ok(None)` then. Coordinators starting together on one database decide here:
    /// on PostgreSQL under a transaction-scoped advisory lock, on SQLite through its
    /// single writer, so exactly one of them creates the token.
    pub async fn bootstrap_admin(&self, name: &str, hash: &str) -> Result<Option<TokenRow>> {
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            // Any fixed number: the lock only orders bootstraps among themselves.
            sqlx::query("SELECT pg_advisory_xact_lock(7878001)")
                .execute(&mut *tx)
                .await?;
        }
        let admins: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tokens WHERE role = 'admin' AND revoked_at IS NULL",
        )
        .fetch_one(&mut *tx)
        .await?;
        if admins > 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let row = self.insert_token(&mut tx, name, "admin", hash).await?;
        tx.commit().await?;
        Ok(Some(row))
    }
}
