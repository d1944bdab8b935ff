//! The route table: every endpoint with its method, path, access rule and summary.

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post, put};

use super::{App, access, connections, datasets, pipelines, registry, secrets, system};
use crate::auth::{Access, Role};

/// One endpoint.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template, with `{name}` segments.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What it does, for the OpenAPI document.
    pub summary: &'static str,
}

impl Route {
    /// The value of the path's `{team}` segment in `path` (a request path matching this route).
    pub fn team_in<'a>(&self, path: &'a str) -> Option<&'a str> {
        let index = self.path.split('/').position(|segment| segment == "{team}")?;
        path.split('/').nth(index)
    }
}

const PIPELINE: &str = "/api/v1/teams/{team}/pipelines/{pipeline}";
const CONNECTION: &str = "/api/v1/teams/{team}/connections/{connection}";

/// A path under a team's schema registry.
macro_rules! registry {
    ($path:literal) => {
        concat!("/api/v1/teams/{team}/registry", $path)
    };
}

/// The base URL of a team's schema registry (the Confluent Schema Registry REST API v1).
pub const REGISTRY: &str = registry!("");

/// The Prometheus scrape endpoint.
const METRICS: &str = "/api/v1/metrics";

/// Routes that answer with text rather than JSON, and the media type of their answers.
const TEXT_ROUTES: &[(&str, &str)] = &[
    (METRICS, crate::metrics::PROMETHEUS_TEXT),
    ("/api/v1/teams/{team}/pipelines/{pipeline}/logs", "text/plain; charset=utf-8"),
];

impl Route {
    /// The media type of the route's successful answers.
    pub fn produces(&self) -> &'static str {
        if self.is_registry() {
            return crate::error::REGISTRY_MEDIA_TYPE;
        }
        TEXT_ROUTES.iter().find(|(path, _)| *path == self.path).map_or("application/json", |(_, media)| media)
    }

    /// Whether this is a schema-registry route, whose errors take the Confluent shape.
    pub fn is_registry(&self) -> bool {
        self.path.starts_with(REGISTRY)
    }
}

/// Every endpoint with its handler.
pub fn routes() -> Vec<(Route, MethodRouter<App>)> {
    use Access::{Authenticated, PlatformAdmin, Public, Team};
    use Role::{Admin, Developer, Viewer};
    let route = |method: Method, path: &'static str, access: Access, summary: &'static str| Route {
        method,
        path,
        access,
        summary,
    };
    let mut table = vec![
        (route(Method::GET, "/api/v1/health", Public, "Liveness of the control plane"), get(system::health)),
        (
            route(Method::GET, "/api/v1/openapi.json", Authenticated, "This API as an OpenAPI 3 document"),
            get(system::openapi),
        ),
        (
            route(Method::GET, "/api/v1/whoami", Authenticated, "The caller and their roles"),
            get(access::whoami),
        ),
        (
            route(Method::GET, "/api/v1/teams", Authenticated, "Teams the caller belongs to"),
            get(access::list_teams),
        ),
        (route(Method::POST, "/api/v1/teams", PlatformAdmin, "Create a team"), post(access::create_team)),
        (
            route(Method::GET, "/api/v1/teams/{team}", Team(Viewer), "A team and its members"),
            get(access::get_team),
        ),
        (
            route(Method::DELETE, "/api/v1/teams/{team}", PlatformAdmin, "Delete an empty team"),
            delete(access::delete_team),
        ),
        (
            route(
                Method::PUT,
                "/api/v1/teams/{team}/members/{user}",
                Team(Admin),
                "Give a user a role in the team",
            ),
            put(access::put_member),
        ),
        (
            route(
                Method::DELETE,
                "/api/v1/teams/{team}/members/{user}",
                Team(Admin),
                "Remove a user from the team",
            ),
            delete(access::delete_member),
        ),
        (route(Method::GET, "/api/v1/users", PlatformAdmin, "Every user"), get(access::list_users)),
        (route(Method::POST, "/api/v1/users", PlatformAdmin, "Create a user"), post(access::create_user)),
        (
            route(
                Method::GET,
                "/api/v1/tokens",
                Authenticated,
                "The caller's API tokens (every token for admins)",
            ),
            get(access::list_tokens),
        ),
        (
            route(
                Method::POST,
                "/api/v1/tokens",
                Authenticated,
                "Issue an API token (for another user: admins only)",
            ),
            post(access::create_token),
        ),
        (
            route(
                Method::DELETE,
                "/api/v1/tokens/{token}",
                Authenticated,
                "Revoke one of the caller's tokens",
            ),
            delete(access::revoke_token),
        ),
        (
            route(Method::GET, "/api/v1/audit", PlatformAdmin, "The audit log, newest first"),
            get(system::audit),
        ),
        (
            route(
                Method::GET,
                METRICS,
                PlatformAdmin,
                "Every pipeline's state and node metrics in the Prometheus text format (for scraping)",
            ),
            get(super::metrics::prometheus),
        ),
        (route(Method::GET, "/api/v1/datasets", Authenticated, "The dataset catalog"), get(datasets::list)),
        (
            route(Method::GET, "/api/v1/datasets/{dataset}", Authenticated, "A dataset with its grants"),
            get(datasets::get),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/datasets",
                Team(Developer),
                "Register a dataset the team owns",
            ),
            post(datasets::register),
        ),
        (
            route(
                Method::PUT,
                "/api/v1/teams/{team}/datasets/{dataset}",
                Team(Admin),
                "Classify or describe a dataset the team owns",
            ),
            put(datasets::describe),
        ),
        (
            route(
                Method::PUT,
                "/api/v1/teams/{team}/datasets/{dataset}/grants/{grantee}/{access}",
                Team(Admin),
                "Grant another team read or write access to a dataset the team owns",
            ),
            put(datasets::grant),
        ),
        (
            route(
                Method::DELETE,
                "/api/v1/teams/{team}/datasets/{dataset}/grants/{grantee}/{access}",
                Team(Admin),
                "Take a grant back",
            ),
            delete(datasets::revoke),
        ),
        (
            route(
                Method::GET,
                "/api/v1/teams/{team}/secrets",
                Team(Viewer),
                "The team's secrets (names only)",
            ),
            get(secrets::list),
        ),
        (
            route(
                Method::PUT,
                "/api/v1/teams/{team}/secrets/{secret}",
                Team(Developer),
                "Set a secret (encrypted at rest; never returned)",
            ),
            put(secrets::put),
        ),
        (
            route(
                Method::DELETE,
                "/api/v1/teams/{team}/secrets/{secret}",
                Team(Developer),
                "Delete a secret",
            ),
            delete(secrets::delete),
        ),
        (
            route(Method::GET, "/api/v1/teams/{team}/connections", Team(Viewer), "The team's connections"),
            get(connections::list),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/connections",
                Team(Developer),
                "Create a connection (a reusable connector profile)",
            ),
            post(connections::create),
        ),
        (
            route(Method::GET, CONNECTION, Team(Viewer), "A connection and the pipelines using it"),
            get(connections::get),
        ),
        (
            route(
                Method::PUT,
                CONNECTION,
                Team(Developer),
                "Create or change a connection (refused if a pipeline using it would break)",
            ),
            put(connections::put),
        ),
        (
            route(Method::DELETE, CONNECTION, Team(Developer), "Delete a connection no pipeline uses"),
            delete(connections::delete),
        ),
        (
            route(Method::GET, "/api/v1/teams/{team}/pipelines", Team(Viewer), "The team's pipelines"),
            get(pipelines::list),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/pipelines",
                Team(Developer),
                "Create a pipeline from a spec",
            ),
            post(pipelines::create),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/validate",
                Team(Developer),
                "Check a spec without saving it",
            ),
            post(pipelines::validate),
        ),
        (route(Method::GET, PIPELINE, Team(Viewer), "A pipeline and its status"), get(pipelines::get)),
        (
            route(Method::PUT, PIPELINE, Team(Developer), "Save a new version of the spec"),
            put(pipelines::update),
        ),
        (
            route(Method::DELETE, PIPELINE, Team(Developer), "Delete a pipeline that is not running"),
            delete(pipelines::remove),
        ),
        (
            route(
                Method::GET,
                "/api/v1/teams/{team}/pipelines/{pipeline}/versions",
                Team(Viewer),
                "Every version",
            ),
            get(pipelines::versions),
        ),
        (
            route(
                Method::GET,
                "/api/v1/teams/{team}/pipelines/{pipeline}/versions/{version}",
                Team(Viewer),
                "One version's spec",
            ),
            get(pipelines::version),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/pipelines/{pipeline}/deploy",
                Team(Developer),
                "Run a version (the latest by default); a running pipeline restarts on it",
            ),
            post(pipelines::deploy),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/pipelines/{pipeline}/start",
                Team(Developer),
                "Start it again",
            ),
            post(pipelines::start),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/pipelines/{pipeline}/stop",
                Team(Developer),
                "Stop gracefully (final checkpoint)",
            ),
            post(pipelines::stop),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/pipelines/{pipeline}/savepoint",
                Team(Developer),
                "Stop with a savepoint",
            ),
            post(pipelines::savepoint),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/pipelines/{pipeline}/resume",
                Team(Developer),
                "Start from a savepoint (the newest by default)",
            ),
            post(pipelines::resume),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/pipelines/{pipeline}/rescale",
                Team(Developer),
                "Change parallelism (through a final checkpoint)",
            ),
            post(pipelines::rescale),
        ),
        (
            route(
                Method::POST,
                "/api/v1/teams/{team}/pipelines/{pipeline}/restart",
                Team(Developer),
                "Restart it",
            ),
            post(pipelines::restart),
        ),
        (
            route(
                Method::GET,
                "/api/v1/teams/{team}/pipelines/{pipeline}/checkpoints",
                Team(Viewer),
                "Checkpoints (size, duration, alignment per operator) and savepoints",
            ),
            get(pipelines::checkpoints),
        ),
        (
            route(
                Method::GET,
                "/api/v1/teams/{team}/pipelines/{pipeline}/metrics",
                Team(Viewer),
                "The current run's latest metrics per node (records, bytes, rates, busy, lag, state), their age and the state",
            ),
            get(super::metrics::pipeline),
        ),
        (
            route(
                Method::GET,
                "/api/v1/teams/{team}/pipelines/{pipeline}/events",
                Team(Viewer),
                "Lifecycle events",
            ),
            get(pipelines::events),
        ),
        (
            route(
                Method::GET,
                "/api/v1/teams/{team}/pipelines/{pipeline}/logs",
                Team(Viewer),
                "The worker's log",
            ),
            get(pipelines::logs),
        ),
    ];
    table.extend(registry_routes());
    table
}

/// Method, path, access rule, summary and handler of a registry route.
type RegistryEntry = (Method, &'static str, Access, &'static str, MethodRouter<App>);

/// The schema registry's routes, each under [`REGISTRY`].
fn registry_routes() -> Vec<(Route, MethodRouter<App>)> {
    use Access::Team;
    use Role::{Developer, Viewer};
    let entries: Vec<RegistryEntry> = vec![
        (
            Method::GET,
            registry!("/schemas/ids/{id}"),
            Team(Viewer),
            "Registry: a schema by id",
            get(registry::schema_by_id),
        ),
        (
            Method::GET,
            registry!("/schemas/ids/{id}/schema"),
            Team(Viewer),
            "Registry: a schema by id, as the schema itself",
            get(registry::raw_schema_by_id),
        ),
        (
            Method::GET,
            registry!("/schemas/ids/{id}/versions"),
            Team(Viewer),
            "Registry: the subject versions holding a schema",
            get(registry::schema_versions),
        ),
        (
            Method::GET,
            registry!("/schemas/types"),
            Team(Viewer),
            "Registry: the schema types supported",
            get(registry::schema_types),
        ),
        (
            Method::GET,
            registry!("/subjects"),
            Team(Viewer),
            "Registry: the team's subjects",
            get(registry::subjects),
        ),
        (
            Method::POST,
            registry!("/subjects/{subject}"),
            Team(Viewer),
            "Registry: the version of a subject holding a schema",
            post(registry::lookup),
        ),
        (
            Method::DELETE,
            registry!("/subjects/{subject}"),
            Team(Developer),
            "Registry: delete a subject (soft; permanent=true after a soft delete)",
            delete(registry::delete_subject),
        ),
        (
            Method::GET,
            registry!("/subjects/{subject}/versions"),
            Team(Viewer),
            "Registry: a subject's versions",
            get(registry::subject_versions),
        ),
        (
            Method::POST,
            registry!("/subjects/{subject}/versions"),
            Team(Developer),
            "Registry: register a schema under a subject (idempotent; checked for compatibility)",
            post(registry::register),
        ),
        (
            Method::GET,
            registry!("/subjects/{subject}/versions/{version}"),
            Team(Viewer),
            "Registry: one version of a subject (a number, latest or -1)",
            get(registry::subject_version),
        ),
        (
            Method::DELETE,
            registry!("/subjects/{subject}/versions/{version}"),
            Team(Developer),
            "Registry: delete one version (soft; permanent=true after a soft delete)",
            delete(registry::delete_version),
        ),
        (
            Method::GET,
            registry!("/subjects/{subject}/versions/{version}/schema"),
            Team(Viewer),
            "Registry: one version's schema itself",
            get(registry::subject_version_schema),
        ),
        (
            Method::GET,
            registry!("/config"),
            Team(Viewer),
            "Registry: the team's compatibility level",
            get(registry::get_config),
        ),
        (
            Method::PUT,
            registry!("/config"),
            Team(Developer),
            "Registry: set the team's compatibility level",
            put(registry::put_config),
        ),
        (
            Method::GET,
            registry!("/config/{subject}"),
            Team(Viewer),
            "Registry: a subject's compatibility level",
            get(registry::get_subject_config),
        ),
        (
            Method::PUT,
            registry!("/config/{subject}"),
            Team(Developer),
            "Registry: set a subject's compatibility level",
            put(registry::put_subject_config),
        ),
        (
            Method::DELETE,
            registry!("/config/{subject}"),
            Team(Developer),
            "Registry: a subject follows the team's compatibility level again",
            delete(registry::delete_subject_config),
        ),
        (
            Method::POST,
            registry!("/compatibility/subjects/{subject}/versions/{version}"),
            Team(Viewer),
            "Registry: whether a schema is compatible with a version of a subject",
            post(registry::check_compatibility),
        ),
    ];
    entries
        .into_iter()
        .map(|(method, path, access, summary, handler)| (Route { method, path, access, summary }, handler))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_route_is_unique_and_team_routes_name_the_team() {
        let mut seen = HashSet::new();
        for (route, _) in routes() {
            assert!(seen.insert((route.method.clone(), route.path)), "{} {} twice", route.method, route.path);
            // A team rule needs the team in the path; a team's path is never open to every user.
            if matches!(route.access, Access::Team(_)) {
                assert!(route.path.contains("{team}"), "{} {}", route.method, route.path);
            }
            if route.path.contains("{team}") {
                assert!(
                    matches!(route.access, Access::Team(_) | Access::PlatformAdmin),
                    "{} {} is a team's path",
                    route.method,
                    route.path
                );
            }
        }
    }

    #[test]
    fn the_team_is_read_from_its_segment() {
        let (route, _) = routes().into_iter().find(|(route, _)| route.path == PIPELINE).unwrap();
        assert_eq!(route.team_in("/api/v1/teams/payments/pipelines/fraud"), Some("payments"));
    }
}
