//! Request bodies: JSON with errors in the API's format, and pipeline specs as YAML or JSON.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest accepted body.
const MAX_BODY: usize = 4 << 20;

/// A JSON body; an empty body reads as `{}` so optional-field requests need none.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read(request, state).await?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map(Body).map_err(|error| {
            ApiError::bad_request(format!("the request body is not what this endpoint takes: {error}"))
        })
    }
}

/// A pipeline spec: a YAML body (`Content-Type: application/yaml`), or JSON
/// `{"spec": "<YAML or JSON text>" | {...}, "parallelism": N}`.
pub struct SpecBody {
    /// The spec's text (JSON is kept as JSON: it is valid YAML).
    pub text: String,
    /// Worker threads asked for, if any.
    pub parallelism: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecJson {
    spec: serde_json::Value,
    #[serde(default)]
    parallelism: Option<i64>,
}

impl<S: Send + Sync> FromRequest<S> for SpecBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let bytes = read(request, state).await?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::bad_request("the request body is not UTF-8 text"))?;
        if content_type.contains("yaml") || content_type.starts_with("text/") {
            return Ok(SpecBody { text, parallelism: None });
        }
        if !content_type.is_empty() && !content_type.contains("json") {
            return Err(ApiError::bad_request(format!(
                "unsupported Content-Type \"{content_type}\": send application/yaml (the spec itself) or application/json ({{\"spec\": ...}})"
            )));
        }
        let body: SpecJson = serde_json::from_str(&text).map_err(|error| {
            ApiError::bad_request(format!(
                "the JSON body must be {{\"spec\": \"<YAML text>\" or {{...}}, \"parallelism\": N}}: {error}"
            ))
        })?;
        let text = match body.spec {
            serde_json::Value::String(text) => text,
            object @ serde_json::Value::Object(_) => serde_json::to_string_pretty(&object)
                .map_err(|error| ApiError::internal(format!("re-encoding the spec: {error}")))?,
            _ => return Err(ApiError::invalid("spec", "`spec` must be the spec's text or an object")),
        };
        Ok(SpecBody { text, parallelism: body.parallelism })
    }
}

async fn read<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(|error| ApiError::bad_request(format!("cannot read the request body: {error}")))?;
    if bytes.len() > MAX_BODY {
        return Err(ApiError::bad_request(format!("the request body is larger than {} MiB", MAX_BODY >> 20)));
    }
    Ok(bytes)
}

/// Query parameters, with errors in the API's format.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(params)| Params(params))
            .map_err(|error| {
                ApiError::bad_request(format!("query \"{query}\" is not valid here: {}", error.body_text()))
            })
    }
}

/// Path segments, with errors in the API's format.
pub struct Segments<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Segments<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(segments)| Segments(segments))
            .map_err(|error| {
                ApiError::bad_request(format!(
                    "path {} is not valid: {}",
                    parts.uri.path(),
                    error.body_text()
                ))
            })
    }
}
