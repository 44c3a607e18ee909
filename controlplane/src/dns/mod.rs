//! Finding the servers of a SIP URI (RFC 3263), sans-IO: the URI read as a
//! name to resolve, the cache of finished resolutions (TTLs honoured,
//! failures remembered as RFC 2308 says, a bound on resolutions in flight),
//! and the RFC 2782 order in which a request tries a name's servers.
//!
//! The procedure itself ([`rfc3263`]) runs over any lookup service; the
//! control plane's process runs it on its own thread ([`client`]) and hands
//! the answers back, so no SIP work ever waits on DNS: a request whose next
//! hop is still being resolved waits in its transaction.

pub mod client;
pub mod rfc3263;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use rvoip_dataplane::sip::{Host, Scheme, Uri};
use rvoip_tuning::dns::DnsConfig;

use crate::element::Transport;
use crate::transaction::Millis;

/// A SIP or SIPS URI as a name to resolve (RFC 3263 §4): what the URI says
/// of host, port and transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipName {
    /// The host, lower case, without a final dot.
    pub host: String,
    /// The host when it is an IP address.
    pub ip: Option<IpAddr>,
    /// The port, when written.
    pub port: Option<u16>,
    /// `transport=` when written and spoken by rvoip (TLS for `sips:`).
    pub transport: Option<Transport>,
    /// `sips:` or `transport=tls`: only TLS may carry it.
    pub secure: bool,
    /// Its cache key, made once.
    key: String,
}

impl SipName {
    /// Reads `sip:[user@]host[:port][;transport=..]`.
    pub fn parse(text: &str) -> Result<SipName, &'static str> {
        let uri = Uri::parse(text.as_bytes())?;
        SipName::of(&uri)
    }

    /// The name of a parsed URI.
    pub fn of(uri: &Uri<'_>) -> Result<SipName, &'static str> {
        let mut secure = match uri.scheme {
            Scheme::Sip => false,
            Scheme::Sips => true,
            _ => return Err("not a sip: or sips: URI"),
        };
        let (host, ip) = match uri.host.as_ref().ok_or("no host")? {
            Host::Name(n) => {
                let h = String::from_utf8_lossy(n).to_ascii_lowercase();
                (h.trim_end_matches('.').to_owned(), None)
            }
            Host::V4(a) => (a.to_string(), Some(IpAddr::V4(*a))),
            Host::V6(a) => (a.to_string(), Some(IpAddr::V6(*a))),
        };
        if host.is_empty() {
            return Err("no host");
        }
        let mut transport = match uri.params.get("transport").flatten() {
            None => None,
            Some(t) => Some(Transport::from_token(t).ok_or("a transport rvoip does not speak")?),
        };
        secure |= transport == Some(Transport::Tls);
        if secure {
            // `sips:` goes over TLS, on TCP (RFC 3261 §19.1.2).
            transport = match transport {
                Some(Transport::Udp) => return Err("sips: over UDP"),
                Some(_) => Some(Transport::Tls),
                None => None,
            };
        }
        let scheme = if secure { "sips" } else { "sip" };
        let p = uri.port.map_or(String::new(), |p| format!(":{p}"));
        let t = transport.map_or("", |t| t.token());
        let key = format!("{scheme}:{host}{p};{t}");
        Ok(SipName {
            host,
            ip,
            port: uri.port,
            transport,
            secure,
            key,
        })
    }

    /// The cache key: everything that changes the answer.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The port when the URI and DNS give none (RFC 3263 §4.2).
    pub fn default_port(&self) -> u16 {
        if self.secure { 5061 } else { 5060 }
    }
}

/// One server a name resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Server {
    /// Transport to reach it over.
    pub transport: Transport,
    /// Address and port.
    pub address: SocketAddr,
    /// Order (lower first): the NAPTR order and preference, then the SRV
    /// priority, folded into one number.
    pub priority: u32,
    /// SRV weight among servers of the same priority (RFC 2782).
    pub weight: u16,
}

/// What a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Servers, in the order the records gave them.
    pub servers: Vec<Server>,
    /// Seconds the answer holds: the smallest TTL of the records used.
    pub ttl_secs: u32,
}

/// Why a name gave no server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The domain does not exist (NXDOMAIN).
    NoSuchName,
    /// The domain exists but publishes no server rvoip can reach.
    NoServers,
    /// Only TLS may carry the URI and rvoip has no `[tls]` settings.
    NeedsTls,
    /// No server answered, or they failed (timeout, SERVFAIL, refused).
    Unreachable(String),
    /// Too many resolutions in flight: refused rather than queued.
    Busy,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoSuchName => f.write_str("no such domain"),
            Failure::NoServers => f.write_str("no SIP server published"),
            Failure::NeedsTls => f.write_str("sips: needs TLS, and [tls] is not set"),
            Failure::Unreachable(e) => write!(f, "name servers failed: {e}"),
            Failure::Busy => f.write_str("too many resolutions in flight"),
        }
    }
}

/// A resolution to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Its cache key.
    pub key: String,
    /// The name.
    pub name: SipName,
}

/// A finished resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The query's key.
    pub key: String,
    /// Servers, or why none.
    pub result: Result<Resolution, Failure>,
    /// For a failure: seconds it holds (the zone's SOA minimum, RFC 2308).
    pub negative_ttl_secs: Option<u32>,
}

/// What the cache has for a name now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Servers (possibly past their TTL while a fresh answer is sought).
    Ready(&'a Resolution),
    /// No server.
    Failed(Failure),
    /// Being resolved: ask again when an answer comes.
    Waiting,
}

/// Counters of name resolution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsCounters {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Resolutions started.
    pub queries: u64,
    /// Resolutions that failed.
    pub failures: u64,
    /// Lookups refused because too many were in flight.
    pub busy: u64,
}

#[derive(Debug)]
struct Entry {
    result: Option<Result<Resolution, Failure>>,
    expires: Millis,
    in_flight: bool,
    used: Millis,
}

/// How long a failure without an SOA is remembered.
const NEGATIVE_DEFAULT_SECS: u32 = 30;
/// Shortest time an answer is kept, so a zero TTL does not become a query
/// per request.
const MIN_TTL_SECS: u32 = 1;
/// How long servers already known keep serving after a refresh failed,
/// before the name is asked again.
const REFRESH_RETRY_SECS: u32 = 5;

/// The resolutions the control plane knows and the ones it waits for.
#[derive(Debug)]
pub struct Dns {
    entries: HashMap<String, Entry>,
    queue: VecDeque<Query>,
    in_flight: usize,
    max_entries: usize,
    max_in_flight: usize,
    negative_max_secs: u32,
    /// Servers that timed out, answered 503 or were unreachable, and until
    /// when they are tried last.
    avoided: HashMap<SocketAddr, Millis>,
    avoid_ms: Millis,
    random: std::cell::Cell<u64>,
    /// Counters.
    pub counters: DnsCounters,
}

impl Dns {
    /// A cache as `[dns]` sets it.
    pub fn new(config: &DnsConfig) -> Dns {
        Dns {
            entries: HashMap::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            max_entries: config.cache_entries.max(1),
            max_in_flight: config.max_outstanding.max(1),
            negative_max_secs: config.negative_max_secs,
            avoided: HashMap::new(),
            avoid_ms: Millis::from(config.avoid_secs) * 1000,
            random: std::cell::Cell::new(0x2545_f491_4f6c_dd1d),
            counters: DnsCounters::default(),
        }
    }

    /// Seeds the random order among equal SRV records.
    pub fn seed(&mut self, seed: u64) {
        self.random.set(seed | 1);
    }

    /// What the cache holds for `name`, fresh or not, without starting a
    /// resolution.
    pub fn peek(&self, name: &SipName) -> Option<&Resolution> {
        match self.entries.get(name.key()) {
            Some(Entry {
                result: Some(Ok(r)),
                ..
            }) => Some(r),
            _ => None,
        }
    }

    /// The order in which a request tries `servers` at `now`: RFC 2782
    /// order, then the servers being avoided after the others.
    pub fn ordered(&self, servers: &[Server], now: Millis) -> Vec<Server> {
        let mut random = || {
            // xorshift64*
            let mut x = self.random.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.random.set(x);
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
        };
        let mut out: Vec<Server> = srv_order(servers, &mut random)
            .into_iter()
            .map(|i| servers[i])
            .collect();
        out.sort_by_key(|s| self.avoided.get(&s.address).is_some_and(|u| *u > now));
        out
    }

    /// A server did not answer in time, answered 503 or could not be
    /// reached at `now`: tried after the others for `[dns] avoid_secs`.
    pub fn avoid(&mut self, address: SocketAddr, now: Millis) {
        if self.avoided.len() >= self.max_entries {
            self.avoided.retain(|_, until| *until > now);
        }
        if self.avoided.len() < self.max_entries {
            tracing::warn!(server = %address, avoid_secs = self.avoid_ms / 1000, "SIP server avoided");
            self.avoided.insert(address, now + self.avoid_ms);
        }
    }

    /// A server answered: no longer avoided.
    pub fn answered(&mut self, address: SocketAddr) {
        self.avoided.remove(&address);
    }

    /// The servers of `name` at `now`: from the cache, or a resolution is
    /// started (an answer past its TTL is still given while a fresh one is
    /// sought, so a name in use costs no lookup per request).
    pub fn lookup(&mut self, now: Millis, name: &SipName) -> Lookup<'_> {
        let key = name.key();
        let (expired, in_flight) = self
            .entries
            .get(key)
            .map_or((true, false), |e| (e.expires <= now, e.in_flight));
        let mut started = false;
        if expired && !in_flight {
            if self.in_flight < self.max_in_flight {
                self.evict(now);
                let e = self.entries.entry(key.to_owned()).or_insert(Entry {
                    result: None,
                    expires: 0,
                    in_flight: false,
                    used: now,
                });
                e.in_flight = true;
                self.in_flight += 1;
                self.counters.queries += 1;
                self.queue.push_back(Query {
                    key: key.to_owned(),
                    name: name.clone(),
                });
                started = true;
            } else {
                self.counters.busy += 1;
                let stale = matches!(
                    self.entries.get(key),
                    Some(Entry {
                        result: Some(Ok(_)),
                        ..
                    })
                );
                if !stale {
                    return Lookup::Failed(Failure::Busy);
                }
            }
        }
        let Some(e) = self.entries.get_mut(key) else {
            return Lookup::Waiting;
        };
        e.used = now;
        match &e.result {
            Some(Ok(r)) => {
                if !started {
                    self.counters.hits += 1;
                }
                Lookup::Ready(r)
            }
            // A failure past its time is sought again: wait for it.
            Some(Err(f)) if !expired => {
                self.counters.hits += 1;
                Lookup::Failed(f.clone())
            }
            _ => Lookup::Waiting,
        }
    }

    /// The next resolution to run.
    pub fn poll_query(&mut self) -> Option<Query> {
        self.queue.pop_front()
    }

    /// Stores a finished resolution at `now`.
    pub fn answer(&mut self, now: Millis, a: Answer) {
        let Some(e) = self.entries.get_mut(&a.key) else {
            return;
        };
        if e.in_flight {
            e.in_flight = false;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let secs = match &a.result {
            Ok(r) => r.ttl_secs.max(MIN_TTL_SECS),
            Err(f) => {
                self.counters.failures += 1;
                tracing::warn!(name = %a.key, error = %f, "SIP name not resolved");
                match f {
                    // A server failure is not an answer about the name:
                    // asked again soon.
                    Failure::Unreachable(_) | Failure::Busy => MIN_TTL_SECS,
                    _ => a
                        .negative_ttl_secs
                        .unwrap_or(NEGATIVE_DEFAULT_SECS)
                        .min(self.negative_max_secs)
                        .max(MIN_TTL_SECS),
                }
            }
        };
        // A failed refresh keeps the servers already known (they still
        // answer calls) and asks again a little later, not at once: name
        // servers that fail are not asked in a loop.
        match (&e.result, a.result) {
            (Some(Ok(_)), Err(Failure::Unreachable(_))) => {
                e.expires = now + Millis::from(REFRESH_RETRY_SECS) * 1000;
            }
            (_, result) => {
                e.result = Some(result);
                e.expires = now + Millis::from(secs) * 1000;
            }
        }
    }

    /// Resolutions in flight.
    pub fn pending(&self) -> bool {
        self.in_flight > 0 || !self.queue.is_empty()
    }

    /// Names known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no name is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes room for one more entry: expired ones go first, then the
    /// least recently used.
    fn evict(&mut self, now: Millis) {
        if self.entries.len() < self.max_entries {
            return;
        }
        self.entries.retain(|_, e| e.in_flight || e.expires > now);
        while self.entries.len() >= self.max_entries {
            let Some(oldest) = self
                .entries
                .iter()
                .filter(|(_, e)| !e.in_flight)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

/// The order in which a request tries `servers` (RFC 2782): by priority,
/// and within one priority a weighted random order — each next server
/// picked with probability proportional to its weight, weight 0 last.
/// `random` gives uniform 32-bit numbers.
pub fn srv_order(servers: &[Server], random: &mut dyn FnMut() -> u32) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..servers.len()).collect();
    idx.sort_by_key(|i| servers[*i].priority);
    let mut out = Vec::with_capacity(servers.len());
    let mut start = 0;
    while start < idx.len() {
        let p = servers[idx[start]].priority;
        let end = idx[start..]
            .iter()
            .position(|i| servers[*i].priority != p)
            .map_or(idx.len(), |n| start + n);
        let mut group: Vec<usize> = idx[start..end].to_vec();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|i| u64::from(servers[*i].weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                // Each server's share exactly its weight's (RFC 2782's
                // 0..=sum draw would favour the first); weight 0 only
                // once nothing else is left.
                let r = u64::from(random()) % total;
                let mut sum = 0u64;
                group
                    .iter()
                    .position(|i| {
                        sum += u64::from(servers[*i].weight);
                        sum > r
                    })
                    .unwrap_or(0)
            };
            out.push(group.remove(pick));
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn server(port: u16, priority: u32, weight: u16) -> Server {
        Server {
            transport: Transport::Udp,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            priority,
            weight,
        }
    }

    #[test]
    fn uris_read_as_names() {
        let n = SipName::parse("sip:Trunk.RVOIP.test.").unwrap();
        assert_eq!(
            (n.host.as_str(), n.port, n.transport, n.secure),
            ("trunk.rvoip.test", None, None, false)
        );
        let n = SipName::parse("sips:alice@carrier.example:5071;transport=tcp").unwrap();
        assert_eq!(
            (n.host.as_str(), n.port, n.transport, n.secure),
            ("carrier.example", Some(5071), Some(Transport::Tls), true)
        );
        assert_eq!(n.default_port(), 5061);
        let n = SipName::parse("sip:[::1]:5062").unwrap();
        assert_eq!(n.ip, Some("::1".parse().unwrap()));
        assert!(SipName::parse("tel:+15551234").is_err());
        assert!(SipName::parse("sip:x.example;transport=sctp").is_err());
    }

    #[test]
    fn srv_order_goes_by_priority_then_spreads_by_weight() {
        let servers = [server(1, 20, 0), server(2, 10, 1), server(3, 10, 3)];
        let mut seed = 7u64;
        let mut random = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        let mut firsts = [0u32; 3];
        for _ in 0..4000 {
            let o = srv_order(&servers, &mut random);
            assert_eq!(o.len(), 3);
            assert_eq!(o[2], 0, "priority 20 comes after priority 10");
            firsts[o[0]] += 1;
        }
        // Weights 1:3 → about a quarter of the firsts.
        let share = f64::from(firsts[1]) / 4000.0;
        assert!(
            (0.21..0.29).contains(&share),
            "weight 1 of 4 came first {share}"
        );
    }

    #[test]
    fn answers_are_cached_for_their_ttl_then_refreshed_while_still_served() {
        let mut dns = Dns::new(&DnsConfig::default());
        let name = SipName::parse("sip:trunk.rvoip.test").unwrap();
        assert_eq!(dns.lookup(0, &name), Lookup::Waiting);
        assert_eq!(dns.lookup(0, &name), Lookup::Waiting);
        let q = dns.poll_query().unwrap();
        assert!(dns.poll_query().is_none(), "one query for two lookups");
        let res = Resolution {
            servers: vec![server(5070, 0, 1)],
            ttl_secs: 5,
        };
        dns.answer(
            10,
            Answer {
                key: q.key,
                result: Ok(res.clone()),
                negative_ttl_secs: None,
            },
        );
        assert_eq!(dns.lookup(4000, &name), Lookup::Ready(&res));
        assert!(dns.poll_query().is_none());
        assert_eq!(dns.counters.hits, 1);
        // Past its TTL: still served, and one refresh is asked for.
        assert_eq!(dns.lookup(6000, &name), Lookup::Ready(&res));
        assert_eq!(dns.lookup(6001, &name), Lookup::Ready(&res));
        let q = dns.poll_query().unwrap();
        assert!(dns.poll_query().is_none());
        let moved = Resolution {
            servers: vec![server(5072, 0, 1)],
            ttl_secs: 5,
        };
        dns.answer(
            6100,
            Answer {
                key: q.key,
                result: Ok(moved.clone()),
                negative_ttl_secs: None,
            },
        );
        assert_eq!(dns.lookup(6200, &name), Lookup::Ready(&moved));
    }

    #[test]
    fn a_failed_refresh_keeps_the_servers_and_asks_again_later_not_at_once() {
        let mut dns = Dns::new(&DnsConfig::default());
        let name = SipName::parse("sip:trunk.rvoip.test").unwrap();
        dns.lookup(0, &name);
        let q = dns.poll_query().unwrap();
        let res = Resolution {
            servers: vec![server(5070, 0, 1)],
            ttl_secs: 1,
        };
        let answer = |key: String, result| Answer {
            key,
            result,
            negative_ttl_secs: None,
        };
        dns.answer(0, answer(q.key, Ok(res.clone())));
        // Expired: served while refreshed; the refresh fails.
        assert_eq!(dns.lookup(2000, &name), Lookup::Ready(&res));
        let q = dns.poll_query().unwrap();
        dns.answer(
            2000,
            answer(q.key, Err(Failure::Unreachable("timeout".into()))),
        );
        for t in [2000, 3000, 6999] {
            assert_eq!(dns.lookup(t, &name), Lookup::Ready(&res));
            assert!(dns.poll_query().is_none(), "asked again at {t}");
        }
        assert_eq!(dns.lookup(7000, &name), Lookup::Ready(&res));
        assert!(dns.poll_query().is_some());
    }

    #[test]
    fn failures_are_remembered_for_the_negative_ttl_and_in_flight_is_bounded() {
        let mut dns = Dns::new(&DnsConfig {
            max_outstanding: 1,
            ..DnsConfig::default()
        });
        let gone = SipName::parse("sip:gone.rvoip.test").unwrap();
        let other = SipName::parse("sip:other.rvoip.test").unwrap();
        assert_eq!(dns.lookup(0, &gone), Lookup::Waiting);
        assert_eq!(dns.lookup(0, &other), Lookup::Failed(Failure::Busy));
        let q = dns.poll_query().unwrap();
        dns.answer(
            0,
            Answer {
                key: q.key,
                result: Err(Failure::NoSuchName),
                negative_ttl_secs: Some(10),
            },
        );
        assert_eq!(dns.lookup(9000, &gone), Lookup::Failed(Failure::NoSuchName));
        assert!(dns.poll_query().is_none());
        assert_eq!(dns.lookup(10_001, &gone), Lookup::Waiting);
        assert!(dns.poll_query().is_some());
    }

    #[test]
    fn the_cache_holds_at_most_its_entries() {
        let mut dns = Dns::new(&DnsConfig {
            cache_entries: 2,
            ..DnsConfig::default()
        });
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            let name = SipName::parse(&format!("sip:{n}.rvoip.test")).unwrap();
            dns.lookup(i as u64, &name);
            let q = dns.poll_query().unwrap();
            dns.answer(
                i as u64,
                Answer {
                    key: q.key,
                    result: Err(Failure::NoServers),
                    negative_ttl_secs: Some(60),
                },
            );
        }
        assert_eq!(dns.len(), 2);
    }
}
