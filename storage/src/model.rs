//! The data model's names and values: namespace names, keys, codecs, and their validation.
//!
//! Pure functions, no IO. Every boundary (HTTP, QUIC, the writer) validates with these, so a bad
//! name is refused the same way wherever it arrives.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 128;
/// Longest key (and alias name), in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Longest record kind (`instance`, `route`, ...), in bytes.
pub const MAX_RECORD_KIND_LEN: usize = 32;
/// Longest `client:...` codec name, in bytes (including the `client:` prefix).
pub const MAX_CODEC_LEN: usize = 64;

/// Checks a user-facing namespace name: `[a-z0-9][a-z0-9._-]{0,127}`.
///
/// Names starting with `_` belong to the system and are refused here; the system uses
/// [`validate_system_namespace`] for its own.
pub fn validate_namespace(name: &str) -> Result<(), StoreError> {
    let invalid = |why: &str| StoreError::InvalidNamespace {
        name: truncate_for_error(name),
        reason: why.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_NAMESPACE_LEN {
        return Err(invalid("it is longer than 128 bytes"));
    }
    if name.starts_with('_') {
        return Err(invalid(
            "names starting with '_' are reserved for the system",
        ));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(invalid("it must start with a lowercase letter or a digit"));
    }
    if !name.bytes().all(is_namespace_byte) {
        return Err(invalid(
            "only lowercase letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// Checks a system namespace name: `_` followed by a valid user-style name.
pub fn validate_system_namespace(name: &str) -> Result<(), StoreError> {
    match name.strip_prefix('_') {
        Some(rest) if !rest.is_empty() && rest.len() < MAX_NAMESPACE_LEN => {
            validate_namespace(rest).map_err(|_| StoreError::InvalidNamespace {
                name: truncate_for_error(name),
                reason: "not a valid system namespace name".to_string(),
            })
        }
        _ => Err(StoreError::InvalidNamespace {
            name: truncate_for_error(name),
            reason: "system namespace names start with '_'".to_string(),
        }),
    }
}

fn is_namespace_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
}

/// Checks a key (or an alias name): a UTF-8 `/`-separated path of 1..=512 bytes with no control
/// characters and no empty segment (so no leading, trailing or doubled `/`).
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let invalid = |why: &str| StoreError::InvalidKey {
        key: truncate_for_error(key),
        reason: why.to_string(),
    };
    if key.is_empty() {
        return Err(invalid("it is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid("it is longer than 512 bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err(invalid("it contains a control character"));
    }
    if key.split('/').any(str::is_empty) {
        return Err(invalid(
            "it has an empty segment (a leading, trailing or doubled '/')",
        ));
    }
    Ok(())
}

/// Checks a record kind: `[a-z][a-z0-9_]{0,31}`. A kind is a short name a role chooses for one
/// family of its records (`instance`, `subscription`, `route`); keeping it to identifier
/// characters lets roles and the JSON event view use it as-is.
pub fn validate_record_kind(kind: &str) -> Result<(), StoreError> {
    let invalid = |why: &str| StoreError::InvalidRecordKind {
        kind: truncate_for_error(kind),
        reason: why.to_string(),
    };
    let Some(&first) = kind.as_bytes().first() else {
        return Err(invalid("it is empty"));
    };
    if kind.len() > MAX_RECORD_KIND_LEN {
        return Err(invalid("it is longer than 32 bytes"));
    }
    if !first.is_ascii_lowercase() {
        return Err(invalid("it must start with a lowercase letter"));
    }
    if !kind
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid(
            "only lowercase letters, digits and '_' are allowed",
        ));
    }
    Ok(())
}

/// Shortens user input echoed back in an error so a 1 MiB garbage name cannot bloat a response.
fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// How a value's bytes are to be read. Values of known codecs are validated on write;
/// `client:...` codecs are opaque labels chosen by applications.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Codec {
    /// A JSON document.
    Json,
    /// A YAML document.
    Yaml,
    /// A TOML document.
    Toml,
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Bytes,
    /// An application-defined codec, `client:<name>`; the value is not inspected.
    Client(String),
}

impl Codec {
    /// The codecs the server knows how to validate, in a stable order.
    pub const KNOWN: [Codec; 5] = [
        Codec::Json,
        Codec::Yaml,
        Codec::Toml,
        Codec::Text,
        Codec::Bytes,
    ];

    /// The codec's name as it appears on the wire (`json`, `client:proto`, ...).
    pub fn name(&self) -> &str {
        match self {
            Codec::Json => "json",
            Codec::Yaml => "yaml",
            Codec::Toml => "toml",
            Codec::Text => "text",
            Codec::Bytes => "bytes",
            Codec::Client(name) => name,
        }
    }

    /// The HTTP content type a raw value of this codec is served with.
    pub fn content_type(&self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Yaml => "application/yaml",
            Codec::Toml => "application/toml",
            Codec::Text => "text/plain; charset=utf-8",
            Codec::Bytes | Codec::Client(_) => "application/octet-stream",
        }
    }

    /// A one-line description, for `GET /v1/codecs`.
    pub fn description(&self) -> &'static str {
        match self {
            Codec::Json => "a JSON document; validated on write; diffs are structural",
            Codec::Yaml => "a YAML document; validated on write",
            Codec::Toml => "a TOML document; validated on write",
            Codec::Text => "UTF-8 text; validated on write",
            Codec::Bytes => "arbitrary bytes; not inspected",
            Codec::Client(_) => "an application-defined codec; not inspected",
        }
    }

    /// Checks that `value` is a well-formed document of this codec.
    ///
    /// CPU work proportional to the value: callers run it before queueing a write so the single
    /// writer thread never parses documents.
    pub fn validate(&self, value: &[u8]) -> Result<(), StoreError> {
        let mismatch = |detail: String| StoreError::CodecMismatch {
            codec: self.name().to_string(),
            detail,
        };
        match self {
            Codec::Json => serde_json::from_slice::<serde::de::IgnoredAny>(value)
                .map(drop)
                .map_err(|e| mismatch(e.to_string())),
            Codec::Yaml => serde_norway::from_slice::<serde_norway::Value>(value)
                .map(drop)
                .map_err(|e| mismatch(e.to_string())),
            Codec::Toml => {
                let text =
                    std::str::from_utf8(value).map_err(|e| mismatch(format!("not UTF-8: {e}")))?;
                toml::from_str::<toml::Table>(text)
                    .map(drop)
                    .map_err(|e| mismatch(e.message().to_string()))
            }
            Codec::Text => std::str::from_utf8(value)
                .map(drop)
                .map_err(|e| mismatch(format!("not UTF-8: {e}"))),
            Codec::Bytes | Codec::Client(_) => Ok(()),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Codec {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Codec::Json),
            "yaml" => Ok(Codec::Yaml),
            "toml" => Ok(Codec::Toml),
            "text" => Ok(Codec::Text),
            "bytes" => Ok(Codec::Bytes),
            other => {
                let unknown = || StoreError::UnknownCodec {
                    codec: truncate_for_error(other),
                };
                let name = other.strip_prefix("client:").ok_or_else(unknown)?;
                let well_formed = !name.is_empty()
                    && other.len() <= MAX_CODEC_LEN
                    && name.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'/')
                    });
                if well_formed {
                    Ok(Codec::Client(other.to_string()))
                } else {
                    Err(unknown())
                }
            }
        }
    }
}

impl From<Codec> for String {
    fn from(codec: Codec) -> String {
        match codec {
            Codec::Client(name) => name,
            known => known.name().to_string(),
        }
    }
}

impl TryFrom<String> for Codec {
    type Error = StoreError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        for ok in ["a", "0", "app.prod", "a-b_c.d", &"x".repeat(128)] {
            assert!(validate_namespace(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "_sys",
            "A",
            "-a",
            ".a",
            "a/b",
            "a b",
            "ä",
            &"x".repeat(129),
        ] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
        assert!(validate_system_namespace("_cluster").is_ok());
        assert!(validate_system_namespace("cluster").is_err());
        assert!(validate_system_namespace("_").is_err());
    }

    #[test]
    fn keys() {
        for ok in ["a", "a/b/c", "db.url", "ключ/値", &"k".repeat(512)] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "a\nb", "a\u{7f}", &"k".repeat(513)] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn record_kinds() {
        for ok in [
            "instance",
            "route",
            "a",
            "sub_2",
            &"k".repeat(MAX_RECORD_KIND_LEN),
        ] {
            assert!(validate_record_kind(ok).is_ok(), "{ok:?}");
        }
        let too_long = "k".repeat(MAX_RECORD_KIND_LEN + 1);
        for bad in [
            "",
            "Instance",
            "1st",
            "_x",
            "a-b",
            "a/b",
            "a.b",
            "é",
            too_long.as_str(),
        ] {
            assert!(
                matches!(
                    validate_record_kind(bad),
                    Err(StoreError::InvalidRecordKind { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn codecs_parse_and_validate() {
        assert_eq!("json".parse::<Codec>().ok(), Some(Codec::Json));
        assert_eq!(
            "client:proto".parse::<Codec>().ok(),
            Some(Codec::Client("client:proto".into()))
        );
        assert!("client:".parse::<Codec>().is_err());
        assert!("xml".parse::<Codec>().is_err());
        assert!(Codec::Json.validate(br#"{"a":1}"#).is_ok());
        assert!(Codec::Json.validate(b"{nope").is_err());
        assert!(Codec::Yaml.validate(b"a: 1\nb: [1, 2]\n").is_ok());
        assert!(Codec::Yaml.validate(b"a: [1, 2\n").is_err());
        assert!(Codec::Toml.validate(b"a = 1\n[t]\nb = 'x'\n").is_ok());
        assert!(Codec::Toml.validate(b"a = = 1").is_err());
        assert!(Codec::Text.validate("héllo".as_bytes()).is_ok());
        assert!(Codec::Text.validate(&[0xff, 0xfe]).is_err());
        assert!(Codec::Bytes.validate(&[0xff, 0]).is_ok());
    }

    #[test]
    fn error_echo_is_bounded() {
        let long = "Z".repeat(10_000);
        let msg = validate_namespace(&long)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.len() < 300, "{msg}");
    }
}
