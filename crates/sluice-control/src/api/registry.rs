//! A team's schema registry, following the Confluent Schema Registry REST API v1 so that
//! standard clients (Confluent's serializers, Sluice's Kafka connector) work against it
//! unchanged. Base URL: `/api/v1/teams/{team}/registry`. Answers are
//! `application/vnd.schemaregistry.v1+json`; errors are `{"error_code", "message"}`
//! ([`RegistryError`]). Schema ids are unique across the control plane; a team sees only its
//! own. Decisions (parsing, normalization, compatibility) live in [`crate::registry`].

use axum::Extension;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{App, Params, Segments};
use crate::auth::Principal;
use crate::error::{ApiError, REGISTRY_MEDIA_TYPE, RegistryError};
use crate::registry::{self, Level, Schema, SchemaType};
use crate::store::{RegistryVersion, StoredSchema};

type RegistryResult<T> = Result<T, RegistryError>;

/// A registry answer: JSON (or a raw schema) as `application/vnd.schemaregistry.v1+json`.
pub struct Reply(String);

impl Reply {
    fn json(value: Value) -> Reply {
        Reply(value.to_string())
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, REGISTRY_MEDIA_TYPE)], self.0).into_response()
    }
}

/// Path segments, with errors in the registry's shape.
pub struct RegistryPath<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for RegistryPath<T> {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> RegistryResult<Self> {
        let Segments(segments) = Segments::from_request_parts(parts, state).await?;
        Ok(RegistryPath(segments))
    }
}

/// Query parameters, with errors in the registry's shape. Unknown parameters are ignored.
pub struct RegistryQuery(Query);

/// Every query parameter a registry route reads; booleans are read as clients write them
/// (`true`, `True`, `1`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    deleted: Option<String>,
    permanent: Option<String>,
    default_to_global: Option<String>,
    verbose: Option<String>,
    subject_prefix: Option<String>,
}

fn flag(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

impl<S: Send + Sync> FromRequestParts<S> for RegistryQuery {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> RegistryResult<Self> {
        let Params(query) = Params::from_request_parts(parts, state).await?;
        Ok(RegistryQuery(query))
    }
}

/// Media types a registry request body may be sent as.
const ACCEPTED_BODIES: &[&str] = &[
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
];

/// A JSON request body, with errors in the registry's shape; an empty body reads as `{}`.
pub struct RegistryBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for RegistryBody<T> {
    type Rejection = RegistryError;

    async fn from_request(request: Request, state: &S) -> RegistryResult<Self> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let media = content_type.split(';').next().unwrap_or("").trim().to_string();
        if !media.is_empty() && !ACCEPTED_BODIES.contains(&media.as_str()) {
            return Err(RegistryError::new(
                415,
                format!("unsupported Content-Type \"{media}\": send {}", ACCEPTED_BODIES.join(", ")),
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|error| RegistryError::new(400, format!("cannot read the request body: {error}")))?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map(RegistryBody).map_err(|error| {
            RegistryError::new(400, format!("the request body is not the JSON this endpoint takes: {error}"))
        })
    }
}

/// Body of registration, lookup and compatibility checks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaBody {
    schema: Option<String>,
    schema_type: Option<String>,
    references: Option<Value>,
    metadata: Option<Value>,
    rule_set: Option<Value>,
}

impl SchemaBody {
    /// The schema, checked: 42201 says what is wrong.
    fn parse(&self) -> RegistryResult<Schema> {
        let invalid = |message: String| RegistryError::new(42201, message);
        let schema_type = SchemaType::from_request(self.schema_type.as_deref()).map_err(invalid)?;
        match &self.references {
            None | Some(Value::Null) => {}
            Some(Value::Array(references)) if references.is_empty() => {}
            Some(_) => {
                return Err(invalid(
                    "schema references are not supported yet: inline the referenced types into the schema"
                        .into(),
                ));
            }
        }
        for (field, value) in [("metadata", &self.metadata), ("ruleSet", &self.rule_set)] {
            if !matches!(value, None | Some(Value::Null)) {
                return Err(invalid(format!("\"{field}\" (data contracts) is not supported; leave it out")));
            }
        }
        let Some(text) = &self.schema else {
            return Err(invalid("the body needs \"schema\": the schema's text as a JSON string".into()));
        };
        Schema::parse(schema_type, text).map_err(invalid)
    }
}

/// Body of `PUT /config` and `PUT /config/{subject}`.
#[derive(Deserialize)]
pub struct ConfigBody {
    compatibility: Option<String>,
}

fn schema_not_found(id: &str) -> RegistryError {
    RegistryError::new(40403, format!("Schema {id} not found"))
}

fn subject_not_found(subject: &str) -> RegistryError {
    RegistryError::new(40401, format!("Subject '{subject}' not found."))
}

fn schema_id(id: &str) -> RegistryResult<i64> {
    id.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| schema_not_found(id))
}

/// `{"schema"}` plus `"schemaType"` unless it is Avro (Confluent leaves it out for Avro).
fn with_type(mut body: Value, stored: &StoredSchema) -> Value {
    body["schema"] = json!(stored.text);
    if stored.schema_type != SchemaType::Avro.name() {
        body["schemaType"] = json!(stored.schema_type);
    }
    body
}

async fn stored(app: &App, team: &str, id: i64) -> RegistryResult<StoredSchema> {
    app.store.registry_schema(team, id).await?.ok_or_else(|| schema_not_found(&id.to_string()))
}

/// `GET /schemas/ids/{id}`.
pub async fn schema_by_id(
    State(app): State<App>,
    RegistryPath((team, id)): RegistryPath<(String, String)>,
) -> RegistryResult<Reply> {
    let stored = stored(&app, &team, schema_id(&id)?).await?;
    Ok(Reply::json(with_type(json!({}), &stored)))
}

/// `GET /schemas/ids/{id}/schema`: the schema itself.
pub async fn raw_schema_by_id(
    State(app): State<App>,
    RegistryPath((team, id)): RegistryPath<(String, String)>,
) -> RegistryResult<Reply> {
    Ok(Reply(stored(&app, &team, schema_id(&id)?).await?.text))
}

/// `GET /schemas/ids/{id}/versions`: `[{"subject", "version"}]`.
pub async fn schema_versions(
    State(app): State<App>,
    RegistryPath((team, id)): RegistryPath<(String, String)>,
    RegistryQuery(query): RegistryQuery,
) -> RegistryResult<Reply> {
    let id = stored(&app, &team, schema_id(&id)?).await?.id;
    let uses = app.store.registry_schema_uses(&team, id, flag(&query.deleted)).await?;
    Ok(Reply::json(Value::Array(
        uses.into_iter()
            .map(|(subject, version)| json!({ "subject": subject, "version": version }))
            .collect(),
    )))
}

/// `GET /schemas/types`.
pub async fn schema_types() -> Reply {
    Reply::json(json!(SchemaType::ALL.map(SchemaType::name)))
}

/// `GET /subjects`.
pub async fn subjects(
    State(app): State<App>,
    RegistryPath(team): RegistryPath<String>,
    RegistryQuery(query): RegistryQuery,
) -> RegistryResult<Reply> {
    let mut subjects = app.store.registry_subjects(&team, flag(&query.deleted)).await?;
    if let Some(prefix) = &query.subject_prefix {
        subjects.retain(|subject| subject.starts_with(prefix.as_str()));
    }
    Ok(Reply::json(json!(subjects)))
}

/// A subject's versions, live ones only unless `include_deleted`; 40401 when there are none.
async fn versions_of(
    app: &App,
    team: &str,
    subject: &str,
    include_deleted: bool,
) -> RegistryResult<Vec<RegistryVersion>> {
    let versions: Vec<RegistryVersion> = app
        .store
        .registry_versions(team, subject)
        .await?
        .into_iter()
        .filter(|version| include_deleted || !version.deleted)
        .collect();
    if versions.is_empty() {
        return Err(subject_not_found(subject));
    }
    Ok(versions)
}

/// A version as written in a path: a positive number, `latest` or `-1`; `None` is latest.
fn version_number(text: &str) -> RegistryResult<Option<i64>> {
    if text == "latest" || text == "-1" {
        return Ok(None);
    }
    match text.parse::<i64>() {
        Ok(number) if (1..=i64::from(i32::MAX)).contains(&number) => Ok(Some(number)),
        _ => Err(RegistryError::new(
            42202,
            format!(
                "The specified version '{text}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )),
    }
}

/// The version `text` names among `versions` (ordered oldest first).
fn pick(versions: &[RegistryVersion], text: &str, subject: &str) -> RegistryResult<RegistryVersion> {
    let found = match version_number(text)? {
        None => versions.last(),
        Some(number) => versions.iter().find(|version| version.version == number),
    };
    found.cloned().ok_or_else(|| {
        RegistryError::new(40402, format!("Version {text} not found for subject '{subject}'."))
    })
}

/// Version `text` (a number, `latest` or `-1`) of `subject`, among its deleted versions too
/// with `include_deleted`; the version text is checked before the subject is looked up.
async fn version_of(
    app: &App,
    team: &str,
    subject: &str,
    text: &str,
    include_deleted: bool,
) -> RegistryResult<RegistryVersion> {
    version_number(text)?;
    let versions = versions_of(app, team, subject, include_deleted).await?;
    pick(&versions, text, subject)
}

/// `GET /subjects/{subject}/versions`.
pub async fn subject_versions(
    State(app): State<App>,
    RegistryPath((team, subject)): RegistryPath<(String, String)>,
    RegistryQuery(query): RegistryQuery,
) -> RegistryResult<Reply> {
    let versions = versions_of(&app, &team, &subject, flag(&query.deleted)).await?;
    Ok(Reply::json(json!(versions.iter().map(|v| v.version).collect::<Vec<_>>())))
}

async fn version_body(
    app: &App,
    team: &str,
    subject: &str,
    version: &RegistryVersion,
) -> RegistryResult<Value> {
    let stored = stored(app, team, version.schema_id).await?;
    Ok(with_type(json!({ "subject": subject, "version": version.version, "id": stored.id }), &stored))
}

/// `GET /subjects/{subject}/versions/{version}`.
pub async fn subject_version(
    State(app): State<App>,
    RegistryPath((team, subject, version)): RegistryPath<(String, String, String)>,
    RegistryQuery(query): RegistryQuery,
) -> RegistryResult<Reply> {
    let found = version_of(&app, &team, &subject, &version, flag(&query.deleted)).await?;
    Ok(Reply::json(version_body(&app, &team, &subject, &found).await?))
}

/// `GET /subjects/{subject}/versions/{version}/schema`: the schema itself.
pub async fn subject_version_schema(
    State(app): State<App>,
    RegistryPath((team, subject, version)): RegistryPath<(String, String, String)>,
    RegistryQuery(query): RegistryQuery,
) -> RegistryResult<Reply> {
    let found = version_of(&app, &team, &subject, &version, flag(&query.deleted)).await?;
    Ok(Reply(stored(&app, &team, found.schema_id).await?.text))
}

/// The compatibility level in force for `subject`: its own, else the team's, else BACKWARD.
async fn level(app: &App, team: &str, subject: Option<&str>) -> RegistryResult<Level> {
    let set = match subject {
        Some(subject) => match app.store.registry_level(team, Some(subject)).await? {
            Some(level) => Some(level),
            None => app.store.registry_level(team, None).await?,
        },
        None => app.store.registry_level(team, None).await?,
    };
    match set {
        None => Ok(Level::Backward),
        Some(name) => name.parse().map_err(|_| {
            RegistryError::new(50001, format!("stored compatibility level \"{name}\" is not known"))
        }),
    }
}

/// The stored schemas of `versions`, with their version numbers.
async fn stored_versions(
    app: &App,
    team: &str,
    versions: &[RegistryVersion],
) -> RegistryResult<Vec<(i64, StoredSchema)>> {
    let mut schemas = Vec::with_capacity(versions.len());
    for version in versions {
        schemas.push((version.version, stored(app, team, version.schema_id).await?));
    }
    Ok(schemas)
}

/// Stored schemas, parsed again.
fn parse_stored(stored: Vec<(i64, StoredSchema)>) -> RegistryResult<Vec<(i64, Schema)>> {
    stored
        .into_iter()
        .map(|(version, stored)| {
            let schema_type = SchemaType::from_request(Some(&stored.schema_type)).map_err(|reason| {
                RegistryError::new(50001, format!("stored schema {}: {reason}", stored.id))
            })?;
            let schema = Schema::parse(schema_type, &stored.text).map_err(|reason| {
                RegistryError::new(50001, format!("stored schema {} no longer parses: {reason}", stored.id))
            })?;
            Ok((version, schema))
        })
        .collect()
}

/// Runs schema parsing and compatibility checks (CPU work, as large as a client's schema) on
/// the blocking pool, so one request cannot hold up the async workers.
async fn off_the_executor<T: Send + 'static>(
    work: impl FnOnce() -> RegistryResult<T> + Send + 'static,
) -> RegistryResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(%error, "a schema check failed");
        RegistryError::new(50001, "the schema check failed unexpectedly (a bug); the server log says why")
    })?
}

/// Every reason `schema` may not follow `earlier` at `level`; 42201 when the schemas are too
/// complex to compare.
fn problems_with(
    level: Level,
    schema: &Schema,
    earlier: Vec<(i64, StoredSchema)>,
) -> RegistryResult<Vec<String>> {
    let earlier = parse_stored(earlier)?;
    registry::check(level, schema, &earlier).map_err(|too_complex| RegistryError::new(42201, too_complex.0))
}

/// `POST /subjects/{subject}/versions`: registers a schema, or answers the id it already has
/// in the subject.
pub async fn register(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    RegistryPath((team, subject)): RegistryPath<(String, String)>,
    RegistryBody(body): RegistryBody<SchemaBody>,
) -> RegistryResult<Reply> {
    let schema = off_the_executor(move || body.parse()).await?;
    let type_name = schema.schema_type.name();
    let live: Vec<RegistryVersion> =
        app.store.registry_versions(&team, &subject).await?.into_iter().filter(|v| !v.deleted).collect();
    if let Some(id) = app.store.registry_schema_id(&team, type_name, &schema.normalized).await?
        && live.iter().any(|version| version.schema_id == id)
    {
        return Ok(Reply::json(json!({ "id": id })));
    }
    let level = level(&app, &team, Some(&subject)).await?;
    let earlier = stored_versions(&app, &team, &live).await?;
    let (schema, problems) = off_the_executor(move || {
        let problems = problems_with(level, &schema, earlier)?;
        Ok((schema, problems))
    })
    .await?;
    if !problems.is_empty() {
        return Err(RegistryError::new(
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" (compatibility {level}): {}",
                problems.join("; ")
            ),
        ));
    }
    let (id, _) =
        app.store.registry_register(&team, &subject, type_name, &schema.normalized, &principal.user).await?;
    Ok(Reply::json(json!({ "id": id })))
}

/// `POST /subjects/{subject}`: the version of the subject holding this schema.
pub async fn lookup(
    State(app): State<App>,
    RegistryPath((team, subject)): RegistryPath<(String, String)>,
    RegistryQuery(query): RegistryQuery,
    RegistryBody(body): RegistryBody<SchemaBody>,
) -> RegistryResult<Reply> {
    let schema = off_the_executor(move || body.parse()).await?;
    let versions = versions_of(&app, &team, &subject, flag(&query.deleted)).await?;
    let id = app.store.registry_schema_id(&team, schema.schema_type.name(), &schema.normalized).await?;
    let found = id
        .and_then(|id| versions.iter().rev().find(|version| version.schema_id == id))
        .ok_or_else(|| RegistryError::new(40403, format!("Schema not found under subject '{subject}'")))?;
    Ok(Reply::json(version_body(&app, &team, &subject, found).await?))
}

/// `DELETE /subjects/{subject}`: soft deletion, or with `permanent=true` removal of a
/// soft-deleted subject. Answers the versions deleted.
pub async fn delete_subject(
    State(app): State<App>,
    RegistryPath((team, subject)): RegistryPath<(String, String)>,
    RegistryQuery(query): RegistryQuery,
) -> RegistryResult<Reply> {
    let versions = versions_of(&app, &team, &subject, true).await?;
    let live: Vec<i64> = versions.iter().filter(|v| !v.deleted).map(|v| v.version).collect();
    if flag(&query.permanent) {
        if !live.is_empty() {
            return Err(RegistryError::new(
                40405,
                format!(
                    "Subject '{subject}' was not deleted first before being permanently deleted; delete it without permanent=true first"
                ),
            ));
        }
        app.store.registry_permanent_delete(&team, &subject, None).await?;
        return Ok(Reply::json(json!(versions.iter().map(|v| v.version).collect::<Vec<_>>())));
    }
    if live.is_empty() {
        return Err(RegistryError::new(
            40404,
            format!("Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"),
        ));
    }
    app.store.registry_soft_delete(&team, &subject, None).await?;
    Ok(Reply::json(json!(live)))
}

/// `DELETE /subjects/{subject}/versions/{version}`: like [`delete_subject`] for one version.
pub async fn delete_version(
    State(app): State<App>,
    RegistryPath((team, subject, version)): RegistryPath<(String, String, String)>,
    RegistryQuery(query): RegistryQuery,
) -> RegistryResult<Reply> {
    version_number(&version)?;
    let permanent = flag(&query.permanent);
    let all = versions_of(&app, &team, &subject, true).await?;
    let found = if version_number(&version)?.is_none() && !permanent {
        let live: Vec<RegistryVersion> = all.iter().filter(|v| !v.deleted).cloned().collect();
        pick(&live, &version, &subject)?
    } else {
        pick(&all, &version, &subject)?
    };
    let number = found.version;
    if permanent {
        if !found.deleted {
            return Err(RegistryError::new(
                40407,
                format!(
                    "Subject '{subject}' Version {number} was not deleted first before being permanently deleted; delete it without permanent=true first"
                ),
            ));
        }
        app.store.registry_permanent_delete(&team, &subject, Some(number)).await?;
    } else {
        if found.deleted {
            return Err(RegistryError::new(
                40406,
                format!(
                    "Subject '{subject}' Version {number} was soft deleted. Set permanent=true to delete permanently"
                ),
            ));
        }
        app.store.registry_soft_delete(&team, &subject, Some(number)).await?;
    }
    Ok(Reply::json(json!(number)))
}

fn level_of(body: &ConfigBody) -> RegistryResult<Level> {
    let name = body.compatibility.as_deref().unwrap_or("");
    name.parse().map_err(|message| RegistryError::new(42203, message))
}

/// `GET /config`: the team's default level.
pub async fn get_config(
    State(app): State<App>,
    RegistryPath(team): RegistryPath<String>,
) -> RegistryResult<Reply> {
    let level = level(&app, &team, None).await?;
    Ok(Reply::json(json!({ "compatibilityLevel": level.name() })))
}

/// `PUT /config`: sets the team's default level.
pub async fn put_config(
    State(app): State<App>,
    RegistryPath(team): RegistryPath<String>,
    RegistryBody(body): RegistryBody<ConfigBody>,
) -> RegistryResult<Reply> {
    let level = level_of(&body)?;
    app.store.set_registry_level(&team, None, level.name()).await?;
    Ok(Reply::json(json!({ "compatibility": level.name() })))
}

/// `GET /config/{subject}`: the subject's own level (or with `defaultToGlobal=true`, the one
/// in force).
pub async fn get_subject_config(
    State(app): State<App>,
    RegistryPath((team, subject)): RegistryPath<(String, String)>,
    RegistryQuery(query): RegistryQuery,
) -> RegistryResult<Reply> {
    let level = match app.store.registry_level(&team, Some(&subject)).await? {
        Some(name) => name
            .parse()
            .map_err(|_| RegistryError::new(50001, format!("stored level \"{name}\" is not known")))?,
        None if flag(&query.default_to_global) => level(&app, &team, None).await?,
        None => {
            return Err(RegistryError::new(
                40408,
                format!("Subject '{subject}' does not have subject-level compatibility configured"),
            ));
        }
    };
    Ok(Reply::json(json!({ "compatibilityLevel": level.name() })))
}

/// `PUT /config/{subject}`.
pub async fn put_subject_config(
    State(app): State<App>,
    RegistryPath((team, subject)): RegistryPath<(String, String)>,
    RegistryBody(body): RegistryBody<ConfigBody>,
) -> RegistryResult<Reply> {
    let level = level_of(&body)?;
    app.store.set_registry_level(&team, Some(&subject), level.name()).await?;
    Ok(Reply::json(json!({ "compatibility": level.name() })))
}

/// `DELETE /config/{subject}`: the subject follows the team's level again; answers the level
/// it had.
pub async fn delete_subject_config(
    State(app): State<App>,
    RegistryPath((team, subject)): RegistryPath<(String, String)>,
) -> RegistryResult<Reply> {
    let own = app.store.registry_level(&team, Some(&subject)).await?;
    if own.is_none() && app.store.registry_versions(&team, &subject).await?.is_empty() {
        return Err(subject_not_found(&subject));
    }
    let previous = level(&app, &team, Some(&subject)).await?;
    app.store.delete_registry_level(&team, Some(&subject)).await?;
    Ok(Reply::json(json!({ "compatibilityLevel": previous.name() })))
}

/// `POST /compatibility/subjects/{subject}/versions/{version}`: whether the schema could be
/// registered next to that version (`latest`: next to every version the subject's level
/// looks at; compatible when the subject has none). `verbose=true` adds the reasons.
pub async fn check_compatibility(
    State(app): State<App>,
    RegistryPath((team, subject, version)): RegistryPath<(String, String, String)>,
    RegistryQuery(query): RegistryQuery,
    RegistryBody(body): RegistryBody<SchemaBody>,
) -> RegistryResult<Reply> {
    let schema = off_the_executor(move || body.parse()).await?;
    let against = match version_number(&version)? {
        None => {
            let live: Vec<RegistryVersion> = app
                .store
                .registry_versions(&team, &subject)
                .await?
                .into_iter()
                .filter(|v| !v.deleted)
                .collect();
            // As Confluent's registry answers: nothing registered yet, nothing to be incompatible
            // with.
            if live.is_empty() {
                return Ok(compatibility_answer(&[], flag(&query.verbose)));
            }
            live
        }
        Some(_) => vec![pick(&versions_of(&app, &team, &subject, false).await?, &version, &subject)?],
    };
    let level = level(&app, &team, Some(&subject)).await?;
    let earlier = stored_versions(&app, &team, &against).await?;
    let problems = off_the_executor(move || problems_with(level, &schema, earlier)).await?;
    Ok(compatibility_answer(&problems, flag(&query.verbose)))
}

/// `{"is_compatible"}`, with `"messages"` (the reasons) when `verbose`.
fn compatibility_answer(problems: &[String], verbose: bool) -> Reply {
    let mut answer = json!({ "is_compatible": problems.is_empty() });
    if verbose {
        answer["messages"] = json!(problems);
    }
    Reply::json(answer)
}

/// Answers an error of the rest of the API in the registry's shape (authentication,
/// authorization, unknown team).
pub fn registry_error(error: ApiError) -> Response {
    RegistryError::from(error).into_response()
}
