//! The transaction-stateful proxy (RFC 3261 §16): target selection (loose
//! routing, registrar lookup, static routes), forking (parallel within a
//! q-value, sequential across), response selection, CANCEL propagation and
//! Timer C.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use rvoip_dataplane::sip::{
    Forward, Framing, HeaderName, Host, Limits, Method, NameAddr, Scheme, SipMessage, Uri,
    write_response,
};

use crate::build;
use crate::dns::{Failure, Lookup, SipName};
use rustc_hash::FxHashMap;

use crate::element::{
    AuthPolicy, ClientKey, Element, Hop, Inbound, LayerEvent, Owner, ServerKey, TimerRef,
    TransactionUser, Transport,
};
use crate::registrar::location::Source;
use crate::transaction::layer::TransactionLayer;
use crate::transaction::{ClientState, Millis};

/// A static route: requests whose Request-URI matches go to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Match Request-URI users starting with this (None: any).
    pub user_prefix: Option<String>,
    /// Match this Request-URI host (None: any).
    pub domain: Option<String>,
    /// Next hop.
    pub target: NextHop,
    /// Transport to an address next hop.
    pub transport: Transport,
}

/// A static route's next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// An address.
    Address(SocketAddr),
    /// A SIP URI resolved as RFC 3263 says (an outbound proxy by name).
    Name(SipName),
}

impl Route {
    fn matches(&self, uri: &Uri<'_>) -> bool {
        let user_ok = self
            .user_prefix
            .as_ref()
            .is_none_or(|p| uri.user.is_some_and(|u| u.starts_with(p.as_bytes())));
        let domain_ok = self
            .domain
            .as_ref()
            .is_none_or(|d| uri.host_bytes().eq_ignore_ascii_case(d.as_bytes()));
        user_ok && domain_ok
    }
}

/// Where one branch goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    hop: Hop,
    /// New Request-URI (a registered contact), or keep it.
    uri: Option<String>,
    /// Route set to push (a registration's Path).
    path: Vec<String>,
    pop_route: bool,
    /// One of the servers a name resolved to (RFC 3263): the next one is
    /// tried only when it cannot be reached (timeout, 503).
    from_dns: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BranchState {
    Pending,
    Provisional,
    Done(u16),
}

#[derive(Debug)]
pub(crate) struct Branch {
    client: ClientKey,
    /// The branch parameter of our Via on this branch.
    branch_id: String,
    hop: Hop,
    state: BranchState,
    cancel_pending: bool,
    /// When Timer C (§16.6 step 11) fires for an INVITE branch. It only
    /// moves later (each provisional restarts it), so the one timer on the
    /// wheel puts it on again when it fires early.
    timer_c: Millis,
    /// Sent to a server a name resolved to.
    from_dns: bool,
}

/// The response context of one proxied request.
#[derive(Debug)]
pub(crate) struct Context {
    server: ServerKey,
    invite: bool,
    original: std::sync::Arc<[u8]>,
    /// Target groups not tried yet (sequential forking).
    later: VecDeque<Vec<Target>>,
    branches: Vec<Branch>,
    best: Option<(u16, Vec<u8>)>,
    final_sent: bool,
    cancelled: bool,
    /// The later groups are the other servers of a name: tried only after
    /// a failure to reach one (RFC 3263 §4.3), not after any answer.
    dns_failover: bool,
}

/// A request waiting for its next hop's name to resolve.
#[derive(Debug)]
struct Waiting {
    key: ServerKey,
    bytes: Vec<u8>,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    conn: u32,
    local_domain: bool,
}

/// RFC 3261 §16.7 step 6: 6xx beats everything, else the lowest class.
fn better(candidate: u16, current: Option<u16>) -> bool {
    match current {
        None => true,
        Some(c) if c >= 600 => false,
        Some(_) if candidate >= 600 => true,
        Some(c) => candidate / 100 < c / 100,
    }
}

fn ip_of(host: &Host<'_>) -> Option<IpAddr> {
    host.ip()
}

/// The transaction-stateful proxy (RFC 3261 §16): a context per request
/// it forwards, with a branch per target, the best response chosen and
/// sent upstream, CANCEL and Timer C.
#[derive(Debug)]
pub(crate) struct StatefulProxy {
    proxies: FxHashMap<u64, Context>,
    next_proxy: u64,
    /// Requests waiting for a name.
    waiting: Vec<Waiting>,
}

impl Default for StatefulProxy {
    fn default() -> Self {
        StatefulProxy {
            proxies: FxHashMap::default(),
            next_proxy: 1,
            waiting: Vec::new(),
        }
    }
}

/// The stateless proxy (RFC 3261 §16.11): each request goes to its first
/// target and nothing is remembered; responses go back by their Via.
#[derive(Debug, Default)]
pub(crate) struct StatelessProxy;

impl TransactionUser for StatefulProxy {
    fn on_request(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        local_domain: bool,
    ) {
        if msg.method() == Some(Method::Cancel) {
            self.on_cancel(el, now, &key, msg);
            return;
        }
        if el.proxy_answers(now, key, msg, inb, local_domain) {
            return;
        }
        self.proxy_request(el, now, unix_ms, key, msg, inb, local_domain);
    }

    fn on_response(
        &mut self,
        el: &mut Element,
        now: Millis,
        _unix_ms: u64,
        owner: Owner,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) {
        let Owner::Branch(p, b) = owner else {
            return;
        };
        if self.proxies.contains_key(&p) {
            let code = msg.status_code().unwrap_or(500);
            self.proxy_response(el, now, p, b, code, msg);
            self.settle(p);
        } else {
            // The request's outcome is settled and its context gone: a late
            // response (a 2xx retransmission, another fork's 2xx) is relayed
            // as it is (§16.7 step 5, §16.11).
            el.forward_response_stateless(msg, inb);
        }
    }

    fn on_event(&mut self, el: &mut Element, now: Millis, _unix_ms: u64, event: LayerEvent) {
        match event {
            LayerEvent::TimedOut(Owner::Branch(p, b)) => {
                // A branch that timed out counts as a 408 (§16.7 step 2).
                self.proxy_branch_failed(el, now, p, b, 408);
                self.settle(p);
            }
            LayerEvent::Unreachable(Owner::Branch(p, b)) => {
                // §16.9: a transport error counts as a 503.
                self.proxy_branch_failed(el, now, p, b, 503);
                self.settle(p);
            }
            LayerEvent::Unreachable(_) => {}
            LayerEvent::ServerEnded(p) => self.maybe_drop_proxy(p),
            LayerEvent::TimedOut(_) => {}
        }
    }

    fn on_timer(&mut self, el: &mut Element, now: Millis, _unix_ms: u64, timer: TimerRef) {
        if let TimerRef::TimerC(p, b) = timer {
            self.on_timer_c(el, now, p, b);
        }
    }

    fn on_resolved(&mut self, el: &mut Element, now: Millis, unix_ms: u64) {
        for w in std::mem::take(&mut self.waiting) {
            // Ended meanwhile (its client gave up, or it was cancelled).
            if !el.txl.servers.contains_key(&w.key) {
                continue;
            }
            let Ok(msg) = SipMessage::parse(&w.bytes, Framing::Datagram, &Limits::default()) else {
                continue;
            };
            let inb = Inbound {
                bytes: &w.bytes,
                transport: w.transport,
                local: w.local,
                remote: w.remote,
                conn: w.conn,
            };
            // Its 100 Trying went when it was put to wait.
            self.route_request(
                el,
                (now, unix_ms),
                w.key,
                &msg,
                &inb,
                (w.local_domain, true),
            );
        }
    }
}

impl TransactionUser for StatelessProxy {
    fn on_request(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        local_domain: bool,
    ) {
        if el.proxy_answers(now, key, msg, inb, local_domain) {
            return;
        }
        el.proxy_stateless(now, unix_ms, key, msg, inb, local_domain);
    }

    fn on_response(
        &mut self,
        el: &mut Element,
        _now: Millis,
        _unix_ms: u64,
        _owner: Owner,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) {
        el.forward_response_stateless(msg, inb);
    }

    fn on_event(&mut self, _el: &mut Element, _now: Millis, _unix_ms: u64, _event: LayerEvent) {}

    fn on_timer(&mut self, _el: &mut Element, _now: Millis, _unix_ms: u64, _timer: TimerRef) {}
}

impl Element {
    /// What a proxy answers itself before forwarding: OPTIONS addressed
    /// to this element, the proxy challenge (407) and the relay check
    /// (403). `true`: the request was answered.
    pub(crate) fn proxy_answers(
        &mut self,
        now: Millis,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        local_domain: bool,
    ) -> bool {
        let method = msg.method().unwrap_or(Method::Options);
        if method == Method::Options
            && local_domain
            && msg.request_uri().ok().is_some_and(|u| u.user.is_none())
        {
            let allow = b"INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO, MESSAGE, REFER, NOTIFY, SUBSCRIBE";
            self.txl.respond(
                now,
                &key,
                msg,
                200,
                "OK",
                &[
                    (HeaderName::Allow, allow),
                    (HeaderName::Accept, b"application/sdp"),
                    (HeaderName::Supported, b"path"),
                ],
            );
            return true;
        }
        if method == Method::Invite
            && self.config.auth == AuthPolicy::RegisterAndInvite
            && let Err(stale) = self.authenticate(now, msg, inb, HeaderName::ProxyAuthorization)
        {
            self.challenge(now, &key, msg, 407, stale);
            return true;
        }
        // RFC 3261 §16.3 leaves open which targets a proxy serves; this one
        // is no open relay.
        match self.relay_check(now, msg, inb) {
            RelayCheck::Allowed => false,
            RelayCheck::Challenge => {
                self.challenge(now, &key, msg, 407, false);
                true
            }
            RelayCheck::Denied => {
                let reason = "this proxy does not relay to that target for this source";
                self.refuse(now, &key, msg, inb, (403, "Relaying Denied"), reason);
                true
            }
        }
    }

    /// An ACK to a 2xx: its own transaction, forwarded statelessly unless
    /// the relay check denies it.
    pub(crate) fn forward_ack(&mut self, now: Millis, msg: &SipMessage<'_>, inb: &Inbound<'_>) {
        if self.relay_check(now, msg, inb) != RelayCheck::Denied {
            self.forward_stateless(now, msg, inb);
        }
    }

    fn local_for(&self, transport: Transport, fallback: SocketAddr) -> SocketAddr {
        self.config
            .listeners
            .iter()
            .find(|(t, _)| *t == transport)
            .map_or(fallback, |(_, a)| *a)
    }

    fn hop_to(&self, uri: &Uri<'_>, inb: &Inbound<'_>) -> Option<Hop> {
        let ip = ip_of(uri.host.as_ref()?)?;
        let transport = match uri.params.get("transport").flatten() {
            _ if uri.scheme == Scheme::Sips => Transport::Tls,
            Some(t) => Transport::from_param(t)?,
            None => Transport::Udp,
        };
        let default_port = if transport == Transport::Tls {
            5061
        } else {
            5060
        };
        let port = uri.port.unwrap_or(default_port);
        Some(Hop {
            transport,
            local: self.local_for(transport, inb.local),
            dest: SocketAddr::new(ip, port),
            conn: None,
        })
    }

    /// The static route a Request-URI takes.
    fn route_for(&self, uri: &Uri<'_>) -> Option<&Route> {
        self.config.routes.iter().find(|r| r.matches(uri))
    }

    /// The hop of the static route a Request-URI takes, when its next hop
    /// is an address (a name is resolved: `next_hop_name`).
    fn route_hop(&self, uri: &Uri<'_>, inb: &Inbound<'_>) -> Option<Hop> {
        let r = self.route_for(uri)?;
        let NextHop::Address(dest) = r.target else {
            return None;
        };
        Some(Hop {
            transport: r.transport,
            local: self.local_for(r.transport, inb.local),
            dest,
            conn: None,
        })
    }

    /// Whether `msg` (a request to forward) may go where it is going, for
    /// its source (no open relay):
    /// - within a dialog this proxy record-routed (a To tag and our Route
    ///   on top), anywhere the dialog leads;
    /// - from a trusted source (`proxy.trusted_sources`) or with valid
    ///   proxy credentials, anywhere;
    /// - otherwise only to this proxy's domains and addresses (registered
    ///   users, local services) and to the targets of its static routes.
    ///
    /// A request that fails is challenged (407) when its From is one of our
    /// users' domains and authentication is configured, refused otherwise.
    pub(crate) fn relay_check(
        &mut self,
        now: Millis,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) -> RelayCheck {
        let in_dialog = msg.to().ok().is_some_and(|t| t.tag().is_some());
        let mut routes = msg.routes().filter_map(Result::ok);
        let top = routes.next();
        let top_ours = top.as_ref().is_some_and(|r| {
            r.uri
                .host
                .is_some_and(|h| self.is_local_host(&h, r.uri.port))
        });
        if in_dialog && top_ours {
            return RelayCheck::Allowed;
        }
        let source = inb.remote.ip();
        if self
            .config
            .trusted_sources
            .iter()
            .any(|n| n.contains(source))
        {
            return RelayCheck::Allowed;
        }
        let foreign_route = if top_ours {
            routes.next().is_some()
        } else {
            top.is_some()
        };
        if !foreign_route && let Ok(ruri) = msg.request_uri() {
            let served = match ruri.host {
                Some(h) if self.is_local_host(&h, ruri.port) => true,
                // An address: one of the static routes' next hops.
                Some(h) if h.ip().is_some() => {
                    let dest = h
                        .ip()
                        .map(|ip| SocketAddr::new(ip, ruri.port.unwrap_or(5060)));
                    self.config
                        .routes
                        .iter()
                        .any(|r| dest.is_some_and(|d| r.target == NextHop::Address(d)))
                }
                // A name that is not ours: what a static route takes.
                Some(_) => self.route_for(&ruri).is_some(),
                None => false,
            };
            if served {
                return RelayCheck::Allowed;
            }
        }
        if msg.method() == Some(Method::Ack) {
            self.counters.relay_denied += 1;
            return RelayCheck::Denied;
        }
        if msg.header(HeaderName::ProxyAuthorization).is_some()
            && self
                .authenticate(now, msg, inb, HeaderName::ProxyAuthorization)
                .is_ok()
        {
            return RelayCheck::Allowed;
        }
        let from_ours = msg.from().ok().is_some_and(|f| {
            f.uri
                .host
                .is_some_and(|h| self.is_local_host(&h, f.uri.port))
        });
        if from_ours && self.config.auth != AuthPolicy::Off && !self.users.is_empty() {
            return RelayCheck::Challenge;
        }
        self.counters.relay_denied += 1;
        RelayCheck::Denied
    }

    /// The next hop of a request that is not retargeted: loose routing, then
    /// the static routes, then the Request-URI itself. The bool says whether
    /// the top Route (ours) is to be popped.
    pub(crate) fn next_hop(
        &self,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        skip: usize,
    ) -> Option<(Hop, bool)> {
        let (routes, pop) = self.route_set(msg);
        let rest = &routes[usize::from(pop)..];
        if let Some(next) = rest.first() {
            return self.hop_to(&next.uri, inb).map(|h| (h, pop));
        }
        let ruri = msg.request_uri().ok()?;
        let _ = skip;
        // A Request-URI naming another element by address goes there (an
        // in-dialog request to a Contact); one naming us, our domain or a
        // host name goes by the static routes.
        let elsewhere = ruri
            .host
            .is_some_and(|h| h.ip().is_some() && !self.is_local_host(&h, ruri.port));
        if !elsewhere && self.route_for(&ruri).is_some() {
            // A route to a name has no hop here: its servers come from
            // `targets` once resolved.
            return self.route_hop(&ruri, inb).map(|h| (h, pop));
        }
        self.hop_to(&ruri, inb).map(|h| (h, pop))
    }

    /// Target groups for a new request: registered contacts grouped by q
    /// (best first), or the single next hop.
    fn targets(
        &self,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        local_domain: bool,
        (now, now_unix_ms): (Millis, u64),
    ) -> Vec<Vec<Target>> {
        let has_foreign_route = msg.routes().next().is_some_and(|r| {
            r.is_ok_and(|r| {
                !r.uri
                    .host
                    .is_some_and(|h| self.is_local_host(&h, r.uri.port))
            })
        });
        let mut pop_only = false;
        if let Some(Ok(top)) = msg.routes().next()
            && top
                .uri
                .host
                .is_some_and(|h| self.is_local_host(&h, top.uri.port))
        {
            pop_only = msg.routes().count() > 1;
        }
        let ruri = msg.request_uri().ok();
        if local_domain
            && !has_foreign_route
            && !pop_only
            && let Some(u) = &ruri
            && u.user.is_some()
            && let Some(aor) = self.registrar.aor(u)
        {
            let bindings = self.registrar.location.lock().lookup(&aor, now_unix_ms);
            let mut groups: Vec<Vec<Target>> = Vec::new();
            let mut last_q = None;
            for b in bindings {
                let Ok(contact) = Uri::parse(b.contact.as_bytes()) else {
                    continue;
                };
                let dest_uri = match b.path.first() {
                    Some(p) => Uri::parse(p.as_bytes()).ok(),
                    None => None,
                };
                let hop = match &dest_uri {
                    Some(p) => self.hop_to(p, inb),
                    None => {
                        // A contact whose address is not the one its REGISTER
                        // came from is behind NAT: the registration's source
                        // reaches it. Otherwise the contact is used as is.
                        let source = Source::parse(&b.source);
                        let contact_ip = contact.host.as_ref().and_then(ip_of);
                        let natted = matches!(
                            (source, contact_ip),
                            (Some(s), Some(ip)) if s.address.ip() != ip
                        );
                        // A WebSocket client (its contact a `.invalid`
                        // name) is reached over its connection only.
                        let reach = source.filter(|s| natted || s.transport.accepted_only());
                        match reach {
                            Some(s) => Some(Hop {
                                transport: s.transport,
                                local: self.local_for(s.transport, inb.local),
                                dest: s.address,
                                conn: s.conn,
                            }),
                            None => self.hop_to(&contact, inb),
                        }
                    }
                };
                let Some(hop) = hop else { continue };
                let t = Target {
                    hop,
                    uri: Some(b.contact.clone()),
                    path: b.path.clone(),
                    pop_route: false,
                    from_dns: false,
                };
                if last_q == Some(b.q) {
                    if let Some(g) = groups.last_mut() {
                        g.push(t);
                    }
                } else {
                    groups.push(vec![t]);
                    last_q = Some(b.q);
                }
            }
            if !groups.is_empty() {
                return groups;
            }
        }
        if let Some((hop, pop_route)) = self.next_hop(msg, inb, 0) {
            return vec![vec![Target {
                hop,
                uri: None,
                path: Vec::new(),
                pop_route,
                from_dns: false,
            }]];
        }
        // A name: each of its servers in turn, one group each.
        let Some((name, pop_route)) = self.next_hop_name(msg) else {
            return Vec::new();
        };
        let Some(res) = self.dns.peek(&name) else {
            return Vec::new();
        };
        self.dns
            .ordered(&res.servers, now)
            .into_iter()
            .filter_map(|s| {
                let local = self.local_towards(s.transport, s.address)?;
                Some(vec![Target {
                    hop: Hop {
                        transport: s.transport,
                        local,
                        dest: s.address,
                        conn: None,
                    },
                    uri: None,
                    path: Vec::new(),
                    pop_route,
                    from_dns: true,
                }])
            })
            .collect()
    }

    /// Answers a request whose next hop's name gave no server: 503, as a
    /// failure to reach the next hop is answered (RFC 3261 §16.7 step 6
    /// turns a 503 from downstream into 500; this is the proxy's own).
    pub(crate) fn respond_unresolved(
        &mut self,
        now: Millis,
        key: &ServerKey,
        msg: &SipMessage<'_>,
        failure: &Failure,
    ) {
        self.counters.unresolved += 1;
        tracing::debug!(error = %failure, "next hop not resolved");
        self.txl
            .respond(now, key, msg, 503, "Service Unavailable", &[]);
    }

    /// The listener a request to `dest` over `transport` leaves from: one
    /// of the destination's family; none when this element has no such
    /// listener.
    fn local_towards(&self, transport: Transport, dest: SocketAddr) -> Option<SocketAddr> {
        self.config
            .listeners
            .iter()
            .find(|(t, a)| *t == transport && a.is_ipv6() == dest.is_ipv6())
            .map(|(_, a)| *a)
    }

    /// A request's Route set, and whether its top entry is this element's
    /// (to be popped: loose routing, RFC 3261 §16.4).
    fn route_set<'m>(&self, msg: &SipMessage<'m>) -> (Vec<NameAddr<'m>>, bool) {
        let routes: Vec<_> = msg.routes().filter_map(Result::ok).collect();
        let pop = routes.first().is_some_and(|top| {
            top.uri
                .host
                .is_some_and(|h| self.is_local_host(&h, top.uri.port))
        });
        (routes, pop)
    }

    /// The next hop as a name to resolve (RFC 3263), when it is one: the
    /// first Route that is not this element's, else a Request-URI that
    /// names neither this element nor what a static route takes. The bool
    /// says whether the top Route (ours) is to be popped.
    pub(crate) fn next_hop_name(&self, msg: &SipMessage<'_>) -> Option<(SipName, bool)> {
        let (routes, pop) = self.route_set(msg);
        let rest = &routes[usize::from(pop)..];
        let uri = match rest.first() {
            Some(next) => next.uri,
            None => {
                let ruri = msg.request_uri().ok()?;
                let elsewhere = ruri
                    .host
                    .is_some_and(|h| h.ip().is_some() && !self.is_local_host(&h, ruri.port));
                if !elsewhere && let Some(r) = self.route_for(&ruri) {
                    // A static route: its next hop, when that is a name.
                    return match &r.target {
                        NextHop::Name(n) => Some((n.clone(), pop)),
                        NextHop::Address(_) => None,
                    };
                }
                if ruri.host.is_some_and(|h| self.is_local_host(&h, ruri.port)) {
                    return None;
                }
                ruri
            }
        };
        match uri.host {
            Some(Host::Name(_)) => SipName::of(&uri).ok().map(|n| (n, pop)),
            _ => None,
        }
    }

    /// Puts this proxy's Via (with `branch`) on top of a forwarded request
    /// and, when configured, a Record-Route on a dialog-creating request
    /// outside a dialog (RFC 3261 §16.6 steps 4 and 8).
    fn stamp(&self, f: &mut Forward<'_, '_>, msg: &SipMessage<'_>, hop: Hop, branch: &str) {
        f.push_via(&build::via_value(hop.transport, hop.local, branch));
        let dialog_creating = matches!(
            msg.method(),
            Some(Method::Invite | Method::Subscribe | Method::Refer)
        );
        let in_dialog = msg.to().ok().and_then(|to| to.tag()).is_some();
        if self.config.record_route && dialog_creating && !in_dialog {
            let transport = match hop.transport {
                Transport::Udp => "",
                Transport::Tcp => ";transport=tcp",
                Transport::Tls => ";transport=tls",
                Transport::Ws => ";transport=ws",
                Transport::Wss => ";transport=wss",
            };
            let mut rr = Vec::with_capacity(48);
            rr.extend_from_slice(b"<sip:");
            build::put_socket_addr(&mut rr, hop.local);
            rr.extend_from_slice(b";lr");
            rr.extend_from_slice(transport.as_bytes());
            rr.push(b'>');
            f.add_record_route(&rr);
        }
    }

    /// Stateless proxying (§16.11): the request goes to the first target
    /// with a branch computed from its own, so a retransmission, and the
    /// CANCEL or non-2xx ACK of an INVITE, leave with the branch the INVITE
    /// left with. Nothing is remembered.
    pub(crate) fn proxy_stateless(
        &mut self,
        now: Millis,
        now_unix_ms: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        local_domain: bool,
    ) {
        if let Some((name, _)) = self.next_hop_name(msg) {
            match self.dns.lookup(now, &name) {
                Lookup::Ready(_) => {}
                // Nothing is remembered: the request's retransmission
                // finds the name resolved.
                Lookup::Waiting => {
                    self.txl.servers.remove(&key);
                    return;
                }
                Lookup::Failed(f) => {
                    self.respond_unresolved(now, &key, msg, &f);
                    return;
                }
            }
        }
        let target = self
            .targets(msg, inb, local_domain, (now, now_unix_ms))
            .into_iter()
            .next()
            .and_then(|g| g.into_iter().next());
        let Some(t) = target else {
            self.txl.respond(now, &key, msg, 404, "Not Found", &[]);
            return;
        };
        // Only a locally answered request needs its server transaction.
        self.txl.servers.remove(&key);
        let Some(mut f) = forward_to(msg, &t) else {
            return;
        };
        let branch = build::branch(&[
            msg.top_via()
                .ok()
                .and_then(|v| v.branch())
                .unwrap_or_default(),
            b"stateless",
        ]);
        self.stamp(&mut f, msg, t.hop, &branch);
        let mut out = Vec::with_capacity(msg.len() + 200);
        f.write_to(&mut out);
        self.counters.forwarded += 1;
        self.txl.emit(t.hop, out);
    }
}

impl StatefulProxy {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn proxy_request(
        &mut self,
        el: &mut Element,
        now: Millis,
        now_unix_ms: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        local_domain: bool,
    ) {
        let at = (now, now_unix_ms);
        self.route_request(el, at, key, msg, inb, (local_domain, false));
    }

    /// Forwards a request to its targets, or puts it to wait for its next
    /// hop's name; `trying_sent`: its 100 Trying already went.
    fn route_request(
        &mut self,
        el: &mut Element,
        (now, now_unix_ms): (Millis, u64),
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        (local_domain, trying_sent): (bool, bool),
    ) {
        let invite = msg.method() == Some(Method::Invite);
        if let Some((name, _)) = el.next_hop_name(msg) {
            match el.dns.lookup(now, &name) {
                Lookup::Ready(_) => {}
                Lookup::Waiting => {
                    // Waits in its transaction for the name (§16.2: the
                    // 100 Trying goes now).
                    if invite && !trying_sent {
                        el.txl
                            .server_respond(now, &key, 100, response_bytes_100(msg));
                    }
                    self.waiting.push(Waiting {
                        key,
                        bytes: msg.as_bytes().to_vec(),
                        transport: inb.transport,
                        local: inb.local,
                        remote: inb.remote,
                        conn: inb.conn,
                        local_domain,
                    });
                    return;
                }
                Lookup::Failed(f) => {
                    el.respond_unresolved(now, &key, msg, &f);
                    return;
                }
            }
        }
        let mut groups: VecDeque<Vec<Target>> = el
            .targets(msg, inb, local_domain, (now, now_unix_ms))
            .into();
        let Some(first) = groups.pop_front() else {
            el.txl.respond(now, &key, msg, 404, "Not Found", &[]);
            return;
        };
        let dns_failover = first.iter().any(|t| t.from_dns);
        if invite && !trying_sent {
            // §16.2: a stateful proxy sends 100 Trying for an INVITE at once.
            let trying = response_bytes_100(msg);
            el.txl.server_respond(now, &key, 100, trying);
        }
        let id = self.next_proxy;
        self.next_proxy += 1;
        if let Some(e) = el.txl.servers.get_mut(&key) {
            e.proxy = Some(id);
        }
        self.proxies.insert(
            id,
            Context {
                server: key,
                invite,
                original: msg.as_bytes().into(),
                later: groups,
                branches: Vec::new(),
                best: None,
                final_sent: false,
                cancelled: false,
                dns_failover,
            },
        );
        self.start_group(el, now, id, first, Some(msg));
    }

    /// Starts a branch per target. `parsed` is the request as parsed on
    /// arrival when there is one (the first group); later groups parse the
    /// context's copy again.
    fn start_group(
        &mut self,
        el: &mut Element,
        now: Millis,
        id: u64,
        group: Vec<Target>,
        parsed: Option<&SipMessage<'_>>,
    ) {
        for t in group {
            self.start_branch(el, now, id, t, parsed);
        }
    }

    fn start_branch(
        &mut self,
        el: &mut Element,
        now: Millis,
        id: u64,
        t: Target,
        parsed: Option<&SipMessage<'_>>,
    ) {
        let Some(ctx) = self.proxies.get(&id) else {
            return;
        };
        let invite = ctx.invite;
        let index = ctx.branches.len();
        let original = std::sync::Arc::clone(&ctx.original);
        match parsed {
            Some(msg) => self.send_branch(el, now, id, t, invite, index, msg),
            None => {
                let Ok(msg) = SipMessage::parse(&original, Framing::Datagram, &Limits::default())
                else {
                    return;
                };
                self.send_branch(el, now, id, t, invite, index, &msg);
            }
        }
    }

    /// Sends branch `index` of context `id` to `t`: `msg` is the request.
    #[allow(clippy::too_many_arguments)]
    fn send_branch(
        &mut self,
        el: &mut Element,
        now: Millis,
        id: u64,
        t: Target,
        invite: bool,
        index: usize,
        msg: &SipMessage<'_>,
    ) {
        let server_branch = msg
            .top_via()
            .ok()
            .and_then(|v| v.branch())
            .unwrap_or_default();
        let Some(mut f) = forward_to(msg, &t) else {
            return;
        };
        let branch = build::branch(&[
            server_branch,
            msg.call_id().unwrap_or_default(),
            &(index as u64).to_be_bytes(),
        ]);
        el.stamp(&mut f, msg, t.hop, &branch);
        let mut out = Vec::with_capacity(msg.len() + 200);
        f.write_to(&mut out);
        let method = msg.method().map(|m| m.as_bytes()).unwrap_or_default();
        let client = el.txl.keys.client(branch.as_bytes(), method);
        if let Some(ctx) = self.proxies.get_mut(&id) {
            ctx.branches.push(Branch {
                client,
                branch_id: branch,
                hop: t.hop,
                state: BranchState::Pending,
                cancel_pending: false,
                timer_c: now + el.config.timer_c_ms,
                from_dns: t.from_dns,
            });
        }
        el.counters.forwarded += 1;
        if invite {
            el.txl.schedule(
                Some(now + el.config.timer_c_ms),
                TimerRef::TimerC(id, index),
            );
        }
        el.txl.start_client(
            now,
            client,
            out,
            invite,
            t.hop,
            Some(Owner::Branch(id, index)),
        );
    }

    fn send_cancel(&mut self, el: &mut Element, now: Millis, id: u64, b: usize) {
        let Some(branch) = self.proxies.get(&id).and_then(|c| c.branches.get(b)) else {
            return;
        };
        let hop = branch.hop;
        // The INVITE as sent is in its client transaction, which is still
        // proceeding: a CANCEL is only sent for a branch that is not done.
        let Some(request) = el.txl.clients.get(&branch.client).map(|e| e.txn.request()) else {
            return;
        };
        let Ok(invite) = SipMessage::parse(request, Framing::Datagram, &Limits::default()) else {
            return;
        };
        let Some(cancel) = build::cancel_for(&invite) else {
            return;
        };
        let key = el.txl.keys.client(branch.branch_id.as_bytes(), b"CANCEL");
        if el.txl.clients.contains_key(&key) {
            return;
        }
        el.txl.start_client(now, key, cancel, false, hop, None);
    }

    fn cancel_pending_branches(
        &mut self,
        el: &mut Element,
        now: Millis,
        id: u64,
        except: Option<usize>,
    ) {
        let Some(ctx) = self.proxies.get_mut(&id) else {
            return;
        };
        let mut to_cancel = Vec::new();
        for (i, br) in ctx.branches.iter_mut().enumerate() {
            if Some(i) == except {
                continue;
            }
            match br.state {
                BranchState::Provisional => to_cancel.push(i),
                // §9.1: no CANCEL before a provisional response; send it then.
                BranchState::Pending => br.cancel_pending = true,
                BranchState::Done(_) => {}
            }
        }
        ctx.later.clear();
        for i in to_cancel {
            self.send_cancel(el, now, id, i);
        }
    }

    pub(crate) fn on_cancel(
        &mut self,
        el: &mut Element,
        now: Millis,
        key: &ServerKey,
        msg: &SipMessage<'_>,
    ) {
        let Some(invite_key) = el.txl.server_key(msg, Some(b"INVITE")) else {
            return;
        };
        let Some(proxy) = el.txl.servers.get(&invite_key).map(|e| e.proxy) else {
            // §9.2: no matching INVITE transaction.
            el.txl
                .respond(now, key, msg, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        };
        el.txl.respond(now, key, msg, 200, "OK", &[]);
        if let Some(id) = proxy {
            if let Some(ctx) = self.proxies.get_mut(&id) {
                ctx.cancelled = true;
            }
            self.cancel_pending_branches(el, now, id, None);
        }
    }

    pub(crate) fn proxy_response(
        &mut self,
        el: &mut Element,
        now: Millis,
        id: u64,
        b: usize,
        code: u16,
        msg: &SipMessage<'_>,
    ) {
        let Some(ctx) = self.proxies.get_mut(&id) else {
            return;
        };
        let Some(branch) = ctx.branches.get_mut(b) else {
            return;
        };
        // §16.7 step 3: remove our Via before forwarding; a response with no
        // Via left was meant for this element and goes nowhere.
        let mut f = Forward::new(msg);
        match f.pop_via() {
            Ok(true) => {}
            Ok(false) => {
                el.counters.unroutable_responses += 1;
                return;
            }
            Err(_) => return,
        }
        let mut upstream = Vec::with_capacity(msg.len());
        f.write_to(&mut upstream);
        let server = ctx.server;
        if code < 200 {
            let was_pending = branch.state == BranchState::Pending;
            if branch.state == BranchState::Pending {
                branch.state = BranchState::Provisional;
            }
            let cancel_now = was_pending && branch.cancel_pending;
            if ctx.invite {
                // §16.7: Timer C restarts on a provisional response.
                branch.timer_c = now + el.config.timer_c_ms;
            }
            if cancel_now {
                self.send_cancel(el, now, id, b);
            }
            // §16.7 step 4: 100 is not forwarded.
            if code > 100 {
                el.txl.server_respond(now, &server, code, upstream);
            }
            return;
        }
        if (200..300).contains(&code) {
            if !matches!(branch.state, BranchState::Done(_)) {
                branch.state = BranchState::Done(code);
            }
            let invite = ctx.invite;
            let first = !ctx.final_sent;
            ctx.final_sent = true;
            // §16.7 step 5: every 2xx to an INVITE is forwarded; other
            // methods forward the first final response only.
            if invite || first {
                el.txl.server_respond(now, &server, code, upstream);
            }
            if invite && first {
                self.cancel_pending_branches(el, now, id, Some(b));
            }
            return;
        }
        if matches!(branch.state, BranchState::Done(_)) {
            return;
        }
        branch.state = BranchState::Done(code);
        if branch.from_dns {
            if code == 503 {
                el.dns.avoid(branch.hop.dest, now);
            } else {
                el.dns.answered(branch.hop.dest);
            }
        }
        if better(code, ctx.best.as_ref().map(|x| x.0)) {
            ctx.best = Some((code, upstream));
        }
        if code >= 600 {
            self.cancel_pending_branches(el, now, id, Some(b));
        }
        self.maybe_complete(el, now, id);
    }

    /// A branch ended without a response (timeout, transport error).
    pub(crate) fn proxy_branch_failed(
        &mut self,
        el: &mut Element,
        now: Millis,
        id: u64,
        b: usize,
        code: u16,
    ) {
        let Some(ctx) = self.proxies.get_mut(&id) else {
            return;
        };
        let Some(branch) = ctx.branches.get_mut(b) else {
            return;
        };
        if matches!(branch.state, BranchState::Done(_)) {
            return;
        }
        branch.state = BranchState::Done(code);
        if branch.from_dns {
            el.dns.avoid(branch.hop.dest, now);
        }
        if better(code, ctx.best.as_ref().map(|x| x.0)) {
            // A locally made response, as the branch's peer never answered.
            if let Ok(orig) =
                SipMessage::parse(&ctx.original, Framing::Datagram, &Limits::default())
            {
                ctx.best = Some((
                    code,
                    TransactionLayer::response_bytes(&orig, &ctx.server.seed(), code),
                ));
            }
        }
        self.maybe_complete(el, now, id);
    }

    /// When every branch is done: try the next target group, or send the
    /// best response upstream (§16.7 step 6).
    fn maybe_complete(&mut self, el: &mut Element, now: Millis, id: u64) {
        let Some(ctx) = self.proxies.get_mut(&id) else {
            return;
        };
        if ctx
            .branches
            .iter()
            .any(|b| !matches!(b.state, BranchState::Done(_)))
            || ctx.final_sent
        {
            return;
        }
        let best_code = ctx.best.as_ref().map(|b| b.0);
        // The next server of a name only when this one was not reached.
        let unreached = best_code.is_none_or(|c| matches!(c, 408 | 503));
        if !ctx.cancelled
            && best_code.is_none_or(|c| c < 600)
            && (!ctx.dns_failover || unreached)
            && let Some(next) = ctx.later.pop_front()
        {
            self.start_group(el, now, id, next, None);
            return;
        }
        ctx.final_sent = true;
        let server = ctx.server;
        let original = std::sync::Arc::clone(&ctx.original);
        let (code, bytes) = match ctx.best.take() {
            // §16.7 step 6: a 503 is not passed on; 500 says the proxy failed.
            Some((503, _)) | None => {
                let code = if ctx.cancelled { 487 } else { 500 };
                match SipMessage::parse(&original, Framing::Datagram, &Limits::default()) {
                    Ok(orig) => (
                        code,
                        TransactionLayer::response_bytes(&orig, &server.seed(), code),
                    ),
                    Err(_) => return,
                }
            }
            Some(b) => b,
        };
        el.txl.server_respond(now, &server, code, bytes);
    }

    pub(crate) fn on_timer_c(&mut self, el: &mut Element, now: Millis, id: u64, b: usize) {
        let Some(branch) = self.proxies.get(&id).and_then(|c| c.branches.get(b)) else {
            return;
        };
        let client = branch.client;
        let state = branch.state;
        if branch.timer_c > now {
            // Restarted by a provisional since this timer was set.
            el.txl
                .schedule(Some(branch.timer_c), TimerRef::TimerC(id, b));
            return;
        }
        let alive = el.txl.clients.get(&client).is_some_and(|c| {
            matches!(
                c.txn.state(),
                ClientState::Calling | ClientState::Proceeding
            )
        });
        if !alive {
            return;
        }
        match state {
            // §16.8: with a provisional, CANCEL the branch (its 487 completes it).
            BranchState::Provisional => self.send_cancel(el, now, id, b),
            BranchState::Pending => self.proxy_branch_failed(el, now, id, b, 408),
            BranchState::Done(_) => {}
        }
    }

    pub(crate) fn maybe_drop_proxy(&mut self, id: u64) {
        self.proxies.remove(&id);
    }

    /// Drops the context of a request whose final response went upstream
    /// and whose branches are all done: nothing of it is needed any more.
    /// (The transactions linger on their own timers.)
    pub(crate) fn settle(&mut self, id: u64) {
        if self.proxies.get(&id).is_some_and(|ctx| {
            ctx.final_sent
                && ctx
                    .branches
                    .iter()
                    .all(|b| matches!(b.state, BranchState::Done(_)))
        }) {
            self.proxies.remove(&id);
        }
    }
}

/// `msg` as it leaves for target `t` (§16.6 steps 2–3, 6): its first Route
/// popped when `t` says so, its Request-URI set, `t`'s Path in front as
/// Route, Max-Forwards one less; `None` when it cannot go.
fn forward_to<'m, 'a>(msg: &'m SipMessage<'a>, t: &Target) -> Option<Forward<'m, 'a>> {
    let mut f = Forward::new(msg);
    if t.pop_route {
        let _ = f.pop_route();
    }
    if let Some(uri) = &t.uri {
        f.set_request_uri(uri.as_bytes()).ok()?;
    }
    for p in t.path.iter().rev() {
        f.add_route(format!("<{p}>").as_bytes());
    }
    f.decrement_max_forwards().ok()?;
    Some(f)
}

fn response_bytes_100(msg: &SipMessage<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(400);
    write_response(msg, 100, b"Trying", None, &[], &mut out);
    out
}

/// What [`Element::relay_check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayCheck {
    /// Forward it.
    Allowed,
    /// Ask for proxy credentials (407).
    Challenge,
    /// Refuse it (403; an ACK is dropped).
    Denied,
}
