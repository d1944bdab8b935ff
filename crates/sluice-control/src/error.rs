//! The one error type of the API: a status code, a stable machine-readable code, a message for
//! people and optional details (e.g. the spec diagnostics of a failed validation). Serialized as
//! `{"error": {"code", "message", "details"}}`. Schema-registry routes answer in the Confluent shape
//! instead ([`RegistryError`]), converted from [`ApiError`] in one place.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code, e.g. `invalid_spec`, `not_found`, `conflict`.
    pub code: &'static str,
    /// What went wrong and, where possible, how to fix it.
    pub message: String,
    /// Structured details, e.g. the list of spec diagnostics.
    pub details: Option<Value>,
}

/// Result of a handler or a store call.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: the request is well-formed but a field's value is not acceptable.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
        error.details = Some(serde_json::json!({ "field": field }));
        error
    }

    /// 401: no credentials, or credentials that are not valid.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such resource (or one the caller may not know exists).
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{} not found", what.into()))
    }

    /// 409: the resource's current state does not allow this.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 503: the server could not do it now (e.g. it lost races with concurrent writers); the
    /// same request may succeed if retried.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500: a fault of the server; the message says what failed, never secrets.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Attaches details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body =
            Body { error: Inner { code: self.code, message: &self.message, details: self.details.as_ref() } };
        (self.status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    /// The database's own message (table, constraint and column names, sometimes values) goes
    /// to the server log under an incident id; the caller gets the id, not the internals.
    fn from(error: sqlx::Error) -> Self {
        let incident = crate::auth::random_hex(4).unwrap_or_else(|_| "unknown".to_owned());
        tracing::error!(incident, %error, "metadata store error");
        ApiError::internal(format!(
            "the metadata store failed (incident {incident}); the server log has the details under that id"
        ))
    }
}

/// The media type of every schema-registry answer.
pub const REGISTRY_MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// An error of a schema-registry route, answered in the Confluent Schema Registry's shape
/// `{"error_code": 40401, "message": "..."}` with the HTTP status given by the code's first
/// three digits (40401 → 404; codes of three digits, such as 409, are the status itself).
///
/// Errors of the rest of the API ([`ApiError`], from authentication, authorization, the store
/// or body parsing) become registry errors through `From`, the one mapping between the shapes:
/// 401 → 40101, 403 → 40301, 5xx → 50001, any other status → itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    /// The Confluent error code.
    pub error_code: u32,
    /// What went wrong and, where possible, how to fix it.
    pub message: String,
}

impl RegistryError {
    /// An error with a Confluent error code.
    pub fn new(error_code: u32, message: impl Into<String>) -> Self {
        Self { error_code, message: message.into() }
    }

    /// The HTTP status: the error code's first three digits.
    pub fn status(&self) -> StatusCode {
        let mut code = self.error_code;
        while code >= 1000 {
            code /= 10;
        }
        StatusCode::from_u16(code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ApiError> for RegistryError {
    fn from(error: ApiError) -> Self {
        let error_code = match error.status.as_u16() {
            401 => 40101,
            403 => 40301,
            500..=599 => 50001,
            other => u32::from(other),
        };
        RegistryError { error_code, message: error.message }
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_code, self.message)
    }
}

impl std::error::Error for RegistryError {}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error_code = self.error_code, message = %self.message, "registry request failed");
        }
        let body = serde_json::json!({ "error_code": self.error_code, "message": self.message });
        (status, [(axum::http::header::CONTENT_TYPE, REGISTRY_MEDIA_TYPE)], body.to_string()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_reach_callers_as_an_incident_id_not_their_text() {
        let error = ApiError::from(sqlx::Error::Protocol(
            "duplicate key value violates unique constraint \"registry_versions_pkey\"".into(),
        ));
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(error.message.starts_with("the metadata store failed (incident "), "{}", error.message);
        assert!(!error.message.contains("registry_versions_pkey"), "{}", error.message);
    }

    #[test]
    fn registry_statuses_are_the_codes_first_three_digits() {
        for (code, status) in
            [(40401, 404), (42201, 422), (409, 409), (50001, 500), (40101, 401), (40301, 403)]
        {
            assert_eq!(RegistryError::new(code, "x").status().as_u16(), status, "{code}");
        }
        assert_eq!(RegistryError::from(ApiError::unauthenticated("x")).error_code, 40101);
        assert_eq!(RegistryError::from(ApiError::forbidden("x")).error_code, 40301);
        assert_eq!(RegistryError::from(ApiError::internal("x")).error_code, 50001);
        // Lost races are a store error (retryable), never 409, which clients read as
        // "incompatible".
        assert_eq!(RegistryError::from(ApiError::unavailable("x")).error_code, 50001);
        assert_eq!(RegistryError::from(ApiError::not_found("team")).error_code, 404);
    }
}
