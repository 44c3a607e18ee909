//! RFC 3263 resolution on arbitrary zones and URIs: the first line is the
//! URI, every other line a record or a failure the zone gives —
//! `N name order preference flags service replacement`, `S name priority
//! weight port target`, `A name ip`, `X name` (NXDOMAIN), `F name` (the
//! servers fail). The URI is read, resolved over that zone, the answer
//! cached, looked up, ordered (RFC 2782) with servers avoided: a resolution
//! or a named failure, never a panic, and every server it gives comes from
//! an address record of the zone or the URI itself.
#![no_main]

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use rvoip_controlplane::dns::rfc3263::{LookupError, Lookups, Naptr, Records, Srv, resolve};
use rvoip_controlplane::dns::{Answer, Dns, Lookup, SipName};

#[derive(Default)]
struct Zone {
    naptr: HashMap<String, Vec<Naptr>>,
    srv: HashMap<String, Vec<Srv>>,
    ips: HashMap<String, Vec<IpAddr>>,
    missing: Vec<String>,
    failing: Vec<String>,
}

impl Zone {
    fn get<T: Clone>(&self, map: &HashMap<String, Vec<T>>, name: &str) -> Result<Records<T>, LookupError> {
        if self.failing.iter().any(|n| n == name) {
            return Err(LookupError::Failed("SERVFAIL".into()));
        }
        if self.missing.iter().any(|n| n == name) {
            return Err(LookupError::NoSuchName(Some(30)));
        }
        match map.get(name) {
            Some(r) => Ok((r.clone(), 60)),
            None => Err(LookupError::NoRecords(None)),
        }
    }
}

impl Lookups for Zone {
    async fn naptr(&self, name: &str) -> Result<Records<Naptr>, LookupError> {
        self.get(&self.naptr, name)
    }
    async fn srv(&self, name: &str) -> Result<Records<Srv>, LookupError> {
        self.get(&self.srv, name)
    }
    async fn ips(&self, name: &str) -> Result<Records<IpAddr>, LookupError> {
        self.get(&self.ips, name)
    }
}

/// The zone answers at once: one poll finishes the resolution.
fn run<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let Some(uri) = lines.next() else {
        return;
    };
    let mut zone = Zone::default();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u16>().ok()).unwrap_or(0);
        match (f.first().copied(), f.get(1)) {
            (Some("N"), Some(name)) if f.len() >= 7 => zone.naptr.entry((*name).into()).or_default().push(Naptr {
                order: num(2),
                preference: num(3),
                flags: f[4].into(),
                service: f[5].into(),
                replacement: f[6].into(),
            }),
            (Some("S"), Some(name)) if f.len() >= 6 => zone.srv.entry((*name).into()).or_default().push(Srv {
                priority: num(2),
                weight: num(3),
                port: num(4),
                target: f[5].into(),
            }),
            (Some("A"), Some(name)) => {
                if let Some(ip) = f.get(2).and_then(|v| v.parse().ok()) {
                    zone.ips.entry((*name).into()).or_default().push(ip);
                }
            }
            (Some("X"), Some(name)) => zone.missing.push((*name).into()),
            (Some("F"), Some(name)) => zone.failing.push((*name).into()),
            _ => {}
        }
    }
    let Ok(name) = SipName::parse(uri) else {
        return;
    };
    let Some(result) = run(resolve(&name, &zone)) else {
        panic!("an immediate zone left the resolution pending");
    };
    let known: Vec<IpAddr> = zone.ips.values().flatten().copied().chain(name.ip).collect();
    if let Ok(r) = &result {
        assert!(!r.servers.is_empty());
        for s in &r.servers {
            assert!(known.contains(&s.address.ip()), "{s:?} from nowhere");
        }
    }
    let mut dns = Dns::new(&rvoip_tuning::dns::DnsConfig::default());
    assert_eq!(dns.lookup(0, &name), Lookup::Waiting);
    let Some(q) = dns.poll_query() else {
        panic!("no query for a new name");
    };
    let (result, negative_ttl_secs) = match result {
        Ok(r) => (Ok(r), None),
        Err((f, ttl)) => (Err(f), ttl),
    };
    dns.answer(5, Answer { key: q.key, result, negative_ttl_secs });
    if let Lookup::Ready(r) = dns.lookup(10, &name) {
        let servers = r.servers.clone();
        let Some(avoided) = servers.first().map(|s| s.address) else {
            return;
        };
        dns.avoid(avoided, 10);
        let ordered = dns.ordered(&servers, 20);
        assert_eq!(ordered.len(), servers.len());
        // A server being avoided comes after every other one.
        if servers.iter().any(|s| s.address != avoided) {
            assert_ne!(ordered[0].address, avoided);
            assert_eq!(ordered.last().map(|s| s.address), Some(avoided));
        }
    }
});
