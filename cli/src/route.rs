//! Proxy route commands: `cfgnode route set|get|ls|del`.
//!
//! `route set` builds the HTTP API's route body (docs/proxy.md) from flags, or takes it whole
//! from `--file` (`-` for stdin), and the node checks it: a refusal names the field, with exit
//! code 1. The flags' own syntax is checked here first (`parse_rate_limit`, `parse_check`,
//! `parse_target`, pure): a bad value is a clap usage error (exit 2) that names the flag.
//! `--output json` prints the HTTP API's shapes, so a script can switch between curl and the
//! CLI.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use cfgnode_client::{Client, Route};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::data::{Output, print_json};
use crate::exit::CliError;

/// `cfgnode route ...`.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Create or replace a route: which hosts (and path prefix) go to which backends.
    Set(Box<RouteSetArgs>),
    /// Show a route, every default filled in.
    Get {
        /// Namespace.
        namespace: String,
        /// Route name.
        name: String,
    },
    /// List a namespace's routes.
    Ls {
        /// Namespace.
        namespace: String,
    },
    /// Delete a route (and its static targets' registrations).
    Del {
        /// Namespace.
        namespace: String,
        /// Route name.
        name: String,
    },
}

/// The flags that describe a route; `--file` gives the whole route instead.
const ROUTE_FLAGS: &[&str] = &[
    "hosts",
    "service",
    "endpoint",
    "targets",
    "path_prefix",
    "backend_timeout",
    "retries",
    "rate_limit",
    "burst",
    "check",
    "check_interval",
];

/// Flags of `cfgnode route set`. Exactly one of `--file`, `--service`, `--target` says where
/// the route comes from or goes to (clap refuses none, or two, naming them).
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("source")
        .args(["file", "service", "targets"])
        .required(true)
))]
pub struct RouteSetArgs {
    /// Namespace (the proxies that serve it follow its routes).
    pub namespace: String,
    /// Route name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// The route as the HTTP API's JSON body, from this file (`-` for stdin), instead of the
    /// flags below.
    #[arg(long, value_name = "PATH", conflicts_with_all = ROUTE_FLAGS)]
    pub file: Option<PathBuf>,
    /// A host name the route answers (`shop.example.com`, or `*.shop.example.com` for its
    /// subdomains); may be given several times.
    #[arg(long = "host", value_name = "HOST", required_unless_present = "file")]
    pub hosts: Vec<String>,
    /// Send to the healthy instances of this registry service (same namespace).
    #[arg(long)]
    pub service: Option<String>,
    /// The endpoint of the service's instances to send to (default `http`).
    #[arg(long, requires = "service", conflicts_with = "targets")]
    pub endpoint: Option<String>,
    /// A static backend `http://HOST:PORT`, health-checked by the namespace's holder; may be
    /// given several times.
    #[arg(long = "target", value_name = "URL", value_parser = parse_target)]
    pub targets: Vec<String>,
    /// Only request paths starting with this (default `/`).
    #[arg(long)]
    pub path_prefix: Option<String>,
    /// How long a backend may take to start answering before the proxy answers 504 (the
    /// route's `timeout`, default 30s; named apart from the global --timeout, which is the
    /// deadline of this command's call).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub backend_timeout: Option<Duration>,
    /// How many other backends a failed request may be tried on, when that is safe
    /// (default 1).
    #[arg(long)]
    pub retries: Option<u32>,
    /// A per-client-IP limit: `N/min` or `N/s` (e.g. 600/min).
    #[arg(long, value_name = "N/min", value_parser = parse_rate_limit)]
    pub rate_limit: Option<u32>,
    /// Requests a client may make at once above the --rate-limit (default 0).
    #[arg(long, requires = "rate_limit")]
    pub burst: Option<u32>,
    /// How the holder checks static targets: `http:/PATH` (GET, 2xx passes), `http` (GET /)
    /// or `tcp` (connecting passes; the default).
    #[arg(long, value_name = "http:/PATH|tcp", value_parser = parse_check, conflicts_with = "service")]
    pub check: Option<TargetCheck>,
    /// Time between two checks of each static target (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "service")]
    pub check_interval: Option<Duration>,
}

/// What `--check` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetCheck {
    /// GET this path on each target.
    Http(String),
    /// Connect to each target.
    Tcp,
}

/// `--rate-limit N/min` or `N/s`: requests per minute.
pub fn parse_rate_limit(text: &str) -> Result<u32, String> {
    const FORM: &str = "expected N/min or N/s, e.g. 600/min";
    let (count, unit) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} has no unit ({FORM})"))?;
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?}: {count:?} is not a positive whole number ({FORM})"))?;
    let per_minute = match unit.trim() {
        "min" | "m" | "minute" => Some(count),
        "s" | "sec" | "second" => count.checked_mul(60),
        other => return Err(format!("{text:?}: unknown unit {other:?} ({FORM})")),
    };
    per_minute.ok_or_else(|| format!("{text:?} is too large ({FORM})"))
}

/// `--check http:/PATH`, `--check http` or `--check tcp`.
pub fn parse_check(text: &str) -> Result<TargetCheck, String> {
    match text {
        "tcp" => Ok(TargetCheck::Tcp),
        "http" => Ok(TargetCheck::Http("/".to_string())),
        _ => match text.strip_prefix("http:") {
            // `http://host/path` is a registry check URL: here each target fills in the host.
            Some(path) if path.starts_with('/') && !path.starts_with("//") => {
                Ok(TargetCheck::Http(path.to_string()))
            }
            _ => Err(format!(
                "{text:?} is not a target check: use http:/PATH (e.g. http:/health), http or tcp                  (each target's own address is checked)"
            )),
        },
    }
}

/// `--target http://HOST:PORT`: the form only; the node checks the rest.
pub fn parse_target(text: &str) -> Result<String, String> {
    match text.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(text.to_string()),
        _ => Err(format!(
            "{text:?} is not a target: use http://HOST:PORT (TLS to backends is not supported)"
        )),
    }
}

/// A duration as routes write it: `5s`, `500ms`.
fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl RouteSetArgs {
    /// The route body the flags describe (the HTTP API's shape); fields not given are left
    /// out, so the node's defaults apply.
    pub fn body(&self) -> Value {
        let mut route = Map::new();
        route.insert("hosts".into(), json!(self.hosts));
        let backend = match &self.service {
            Some(service) => {
                let mut backend = json!({"service": service});
                if let Some(endpoint) = &self.endpoint {
                    backend["endpoint"] = json!(endpoint);
                }
                backend
            }
            None => json!({"targets": self.targets}),
        };
        route.insert("backend".into(), backend);
        if let Some(prefix) = &self.path_prefix {
            route.insert("path_prefix".into(), json!(prefix));
        }
        if let Some(timeout) = self.backend_timeout {
            route.insert("timeout".into(), json!(duration(timeout)));
        }
        if let Some(retries) = self.retries {
            route.insert("retries".into(), json!(retries));
        }
        if let Some(per_minute) = self.rate_limit {
            route.insert(
                "rate_limit".into(),
                json!({"per_client_per_minute": per_minute, "burst": self.burst.unwrap_or(0)}),
            );
        }
        if self.check.is_some() || self.check_interval.is_some() {
            let mut check = match self.check.as_ref().unwrap_or(&TargetCheck::Tcp) {
                TargetCheck::Http(path) => json!({"kind": "http", "path": path}),
                TargetCheck::Tcp => json!({"kind": "tcp"}),
            };
            if let Some(interval) = self.check_interval {
                check["interval"] = json!(duration(interval));
            }
            route.insert("check".into(), check);
        }
        Value::Object(route)
    }
}

/// The route of `--file PATH` (`-` for stdin), as JSON; the node checks its fields.
fn read_route_file(path: &PathBuf) -> Result<Value, CliError> {
    let (text, from) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        (text, "stdin".to_string())
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::other(format!("cannot read {}: {e}", path.display())))?;
        (text, path.display().to_string())
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::other(format!(
            "the route in {from} is not JSON ({e}); it is the body of \
             PUT /v1/namespaces/NS/routes/NAME (docs/proxy.md)"
        ))
    })
}

/// Runs one `cfgnode route` command.
pub async fn run(client: &Client, out: Output, command: RouteCommand) -> Result<(), CliError> {
    match command {
        RouteCommand::Set(args) => {
            let body = match &args.file {
                Some(path) => read_route_file(path)?,
                None => args.body(),
            };
            let put = client.put_route(&args.namespace, &args.name, &body).await?;
            match out {
                Output::Json => {
                    let mut view = route_view(&put.route, false);
                    view["created"] = json!(put.created);
                    print_json(&view)
                }
                Output::Text => {
                    println!(
                        "{}/{} {}",
                        args.namespace,
                        args.name,
                        if put.created { "created" } else { "replaced" }
                    );
                    Ok(())
                }
            }
        }
        RouteCommand::Get { namespace, name } => {
            let route = client.route(&namespace, &name).await?;
            match out {
                Output::Json => print_json(&route_view(&route, true)),
                Output::Text => {
                    print_route(&namespace, &route);
                    Ok(())
                }
            }
        }
        RouteCommand::Ls { namespace } => {
            let routes = client.routes(&namespace).await?;
            match out {
                Output::Json => print_json(&json!({
                    "namespace": namespace,
                    "routes": routes.iter().map(|r| route_view(r, true)).collect::<Vec<_>>(),
                })),
                Output::Text => {
                    println!("{:<24} {:<40} {:<12} BACKEND", "NAME", "HOSTS", "PATH");
                    for r in &routes {
                        println!(
                            "{:<24} {:<40} {:<12} {}",
                            r.name,
                            hosts_text(&r.route),
                            r.route["path_prefix"].as_str().unwrap_or("/"),
                            backend_text(&r.route)
                        );
                    }
                    Ok(())
                }
            }
        }
        RouteCommand::Del { namespace, name } => {
            let revision = client.delete_route(&namespace, &name).await?;
            match out {
                Output::Json => print_json(&json!({
                    "name": name,
                    "deleted": true,
                    "revision": revision,
                })),
                Output::Text => {
                    println!("{namespace}/{name} deleted revision {revision}");
                    Ok(())
                }
            }
        }
    }
}

/// A route in the HTTP API's shape: the route's fields and its `name`, with `version` and
/// `revision` when the answer read the record.
fn route_view(route: &Route, with_record: bool) -> Value {
    let mut view = route.route.clone();
    view["name"] = json!(route.name);
    if with_record {
        view["version"] = json!(route.version);
        view["revision"] = json!(route.revision);
    }
    view
}

fn hosts_text(route: &Value) -> String {
    route["hosts"]
        .as_array()
        .map(|hosts| {
            hosts
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `service web (endpoint http)` or `targets http://a:1,http://b:2`.
fn backend_text(route: &Value) -> String {
    let backend = &route["backend"];
    if let Some(targets) = backend["targets"].as_array() {
        let urls: Vec<&str> = targets.iter().filter_map(Value::as_str).collect();
        return format!("targets {}", urls.join(","));
    }
    format!(
        "service {} (endpoint {})",
        backend["service"].as_str().unwrap_or("?"),
        backend["endpoint"].as_str().unwrap_or("http")
    )
}

/// `route get` for people: one field a line.
fn print_route(namespace: &str, route: &Route) {
    let r = &route.route;
    println!(
        "{namespace}/{} version {} revision {}",
        route.name, route.version, route.revision
    );
    println!("hosts        {}", hosts_text(r));
    println!("path_prefix  {}", r["path_prefix"].as_str().unwrap_or("/"));
    println!("backend      {}", backend_text(r));
    println!("timeout      {}", r["timeout"].as_str().unwrap_or("-"));
    println!("retries      {}", r["retries"]);
    match r["rate_limit"].as_object() {
        Some(limit) => println!(
            "rate_limit   {}/min burst {}",
            limit["per_client_per_minute"], limit["burst"]
        ),
        None => println!("rate_limit   -"),
    }
    if r["backend"]["targets"].is_array() {
        let check = &r["check"];
        let what = match check["kind"].as_str() {
            Some("http") => format!("http:{}", check["path"].as_str().unwrap_or("/")),
            other => other.unwrap_or("tcp").to_string(),
        };
        println!(
            "check        {what} every {}",
            check["interval"].as_str().unwrap_or("5s")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_per_minute() {
        assert_eq!(parse_rate_limit("600/min"), Ok(600));
        assert_eq!(parse_rate_limit("10/s"), Ok(600));
        assert_eq!(parse_rate_limit("5/m"), Ok(5));
        for bad in ["600", "0/min", "x/min", "10/h", "/min", "99999999999/s"] {
            let error = parse_rate_limit(bad).expect_err(bad);
            assert!(error.contains("N/min"), "{bad}: {error}");
        }
    }

    #[test]
    fn checks_and_targets_parse() {
        assert_eq!(
            parse_check("http:/health"),
            Ok(TargetCheck::Http("/health".into()))
        );
        assert_eq!(parse_check("http"), Ok(TargetCheck::Http("/".into())));
        assert_eq!(parse_check("tcp"), Ok(TargetCheck::Tcp));
        for bad in ["http:health", "udp", "http://x/health", ""] {
            assert!(parse_check(bad).is_err(), "{bad}");
        }
        assert!(parse_target("http://127.0.0.1:9001").is_ok());
        for bad in ["https://a:1", "127.0.0.1:9001", "http://", "http:///x"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_make_the_http_body() {
        let args = RouteSetArgs {
            namespace: "shop".into(),
            name: "web".into(),
            file: None,
            hosts: vec!["shop.example.com".into()],
            service: None,
            endpoint: None,
            targets: vec!["http://127.0.0.1:9001".into()],
            path_prefix: Some("/api".into()),
            backend_timeout: Some(Duration::from_millis(1500)),
            retries: Some(2),
            rate_limit: Some(600),
            burst: Some(50),
            check: Some(TargetCheck::Http("/health".into())),
            check_interval: Some(Duration::from_secs(1)),
        };
        assert_eq!(
            args.body(),
            json!({
                "hosts": ["shop.example.com"],
                "backend": {"targets": ["http://127.0.0.1:9001"]},
                "path_prefix": "/api",
                "timeout": "1s 500ms",
                "retries": 2,
                "rate_limit": {"per_client_per_minute": 600, "burst": 50},
                "check": {"kind": "http", "path": "/health", "interval": "1s"},
            })
        );
        let service = RouteSetArgs {
            service: Some("web".into()),
            targets: Vec::new(),
            path_prefix: None,
            backend_timeout: None,
            retries: None,
            rate_limit: None,
            burst: None,
            check: None,
            check_interval: None,
            endpoint: Some("api".into()),
            ..args
        };
        assert_eq!(
            service.body(),
            json!({"hosts": ["shop.example.com"], "backend": {"service": "web", "endpoint": "api"}})
        );
    }
}
