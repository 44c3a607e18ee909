//! The relay's state machine, sans-IO: which local endpoint belongs to which
//! call leg, where each leg's peer is, and what to do with each packet.
//!
//! Driving contract, one `Relay` per worker:
//! 1. the control side creates a session ([`Relay::create_session`]), opens
//!    sockets for its legs through the I/O driver, and binds them here
//!    ([`Relay::bind_endpoint`]); SDP updates go through [`Relay::set_peer`];
//! 2. for every received datagram the driver calls [`Relay::on_packet`] with
//!    the current time and sends what it returns; nothing here allocates;
//! 3. about once a second the driver calls [`Relay::tick`], which runs the
//!    media-timeout timer wheel;
//! 4. [`Relay::remove_session`] returns the endpoints to close.

use std::net::SocketAddr;

use smallvec::SmallVec;

use super::rtp::{PacketError, check_rtcp, looks_like_rtcp, parse_rtp};
use super::stats::StreamStats;

/// Identifies a local endpoint (a bound socket) within one worker.
pub type EndpointId = u32;

/// Identifies a session within one worker.
pub type SessionId = u32;

/// The two sides of a call: A offered first, B answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    fn index(self) -> usize {
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
}

/// Where an endpoint belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    session: SessionId,
    media: u16,
    side: Side,
    component: Component,
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the packet unchanged out of endpoint `via` to `to`.
    Forward {
        /// Local endpoint to send from.
        via: EndpointId,
        /// Destination.
        to: SocketAddr,
    },
    /// Drop it; the reason was counted.
    Drop(DropReason),
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
}

/// Relay-wide counters of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Packets forwarded.
    pub forwarded: u64,
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

/// The relay of one worker.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    slots: Vec<Option<Slot>>,
    sessions: Vec<Option<Session>>,
    /// Bumped each time a session id is reused, so stale timers are ignored.
    generations: Vec<u32>,
    free: Vec<SessionId>,
    wheel: TimerWheel,
    counters: RelayCounters,
    timed_out: Vec<SessionId>,
}

impl Relay {
    /// An empty relay.
    pub fn new(config: RelayConfig, now_ms: u64) -> Self {
        Relay {
            config,
            slots: Vec::new(),
            sessions: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            wheel: TimerWheel::new(now_ms),
            counters: RelayCounters::default(),
            timed_out: Vec::new(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> RelayCounters {
        self.counters
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
                id
            }
            None => {
                self.sessions.push(Some(s));
                self.generations.push(0);
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

    /// Removes a session; returns the endpoints the driver must close.
    pub fn remove_session(&mut self, id: SessionId) -> SmallVec<[EndpointId; 8]> {
        let mut eps = SmallVec::new();
        let Some(session) = self.sessions.get_mut(id as usize).and_then(Option::take) else {
            return eps;
        };
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

    /// Handles one received datagram. No allocation, no system call.
    pub fn on_packet(
        &mut self,
        now_ms: u64,
        now_ns: u64,
        ep: EndpointId,
        src: SocketAddr,
        pkt: &[u8],
    ) -> Action {
        let Some(Some(slot)) = self.slots.get(ep as usize).copied() else {
            self.counters.unknown_endpoint += 1;
            return Action::Drop(DropReason::UnknownEndpoint);
        };
        let config = self.config;
        let Some(session) = self
            .sessions
            .get_mut(slot.session as usize)
            .and_then(Option::as_mut)
        else {
            self.counters.unknown_endpoint += 1;
            return Action::Drop(DropReason::UnknownEndpoint);
        };
        let Some(pair) = session.medias.get_mut(usize::from(slot.media)) else {
            self.counters.unknown_endpoint += 1;
            return Action::Drop(DropReason::UnknownEndpoint);
        };
        let rtcp = slot.component == Component::Rtcp || looks_like_rtcp(pkt);
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
        let separate_rtcp = slot.component == Component::Rtcp;
        let (latched, expected, last_seen) = if separate_rtcp {
            (
                &mut mine.latched_rtcp,
                mine.peer.rtcp,
                mine.rtp_in.last_seen_ms,
            )
        } else {
            (
                &mut mine.latched_rtp,
                mine.peer.rtp,
                mine.rtp_in.last_seen_ms,
            )
        };
        let accepted = match (config.latch, *latched) {
            (LatchMode::Strict, _) => expected.is_none_or(|e| e == src),
            (LatchMode::Learning, None) => true,
            (LatchMode::Learning, Some(l)) => {
                l == src || now_ms.saturating_sub(last_seen) >= config.relatch_idle_ms
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
        *latched = Some(src);
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
                mine.rtp_in.on_rtp(&h, pkt.len(), arrival_ts, now_ms);
            }
            None => {
                mine.rtcp_in.packets += 1;
                mine.rtcp_in.bytes += pkt.len() as u64;
            }
        }
        session.last_packet_ms = now_ms;
        // Route to the other side.
        let route = if rtcp {
            theirs.rtcp_route()
        } else {
            theirs.rtp_ep.zip(theirs.rtp_destination())
        };
        match route {
            Some((via, to)) => {
                theirs.sent_packets += 1;
                theirs.sent_bytes += pkt.len() as u64;
                self.counters.forwarded += 1;
                Action::Forward { via, to }
            }
            None => {
                self.counters.no_destination += 1;
                Action::Drop(DropReason::NoDestination)
            }
        }
    }

    /// Advances the timer wheel to `now_ms`: sessions silent for the media
    /// timeout are marked timed out (and listed by [`Relay::take_timed_out`]).
    pub fn tick(&mut self, now_ms: u64) {
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
