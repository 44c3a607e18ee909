//! The SIP element, sans-IO: each message parsed and checked, run through
//! the transaction layer (RFC 3261 §17: retransmissions absorbed, responses
//! and timers matched to their transactions), admitted (bans, limits,
//! overload), REGISTER to a served domain given to the registrar (§10), and
//! the rest handed to the transaction user chosen at start
//! (`TransactionUser`: the stateful or stateless proxy in
//! [`crate::proxy`], the B2BUA in [`crate::b2bua`]).
//!
//! Driving contract: see [`SipCore`]. Nothing here reads a clock or
//! touches a socket.

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

use rvoip_dataplane::entropy::Entropy;
use rvoip_dataplane::log_budget::LogBudget;
use rvoip_dataplane::sip::{
    Forward, Framing, HeaderName, Host, Limits, Method, SipMessage, check, write_response,
    write_warning,
};

use crate::admission::{self, Role, Supported};
use crate::registrar::digest::{
    Algorithm, AuthFailure, Authenticated, Authenticator, parse_credentials,
};
use crate::registrar::guard::{AuthGuard, GuardConfig, SharedGuard, Verdict};
use crate::registrar::{RegisterOutcome, Registrar, Users};
pub use crate::transaction::layer::Outbound;
pub(crate) use crate::transaction::layer::{
    ClientKey, Hop, LayerEvent, Owner, ServerKey, TimerRef, TransactionLayer,
};
use crate::transaction::layer::{Matched, Received};
use crate::transaction::{Millis, Timers};

use crate::b2bua::B2b;
use crate::build;
pub use crate::proxy::Route;
use crate::sbc::cdr::Cdr;

/// A SIP transport: rvoip's one transport type.
pub use rvoip_dataplane::sip::Transport;

/// A message received by the dataplane.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The message.
    pub bytes: &'a [u8],
    /// Transport it came on.
    pub transport: Transport,
    /// The listener address it arrived at.
    pub local: SocketAddr,
    /// The sender.
    pub remote: SocketAddr,
    /// Stream connection id (TCP), 0 for UDP.
    pub conn: u32,
}

/// Admission by measured load ([`SipCore::set_load`]): while a limit is
/// passed, new calls (out-of-dialog INVITEs) get 503 with Retry-After so
/// the calls already up keep their media. A limit of 0 is off. Once
/// shedding, calls are taken again only below 95 % of every limit, so
/// admission does not flap at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadConfig {
    /// Admission by load at all.
    pub enabled: bool,
    /// Busiest media worker's demand for a core (ran or waited to run),
    /// permille.
    pub media_busy_permille: u32,
    /// Packets relayed per second.
    pub media_packets_per_sec: u64,
    /// SIP messages waiting for the control plane.
    pub sip_backlog: u32,
    /// Retry-After of the refusals, seconds.
    pub retry_after_secs: u32,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            enabled: true,
            media_busy_permille: 950,
            media_packets_per_sec: 0,
            sip_backlog: 2000,
            retry_after_secs: 5,
        }
    }
}

/// The load the process measured, for admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// The media engine's last published load (`None`: unknown or stale).
    pub media: Option<rvoip_dataplane::shm::load::MediaLoad>,
    /// SIP messages waiting in the rings from the dataplane.
    pub sip_backlog: u32,
}

/// Which requests are challenged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPolicy {
    /// No authentication.
    Off,
    /// REGISTER is challenged (401).
    Register,
    /// REGISTER (401) and INVITE (407) are challenged.
    RegisterAndInvite,
}

/// The core's configuration.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Domains this element is responsible for (registrar, local requests).
    pub domains: Vec<String>,
    /// Listener addresses (what "this element" is in Route and Request-URI).
    pub listeners: Vec<(Transport, SocketAddr)>,
    /// Static routes for requests not served locally, first match wins.
    pub routes: Vec<Route>,
    /// Sources whose requests may go to any target (no relay check).
    pub trusted_sources: Vec<crate::sbc::policy::Net>,
    /// Add Record-Route to dialog-creating requests.
    pub record_route: bool,
    /// Transaction-stateful proxying (false: stateless, §16.11).
    pub stateful: bool,
    /// Authentication policy.
    pub auth: AuthPolicy,
    /// Nonce lifetime.
    pub nonce_lifetime_ms: Millis,
    /// Digest algorithms challenged with, in order.
    pub digest_algorithms: Vec<Algorithm>,
    /// When failed digest attempts ban their source.
    pub auth_guard: GuardConfig,
    /// Admission by measured load.
    pub overload: OverloadConfig,
    /// Transaction timers.
    pub timers: Timers,
    /// Timer C (RFC 3261 §16.6 step 11), > 3 minutes.
    pub timer_c_ms: Millis,
    /// Parser limits.
    pub limits: Limits,
    /// Messages arrive already checked (the dataplane's edge runs the full
    /// header check before it delivers), so the core does not check again.
    pub edge_checked: bool,
    /// Name resolution (`[dns]`).
    pub dns: rvoip_tuning::dns::DnsConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            domains: Vec::new(),
            listeners: Vec::new(),
            routes: Vec::new(),
            trusted_sources: Vec::new(),
            record_route: true,
            stateful: true,
            auth: AuthPolicy::Off,
            nonce_lifetime_ms: 300_000,
            digest_algorithms: vec![Algorithm::Md5],
            auth_guard: GuardConfig::default(),
            overload: OverloadConfig::default(),
            timers: Timers::default(),
            timer_c_ms: 181_000,
            limits: Limits::default(),
            edge_checked: false,
            dns: rvoip_tuning::dns::DnsConfig::default(),
        }
    }
}

impl CoreConfig {
    /// A proxy for `domains` listening on `listener` (UDP) that routes every
    /// request it does not answer itself to `target` (UDP); the rest default.
    pub fn routing_all_to(domains: &[&str], listener: SocketAddr, target: SocketAddr) -> Self {
        CoreConfig {
            domains: domains.iter().map(|d| (*d).to_string()).collect(),
            listeners: vec![(Transport::Udp, listener)],
            routes: vec![Route {
                user_prefix: None,
                domain: None,
                target: crate::proxy::NextHop::Address(target),
                transport: Transport::Udp,
            }],
            ..CoreConfig::default()
        }
    }
}

/// Counters of the core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Requests received (retransmissions included).
    pub requests: u64,
    /// Responses received.
    pub responses: u64,
    /// Retransmissions absorbed by a transaction.
    pub retransmissions: u64,
    /// Requests forwarded.
    pub forwarded: u64,
    /// Requests answered 503 because their next hop's name gave no server.
    pub unresolved: u64,
    /// Peers the dataplane reported unreachable (transport errors).
    pub unreachable: u64,
    /// Responses generated here.
    pub generated: u64,
    /// Messages that could not be parsed (dropped).
    pub malformed: u64,
    /// Registrations accepted.
    pub registrations: u64,
    /// Challenges sent.
    pub challenges: u64,
    /// Failed digest attempts (wrong answers, unknown users).
    pub auth_failures: u64,
    /// Sources banned for failed digest attempts.
    pub auth_bans: u64,
    /// Requests refused (403) because their source is banned for failed
    /// digest attempts.
    pub auth_refused: u64,
    /// New calls refused (503) because the appliance was overloaded.
    pub overload_refused: u64,
    /// New calls and OPTIONS refused (503) while draining.
    pub drain_refused: u64,
    /// Requests refused (403) or ACKs dropped because they would have been
    /// relayed to a target this proxy does not serve for that source.
    pub relay_denied: u64,
    /// Responses not forwarded: no Via left for the next hop once ours is
    /// removed (§16.7 step 3), or a top Via that is not ours.
    pub unroutable_responses: u64,
}

impl CoreCounters {
    /// Adds another control-plane shard's counters; the password-guessing
    /// guard's (auth failures, bans, refusals) are shared, counted once.
    pub fn add_shard(&mut self, other: &CoreCounters) {
        let CoreCounters {
            requests,
            responses,
            retransmissions,
            forwarded,
            unresolved,
            unreachable,
            generated,
            malformed,
            registrations,
            challenges,
            auth_failures: _,
            auth_bans: _,
            auth_refused: _,
            overload_refused,
            drain_refused,
            relay_denied,
            unroutable_responses,
        } = *other;
        self.requests += requests;
        self.responses += responses;
        self.retransmissions += retransmissions;
        self.forwarded += forwarded;
        self.unresolved += unresolved;
        self.unreachable += unreachable;
        self.generated += generated;
        self.malformed += malformed;
        self.registrations += registrations;
        self.challenges += challenges;
        self.overload_refused += overload_refused;
        self.drain_refused += drain_refused;
        self.relay_denied += relay_denied;
        self.unroutable_responses += unroutable_responses;
    }
}

/// The SIP core.
pub(crate) struct Element {
    pub(crate) config: CoreConfig,
    pub(crate) supported: Supported,
    pub(crate) registrar: Registrar,
    pub(crate) users: Users,
    pub(crate) auth: Authenticator,
    pub(crate) guard: SharedGuard,
    pub(crate) refusal_log: LogBudget,
    /// The load last measured, and whether new calls are being shed.
    pub(crate) load: Load,
    pub(crate) shedding: bool,
    /// Draining (`rvoip ctl drain`): no new calls.
    pub(crate) draining: bool,
    pub(crate) overload_log: LogBudget,
    /// The transaction layer.
    pub(crate) txl: TransactionLayer,
    /// Registrar responses held until the location service commits.
    pub(crate) held: Vec<(ServerKey, u16, Vec<u8>)>,
    pub(crate) counters: CoreCounters,
    /// Unix time minus core time, in milliseconds, as last seen.
    pub(crate) unix_base: u64,
    /// A Via value and a request rewritten with it ([`Element::fix_via`]),
    /// kept for the next request.
    pub(crate) fix_buffers: (Vec<u8>, Vec<u8>),
    /// Names being resolved and resolved (RFC 3263).
    pub(crate) dns: crate::dns::Dns,
}

impl std::fmt::Debug for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element")
            .field("servers", &self.txl.servers.len())
            .field("clients", &self.txl.clients.len())
            .finish()
    }
}

/// The transaction user (RFC 3261 §5): what the element is, chosen when
/// it is made ([`SipCore::new`] takes a stateful or a stateless proxy from
/// the configuration; [`SipCore::set_b2bua`] puts the B2BUA in its place
/// before any traffic). Local user agents (a conference bridge, an IVR)
/// are transaction users too.
///
/// Driving contract: the element parses and checks each message, runs it
/// through the transaction layer (retransmissions are absorbed there), the
/// admission checks and the registrar, and hands the user what is left:
/// new requests with their server transaction open, ACKs to 2xx responses,
/// responses to the client transactions it started, responses no
/// transaction knows, its own timers, and the layer's events (timeouts,
/// ended server transactions). The user answers and sends through the
/// [`Element`] it is handed; it never holds one.
pub(crate) trait TransactionUser: Send {
    /// Which element's answers admission gives for it (RFC 3261 §8.2 for
    /// a user agent's requests, §16.3 for a proxy's).
    fn role(&self) -> Role {
        Role::Proxy
    }

    /// Admission of the user's own before anything else (the SBC's realm
    /// access lists and flood bans). `false`: the request was answered or
    /// dropped and its server transaction is gone.
    fn admit(
        &mut self,
        el: &mut Element,
        now: Millis,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) -> bool {
        let _ = (el, now, key, msg, inb);
        true
    }

    /// A new request, its server transaction `key` open; `local_domain`:
    /// its Request-URI names this element.
    #[allow(clippy::too_many_arguments)]
    fn on_request(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        local_domain: bool,
    );

    /// An ACK no server transaction absorbed: the ACK to a 2xx. A proxy
    /// forwards it statelessly, unless the relay check denies it.
    fn on_ack(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) {
        let _ = unix_ms;
        el.forward_ack(now, msg, inb);
    }

    /// A response to a client transaction the user started for `owner`
    /// (retransmissions absorbed).
    fn on_response(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        owner: Owner,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    );

    /// A response that matches no client transaction.
    fn on_stray_response(
        &mut self,
        el: &mut Element,
        now: Millis,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) {
        let _ = now;
        el.forward_response_stateless(msg, inb);
    }

    /// An event of the transaction layer.
    fn on_event(&mut self, el: &mut Element, now: Millis, unix_ms: u64, event: LayerEvent);

    /// A timer the user set ([`TimerRef::TimerC`], [`TimerRef::Call`],
    /// [`TimerRef::Health`]) is due.
    fn on_timer(&mut self, el: &mut Element, now: Millis, unix_ms: u64, timer: TimerRef);

    /// Called before each round of timers.
    fn on_tick(&mut self, el: &mut Element, now: Millis) {
        let _ = (el, now);
    }

    /// Media replies that arrived (B2BUA).
    fn poll_media(&mut self, el: &mut Element, now: Millis, unix_ms: u64) {
        let _ = (el, now, unix_ms);
    }

    /// Media orders in flight.
    fn media_pending(&self) -> bool {
        false
    }

    /// The next finished call's record.
    fn poll_cdr(&mut self) -> Option<Cdr> {
        None
    }

    /// The B2BUA, when that is the user.
    fn as_b2bua(&self) -> Option<&B2b> {
        None
    }

    /// The B2BUA, when that is the user, to change.
    fn as_b2bua_mut(&mut self) -> Option<&mut B2b> {
        None
    }

    /// A name resolution finished ([`Element::dns`] has it): requests
    /// waiting for a name go on.
    fn on_resolved(&mut self, el: &mut Element, now: Millis, unix_ms: u64) {
        let _ = (el, now, unix_ms);
    }
}

/// The SIP element: the `Element` (transactions, admission, registrar)
/// and the transaction user above it.
///
/// Driving contract: feed every received message to [`SipCore::on_message`]
/// with the time; call [`SipCore::on_timer`] when [`SipCore::next_deadline`]
/// passes and [`SipCore::poll_media`] with every batch; after each batch
/// call [`SipCore::flush`] (it makes registrations durable and releases
/// their responses) and send everything [`SipCore::poll_outbound`] returns.
/// The core never reads a clock or touches a socket.
pub struct SipCore {
    el: Element,
    tu: Box<dyn TransactionUser>,
}

impl std::fmt::Debug for SipCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.el.fmt(f)
    }
}

impl SipCore {
    /// A proxy (stateful or stateless as `config` says) with its registrar
    /// and users; `secret` keys its nonces and transaction keys and
    /// `entropy` gives them this run's epoch.
    pub fn new(
        config: CoreConfig,
        registrar: Registrar,
        users: Users,
        secret: &[u8],
        entropy: &dyn Entropy,
    ) -> Self {
        let tu: Box<dyn TransactionUser> = if config.stateful {
            Box::new(crate::proxy::StatefulProxy::default())
        } else {
            Box::new(crate::proxy::StatelessProxy)
        };
        SipCore {
            el: Element::new(config, registrar, users, secret, entropy),
            tu,
        }
    }

    /// Makes the element the B2BUA (before any traffic).
    pub fn set_b2bua(&mut self, b2b: B2b) {
        self.tu = Box::new(b2b);
    }

    /// The B2BUA, in B2BUA mode.
    pub fn b2bua(&self) -> Option<&B2b> {
        self.tu.as_b2bua()
    }

    /// Starts ctl request `request` for the live calls (those with Call-ID
    /// `only`, when given); false outside B2BUA mode. The answer comes from
    /// [`SipCore::poll_inspection`].
    pub fn inspect(&mut self, now: Millis, unix_ms: u64, request: u64, only: Option<&str>) -> bool {
        let Some(b) = self.tu.as_b2bua_mut() else {
            return false;
        };
        b.inspect(&mut self.el, now, unix_ms, request, only);
        true
    }

    /// A ctl request for the calls, answered.
    pub fn poll_inspection(&mut self) -> Option<(u64, Vec<crate::b2bua::ctl::CallView>)> {
        self.tu.as_b2bua_mut()?.poll_inspection()
    }

    /// Starts (`on`) or ends the relay's capture of the call with a leg of
    /// Call-ID `call_id` into `file` (ctl `capture`); its legs' Call-IDs.
    /// The relay's answer comes out of [`SipCore::poll_capture`].
    pub fn capture(
        &mut self,
        now: Millis,
        unix_ms: u64,
        request: u64,
        call_id: &str,
        file: std::path::PathBuf,
        on: bool,
    ) -> Result<Vec<String>, String> {
        let Some(b) = self.tu.as_b2bua_mut() else {
            return Err("only the B2BUA holds calls: this node is a proxy".into());
        };
        let r = b.capture(&mut self.el, (now, unix_ms), request, call_id, file, on);
        self.el.deliver_events(&mut *self.tu, now);
        r
    }

    /// A capture the relay answered.
    pub fn poll_capture(&mut self) -> Option<(u64, Result<(), String>)> {
        self.tu.as_b2bua_mut()?.poll_capture()
    }

    /// Hangs up the call with a leg of Call-ID `call_id` (ctl `hangup`).
    pub fn hang_up(&mut self, now: Millis, unix_ms: u64, call_id: &str) -> Result<(), String> {
        let Some(b) = self.tu.as_b2bua_mut() else {
            return Err("only the B2BUA holds calls: this node is a proxy".into());
        };
        let r = b.hang_up(&mut self.el, now, unix_ms, call_id);
        self.el.deliver_events(&mut *self.tu, now);
        r
    }

    /// Applies what a reload may change: the users, the static routes, the
    /// overload limits, and (B2BUA) the SBC policy. The policy is checked
    /// first: when it is refused nothing changes.
    pub fn reload(
        &mut self,
        users: Users,
        routes: Vec<Route>,
        overload: OverloadConfig,
        policy: Option<crate::sbc::policy::Policy>,
    ) -> Result<(), String> {
        if let Some(p) = policy {
            let Some(b) = self.tu.as_b2bua_mut() else {
                return Err("an SBC policy for a node that is not a B2BUA".into());
            };
            b.reload_policy(p)?;
        }
        self.el.users = users;
        self.el.config.routes = routes;
        self.el.config.overload = overload;
        Ok(())
    }

    /// Hangs up every call that is up; returns how many.
    pub fn hang_up_all(&mut self, now: Millis, unix_ms: u64) -> usize {
        let Some(b) = self.tu.as_b2bua_mut() else {
            return 0;
        };
        let n = b.hang_up_all(&mut self.el, now, unix_ms);
        self.el.deliver_events(&mut *self.tu, now);
        n
    }

    /// Stops (or resumes) taking new calls: a new INVITE or OPTIONS gets
    /// 503 with Retry-After while draining, so peers send elsewhere.
    pub fn set_draining(&mut self, draining: bool) {
        self.el.draining = draining;
    }

    /// Calls up or being set up (B2BUA), or transactions open (proxy): what
    /// a drain waits for.
    pub fn busy(&self) -> usize {
        match self.tu.as_b2bua() {
            Some(b) => b.calls(),
            None => {
                let (s, c) = self.el.transactions();
                s + c
            }
        }
    }

    /// Handles one received message.
    pub fn on_message(&mut self, now: Millis, now_unix_ms: u64, inb: Inbound<'_>) {
        self.el.on_message(&mut *self.tu, now, now_unix_ms, inb);
        self.el.deliver_events(&mut *self.tu, now);
    }

    /// Runs due timers.
    pub fn on_timer(&mut self, now: Millis) {
        self.tu.on_tick(&mut self.el, now);
        self.el.on_timer(&mut *self.tu, now);
    }

    /// Handles the media replies that arrived. Call with every batch.
    pub fn poll_media(&mut self, now: Millis, unix_ms: u64) {
        self.tu.poll_media(&mut self.el, now, unix_ms);
        self.el.deliver_events(&mut *self.tu, now);
    }

    /// Media orders in flight (their replies come through `poll_media`).
    pub fn media_pending(&self) -> bool {
        self.tu.media_pending()
    }

    /// The dataplane could not deliver to `dest` over `transport`: client
    /// transactions to it fail at once (RFC 3261 §17.1.4), as their
    /// transaction users see a peer that cannot be reached (the proxy a
    /// 503, §16.9; the B2BUA its next peer).
    pub fn on_unreachable(&mut self, now: Millis, transport: Transport, dest: SocketAddr) {
        self.el.counters.unreachable += 1;
        self.el.txl.unreachable(transport, dest);
        self.el.deliver_events(&mut *self.tu, now);
    }

    /// The next name to resolve (RFC 3263); its answer goes to
    /// [`SipCore::on_dns`].
    pub fn poll_dns(&mut self) -> Option<crate::dns::Query> {
        self.el.dns.poll_query()
    }

    /// A finished resolution: the requests waiting for it go on.
    pub fn on_dns(&mut self, now: Millis, unix_ms: u64, answer: crate::dns::Answer) {
        self.el.dns.answer(now, answer);
        self.tu.on_resolved(&mut self.el, now, unix_ms);
        self.el.deliver_events(&mut *self.tu, now);
    }

    /// Resolutions in flight.
    pub fn dns_pending(&self) -> bool {
        self.el.dns.pending()
    }

    /// Counters of name resolution.
    pub fn dns_counters(&self) -> crate::dns::DnsCounters {
        self.el.dns.counters
    }

    /// The next finished call's record.
    pub fn poll_cdr(&mut self) -> Option<Cdr> {
        self.tu.poll_cdr()
    }

    /// Makes registrations durable, then releases their responses.
    pub fn flush(&mut self, now: Millis) -> Result<(), crate::registrar::location::StoreError> {
        self.el.flush(now)
    }

    /// The next message to send.
    pub fn poll_outbound(&mut self) -> Option<Outbound> {
        self.el.txl.poll_outbound()
    }

    /// When `on_timer` must next run.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.el.txl.next_deadline()
    }

    /// Counters so far.
    pub fn counters(&self) -> CoreCounters {
        self.el.counters()
    }

    /// Open server and client transactions.
    pub fn transactions(&self) -> (usize, usize) {
        self.el.transactions()
    }

    /// The load last measured, for admission of new calls.
    pub fn set_load(&mut self, load: Load) {
        self.el.set_load(load);
    }

    /// Shares `other`'s password-guessing guard (another shard's).
    pub fn share_guard(&mut self, other: &SipCore) {
        self.el.guard = other.el.guard.clone();
    }

    /// The registrar.
    pub fn registrar(&self) -> &Registrar {
        self.el.registrar()
    }
}

/// Where responses to a request go (RFC 3261 §18.2.2, RFC 3581 §4): over
/// TCP the connection it came on; over UDP its source when `rport` was asked
/// for, else the `received` address and the sent-by port.
fn response_hop(msg: &SipMessage<'_>, inb: &Inbound<'_>) -> Hop {
    let conn = inb.transport.reliable().then_some(inb.conn);
    let dest = match msg.top_via() {
        Ok(v) if v.rport().is_none() && inb.transport == Transport::Udp => {
            SocketAddr::new(inb.remote.ip(), v.port.unwrap_or(5060))
        }
        _ => inb.remote,
    };
    Hop {
        transport: inb.transport,
        local: inb.local,
        dest,
        conn,
    }
}

/// The destination of the Via a response travels to next (§18.2.2).
pub(crate) fn via_destination(v: &rvoip_dataplane::sip::Via<'_>) -> Option<SocketAddr> {
    let ip: IpAddr = match v.received().and_then(|r| {
        std::str::from_utf8(r)
            .ok()?
            .trim_matches(['[', ']'])
            .parse()
            .ok()
    }) {
        Some(ip) => ip,
        None => v.host.ip()?,
    };
    let port = v
        .rport()
        .flatten()
        .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok())
        .or(v.port)
        .unwrap_or(5060);
    Some(SocketAddr::new(ip, port))
}

impl Element {
    /// A core with its registrar and users; `secret` keys its nonces and
    /// `entropy` gives them this run's epoch.
    pub(crate) fn new(
        config: CoreConfig,
        registrar: Registrar,
        users: Users,
        secret: &[u8],
        entropy: &dyn Entropy,
    ) -> Self {
        let realm = config
            .domains
            .first()
            .cloned()
            .unwrap_or_else(|| "rvoip".into());
        let auth = Authenticator::new(&realm, secret, config.nonce_lifetime_ms, entropy)
            .with_algorithms(&config.digest_algorithms);
        let guard = SharedGuard::new(AuthGuard::new(config.auth_guard));
        let mut dns = crate::dns::Dns::new(&config.dns);
        // The order among equal SRV records differs per node.
        dns.seed(secret.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        }));
        Element {
            dns,
            txl: TransactionLayer::new(secret, config.timers),
            config,
            supported: Supported::default(),
            registrar,
            users,
            auth,
            guard,
            refusal_log: LogBudget::default(),
            load: Load::default(),
            shedding: false,
            draining: false,
            // One line per ten seconds while shedding, with the count.
            overload_log: LogBudget::new(1, 10_000),
            held: Vec::new(),
            counters: CoreCounters::default(),
            unix_base: 0,
            fix_buffers: (Vec::new(), Vec::new()),
        }
    }

    /// Counters so far.
    pub(crate) fn counters(&self) -> CoreCounters {
        // The guard and the transaction layer keep their own; the rest are
        // the element's.
        let g = self.guard.lock().counters();
        let t = self.txl.counters;
        CoreCounters {
            auth_failures: g.failures,
            auth_bans: g.bans,
            auth_refused: g.refused,
            retransmissions: t.retransmissions,
            generated: self.counters.generated + t.generated,
            ..self.counters
        }
    }

    /// Live transactions (server, client).
    pub(crate) fn transactions(&self) -> (usize, usize) {
        self.txl.transactions()
    }

    /// The load measured now, for admission of new calls.
    pub(crate) fn set_load(&mut self, load: Load) {
        self.load = load;
    }

    /// Why new calls are refused now, if they are.
    pub(crate) fn overload_reason(&mut self) -> Option<String> {
        let o = self.config.overload;
        if !o.enabled {
            return None;
        }
        // Below 95 % of a limit a shedding core takes calls again.
        let passed = |value: u64, limit: u64, shedding: bool| {
            limit > 0 && value * 20 >= limit * if shedding { 19 } else { 20 }
        };
        let mut reason = None;
        if let Some(m) = self.load.media {
            if passed(
                u64::from(m.busy_permille),
                u64::from(o.media_busy_permille),
                self.shedding,
            ) {
                reason = Some(format!(
                    "overload: a media worker is {}% busy",
                    m.busy_permille / 10
                ));
            } else if passed(m.packets_per_sec, o.media_packets_per_sec, self.shedding) {
                reason = Some(format!(
                    "overload: media at {} packets/s",
                    m.packets_per_sec
                ));
            }
        }
        if reason.is_none()
            && passed(
                u64::from(self.load.sip_backlog),
                u64::from(o.sip_backlog),
                self.shedding,
            )
        {
            reason = Some(format!(
                "overload: {} SIP messages waiting",
                self.load.sip_backlog
            ));
        }
        self.shedding = reason.is_some();
        reason
    }

    /// Refuses a new call for overload: 503 with Retry-After (RFC 3261
    /// §21.5.4) and the reason; with RFC 7339 overload control for a peer
    /// that asked for it (`oc` in its Via), the loss percentage it should
    /// shed and for how long.
    pub(crate) fn refuse_for_overload(
        &mut self,
        now: Millis,
        key: &ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        reason: &str,
    ) {
        if let Some(suppressed) = self.overload_log.take(now) {
            tracing::warn!(
                reason,
                refused_since_last_line = suppressed + 1,
                source = %inb.remote,
                call_id = %String::from_utf8_lossy(msg.call_id().unwrap_or_default()),
                "refusing new calls"
            );
        }
        let retry = self.config.overload.retry_after_secs.to_string();
        let mut warning = Vec::with_capacity(reason.len() + 16);
        write_warning(399, b"rvoip", reason, &mut warning);
        let mut out = Vec::with_capacity(512);
        let tag = build::to_tag(&[&key.seed(), msg.call_id().unwrap_or_default()]);
        write_response(
            msg,
            503,
            b"Service Unavailable",
            Some(tag.as_bytes()),
            &[
                (HeaderName::RetryAfter, retry.as_bytes()),
                (HeaderName::Warning, &warning),
            ],
            &mut out,
        );
        // RFC 7339 §5.2: a server that supports overload control answers
        // a client that announced it (a bare `oc` in its Via) with the
        // reduction it wants, here shedding half of what it sends, valid
        // for the Retry-After period.
        let asked = msg
            .top_via()
            .ok()
            .is_some_and(|v| v.params.get("oc").is_some());
        if asked
            && let Ok(resp) = SipMessage::parse(&out, Framing::Datagram, &self.config.limits)
            && let Some(top) = resp.header(HeaderName::Via)
        {
            let first = top.split(|b| *b == b',').next().unwrap_or(top);
            let mut v: Vec<u8> = first
                .split(|b| *b == b';')
                .enumerate()
                .filter(|(i, p)| {
                    let p = p.trim_ascii();
                    *i == 0 || !(p.eq_ignore_ascii_case(b"oc") || p.starts_with(b"oc="))
                })
                .flat_map(|(i, p)| {
                    let mut part = if i == 0 { Vec::new() } else { b";".to_vec() };
                    part.extend_from_slice(p.trim_ascii());
                    part
                })
                .collect();
            v.extend_from_slice(
                format!(
                    ";oc=50;oc-algo=\"loss\";oc-validity={};oc-seq={}",
                    u64::from(self.config.overload.retry_after_secs) * 1000,
                    self.unix_base + now
                )
                .as_bytes(),
            );
            let mut f = Forward::new(&resp);
            if f.set_top_via(&v).is_ok() {
                let mut rewritten = Vec::with_capacity(out.len() + 64);
                f.write_to(&mut rewritten);
                out = rewritten;
            }
        }
        self.counters.generated += 1;
        self.txl.server_respond(now, key, 503, out);
    }

    /// The registrar.
    pub(crate) fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// Makes registrations durable, then releases their responses. (The
    /// B2BUA's journal needs no flush: a record is in the kernel's page
    /// cache as soon as it is written.)
    pub(crate) fn flush(
        &mut self,
        now: Millis,
    ) -> Result<(), crate::registrar::location::StoreError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let result = self.registrar.location.lock().commit();
        let held = std::mem::take(&mut self.held);
        for (key, code, bytes) in held {
            let (code, bytes) = match &result {
                Ok(()) => (code, bytes),
                // Not stored: the client must not believe it is registered.
                Err(_) => {
                    let Some(e) = self.txl.servers.get(&key) else {
                        continue;
                    };
                    let Ok(req) =
                        SipMessage::parse(&e.request, Framing::Datagram, &self.config.limits)
                    else {
                        continue;
                    };
                    let mut out = Vec::new();
                    write_response(
                        &req,
                        500,
                        b"Server Internal Error",
                        Some(b"st"),
                        &[],
                        &mut out,
                    );
                    (500, out)
                }
            };
            self.txl.server_respond(now, &key, code, bytes);
        }
        result
    }

    /// Handles one received message.
    pub(crate) fn on_message(
        &mut self,
        tu: &mut dyn TransactionUser,
        now: Millis,
        now_unix_ms: u64,
        inb: Inbound<'_>,
    ) {
        self.unix_base = now_unix_ms.saturating_sub(now);
        let Ok(msg) = SipMessage::parse(inb.bytes, Framing::Datagram, &self.config.limits) else {
            self.counters.malformed += 1;
            return;
        };
        if !self.config.edge_checked && check(&msg).is_err() {
            self.counters.malformed += 1;
            return;
        }
        if msg.is_request() {
            self.counters.requests += 1;
            self.on_request(tu, now, now_unix_ms, &msg, &inb);
        } else {
            self.counters.responses += 1;
            self.on_response(tu, now, &msg, &inb);
        }
    }

    /// Writes to `out` the request with RFC 3581 `received`/`rport` added
    /// to its top Via (the Via value written in `v`); `None` when there is
    /// nothing to add.
    pub(crate) fn fix_via(
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        v: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let via = msg.top_via().ok()?;
        let host_is_source = via.host.ip() == Some(inb.remote.ip());
        let wants_rport = via.rport().is_some();
        if host_is_source && !wants_rport {
            return None;
        }
        let raw = msg.header(HeaderName::Via)?;
        let (_, first_len) = {
            // The first value's extent: up to a top-level comma.
            let mut depth_quote = false;
            let pos = raw.iter().position(|b| {
                if *b == b'"' {
                    depth_quote = !depth_quote;
                }
                *b == b',' && !depth_quote
            });
            ((), pos.unwrap_or(raw.len()))
        };
        // The value rebuilt in one buffer: its parameters but `rport` and
        // `received`, then the ones this side adds.
        let first = raw[..first_len].trim_ascii();
        v.clear();
        for (i, p) in first.split(|b| *b == b';').enumerate() {
            let p = p.trim_ascii();
            let received = p
                .get(..9)
                .is_some_and(|n| n.eq_ignore_ascii_case(b"received="));
            if i > 0 && (p.eq_ignore_ascii_case(b"rport") || received) {
                continue;
            }
            if i > 0 {
                v.push(b';');
            }
            v.extend_from_slice(p);
        }
        if !host_is_source || wants_rport {
            v.extend_from_slice(b";received=");
            build::put_ip(v, inb.remote.ip());
        }
        if wants_rport {
            v.extend_from_slice(b";rport=");
            build::put_number(v, u64::from(inb.remote.port()));
        }
        let mut f = Forward::new(msg);
        f.set_top_via(v).ok()?;
        out.clear();
        f.write_to(out);
        Some(())
    }

    pub(crate) fn is_local_host(&self, host: &Host<'_>, port: Option<u16>) -> bool {
        match host {
            Host::Name(n) => self
                .config
                .domains
                .iter()
                .any(|d| d.as_bytes().eq_ignore_ascii_case(n)),
            _ => {
                let ip = host.ip();
                self.config
                    .listeners
                    .iter()
                    .any(|(_, a)| Some(a.ip()) == ip && port.unwrap_or(5060) == a.port())
            }
        }
    }

    pub(crate) fn on_request(
        &mut self,
        tu: &mut dyn TransactionUser,
        now: Millis,
        now_unix_ms: u64,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) {
        let key = match self.txl.receive_request(now, msg) {
            Received::New(key) => key,
            Received::Absorbed => return,
            Received::Malformed => {
                self.counters.malformed += 1;
                return;
            }
        };
        let method = msg.method().unwrap_or(Method::Options);
        // An ACK is never answered (RFC 3261 §17): `received` and `rport`
        // in its Via would route nothing, so it is not copied to add them.
        // The rewritten request is written into buffers the core keeps.
        let (mut via, mut bytes) = std::mem::take(&mut self.fix_buffers);
        if method != Method::Ack && Self::fix_via(msg, inb, &mut via, &mut bytes).is_some() {
            if let Ok(fixed) = SipMessage::parse(&bytes, Framing::Datagram, &self.config.limits) {
                self.on_new_request(tu, now, now_unix_ms, key, method, &fixed, inb);
            }
        } else {
            self.on_new_request(tu, now, now_unix_ms, key, method, msg, inb);
        }
        self.fix_buffers = (via, bytes);
    }

    /// A request that starts a server transaction, its top Via fixed up.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_new_request(
        &mut self,
        tu: &mut dyn TransactionUser,
        now: Millis,
        now_unix_ms: u64,
        key: ServerKey,
        method: Method<'_>,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) {
        let hop = response_hop(msg, inb);
        if method == Method::Ack {
            // An ACK for a 2xx: its own transaction (§17.1.1.3), the
            // transaction user's.
            tu.on_ack(self, now, now_unix_ms, msg, inb);
            return;
        }
        // A REGISTER is kept: its 200 is rebuilt as a 500 when the binding
        // cannot be stored.
        self.txl
            .open_server(key, msg, hop, method == Method::Register);
        // The SBC's realm access lists, flood counting and bans come first,
        // for every request (REGISTER included).
        if !tu.admit(self, now, key, msg, inb) {
            return;
        }
        // A source banned for guessing passwords gets nothing new; requests
        // within dialogs it already holds are still served.
        let in_dialog = msg.to().ok().is_some_and(|t| t.tag().is_some());
        if !in_dialog && self.guard.lock().refuses(inb.remote.ip(), now) {
            let reason = "too many failed authentications from this address";
            self.refuse(now, &key, msg, inb, (403, "Forbidden"), reason);
            return;
        }
        if let Some(r) = admission::admit(msg, tu.role(), &self.supported) {
            let mut warning = Vec::with_capacity(r.reason.len() + 16);
            write_warning(399, b"rvoip", &r.reason, &mut warning);
            let mut extra: Vec<(HeaderName, &[u8])> = vec![(HeaderName::Warning, &warning)];
            if let Some(tag) = r.unsupported.first() {
                extra.push((HeaderName::Unsupported, tag.as_bytes()));
            }
            self.log_refusal(now, msg, inb, r.status, &r.reason);
            self.txl
                .respond(now, &key, msg, r.status, reason_phrase(r.status), &extra);
            return;
        }
        // New calls only: requests within calls already up are what the
        // shedding protects.
        if method == Method::Invite
            && !in_dialog
            && let Some(reason) = self.overload_reason()
        {
            self.counters.overload_refused += 1;
            self.refuse_for_overload(now, &key, msg, inb, &reason);
            return;
        }
        // A draining node takes no new call, and says so to health checks.
        if self.draining && !in_dialog && matches!(method, Method::Invite | Method::Options) {
            self.counters.drain_refused += 1;
            self.refuse_for_overload(
                now,
                &key,
                msg,
                inb,
                "draining: this node takes no new calls",
            );
            return;
        }
        // Requests for this element's registrar: REGISTER to a served
        // domain. Everything else is the transaction user's.
        let local_domain = msg
            .request_uri()
            .ok()
            .is_some_and(|u| u.host.is_some_and(|h| self.is_local_host(&h, u.port)));
        if method == Method::Register && local_domain {
            self.on_register(now, now_unix_ms, &key, msg, inb);
            return;
        }
        tu.on_request(self, now, now_unix_ms, key, msg, inb, local_domain);
    }

    /// Checks credentials in `header`; Err(stale) means challenge. A wrong
    /// answer or an unknown user counts against the source (and the user)
    /// in the guard.
    pub(crate) fn authenticate(
        &mut self,
        now: Millis,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        header: HeaderName,
    ) -> Result<Authenticated, bool> {
        let method = msg
            .method()
            .map(|m| m.as_bytes().to_vec())
            .unwrap_or_default();
        let mut stale = false;
        for value in msg.header_lines(header) {
            let mut v = Vec::with_capacity(value.len());
            rvoip_dataplane::sip::unfold_into(value, &mut v);
            let Some(params) = v
                .strip_prefix(b"Digest")
                .or_else(|| v.strip_prefix(b"digest"))
            else {
                continue;
            };
            let Some(creds) = parse_credentials(params) else {
                continue;
            };
            let users = &self.users;
            match self.auth.verify(now, &method, &creds, |u| users.secret(u)) {
                Ok(a) => return Ok(a),
                Err(AuthFailure::Stale) => stale = true,
                Err(AuthFailure::Rejected) => {
                    self.on_auth_failure(now, msg, inb, &creds.username);
                }
                Err(AuthFailure::Missing) => {}
            }
        }
        Err(stale)
    }

    /// Refuses a request with `status` and `phrase`, saying why in a
    /// `Warning: 399 rvoip "<reason>"` header, and logs it within the
    /// budget.
    pub(crate) fn refuse(
        &mut self,
        now: Millis,
        key: &ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        (status, phrase): (u16, &str),
        reason: &str,
    ) {
        self.log_refusal(now, msg, inb, status, reason);
        let mut warning = Vec::with_capacity(reason.len() + 16);
        write_warning(399, b"rvoip", reason, &mut warning);
        self.txl.respond(
            now,
            key,
            msg,
            status,
            phrase,
            &[(HeaderName::Warning, &warning)],
        );
    }

    /// Logs a request refused here, within the log budget.
    pub(crate) fn log_refusal(
        &mut self,
        now: Millis,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        status: u16,
        reason: &str,
    ) {
        if let Some(suppressed) = self.refusal_log.take(now) {
            tracing::info!(
                source = %inb.remote,
                call_id = %String::from_utf8_lossy(msg.call_id().unwrap_or_default()),
                status,
                reason,
                suppressed,
                "SIP request refused"
            );
        }
    }

    /// Counts and logs a failed digest attempt. The log stays bounded under
    /// a guessing attack: the first failure of a source in its window, the
    /// failure that bans it, and a user's failures reaching the threshold.
    pub(crate) fn on_auth_failure(
        &mut self,
        now: Millis,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        user: &str,
    ) {
        let source = inb.remote.ip();
        let call_id = String::from_utf8_lossy(msg.call_id().unwrap_or_default());
        let limit = self.config.auth_guard.failures_before_ban;
        let verdict = self.guard.lock().on_failure(source, user, now);
        match verdict {
            Verdict::Banned { until } => tracing::warn!(
                %source,
                user,
                %call_id,
                failures = limit,
                ban_secs = until.saturating_sub(now) / 1000,
                "authentication: source banned after failed digest attempts"
            ),
            Verdict::Counted {
                source_failures,
                user_failures,
            } => {
                if source_failures == 1 {
                    tracing::warn!(%source, user, %call_id, "authentication failed");
                }
                if limit > 0 && user_failures == limit {
                    tracing::warn!(
                        user,
                        failures = user_failures,
                        "authentication: many failed attempts against one user"
                    );
                }
            }
        }
    }

    pub(crate) fn challenge(
        &mut self,
        now: Millis,
        key: &ServerKey,
        msg: &SipMessage<'_>,
        status: u16,
        stale: bool,
    ) {
        self.counters.challenges += 1;
        let header = if status == 401 {
            HeaderName::WwwAuthenticate
        } else {
            HeaderName::ProxyAuthenticate
        };
        let values = self.auth.challenges(now, stale);
        let extra: Vec<(HeaderName, &[u8])> =
            values.iter().map(|v| (header, v.as_bytes())).collect();
        let reason = if status == 401 {
            "Unauthorized"
        } else {
            "Proxy Authentication Required"
        };
        self.txl.respond(now, key, msg, status, reason, &extra);
    }

    pub(crate) fn on_register(
        &mut self,
        now: Millis,
        now_unix_ms: u64,
        key: &ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) {
        let proof = if self.config.auth == AuthPolicy::Off {
            None
        } else {
            match self.authenticate(now, msg, inb, HeaderName::Authorization) {
                Ok(a) => Some(a),
                Err(stale) => {
                    self.challenge(now, key, msg, 401, stale);
                    return;
                }
            }
        };
        let source = crate::registrar::location::Source {
            transport: inb.transport,
            address: inb.remote,
            conn: inb.transport.reliable().then_some(inb.conn),
        }
        .text();
        match self
            .registrar
            .register(msg, now_unix_ms, &source, proof.as_ref())
        {
            RegisterOutcome::Ok { contacts, path } => {
                self.counters.registrations += 1;
                let mut extra: Vec<(HeaderName, &[u8])> = contacts
                    .iter()
                    .map(|c| (HeaderName::Contact, c.as_bytes()))
                    .collect();
                let path_values: Vec<String> = path.iter().map(|p| format!("<{p}>")).collect();
                extra.extend(path_values.iter().map(|p| (HeaderName::Path, p.as_bytes())));
                let mut out = Vec::with_capacity(512);
                let tag = build::to_tag(&[&key.seed(), msg.call_id().unwrap_or_default()]);
                write_response(msg, 200, b"OK", Some(tag.as_bytes()), &extra, &mut out);
                self.counters.generated += 1;
                // Sent once the binding is durable (flush).
                self.held.push((*key, 200, out));
            }
            RegisterOutcome::Reject {
                status,
                reason,
                extra,
            } => {
                let extra: Vec<(HeaderName, &[u8])> =
                    extra.iter().map(|(h, v)| (*h, v.as_bytes())).collect();
                self.txl.respond(now, key, msg, status, reason, &extra);
            }
        }
    }

    /// Hands the transaction user what the layer has for it.
    pub(crate) fn deliver_events(&mut self, tu: &mut dyn TransactionUser, now: Millis) {
        while let Some(e) = self.txl.poll_event() {
            let unix = now + self.unix_base;
            tu.on_event(self, now, unix, e);
        }
    }

    /// Runs due timers: the transactions' here, the user's by the user.
    /// Timers on a wheel: most (retransmissions outlived by their answers)
    /// lapse, and each costs one push and one visit. Handlers may set
    /// timers already due: the loop runs until none is.
    pub(crate) fn on_timer(&mut self, tu: &mut dyn TransactionUser, now: Millis) {
        loop {
            let mut due = self.txl.take_due(now);
            if due.is_empty() {
                self.txl.return_due(due);
                break;
            }
            for r in due.drain(..) {
                if !self.txl.fire(now, r) {
                    let unix = now + self.unix_base;
                    tu.on_timer(self, now, unix, r);
                }
                self.deliver_events(tu, now);
            }
            self.txl.return_due(due);
        }
    }

    pub(crate) fn forward_stateless(
        &mut self,
        now: Millis,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) {
        let _ = now;
        let Some((hop, pop_route)) = self.next_hop(msg, inb, 0) else {
            return;
        };
        let mut f = Forward::new(msg);
        if pop_route {
            let _ = f.pop_route();
        }
        if f.decrement_max_forwards().is_err() {
            return;
        }
        let branch = build::branch(&[
            msg.top_via()
                .ok()
                .and_then(|v| v.branch())
                .unwrap_or_default(),
            b"stateless",
        ]);
        let via = build::via_value(hop.transport, hop.local, &branch);
        f.push_via(&via);
        let mut out = Vec::with_capacity(msg.len() + 128);
        f.write_to(&mut out);
        self.counters.forwarded += 1;
        self.txl.emit(hop, out);
    }

    /// A response whose transaction is gone, but whose top Via is ours:
    /// forwarded statelessly (§16.11), e.g. a retransmitted 2xx.
    pub(crate) fn forward_response_stateless(&mut self, msg: &SipMessage<'_>, inb: &Inbound<'_>) {
        let mut vias = msg.vias();
        let Some(Ok(top)) = vias.next() else {
            self.counters.unroutable_responses += 1;
            return;
        };
        if !self.is_local_host(&top.host, top.port) {
            self.counters.unroutable_responses += 1;
            return;
        }
        let Some(dest) = vias
            .next()
            .and_then(Result::ok)
            .as_ref()
            .and_then(via_destination)
        else {
            self.counters.unroutable_responses += 1;
            return;
        };
        let transport = msg
            .vias()
            .nth(1)
            .and_then(Result::ok)
            .and_then(|v| v.transport)
            .unwrap_or(Transport::Udp);
        let mut f = Forward::new(msg);
        if f.pop_via().is_err() {
            return;
        }
        let mut out = Vec::with_capacity(msg.len());
        f.write_to(&mut out);
        self.txl.emit(
            Hop {
                transport,
                local: inb.local,
                dest,
                conn: None,
            },
            out,
        );
    }

    pub(crate) fn on_response(
        &mut self,
        tu: &mut dyn TransactionUser,
        now: Millis,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) {
        match self.txl.receive_response(now, msg) {
            Matched::Owner(owner) => {
                let unix = now + self.unix_base;
                tu.on_response(self, now, unix, owner, msg, inb);
            }
            Matched::Stray => tu.on_stray_response(self, now, msg, inb),
            Matched::Absorbed => {}
            Matched::Malformed => self.counters.malformed += 1,
        }
    }
}

/// The RFC 3261 reason phrase of the status codes rvoip generates.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
