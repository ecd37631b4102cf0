//! Registry commands: register, deregister, heartbeat, services, instances.
//!
//! `--output text` prints a line per result or a table; `--output json` prints the HTTP API's
//! shapes (docs/registry.md), so a script can switch between curl and the CLI.
//! `register --keepalive` is a sidecar: it stays in the foreground, heartbeating a `--ttl`
//! instance, until SIGINT or SIGTERM, then deregisters it and exits 0.
//!
//! Flag parsing is pure (`parse_endpoint`, `parse_meta`, `parse_check_target`): a bad value
//! is a clap usage error (exit 2) that names the flag and shows the expected form.

use std::time::Duration;

use cfgnode_client::{
    Check, Client, Instance, InstanceEndpoint, InstanceFilter, InstanceSpec, InstanceStatus, Probe,
    ProbeTarget, ServiceView, Services,
};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::data::{Output, print_json, time};
use crate::exit::CliError;

/// A probe's interval when `--interval` is not given (the HTTP API's default).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// A probe's timeout when `--check-timeout` is not given (capped at the interval).
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Which instance a command is about.
#[derive(Debug, Args)]
pub struct InstanceArgs {
    /// Namespace.
    pub namespace: String,
    /// Service.
    pub service: String,
    /// Instance, unique within the service.
    pub instance: String,
}

/// Flags of `cfgnode register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub at: InstanceArgs,
    /// Where the instance listens: `[NAME=]PROTOCOL://ADDRESS:PORT` (e.g. http://10.0.0.5:8080,
    /// metrics=http://10.0.0.5:9100, grpc://[::1]:9090); the name defaults to the protocol.
    /// May be given several times.
    #[arg(long = "endpoint", value_name = "[NAME=]URL", value_parser = parse_endpoint)]
    pub endpoints: Vec<InstanceEndpoint>,
    /// A tag for filtering (`instances --tag`); may be given several times.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// A metadata entry `KEY=VALUE`; may be given several times.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub metadata: Vec<(String, String)>,
    /// A probe the holder runs: `http://HOST:PORT/PATH` (any 2xx passes) or `tcp://HOST:PORT`.
    #[arg(long, value_name = "URL", value_parser = parse_check_target, conflicts_with = "ttl")]
    pub check: Option<ProbeTarget>,
    /// A TTL check instead: the instance is healthy while heartbeats (`cfgnode heartbeat`,
    /// `--keepalive`) come at least this often (e.g. 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Time between two probes (default 10s).
    #[arg(long, requires = "check", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// A probe that takes longer fails (default 2s, at most the interval). Named apart from the
    /// global --timeout, which is the deadline of the command's calls.
    #[arg(long, requires = "check", value_parser = humantime::parse_duration)]
    pub check_timeout: Option<Duration>,
    /// Consecutive failed probes that turn a healthy instance unhealthy (default 3).
    #[arg(long, requires = "check", default_value_t = 3)]
    pub unhealthy_after: u32,
    /// Consecutive passed probes that turn an unhealthy instance healthy (default 2).
    #[arg(long, requires = "check", default_value_t = 2)]
    pub healthy_after: u32,
    /// Stay in the foreground, send the TTL's heartbeats (every TTL/3), and deregister on
    /// SIGINT or SIGTERM, like a sidecar.
    #[arg(long)]
    pub keepalive: bool,
}

/// A status, as `--status` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Passing, or not checked.
    Healthy,
    /// Failing past its threshold, or its TTL ran out.
    Unhealthy,
    /// Checked, not decided yet.
    Unknown,
}

impl From<StatusArg> for InstanceStatus {
    fn from(status: StatusArg) -> Self {
        match status {
            StatusArg::Healthy => InstanceStatus::Healthy,
            StatusArg::Unhealthy => InstanceStatus::Unhealthy,
            StatusArg::Unknown => InstanceStatus::Unknown,
        }
    }
}

/// Flags of `cfgnode instances`.
#[derive(Debug, Args)]
pub struct InstancesArgs {
    /// Namespace.
    pub namespace: String,
    /// Service.
    pub service: String,
    /// Only instances with this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only instances with an endpoint of this protocol.
    #[arg(long)]
    pub protocol: Option<String>,
    /// Only instances with this tag.
    #[arg(long)]
    pub tag: Option<String>,
}

/// `--endpoint [NAME=]PROTOCOL://ADDRESS:PORT`.
pub fn parse_endpoint(text: &str) -> Result<InstanceEndpoint, String> {
    const FORM: &str = "expected [NAME=]PROTOCOL://ADDRESS:PORT, e.g. http://10.0.0.5:8080 or \
                        admin=http://10.0.0.5:9000";
    let (name, url) = match text.split_once('=') {
        Some((name, url)) if !name.contains("://") => (Some(name), url),
        _ => (None, text),
    };
    let (protocol, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{text:?} has no PROTOCOL:// ({FORM})"))?;
    if protocol.is_empty() {
        return Err(format!("{text:?} has an empty protocol ({FORM})"));
    }
    let (address, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} has no :PORT ({FORM})"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?}: port {port:?} is not in 1..=65535 ({FORM})"))?;
    // `[::1]` is how a URL writes an IPv6 address; the registry stores the address itself.
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    if address.is_empty() || address.contains('/') {
        return Err(format!("{text:?} has no ADDRESS, or a path ({FORM})"));
    }
    if name.is_some_and(str::is_empty) {
        return Err(format!("{text:?} has an empty NAME before = ({FORM})"));
    }
    let protocol = protocol.to_ascii_lowercase();
    Ok(InstanceEndpoint {
        name: name.map_or_else(|| protocol.clone(), str::to_string),
        protocol,
        address: address.to_string(),
        port,
    })
}

/// `--meta KEY=VALUE`.
pub fn parse_meta(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// `--check http://HOST:PORT/PATH` or `--check tcp://HOST:PORT`.
pub fn parse_check_target(text: &str) -> Result<ProbeTarget, String> {
    if text.starts_with("http://") || text.starts_with("https://") {
        // https is refused by the node with the reason (no TLS in its prober) and a way out.
        return Ok(ProbeTarget::Http { url: text.into() });
    }
    match text.strip_prefix("tcp://") {
        Some(address)
            if address
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty()) =>
        {
            Ok(ProbeTarget::Tcp {
                address: address.to_string(),
            })
        }
        _ => Err(format!(
            "{text:?} is not a check: use http://HOST:PORT/PATH or tcp://HOST:PORT (or --ttl 10s)"
        )),
    }
}

impl RegisterArgs {
    /// The registration the flags describe.
    fn spec(&self) -> Result<InstanceSpec, CliError> {
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if self.endpoints[..i].iter().any(|e| e.name == endpoint.name) {
                return Err(CliError::usage(format!(
                    "--endpoint: two endpoints are named {:?}; give each its own NAME= prefix \
                     (e.g. --endpoint admin={}://{}:{})",
                    endpoint.name, endpoint.protocol, endpoint.address, endpoint.port
                )));
            }
        }
        let check = match (&self.check, self.ttl) {
            (Some(target), _) => {
                let interval = self.interval.unwrap_or(DEFAULT_INTERVAL);
                let timeout = self
                    .check_timeout
                    .unwrap_or(DEFAULT_CHECK_TIMEOUT.min(interval));
                Some(Check::Probe(Probe {
                    target: target.clone(),
                    interval_ms: millis(interval),
                    timeout_ms: millis(timeout),
                    unhealthy_after: self.unhealthy_after,
                    healthy_after: self.healthy_after,
                }))
            }
            (None, Some(ttl)) => Some(Check::Ttl {
                ttl_ms: millis(ttl),
            }),
            (None, None) => None,
        };
        Ok(InstanceSpec {
            endpoints: self.endpoints.clone(),
            tags: self.tags.clone(),
            metadata: self.metadata.iter().cloned().collect(),
            check,
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `cfgnode register NS SERVICE INSTANCE ...`.
pub async fn register(client: &Client, out: Output, args: RegisterArgs) -> Result<(), CliError> {
    let spec = args.spec()?;
    let InstanceArgs {
        namespace,
        service,
        instance,
    } = &args.at;
    if !args.keepalive {
        let registered = client.register(namespace, service, instance, spec).await?;
        return print_registered(out, namespace, registered.created, &registered.instance);
    }
    // Watch the signals before registering: a SIGTERM right after must still deregister.
    let mut signal = std::pin::pin!(crate::agent::shutdown_signal());
    let registration = client
        .register_with_keepalive(namespace, service, instance, spec)
        .await?;
    let registered = registration.registered();
    print_registered(out, namespace, registered.created, &registered.instance)?;
    if !registration.sends_heartbeats() {
        eprintln!(
            "note: {namespace}/{service}/{instance} has no --ttl check: nothing to renew; \
             waiting for SIGINT/SIGTERM to deregister it"
        );
    }
    (&mut signal).await;
    let revision = registration.deregister().await?;
    print_deregistered(out, namespace, service, instance, revision)
}

fn print_registered(
    out: Output,
    namespace: &str,
    created: bool,
    instance: &Instance,
) -> Result<(), CliError> {
    match out {
        Output::Json => {
            let mut value = instance_json(instance);
            value["created"] = json!(created);
            print_json(&value)
        }
        Output::Text => {
            println!(
                "{namespace}/{}/{} {} status {} revision {}",
                instance.service,
                instance.instance,
                if created { "registered" } else { "replaced" },
                instance.status.as_str(),
                instance.revision
            );
            Ok(())
        }
    }
}

fn print_deregistered(
    out: Output,
    namespace: &str,
    service: &str,
    instance: &str,
    revision: u64,
) -> Result<(), CliError> {
    match out {
        Output::Json => print_json(&json!({
            "namespace": namespace,
            "service": service,
            "instance": instance,
            "deregistered": true,
            "revision": revision,
        })),
        Output::Text => {
            println!("{namespace}/{service}/{instance} deregistered revision {revision}");
            Ok(())
        }
    }
}

/// `cfgnode deregister NS SERVICE INSTANCE`.
pub async fn deregister(client: &Client, out: Output, at: InstanceArgs) -> Result<(), CliError> {
    let revision = client
        .deregister(&at.namespace, &at.service, &at.instance)
        .await?;
    print_deregistered(out, &at.namespace, &at.service, &at.instance, revision)
}

/// `cfgnode heartbeat NS SERVICE INSTANCE`: renews a TTL check once.
pub async fn heartbeat(client: &Client, out: Output, at: InstanceArgs) -> Result<(), CliError> {
    let status = client
        .heartbeat(&at.namespace, &at.service, &at.instance)
        .await?;
    match out {
        Output::Json => print_json(&json!({"status": status.as_str()})),
        Output::Text => {
            println!(
                "{}/{}/{} {}",
                at.namespace,
                at.service,
                at.instance,
                status.as_str()
            );
            Ok(())
        }
    }
}

/// `cfgnode services NS`: every service with its instance counts.
pub async fn services(client: &Client, out: Output, namespace: &str) -> Result<(), CliError> {
    let listing = client.services(namespace).await?;
    match out {
        Output::Json => print_json(&services_json(&listing)),
        Output::Text => {
            println!(
                "{:<32} {:>9} {:>7} {:>9} {:>7}",
                "SERVICE", "INSTANCES", "HEALTHY", "UNHEALTHY", "UNKNOWN"
            );
            for s in &listing.services {
                println!(
                    "{:<32} {:>9} {:>7} {:>9} {:>7}",
                    s.service, s.instances, s.healthy, s.unhealthy, s.unknown
                );
            }
            Ok(())
        }
    }
}

/// `cfgnode instances NS SERVICE [--status] [--protocol] [--tag]`.
pub async fn instances(client: &Client, out: Output, args: InstancesArgs) -> Result<(), CliError> {
    let filter = InstanceFilter {
        status: args.status.map(Into::into),
        protocol: args.protocol,
        tag: args.tag,
    };
    let view = client
        .service(&args.namespace, &args.service, filter)
        .await?;
    match out {
        Output::Json => print_json(&service_json(&view)),
        Output::Text => {
            println!(
                "{:<24} {:<9} {:<40} {:<16} LAST CHECK",
                "INSTANCE", "STATUS", "ENDPOINTS", "TAGS"
            );
            for i in &view.instances {
                println!(
                    "{:<24} {:<9} {:<40} {:<16} {}",
                    i.instance,
                    i.status.as_str(),
                    endpoints_text(&i.spec.endpoints),
                    if i.spec.tags.is_empty() {
                        "-".to_string()
                    } else {
                        i.spec.tags.join(",")
                    },
                    i.last_check.as_ref().map_or_else(
                        || "-".to_string(),
                        |c| format!("{} {}", if c.ok { "ok" } else { "fail" }, c.output)
                    )
                );
            }
            Ok(())
        }
    }
}

/// Endpoints as a table cell: `api=http://10.0.0.5:8080` (the name left out when it is the
/// protocol), comma-separated.
fn endpoints_text(endpoints: &[InstanceEndpoint]) -> String {
    if endpoints.is_empty() {
        return "-".to_string();
    }
    endpoints
        .iter()
        .map(|e| {
            let address = if e.address.contains(':') {
                format!("[{}]", e.address)
            } else {
                e.address.clone()
            };
            let url = format!("{}://{address}:{}", e.protocol, e.port);
            if e.name == e.protocol {
                url
            } else {
                format!("{}={url}", e.name)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A duration as the HTTP API writes it: `1s`, `500ms`.
fn duration(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

fn check_json(check: &Check) -> Value {
    match check {
        Check::Ttl { ttl_ms } => json!({"kind": "ttl", "ttl": duration(*ttl_ms)}),
        Check::Probe(probe) => {
            let mut out = match &probe.target {
                ProbeTarget::Http { url } => json!({"kind": "http", "url": url}),
                ProbeTarget::Tcp { address } => json!({"kind": "tcp", "address": address}),
            };
            out["interval"] = json!(duration(probe.interval_ms));
            out["timeout"] = json!(duration(probe.timeout_ms));
            out["unhealthy_after"] = json!(probe.unhealthy_after);
            out["healthy_after"] = json!(probe.healthy_after);
            out
        }
    }
}

/// An instance in the HTTP API's shape (`GET .../services/{service}`).
fn instance_json(i: &Instance) -> Value {
    json!({
        "service": i.service,
        "instance": i.instance,
        "status": i.status.as_str(),
        "status_since": time(i.status_since),
        "endpoints": i.spec.endpoints.iter().map(|e| json!({
            "name": e.name,
            "protocol": e.protocol,
            "address": e.address,
            "port": e.port,
        })).collect::<Vec<_>>(),
        "tags": i.spec.tags,
        "metadata": i.spec.metadata,
        "check": i.spec.check.as_ref().map(check_json),
        "last_check": i.last_check.as_ref().map(|c| json!({
            "at": time(c.at),
            "ok": c.ok,
            "output": c.output,
        })),
        "version": i.version,
        "revision": i.revision,
    })
}

fn service_json(view: &ServiceView) -> Value {
    json!({
        "service": view.service,
        "revision": view.revision,
        "instances": view.instances.iter().map(instance_json).collect::<Vec<_>>(),
    })
}

fn services_json(listing: &Services) -> Value {
    json!({
        "revision": listing.revision,
        "services": listing.services.iter().map(|s| json!({
            "service": s.service,
            "instances": s.instances,
            "healthy": s.healthy,
            "unhealthy": s.unhealthy,
            "unknown": s.unknown,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str, protocol: &str, address: &str, port: u16) -> InstanceEndpoint {
        InstanceEndpoint {
            name: name.into(),
            protocol: protocol.into(),
            address: address.into(),
            port,
        }
    }

    #[test]
    fn endpoints_parse_with_and_without_a_name() {
        assert_eq!(
            parse_endpoint("http://10.0.0.5:8080"),
            Ok(endpoint("http", "http", "10.0.0.5", 8080))
        );
        assert_eq!(
            parse_endpoint("api=grpc://10.0.0.5:9090"),
            Ok(endpoint("api", "grpc", "10.0.0.5", 9090))
        );
        assert_eq!(
            parse_endpoint("PFCP://upf.local:8805"),
            Ok(endpoint("pfcp", "pfcp", "upf.local", 8805))
        );
        assert_eq!(
            parse_endpoint("grpc://[::1]:9090"),
            Ok(endpoint("grpc", "grpc", "::1", 9090))
        );
        for bad in [
            "10.0.0.5:8080",
            "http://10.0.0.5",
            "http://10.0.0.5:0",
            "http://10.0.0.5:70000",
            "http://:8080",
            "http://10.0.0.5:8080/path",
            "=http://10.0.0.5:8080",
            "://10.0.0.5:8080",
        ] {
            let error = parse_endpoint(bad).expect_err(bad);
            assert!(error.contains("PROTOCOL://ADDRESS:PORT"), "{bad}: {error}");
        }
    }

    #[test]
    fn metadata_and_checks_parse() {
        assert_eq!(
            parse_meta("zone=eu-1"),
            Ok(("zone".to_string(), "eu-1".to_string()))
        );
        assert_eq!(
            parse_meta("empty="),
            Ok(("empty".to_string(), String::new()))
        );
        assert!(parse_meta("novalue").is_err());
        assert!(parse_meta("=v").is_err());
        assert_eq!(
            parse_check_target("http://10.0.0.5:8080/health"),
            Ok(ProbeTarget::Http {
                url: "http://10.0.0.5:8080/health".into()
            })
        );
        assert_eq!(
            parse_check_target("tcp://10.0.0.5:8080"),
            Ok(ProbeTarget::Tcp {
                address: "10.0.0.5:8080".into()
            })
        );
        assert!(parse_check_target("tcp://10.0.0.5").is_err());
        assert!(parse_check_target("udp://10.0.0.5:53").is_err());
    }

    #[test]
    fn endpoints_print_as_they_are_given() {
        let shown = endpoints_text(&[
            endpoint("http", "http", "10.0.0.5", 8080),
            endpoint("admin", "grpc", "::1", 9090),
        ]);
        assert_eq!(shown, "http://10.0.0.5:8080,admin=grpc://[::1]:9090");
        for part in shown.split(',') {
            parse_endpoint(part).expect("what is printed parses back");
        }
    }
}
