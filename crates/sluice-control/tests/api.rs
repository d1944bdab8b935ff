//! The API through its router, without a socket, on both metadata backends: SQLite in a
//! temporary file, and the real PostgreSQL on 127.0.0.1:5432 (a fresh database per fixture).
//! No worker program runs here (the supervisor is not started); supervision is tested end to
//! end in the `sluice` crate.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use sluice_control::api::{Checker, router, routes};
use sluice_control::auth::{Access, Role};
use sluice_control::supervisor::RestartPolicy;
use sluice_control::{Config, ControlPlane};
use sluice_spec::Diagnostic;
use tower::ServiceExt;

#[path = "api/registry.rs"]
mod registry;

/// The structural spec check (parsing and graph rules) that the control crate runs itself; the
/// binary adds connectors and SQL.
struct StructureOnly;

impl Checker for StructureOnly {
    fn check(&self, _spec: &str, _base_dir: &Path) -> Result<(), Vec<Diagnostic>> {
        Ok(())
    }

    fn connectors(&self) -> Vec<&'static str> {
        vec!["datagen", "file", "http", "kafka", "postgres"]
    }
}

#[derive(Clone, Copy, Debug)]
enum Db {
    Sqlite,
    Postgres,
}

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const SPEC: &str = "name: orders
sources:
  - name: src
    connector: datagen
    schema: [{name: id, type: int64}]
    options: {count: 10}
sinks:
  - {name: out, connector: file, inputs: [src], options: {path: out, format: jsonl}}
";

/// A platform with teams `payments` and `risk`, one user per caller kind, and pipeline
/// `orders` in `payments`.
struct Fixture {
    router: Router,
    tokens: Vec<(Caller, Option<String>)>,
    dir: tempfile::TempDir,
    database: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    Anonymous,
    Viewer,
    Developer,
    OtherTeamAdmin,
    TeamAdmin,
    PlatformAdmin,
}

impl Caller {
    const ALL: [Caller; 6] = [
        Caller::Anonymous,
        Caller::Viewer,
        Caller::Developer,
        Caller::OtherTeamAdmin,
        Caller::TeamAdmin,
        Caller::PlatformAdmin,
    ];

    /// What the caller may do in team `payments`: written out here, independently of
    /// `Principal::allows`.
    fn may(self, access: Access) -> bool {
        match (self, access) {
            (_, Access::Public) => true,
            (Caller::Anonymous, _) => false,
            (_, Access::Authenticated) => true,
            (Caller::PlatformAdmin, _) => true,
            (_, Access::PlatformAdmin) => false,
            (Caller::OtherTeamAdmin, Access::Team(_)) => false,
            (Caller::Viewer, Access::Team(role)) => role == Role::Viewer,
            (Caller::Developer, Access::Team(role)) => role <= Role::Developer,
            (Caller::TeamAdmin, Access::Team(_)) => true,
        }
    }
}

impl Fixture {
    async fn new(db: Db) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let database = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(fresh_postgres().await),
        };
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            database: database.clone().map(|name| format!("postgres://postgres@127.0.0.1:5432/{name}")),
            worker_program: "/nonexistent/sluice".into(),
            restart: RestartPolicy::default(),
            worker_log_limit: sluice_control::DEFAULT_WORKER_LOG_LIMIT,
            oidc: None,
        };
        let control = ControlPlane::open(config, Arc::new(StructureOnly)).await.unwrap();
        let first = control.bootstrap().await.unwrap().expect("first start creates an admin");
        assert!(control.bootstrap().await.unwrap().is_none(), "the second start creates nobody");
        let store = &control.app().store;
        store.create_team("payments", "").await.unwrap();
        store.create_team("risk", "").await.unwrap();
        let mut tokens = vec![(Caller::Anonymous, None), (Caller::PlatformAdmin, Some(first.token))];
        for (caller, user, team, role) in [
            (Caller::Viewer, "vera", "payments", Role::Viewer),
            (Caller::Developer, "dev", "payments", Role::Developer),
            (Caller::TeamAdmin, "ada", "payments", Role::Admin),
            (Caller::OtherTeamAdmin, "otto", "risk", Role::Admin),
        ] {
            store.create_user(user, false).await.unwrap();
            store.bind_role(team, user, role).await.unwrap();
            let (_, token) = store.issue_token(user, "test").await.unwrap();
            tokens.push((caller, Some(token)));
        }
        store.create_pipeline("payments", "orders", SPEC, 1, "dev").await.unwrap();
        let options = json!({ "brokers": "127.0.0.1:1" }).as_object().unwrap().clone();
        store.create_connection("payments", "events", "kafka", "", &options, "dev").await.unwrap();
        Fixture { router: router(control.app().clone()), tokens, dir, database }
    }

    fn token(&self, caller: Caller) -> Option<&str> {
        self.tokens.iter().find(|(c, _)| *c == caller).and_then(|(_, token)| token.as_deref())
    }

    async fn call(
        &self,
        caller: Caller,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = self.token(caller) {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    async fn drop_database(self) {
        if let Some(name) = &self.database {
            let pool = admin_pool().await;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&pool)
                .await;
        }
    }
}

async fn admin_pool() -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    match sqlx::AnyPool::connect(ADMIN_URL).await {
        Ok(pool) => pool,
        Err(error) => panic!("PostgreSQL must run on 127.0.0.1:5432 (user postgres, trust auth): {error}"),
    }
}

async fn fresh_postgres() -> String {
    let name = format!("sluice_control_{}", sluice_control::auth::random_hex(6).unwrap());
    // A locale collation (ICU en-US), as production databases usually have, not the byte
    // order of this machine's C.UTF-8 default: lists sorted by the database would differ.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE template0 LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    )))
    .execute(&admin_pool().await)
    .await
    .unwrap();
    name
}

/// A concrete path for a route template, in team `payments`.
fn concrete(path: &str) -> String {
    path.replace("{team}", "payments")
        .replace("{pipeline}", "orders")
        .replace("{version}", "1")
        .replace("{user}", "vera")
        .replace("{token}", "tok_0000")
        .replace("{secret}", "db-url")
        .replace("{connection}", "events")
        .replace("{dataset}", "kafka:orders")
        .replace("{grantee}", "risk")
        .replace("{access}", "read")
        .replace("{subject}", "orders-value")
        .replace("{id}", "1")
}

/// Every route × every kind of caller: denied callers get 401 (anonymous) or 403, allowed ones
/// get past the check and never a 5xx. A route added without a rule cannot compile (the table
/// needs one); a rule that is not enforced fails here.
async fn authorization_matrix(db: Db) {
    for (route, _) in routes() {
        let fixture = Fixture::new(db).await;
        let path = concrete(route.path);
        // Denied callers first: an allowed DELETE may remove what later calls name.
        let mut callers = Caller::ALL.to_vec();
        callers.sort_by_key(|caller| caller.may(route.access));
        for caller in callers {
            let body = (route.method != Method::GET && route.method != Method::DELETE).then(|| json!({}));
            let (status, body) = fixture.call(caller, route.method.clone(), &path, body).await;
            let what = format!("{db:?}: {caller:?} {} {path} → {status} {body}", route.method);
            if caller.may(route.access) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "allowed, but {what}"
                );
                assert!(!status.is_server_error(), "{what}");
            } else if caller == Caller::Anonymous {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(error_code(&route, &body), "unauthenticated", "{what}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
                assert_eq!(error_code(&route, &body), "forbidden", "{what}");
            }
        }
        fixture.drop_database().await;
    }
}

/// The error's code: the API's, or for schema-registry routes (Confluent's shape) the
/// equivalent of its Confluent code.
fn error_code(route: &sluice_control::api::Route, body: &Value) -> String {
    if !route.is_registry() {
        return body["error"]["code"].as_str().unwrap_or_default().to_string();
    }
    match body["error_code"].as_u64() {
        Some(40101) => "unauthenticated".into(),
        Some(40301) => "forbidden".into(),
        other => format!("registry error code {other:?}"),
    }
}

/// The message of an error in either shape (the API's, or the registry's Confluent shape).
fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().or_else(|| body["message"].as_str()).unwrap_or("")
}

#[tokio::test]
async fn authorization_matrix_sqlite() {
    authorization_matrix(Db::Sqlite).await;
}

#[tokio::test]
async fn authorization_matrix_postgres() {
    authorization_matrix(Db::Postgres).await;
}

/// Creating, versioning and driving a pipeline; errors in the API's format.
async fn pipelines(db: Db) {
    use Caller::Developer as Dev;
    let f = Fixture::new(db).await;
    let base = "/api/v1/teams/payments/pipelines";

    // A YAML body and a JSON body with the spec as an object.
    let yaml = SPEC.replace("name: orders", "name: refunds");
    let request = Request::post(base)
        .header("authorization", format!("Bearer {}", f.token(Dev).unwrap()))
        .header("content-type", "application/yaml")
        .body(Body::from(yaml))
        .unwrap();
    let (status, created) = f.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((created["state"].as_str(), created["latest_version"].as_i64()), (Some("created"), Some(1)));
    let as_object: Value = serde_yaml::from_str(&SPEC.replace("name: orders", "name: chargebacks")).unwrap();
    let (status, created) =
        f.call(Dev, Method::POST, base, Some(json!({ "spec": as_object, "parallelism": 2 }))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["parallelism"], 2);
    let (status, body) = f.call(Dev, Method::POST, base, Some(json!({ "spec": SPEC }))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{body}");

    // Listing sees all three, in name order.
    let (_, list) = f.call(Caller::Viewer, Method::GET, base, None).await;
    let names: Vec<&str> =
        list["pipelines"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["chargebacks", "orders", "refunds"]);

    // A bad spec: 422 with every diagnostic and its path.
    let bad = SPEC.replace("connector: datagen", "connector: datagen\n    bogus: 1");
    let (status, body) = f.call(Dev, Method::POST, base, Some(json!({ "spec": bad }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_spec");
    let paths: Vec<&str> = body["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.starts_with("sources[0]")), "{body}");
    let (status, body) =
        f.call(Dev, Method::POST, "/api/v1/teams/payments/validate", Some(json!({ "spec": bad }))).await;
    assert_eq!((status, body["valid"].as_bool()), (StatusCode::OK, Some(false)), "{body}");

    // Versions: a PUT adds one; a spec with another name is refused.
    let path = format!("{base}/orders");
    let v2 = SPEC.replace("count: 10", "count: 20");
    let (status, body) = f.call(Dev, Method::PUT, &path, Some(json!({ "spec": v2 }))).await;
    assert_eq!((status, body["version"].as_i64()), (StatusCode::OK, Some(2)), "{body}");
    let (status, body) =
        f.call(Dev, Method::PUT, &path, Some(json!({ "spec": SPEC.replace("orders", "x") }))).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("spec.name"))
    );
    let (_, versions) = f.call(Caller::Viewer, Method::GET, &format!("{path}/versions"), None).await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let (_, one) = f.call(Caller::Viewer, Method::GET, &format!("{path}/versions/2"), None).await;
    assert_eq!(one["spec"], v2);
    let (status, _) = f.call(Caller::Viewer, Method::GET, &format!("{path}/versions/x"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Lifecycle requests: nothing to stop yet; deploy records the wish; a second deploy of a
    // non-running pipeline is fine; bad parallelism and versions are field errors.
    let (status, body) = f.call(Dev, Method::POST, &format!("{path}/stop"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) =
        f.call(Dev, Method::POST, &format!("{path}/deploy"), Some(json!({ "version": 9 }))).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("version"))
    );
    let (status, body) =
        f.call(Dev, Method::POST, &format!("{path}/rescale"), Some(json!({ "parallelism": 0 }))).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("parallelism"))
    );
    let (status, body) = f.call(Dev, Method::POST, &format!("{path}/deploy"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!((body["desired"].as_str(), body["deployed_version"].as_i64()), (Some("running"), Some(2)));
    let (status, body) = f.call(Dev, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a pipeline meant to run is not deleted: {body}");
    let (status, _) = f.call(Dev, Method::POST, &format!("{path}/stop"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = f.call(Dev, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = f.call(Dev, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    f.drop_database().await;
}

#[tokio::test]
async fn pipelines_sqlite() {
    pipelines(Db::Sqlite).await;
}

#[tokio::test]
async fn pipelines_postgres() {
    pipelines(Db::Postgres).await;
}

/// Tokens are shown once, stored hashed, and stop working when revoked; members and teams;
/// the audit log records every mutating call with its result.
async fn access_and_audit(db: Db) {
    let f = Fixture::new(db).await;
    let (status, token) =
        f.call(Caller::Viewer, Method::POST, "/api/v1/tokens", Some(json!({ "description": "ci" }))).await;
    assert_eq!(status, StatusCode::CREATED);
    let secret = token["token"].as_str().unwrap().to_string();
    let (_, listed) = f.call(Caller::Viewer, Method::GET, "/api/v1/tokens", None).await;
    assert!(!listed.to_string().contains(&secret[4..]), "a token list never shows secrets: {listed}");
    assert_eq!(listed.as_array().unwrap().len(), 2, "only the caller's own tokens: {listed}");
    let whoami = |secret: String| {
        Request::get("/api/v1/whoami")
            .header("authorization", format!("Bearer {secret}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, me) = f.send(whoami(secret.clone())).await;
    assert_eq!(
        (status, me["user"].as_str(), me["roles"]["payments"].as_str()),
        (StatusCode::OK, Some("vera"), Some("viewer"))
    );
    // Nobody else's token can be revoked by a non-admin; one's own can.
    let id = token["id"].as_str().unwrap();
    let (status, _) = f.call(Caller::Developer, Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        f.call(Caller::Viewer, Method::POST, "/api/v1/tokens", Some(json!({ "user": "dev" }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = f.call(Caller::Viewer, Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = f.send(whoami(secret)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Members: the team admin promotes the viewer; a bad role is a field error.
    let member = "/api/v1/teams/payments/members/vera";
    let (status, body) =
        f.call(Caller::TeamAdmin, Method::PUT, member, Some(json!({ "role": "owner" }))).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("role"))
    );
    let (status, _) =
        f.call(Caller::TeamAdmin, Method::PUT, member, Some(json!({ "role": "developer" }))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        f.call(Caller::Viewer, Method::POST, "/api/v1/teams/payments/pipelines/orders/deploy", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "vera is a developer now");
    let (_, teams) = f.call(Caller::OtherTeamAdmin, Method::GET, "/api/v1/teams", None).await;
    assert_eq!(teams["teams"].as_array().unwrap().len(), 1, "otto sees only his team: {teams}");

    // The audit log: mutating calls only, denied ones included, newest first.
    let (status, log) = f.call(Caller::PlatformAdmin, Method::GET, "/api/v1/audit?limit=50", None).await;
    assert_eq!(status, StatusCode::OK);
    let entries = log.as_array().unwrap();
    assert!(entries.iter().all(|e| e["method"] != "GET"), "{log}");
    let seen: Vec<(String, i64)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                format!(
                    "{} {} {}",
                    e["actor"].as_str().unwrap(),
                    e["method"].as_str().unwrap(),
                    e["path"].as_str().unwrap()
                ),
                e["status"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("vera POST /api/v1/tokens", 201),
        (&*format!("dev DELETE /api/v1/tokens/{id}"), 404),
        ("vera POST /api/v1/tokens", 403),
        (&*format!("vera DELETE /api/v1/tokens/{id}"), 204),
        ("ada PUT /api/v1/teams/payments/members/vera", 422),
        ("ada PUT /api/v1/teams/payments/members/vera", 200),
        ("vera POST /api/v1/teams/payments/pipelines/orders/deploy", 202),
    ];
    let expected: Vec<(String, i64)> =
        expected.iter().map(|(what, status)| (what.to_string(), *status)).collect();
    assert_eq!(seen, expected);
    assert!(entries.iter().all(|e| e["remote"] == "in-process"));
    f.drop_database().await;
}

#[tokio::test]
async fn access_and_audit_sqlite() {
    access_and_audit(Db::Sqlite).await;
}

#[tokio::test]
async fn access_and_audit_postgres() {
    access_and_audit(Db::Postgres).await;
}

/// Public routes ignore credentials they do not need: a proxy's `Authorization: Negotiate`
/// or a malformed Basic header once got 401 from the health check. Elsewhere they still do.
#[tokio::test]
async fn public_routes_answer_whatever_authorization_header_comes_along() {
    let f = Fixture::new(Db::Sqlite).await;
    for header in ["Negotiate abc", "Basic !!!", "Bearer slc_not_a_token", "garbage"] {
        let request = Request::builder()
            .uri("/api/v1/health")
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        let (status, body) = f.send(request).await;
        assert_eq!(status, StatusCode::OK, "{header}: {body}");
    }
    for header in ["Negotiate abc", "Basic !!!"] {
        let request = Request::builder()
            .uri("/api/v1/teams/payments/pipelines")
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        let (status, body) = f.send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header}: {body}");
    }
    f.drop_database().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let f = Fixture::new(Db::Sqlite).await;
    let (status, document) = f.call(Caller::Viewer, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let documented: usize =
        document["paths"].as_object().unwrap().values().map(|m| m.as_object().unwrap().len()).sum();
    assert_eq!(documented, routes().len());
    let (status, body) = f.call(Caller::Viewer, Method::GET, "/api/v1/nothing-here", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

/// Malformed input of every shape to every route that takes a body: always a 4xx with a JSON
/// error that says something, never a 5xx or a panic. Inputs come from a seeded generator:
/// truncations and byte flips of valid bodies, wrong JSON types, random bytes, wrong content
/// types.
#[tokio::test]
async fn malformed_bodies_get_4xx_never_5xx() {
    let f = Fixture::new(Db::Sqlite).await;
    let valid_bodies = [
        json!({ "spec": SPEC }).to_string(),
        json!({ "name": "team-x", "description": "d" }).to_string(),
        json!({ "role": "viewer" }).to_string(),
        json!({ "version": 1, "parallelism": 2 }).to_string(),
        json!({ "parallelism": 3 }).to_string(),
        json!({ "savepoint": "/tmp/x" }).to_string(),
        json!({ "name": "c", "connector": "kafka", "options": { "brokers": "b:1" } }).to_string(),
        SPEC.to_string(),
    ];
    let mut seed = 0x5eed_u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let posting: Vec<_> = routes()
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r.method == Method::POST || r.method == Method::PUT)
        .collect();
    let mut checked = 0;
    for round in 0..400 {
        let route = &posting[(random() as usize) % posting.len()];
        let base = valid_bodies[(random() as usize) % valid_bodies.len()].as_bytes().to_vec();
        let body: Vec<u8> = match round % 5 {
            0 => base[..(random() as usize) % base.len().max(1)].to_vec(),
            1 => {
                let mut bytes = base.clone();
                for _ in 0..3 {
                    let at = (random() as usize) % bytes.len();
                    bytes[at] = (random() & 0xff) as u8;
                }
                bytes
            }
            2 => [&b"["[..], &base, b"]"].concat(),
            3 => json!({ "spec": random() as i64, "parallelism": "two", "role": [1], "name": null })
                .to_string()
                .into_bytes(),
            _ => (0..(random() % 64)).map(|_| (random() & 0xff) as u8).collect(),
        };
        let content_type =
            ["application/json", "application/yaml", "text/plain", "image/png"][(random() % 4) as usize];
        let request = Request::builder()
            .method(route.method.clone())
            .uri(concrete(route.path))
            .header("authorization", format!("Bearer {}", f.token(Caller::PlatformAdmin).unwrap()))
            .header("content-type", content_type)
            .body(Body::from(body.clone()))
            .unwrap();
        let (status, answer) = f.send(request).await;
        let what = format!(
            "{} {} with {:?} → {status} {answer}",
            route.method,
            route.path,
            String::from_utf8_lossy(&body)
        );
        assert!(!status.is_server_error(), "{what}");
        if status.is_client_error() {
            checked += 1;
            assert!(!error_message(&answer).is_empty(), "{what}");
        }
    }
    assert!(checked > 200, "most malformed inputs must be refused, {checked} were");
}

/// Secrets are write-only: no response, list or audit entry holds a value, and the database
/// holds only ciphertext.
#[tokio::test]
async fn secrets_are_never_returned_and_stored_encrypted() {
    let f = Fixture::new(Db::Sqlite).await;
    let value = "pg-password-7f3a9c";
    let path = "/api/v1/teams/payments/secrets/warehouse-url";
    let (status, body) = f.call(Caller::Viewer, Method::PUT, path, Some(json!({ "value": value }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "viewers cannot set secrets: {body}");
    let (status, body) = f.call(Caller::Developer, Method::PUT, path, Some(json!({ "value": "abc" }))).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("value"))
    );
    let mut answers = Vec::new();
    let (status, body) = f.call(Caller::Developer, Method::PUT, path, Some(json!({ "value": value }))).await;
    assert_eq!(
        (status, body["env"].as_str()),
        (StatusCode::OK, Some("SLUICE_SECRET_WAREHOUSE_URL")),
        "{body}"
    );
    answers.push(body);
    let (status, body) = f.call(Caller::Developer, Method::PUT, path, Some(json!({ "value": value }))).await;
    assert_eq!(status, StatusCode::OK, "replacing is fine: {body}");
    answers.push(body);
    let (_, list) = f.call(Caller::Viewer, Method::GET, "/api/v1/teams/payments/secrets", None).await;
    assert_eq!(list["secrets"].as_array().unwrap().len(), 1, "{list}");
    answers.push(list);
    let (_, other) =
        f.call(Caller::OtherTeamAdmin, Method::GET, "/api/v1/teams/payments/secrets", None).await;
    answers.push(other);
    let (_, audit) = f.call(Caller::PlatformAdmin, Method::GET, "/api/v1/audit", None).await;
    answers.push(audit);
    for answer in &answers {
        assert!(!answer.to_string().contains(value), "{answer}");
    }
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(f.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("sluice.db") {
            stored.extend(std::fs::read(path).unwrap());
        }
    }
    assert!(stored.len() > 1000, "the database files were read");
    assert!(!stored.windows(value.len()).any(|window| window == value.as_bytes()), "plaintext at rest");
    let (status, _) = f.call(Caller::Developer, Method::DELETE, path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = f.call(Caller::Developer, Method::DELETE, path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A pipeline reading `topic` and writing `out` (Kafka), for dataset checks; the structural
/// check is all the router tests run, so the brokers need not exist.
fn kafka_spec(name: &str, topic: &str, out: &str) -> String {
    format!(
        "name: {name}
sources:
  - name: src
    connector: kafka
    schema: [{{name: card, type: string}}]
    options: {{brokers: 127.0.0.1:1, topic: {topic}, format: json}}
sinks:
  - {{name: out, connector: kafka, inputs: [src], options: {{brokers: 127.0.0.1:1, topic: {out}, format: json}}}}
"
    )
}

/// Deploying checks every dataset the spec reads and writes against ownership, classification
/// and grants; unknown datasets are registered to the deploying team.
async fn datasets_and_grants(db: Db) {
    let f = Fixture::new(db).await;
    // payments deploys a pipeline: both its topics become payments' datasets.
    let spec = kafka_spec("cards-clean", "cards", "cards-clean");
    let (status, body) = f
        .call(
            Caller::Developer,
            Method::POST,
            "/api/v1/teams/payments/pipelines",
            Some(json!({ "spec": spec })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = f
        .call(Caller::Developer, Method::POST, "/api/v1/teams/payments/pipelines/cards-clean/deploy", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, catalog) = f.call(Caller::OtherTeamAdmin, Method::GET, "/api/v1/datasets", None).await;
    let owned: Vec<(String, String)> = catalog["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap().to_string(), d["owner"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        owned,
        [
            ("kafka:cards".to_string(), "payments".to_string()),
            ("kafka:cards-clean".to_string(), "payments".to_string())
        ]
    );
    let (_, cards) = f.call(Caller::Viewer, Method::GET, "/api/v1/datasets/kafka:cards", None).await;
    assert_eq!(cards["schema"][0]["name"], "card", "the source's schema is recorded: {cards}");

    // Only the owner's admins classify; cards become pii.
    let classify = json!({ "classification": "pii", "description": "card numbers" });
    let (status, _) = f
        .call(
            Caller::Developer,
            Method::PUT,
            "/api/v1/teams/payments/datasets/kafka:cards",
            Some(classify.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = f
        .call(
            Caller::OtherTeamAdmin,
            Method::PUT,
            "/api/v1/teams/risk/datasets/kafka:cards",
            Some(classify.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "risk does not own it");
    let (status, body) = f
        .call(Caller::TeamAdmin, Method::PUT, "/api/v1/teams/payments/datasets/kafka:cards", Some(classify))
        .await;
    assert_eq!((status, body["classification"].as_str()), (StatusCode::OK, Some("pii")), "{body}");

    // risk reads the pii topic and writes into payments' topic: refused, both named.
    let spec = kafka_spec("scoring", "cards", "cards-clean");
    let (status, _) = f
        .call(
            Caller::OtherTeamAdmin,
            Method::POST,
            "/api/v1/teams/risk/pipelines",
            Some(json!({ "spec": spec })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let deploy = "/api/v1/teams/risk/pipelines/scoring/deploy";
    let (status, body) = f.call(Caller::OtherTeamAdmin, Method::POST, deploy, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let refused: Vec<(&str, &str)> = body["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e["dataset"].as_str().unwrap()))
        .collect();
    assert_eq!(refused, [("sources[0]", "kafka:cards"), ("sinks[0]", "kafka:cards-clean")]);

    // A read grant is not a write grant; with both, the deploy goes through.
    let grants = "/api/v1/teams/payments/datasets/kafka:cards/grants/risk";
    let (status, _) = f.call(Caller::TeamAdmin, Method::PUT, &format!("{grants}/read"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = f.call(Caller::OtherTeamAdmin, Method::POST, deploy, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["details"]["errors"].as_array().unwrap().len(), 1, "{body}");
    let (status, _) = f
        .call(
            Caller::TeamAdmin,
            Method::PUT,
            "/api/v1/teams/payments/datasets/kafka:cards-clean/grants/risk/write",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = f.call(Caller::OtherTeamAdmin, Method::POST, deploy, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Revoked: the next start is refused again.
    let (status, _) = f.call(Caller::TeamAdmin, Method::DELETE, &format!("{grants}/read"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) =
        f.call(Caller::OtherTeamAdmin, Method::POST, "/api/v1/teams/risk/pipelines/scoring/stop", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, cards) = f.call(Caller::Viewer, Method::GET, "/api/v1/datasets/kafka:cards", None).await;
    assert_eq!(cards["readers"], json!([]), "{cards}");
    let (status, body) = f.call(Caller::TeamAdmin, Method::PUT, &format!("{grants}/own"), None).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("access"))
    );
    let (status, body) = f
        .call(
            Caller::Developer,
            Method::POST,
            "/api/v1/teams/payments/datasets",
            Some(json!({ "name": "orders" })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("name"))
    );
    f.drop_database().await;
}

#[tokio::test]
async fn datasets_and_grants_sqlite() {
    datasets_and_grants(Db::Sqlite).await;
}

#[tokio::test]
async fn datasets_and_grants_postgres() {
    datasets_and_grants(Db::Postgres).await;
}

/// Connections: created, checked (connector, secret references, no secret values), resolved
/// into the specs that name them (so the catalog sees the resolved datasets), and guarded
/// against changes and deletions that would break those specs.
async fn connections(db: Db) {
    let f = Fixture::new(db).await;
    let base = "/api/v1/teams/payments/connections";
    let cluster = json!({ "name": "cluster", "connector": "kafka", "options": { "brokers": "127.0.0.1:1" } });
    let (status, body) = f.call(Caller::Viewer, Method::POST, base, Some(cluster.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "viewers read connections only: {body}");
    let (status, body) = f.call(Caller::Developer, Method::POST, base, Some(cluster.clone())).await;
    assert_eq!((status, body["connector"].as_str()), (StatusCode::CREATED, Some("kafka")), "{body}");
    let (status, body) = f.call(Caller::Developer, Method::POST, base, Some(cluster)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Bad connections are refused at the field.
    let refused = [
        (
            json!({ "name": "Bad Name", "connector": "kafka" }),
            "name",
            "connection name \"Bad Name\" is not valid",
        ),
        (
            json!({ "name": "c2", "connector": "kafak" }),
            "connector",
            "unknown connector \"kafak\"; did you mean \"kafka\"?",
        ),
        (
            json!({ "name": "c2", "connector": "kafka", "options": [1] }),
            "options",
            "`options` must be an object",
        ),
    ];
    for (body, field, message) in refused {
        let (status, answer) = f.call(Caller::Developer, Method::POST, base, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["error"]["details"]["field"], field, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(message), "{answer}");
    }
    let secret = "ultra-secret-pw-99";
    let (status, _) = f
        .call(
            Caller::Developer,
            Method::PUT,
            "/api/v1/teams/payments/secrets/kafka-pw",
            Some(json!({ "value": secret })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let properties = json!({
        "sasl.password": "${env:SLUICE_SECRET_KAFKA_PW}",
        "sasl.username": "${env:SLUICE_SECRET_KAFKA_USER}",
        "ssl.key.password": secret,
    });
    let body = json!({ "name": "sasl", "connector": "kafka", "options": { "brokers": "b:1", "properties": properties } });
    let (status, answer) = f.call(Caller::Developer, Method::POST, base, Some(body)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_connection"))
    );
    let errors: Vec<(&str, &str)> = answer["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [
            (
                "options.properties.sasl.username",
                "SLUICE_SECRET_KAFKA_USER names no secret of team \"payments\""
            ),
            (
                "options.properties.ssl.key.password",
                "this is the value of one of the team's secrets, which connections never hold"
            ),
        ],
        "{answer}"
    );
    assert!(!answer.to_string().contains(secret), "{answer}");

    // A pipeline names the connection; the catalog sees the resolved topics.
    let spec = "name: enrich
sources:
  - name: src
    connection: cluster
    schema: [{name: card, type: string}]
    options: {topic: cards, format: json}
sinks:
  - {name: out, connection: cluster, connector: kafka, inputs: [src], options: {topic: cards-out, format: json}}
";
    let pipelines = "/api/v1/teams/payments/pipelines";
    let (status, body) =
        f.call(Caller::Developer, Method::POST, pipelines, Some(json!({ "spec": spec }))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let typo = spec.replace("connection: cluster\n", "connection: clutser\n");
    let (_, checked) = f
        .call(
            Caller::Developer,
            Method::POST,
            "/api/v1/teams/payments/validate",
            Some(json!({ "spec": typo })),
        )
        .await;
    assert_eq!(checked["valid"], false, "{checked}");
    assert_eq!(checked["errors"][0]["path"], "sources[0].connection", "{checked}");
    assert_eq!(checked["errors"][0]["suggestion"], "did you mean \"cluster\"?", "{checked}");
    let (status, body) =
        f.call(Caller::Developer, Method::POST, &format!("{pipelines}/enrich/deploy"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for dataset in ["kafka:cards", "kafka:cards-out"] {
        let (status, body) =
            f.call(Caller::Viewer, Method::GET, &format!("/api/v1/datasets/{dataset}"), None).await;
        assert_eq!((status, body["owner"].as_str()), (StatusCode::OK, Some("payments")), "{dataset}: {body}");
    }
    let (status, body) = f.call(Caller::Viewer, Method::GET, &format!("{base}/cluster"), None).await;
    assert_eq!((status, &body["used_by"]), (StatusCode::OK, &json!(["enrich"])), "{body}");

    // In use: a change that contradicts a spec, and deletion, are refused; a compatible change is fine.
    let postgres = json!({ "connector": "postgres", "options": { "url": "postgres://x@127.0.0.1/db" } });
    let (status, body) =
        f.call(Caller::Developer, Method::PUT, &format!("{base}/cluster"), Some(postgres)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("connection_breaks_pipelines"))
    );
    let broken = &body["error"]["details"]["pipelines"][0];
    assert_eq!(
        (broken["pipeline"].as_str(), broken["errors"][0]["path"].as_str()),
        (Some("enrich"), Some("sinks[0].connector")),
        "{body}"
    );
    let (status, body) = f.call(Caller::Developer, Method::DELETE, &format!("{base}/cluster"), None).await;
    assert_eq!(
        (status, &body["error"]["details"]["used_by"]),
        (StatusCode::CONFLICT, &json!(["enrich"])),
        "{body}"
    );
    let moved =
        json!({ "connector": "kafka", "description": "moved", "options": { "brokers": "127.0.0.1:2" } });
    let (status, body) =
        f.call(Caller::Developer, Method::PUT, &format!("{base}/cluster"), Some(moved)).await;
    assert_eq!((status, body["description"].as_str()), (StatusCode::OK, Some("moved")), "{body}");
    let renamed = json!({ "name": "other", "connector": "kafka" });
    let (status, body) =
        f.call(Caller::Developer, Method::PUT, &format!("{base}/cluster"), Some(renamed)).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("name"))
    );
    let (status, _) = f
        .call(Caller::Developer, Method::PUT, &format!("{base}/fresh"), Some(json!({ "connector": "http" })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "PUT creates a missing connection");
    let (_, listed) = f.call(Caller::Viewer, Method::GET, base, None).await;
    let names: Vec<&str> =
        listed["connections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cluster", "events", "fresh"]);
    let (status, _) = f.call(Caller::OtherTeamAdmin, Method::GET, &format!("{base}/cluster"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A new version without it is not enough while the deployed one names it; once no version
    // in use does, it goes.
    let inline = spec
        .replace("connection: cluster\n", "connector: kafka\n")
        .replace("connection: cluster, ", "")
        .replace("options: {topic", "options: {brokers: 'b:1', topic");
    assert!(!inline.contains("connection"), "{inline}");
    let (status, body) = f
        .call(Caller::Developer, Method::PUT, &format!("{pipelines}/enrich"), Some(json!({ "spec": inline })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = f.call(Caller::Developer, Method::DELETE, &format!("{base}/cluster"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "version 1 is still deployed");
    let (status, body) =
        f.call(Caller::Developer, Method::POST, &format!("{pipelines}/enrich/stop"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) =
        f.call(Caller::Developer, Method::DELETE, &format!("{pipelines}/enrich"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = f.call(Caller::Developer, Method::DELETE, &format!("{base}/cluster"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = f.call(Caller::Viewer, Method::GET, &format!("{base}/cluster"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A secret named by a connection or by a pipeline version in use cannot be deleted.
    let vault = json!({ "connector": "http", "options": { "headers": { "x-key": "${env:SLUICE_SECRET_KAFKA_PW}" } } });
    let (status, _) = f.call(Caller::Developer, Method::PUT, &format!("{base}/vault"), Some(vault)).await;
    assert_eq!(status, StatusCode::CREATED);
    let direct = SPEC.replace("name: orders", "name: direct").replace(
        "options: {path: out, format: jsonl}",
        "options: {path: out, format: jsonl, note: SLUICE_SECRET_KAFKA_PW}",
    );
    let (status, body) =
        f.call(Caller::Developer, Method::POST, pipelines, Some(json!({ "spec": direct }))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret_path = "/api/v1/teams/payments/secrets/kafka-pw";
    let (status, body) = f.call(Caller::Developer, Method::DELETE, secret_path, None).await;
    assert_eq!(
        (status, &body["error"]["details"]["used_by"]),
        (StatusCode::CONFLICT, &json!(["connection vault", "pipeline direct (version 1)"])),
        "{body}"
    );
    for path in [format!("{base}/vault"), format!("{pipelines}/direct")] {
        let (status, body) = f.call(Caller::Developer, Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}: {body}");
    }
    let (status, _) = f.call(Caller::Developer, Method::DELETE, secret_path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "unused now");

    // A deleted team takes its secrets and connections along: a new team of that name starts bare.
    let (status, body) =
        f.call(Caller::PlatformAdmin, Method::POST, "/api/v1/teams", Some(json!({ "name": "temp" }))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let temp = "/api/v1/teams/temp";
    let secret = json!({ "value": "temp-secret-value" });
    let connection = json!({ "connector": "http", "options": { "url": "${env:SLUICE_SECRET_TOKEN}" } });
    for (path, body) in
        [(format!("{temp}/secrets/token"), secret), (format!("{temp}/connections/api"), connection)]
    {
        let (status, answer) = f.call(Caller::PlatformAdmin, Method::PUT, &path, Some(body)).await;
        assert!(status.is_success(), "{path}: {answer}");
    }
    let (status, _) = f.call(Caller::PlatformAdmin, Method::DELETE, temp, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) =
        f.call(Caller::PlatformAdmin, Method::POST, "/api/v1/teams", Some(json!({ "name": "temp" }))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, secrets) = f.call(Caller::PlatformAdmin, Method::GET, &format!("{temp}/secrets"), None).await;
    let (_, connections) =
        f.call(Caller::PlatformAdmin, Method::GET, &format!("{temp}/connections"), None).await;
    assert_eq!((&secrets["secrets"], &connections["connections"]), (&json!([]), &json!([])));
    f.drop_database().await;
}

#[tokio::test]
async fn connections_sqlite() {
    connections(Db::Sqlite).await;
}

#[tokio::test]
async fn connections_postgres() {
    connections(Db::Postgres).await;
}

/// The metrics endpoints read the current run's snapshot file: before any run a 200 that says
/// there is nothing yet; once the worker wrote one, the snapshot with its age and the state;
/// and every pipeline in the Prometheus text format, for platform admins only.
#[tokio::test]
async fn pipeline_metrics_come_from_the_current_runs_snapshot_file() {
    use sluice_control::lifecycle::State;
    use sluice_control::metrics::{CheckpointMark, MetricsSnapshot, NodeMetrics, NodeRole};
    use sluice_control::store::{Observed, Store, now_ms};

    let f = Fixture::new(Db::Sqlite).await;
    let path = "/api/v1/teams/payments/pipelines/orders/metrics";
    let (status, body) = f.call(Caller::Viewer, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["state"].as_str(), body["run"].as_i64(), &body["nodes"]),
        (Some("created"), Some(0), &json!([])),
        "{body}"
    );
    assert_eq!(body["message"], "no metrics yet: the pipeline has not run");
    assert!(body.get("age_ms").is_none(), "{body}");

    // The supervisor starts run 1 (recorded here by hand: no worker program runs in these tests).
    let database = format!("sqlite://{}", f.dir.path().join("sluice.db").display());
    let store = Store::connect(&database).await.unwrap();
    let record = store.pipeline("payments", "orders").await.unwrap().unwrap();
    let mut now = record.actual.clone();
    (now.state, now.runs, now.reason) = (State::Running, 1, "worker started".into());
    let observed = Observed {
        from: record.actual.state,
        now,
        consumed_pending: None,
        consumed_resume: None,
        stop_desired_at_generation: None,
    };
    store.observe("payments", "orders", &observed).await.unwrap();
    let (status, body) = f.call(Caller::Viewer, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["nodes"], json!([]), "{body}");
    assert_eq!(body["message"], "no metrics yet: run 1 has not written its first snapshot");

    // Its worker writes a snapshot, taken 1.5 s ago.
    let node = |name: &str, role, records_in, records_out| NodeMetrics {
        name: name.into(),
        role,
        records_in,
        records_out,
        bytes_in: records_in * 8,
        bytes_out: records_out * 8,
        state_bytes: 0,
        lag: 0,
        busy_seconds: 0.01,
        busy: 0.001,
        records_in_per_second: 2.0,
        records_out_per_second: 2.0,
    };
    let snapshot = MetricsSnapshot {
        at_ms: now_ms() - 1500,
        uptime_ms: 4000,
        interval_ms: 1000,
        workers: 1,
        ended: false,
        checkpoint: Some(CheckpointMark { id: 3, created_at_ms: now_ms() - 2000, duration_ms: 5 }),
        nodes: vec![node("src", NodeRole::Source, 0, 10), node("out", NodeRole::Sink, 8, 8)],
    };
    let runs = sluice_control::supervisor::pipeline_dir(f.dir.path(), "payments", "orders").join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    snapshot.write(&runs.join("1.metrics.json")).unwrap();
    let (status, body) = f.call(Caller::Viewer, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let nodes: Vec<(&str, &str, u64, u64)> = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap(),
                n["role"].as_str().unwrap(),
                n["records_in"].as_u64().unwrap(),
                n["records_out"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(nodes, [("src", "source", 0, 10), ("out", "sink", 8, 8)]);
    let age = body["age_ms"].as_i64().unwrap();
    assert!((1500..60_000).contains(&age), "{body}");
    assert_eq!((body["state"].as_str(), body["run"].as_i64()), (Some("running"), Some(1)));
    assert_eq!((body["checkpoint"]["id"].as_u64(), body["uptime_ms"].as_u64()), (Some(3), Some(4000)));
    assert!(body.get("message").is_none(), "a running pipeline's fresh snapshot needs no message: {body}");

    // Prometheus: platform admins only, text in the exposition format.
    for caller in [Caller::Viewer, Caller::TeamAdmin] {
        let (status, body) = f.call(caller, Method::GET, "/api/v1/metrics", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{caller:?}: {body}");
    }
    let request = Request::get("/api/v1/metrics")
        .header("authorization", format!("Bearer {}", f.token(Caller::PlatformAdmin).unwrap()))
        .body(Body::empty())
        .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = String::from_utf8(axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec())
        .unwrap();
    for line in [
        "sluice_pipeline_state{team=\"payments\",pipeline=\"orders\",state=\"running\"} 1",
        "sluice_pipeline_state{team=\"payments\",pipeline=\"orders\",state=\"created\"} 0",
        "sluice_pipeline_runs_total{team=\"payments\",pipeline=\"orders\"} 1",
        "sluice_node_records_out_total{team=\"payments\",pipeline=\"orders\",node=\"src\",role=\"source\"} 10",
        "sluice_node_records_in_total{team=\"payments\",pipeline=\"orders\",node=\"out\",role=\"sink\"} 8",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }
}
