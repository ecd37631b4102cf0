//! The registry's JSON (pure): registrations and subscriptions parsed from HTTP bodies, and
//! instances rendered for HTTP answers and for the stored record.
//!
//! Parsing walks the JSON by hand instead of deriving `Deserialize`, so that a wrong type, an
//! out-of-range port or an unknown field is refused with the field's path (`endpoints[1].port`)
//! rather than a serde position. The stored record is the same JSON an HTTP reader sees (plus
//! status), so a watch, an SSE stream or a webhook shows instances in the shape the API
//! documents, and [`decode_record`] reads it back through the same parser.

use std::time::Duration;

use cfgnode_transport::registry::{
    WireCheck, WireCheckResult, WireEndpoint, WireInstance, WireInstanceSpec, WireProbe,
    WireProbeTarget, WireStatus, WireSubscriptionSpec,
};
use serde_json::{Map, Value, json};

use super::validate::Invalid;

/// A check's interval when the registration names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// A check's timeout when the registration names none (capped at the interval).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive failures before a healthy instance turns unhealthy, by default.
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 3;
/// Consecutive successes before an unhealthy instance turns healthy, by default.
pub const DEFAULT_HEALTHY_AFTER: u32 = 2;

/// What the registry stores per instance (the record `service/instance` of kind `instance`):
/// the registration and the status the holder last decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRecord {
    /// What was registered.
    pub spec: WireInstanceSpec,
    /// The status last written.
    pub status: WireStatus,
    /// When it last changed.
    pub status_since: u64,
    /// The check that decided it (kept so a reader after a restart or a move sees why).
    pub last_check: Option<WireCheckResult>,
}

/// Parses a registration body (`PUT .../instances/{instance}`): `endpoints`, `tags`,
/// `metadata`, `check`, every one optional.
pub fn parse_spec(body: &Value) -> Result<WireInstanceSpec, Invalid> {
    let fields = object("body", body)?;
    refuse_unknown("", fields, &["endpoints", "tags", "metadata", "check"])?;
    let mut spec = WireInstanceSpec::default();
    if let Some(endpoints) = present(fields, "endpoints") {
        for (i, endpoint) in array("endpoints", endpoints)?.iter().enumerate() {
            spec.endpoints
                .push(parse_endpoint(&format!("endpoints[{i}]"), endpoint)?);
        }
    }
    if let Some(tags) = present(fields, "tags") {
        for (i, tag) in array("tags", tags)?.iter().enumerate() {
            spec.tags
                .push(string(&format!("tags[{i}]"), tag)?.to_string());
        }
    }
    if let Some(metadata) = present(fields, "metadata") {
        for (key, value) in object("metadata", metadata)? {
            let value = string(&format!("metadata.{key}"), value)?;
            spec.metadata.insert(key.clone(), value.to_string());
        }
    }
    if let Some(check) = present(fields, "check") {
        spec.check = Some(parse_check(check)?);
    }
    Ok(spec)
}

fn parse_endpoint(at: &str, value: &Value) -> Result<WireEndpoint, Invalid> {
    let fields = object(at, value)?;
    refuse_unknown(at, fields, &["name", "protocol", "address", "port"])?;
    let field = |name: &str| format!("{at}.{name}");
    let protocol = string(&field("protocol"), required(fields, at, "protocol")?)?.to_string();
    Ok(WireEndpoint {
        // An endpoint's name defaults to its protocol: `{"protocol":"http",...}` is `http`.
        name: match present(fields, "name") {
            Some(name) => string(&field("name"), name)?.to_string(),
            None => protocol.clone(),
        },
        protocol,
        address: string(&field("address"), required(fields, at, "address")?)?.to_string(),
        port: port(&field("port"), required(fields, at, "port")?)?,
    })
}

/// Parses a `check` object (`{"kind":"http","url",...}`, `tcp`, `ttl`), fields named under
/// `check.`.
pub fn parse_check(value: &Value) -> Result<WireCheck, Invalid> {
    let fields = object("check", value)?;
    let kind = string("check.kind", required(fields, "check", "kind")?)?;
    let probe = |target: WireProbeTarget, target_field: &str| -> Result<WireCheck, Invalid> {
        refuse_unknown(
            "check",
            fields,
            &[
                "kind",
                target_field,
                "interval",
                "timeout",
                "unhealthy_after",
                "healthy_after",
            ],
        )?;
        let interval =
            optional_duration(fields, "check.interval", "interval")?.unwrap_or(DEFAULT_INTERVAL);
        let timeout = optional_duration(fields, "check.timeout", "timeout")?
            .unwrap_or(DEFAULT_TIMEOUT.min(interval));
        Ok(WireCheck::Probe(WireProbe {
            target,
            interval_ms: millis(interval),
            timeout_ms: millis(timeout),
            unhealthy_after: threshold(fields, "unhealthy_after", DEFAULT_UNHEALTHY_AFTER)?,
            healthy_after: threshold(fields, "healthy_after", DEFAULT_HEALTHY_AFTER)?,
        }))
    };
    match kind {
        "http" => {
            let url = string("check.url", required(fields, "check", "url")?)?;
            probe(WireProbeTarget::Http { url: url.into() }, "url")
        }
        "tcp" => {
            let address = string("check.address", required(fields, "check", "address")?)?;
            probe(
                WireProbeTarget::Tcp {
                    address: address.into(),
                },
                "address",
            )
        }
        "ttl" => {
            refuse_unknown("check", fields, &["kind", "ttl"])?;
            let ttl = optional_duration(fields, "check.ttl", "ttl")?
                .ok_or_else(|| Invalid::new("check.ttl", "is required for a ttl check"))?;
            Ok(WireCheck::Ttl {
                ttl_ms: millis(ttl),
            })
        }
        other => Err(Invalid::new(
            "check.kind",
            format!("{other:?} is not a check kind (http, tcp or ttl)"),
        )),
    }
}

/// Parses a subscription body: `{"url","services":[...],"secret"}`.
pub fn parse_subscription(body: &Value) -> Result<WireSubscriptionSpec, Invalid> {
    let fields = object("body", body)?;
    refuse_unknown("", fields, &["url", "services", "secret"])?;
    let services = array("services", required(fields, "", "services")?)?
        .iter()
        .enumerate()
        .map(|(i, s)| string(&format!("services[{i}]"), s).map(str::to_string))
        .collect::<Result<_, _>>()?;
    Ok(WireSubscriptionSpec {
        url: string("url", required(fields, "", "url")?)?.to_string(),
        services,
        secret: present(fields, "secret")
            .map(|s| string("secret", s).map(str::to_string))
            .transpose()?,
    })
}

/// A registration as JSON: the shape [`parse_spec`] reads.
pub fn spec_json(spec: &WireInstanceSpec) -> Value {
    json!({
        "endpoints": spec.endpoints.iter().map(|e| json!({
            "name": e.name,
            "protocol": e.protocol,
            "address": e.address,
            "port": e.port,
        })).collect::<Vec<_>>(),
        "tags": spec.tags,
        "metadata": spec.metadata,
        "check": spec.check.as_ref().map(check_json),
    })
}

/// A check as JSON, durations as `"1s"` strings.
pub fn check_json(check: &WireCheck) -> Value {
    match check {
        WireCheck::Ttl { ttl_ms } => json!({"kind": "ttl", "ttl": duration(*ttl_ms)}),
        WireCheck::Probe(probe) => {
            let mut out = match &probe.target {
                WireProbeTarget::Http { url } => json!({"kind": "http", "url": url}),
                WireProbeTarget::Tcp { address } => json!({"kind": "tcp", "address": address}),
            };
            out["interval"] = json!(duration(probe.interval_ms));
            out["timeout"] = json!(duration(probe.timeout_ms));
            out["unhealthy_after"] = json!(probe.unhealthy_after);
            out["healthy_after"] = json!(probe.healthy_after);
            out
        }
    }
}

/// One check's outcome as JSON.
pub fn check_result_json(result: &WireCheckResult) -> Value {
    json!({"at": crate::time::rfc3339(result.at), "ok": result.ok, "output": result.output})
}

/// An instance as the HTTP API answers it.
pub fn instance_json(instance: &WireInstance) -> Value {
    let mut out = spec_json(&instance.spec);
    out["instance"] = json!(instance.instance);
    out["service"] = json!(instance.service);
    out["status"] = json!(instance.status.as_str());
    out["status_since"] = json!(crate::time::rfc3339(instance.status_since));
    out["last_check"] = instance
        .last_check
        .as_ref()
        .map_or(Value::Null, check_result_json);
    out["version"] = json!(instance.version);
    out["revision"] = json!(instance.revision);
    out
}

/// The stored bytes of an instance record.
pub fn encode_record(record: &InstanceRecord) -> Vec<u8> {
    let mut out = spec_json(&record.spec);
    out["status"] = json!(record.status.as_str());
    out["status_since"] = json!(record.status_since);
    out["last_check"] = record.last_check.as_ref().map_or(
        Value::Null,
        |r| json!({"at": r.at, "ok": r.ok, "output": r.output}),
    );
    out.to_string().into_bytes()
}

/// Reads back what [`encode_record`] wrote; `Err` means the stored bytes are not a record of
/// this build (a bug or a corrupt file, reported as an internal error).
pub fn decode_record(bytes: &[u8]) -> Result<InstanceRecord, Invalid> {
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Invalid::new("record", format!("is not JSON: {e}")))?;
    let fields = value
        .as_object_mut()
        .ok_or_else(|| Invalid::new("record", "is not an object"))?;
    let status = fields.remove("status");
    let since = fields.remove("status_since");
    let last = fields.remove("last_check");
    let status = status
        .as_ref()
        .and_then(Value::as_str)
        .and_then(WireStatus::parse)
        .ok_or_else(|| Invalid::new("record.status", "is missing or unknown"))?;
    let status_since = since.as_ref().and_then(Value::as_u64).unwrap_or(0);
    let last_check = match last {
        Some(Value::Object(r)) => Some(WireCheckResult {
            at: r.get("at").and_then(Value::as_u64).unwrap_or(0),
            ok: r.get("ok").and_then(Value::as_bool).unwrap_or(false),
            output: r
                .get("output")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }),
        _ => None,
    };
    // The stored check is JSON with `null` for "none"; parse_spec treats null as absent.
    Ok(InstanceRecord {
        spec: parse_spec(&value)?,
        status,
        status_since,
        last_check,
    })
}

/// `ms` as a human duration: `1s`, `500ms`, `1m 30s`.
pub fn duration(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The field, unless absent or `null` (which mean the same: "not given").
fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

fn required<'a>(
    fields: &'a Map<String, Value>,
    at: &str,
    name: &str,
) -> Result<&'a Value, Invalid> {
    present(fields, name).ok_or_else(|| Invalid::new(path(at, name), "is required"))
}

fn path(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

fn refuse_unknown(at: &str, fields: &Map<String, Value>, known: &[&str]) -> Result<(), Invalid> {
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(Invalid::new(
            path(at, unknown),
            format!("is not a known field (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn object<'a>(field: &str, value: &'a Value) -> Result<&'a Map<String, Value>, Invalid> {
    value
        .as_object()
        .ok_or_else(|| Invalid::new(field, "must be a JSON object"))
}

fn array<'a>(field: &str, value: &'a Value) -> Result<&'a Vec<Value>, Invalid> {
    value
        .as_array()
        .ok_or_else(|| Invalid::new(field, "must be a JSON array"))
}

fn string<'a>(field: &str, value: &'a Value) -> Result<&'a str, Invalid> {
    value
        .as_str()
        .ok_or_else(|| Invalid::new(field, "must be a string"))
}

fn port(field: &str, value: &Value) -> Result<u16, Invalid> {
    value
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| Invalid::new(field, "must be a port number, 1..=65535"))
}

fn optional_duration(
    fields: &Map<String, Value>,
    field: &str,
    name: &str,
) -> Result<Option<Duration>, Invalid> {
    let Some(value) = present(fields, name) else {
        return Ok(None);
    };
    let text = value.as_str().ok_or_else(|| {
        Invalid::new(
            field,
            "must be a duration string such as \"1s\" or \"500ms\"",
        )
    })?;
    humantime::parse_duration(text).map(Some).map_err(|e| {
        Invalid::new(
            field,
            format!("{text:?} is not a duration ({e}); write \"1s\" or \"500ms\""),
        )
    })
}

fn threshold(fields: &Map<String, Value>, name: &str, default: u32) -> Result<u32, Invalid> {
    match present(fields, name) {
        None => Ok(default),
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Invalid::new(format!("check.{name}"), "must be a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(body: Value) -> Result<WireInstanceSpec, Invalid> {
        parse_spec(&body)
    }

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let parsed = spec(json!({
            "endpoints": [{"name": "api", "protocol": "http", "address": "10.0.0.5", "port": 8080}],
            "tags": ["v2"],
            "metadata": {"zone": "a"},
            "check": {"kind": "http", "url": "http://10.0.0.5:8080/health", "interval": "1s"},
        }))
        .expect("parses");
        assert_eq!(parsed.endpoints[0].port, 8080);
        let Some(WireCheck::Probe(probe)) = &parsed.check else {
            panic!("a probe: {parsed:?}");
        };
        assert_eq!(probe.interval_ms, 1000);
        assert_eq!(
            probe.timeout_ms, 1000,
            "the default timeout is capped at the interval"
        );
        assert_eq!(probe.unhealthy_after, DEFAULT_UNHEALTHY_AFTER);
        let ttl = spec(json!({"check": {"kind": "ttl", "ttl": "10s"}})).expect("ttl");
        assert_eq!(ttl.check, Some(WireCheck::Ttl { ttl_ms: 10_000 }));
    }

    #[test]
    fn an_endpoint_name_defaults_to_its_protocol() {
        let parsed =
            spec(json!({"endpoints": [{"protocol": "pfcp", "address": "10.0.0.9", "port": 8805}]}))
                .expect("parses");
        assert_eq!(parsed.endpoints[0].name, "pfcp");
    }

    #[test]
    fn wrong_types_and_unknown_fields_name_the_field() {
        let field = |body: Value| spec(body).expect_err("refused").field;
        assert_eq!(field(json!([])), "body");
        assert_eq!(field(json!({"endpoint": []})), "endpoint");
        assert_eq!(
            field(json!({"endpoints": [{"protocol": "http", "address": "a", "port": 70000}]})),
            "endpoints[0].port"
        );
        assert_eq!(
            field(json!({"endpoints": [{"protocol": "http", "address": "a", "port": "80"}]})),
            "endpoints[0].port"
        );
        assert_eq!(
            field(json!({"endpoints": [{"protocol": "http", "port": 80}]})),
            "endpoints[0].address"
        );
        assert_eq!(field(json!({"check": {"kind": "grpc"}})), "check.kind");
        assert_eq!(
            field(json!({"check": {"kind": "http", "url": "http://a/", "interval": "soon"}})),
            "check.interval"
        );
        assert_eq!(
            field(json!({"check": {"kind": "http", "url": "http://a/", "interval": 1000}})),
            "check.interval"
        );
        assert_eq!(field(json!({"check": {"kind": "ttl"}})), "check.ttl");
        assert_eq!(
            field(json!({"check": {"kind": "ttl", "ttl": "1s", "url": "x"}})),
            "check.url"
        );
        assert_eq!(field(json!({"metadata": {"a": 1}})), "metadata.a");
    }

    #[test]
    fn records_round_trip_through_their_json() {
        let record = InstanceRecord {
            spec: spec(json!({
                "endpoints": [{"name": "api", "protocol": "grpc", "address": "::1", "port": 9}],
                "tags": ["a", "b"],
                "metadata": {"k": "v"},
                "check": {"kind": "tcp", "address": "[::1]:9", "interval": "1m 30s", "timeout": "250ms",
                          "unhealthy_after": 5, "healthy_after": 1},
            }))
            .expect("parses"),
            status: WireStatus::Unhealthy,
            status_since: 1_700_000_000_123,
            last_check: Some(WireCheckResult {
                at: 1_700_000_000_100,
                ok: false,
                output: "connection refused".into(),
            }),
        };
        assert_eq!(decode_record(&encode_record(&record)), Ok(record.clone()));
        let bare = InstanceRecord {
            spec: WireInstanceSpec::default(),
            status: WireStatus::Healthy,
            status_since: 1,
            last_check: None,
        };
        assert_eq!(decode_record(&encode_record(&bare)), Ok(bare));
        assert!(decode_record(b"{}").is_err());
        assert!(decode_record(b"garbage").is_err());
    }

    #[test]
    fn subscriptions_parse() {
        let parsed =
            parse_subscription(&json!({"url": "http://h/n", "services": ["web"], "secret": "s"}))
                .expect("parses");
        assert_eq!(parsed.services, ["web"]);
        assert_eq!(
            parse_subscription(&json!({"url": "http://h/n", "secret": "s"}))
                .expect_err("refused")
                .field,
            "services"
        );
    }
}
