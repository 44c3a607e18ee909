//! The relay's state machine, sans-IO: which local endpoint belongs to which
//! call leg, where each leg's peer is, and what to do with each packet.
//!
//! Driving contract, one `Relay` per worker:
//! 1. the control side creates a session ([`Relay::create_session`]), opens
//!    sockets for its legs through the I/O driver, and binds them here
//!    ([`Relay::bind_endpoint`]); SDP updates go through [`Relay::set_peer`];
//! 2. for every received datagram the driver calls [`Relay::on_datagram`]
//!    with the current time and the receive buffer, and sends what it returns
//!    (the packet may have been decrypted or encrypted in place, so its length
//!    may change); nothing here allocates;
//! 3. about once a second the driver calls [`Relay::tick`], which runs the
//!    media-timeout timer wheel;
//! 4. [`Relay::remove_session`] returns the endpoints to close.
//!
//! SRTP legs ([`Relay::set_crypto`]): a packet from an SRTP peer is
//! authenticated and decrypted before it is validated or latched on (so only
//! a keyed peer can move the latch); a packet towards an SRTP peer is
//! encrypted after routing. SRTP→RTP, RTP→SRTP and SRTP→SRTP with different
//! keys per leg all go through the same two steps.

use std::net::{IpAddr, SocketAddr};

use smallvec::SmallVec;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::pcap::CapPacket;

use super::bundle::{BundleDemux, BundleLine};
use super::dtls::DtlsIdentity;
use super::ice::{self, Kind, Refusal};
use super::rtp::{PacketError, check_rtcp, looks_like_rtcp, parse_rtp, strip_rtcp_feedback};
use super::services::{
    EventSink, LineServices, LocalMode, MediaEvent, RecPacket, Room, ServiceCounters, ServiceOp,
    Terminal, Verdict, room_header, room_prompt,
};
use super::stats::StreamStats;
use super::transcode::{LegCodec, StageCounters, Transcoder, needs_transcoding};
use super::webrtc::{WebRtcLeg, WebRtcPlan};
use crate::srtp::{SrtpContext, SrtpError, SrtpParams};

/// Identifies a local endpoint (a bound socket) within one worker.
pub type EndpointId = u32;

/// Identifies a session within one worker.
pub type SessionId = u32;

/// The two sides of a call, for every part of rvoip that sees one: A
/// offered first (a B2BUA's caller leg, where rvoip is the UAS), B answered
/// (the called leg, where rvoip is the UAC).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Side {
    /// The side whose tag made the first offer.
    A,
    /// The other side.
    B,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    /// 0 for A, 1 for B: the side's slot in a pair.
    pub fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// RTP or RTCP port of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The RTP port (also RTCP when muxed).
    Rtp,
    /// The separate RTCP port.
    Rtcp,
}

/// How a leg learns where its peer really is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchMode {
    /// Symmetric RTP: the first packet's source becomes the peer, whatever the
    /// SDP said (NAT traversal). A silent peer may be replaced by a new source
    /// after [`RelayConfig::relatch_idle_ms`].
    Learning,
    /// Only packets from the address in the SDP are accepted.
    Strict,
}

/// Relay policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Latching.
    pub latch: LatchMode,
    /// A latched source silent this long may be replaced by a new one.
    pub relatch_idle_ms: u64,
    /// A session with no packets for this long is reported timed out.
    pub media_timeout_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            latch: LatchMode::Learning,
            relatch_idle_ms: 2_000,
            media_timeout_ms: 60_000,
        }
    }
}

/// What the SDP says about a leg's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerSpec {
    /// Where the peer receives RTP.
    pub rtp: Option<SocketAddr>,
    /// Where the peer receives RTCP (RFC 3605 `a=rtcp`, else RTP port + 1).
    pub rtcp: Option<SocketAddr>,
    /// Whether the peer multiplexes RTCP on its RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// RTP clock rate of the first codec, for jitter.
    pub clock_rate: u32,
    /// Whether the peer's profile has RTCP feedback (RFC 4585: AVPF,
    /// SAVPF): feedback from the other side reaches it; a peer without it
    /// gets the other side's RTCP with the feedback messages taken out.
    pub feedback: bool,
}

/// Packet and octet counts of RTCP on a leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpCounters {
    /// Packets accepted.
    pub packets: u64,
    /// Octets accepted.
    pub bytes: u64,
    /// Packets dropped.
    pub errors: u64,
}

/// One side of one media stream.
#[derive(Debug, Clone, Default)]
pub struct Leg {
    /// Local RTP endpoint (where this side's peer sends).
    pub rtp_ep: Option<EndpointId>,
    /// Local RTCP endpoint, when RTCP is not multiplexed towards this peer.
    pub rtcp_ep: Option<EndpointId>,
    /// Local RTP port (RTCP, when separate, is the next one); 0 before allocation.
    pub local_port: u16,
    /// The relay address its endpoints are on (none: the IPv4 address).
    pub local_ip: Option<IpAddr>,
    /// The peer, as the SDP describes it.
    pub peer: PeerSpec,
    /// The RTP source latched on.
    pub latched_rtp: Option<SocketAddr>,
    /// The RTCP source latched on.
    pub latched_rtcp: Option<SocketAddr>,
    /// RTP received from this side's peer.
    pub rtp_in: StreamStats,
    /// RTCP received from this side's peer.
    pub rtcp_in: RtcpCounters,
    /// Packets sent to this side's peer.
    pub sent_packets: u64,
    /// Octets sent to this side's peer.
    pub sent_bytes: u64,
    /// SRTP/SRTCP packets from this side's peer dropped (auth, replay, ...).
    pub srtp_in_errors: u64,
    /// Packets towards this side's peer that could not be protected.
    pub srtp_out_errors: u64,
    /// The media line whose transport this leg shares (BUNDLE, RFC 9143):
    /// its packets come and go through that line's endpoint, ICE, DTLS and
    /// SRTP. None: its own.
    pub bundle: Option<u16>,
}

impl Leg {
    /// Where RTP for this side's peer goes.
    pub fn rtp_destination(&self) -> Option<SocketAddr> {
        self.latched_rtp.or(self.peer.rtp)
    }

    /// Where RTCP for this side's peer goes, and out of which endpoint.
    fn rtcp_route(&self) -> Option<(EndpointId, SocketAddr)> {
        if self.peer.rtcp_mux || self.rtcp_ep.is_none() {
            Some((self.rtp_ep?, self.latched_rtp.or(self.peer.rtp)?))
        } else {
            let dst = self.latched_rtcp.or(self.peer.rtcp).or_else(|| {
                let mut a = self.latched_rtp.or(self.peer.rtp)?;
                a.set_port(a.port().wrapping_add(1));
                Some(a)
            })?;
            Some((self.rtcp_ep?, dst))
        }
    }
}

/// The two legs of one `m=` line.
#[derive(Debug, Clone, Default)]
pub struct MediaPair {
    /// Leg A and leg B.
    pub legs: [Leg; 2],
}

impl MediaPair {
    /// The leg of `side`.
    pub fn leg(&self, side: Side) -> &Leg {
        &self.legs[side.index()]
    }
    /// The leg of `side`, mutable.
    pub fn leg_mut(&mut self, side: Side) -> &mut Leg {
        &mut self.legs[side.index()]
    }
}

/// One call's media.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// One pair of legs per media line, in SDP order.
    pub medias: SmallVec<[MediaPair; 2]>,
    /// Creation time, relay milliseconds.
    pub created_ms: u64,
    /// Last packet seen on any leg, relay milliseconds.
    pub last_packet_ms: u64,
    /// Set once no packet arrived for the media timeout.
    pub timed_out: bool,
    /// Side A's, side B's bundle: how what arrives on its transport is
    /// told apart per media line.
    pub bundles: [Option<Box<BundleDemux>>; 2],
}

/// Where an endpoint belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    session: SessionId,
    media: u16,
    side: Side,
    component: Component,
}

/// SRTP keying of one leg (from SDES); `None` means plain RTP that way.
#[derive(Debug, Clone, Default)]
pub struct LegSrtp {
    /// Keys the leg's peer protects its packets with (rvoip unprotects).
    pub rx: Option<SrtpParams>,
    /// Keys rvoip protects packets towards the peer with.
    pub tx: Option<SrtpParams>,
}

/// The SRTP contexts of one leg. Kept apart from [`Leg`], so that session
/// snapshots never copy keys.
#[derive(Debug, Default)]
struct LegCrypto {
    rx: Option<Box<SrtpContext>>,
    tx: Option<Box<SrtpContext>>,
    /// ICE and DTLS, on a WebRTC leg: its SRTP keys come from the DTLS
    /// handshake, and nothing goes to its peer before they do.
    webrtc: Option<Box<WebRtcLeg>>,
}

impl LegCrypto {
    /// Whether packets may go to this leg's peer at `now_ms`: a WebRTC leg
    /// only once its DTLS gave keys, and while the peer's consent holds
    /// (a check answered within 30 s, RFC 7675 §5.1).
    fn may_send(&self, now_ms: u64) -> bool {
        self.webrtc.as_ref().is_none_or(|w| {
            w.keyed
                && (w.ice.consent(now_ms) || w.checks.as_ref().is_some_and(|c| c.consent(now_ms)))
        })
    }
}

/// A context for `params`, keeping `current` when the keys are unchanged (a
/// re-offer with the same key continues the same crypto context: same ROC,
/// same replay window). `Err` if the key does not fit its suite.
fn context_for(
    current: Option<Box<SrtpContext>>,
    params: Option<&SrtpParams>,
) -> Result<Option<Box<SrtpContext>>, ()> {
    match (current, params) {
        (_, None) => Ok(None),
        (Some(c), Some(p)) if c.uses(p) => Ok(Some(c)),
        (_, Some(p)) => SrtpContext::new(p).map(|c| Some(Box::new(c))).ok_or(()),
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the packet (as it now is in the buffer) out of endpoint `via` to `to`.
    Forward {
        /// Local endpoint to send from.
        via: EndpointId,
        /// Destination.
        to: SocketAddr,
    },
    /// Drop it; the reason was counted.
    Drop(DropReason),
    /// The processing stage took it (a transcoded call): what it makes
    /// leaves through [`Relay::poll_transmit`].
    Consumed,
}

/// A packet the processing stage made, in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Local endpoint to send from.
    pub via: EndpointId,
    /// Destination.
    pub to: SocketAddr,
    /// Octets in the buffer.
    pub len: usize,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The endpoint belongs to no session (closed meanwhile).
    UnknownEndpoint,
    /// Not valid RTP or RTCP.
    Malformed(PacketError),
    /// From a source other than the latched (or, strict, the SDP) peer.
    WrongSource,
    /// The other side's peer is not known yet (no answer, no packet).
    NoDestination,
    /// SRTP/SRTCP refused it (from an SRTP peer) or could not protect it
    /// (towards one).
    Srtp(SrtpError),
    /// Its sender's media or DTMF is blocked (ng `block media`/`block DTMF`).
    Blocked,
    /// On a bundle transport, nothing tied it to a media line.
    Unbundled,
}

/// SRTP drops of one worker, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrtpDrops {
    /// Shorter than header, index, MKI and tag.
    pub truncated: u64,
    /// Bad version or header.
    pub malformed: u64,
    /// Authentication tag did not verify (tampering, wrong key).
    pub auth_failed: u64,
    /// Replayed.
    pub replayed: u64,
    /// Older than the replay window.
    pub too_old: u64,
    /// Unknown MKI.
    pub unknown_mki: u64,
    /// Master key lifetime used up.
    pub key_expired: u64,
    /// No room for the tag in the buffer.
    pub no_room: u64,
}

impl SrtpDrops {
    fn count(&mut self, e: SrtpError) {
        let c = match e {
            SrtpError::Truncated => &mut self.truncated,
            SrtpError::Malformed => &mut self.malformed,
            SrtpError::AuthFailed => &mut self.auth_failed,
            SrtpError::Replayed => &mut self.replayed,
            SrtpError::TooOld => &mut self.too_old,
            SrtpError::UnknownMki => &mut self.unknown_mki,
            SrtpError::KeyExpired => &mut self.key_expired,
            SrtpError::NoRoom => &mut self.no_room,
        };
        *c += 1;
    }

    /// Adds `o`'s counts.
    pub fn add(&mut self, o: &SrtpDrops) {
        self.truncated += o.truncated;
        self.malformed += o.malformed;
        self.auth_failed += o.auth_failed;
        self.replayed += o.replayed;
        self.too_old += o.too_old;
        self.unknown_mki += o.unknown_mki;
        self.key_expired += o.key_expired;
        self.no_room += o.no_room;
    }

    /// All SRTP drops.
    pub fn total(&self) -> u64 {
        self.truncated
            + self.malformed
            + self.auth_failed
            + self.replayed
            + self.too_old
            + self.unknown_mki
            + self.key_expired
            + self.no_room
    }
}

/// Relay-wide counters of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Packets forwarded.
    pub forwarded: u64,
    /// Octets of the packets forwarded, as sent.
    pub forwarded_bytes: u64,
    /// Dropped: unknown endpoint.
    pub unknown_endpoint: u64,
    /// Dropped: malformed.
    pub malformed: u64,
    /// Dropped: wrong source.
    pub wrong_source: u64,
    /// Dropped: no destination yet.
    pub no_destination: u64,
    /// Sessions that timed out.
    pub timeouts: u64,
    /// Packets unprotected (SRTP/SRTCP in).
    pub srtp_unprotected: u64,
    /// Packets protected (SRTP/SRTCP out).
    pub srtp_protected: u64,
    /// SRTP drops by reason.
    pub srtp_drops: SrtpDrops,
    /// Packets taken by the processing stage.
    pub transcoded_in: u64,
    /// Packets the processing stage sent.
    pub transcoded_out: u64,
    /// The processing stage's counters (calls ended and live).
    pub stage: StageCounters,
    /// The media services' counters.
    pub services: ServiceCounters,
    /// STUN checks answered on WebRTC legs.
    pub stun_answered: u64,
    /// STUN packets not answered (wrong credentials, malformed).
    pub stun_refused: u64,
    /// DTLS handshakes that gave SRTP keys.
    pub dtls_keyed: u64,
    /// DTLS handshakes that failed (a fingerprint mismatch, an alert).
    pub dtls_failed: u64,
    /// Packets not sent to a WebRTC peer: its DTLS had no keys yet, or its
    /// consent lapsed (no check answered for 30 s).
    pub webrtc_unkeyed: u64,
    /// RTCP feedback messages (RFC 4585 RTPFB, PSFB) not passed on to a
    /// peer whose profile has no feedback.
    pub rtcp_feedback_terminated: u64,
    /// Pairs rvoip nominated as the controlling agent (where it offered
    /// full ICE): the first check the peer answered.
    pub ice_nominated: u64,
    /// Packets on a bundle transport that no MID, SSRC or payload type
    /// tied to a media line (RFC 9143 §9.2: discarded).
    pub bundle_unrouted: u64,
}

impl RelayCounters {
    /// Adds `o`'s counts (another worker's).
    pub fn add(&mut self, o: &RelayCounters) {
        self.forwarded += o.forwarded;
        self.forwarded_bytes += o.forwarded_bytes;
        self.unknown_endpoint += o.unknown_endpoint;
        self.malformed += o.malformed;
        self.wrong_source += o.wrong_source;
        self.no_destination += o.no_destination;
        self.timeouts += o.timeouts;
        self.srtp_unprotected += o.srtp_unprotected;
        self.srtp_protected += o.srtp_protected;
        self.srtp_drops.add(&o.srtp_drops);
        self.transcoded_in += o.transcoded_in;
        self.transcoded_out += o.transcoded_out;
        self.stage.add(&o.stage);
        self.services.add(&o.services);
        self.stun_answered += o.stun_answered;
        self.stun_refused += o.stun_refused;
        self.dtls_keyed += o.dtls_keyed;
        self.dtls_failed += o.dtls_failed;
        self.webrtc_unkeyed += o.webrtc_unkeyed;
        self.rtcp_feedback_terminated += o.rtcp_feedback_terminated;
        self.ice_nominated += o.ice_nominated;
        self.bundle_unrouted += o.bundle_unrouted;
    }

    /// The counters a worker publishes, in the order of
    /// [`crate::shm::stats::MEDIA_FIELDS`] (its load last).
    pub fn values(&self, busy_permille: u32) -> [u64; 32] {
        let d = &self.srtp_drops;
        [
            self.forwarded,
            self.forwarded_bytes,
            self.unknown_endpoint,
            self.malformed,
            self.wrong_source,
            self.no_destination,
            self.timeouts,
            self.srtp_unprotected,
            self.srtp_protected,
            d.truncated,
            d.malformed,
            d.auth_failed,
            d.replayed,
            d.too_old,
            d.unknown_mki,
            d.key_expired,
            d.no_room,
            self.transcoded_in,
            self.transcoded_out,
            self.services.recorded,
            self.services.record_dropped,
            self.services.captured,
            self.services.capture_dropped,
            self.stun_answered,
            self.stun_refused,
            self.dtls_keyed,
            self.dtls_failed,
            self.webrtc_unkeyed,
            self.rtcp_feedback_terminated,
            self.ice_nominated,
            self.bundle_unrouted,
            u64::from(busy_permille),
        ]
    }
}

/// A hashed timer wheel of one-second slots for media timeouts: each session
/// sits in the slot of its next check; a check that finds recent traffic
/// moves it forward. No per-packet work.
#[derive(Debug)]
struct TimerWheel {
    slots: Vec<Vec<(SessionId, u32, u64)>>,
    /// An empty vector whose capacity is swapped with the slot being run,
    /// so ticking allocates nothing once the wheel is warm.
    spare: Vec<(SessionId, u32, u64)>,
    cursor_s: u64,
}

const WHEEL_SLOTS: usize = 64;

impl TimerWheel {
    fn new(now_ms: u64) -> Self {
        TimerWheel {
            slots: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            spare: Vec::new(),
            cursor_s: now_ms / 1000,
        }
    }
    fn schedule(&mut self, id: SessionId, generation: u32, at_ms: u64) {
        let s = (at_ms / 1000).max(self.cursor_s + 1);
        self.slots[(s as usize) % WHEEL_SLOTS].push((id, generation, at_ms));
    }
}

/// A stage direction's due time in the relay's schedule: (ns, session,
/// media, side towards, session generation).
type Due = (u64, SessionId, u16, u8, u32);

/// Puts a direction's next due time (`due`; `None`: idle) in `heap`
/// when it moved earlier than what `scheduled` holds for it, or it was
/// idle; stale entries are told apart by `scheduled` when they come up.
fn enqueue(
    heap: &mut BinaryHeap<Reverse<Due>>,
    scheduled: &mut [Option<u64>; 2],
    due: Option<u64>,
    (id, media, to, generation): (SessionId, usize, Side, u32),
) {
    let slot = &mut scheduled[to.index()];
    let Some(due) = due else {
        *slot = None;
        return;
    };
    if slot.is_none_or(|s| due < s) {
        *slot = Some(due);
        heap.push(Reverse((
            due,
            id,
            media as u16,
            to.index() as u8,
            generation,
        )));
    }
}

/// The relay of one worker.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    slots: Vec<Option<Slot>>,
    sessions: Vec<Option<Session>>,
    /// Per session, per media line, per side: SRTP contexts.
    crypto: Vec<Vec<[LegCrypto; 2]>>,
    /// Per session, per media line: the processing stage of a transcoded
    /// call.
    stages: Vec<Vec<Option<Box<Transcoder>>>>,
    /// When each stage direction is next due: (ns, session, media, side
    /// towards, generation), earliest first.
    due: BinaryHeap<Reverse<Due>>,
    /// Bumped each time a session id is reused, so stale timers are ignored.
    generations: Vec<u32>,
    free: Vec<SessionId>,
    wheel: TimerWheel,
    counters: RelayCounters,
    timed_out: Vec<SessionId>,
    /// Per session, per media line: the media services.
    services: Vec<Vec<Option<Box<LineServices>>>>,
    /// When each service direction is next due (as `due`).
    svc_due: BinaryHeap<Reverse<Due>>,
    /// Conference rooms of this worker, by id; their ids by name.
    rooms: Vec<Option<Room>>,
    room_ids: HashMap<String, u32>,
    /// When each room next mixes: (ns, room).
    room_due: BinaryHeap<Reverse<(u64, u32)>>,
    /// Packets rooms made, waiting to be sent.
    outbox: VecDeque<OutPacket>,
    /// Buffers of sent outbox packets, reused (boxed: they move between
    /// the outbox and here without copying).
    #[allow(clippy::vec_box)]
    spare: Vec<Box<[u8; OUT_BUF]>>,
    /// Events for the control plane.
    events: EventSink,
    /// Where packets of recorded calls are copied.
    rec_sink: Option<Arc<ArrayQueue<RecPacket>>>,
    /// Where packets of captured calls are copied, and the Unix time of
    /// worker time 0, ns.
    cap_sink: Option<(Arc<ArrayQueue<CapPacket>>, u64)>,
    /// The capture each session's packets go to, by session.
    captures: Vec<Option<u32>>,
    /// Worker time of the packets [`Relay::poll_transmit`] hands out.
    out_ns: u64,
    /// rvoip's DTLS certificate, and the instant of worker time 0: WebRTC
    /// legs need both.
    dtls: Option<(DtlsIdentity, std::time::Instant)>,
    /// STUN answers and DTLS records waiting to be sent: (endpoint, peer,
    /// octets).
    wire: VecDeque<(EndpointId, SocketAddr, Vec<u8>)>,
}

/// Copies a packet of a captured call for the capture writer; a full
/// queue loses it (counted), the packet path never waits.
fn tap(
    sink: Option<&(Arc<ArrayQueue<CapPacket>>, u64)>,
    counters: &mut super::services::ServiceCounters,
    capture: u32,
    now_ns: u64,
    (src, dst): (SocketAddr, SocketAddr),
    pkt: &[u8],
) {
    let Some((q, epoch)) = sink else { return };
    let n = pkt.len().min(crate::pcap::CAP_BYTES);
    let mut p = CapPacket {
        capture,
        unix_ns: epoch + now_ns,
        src,
        dst,
        orig_len: pkt.len() as u16,
        len: n as u16,
        data: [0; crate::pcap::CAP_BYTES],
    };
    p.data[..n].copy_from_slice(&pkt[..n]);
    if q.push(p).is_ok() {
        counters.captured += 1;
    } else {
        counters.capture_dropped += 1;
    }
}

/// The address a leg's endpoint is on (`0.0.0.0`: the relay's IPv4
/// address, filled in by the capture writer).
fn local_of(leg: &Leg, rtcp: bool) -> SocketAddr {
    let ip = leg
        .local_ip
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let port = if rtcp && !leg.peer.rtcp_mux && leg.rtcp_ep.is_some() {
        leg.local_port.wrapping_add(1)
    } else {
        leg.local_port
    };
    SocketAddr::new(ip, port)
}

/// Size of an outbox buffer: a packet, room for an SRTP tag.
const OUT_BUF: usize = 1600;

/// A packet a room made for one member.
#[derive(Debug)]
struct OutPacket {
    session: SessionId,
    media: u16,
    generation: u32,
    len: usize,
    buf: Box<[u8; OUT_BUF]>,
}

impl Relay {
    /// An empty relay.
    pub fn new(config: RelayConfig, now_ms: u64) -> Self {
        Relay {
            config,
            slots: Vec::new(),
            sessions: Vec::new(),
            crypto: Vec::new(),
            stages: Vec::new(),
            due: BinaryHeap::new(),
            generations: Vec::new(),
            free: Vec::new(),
            wheel: TimerWheel::new(now_ms),
            counters: RelayCounters::default(),
            timed_out: Vec::new(),
            services: Vec::new(),
            svc_due: BinaryHeap::new(),
            rooms: Vec::new(),
            room_ids: HashMap::new(),
            room_due: BinaryHeap::new(),
            outbox: VecDeque::new(),
            spare: Vec::new(),
            events: EventSink::default(),
            rec_sink: None,
            cap_sink: None,
            captures: Vec::new(),
            out_ns: 0,
            dtls: None,
            wire: VecDeque::new(),
        }
    }

    /// Gives the relay rvoip's DTLS certificate, and the instant its time
    /// 0 stands for: WebRTC legs can be set up from then on.
    pub fn set_dtls(&mut self, identity: DtlsIdentity, epoch: std::time::Instant) {
        self.dtls = Some((identity, epoch));
    }

    /// Makes `side` of media `media` a WebRTC leg as `plan` says (ICE-lite
    /// with its credentials; DTLS once its role and the peer's fingerprint
    /// are known), or updates it. False without a DTLS certificate or for
    /// an unknown session.
    pub fn set_webrtc(
        &mut self,
        id: SessionId,
        media: usize,
        side: Side,
        plan: &WebRtcPlan,
        now_ms: u64,
    ) -> bool {
        let medias = self.session(id).map_or(0, |s| s.medias.len());
        let (Some((identity, epoch)), Some(crypto)) =
            (self.dtls.as_ref(), self.crypto.get_mut(id as usize))
        else {
            return false;
        };
        if media >= medias {
            return false;
        }
        if crypto.len() < medias {
            crypto.resize_with(medias, Default::default);
        }
        let now = *epoch + std::time::Duration::from_millis(now_ms);
        let leg = &mut crypto[media][side.index()];
        match leg.webrtc.as_mut() {
            Some(w) => w.update(plan, identity, now, now_ms),
            None => leg.webrtc = Some(Box::new(WebRtcLeg::new(plan, identity, now, now_ms))),
        }
        // Where rvoip offered full ICE its first checks go at once; an
        // active leg's ClientHello goes as soon as the peer is known.
        self.drive_checks(id, media, side, now_ms);
        self.drive_dtls(id, media, side, now_ms, None);
        true
    }

    /// Sends what the controlling checks of a WebRTC leg have due (first
    /// checks, retransmissions, consent checks) from the leg's RTP port.
    fn drive_checks(&mut self, id: SessionId, media: usize, side: Side, now_ms: u64) {
        let Some(ep) = self
            .sessions
            .get(id as usize)
            .and_then(Option::as_ref)
            .and_then(|s| s.medias.get(media))
            .and_then(|p| p.leg(side).rtp_ep)
        else {
            return;
        };
        let Some(checks) = self
            .crypto
            .get_mut(id as usize)
            .and_then(|c| c.get_mut(media))
            .and_then(|l| l[side.index()].webrtc.as_deref_mut())
            .and_then(|w| w.checks.as_mut())
        else {
            return;
        };
        let wire = &mut self.wire;
        checks.due(now_ms, |to, req| wire.push_back((ep, to, req)));
    }

    /// Runs the DTLS of a WebRTC leg: a datagram from `from` (none: a
    /// timer), what it answers queued for the peer, keys installed once
    /// they come.
    fn drive_dtls(
        &mut self,
        id: SessionId,
        media: usize,
        side: Side,
        now_ms: u64,
        packet: Option<(&[u8], SocketAddr)>,
    ) {
        let Some((_, epoch)) = self.dtls.as_ref() else {
            return;
        };
        let now = *epoch + std::time::Duration::from_millis(now_ms);
        let Some(leg_state) = self
            .sessions
            .get(id as usize)
            .and_then(Option::as_ref)
            .and_then(|s| s.medias.get(media))
            .map(|p| p.leg(side))
        else {
            return;
        };
        let ep = leg_state.rtp_ep;
        let peer = packet
            .map(|p| p.1)
            .or(leg_state.latched_rtp)
            .or(leg_state.peer.rtp);
        let Some(leg) = self
            .crypto
            .get_mut(id as usize)
            .and_then(|c| c.get_mut(media))
            .map(|l| &mut l[side.index()])
        else {
            return;
        };
        let Some(w) = leg.webrtc.as_deref_mut() else {
            return;
        };
        let Some(dtls) = w.dtls.as_mut() else {
            return;
        };
        let mut out: SmallVec<[Vec<u8>; 4]> = SmallVec::new();
        let r = match packet {
            Some((p, _)) => dtls.on_packet(p, now, &mut |d| out.push(d.to_vec())),
            None => dtls.on_timeout(now, &mut |d| out.push(d.to_vec())),
        };
        if r.is_err() && dtls.failure().is_some() && !w.keyed {
            self.counters.dtls_failed += 1;
            // Failed for good: the leg stays unkeyed, nothing is sent.
            w.dtls = None;
        }
        if !w.keyed
            && let Some(keys) = w.dtls.as_ref().and_then(|d| d.keys()).cloned()
        {
            leg.rx = SrtpContext::new(&keys.inbound).map(Box::new);
            leg.tx = SrtpContext::new(&keys.outbound).map(Box::new);
            w.keyed = leg.rx.is_some() && leg.tx.is_some();
            if w.keyed {
                self.counters.dtls_keyed += 1;
            }
        }
        if let (Some(ep), Some(to)) = (ep, peer) {
            for d in out {
                self.wire.push_back((ep, to, d));
            }
        }
    }

    /// The WebRTC legs (session, media, side) for which `due` holds.
    fn webrtc_legs_where(
        &self,
        due: impl Fn(&WebRtcLeg) -> bool,
    ) -> SmallVec<[(SessionId, usize, Side); 8]> {
        let mut out = SmallVec::new();
        for (id, medias) in self.crypto.iter().enumerate() {
            for (m, legs) in medias.iter().enumerate() {
                for side in [Side::A, Side::B] {
                    if legs[side.index()].webrtc.as_deref().is_some_and(&due) {
                        out.push((id as SessionId, m, side));
                    }
                }
            }
        }
        out
    }

    /// Retransmits the DTLS flights of WebRTC legs whose timers ran out,
    /// and sends the controlling ICE checks that are due (retransmissions,
    /// consent checks).
    fn tick_dtls(&mut self, now_ms: u64) {
        let Some((_, epoch)) = self.dtls.as_ref() else {
            return;
        };
        let now = *epoch + std::time::Duration::from_millis(now_ms);
        let late = self.webrtc_legs_where(|w| {
            w.dtls
                .as_ref()
                .filter(|d| d.keys().is_none())
                .and_then(|d| d.next_timeout())
                .is_some_and(|t| t <= now)
        });
        for (id, m, side) in late {
            self.drive_dtls(id, m, side, now_ms, None);
        }
        let due = self.webrtc_legs_where(|w| {
            w.checks
                .as_ref()
                .and_then(|c| c.next_due_ms())
                .is_some_and(|t| t <= now_ms)
        });
        for (id, m, side) in due {
            self.drive_checks(id, m, side, now_ms);
        }
    }

    /// Handles a STUN or DTLS datagram on a WebRTC leg; `None` when the
    /// packet is media (it goes on the usual way).
    #[allow(clippy::too_many_arguments)]
    fn on_webrtc(
        &mut self,
        now_ms: u64,
        ep: EndpointId,
        slot: Slot,
        src: SocketAddr,
        pkt: &[u8],
    ) -> Option<Action> {
        let (id, media, side) = (slot.session, usize::from(slot.media), slot.side);
        let w = self
            .crypto
            .get_mut(id as usize)
            .and_then(|c| c.get_mut(media))
            .and_then(|l| l[side.index()].webrtc.as_deref_mut())?;
        match ice::classify(pkt) {
            Kind::Media => None,
            Kind::Stun => {
                let mut answer = Vec::with_capacity(96);
                match w.ice.on_stun(pkt, src, now_ms, &mut answer) {
                    Err(Refusal::NotBindingRequest) if w.checks.is_some() => {
                        // An answer to one of rvoip's checks: the first
                        // selects the pair media goes to.
                        let selected = w
                            .checks
                            .as_mut()
                            .and_then(|c| c.on_response(pkt, src, now_ms));
                        if selected.is_some() {
                            self.counters.ice_nominated += 1;
                        }
                        if let Some(to) = selected
                            && let Some(leg) = self
                                .sessions
                                .get_mut(id as usize)
                                .and_then(Option::as_mut)
                                .and_then(|s| s.medias.get_mut(media))
                                .map(|p| p.leg_mut(side))
                        {
                            leg.latched_rtp = Some(to);
                        }
                    }
                    Ok(a) => {
                        self.counters.stun_answered += 1;
                        let nominated = a.nominated;
                        self.wire.push_back((ep, src, answer));
                        // A full agent's check from an address rvoip does
                        // not check yet (a peer-reflexive candidate, or a
                        // browser's mDNS host): checked back at once.
                        let triggered = w.checks.as_mut().is_some_and(|c| c.add(src, now_ms));
                        // Media goes where the browser's checks come from
                        // (the nominated pair, or the first one that works).
                        if let Some(leg) = self
                            .sessions
                            .get_mut(id as usize)
                            .and_then(Option::as_mut)
                            .and_then(|s| s.medias.get_mut(media))
                            .map(|p| p.leg_mut(side))
                            && (nominated || leg.latched_rtp.is_none())
                        {
                            leg.latched_rtp = Some(src);
                        }
                        if triggered {
                            self.drive_checks(id, media, side, now_ms);
                        }
                    }
                    Err(_) => self.counters.stun_refused += 1,
                }
                Some(Action::Consumed)
            }
            Kind::Dtls => {
                self.drive_dtls(id, media, side, now_ms, Some((pkt, src)));
                Some(Action::Consumed)
            }
            Kind::Other => {
                self.counters.malformed += 1;
                Some(Action::Drop(DropReason::Malformed(PacketError::TooShort)))
            }
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> RelayCounters {
        let mut c = self.counters;
        for t in self.stages.iter().flatten().flatten() {
            c.stage.add(&t.counters());
        }
        c
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len() - self.free.len()
    }

    /// Creates a session with `medias` empty media pairs.
    pub fn create_session(&mut self, now_ms: u64, medias: usize) -> SessionId {
        let mut s = Session {
            created_ms: now_ms,
            last_packet_ms: now_ms,
            ..Session::default()
        };
        s.medias.resize(medias, MediaPair::default());
        let id = match self.free.pop() {
            Some(id) => {
                self.sessions[id as usize] = Some(s);
                self.generations[id as usize] += 1;
                self.crypto[id as usize].clear();
                self.stages[id as usize].clear();
                self.services[id as usize].clear();
                id
            }
            None => {
                self.sessions.push(Some(s));
                self.generations.push(0);
                self.crypto.push(Vec::new());
                self.stages.push(Vec::new());
                self.services.push(Vec::new());
                (self.sessions.len() - 1) as SessionId
            }
        };
        self.wheel.schedule(
            id,
            self.generations[id as usize],
            now_ms + self.config.media_timeout_ms,
        );
        id
    }

    /// A session.
    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(id as usize)?.as_ref()
    }

    /// A session, mutable (adding media pairs on a re-offer).
    pub fn session_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(id as usize)?.as_mut()
    }

    /// Records that endpoint `ep` receives for `component` of `side` of media
    /// `media` in session `id`.
    pub fn bind_endpoint(
        &mut self,
        ep: EndpointId,
        id: SessionId,
        media: usize,
        side: Side,
        component: Component,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(id as usize).and_then(Option::as_mut) else {
            return false;
        };
        let Some(pair) = session.medias.get_mut(media) else {
            return false;
        };
        let leg = pair.leg_mut(side);
        match component {
            Component::Rtp => leg.rtp_ep = Some(ep),
            Component::Rtcp => leg.rtcp_ep = Some(ep),
        }
        let i = ep as usize;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        self.slots[i] = Some(Slot {
            session: id,
            media: media as u16,
            side,
            component,
        });
        true
    }

    /// Undoes [`Relay::bind_endpoint`] for an endpoint that is being closed
    /// before use (its RTCP partner could not be opened).
    pub fn unbind_endpoint(&mut self, ep: EndpointId) {
        let Some(slot) = self.slots.get_mut(ep as usize).and_then(Option::take) else {
            return;
        };
        if let Some(leg) = self
            .sessions
            .get_mut(slot.session as usize)
            .and_then(Option::as_mut)
            .and_then(|s| s.medias.get_mut(usize::from(slot.media)))
            .map(|m| m.leg_mut(slot.side))
        {
            match slot.component {
                Component::Rtp if leg.rtp_ep == Some(ep) => leg.rtp_ep = None,
                Component::Rtcp if leg.rtcp_ep == Some(ep) => leg.rtcp_ep = None,
                _ => {}
            }
        }
    }

    /// Sets what the SDP says about the peer of `side` of media `media`. A
    /// changed address clears the latch (a re-INVITE moved the media).
    pub fn set_peer(&mut self, id: SessionId, media: usize, side: Side, peer: PeerSpec) {
        let Some(leg) = self
            .sessions
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .and_then(|s| s.medias.get_mut(media))
            .map(|m| m.leg_mut(side))
        else {
            return;
        };
        if leg.peer.rtp != peer.rtp {
            leg.latched_rtp = None;
        }
        if leg.peer.rtcp != peer.rtcp {
            leg.latched_rtcp = None;
        }
        leg.peer = peer;
    }

    /// Puts `side` of media `media` in that side's bundle (RFC 9143) on
    /// `line.transport`'s transport: what arrives there is told apart per
    /// line, and what goes to the line's peer leaves through it. False for
    /// an unknown session or line.
    pub fn set_bundle(
        &mut self,
        id: SessionId,
        media: usize,
        side: Side,
        line: &BundleLine,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(id as usize).and_then(Option::as_mut) else {
            return false;
        };
        if media >= session.medias.len() || line.transport >= session.medias.len() {
            return false;
        }
        let demux = &mut session.bundles[side.index()];
        if demux
            .as_ref()
            .is_none_or(|d| usize::from(d.transport) != line.transport)
        {
            // A new bundle (or one moved to another transport): its lines
            // are told again.
            *demux = Some(Box::new(BundleDemux::new(line.transport)));
            for pair in session.medias.iter_mut() {
                pair.leg_mut(side).bundle = None;
            }
        }
        if let Some(d) = demux.as_deref_mut() {
            d.set_line(media, line);
        }
        session.medias[media].leg_mut(side).bundle =
            (media != line.transport).then_some(line.transport as u16);
        true
    }

    /// Sets the SRTP keying of `side` of media `media`: contexts whose keys
    /// are unchanged continue; new keys start new contexts; `None` fields make
    /// that direction plain RTP. False if the session or media is unknown or a
    /// key does not fit its suite (nothing changes then).
    pub fn set_crypto(&mut self, id: SessionId, media: usize, side: Side, srtp: &LegSrtp) -> bool {
        let medias = self.session(id).map_or(0, |s| s.medias.len());
        let Some(crypto) = self.crypto.get_mut(id as usize) else {
            return false;
        };
        if media >= medias {
            return false;
        }
        if crypto.len() < medias {
            crypto.resize_with(medias, Default::default);
        }
        let leg = &mut crypto[media][side.index()];
        if leg.webrtc.is_some() {
            // A WebRTC leg's keys come from its DTLS.
            return true;
        }
        let rx = context_for(leg.rx.take(), srtp.rx.as_ref());
        let tx = context_for(leg.tx.take(), srtp.tx.as_ref());
        match (rx, tx) {
            (Ok(rx), Ok(tx)) => {
                leg.rx = rx;
                leg.tx = tx;
                true
            }
            _ => false,
        }
    }

    /// Whether `side` of media `media` is SRTP (receiving, sending).
    pub fn is_srtp(&self, id: SessionId, media: usize, side: Side) -> (bool, bool) {
        self.crypto
            .get(id as usize)
            .and_then(|c| c.get(media))
            .map_or((false, false), |l| {
                let l = &l[side.index()];
                (l.rx.is_some(), l.tx.is_some())
            })
    }

    /// Sets what the two sides of media `media` speak: a stage is made when
    /// they differ ([`needs_transcoding`]) and kept while they stay the
    /// same; `None`, or sides that match, relay packets unchanged. Err if a
    /// codec cannot be set up (nothing changes then).
    pub fn set_transcode(
        &mut self,
        id: SessionId,
        media: usize,
        legs: Option<(LegCodec, LegCodec)>,
    ) -> Result<(), rvoip_codecs::CodecError> {
        let medias = self.session(id).map_or(0, |s| s.medias.len());
        let Some(stages) = self.stages.get_mut(id as usize) else {
            return Ok(());
        };
        if media >= medias {
            return Ok(());
        }
        if stages.len() < medias {
            stages.resize_with(medias, || None);
        }
        let slot = &mut stages[media];
        match legs {
            Some((a, b)) if needs_transcoding(&a, &b) => {
                let same = slot
                    .as_ref()
                    .is_some_and(|t| *t.leg(Side::A) == a && *t.leg(Side::B) == b);
                if !same {
                    let t = Transcoder::new(a, b)?;
                    if let Some(old) = slot.replace(Box::new(t)) {
                        self.counters.stage.add(&old.counters());
                    }
                    // Room in the schedule, so that running it never allocates.
                    self.due.reserve(16);
                }
            }
            _ => {
                if let Some(old) = slot.take() {
                    self.counters.stage.add(&old.counters());
                }
            }
        }
        Ok(())
    }

    /// Whether media `media` of session `id` goes through the stage.
    pub fn is_transcoded(&self, id: SessionId, media: usize) -> bool {
        self.stages
            .get(id as usize)
            .and_then(|s| s.get(media))
            .is_some_and(Option::is_some)
    }

    /// When the processing stage or the media services next have a packet
    /// to send (worker ns).
    pub fn next_due_ns(&self) -> Option<u64> {
        if !self.outbox.is_empty() || !self.wire.is_empty() {
            return Some(0);
        }
        [
            self.due.peek().map(|Reverse(e)| e.0),
            self.svc_due.peek().map(|Reverse(e)| e.0),
            self.room_due.peek().map(|Reverse(e)| e.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Schedules the stage direction of (`id`, `media`) towards `to` if its
    /// due time moved earlier or it was idle.
    fn schedule(&mut self, id: SessionId, media: usize, to: Side) {
        let generation = self.generations.get(id as usize).copied().unwrap_or(0);
        let Some(t) = self
            .stages
            .get_mut(id as usize)
            .and_then(|s| s.get_mut(media))
            .and_then(Option::as_mut)
        else {
            return;
        };
        let due = t.due(to);
        enqueue(
            &mut self.due,
            &mut t.scheduled,
            due,
            (id, media, to, generation),
        );
    }

    /// The next packet the processing stage has due at `now_ns`, written
    /// into `out` (at least 1500 octets plus room for an SRTP tag) and
    /// protected for its peer; `None` when nothing is due. Call until
    /// `None` after every batch of received packets and when
    /// [`Relay::next_due_ns`] comes. No allocation.
    pub fn poll_transmit(&mut self, now_ns: u64, out: &mut [u8]) -> Option<Transmit> {
        self.out_ns = now_ns;
        while let Some((via, to, d)) = self.wire.pop_front() {
            let Some(dst) = out.get_mut(..d.len()) else {
                continue;
            };
            dst.copy_from_slice(&d);
            return Some(Transmit {
                via,
                to,
                len: d.len(),
            });
        }
        if let Some(t) = self.pop_outbox(out) {
            return Some(t);
        }
        if let Some(t) = self.poll_stage(now_ns, out) {
            return Some(t);
        }
        if let Some(t) = self.poll_services(now_ns, out) {
            return Some(t);
        }
        while self.poll_rooms(now_ns) {
            if let Some(t) = self.pop_outbox(out) {
                return Some(t);
            }
        }
        None
    }

    fn poll_stage(&mut self, now_ns: u64, out: &mut [u8]) -> Option<Transmit> {
        while let Some(&Reverse((due, id, media, to, generation))) = self.due.peek() {
            if due > now_ns {
                return None;
            }
            self.due.pop();
            let to = if to == 0 { Side::A } else { Side::B };
            let current = self.generations.get(id as usize) == Some(&generation);
            let Some(t) = self
                .stages
                .get_mut(id as usize)
                .filter(|_| current)
                .and_then(|s| s.get_mut(usize::from(media)))
                .and_then(Option::as_mut)
            else {
                continue;
            };
            if t.scheduled[to.index()] != Some(due) {
                continue;
            }
            t.scheduled[to.index()] = None;
            let made = t.produce(to, now_ns, out);
            // Due again (nothing made yet although due: try a frame later).
            if let Some(next) = t.due(to) {
                let next = if made.is_none() && next <= now_ns {
                    now_ns + 1_000_000
                } else {
                    next
                };
                t.scheduled[to.index()] = Some(next);
                self.due
                    .push(Reverse((next, id, media, to.index() as u8, generation)));
            }
            let Some(len) = made else {
                continue;
            };
            if let Some(t) = self.finish(id, usize::from(media), to, out, len) {
                self.counters.transcoded_out += 1;
                return Some(t);
            }
        }
        None
    }

    /// Routes a packet the stage or the services made towards `to` of
    /// (`id`, `media`) and protects it for its peer; `None` (counted) when
    /// it cannot go.
    fn finish(
        &mut self,
        id: SessionId,
        media: usize,
        to: Side,
        out: &mut [u8],
        mut len: usize,
    ) -> Option<Transmit> {
        let session = self
            .sessions
            .get_mut(id as usize)
            .and_then(Option::as_mut)?;
        // A line in a bundle goes out through the bundle's transport.
        let line_out = session
            .medias
            .get(media)?
            .leg(to)
            .bundle
            .map_or(media, usize::from);
        let transport = session.medias.get(line_out)?.leg(to);
        let Some((via, dest)) = transport.rtp_ep.zip(transport.rtp_destination()) else {
            self.counters.no_destination += 1;
            return None;
        };
        let local = local_of(transport, false);
        let crypto = self
            .crypto
            .get_mut(id as usize)
            .and_then(|c| c.get_mut(line_out))
            .map(|c| &mut c[to.index()]);
        if crypto
            .as_ref()
            .is_some_and(|c| !c.may_send(self.out_ns / 1_000_000))
        {
            self.counters.webrtc_unkeyed += 1;
            return None;
        }
        if let Some(d) = session.bundles[to.index()].as_deref_mut()
            && len >= 12
        {
            let ssrc = u32::from_be_bytes([out[8], out[9], out[10], out[11]]);
            if !d.sent_on(media, ssrc) {
                d.note_sent(media, ssrc);
            }
        }
        let leg = session.medias.get_mut(media)?.leg_mut(to);
        if let Some(ctx) = crypto.and_then(|c| c.tx.as_deref_mut()) {
            match ctx.protect_rtp(out, len) {
                Ok(n) => {
                    len = n;
                    self.counters.srtp_protected += 1;
                }
                Err(e) => {
                    leg.srtp_out_errors += 1;
                    self.counters.srtp_drops.count(e);
                    return None;
                }
            }
        }
        leg.sent_packets += 1;
        leg.sent_bytes += len as u64;
        if let Some(c) = self.captures.get(id as usize).copied().flatten() {
            let sink = self.cap_sink.as_ref();
            tap(
                sink,
                &mut self.counters.services,
                c,
                self.out_ns,
                (local, dest),
                &out[..len],
            );
        }
        Some(Transmit { via, to: dest, len })
    }

    /// Removes a session; returns the endpoints the driver must close.
    pub fn remove_session(&mut self, id: SessionId) -> SmallVec<[EndpointId; 8]> {
        let mut eps = SmallVec::new();
        let Some(session) = self.sessions.get_mut(id as usize).and_then(Option::take) else {
            return eps;
        };
        if let Some(c) = self.captures.get_mut(id as usize) {
            *c = None;
        }
        // Keys are wiped as the contexts drop.
        if let Some(c) = self.crypto.get_mut(id as usize) {
            c.clear();
        }
        if let Some(stages) = self.stages.get_mut(id as usize) {
            for t in stages.drain(..).flatten() {
                self.counters.stage.add(&t.counters());
            }
        }
        let lines = self
            .services
            .get_mut(id as usize)
            .map(std::mem::take)
            .unwrap_or_default();
        for (m, line) in lines.into_iter().enumerate() {
            if let Some(mut line) = line {
                self.leave_room(id, m, &mut line);
            }
        }
        for pair in &session.medias {
            for leg in &pair.legs {
                for ep in [leg.rtp_ep, leg.rtcp_ep].into_iter().flatten() {
                    if let Some(s) = self.slots.get_mut(ep as usize) {
                        *s = None;
                    }
                    eps.push(ep);
                }
            }
        }
        self.free.push(id);
        eps
    }

    /// Handles one datagram held in a copy of `pkt` (tests and fuzzing; the
    /// drivers call [`Relay::on_datagram`] on their receive buffers).
    pub fn on_packet(
        &mut self,
        now_ms: u64,
        now_ns: u64,
        ep: EndpointId,
        src: SocketAddr,
        pkt: &[u8],
    ) -> Action {
        let mut buf = [0u8; 2048];
        let Some(dst) = buf.get_mut(..pkt.len()) else {
            self.counters.malformed += 1;
            return Action::Drop(DropReason::Malformed(PacketError::TooShort));
        };
        dst.copy_from_slice(pkt);
        let mut len = pkt.len();
        self.on_datagram(now_ms, now_ns, ep, src, &mut buf, &mut len)
    }

    /// Handles one received datagram, `buf[..*len]`; the rest of `buf` is
    /// room for an SRTP tag. On [`Action::Forward`], `buf[..*len]` is what to
    /// send. No allocation, no system call.
    pub fn on_datagram(
        &mut self,
        now_ms: u64,
        now_ns: u64,
        ep: EndpointId,
        src: SocketAddr,
        buf: &mut [u8],
        len: &mut usize,
    ) -> Action {
        let Some(Some(slot)) = self.slots.get(ep as usize).copied() else {
            self.counters.unknown_endpoint += 1;
            return Action::Drop(DropReason::UnknownEndpoint);
        };
        let config = self.config;
        let Some(pkt) = buf.get(..*len) else {
            self.counters.malformed += 1;
            return Action::Drop(DropReason::Malformed(PacketError::TooShort));
        };
        let webrtc_leg = self
            .crypto
            .get(slot.session as usize)
            .and_then(|c| c.get(usize::from(slot.media)))
            .is_some_and(|l| l[slot.side.index()].webrtc.is_some());
        if webrtc_leg && let Some(action) = self.on_webrtc(now_ms, ep, slot, src, pkt) {
            return action;
        }
        let Some(session) = self
            .sessions
            .get_mut(slot.session as usize)
            .and_then(Option::as_mut)
        else {
            self.counters.unknown_endpoint += 1;
            return Action::Drop(DropReason::UnknownEndpoint);
        };
        // The line whose endpoint it came in on: its source, latch and
        // SRTP (on a bundle transport, those of every line in the bundle).
        let line_in = usize::from(slot.media);
        let Some(mine) = session
            .medias
            .get_mut(line_in)
            .map(|p| p.leg_mut(slot.side))
        else {
            self.counters.unknown_endpoint += 1;
            return Action::Drop(DropReason::UnknownEndpoint);
        };
        let Some(pkt) = buf.get(..*len) else {
            self.counters.malformed += 1;
            return Action::Drop(DropReason::Malformed(PacketError::TooShort));
        };
        let rtcp = slot.component == Component::Rtcp || looks_like_rtcp(pkt);
        let capture = self.captures.get(slot.session as usize).copied().flatten();
        if let Some(c) = capture {
            let local = local_of(mine, slot.component == Component::Rtcp);
            let sink = self.cap_sink.as_ref();
            tap(
                sink,
                &mut self.counters.services,
                c,
                now_ns,
                (src, local),
                pkt,
            );
        }
        // Source check first: it changes nothing, and a packet from the wrong
        // source must not touch the SRTP replay state.
        let separate_rtcp = slot.component == Component::Rtcp;
        let (expected, current) = if separate_rtcp {
            (mine.peer.rtcp, mine.latched_rtcp)
        } else {
            (mine.peer.rtp, mine.latched_rtp)
        };
        let accepted = match (config.latch, current) {
            (LatchMode::Strict, _) => expected.is_none_or(|e| e == src),
            (LatchMode::Learning, None) => true,
            (LatchMode::Learning, Some(l)) => {
                l == src
                    || now_ms.saturating_sub(mine.rtp_in.last_seen_ms) >= config.relatch_idle_ms
            }
        };
        if !accepted {
            if rtcp {
                mine.rtcp_in.errors += 1;
            } else {
                mine.rtp_in.errors += 1;
            }
            self.counters.wrong_source += 1;
            return Action::Drop(DropReason::WrongSource);
        }
        // SRTP in: authenticate and decrypt before anything reads the payload.
        let rx = self
            .crypto
            .get_mut(slot.session as usize)
            .and_then(|c| c.get_mut(line_in))
            .and_then(|l| l[slot.side.index()].rx.as_deref_mut());
        if let Some(ctx) = rx {
            let r = if rtcp {
                ctx.unprotect_rtcp(buf, *len)
            } else {
                ctx.unprotect_rtp(buf, *len)
            };
            match r {
                Ok(n) => {
                    *len = n;
                    self.counters.srtp_unprotected += 1;
                }
                Err(e) => {
                    mine.srtp_in_errors += 1;
                    self.counters.srtp_drops.count(e);
                    return Action::Drop(DropReason::Srtp(e));
                }
            }
        }
        let pkt = &buf[..*len];
        // Validate.
        let header = if rtcp {
            match check_rtcp(pkt) {
                Ok(_) => None,
                Err(e) => {
                    mine.rtcp_in.errors += 1;
                    self.counters.malformed += 1;
                    return Action::Drop(DropReason::Malformed(e));
                }
            }
        } else {
            match parse_rtp(pkt) {
                Ok(h) => Some(h),
                Err(e) => {
                    mine.rtp_in.errors += 1;
                    self.counters.malformed += 1;
                    return Action::Drop(DropReason::Malformed(e));
                }
            }
        };
        // Latch (RTCP on its own port latches separately).
        if separate_rtcp {
            mine.latched_rtcp = Some(src);
        } else {
            mine.latched_rtp = Some(src);
        }
        // BUNDLE: the line it belongs to, told by its MID, SSRC or payload
        // type (RTCP by the SSRCs it names).
        let media = match session.bundles[slot.side.index()].as_deref_mut() {
            Some(d) if usize::from(d.transport) == line_in => {
                let routed = match &header {
                    Some(h) => d.route_rtp(pkt, h),
                    None => Some(d.route_rtcp(pkt)),
                };
                match routed {
                    Some(m) if m < session.medias.len() => m,
                    _ => {
                        self.counters.bundle_unrouted += 1;
                        return Action::Drop(DropReason::Unbundled);
                    }
                }
            }
            _ => line_in,
        };
        let to_side = slot.side.other();
        // Where the other side's packets go out: its own endpoint, or the
        // transport of the bundle its line is in.
        let line_out = session.medias[media]
            .leg(to_side)
            .bundle
            .map_or(media, usize::from);
        let (route, out_local) = match session.medias.get(line_out).map(|p| p.leg(to_side)) {
            Some(t) => (
                if rtcp {
                    t.rtcp_route()
                } else {
                    t.rtp_ep.zip(t.rtp_destination())
                },
                local_of(t, rtcp),
            ),
            None => (None, SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        let pair = &mut session.medias[media];
        let (mine, theirs) = match slot.side {
            Side::A => {
                let (a, b) = pair.legs.split_at_mut(1);
                (&mut a[0], &mut b[0])
            }
            Side::B => {
                let (a, b) = pair.legs.split_at_mut(1);
                (&mut b[0], &mut a[0])
            }
        };
        // Account.
        match header {
            Some(h) => {
                let rate = u64::from(if mine.peer.clock_rate == 0 {
                    8000
                } else {
                    mine.peer.clock_rate
                });
                // Microsecond resolution keeps this in u64 (no u128 division):
                // now_us * 90 kHz overflows only after centuries.
                let arrival_ts = ((now_ns / 1_000) * rate / 1_000_000) as u32;
                mine.rtp_in.on_rtp(&h, *len, arrival_ts, now_ms);
            }
            None => {
                mine.rtcp_in.packets += 1;
                mine.rtcp_in.bytes += *len as u64;
            }
        }
        session.last_packet_ms = now_ms;
        // Media services: recording taps, blocking, what the media server
        // plays in place of the other side, calls it answers itself.
        if let Some(line) = self
            .services
            .get_mut(slot.session as usize)
            .and_then(|s| s.get_mut(media))
            .and_then(Option::as_mut)
        {
            match header {
                Some(h) => {
                    if let (Some(rec), Some(sink)) = (line.record, &self.rec_sink) {
                        let payload = &buf[h.payload_offset.min(*len)..*len];
                        let n = payload.len().min(super::transcode::MAX_PAYLOAD);
                        let mut p = RecPacket {
                            rec,
                            side: slot.side.index() as u8,
                            arrival_ns: now_ns,
                            pt: h.payload_type,
                            ts: h.timestamp,
                            ssrc: h.ssrc.0,
                            len: n as u16,
                            payload: [0; super::transcode::MAX_PAYLOAD],
                        };
                        p.payload[..n].copy_from_slice(&payload[..n]);
                        if sink.push(p).is_ok() {
                            self.counters.services.recorded += 1;
                        } else {
                            self.counters.services.record_dropped += 1;
                        }
                    }
                    self.events.current = slot.session;
                    let v = line.on_rtp(
                        slot.side,
                        now_ns,
                        &h,
                        buf,
                        *len,
                        &mut self.events,
                        &mut self.counters.services,
                    );
                    match v {
                        Verdict::Pass => {}
                        Verdict::Resized(n) => *len = n,
                        Verdict::Consumed => return Action::Consumed,
                        Verdict::Blocked => return Action::Drop(DropReason::Blocked),
                    }
                }
                None if line.terminal().is_some() => return Action::Consumed,
                None => {}
            }
        }
        // A transcoded call: RTP goes to the stage, RTCP is rewritten for
        // the stream the stage sends.
        if let Some(t) = self
            .stages
            .get_mut(slot.session as usize)
            .and_then(|s| s.get_mut(media))
            .and_then(Option::as_mut)
        {
            match header {
                Some(h) => {
                    t.ingest(slot.side, now_ns, &h, &buf[..*len]);
                    self.counters.transcoded_in += 1;
                    self.schedule(slot.session, media, to_side);
                    return Action::Consumed;
                }
                None => match t.rewrite_rtcp(to_side, now_ns, buf, *len) {
                    Some(n) => *len = n,
                    None => return Action::Consumed,
                },
            }
        }
        // RTCP feedback (RFC 4585) reaches only a peer whose profile has
        // it: for a plain RTP/AVP peer a browser's NACK, PLI, REMB and
        // transport-wide reports end here (reduced-size feedback alone
        // leaves nothing to send).
        if rtcp && !theirs.peer.feedback {
            let (kept, removed) = strip_rtcp_feedback(buf, *len);
            if removed > 0 {
                self.counters.rtcp_feedback_terminated += removed as u64;
                if kept == 0 {
                    return Action::Consumed;
                }
                *len = kept;
            }
        }
        // Route to the other side.
        let Some((via, to)) = route else {
            self.counters.no_destination += 1;
            return Action::Drop(DropReason::NoDestination);
        };
        let their_crypto = self
            .crypto
            .get_mut(slot.session as usize)
            .and_then(|c| c.get_mut(line_out))
            .map(|l| &mut l[to_side.index()]);
        if their_crypto.as_ref().is_some_and(|c| !c.may_send(now_ms)) {
            self.counters.webrtc_unkeyed += 1;
            return Action::Drop(DropReason::NoDestination);
        }
        // SRTP out: protect for the other side's peer.
        if let Some(ctx) = their_crypto.and_then(|c| c.tx.as_deref_mut()) {
            let r = if rtcp {
                ctx.protect_rtcp(buf, *len)
            } else {
                ctx.protect_rtp(buf, *len)
            };
            match r {
                Ok(n) => {
                    *len = n;
                    self.counters.srtp_protected += 1;
                }
                Err(e) => {
                    theirs.srtp_out_errors += 1;
                    self.counters.srtp_drops.count(e);
                    return Action::Drop(DropReason::Srtp(e));
                }
            }
        }
        theirs.sent_packets += 1;
        theirs.sent_bytes += *len as u64;
        // Which streams went on which line of a bundle: the peer's RTCP
        // about them is routed back by it.
        if let (Some(h), Some(d)) = (header, session.bundles[to_side.index()].as_deref_mut())
            && !d.sent_on(media, h.ssrc.0)
        {
            d.note_sent(media, h.ssrc.0);
        }
        self.counters.forwarded += 1;
        self.counters.forwarded_bytes += *len as u64;
        if let Some(c) = capture {
            let sink = self.cap_sink.as_ref();
            tap(
                sink,
                &mut self.counters.services,
                c,
                now_ns,
                (out_local, to),
                &buf[..*len],
            );
        }
        Action::Forward { via, to }
    }

    /// Advances the timer wheel to `now_ms`: sessions silent for the media
    /// timeout are marked timed out (and listed by [`Relay::take_timed_out`]).
    pub fn tick(&mut self, now_ms: u64) {
        self.tick_dtls(now_ms);
        let now_s = now_ms / 1000;
        while self.wheel.cursor_s < now_s {
            self.wheel.cursor_s += 1;
            let idx = (self.wheel.cursor_s as usize) % WHEEL_SLOTS;
            let mut due = std::mem::take(&mut self.wheel.spare);
            std::mem::swap(&mut due, &mut self.wheel.slots[idx]);
            for (id, generation, at_ms) in due.drain(..) {
                if self.generations.get(id as usize) != Some(&generation) {
                    continue;
                }
                let Some(Some(s)) = self.sessions.get_mut(id as usize) else {
                    continue;
                };
                if s.timed_out {
                    continue;
                }
                if at_ms / 1000 > self.wheel.cursor_s {
                    // A later round of the wheel: back into the same slot.
                    self.wheel.slots[idx].push((id, generation, at_ms));
                    continue;
                }
                let deadline = s.last_packet_ms + self.config.media_timeout_ms;
                if deadline <= now_ms {
                    s.timed_out = true;
                    self.counters.timeouts += 1;
                    self.timed_out.push(id);
                } else {
                    self.wheel.schedule(id, generation, deadline);
                }
            }
            self.wheel.spare = due;
        }
    }

    /// Sessions that timed out since the last call.
    pub fn take_timed_out(&mut self) -> Vec<SessionId> {
        std::mem::take(&mut self.timed_out)
    }
}

/// The media services: what the media server does in a worker.
impl Relay {
    /// Sets where recorded calls' packets are copied (the recorder's queue).
    pub fn set_record_sink(&mut self, sink: Arc<ArrayQueue<RecPacket>>) {
        self.rec_sink = Some(sink);
    }

    /// Sets where captured calls' packets are copied (the capture
    /// writer's queue) and the Unix time of worker time 0, ns.
    pub fn set_capture_sink(&mut self, sink: Arc<ArrayQueue<CapPacket>>, epoch_unix_ns: u64) {
        self.cap_sink = Some((sink, epoch_unix_ns));
    }

    /// The capture session `id`'s packets are copied to, if any.
    pub fn capture(&self, id: SessionId) -> Option<u32> {
        self.captures.get(id as usize).copied().flatten()
    }

    /// Hands each event since the last call to `f`: (session, event).
    pub fn take_events(&mut self, mut f: impl FnMut(SessionId, MediaEvent)) {
        for (id, e) in self.events.events.drain(..) {
            f(id, e);
        }
    }

    /// The services of media `media` of session `id`, if it has any.
    pub fn services(&self, id: SessionId, media: usize) -> Option<&LineServices> {
        self.services.get(id as usize)?.get(media)?.as_deref()
    }

    /// Live conference rooms, and members in all of them.
    pub fn rooms(&self) -> (usize, usize) {
        let live = self.rooms.iter().flatten();
        let members = live.clone().map(Room::len).sum();
        (live.count(), members)
    }

    /// Carries out a service order on media `media` of session `id` at
    /// worker time `now_ns`.
    pub fn service(
        &mut self,
        id: SessionId,
        media: usize,
        op: ServiceOp,
        now_ns: u64,
    ) -> Result<(), String> {
        if let ServiceOp::Capture(c) = op {
            if self.session(id).is_none() {
                return Err("no such session".into());
            }
            let i = id as usize;
            if self.captures.len() <= i {
                self.captures.resize(i + 1, None);
            }
            self.captures[i] = c;
            return Ok(());
        }
        let medias = self.session(id).map_or(0, |s| s.medias.len());
        if media >= medias {
            return Err("no such media line".into());
        }
        let lines = self
            .services
            .get_mut(id as usize)
            .ok_or_else(|| "no such session".to_owned())?;
        if lines.len() < medias {
            lines.resize_with(medias, || None);
        }
        let line = lines[media].get_or_insert_with(|| {
            let seed = (id << 8) ^ (media as u32) ^ (now_ns as u32);
            Box::new(LineServices::new([
                super::rtp::Ssrc(seed.wrapping_mul(0x9e37_79b9) | 1),
                super::rtp::Ssrc(seed.wrapping_mul(0x85eb_ca6b) | 1),
            ]))
        });
        match op {
            ServiceOp::Audio(sides) => {
                for (i, a) in sides.into_iter().enumerate() {
                    if a.is_some() {
                        line.audio[i] = a;
                    }
                }
            }
            ServiceOp::Play {
                to,
                prompt,
                repeat,
                stop_on_dtmf,
            } => line.play(to, prompt, repeat, stop_on_dtmf, now_ns),
            ServiceOp::StopPlay { to } => line.stop_play(to),
            ServiceOp::Event {
                to,
                event,
                duration_ms,
                volume,
            } => line.send_event(to, event, duration_ms, volume, now_ns),
            ServiceOp::Block {
                from,
                blocking,
                silence,
            } => {
                line.block[from.index()] = blocking;
                line.silence[from.index()] = silence;
            }
            ServiceOp::Record(rec) => line.record = rec,
            // Handled above, for the whole session.
            ServiceOp::Capture(_) => {}
            ServiceOp::Terminate { audio, mode } => {
                let t = Terminal::new(audio, LocalMode::Silence).map_err(|e| e.to_string())?;
                line.audio[0] = Some(audio);
                line.set_terminal(Some(Box::new(t)));
                line.start_terminal(now_ns);
                self.schedule_svc(id, media, Side::A);
                return self.set_mode(id, media, mode, now_ns);
            }
            ServiceOp::Mode(mode) => return self.set_mode(id, media, mode, now_ns),
            ServiceOp::RecordRoom { room, rec } => {
                let r = self
                    .room_ids
                    .get(&room)
                    .and_then(|&r| self.rooms.get_mut(r as usize))
                    .and_then(Option::as_mut)
                    .ok_or_else(|| format!("no room {room} on this worker"))?;
                r.record = rec;
                return Ok(());
            }
        }
        self.schedule_svc(id, media, Side::A);
        self.schedule_svc(id, media, Side::B);
        Ok(())
    }

    /// Moves a media-server call into `mode` (out of its room first).
    fn set_mode(
        &mut self,
        id: SessionId,
        media: usize,
        mode: LocalMode,
        now_ns: u64,
    ) -> Result<(), String> {
        let generation = self.generations.get(id as usize).copied().unwrap_or(0);
        let Some(mut line) = self
            .services
            .get_mut(id as usize)
            .and_then(|s| s.get_mut(media))
            .and_then(Option::take)
        else {
            return Err("not a media server call".into());
        };
        if line.terminal().is_none() {
            self.services[id as usize][media] = Some(line);
            return Err("not a media server call".into());
        }
        self.leave_room(id, media, &mut line);
        if let LocalMode::Room(name) = &mode {
            let room = match self.room_ids.get(name) {
                Some(&r) => r,
                None => {
                    let r = match self.rooms.iter().position(Option::is_none) {
                        Some(i) => i,
                        None => {
                            self.rooms.push(None);
                            self.rooms.len() - 1
                        }
                    } as u32;
                    self.rooms[r as usize] = Some(Room::new(name.clone()));
                    self.room_ids.insert(name.clone(), r);
                    r
                }
            };
            if let (Some(Some(r)), Some(t)) =
                (self.rooms.get_mut(room as usize), line.terminal_mut())
            {
                let was_idle = r.due_ns.is_none();
                r.join((id, media as u16, generation), t, now_ns);
                if let Some(m) = &mut t.member {
                    m.0 = room;
                }
                if was_idle && let Some(d) = r.due_ns {
                    self.room_due.push(Reverse((d, room)));
                }
            }
        }
        if let Some(t) = line.terminal_mut() {
            t.mode = mode;
        }
        line.start_terminal(now_ns);
        self.services[id as usize][media] = Some(line);
        self.schedule_svc(id, media, Side::A);
        Ok(())
    }

    /// Takes a line's terminal out of its room (the room goes when empty).
    fn leave_room(&mut self, id: SessionId, media: usize, line: &mut LineServices) {
        let Some(t) = line.terminal_mut() else {
            return;
        };
        let Some((room, _)) = t.member.take() else {
            return;
        };
        if let Some(Some(r)) = self.rooms.get_mut(room as usize) {
            r.leave(id, media as u16);
            if r.is_empty() {
                self.room_ids.remove(&r.name);
                self.rooms[room as usize] = None;
            }
        }
    }

    /// Schedules the service direction of (`id`, `media`) towards `to`.
    fn schedule_svc(&mut self, id: SessionId, media: usize, to: Side) {
        let generation = self.generations.get(id as usize).copied().unwrap_or(0);
        let Some(line) = self
            .services
            .get_mut(id as usize)
            .and_then(|s| s.get_mut(media))
            .and_then(Option::as_mut)
        else {
            return;
        };
        let due = line.due(to);
        enqueue(
            &mut self.svc_due,
            &mut line.scheduled,
            due,
            (id, media, to, generation),
        );
    }

    fn poll_services(&mut self, now_ns: u64, out: &mut [u8]) -> Option<Transmit> {
        while let Some(&Reverse((due, id, media, to, generation))) = self.svc_due.peek() {
            if due > now_ns {
                return None;
            }
            self.svc_due.pop();
            let to = if to == 0 { Side::A } else { Side::B };
            let current = self.generations.get(id as usize) == Some(&generation);
            let Some(line) = self
                .services
                .get_mut(id as usize)
                .filter(|_| current)
                .and_then(|s| s.get_mut(usize::from(media)))
                .and_then(Option::as_mut)
            else {
                continue;
            };
            if line.scheduled[to.index()] != Some(due) {
                continue;
            }
            line.scheduled[to.index()] = None;
            self.events.current = id;
            let made = line.produce(
                to,
                now_ns,
                out,
                &mut self.events,
                &mut self.counters.services,
            );
            if let Some(next) = line.due(to) {
                let next = next.max(now_ns + 1_000_000);
                line.scheduled[to.index()] = Some(next);
                self.svc_due
                    .push(Reverse((next, id, media, to.index() as u8, generation)));
            }
            let Some(len) = made else {
                continue;
            };
            if let Some(t) = self.finish(id, usize::from(media), to, out, len) {
                return Some(t);
            }
        }
        None
    }

    /// Mixes the next due room, if any, into the outbox; false when none
    /// is due.
    fn poll_rooms(&mut self, now_ns: u64) -> bool {
        let Some(&Reverse((due, room))) = self.room_due.peek() else {
            return false;
        };
        if due > now_ns {
            return false;
        }
        self.room_due.pop();
        let Some(Some(r)) = self.rooms.get_mut(room as usize) else {
            return true;
        };
        if r.due_ns != Some(due) {
            return true;
        }
        // 1: every member's input.
        let mut i = 0;
        while i < r.members.len() {
            let m = r.members[i];
            let line = self
                .services
                .get_mut(m.session as usize)
                .filter(|_| self.generations.get(m.session as usize) == Some(&m.generation))
                .and_then(|s| s.get_mut(usize::from(m.media)))
                .and_then(Option::as_mut);
            let Some(line) = line else {
                r.leave(m.session, m.media);
                continue;
            };
            self.events.current = m.session;
            if let Some(t) = line.terminal_mut()
                && r.feed(t, m.member, &mut self.events)
            {
                line.stop_on_digit();
            }
            i += 1;
        }
        // 2: the mix (and the room's recording).
        let (recorded, lost) = r.mix(now_ns, self.rec_sink.as_deref());
        self.counters.services.recorded += recorded;
        self.counters.services.record_dropped += lost;
        self.counters.services.room_frames += 1;
        // 3: what each member hears, into the outbox.
        for k in 0..r.members.len() {
            let m = r.members[k];
            let Some(line) = self
                .services
                .get_mut(m.session as usize)
                .and_then(|s| s.get_mut(usize::from(m.media)))
                .and_then(Option::as_mut)
            else {
                continue;
            };
            let mut buf = self.spare.pop().unwrap_or_else(|| Box::new([0u8; OUT_BUF]));
            let len = if line.playing(Side::A) {
                let pt = line.audio[0].map_or(0, |a| a.format.pt);
                self.events.current = m.session;
                let made = room_prompt(line.inject_a(), pt, &mut buf[..], &mut self.events);
                if made.is_some() {
                    self.counters.services.prompt_frames += 1;
                }
                made
            } else {
                let LineServicesParts { t, inj } = split(line);
                t.and_then(|t| {
                    let n = r.payload_for(t, m.member, &mut buf[..], &mut self.counters.services);
                    if n == 0 {
                        return None;
                    }
                    room_header(inj, t, &mut buf[..])?;
                    Some(12 + n)
                })
            };
            match len {
                Some(len) => {
                    self.counters.services.room_sent += 1;
                    self.outbox.push_back(OutPacket {
                        session: m.session,
                        media: m.media,
                        generation: m.generation,
                        len,
                        buf,
                    });
                }
                None => self.spare.push(buf),
            }
        }
        let next = due + super::services::FRAME_NS;
        let next = if now_ns > next + 3 * super::services::FRAME_NS {
            super::transcode::on_grid(now_ns + super::services::FRAME_NS)
        } else {
            next
        };
        if r.is_empty() {
            r.due_ns = None;
        } else {
            r.due_ns = Some(next);
            self.room_due.push(Reverse((next, room)));
        }
        true
    }

    /// The next packet a room made, routed and protected, in `out`.
    fn pop_outbox(&mut self, out: &mut [u8]) -> Option<Transmit> {
        while let Some(p) = self.outbox.pop_front() {
            let current = self.generations.get(p.session as usize) == Some(&p.generation);
            let len = p.len.min(out.len());
            out[..len].copy_from_slice(&p.buf[..len]);
            let (session, media) = (p.session, usize::from(p.media));
            self.spare.push(p.buf);
            if !current {
                continue;
            }
            if let Some(t) = self.finish(session, media, Side::A, out, len) {
                return Some(t);
            }
        }
        None
    }
}

/// A line's terminal and its injection towards A, borrowed apart.
struct LineServicesParts<'a> {
    t: Option<&'a mut Terminal>,
    inj: &'a mut super::services::Injection,
}

fn split(line: &mut LineServices) -> LineServicesParts<'_> {
    let (t, inj) = line.parts();
    LineServicesParts { t, inj }
}
