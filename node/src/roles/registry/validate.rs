//! The registry's rules for what it stores (pure): names, endpoints, tags, metadata, checks
//! and subscriptions. Both front ends build a typed spec (QUIC decodes one, HTTP parses JSON in
//! [`super::json`]) and pass it here, so a rule is written once and a refused request changes
//! nothing. Every refusal names the field at fault (`endpoints[2].port`), so the caller can fix
//! it without guessing.

use cfgnode_transport::registry::limits::*;
use cfgnode_transport::registry::{
    WireCheck, WireInstanceSpec, WireProbe, WireProbeTarget, WireSubscriptionSpec,
};

/// A request the registry refuses: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The JSON path of the field at fault (`service`, `endpoints[0].port`, `check.interval`).
    pub field: String,
    /// What is wrong, and what would be right.
    pub reason: String,
}

impl Invalid {
    /// A refusal of `field` because of `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks a service or instance name: 1..=128 bytes of ASCII letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit. No `/`: the pair is stored as the record `service/instance`.
pub fn check_name(field: &str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if name.len() > MAX_NAME {
        return Err(Invalid::new(
            field,
            format!("must be at most {MAX_NAME} bytes"),
        ));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(Invalid::new(field, "must start with a letter or a digit"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Invalid::new(
            field,
            format!("{bad:?} is not allowed (letters, digits, '.', '_' and '-' are)"),
        ));
    }
    Ok(())
}

/// Checks everything a registration says.
pub fn check_spec(spec: &WireInstanceSpec) -> Result<(), Invalid> {
    if spec.endpoints.len() > MAX_ENDPOINTS {
        return Err(Invalid::new(
            "endpoints",
            format!(
                "{} endpoints, at most {MAX_ENDPOINTS} are allowed",
                spec.endpoints.len()
            ),
        ));
    }
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        let at = |what: &str| format!("endpoints[{i}].{what}");
        check_label(&at("name"), &endpoint.name)?;
        if spec.endpoints[..i].iter().any(|e| e.name == endpoint.name) {
            return Err(Invalid::new(
                at("name"),
                format!("{:?} is used by an earlier endpoint", endpoint.name),
            ));
        }
        check_label(&at("protocol"), &endpoint.protocol)?;
        check_host(&at("address"), &endpoint.address)?;
        if endpoint.port == 0 {
            return Err(Invalid::new(at("port"), "must be 1..=65535"));
        }
    }
    if spec.tags.len() > MAX_TAGS {
        return Err(Invalid::new(
            "tags",
            format!("{} tags, at most {MAX_TAGS} are allowed", spec.tags.len()),
        ));
    }
    for (i, tag) in spec.tags.iter().enumerate() {
        check_text(&format!("tags[{i}]"), tag, MAX_TAG)?;
    }
    if spec.metadata.len() > MAX_METADATA {
        return Err(Invalid::new(
            "metadata",
            format!(
                "{} entries, at most {MAX_METADATA} are allowed",
                spec.metadata.len()
            ),
        ));
    }
    for (key, value) in &spec.metadata {
        check_text("metadata", key, MAX_METADATA_KEY)?;
        if value.len() > MAX_METADATA_VALUE || value.chars().any(char::is_control) {
            return Err(Invalid::new(
                format!("metadata.{key}"),
                format!("must be at most {MAX_METADATA_VALUE} bytes with no control character"),
            ));
        }
    }
    match &spec.check {
        None => Ok(()),
        Some(WireCheck::Ttl { ttl_ms }) => check_interval("check.ttl", *ttl_ms),
        Some(WireCheck::Probe(probe)) => check_probe(probe),
    }
}

fn check_probe(probe: &WireProbe) -> Result<(), Invalid> {
    match &probe.target {
        WireProbeTarget::Http { url } => check_url("check.url", url)?,
        WireProbeTarget::Tcp { address } => check_host_port("check.address", address)?,
    }
    check_interval("check.interval", probe.interval_ms)?;
    if probe.timeout_ms < MIN_TIMEOUT_MS || probe.timeout_ms > probe.interval_ms {
        return Err(Invalid::new(
            "check.timeout",
            format!("must be between {MIN_TIMEOUT_MS}ms and the check's interval"),
        ));
    }
    for (field, value) in [
        ("check.unhealthy_after", probe.unhealthy_after),
        ("check.healthy_after", probe.healthy_after),
    ] {
        if value == 0 || value > MAX_THRESHOLD {
            return Err(Invalid::new(field, format!("must be 1..={MAX_THRESHOLD}")));
        }
    }
    Ok(())
}

/// Checks what a subscription asks for.
pub fn check_subscription(spec: &WireSubscriptionSpec) -> Result<(), Invalid> {
    check_url("url", &spec.url)?;
    if spec.services.is_empty() {
        return Err(Invalid::new("services", "name at least one service"));
    }
    if spec.services.len() > MAX_SUBSCRIBED_SERVICES {
        return Err(Invalid::new(
            "services",
            format!("at most {MAX_SUBSCRIBED_SERVICES} services"),
        ));
    }
    for (i, service) in spec.services.iter().enumerate() {
        check_name(&format!("services[{i}]"), service)?;
    }
    if spec
        .secret
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.len() > 256)
    {
        return Err(Invalid::new(
            "secret",
            "must be 1..=256 bytes (leave it out to send unsigned notifications)",
        ));
    }
    Ok(())
}

/// Checks an interval or TTL in milliseconds.
fn check_interval(field: &str, ms: u64) -> Result<(), Invalid> {
    if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) {
        return Err(Invalid::new(
            field,
            format!("must be between {MIN_INTERVAL_MS}ms and 24h"),
        ));
    }
    Ok(())
}

/// An endpoint name or protocol: lowercase letters, digits, `_`, `-`, `+`, `.`, starting with a
/// letter (so `grpc`, `h2c`, `pfcp`, `gtp-u` all pass).
fn check_label(field: &str, label: &str) -> Result<(), Invalid> {
    let good_start = label.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    let good_rest = label.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'+' | b'.')
    });
    if !good_start || !good_rest || label.len() > MAX_ENDPOINT_NAME {
        return Err(Invalid::new(
            field,
            format!(
                "{label:?} must be 1..={MAX_ENDPOINT_NAME} lowercase letters, digits, '_', '-', '+' or '.', starting with a letter"
            ),
        ));
    }
    Ok(())
}

/// An IP address or a DNS name.
fn check_host(field: &str, host: &str) -> Result<(), Invalid> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.is_empty() || host.len() > MAX_ADDRESS || !host.split('.').all(label_ok) {
        return Err(Invalid::new(
            field,
            format!("{host:?} is neither an IP address nor a DNS name"),
        ));
    }
    Ok(())
}

/// `host:port` (an IPv6 host in brackets).
fn check_host_port(field: &str, address: &str) -> Result<(), Invalid> {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || {
        Invalid::new(
            field,
            format!("{address:?} is not host:port (for example 10.0.0.5:8080)"),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(port) if port > 0 => {}
        _ => return Err(bad()),
    }
    check_host(field, host).map_err(|_| bad())
}

/// An `http://` URL with a host. `https://` is refused for now: the node's HTTP client has no
/// TLS (as for webhooks); put a TLS-terminating proxy in front, or use a `tcp` check.
fn check_url(field: &str, url: &str) -> Result<(), Invalid> {
    let bad = |why: &str| {
        Invalid::new(
            field,
            format!("{why} (for example http://10.0.0.5:8080/health)"),
        )
    };
    if url.len() > MAX_CHECK_TARGET {
        return Err(bad("is too long"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if parsed.scheme() == "https" {
        return Err(bad(
            "https:// is not supported yet: use http://, or a tcp check on the TLS port",
        ));
    }
    if parsed.scheme() != "http" {
        return Err(bad("must be http://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(())
}

/// Free text: 1..=`max` bytes, no control character.
fn check_text(field: &str, text: &str, max: usize) -> Result<(), Invalid> {
    if text.is_empty() || text.len() > max || text.chars().any(char::is_control) {
        return Err(Invalid::new(
            field,
            format!("{text:?} must be 1..={max} bytes with no control character"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfgnode_transport::registry::WireEndpoint;

    fn endpoint(name: &str, port: u16) -> WireEndpoint {
        WireEndpoint {
            name: name.into(),
            protocol: "http".into(),
            address: "10.0.0.5".into(),
            port,
        }
    }

    fn probe(url: &str) -> WireProbe {
        WireProbe {
            target: WireProbeTarget::Http { url: url.into() },
            interval_ms: 1000,
            timeout_ms: 500,
            unhealthy_after: 3,
            healthy_after: 2,
        }
    }

    fn refused_field(spec: &WireInstanceSpec) -> String {
        check_spec(spec).expect_err("refused").field
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("service", "web-api.v2_1").is_ok());
        for bad in ["", "-web", "a/b", "a b", "é", &"x".repeat(129)] {
            assert_eq!(check_name("service", bad).expect_err(bad).field, "service");
        }
    }

    #[test]
    fn a_good_spec_passes() {
        let spec = WireInstanceSpec {
            endpoints: vec![endpoint("api", 8080), {
                let mut e = endpoint("gtp", 2152);
                e.protocol = "gtp-u".into();
                e.address = "upf-1.core.svc".into();
                e
            }],
            tags: vec!["v2".into()],
            metadata: [("zone".to_string(), "a".to_string())].into(),
            check: Some(WireCheck::Probe(probe("http://10.0.0.5:8080/health"))),
        };
        assert_eq!(check_spec(&spec), Ok(()));
        assert_eq!(check_spec(&WireInstanceSpec::default()), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let with = |f: &dyn Fn(&mut WireInstanceSpec)| {
            let mut spec = WireInstanceSpec {
                endpoints: vec![endpoint("api", 8080)],
                ..Default::default()
            };
            f(&mut spec);
            refused_field(&spec)
        };
        assert_eq!(with(&|s| s.endpoints[0].port = 0), "endpoints[0].port");
        assert_eq!(
            with(&|s| s.endpoints.push(endpoint("api", 1))),
            "endpoints[1].name"
        );
        assert_eq!(
            with(&|s| s.endpoints[0].protocol = "HTTP".into()),
            "endpoints[0].protocol"
        );
        assert_eq!(
            with(&|s| s.endpoints[0].address = "no host!".into()),
            "endpoints[0].address"
        );
        assert_eq!(
            with(&|s| s.endpoints = (0..65).map(|i| endpoint(&format!("e{i}"), 1)).collect()),
            "endpoints"
        );
        assert_eq!(with(&|s| s.tags = vec![String::new()]), "tags[0]");
        assert_eq!(
            with(&|s| s.check = Some(WireCheck::Ttl { ttl_ms: 99 })),
            "check.ttl"
        );
        let mut fast = probe("http://h/health");
        fast.interval_ms = 50;
        fast.timeout_ms = 20;
        assert_eq!(
            with(&|s| s.check = Some(WireCheck::Probe(fast.clone()))),
            "check.interval"
        );
        let mut slow = probe("http://h/health");
        slow.timeout_ms = 2000;
        assert_eq!(
            with(&|s| s.check = Some(WireCheck::Probe(slow.clone()))),
            "check.timeout"
        );
        let mut zero = probe("http://h/health");
        zero.unhealthy_after = 0;
        assert_eq!(
            with(&|s| s.check = Some(WireCheck::Probe(zero.clone()))),
            "check.unhealthy_after"
        );
        assert_eq!(
            with(&|s| s.check = Some(WireCheck::Probe(probe("ftp://h/")))),
            "check.url"
        );
        let tcp = WireProbe {
            target: WireProbeTarget::Tcp {
                address: "10.0.0.5".into(),
            },
            ..probe("http://h/")
        };
        assert_eq!(
            with(&|s| s.check = Some(WireCheck::Probe(tcp.clone()))),
            "check.address"
        );
    }

    #[test]
    fn host_ports_accept_names_and_ipv6() {
        assert!(check_host_port("a", "[::1]:80").is_ok());
        assert!(check_host_port("a", "db.internal:5432").is_ok());
        assert!(check_host_port("a", "db.internal:0").is_err());
        assert!(check_host_port("a", ":80").is_err());
    }

    #[test]
    fn subscriptions_are_checked() {
        let good = WireSubscriptionSpec {
            url: "http://127.0.0.1:9000/notify".into(),
            services: vec!["web".into()],
            secret: Some("s".into()),
        };
        assert_eq!(check_subscription(&good), Ok(()));
        let field = |f: &dyn Fn(&mut WireSubscriptionSpec)| {
            let mut spec = good.clone();
            f(&mut spec);
            check_subscription(&spec).expect_err("refused").field
        };
        assert_eq!(field(&|s| s.services.clear()), "services");
        assert_eq!(field(&|s| s.services = vec!["a/b".into()]), "services[0]");
        assert_eq!(field(&|s| s.secret = Some(String::new())), "secret");
        assert_eq!(field(&|s| s.url = "nope".into()), "url");
    }
}
