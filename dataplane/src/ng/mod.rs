//! The rtpengine-compatible "ng" control protocol: each UDP datagram is a
//! cookie, a space and a bencoded dictionary; the reply repeats the cookie.
//!
//! [`NgServer::handle`] is sans-IO: a request datagram and the wall-clock time
//! in, a reply datagram out. Media work goes through [`MediaControl`], which
//! the media engine implements. Commands: `ping`, `offer`, `answer`,
//! `delete`, `query`, `list`. Replies to a cookie are cached, so a retransmitted
//! request gets the same answer and is not executed twice.
//!
//! Offer/answer model: the tag of the first offer is side A, the other tag
//! side B. Each side has its own relay ports; the SDP sent to a side carries
//! the ports *that side* sends to, so media flows A → relay(A port) →
//! relay(B port) → B and back.

pub mod bencode;
mod sdes;
mod stats;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use bencode::Value;

use crate::engine::media::{
    Applied, LegPorts, MediaEngine, MediaError, MediaHandle, MediaPlan, SessionSnapshot,
};
use crate::entropy::Entropy;
use crate::media::relay::{LegSrtp, PeerSpec, RelayCounters, Side};
use crate::sdp::Sdp;
use sdes::{OwnKey, SdesFlags};

/// What the ng server needs from the media plane.
pub trait MediaControl {
    /// The worker a new call's media goes to.
    fn place(&self) -> usize;
    /// Creates or updates a session.
    fn apply(
        &self,
        worker: usize,
        session: Option<u32>,
        medias: Vec<MediaPlan>,
    ) -> Result<Applied, MediaError>;
    /// A copy of a session.
    fn snapshot(&self, h: MediaHandle) -> Result<SessionSnapshot, MediaError>;
    /// Removes a session.
    fn remove(&self, h: MediaHandle) -> Result<SessionSnapshot, MediaError>;
    /// Relay counters over all workers.
    fn counters(&self) -> RelayCounters;
    /// Sessions whose media timed out since the last call.
    fn take_timed_out(&self) -> Vec<MediaHandle>;
}

impl MediaControl for MediaEngine {
    fn place(&self) -> usize {
        MediaEngine::place(self)
    }
    fn apply(
        &self,
        worker: usize,
        session: Option<u32>,
        medias: Vec<MediaPlan>,
    ) -> Result<Applied, MediaError> {
        MediaEngine::apply(self, worker, session, medias)
    }
    fn snapshot(&self, h: MediaHandle) -> Result<SessionSnapshot, MediaError> {
        MediaEngine::snapshot(self, h)
    }
    fn remove(&self, h: MediaHandle) -> Result<SessionSnapshot, MediaError> {
        MediaEngine::remove(self, h)
    }
    fn counters(&self) -> RelayCounters {
        MediaEngine::counters(self)
    }
    fn take_timed_out(&self) -> Vec<MediaHandle> {
        MediaEngine::take_timed_out(self)
    }
}

/// A dictionary key of a reply: nearly always a literal.
pub type Key = std::borrow::Cow<'static, str>;

/// An owned bencode value, for replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Integer.
    Int(i64),
    /// Byte string.
    Str(Vec<u8>),
    /// List.
    List(Vec<Out>),
    /// Dictionary (written with sorted keys).
    Dict(Vec<(Key, Out)>),
}

impl Out {
    fn str(s: impl Into<Vec<u8>>) -> Out {
        Out::Str(s.into())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut digits = [0u8; 20];
        match self {
            Out::Int(i) => {
                out.push(b'i');
                if *i < 0 {
                    out.push(b'-');
                }
                out.extend_from_slice(crate::text::decimal(i.unsigned_abs(), &mut digits));
                out.push(b'e');
            }
            Out::Str(b) => bencode::put_bytes(out, b),
            Out::List(items) => {
                out.push(b'l');
                items.iter().for_each(|i| i.encode(out));
                out.push(b'e');
            }
            Out::Dict(entries) => {
                let mut sorted: Vec<&(Key, Out)> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push(b'd');
                for (k, v) in sorted {
                    bencode::put_bytes(out, k.as_bytes());
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }
}

/// A failed command: the `error-reason` of the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NgError(pub String);

impl<T: Into<String>> From<T> for NgError {
    fn from(s: T) -> Self {
        NgError(s.into())
    }
}

/// Per-call state the server keeps.
#[derive(Debug, Clone)]
struct Call {
    /// Creation order, for `list`.
    seq: u64,
    handle: Option<MediaHandle>,
    /// Tag of side A, side B.
    tags: [Option<Vec<u8>>; 2],
    labels: [Option<Vec<u8>>; 2],
    created: u64,
    last_signal: u64,
    medias: Vec<MediaState>,
}

#[derive(Debug, Clone, Default)]
struct MediaState {
    kind: Vec<u8>,
    proto: Vec<u8>,
    /// Whether the relay multiplexes RTCP towards side A, side B.
    mux: [bool; 2],
    ports: [LegPorts; 2],
    /// What side A, side B asked for in their SDP.
    peers: [Option<PeerSpec>; 2],
    /// The profile written into SDP towards side A, side B.
    profiles: [Option<&'static str>; 2],
    /// Whether side A, side B speak SRTP.
    secure: [bool; 2],
    /// rvoip's keys offered to a side, until its answer picks one (then only
    /// that one is kept, for re-offers).
    offered: [Vec<OwnKey>; 2],
    /// rvoip's key in the answer to a side that offered SRTP.
    answer_key: [Option<OwnKey>; 2],
}

fn idx(side: Side) -> usize {
    usize::from(side == Side::B)
}

/// Replies kept for retransmitted requests.
const REPLY_CACHE: usize = 4096;

/// The ng protocol server.
#[derive(Debug)]
pub struct NgServer<M> {
    media: M,
    /// Address written into SDP for the relay.
    advertised: IpAddr,
    calls: HashMap<Vec<u8>, Call>,
    /// Calls created so far (their `seq`).
    created: u64,
    cache: HashMap<Vec<u8>, Vec<u8>>,
    cache_order: VecDeque<Vec<u8>>,
    counters: NgCounters,
    /// Where fresh SRTP keys come from.
    rng: Box<dyn Entropy>,
}

/// Commands seen and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NgCounters {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests answered from the cache (retransmissions).
    pub retransmissions: u64,
    /// Datagrams without a cookie (dropped).
    pub dropped: u64,
    /// Calls deleted because their media timed out.
    pub media_timeouts: u64,
}

/// Flags of an offer or answer that change what rvoip does.
#[derive(Debug, Default)]
struct Flags {
    replace_origin: bool,
    transport_protocol: Option<Vec<u8>>,
    mux_offer: bool,
    mux_demux: bool,
    mux_reject: bool,
    label: Option<Vec<u8>>,
    sdes: SdesFlags,
}

fn strings<'a>(v: Option<&'a Value<'a>>) -> Vec<&'a [u8]> {
    match v {
        Some(Value::List(items)) => items.iter().filter_map(Value::as_bytes).collect(),
        Some(Value::Bytes(b)) => vec![*b],
        _ => Vec::new(),
    }
}

/// How much a `delete` or `query` reply reports: `flags: [totals-only]`
/// (a rvoip extension; other relays ignore unknown flags) leaves out the
/// per-tag detail, for clients that only keep the call's totals.
fn detail(req: &Value<'_>) -> stats::Detail {
    if strings(req.get("flags"))
        .iter()
        .any(|f| f.eq_ignore_ascii_case(b"totals-only"))
    {
        stats::Detail::TotalsOnly
    } else {
        stats::Detail::Full
    }
}

fn flags(req: &Value<'_>) -> Result<Flags, NgError> {
    let mut f = Flags::default();
    for r in strings(req.get("replace")) {
        // Connection lines always get the relay's address (the media goes
        // there), so only the origin is optional.
        if r == b"origin" {
            f.replace_origin = true;
        }
    }
    for m in strings(req.get("rtcp-mux")) {
        match m {
            b"offer" | b"require" => f.mux_offer = true,
            b"demux" => f.mux_demux = true,
            b"reject" => f.mux_reject = true,
            _ => {}
        }
    }
    if let Some(tp) = req.get("transport-protocol").and_then(Value::as_bytes) {
        if !matches!(tp, b"RTP/AVP" | b"RTP/AVPF" | b"RTP/SAVP" | b"RTP/SAVPF") {
            return Err(NgError(format!(
                "Unsupported transport-protocol: {} (RTP/AVP, RTP/AVPF, RTP/SAVP, RTP/SAVPF)",
                String::from_utf8_lossy(tp)
            )));
        }
        f.transport_protocol = Some(tp.to_vec());
    }
    // `flags: [SDES-off, SDES-only-<suite>, ...]` or `SDES: [off, only-<suite>, ...]`.
    for flag in strings(req.get("flags")) {
        if flag.len() > 5 && flag[..5].eq_ignore_ascii_case(b"SDES-") {
            f.sdes.read(&flag[5..])?;
        }
    }
    for flag in strings(req.get("SDES")) {
        f.sdes.read(flag)?;
    }
    f.label = req
        .get("label")
        .and_then(Value::as_bytes)
        .map(<[u8]>::to_vec);
    Ok(f)
}

/// The peer an SDP media section describes.
fn peer_of(sdp: &Sdp<'_>, i: usize) -> Option<PeerSpec> {
    let m = sdp.media.get(i)?;
    if m.media.port == 0 {
        return None;
    }
    let addr = sdp.media_connection(i)?.address;
    let rtp = SocketAddr::new(addr, m.media.port);
    let rtcp_mux = m.rtcp_mux();
    let rtcp = match m.rtcp() {
        Some(r) => SocketAddr::new(r.address.unwrap_or(addr), r.port),
        None => SocketAddr::new(addr, m.media.port.wrapping_add(1)),
    };
    let clock_rate = m
        .payload_types()
        .next()
        .map(|pt| {
            m.rtpmap(pt)
                .map_or_else(|| static_clock_rate(pt), |r| r.clock_rate)
        })
        .unwrap_or(8000);
    Some(PeerSpec {
        rtp: Some(rtp),
        rtcp: Some(rtcp),
        rtcp_mux,
        clock_rate,
    })
}

/// RFC 3551 clock rates of the static payload types a relay meets.
fn static_clock_rate(pt: u8) -> u32 {
    match pt {
        10 | 11 => 44_100,
        14 | 25 | 26 | 28 | 31..=34 => 90_000,
        16 => 11_025,
        17 => 22_050,
        _ => 8_000,
    }
}

const ICE_AND_MUX: &[&str] = &[
    "rtcp",
    "rtcp-mux",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-pacing",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
];

impl<M: MediaControl> NgServer<M> {
    /// A server writing `advertised` into SDP as the relay's address, with
    /// the SRTP keys it makes drawn from `entropy`.
    pub fn new(media: M, advertised: IpAddr, entropy: Box<dyn Entropy>) -> Self {
        NgServer {
            media,
            advertised,
            calls: HashMap::new(),
            created: 0,
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            counters: NgCounters::default(),
            rng: entropy,
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> NgCounters {
        self.counters
    }

    /// The media plane.
    pub fn media(&self) -> &M {
        &self.media
    }

    /// Calls held.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Deletes the calls whose media timed out (no packet for the relay's
    /// media timeout), freeing their ports, as rtpengine does with its
    /// `timeout`. Call about once a second; returns the Call-IDs deleted.
    pub fn expire(&mut self) -> Vec<Vec<u8>> {
        let dead = self.media.take_timed_out();
        if dead.is_empty() {
            return Vec::new();
        }
        let ids: Vec<Vec<u8>> = self
            .calls
            .iter()
            .filter(|(_, c)| c.handle.is_some_and(|h| dead.contains(&h)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(call) = self.calls.remove(id)
                && let Some(h) = call.handle
            {
                let _ = self.media.remove(h);
            }
            self.counters.media_timeouts += 1;
        }
        ids
    }

    /// Handles one request datagram at wall-clock time `now` (Unix seconds).
    /// Returns the reply, or `None` for a datagram without a cookie (dropped,
    /// as rtpengine does).
    pub fn handle(&mut self, datagram: &[u8], now: u64) -> Option<Vec<u8>> {
        let Some(sp) = datagram.iter().position(|b| *b == b' ') else {
            self.counters.dropped += 1;
            return None;
        };
        let (cookie, body) = (&datagram[..sp], &datagram[sp + 1..]);
        if cookie.is_empty() {
            self.counters.dropped += 1;
            return None;
        }
        if let Some(cached) = self.cache.get(cookie) {
            self.counters.retransmissions += 1;
            return Some(cached.clone());
        }
        self.counters.requests += 1;
        let result = match bencode::decode(body) {
            Err(_) if body.first() == Some(&b'd') => {
                Err(NgError::from("Could not decode bencode dictionary"))
            }
            Err(_) => Err(NgError::from("Invalid NG data format")),
            Ok((req @ Value::Dict(_), _)) => self.command(&req, now),
            Ok(_) => Err(NgError::from("Invalid NG data format")),
        };
        let reply = match result {
            Ok(mut entries) => {
                entries.push((
                    "result".into(),
                    Out::str(if entries.iter().any(|(k, _)| k == "pong") {
                        "pong"
                    } else {
                        "ok"
                    }),
                ));
                entries.retain(|(k, _)| k != "pong");
                Out::Dict(entries)
            }
            Err(e) => {
                self.counters.errors += 1;
                Out::Dict(vec![
                    ("result".into(), Out::str("error")),
                    ("error-reason".into(), Out::str(e.0)),
                ])
            }
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(cookie);
        out.push(b' ');
        reply.encode(&mut out);
        if self.cache_order.len() == REPLY_CACHE
            && let Some(old) = self.cache_order.pop_front()
        {
            self.cache.remove(&old);
        }
        self.cache_order.push_back(cookie.to_vec());
        self.cache.insert(cookie.to_vec(), out.clone());
        Some(out)
    }

    fn command(&mut self, req: &Value<'_>, now: u64) -> Result<Vec<(Key, Out)>, NgError> {
        let command = req
            .get("command")
            .ok_or_else(|| NgError::from("Dictionary contains no key \"command\""))?;
        match command.as_bytes() {
            Some(b"ping") => Ok(vec![("pong".into(), Out::Int(1))]),
            Some(b"offer") => self.offer(req, now),
            Some(b"answer") => self.answer(req, now),
            Some(b"delete") => self.delete(req, now),
            Some(b"query") => self.query(req, now),
            Some(b"list") => {
                let mut calls: Vec<(&u64, &Vec<u8>)> =
                    self.calls.iter().map(|(id, c)| (&c.seq, id)).collect();
                calls.sort_unstable();
                Ok(vec![(
                    "calls".into(),
                    Out::List(
                        calls
                            .into_iter()
                            .map(|(_, id)| Out::Str(id.clone()))
                            .collect(),
                    ),
                )])
            }
            _ => Err("Unrecognized command".into()),
        }
    }

    fn required<'a>(req: &'a Value<'a>, key: &str) -> Result<&'a [u8], NgError> {
        req.get(key)
            .and_then(Value::as_bytes)
            .ok_or_else(|| NgError(format!("No {key} in message")))
    }

    fn offer(&mut self, req: &Value<'_>, now: u64) -> Result<Vec<(Key, Out)>, NgError> {
        let call_id = Self::required(req, "call-id")?;
        let from_tag = Self::required(req, "from-tag")?;
        let sdp_text = req
            .get("sdp")
            .and_then(Value::as_bytes)
            .ok_or_else(|| NgError::from("No SDP body in message"))?;
        let mut sdp = Sdp::parse(sdp_text).map_err(|_| NgError::from("Failed to parse SDP"))?;
        let f = flags(req)?;
        let worker = self
            .calls
            .get(call_id)
            .and_then(|c| c.handle)
            .map_or_else(|| self.media.place(), |h| h.worker);
        let seq = self.created;
        let call = self.calls.entry(call_id.to_vec()).or_insert_with(|| Call {
            seq,
            handle: None,
            tags: [None, None],
            labels: [None, None],
            created: now,
            last_signal: now,
            medias: Vec::new(),
        });
        if call.seq == seq {
            self.created += 1;
        }
        let side = if call.tags[0].is_none() || call.tags[0].as_deref() == Some(from_tag) {
            Side::A
        } else if call.tags[1].is_none() || call.tags[1].as_deref() == Some(from_tag) {
            Side::B
        } else {
            return Err("Unknown tag".into());
        };
        call.tags[idx(side)] = Some(from_tag.to_vec());
        if f.label.is_some() {
            call.labels[idx(side)] = f.label.clone();
        }
        call.last_signal = now;
        let (me, other) = (idx(side), idx(side.other()));
        if call.medias.len() < sdp.media.len() {
            call.medias.resize(sdp.media.len(), MediaState::default());
        }
        let mut plans = Vec::with_capacity(sdp.media.len());
        let mut crypto_lines: Vec<Vec<String>> = Vec::with_capacity(sdp.media.len());
        for (i, m) in sdp.media.iter().enumerate() {
            let st = &mut call.medias[i];
            st.kind = m.media.kind.to_vec();
            let proto = &m.media.proto;
            let feedback = proto.ends_with(b"F") || proto.ends_with(b"f");
            let offerer_secure = sdes::is_savp(proto);
            let recipient_secure = match &f.transport_protocol {
                Some(tp) => sdes::is_savp(tp),
                None => offerer_secure,
            };
            st.proto = f
                .transport_protocol
                .clone()
                .unwrap_or_else(|| proto.to_vec());
            let mut lines = Vec::new();
            let mut me_srtp = LegSrtp::default();
            let mut other_srtp = None;
            if m.media.port != 0 && m.media.is_rtp() {
                if offerer_secure {
                    let (leg, ours) = sdes::accept_offer(
                        m,
                        &f.sdes,
                        st.answer_key[me].as_ref(),
                        self.rng.as_ref(),
                    )?;
                    me_srtp = leg;
                    st.answer_key[me] = Some(ours);
                } else {
                    st.answer_key[me] = None;
                }
                if recipient_secure {
                    if f.sdes.off {
                        return Err("SDES-off leaves the RTP/SAVP side without keys".into());
                    }
                    st.offered[other] =
                        sdes::make_offer(&f.sdes, &st.offered[other], self.rng.as_ref())?;
                    lines = st.offered[other].iter().map(OwnKey::line).collect();
                } else {
                    st.offered[other].clear();
                    other_srtp = Some(LegSrtp::default());
                }
                st.secure = if me == 0 {
                    [offerer_secure, recipient_secure]
                } else {
                    [recipient_secure, offerer_secure]
                };
                st.profiles[me] = Some(sdes::profile(feedback, offerer_secure));
                st.profiles[other] = Some(match f.transport_protocol.as_deref() {
                    Some(tp) => sdes::profile(tp.ends_with(b"F"), recipient_secure),
                    None => sdes::profile(feedback, recipient_secure),
                });
            }
            crypto_lines.push(lines);
            let peer = peer_of(&sdp, i);
            let mut plan = MediaPlan::default();
            if let Some(peer) = peer {
                st.peers[me] = Some(peer);
                // Towards the offerer: multiplex if it does and it is not refused.
                st.mux[me] = peer.rtcp_mux && !f.mux_reject;
                // Towards the other side: as asked, else as the offerer does.
                st.mux[other] = if f.mux_demux {
                    false
                } else {
                    f.mux_offer || peer.rtcp_mux
                };
                plan.sides[me] = crate::engine::media::SidePlan {
                    open_rtp: true,
                    open_rtcp: !st.mux[me],
                    peer: Some(peer),
                    srtp: Some(me_srtp),
                };
                plan.sides[other] = crate::engine::media::SidePlan {
                    open_rtp: true,
                    open_rtcp: !st.mux[other],
                    peer: None,
                    srtp: other_srtp,
                };
            }
            plans.push(plan);
        }
        let session = call.handle.map(|h| h.session);
        apply_and_rewrite(
            &self.media,
            self.advertised,
            call,
            (worker, session, plans),
            &mut sdp,
            side.other(),
            &f,
            &crypto_lines,
        )
    }

    fn answer(&mut self, req: &Value<'_>, now: u64) -> Result<Vec<(Key, Out)>, NgError> {
        let call_id = Self::required(req, "call-id")?;
        let to_tag = Self::required(req, "to-tag")?;
        let call = self
            .calls
            .get_mut(call_id)
            .ok_or_else(|| NgError::from("Unknown call-id"))?;
        let sdp_text = req
            .get("sdp")
            .and_then(Value::as_bytes)
            .ok_or_else(|| NgError::from("No SDP body in message"))?;
        let mut sdp = Sdp::parse(sdp_text).map_err(|_| NgError::from("Failed to parse SDP"))?;
        let f = flags(req)?;
        // The answerer is the to-tag: side B for the first answer, side A when
        // B made a re-offer.
        let side = if call.tags[0].as_deref() == Some(to_tag) {
            Side::A
        } else if call.tags[1].is_none() || call.tags[1].as_deref() == Some(to_tag) {
            Side::B
        } else {
            return Err("Unknown tag".into());
        };
        call.tags[idx(side)] = Some(to_tag.to_vec());
        if f.label.is_some() {
            call.labels[idx(side)] = f.label.clone();
        }
        call.last_signal = now;
        let (me, other) = (idx(side), idx(side.other()));
        let mut plans = Vec::with_capacity(sdp.media.len());
        let mut crypto_lines: Vec<Vec<String>> = Vec::with_capacity(sdp.media.len());
        for i in 0..sdp.media.len().min(call.medias.len()) {
            let mut plan = MediaPlan::default();
            let st = &mut call.medias[i];
            // The answerer's keys, if rvoip offered it SRTP.
            let m = &sdp.media[i];
            let mut me_srtp = LegSrtp::default();
            if st.secure[me] && m.media.port != 0 {
                let (leg, accepted) = sdes::take_answer(m, &st.offered[me])?;
                me_srtp = leg;
                st.offered[me] = vec![accepted];
            }
            // Towards the offerer: rvoip's key for the suite it chose.
            crypto_lines.push(
                st.answer_key[other]
                    .iter()
                    .filter(|_| st.secure[other])
                    .map(OwnKey::line)
                    .collect(),
            );
            if let Some(peer) = peer_of(&sdp, i) {
                st.peers[me] = Some(peer);
                // Multiplexing towards the answerer holds only if it accepted it.
                st.mux[me] = st.mux[me] && peer.rtcp_mux;
                plan.sides[me] = crate::engine::media::SidePlan {
                    open_rtp: false,
                    open_rtcp: !st.mux[me],
                    peer: Some(peer),
                    srtp: Some(me_srtp),
                };
            }
            plans.push(plan);
        }
        let handle = call
            .handle
            .ok_or_else(|| NgError::from("Unknown call-id"))?;
        apply_and_rewrite(
            &self.media,
            self.advertised,
            call,
            (handle.worker, Some(handle.session), plans),
            &mut sdp,
            side.other(),
            &f,
            &crypto_lines,
        )
    }

    fn delete(&mut self, req: &Value<'_>, now: u64) -> Result<Vec<(Key, Out)>, NgError> {
        let call_id = Self::required(req, "call-id")?;
        let Some(call) = self.calls.remove(call_id) else {
            return Ok(vec![(
                "warning".into(),
                Out::str("Call-ID not found or tags didn't match"),
            )]);
        };
        let snap = call.handle.map(|h| self.media.remove(h));
        Ok(stats::report(
            &call_report(&call),
            snap.and_then(Result::ok).as_ref(),
            now,
            detail(req),
        ))
    }

    fn query(&mut self, req: &Value<'_>, now: u64) -> Result<Vec<(Key, Out)>, NgError> {
        let call_id = Self::required(req, "call-id")?;
        let call = self
            .calls
            .get(call_id)
            .ok_or_else(|| NgError::from("Unknown call-id"))?;
        let snap = call.handle.map(|h| self.media.snapshot(h));
        Ok(stats::report(
            &call_report(call),
            snap.and_then(Result::ok).as_ref(),
            now,
            detail(req),
        ))
    }
}

fn call_report(c: &Call) -> stats::CallReport<'_> {
    stats::CallReport {
        tags: [c.tags[0].as_deref(), c.tags[1].as_deref()],
        labels: [c.labels[0].as_deref(), c.labels[1].as_deref()],
        created: c.created,
        last_signal: c.last_signal,
        medias: c
            .medias
            .iter()
            .map(|m| stats::MediaReport {
                kind: &m.kind,
                proto: &m.proto,
                ports: m.ports,
                peers: m.peers,
            })
            .collect(),
    }
}

/// Applies `plans` (worker, session, plans) to the call's media, records the
/// ports, and returns the reply: the SDP rewritten for side `to`.
#[allow(clippy::too_many_arguments)]
fn apply_and_rewrite<M: MediaControl>(
    media: &M,
    advertised: IpAddr,
    call: &mut Call,
    (worker, session, plans): (usize, Option<u32>, Vec<MediaPlan>),
    sdp: &mut Sdp<'_>,
    to: Side,
    f: &Flags,
    crypto_lines: &[Vec<String>],
) -> Result<Vec<(Key, Out)>, NgError> {
    let applied = media
        .apply(worker, session, plans)
        .map_err(|e| NgError(e.to_string()))?;
    call.handle = Some(applied.handle);
    for (i, ports) in applied.ports.iter().enumerate() {
        call.medias[i].ports = *ports;
    }
    rewrite(sdp, call, to, advertised, f, crypto_lines);
    Ok(vec![("sdp".into(), Out::Str(sdp.to_bytes()))])
}

/// Points the SDP that goes to `to` at the relay ports of side `to`, with
/// the profile and `a=crypto` lines (`crypto[i]`) of side `to`: nothing of
/// the other side's keys goes through.
fn rewrite(
    sdp: &mut Sdp<'_>,
    call: &Call,
    to: Side,
    advertised: IpAddr,
    f: &Flags,
    crypto: &[Vec<String>],
) {
    let t = idx(to);
    for (i, m) in sdp.media.iter_mut().enumerate() {
        m.remove_attribute("crypto");
        let Some(st) = call.medias.get(i) else {
            continue;
        };
        for name in ICE_AND_MUX {
            m.remove_attribute(name);
        }
        if m.media.port == 0 || st.ports[t].rtp == 0 {
            m.set_port(0);
            continue;
        }
        m.set_port(st.ports[t].rtp);
        if let Some(p) = st.profiles[t] {
            m.set_proto(p);
        } else if let Some(tp) = &f.transport_protocol {
            m.set_proto(&String::from_utf8_lossy(tp));
        }
        for line in crypto.get(i).into_iter().flatten() {
            m.add_attribute("crypto", Some(line.as_bytes()));
        }
        if m.connection().is_some() {
            m.set_connection(advertised);
        }
        let rtcp_port = if st.mux[t] {
            st.ports[t].rtp
        } else {
            st.ports[t].rtcp.unwrap_or(st.ports[t].rtp + 1)
        };
        m.add_attribute("rtcp", Some(rtcp_port.to_string().as_bytes()));
        if st.mux[t] {
            m.add_attribute("rtcp-mux", None);
        }
    }
    // The session connection carries media addresses: always the relay's.
    sdp.set_session_connection(advertised);
    if f.replace_origin {
        sdp.set_origin_address(advertised);
    }
    sdp.remove_ice();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_bencoded_with_sorted_keys_and_signed_integers() {
        let reply = Out::Dict(vec![
            ("result".into(), Out::str("ok")),
            (
                String::from("created").into(),
                Out::List(vec![Out::Int(0), Out::Int(-17), Out::Int(i64::MIN)]),
            ),
            ("a".into(), Out::Dict(vec![("z".into(), Out::str(""))])),
        ]);
        let mut out = Vec::new();
        reply.encode(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "d1:ad1:z0:e7:createdli0ei-17ei-9223372036854775808ee6:result2:oke"
        );
    }
}
