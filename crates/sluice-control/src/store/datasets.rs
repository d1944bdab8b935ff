//! The dataset catalog: datasets with their owner team, classification and schema, and the
//! grants other teams hold on them.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, is_duplicate, now_ms};
use crate::catalog::{Known, Use};
use crate::error::{ApiError, ApiResult};

/// A dataset as the catalog shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetRecord {
    /// `<system>:<name>`, e.g. `kafka:orders`.
    pub name: String,
    /// The owning team.
    pub owner: String,
    /// E.g. `pii`; empty when unclassified.
    pub classification: String,
    /// Free text.
    pub description: String,
    /// Its columns, as the spec that registered it declared them (JSON), if known.
    pub schema: serde_json::Value,
    /// Who registered it (explicitly, or by deploying a pipeline that uses it).
    pub registered_by: String,
    /// When, ms since the epoch.
    pub created_at: i64,
    /// Teams granted reading.
    pub readers: Vec<String>,
    /// Teams granted writing.
    pub writers: Vec<String>,
}

impl DatasetRecord {
    /// What the access rules need.
    pub fn known(&self) -> Known {
        Known {
            owner: self.owner.clone(),
            classification: self.classification.clone(),
            readers: self.readers.clone(),
            writers: self.writers.clone(),
        }
    }
}

/// A dataset to register.
#[derive(Debug, Clone)]
pub struct NewDataset<'a> {
    /// Its name.
    pub name: &'a str,
    /// The owning team.
    pub owner: &'a str,
    /// Its classification.
    pub classification: &'a str,
    /// Free text.
    pub description: &'a str,
    /// Its columns.
    pub schema: serde_json::Value,
    /// Who registers it.
    pub by: &'a str,
}

fn record(row: &AnyRow) -> ApiResult<DatasetRecord> {
    let schema: String = row.try_get("schema_json")?;
    Ok(DatasetRecord {
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        classification: row.try_get("classification")?,
        description: row.try_get("description")?,
        schema: serde_json::from_str(&schema).unwrap_or(serde_json::Value::Null),
        registered_by: row.try_get("registered_by")?,
        created_at: row.try_get("created_at")?,
        readers: Vec::new(),
        writers: Vec::new(),
    })
}

impl Store {
    /// Registers a dataset; 409 if the name is taken.
    pub async fn register_dataset(&self, new: &NewDataset<'_>) -> ApiResult<()> {
        sqlx::query(
            "INSERT INTO datasets (name, owner, classification, description, schema_json, registered_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new.name)
        .bind(new.owner)
        .bind(new.classification)
        .bind(new.description)
        .bind(new.schema.to_string())
        .bind(new.by)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(|error| {
            if is_duplicate(&error) {
                ApiError::conflict(format!("dataset \"{}\" is already registered", new.name))
            } else {
                error.into()
            }
        })?;
        Ok(())
    }

    /// Dataset `name` with its grants.
    pub async fn dataset(&self, name: &str) -> ApiResult<Option<DatasetRecord>> {
        let row = sqlx::query("SELECT * FROM datasets WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        let Some(mut dataset) = row.as_ref().map(record).transpose()? else { return Ok(None) };
        let grants = sqlx::query("SELECT team, access FROM dataset_grants WHERE dataset = $1 ORDER BY team")
            .bind(name)
            .fetch_all(self.pool())
            .await?;
        for grant in grants {
            let team: String = grant.try_get(0)?;
            let access: String = grant.try_get(1)?;
            match Use::parse(&access) {
                Some(Use::Read) => dataset.readers.push(team),
                Some(Use::Write) => dataset.writers.push(team),
                None => return Err(ApiError::internal(format!("unknown grant \"{access}\" stored"))),
            }
        }
        Ok(Some(dataset))
    }

    /// Every dataset, by name (without grants).
    pub async fn datasets(&self) -> ApiResult<Vec<DatasetRecord>> {
        let rows = sqlx::query("SELECT * FROM datasets ORDER BY name").fetch_all(self.pool()).await?;
        rows.iter().map(record).collect()
    }

    /// Changes a dataset's classification and description.
    pub async fn describe_dataset(
        &self,
        name: &str,
        classification: &str,
        description: &str,
    ) -> ApiResult<()> {
        sqlx::query("UPDATE datasets SET classification = $1, description = $2 WHERE name = $3")
            .bind(classification)
            .bind(description)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Grants `team` `using` of dataset `name` (idempotent).
    pub async fn grant(&self, name: &str, team: &str, using: Use, by: &str) -> ApiResult<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM dataset_grants WHERE dataset = $1 AND team = $2 AND access = $3")
            .bind(name)
            .bind(team)
            .bind(using.name())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO dataset_grants (dataset, team, access, granted_by, granted_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(team)
        .bind(using.name())
        .bind(by)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes a grant back.
    pub async fn revoke(&self, name: &str, team: &str, using: Use) -> ApiResult<()> {
        let deleted =
            sqlx::query("DELETE FROM dataset_grants WHERE dataset = $1 AND team = $2 AND access = $3")
                .bind(name)
                .bind(team)
                .bind(using.name())
                .execute(self.pool())
                .await?;
        if deleted.rows_affected() == 0 {
            return Err(ApiError::not_found(format!(
                "{} grant of \"{name}\" to team \"{team}\"",
                using.name()
            )));
        }
        Ok(())
    }
}
