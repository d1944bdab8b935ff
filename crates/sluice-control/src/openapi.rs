//! The OpenAPI 3 document, generated from the route table so it lists exactly what the router
//! serves, with each route's access rule.

use serde_json::{Map, Value, json};

use crate::api::routes;
use crate::auth::Access;

/// The document served at `/api/v1/openapi.json`.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (route, _) in routes() {
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut operation = json!({
            "summary": route.summary,
            "operationId": operation_id(route.method.as_str(), route.path),
            "parameters": parameters,
            "x-sluice-access": route.access.to_string(),
            "responses": {
                "2XX": { "description": "Success", "content": { route.produces(): {} } },
                "default": {
                    "description": "An error",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            }
        });
        if route.access == Access::Public {
            operation["security"] = json!([]);
        }
        if route.method != "GET" && route.method != "DELETE" {
            operation["requestBody"] = json!({
                "required": false,
                "content": { "application/json": {}, "application/yaml": {} }
            });
        }
        let entry = paths.entry(route.path.to_string()).or_insert_with(|| json!({}));
        entry[route.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Sluice control plane", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": { "type": "string" },
                                "message": { "type": "string" },
                                "details": {}
                            }
                        }
                    }
                }
            }
        }
    })
}

fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .trim_start_matches("/api/v1/")
        .split('/')
        .map(|segment| segment.trim_start_matches('{').trim_end_matches('}'))
        .collect();
    format!("{}_{}", method.to_ascii_lowercase(), words.join("_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once_with_its_access_rule() {
        let document = document();
        let routes = routes();
        let mut count = 0;
        for (path, methods) in document["paths"].as_object().unwrap() {
            for (method, operation) in methods.as_object().unwrap() {
                count += 1;
                let route = routes
                    .iter()
                    .find(|(r, _)| r.path == path && r.method.as_str().eq_ignore_ascii_case(method))
                    .unwrap_or_else(|| panic!("{method} {path} is documented but not routed"));
                assert_eq!(operation["x-sluice-access"], route.0.access.to_string());
            }
        }
        assert_eq!(count, routes.len());
    }

    #[test]
    fn text_answers_are_documented_as_text() {
        let document = document();
        let media = |path: &str| {
            let content = document["paths"][path]["get"]["responses"]["2XX"]["content"].as_object().unwrap();
            content.keys().cloned().collect::<Vec<_>>()
        };
        assert_eq!(media("/api/v1/metrics"), ["text/plain; version=0.0.4; charset=utf-8"]);
        assert_eq!(media("/api/v1/teams/{team}/pipelines/{pipeline}/logs"), ["text/plain; charset=utf-8"]);
        assert_eq!(media("/api/v1/teams/{team}/pipelines/{pipeline}/metrics"), ["application/json"]);
    }
}
