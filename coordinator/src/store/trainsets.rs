//! Pushed trainsets: names for content in the artifact store (`atelier trainset
//! push`), and their resolution when an experiment is submitted.

use atelier_proto::trainset_ref::TrainsetRef;

use super::rows::TrainsetRow;
use super::Store;
use crate::clock::now_ms;
use crate::error::{Error, Result};

const COLUMNS: &str = "name, sha256, size, files, pushed_at";

impl Store {
    /// Records `name` for the stored blob `sha256`; the name now means this content.
    /// The flag says whether the name had this content already.
    pub async fn record_trainset(
        &self,
        name: &str,
        sha256: &str,
        size: i64,
        files: i64,
    ) -> Result<(TrainsetRow, bool)> {
        let mut tx = self.pool.begin().await?;
        let known: Option<i64> =
            sqlx::query_scalar("SELECT size FROM trainsets WHERE name = $1 AND sha256 = $2")
                .bind(name)
                .bind(sha256)
                .fetch_optional(&mut *tx)
                .await?;
        // Strictly later than any push of the name, so "the last push" is one row
        // even within a millisecond.
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(pushed_at) FROM trainsets WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        let at = now_ms().max(last.map_or(0, |l| l + 1));
        let row: TrainsetRow = sqlx::query_as(&format!(
            "INSERT INTO trainsets ({COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name, sha256) DO UPDATE SET pushed_at = excluded.pushed_at \
             RETURNING {COLUMNS}"
        ))
        .bind(name)
        .bind(sha256)
        .bind(size)
        .bind(files)
        .bind(at)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((row, known.is_some()))
    }

    /// The last push of content `sha256` under any name.
    pub async fn trainset_by_sha(&self, sha256: &str) -> Result<Option<TrainsetRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM trainsets WHERE sha256 = $1 ORDER BY pushed_at DESC LIMIT 1"
        ))
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The content a reference names now: the last push of the name (whose sha256
    /// starts with the prefix, when one is given), or the content by its sha256.
    /// `Error::Invalid` says what is unknown or ambiguous.
    pub async fn resolve_trainset(&self, r: &TrainsetRef) -> Result<TrainsetRow> {
        match r {
            TrainsetRef::Sha256(sha) => self.trainset_by_sha(sha).await?.ok_or_else(|| {
                Error::Invalid(format!(
                    "no trainset with sha256 {sha} was pushed (`atelier trainset push`)"
                ))
            }),
            TrainsetRef::Pushed { name, prefix } => {
                let rows: Vec<TrainsetRow> = sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM trainsets WHERE name = $1 AND sha256 LIKE $2 \
                     ORDER BY pushed_at DESC"
                ))
                .bind(name)
                .bind(format!("{}%", prefix.as_deref().unwrap_or("")))
                .fetch_all(&self.pool)
                .await?;
                match (prefix, rows.len()) {
                    (_, 0) => Err(Error::Invalid(match prefix {
                        None => format!(
                            "no trainset was pushed as `{name}` (push it with \
                             `atelier trainset push DIR --name {name}`)"
                        ),
                        Some(p) => {
                            format!("no content pushed as `{name}` has a sha256 starting with {p}")
                        }
                    })),
                    (Some(p), n) if n > 1 => Err(Error::Invalid(format!(
                        "{n} contents pushed as `{name}` have a sha256 starting with {p}: \
                         give more digits"
                    ))),
                    _ => Ok(rows.into_iter().next().expect("one row")),
                }
            }
        }
    }
}
