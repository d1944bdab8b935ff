//! The REST API: one route table ([`routes`]) from which the router, the access checks, the
//! audit log and the OpenAPI document are all derived, so a route cannot exist without an
//! access rule.
//!
//! Credentials: `Authorization: Bearer <token>` (an API token or, with OIDC, an identity JWT).
//! `Authorization: Basic base64(<any user>:<token>)` is taken as the same token, so clients
//! that only speak HTTP Basic (Confluent's schema-registry clients with
//! `basic.auth.user.info = user:token`) work unchanged; the user name is ignored.

mod access;
mod body;
mod connections;
mod datasets;
mod metrics;
mod pipelines;
mod registry;
mod routes;
mod secrets;
mod system;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use sluice_spec::Diagnostic;

pub use body::{Body, Params, Segments, SpecBody};
pub use routes::{REGISTRY, Route, routes};

use crate::auth::{Access, Principal};
use crate::error::ApiError;
use crate::oidc::Verifier;
use crate::secrets::SecretKey;
use crate::store::{AuditEntry, Store, now_ms};
use crate::supervisor::Supervisor;

/// Checks a pipeline spec as deeply as the platform can (structure, connectors, SQL); the
/// `sluice` binary provides the full planner.
pub trait Checker: Send + Sync + 'static {
    /// Every problem in `spec`, whose relative paths resolve against `base_dir`.
    fn check(&self, spec: &str, base_dir: &Path) -> Result<(), Vec<Diagnostic>>;

    /// Every connector name a connection may name (sources, sinks and lookup tables).
    fn connectors(&self) -> Vec<&'static str>;
}

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    /// The metadata store.
    pub store: Store,
    /// Runs the workers.
    pub supervisor: Supervisor,
    /// Checks specs.
    pub checker: Arc<dyn Checker>,
    /// Where pipeline files live.
    pub data_dir: PathBuf,
    /// Seals and opens secrets.
    pub secrets: Arc<SecretKey>,
    /// Verifies identity-provider JWTs, when OIDC is configured.
    pub oidc: Option<Arc<Verifier>>,
}

/// The API router with every route of [`routes`], each behind its access check.
pub fn router(app: App) -> Router {
    let mut router = Router::new();
    for (route, handler) in routes() {
        let guarded = handler.layer(from_fn_with_state((app.clone(), route.clone()), guard));
        router = router.route(route.path, guarded);
    }
    router
        .fallback(|request: Request| async move {
            let error = ApiError::not_found("endpoint (see /api/v1/openapi.json for the list)");
            if request.uri().path().contains("/registry/") {
                registry::registry_error(error)
            } else {
                error.into_response()
            }
        })
        .with_state(app)
}

/// Authenticates, authorizes against the route's rule, runs the handler and audits mutations.
async fn guard(State((app, route)): State<(App, Route)>, mut request: Request, next: Next) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "in-process".to_string(), |ConnectInfo(address)| address.ip().to_string());
    let path = request.uri().path().to_string();
    let token = request.headers().get(header::AUTHORIZATION).map(credentials);
    let outcome = match token {
        // A public route needs no credentials, so unreadable ones (a proxy's `Negotiate`, say)
        // do not make it fail.
        Some(Err(_)) if route.access == Access::Public => Ok(None),
        Some(Err(error)) => Err(error),
        Some(Ok(token)) => authorize(&app, &route, Some(&token), &path).await,
        None => authorize(&app, &route, None, &path).await,
    };
    let actor = match &outcome {
        Ok(Some(principal)) => principal.user.clone(),
        _ => "anonymous".to_string(),
    };
    let response = match outcome {
        Ok(principal) => {
            if let Some(principal) = principal {
                request.extensions_mut().insert(principal);
            }
            next.run(request).await
        }
        Err(error) if route.is_registry() => registry::registry_error(error),
        Err(error) => error.into_response(),
    };
    if route.method != Method::GET {
        let entry = AuditEntry {
            id: 0,
            at: now_ms(),
            actor,
            remote,
            method: route.method.to_string(),
            path,
            status: i64::from(response.status().as_u16()),
        };
        if let Err(error) = app.store.audit(&entry).await {
            // The call already happened; its answer stands, but the gap must be visible.
            tracing::error!(%error, method = %entry.method, path = %entry.path, "audit log write failed");
        }
    }
    response
}

/// The token of an `Authorization` header: `Bearer <token>`, or `Basic base64(user:token)`.
fn credentials(header: &axum::http::HeaderValue) -> Result<String, ApiError> {
    use base64::Engine;
    let value = header.to_str().unwrap_or("").trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        return match decoded.as_deref().and_then(|pair| pair.split_once(':')) {
            Some((_, token)) if !token.is_empty() => Ok(token.to_string()),
            _ => Err(ApiError::unauthenticated(
                "Basic credentials must be base64(\"<any user>:<API token>\"); the password is the API token",
            )),
        };
    }
    Err(ApiError::unauthenticated(
        "unsupported Authorization scheme: send `Authorization: Bearer <token>` or `Basic base64(user:<token>)`",
    ))
}

async fn authorize(
    app: &App,
    route: &Route,
    token: Option<&str>,
    path: &str,
) -> Result<Option<Principal>, ApiError> {
    if route.access == Access::Public {
        return Ok(None);
    }
    let Some(token) = token else {
        return Err(ApiError::unauthenticated(
            "missing credentials: send the header `Authorization: Bearer <token>` or HTTP Basic with the token as password (`sluice up` prints an admin token on first start)",
        ));
    };
    let principal = match &app.oidc {
        Some(verifier) if Verifier::is_jwt(token) => {
            let user = verifier.verify(token, now_ms() / 1000).await.map_err(|reason| {
                ApiError::unauthenticated(format!("the identity token is not accepted: {reason}"))
            })?;
            app.store.principal(&user).await?.ok_or_else(|| {
                ApiError::unauthenticated(format!(
                    "user \"{user}\" (from the identity token) is not known here; a platform admin creates users"
                ))
            })?
        }
        _ => app
            .store
            .authenticate(token)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("the token is not valid (revoked, or mistyped)"))?,
    };
    let team = route.team_in(path);
    if !principal.allows(route.access, team) {
        return Err(ApiError::forbidden(format!(
            "{} {} needs {}{}",
            route.method,
            route.path,
            route.access,
            team.map(|team| format!(" of \"{team}\"")).unwrap_or_default()
        )));
    }
    if let Some(team) = team
        && !app.store.team_exists(team).await?
    {
        return Err(ApiError::not_found(format!("team \"{team}\"")));
    }
    Ok(Some(principal))
}
