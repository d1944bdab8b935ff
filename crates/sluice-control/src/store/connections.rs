//! Connections as stored: a team's reusable connector profiles.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use sluice_spec::{Connection, Diagnostic, resolve_connections};
use sqlx::Row;

use super::{Store, is_duplicate, now_ms};
use crate::error::{ApiError, ApiResult};

/// A stored connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionRecord {
    /// Its name within the team.
    pub name: String,
    /// The connector nodes using it get, e.g. `kafka`.
    pub connector: String,
    /// Free text for people.
    pub description: String,
    /// Options shared by every node using it; secrets appear only as references.
    pub options: Map<String, Value>,
    /// Who created it.
    pub created_by: String,
    /// Created, ms since the epoch.
    pub created_at: i64,
    /// Who changed it last.
    pub updated_by: String,
    /// Last changed, ms since the epoch.
    pub updated_at: i64,
}

const COLUMNS: &str =
    "name, connector, description, options_json, created_by, created_at, updated_by, updated_at";

impl Store {
    /// Creates connection `name` of `team`; a conflict if it exists.
    pub async fn create_connection(
        &self,
        team: &str,
        name: &str,
        connector: &str,
        description: &str,
        options: &Map<String, Value>,
        user: &str,
    ) -> ApiResult<ConnectionRecord> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO connections (team, name, connector, description, options_json, created_by, created_at, \
             updated_by, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $7)",
        )
        .bind(team)
        .bind(name)
        .bind(connector)
        .bind(description)
        .bind(Value::Object(options.clone()).to_string())
        .bind(user)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(|error| {
            if is_duplicate(&error) {
                ApiError::conflict(format!(
                    "connection \"{name}\" of team \"{team}\" already exists; change it with PUT"
                ))
            } else {
                error.into()
            }
        })?;
        self.connection(team, name)
            .await?
            .ok_or_else(|| ApiError::internal(format!("connection \"{name}\" vanished after its creation")))
    }

    /// Replaces connection `name` of `team`, which must exist.
    pub async fn update_connection(
        &self,
        team: &str,
        name: &str,
        connector: &str,
        description: &str,
        options: &Map<String, Value>,
        user: &str,
    ) -> ApiResult<ConnectionRecord> {
        let updated = sqlx::query(
            "UPDATE connections SET connector = $3, description = $4, options_json = $5, updated_by = $6, \
             updated_at = $7 WHERE team = $1 AND name = $2",
        )
        .bind(team)
        .bind(name)
        .bind(connector)
        .bind(description)
        .bind(Value::Object(options.clone()).to_string())
        .bind(user)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        if updated.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("connection \"{name}\" of team \"{team}\"")));
        }
        self.connection(team, name)
            .await?
            .ok_or_else(|| ApiError::internal(format!("connection \"{name}\" vanished after its update")))
    }

    /// Connection `name` of `team`, if any.
    pub async fn connection(&self, team: &str, name: &str) -> ApiResult<Option<ConnectionRecord>> {
        let query = format!("SELECT {COLUMNS} FROM connections WHERE team = $1 AND name = $2");
        let row =
            sqlx::query(sqlx::AssertSqlSafe(query)).bind(team).bind(name).fetch_optional(self.pool()).await?;
        row.as_ref().map(record).transpose()
    }

    /// The connections of `team`, by name.
    pub async fn connections(&self, team: &str) -> ApiResult<Vec<ConnectionRecord>> {
        let query = format!("SELECT {COLUMNS} FROM connections WHERE team = $1 ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(query)).bind(team).fetch_all(self.pool()).await?;
        rows.iter().map(record).collect()
    }

    /// The connections of `team`, as spec resolution takes them.
    pub async fn connection_profiles(&self, team: &str) -> ApiResult<BTreeMap<String, Connection>> {
        Ok(self
            .connections(team)
            .await?
            .into_iter()
            .map(|c| (c.name, Connection { connector: c.connector, options: c.options }))
            .collect())
    }

    /// `spec` with the team's connections resolved into it: what is checked, deployed and run.
    /// The outer error is the store's; the inner one lists bad `connection` references.
    pub async fn resolve_spec(&self, team: &str, spec: &str) -> ApiResult<Result<String, Vec<Diagnostic>>> {
        if sluice_spec::connections_used(spec).is_empty() {
            return Ok(Ok(spec.to_owned()));
        }
        Ok(resolve_connections(spec, &self.connection_profiles(team).await?))
    }

    /// Deletes connection `name` of `team`.
    pub async fn delete_connection(&self, team: &str, name: &str) -> ApiResult<()> {
        let deleted = sqlx::query("DELETE FROM connections WHERE team = $1 AND name = $2")
            .bind(team)
            .bind(name)
            .execute(self.pool())
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("connection \"{name}\" of team \"{team}\"")));
        }
        Ok(())
    }
}

fn record(row: &sqlx::any::AnyRow) -> ApiResult<ConnectionRecord> {
    let options: String = row.try_get(3)?;
    let options = match serde_json::from_str(&options) {
        Ok(Value::Object(options)) => options,
        _ => return Err(ApiError::internal("a stored connection's options are not a JSON object")),
    };
    Ok(ConnectionRecord {
        name: row.try_get(0)?,
        connector: row.try_get(1)?,
        description: row.try_get(2)?,
        options,
        created_by: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_by: row.try_get(6)?,
        updated_at: row.try_get(7)?,
    })
}
