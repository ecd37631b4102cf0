//! Seed 000's worker `/hit`: `POST /v1/namespaces/{ns}/hit {"method","url","headers","body"}`
//! makes one HTTP request on the caller's behalf, for agents that drive targets, and answers
//! what came back.
//!
//! Only URLs the namespace allows are requested: the namespace's config key `allow` holds a
//! JSON array of URL prefixes (`["http://127.0.0.1:9001/", "http://api.internal/v1/"]`), and
//! a URL is allowed when it starts with one of them after parsing and normalising (so
//! `http://api.internal/v1/../admin` does not slip through as `.../v1/`). No key, or a URL
//! outside the list: 403 `hit_not_allowed`. Redirects are not followed and no proxy from the
//! environment is used; the answer's body is read up to [`MAX_ANSWER`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cfgnode_storage::StoreError;
use cfgnode_transport::codes;
use serde_json::{Value, json};

use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiBody, ApiPath, json_body};
use crate::roles::Roles;

/// The config key holding a namespace's allowed URL prefixes.
pub const ALLOW_KEY: &str = "allow";
/// Longest answer body returned.
pub const MAX_ANSWER: usize = 1024 * 1024;
/// The timeout when the request names none, and the longest one may name.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// One request to make, checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Hit {
    /// `GET`, `POST`, ...
    pub method: reqwest::Method,
    /// The URL, normalised.
    pub url: reqwest::Url,
    /// Headers to send.
    pub headers: BTreeMap<String, String>,
    /// The body to send.
    pub body: Vec<u8>,
    /// How long the target may take.
    pub timeout: Duration,
}

/// Parses a `/hit` body; `Err` says which field is wrong.
pub fn parse_hit(body: &Value) -> Result<Hit, String> {
    let fields = body.as_object().ok_or("the body must be a JSON object")?;
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["method", "url", "headers", "body", "timeout"].contains(&k.as_str()))
    {
        return Err(format!(
            "{unknown}: is not a known field (method, url, headers, body, timeout)"
        ));
    }
    let method = match fields
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
    {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => {
            reqwest::Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())?
        }
        other => {
            return Err(format!(
                "method: {other:?} is not one of GET POST PUT DELETE PATCH HEAD OPTIONS"
            ));
        }
    };
    let url = fields
        .get("url")
        .and_then(Value::as_str)
        .ok_or("url: is required")?;
    let url = reqwest::Url::parse(url).map_err(|e| format!("url: {url:?} is not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err("url: only http:// URLs can be hit".to_string());
    }
    let mut headers = BTreeMap::new();
    if let Some(given) = fields.get("headers") {
        let given = given
            .as_object()
            .ok_or("headers: must be an object of strings")?;
        for (name, value) in given {
            let value = value
                .as_str()
                .ok_or_else(|| format!("headers.{name}: must be a string"))?;
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers.{name}: is not a header name"))?;
            reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("headers.{name}: is not a header value"))?;
            headers.insert(name.to_ascii_lowercase(), value.to_string());
        }
    }
    let body = match fields.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    let timeout = match fields.get("timeout").and_then(Value::as_str) {
        None => DEFAULT_TIMEOUT,
        Some(text) => humantime::parse_duration(text)
            .ok()
            .filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT)
            .ok_or_else(|| format!("timeout: {text:?} must be a duration up to 60s"))?,
    };
    Ok(Hit {
        method,
        url,
        headers,
        body,
        timeout,
    })
}

/// Whether `url` starts with one of the `allowed` prefixes, both normalised by the URL parser
/// (scheme, host and port compared exactly, then the path as a prefix).
pub fn allowed(url: &reqwest::Url, allowed: &[String]) -> bool {
    allowed.iter().any(|prefix| {
        let Ok(prefix) = reqwest::Url::parse(prefix) else {
            return false;
        };
        prefix.scheme() == url.scheme()
            && prefix.host_str() == url.host_str()
            && prefix.port_or_known_default() == url.port_or_known_default()
            && url.path().starts_with(prefix.path())
    })
}

/// `POST /v1/namespaces/{ns}/hit`.
pub async fn hit(
    State(roles): State<Arc<Roles>>,
    ApiPath(ns): ApiPath<String>,
    ApiBody(body): ApiBody,
) -> ApiResult<Json<Value>> {
    let body: Value = json_body(&body)?;
    let hit = parse_hit(&body).map_err(|why| ApiError::from_code(codes::INVALID_REQUEST, why))?;
    let allow = match roles.config.get(&ns, ALLOW_KEY).await {
        Ok(resolved) => serde_json::from_slice::<Vec<String>>(&resolved.entry.value).map_err(|_| {
            ApiError::from_code(
                codes::HIT_NOT_ALLOWED,
                format!("the key {ALLOW_KEY:?} of namespace {ns:?} is not a JSON array of URL prefixes"),
            )
        })?,
        Err(StoreError::KeyNotFound { .. } | StoreError::NamespaceNotFound { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    if !allowed(&hit.url, &allow) {
        return Err(ApiError::from_code(
            codes::HIT_NOT_ALLOWED,
            format!(
                "{} is not allowed: add a prefix of it to the JSON array in key {ALLOW_KEY:?} of namespace {ns:?}",
                hit.url
            ),
        ));
    }
    let client = hit_client().map_err(|e| ApiError::internal(format!("no HTTP client: {e}")))?;
    let mut request = client
        .request(hit.method.clone(), hit.url.clone())
        .timeout(hit.timeout);
    for (name, value) in &hit.headers {
        request = request.header(name, value);
    }
    let started = Instant::now();
    let answer = request.body(hit.body).send().await;
    let mut answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            let why = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            return Ok(Json(
                json!({"ok": false, "error": why, "elapsed_ms": started.elapsed().as_millis() as u64}),
            ));
        }
    };
    let status = answer.status().as_u16();
    let headers: BTreeMap<String, String> = answer
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Ok(Some(chunk)) = answer.chunk().await {
        if bytes.len() + chunk.len() > MAX_ANSWER {
            bytes.extend_from_slice(&chunk[..MAX_ANSWER - bytes.len()]);
            truncated = true;
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    let (body, encoding) = match String::from_utf8(bytes) {
        Ok(text) => (text, "text"),
        Err(e) => (STANDARD.encode(e.into_bytes()), "base64"),
    };
    Ok(Json(json!({
        "ok": true,
        "status": status,
        "headers": headers,
        "body": body,
        "body_encoding": encoding,
        "truncated": truncated,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    })))
}

/// The client of hits: no redirects (a 3xx is an answer, and could point outside the allow
/// list), no proxy from the environment.
fn hit_client() -> reqwest::Result<reqwest::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> reqwest::Url {
        reqwest::Url::parse(u).expect("url")
    }

    #[test]
    fn allow_lists_match_normalised_prefixes() {
        let allow = vec![
            "http://api.internal/v1/".to_string(),
            "http://127.0.0.1:9001/".to_string(),
        ];
        assert!(allowed(&url("http://api.internal/v1/users?x=1"), &allow));
        assert!(allowed(&url("http://127.0.0.1:9001/anything"), &allow));
        assert!(
            !allowed(&url("http://api.internal/v1/../admin"), &allow),
            "dot segments are resolved first"
        );
        assert!(
            !allowed(&url("http://api.internal:8080/v1/"), &allow),
            "another port"
        );
        assert!(!allowed(&url("http://api.internal.evil.com/v1/"), &allow));
        assert!(!allowed(&url("http://127.0.0.1:9002/"), &allow));
        assert!(
            !allowed(&url("http://127.0.0.1:9001/"), &[]),
            "no list, nothing allowed"
        );
    }

    #[test]
    fn hits_parse_and_refuse_with_the_field() {
        let hit = parse_hit(&json!({"method": "POST", "url": "http://h/x", "headers": {"X-A": "1"}, "body": {"k": 1}}))
            .expect("parses");
        assert_eq!(hit.method, reqwest::Method::POST);
        assert_eq!(hit.headers["x-a"], "1");
        assert_eq!(hit.body, br#"{"k":1}"#);
        for (body, field) in [
            (json!({"url": "ftp://h/"}), "url"),
            (json!({}), "url"),
            (json!({"url": "http://h/", "method": "BREW"}), "method"),
            (
                json!({"url": "http://h/", "headers": {"a b": "x"}}),
                "headers.a b",
            ),
            (json!({"url": "http://h/", "timeout": "2h"}), "timeout"),
            (json!({"url": "http://h/", "extra": 1}), "extra"),
        ] {
            let why = parse_hit(&body).expect_err("refused");
            assert!(why.starts_with(field), "{why} names {field}");
        }
    }
}
