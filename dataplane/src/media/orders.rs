//! The media order contract between whoever signals a call (rvoip's own
//! B2BUA over the shared-memory order channel, or Kamailio and OpenSIPS
//! through the ng protocol) and the media sessions: one [`MediaOrder`] in,
//! a [`MediaReply`] or an [`OrderError`] out. Every wire form (ng's bencode,
//! the order channel's records) translates to and from these types; the
//! sessions ([`super::sessions`]) know no wire form.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::keying::SdesFlags;
use super::plan::{LegPorts, MediaError, SessionSnapshot};
use super::relay::PeerSpec;

/// What changes how an offer or answer is carried out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdpOptions {
    /// Write the relay's address into the origin (`o=`) line too.
    pub replace_origin: bool,
    /// The profile for the other side, when it differs from the offerer's:
    /// the relay transcrypts between them.
    pub transport_protocol: Option<Profile>,
    /// Offer RTCP multiplexing to the other side.
    pub mux_offer: bool,
    /// Demultiplex RTCP towards the other side.
    pub mux_demux: bool,
    /// Refuse multiplexing towards the offerer.
    pub mux_reject: bool,
    /// A label for the side that sends this SDP.
    pub label: Option<Vec<u8>>,
    /// Which SDES suites to offer and accept.
    pub sdes: SdesFlags,
    /// Codecs to add, strip or mask, and whether to transcode.
    pub codecs: CodecOptions,
    /// The address family of the relay's address given to the other side
    /// (ng `address family`); none: the offerer's.
    pub address_family: Option<AddressFamily>,
    /// The relay address the offerer's side is given (a realm's own), when
    /// not the one of its family.
    pub from_interface: Option<std::net::IpAddr>,
    /// The relay address the other side is given, when not the one of the
    /// family chosen.
    pub to_interface: Option<std::net::IpAddr>,
    /// ICE towards the other side (ng `ICE`): `remove` strips it (the relay
    /// terminates the offerer's), `force` makes the relay an ICE-lite agent
    /// there.
    pub ice: Option<IceFlag>,
    /// DTLS-SRTP (ng `DTLS`): `off` never, `passive`/`active` the relay's
    /// role where it terminates DTLS.
    pub dtls: Option<DtlsFlag>,
    /// Give media lines without `a=mid` one (ng `generate-mid`).
    pub generate_mid: bool,
}

/// The ng `ICE` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IceFlag {
    /// `remove`: no ICE towards the other side.
    Remove,
    /// `force`, `force-relay`: the relay is an ICE(-lite) agent towards the
    /// other side (it has host candidates only: `force-relay` is `force`).
    Force,
    /// `default`: as the profile says.
    Default,
}

impl IceFlag {
    /// Reads an `ICE` value.
    pub fn parse(v: &[u8]) -> Option<IceFlag> {
        match v.to_ascii_lowercase().as_slice() {
            b"remove" => Some(IceFlag::Remove),
            b"force" | b"force-relay" | b"force_relay" => Some(IceFlag::Force),
            b"default" | b"optional" => Some(IceFlag::Default),
            _ => None,
        }
    }
}

/// The ng `DTLS` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DtlsFlag {
    /// `off`, `no`, `disable`: no DTLS.
    Off,
    /// `passive`: the relay is the DTLS server.
    Passive,
    /// `active`: the relay is the DTLS client.
    Active,
}

impl DtlsFlag {
    /// Reads a `DTLS` value.
    pub fn parse(v: &[u8]) -> Option<DtlsFlag> {
        match v.to_ascii_lowercase().as_slice() {
            b"off" | b"no" | b"disable" => Some(DtlsFlag::Off),
            b"passive" => Some(DtlsFlag::Passive),
            b"active" => Some(DtlsFlag::Active),
            _ => None,
        }
    }
}

/// An address family of the relay's media addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressFamily {
    /// IPv4 (`IP4`).
    Ip4,
    /// IPv6 (`IP6`).
    Ip6,
}

impl AddressFamily {
    /// Reads `IP4`/`IP6` (ng, SDP), `ipv4`/`ipv6`, any case.
    pub fn parse(text: &[u8]) -> Option<AddressFamily> {
        let t = text.to_ascii_lowercase();
        match t.as_slice() {
            b"ip4" | b"ipv4" | b"inet" => Some(AddressFamily::Ip4),
            b"ip6" | b"ipv6" | b"inet6" => Some(AddressFamily::Ip6),
            _ => None,
        }
    }
}

/// A codec as an order names it: an SDP encoding name (case-insensitive),
/// optionally `NAME/clock/channels/bitrate` as ng writes it; `all` in
/// `strip` and `mask` stands for every codec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodecSpec {
    /// The encoding name as written.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// The clock rate, when given.
    pub clock: Option<u32>,
    /// Channels, when given.
    pub channels: Option<u8>,
    /// Bit rate for the encoder (Opus), when given.
    pub bitrate: Option<u32>,
}

impl CodecSpec {
    /// Reads `NAME[/clock[/channels[/bitrate]]]`; `None` for an empty name
    /// or a field that is not a number.
    pub fn parse(text: &[u8]) -> Option<CodecSpec> {
        let mut parts = text.split(|b| *b == b'/');
        let name = parts.next().filter(|n| !n.is_empty())?.to_vec();
        let mut num = |max: u64| -> Option<Option<u64>> {
            match parts.next() {
                None => Some(None),
                Some([]) => Some(None),
                Some(p) => std::str::from_utf8(p)
                    .ok()?
                    .parse::<u64>()
                    .ok()
                    .filter(|v| *v <= max)
                    .map(Some),
            }
        };
        let clock = num(u64::from(u32::MAX))?.map(|v| v as u32);
        let channels = num(255)?.map(|v| v as u8);
        let bitrate = num(u64::from(u32::MAX))?.map(|v| v as u32);
        Some(CodecSpec {
            name,
            clock,
            channels,
            bitrate,
        })
    }

    /// Whether it is `all`.
    pub fn is_all(&self) -> bool {
        self.name.eq_ignore_ascii_case(b"all")
    }

    /// Whether it names the format `name`/`clock`/`channels` (what it
    /// leaves out matches anything).
    pub fn matches(&self, name: &[u8], clock: u32, channels: u8) -> bool {
        self.name.eq_ignore_ascii_case(name)
            && self.clock.is_none_or(|c| c == clock)
            && self.channels.is_none_or(|c| c == channels)
    }
}

/// The codec manipulations of an offer (rtpengine's `codec` dictionary and
/// `codec-*` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodecOptions {
    /// Codecs added to the SDP given to the answerer when missing; if the
    /// answerer picks one the offerer lacks, the relay transcodes.
    pub transcode: Vec<CodecSpec>,
    /// Codecs taken out of the SDP given to the answerer.
    pub strip: Vec<CodecSpec>,
    /// Codecs taken out of the SDP given to the answerer while the offerer
    /// may still use them (the relay transcodes for it).
    pub mask: Vec<CodecSpec>,
    /// Codecs added like `transcode`.
    pub offer: Vec<CodecSpec>,
    /// Codecs the answerer may pick although the offerer lacks them
    /// (read; the relay transcodes them like any added codec).
    pub accept: Vec<CodecSpec>,
    /// Codecs to use towards the offerer only (read, as `accept`).
    pub consume: Vec<CodecSpec>,
    /// Transcode to the answerer's first codec whatever the offerer has.
    pub always_transcode: bool,
}

impl CodecOptions {
    /// Whether any manipulation is asked for.
    pub fn any(&self) -> bool {
        self.always_transcode
            || !(self.transcode.is_empty()
                && self.strip.is_empty()
                && self.mask.is_empty()
                && self.offer.is_empty()
                && self.accept.is_empty()
                && self.consume.is_empty())
    }
}

/// An RTP transport profile a relayed side may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Profile {
    /// `RTP/AVP`
    Avp,
    /// `RTP/AVPF`
    Avpf,
    /// `RTP/SAVP`
    Savp,
    /// `RTP/SAVPF`
    Savpf,
    /// `UDP/TLS/RTP/SAVP`: SRTP keyed by DTLS (RFC 5764).
    DtlsSavp,
    /// `UDP/TLS/RTP/SAVPF`: WebRTC's profile.
    DtlsSavpf,
}

impl Profile {
    /// As SDP writes it.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Avp => "RTP/AVP",
            Profile::Avpf => "RTP/AVPF",
            Profile::Savp => "RTP/SAVP",
            Profile::Savpf => "RTP/SAVPF",
            Profile::DtlsSavp => "UDP/TLS/RTP/SAVP",
            Profile::DtlsSavpf => "UDP/TLS/RTP/SAVPF",
        }
    }

    /// The profile SDP names `name`, if a relayed side may be given it.
    pub fn from_name(name: &[u8]) -> Option<Profile> {
        [
            Profile::Avp,
            Profile::Avpf,
            Profile::Savp,
            Profile::Savpf,
            Profile::DtlsSavp,
            Profile::DtlsSavpf,
        ]
        .into_iter()
        .find(|p| p.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// Whether it carries SRTP keyed by SDES (`a=crypto`).
    pub fn secure(self) -> bool {
        matches!(self, Profile::Savp | Profile::Savpf)
    }

    /// Whether it carries SRTP keyed by DTLS.
    pub fn dtls(self) -> bool {
        matches!(self, Profile::DtlsSavp | Profile::DtlsSavpf)
    }

    /// Whether it carries RTCP feedback.
    pub fn feedback(self) -> bool {
        matches!(self, Profile::Avpf | Profile::Savpf | Profile::DtlsSavpf)
    }
}

/// A call as the orders name it: the Call-ID of its SIP dialog, or the
/// B2BUA's own media id. Octets, as SIP carries them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// One side of a call as the orders name it: its dialog tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tag(#[serde(with = "serde_bytes")] pub Vec<u8>);

macro_rules! octet_id {
    ($t:ident) => {
        impl $t {
            /// The octets.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }
        }

        impl From<&[u8]> for $t {
            fn from(v: &[u8]) -> Self {
                $t(v.to_vec())
            }
        }

        impl std::borrow::Borrow<[u8]> for $t {
            fn borrow(&self) -> &[u8] {
                &self.0
            }
        }
    };
}

octet_id!(CallId);
octet_id!(Tag);

/// One order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaOrder {
    /// An SDP offer from the side with `from_tag` (the first offer of a call
    /// makes that side A); the reply is the SDP for the other side.
    Offer {
        /// The call.
        call_id: CallId,
        /// The offerer's tag.
        from_tag: Tag,
        /// The offer.
        #[serde(with = "serde_bytes")]
        sdp: Vec<u8>,
        /// How to carry it out.
        options: SdpOptions,
    },
    /// The SDP answer from the side with `to_tag`; the reply is the SDP for
    /// the offerer.
    Answer {
        /// The call.
        call_id: CallId,
        /// The answerer's tag.
        to_tag: Tag,
        /// The answer.
        #[serde(with = "serde_bytes")]
        sdp: Vec<u8>,
        /// How to carry it out.
        options: SdpOptions,
    },
    /// Ends a call's media; the reply is its statistics.
    Delete {
        /// The call.
        call_id: CallId,
    },
    /// A call's statistics.
    Query {
        /// The call.
        call_id: CallId,
    },
    /// The calls held, oldest first.
    List,
    /// Whether the sessions answer.
    Ping,
    /// A media service on a call (prompts, DTMF, blocking, recording,
    /// conference rooms): the media server's orders.
    Service {
        /// The call.
        call_id: CallId,
        /// Which of its parties.
        party: Party,
        /// What to do.
        service: MediaService,
    },
    /// The media server answers the offer itself (conference, IVR, echo):
    /// the offerer is side A, the media server takes side B's place. The
    /// reply is the answer SDP for the offerer.
    Terminate {
        /// The call.
        call_id: CallId,
        /// The offerer's tag.
        from_tag: Tag,
        /// The media server's own tag.
        to_tag: Tag,
        /// The offer.
        #[serde(with = "serde_bytes")]
        sdp: Vec<u8>,
        /// How to carry it out (SRTP suites).
        options: SdpOptions,
        /// What the offerer hears first.
        mode: crate::media::services::LocalMode,
        /// Calls with the same placement share a worker (a room's members
        /// must), e.g. the room they join.
        placement: Option<String>,
    },
    /// Events the media plane reported since the last time asked (DTMF
    /// digits, prompts ended).
    Events,
}

/// An offer, answer or delete written straight from borrowed octets, so a
/// signalling element sends one without copying its Call-ID, tag and SDP
/// into an order first: its record reads back as the [`MediaOrder`] of the
/// same variant (same variant numbers, same fields, same encoding).
#[derive(Debug, Serialize)]
pub enum OrderRef<'a> {
    /// [`MediaOrder::Offer`].
    Offer {
        /// The call.
        #[serde(with = "serde_bytes")]
        call_id: &'a [u8],
        /// The offerer's tag.
        #[serde(with = "serde_bytes")]
        from_tag: &'a [u8],
        /// The offer.
        #[serde(with = "serde_bytes")]
        sdp: &'a [u8],
        /// How to carry it out.
        options: SdpOptions,
    },
    /// [`MediaOrder::Answer`].
    Answer {
        /// The call.
        #[serde(with = "serde_bytes")]
        call_id: &'a [u8],
        /// The answerer's tag.
        #[serde(with = "serde_bytes")]
        to_tag: &'a [u8],
        /// The answer.
        #[serde(with = "serde_bytes")]
        sdp: &'a [u8],
        /// How to carry it out.
        options: SdpOptions,
    },
    /// [`MediaOrder::Delete`].
    Delete {
        /// The call.
        #[serde(with = "serde_bytes")]
        call_id: &'a [u8],
    },
    /// [`MediaOrder::Query`] (the variants keep `MediaOrder`'s order: a
    /// record of either reads as the other).
    Query {
        /// The call.
        #[serde(with = "serde_bytes")]
        call_id: &'a [u8],
    },
}

/// The party of a call a media service is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Party {
    /// The side with this tag.
    Tag(Tag),
    /// Both sides.
    All,
}

/// A media service: what the media server does to a party's media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaService {
    /// The party hears a prompt (a WAV file), `repeat` times (0: until
    /// stopped).
    Play {
        /// The prompt.
        file: std::path::PathBuf,
        /// Times to play it.
        repeat: u32,
    },
    /// The prompt stops and the party hears the call again.
    StopPlay,
    /// A DTMF digit sent from the party (RFC 4733 or in-band, as its leg
    /// negotiated).
    Dtmf {
        /// The event: 0-9, 10 `*`, 11 `#`, 12-15 A-D.
        code: u8,
        /// How long, milliseconds.
        duration_ms: u32,
        /// Level, -dBm0 (RFC 4733 §2.3.4).
        volume: u8,
    },
    /// The media server's call changes what its caller hears: echo,
    /// silence (prompts still play), or a room (as `Join`).
    Mode(crate::media::services::LocalMode),
    /// The party's DTMF (`media`: false) or all its media is dropped,
    /// replaced by silence (`silence`), or passed again (`on`: false).
    Block {
        /// All media, not only DTMF.
        media: bool,
        /// Silence in place of what is dropped.
        silence: bool,
        /// Blocking starts (true) or ends.
        on: bool,
    },
    /// Recording of the call starts, pauses or stops.
    Record(Recording),
    /// The party joins a conference room, hearing everyone else in it.
    Join {
        /// The room.
        room: String,
    },
    /// The party leaves its room.
    Leave,
    /// Every packet of the call, both ways, as on the wire, is appended to
    /// the pcap file `file` (`on`), or no longer (`rvoip ctl capture`).
    Capture {
        /// The pcap file (made with its header when absent).
        file: std::path::PathBuf,
        /// Capture starts (true) or ends.
        on: bool,
    },
}

/// A recording step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recording {
    /// Starts (or resumes).
    Start,
    /// Pauses, keeping the file open.
    Pause,
    /// Stops and completes the file.
    Stop,
}

impl MediaService {
    /// The service's name, as ng's commands name it.
    pub fn name(&self) -> &'static str {
        match self {
            MediaService::Play { .. } => "play media",
            MediaService::StopPlay => "stop media",
            MediaService::Dtmf { .. } => "play DTMF",
            MediaService::Block {
                media: false,
                on: true,
                ..
            } => "block DTMF",
            MediaService::Block {
                media: false,
                on: false,
                ..
            } => "unblock DTMF",
            MediaService::Block {
                silence: true,
                on: true,
                ..
            } => "silence media",
            MediaService::Block {
                silence: true,
                on: false,
                ..
            } => "unsilence media",
            MediaService::Block { on: true, .. } => "block media",
            MediaService::Block { on: false, .. } => "unblock media",
            MediaService::Record(Recording::Start) => "start recording",
            MediaService::Record(Recording::Pause) => "pause recording",
            MediaService::Record(Recording::Stop) => "stop recording",
            MediaService::Join { .. } => "join",
            MediaService::Leave => "leave",
            MediaService::Capture { .. } => "capture",
            MediaService::Mode(_) => "mode",
        }
    }
}

/// What an order returns.
#[derive(Debug, Clone)]
pub enum MediaReply {
    /// The SDP to pass on (offer, answer).
    Sdp(Vec<u8>),
    /// A call's statistics (query, delete).
    Stats(Box<CallStats>),
    /// A delete for a call not held (it ended already: not an error).
    NotFound,
    /// The Call-IDs held, oldest first.
    Calls(Vec<CallId>),
    /// The answer to a ping.
    Pong,
    /// A media service was carried out; a prompt's length, ms.
    Done {
        /// The prompt's length (play media).
        duration_ms: Option<u64>,
    },
    /// Events since the last time asked, by call.
    Events(Vec<(CallId, crate::media::services::MediaEvent)>),
}

/// One media line of a call, as signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    /// `audio`, `video`, ...
    pub kind: Vec<u8>,
    /// The transport profile.
    pub proto: Vec<u8>,
    /// The relay's ports towards side A, side B.
    pub ports: [LegPorts; 2],
    /// What side A, side B asked for in their SDP.
    pub peers: [Option<PeerSpec>; 2],
}

/// A call as the sessions hold it, and its media statistics.
#[derive(Debug, Clone)]
pub struct CallStats {
    /// The tags of side A, side B.
    pub tags: [Option<Vec<u8>>; 2],
    /// Their labels.
    pub labels: [Option<Vec<u8>>; 2],
    /// When the call was created (Unix seconds).
    pub created: u64,
    /// When it was last signalled (Unix seconds).
    pub last_signal: u64,
    /// Its media lines.
    pub medias: Vec<MediaLine>,
    /// The codec of side A, side B: the first format of its last SDP's
    /// first media line, as it wrote it (`PCMU/8000`).
    pub codecs: [Option<String>; 2],
    /// The relay's state and counters of the call, when it has a session.
    pub snapshot: Option<SessionSnapshot>,
}

/// Received RTP over both legs of a call, as a CDR keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// RTP packets received by the relay over both legs.
    pub packets: u64,
    /// RTP octets.
    pub bytes: u64,
    /// Packets refused (errors).
    pub errors: u64,
    /// RTP packets the senders sent, by their sequence numbers (RFC 3550
    /// A.3), over both legs: `expected - packets` were lost.
    pub expected: u64,
    /// Packets lost on the way to the relay, over both legs.
    pub lost: u64,
    /// The larger interarrival jitter (RFC 3550 A.8) of the two legs at the
    /// end, in microseconds.
    pub jitter_us: u64,
    /// RTP packets received from side A (the caller's side of a B2BUA).
    pub from_a: u64,
    /// RTP packets received from side B.
    pub from_b: u64,
}

impl CallStats {
    /// RTP received over both legs.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        if let Some(s) = &self.snapshot {
            for m in &s.session.medias {
                t.from_a += m.legs[0].rtp_in.packets;
                t.from_b += m.legs[1].rtp_in.packets;
                for leg in &m.legs {
                    t.packets += leg.rtp_in.packets;
                    t.bytes += leg.rtp_in.bytes;
                    t.errors += leg.rtp_in.errors;
                    t.expected += leg.rtp_in.expected();
                    t.lost += leg.rtp_in.lost().max(0) as u64;
                    let rate = if leg.peer.clock_rate == 0 {
                        8000
                    } else {
                        leg.peer.clock_rate
                    };
                    t.jitter_us = t
                        .jitter_us
                        .max((leg.rtp_in.jitter_ms(rate) * 1000.0) as u64);
                }
            }
        }
        t
    }
}

/// Why an order failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderError {
    /// No call with that Call-ID.
    UnknownCall,
    /// The tag is neither of the call's sides.
    UnknownTag,
    /// The SDP could not be read.
    BadSdp,
    /// What was asked cannot be done (a transport profile, SRTP crypto, an
    /// SDES flag): the reason says what.
    Unacceptable(String),
    /// No SRTP key could be made (the system had no randomness).
    KeyGeneration,
    /// The media plane refused (no ports, a worker not answering, ...).
    Media(MediaError),
    /// This dataplane does not carry out that media service.
    NoService(String),
}

impl OrderError {
    /// The SIP status a signalling side answers when this fails a call:
    /// 503 when the relay is out of ports or endpoints (try elsewhere or
    /// later), 488 when the session description cannot be carried, 500
    /// otherwise.
    pub fn sip_status(&self) -> u16 {
        match self {
            OrderError::Media(MediaError::NoPorts | MediaError::NoEndpoints) => 503,
            OrderError::BadSdp | OrderError::Unacceptable(_) => 488,
            OrderError::NoService(_) => 501,
            _ => 500,
        }
    }
}

impl fmt::Display for OrderError {
    /// The reason as rtpengine words it (ng's `error-reason`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderError::UnknownCall => f.write_str("Unknown call-id"),
            OrderError::UnknownTag => f.write_str("Unknown tag"),
            OrderError::BadSdp => f.write_str("Failed to parse SDP"),
            OrderError::Unacceptable(r) => f.write_str(r),
            OrderError::KeyGeneration => f.write_str("Failed to generate SRTP key"),
            OrderError::Media(e) => write!(f, "{e}"),
            OrderError::NoService(s) => write!(f, "Unsupported command: {s}"),
        }
    }
}

impl std::error::Error for OrderError {}

/// What the order channel carries back for an order: the reply with what a
/// signalling element keeps of it (a call's statistics become its totals),
/// or the failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The SDP to pass on.
    Sdp(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A call's received RTP, both legs.
    Totals(Totals),
    /// A delete for a call not held.
    NotFound,
    /// The Call-IDs held.
    Calls(Vec<CallId>),
    /// The answer to a ping.
    Pong,
    /// The order failed.
    Failed(OrderError),
    /// A media service was carried out.
    Done {
        /// A prompt's length, ms.
        duration_ms: Option<u64>,
    },
    /// Events by call.
    Events(Vec<(CallId, crate::media::services::MediaEvent)>),
    /// A live call's figures so far (the outcome of a query): its received
    /// RTP and the codec of side A, side B.
    Live(Totals, [Option<String>; 2]),
}

impl Outcome {
    /// The outcome of a query carried out: the call's figures so far.
    pub fn of_query(r: Result<MediaReply, OrderError>) -> Outcome {
        match r {
            Ok(MediaReply::Stats(s)) => Outcome::Live(s.totals(), s.codecs.clone()),
            other => Outcome::of(other),
        }
    }

    /// The outcome of an order carried out.
    pub fn of(r: Result<MediaReply, OrderError>) -> Outcome {
        match r {
            Ok(MediaReply::Sdp(s)) => Outcome::Sdp(s),
            Ok(MediaReply::Stats(s)) => Outcome::Totals(s.totals()),
            Ok(MediaReply::NotFound) => Outcome::NotFound,
            Ok(MediaReply::Calls(c)) => Outcome::Calls(c),
            Ok(MediaReply::Pong) => Outcome::Pong,
            Ok(MediaReply::Done { duration_ms }) => Outcome::Done { duration_ms },
            Ok(MediaReply::Events(e)) => Outcome::Events(e),
            Err(e) => Outcome::Failed(e),
        }
    }
}

/// Records of the shared-memory order channel: the sender's id (a control
/// plane's, fresh at each start, so replies to an earlier one's orders are
/// told apart), the order's number, then the order or its outcome
/// (postcard). Nothing else reads or writes them.
pub mod record {
    use super::{MediaOrder, OrderRef, Outcome};

    const HEADER: usize = 16;

    fn header(sender: u64, number: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&sender.to_le_bytes());
        out.extend_from_slice(&number.to_le_bytes());
    }

    /// Appends `value` in postcard form. Writing into a growable buffer
    /// fails only for a type serde cannot represent, which these are not
    /// (such a record would be left empty, and read back as no record).
    fn body<T: serde::Serialize>(value: &T, out: &mut Vec<u8>) {
        if let Ok(v) = postcard::to_extend(value, std::mem::take(out)) {
            *out = v;
        }
    }

    fn split(rec: &[u8]) -> Option<(u64, u64, &[u8])> {
        let (h, body) = rec.split_at_checked(HEADER)?;
        let (s, n) = h.split_at(8);
        Some((
            u64::from_le_bytes(s.try_into().ok()?),
            u64::from_le_bytes(n.try_into().ok()?),
            body,
        ))
    }

    /// Writes order `number` of `sender` into `out`.
    pub fn write_order(sender: u64, number: u64, order: &MediaOrder, out: &mut Vec<u8>) {
        header(sender, number, out);
        // Room for the order at once: its SDP and a little more.
        if let MediaOrder::Offer { sdp, .. } | MediaOrder::Answer { sdp, .. } = order {
            out.reserve(sdp.len() + 96);
        }
        body(order, out);
    }

    /// The record of `order`, its sender and number left to
    /// [`stamp`] when it is sent: one allocation, sized at once.
    pub fn order_record(order: &OrderRef<'_>) -> Vec<u8> {
        let sdp = match order {
            OrderRef::Offer { sdp, .. } | OrderRef::Answer { sdp, .. } => sdp.len(),
            OrderRef::Delete { .. } | OrderRef::Query { .. } => 0,
        };
        let mut out = Vec::with_capacity(HEADER + sdp + 128);
        header(0, 0, &mut out);
        body(order, &mut out);
        out
    }

    /// Writes the sender and number into a record [`order_record`] made.
    pub fn stamp(rec: &mut [u8], sender: u64, number: u64) {
        if let Some(h) = rec.get_mut(..HEADER) {
            h[..8].copy_from_slice(&sender.to_le_bytes());
            h[8..].copy_from_slice(&number.to_le_bytes());
        }
    }

    /// The sender, number and order of a record; `None` if it is not one.
    pub fn read_order(rec: &[u8]) -> Option<(u64, u64, MediaOrder)> {
        let (s, n, body) = split(rec)?;
        Some((s, n, postcard::from_bytes(body).ok()?))
    }

    /// Writes the outcome of order `number` of `sender` into `out`.
    pub fn write_outcome(sender: u64, number: u64, outcome: &Outcome, out: &mut Vec<u8>) {
        header(sender, number, out);
        if let Outcome::Sdp(sdp) = outcome {
            out.reserve(sdp.len() + 8);
        }
        body(outcome, out);
    }

    /// The sender, number and outcome of a record; `None` if it is not one.
    pub fn read_outcome(rec: &[u8]) -> Option<(u64, u64, Outcome)> {
        let (s, n, body) = split(rec)?;
        Some((s, n, postcard::from_bytes(body).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_the_sip_status_a_caller_should_get() {
        assert_eq!(OrderError::Media(MediaError::NoPorts).sip_status(), 503);
        assert_eq!(OrderError::Media(MediaError::NoEndpoints).sip_status(), 503);
        assert_eq!(OrderError::Media(MediaError::WorkerGone).sip_status(), 500);
        assert_eq!(OrderError::BadSdp.sip_status(), 488);
        assert_eq!(
            OrderError::Unacceptable("No usable SDES crypto offered".into()).sip_status(),
            488
        );
        assert_eq!(OrderError::UnknownCall.sip_status(), 500);
        assert_eq!(OrderError::UnknownCall.to_string(), "Unknown call-id");
    }

    #[test]
    fn a_borrowed_order_is_written_as_the_order_it_reads_back_as() {
        let options = SdpOptions {
            replace_origin: true,
            transport_protocol: Some(Profile::Savp),
            ..SdpOptions::default()
        };
        let cases = [
            (
                OrderRef::Offer {
                    call_id: b"c1",
                    from_tag: b"a",
                    sdp: b"v=0\r\n",
                    options: options.clone(),
                },
                MediaOrder::Offer {
                    call_id: CallId(b"c1".to_vec()),
                    from_tag: Tag(b"a".to_vec()),
                    sdp: b"v=0\r\n".to_vec(),
                    options: options.clone(),
                },
            ),
            (
                OrderRef::Answer {
                    call_id: b"c1",
                    to_tag: b"b",
                    sdp: b"v=0\r\ns=-\r\n",
                    options: options.clone(),
                },
                MediaOrder::Answer {
                    call_id: CallId(b"c1".to_vec()),
                    to_tag: Tag(b"b".to_vec()),
                    sdp: b"v=0\r\ns=-\r\n".to_vec(),
                    options,
                },
            ),
            (
                OrderRef::Delete { call_id: b"c1" },
                MediaOrder::Delete {
                    call_id: CallId(b"c1".to_vec()),
                },
            ),
        ];
        for (borrowed, owned) in cases {
            let mut rec = record::order_record(&borrowed);
            record::stamp(&mut rec, 7, 42);
            let mut expected = Vec::new();
            record::write_order(7, 42, &owned, &mut expected);
            assert_eq!(rec, expected, "{owned:?}");
            assert_eq!(record::read_order(&rec), Some((7, 42, owned)));
        }
    }

    #[test]
    fn octet_fields_are_written_as_a_plain_vector_of_octets_would_be() {
        // Read and written as bytes (one copy, not one call per octet), on
        // the wire exactly as before: a length, then the octets.
        let v = b"call-1@host".to_vec();
        let plain = postcard::to_allocvec(&v).expect("encodes");
        assert_eq!(
            postcard::to_allocvec(&CallId(v.clone())).expect("encodes"),
            plain
        );
        assert_eq!(
            postcard::to_allocvec(&Tag(v.clone())).expect("encodes"),
            plain
        );
        let back: CallId = postcard::from_bytes(&plain).expect("decodes");
        assert_eq!(back, CallId(v));
    }

    #[test]
    fn orders_and_outcomes_read_back_from_their_records_and_nothing_else_does() {
        let order = MediaOrder::Offer {
            call_id: CallId(b"c1@x".to_vec()),
            from_tag: Tag(b"t1".to_vec()),
            sdp: b"v=0\r\n".to_vec(),
            options: SdpOptions {
                replace_origin: true,
                transport_protocol: Some(Profile::Savp),
                ..SdpOptions::default()
            },
        };
        let mut rec = Vec::new();
        record::write_order(7, 42, &order, &mut rec);
        assert_eq!(record::read_order(&rec), Some((7, 42, order)));
        for outcome in [
            Outcome::Sdp(b"v=0".to_vec()),
            Outcome::Totals(Totals {
                packets: 3,
                bytes: 516,
                errors: 1,
                expected: 4,
                lost: 1,
                jitter_us: 2500,
                from_a: 2,
                from_b: 1,
            }),
            Outcome::Failed(OrderError::Media(MediaError::NoPorts)),
            Outcome::Failed(OrderError::Unacceptable("no crypto".into())),
            Outcome::NotFound,
        ] {
            record::write_outcome(9, 1, &outcome, &mut rec);
            assert_eq!(record::read_outcome(&rec), Some((9, 1, outcome)));
        }
        // The borrowed forms read back as the orders they stand for.
        let rec = record::order_record(&OrderRef::Query { call_id: b"c1@x" });
        assert_eq!(
            record::read_order(&rec).map(|r| r.2),
            Some(MediaOrder::Query {
                call_id: CallId(b"c1@x".to_vec())
            })
        );
        let mut rec = Vec::new();
        // Short, cut or foreign records are refused, not misread.
        assert_eq!(record::read_order(b"short"), None);
        record::write_order(7, 42, &MediaOrder::Ping, &mut rec);
        assert_eq!(record::read_outcome(&rec[..16]), None);
        assert_eq!(record::read_order(&[0xff; 40]), None);
    }
}
