//! Which addresses a webhook may be delivered to (pure: no IO, no DNS).
//!
//! A webhook makes the holder send HTTP requests to a URL an API caller chose, from inside the
//! cluster's network: without a rule, a caller could make a node probe or call its own loopback
//! services, a cloud metadata endpoint (169.254.169.254) or any host of the private network
//! (server-side request forgery). So every target address is classified, and addresses that
//! are not public ([`Restricted`]) are refused unless the operator allows them with
//! `cfgnode start --webhook-allow CIDR,...` ([`TargetPolicy`]).
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.0.0.5`) are judged, and matched against the allow
//! list, as the IPv4 address they carry, since that is where the kernel connects them.
//!
//! The node applies the policy twice: when a webhook is created with a literal IP host (a 400
//! then), and at every delivery to every address its host resolves to (a name may resolve to
//! a private address, or change to one later: DNS rebinding). See `webhooks.rs`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`; a bare address is one host), as
/// given to `--webhook-allow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits zero, checked at parse time).
    network: IpAddr,
    /// How many leading bits of an address must equal the network's.
    prefix: u8,
}

/// Why a `--webhook-allow` entry is not a CIDR; the message shows the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a CIDR ({why}); write networks like 10.0.0.0/8, 127.0.0.1/32 or fd00::/8"
)]
pub struct CidrError {
    /// What was given.
    input: String,
    /// What is wrong with it.
    why: String,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Cidr, CidrError> {
        let fail = |why: String| CidrError {
            input: input.to_string(),
            why,
        };
        let text = input.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| fail(format!("{addr:?} is not an IP address")))?;
        let max = max_prefix(network);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| fail(format!("the prefix length must be 0..={max}")))?,
        };
        let cidr = Cidr { network, prefix };
        if mask(network, prefix) != network {
            // "10.1.2.3/8" is most likely a typo of one kind or another: say what it means.
            return Err(fail(format!(
                "host bits are set: did you mean {}/{prefix}?",
                mask(network, prefix)
            )));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is inside this network (an IPv4-mapped IPv6 address counts as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let same_family = ip.is_ipv4() == self.network.is_ipv4();
        same_family && mask(ip, self.prefix) == self.network
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// `ip` with every bit past the first `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

/// Why an address is not a public one, as shown in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restricted {
    /// 127.0.0.0/8, ::1: this host's own services.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7 (unique local), fec0::/10 (old site-local).
    Private,
    /// 169.254/16, fe80::/10: includes cloud metadata endpoints.
    LinkLocal,
    /// 0.0.0.0/8, ::: connecting to it reaches this host.
    Unspecified,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 100.64/10: carrier-grade NAT, often a provider's internal network.
    SharedAddressSpace,
    /// 240/4: reserved, never a legitimate receiver.
    Reserved,
}

impl fmt::Display for Restricted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restricted::Loopback => "loopback",
            Restricted::Private => "private",
            Restricted::LinkLocal => "link-local",
            Restricted::Unspecified => "unspecified",
            Restricted::Multicast => "multicast",
            Restricted::Broadcast => "broadcast",
            Restricted::SharedAddressSpace => "shared address space (CGNAT)",
            Restricted::Reserved => "reserved",
        })
    }
}

/// What kind of non-public address `ip` is; `None` for a public (deliverable) one.
pub fn restriction(ip: IpAddr) -> Option<Restricted> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => restriction_v4(v4),
        IpAddr::V6(v6) => restriction_v6(v6),
    }
}

fn restriction_v4(ip: Ipv4Addr) -> Option<Restricted> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        Restricted::Loopback
    } else if ip.is_private() {
        Restricted::Private
    } else if ip.is_link_local() {
        Restricted::LinkLocal
    } else if a == 0 {
        Restricted::Unspecified
    } else if ip.is_broadcast() {
        Restricted::Broadcast
    } else if ip.is_multicast() {
        Restricted::Multicast
    } else if a == 100 && (b & 0xc0) == 64 {
        Restricted::SharedAddressSpace
    } else if a >= 240 {
        Restricted::Reserved
    } else {
        return None;
    })
}

fn restriction_v6(ip: Ipv6Addr) -> Option<Restricted> {
    let first = ip.segments()[0];
    Some(if ip.is_loopback() {
        Restricted::Loopback
    } else if ip.is_unspecified() {
        Restricted::Unspecified
    } else if ip.is_multicast() {
        Restricted::Multicast
    } else if (first & 0xffc0) == 0xfe80 {
        Restricted::LinkLocal
    } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfec0 {
        Restricted::Private
    } else {
        return None;
    })
}

/// Why a delivery target was refused. Its message is the webhook's `last_error` (and the 400's
/// message at creation): it names the address, its kind and the flag that allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("target address not allowed ({ip} is {why}): see --webhook-allow")]
pub struct TargetRefused {
    /// The address refused.
    pub ip: IpAddr,
    /// What kind of address it is.
    pub why: Restricted,
}

/// The node's rule for webhook targets: public addresses, plus the non-public networks the
/// operator allowed (`--webhook-allow`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Networks allowed although not public (a receiver on the private network, or loopback in
    /// tests).
    allow: Vec<Cidr>,
}

impl TargetPolicy {
    /// A policy allowing public addresses and `allow`.
    pub fn new(allow: Vec<Cidr>) -> TargetPolicy {
        TargetPolicy { allow }
    }

    /// `Ok` when a webhook may be delivered to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), TargetRefused> {
        match restriction(ip) {
            Some(why) if !self.allow.iter().any(|net| net.contains(ip)) => {
                Err(TargetRefused { ip, why })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("test cidr")
    }

    #[test]
    fn every_non_public_range_is_classified() {
        let cases = [
            ("127.0.0.1", Restricted::Loopback),
            ("127.255.255.254", Restricted::Loopback),
            ("10.0.0.5", Restricted::Private),
            ("10.255.255.255", Restricted::Private),
            ("172.16.0.1", Restricted::Private),
            ("172.31.255.255", Restricted::Private),
            ("192.168.1.1", Restricted::Private),
            ("169.254.169.254", Restricted::LinkLocal),
            ("0.0.0.0", Restricted::Unspecified),
            ("0.1.2.3", Restricted::Unspecified),
            ("224.0.0.1", Restricted::Multicast),
            ("239.255.255.255", Restricted::Multicast),
            ("255.255.255.255", Restricted::Broadcast),
            ("100.64.0.1", Restricted::SharedAddressSpace),
            ("100.127.255.255", Restricted::SharedAddressSpace),
            ("240.0.0.1", Restricted::Reserved),
            ("::1", Restricted::Loopback),
            ("::", Restricted::Unspecified),
            ("fe80::1", Restricted::LinkLocal),
            ("febf::1", Restricted::LinkLocal),
            ("fc00::1", Restricted::Private),
            ("fd12:3456::1", Restricted::Private),
            ("fec0::1", Restricted::Private),
            ("ff02::1", Restricted::Multicast),
            // IPv4-mapped: judged as the IPv4 address the kernel connects to.
            ("::ffff:127.0.0.1", Restricted::Loopback),
            ("::ffff:10.0.0.5", Restricted::Private),
            ("::ffff:169.254.169.254", Restricted::LinkLocal),
            ("::ffff:100.64.0.1", Restricted::SharedAddressSpace),
            ("::ffff:0.0.0.0", Restricted::Unspecified),
        ];
        for (text, kind) in cases {
            assert_eq!(restriction(ip(text)), Some(kind), "{text}");
        }
    }

    #[test]
    fn public_addresses_and_range_edges_pass() {
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.1",
            "223.255.255.255",
            "2001:db8::1",
            "2606:4700::1111",
            "fbff::1",
            "fe00::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(restriction(ip(text)), None, "{text}");
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let lo = cidr("127.0.0.1/32");
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")), "mapped form matches");
        assert!(!lo.contains(ip("127.0.0.2")));
        assert!(!lo.contains(ip("::1")), "no cross-family match");
        let ten = cidr("10.0.0.0/8");
        assert!(ten.contains(ip("10.200.1.1")));
        assert!(!ten.contains(ip("11.0.0.0")));
        let ula = cidr("fd00::/8");
        assert!(ula.contains(ip("fd12::1")));
        assert!(!ula.contains(ip("fc00::1")));
        assert!(cidr("0.0.0.0/0").contains(ip("10.0.0.1")));
        assert!(cidr("::/0").contains(ip("fe80::1")));
        assert_eq!(cidr("192.168.1.7"), cidr("192.168.1.7/32"));
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr(" 10.0.0.0/8 ").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        for (text, says) in [
            ("10.0.0.0/33", "0..=32"),
            ("fd00::/129", "0..=128"),
            ("10.0.0.0/x", "0..=32"),
            ("10.0.0/8", "not an IP address"),
            ("localhost", "not an IP address"),
            ("", "not an IP address"),
            ("10.1.2.3/8", "did you mean 10.0.0.0/8"),
        ] {
            let e = text.parse::<Cidr>().expect_err(text).to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(e.contains("10.0.0.0/8"), "shows the form: {e}");
        }
    }

    #[test]
    fn the_policy_refuses_non_public_unless_allowed() {
        let strict = TargetPolicy::default();
        assert!(strict.check(ip("93.184.216.34")).is_ok());
        let refused = strict.check(ip("10.0.0.5")).expect_err("private");
        assert_eq!(
            refused.to_string(),
            "target address not allowed (10.0.0.5 is private): see --webhook-allow"
        );
        assert!(strict.check(ip("::ffff:127.0.0.1")).is_err());
        let allowing = TargetPolicy::new(vec![cidr("127.0.0.1/32"), cidr("10.1.0.0/16")]);
        assert!(allowing.check(ip("127.0.0.1")).is_ok());
        assert!(allowing.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(allowing.check(ip("10.1.2.3")).is_ok());
        assert!(
            allowing.check(ip("10.2.0.1")).is_err(),
            "only what is listed"
        );
        assert!(allowing.check(ip("127.0.0.2")).is_err());
        assert!(allowing.check(ip("::1")).is_err());
    }
}
