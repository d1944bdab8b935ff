//! The built-in schema registry through the router, as Confluent clients call it: HTTP Basic
//! with the API token as password, `application/vnd.schemaregistry.v1+json` bodies, and
//! Confluent-shaped errors (`{"error_code", "message"}`, status = the code's first 3 digits).

use base64::Engine;

use super::*;

const MEDIA: &str = "application/vnd.schemaregistry.v1+json";

const ORDER_V1: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"},
    {"name": "item", "type": "string"}
]}"#;

/// V1 plus a field with a default: backward compatible.
const ORDER_V2: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"},
    {"name": "item", "type": "string"},
    {"name": "note", "type": ["null", "string"], "default": null}
]}"#;

/// V2 plus a field without a default: new readers cannot read old data.
const ORDER_NO_DEFAULT: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"},
    {"name": "item", "type": "string"},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "qty", "type": "int"}
]}"#;

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Fixture {
    /// `method` on `path` under team `team`'s registry, as a Confluent client sends it.
    async fn registry_in(
        &self,
        caller: Caller,
        team: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request =
            Request::builder().method(method).uri(format!("/api/v1/teams/{team}/registry{path}"));
        if let Some(token) = self.token(caller) {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("someone:{token}"));
            request = request.header("authorization", format!("Basic {basic}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", MEDIA);
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.answer(request.body(body).unwrap()).await
    }

    async fn registry(&self, caller: Caller, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.registry_in(caller, "payments", method, path, body).await
    }

    async fn answer(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Answer { status, content_type, body }
    }
}

/// Asserts a Confluent error: its status, code and a part of its message.
#[track_caller]
fn assert_error(answer: &Answer, error_code: u64, message_part: &str) {
    let status = u16::try_from(error_code.to_string()[..3].parse::<u64>().unwrap()).unwrap();
    assert_eq!(
        (answer.status.as_u16(), answer.body["error_code"].as_u64()),
        (status, Some(error_code)),
        "{}",
        answer.body
    );
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(message.contains(message_part), "message {message:?} should contain {message_part:?}");
    assert_eq!(answer.content_type, MEDIA);
}

fn avro(schema: &str) -> Value {
    json!({ "schema": schema })
}

fn normalized(schema: &str) -> String {
    serde_json::from_str::<Value>(schema).unwrap().to_string()
}

async fn registry(db: Db) {
    use Caller::{Developer as Dev, Viewer};
    let f = Fixture::new(db).await;

    let types = f.registry(Viewer, Method::GET, "/schemas/types", None).await;
    assert_eq!(
        (types.status, &types.body, types.content_type.as_str()),
        (StatusCode::OK, &json!(["AVRO", "JSON"]), MEDIA)
    );

    // Registration is idempotent: the same schema (whitespace and key order aside) keeps its id.
    let first = f.registry(Dev, Method::POST, "/subjects/orders-value/versions", Some(avro(ORDER_V1))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.content_type, MEDIA);
    let id1 = first.body["id"].as_i64().unwrap();
    let reordered = r#"{"name":"Order","type":"record","fields":[{"type":"long","name":"id"},{"type":"string","name":"item"}],"namespace":"shop"}"#;
    let again = f.registry(Dev, Method::POST, "/subjects/orders-value/versions", Some(avro(reordered))).await;
    assert_eq!(again.body, json!({ "id": id1 }));
    let versions = f.registry(Viewer, Method::GET, "/subjects/orders-value/versions", None).await;
    assert_eq!(versions.body, json!([1]));
    let subjects = f.registry(Viewer, Method::GET, "/subjects", None).await;
    assert_eq!(subjects.body, json!(["orders-value"]));

    // Reading versions and schemas; Avro answers leave schemaType out, as Confluent's do.
    let expected =
        json!({ "subject": "orders-value", "version": 1, "id": id1, "schema": normalized(ORDER_V1) });
    for version in ["1", "latest", "-1"] {
        let answer = f
            .registry(Viewer, Method::GET, &format!("/subjects/orders-value/versions/{version}"), None)
            .await;
        assert_eq!((answer.status, &answer.body), (StatusCode::OK, &expected), "{version}");
    }
    let raw = f.registry(Viewer, Method::GET, "/subjects/orders-value/versions/1/schema", None).await;
    assert_eq!(raw.body, serde_json::from_str::<Value>(ORDER_V1).unwrap());
    let by_id = f.registry(Viewer, Method::GET, &format!("/schemas/ids/{id1}"), None).await;
    assert_eq!(by_id.body, json!({ "schema": normalized(ORDER_V1) }));
    let raw = f.registry(Viewer, Method::GET, &format!("/schemas/ids/{id1}/schema"), None).await;
    assert_eq!(raw.body, serde_json::from_str::<Value>(ORDER_V1).unwrap());
    for (path, code, message) in [
        ("/subjects/orders-value/versions/0", 42202, "'0' is not a valid version id"),
        ("/subjects/orders-value/versions/one", 42202, "'one' is not a valid version id"),
        ("/subjects/orders-value/versions/7", 40402, "Version 7 not found"),
        ("/subjects/nothing/versions/1", 40401, "Subject 'nothing' not found"),
        ("/subjects/nothing/versions", 40401, "Subject 'nothing' not found"),
        ("/schemas/ids/999999", 40403, "Schema 999999 not found"),
        ("/schemas/ids/x", 40403, "Schema x not found"),
        ("/no-such-endpoint", 404, "endpoint"),
    ] {
        assert_error(&f.registry(Viewer, Method::GET, path, None).await, code, message);
    }

    // The same schema under another subject reuses its id; another team never sees it.
    let copy = f.registry(Dev, Method::POST, "/subjects/orders-copy/versions", Some(avro(ORDER_V1))).await;
    assert_eq!(copy.body, json!({ "id": id1 }));
    let uses = f.registry(Viewer, Method::GET, &format!("/schemas/ids/{id1}/versions"), None).await;
    assert_eq!(
        uses.body,
        json!([{ "subject": "orders-copy", "version": 1 }, { "subject": "orders-value", "version": 1 }])
    );
    let other = Caller::OtherTeamAdmin;
    assert_error(
        &f.registry_in(other, "risk", Method::GET, &format!("/schemas/ids/{id1}"), None).await,
        40403,
        "not found",
    );
    assert_eq!(f.registry_in(other, "risk", Method::GET, "/subjects", None).await.body, json!([]));
    let theirs = f
        .registry_in(other, "risk", Method::POST, "/subjects/orders-value/versions", Some(avro(ORDER_V1)))
        .await;
    let risk_id = theirs.body["id"].as_i64().unwrap();
    assert_ne!(risk_id, id1, "ids are unique across the control plane");
    assert_error(
        &f.registry(Viewer, Method::GET, &format!("/schemas/ids/{risk_id}"), None).await,
        40403,
        "not found",
    );

    // Invalid schemas and unsupported requests: 42201 with what and where.
    let invalid = r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "strng"}]}"#;
    for (body, message) in [
        (avro(invalid), "invalid Avro schema: fields[1].type: unknown type \"strng\""),
        (avro("{not json"), "the schema is not JSON"),
        (json!({}), "the body needs \"schema\""),
        (
            json!({ "schema": ORDER_V1, "references": [{ "name": "x", "subject": "s", "version": 1 }] }),
            "references are not supported yet",
        ),
        (
            json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" }),
            "only AVRO and JSON are supported",
        ),
        (json!({ "schema": "[1]", "schemaType": "JSON" }), "a JSON Schema is a JSON object or a boolean"),
        (
            json!({ "schema": r#"{"type": "object", "properties": {"a": {"type": 5}}}"#, "schemaType": "JSON" }),
            "invalid JSON Schema: at #/properties/a/type: 5 is not a type",
        ),
        (
            json!({ "schema": ORDER_V1, "ruleSet": { "domainRules": [] } }),
            "\"ruleSet\" (data contracts) is not supported",
        ),
    ] {
        let answer =
            f.registry(Dev, Method::POST, "/subjects/orders-value/versions", Some(body.clone())).await;
        assert_error(&answer, 42201, message);
    }

    // Evolution: a compatible schema is version 2; an incompatible one is refused with why.
    let second = f.registry(Dev, Method::POST, "/subjects/orders-value/versions", Some(avro(ORDER_V2))).await;
    let id2 = second.body["id"].as_i64().unwrap();
    assert_ne!(id2, id1);
    let latest = f.registry(Viewer, Method::GET, "/subjects/orders-value/versions/latest", None).await;
    assert_eq!((latest.body["version"].as_i64(), latest.body["id"].as_i64()), (Some(2), Some(id2)));
    let refused =
        f.registry(Dev, Method::POST, "/subjects/orders-value/versions", Some(avro(ORDER_NO_DEFAULT))).await;
    assert_error(
        &refused,
        409,
        "Schema being registered is incompatible with an earlier schema for subject \"orders-value\" (compatibility BACKWARD): \
         the new schema cannot read data written with version 2: at /fields/3: the reader's field \"qty\" of record \"shop.Order\" \
         has no default value and is missing from the writer's schema",
    );
    let narrowed = ORDER_V2.replace(r#""name": "id", "type": "long""#, r#""name": "id", "type": "int""#);
    let refused =
        f.registry(Dev, Method::POST, "/subjects/orders-value/versions", Some(avro(&narrowed))).await;
    assert_error(&refused, 409, "at /fields/0/type: the writer's long cannot be read as int");

    // Lookup.
    let found = f.registry(Viewer, Method::POST, "/subjects/orders-value", Some(avro(ORDER_V1))).await;
    assert_eq!(found.body, expected);
    assert_error(
        &f.registry(Viewer, Method::POST, "/subjects/orders-value", Some(avro(ORDER_NO_DEFAULT))).await,
        40403,
        "Schema not found",
    );
    assert_error(
        &f.registry(Viewer, Method::POST, "/subjects/nothing", Some(avro(ORDER_V1))).await,
        40401,
        "Subject 'nothing' not found",
    );

    // Compatibility checks without registering.
    let path = "/compatibility/subjects/orders-value/versions/latest";
    let answer = f.registry(Viewer, Method::POST, path, Some(avro(ORDER_NO_DEFAULT))).await;
    assert_eq!(answer.body, json!({ "is_compatible": false }));
    let answer =
        f.registry(Viewer, Method::POST, &format!("{path}?verbose=True"), Some(avro(ORDER_NO_DEFAULT))).await;
    assert_eq!(answer.body["is_compatible"], false);
    assert!(answer.body["messages"][0].as_str().unwrap().contains("\"qty\""), "{}", answer.body);
    let answer = f
        .registry(
            Viewer,
            Method::POST,
            "/compatibility/subjects/orders-value/versions/1",
            Some(avro(ORDER_V2)),
        )
        .await;
    assert_eq!(answer.body, json!({ "is_compatible": true }));
    assert_error(
        &f.registry(
            Viewer,
            Method::POST,
            "/compatibility/subjects/orders-value/versions/9",
            Some(avro(ORDER_V2)),
        )
        .await,
        40402,
        "Version 9",
    );

    // Against `latest` of a subject without versions, anything is compatible (as Confluent's
    // registry answers); a numeric version of it does not exist.
    for (path, expected) in [
        ("/compatibility/subjects/new-value/versions/latest", json!({ "is_compatible": true })),
        (
            "/compatibility/subjects/new-value/versions/-1?verbose=true",
            json!({ "is_compatible": true, "messages": [] }),
        ),
    ] {
        let answer = f.registry(Viewer, Method::POST, path, Some(avro(ORDER_V1))).await;
        assert_eq!((answer.status, &answer.body), (StatusCode::OK, &expected), "{path}");
    }
    assert_error(
        &f.registry(
            Viewer,
            Method::POST,
            "/compatibility/subjects/new-value/versions/1",
            Some(avro(ORDER_V1)),
        )
        .await,
        40401,
        "Subject 'new-value' not found",
    );
    assert_error(
        &f.registry(
            Viewer,
            Method::POST,
            "/compatibility/subjects/new-value/versions/latest",
            Some(avro("\"strng\"")),
        )
        .await,
        42201,
        "unknown type \"strng\"",
    );

    // Compatibility levels: the team's default, a subject's own, and NONE letting anything in.
    let config = f.registry(Viewer, Method::GET, "/config", None).await;
    assert_eq!(config.body, json!({ "compatibilityLevel": "BACKWARD" }));
    let set = f.registry(Dev, Method::PUT, "/config", Some(json!({ "compatibility": "FULL" }))).await;
    assert_eq!(set.body, json!({ "compatibility": "FULL" }));
    assert_eq!(
        f.registry(Viewer, Method::GET, "/config", None).await.body,
        json!({ "compatibilityLevel": "FULL" })
    );
    assert_error(
        &f.registry(Dev, Method::PUT, "/config", Some(json!({ "compatibility": "SIDEWAYS" }))).await,
        42203,
        "Invalid compatibility level \"SIDEWAYS\"",
    );
    assert_error(
        &f.registry(Viewer, Method::GET, "/config/orders-value", None).await,
        40408,
        "does not have subject-level compatibility",
    );
    let defaulted = f.registry(Viewer, Method::GET, "/config/orders-value?defaultToGlobal=true", None).await;
    assert_eq!(defaulted.body, json!({ "compatibilityLevel": "FULL" }));
    let set =
        f.registry(Dev, Method::PUT, "/config/orders-value", Some(json!({ "compatibility": "none" }))).await;
    assert_eq!(set.body, json!({ "compatibility": "NONE" }));
    let third =
        f.registry(Dev, Method::POST, "/subjects/orders-value/versions", Some(avro(ORDER_NO_DEFAULT))).await;
    assert_eq!(third.status, StatusCode::OK, "NONE checks nothing: {}", third.body);
    let removed = f.registry(Dev, Method::DELETE, "/config/orders-value", None).await;
    assert_eq!(removed.body, json!({ "compatibilityLevel": "NONE" }));
    assert_error(&f.registry(Viewer, Method::GET, "/config/orders-value", None).await, 40408, "orders-value");
    assert_error(&f.registry(Dev, Method::DELETE, "/config/nothing", None).await, 40401, "nothing");

    // JSON Schema: answers carry "schemaType": "JSON".
    let event = json!({ "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"], "additionalProperties": false });
    let body = json!({ "schema": event.to_string(), "schemaType": "JSON" });
    let registered = f.registry(Dev, Method::POST, "/subjects/events-value/versions", Some(body)).await;
    let json_id = registered.body["id"].as_i64().unwrap();
    let answer = f.registry(Viewer, Method::GET, &format!("/schemas/ids/{json_id}"), None).await;
    assert_eq!(answer.body, json!({ "schema": event.to_string(), "schemaType": "JSON" }));
    let answer = f.registry(Viewer, Method::GET, "/subjects/events-value/versions/1", None).await;
    assert_eq!(answer.body["schemaType"], "JSON");
    let required_age = json!({ "type": "object", "properties": { "name": { "type": "string" }, "age": { "type": "integer" } }, "required": ["name", "age"] });
    let refused = f
        .registry(
            Dev,
            Method::POST,
            "/subjects/events-value/versions",
            Some(json!({ "schema": required_age.to_string(), "schemaType": "JSON" })),
        )
        .await;
    assert_error(&refused, 409, "property \"age\" is required by the reader but not by the writer");

    // Deletion: soft first, then permanent, as Confluent requires.
    assert_error(
        &f.registry(Dev, Method::DELETE, "/subjects/orders-copy?permanent=true", None).await,
        40405,
        "was not deleted first",
    );
    let deleted = f.registry(Dev, Method::DELETE, "/subjects/orders-copy", None).await;
    assert_eq!(deleted.body, json!([1]));
    assert_eq!(
        f.registry(Viewer, Method::GET, "/subjects", None).await.body,
        json!(["events-value", "orders-value"])
    );
    let all = f.registry(Viewer, Method::GET, "/subjects?deleted=true", None).await;
    assert_eq!(all.body, json!(["events-value", "orders-copy", "orders-value"]));
    assert_error(
        &f.registry(Viewer, Method::GET, "/subjects/orders-copy/versions", None).await,
        40401,
        "orders-copy",
    );
    assert_error(
        &f.registry(Dev, Method::DELETE, "/subjects/orders-copy", None).await,
        40404,
        "was soft deleted",
    );
    let gone = f.registry(Dev, Method::DELETE, "/subjects/orders-copy?permanent=true", None).await;
    assert_eq!(gone.body, json!([1]));
    assert_error(&f.registry(Dev, Method::DELETE, "/subjects/orders-copy", None).await, 40401, "orders-copy");
    // The schema stays readable by id while a version (orders-value 1) holds it.
    assert_eq!(
        f.registry(Viewer, Method::GET, &format!("/schemas/ids/{id1}"), None).await.status,
        StatusCode::OK
    );

    let deleted = f.registry(Dev, Method::DELETE, "/subjects/orders-value/versions/1", None).await;
    assert_eq!(deleted.body, json!(1));
    assert_error(
        &f.registry(Dev, Method::DELETE, "/subjects/orders-value/versions/1", None).await,
        40406,
        "was soft deleted",
    );
    assert_error(
        &f.registry(Dev, Method::DELETE, "/subjects/orders-value/versions/2?permanent=true", None).await,
        40407,
        "not deleted first",
    );
    assert_eq!(
        f.registry(Viewer, Method::GET, "/subjects/orders-value/versions", None).await.body,
        json!([2, 3])
    );
    let with_deleted =
        f.registry(Viewer, Method::GET, "/subjects/orders-value/versions?deleted=true", None).await;
    assert_eq!(with_deleted.body, json!([1, 2, 3]));
    // Consumers still resolve the id of a soft-deleted version.
    assert_eq!(
        f.registry(Viewer, Method::GET, &format!("/schemas/ids/{id1}"), None).await.status,
        StatusCode::OK
    );
    let gone =
        f.registry(Dev, Method::DELETE, "/subjects/orders-value/versions/1?permanent=true", None).await;
    assert_eq!(gone.body, json!(1));
    assert_error(
        &f.registry(Viewer, Method::GET, &format!("/schemas/ids/{id1}"), None).await,
        40403,
        "not found",
    );
    // Registered again, a schema gets its old id back and the next version number.
    f.registry(Dev, Method::PUT, "/config", Some(json!({ "compatibility": "BACKWARD" }))).await;
    let back = f.registry(Dev, Method::POST, "/subjects/orders-value/versions", Some(avro(ORDER_V1))).await;
    assert_eq!(back.body, json!({ "id": id1 }));
    assert_eq!(
        f.registry(Viewer, Method::GET, "/subjects/orders-value/versions", None).await.body,
        json!([2, 3, 4])
    );

    // Credentials and roles, answered in the registry's shape.
    let unauthenticated = f.registry(Caller::Anonymous, Method::GET, "/subjects", None).await;
    assert_error(&unauthenticated, 40101, "missing credentials");
    let request = Request::builder()
        .uri("/api/v1/teams/payments/registry/subjects")
        .header(
            "authorization",
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("x:slc_wrong")),
        )
        .body(Body::empty())
        .unwrap();
    assert_error(&f.answer(request).await, 40101, "the token is not valid");
    let request = Request::builder()
        .uri("/api/v1/teams/payments/registry/subjects")
        .header("authorization", "Basic !!!")
        .body(Body::empty())
        .unwrap();
    assert_error(&f.answer(request).await, 40101, "Basic credentials must be base64");
    assert_error(
        &f.registry(Viewer, Method::POST, "/subjects/orders-value/versions", Some(avro(ORDER_V1))).await,
        40301,
        "needs team developer",
    );
    assert_error(
        &f.registry_in(Viewer, "risk", Method::GET, "/subjects", None).await,
        40301,
        "needs team viewer",
    );
    // Bodies: the three accepted media types, and a clear refusal of others.
    for media in [
        "application/json",
        "application/octet-stream",
        "application/vnd.schemaregistry.v1+json; charset=utf-8",
        "text/plain",
    ] {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/teams/payments/registry/subjects/orders-value")
            .header("authorization", format!("Bearer {}", f.token(Dev).unwrap()))
            .header("content-type", media)
            .body(Body::from(avro(ORDER_V1).to_string()))
            .unwrap();
        let answer = f.answer(request).await;
        if media == "text/plain" {
            assert_error(&answer, 415, "unsupported Content-Type \"text/plain\"");
        } else {
            assert_eq!(answer.status, StatusCode::OK, "{media}: {}", answer.body);
        }
    }

    // Several workers of one sink register the same schema at once: one version, one id.
    let register = || f.registry(Dev, Method::POST, "/subjects/race-value/versions", Some(avro(ORDER_V1)));
    let (a, b, c, d) = tokio::join!(register(), register(), register(), register());
    let ids: Vec<Value> = [&a, &b, &c, &d].iter().map(|answer| answer.body["id"].clone()).collect();
    assert!(ids.iter().all(|id| id.is_i64() && *id == ids[0]), "{ids:?}");
    assert_eq!(f.registry(Viewer, Method::GET, "/subjects/race-value/versions", None).await.body, json!([1]));

    // Subjects are listed in byte order on both backends (PostgreSQL sorted by its collation:
    // "events-value", "Orders", "orders_y", ... under en-US).
    for subject in ["orders_y", "Orders", "orders-x"] {
        let answer = f
            .registry(Dev, Method::POST, &format!("/subjects/{subject}/versions"), Some(avro(ORDER_V2)))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    assert_eq!(
        f.registry(Viewer, Method::GET, "/subjects", None).await.body,
        json!(["Orders", "events-value", "orders-value", "orders-x", "orders_y", "race-value"])
    );
    assert_eq!(
        f.registry(Viewer, Method::GET, &format!("/schemas/ids/{id2}/versions"), None).await.body,
        json!([
            { "subject": "Orders", "version": 1 },
            { "subject": "orders-value", "version": 2 },
            { "subject": "orders-x", "version": 1 },
            { "subject": "orders_y", "version": 1 }
        ])
    );

    // Levels set at once for a subject without one: each is answered, one stands (PostgreSQL
    // once failed all but one on the unique key, with 500).
    let set = |level: &'static str| {
        f.registry(Dev, Method::PUT, "/config/race-value", Some(json!({ "compatibility": level })))
    };
    let answers =
        tokio::join!(set("FULL"), set("NONE"), set("FORWARD"), set("FULL"), set("NONE"), set("FORWARD"));
    for answer in [&answers.0, &answers.1, &answers.2, &answers.3, &answers.4, &answers.5] {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let level = f.registry(Viewer, Method::GET, "/config/race-value", None).await;
    assert!(["FULL", "NONE", "FORWARD"].contains(&level.body["compatibilityLevel"].as_str().unwrap()));

    // A deleted team takes its registry along: a new team of that name starts bare.
    let (status, _) =
        f.call(Caller::PlatformAdmin, Method::POST, "/api/v1/teams", Some(json!({ "name": "temp" }))).await;
    assert_eq!(status, StatusCode::CREATED);
    let admin = Caller::PlatformAdmin;
    let temp = f.registry_in(admin, "temp", Method::POST, "/subjects/s/versions", Some(avro(ORDER_V1))).await;
    let temp_id = temp.body["id"].as_i64().unwrap();
    f.registry_in(admin, "temp", Method::PUT, "/config", Some(json!({ "compatibility": "NONE" }))).await;
    let (status, _) = f.call(admin, Method::DELETE, "/api/v1/teams/temp", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = f.call(admin, Method::POST, "/api/v1/teams", Some(json!({ "name": "temp" }))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        f.registry_in(admin, "temp", Method::GET, "/subjects?deleted=true", None).await.body,
        json!([])
    );
    assert_error(
        &f.registry_in(admin, "temp", Method::GET, &format!("/schemas/ids/{temp_id}"), None).await,
        40403,
        "not found",
    );
    assert_eq!(
        f.registry_in(admin, "temp", Method::GET, "/config", None).await.body,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    let fresh =
        f.registry_in(admin, "temp", Method::POST, "/subjects/s/versions", Some(avro(ORDER_V1))).await;
    assert_ne!(fresh.body["id"].as_i64(), Some(temp_id), "ids are never reused");
    f.drop_database().await;
}

#[tokio::test]
async fn registry_sqlite() {
    registry(Db::Sqlite).await;
}

#[tokio::test]
async fn registry_postgres() {
    registry(Db::Postgres).await;
}

/// A union of records `T0` to `T{n}`, each `T{k}` with two optional fields of `T{k-1}`;
/// `T0` has `extra` for fields. (Written as a union, the chain stays shallow as JSON.)
fn record_chain(n: usize, extra: &str) -> String {
    let mut records = vec![format!(r#"{{"type": "record", "name": "T0", "fields": [{extra}]}}"#)];
    for k in 1..=n {
        let field = |name: &str| format!(r#"{{"name": "{name}", "type": ["null", "T{}"]}}"#, k - 1);
        records.push(format!(
            r#"{{"type": "record", "name": "T{k}", "fields": [{}, {}]}}"#,
            field("a"),
            field("b")
        ));
    }
    format!("[{}]", records.join(", "))
}

/// Schemas crafted to exhaust the server: each is answered, and the server goes on serving.
#[tokio::test]
async fn crafted_schemas_cannot_take_the_server_down() {
    use Caller::{Developer as Dev, Viewer};
    let f = Fixture::new(Db::Sqlite).await;

    // A record default that holds its own record once recursed until the stack overflowed,
    // aborting the process, on lookup (viewer), registration and compatibility checks alike.
    let own = r#"{"type":"record","name":"R","fields":[{"name":"next","type":"R","default":{}}]}"#;
    assert_error(&f.registry(Viewer, Method::POST, "/subjects/x", Some(avro(own))).await, 40401, "'x'");
    let registered = f.registry(Dev, Method::POST, "/subjects/x/versions", Some(avro(own))).await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.body);
    let answer =
        f.registry(Viewer, Method::POST, "/compatibility/subjects/x/versions/latest", Some(avro(own))).await;
    assert_eq!(answer.body, json!({ "is_compatible": true }));

    // Nesting beyond the limit is refused with where.
    let mut deep = String::from("\"int\"");
    for _ in 0..101 {
        deep = format!(r#"{{"type": "array", "items": {deep}}}"#);
    }
    let refused = f.registry(Dev, Method::POST, "/subjects/deep/versions", Some(avro(&deep))).await;
    assert_error(&refused, 42201, "nests types more than 100 levels deep");

    // Unions of records referring to records: 2^40 comparisons before verdicts were kept.
    let chain =
        f.registry(Dev, Method::POST, "/subjects/chain/versions", Some(avro(&record_chain(40, "")))).await;
    assert_eq!(chain.status, StatusCode::OK, "{}", chain.body);
    let needs_x = record_chain(40, r#"{"name": "x", "type": "int"}"#);
    let answer = f
        .registry(
            Viewer,
            Method::POST,
            "/compatibility/subjects/chain/versions/latest?verbose=true",
            Some(avro(&needs_x)),
        )
        .await;
    assert_eq!(answer.body["is_compatible"], false, "{}", answer.body);
    assert!(answer.body["messages"][0].as_str().unwrap().contains("record \"T0\""), "{}", answer.body);
    let answer = f
        .registry(
            Viewer,
            Method::POST,
            "/compatibility/subjects/chain/versions/1",
            Some(avro(&record_chain(40, ""))),
        )
        .await;
    assert_eq!(answer.body, json!({ "is_compatible": true }));
    f.drop_database().await;
}

/// A registration that loses every race for a version number is a store error (50001, retry),
/// not 409, which Confluent clients read as "incompatible". PostgreSQL is made to lose every
/// race by a trigger raising a unique violation on each insert of a version.
#[tokio::test]
async fn registration_losing_every_race_is_a_store_error_not_a_conflict() {
    let f = Fixture::new(Db::Postgres).await;
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", f.database.as_deref().unwrap());
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    for statement in [
        "CREATE FUNCTION lose_every_race() RETURNS trigger AS $$ BEGIN \
         RAISE unique_violation USING MESSAGE = 'lost a race (test trigger)'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER lose_every_race BEFORE INSERT ON registry_versions \
         FOR EACH ROW EXECUTE FUNCTION lose_every_race()",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let answer =
        f.registry(Caller::Developer, Method::POST, "/subjects/busy/versions", Some(avro(ORDER_V1))).await;
    assert_error(&answer, 50001, "is being changed by others at the same moment");
    assert!(answer.body["message"].as_str().unwrap().contains("try again"), "{}", answer.body);
    f.drop_database().await;
}
