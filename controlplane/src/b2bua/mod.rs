//! The B2BUA (SBC mode): every call is two dialogs the SBC owns, one with
//! the caller (leg A, the SBC is its UAS) and one with the called side (leg
//! B, the SBC is its UAC). Nothing of one side's Via, Record-Route, Contact,
//! Call-ID or tags reaches the other; SDP goes through the relay (ng offer
//! and answer), so media is anchored on the dataplane.
//!
//! The new call: realm access list and flood check, source and trunk
//! limits, number normalization and routing, the trunk's peers in
//! dispatcher order; each peer gets the INVITE for `invite_timeout` (no
//! answer at all) and is skipped on timeout, 408 or 5xx (failover within the
//! call). 18x (early media, reliable or not), 2xx, re-INVITE, UPDATE, PRACK
//! and other in-dialog requests cross with their SDP rewritten. Session
//! timers (RFC 4028) tear down calls nobody refreshes. Established calls go
//! to a journal, so a restarted control plane still knows them.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use rustc_hash::FxHashMap;
use rvoip_dataplane::entropy::Entropy;
use rvoip_dataplane::sip::{
    Framing, HeaderName, Limits, Method, SipMessage, write_response, write_response_with_body,
};
use serde::{Deserialize, Serialize};

use crate::build;
use crate::build::Piece::{Addr, Ip, Number, Str};
use crate::build::text;
use crate::dialog::{Dialog, DialogError, Forks, RAck, session_timer};
use crate::element::{
    ClientKey, Element, Hop, Inbound, LayerEvent, Owner, ServerKey, TimerRef, TransactionUser,
    Transport,
};
use crate::ops::metrics::CallTally;
use crate::registrar::location::Source;
use crate::sbc::cdr::Cdr;
use crate::sbc::journal::Journal;
use crate::sbc::media::{self, MediaOrders, MediaTotals};
use crate::sbc::policy::{HeaderText, Policy, Refusal};
use crate::transaction::Millis;
use rvoip_dataplane::media::orders::Outcome;

mod apps;
pub mod ctl;
#[cfg(test)]
mod tests;

pub use apps::MediaServer;

/// Side of a call: A the caller's leg (the SBC is its UAS), B the called
/// leg (the SBC is its UAC); the one `Side` of rvoip.
pub use rvoip_dataplane::media::relay::Side;

/// Timers of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CallTimer {
    /// The peer of attempt n has not answered the INVITE at all.
    Attempt(u32),
    /// Retransmit the 2xx that waits for its ACK.
    Retransmit,
    /// The caller has heard nothing for 200 ms: 100 (Trying).
    Trying,
    /// The session interval ends.
    Session,
    /// A media-server application's timer.
    App(apps::AppTimer),
}

/// How long a caller may wait for a first response before a 100 (Trying)
/// goes to it (RFC 3261 §17.2.1).
const TRYING_MS: Millis = 200;

/// What a client transaction of the B2BUA is for.
#[derive(Debug, Clone)]
pub(crate) enum CallTxn {
    /// The INVITE of attempt n to leg B.
    Invite { call: u64, attempt: u32 },
    /// A request relayed from `from` to the other leg; its responses go
    /// back through server transaction `server` for `request`.
    Relay {
        call: u64,
        from: Side,
        server: ServerKey,
        request: Vec<u8>,
    },
    /// A request the SBC itself sends (BYE, CANCEL): responses are only
    /// absorbed.
    Local,
    /// An OPTIONS health check of a trunk peer.
    Probe { trunk: usize, peer: usize },
}

/// What to do when a media order's reply comes back.
#[derive(Debug)]
enum Then {
    /// The caller's offer, rewritten for leg B: the first INVITE goes out.
    NewCallOffer { call: u64 },
    /// SDP of leg B's response to the INVITE, for the caller.
    InviteResponse {
        call: u64,
        code: u16,
        msg: Vec<u8>,
        ack_answers: bool,
    },
    /// The answer in an ACK (late offer), for the ACK to the other leg (to
    /// its INVITE with CSeq `cseq`).
    AckAnswer { call: u64, side: Side, cseq: u32 },
    /// SDP of an in-dialog request from `side`: it goes to the other leg.
    Relay {
        call: u64,
        side: Side,
        key: ServerKey,
        msg: Vec<u8>,
    },
    /// SDP of the response to a relayed request: it goes back.
    RelayResponse {
        call: u64,
        from: Side,
        server: ServerKey,
        request: Vec<u8>,
        code: u16,
        msg: Vec<u8>,
        ack_answers: bool,
    },
    /// The relay's totals for an ended call's record.
    Deleted { cdr: Box<Cdr> },
    /// A step of a call the media server answers.
    Local { call: u64, step: apps::LocalStep },
    /// A service order whose outcome is only logged.
    Noted,
    /// Media events (DTMF) for the applications.
    Events,
    /// A live call's figures for row `row` of ctl request `request`.
    Inspected { request: u64, row: usize },
    /// The relay's capture of a call for ctl request `request`.
    Captured { request: u64 },
}

impl Then {
    fn call(&self) -> Option<u64> {
        match self {
            Then::NewCallOffer { call }
            | Then::InviteResponse { call, .. }
            | Then::AckAnswer { call, .. }
            | Then::Relay { call, .. }
            | Then::RelayResponse { call, .. }
            | Then::Local { call, .. } => Some(*call),
            Then::Deleted { .. }
            | Then::Noted
            | Then::Events
            | Then::Inspected { .. }
            | Then::Captured { .. } => None,
        }
    }
}

/// An event of a call that waits while one of its media orders is in
/// flight, so the call's events keep their order.
#[derive(Debug, Clone)]
enum Deferred {
    Response { purpose: CallTxn, msg: Vec<u8> },
    Request { key: ServerKey, msg: Vec<u8> },
    Ack { msg: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    /// Trying peers.
    Routing,
    /// A provisional response with a To tag came back.
    Early,
    /// Answered.
    Up,
}

/// A 2xx to an INVITE retransmitted until its ACK arrives (§13.3.1.4).
#[derive(Debug, Clone)]
struct Pending2xx {
    side: Side,
    server: ServerKey,
    bytes: Vec<u8>,
    interval: Millis,
    give_up: Millis,
    /// An offer in the 2xx waits for the answer in the ACK (late offer):
    /// the ACK to the other leg carries it.
    ack_answers: bool,
    /// CSeq of the INVITE on the other leg, which that ACK acknowledges.
    ack_cseq: u32,
}

/// What the relay gives side `to` of `call` for an offer from the other
/// side: its protection, with RTCP demultiplexed when the offer comes
/// from WebRTC and goes elsewhere.
fn towards(call: &Call, to: Side) -> media::Protection {
    let (to_leg, from_leg) = (&call.legs[to.index()], &call.legs[to.other().index()]);
    media::Protection {
        demux: from_leg.webrtc && !to_leg.webrtc,
        ..to_leg.protection()
    }
}

/// Where one attempt of a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dest {
    address: SocketAddr,
    transport: Transport,
    /// The stream connection to send over (a registered client's).
    conn: Option<u32>,
    /// The Request-URI.
    ruri: String,
}

/// A call: both legs and what the SBC knows of it.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    id: u64,
    legs: [Dialog; 2],
    state: State,
    a_invite_key: ServerKey,
    a_invite: Vec<u8>,
    b_invite_key: Option<ClientKey>,
    /// The trunk, or none for a call to a registered user.
    trunk: Option<usize>,
    /// The trunk peers tried in turn (indexes into the trunk's peers).
    peers: Vec<usize>,
    /// Where each attempt goes.
    targets: Vec<Dest>,
    /// The trunk's peers are chosen (at the first attempt, once the
    /// trunk's names are resolved).
    routed: bool,
    attempt: u32,
    provisional: bool,
    cancelled: bool,
    /// The caller's offer rewritten for leg B (kept for failover).
    b_offer: Option<Vec<u8>>,
    /// The initial INVITE had no SDP.
    late_offer: bool,
    /// The ACK that went to leg B for its 2xx (resent when the 2xx is).
    b_ack: Option<Vec<u8>>,
    pending: Option<Pending2xx>,
    source: IpAddr,
    in_realm: usize,
    media_id: String,
    invite_ms: u64,
    /// The first ringing (18x) from leg B, Unix ms.
    ringing_ms: Option<u64>,
    answer_ms: Option<u64>,
    a_status: u16,
    b_status: u16,
    session_ms: Option<Millis>,
    session_deadline: Millis,
    from_user: String,
    number: String,
    /// Headers of the caller's INVITE passed on to leg B (after rules).
    passed: Vec<(HeaderText, HeaderText)>,
    /// Media orders in flight.
    busy: u32,
    /// Events waiting for them.
    deferred: VecDeque<Deferred>,
    /// Leg B's other early dialogs (a forking peer's other phones).
    forks: Forks,
    /// The media server's application, when it answers the call.
    app: Option<Box<apps::LocalApp>>,
    /// Whether side A, side B is held by its peer (hearing music on hold).
    held: [bool; 2],
}

/// What the journal keeps of an established call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedCall {
    legs: [Dialog; 2],
    trunk: Option<usize>,
    peer: Option<usize>,
    source: IpAddr,
    in_realm: usize,
    media_id: String,
    invite_ms: u64,
    answer_ms: u64,
    session_ms: Option<Millis>,
    from_user: String,
    number: String,
    attempts: u32,
}

/// B2BUA settings.
#[derive(Debug, Clone)]
pub struct B2bConfig {
    /// Session interval asked of both legs, seconds (0: none).
    pub session_expires: u32,
    /// Smallest interval accepted.
    pub min_se: u32,
    /// REFER answered 603 here instead of passed on.
    pub reject_refer: bool,
    /// Seconds between health-check rounds.
    pub health_interval_ms: Millis,
    /// The media server's applications.
    pub media_server: MediaServer,
}

/// Counters of the B2BUA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct B2bCounters {
    /// Calls offered (new INVITEs admitted).
    pub calls: u64,
    /// Calls answered.
    pub answered: u64,
    /// Calls ended (any way).
    pub ended: u64,
    /// Attempts moved to the next peer.
    pub failovers: u64,
    /// Calls whose trunk resolved to no reachable peer (503).
    pub unresolved: u64,
    /// Media orders the relay refused or did not answer.
    pub media_errors: u64,
    /// Calls torn down by the session timer.
    pub session_expired: u64,
    /// Calls recovered from the journal at start.
    pub recovered: u64,
    /// In-dialog requests for no known dialog (481).
    pub unknown_dialog: u64,
    /// 2xx responses from a second fork of leg B, acknowledged and ended.
    pub forks_ended: u64,
}

/// Each leg's call and side by its Call-ID, keyed by a keyed 128-bit hash
/// of the Call-ID: the table holds no copy of it, and no sender can make
/// two Call-IDs collide.
struct Dialogs {
    key: siphasher::sip128::SipHasher13,
    map: FxHashMap<u128, (u64, Side)>,
}

impl Dialogs {
    fn new(entropy: &dyn Entropy) -> Dialogs {
        let mut key = [0u8; 16];
        let _ = entropy.fill(&mut key);
        Dialogs {
            key: siphasher::sip128::SipHasher13::new_with_key(&key),
            map: FxHashMap::default(),
        }
    }

    fn hash(&self, call_id: &[u8]) -> u128 {
        use siphasher::sip128::Hasher128 as _;
        use std::hash::Hasher as _;
        let mut h = self.key;
        h.write(call_id);
        h.finish128().as_u128()
    }

    fn insert(&mut self, call_id: &[u8], at: (u64, Side)) {
        self.map.insert(self.hash(call_id), at);
    }

    fn remove(&mut self, call_id: &[u8]) {
        self.map.remove(&self.hash(call_id));
    }

    fn get(&self, call_id: &[u8]) -> Option<&(u64, Side)> {
        self.map.get(&self.hash(call_id))
    }
}

/// The B2BUA's state, held by the SIP core.
pub struct B2b {
    /// Policy.
    pub policy: Policy,
    config: B2bConfig,
    media: Box<dyn MediaOrders>,
    /// Boxed: a call is taken out and put back for each of its events, and
    /// the table then moves a pointer rather than the whole call.
    calls: FxHashMap<u64, Box<Call>>,
    dialogs: Dialogs,
    by_invite: FxHashMap<ServerKey, u64>,
    next_id: u64,
    boot: String,
    journal: Journal,
    cdrs: VecDeque<Cdr>,
    orders: FxHashMap<u64, Then>,
    next_token: u64,
    health_started: bool,
    /// Calls waiting for their trunk's names to resolve.
    dns_waiting: Vec<u64>,
    /// A text written and copied into place, kept for the next.
    scratch: String,
    /// Calls the media server answers, by their media id.
    apps_by_media: FxHashMap<String, u64>,
    /// An events order is in flight.
    events_asked: bool,
    /// Counters.
    pub counters: B2bCounters,
    /// Calls by realm and trunk, for the metrics.
    pub tally: CallTally,
    /// ctl requests for the calls, waiting for the relay's figures.
    inspections: FxHashMap<u64, ctl::Inspection>,
    /// ctl requests answered.
    inspected: VecDeque<(u64, Vec<ctl::CallView>)>,
    /// ctl capture requests the relay answered.
    captured: VecDeque<(u64, Result<(), String>)>,
    /// This B2BUA's control-plane shard and how many there are.
    shard: (usize, usize),
}

impl std::fmt::Debug for B2b {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("B2b")
            .field("calls", &self.calls.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl B2b {
    /// A B2BUA with its policy, media orders and journal (already opened;
    /// `saved` are the calls it held); `entropy` keys its dialog table and
    /// makes its tags and Call-IDs its own.
    pub fn new(
        policy: Policy,
        config: B2bConfig,
        media: Box<dyn MediaOrders>,
        journal: Journal,
        saved: Vec<(u64, SavedCall)>,
        entropy: &dyn Entropy,
    ) -> B2b {
        let mut nonce = [0u8; 8];
        let _ = entropy.fill(&mut nonce);
        let mut b = B2b {
            policy,
            config,
            media,
            calls: FxHashMap::default(),
            dialogs: Dialogs::new(entropy),
            by_invite: FxHashMap::default(),
            next_id: 1,
            boot: nonce.iter().fold(String::new(), |mut s, x| {
                let _ = write!(s, "{x:02x}");
                s
            }),
            journal,
            cdrs: VecDeque::new(),
            orders: FxHashMap::default(),
            next_token: 0,
            health_started: false,
            dns_waiting: Vec::new(),
            scratch: String::new(),
            apps_by_media: FxHashMap::default(),
            events_asked: false,
            counters: B2bCounters::default(),
            tally: CallTally::default(),
            inspections: FxHashMap::default(),
            inspected: VecDeque::new(),
            captured: VecDeque::new(),
            shard: (0, 1),
        };
        b.tally = CallTally::new(b.policy.realms.len(), b.policy.trunks.len());
        for (id, s) in saved {
            b.restore(id, s);
        }
        b
    }

    fn restore(&mut self, id: u64, s: SavedCall) {
        self.next_id = self.next_id.max(id + 1);
        self.policy.restore(s.source, s.trunk);
        let call = Box::new(Call {
            id,
            state: State::Up,
            a_invite_key: ServerKey::NONE,
            a_invite: Vec::new(),
            b_invite_key: None,
            trunk: s.trunk,
            peers: s.peer.into_iter().collect(),
            targets: vec![Dest {
                address: s.legs[1].dest,
                transport: s.legs[1].hop().transport,
                ruri: s.legs[1].remote_target().to_owned(),
                conn: s.legs[1].conn,
            }],
            routed: true,
            attempt: s.attempts.saturating_sub(1),
            provisional: true,
            cancelled: false,
            b_offer: None,
            late_offer: false,
            b_ack: None,
            pending: None,
            source: s.source,
            in_realm: s.in_realm,
            media_id: s.media_id,
            invite_ms: s.invite_ms,
            ringing_ms: None,
            answer_ms: Some(s.answer_ms),
            a_status: 200,
            b_status: 200,
            session_ms: s.session_ms,
            // Whatever refresh was due is given a full interval again.
            session_deadline: 0,
            from_user: s.from_user,
            number: s.number,
            passed: Vec::new(),
            busy: 0,
            deferred: VecDeque::new(),
            forks: Forks::default(),
            legs: s.legs,
            app: None,
            held: [false; 2],
        });
        for side in [Side::A, Side::B] {
            self.dialogs
                .insert(call.legs[side.index()].call_id().as_bytes(), (id, side));
        }
        self.tally.started(call.in_realm, call.trunk);
        self.tally.answered(call.in_realm, call.trunk);
        self.calls.insert(id, call);
        self.counters.recovered += 1;
    }

    /// Calls in progress or up.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Makes this B2BUA shard `index` of `count` control-plane shards: the
    /// Call-IDs it makes come back to it.
    pub fn set_shard(&mut self, index: usize, count: usize) {
        self.shard = (index, count.max(1));
    }

    /// Appends a fresh Call-ID `token@host` for `what` to `s`, one the SIP
    /// workers hand to this shard ([`rvoip_dataplane::sip::shard_of`]), so
    /// the responses and requests of its dialog come back here.
    fn push_call_id(&mut self, s: &mut String, what: &str, host: std::net::IpAddr) {
        let start = s.len();
        // One in `count` tokens lands here; the bound is never reached in
        // practice ((31/32)^1000 with the most shards).
        for _ in 0..1000 {
            s.truncate(start);
            self.push_token(s, what);
            build::push_text(s, &[Str("@"), Ip(host)]);
            let (index, count) = self.shard;
            if rvoip_dataplane::sip::shard_of(&s.as_bytes()[start..], count) == index {
                return;
            }
        }
    }

    /// Appends a fresh token (tags, Call-IDs) for `what` to `s`.
    fn push_token(&mut self, s: &mut String, what: &str) {
        self.next_id += 1;
        let (h, _) = build::digest(&[
            self.boot.as_bytes(),
            what.as_bytes(),
            &self.next_id.to_le_bytes(),
        ]);
        build::push_hex(s, h, 16);
    }
}

fn has_option(msg: &SipMessage<'_>, name: HeaderName, option: &str) -> bool {
    msg.header_lines(name).any(|v| {
        String::from_utf8_lossy(v)
            .split(',')
            .any(|o| o.trim().eq_ignore_ascii_case(option))
    })
}

/// Status sent to the caller for a final failure from the called side:
/// redirects stay inside the SBC (their Contact would show the core),
/// authentication challenges of the core cannot be answered by the caller.
fn map_status(code: u16) -> u16 {
    match code {
        300..=399 => 480,
        401 | 407 => 403,
        c => c,
    }
}

fn fails_over(code: u16) -> bool {
    matches!(code, 408 | 500 | 502 | 503 | 504)
}

/// The relay address of its own side `side`'s realm gives its peers, of
/// the family rvoip reaches that side over (none: the relay's).
fn media_iface(policy: &Policy, call: &Call, side: Side) -> Option<IpAddr> {
    let local = call.legs[side.index()].local;
    let realm = policy.realm_of(local, crate::element::Transport::Udp)?;
    policy.media_address(realm, local.is_ipv6())
}

/// The relay addresses of an offer from side `from` of `call`.
fn media_sides(policy: &Policy, call: &Call, from: Side) -> media::Sides {
    let to = from.other();
    media::Sides {
        to_local: call.legs[to.index()].local,
        from_iface: media_iface(policy, call, from),
        to_iface: media_iface(policy, call, to),
    }
}

/// The Content-Type of `body` when it is SDP the SBC wrote (none without a body).
fn sdp_type(body: &[u8]) -> Option<&'static [u8]> {
    (!body.is_empty()).then_some(b"application/sdp")
}

fn sdp_body<'a>(msg: &SipMessage<'a>) -> Option<&'a [u8]> {
    let ct = msg.header(HeaderName::ContentType)?;
    let body = msg.body();
    (!body.is_empty()
        && ct
            .get(..15)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"application/sdp")))
    .then_some(body)
}

/// Whether an offer has an RTP stream that is not SRTP (proto RTP/AVP or
/// RTP/AVPF rather than RTP/SAVP, RTP/SAVPF or UDP/TLS/RTP/SAVP).
fn offers_plain_rtp(sdp: &[u8]) -> bool {
    let Ok(parsed) = rvoip_dataplane::sdp::Sdp::parse(sdp) else {
        return false;
    };
    parsed.media.iter().any(|m| {
        m.media.port != 0
            && m.media.is_rtp()
            && !m
                .media
                .proto
                .windows(4)
                .any(|w| w.eq_ignore_ascii_case(b"SAVP"))
    })
}

/// Keeps only `codecs` (encoding names or payload numbers) in every audio
/// section, in that order; telephone-event stays when listed.
fn filter_codecs(sdp: &[u8], codecs: &[String]) -> Vec<u8> {
    if codecs.is_empty() {
        return sdp.to_vec();
    }
    let Ok(mut parsed) = rvoip_dataplane::sdp::Sdp::parse(sdp) else {
        return sdp.to_vec();
    };
    for m in parsed.media.iter_mut() {
        let pts: Vec<u8> = m.payload_types().collect();
        let name_of = |pt: u8| -> String {
            m.rtpmap(pt)
                .map(|r| String::from_utf8_lossy(r.encoding).to_ascii_uppercase())
                .unwrap_or_else(|| {
                    rvoip_codecs::static_name(pt)
                        .unwrap_or_default()
                        .to_string()
                })
        };
        let mut keep: Vec<u8> = Vec::new();
        for c in codecs {
            for pt in &pts {
                let matches =
                    c.parse::<u8>().ok() == Some(*pt) || name_of(*pt).eq_ignore_ascii_case(c);
                if matches && !keep.contains(pt) {
                    keep.push(*pt);
                }
            }
        }
        if keep.is_empty() {
            continue;
        }
        m.retain_formats(|pt, _| keep.contains(&pt));
        m.prefer_formats(&keep);
    }
    parsed.to_bytes()
}

/// The user part (or the whole opaque part) of a URI.
fn uri_user(msg: &SipMessage<'_>) -> String {
    msg.request_uri()
        .ok()
        .and_then(|u| u.user.map(|b| String::from_utf8_lossy(b).into_owned()))
        .unwrap_or_default()
}

/// A request this core kept, read again to answer it.
fn reread(request: &[u8]) -> Option<SipMessage<'_>> {
    SipMessage::parse(request, Framing::Datagram, &Limits::default()).ok()
}

/// A response to `req` with a To tag, extra headers and a body.
fn response_to(
    req: &SipMessage<'_>,
    code: u16,
    reason: &[u8],
    to_tag: &str,
    extra: &[(HeaderName, &[u8])],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + body.len());
    // A copy of the header list only when a Content-Type joins it.
    let with_type: Vec<(HeaderName, &[u8])>;
    let extra = if body.is_empty() {
        extra
    } else {
        with_type = [extra, &[(HeaderName::ContentType, b"application/sdp")]].concat();
        &with_type
    };
    write_response_with_body(
        req,
        code,
        reason,
        (!to_tag.is_empty()).then_some(to_tag.as_bytes()),
        extra,
        body,
        &mut out,
    );
    out
}

impl B2b {
    /// The offer order towards leg B through `trunk`: its codecs (or its
    /// realm's) filter the offer, or, with `transcode`, are added to it
    /// with the caller's others hidden, so the relay transcodes when the
    /// callee answers with a codec the caller lacks.
    fn offer_towards_b(
        &self,
        trunk: Option<usize>,
        media_id: &[u8],
        from_tag: &[u8],
        sdp: &[u8],
        (out, sides): (media::Protection, media::Sides),
    ) -> media::OrderRecord {
        let (codecs, transcode) = trunk.map_or((&[][..], false), |t| self.policy.codecs_towards(t));
        if transcode && !codecs.is_empty() {
            media::offer_with(
                media_id,
                from_tag,
                sdp,
                out,
                sides,
                media::transcoding_to(codecs),
            )
        } else {
            media::offer(media_id, from_tag, &filter_codecs(sdp, codecs), out, sides)
        }
    }

    /// The relay address of its own side `side`'s realm gives its peers,
    /// of the family rvoip reaches that side over (none: the relay's).
    pub(crate) fn media_iface(&self, call: &Call, side: Side) -> Option<IpAddr> {
        media_iface(&self.policy, call, side)
    }

    /// The relay addresses of an offer from side `from` of `call`.
    fn media_sides(&self, call: &Call, from: Side) -> media::Sides {
        media_sides(&self.policy, call, from)
    }

    /// Sends a media order; `then` runs when its reply is back.
    fn order(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        order: media::OrderRecord,
        then: Then,
    ) {
        self.next_token += 1;
        let token = self.next_token;
        if let Some(c) = then.call().and_then(|id| self.calls.get_mut(&id)) {
            c.busy += 1;
        }
        match self.media.send(now, token, order) {
            Ok(()) => {
                self.orders.insert(token, then);
            }
            Err(e) => self.then(el, now, unix_ms, then, Outcome::Failed(e)),
        }
    }

    /// Handles the media replies that arrived. Call with every batch.
    fn take_media_replies(&mut self, el: &mut Element, now: Millis, unix_ms: u64) {
        while let Some((token, outcome)) = self.media.poll(now) {
            if let Some(then) = self.orders.remove(&token) {
                self.then(el, now, unix_ms, then, outcome);
            }
        }
    }

    /// A media order's reply: the call carries on where it waited.
    fn then(&mut self, el: &mut Element, now: Millis, unix_ms: u64, then: Then, outcome: Outcome) {
        let id = then.call();
        if let Some(c) = id.and_then(|id| self.calls.get_mut(&id)) {
            c.busy = c.busy.saturating_sub(1);
        }
        let then = match then {
            Then::Local { call, step } => {
                self.local_then(el, now, unix_ms, call, step, outcome);
                self.replay(el, now, unix_ms, call);
                return;
            }
            Then::Noted => {
                if let Outcome::Failed(e) = &outcome {
                    tracing::warn!(error = %e, "media service failed");
                    self.counters.media_errors += 1;
                }
                return;
            }
            Then::Events => {
                self.app_events(el, now, unix_ms, outcome);
                return;
            }
            Then::Inspected { request, row } => {
                self.inspected(request, row, outcome);
                return;
            }
            Then::Captured { request } => {
                self.captured(request, outcome);
                return;
            }
            other => other,
        };
        let totals = media::reply_totals(&outcome);
        let sdp = match &then {
            Then::Deleted { .. } => Ok(Vec::new()),
            _ => media::reply_sdp(outcome),
        };
        if let Err(e) = &sdp {
            let call_id = id
                .and_then(|id| self.calls.get(&id))
                .map(|c| c.legs[0].call_id().to_string());
            tracing::warn!(error = %e, call_id = call_id.as_deref().unwrap_or(""), "media order failed");
            self.counters.media_errors += 1;
        }
        match then {
            Then::NewCallOffer { call } => {
                let Some(mut c) = self.calls.remove(&call) else {
                    return;
                };
                if c.cancelled {
                    el.b2b_reject_a(&c, now, 487);
                    c.a_status = 487;
                    self.finish(el, c, unix_ms, "cancel");
                    return;
                }
                match sdp {
                    Ok(s) => {
                        c.b_offer = Some(s);
                        self.attempt(el, now, unix_ms, c);
                    }
                    Err(e) => {
                        let status = e.sip_status();
                        el.b2b_reject_a(&c, now, status);
                        c.a_status = status;
                        self.finish(el, c, unix_ms, "media-error");
                    }
                }
            }
            Then::InviteResponse {
                call,
                code,
                msg,
                ack_answers,
            } => {
                if let Ok(m) = SipMessage::parse(&msg, Framing::Datagram, &Limits::default()) {
                    let body = sdp.unwrap_or_default();
                    self.invite_answered(el, now, unix_ms, call, code, &m, &body, ack_answers);
                }
            }
            Then::AckAnswer { call, side, cseq } => {
                let body = sdp.unwrap_or_default();
                if let Some(c) = self.calls.get_mut(&call) {
                    el.b2b_ack_leg(c, side.other(), cseq, &body);
                }
            }
            Then::Relay {
                call,
                side,
                key,
                msg,
            } => {
                if let Ok(m) = SipMessage::parse(&msg, Framing::Datagram, &Limits::default()) {
                    match sdp {
                        Ok(body) => self.relay_send(el, now, call, key, &m, side, &body),
                        Err(_) => el
                            .txl
                            .respond(now, &key, &m, 488, "Not Acceptable Here", &[]),
                    }
                }
            }
            Then::RelayResponse {
                call,
                from,
                server,
                request,
                code,
                msg,
                ack_answers,
            } => {
                if let Ok(m) = SipMessage::parse(&msg, Framing::Datagram, &Limits::default()) {
                    let body = sdp.unwrap_or_default();
                    self.relay_answered(
                        el,
                        now,
                        call,
                        from,
                        server,
                        &request,
                        code,
                        &m,
                        &body,
                        ack_answers,
                    );
                }
            }
            Then::Deleted { mut cdr } => {
                cdr.media = totals;
                self.cdrs.push_back(*cdr);
            }
            Then::Local { .. }
            | Then::Noted
            | Then::Events
            | Then::Inspected { .. }
            | Then::Captured { .. } => {}
        }
        if let Some(id) = id {
            self.replay(el, now, unix_ms, id);
        }
    }

    /// Runs the events a call held while it waited for the relay, until it
    /// waits again.
    fn replay(&mut self, el: &mut Element, now: Millis, unix_ms: u64, id: u64) {
        loop {
            let Some(c) = self.calls.get_mut(&id) else {
                return;
            };
            if c.busy > 0 {
                return;
            }
            let Some(event) = c.deferred.pop_front() else {
                return;
            };
            match event {
                Deferred::Response { purpose, msg } => {
                    if let Ok(m) = SipMessage::parse(&msg, Framing::Datagram, &Limits::default()) {
                        self.response_in(el, now, unix_ms, purpose, &m);
                    }
                }
                Deferred::Request { key, msg } => {
                    if let Ok(m) = SipMessage::parse(&msg, Framing::Datagram, &Limits::default()) {
                        self.in_dialog(el, now, unix_ms, key, &m);
                    }
                }
                Deferred::Ack { msg } => {
                    if let Ok(m) = SipMessage::parse(&msg, Framing::Datagram, &Limits::default()) {
                        self.ack_in(el, now, unix_ms, &m);
                    }
                }
            }
        }
    }

    /// Drops requests from banned sources before any other work. Returns
    /// false when the message must be ignored.
    /// The SBC's admission of a request, whatever it is for (calls, the
    /// registrar, OPTIONS): the realm's access list (403), then flood
    /// detection and bans (dropped without an answer). `false` when the
    /// request is refused; its server transaction is then answered or gone.
    fn admit_source(
        &mut self,
        el: &mut Element,
        now: Millis,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) -> bool {
        let method = msg.method().unwrap_or(Method::Options);
        let in_dialog = msg.to().ok().and_then(|t| t.tag()).is_some();
        let realm = self.policy.realm_of(inb.local, inb.transport);
        // `[sbc.flood] requests_per_sec` counts what a scanner or a
        // guesser sends: new calls, registrations and other out-of-dialog
        // requests.
        let counted = !in_dialog
            && matches!(
                method,
                Method::Invite
                    | Method::Register
                    | Method::Options
                    | Method::Message
                    | Method::Subscribe
            );
        match realm.map(|r| {
            self.policy
                .admit(now, r, inb.remote.ip(), counted, in_dialog)
        }) {
            None | Some(Err(Refusal::Acl)) => {
                let reason = "source not allowed in this realm";
                el.refuse(now, &key, msg, inb, (403, "Forbidden"), reason);
                false
            }
            Some(Err(_)) => {
                // Banned: dropped without an answer; the transaction goes.
                el.txl.servers.remove(&key);
                false
            }
            Some(Ok(())) => true,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request_in(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        local_domain: bool,
    ) {
        // Admitted already (b2b_admit).
        let method = msg.method().unwrap_or(Method::Options);
        let in_dialog = msg.to().ok().and_then(|t| t.tag()).is_some();
        let realm = self.policy.realm_of(inb.local, inb.transport).unwrap_or(0);
        if method == Method::Cancel {
            self.cancel(el, now, key, msg, unix_ms);
            return;
        }
        if in_dialog {
            self.in_dialog(el, now, unix_ms, key, msg);
            return;
        }
        match method {
            Method::Invite => self.new_call(el, now, unix_ms, key, msg, inb, (realm, local_domain)),
            Method::Options => el.txl.respond(
                now,
                &key,
                msg,
                200,
                "OK",
                &[
                    (
                        HeaderName::Allow,
                        b"INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, MESSAGE, REFER, NOTIFY",
                    ),
                    (HeaderName::Accept, b"application/sdp"),
                ],
            ),
            _ => el.txl.respond(
                now,
                &key,
                msg,
                405,
                "Method Not Allowed",
                &[(HeaderName::Allow, b"INVITE, ACK, CANCEL, BYE, OPTIONS")],
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_call(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        (realm, local_domain): (usize, bool),
    ) {
        // §16.3-style checks a UA also makes.
        if msg
            .header(HeaderName::MaxForwards)
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u32>().ok())
            == Some(0)
        {
            el.txl.respond(now, &key, msg, 483, "Too Many Hops", &[]);
            return;
        }
        let app = self.app_for(msg, local_domain);
        let number = self.policy.normalize(&uri_user(msg));
        // A user registered here (Request-URI in a served domain) is called
        // where it registered from; any other number goes by the routing
        // table to a trunk.
        let user = el.registered_targets(&self.policy, msg, unix_ms);
        let (trunk, out_realm_index) = match &user {
            _ if app.is_some() => (None, Some(realm)),
            Some((_, realm)) => (None, Some(*realm)),
            None => match self.policy.route(&number, realm) {
                Some(t) => (Some(t), self.policy.trunks.get(t).map(|t| t.realm)),
                None => {
                    let reason = "no route for the number";
                    el.refuse(now, &key, msg, inb, (404, "Not Found"), reason);
                    return;
                }
            },
        };
        // A realm that requires SRTP takes no plain RTP offer: the media
        // would cross its side in cleartext (RFC 3264 §6: 488).
        if self
            .policy
            .realms
            .get(realm)
            .is_some_and(|r| r.srtp_required)
            && let Some(sdp) = sdp_body(msg)
            && offers_plain_rtp(sdp)
        {
            let reason = "SRTP (RTP/SAVP) is required in this realm";
            el.refuse(now, &key, msg, inb, (488, "Not Acceptable Here"), reason);
            return;
        }
        if let Err(r) = self.policy.take(now, realm, inb.remote.ip(), trunk) {
            let reason = match r {
                Refusal::Limit(what) => what,
                _ => "refused",
            };
            el.refuse(now, &key, msg, inb, (503, "Service Unavailable"), reason);
            return;
        }
        self.counters.calls += 1;
        self.tally.started(realm, trunk);
        tracing::debug!(
            call_id = %String::from_utf8_lossy(msg.call_id().unwrap_or_default()),
            source = %inb.remote,
            realm,
            trunk = ?trunk,
            "call admitted"
        );
        let id = self.next_id;
        self.next_id += 1;
        let Some((out_listener, out_srtp, out_webrtc)) = out_realm_index
            .and_then(|r| self.policy.realms.get(r))
            .map(|r| (r.listener, r.srtp, r.webrtc))
        else {
            return;
        };
        let in_srtp = self.policy.realms.get(realm).is_some_and(|r| r.srtp);
        let in_webrtc = self.policy.realms.get(realm).is_some_and(|r| r.webrtc);
        let from = msg.from().ok();
        let from_user = from
            .as_ref()
            .and_then(|f| f.uri.user)
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_else(|| "anonymous".into());
        let mut a_leg = Dialog::uas(msg, inb, in_srtp, |t| self.push_token(t, "a-tag"));
        a_leg.webrtc = in_webrtc;
        let mut b_local = out_listener.unwrap_or(inb.local);
        // A registered user reached over the other family than the realm's
        // first listener is called from the realm's listener of its family.
        if let (Some((targets, _)), Some(r)) = (&user, out_realm_index)
            && let Some(to) = targets.first()
            && to.address.is_ipv6() != b_local.is_ipv6()
            && let Some(l) = self.policy.udp_listener(r, to.address.is_ipv6())
        {
            b_local = l;
        }
        let mut b_leg = Dialog::uac(b_local, &from_user, out_srtp, |t| {
            self.push_token(t, "b-tag");
        });
        b_leg.webrtc = out_webrtc;
        // Headers of the caller's INVITE that carry meaning end to end.
        let mut passed = Vec::new();
        for f in msg.headers() {
            let keep = matches!(
                f.name,
                HeaderName::Allow | HeaderName::Supported | HeaderName::Require
            ) || (f.name == HeaderName::Other
                && (f.raw_name.eq_ignore_ascii_case(b"P-Asserted-Identity")
                    || f.raw_name.eq_ignore_ascii_case(b"Privacy")));
            if keep {
                passed.push((
                    String::from_utf8_lossy(f.raw_name).into_owned().into(),
                    String::from_utf8_lossy(f.value).into_owned().into(),
                ));
            }
        }
        // A trunk's peers are chosen at the first attempt (its names may
        // still be resolving); a registered user's now.
        let targets = match (trunk, user) {
            (None, Some((targets, _))) => targets,
            _ => Vec::new(),
        };
        let media_id = text(&[Str("b2b-"), Str(&self.boot), Str("-"), Number(id)]);
        let mut call = Box::new(Call {
            id,
            legs: [a_leg, b_leg],
            state: State::Routing,
            a_invite_key: key,
            a_invite: msg.as_bytes().to_vec(),
            b_invite_key: None,
            trunk,
            peers: Vec::new(),
            targets,
            routed: trunk.is_none(),
            attempt: 0,
            provisional: false,
            cancelled: false,
            b_offer: None,
            late_offer: sdp_body(msg).is_none(),
            b_ack: None,
            pending: None,
            source: inb.remote.ip(),
            in_realm: realm,
            media_id,
            invite_ms: unix_ms,
            ringing_ms: None,
            answer_ms: None,
            a_status: 0,
            b_status: 0,
            session_ms: None,
            session_deadline: 0,
            from_user,
            number,
            passed,
            busy: 0,
            deferred: VecDeque::new(),
            forks: Forks::default(),
            app: None,
            held: [false; 2],
        });
        // Session timer asked of leg B: ours, or the caller's if smaller.
        let se = self.config.session_expires;
        let asked = msg
            .header(HeaderName::SessionExpires)
            .and_then(session_timer::delta_secs);
        if se > 0 {
            let v = session_timer::interval(asked, se, self.config.min_se);
            call.passed
                .push(("Session-Expires".into(), text(&[Number(v.into())]).into()));
            call.passed.push((
                "Min-SE".into(),
                text(&[Number(self.config.min_se.into())]).into(),
            ));
            if !call
                .passed
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("Supported") && v.contains("timer"))
            {
                call.passed.push(("Supported".into(), "timer".into()));
            }
        }
        if let Some(t) = trunk.and_then(|t| self.policy.trunks.get(t)) {
            for rule in &t.headers {
                rule.apply(&mut call.passed);
            }
        }
        self.dialogs
            .insert(call.legs[0].call_id().as_bytes(), (id, Side::A));
        self.by_invite.insert(key, id);
        // RFC 3261 §17.2.1: a 100 (Trying) only if no other response goes
        // to the caller within 200 ms; leg B's ringing usually does.
        el.txl
            .schedule(Some(now + TRYING_MS), TimerRef::Call(id, CallTimer::Trying));
        if let Some(app) = app {
            match sdp_body(msg) {
                Some(sdp) => self.local_call(el, now, unix_ms, call, app, sdp),
                None => {
                    // The media server answers offers; a late offer is
                    // refused (RFC 3261 §13.3.1.1 allows it to decline).
                    el.b2b_reject_a(&call, now, 488);
                    call.a_status = 488;
                    self.finish(el, call, unix_ms, "no-offer");
                }
            }
            return;
        }
        match sdp_body(msg) {
            Some(sdp) => {
                let order = self.offer_towards_b(
                    trunk,
                    call.media_id.as_bytes(),
                    call.legs[0].remote_tag().as_bytes(),
                    sdp,
                    (towards(&call, Side::B), self.media_sides(&call, Side::A)),
                );
                self.calls.insert(id, call);
                self.order(el, now, unix_ms, order, Then::NewCallOffer { call: id });
            }
            None => self.attempt(el, now, unix_ms, call),
        }
    }

    /// Chooses the peers of a trunk call, in the order its attempts try
    /// them; false while a name of the trunk is still being resolved for
    /// the first time (the call waits for [`B2b::on_resolved`]).
    fn route(&mut self, el: &mut Element, now: Millis, call: &mut Call) -> bool {
        let Some(t) = call.trunk else {
            return true;
        };
        if !self.resolve_trunk(el, now, t) {
            return false;
        }
        let peers = self.policy.peers_for_call(t, now);
        let Some(trunk) = self.policy.trunks.get(t) else {
            return true;
        };
        call.targets = peers
            .iter()
            .filter_map(|p| trunk.peers.get(*p))
            .map(|p| {
                let ruri = match p.transport {
                    // Over TLS the Request-URI names the peer as its
                    // certificate does (RFC 5922): the trunk's domain for
                    // a peer its name gave, else its address.
                    Transport::Tls => {
                        let name = p.from_uri.and_then(|u| trunk.uris.get(u));
                        match name.filter(|u| u.name.ip.is_none()) {
                            Some(u) => text(&[
                                Str("sip:"),
                                Str(&call.number),
                                Str("@"),
                                Str(&u.name.host),
                                Str(";transport=tls"),
                            ]),
                            None => text(&[
                                Str("sip:"),
                                Str(&call.number),
                                Str("@"),
                                Addr(p.address),
                                Str(";transport=tls"),
                            ]),
                        }
                    }
                    _ => text(&[Str("sip:"), Str(&call.number), Str("@"), Addr(p.address)]),
                };
                Dest {
                    address: p.address,
                    transport: p.transport,
                    ruri,
                    conn: None,
                }
            })
            .collect();
        call.peers = peers;
        call.routed = true;
        true
    }

    /// Brings `trunk`'s peers up to date with what its names resolve to
    /// now (from the cache; a resolution is started for a name whose
    /// records expired, and its old servers serve until the answer comes).
    /// False while a name has never been resolved.
    fn resolve_trunk(&mut self, el: &mut Element, now: Millis, trunk: usize) -> bool {
        let Some(n) = self.policy.trunks.get(trunk).map(|t| t.uris.len()) else {
            return true;
        };
        let mut ready = true;
        for u in 0..n {
            let name = &self.policy.trunks[trunk].uris[u].name;
            match el.dns.lookup(now, name) {
                crate::dns::Lookup::Ready(r) => self.policy.set_resolved(trunk, u, &r.servers),
                crate::dns::Lookup::Failed(_) => self.policy.set_resolved(trunk, u, &[]),
                crate::dns::Lookup::Waiting => {
                    ready &= self.policy.trunks[trunk].uris[u].resolved;
                }
            }
        }
        ready
    }

    /// Sends the INVITE to the next peer, or fails the call when none is left.
    fn attempt(&mut self, el: &mut Element, now: Millis, unix_ms: u64, mut call: Box<Call>) {
        if !call.routed {
            if !self.route(el, now, &mut call) {
                self.dns_waiting.push(call.id);
                self.calls.insert(call.id, call);
                return;
            }
            if call.targets.is_empty() {
                self.counters.unresolved += 1;
            }
        }
        let Some(Dest {
            address,
            transport,
            ref ruri,
            conn,
        }) = call.targets.get(call.attempt as usize).cloned()
        else {
            let status = if call.b_status == 0 {
                503
            } else {
                map_status(call.b_status)
            };
            let Some(mut call) = self.announce(el, now, unix_ms, call, status) else {
                return;
            };
            el.b2b_reject_a(&call, now, status);
            call.a_status = status;
            self.finish(el, call, unix_ms, "rejected");
            return;
        };
        // A fresh dialog per attempt.
        if !call.legs[1].call_id().is_empty() {
            self.dialogs.remove(call.legs[1].call_id().as_bytes());
        }
        let mut call_id = std::mem::take(&mut self.scratch);
        call_id.clear();
        self.push_call_id(&mut call_id, "call-id", call.legs[1].local.ip());
        // A trunk's peer over TCP or TLS, or a user registered over a
        // stream, is called from its realm's listener of that transport
        // (a registered user over the connection its REGISTER came over).
        let realm = match call.trunk {
            Some(t) => self.policy.trunks.get(t).map(|t| t.realm),
            None => self.policy.realm_of_contact(address.ip(), transport),
        };
        let local = match transport {
            Transport::Udp => None,
            _ => realm.and_then(|r| self.policy.listener_for(r, transport)),
        };
        let leg = &mut call.legs[1];
        if let Some(local) = local {
            leg.set_transport(transport, local);
            leg.conn = conn;
        }
        leg.restart(&call_id, ruri, address);
        self.scratch = call_id;
        call.provisional = false;
        let branch = build::branch(&[leg.call_id().as_bytes(), b"invite"]);
        let body = call.b_offer.as_deref().unwrap_or_default();
        let bytes = leg.request("INVITE", 1, &branch, &call.passed, sdp_type(body), body);
        let hop = leg.hop();
        self.dialogs
            .insert(leg.call_id().as_bytes(), (call.id, Side::B));
        let ck = el.txl.keys.client(branch.as_bytes(), b"INVITE");
        call.b_invite_key = Some(ck);
        let purpose = CallTxn::Invite {
            call: call.id,
            attempt: call.attempt,
        };
        el.txl
            .start_client(now, ck, bytes, true, hop, Some(Owner::Call(purpose)));
        let timeout = call
            .trunk
            .and_then(|t| self.policy.trunks.get(t))
            .map_or(3000, |t| t.invite_timeout_ms);
        el.txl.schedule(
            Some(now + timeout),
            TimerRef::Call(call.id, CallTimer::Attempt(call.attempt)),
        );
        el.counters.forwarded += 1;
        self.calls.insert(call.id, call);
        el.txl.drain_client(&ck);
    }

    /// Ends a call: media deleted, limits released, CDR written, journal
    /// erased.
    fn finish(
        &mut self,
        el: &mut Element,
        mut call: Box<Call>,
        unix_ms: u64,
        reason: &'static str,
    ) {
        self.policy.release(call.source, call.trunk);
        for leg in &call.legs {
            if !leg.call_id().is_empty() {
                self.dialogs.remove(leg.call_id().as_bytes());
            }
        }
        self.by_invite.remove(&call.a_invite_key);
        if call.app.is_some() {
            self.apps_by_media.remove(&call.media_id);
        }
        if call.answer_ms.is_some() {
            self.journal.remove(call.id);
        }
        self.counters.ended += 1;
        tracing::debug!(
            call_id = %call.legs[0].call_id(),
            b_call_id = %call.legs[1].call_id(),
            reason,
            status = call.a_status,
            "call ended"
        );
        self.tally.ended(
            call.in_realm,
            call.trunk,
            call.answer_ms.is_some(),
            call.a_status,
        );
        let trunk = call.trunk.and_then(|t| self.policy.trunks.get(t));
        let peer = call
            .targets
            .get(call.attempt as usize)
            .or(call.targets.last())
            .map(|t| t.address.to_string())
            .unwrap_or_default();
        let cdr = Box::new(Cdr {
            // The call ends: its legs' texts are not needed again.
            a_call_id: call.legs[0].text.take_call_id(),
            b_call_id: call.legs[1].text.take_call_id(),
            from: std::mem::take(&mut call.from_user),
            to: std::mem::take(&mut call.number),
            source: call.source.to_string(),
            in_realm: self
                .policy
                .realms
                .get(call.in_realm)
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            trunk: trunk.map(|t| t.name.clone()).unwrap_or_default(),
            peer,
            attempts: (call.attempt + 1).min(call.targets.len().max(1) as u32),
            invite_ms: call.invite_ms,
            ringing_ms: call.ringing_ms,
            answer_ms: call.answer_ms,
            end_ms: unix_ms,
            duration_ms: call.answer_ms.map_or(0, |a| unix_ms.saturating_sub(a)),
            end_reason: reason,
            a_status: call.a_status,
            b_status: call.b_status,
            media: MediaTotals::default(),
        });
        // The record goes out with the relay's totals once it is deleted.
        let order = media::delete(call.media_id.as_bytes());
        self.order(el, 0, unix_ms, order, Then::Deleted { cdr });
    }

    fn cancel(
        &mut self,
        el: &mut Element,
        now: Millis,
        key: ServerKey,
        msg: &SipMessage<'_>,
        unix_ms: u64,
    ) {
        let invite_key = el.txl.server_key(msg, Some(b"INVITE"));
        let Some(id) = invite_key.and_then(|k| self.by_invite.get(&k).copied()) else {
            el.txl
                .respond(now, &key, msg, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        };
        el.txl.respond(now, &key, msg, 200, "OK", &[]);
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        if call.state == State::Up {
            self.calls.insert(id, call);
            return;
        }
        call.cancelled = true;
        if call.busy > 0 {
            // Finished when the relay's answer is back (b2b_then).
            self.calls.insert(id, call);
            return;
        }
        el.b2b_reject_a(&call, now, 487);
        call.a_status = 487;
        if call.provisional {
            el.b2b_cancel_b(&call, now);
        }
        // Without a provisional response the INVITE may still be answered:
        // the call stays until leg B's final response (a 2xx is ACKed and
        // hung up) or the attempt timer.
        if call.provisional || call.b_invite_key.is_none() {
            self.finish(el, call, unix_ms, "cancel");
        } else {
            self.calls.insert(id, call);
        }
    }

    fn ack_in(&mut self, el: &mut Element, now: Millis, unix_ms: u64, msg: &SipMessage<'_>) {
        let found = msg
            .call_id()
            .ok()
            .and_then(|cid| self.dialogs.get(cid).copied());
        let Some((id, side)) = found else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.busy > 0 {
            call.deferred.push_back(Deferred::Ack {
                msg: msg.as_bytes().to_vec(),
            });
            return;
        }
        let Some(p) = call.pending.take() else {
            return;
        };
        if p.side != side {
            call.pending = Some(p);
            return;
        }
        if !p.ack_answers {
            return;
        }
        // Late offer: the ACK carries the answer for the other leg.
        let other = side.other();
        match sdp_body(msg) {
            Some(sdp) => {
                let order = media::answer(
                    call.media_id.as_bytes(),
                    call.legs[side.index()].remote_tag().as_bytes(),
                    sdp,
                    call.legs[other.index()].protection(),
                );
                let then = Then::AckAnswer {
                    call: id,
                    side,
                    cseq: p.ack_cseq,
                };
                self.order(el, now, unix_ms, order, then);
            }
            None => el.b2b_ack_leg(call, other, p.ack_cseq, b""),
        }
    }

    fn in_dialog(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
    ) {
        let method = msg.method().unwrap_or(Method::Options);
        let found = msg
            .call_id()
            .ok()
            .and_then(|cid| self.dialogs.get(cid).copied());
        let Some((id, side)) = found else {
            self.counters.unknown_dialog += 1;
            el.txl
                .respond(now, &key, msg, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        };
        let Some(mut call) = self.calls.remove(&id) else {
            el.txl
                .respond(now, &key, msg, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        };
        // §12.2.2: the request must be this dialog's, in order; a target
        // refresh moves where the leg's requests go.
        if let Err(e) = call.legs[side.index()].on_request(msg) {
            let (status, reason) = e.sip_status();
            self.counters.unknown_dialog += u64::from(e == DialogError::NoSuchDialog);
            el.txl.respond(now, &key, msg, status, reason, &[]);
            self.calls.insert(id, call);
            return;
        }
        let other = side.other();
        match method {
            Method::Bye => {
                el.txl.respond(now, &key, msg, 200, "OK", &[]);
                if call.state == State::Up || !call.legs[other.index()].remote_tag().is_empty() {
                    if call.state != State::Up && other == Side::B {
                        el.b2b_cancel_b(&call, now);
                    } else {
                        el.b2b_local_request(&mut call, now, other, "BYE");
                    }
                }
                let reason = if side == Side::A {
                    "bye-caller"
                } else {
                    "bye-callee"
                };
                if call.state != State::Up {
                    el.b2b_reject_a(&call, now, 487);
                }
                self.finish(el, call, unix_ms, reason);
                return;
            }
            Method::Refer if self.config.reject_refer => {
                el.txl.respond(now, &key, msg, 603, "Declined", &[]);
            }
            _ if call.busy > 0 => call.deferred.push_back(Deferred::Request {
                key,
                msg: msg.as_bytes().to_vec(),
            }),
            _ if call.app.is_some() => {
                self.local_in_dialog(el, now, unix_ms, key, msg, call);
                return;
            }
            _ => {
                self.calls.insert(id, call);
                self.relay(el, now, unix_ms, id, key, msg, side);
                return;
            }
        }
        self.calls.insert(id, call);
    }

    /// Relays an in-dialog request from `side` to the other leg (its SDP
    /// through the relay first).
    #[allow(clippy::too_many_arguments)]
    fn relay(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        id: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
        side: Side,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let other = side.other();
        if call.legs[other.index()].remote_tag().is_empty() {
            el.txl
                .respond(now, &key, msg, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        }
        match sdp_body(msg) {
            Some(sdp) => {
                let order = if other == Side::B {
                    self.offer_towards_b(
                        call.trunk,
                        call.media_id.as_bytes(),
                        call.legs[side.index()].remote_tag().as_bytes(),
                        sdp,
                        (towards(call, other), self.media_sides(call, side)),
                    )
                } else {
                    media::offer(
                        call.media_id.as_bytes(),
                        call.legs[side.index()].remote_tag().as_bytes(),
                        sdp,
                        towards(call, other),
                        self.media_sides(call, side),
                    )
                };
                let then = Then::Relay {
                    call: id,
                    side,
                    key,
                    msg: msg.as_bytes().to_vec(),
                };
                self.order(el, now, unix_ms, order, then);
                if matches!(msg.method(), Some(Method::Invite | Method::Update)) {
                    self.hold_music(el, now, unix_ms, id, side, sdp);
                }
            }
            None => {
                let body = msg.body().to_vec();
                self.relay_send(el, now, id, key, msg, side, &body);
            }
        }
    }

    /// Sends a relayed request, with `body`, on the leg other than `side`.
    #[allow(clippy::too_many_arguments)]
    fn relay_send(
        &mut self,
        el: &mut Element,
        now: Millis,
        id: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
        side: Side,
        body: &[u8],
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let method = msg.method().unwrap_or(Method::Options);
        let other = side.other();
        let mut extra: Vec<(HeaderText, HeaderText)> = Vec::new();
        for f in msg.headers() {
            let keep = match f.name {
                HeaderName::ContentType
                | HeaderName::Event
                | HeaderName::SubscriptionState
                | HeaderName::ReferTo
                | HeaderName::ReferredBy
                | HeaderName::SessionExpires
                | HeaderName::MinSe
                | HeaderName::Supported
                | HeaderName::Require
                | HeaderName::Allow
                | HeaderName::Reason => true,
                HeaderName::RAck => false,
                _ => false,
            };
            if keep {
                extra.push((
                    String::from_utf8_lossy(f.raw_name).into_owned().into(),
                    String::from_utf8_lossy(f.value).into_owned().into(),
                ));
            }
        }
        if method == Method::Prack
            && let Some(rack) = msg.header(HeaderName::RAck)
        {
            // RAck: the RSeq, then the CSeq of the INVITE on the leg it
            // goes to.
            let rseq = RAck::parse(rack).map_or(1, |r| r.rseq);
            if other == Side::B {
                // The PRACK goes to the fork whose provisional it
                // acknowledges.
                call.forks.select_by_rseq(&mut call.legs[1], rseq);
            }
            let cseq = if other == Side::B {
                1
            } else {
                SipMessage::parse(&call.a_invite, Framing::Datagram, &Limits::default())
                    .ok()
                    .and_then(|m| m.cseq().ok().map(|c| c.seq))
                    .unwrap_or(1)
            };
            extra.push(("RAck".into(), RAck { rseq, cseq }.value().into()));
        }
        let m = method.as_bytes();
        let mname = String::from_utf8_lossy(m).into_owned();
        let leg = &mut call.legs[other.index()];
        let cseq = leg.next_cseq();
        let branch = build::branch(&[
            leg.call_id().as_bytes(),
            m,
            &cseq.to_le_bytes(),
            &now.to_le_bytes(),
        ]);
        let bytes = leg.request(&mname, cseq, &branch, &extra, None, body);
        let hop = leg.hop();
        el.b2b_send(
            now,
            hop,
            bytes,
            m,
            branch.as_bytes(),
            CallTxn::Relay {
                call: id,
                from: side,
                server: key,
                request: msg.as_bytes().to_vec(),
            },
        );
    }

    fn response_in(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        purpose: CallTxn,
        msg: &SipMessage<'_>,
    ) {
        let code = msg.status_code().unwrap_or(500);
        // A call waiting for the relay takes its responses in order.
        if let CallTxn::Invite { call, .. } | CallTxn::Relay { call, .. } = &purpose
            && let Some(c) = self.calls.get_mut(call)
            && c.busy > 0
        {
            c.deferred.push_back(Deferred::Response {
                purpose,
                msg: msg.as_bytes().to_vec(),
            });
            return;
        }
        match purpose {
            CallTxn::Invite { call, attempt } => {
                self.invite_response(el, now, unix_ms, call, attempt, code, msg);
            }
            CallTxn::Relay {
                call,
                from,
                server,
                request,
            } => {
                self.relay_response(el, now, call, from, server, &request, code, msg);
            }
            CallTxn::Local => {}
            CallTxn::Probe { trunk, peer } => self.policy.peer_answered(trunk, peer),
        }
    }

    /// A client transaction of the B2BUA timed out.
    fn timeout(&mut self, el: &mut Element, now: Millis, unix_ms: u64, purpose: CallTxn) {
        match purpose {
            CallTxn::Invite { call, attempt } => {
                if let Some(c) = self.calls.get(&call)
                    && c.attempt == attempt
                {
                    let peer = c.peers.get(attempt as usize).copied();
                    if let (Some(t), Some(p)) = (c.trunk, peer) {
                        self.policy.peer_failed(t, p, now);
                    }
                    self.next_attempt(el, now, unix_ms, call, 408);
                }
            }
            CallTxn::Relay {
                call,
                server,
                request,
                ..
            } => {
                let tag = self
                    .calls
                    .get(&call)
                    .map(|c| c.legs[0].local_tag().to_owned())
                    .unwrap_or_default();
                let bytes = reread(&request).map_or_else(Vec::new, |req| {
                    response_to(&req, 408, b"Request Timeout", &tag, &[], b"")
                });
                el.txl.server_respond(now, &server, 408, bytes);
            }
            CallTxn::Local | CallTxn::Probe { .. } => {}
        }
    }

    fn next_attempt(&mut self, el: &mut Element, now: Millis, unix_ms: u64, id: u64, code: u16) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        // The abandoned INVITE transaction stops retransmitting.
        if let Some(k) = call.b_invite_key.take() {
            el.txl.clients.remove(&k);
        }
        call.b_status = code;
        if call.cancelled {
            self.finish(el, call, unix_ms, "cancel");
            return;
        }
        call.attempt += 1;
        if (call.attempt as usize) < call.targets.len() {
            self.counters.failovers += 1;
        }
        self.attempt(el, now, unix_ms, call);
    }

    #[allow(clippy::too_many_arguments)]
    fn invite_response(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        id: u64,
        attempt: u32,
        code: u16,
        msg: &SipMessage<'_>,
    ) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        if call.attempt != attempt {
            self.calls.insert(id, call);
            return;
        }
        if let (Some(t), Some(&p)) = (call.trunk, call.peers.get(attempt as usize)) {
            if code == 503 {
                // Overloaded or out of service: the next server, and this
                // one avoided for a while (RFC 3263 §4.3).
                self.policy.peer_failed(t, p, now);
            } else {
                self.policy.peer_answered(t, p);
            }
        }
        if code < 200 {
            call.provisional = true;
            if code >= 180 && call.ringing_ms.is_none() {
                call.ringing_ms = Some(unix_ms);
            }
            if call.cancelled {
                el.b2b_cancel_b(&call, now);
                self.finish(el, call, unix_ms, "cancel");
                return;
            }
            if code == 100 {
                self.calls.insert(id, call);
                return;
            }
        }
        if code >= 300 {
            call.b_status = code;
            if fails_over(code) && !call.cancelled {
                self.calls.insert(id, call);
                self.next_attempt(el, now, unix_ms, id, code);
                return;
            }
            if !call.cancelled {
                let status = map_status(code);
                call = match self.announce(el, now, unix_ms, call, status) {
                    Some(c) => c,
                    // The caller hears the announcement first.
                    None => return,
                };
                el.b2b_reject_a(&call, now, status);
                call.a_status = status;
            }
            let reason = if call.cancelled { "cancel" } else { "rejected" };
            self.finish(el, call, unix_ms, reason);
            return;
        }
        // 18x or 2xx: the dialog with leg B takes shape (early, then
        // confirmed). A 2xx from a fork other than the one that answered
        // first is acknowledged and ended on its own (§13.2.2.4).
        if code >= 200 && call.state == State::Up && call.legs[1].is_other_fork(msg) {
            self.end_other_fork(el, now, &call, msg);
            self.calls.insert(id, call);
            return;
        }
        call.forks.on_response(&mut call.legs[1], msg, code);
        if code >= 200 && call.cancelled {
            // Answered after the caller gave up: ACK and hang up.
            call.b_status = code;
            el.b2b_ack_leg(&mut call, Side::B, 1, b"");
            el.b2b_local_request(&mut call, now, Side::B, "BYE");
            self.finish(el, call, unix_ms, "cancel");
            return;
        }
        // SDP for the caller goes through the relay first.
        if let Some(sdp) = sdp_body(msg) {
            // Late offer: the offer comes from leg B; the caller answers in
            // its ACK.
            let ack_answers = call.late_offer && code >= 200;
            let order = if call.late_offer {
                media::offer(
                    call.media_id.as_bytes(),
                    call.legs[1].remote_tag().as_bytes(),
                    sdp,
                    towards(&call, Side::A),
                    self.media_sides(&call, Side::B),
                )
            } else {
                media::answer(
                    call.media_id.as_bytes(),
                    call.legs[1].remote_tag().as_bytes(),
                    sdp,
                    call.legs[0].protection(),
                )
            };
            self.calls.insert(id, call);
            let then = Then::InviteResponse {
                call: id,
                code,
                msg: msg.as_bytes().to_vec(),
                ack_answers,
            };
            self.order(el, now, unix_ms, order, then);
            return;
        }
        self.calls.insert(id, call);
        self.invite_answered(el, now, unix_ms, id, code, msg, b"", false);
    }

    /// A 2xx to leg B's INVITE from a fork other than the one the call
    /// went on with (§13.2.2.4): acknowledged, then ended with a BYE, on a
    /// dialog of its own that the call never sees.
    fn end_other_fork(&mut self, el: &mut Element, now: Millis, call: &Call, msg: &SipMessage<'_>) {
        self.counters.forks_ended += 1;
        let mut fork = call.legs[1].clone();
        fork.on_response(msg, 200);
        let invite_cseq = msg.cseq().map_or(1, |c| c.seq);
        let tag = fork.remote_tag().as_bytes();
        let branch = build::branch(&[fork.call_id().as_bytes(), tag, b"fork-ack"]);
        let ack = fork.request("ACK", invite_cseq, &branch, &[], None, b"");
        el.txl.emit(fork.hop(), ack);
        fork.local_cseq = fork.local_cseq.max(invite_cseq);
        let cseq = fork.next_cseq();
        let branch = build::branch(&[
            fork.call_id().as_bytes(),
            fork.remote_tag().as_bytes(),
            b"fork-bye",
        ]);
        let bye = fork.request("BYE", cseq, &branch, &[], None, b"");
        el.b2b_send(
            now,
            fork.hop(),
            bye,
            b"BYE",
            branch.as_bytes(),
            CallTxn::Local,
        );
    }

    /// Leg B's 18x or 2xx goes to the caller, with `body` (the relay's SDP).
    #[allow(clippy::too_many_arguments)]
    fn invite_answered(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        id: u64,
        code: u16,
        msg: &SipMessage<'_>,
        body: &[u8],
        ack_answers: bool,
    ) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        if call.cancelled {
            // The caller gave up while the relay was busy with this answer.
            if code >= 200 {
                el.b2b_ack_leg(&mut call, Side::B, 1, b"");
                el.b2b_local_request(&mut call, now, Side::B, "BYE");
            } else {
                el.b2b_cancel_b(&call, now);
            }
            self.finish(el, call, unix_ms, "cancel");
            return;
        }
        let tag = msg.to().ok().and_then(|t| t.tag()).unwrap_or_default();
        // Header values of the response to the caller: ours, or borrowed
        // from leg B's response.
        let contact = [b"<", call.legs[0].contact().as_bytes(), b">"].concat();
        let mut session_expires = Vec::new();
        let mut extra: Vec<(HeaderName, &[u8])> = Vec::with_capacity(6);
        extra.push((HeaderName::Contact, &contact));
        for name in [HeaderName::RSeq, HeaderName::Require, HeaderName::Allow] {
            if let Some(v) = msg.header(name) {
                extra.push((name, v));
            }
        }
        let a_invite = std::mem::take(&mut call.a_invite);
        let a_inv = SipMessage::parse(&a_invite, Framing::Datagram, &Limits::default()).ok();
        if code >= 200 {
            call.b_status = code;
            call.a_status = code;
            call.state = State::Up;
            call.answer_ms = Some(unix_ms);
            self.counters.answered += 1;
            self.tally.answered(call.in_realm, call.trunk);
            call.b_invite_key = None;
            // Session timer: leg B's choice, else what the caller asked for.
            let a_timer = a_inv
                .as_ref()
                .is_some_and(|m| has_option(m, HeaderName::Supported, "timer"));
            let b_se = msg
                .header(HeaderName::SessionExpires)
                .and_then(session_timer::delta_secs);
            let a_se = a_inv
                .as_ref()
                .and_then(|m| m.header(HeaderName::SessionExpires))
                .and_then(session_timer::delta_secs);
            let interval = b_se.or(if a_timer {
                a_se.or(Some(self.config.session_expires))
                    .filter(|s| *s > 0)
            } else {
                None
            });
            if let Some(s) = interval {
                call.session_ms = Some(Millis::from(s) * 1000);
                call.session_deadline = now + Millis::from(s) * 1000;
                el.txl.schedule(
                    Some(call.session_deadline),
                    TimerRef::Call(id, CallTimer::Session),
                );
                if a_timer {
                    build::put_number(&mut session_expires, u64::from(s));
                    session_expires.extend_from_slice(b";refresher=uac");
                    extra.push((HeaderName::SessionExpires, &session_expires));
                    extra.push((HeaderName::Require, b"timer"));
                }
            }
            if !ack_answers {
                el.b2b_ack_leg(&mut call, Side::B, 1, b"");
            }
        } else if call.state == State::Routing && !tag.is_empty() {
            call.state = State::Early;
        }
        let reason = msg.reason_phrase().unwrap_or(b"OK");
        let bytes = a_inv.as_ref().map_or_else(Vec::new, |req| {
            response_to(req, code, reason, call.legs[0].local_tag(), &extra, body)
        });
        drop(a_inv);
        if code < 200 {
            call.a_invite = a_invite;
        } else {
            // Answered: what only later attempts or responses to the
            // caller's INVITE needed goes (a call holds less while it is up).
            drop(a_invite);
            call.b_offer = None;
            call.passed = Vec::new();
        }
        if code >= 200 {
            let server = call.a_invite_key;
            el.b2b_await_ack(
                &mut call,
                now,
                Side::A,
                server,
                bytes.clone(),
                ack_answers,
                1,
            );
            self.journal.put(id, &saved(&call));
        }
        el.txl.server_respond(now, &call.a_invite_key, code, bytes);
        self.calls.insert(id, call);
    }

    #[allow(clippy::too_many_arguments)]
    fn relay_response(
        &mut self,
        el: &mut Element,
        now: Millis,
        id: u64,
        from: Side,
        server: ServerKey,
        request: &[u8],
        code: u16,
        msg: &SipMessage<'_>,
    ) {
        if code == 100 {
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let to = from.other();
        let (method, req_had_sdp) = method_and_sdp(request);
        let is_invite = method == Method::Invite;
        if (200..300).contains(&code) && matches!(method, Method::Invite | Method::Update) {
            call.legs[to.index()].refresh_target(msg);
        }
        if let Some(sdp) = sdp_body(msg) {
            // An offer in a response to a request without SDP (late offer
            // in a re-INVITE) is answered in the ACK.
            let ack_answers = !req_had_sdp && is_invite && (200..300).contains(&code);
            let order = if req_had_sdp {
                media::answer(
                    call.media_id.as_bytes(),
                    call.legs[to.index()].remote_tag().as_bytes(),
                    sdp,
                    call.legs[from.index()].protection(),
                )
            } else {
                media::offer(
                    call.media_id.as_bytes(),
                    call.legs[to.index()].remote_tag().as_bytes(),
                    sdp,
                    towards(call, from),
                    media_sides(&self.policy, call, to),
                )
            };
            let then = Then::RelayResponse {
                call: id,
                from,
                server,
                request: request.to_vec(),
                code,
                msg: msg.as_bytes().to_vec(),
                ack_answers,
            };
            self.order(el, now, now + el.unix_base, order, then);
            return;
        }
        let body = msg.body().to_vec();
        self.relay_answered(el, now, id, from, server, request, code, msg, &body, false);
    }

    /// The response to a relayed request goes back to `from`, with `body`.
    #[allow(clippy::too_many_arguments)]
    fn relay_answered(
        &mut self,
        el: &mut Element,
        now: Millis,
        id: u64,
        from: Side,
        server: ServerKey,
        request: &[u8],
        code: u16,
        msg: &SipMessage<'_>,
        body: &[u8],
        ack_answers: bool,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let to = from.other();
        let (method, _) = method_and_sdp(request);
        let is_invite = method == Method::Invite;
        let mut extra: Vec<(HeaderName, Vec<u8>)> = Vec::new();
        if matches!(method, Method::Invite | Method::Update) && code < 300 {
            extra.push((
                HeaderName::Contact,
                text(&[Str("<"), Str(call.legs[from.index()].contact()), Str(">")]).into_bytes(),
            ));
        }
        for name in [
            HeaderName::RSeq,
            HeaderName::Require,
            HeaderName::SessionExpires,
            HeaderName::Allow,
            HeaderName::Supported,
        ] {
            if let Some(v) = msg.header(name) {
                extra.push((name, v.to_vec()));
            }
        }
        let extra_refs: Vec<(HeaderName, &[u8])> =
            extra.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let reason = msg.reason_phrase().unwrap_or(b"OK");
        let bytes = reread(request).map_or_else(Vec::new, |req| {
            response_to(&req, code, reason, "", &extra_refs, body)
        });
        if (200..300).contains(&code) && matches!(method, Method::Invite | Method::Update) {
            // A refresh: the session interval starts again.
            if let Some(ms) = call.session_ms {
                call.session_deadline = now + ms;
                el.txl.schedule(
                    Some(call.session_deadline),
                    TimerRef::Call(id, CallTimer::Session),
                );
            }
        }
        if is_invite && (200..300).contains(&code) {
            let cseq = msg
                .cseq()
                .map(|c| c.seq)
                .unwrap_or(call.legs[to.index()].local_cseq);
            if !ack_answers {
                el.b2b_ack_leg(call, to, cseq, b"");
            }
            el.b2b_await_ack(call, now, from, server, bytes.clone(), ack_answers, cseq);
        }
        el.txl.server_respond(now, &server, code, bytes);
    }

    /// A response with no client transaction: a retransmitted 2xx of leg B
    /// gets its ACK again.
    fn stray_response(&mut self, el: &mut Element, now: Millis, msg: &SipMessage<'_>) {
        let code = msg.status_code().unwrap_or(0);
        let invite = msg.cseq().is_ok_and(|c| c.method == Method::Invite);
        let Ok(cid) = msg.call_id() else {
            return;
        };
        let Some((id, Side::B)) = self.dialogs.get(cid).copied() else {
            return;
        };
        if !(200..300).contains(&code) || !invite {
            return;
        }
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        if call.legs[1].is_other_fork(msg) {
            self.end_other_fork(el, now, &call, msg);
        } else if let Some(ack) = call.b_ack.clone() {
            // The 2xx again: its ACK again (§13.2.2.4).
            el.txl.emit(call.legs[1].hop(), ack);
        }
        self.calls.insert(id, call);
    }

    /// A call timer fired.
    fn timer(&mut self, el: &mut Element, now: Millis, unix_ms: u64, id: u64, t: CallTimer) {
        match t {
            CallTimer::Attempt(n) => {
                let stalled = self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.attempt == n && !c.provisional && c.state == State::Routing);
                if stalled {
                    if let Some(c) = self.calls.get(&id)
                        && let Some(&p) = c.peers.get(n as usize)
                        && let Some(trunk) = c.trunk
                    {
                        self.policy.peer_failed(trunk, p, now);
                    }
                    self.next_attempt(el, now, unix_ms, id, 408);
                }
            }
            CallTimer::Trying => {
                if let Some(call) = self.calls.get(&id)
                    && el
                        .txl
                        .servers
                        .get(&call.a_invite_key)
                        .is_some_and(|e| !e.txn.responded())
                    && let Ok(req) =
                        SipMessage::parse(&call.a_invite, Framing::Datagram, &el.config.limits)
                {
                    let mut out = Vec::with_capacity(300);
                    write_response(&req, 100, b"Trying", None, &[], &mut out);
                    el.txl.server_respond(now, &call.a_invite_key, 100, out);
                }
            }
            CallTimer::Retransmit => {
                if let Some(call) = self.calls.get_mut(&id)
                    && let Some(p) = call.pending.as_mut()
                {
                    if now >= p.give_up {
                        // No ACK (§13.3.1.4): the call is hung up on both legs.
                        call.pending = None;
                        if let Some(mut call) = self.calls.remove(&id) {
                            el.b2b_local_request(&mut call, now, Side::A, "BYE");
                            el.b2b_local_request(&mut call, now, Side::B, "BYE");
                            self.finish(el, call, unix_ms, "ack-timeout");
                        }
                    } else {
                        let (server, bytes) = (p.server, p.bytes.clone());
                        p.interval = (p.interval * 2).min(el.config.timers.t2);
                        let next = now + p.interval;
                        if let Some(e) = el.txl.servers.get_mut(&server) {
                            e.txn.send_response(now, 200, bytes);
                            el.txl.drain_server(&server);
                        } else if let Some(c) = self.calls.get(&id) {
                            let side = c.pending.as_ref().map_or(Side::A, |p| p.side);
                            el.txl.emit(c.legs[side.index()].hop(), bytes);
                        }
                        el.txl
                            .schedule(Some(next), TimerRef::Call(id, CallTimer::Retransmit));
                    }
                }
            }
            CallTimer::App(t) => self.app_timer(el, now, unix_ms, id, t),
            CallTimer::Session => {
                let expired = self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.session_ms.is_some() && c.session_deadline <= now);
                if expired && let Some(mut call) = self.calls.remove(&id) {
                    self.counters.session_expired += 1;
                    el.b2b_local_request(&mut call, now, Side::A, "BYE");
                    el.b2b_local_request(&mut call, now, Side::B, "BYE");
                    self.finish(el, call, unix_ms, "session-timer");
                }
            }
        }
    }

    /// A health-check round: trunks' names refreshed where their records
    /// expired, then OPTIONS to every peer of every checked trunk (by
    /// control-plane shard 0 alone: the others learn the peers' health
    /// from the policy's shared load).
    fn health(&mut self, el: &mut Element, now: Millis) {
        for t in 0..self.policy.trunks.len() {
            self.resolve_trunk(el, now, t);
        }
        let probes = if self.shard.0 == 0 {
            self.policy.probe_round(now)
        } else {
            Vec::new()
        };
        for (trunk, peer) in probes {
            let Some(t) = self.policy.trunks.get(trunk) else {
                continue;
            };
            let Some((address, transport)) = t.peers.get(peer).map(|p| (p.address, p.transport))
            else {
                continue;
            };
            let Some(local) = self.policy.listener_for(t.realm, transport) else {
                continue;
            };
            let mut leg = Dialog::uac(local, "rvoip", false, |t| {
                self.push_token(t, "probe-tag");
            });
            leg.set_transport(transport, local);
            let mut call_id = String::with_capacity(48);
            self.push_call_id(&mut call_id, "probe", local.ip());
            let uri = match transport {
                Transport::Udp => format!("sip:{address}"),
                t => format!("sip:{address};transport={}", t.param()),
            };
            leg.restart(&call_id, &uri, address);
            let branch = build::branch(&[leg.call_id().as_bytes(), b"probe"]);
            let bytes = leg.request("OPTIONS", 1, &branch, &[], None, b"");
            el.b2b_send(
                now,
                leg.hop(),
                bytes,
                b"OPTIONS",
                branch.as_bytes(),
                CallTxn::Probe { trunk, peer },
            );
        }
        let every = self.config.health_interval_ms;
        el.txl.schedule(Some(now + every), TimerRef::Health);
    }
}

impl TransactionUser for B2b {
    /// The UAS of the caller's leg: Require and the session body are its
    /// to check (RFC 3261 §8.2.2.3, §8.2.3).
    fn role(&self) -> crate::admission::Role {
        crate::admission::Role::Sbc
    }

    fn admit(
        &mut self,
        el: &mut Element,
        now: Millis,
        key: ServerKey,
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
    ) -> bool {
        self.admit_source(el, now, key, msg, inb)
    }

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
        self.request_in(el, now, unix_ms, key, msg, inb, local_domain);
    }

    fn on_ack(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        msg: &SipMessage<'_>,
        _inb: &Inbound<'_>,
    ) {
        self.ack_in(el, now, unix_ms, msg);
    }

    fn on_response(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        owner: Owner,
        msg: &SipMessage<'_>,
        _inb: &Inbound<'_>,
    ) {
        if let Owner::Call(purpose) = owner {
            self.response_in(el, now, unix_ms, purpose, msg);
        }
    }

    fn on_stray_response(
        &mut self,
        el: &mut Element,
        now: Millis,
        msg: &SipMessage<'_>,
        _inb: &Inbound<'_>,
    ) {
        self.stray_response(el, now, msg);
    }

    fn on_event(&mut self, el: &mut Element, now: Millis, unix_ms: u64, event: LayerEvent) {
        // A peer that cannot be reached is a peer that does not answer.
        if let LayerEvent::TimedOut(Owner::Call(purpose))
        | LayerEvent::Unreachable(Owner::Call(purpose)) = event
        {
            self.timeout(el, now, unix_ms, purpose);
        }
    }

    fn on_timer(&mut self, el: &mut Element, now: Millis, unix_ms: u64, timer: TimerRef) {
        match timer {
            TimerRef::Call(id, t) => self.timer(el, now, unix_ms, id, t),
            TimerRef::Health => self.health(el, now),
            _ => {}
        }
    }

    fn on_resolved(&mut self, el: &mut Element, now: Millis, unix_ms: u64) {
        for t in 0..self.policy.trunks.len() {
            self.resolve_trunk(el, now, t);
        }
        for id in std::mem::take(&mut self.dns_waiting) {
            if let Some(call) = self.calls.remove(&id) {
                // Cancelled meanwhile: it was finished without this list.
                self.attempt(el, now, unix_ms, call);
            }
        }
    }

    fn on_tick(&mut self, el: &mut Element, now: Millis) {
        if self.health_started {
            return;
        }
        self.health_started = true;
        el.txl.schedule(Some(now), TimerRef::Health);
        for c in self.calls.values_mut() {
            // Recovered calls: whatever refresh was due gets a full
            // interval from now.
            if c.session_deadline != 0 {
                continue;
            }
            if let Some(ms) = c.session_ms {
                c.session_deadline = now + ms;
                el.txl
                    .schedule(Some(now + ms), TimerRef::Call(c.id, CallTimer::Session));
            }
        }
    }

    fn poll_media(&mut self, el: &mut Element, now: Millis, unix_ms: u64) {
        self.take_media_replies(el, now, unix_ms);
    }

    fn media_pending(&self) -> bool {
        !self.orders.is_empty()
    }

    fn poll_cdr(&mut self) -> Option<Cdr> {
        self.cdrs.pop_front()
    }

    fn as_b2bua(&self) -> Option<&B2b> {
        Some(self)
    }

    fn as_b2bua_mut(&mut self) -> Option<&mut B2b> {
        Some(self)
    }
}

/// Leg-level steps of the B2BUA that need only the element.
impl Element {
    /// Keeps the 2xx `bytes` sent through server transaction `server` to
    /// `side` of call `id`, retransmitted until its ACK (RFC 3261
    /// §13.3.1.4); `ack_answers`: the ACK carries the answer for the
    /// other leg's INVITE with CSeq `ack_cseq`.
    #[allow(clippy::too_many_arguments)]
    fn b2b_await_ack(
        &mut self,
        call: &mut Call,
        now: Millis,
        side: Side,
        server: ServerKey,
        bytes: Vec<u8>,
        ack_answers: bool,
        ack_cseq: u32,
    ) {
        call.pending = Some(Pending2xx {
            side,
            server,
            bytes,
            interval: self.config.timers.t1,
            give_up: now + 64 * self.config.timers.t1,
            ack_answers,
            ack_cseq,
        });
        self.txl.schedule(
            Some(now + self.config.timers.t1),
            TimerRef::Call(call.id, CallTimer::Retransmit),
        );
    }

    /// Sends a request of the SBC's own (BYE) on `side` of `call`.
    fn b2b_local_request(&mut self, call: &mut Call, now: Millis, side: Side, method: &str) {
        let leg = &mut call.legs[side.index()];
        if leg.remote_tag().is_empty() {
            return;
        }
        leg.local_cseq += 1;
        let branch = build::branch(&[
            leg.call_id().as_bytes(),
            method.as_bytes(),
            &leg.local_cseq.to_le_bytes(),
        ]);
        let bytes = leg.request(method, leg.local_cseq, &branch, &[], None, b"");
        let hop = leg.hop();
        self.b2b_send(
            now,
            hop,
            bytes,
            method.as_bytes(),
            branch.as_bytes(),
            CallTxn::Local,
        );
    }

    /// Cancels leg B's INVITE (its client transaction holds the request;
    /// once that has ended there is nothing to cancel).
    fn b2b_cancel_b(&mut self, call: &Call, now: Millis) {
        let Some(e) = call.b_invite_key.and_then(|k| self.txl.clients.get(&k)) else {
            return;
        };
        let Ok(inv) = SipMessage::parse(e.txn.request(), Framing::Datagram, &Limits::default())
        else {
            return;
        };
        // A CANCEL carries its INVITE's branch (RFC 3261 §9.1).
        let branch = inv
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(<[u8]>::to_vec))
            .unwrap_or_default();
        if let Some(cancel) = build::cancel_for(&inv) {
            self.b2b_send(
                now,
                call.legs[1].hop(),
                cancel,
                b"CANCEL",
                &branch,
                CallTxn::Local,
            );
        }
    }

    /// The contacts of a user registered here, best first, each as where
    /// to send (the address its REGISTER came from over UDP: behind NAT that
    /// is what reaches it) and the Request-URI (its contact); and the realm
    /// they are in.
    fn registered_targets(
        &self,
        policy: &Policy,
        msg: &SipMessage<'_>,
        unix_ms: u64,
    ) -> Option<(Vec<Dest>, usize)> {
        // An SBC that is nobody's registrar looks no further.
        if self.registrar.location.lock().is_empty() {
            return None;
        }
        let uri = msg.request_uri().ok()?;
        uri.user?;
        if !uri.host.is_some_and(|h| self.is_local_host(&h, uri.port)) {
            return None;
        }
        let aor = self.registrar.aor(&uri)?;
        let mut bindings = self.registrar.location.lock().lookup(&aor, unix_ms);
        bindings.sort_by_key(|x| std::cmp::Reverse(x.q));
        // Over UDP the address the REGISTER came from; over a stream the
        // connection it came over (a browser over WebSocket can be reached
        // no other way).
        let targets: Vec<Dest> = bindings
            .iter()
            .filter_map(|x| {
                let s = Source::parse(&x.source)?;
                Some(Dest {
                    address: s.address,
                    transport: s.transport,
                    ruri: x.contact.clone(),
                    conn: s.conn,
                })
            })
            .collect();
        let first = targets.first()?;
        let realm = policy.realm_of_contact(first.address.ip(), first.transport)?;
        Some((targets, realm))
    }

    fn b2b_reject_a(&mut self, call: &Call, now: Millis, status: u16) {
        let bytes = reread(&call.a_invite).map_or_else(Vec::new, |req| {
            let reason = crate::element::reason_phrase(status).as_bytes();
            response_to(&req, status, reason, call.legs[0].local_tag(), &[], b"")
        });
        if !bytes.is_empty() {
            self.counters.generated += 1;
            self.txl
                .server_respond(now, &call.a_invite_key, status, bytes);
        }
    }

    fn b2b_send(
        &mut self,
        now: Millis,
        leg_hop: Hop,
        bytes: Vec<u8>,
        method: &[u8],
        branch: &[u8],
        purpose: CallTxn,
    ) {
        let ck = self.txl.keys.client(branch, method);
        self.txl.start_client(
            now,
            ck,
            bytes,
            method == b"INVITE",
            leg_hop,
            Some(Owner::Call(purpose)),
        );
    }

    /// Acknowledges a 2xx to the INVITE with CSeq `cseq` on `side`'s leg,
    /// with `body` (a late offer's answer); kept to be sent again when the
    /// 2xx is.
    fn b2b_ack_leg(&mut self, call: &mut Call, side: Side, cseq: u32, body: &[u8]) {
        let leg = &call.legs[side.index()];
        let branch = build::branch(&[leg.call_id().as_bytes(), b"ack", &cseq.to_le_bytes()]);
        let ack = leg.request("ACK", cseq, &branch, &[], sdp_type(body), body);
        let hop = leg.hop();
        if side == Side::B {
            call.b_ack = Some(ack.clone());
        }
        self.txl.emit(hop, ack);
    }
}

/// The method of a stored request, and whether it carried SDP.
fn method_and_sdp(request: &[u8]) -> (Method<'_>, bool) {
    match SipMessage::parse(request, Framing::Datagram, &Limits::default()) {
        Ok(r) => (
            r.method().unwrap_or(Method::Options),
            sdp_body(&r).is_some(),
        ),
        Err(_) => (Method::Options, false),
    }
}

/// A call's journal record, borrowed from the call: it serializes as the
/// [`SavedCall`] it is read back as (same fields, same order).
#[derive(Serialize)]
struct SavedCallRef<'a> {
    legs: &'a [Dialog; 2],
    trunk: Option<usize>,
    peer: Option<usize>,
    source: IpAddr,
    in_realm: usize,
    media_id: &'a str,
    invite_ms: u64,
    answer_ms: u64,
    session_ms: Option<Millis>,
    from_user: &'a str,
    number: &'a str,
    attempts: u32,
}

fn saved(c: &Call) -> SavedCallRef<'_> {
    SavedCallRef {
        legs: &c.legs,
        trunk: c.trunk,
        peer: c.peers.get(c.attempt as usize).copied(),
        source: c.source,
        in_realm: c.in_realm,
        media_id: &c.media_id,
        invite_ms: c.invite_ms,
        answer_ms: c.answer_ms.unwrap_or(c.invite_ms),
        session_ms: c.session_ms,
        from_user: &c.from_user,
        number: &c.number,
        attempts: c.attempt + 1,
    }
}
