//! Seed 002's registration shapes (pure), kept for people moving from it:
//! `POST .../register {"service_name","pod_name","providers":[{"protocol","ip","port"}],
//! "health_check_url","notification_url","subscriptions":[...]}` becomes an instance (one
//! endpoint per provider, an HTTP check on `health_check_url`) plus, when it names a
//! notification URL, a subscription to the listed services; `DELETE .../unregister` removes
//! both.

use cfgnode_transport::registry::{
    WireCheck, WireEndpoint, WireInstanceSpec, WireProbe, WireProbeTarget, WireSubscriptionSpec,
};
use serde_json::{Map, Value};

use super::json::{
    DEFAULT_HEALTHY_AFTER, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_UNHEALTHY_AFTER,
};
use super::validate::Invalid;

/// A seed-shaped registration, translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// `service_name`.
    pub service: String,
    /// `pod_name`.
    pub instance: String,
    /// Providers as endpoints, the health URL as an HTTP check.
    pub spec: WireInstanceSpec,
    /// `notification_url` + `subscriptions`, when given.
    pub subscription: Option<SeedSubscription>,
}

/// The subscription a seed registration makes, named after its instance so unregistering can
/// find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedSubscription {
    /// [`subscription_name`] of the instance.
    pub name: String,
    /// Where and what.
    pub spec: WireSubscriptionSpec,
}

/// The subscription name a seed registration of `service`/`pod` uses.
pub fn subscription_name(service: &str, pod: &str) -> String {
    format!("seed-{service}-{pod}")
}

/// Translates a seed 002 registration body.
pub fn parse_register(body: &Value) -> Result<Registration, Invalid> {
    let fields = body
        .as_object()
        .ok_or_else(|| Invalid::new("body", "must be a JSON object"))?;
    const KNOWN: &[&str] = &[
        "service_name",
        "pod_name",
        "providers",
        "health_check_url",
        "notification_url",
        "subscriptions",
        "notification_secret",
    ];
    if let Some(unknown) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Invalid::new(
            unknown.clone(),
            format!("is not a known field (known: {})", KNOWN.join(", ")),
        ));
    }
    let service = required_string(fields, "service_name")?;
    let instance = required_string(fields, "pod_name")?;
    let mut endpoints: Vec<WireEndpoint> = Vec::new();
    let providers = match fields.get("providers") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(providers)) => providers,
        Some(_) => return Err(Invalid::new("providers", "must be a JSON array")),
    };
    for (i, provider) in providers.iter().enumerate() {
        let at = |f: &str| format!("providers[{i}].{f}");
        let provider = provider
            .as_object()
            .ok_or_else(|| Invalid::new(format!("providers[{i}]"), "must be a JSON object"))?;
        let protocol = provider
            .get("protocol")
            .and_then(Value::as_str)
            .ok_or_else(|| Invalid::new(at("protocol"), "is required (a string)"))?
            .to_ascii_lowercase();
        let address = provider
            .get("ip")
            .and_then(Value::as_str)
            .ok_or_else(|| Invalid::new(at("ip"), "is required (a string)"))?;
        let port = provider
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| Invalid::new(at("port"), "must be a port number, 1..=65535"))?;
        // Endpoints are named by protocol; a second provider of a protocol gets `-2`, ...
        let same = endpoints.iter().filter(|e| e.protocol == protocol).count();
        let name = if same == 0 {
            protocol.clone()
        } else {
            format!("{protocol}-{}", same + 1)
        };
        endpoints.push(WireEndpoint {
            name,
            protocol,
            address: address.to_string(),
            port,
        });
    }
    let check = optional_string(fields, "health_check_url")?.map(|url| {
        WireCheck::Probe(WireProbe {
            target: WireProbeTarget::Http { url },
            interval_ms: millis(DEFAULT_INTERVAL),
            timeout_ms: millis(DEFAULT_TIMEOUT),
            unhealthy_after: DEFAULT_UNHEALTHY_AFTER,
            healthy_after: DEFAULT_HEALTHY_AFTER,
        })
    });
    let subscription = match optional_string(fields, "notification_url")? {
        None => None,
        Some(url) => {
            let services = match fields.get("subscriptions") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(list)) => list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        s.as_str().map(str::to_string).ok_or_else(|| {
                            Invalid::new(format!("subscriptions[{i}]"), "must be a string")
                        })
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(Invalid::new("subscriptions", "must be a JSON array")),
            };
            // Seed 002 notifies about the subscribed services; with none named, about its own.
            let services = if services.is_empty() {
                vec![service.clone()]
            } else {
                services
            };
            Some(SeedSubscription {
                name: subscription_name(&service, &instance),
                spec: WireSubscriptionSpec {
                    url,
                    services,
                    secret: optional_string(fields, "notification_secret")?,
                },
            })
        }
    };
    Ok(Registration {
        service,
        instance,
        spec: WireInstanceSpec {
            endpoints,
            tags: Vec::new(),
            metadata: Default::default(),
            check,
        },
        subscription,
    })
}

fn required_string(fields: &Map<String, Value>, name: &str) -> Result<String, Invalid> {
    optional_string(fields, name)?.ok_or_else(|| Invalid::new(name, "is required"))
}

fn optional_string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, Invalid> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Invalid::new(name, "must be a string")),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_seed_registration_translates() {
        let parsed = parse_register(&json!({
            "service_name": "smf",
            "pod_name": "smf-0",
            "providers": [
                {"protocol": "PFCP", "ip": "10.0.0.7", "port": 8805},
                {"protocol": "http", "ip": "10.0.0.7", "port": 80},
                {"protocol": "http", "ip": "10.0.0.7", "port": 8080},
            ],
            "health_check_url": "http://10.0.0.7/health",
            "notification_url": "http://10.0.0.7/notify",
            "subscriptions": ["upf"],
        }))
        .expect("translates");
        assert_eq!(
            (parsed.service.as_str(), parsed.instance.as_str()),
            ("smf", "smf-0")
        );
        let names: Vec<_> = parsed
            .spec
            .endpoints
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["pfcp", "http", "http-2"]);
        assert!(matches!(parsed.spec.check, Some(WireCheck::Probe(_))));
        let subscription = parsed.subscription.expect("a subscription");
        assert_eq!(subscription.name, "seed-smf-smf-0");
        assert_eq!(subscription.spec.services, ["upf"]);
        assert_eq!(subscription.spec.secret, None);
    }

    #[test]
    fn bad_seed_fields_are_named() {
        let field = |body: Value| parse_register(&body).expect_err("refused").field;
        assert_eq!(field(json!({"pod_name": "p"})), "service_name");
        assert_eq!(
            field(
                json!({"service_name": "s", "pod_name": "p", "providers": [{"protocol": "http", "ip": "1.2.3.4", "port": 0}]})
            ),
            "providers[0].port"
        );
        assert_eq!(
            field(json!({"service_name": "s", "pod_name": "p", "extra": 1})),
            "extra"
        );
    }
}
