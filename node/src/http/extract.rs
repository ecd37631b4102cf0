//! Extractors that turn axum's rejections into [`ApiError`]s, so malformed paths, queries and
//! bodies get the same JSON error shape as everything else.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use cfgnode_transport::codes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Like [`Query`], rejecting with a 400 `invalid_request`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Like [`Path`], rejecting with a 400 `invalid_request` (e.g. a path that is not UTF-8).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// The request body, rejecting an over-limit body with a 413 `value_too_large`.
#[derive(Debug)]
pub struct ApiBody(pub Bytes);

impl<S> FromRequest<S> for ApiBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(ApiBody)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::from_code(
                        codes::VALUE_TOO_LARGE,
                        "request body is over this node's limit (--max-value-bytes)",
                    )
                } else {
                    ApiError::bad_request(e.body_text())
                }
            })
    }
}

/// Parses a JSON request body into `T`, with a 400 naming what is wrong.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body is not the expected JSON: {e}")))
}
