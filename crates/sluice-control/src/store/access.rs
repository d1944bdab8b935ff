//! Teams, users, role bindings and API tokens.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use super::{Store, is_duplicate, now_ms};
use crate::auth::{Principal, Role, hash_token, new_token};
use crate::error::{ApiError, ApiResult};

/// How precisely a token's last use is recorded.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// A user as listed by the API.
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    /// The user's name.
    pub name: String,
    /// Whether the user administers the whole platform.
    pub platform_admin: bool,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

/// A team member.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The user's name.
    pub user: String,
    /// Their role in the team.
    pub role: Role,
}

/// A token as listed: never its secret or hash.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    /// The token's public id.
    pub id: String,
    /// Whose token it is.
    pub user: String,
    /// What it is for.
    pub description: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last time it authenticated a request, ms since the epoch.
    pub last_used_at: Option<i64>,
}

impl Store {
    /// The principal holding token `secret`, if the token exists.
    pub async fn authenticate(&self, secret: &str) -> ApiResult<Option<Principal>> {
        let row = sqlx::query("SELECT id, user_name, last_used_at FROM api_tokens WHERE token_hash = $1")
            .bind(hash_token(secret))
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get(0)?;
        let user: String = row.try_get(1)?;
        let last_used: Option<i64> = row.try_get(2)?;
        // To the minute: a write per request would serialize every reader behind SQLite's writer.
        let now = now_ms();
        if last_used.is_none_or(|at| now - at >= LAST_USED_RESOLUTION_MS) {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&id)
                .execute(self.pool())
                .await?;
        }
        self.principal(&user).await
    }

    /// User `user` with their roles, if they exist.
    pub async fn principal(&self, user: &str) -> ApiResult<Option<Principal>> {
        let platform_admin: Option<i64> =
            sqlx::query_scalar("SELECT platform_admin FROM users WHERE name = $1")
                .bind(user)
                .fetch_optional(self.pool())
                .await?;
        let Some(platform_admin) = platform_admin else { return Ok(None) };
        let mut roles = BTreeMap::new();
        for row in sqlx::query("SELECT team, role FROM role_bindings WHERE user_name = $1")
            .bind(user)
            .fetch_all(self.pool())
            .await?
        {
            let team: String = row.try_get(0)?;
            let role: String = row.try_get(1)?;
            let role = role.parse::<Role>().map_err(ApiError::internal)?;
            roles.insert(team, role);
        }
        Ok(Some(Principal { user: user.to_string(), platform_admin: platform_admin != 0, roles }))
    }

    /// Whether any platform admin exists (the first start creates one).
    pub async fn has_platform_admin(&self) -> ApiResult<bool> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE platform_admin = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(count > 0)
    }

    /// Creates a team.
    pub async fn create_team(&self, name: &str, description: &str) -> ApiResult<()> {
        sqlx::query("INSERT INTO teams (name, description, created_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(description)
            .bind(now_ms())
            .execute(self.pool())
            .await
            .map_err(|error| {
                if is_duplicate(&error) {
                    ApiError::conflict(format!("team \"{name}\" already exists"))
                } else {
                    error.into()
                }
            })?;
        Ok(())
    }

    /// Whether team `name` exists.
    pub async fn team_exists(&self, name: &str) -> ApiResult<bool> {
        Ok(self.team_description(name).await?.is_some())
    }

    /// The description of team `name`, if it exists.
    pub async fn team_description(&self, name: &str) -> ApiResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT description FROM teams WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Every team's name and description, by name.
    pub async fn teams(&self) -> ApiResult<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT name, description FROM teams ORDER BY name").fetch_all(self.pool()).await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// Deletes a team without pipelines, with its role bindings, secrets and connections.
    pub async fn delete_team(&self, name: &str) -> ApiResult<()> {
        let pipelines: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pipelines WHERE team = $1")
            .bind(name)
            .fetch_one(self.pool())
            .await?;
        if pipelines > 0 {
            return Err(ApiError::conflict(format!(
                "team \"{name}\" still owns {pipelines} pipeline(s); delete them first"
            )));
        }
        let mut tx = self.pool().begin().await?;
        // What the team kept goes with it: a team created later under the same name starts bare.
        for table in [
            "role_bindings",
            "secrets",
            "connections",
            "registry_versions",
            "registry_schemas",
            "registry_config",
        ] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE team = $1")))
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM teams WHERE name = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        if deleted.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("team \"{name}\"")));
        }
        Ok(())
    }

    /// Creates a user.
    pub async fn create_user(&self, name: &str, platform_admin: bool) -> ApiResult<()> {
        sqlx::query("INSERT INTO users (name, platform_admin, created_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(i64::from(platform_admin))
            .bind(now_ms())
            .execute(self.pool())
            .await
            .map_err(|error| {
                if is_duplicate(&error) {
                    ApiError::conflict(format!("user \"{name}\" already exists"))
                } else {
                    error.into()
                }
            })?;
        Ok(())
    }

    /// Every user, by name.
    pub async fn users(&self) -> ApiResult<Vec<UserInfo>> {
        let rows = sqlx::query("SELECT name, platform_admin, created_at FROM users ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                let platform_admin: i64 = row.try_get(1)?;
                Ok(UserInfo {
                    name: row.try_get(0)?,
                    platform_admin: platform_admin != 0,
                    created_at: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn user_exists(&self, name: &str) -> ApiResult<bool> {
        let found: Option<String> = sqlx::query_scalar("SELECT name FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(found.is_some())
    }

    /// Issues a token for `user`; returns its id and its secret (shown once, stored hashed).
    pub async fn issue_token(&self, user: &str, description: &str) -> ApiResult<(String, String)> {
        if !self.user_exists(user).await? {
            return Err(ApiError::not_found(format!("user \"{user}\"")));
        }
        let token = new_token().map_err(ApiError::internal)?;
        sqlx::query(
            "INSERT INTO api_tokens (id, user_name, token_hash, description, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.id)
        .bind(user)
        .bind(&token.hash)
        .bind(description)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok((token.id, token.secret))
    }

    /// The tokens of `user`, or of everyone when `None`.
    pub async fn tokens(&self, user: Option<&str>) -> ApiResult<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT id, user_name, description, created_at, last_used_at FROM api_tokens
             WHERE $1 = '' OR user_name = $1 ORDER BY created_at, id",
        )
        .bind(user.unwrap_or(""))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenInfo {
                    id: row.try_get(0)?,
                    user: row.try_get(1)?,
                    description: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                    last_used_at: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// Revokes token `id`, if it belongs to `user` (any user's when `None`).
    pub async fn revoke_token(&self, id: &str, user: Option<&str>) -> ApiResult<()> {
        let deleted = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND ($2 = '' OR user_name = $2)")
            .bind(id)
            .bind(user.unwrap_or(""))
            .execute(self.pool())
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("token \"{id}\"")));
        }
        Ok(())
    }

    /// Gives `user` `role` in `team`, replacing any role they had there.
    pub async fn bind_role(&self, team: &str, user: &str, role: Role) -> ApiResult<()> {
        if !self.team_exists(team).await? {
            return Err(ApiError::not_found(format!("team \"{team}\"")));
        }
        if !self.user_exists(user).await? {
            return Err(ApiError::not_found(format!("user \"{user}\"")));
        }
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM role_bindings WHERE team = $1 AND user_name = $2")
            .bind(team)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO role_bindings (team, user_name, role) VALUES ($1, $2, $3)")
            .bind(team)
            .bind(user)
            .bind(role.name())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes `user` from `team`.
    pub async fn unbind_role(&self, team: &str, user: &str) -> ApiResult<()> {
        let deleted = sqlx::query("DELETE FROM role_bindings WHERE team = $1 AND user_name = $2")
            .bind(team)
            .bind(user)
            .execute(self.pool())
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("member \"{user}\" of team \"{team}\"")));
        }
        Ok(())
    }

    /// The members of `team`, by name.
    pub async fn members(&self, team: &str) -> ApiResult<Vec<Member>> {
        let rows =
            sqlx::query("SELECT user_name, role FROM role_bindings WHERE team = $1 ORDER BY user_name")
                .bind(team)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|row| {
                let role: String = row.try_get(1)?;
                Ok(Member { user: row.try_get(0)?, role: role.parse().map_err(ApiError::internal)? })
            })
            .collect()
    }
}
