//! [`ApiError`]: every HTTP error answer, as `{"error":{"code":"...","message":"..."}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cfgnode_storage::StoreError;
use serde_json::json;

/// An error answer: a status, a stable machine-readable code, and a message saying what to do.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
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

    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 500 `internal`, logged: the message is the server's fault, not the caller's.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(%message, "internal error answering a request");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            StoreError::InvalidNamespace { .. } => (S::BAD_REQUEST, "invalid_namespace"),
            StoreError::InvalidKey { .. } => (S::BAD_REQUEST, "invalid_key"),
            StoreError::UnknownCodec { .. } => (S::BAD_REQUEST, "unknown_codec"),
            StoreError::CodecMismatch { .. } => (S::BAD_REQUEST, "codec_mismatch"),
            StoreError::Invalid(_) => (S::BAD_REQUEST, "invalid_request"),
            StoreError::ValueTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "value_too_large"),
            StoreError::NamespaceNotFound { .. } => (S::NOT_FOUND, "namespace_not_found"),
            StoreError::KeyNotFound { .. } => (S::NOT_FOUND, "key_not_found"),
            StoreError::AliasNotFound { .. } => (S::NOT_FOUND, "alias_not_found"),
            StoreError::VersionNotFound { .. } => (S::NOT_FOUND, "version_not_found"),
            StoreError::AlreadyExists { .. } => (S::CONFLICT, "already_exists"),
            StoreError::DoesNotExist { .. } => (S::CONFLICT, "does_not_exist"),
            StoreError::VersionMismatch { .. } => (S::CONFLICT, "version_mismatch"),
            StoreError::NameTaken(_) => (S::CONFLICT, "name_taken"),
            StoreError::WriterStopped => (S::SERVICE_UNAVAILABLE, "unavailable"),
            StoreError::NodeIdMismatch { .. }
            | StoreError::InUse { .. }
            | StoreError::Corrupt(_)
            | StoreError::Storage(_) => return ApiError::internal(e.to_string()),
        };
        ApiError::new(status, code, e.to_string())
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
