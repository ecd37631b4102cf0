//! Routes (pure): what `PUT /v1/namespaces/{ns}/routes/{name}` takes, checked field by field,
//! and the stored record (the same JSON).
//!
//! ```json
//! {"hosts":["shop.example.com","*.shop.example.com"],"path_prefix":"/",
//!  "backend":{"service":"web","endpoint":"http"} | {"targets":["http://127.0.0.1:9001"]},
//!  "strategy":"round_robin","timeout":"5s","retries":1,
//!  "rate_limit":{"per_client_per_minute":600,"burst":50}}
//! ```

use std::time::Duration;

use serde_json::{Map, Value, json};

use cfgnode_transport::registry::{WireCheck, WireInstanceSpec};

use crate::roles::registry::json::parse_check;
use crate::roles::registry::validate::{Invalid, check_name, check_spec};

/// The record kind of routes.
pub const ROUTE_KIND: &str = "route";
/// Most hosts per route.
pub const MAX_HOSTS: usize = 64;
/// Most static targets per route.
pub const MAX_TARGETS: usize = 64;
/// A route's timeout when it names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest timeout a route may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most retries a route may ask for.
pub const MAX_RETRIES: u32 = 10;

/// A route, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Host names it answers: exact (`shop.example.com`) or one leading wildcard label
    /// (`*.shop.example.com`, which matches `a.shop.example.com`, not `shop.example.com`),
    /// lowercase.
    pub hosts: Vec<String>,
    /// Request paths it answers start with this (`/` for all).
    pub path_prefix: String,
    /// Where requests go.
    pub backend: Backend,
    /// How long a backend may take to start answering (504 after).
    pub timeout: Duration,
    /// How many other backends a failed request may be tried on, when that is safe.
    pub retries: u32,
    /// The per-client-IP limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// How the holder checks static targets (the registry's rules; ignored for a service
    /// backend, whose instances have their own checks).
    pub target_check: TargetCheck,
}

/// A check run against each static target of a route: the registry's check with the target
/// filled in (`path` for `http`, the target's own address for `tcp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetCheck {
    /// `http` (GET `path` on the target, 2xx passes) or `tcp` (connecting passes).
    pub kind: TargetCheckKind,
    /// The registry's timing and damping fields, as given (`interval`, `timeout`, ...).
    pub timing: Map<String, Value>,
}

/// What a target check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetCheckKind {
    /// GET this path on the target.
    Http {
        /// Starts with `/`.
        path: String,
    },
    /// Connect to the target.
    Tcp,
}

impl TargetCheck {
    /// The default for static targets: connect every 5 s.
    pub fn default_tcp() -> TargetCheck {
        let mut timing = Map::new();
        timing.insert("interval".to_string(), json!("5s"));
        TargetCheck {
            kind: TargetCheckKind::Tcp,
            timing,
        }
    }

    /// The registry check for `target`, or why the template cannot make one.
    pub fn for_target(&self, target: &Target) -> Result<WireCheck, Invalid> {
        let mut check = self.timing.clone();
        match &self.kind {
            TargetCheckKind::Http { path } => {
                check.insert("kind".into(), json!("http"));
                check.insert(
                    "url".into(),
                    json!(format!("http://{}{path}", target.authority)),
                );
            }
            TargetCheckKind::Tcp => {
                check.insert("kind".into(), json!("tcp"));
                check.insert("address".into(), json!(target.authority));
            }
        }
        let check = parse_check(&Value::Object(check))?;
        // The registry's rules (interval, timeout, thresholds), as for any instance.
        check_spec(&WireInstanceSpec {
            check: Some(check.clone()),
            ..Default::default()
        })?;
        Ok(check)
    }

    fn json(&self) -> Value {
        let mut out = self.timing.clone();
        match &self.kind {
            TargetCheckKind::Http { path } => {
                out.insert("kind".into(), json!("http"));
                out.insert("path".into(), json!(path));
            }
            TargetCheckKind::Tcp => {
                out.insert("kind".into(), json!("tcp"));
            }
        }
        Value::Object(out)
    }
}

fn parse_target_check(value: &Value) -> Result<TargetCheck, Invalid> {
    let fields = value.as_object().ok_or_else(|| {
        Invalid::new(
            "check",
            "must be {\"kind\":\"http\",\"path\",...} or {\"kind\":\"tcp\",...}",
        )
    })?;
    let mut timing = fields.clone();
    let kind = match timing.remove("kind").as_ref().and_then(Value::as_str) {
        Some("tcp") => TargetCheckKind::Tcp,
        Some("http") => {
            let path = match timing.remove("path") {
                None | Some(Value::Null) => "/".to_string(),
                Some(Value::String(p)) if p.starts_with('/') => p,
                Some(_) => {
                    return Err(Invalid::new(
                        "check.path",
                        "must be a path starting with '/'",
                    ));
                }
            };
            TargetCheckKind::Http { path }
        }
        _ => {
            return Err(Invalid::new(
                "check.kind",
                "must be \"http\" or \"tcp\" for static targets",
            ));
        }
    };
    for reserved in ["url", "address", "ttl"] {
        if timing.contains_key(reserved) {
            return Err(Invalid::new(
                format!("check.{reserved}"),
                "is set from each target; leave it out",
            ));
        }
    }
    let check = TargetCheck { kind, timing };
    // The template must make a valid check (intervals, thresholds...): try it on a target.
    check.for_target(&Target {
        url: "http://127.0.0.1:1".into(),
        authority: "127.0.0.1:1".into(),
    })?;
    Ok(check)
}

/// A route's backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The healthy instances of a registry service in the same namespace, at one endpoint.
    Service {
        /// The service.
        service: String,
        /// The endpoint name of its instances to send to (`http` when not given).
        endpoint: String,
    },
    /// Fixed `http://host:port` targets.
    Targets(Vec<Target>),
}

/// One static target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// As given (`http://127.0.0.1:9001`).
    pub url: String,
    /// `host:port` to connect to.
    pub authority: String,
}

/// A token bucket per client IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per minute.
    pub per_client_per_minute: u32,
    /// Requests a client may make at once above the sustained rate.
    pub burst: u32,
}

/// Parses and checks a route body.
pub fn parse_route(body: &Value) -> Result<Route, Invalid> {
    let fields = body
        .as_object()
        .ok_or_else(|| Invalid::new("body", "must be a JSON object"))?;
    refuse_unknown(
        "",
        fields,
        &[
            "hosts",
            "path_prefix",
            "backend",
            "strategy",
            "timeout",
            "retries",
            "rate_limit",
            "check",
        ],
    )?;
    let hosts = match fields.get("hosts") {
        Some(Value::Array(hosts)) if !hosts.is_empty() => hosts
            .iter()
            .enumerate()
            .map(|(i, h)| parse_host(&format!("hosts[{i}]"), h))
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(Invalid::new(
                "hosts",
                "must be a non-empty array of host names",
            ));
        }
    };
    if hosts.len() > MAX_HOSTS {
        return Err(Invalid::new("hosts", format!("at most {MAX_HOSTS} hosts")));
    }
    let path_prefix = match fields.get("path_prefix") {
        None | Some(Value::Null) => "/".to_string(),
        Some(Value::String(p))
            if p.starts_with('/') && p.len() <= 1024 && !p.chars().any(char::is_control) =>
        {
            p.clone()
        }
        Some(_) => {
            return Err(Invalid::new(
                "path_prefix",
                "must be a path starting with '/' (at most 1024 bytes)",
            ));
        }
    };
    match fields.get("strategy") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "round_robin" => {}
        Some(_) => {
            return Err(Invalid::new(
                "strategy",
                "must be \"round_robin\" (the only strategy so far)",
            ));
        }
    }
    let timeout = match fields.get("timeout") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT,
        Some(Value::String(t)) => {
            let d = humantime::parse_duration(t)
                .map_err(|e| Invalid::new("timeout", format!("{t:?} is not a duration ({e})")))?;
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err(Invalid::new("timeout", "must be between 1ms and 1h"));
            }
            d
        }
        Some(_) => {
            return Err(Invalid::new(
                "timeout",
                "must be a duration string such as \"5s\"",
            ));
        }
    };
    let retries = match fields.get("retries") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= MAX_RETRIES)
            .ok_or_else(|| Invalid::new("retries", format!("must be 0..={MAX_RETRIES}")))?,
    };
    let rate_limit = match fields.get("rate_limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_rate_limit(v)?),
    };
    let backend = parse_backend(
        fields
            .get("backend")
            .ok_or_else(|| Invalid::new("backend", "is required"))?,
    )?;
    let target_check = match fields.get("check") {
        None | Some(Value::Null) => TargetCheck::default_tcp(),
        Some(v) => parse_target_check(v)?,
    };
    Ok(Route {
        hosts,
        path_prefix,
        backend,
        timeout,
        retries,
        rate_limit,
        target_check,
    })
}

fn parse_backend(value: &Value) -> Result<Backend, Invalid> {
    let fields = value.as_object().ok_or_else(|| {
        Invalid::new(
            "backend",
            "must be {\"service\",\"endpoint\"} or {\"targets\":[...]}",
        )
    })?;
    if let Some(targets) = fields.get("targets") {
        refuse_unknown("backend", fields, &["targets"])?;
        let targets = targets
            .as_array()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Invalid::new(
                    "backend.targets",
                    "must be a non-empty array of http:// URLs",
                )
            })?;
        if targets.len() > MAX_TARGETS {
            return Err(Invalid::new(
                "backend.targets",
                format!("at most {MAX_TARGETS} targets"),
            ));
        }
        return targets
            .iter()
            .enumerate()
            .map(|(i, t)| parse_target(&format!("backend.targets[{i}]"), t))
            .collect::<Result<Vec<_>, _>>()
            .map(Backend::Targets);
    }
    refuse_unknown("backend", fields, &["service", "endpoint"])?;
    let service = fields
        .get("service")
        .and_then(Value::as_str)
        .ok_or_else(|| Invalid::new("backend", "names a \"service\" (or gives \"targets\")"))?;
    check_name("backend.service", service)?;
    let endpoint = match fields.get("endpoint") {
        None | Some(Value::Null) => "http".to_string(),
        Some(Value::String(e)) if !e.is_empty() && e.len() <= 32 => e.clone(),
        Some(_) => return Err(Invalid::new("backend.endpoint", "must be an endpoint name")),
    };
    Ok(Backend::Service {
        service: service.to_string(),
        endpoint,
    })
}

fn parse_target(field: &str, value: &Value) -> Result<Target, Invalid> {
    let url = value
        .as_str()
        .ok_or_else(|| Invalid::new(field, "must be a URL string"))?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Invalid::new(field, format!("{url:?} is not a URL: {e}")))?;
    if parsed.scheme() != "http" {
        return Err(Invalid::new(
            field,
            "must be http:// (TLS to backends is not supported yet)",
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| Invalid::new(field, "has no host"))?;
    if parsed.path() != "/" || parsed.query().is_some() {
        return Err(Invalid::new(
            field,
            "must be scheme://host:port only (the request's path is kept)",
        ));
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    Ok(Target {
        url: url.to_string(),
        authority: format!("{host}:{port}"),
    })
}

fn parse_rate_limit(value: &Value) -> Result<RateLimit, Invalid> {
    let fields = value.as_object().ok_or_else(|| {
        Invalid::new(
            "rate_limit",
            "must be {\"per_client_per_minute\",\"burst\"}",
        )
    })?;
    refuse_unknown("rate_limit", fields, &["per_client_per_minute", "burst"])?;
    let number = |name: &str, min: u64| -> Result<u32, Invalid> {
        fields
            .get(name)
            .and_then(Value::as_u64)
            .filter(|n| *n >= min && *n <= 1_000_000)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                Invalid::new(
                    format!("rate_limit.{name}"),
                    format!("must be a whole number, {min}..=1000000"),
                )
            })
    };
    Ok(RateLimit {
        per_client_per_minute: number("per_client_per_minute", 1)?,
        burst: match fields.get("burst") {
            None | Some(Value::Null) => 0,
            Some(_) => number("burst", 0)?,
        },
    })
}

/// A host name as routes hold it: lowercase, optionally `*.` + a name.
fn parse_host(field: &str, value: &Value) -> Result<String, Invalid> {
    let host = value
        .as_str()
        .ok_or_else(|| Invalid::new(field, "must be a host name string"))?
        .to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(Invalid::new(
            field,
            format!("{host:?} is not a host name (or *.name for a wildcard)"),
        ));
    }
    Ok(host)
}

fn refuse_unknown(at: &str, fields: &Map<String, Value>, known: &[&str]) -> Result<(), Invalid> {
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(Invalid::new(
            if at.is_empty() {
                unknown.clone()
            } else {
                format!("{at}.{unknown}")
            },
            format!("is not a known field (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// The route as JSON: the shape [`parse_route`] reads (stored as the record's value).
pub fn route_json(route: &Route) -> Value {
    let backend = match &route.backend {
        Backend::Service { service, endpoint } => json!({"service": service, "endpoint": endpoint}),
        Backend::Targets(targets) => {
            json!({"targets": targets.iter().map(|t| t.url.clone()).collect::<Vec<_>>()})
        }
    };
    json!({
        "hosts": route.hosts,
        "path_prefix": route.path_prefix,
        "backend": backend,
        "strategy": "round_robin",
        "timeout": humantime::format_duration(route.timeout).to_string(),
        "retries": route.retries,
        "rate_limit": route.rate_limit.map(|r| json!({"per_client_per_minute": r.per_client_per_minute, "burst": r.burst})),
        "check": route.target_check.json(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses_and_round_trips() {
        let route = parse_route(&json!({
            "hosts": ["Shop.Example.com", "*.shop.example.com"],
            "path_prefix": "/",
            "backend": {"service": "web", "endpoint": "http"},
            "strategy": "round_robin",
            "timeout": "5s",
            "retries": 1,
            "rate_limit": {"per_client_per_minute": 600, "burst": 50},
        }))
        .expect("parses");
        assert_eq!(route.hosts, ["shop.example.com", "*.shop.example.com"]);
        assert_eq!(route.timeout, Duration::from_secs(5));
        assert_eq!(parse_route(&route_json(&route)), Ok(route));
        let targets = parse_route(&json!({"hosts": ["a"], "backend": {"targets": ["http://127.0.0.1:9001", "http://localhost"]}}))
            .expect("targets");
        let Backend::Targets(t) = &targets.backend else {
            panic!("targets")
        };
        assert_eq!(t[0].authority, "127.0.0.1:9001");
        assert_eq!(t[1].authority, "localhost:80");
        assert_eq!(targets.retries, 1);
        assert_eq!(parse_route(&route_json(&targets)), Ok(targets.clone()));
        let check = targets.target_check.for_target(&t[0]).expect("a check");
        assert!(matches!(check, WireCheck::Probe(_)), "{check:?}");
        let http = parse_route(
            &json!({"hosts": ["a"], "backend": {"targets": ["http://127.0.0.1:9001"]},
            "check": {"kind": "http", "path": "/health", "interval": "1s", "unhealthy_after": 2}}),
        )
        .expect("http check");
        assert_eq!(parse_route(&route_json(&http)), Ok(http));
    }

    #[test]
    fn bad_routes_name_the_field() {
        let field = |body: Value| parse_route(&body).expect_err("refused").field;
        let ok = json!({"hosts": ["a.example"], "backend": {"service": "web"}});
        let with = |k: &str, v: Value| {
            let mut b = ok.clone();
            b[k] = v;
            b
        };
        assert_eq!(field(json!({"backend": {"service": "web"}})), "hosts");
        assert_eq!(field(with("hosts", json!(["bad host"]))), "hosts[0]");
        assert_eq!(field(with("path_prefix", json!("nope"))), "path_prefix");
        assert_eq!(field(with("strategy", json!("random"))), "strategy");
        assert_eq!(field(with("timeout", json!("soon"))), "timeout");
        assert_eq!(field(with("retries", json!(99))), "retries");
        assert_eq!(
            field(with("rate_limit", json!({"per_client_per_minute": 0}))),
            "rate_limit.per_client_per_minute"
        );
        assert_eq!(
            field(with("backend", json!({"targets": []}))),
            "backend.targets"
        );
        assert_eq!(
            field(with("backend", json!({"targets": ["https://a"]}))),
            "backend.targets[0]"
        );
        assert_eq!(
            field(with("backend", json!({"targets": ["http://a/x"]}))),
            "backend.targets[0]"
        );
        assert_eq!(
            field(with("backend", json!({"service": "a/b"}))),
            "backend.service"
        );
        assert_eq!(field(with("colour", json!(1))), "colour");
        assert_eq!(field(json!({"hosts": ["a"]})), "backend");
        assert_eq!(field(with("check", json!({"kind": "ttl"}))), "check.kind");
        assert_eq!(
            field(with("check", json!({"kind": "http", "interval": "10ms"}))),
            "check.interval"
        );
        assert_eq!(
            field(with("check", json!({"kind": "tcp", "address": "x:1"}))),
            "check.address"
        );
    }
}
