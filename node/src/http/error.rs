//! [`ApiError`]: every HTTP error answer, as `{"error":{"code":"...","message":"..."}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cfgnode_storage::StoreError;
use cfgnode_transport::codes;
use serde_json::json;

use crate::cluster::{ClusterError, RouteError};
use crate::error::error_code;

/// An error answer: a status, a stable machine-readable code, and a message saying what to do.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status; `ApiError::from_code` takes it from the one code table.
    pub status: StatusCode,
    /// A stable code clients can match on (`key_not_found`, `version_mismatch`, ...).
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// An error with `code` (`cfgnode_transport::codes`) and the status the one code table
    /// gives it, so QUIC and HTTP answers of the same failure agree. An internal one is logged.
    pub fn from_code(code: &'static str, message: impl Into<String>) -> Self {
        if code == codes::INTERNAL {
            return Self::internal(message);
        }
        let status = StatusCode::from_u16(codes::http_status(code))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, code, message)
    }

    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, codes::UNAUTHENTICATED, message)
    }

    /// 500 `internal`, logged: the message is the server's fault, not the caller's.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(%message, "internal error answering a request");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from_code(error_code(&e), e.to_string())
    }
}

/// The HTTP edge of the cluster's errors (the QUIC edge is `From<ClusterError> for WireError`).
impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        ApiError::from_code(e.code(), e.to_string())
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        ApiError::from_code(e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The result type of every handler.
pub type ApiResult<T> = Result<T, ApiError>;
