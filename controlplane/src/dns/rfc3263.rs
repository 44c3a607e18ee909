//! The RFC 3263 §4 procedure: from a SIP URI to an ordered list of servers
//! (transport, address, port), over any service that answers NAPTR, SRV and
//! address queries.
//!
//! - A numeric host: that address, the URI's port or the default, the URI's
//!   transport or UDP (TLS for `sips:`) — no query at all (§4.1, §4.2).
//! - A port but no numeric host: A/AAAA of the host (§4.2).
//! - A transport but no port: the SRV records of that transport, else
//!   A/AAAA at the default port.
//! - Neither: NAPTR records whose service rvoip speaks (`SIP+D2U`,
//!   `SIP+D2T`; `SIPS+D2T` only for `sips:`), in order and preference, each
//!   to its SRV records; without NAPTR, the SRV records of `_sip._udp` then
//!   `_sip._tcp` (`_sips._tcp` for `sips:`); without those, A/AAAA at the
//!   default port over UDP (TLS at 5061 for `sips:`).
//!
//! A `sips:` URI resolves to TLS servers only (`SIPS+D2T`, `_sips._tcp`);
//! whoever sends refuses them when it has no TLS.

use std::net::{IpAddr, SocketAddr};

use super::{Failure, Resolution, Server, SipName};
use crate::element::Transport;

/// A NAPTR record (RFC 3403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    /// Order.
    pub order: u16,
    /// Preference within an order.
    pub preference: u16,
    /// Flags (`s`: the replacement names SRV records).
    pub flags: String,
    /// Service (`SIP+D2U`, …).
    pub service: String,
    /// Replacement domain.
    pub replacement: String,
}

/// An SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Priority (lower first).
    pub priority: u16,
    /// Weight within a priority.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target host (`.`: the service is not offered).
    pub target: String,
}

/// Why a query gave no records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// NXDOMAIN, with the SOA's negative TTL when given.
    NoSuchName(Option<u32>),
    /// The name exists without records of the type asked.
    NoRecords(Option<u32>),
    /// The servers failed or did not answer.
    Failed(String),
}

/// Records with the smallest TTL among them.
pub type Records<T> = (Vec<T>, u32);

/// A DNS lookup service.
pub trait Lookups {
    /// NAPTR records of `name`.
    fn naptr(&self, name: &str) -> impl Future<Output = Result<Records<Naptr>, LookupError>>;
    /// SRV records of `name`.
    fn srv(&self, name: &str) -> impl Future<Output = Result<Records<Srv>, LookupError>>;
    /// A and AAAA records of `name`.
    fn ips(&self, name: &str) -> impl Future<Output = Result<Records<IpAddr>, LookupError>>;
}

/// How long an answer made without DNS (a numeric host) holds.
pub const LITERAL_TTL: u32 = 86_400;

/// A failed resolution and, when the zone said, how long it holds.
pub type Failed = (Failure, Option<u32>);

/// Runs the procedure for `name`.
pub async fn resolve<L: Lookups>(name: &SipName, dns: &L) -> Result<Resolution, Failed> {
    let resolution = find(name, dns).await?;
    if resolution.servers.is_empty() {
        return Err((Failure::NoServers, Some(resolution.ttl_secs)));
    }
    Ok(resolution)
}

async fn find<L: Lookups>(name: &SipName, dns: &L) -> Result<Resolution, Failed> {
    let default_transport = if name.secure {
        Transport::Tls
    } else {
        Transport::Udp
    };
    if let Some(ip) = name.ip {
        return Ok(Resolution {
            servers: vec![Server {
                transport: name.transport.unwrap_or(default_transport),
                address: SocketAddr::new(ip, name.port.unwrap_or(name.default_port())),
                priority: 0,
                weight: 0,
            }],
            ttl_secs: LITERAL_TTL,
        });
    }
    if let Some(port) = name.port {
        return addresses(
            dns,
            &name.host,
            port,
            name.transport.unwrap_or(default_transport),
            0,
            0,
        )
        .await;
    }
    let mut services: Vec<(Transport, String)> = Vec::new();
    let mut ttl = u32::MAX;
    if let Some(t) = name.transport {
        services.push((t, srv_name(name.secure, t, &name.host)));
    } else {
        match dns.naptr(&name.host).await {
            Ok((records, t)) => {
                ttl = ttl.min(t);
                let mut records: Vec<&Naptr> = records
                    .iter()
                    .filter(|r| r.flags.eq_ignore_ascii_case("s"))
                    .collect();
                records.sort_by_key(|r| (r.order, r.preference));
                for r in records {
                    if let Some(t) = service_transport(&r.service, name.secure) {
                        services.push((t, r.replacement.trim_end_matches('.').to_owned()));
                    }
                }
            }
            Err(LookupError::NoSuchName(neg)) => return Err((Failure::NoSuchName, neg)),
            Err(LookupError::NoRecords(_)) => {}
            Err(LookupError::Failed(e)) => return Err((Failure::Unreachable(e), None)),
        }
        if services.is_empty() {
            let order: &[Transport] = if name.secure {
                &[Transport::Tls]
            } else {
                &[Transport::Udp, Transport::Tcp]
            };
            services = order
                .iter()
                .map(|t| (*t, srv_name(name.secure, *t, &name.host)))
                .collect();
        }
    }
    let mut servers = Vec::new();
    let mut failed = None;
    for (rank, (transport, srv)) in services.iter().enumerate() {
        match dns.srv(srv).await {
            Ok((records, t)) => {
                ttl = ttl.min(t);
                for r in records {
                    let target = r.target.trim_end_matches('.');
                    if target.is_empty() {
                        continue;
                    }
                    // The service's rank, then the record's priority.
                    let priority = ((rank as u32) << 16) | u32::from(r.priority);
                    match addresses(dns, target, r.port, *transport, priority, r.weight).await {
                        Ok(found) => {
                            ttl = ttl.min(found.ttl_secs);
                            servers.extend(found.servers);
                        }
                        Err((Failure::Unreachable(e), _)) => failed = Some(e),
                        Err(_) => {}
                    }
                }
            }
            Err(LookupError::Failed(e)) => failed = Some(e),
            Err(_) => {}
        }
    }
    if !servers.is_empty() {
        return Ok(Resolution {
            servers,
            ttl_secs: ttl,
        });
    }
    if let Some(e) = failed {
        return Err((Failure::Unreachable(e), None));
    }
    // No SRV: the host itself at the default port (§4.2).
    let transport = name.transport.unwrap_or(default_transport);
    let found = addresses(dns, &name.host, name.default_port(), transport, 0, 0).await?;
    Ok(Resolution {
        ttl_secs: found.ttl_secs.min(ttl),
        servers: found.servers,
    })
}

/// `_sip._udp.HOST`, `_sip._tcp.HOST`, `_sips._tcp.HOST`.
fn srv_name(secure: bool, t: Transport, host: &str) -> String {
    let scheme = if secure { "_sips" } else { "_sip" };
    let proto = match t {
        Transport::Udp => "_udp",
        _ => "_tcp",
    };
    format!("{scheme}.{proto}.{host}")
}

/// The transport of a NAPTR service rvoip speaks, for a URI that is secure
/// or not.
fn service_transport(service: &str, secure: bool) -> Option<Transport> {
    let s = service.to_ascii_uppercase();
    match (s.as_str(), secure) {
        ("SIP+D2U", false) => Some(Transport::Udp),
        ("SIP+D2T", false) => Some(Transport::Tcp),
        ("SIPS+D2T", true) => Some(Transport::Tls),
        _ => None,
    }
}

async fn addresses<L: Lookups>(
    dns: &L,
    host: &str,
    port: u16,
    transport: Transport,
    priority: u32,
    weight: u16,
) -> Result<Resolution, Failed> {
    match dns.ips(host).await {
        Ok((ips, ttl)) => Ok(Resolution {
            servers: ips
                .into_iter()
                .map(|ip| Server {
                    transport,
                    address: SocketAddr::new(ip, port),
                    priority,
                    weight,
                })
                .collect(),
            ttl_secs: ttl,
        }),
        Err(LookupError::NoSuchName(neg)) => Err((Failure::NoSuchName, neg)),
        Err(LookupError::NoRecords(neg)) => Err((Failure::NoServers, neg)),
        Err(LookupError::Failed(e)) => Err((Failure::Unreachable(e), None)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A zone in memory; records every query asked.
    #[derive(Default)]
    struct Zone {
        naptr: HashMap<String, Vec<Naptr>>,
        srv: HashMap<String, Vec<Srv>>,
        ips: HashMap<String, Vec<IpAddr>>,
        asked: RefCell<Vec<String>>,
    }

    impl Zone {
        fn exists(&self, name: &str) -> bool {
            let suffix = |k: &String| k == name || k.ends_with(&format!(".{name}"));
            self.naptr.keys().any(suffix)
                || self.srv.keys().any(suffix)
                || self.ips.keys().any(suffix)
        }

        fn get<T: Clone>(
            &self,
            map: &HashMap<String, Vec<T>>,
            kind: &str,
            name: &str,
        ) -> Result<Records<T>, LookupError> {
            self.asked.borrow_mut().push(format!("{kind} {name}"));
            match map.get(name) {
                Some(r) => Ok((r.clone(), 300)),
                None if self.exists(name) => Err(LookupError::NoRecords(Some(60))),
                None => Err(LookupError::NoSuchName(Some(60))),
            }
        }
    }

    impl Lookups for Zone {
        async fn naptr(&self, name: &str) -> Result<Records<Naptr>, LookupError> {
            self.get(&self.naptr, "NAPTR", name)
        }
        async fn srv(&self, name: &str) -> Result<Records<Srv>, LookupError> {
            self.get(&self.srv, "SRV", name)
        }
        async fn ips(&self, name: &str) -> Result<Records<IpAddr>, LookupError> {
            self.get(&self.ips, "A", name)
        }
    }

    fn run(zone: &Zone, uri: &str) -> Result<Resolution, Failed> {
        let name = SipName::parse(uri).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(resolve(&name, zone))
    }

    fn naptr(order: u16, service: &str, replacement: &str) -> Naptr {
        Naptr {
            order,
            preference: 10,
            flags: "s".into(),
            service: service.into(),
            replacement: replacement.into(),
        }
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn zone() -> Zone {
        let mut z = Zone::default();
        z.naptr.insert(
            "trunk.example".into(),
            vec![
                naptr(20, "SIP+D2T", "_sip._tcp.trunk.example."),
                naptr(10, "SIP+D2U", "_sip._udp.trunk.example."),
                naptr(5, "SIPS+D2T", "_sips._tcp.trunk.example."),
            ],
        );
        z.srv.insert(
            "_sip._udp.trunk.example".into(),
            vec![
                srv(20, 1, 5072, "b.trunk.example."),
                srv(10, 1, 5070, "a.trunk.example."),
            ],
        );
        z.srv.insert(
            "_sip._tcp.trunk.example".into(),
            vec![srv(10, 1, 5080, "a.trunk.example.")],
        );
        z.srv.insert(
            "_sips._tcp.trunk.example".into(),
            vec![srv(10, 1, 5081, "a.trunk.example.")],
        );
        z.ips
            .insert("a.trunk.example".into(), vec!["127.0.0.1".parse().unwrap()]);
        z.ips
            .insert("b.trunk.example".into(), vec!["127.0.0.2".parse().unwrap()]);
        z.srv.insert(
            "_sip._udp.srvonly.example".into(),
            vec![srv(0, 0, 5090, "a.trunk.example.")],
        );
        z.ips.insert(
            "plain.example".into(),
            vec!["127.0.0.3".parse().unwrap(), "::1".parse().unwrap()],
        );
        z
    }

    fn found(r: &Resolution) -> Vec<(Transport, String)> {
        let mut s = r.servers.clone();
        s.sort_by_key(|s| s.priority);
        s.iter()
            .map(|s| (s.transport, s.address.to_string()))
            .collect()
    }

    #[test]
    fn naptr_then_srv_then_addresses_in_order_and_preference() {
        let z = zone();
        let r = run(&z, "sip:trunk.example").unwrap();
        assert_eq!(
            found(&r),
            vec![
                (Transport::Udp, "127.0.0.1:5070".into()),
                (Transport::Udp, "127.0.0.2:5072".into()),
                (Transport::Tcp, "127.0.0.1:5080".into()),
            ]
        );
        // SIPS+D2T is not for a sip: URI; no A query of the domain itself.
        assert!(!z.asked.borrow().iter().any(|q| q.contains("_sips")));
        assert!(!z.asked.borrow().contains(&"A trunk.example".to_string()));
    }

    #[test]
    fn a_transport_asks_only_its_srv_and_a_port_only_addresses() {
        let z = zone();
        let r = run(&z, "sip:trunk.example;transport=tcp").unwrap();
        assert_eq!(found(&r), vec![(Transport::Tcp, "127.0.0.1:5080".into())]);
        assert_eq!(
            z.asked.borrow().as_slice(),
            ["SRV _sip._tcp.trunk.example", "A a.trunk.example"]
        );
        let z = zone();
        let r = run(&z, "sip:plain.example:5099").unwrap();
        assert_eq!(
            found(&r),
            vec![
                (Transport::Udp, "127.0.0.3:5099".into()),
                (Transport::Udp, "[::1]:5099".into())
            ]
        );
        assert_eq!(z.asked.borrow().as_slice(), ["A plain.example"]);
    }

    #[test]
    fn without_naptr_srv_is_asked_and_without_srv_the_host_at_5060() {
        let z = zone();
        let r = run(&z, "sip:srvonly.example").unwrap();
        assert_eq!(found(&r), vec![(Transport::Udp, "127.0.0.1:5090".into())]);
        let z = zone();
        let r = run(&z, "sip:plain.example").unwrap();
        assert_eq!(found(&r)[0], (Transport::Udp, "127.0.0.3:5060".into()));
        let asked = z.asked.borrow();
        assert_eq!(
            asked.as_slice(),
            [
                "NAPTR plain.example",
                "SRV _sip._udp.plain.example",
                "SRV _sip._tcp.plain.example",
                "A plain.example"
            ]
        );
    }

    #[test]
    fn numeric_hosts_need_no_query_and_failures_are_named() {
        let z = zone();
        let r = run(&z, "sip:127.0.0.9:5070;transport=tcp").unwrap();
        assert_eq!(found(&r), vec![(Transport::Tcp, "127.0.0.9:5070".into())]);
        assert!(z.asked.borrow().is_empty());
        assert_eq!(
            run(&z, "sip:nowhere.invalid"),
            Err((Failure::NoSuchName, Some(60)))
        );
    }

    #[test]
    fn sips_resolves_to_tls_servers_only() {
        let z = zone();
        let r = run(&z, "sips:trunk.example").unwrap();
        assert_eq!(found(&r), vec![(Transport::Tls, "127.0.0.1:5081".into())]);
        assert!(!z.asked.borrow().iter().any(|q| q.contains("_sip._")));
        // transport=tls is sips: too; a numeric host at the TLS port.
        let r = run(&z, "sip:127.0.0.9;transport=tls").unwrap();
        assert_eq!(found(&r), vec![(Transport::Tls, "127.0.0.9:5061".into())]);
        let z = zone();
        let r = run(&z, "sips:plain.example").unwrap();
        assert_eq!(
            found(&r),
            vec![
                (Transport::Tls, "127.0.0.3:5061".into()),
                (Transport::Tls, "[::1]:5061".into())
            ]
        );
        assert_eq!(
            z.asked.borrow().as_slice(),
            [
                "NAPTR plain.example",
                "SRV _sips._tcp.plain.example",
                "A plain.example"
            ]
        );
        assert!(SipName::parse("sips:plain.example;transport=udp").is_err());
    }
}
