//! Teams, members, users and tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, Body, Segments};
use crate::auth::{Principal, Role, check_name};
use crate::error::{ApiError, ApiResult};
use crate::store::{TokenInfo, UserInfo};

/// `GET /api/v1/whoami`.
pub async fn whoami(Extension(principal): Extension<Principal>) -> Json<Principal> {
    Json(principal)
}

/// `GET /api/v1/teams`: every team for platform admins, the caller's otherwise.
pub async fn list_teams(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let teams: Vec<Value> = app
        .store
        .teams()
        .await?
        .into_iter()
        .filter_map(|(name, description)| {
            let role = principal.role_in(&name)?;
            Some(json!({ "name": name, "description": description, "role": role }))
        })
        .collect();
    Ok(Json(json!({ "teams": teams })))
}

/// Body of `POST /api/v1/teams`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    name: String,
    #[serde(default)]
    description: String,
}

/// `POST /api/v1/teams`.
pub async fn create_team(
    State(app): State<App>,
    Body(team): Body<NewTeam>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_name("team", &team.name).map_err(|message| ApiError::invalid("name", message))?;
    app.store.create_team(&team.name, &team.description).await?;
    Ok((StatusCode::CREATED, Json(json!({ "name": team.name, "description": team.description }))))
}

/// `GET /api/v1/teams/{team}`.
pub async fn get_team(State(app): State<App>, Segments(team): Segments<String>) -> ApiResult<Json<Value>> {
    let description = app.store.team_description(&team).await?;
    let description = description.ok_or_else(|| ApiError::not_found(format!("team \"{team}\"")))?;
    let members = app.store.members(&team).await?;
    Ok(Json(json!({ "name": team, "description": description, "members": members })))
}

/// `DELETE /api/v1/teams/{team}`.
pub async fn delete_team(State(app): State<App>, Segments(team): Segments<String>) -> ApiResult<StatusCode> {
    app.store.delete_team(&team).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `PUT /api/v1/teams/{team}/members/{user}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    role: String,
}

/// `PUT /api/v1/teams/{team}/members/{user}`.
pub async fn put_member(
    State(app): State<App>,
    Segments((team, user)): Segments<(String, String)>,
    Body(membership): Body<Membership>,
) -> ApiResult<Json<Value>> {
    let role: Role = membership.role.parse().map_err(|message: String| ApiError::invalid("role", message))?;
    app.store.bind_role(&team, &user, role).await?;
    Ok(Json(json!({ "team": team, "user": user, "role": role })))
}

/// `DELETE /api/v1/teams/{team}/members/{user}`.
pub async fn delete_member(
    State(app): State<App>,
    Segments((team, user)): Segments<(String, String)>,
) -> ApiResult<StatusCode> {
    app.store.unbind_role(&team, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/users`.
pub async fn list_users(State(app): State<App>) -> ApiResult<Json<Vec<UserInfo>>> {
    Ok(Json(app.store.users().await?))
}

/// Body of `POST /api/v1/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    #[serde(default)]
    platform_admin: bool,
}

/// `POST /api/v1/users`.
pub async fn create_user(
    State(app): State<App>,
    Body(user): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_name("user", &user.name).map_err(|message| ApiError::invalid("name", message))?;
    app.store.create_user(&user.name, user.platform_admin).await?;
    Ok((StatusCode::CREATED, Json(json!({ "name": user.name, "platform_admin": user.platform_admin }))))
}

/// `GET /api/v1/tokens`.
pub async fn list_tokens(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let user = (!principal.platform_admin).then_some(principal.user.as_str());
    Ok(Json(app.store.tokens(user).await?))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    #[serde(default)]
    description: String,
    /// For whom; the caller by default.
    user: Option<String>,
}

/// `POST /api/v1/tokens`: the secret is in this response only.
pub async fn create_token(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Body(request): Body<NewToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = request.user.unwrap_or_else(|| principal.user.clone());
    if user != principal.user && !principal.platform_admin {
        return Err(ApiError::forbidden("only platform admins issue tokens for other users"));
    }
    let (id, secret) = app.store.issue_token(&user, &request.description).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "user": user, "token": secret }))))
}

/// `DELETE /api/v1/tokens/{token}`.
pub async fn revoke_token(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Segments(id): Segments<String>,
) -> ApiResult<StatusCode> {
    let user = (!principal.platform_admin).then_some(principal.user.as_str());
    app.store.revoke_token(&id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}
