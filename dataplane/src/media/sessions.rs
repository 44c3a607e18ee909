//! Media sessions: the calls whose media the relay carries, driven by
//! typed orders ([`MediaOrder`]) whatever wire form they came in. Sans-IO
//! but for the [`MediaControl`] it is given (the media engine, or a fake).
//!
//! Offer/answer model: the tag of the first offer is side A, the other tag
//! side B. Each side has its own relay ports; the SDP sent to a side carries
//! the ports *that side* sends to, so media flows A → relay(A port) →
//! relay(B port) → B and back. rvoip terminates SRTP per side with its own
//! keys ([`super::keying`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use std::path::PathBuf;

use super::bundle::{BundleLine, MID_URI};
use super::codecs::{Negotiation, SdpFormat, apply_offer, formats_of, read_answer};
use super::dtls::{Fingerprint, Role};
use super::keying::{self as sdes, OwnKey};
use super::orders::{AddressFamily, CodecOptions, CodecSpec, DtlsFlag, IceFlag};
use super::orders::{
    CallId, CallStats, MediaLine, MediaOrder, MediaReply, OrderError, Party, SdpOptions,
};
use super::orders::{MediaService, Recording};
use super::plan::{LegPorts, MediaControl, MediaHandle, MediaPlan, RecordStep, SidePlan};
use super::prompt::PromptCache;
use super::relay::{LegSrtp, PeerSpec, Side};
use super::rtp::Ssrc;
use super::services::{Blocking, LocalMode, ServiceOp};
use super::transcode::LegCodec;
use super::webrtc::{RemoteIce, WebRtcPlan};
use crate::engine::media::capturer::CaptureStep;
use crate::entropy::Entropy;
use crate::sdp::IceCandidate;
use crate::sdp::Sdp;

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
    /// The recording running (or paused), its number.
    recording: Option<u32>,
    /// The capture running, its number.
    capture: Option<u32>,
    /// The relay address side A, side B was given (decided the first time
    /// the side is planned).
    iface: [Option<Iface>; 2],
    /// The media server answers it (side B is the media server).
    local: bool,
    /// What is blocked of what side A, side B send.
    blocking: [Blocking; 2],
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
    /// What the last offer's codec options decided, for its answer.
    negotiation: Option<Negotiation>,
    /// What sides A and B speak while the stage transcodes between them.
    transcoding: Option<(LegCodec, LegCodec)>,
    /// The formats side A, side B wrote in their last SDP.
    formats: [Vec<SdpFormat>; 2],
    /// What rvoip says to side A, side B where it is a WebRTC endpoint
    /// towards it (ICE-lite, DTLS-SRTP).
    webrtc: [Option<WebRtcLocal>; 2],
    /// The line whose transport carries this one towards side A, side B,
    /// when that side bundles it (RFC 9143; the transport's own line
    /// included).
    bundle: [Option<usize>; 2],
}

/// rvoip's side of a WebRTC leg, as its SDP says it.
#[derive(Debug, Clone, Default)]
struct WebRtcLocal {
    ufrag: String,
    pwd: String,
    /// `a=setup`: `actpass` in an offer, `active`/`passive` in an answer.
    setup: &'static str,
    /// The line's `a=mid`.
    mid: Option<String>,
}

/// The DTLS-SRTP profile, with feedback or not.
fn dtls_profile(feedback: bool) -> &'static str {
    if feedback {
        "UDP/TLS/RTP/SAVPF"
    } else {
        "UDP/TLS/RTP/SAVP"
    }
}

/// Whether a profile is DTLS-SRTP (`UDP/TLS/RTP/SAVP[F]`).
fn is_dtls_proto(proto: &[u8]) -> bool {
    proto.len() > 12 && proto[..12].eq_ignore_ascii_case(b"UDP/TLS/RTP/")
}

/// A media section's attribute, else the session's.
fn attr_of(sdp: &Sdp<'_>, i: usize, name: &str) -> Option<String> {
    let v = sdp
        .media
        .get(i)
        .and_then(|m| m.attribute(name))
        .or_else(|| {
            sdp.attributes()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v)
        })??;
    Some(String::from_utf8_lossy(v).trim().to_string())
}

/// The answerer's ICE credentials and the IP candidates of its RTP
/// component (UDP), from media section `i` (credentials also at session
/// level); `None` without credentials.
fn remote_ice(sdp: &Sdp<'_>, i: usize) -> Option<RemoteIce> {
    let ufrag = attr_of(sdp, i, "ice-ufrag")?;
    let pwd = attr_of(sdp, i, "ice-pwd")?;
    let candidates = sdp
        .media
        .get(i)?
        .attributes()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"candidate"))
        .filter_map(|(_, v)| IceCandidate::parse(v?))
        .filter(|c| c.component == 1 && c.transport.eq_ignore_ascii_case(b"udp"))
        .filter_map(|c| {
            let ip: std::net::IpAddr = std::str::from_utf8(c.address).ok()?.parse().ok()?;
            Some(SocketAddr::new(ip, c.port))
        })
        .take(super::ice::MAX_PAIRS)
        .collect();
    Some(RemoteIce {
        ufrag,
        pwd,
        candidates,
    })
}

/// rvoip's DTLS role given the other end's `a=setup` (RFC 5763 §5): it
/// takes the role the other does not; to `actpass` it answers as `flag`
/// says, passive by default.
fn dtls_role(their_setup: Option<&str>, flag: Option<DtlsFlag>) -> Role {
    match their_setup.map(str::to_ascii_lowercase).as_deref() {
        Some("active") => Role::Passive,
        Some("passive") => Role::Active,
        _ if flag == Some(DtlsFlag::Active) => Role::Active,
        _ => Role::Passive,
    }
}

/// The mids of a description's first `a=group:BUNDLE`, in order.
fn bundle_group(sdp: &Sdp<'_>) -> Vec<Vec<u8>> {
    sdp.attributes()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"group"))
        .filter_map(|(_, v)| {
            let v = v?;
            let rest = v.strip_prefix(b"BUNDLE")?;
            Some(
                rest.split(|b| b.is_ascii_whitespace())
                    .filter(|m| !m.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>(),
            )
        })
        .next()
        .unwrap_or_default()
}

/// The line of each media section in a side's bundle (RFC 9143): those
/// whose `a=mid` the description's BUNDLE group names and for which
/// `member` holds go on the transport of the group's first such line
/// (its BUNDLE-tag).
fn bundle_of(sdp: &Sdp<'_>, member: impl Fn(usize) -> bool) -> Vec<Option<usize>> {
    let group = bundle_group(sdp);
    let mid = |i: usize| sdp.media.get(i).and_then(|m| m.attribute("mid")).flatten();
    let line_of = |g: &[u8]| (0..sdp.media.len()).find(|&i| mid(i) == Some(g) && member(i));
    let transport = group.iter().find_map(|g| line_of(g));
    (0..sdp.media.len())
        .map(|i| {
            let named = mid(i).is_some_and(|m| group.iter().any(|g| g == m));
            transport.filter(|_| named && member(i))
        })
        .collect()
}

/// What a side's description says of media section `i` in its bundle on
/// `transport`'s transport: its mid, the MID header extension's id, its
/// payload types and the SSRCs it names.
fn bundle_line(sdp: &Sdp<'_>, i: usize, transport: usize) -> BundleLine {
    let Some(m) = sdp.media.get(i) else {
        return BundleLine::default();
    };
    let mid_ext = m
        .attributes()
        .chain(sdp.attributes())
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"extmap"))
        .filter_map(|(_, v)| {
            let v = std::str::from_utf8(v?).ok()?;
            let (id, uri) = v.split_once(char::is_whitespace)?;
            let id = id.split('/').next()?.parse::<u8>().ok()?;
            (uri.split_whitespace().next()? == MID_URI).then_some(id)
        })
        .next();
    let mut ssrcs: Vec<u32> = m
        .attributes()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"ssrc"))
        .filter_map(|(_, v)| {
            let v = std::str::from_utf8(v?).ok()?;
            v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect();
    ssrcs.dedup();
    BundleLine {
        transport,
        mid: m.attribute("mid").flatten().unwrap_or_default().to_vec(),
        mid_ext,
        payload_types: m.payload_types().collect(),
        ssrcs,
    }
}

/// rvoip's ICE credentials towards side `t` of a call: the ones it already
/// gave that side (one set per side, so that lines can share a bundle's
/// transport), else fresh ones.
fn side_credentials(
    medias: &[MediaState],
    t: usize,
    rng: &dyn Entropy,
) -> Result<(String, String), OrderError> {
    match medias.iter().find_map(|st| st.webrtc[t].as_ref()) {
        Some(w) => Ok((w.ufrag.clone(), w.pwd.clone())),
        None => ice_credentials(rng),
    }
}

/// Fresh ICE credentials (RFC 8839 §5.4: 4+ and 22+ ice-chars).
fn ice_credentials(rng: &dyn Entropy) -> Result<(String, String), OrderError> {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut raw = [0u8; 32];
    rng.fill(&mut raw)
        .map_err(|e| OrderError::Unacceptable(e.to_string()))?;
    let text: String = raw
        .iter()
        .map(|b| char::from(CHARS[usize::from(*b) % CHARS.len()]))
        .collect();
    Ok((text[..8].to_string(), text[8..].to_string()))
}

impl Call {
    /// A call first signalled at `now`, the `seq`th; `local`: the media
    /// server answers it.
    fn new(seq: u64, now: u64, local: bool) -> Call {
        Call {
            seq,
            handle: None,
            tags: [None, None],
            labels: [None, None],
            created: now,
            last_signal: now,
            medias: Vec::new(),
            recording: None,
            capture: None,
            iface: [None, None],
            local,
            blocking: [Blocking::default(); 2],
        }
    }
}

/// The relay address a side of a call is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Iface {
    /// The IPv4 address (`[media] address`, advertised as configured).
    V4,
    /// Another address of the relay (its IPv6 one, a realm's).
    At(IpAddr),
}

impl Iface {
    /// `explicit` when given, else the relay's address of the family.
    fn choose(explicit: Option<IpAddr>, v6: bool, address_v6: Option<IpAddr>) -> Iface {
        match (explicit, v6, address_v6) {
            (Some(a), _, _) => Iface::At(a),
            (None, true, Some(a)) => Iface::At(a),
            _ => Iface::V4,
        }
    }

    fn is_v6(self) -> bool {
        matches!(self, Iface::At(a) if a.is_ipv6())
    }

    /// Where the side's endpoints are opened (none: the IPv4 address).
    fn local(self) -> Option<IpAddr> {
        match self {
            Iface::V4 => None,
            Iface::At(a) => Some(a),
        }
    }
}

fn idx(side: Side) -> usize {
    usize::from(side == Side::B)
}

/// The media sessions of one relay.
#[derive(Debug)]
pub struct Sessions<M> {
    media: M,
    /// Address written into SDP for the relay.
    advertised: IpAddr,
    /// The relay's IPv6 address, when it bridges families.
    advertised_v6: Option<IpAddr>,
    calls: HashMap<CallId, Call>,
    /// Calls created so far (their `seq`).
    created: u64,
    /// Where fresh SRTP keys come from.
    rng: Box<dyn Entropy>,
    /// How transcoded calls' Opus is encoded.
    opus: rvoip_codecs::opus::OpusSettings,
    /// Prompts read and encoded.
    prompts: PromptCache,
    /// Where recordings go (`[recording] dir`); none: recording refused.
    recording_dir: Option<PathBuf>,
    /// Recordings started so far.
    recordings: u32,
    /// Captures started so far (their numbers).
    captures: u32,
    /// Opus complexity of the media server's own streams.
    ms_opus_complexity: i32,
    /// Conference rooms are recorded (`[mediaserver] record_rooms`).
    record_rooms: bool,
    /// Recorded rooms: recording number and the calls in the room.
    room_recs: HashMap<String, (u32, Vec<CallId>)>,
    /// The fingerprint of rvoip's DTLS certificate; none: no WebRTC.
    dtls_fingerprint: Option<Fingerprint>,
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
            m.rtpmap(pt).map_or_else(
                || rvoip_codecs::static_clock(pt).unwrap_or(8000),
                |r| r.clock_rate,
            )
        })
        .unwrap_or(8000);
    // RTP/AVPF, RTP/SAVPF, UDP/TLS/RTP/SAVPF: the profiles with feedback.
    let proto: &[u8] = &m.media.proto;
    let feedback = proto.len() >= 4 && proto[proto.len() - 4..].eq_ignore_ascii_case(b"AVPF");
    Some(PeerSpec {
        rtp: Some(rtp),
        rtcp: Some(rtcp),
        rtcp_mux,
        clock_rate,
        feedback,
    })
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

impl<M: MediaControl> Sessions<M> {
    /// Sessions writing `advertised` into SDP as the relay's address, with
    /// the SRTP keys they make drawn from `entropy`.
    pub fn new(media: M, advertised: IpAddr, entropy: Box<dyn Entropy>) -> Self {
        Sessions {
            media,
            advertised,
            advertised_v6: None,
            calls: HashMap::new(),
            created: 0,
            rng: entropy,
            opus: rvoip_codecs::opus::OpusSettings::default(),
            prompts: PromptCache::new(PathBuf::from(".")),
            recording_dir: None,
            recordings: 0,
            captures: 0,
            ms_opus_complexity: 1,
            record_rooms: false,
            room_recs: HashMap::new(),
            dtls_fingerprint: None,
        }
    }

    /// The fingerprint of the DTLS certificate the media workers present:
    /// with it, offers and answers may have WebRTC sides.
    pub fn set_dtls_fingerprint(&mut self, fingerprint: Option<Fingerprint>) {
        self.dtls_fingerprint = fingerprint;
    }

    /// The relay's IPv6 address (`[media] address_v6`): a side whose SDP
    /// is IPv6, or that an offer asks for with `address family: IP6`, is
    /// given it, and media crosses between the families.
    pub fn set_advertised_v6(&mut self, address: Option<IpAddr>) {
        self.advertised_v6 = address;
    }

    /// Conference rooms are recorded (each to
    /// `<recording dir>/room-<name>-<unix seconds>.wav`, mono, 16 kHz).
    pub fn set_record_rooms(&mut self, on: bool) {
        self.record_rooms = on;
    }

    /// `call_id` joined `room`: the room's recording starts with its first
    /// member.
    fn room_joined(&mut self, call_id: &[u8], room: &str) {
        self.room_left(call_id);
        let (Some(dir), true) = (self.recording_dir.clone(), self.record_rooms) else {
            return;
        };
        let Some((h, line)) = self.calls.get(call_id).and_then(|c| {
            let line = c
                .medias
                .iter()
                .position(|m| m.kind.eq_ignore_ascii_case(b"audio") && m.ports[0].rtp != 0)?;
            Some((c.handle?, line))
        }) else {
            return;
        };
        if let Some((_, members)) = self.room_recs.get_mut(room) {
            members.push(CallId::from(call_id));
            return;
        }
        self.recordings = self.recordings.wrapping_add(1);
        let id = self.recordings;
        let spec = crate::engine::media::recorder::RecordingSpec {
            id,
            dir,
            call_id: String::new(),
            tags: [String::new(), String::new()],
            codecs: [None, None],
            room: Some(room.to_owned()),
        };
        if self
            .media
            .record(RecordStep::Start(Box::new(spec)))
            .is_err()
        {
            return;
        }
        let op = ServiceOp::RecordRoom {
            room: room.to_owned(),
            rec: Some(id),
        };
        if self.media.service(h, line, op).is_err() {
            let _ = self.media.record(RecordStep::Stop(id));
            return;
        }
        self.room_recs
            .insert(room.to_owned(), (id, vec![CallId::from(call_id)]));
    }

    /// `call_id` left its room (or ended): the recording of a room left
    /// empty is completed.
    fn room_left(&mut self, call_id: &[u8]) {
        let mut done = Vec::new();
        for (room, (id, members)) in self.room_recs.iter_mut() {
            members.retain(|m| m.as_bytes() != call_id);
            if members.is_empty() {
                done.push((room.clone(), *id));
            }
        }
        for (room, id) in done {
            self.room_recs.remove(&room);
            let _ = self.media.record(RecordStep::Stop(id));
        }
    }

    /// The Opus encoder complexity (0–10) of what the media server itself
    /// sends (room mixes, echo).
    pub fn set_media_server_opus_complexity(&mut self, complexity: u8) {
        self.ms_opus_complexity = i32::from(complexity.min(10));
    }

    /// Where relative prompt paths are read from.
    pub fn set_prompt_dir(&mut self, dir: PathBuf) {
        self.prompts = PromptCache::new(dir);
    }

    /// Where recordings are written; `None` refuses recording.
    pub fn set_recording_dir(&mut self, dir: Option<PathBuf>) {
        self.recording_dir = dir;
    }

    /// How transcoded calls' Opus is encoded from now on (an offer's
    /// `opus/48000/2/<bitrate>` still sets its call's bit rate).
    pub fn set_opus(&mut self, opus: rvoip_codecs::opus::OpusSettings) {
        self.opus = opus;
    }

    /// The media plane.
    pub fn media(&self) -> &M {
        &self.media
    }

    /// Calls held.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Whether the call `call_id` is held.
    pub fn holds(&self, call_id: &[u8]) -> bool {
        self.calls.contains_key(call_id)
    }

    /// Carries out `order` at wall-clock time `now` (Unix seconds).
    pub fn execute(&mut self, order: MediaOrder, now: u64) -> Result<MediaReply, OrderError> {
        match order {
            MediaOrder::Offer {
                call_id,
                from_tag,
                sdp,
                options,
            } => self.offer(call_id.as_bytes(), from_tag.as_bytes(), &sdp, &options, now),
            MediaOrder::Answer {
                call_id,
                to_tag,
                sdp,
                options,
            } => self.answer(call_id.as_bytes(), to_tag.as_bytes(), &sdp, &options, now),
            MediaOrder::Delete { call_id } => Ok(match self.calls.remove(call_id.as_bytes()) {
                Some(call) => {
                    let snapshot = call.handle.and_then(|h| self.media.remove(h).ok());
                    // The files are complete before the reply goes.
                    if let Some(id) = call.recording {
                        let _ = self.media.record(RecordStep::Stop(id));
                    }
                    if let Some(id) = call.capture {
                        let _ = self.media.capture(CaptureStep::Stop(id));
                    }
                    if call.local {
                        self.room_left(call_id.as_bytes());
                    }
                    MediaReply::Stats(Box::new(stats_of(&call, snapshot)))
                }
                None => MediaReply::NotFound,
            }),
            MediaOrder::Terminate {
                call_id,
                from_tag,
                to_tag,
                sdp,
                options,
                mode,
                placement,
            } => {
                let room = match &mode {
                    LocalMode::Room(r) => Some(r.clone()),
                    _ => None,
                };
                let fresh = !self.calls.contains_key(call_id.as_bytes());
                let r = self.terminate(
                    (call_id.as_bytes(), from_tag.as_bytes(), to_tag.as_bytes()),
                    &sdp,
                    &options,
                    mode,
                    placement.as_deref(),
                    now,
                )?;
                if let (Some(room), true) = (room, fresh) {
                    self.room_joined(call_id.as_bytes(), &room);
                }
                Ok(r)
            }
            MediaOrder::Events => {
                let events = self.media.take_events();
                let out = events
                    .into_iter()
                    .filter_map(|(h, e)| {
                        let (id, _) = self.calls.iter().find(|(_, c)| c.handle == Some(h))?;
                        Some((id.clone(), e))
                    })
                    .collect();
                Ok(MediaReply::Events(out))
            }
            MediaOrder::Query { call_id } => {
                let call = self
                    .calls
                    .get(call_id.as_bytes())
                    .ok_or(OrderError::UnknownCall)?;
                let snapshot = call.handle.and_then(|h| self.media.snapshot(h).ok());
                Ok(MediaReply::Stats(Box::new(stats_of(call, snapshot))))
            }
            MediaOrder::List => {
                let mut calls: Vec<(&u64, &CallId)> =
                    self.calls.iter().map(|(id, c)| (&c.seq, id)).collect();
                calls.sort_unstable();
                Ok(MediaReply::Calls(
                    calls.into_iter().map(|(_, id)| id.clone()).collect(),
                ))
            }
            MediaOrder::Ping => Ok(MediaReply::Pong),
            MediaOrder::Service {
                call_id,
                party: _,
                service: MediaService::Capture { file, on },
            } => self.capture(call_id.as_bytes(), file, on),
            MediaOrder::Service {
                call_id,
                party,
                service,
            } => {
                let call = self
                    .calls
                    .get(call_id.as_bytes())
                    .ok_or(OrderError::UnknownCall)?;
                if let Party::Tag(t) = &party
                    && !call.tags.iter().any(|k| k.as_deref() == Some(t.as_bytes()))
                {
                    return Err(OrderError::UnknownTag);
                }
                let room = match &service {
                    MediaService::Join { room } | MediaService::Mode(LocalMode::Room(room)) => {
                        Some(Some(room.clone()))
                    }
                    MediaService::Leave | MediaService::Mode(_) => Some(None),
                    _ => None,
                };
                let r = self.service(call_id.as_bytes(), &party, service)?;
                match room {
                    Some(Some(room)) => self.room_joined(call_id.as_bytes(), &room),
                    Some(None) => self.room_left(call_id.as_bytes()),
                    None => {}
                }
                Ok(r)
            }
        }
    }

    /// Deletes the calls whose media timed out (no packet for the relay's
    /// media timeout), freeing their ports, as rtpengine does with its
    /// `timeout`. Call about once a second; returns the Call-IDs deleted.
    pub fn expire(&mut self) -> Vec<CallId> {
        let dead = self.media.take_timed_out();
        if dead.is_empty() {
            return Vec::new();
        }
        let ids: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.handle.is_some_and(|h| dead.contains(&h)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(call) = self.calls.remove(id.as_bytes())
                && let Some(h) = call.handle
            {
                let _ = self.media.remove(h);
                if let Some(c) = call.capture {
                    let _ = self.media.capture(CaptureStep::Stop(c));
                }
            }
        }
        ids
    }

    fn offer(
        &mut self,
        call_id: &[u8],
        from_tag: &[u8],
        sdp_text: &[u8],
        f: &SdpOptions,
        now: u64,
    ) -> Result<MediaReply, OrderError> {
        let mut sdp = Sdp::parse(sdp_text).map_err(|_| OrderError::BadSdp)?;
        let worker = self
            .calls
            .get(call_id)
            .and_then(|c| c.handle)
            .map_or_else(|| self.media.place(), |h| h.worker);
        let seq = self.created;
        let call = self
            .calls
            .entry(CallId::from(call_id))
            .or_insert_with(|| Call::new(seq, now, false));
        if call.seq == seq {
            self.created += 1;
        }
        let side = if call.tags[0].is_none() || call.tags[0].as_deref() == Some(from_tag) {
            Side::A
        } else if call.tags[1].is_none() || call.tags[1].as_deref() == Some(from_tag) {
            Side::B
        } else {
            return Err(OrderError::UnknownTag);
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
        // Codec options: what the answerer is offered. A re-offer on a
        // transcoded line without options of its own offers the answerer
        // its own codec again, so the stage carries on.
        for (i, m) in sdp.media.iter_mut().enumerate() {
            let st = &mut call.medias[i];
            st.negotiation = None;
            st.formats[me] = formats_of(m);
            if m.media.port == 0 || !m.media.is_rtp() {
                continue;
            }
            if f.codecs.any() {
                st.negotiation = Some(apply_offer(m, &f.codecs)?);
            } else if let Some(legs) = &st.transcoding {
                let theirs = if other == 0 { &legs.0 } else { &legs.1 };
                let keep = CodecOptions {
                    transcode: vec![CodecSpec {
                        name: theirs.format.codec.name().as_bytes().to_vec(),
                        clock: Some(theirs.format.clock),
                        channels: None,
                        bitrate: None,
                    }],
                    ..CodecOptions::default()
                };
                st.negotiation = Some(apply_offer(m, &keep)?);
            }
            if let Some(n) = &mut st.negotiation {
                n.opus = self.opus;
            }
        }
        // Addresses: the offerer gets the one asked for, else the relay's
        // of the family its SDP speaks; the other side the one asked for,
        // else the relay's of the family asked for, else the offerer's.
        // Each side's is decided once. Without an IPv6 address the relay is
        // IPv4 only.
        let v6 = self.advertised_v6;
        let me_if = *call.iface[me]
            .get_or_insert_with(|| Iface::choose(f.from_interface, sdp_is_v6(&sdp), v6));
        let other_if = *call.iface[other].get_or_insert_with(|| {
            let want_v6 = match f.address_family {
                Some(AddressFamily::Ip6) => true,
                Some(AddressFamily::Ip4) => false,
                None => me_if.is_v6(),
            };
            Iface::choose(f.to_interface, want_v6, v6)
        });
        let mut plans = Vec::with_capacity(sdp.media.len());
        let mut crypto_lines: Vec<Vec<String>> = Vec::with_capacity(sdp.media.len());
        // The offerer's bundle, where rvoip terminates its WebRTC: the
        // lines its BUNDLE group names share the tagged line's transport.
        let me_bundle = bundle_of(&sdp, |i| {
            sdp.media.get(i).is_some_and(|m| {
                m.media.port != 0 && m.media.is_rtp() && is_dtls_proto(&m.media.proto)
            }) && f.dtls != Some(DtlsFlag::Off)
        });
        let me_creds = side_credentials(&call.medias, me, self.rng.as_ref())?;
        let other_creds = side_credentials(&call.medias, other, self.rng.as_ref())?;
        for (i, m) in sdp.media.iter().enumerate() {
            let st = &mut call.medias[i];
            st.kind = m.media.kind.to_vec();
            let bundled_on = me_bundle.get(i).copied().flatten();
            let proto = &m.media.proto;
            let feedback = proto.ends_with(b"F") || proto.ends_with(b"f");
            let offerer_secure = sdes::is_savp(proto);
            let recipient_secure = match f.transport_protocol {
                Some(tp) => tp.secure(),
                None => offerer_secure,
            };
            // WebRTC: rvoip terminates ICE and DTLS-SRTP on a side whose
            // profile is UDP/TLS/RTP/SAVP[F].
            let rtp_line = m.media.port != 0 && m.media.is_rtp();
            let offerer_webrtc = rtp_line && is_dtls_proto(proto) && f.dtls != Some(DtlsFlag::Off);
            let recipient_webrtc = rtp_line
                && f.dtls != Some(DtlsFlag::Off)
                && match f.transport_protocol {
                    Some(tp) => tp.dtls(),
                    None => offerer_webrtc && f.ice != Some(IceFlag::Remove),
                };
            let mut webrtc_plans: [Option<WebRtcPlan>; 2] = [None, None];
            if (offerer_webrtc || recipient_webrtc) && self.dtls_fingerprint.is_none() {
                return Err(OrderError::Unacceptable(
                    "WebRTC (UDP/TLS/RTP/SAVPF) needs the relay's DTLS certificate".into(),
                ));
            }
            if offerer_webrtc {
                let expected = attr_of(&sdp, i, "fingerprint")
                    .and_then(|v| Fingerprint::parse(&v))
                    .ok_or_else(|| {
                        OrderError::Unacceptable(
                            "DTLS offer without a sha-256 a=fingerprint".into(),
                        )
                    })?;
                let role = dtls_role(attr_of(&sdp, i, "setup").as_deref(), f.dtls);
                let (ufrag, pwd) = me_creds.clone();
                st.webrtc[me] = Some(WebRtcLocal {
                    ufrag: ufrag.clone(),
                    pwd: pwd.clone(),
                    setup: match role {
                        Role::Active => "active",
                        Role::Passive => "passive",
                    },
                    mid: m
                        .attribute("mid")
                        .flatten()
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                });
                // ICE and DTLS run on the bundle's transport only.
                webrtc_plans[me] = bundled_on.is_none_or(|b| b == i).then_some(WebRtcPlan {
                    ufrag,
                    pwd,
                    dtls: Some((role, expected)),
                    remote_ice: None,
                });
            } else {
                st.webrtc[me] = None;
            }
            st.bundle[me] = bundled_on.filter(|_| offerer_webrtc);
            if !recipient_webrtc {
                st.bundle[other] = None;
            }
            // A recipient that bundled this line before keeps it on the
            // bundle's transport (RFC 9143 §7.5.2).
            let other_bundled_on = st.bundle[other];
            if recipient_webrtc {
                let (ufrag, pwd) = other_creds.clone();
                let mid = m
                    .attribute("mid")
                    .flatten()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .or_else(|| Some(i.to_string()));
                st.webrtc[other] = Some(WebRtcLocal {
                    ufrag: ufrag.clone(),
                    pwd: pwd.clone(),
                    setup: "actpass",
                    mid,
                });
                webrtc_plans[other] =
                    other_bundled_on
                        .is_none_or(|b| b == i)
                        .then_some(WebRtcPlan {
                            ufrag,
                            pwd,
                            dtls: None,
                            remote_ice: None,
                        });
            } else {
                st.webrtc[other] = None;
            }
            let recipient_secure = recipient_secure && !recipient_webrtc;
            st.proto = match f.transport_protocol {
                Some(tp) => tp.name().as_bytes().to_vec(),
                None => proto.to_vec(),
            };
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
                        return Err(OrderError::Unacceptable(
                            "SDES-off leaves the RTP/SAVP side without keys".into(),
                        ));
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
                st.profiles[other] = Some(match f.transport_protocol {
                    Some(tp) => sdes::profile(tp.feedback(), recipient_secure),
                    None => sdes::profile(feedback, recipient_secure),
                });
                if offerer_webrtc {
                    st.profiles[me] = Some(dtls_profile(feedback));
                }
                if recipient_webrtc {
                    let fb = f.transport_protocol.map_or(feedback, |tp| tp.feedback());
                    st.profiles[other] = Some(dtls_profile(fb));
                    other_srtp = None;
                }
            }
            crypto_lines.push(lines);
            let peer = peer_of(&sdp, i);
            let mut plan = MediaPlan::default();
            if let Some(peer) = peer {
                st.peers[me] = Some(peer);
                // Towards the offerer: multiplex if it does and it is not
                // refused (a bundle always does).
                st.mux[me] = (peer.rtcp_mux && !f.mux_reject) || st.bundle[me].is_some();
                // Towards the other side: as asked, else as the offerer does;
                // WebRTC always multiplexes.
                st.mux[other] = if recipient_webrtc {
                    true
                } else if f.mux_demux {
                    false
                } else {
                    f.mux_offer || peer.rtcp_mux
                };
                let [me_webrtc, other_webrtc] = if me == 0 {
                    let [a, b] = webrtc_plans;
                    [a, b]
                } else {
                    let [a, b] = webrtc_plans;
                    [b, a]
                };
                // A line bundled on another's transport opens nothing.
                let me_own = st.bundle[me].is_none_or(|b| b == i);
                let other_own = st.bundle[other].is_none_or(|b| b == i);
                plan.sides[me] = SidePlan {
                    open_rtp: me_own,
                    open_rtcp: me_own && !st.mux[me],
                    peer: Some(peer),
                    srtp: me_own.then_some(me_srtp),
                    local: me_if.local(),
                    webrtc: me_webrtc,
                    bundle: st.bundle[me].map(|b| bundle_line(&sdp, i, b)),
                };
                plan.sides[other] = SidePlan {
                    open_rtp: other_own,
                    open_rtcp: other_own && !st.mux[other],
                    peer: None,
                    srtp: other_srtp,
                    local: other_if.local(),
                    webrtc: other_webrtc,
                    bundle: None,
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
            f,
            &crypto_lines,
            self.dtls_fingerprint,
        )
    }

    fn answer(
        &mut self,
        call_id: &[u8],
        to_tag: &[u8],
        sdp_text: &[u8],
        f: &SdpOptions,
        now: u64,
    ) -> Result<MediaReply, OrderError> {
        let call = self.calls.get_mut(call_id).ok_or(OrderError::UnknownCall)?;
        let mut sdp = Sdp::parse(sdp_text).map_err(|_| OrderError::BadSdp)?;
        // The answerer is the to-tag: side B for the first answer, side A when
        // B made a re-offer.
        let side = if call.tags[0].as_deref() == Some(to_tag) {
            Side::A
        } else if call.tags[1].is_none() || call.tags[1].as_deref() == Some(to_tag) {
            Side::B
        } else {
            return Err(OrderError::UnknownTag);
        };
        call.tags[idx(side)] = Some(to_tag.to_vec());
        if f.label.is_some() {
            call.labels[idx(side)] = f.label.clone();
        }
        call.last_signal = now;
        let (me, other) = (idx(side), idx(side.other()));
        // The answer decides whether the sides share a codec or the stage
        // transcodes between them (and then what the offerer is answered).
        let mut transcode = Vec::with_capacity(sdp.media.len());
        for (i, m) in sdp.media.iter_mut().enumerate() {
            if let Some(st) = call.medias.get_mut(i) {
                st.formats[me] = formats_of(m);
            }
            let Some(n) = call.medias.get(i).and_then(|st| st.negotiation.as_ref()) else {
                transcode.push(None);
                continue;
            };
            if m.media.port == 0 {
                transcode.push(Some(None));
                continue;
            }
            let ssrcs = (
                random_ssrc(self.rng.as_ref()),
                random_ssrc(self.rng.as_ref()),
            );
            let legs = read_answer(m, n, ssrcs)?.map(|(offerer, answerer)| {
                // Ordered as the relay's sides: A first.
                if side == Side::B {
                    (offerer, answerer)
                } else {
                    (answerer, offerer)
                }
            });
            transcode.push(Some(legs));
        }
        for (i, t) in transcode.iter().enumerate() {
            if let (Some(legs), Some(st)) = (t, call.medias.get_mut(i)) {
                st.transcoding = *legs;
            }
        }
        let mut plans = Vec::with_capacity(sdp.media.len());
        let mut crypto_lines: Vec<Vec<String>> = Vec::with_capacity(sdp.media.len());
        // A WebRTC answerer's bundle: the lines its BUNDLE group names go
        // on the transport of the group's first (RFC 9143 §7.3).
        let me_bundle = bundle_of(&sdp, |i| {
            sdp.media.get(i).is_some_and(|m| m.media.port != 0)
                && call.medias.get(i).is_some_and(|st| st.webrtc[me].is_some())
        });
        for i in 0..sdp.media.len().min(call.medias.len()) {
            let mut plan = MediaPlan {
                transcode: transcode.get(i).cloned().flatten(),
                ..MediaPlan::default()
            };
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
            st.bundle[me] = me_bundle.get(i).copied().flatten();
            // A WebRTC answerer: its certificate and setup decide rvoip's
            // DTLS role (ICE and DTLS run on a bundle's transport only).
            let webrtc = match &st.webrtc[me] {
                Some(w) if m.media.port != 0 && st.bundle[me].is_none_or(|b| b == i) => {
                    let expected = attr_of(&sdp, i, "fingerprint")
                        .and_then(|v| Fingerprint::parse(&v))
                        .ok_or_else(|| {
                            OrderError::Unacceptable(
                                "DTLS answer without a sha-256 a=fingerprint".into(),
                            )
                        })?;
                    let role = dtls_role(attr_of(&sdp, i, "setup").as_deref(), None);
                    // rvoip offered full ICE (it offered, with actpass):
                    // it checks the answerer's candidates, controlling.
                    let remote_ice = (w.setup == "actpass")
                        .then(|| remote_ice(&sdp, i))
                        .flatten();
                    Some(WebRtcPlan {
                        ufrag: w.ufrag.clone(),
                        pwd: w.pwd.clone(),
                        dtls: Some((role, expected)),
                        remote_ice,
                    })
                }
                _ => None,
            };
            if let Some(peer) = peer_of(&sdp, i) {
                st.peers[me] = Some(peer);
                // Multiplexing towards the answerer holds only if it accepted it.
                st.mux[me] = st.mux[me] && peer.rtcp_mux;
                let bundled = st.bundle[me].is_some();
                plan.sides[me] = SidePlan {
                    open_rtp: false,
                    open_rtcp: !st.mux[me] && !bundled,
                    peer: Some(peer),
                    srtp: (webrtc.is_none() && !bundled).then_some(me_srtp),
                    local: call.iface[me].and_then(Iface::local),
                    webrtc,
                    bundle: st.bundle[me].map(|b| bundle_line(&sdp, i, b)),
                };
            }
            plans.push(plan);
        }
        let handle = call.handle.ok_or(OrderError::UnknownCall)?;
        apply_and_rewrite(
            &self.media,
            self.advertised,
            call,
            (handle.worker, Some(handle.session), plans),
            &mut sdp,
            side.other(),
            f,
            &crypto_lines,
            self.dtls_fingerprint,
        )
    }
}

/// What sides A and B of media line `st` speak, for the media services:
/// the stage's legs on a transcoded line; otherwise the codec in use (the
/// answer's first one rvoip codes) at each side's own payload type, with
/// each side's telephone-event.
fn legs_of(
    st: &MediaState,
    rng: &dyn Entropy,
    opus: rvoip_codecs::opus::OpusSettings,
) -> [Option<LegCodec>; 2] {
    if let Some((a, b)) = st.transcoding {
        return [Some(a), Some(b)];
    }
    let codes = |f: &&SdpFormat| f.codec().is_some_and(rvoip_codecs::Codec::transcodable);
    let Some(chosen) = st.formats[1]
        .iter()
        .find(codes)
        .or_else(|| st.formats[0].iter().find(codes))
    else {
        return [None, None];
    };
    let Some(codec) = chosen.codec() else {
        return [None, None];
    };
    let leg = |side: usize| {
        // The codec in use at the side's own payload type; a side that did
        // not list it (a peer answering with another codec than the
        // offer's) is spoken to in its own first codec.
        let own = st.formats[side]
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(&chosen.name) && f.clock == chosen.clock)
            .or_else(|| st.formats[side].iter().find(codes))
            .unwrap_or(chosen);
        let codec = own.codec().unwrap_or(codec);
        let mut l = LegCodec::new(
            rvoip_codecs::Format {
                codec,
                pt: own.pt,
                clock: own.clock,
                channels: own.channels,
            },
            random_ssrc(rng),
        );
        l.te_pt = st.formats[side]
            .iter()
            .find(|f| f.codec() == Some(rvoip_codecs::Codec::TelephoneEvent))
            .map(|f| f.pt);
        l.octet_align = own.fmtp.as_deref().is_some_and(|f| {
            f.split(|b| *b == b';')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"octet-align=1"))
        });
        l.opus = opus;
        l
    };
    [Some(leg(0)), Some(leg(1))]
}

/// A worker for calls placed together (a room's members): the same name,
/// the same worker.
fn placed(name: &str, workers: usize) -> usize {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % workers.max(1) as u64) as usize
}

impl<M: MediaControl> Sessions<M> {
    /// Starts (`on`) or ends the capture of every packet of a call, both
    /// ways, into the pcap file `file`.
    fn capture(
        &mut self,
        call_id: &[u8],
        file: std::path::PathBuf,
        on: bool,
    ) -> Result<MediaReply, OrderError> {
        let call = self.calls.get_mut(call_id).ok_or(OrderError::UnknownCall)?;
        let h = call.handle.ok_or(OrderError::UnknownCall)?;
        let media = &self.media;
        if on {
            let id = match call.capture {
                Some(id) => id,
                None => {
                    self.captures = self.captures.wrapping_add(1);
                    self.captures
                }
            };
            media
                .capture(CaptureStep::Start { id, file })
                .map_err(OrderError::Media)?;
            call.capture = Some(id);
            if let Err(e) = media.service(h, 0, ServiceOp::Capture(Some(id))) {
                call.capture = None;
                let _ = media.capture(CaptureStep::Stop(id));
                return Err(OrderError::Media(e));
            }
        } else if let Some(id) = call.capture.take() {
            let _ = media.service(h, 0, ServiceOp::Capture(None));
            media
                .capture(CaptureStep::Stop(id))
                .map_err(OrderError::Media)?;
        }
        Ok(MediaReply::Done { duration_ms: None })
    }

    /// Carries out a media service for `party` of a call.
    fn service(
        &mut self,
        call_id: &[u8],
        party: &Party,
        service: MediaService,
    ) -> Result<MediaReply, OrderError> {
        let call = self.calls.get_mut(call_id).ok_or(OrderError::UnknownCall)?;
        let h = call.handle.ok_or(OrderError::UnknownCall)?;
        let sides: Vec<Side> = match party {
            Party::Tag(t) => {
                let i = call
                    .tags
                    .iter()
                    .position(|k| k.as_deref() == Some(t.as_bytes()))
                    .ok_or(OrderError::UnknownTag)?;
                vec![if i == 0 { Side::A } else { Side::B }]
            }
            Party::All if call.local => vec![Side::A],
            Party::All => vec![Side::A, Side::B],
        };
        let line = call
            .medias
            .iter()
            .position(|m| m.kind.eq_ignore_ascii_case(b"audio") && m.ports[0].rtp != 0)
            .ok_or_else(|| OrderError::Unacceptable("the call has no audio".into()))?;
        let legs = legs_of(&call.medias[line], self.rng.as_ref(), self.opus);
        let media = &self.media;
        let svc = |op: ServiceOp| media.service(h, line, op).map_err(OrderError::Media);
        svc(ServiceOp::Audio(legs))?;
        let leg_of = |side: Side| {
            legs[side.index()].ok_or_else(|| {
                OrderError::Unacceptable("the call's codec is not one rvoip codes".into())
            })
        };
        let prompt_err = |e: super::prompt::PromptError| OrderError::Unacceptable(e.to_string());
        match service {
            MediaService::Play { file, repeat } => {
                let mut duration = 0;
                for side in sides {
                    let prompt = self
                        .prompts
                        .file(&file, &leg_of(side)?)
                        .map_err(prompt_err)?;
                    duration = prompt.duration_ms() * u64::from(repeat.max(1));
                    svc(ServiceOp::Play {
                        to: side,
                        prompt,
                        repeat,
                        stop_on_dtmf: false,
                    })?;
                }
                Ok(MediaReply::Done {
                    duration_ms: Some(duration),
                })
            }
            MediaService::StopPlay => {
                for side in sides {
                    svc(ServiceOp::StopPlay { to: side })?;
                }
                Ok(MediaReply::Done { duration_ms: None })
            }
            MediaService::Dtmf {
                code,
                duration_ms,
                volume,
            } => {
                for side in sides {
                    // Sent from the party: the other side receives it (the
                    // caller itself, on a call the media server answers).
                    let to = if call.local { Side::A } else { side.other() };
                    let leg = leg_of(to)?;
                    if leg.te_pt.is_some() {
                        svc(ServiceOp::Event {
                            to,
                            event: code,
                            duration_ms,
                            volume,
                        })?;
                    } else {
                        let prompt = self
                            .prompts
                            .digit(code, duration_ms, volume, &leg)
                            .map_err(prompt_err)?;
                        svc(ServiceOp::Play {
                            to,
                            prompt,
                            repeat: 1,
                            stop_on_dtmf: false,
                        })?;
                    }
                }
                Ok(MediaReply::Done { duration_ms: None })
            }
            MediaService::Block { media, silence, on } => {
                for side in sides {
                    let b = &mut call.blocking[side.index()];
                    if silence {
                        b.silence = on;
                    } else if media {
                        b.media = on;
                    } else {
                        b.dtmf = on;
                    }
                    let quiet = match legs[side.index()] {
                        Some(leg) if b.silence => {
                            let pcm = vec![0i16; 960];
                            super::prompt::Prompt::encode(&pcm, 48_000, &leg)
                                .ok()
                                .map(|p| p.frame(0).to_vec().into_boxed_slice())
                        }
                        _ => None,
                    };
                    svc(ServiceOp::Block {
                        from: side,
                        blocking: *b,
                        silence: quiet,
                    })?;
                }
                Ok(MediaReply::Done { duration_ms: None })
            }
            MediaService::Record(step) => {
                match step {
                    Recording::Start => {
                        let dir = self.recording_dir.clone().ok_or_else(|| {
                            OrderError::NoService(
                                "start recording ([recording] dir not set)".into(),
                            )
                        })?;
                        let id = match call.recording {
                            Some(id) => id,
                            None => {
                                self.recordings = self.recordings.wrapping_add(1);
                                self.recordings
                            }
                        };
                        let text = |t: &Option<Vec<u8>>| {
                            t.as_deref()
                                .map(String::from_utf8_lossy)
                                .unwrap_or_default()
                                .into_owned()
                        };
                        let spec = crate::engine::media::recorder::RecordingSpec {
                            id,
                            dir,
                            call_id: String::from_utf8_lossy(call_id).into_owned(),
                            tags: [text(&call.tags[0]), text(&call.tags[1])],
                            codecs: legs,
                            room: None,
                        };
                        media
                            .record(RecordStep::Start(Box::new(spec)))
                            .map_err(OrderError::Media)?;
                        call.recording = Some(id);
                        svc(ServiceOp::Record(Some(id)))?;
                    }
                    Recording::Pause => {
                        if let Some(id) = call.recording {
                            svc(ServiceOp::Record(None))?;
                            let _ = media.record(RecordStep::Pause(id));
                        }
                    }
                    Recording::Stop => {
                        if let Some(id) = call.recording.take() {
                            svc(ServiceOp::Record(None))?;
                            media
                                .record(RecordStep::Stop(id))
                                .map_err(OrderError::Media)?;
                        }
                    }
                }
                Ok(MediaReply::Done { duration_ms: None })
            }
            MediaService::Join { room } => {
                if !call.local {
                    return Err(OrderError::NoService(
                        "join (only calls the media server answers join rooms)".into(),
                    ));
                }
                svc(ServiceOp::Mode(LocalMode::Room(room)))?;
                Ok(MediaReply::Done { duration_ms: None })
            }
            MediaService::Capture { .. } => Err(OrderError::NoService(
                "capture (a call's, not a party's)".into(),
            )),
            MediaService::Leave => {
                svc(ServiceOp::Mode(LocalMode::Silence))?;
                Ok(MediaReply::Done { duration_ms: None })
            }
            MediaService::Mode(mode) => {
                if !call.local {
                    return Err(OrderError::NoService(
                        "mode (only calls the media server answers)".into(),
                    ));
                }
                svc(ServiceOp::Mode(mode))?;
                Ok(MediaReply::Done { duration_ms: None })
            }
        }
    }

    /// The media server answers an offer itself: the offerer is side A;
    /// the answer names the offer's first codec rvoip codes (and its
    /// telephone-event), at the relay's side-A port.
    fn terminate(
        &mut self,
        (call_id, from_tag, to_tag): (&[u8], &[u8], &[u8]),
        sdp_text: &[u8],
        f: &SdpOptions,
        mode: LocalMode,
        placement: Option<&str>,
        now: u64,
    ) -> Result<MediaReply, OrderError> {
        let mut sdp = Sdp::parse(sdp_text).map_err(|_| OrderError::BadSdp)?;
        let existing = self.calls.get(call_id).and_then(|c| c.handle);
        let worker = match (existing, placement) {
            (Some(h), _) => h.worker,
            (None, Some(p)) => placed(p, self.media.workers()),
            (None, None) => self.media.place(),
        };
        let seq = self.created;
        let call = self
            .calls
            .entry(CallId::from(call_id))
            .or_insert_with(|| Call::new(seq, now, true));
        if call.seq == seq {
            self.created += 1;
        }
        if !call.local || call.tags[0].as_deref().is_some_and(|t| t != from_tag) {
            return Err(OrderError::UnknownTag);
        }
        call.tags = [Some(from_tag.to_vec()), Some(to_tag.to_vec())];
        call.last_signal = now;
        if call.medias.len() < sdp.media.len() {
            call.medias.resize(sdp.media.len(), MediaState::default());
        }
        let mut plans = Vec::with_capacity(sdp.media.len());
        let mut crypto_lines = Vec::with_capacity(sdp.media.len());
        let mut answered: Option<(usize, LegCodec)> = None;
        let peers: Vec<Option<PeerSpec>> = (0..sdp.media.len()).map(|i| peer_of(&sdp, i)).collect();
        let v6 = self.advertised_v6;
        let caller_if = *call.iface[0]
            .get_or_insert_with(|| Iface::choose(f.from_interface, sdp_is_v6(&sdp), v6));
        for (i, m) in sdp.media.iter_mut().enumerate() {
            let st = &mut call.medias[i];
            st.kind = m.media.kind.to_vec();
            st.proto = m.media.proto.to_vec();
            let formats = formats_of(m);
            let chosen = formats
                .iter()
                .find(|f| f.codec().is_some_and(rvoip_codecs::Codec::transcodable))
                .cloned();
            let usable = answered.is_none()
                && m.media.port != 0
                && m.media.is_rtp()
                && m.media.kind.eq_ignore_ascii_case(b"audio");
            let (Some(chosen), true) = (chosen, usable) else {
                st.formats = [formats, Vec::new()];
                plans.push(MediaPlan::default());
                crypto_lines.push(Vec::new());
                continue;
            };
            let te = formats
                .iter()
                .find(|f| f.codec() == Some(rvoip_codecs::Codec::TelephoneEvent))
                .cloned();
            let secure = sdes::is_savp(&m.media.proto);
            let feedback = m.media.proto.ends_with(b"F") || m.media.proto.ends_with(b"f");
            let mut srtp = LegSrtp::default();
            let mut lines = Vec::new();
            if secure {
                let (leg, ours) =
                    sdes::accept_offer(m, &f.sdes, st.answer_key[0].as_ref(), self.rng.as_ref())?;
                srtp = leg;
                lines.push(ours.line());
                st.answer_key[0] = Some(ours);
            }
            st.secure = [secure, false];
            st.profiles[0] = Some(sdes::profile(feedback, secure));
            let keep: Vec<u8> = std::iter::once(chosen.pt)
                .chain(te.as_ref().map(|t| t.pt))
                .collect();
            m.retain_formats(|pt, _| keep.contains(&pt));
            st.formats = [formats, std::iter::once(chosen).chain(te).collect()];
            let mut plan = MediaPlan::default();
            if let Some(peer) = peers[i] {
                st.peers[0] = Some(peer);
                st.mux[0] = peer.rtcp_mux;
                plan.sides[0] = SidePlan {
                    open_rtp: true,
                    open_rtcp: !peer.rtcp_mux,
                    peer: Some(peer),
                    srtp: Some(srtp),
                    local: caller_if.local(),
                    webrtc: None,
                    bundle: None,
                };
            }
            plans.push(plan);
            crypto_lines.push(lines);
            let [Some(mut a), _] = legs_of(st, self.rng.as_ref(), self.opus) else {
                continue;
            };
            a.opus.complexity = self.ms_opus_complexity;
            // What the media server sends is voice (mixes of callers).
            a.opus.voice = true;
            answered = Some((i, a));
        }
        let Some((line, audio)) = answered else {
            return Err(OrderError::Unacceptable(
                "the offer has no audio codec rvoip codes".into(),
            ));
        };
        let session = call.handle.map(|h| h.session);
        let reply = apply_and_rewrite(
            &self.media,
            self.advertised,
            call,
            (worker, session, plans),
            &mut sdp,
            Side::A,
            f,
            &crypto_lines,
            self.dtls_fingerprint,
        )?;
        let h = call.handle.ok_or(OrderError::UnknownCall)?;
        if session.is_none() {
            self.media
                .service(h, line, ServiceOp::Terminate { audio, mode })
                .map_err(OrderError::Media)?;
        }
        Ok(reply)
    }
}

/// An SSRC for a stream rvoip originates.
fn random_ssrc(rng: &dyn Entropy) -> Ssrc {
    let mut b = [0u8; 4];
    // Without randomness a fixed value still works: SSRCs need only differ
    // from the peer's, which RFC 3550 §8.2 resolves if they collide.
    let _ = rng.fill(&mut b);
    Ssrc(u32::from_be_bytes(b) | 1)
}

/// A call's state and statistics as an order's reply carries them.
fn stats_of(c: &Call, snapshot: Option<crate::media::plan::SessionSnapshot>) -> CallStats {
    CallStats {
        tags: c.tags.clone(),
        labels: c.labels.clone(),
        created: c.created,
        last_signal: c.last_signal,
        medias: c
            .medias
            .iter()
            .map(|m| MediaLine {
                kind: m.kind.clone(),
                proto: m.proto.clone(),
                ports: m.ports,
                peers: m.peers,
            })
            .collect(),
        codecs: std::array::from_fn(|side| {
            let f = c.medias.first()?.formats[side].first()?;
            Some(format!("{}/{}", String::from_utf8_lossy(&f.name), f.clock))
        }),
        snapshot,
    }
}

/// Whether a description's media are addressed over IPv6: its first
/// connection line (a media line's, else the session's) says `IP6`.
fn sdp_is_v6(sdp: &Sdp<'_>) -> bool {
    (0..sdp.media.len())
        .find_map(|i| sdp.media_connection(i))
        .is_some_and(|c| c.address.is_ipv6())
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
    f: &SdpOptions,
    crypto_lines: &[Vec<String>],
    fingerprint: Option<Fingerprint>,
) -> Result<MediaReply, OrderError> {
    let applied = media
        .apply(worker, session, plans)
        .map_err(OrderError::Media)?;
    call.handle = Some(applied.handle);
    for (i, ports) in applied.ports.iter().enumerate() {
        call.medias[i].ports = *ports;
    }
    // Bundled lines are reached on their bundle's transport.
    for i in 0..call.medias.len() {
        for t in 0..2 {
            if let Some(b) = call.medias[i].bundle[t].filter(|&b| b != i)
                && let Some(ports) = call.medias.get(b).map(|st| st.ports[t])
            {
                call.medias[i].ports[t] = ports;
            }
        }
    }
    let advertised = match call.iface[idx(to)] {
        Some(Iface::At(a)) => a,
        _ => advertised,
    };
    rewrite(sdp, call, to, advertised, f, crypto_lines, fingerprint);
    Ok(MediaReply::Sdp(sdp.to_bytes()))
}

/// Points the SDP that goes to `to` at the relay ports of side `to`, with
/// the profile and `a=crypto` lines (`crypto[i]`) of side `to`: nothing of
/// the other side's keys goes through.
fn rewrite(
    sdp: &mut Sdp<'_>,
    call: &Call,
    to: Side,
    advertised: IpAddr,
    f: &SdpOptions,
    crypto: &[Vec<String>],
    fingerprint: Option<Fingerprint>,
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
        } else if let Some(tp) = f.transport_protocol {
            m.set_proto(tp.name());
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
    // DTLS and BUNDLE of the other side never go through: rvoip's own
    // go to a side it is a WebRTC endpoint for.
    for name in ["fingerprint", "setup", "tls-id", "group"] {
        sdp.remove_attribute(name);
    }
    let mut webrtc_mids = Vec::new();
    for (i, m) in sdp.media.iter_mut().enumerate() {
        for name in ["fingerprint", "setup", "tls-id"] {
            m.remove_attribute(name);
        }
        let Some(st) = call.medias.get(i) else {
            continue;
        };
        let (Some(w), Some(fp)) = (st.webrtc[t].as_ref(), fingerprint) else {
            continue;
        };
        if m.media.port == 0 {
            continue;
        }
        m.add_attribute("ice-ufrag", Some(w.ufrag.as_bytes()));
        m.add_attribute("ice-pwd", Some(w.pwd.as_bytes()));
        m.add_attribute("fingerprint", Some(fp.to_string().as_bytes()));
        m.add_attribute("setup", Some(w.setup.as_bytes()));
        if let Some(mid) = &w.mid {
            m.set_attribute("mid", Some(mid.as_bytes()));
            webrtc_mids.push(mid.clone());
        }
        // One host candidate per component: RTP, and RTCP on its own port
        // when it is not multiplexed; in a bundle, on its transport's line.
        if st.bundle[t].is_some_and(|b| b != i) {
            continue;
        }
        let candidate = format!(
            "1 1 UDP 2130706431 {} {} typ host",
            advertised, st.ports[t].rtp
        );
        m.add_attribute("candidate", Some(candidate.as_bytes()));
        if !st.mux[t] {
            let rtcp = st.ports[t].rtcp.unwrap_or(st.ports[t].rtp + 1);
            let candidate = format!("1 2 UDP 2130706430 {advertised} {rtcp} typ host");
            m.add_attribute("candidate", Some(candidate.as_bytes()));
        }
        m.add_attribute("end-of-candidates", None);
    }
    if !webrtc_mids.is_empty() {
        // rvoip is a full agent where it offers (it checks the answerer's
        // candidates), lite where it answers.
        let offering = call
            .medias
            .iter()
            .any(|st| st.webrtc[t].as_ref().is_some_and(|w| w.setup == "actpass"));
        if !offering {
            sdp.add_attribute("ice-lite", None);
        }
        // Where the side bundles, the group is its bundle, the transport's
        // line first; where rvoip offers, every WebRTC line.
        let transport = call.medias.iter().find_map(|st| st.bundle[t]);
        let mids: Vec<&String> = match transport {
            Some(b) => {
                let mid_of = |i: usize| {
                    let st = call.medias.get(i)?;
                    let port = sdp.media.get(i)?.media.port;
                    (st.bundle[t] == Some(b) && port != 0)
                        .then(|| st.webrtc[t].as_ref()?.mid.as_ref())
                        .flatten()
                };
                std::iter::once(b)
                    .chain((0..call.medias.len()).filter(|&i| i != b))
                    .filter_map(mid_of)
                    .collect()
            }
            None => webrtc_mids.iter().collect(),
        };
        if !mids.is_empty() {
            let group = format!(
                "BUNDLE {}",
                mids.iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            sdp.add_attribute("group", Some(group.as_bytes()));
        }
    }
}
