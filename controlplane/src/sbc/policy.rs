//! SBC policy, sans-IO: which realm a message belongs to and whether its
//! source may send there, number normalization and longest-prefix routing,
//! the dispatcher that orders a trunk's peers (priority, round-robin,
//! weighted) and skips unhealthy ones, per-trunk and per-source limits, and
//! flood bans.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use regex::Regex;
use rvoip_tuning::Config;
use rvoip_tuning::sbc::{Dispatch, HeaderAction, MediaProtection};

use crate::dns::{Server, SipName};
use crate::element::Transport;
use crate::transaction::Millis;

/// A CIDR network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    len: u8,
}

impl Net {
    /// Parses `10.0.0.0/8`, `::1`, `127.0.0.1`.
    pub fn parse(text: &str) -> Option<Net> {
        let (a, l) = text.split_once('/').unwrap_or((text, ""));
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if l.is_empty() { max } else { l.parse().ok()? };
        (len <= max).then_some(Net { addr, len })
    }

    /// Whether `ip` lies in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A realm at run time.
#[derive(Debug, Clone)]
pub struct RealmRt {
    /// Name.
    pub name: String,
    /// Who may send.
    pub allow: Vec<Net>,
    /// SRTP on this side.
    pub srtp: bool,
    /// Offers from this side must be SRTP (488 otherwise).
    pub srtp_required: bool,
    /// This side is WebRTC (ICE-lite, DTLS-SRTP).
    pub webrtc: bool,
    /// New calls per second per source (0: no limit).
    pub cps_per_source: u32,
    /// Calls up at once per source (0: no limit).
    pub calls_per_source: u32,
    /// The UDP listener of the realm, where its calls are sent from.
    pub listener: Option<SocketAddr>,
    /// Codecs offered to this side (empty: as offered).
    pub codecs: Vec<String>,
    /// Transcode towards this side.
    pub transcode: bool,
    /// The relay's IPv4 address for this side (none: `[media] address`).
    pub media_address: Option<IpAddr>,
    /// The relay's IPv6 address for this side (none: `[media] address_v6`).
    pub media_address_v6: Option<IpAddr>,
}

/// A header's name or value as the B2BUA passes it on: a fixed text of its
/// own, or one read from a message or the configuration.
pub type HeaderText = std::borrow::Cow<'static, str>;

/// A compiled header rule.
#[derive(Debug, Clone)]
pub enum HeaderRule {
    /// Add `name: value`.
    Add(String, String),
    /// Remove every `name`.
    Remove(String),
    /// Rewrite values of `name`.
    Rewrite(String, Regex, String),
}

impl HeaderRule {
    /// Applies the rule to a header list.
    pub fn apply(&self, headers: &mut Vec<(HeaderText, HeaderText)>) {
        match self {
            HeaderRule::Add(n, v) => headers.push((n.clone().into(), v.clone().into())),
            HeaderRule::Remove(n) => headers.retain(|(h, _)| !h.eq_ignore_ascii_case(n)),
            HeaderRule::Rewrite(n, re, with) => {
                for (h, v) in headers.iter_mut() {
                    if h.eq_ignore_ascii_case(n) {
                        *v = re.replace_all(v, with.as_str()).into_owned().into();
                    }
                }
            }
        }
    }
}

/// One peer of a trunk at run time: an address of the configuration, or
/// one a trunk's URI resolved to. Peers are never removed (calls and
/// probes name them by index); a resolved peer the name no longer gives is
/// `listed: false` and takes no new calls.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Address.
    pub address: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// Weight (weighted policy; the SRV weight for a resolved peer).
    pub weight: u32,
    /// Priority (lower first).
    pub priority: u32,
    /// For a resolved peer: its NAPTR/SRV order within its name.
    pub srv_priority: u32,
    /// For a resolved peer: which of the trunk's URIs gave it.
    pub from_uri: Option<usize>,
    /// Takes calls: configured, or given by its name's last resolution.
    pub listed: bool,
    /// Healthy: answered its last OPTIONS or INVITE.
    pub up: bool,
    /// Until when it is tried only after every other peer: it timed out,
    /// answered 503 or could not be reached (RFC 3263 §4.3).
    pub avoid_until: Millis,
    /// When the last OPTIONS went out, and whether an answer came since.
    pub probe_sent: Option<Millis>,
    /// An answer came since the last probe.
    pub answered: bool,
    current_weight: i64,
}

impl Peer {
    /// A listed, healthy peer at `(address, transport)` with `(priority,
    /// srv_priority)`, `weight`, from the trunk's URI target `from_uri`.
    fn new(
        (address, transport): (SocketAddr, Transport),
        (priority, srv_priority): (u32, u32),
        weight: u32,
        from_uri: Option<usize>,
    ) -> Peer {
        Peer {
            address,
            transport,
            weight,
            priority,
            srv_priority,
            from_uri,
            listed: true,
            up: true,
            avoid_until: 0,
            probe_sent: None,
            answered: false,
            current_weight: 0,
        }
    }
}

/// The next of a splitmix64 sequence: the random choices among equal SRV
/// records.
fn splitmix(state: &mut u64) -> u32 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 32) as u32
}

/// A trunk target given as a SIP URI.
#[derive(Debug, Clone)]
pub struct UriTarget {
    /// The name to resolve.
    pub name: SipName,
    /// Order against the trunk's other targets.
    pub priority: u32,
    /// Resolved at least once (its peers are known, or it failed).
    pub resolved: bool,
    /// The servers last applied to the peers (unchanged answers are not
    /// applied again).
    applied: Option<Vec<Server>>,
}

/// A trunk at run time.
#[derive(Debug, Clone)]
pub struct TrunkRt {
    /// Name.
    pub name: String,
    /// Realm index.
    pub realm: usize,
    /// Peers.
    pub peers: Vec<Peer>,
    /// Targets resolved through DNS.
    pub uris: Vec<UriTarget>,
    /// Dispatcher policy.
    pub policy: Dispatch,
    /// INVITE timeout per peer.
    pub invite_timeout_ms: Millis,
    /// New calls per second (0: no limit).
    pub cps: u32,
    /// Calls up at once (0: no limit).
    pub max_calls: u32,
    /// Codecs allowed, in order (empty: all).
    pub codecs: Vec<String>,
    /// Transcode towards the trunk.
    pub transcode: bool,
    /// Header rules.
    pub headers: Vec<HeaderRule>,
    /// OPTIONS health checks on.
    pub health_checks: bool,
    rr: usize,
}

/// Counts events in the current second.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    second: u64,
    count: u32,
}

impl Window {
    /// Counts one event at `now`; returns the count in its second.
    fn hit(&mut self, now: Millis) -> u32 {
        let s = now / 1000;
        if s != self.second {
            self.second = s;
            self.count = 0;
        }
        self.count += 1;
        self.count
    }
}

/// What limits count, shared by the policies of every control-plane shard
/// (a limit holds across them): each source's windows, ban and calls up,
/// each trunk's calls up and call-rate window, by the trunk's name (a
/// reload keeps them).
#[derive(Debug, Default)]
pub struct Load {
    sources: HashMap<IpAddr, SourceState>,
    trunks: HashMap<String, TrunkLoad>,
    /// Trunk peers' health as the last shard to hear of it left it, by
    /// trunk name and peer.
    peers: HashMap<String, HashMap<(SocketAddr, Transport), PeerHealth>>,
}

/// What the shards tell each other of a trunk peer.
#[derive(Debug, Clone, Copy)]
struct PeerHealth {
    up: bool,
    avoid_until: Millis,
}

#[derive(Debug, Clone, Copy, Default)]
struct TrunkLoad {
    active: u32,
    window: Window,
}

impl Load {
    /// The load of trunk `name` (counted from now when new; the name is
    /// copied only then).
    fn trunk(&mut self, name: &str) -> Option<&mut TrunkLoad> {
        if !self.trunks.contains_key(name) {
            self.trunks.insert(name.to_string(), TrunkLoad::default());
        }
        self.trunks.get_mut(name)
    }
}

impl Load {
    /// Notes `peer` of trunk `trunk`'s health.
    fn set_peer(&mut self, trunk: &str, peer: &Peer) {
        let health = PeerHealth {
            up: peer.up,
            avoid_until: peer.avoid_until,
        };
        let key = (peer.address, peer.transport);
        match self.peers.get_mut(trunk) {
            Some(m) => {
                m.insert(key, health);
            }
            None => {
                self.peers
                    .insert(trunk.to_string(), HashMap::from([(key, health)]));
            }
        }
    }
}

/// A [`Load`] one or more policies count in.
#[derive(Debug, Clone, Default)]
pub struct SharedLoad(Arc<Mutex<Load>>);

impl SharedLoad {
    fn lock(&self) -> std::sync::MutexGuard<'_, Load> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct SourceState {
    requests: Window,
    invites: Window,
    banned_until: Millis,
    calls: u32,
}

/// Why a new call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source is not allowed in the realm (403).
    Acl,
    /// The source is banned for flooding (dropped).
    Banned,
    /// A limit was hit (503).
    Limit(&'static str),
    /// No route for the number (404).
    NoRoute,
}

/// Counters of the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyCounters {
    /// Requests from sources outside their realm's access list.
    pub acl_rejected: u64,
    /// Requests dropped from banned sources.
    pub banned_drops: u64,
    /// Sources banned.
    pub bans: u64,
    /// Calls refused by a source limit.
    pub source_limited: u64,
    /// Calls refused by a trunk limit.
    pub trunk_limited: u64,
    /// Calls with no route.
    pub unrouted: u64,
}

/// The SBC policy.
#[derive(Debug)]
pub struct Policy {
    /// Realms.
    pub realms: Vec<RealmRt>,
    /// Listener → realm.
    listeners: Vec<(SocketAddr, Transport, usize)>,
    /// Trunks.
    pub trunks: Vec<TrunkRt>,
    routes: Vec<(String, Option<usize>, usize)>,
    numbering: rvoip_tuning::sbc::Numbering,
    flood_rate: u32,
    ban_ms: Millis,
    load: SharedLoad,
    avoid_ms: Millis,
    random: u64,
    /// Counters.
    pub counters: PolicyCounters,
}

/// Why a configuration gives no policy (what `rvoip check` does not
/// already refuse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// A trunk names a realm that is not configured.
    NoRealm(String),
    /// A header rule's pattern is not a regular expression: the rule's
    /// header and the parser's words.
    Pattern(String, String),
    /// A trunk target's URI cannot be resolved as written.
    Uri(String, &'static str),
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::NoRealm(r) => write!(f, "no realm {r}"),
            PolicyError::Pattern(h, e) => write!(f, "header rule for {h}: {e}"),
            PolicyError::Uri(u, e) => write!(f, "trunk target {u}: {e}"),
        }
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// A policy of nothing: no realm, no trunk (a placeholder while one
    /// policy replaces another).
    pub fn empty() -> Policy {
        Policy {
            realms: Vec::new(),
            listeners: Vec::new(),
            trunks: Vec::new(),
            routes: Vec::new(),
            numbering: rvoip_tuning::sbc::Numbering::default(),
            flood_rate: 0,
            ban_ms: 0,
            load: SharedLoad::default(),
            avoid_ms: 0,
            random: 1,
            counters: PolicyCounters::default(),
        }
    }

    /// The policy of a (validated) configuration.
    pub fn from_config(c: &Config) -> Result<Policy, PolicyError> {
        let mut realms: Vec<RealmRt> = c
            .realms
            .iter()
            .map(|r| RealmRt {
                name: r.name.clone(),
                allow: r.allow.iter().filter_map(|a| Net::parse(a)).collect(),
                srtp: matches!(
                    r.media,
                    MediaProtection::Srtp | MediaProtection::SrtpOptional
                ),
                srtp_required: r.media == MediaProtection::Srtp,
                webrtc: r.media == MediaProtection::Webrtc,
                cps_per_source: r.cps_per_source,
                calls_per_source: r.calls_per_source,
                listener: None,
                codecs: r.codecs.clone(),
                transcode: r.transcode,
                media_address: r.media_address,
                media_address_v6: r.media_address_v6,
            })
            .collect();
        let names: Vec<String> = realms.iter().map(|r| r.name.clone()).collect();
        let realm_index = |name: &str| names.iter().position(|r| r == name);
        let mut listeners = Vec::new();
        for l in &c.sip.listen {
            let Some(i) = l.realm.as_deref().and_then(realm_index) else {
                continue;
            };
            listeners.push((l.address, l.transport, i));
        }
        for (addr, t, i) in &listeners {
            if *t == Transport::Udp && realms[*i].listener.is_none() {
                realms[*i].listener = Some(*addr);
            }
        }
        let mut trunks = Vec::new();
        for t in &c.trunks {
            let realm =
                realm_index(&t.realm).ok_or_else(|| PolicyError::NoRealm(t.realm.clone()))?;
            let mut headers = Vec::new();
            for h in &t.headers {
                let value = h.value.clone().unwrap_or_default();
                headers.push(match h.action {
                    HeaderAction::Add => HeaderRule::Add(h.name.clone(), value),
                    HeaderAction::Remove => HeaderRule::Remove(h.name.clone()),
                    HeaderAction::Rewrite => HeaderRule::Rewrite(
                        h.name.clone(),
                        Regex::new(h.pattern.as_deref().unwrap_or_default())
                            .map_err(|e| PolicyError::Pattern(h.name.clone(), e.to_string()))?,
                        value,
                    ),
                });
            }
            let mut peers = Vec::new();
            let mut uris = Vec::new();
            for (i, spec) in t.targets.iter().enumerate() {
                if let rvoip_tuning::sbc::TargetSpec::Uri(u) = spec {
                    let name =
                        SipName::parse(&u.uri).map_err(|e| PolicyError::Uri(u.uri.clone(), e))?;
                    uris.push(UriTarget {
                        name,
                        priority: u.priority.unwrap_or(i as u32),
                        resolved: false,
                        applied: None,
                    });
                    continue;
                }
                let Some(p) = spec.resolve(i) else {
                    continue;
                };
                peers.push(Peer::new(
                    (p.address, p.transport),
                    (p.priority.unwrap_or(i as u32), 0),
                    p.weight,
                    None,
                ));
            }
            trunks.push(TrunkRt {
                name: t.name.clone(),
                realm,
                peers,
                uris,
                policy: t.policy,
                invite_timeout_ms: (t.invite_timeout_secs * 1000.0) as Millis,
                cps: t.cps,
                max_calls: t.max_calls,
                codecs: t.codecs.clone(),
                transcode: t.transcode,
                headers,
                health_checks: t.health_checks,
                rr: 0,
            });
        }
        let routes = c
            .sbc
            .routes
            .iter()
            .filter_map(|r| {
                let trunk = c.trunks.iter().position(|t| t.name == r.trunk)?;
                let from = r.from_realm.as_deref().and_then(realm_index);
                Some((r.prefix.clone(), from, trunk))
            })
            .collect();
        Ok(Policy {
            realms,
            listeners,
            trunks,
            routes,
            numbering: c.sbc.numbering.clone(),
            flood_rate: c.sbc.flood.requests_per_sec,
            ban_ms: Millis::from(c.sbc.flood.ban_secs) * 1000,
            load: SharedLoad::default(),
            avoid_ms: Millis::from(c.dns.avoid_secs) * 1000,
            random: 0x9e37_79b9_7f4a_7c15,
            counters: PolicyCounters::default(),
        })
    }

    /// What a call towards trunk `trunk` is offered: the trunk's codecs
    /// (else its realm's) and whether the relay transcodes for it.
    pub fn codecs_towards(&self, trunk: usize) -> (&[String], bool) {
        let Some(t) = self.trunks.get(trunk) else {
            return (&[], false);
        };
        let realm = self.realms.get(t.realm);
        let codecs = if t.codecs.is_empty() {
            realm.map_or(&[][..], |r| &r.codecs[..])
        } else {
            &t.codecs[..]
        };
        (codecs, t.transcode || realm.is_some_and(|r| r.transcode))
    }

    /// The realm of the listener a message arrived on.
    pub fn realm_of(&self, local: SocketAddr, transport: Transport) -> Option<usize> {
        self.listeners
            .iter()
            .find(|(a, t, _)| *a == local && *t == transport)
            .or_else(|| self.listeners.iter().find(|(a, _, _)| *a == local))
            .map(|l| l.2)
    }

    /// Admits a request from `source` on realm `realm`: the access list, then
    /// flood detection for the out-of-dialog requests that are `counted`
    /// (INVITE, REGISTER, OPTIONS, MESSAGE, SUBSCRIBE). A banned source's
    /// requests within dialogs it already holds (`in_dialog`) still pass, so
    /// a ban never cuts a call that is up.
    pub fn admit(
        &mut self,
        now: Millis,
        realm: usize,
        source: IpAddr,
        counted: bool,
        in_dialog: bool,
    ) -> Result<(), Refusal> {
        let allowed = self
            .realms
            .get(realm)
            .is_some_and(|r| r.allow.iter().any(|n| n.contains(source)));
        if !allowed {
            self.counters.acl_rejected += 1;
            return Err(Refusal::Acl);
        }
        // Trunk peers carry many callers' traffic from one address: they
        // are limited by the trunk's own limits, never banned as floods.
        let peer = self
            .trunks
            .iter()
            .any(|t| t.peers.iter().any(|p| p.listed && p.address.ip() == source));
        let rate = if peer { 0 } else { self.flood_rate };
        let ban = self.ban_ms;
        let mut load = self.load.lock();
        let s = load.sources.entry(source).or_default();
        if s.banned_until > now {
            if in_dialog {
                return Ok(());
            }
            self.counters.banned_drops += 1;
            return Err(Refusal::Banned);
        }
        if counted && rate > 0 && s.requests.hit(now) > rate {
            s.banned_until = now + ban;
            self.counters.bans += 1;
            self.counters.banned_drops += 1;
            tracing::warn!(%source, ban_secs = ban / 1000, "flood: source banned");
            return Err(Refusal::Banned);
        }
        Ok(())
    }

    /// Normalizes a dialled number to E.164 where the numbering plan says
    /// how: visual separators dropped, the international prefix becomes `+`,
    /// the national prefix becomes `+` and the country code.
    pub fn normalize(&self, number: &str) -> String {
        let digits: String = number
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
            .collect();
        if digits.starts_with('+') || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return digits;
        }
        let n = &self.numbering;
        if !n.international_prefix.is_empty()
            && let Some(rest) = digits.strip_prefix(n.international_prefix.as_str())
        {
            return format!("+{rest}");
        }
        if !n.national_prefix.is_empty()
            && let Some(rest) = digits.strip_prefix(n.national_prefix.as_str())
        {
            return format!("+{}{rest}", n.country_code);
        }
        digits
    }

    /// The trunk for `number` (normalized) from realm `from`: the longest
    /// matching prefix; a route for the realm wins over a general one of the
    /// same length.
    pub fn route(&mut self, number: &str, from: usize) -> Option<usize> {
        let best = self
            .routes
            .iter()
            .filter(|(p, realm, _)| {
                number.starts_with(p.as_str()) && realm.is_none_or(|r| r == from)
            })
            .max_by_key(|(p, realm, _)| (p.len(), realm.is_some()))
            .map(|r| r.2);
        if best.is_none() {
            self.counters.unrouted += 1;
        }
        best
    }

    /// Takes a new call from `source` in `realm` towards `trunk`: checks and
    /// counts the source's and the trunk's limits. The call must be given
    /// back with [`Policy::release`].
    pub fn take(
        &mut self,
        now: Millis,
        realm: usize,
        source: IpAddr,
        trunk: Option<usize>,
    ) -> Result<(), Refusal> {
        let (cps, calls) = self
            .realms
            .get(realm)
            .map_or((0, 0), |r| (r.cps_per_source, r.calls_per_source));
        let mut load = self.load.lock();
        let s = load.sources.entry(source).or_default();
        let n = s.invites.hit(now);
        if cps > 0 && n > cps {
            self.counters.source_limited += 1;
            return Err(Refusal::Limit("source call rate"));
        }
        if calls > 0 && s.calls >= calls {
            self.counters.source_limited += 1;
            return Err(Refusal::Limit("source concurrent calls"));
        }
        if let Some(trunk) = trunk {
            let Some(t) = self.trunks.get(trunk) else {
                return Err(Refusal::NoRoute);
            };
            let Some(l) = load.trunk(&t.name) else {
                return Err(Refusal::NoRoute);
            };
            let n = l.window.hit(now);
            if t.cps > 0 && n > t.cps {
                self.counters.trunk_limited += 1;
                return Err(Refusal::Limit("trunk call rate"));
            }
            if t.max_calls > 0 && l.active >= t.max_calls {
                self.counters.trunk_limited += 1;
                return Err(Refusal::Limit("trunk concurrent calls"));
            }
            l.active += 1;
        }
        if let Some(s) = load.sources.get_mut(&source) {
            s.calls += 1;
        }
        Ok(())
    }

    /// Gives back a call taken with [`Policy::take`].
    pub fn release(&mut self, source: IpAddr, trunk: Option<usize>) {
        let mut load = self.load.lock();
        if let Some(l) = trunk
            .and_then(|t| self.trunks.get(t))
            .and_then(|t| load.trunk(&t.name))
        {
            l.active = l.active.saturating_sub(1);
        }
        if let Some(s) = load.sources.get_mut(&source) {
            s.calls = s.calls.saturating_sub(1);
        }
    }

    /// Calls up now towards `trunk`, across the shards sharing this
    /// policy's load.
    pub fn active(&self, trunk: usize) -> u32 {
        let Some(t) = self.trunks.get(trunk) else {
            return 0;
        };
        self.load.lock().trunks.get(&t.name).map_or(0, |l| l.active)
    }

    /// Counts in `other`'s load (another control-plane shard's policy):
    /// from now on their limits hold together.
    pub fn share_load(&mut self, other: &Policy) {
        self.load = other.load.clone();
    }

    /// Takes over what `old` (the policy before a reload) learned and
    /// holds: calls up per trunk, sources' windows, bans and calls, peers'
    /// health (same trunk, same address), servers resolved for an
    /// unchanged URI target, the counters. Returns where each old realm
    /// and trunk is now, by name (`None`: gone).
    pub fn take_over(&mut self, old: Policy) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
        let realm_map: Vec<Option<usize>> = old
            .realms
            .iter()
            .map(|r| self.realms.iter().position(|n| n.name == r.name))
            .collect();
        let trunk_map: Vec<Option<usize>> = old
            .trunks
            .iter()
            .map(|t| self.trunks.iter().position(|n| n.name == t.name))
            .collect();
        for (o, new) in old.trunks.into_iter().zip(&trunk_map) {
            let Some(t) = new.and_then(|i| self.trunks.get_mut(i)) else {
                continue;
            };
            let same = |a: &UriTarget, b: &UriTarget| a.name == b.name && a.priority == b.priority;
            if t.uris.len() == o.uris.len() && t.uris.iter().zip(&o.uris).all(|(a, b)| same(a, b)) {
                // The same names: what they resolved to stays.
                t.uris.clone_from(&o.uris);
                t.peers
                    .extend(o.peers.iter().filter(|p| p.from_uri.is_some()).cloned());
            }
            for p in &mut t.peers {
                if let Some(q) = o
                    .peers
                    .iter()
                    .find(|q| q.address == p.address && q.transport == p.transport)
                {
                    p.up = q.up;
                    p.avoid_until = q.avoid_until;
                    p.probe_sent = q.probe_sent;
                    p.answered = q.answered;
                }
            }
        }
        // Calls up, windows and bans are by source and trunk name.
        self.load = old.load;
        self.counters = old.counters;
        self.random = old.random;
        (realm_map, trunk_map)
    }

    /// Counts a recovered call (after a restart) against its trunk and source.
    pub fn restore(&mut self, source: IpAddr, trunk: Option<usize>) {
        let mut load = self.load.lock();
        if let Some(l) = trunk
            .and_then(|t| self.trunks.get(t))
            .and_then(|t| load.trunk(&t.name))
        {
            l.active += 1;
        }
        load.sources.entry(source).or_default().calls += 1;
    }

    /// Seeds the random choices among equal SRV records.
    pub fn seed(&mut self, seed: u64) {
        self.random = seed | 1;
    }

    /// The servers `trunk`'s URI target `uri` resolved to now: peers it no
    /// longer gives stop taking calls, new ones join with their SRV order
    /// and weight, known ones keep their health. Only servers the trunk's
    /// realm can reach are taken: of the family of its listener (UDP, TCP or TLS).
    pub fn set_resolved(&mut self, trunk: usize, uri: usize, servers: &[Server]) {
        let family = self
            .trunk_realm(trunk)
            .and_then(|r| r.listener)
            .map(|l| l.is_ipv4());
        let Some(t) = self.trunks.get_mut(trunk) else {
            return;
        };
        let Some(priority) = t.uris.get(uri).map(|u| u.priority) else {
            return;
        };
        if t.uris[uri].applied.as_deref() == Some(servers) {
            return;
        }
        t.uris[uri].resolved = true;
        t.uris[uri].applied = Some(servers.to_vec());
        for p in t.peers.iter_mut().filter(|p| p.from_uri == Some(uri)) {
            p.listed = false;
        }
        for s in servers {
            if family.is_some_and(|v4| v4 != s.address.is_ipv4()) {
                continue;
            }
            match t
                .peers
                .iter_mut()
                .find(|p| p.from_uri == Some(uri) && p.address == s.address)
            {
                Some(p) => {
                    p.listed = true;
                    p.srv_priority = s.priority;
                    p.weight = u32::from(s.weight);
                }
                None => {
                    tracing::info!(trunk = %t.name, peer = %s.address, "trunk peer from DNS");
                    t.peers.push(Peer::new(
                        (s.address, s.transport),
                        (priority, s.priority),
                        u32::from(s.weight),
                        Some(uri),
                    ));
                }
            }
        }
    }

    /// The order in which a new call at `now` tries `trunk`'s peers: the
    /// policy picks the first (under the priority policy, servers of one
    /// name with equal SRV priority in RFC 2782's weighted random order),
    /// peers being avoided after a failure come after the others, and every
    /// listed peer is tried once.
    pub fn peers_for_call(&mut self, trunk: usize, now: Millis) -> Vec<usize> {
        let mut seed = self.random;
        let order = self.order_peers(trunk, now, &mut seed);
        self.random = seed;
        order
    }

    fn order_peers(&mut self, trunk: usize, now: Millis, seed: &mut u64) -> Vec<usize> {
        let Some(t) = self.trunks.get_mut(trunk) else {
            return Vec::new();
        };
        // What the other shards learned of the peers since.
        if let Some(known) = self.load.lock().peers.get(&t.name) {
            for p in &mut t.peers {
                if let Some(h) = known.get(&(p.address, p.transport)) {
                    p.up = h.up;
                    p.avoid_until = h.avoid_until;
                }
            }
        }
        let listed: Vec<usize> = (0..t.peers.len()).filter(|i| t.peers[*i].listed).collect();
        let n = listed.len();
        let mut order: Vec<usize> = match t.policy {
            Dispatch::Priority => {
                let mut o = listed.clone();
                let key = |p: &Peer| (p.priority, p.from_uri, p.srv_priority);
                o.sort_by_key(|i| key(&t.peers[*i]));
                // One name's servers of equal SRV priority: weighted random.
                let mut start = 0;
                while start < o.len() {
                    let k = key(&t.peers[o[start]]);
                    let end = o[start..]
                        .iter()
                        .position(|i| key(&t.peers[*i]) != k)
                        .map_or(o.len(), |e| start + e);
                    if k.1.is_some() && end - start > 1 {
                        let servers: Vec<Server> = o[start..end]
                            .iter()
                            .map(|i| Server {
                                transport: t.peers[*i].transport,
                                address: t.peers[*i].address,
                                priority: 0,
                                weight: t.peers[*i].weight.min(u32::from(u16::MAX)) as u16,
                            })
                            .collect();
                        let picked = crate::dns::srv_order(&servers, &mut || splitmix(seed));
                        let group: Vec<usize> = picked.iter().map(|j| o[start + j]).collect();
                        o[start..end].copy_from_slice(&group);
                    }
                    start = end;
                }
                o
            }
            Dispatch::RoundRobin => {
                let start = t.rr % n.max(1);
                t.rr = t.rr.wrapping_add(1);
                (0..n).map(|i| listed[(start + i) % n]).collect()
            }
            Dispatch::Weighted => {
                // Smooth weighted round robin over the peers not avoided.
                let healthy: Vec<usize> = listed
                    .iter()
                    .copied()
                    .filter(|i| t.peers[*i].avoid_until <= now)
                    .collect();
                let pool = if healthy.is_empty() {
                    listed.clone()
                } else {
                    healthy
                };
                let Some(&first) = pool.first() else {
                    return Vec::new();
                };
                let total: i64 = pool.iter().map(|i| i64::from(t.peers[*i].weight)).sum();
                let mut best = first;
                for i in &pool {
                    let p = &mut t.peers[*i];
                    p.current_weight += i64::from(p.weight);
                }
                for i in &pool {
                    if t.peers[*i].current_weight > t.peers[best].current_weight {
                        best = *i;
                    }
                }
                t.peers[best].current_weight -= total;
                let mut o = vec![best];
                let mut rest: Vec<usize> = listed.iter().copied().filter(|i| *i != best).collect();
                rest.sort_by_key(|i| std::cmp::Reverse(t.peers[*i].weight));
                o.extend(rest);
                o
            }
        };
        // Peers being avoided last, keeping the policy's order within each
        // group.
        order.sort_by_key(|i| t.peers[*i].avoid_until > now);
        order
    }

    /// A peer answered (any response): it is up and no longer avoided.
    pub fn peer_answered(&mut self, trunk: usize, peer: usize) {
        let Some(t) = self.trunks.get_mut(trunk) else {
            return;
        };
        if let Some(p) = t.peers.get_mut(peer) {
            if !p.up {
                tracing::info!(peer = %p.address, "trunk peer is up");
            }
            p.up = true;
            p.answered = true;
            p.avoid_until = 0;
            self.load.lock().set_peer(&t.name, p);
        }
    }

    /// A peer timed out, answered 503 or could not be reached at `now`: it
    /// is down, and tried after the others for `[dns] avoid_secs` or until
    /// it answers a health check.
    pub fn peer_failed(&mut self, trunk: usize, peer: usize, now: Millis) {
        let avoid = self.avoid_ms;
        let Some(t) = self.trunks.get_mut(trunk) else {
            return;
        };
        if let Some(p) = t.peers.get_mut(peer) {
            if p.up {
                tracing::warn!(peer = %p.address, avoid_secs = avoid / 1000, "trunk peer is down");
            }
            p.up = false;
            p.avoid_until = now + avoid;
            self.load.lock().set_peer(&t.name, p);
        }
    }

    /// The peers to probe now: every listed peer of a trunk with health
    /// checks; a peer whose previous probe went unanswered is marked down.
    pub fn probe_round(&mut self, now: Millis) -> Vec<(usize, usize)> {
        let mut probes = Vec::new();
        for ti in 0..self.trunks.len() {
            if !self.trunks[ti].health_checks {
                continue;
            }
            for pi in 0..self.trunks[ti].peers.len() {
                let p = &self.trunks[ti].peers[pi];
                if !p.listed {
                    continue;
                }
                if p.probe_sent.is_some() && !p.answered {
                    self.peer_failed(ti, pi, now);
                }
                let p = &mut self.trunks[ti].peers[pi];
                p.probe_sent = Some(now);
                p.answered = false;
                probes.push((ti, pi));
            }
        }
        probes
    }

    /// The realm a registered user's source address belongs to (the first
    /// whose access list holds it and that has a UDP listener), to deliver
    /// calls to it from there.
    pub fn realm_of_source(&self, source: IpAddr) -> Option<usize> {
        self.realms
            .iter()
            .position(|r| r.listener.is_some() && r.allow.iter().any(|n| n.contains(source)))
    }

    /// The realm of a registered user reached at `address` over
    /// `transport`: over a stream, the realm listening on that transport
    /// whose access list takes the address (a browser over WSS is in the
    /// realm of the WSS listener); over UDP, the realm of the source.
    pub fn realm_of_contact(&self, address: IpAddr, transport: Transport) -> Option<usize> {
        if transport != Transport::Udp {
            let found = self.listeners.iter().find(|(_, t, r)| {
                *t == transport
                    && self
                        .realms
                        .get(*r)
                        .is_some_and(|realm| realm.allow.iter().any(|n| n.contains(address)))
            });
            if let Some((_, _, r)) = found {
                return Some(*r);
            }
        }
        self.realm_of_source(address)
    }

    /// The relay address of its own a realm's side is given for peers of
    /// one family (none: the relay's address of that family).
    pub fn media_address(&self, realm: usize, v6: bool) -> Option<IpAddr> {
        let r = self.realms.get(realm)?;
        if v6 {
            r.media_address_v6
        } else {
            r.media_address
        }
    }

    /// The UDP listener of `realm` in one family.
    /// Where a realm's requests over `transport` are sent from (Via, Contact):
    /// its listener of that transport, else its UDP listener.
    pub fn listener_for(&self, realm: usize, transport: Transport) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(_, t, r)| *r == realm && *t == transport)
            .map(|l| l.0)
            .or_else(|| self.realms.get(realm)?.listener)
    }

    pub fn udp_listener(&self, realm: usize, v6: bool) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(a, t, r)| *r == realm && *t == Transport::Udp && a.is_ipv6() == v6)
            .map(|l| l.0)
    }

    /// The realm of a trunk.
    pub fn trunk_realm(&self, trunk: usize) -> Option<&RealmRt> {
        self.trunks
            .get(trunk)
            .and_then(|t| self.realms.get(t.realm))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn policy(extra: &str) -> Policy {
        let text = format!(
            r#"
[node]
mode = "b2bua"
[sip]
listen = [
  {{ address = "127.0.0.1:5060", transport = "udp", realm = "access" }},
  {{ address = "127.0.0.1:5062", transport = "udp", realm = "core" }},
]
[media]
address = "127.0.0.1"
port_min = 30000
port_max = 39999
[[realms]]
name = "access"
allow = ["127.0.0.0/8"]
cps_per_source = 5
[[realms]]
name = "core"
allow = ["127.0.0.1"]
[[trunks]]
name = "core"
realm = "core"
targets = ["127.0.0.1:5070", {{ address = "127.0.0.1:5072", weight = 3 }}]
{extra}
[sbc.numbering]
country_code = "44"
national_prefix = "0"
international_prefix = "00"
[[sbc.routes]]
trunk = "core"
[[sbc.routes]]
prefix = "+44"
trunk = "uk"
[[trunks]]
name = "uk"
realm = "core"
targets = ["127.0.0.1:5090"]
"#
        );
        let c = Config::from_str_at(&text, std::path::Path::new("t.toml")).unwrap();
        Policy::from_config(&c).unwrap()
    }

    #[test]
    fn networks_match_by_prefix() {
        let n = Net::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(
            Net::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Net::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(
            !Net::parse("127.0.0.1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(Net::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn numbers_are_normalized_and_routed_by_longest_prefix() {
        let mut p = policy("");
        assert_eq!(p.normalize("020 7946-0000"), "+442079460000");
        assert_eq!(p.normalize("0015551234"), "+15551234");
        assert_eq!(p.normalize("+1 (555) 1234"), "+15551234");
        assert_eq!(p.normalize("service"), "service");
        let uk = p.route("+442079460000", 0);
        assert_eq!(uk.map(|t| p.trunks[t].name.as_str()), Some("uk"));
        let any = p.route("+15551234", 0);
        assert_eq!(any.map(|t| p.trunks[t].name.as_str()), Some("core"));
    }

    #[test]
    fn sources_outside_the_realm_are_refused_and_floods_banned() {
        let mut p = policy("");
        let core = 1;
        assert_eq!(
            p.admit(0, core, "127.0.0.9".parse().unwrap(), true, false),
            Err(Refusal::Acl)
        );
        let src: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..200 {
            assert_eq!(p.admit(10, 0, src, true, false), Ok(()));
        }
        assert_eq!(p.admit(10, 0, src, true, false), Err(Refusal::Banned));
        // Banned: new requests are dropped for the ban's length, requests
        // within dialogs it holds still pass.
        assert_eq!(p.admit(30_000, 0, src, false, false), Err(Refusal::Banned));
        assert_eq!(p.admit(30_000, 0, src, false, true), Ok(()));
        assert_eq!(p.admit(70_011, 0, src, true, false), Ok(()));
        assert_eq!(p.counters.bans, 1);
        // Another source is not affected.
        assert_eq!(
            p.admit(10, 0, "127.0.0.3".parse().unwrap(), true, false),
            Ok(())
        );
    }

    #[test]
    fn trunk_peers_are_never_banned_as_floods() {
        let mut p = policy("");
        // 127.0.0.1 is the core trunk's peer address.
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..1000 {
            assert_eq!(p.admit(10, 1, peer, true, false), Ok(()));
        }
        assert_eq!(p.counters.bans, 0);
    }

    #[test]
    fn source_call_rate_is_limited_per_second() {
        let mut p = policy("");
        let src: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(p.take(1000, 0, src, Some(0)), Ok(()));
        }
        assert_eq!(
            p.take(1500, 0, src, Some(0)),
            Err(Refusal::Limit("source call rate"))
        );
        assert_eq!(p.take(2000, 0, src, Some(0)), Ok(()));
        assert_eq!(p.active(0), 6);
        p.release(src, Some(0));
        assert_eq!(p.active(0), 5);
    }

    #[test]
    fn trunk_limits_hold() {
        let mut p = policy("max_calls = 2\ncps = 100");
        let src: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(p.take(0, 1, src, Some(0)), Ok(()));
        assert_eq!(p.take(0, 1, src, Some(0)), Ok(()));
        assert_eq!(
            p.take(0, 1, src, Some(0)),
            Err(Refusal::Limit("trunk concurrent calls"))
        );
        p.release(src, Some(0));
        assert_eq!(p.take(0, 1, src, Some(0)), Ok(()));
    }

    #[test]
    fn shards_sharing_a_load_hold_one_limit_and_one_view_of_the_peers() {
        let mut a = policy("max_calls = 2");
        let mut b = policy("max_calls = 2");
        b.share_load(&a);
        let src: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(a.take(0, 1, src, Some(0)), Ok(()));
        assert_eq!(b.take(0, 1, src, Some(0)), Ok(()));
        assert_eq!(
            a.take(0, 1, src, Some(0)),
            Err(Refusal::Limit("trunk concurrent calls"))
        );
        assert_eq!((a.active(0), b.active(0)), (2, 2));
        b.release(src, Some(0));
        assert_eq!(a.take(0, 1, src, Some(0)), Ok(()));
        // A peer one shard found down is tried last by the other, until
        // it answers either.
        a.peer_failed(0, 0, 1000);
        assert_eq!(b.peers_for_call(0, 2000), vec![1, 0]);
        b.peer_answered(0, 0);
        assert_eq!(a.peers_for_call(0, 3000), vec![0, 1]);
    }

    #[test]
    fn dispatcher_policies_order_peers_and_skip_dead_ones() {
        let mut p = policy("");
        assert_eq!(p.peers_for_call(0, 0), vec![0, 1]);
        p.peer_failed(0, 0, 0);
        assert_eq!(p.peers_for_call(0, 1000), vec![1, 0]);
        // Avoided for [dns] avoid_secs (60 s by default), then tried first
        // again.
        assert_eq!(p.peers_for_call(0, 59_999), vec![1, 0]);
        assert_eq!(p.peers_for_call(0, 60_000), vec![0, 1]);
        p.peer_failed(0, 0, 70_000);
        p.peer_answered(0, 0);
        assert_eq!(p.peers_for_call(0, 70_001), vec![0, 1]);

        let mut rr = policy("policy = \"round-robin\"");
        let firsts: Vec<usize> = (0..4).map(|_| rr.peers_for_call(0, 0)[0]).collect();
        assert_eq!(firsts, vec![0, 1, 0, 1]);

        let mut w = policy("policy = \"weighted\"");
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[w.peers_for_call(0, 0)[0]] += 1;
        }
        assert_eq!(counts, [100, 300]);
    }

    #[test]
    fn unanswered_probes_take_a_peer_down_and_answers_bring_it_back() {
        let mut p = policy("");
        assert_eq!(p.probe_round(0).len(), 3);
        p.peer_answered(0, 1);
        p.peer_answered(1, 0);
        p.probe_round(5000);
        assert!(!p.trunks[0].peers[0].up);
        assert!(p.trunks[0].peers[1].up);
        p.peer_answered(0, 0);
        assert!(p.trunks[0].peers[0].up);
    }

    #[test]
    fn header_rules_add_remove_and_rewrite() {
        let mut h: Vec<(HeaderText, HeaderText)> = vec![
            ("User-Agent".into(), "PBX 1.0".into()),
            ("P-Asserted-Identity".into(), "<sip:0201234@pbx>".into()),
        ];
        HeaderRule::Remove("user-agent".into()).apply(&mut h);
        HeaderRule::Add("X-Trunk".into(), "core".into()).apply(&mut h);
        HeaderRule::Rewrite(
            "P-Asserted-Identity".into(),
            Regex::new(r"sip:0(\d+)@").unwrap(),
            "sip:+44$1@".into(),
        )
        .apply(&mut h);
        let want: Vec<(HeaderText, HeaderText)> = vec![
            ("P-Asserted-Identity".into(), "<sip:+44201234@pbx>".into()),
            ("X-Trunk".into(), "core".into()),
        ];
        assert_eq!(h, want);
    }
}
