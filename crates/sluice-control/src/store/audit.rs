//! The audit log: every mutating API call, who made it, from where, and its result.

use serde::Serialize;
use sqlx::Row;

use super::Store;
use crate::error::ApiResult;

/// One audited call.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// When, ms since the epoch.
    pub at: i64,
    /// The authenticated user, or `anonymous`.
    pub actor: String,
    /// The client's address, when known.
    pub remote: String,
    /// HTTP method.
    pub method: String,
    /// Request path (never the query or body, which may hold secrets).
    pub path: String,
    /// The response status.
    pub status: i64,
}

impl Store {
    /// Records one call.
    pub async fn audit(&self, entry: &AuditEntry) -> ApiResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, remote, method, path, status) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(entry.at)
        .bind(&entry.actor)
        .bind(&entry.remote)
        .bind(&entry.method)
        .bind(&entry.path)
        .bind(entry.status)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The newest `limit` entries with an id below `before` (all when `None`), newest first.
    pub async fn audit_log(&self, before: Option<i64>, limit: i64) -> ApiResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, remote, method, path, status FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get(0)?,
                    at: row.try_get(1)?,
                    actor: row.try_get(2)?,
                    remote: row.try_get(3)?,
                    method: row.try_get(4)?,
                    path: row.try_get(5)?,
                    status: row.try_get(6)?,
                })
            })
            .collect()
    }
}
