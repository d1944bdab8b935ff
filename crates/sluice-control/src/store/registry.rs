//! The schema registry as stored: schemas (one id sequence for the whole control plane, one row
//! per team and distinct normalized schema), subject versions pointing at schema ids (soft
//! deletion is a flag), and compatibility levels per team (`subject = ''`) and per subject.

use ring::digest;
use sqlx::Row;

use super::{Store, is_duplicate, now_ms};
use crate::error::{ApiError, ApiResult};

/// A stored schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchema {
    /// Its id, unique across the control plane.
    pub id: i64,
    /// `AVRO` or `JSON`.
    pub schema_type: String,
    /// Its normalized text.
    pub text: String,
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryVersion {
    /// The version number, from 1.
    pub version: i64,
    /// The schema it holds.
    pub schema_id: i64,
    /// Soft-deleted.
    pub deleted: bool,
}

/// How often a registration tries for a version number before it gives up.
const REGISTER_ATTEMPTS: usize = 5;

/// The subject name under which a team's default compatibility level is stored.
const TEAM_DEFAULT: &str = "";

fn fingerprint(text: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, text.as_bytes()))
}

impl Store {
    /// Schema `id` of `team`, if the team has it under some subject version (deleted or not).
    pub async fn registry_schema(&self, team: &str, id: i64) -> ApiResult<Option<StoredSchema>> {
        let row = sqlx::query(
            "SELECT s.id, s.schema_type, s.schema_text FROM registry_schemas s WHERE s.team = $1 AND s.id = $2 \
             AND EXISTS (SELECT 1 FROM registry_versions v WHERE v.team = s.team AND v.schema_id = s.id)",
        )
        .bind(team)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(StoredSchema { id: row.try_get(0)?, schema_type: row.try_get(1)?, text: row.try_get(2)? })
        })
        .transpose()
    }

    /// The id of `team`'s schema with this normalized text, if it was ever registered.
    pub async fn registry_schema_id(
        &self,
        team: &str,
        schema_type: &str,
        normalized: &str,
    ) -> ApiResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM registry_schemas WHERE team = $1 AND schema_type = $2 AND fingerprint = $3",
        )
        .bind(team)
        .bind(schema_type)
        .bind(fingerprint(normalized))
        .fetch_optional(self.pool())
        .await?)
    }

    /// Every version of `subject` in `team`, deleted or not, oldest first.
    pub async fn registry_versions(&self, team: &str, subject: &str) -> ApiResult<Vec<RegistryVersion>> {
        let rows = sqlx::query(
            "SELECT version, schema_id, deleted FROM registry_versions WHERE team = $1 AND subject = $2 ORDER BY version",
        )
        .bind(team)
        .bind(subject)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RegistryVersion {
                    version: row.try_get(0)?,
                    schema_id: row.try_get(1)?,
                    deleted: row.try_get::<i64, _>(2)? != 0,
                })
            })
            .collect()
    }

    /// The team's subjects in byte order (not the database's collation, so both backends agree):
    /// those with a live version, or also those whose versions are all soft-deleted.
    pub async fn registry_subjects(&self, team: &str, include_deleted: bool) -> ApiResult<Vec<String>> {
        let mut subjects: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT subject FROM registry_versions WHERE team = $1 AND (deleted = 0 OR $2 = 1)",
        )
        .bind(team)
        .bind(i64::from(include_deleted))
        .fetch_all(self.pool())
        .await?;
        subjects.sort_unstable();
        Ok(subjects)
    }

    /// `(subject, version)` of every version of `team` holding schema `id`, subjects in byte
    /// order.
    pub async fn registry_schema_uses(
        &self,
        team: &str,
        id: i64,
        include_deleted: bool,
    ) -> ApiResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT subject, version FROM registry_versions WHERE team = $1 AND schema_id = $2 \
             AND (deleted = 0 OR $3 = 1)",
        )
        .bind(team)
        .bind(id)
        .bind(i64::from(include_deleted))
        .fetch_all(self.pool())
        .await?;
        let mut uses =
            rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect::<ApiResult<Vec<_>>>()?;
        uses.sort_unstable();
        Ok(uses)
    }

    /// Stores `normalized` for `team` if new (reusing the team's id for an equal schema) and
    /// adds it as the next version of `subject`. Returns the schema id and the version.
    pub async fn registry_register(
        &self,
        team: &str,
        subject: &str,
        schema_type: &str,
        normalized: &str,
        user: &str,
    ) -> ApiResult<(i64, i64)> {
        let id = self.registry_store_schema(team, schema_type, normalized).await?;
        // Two registrations racing for a version number: the version is taken in one statement
        // that also checks that the subject does not hold the schema yet (one snapshot), so the
        // loser of a race fails on the primary key, looks again, and takes the winner's version
        // if it holds the same schema (several workers of one sink register their schema at
        // once), else the next number.
        for _ in 0..REGISTER_ATTEMPTS {
            if let Some(version) = self.registry_live_version_of(team, subject, id).await? {
                return Ok((id, version));
            }
            let inserted = sqlx::query(
                "INSERT INTO registry_versions (team, subject, version, schema_id, deleted, created_by, created_at) \
                 SELECT $1, $2, \
                   (SELECT COALESCE(MAX(version), 0) + 1 FROM registry_versions WHERE team = $1 AND subject = $2), \
                   $3, 0, $4, $5 \
                 WHERE NOT EXISTS (SELECT 1 FROM registry_versions \
                   WHERE team = $1 AND subject = $2 AND schema_id = $3 AND deleted = 0)",
            )
            .bind(team)
            .bind(subject)
            .bind(id)
            .bind(user)
            .bind(now_ms())
            .execute(self.pool())
            .await;
            match inserted {
                Ok(_) => continue,
                Err(error) if is_duplicate(&error) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        if let Some(version) = self.registry_live_version_of(team, subject, id).await? {
            return Ok((id, version));
        }
        // Not a verdict on the schema: a 409 would read as "incompatible" to Confluent clients.
        Err(ApiError::unavailable(format!(
            "subject \"{subject}\" is being changed by others at the same moment, and the registration lost {REGISTER_ATTEMPTS} races for a version number; try again"
        )))
    }

    /// The first live version of `subject` holding schema `id`.
    async fn registry_live_version_of(&self, team: &str, subject: &str, id: i64) -> ApiResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(version) FROM registry_versions \
             WHERE team = $1 AND subject = $2 AND schema_id = $3 AND deleted = 0",
        )
        .bind(team)
        .bind(subject)
        .bind(id)
        .fetch_one(self.pool())
        .await?)
    }

    async fn registry_store_schema(&self, team: &str, schema_type: &str, normalized: &str) -> ApiResult<i64> {
        if let Some(id) = self.registry_schema_id(team, schema_type, normalized).await? {
            return Ok(id);
        }
        let inserted = sqlx::query(
            "INSERT INTO registry_schemas (team, schema_type, fingerprint, schema_text, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(team)
        .bind(schema_type)
        .bind(fingerprint(normalized))
        .bind(normalized)
        .bind(now_ms())
        .execute(self.pool())
        .await;
        match inserted {
            Ok(_) => {}
            // Registered concurrently under another subject: use that row.
            Err(error) if is_duplicate(&error) => {}
            Err(error) => return Err(error.into()),
        }
        self.registry_schema_id(team, schema_type, normalized)
            .await?
            .ok_or_else(|| ApiError::internal("a registry schema vanished right after it was stored"))
    }

    /// Marks versions of `subject` deleted (all of them when `version` is `None`).
    pub async fn registry_soft_delete(
        &self,
        team: &str,
        subject: &str,
        version: Option<i64>,
    ) -> ApiResult<()> {
        sqlx::query(
            "UPDATE registry_versions SET deleted = 1 WHERE team = $1 AND subject = $2 AND ($3 = 0 OR version = $3)",
        )
        .bind(team)
        .bind(subject)
        .bind(version.unwrap_or(0))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes soft-deleted versions of `subject` for good (all of them when `version` is
    /// `None`, and then the subject's own compatibility level too).
    pub async fn registry_permanent_delete(
        &self,
        team: &str,
        subject: &str,
        version: Option<i64>,
    ) -> ApiResult<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "DELETE FROM registry_versions WHERE team = $1 AND subject = $2 AND deleted = 1 AND ($3 = 0 OR version = $3)",
        )
        .bind(team)
        .bind(subject)
        .bind(version.unwrap_or(0))
        .execute(&mut *tx)
        .await?;
        if version.is_none() {
            sqlx::query("DELETE FROM registry_config WHERE team = $1 AND subject = $2")
                .bind(team)
                .bind(subject)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The compatibility level set for `subject`, or for the team when `subject` is `None`.
    pub async fn registry_level(&self, team: &str, subject: Option<&str>) -> ApiResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT compatibility FROM registry_config WHERE team = $1 AND subject = $2")
            .bind(team)
            .bind(subject.unwrap_or(TEAM_DEFAULT))
            .fetch_optional(self.pool())
            .await?)
    }

    /// Sets the compatibility level of `subject`, or of the team when `subject` is `None`.
    pub async fn set_registry_level(&self, team: &str, subject: Option<&str>, level: &str) -> ApiResult<()> {
        // One statement, so two setting it at once cannot both insert (PostgreSQL and SQLite).
        sqlx::query(
            "INSERT INTO registry_config (team, subject, compatibility) VALUES ($1, $2, $3) \
             ON CONFLICT (team, subject) DO UPDATE SET compatibility = excluded.compatibility",
        )
        .bind(team)
        .bind(subject.unwrap_or(TEAM_DEFAULT))
        .bind(level)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes the compatibility level of `subject`, or of the team when `subject` is `None`.
    pub async fn delete_registry_level(&self, team: &str, subject: Option<&str>) -> ApiResult<()> {
        sqlx::query("DELETE FROM registry_config WHERE team = $1 AND subject = $2")
            .bind(team)
            .bind(subject.unwrap_or(TEAM_DEFAULT))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
