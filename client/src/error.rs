//! [`ClientError`]: what can go wrong with a call, typed so callers can tell apart the cases they
//! handle differently.

use cfgnode_transport::WireError;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The key, namespace, alias or version does not exist.
    #[error("not found ({code}): {message}")]
    NotFound {
        /// The server's code (`key_not_found`, `namespace_not_found`, ...).
        code: String,
        /// The server's message.
        message: String,
    },
    /// A write condition failed: create on an existing key, update on a missing one, a version
    /// mismatch, a name clash. Read again and decide; retrying as is will fail again.
    #[error("conflict ({code}): {message}")]
    Conflict {
        /// The server's code (`version_mismatch`, `already_exists`, ...).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The request is malformed: a bad name, codec, value, or one over the size limit.
    #[error("invalid request ({code}): {message}")]
    Invalid {
        /// The server's code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The token is missing or wrong.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// No node could be reached or every node refused for now (connection failures, shutdown,
    /// open circuit breakers). Worth retrying later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call did not finish within its timeout. A write may or may not have been applied:
    /// read before writing again.
    #[error(
        "timed out after {0:?} (if this was a write, it may or may not have been applied: read before retrying)"
    )]
    Timeout(std::time::Duration),
    /// The server failed or answered something this client does not understand.
    #[error("server error ({code}): {message}")]
    Server {
        /// The server's code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The client is misconfigured (no addresses, unreadable certificate, ...).
    #[error("client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// Maps a server's error answer onto the typed variants by its stable code.
    pub fn from_wire(error: WireError) -> Self {
        let WireError { code, message } = error;
        match code.as_str() {
            c if c.ends_with("_not_found") => ClientError::NotFound { code, message },
            "already_exists" | "does_not_exist" | "version_mismatch" | "name_taken" => {
                ClientError::Conflict { code, message }
            }
            "invalid_namespace"
            | "invalid_key"
            | "unknown_codec"
            | "codec_mismatch"
            | "invalid_request"
            | "value_too_large"
            | "frame_too_large"
            | "malformed"
            | "unsupported_version"
            | "wrong_cluster"
            | "invalid_watch"
            | "invalid_instance"
            | "invalid_subscription"
            | "invalid_route"
            | "no_ttl_check" => ClientError::Invalid { code, message },
            "unauthenticated" => ClientError::Unauthenticated(message),
            "unavailable" => ClientError::Unavailable(message),
            _ => ClientError::Server { code, message },
        }
    }

    /// The server's error code, when the error came from a server.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::NotFound { code, .. }
            | ClientError::Conflict { code, .. }
            | ClientError::Invalid { code, .. }
            | ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when trying the same idempotent call again (maybe on another node) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unavailable(_) | ClientError::Timeout(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        let e = |c: &str| ClientError::from_wire(WireError::new(c, "m"));
        assert!(matches!(e("key_not_found"), ClientError::NotFound { .. }));
        assert!(matches!(
            e("version_mismatch"),
            ClientError::Conflict { .. }
        ));
        assert!(matches!(e("codec_mismatch"), ClientError::Invalid { .. }));
        assert!(matches!(e("invalid_route"), ClientError::Invalid { .. }));
        assert!(matches!(
            e("proxy_route_not_found"),
            ClientError::NotFound { .. }
        ));
        assert!(matches!(
            e("unauthenticated"),
            ClientError::Unauthenticated(_)
        ));
        assert!(matches!(e("unavailable"), ClientError::Unavailable(_)));
        assert!(matches!(e("brand_new_code"), ClientError::Server { .. }));
        assert_eq!(e("name_taken").code(), Some("name_taken"));
        assert!(e("unavailable").is_transient());
        assert!(!e("key_not_found").is_transient());
    }
}
