//! Secrets as stored: sealed values (see [`crate::secrets`]) and who set them when.

use serde::Serialize;
use sqlx::Row;

use super::{Store, now_ms};
use crate::error::{ApiError, ApiResult};

/// A secret as listed: never its value.
#[derive(Debug, Clone, Serialize)]
pub struct SecretInfo {
    /// Its name within the team.
    pub name: String,
    /// The environment variable workers get it in.
    pub env: String,
    /// Who set it last.
    pub created_by: String,
    /// First set, ms since the epoch.
    pub created_at: i64,
    /// Last set, ms since the epoch.
    pub updated_at: i64,
}

impl Store {
    /// Creates or replaces secret `name` of `team` with its sealed value.
    pub async fn put_secret(&self, team: &str, name: &str, sealed: &str, user: &str) -> ApiResult<()> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let created: Option<i64> =
            sqlx::query_scalar("SELECT created_at FROM secrets WHERE team = $1 AND name = $2")
                .bind(team)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM secrets WHERE team = $1 AND name = $2")
            .bind(team)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO secrets (team, name, sealed, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(team)
        .bind(name)
        .bind(sealed)
        .bind(user)
        .bind(created.unwrap_or(now))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The secrets of `team`, by name.
    pub async fn secrets(&self, team: &str) -> ApiResult<Vec<SecretInfo>> {
        let rows = sqlx::query(
            "SELECT name, created_by, created_at, updated_at FROM secrets WHERE team = $1 ORDER BY name",
        )
        .bind(team)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                Ok(SecretInfo {
                    env: crate::secrets::env_name(&name),
                    name,
                    created_by: row.try_get(1)?,
                    created_at: row.try_get(2)?,
                    updated_at: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Every secret of `team` as (name, sealed value).
    pub async fn sealed_secrets(&self, team: &str) -> ApiResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT name, sealed FROM secrets WHERE team = $1 ORDER BY name")
            .bind(team)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// Deletes secret `name` of `team`.
    pub async fn delete_secret(&self, team: &str, name: &str) -> ApiResult<()> {
        let deleted = sqlx::query("DELETE FROM secrets WHERE team = $1 AND name = $2")
            .bind(team)
            .bind(name)
            .execute(self.pool())
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("secret \"{name}\" of team \"{team}\"")));
        }
        Ok(())
    }
}
