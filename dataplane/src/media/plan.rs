//! What the media plane is asked to do, sans-IO: per media line and side,
//! which endpoints to open, which peer to send to and which SRTP keys to
//! use ([`MediaPlan`]), what comes back ([`Applied`], [`SessionSnapshot`]),
//! why it fails ([`MediaError`]), and the [`MediaControl`] contract the
//! media engine implements.

use std::fmt;
use std::net::IpAddr;

use super::relay::{LegSrtp, PeerSpec, RelayCounters, Session, SessionId, Side};
use super::services::{MediaEvent, ServiceOp};
use super::transcode::LegCodec;

/// Why a media order failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MediaError {
    /// The worker's port range is exhausted.
    NoPorts,
    /// The worker's endpoint table is full.
    NoEndpoints,
    /// A socket could not be opened or bound.
    Io(String),
    /// No such session.
    UnknownSession,
    /// The worker did not answer.
    WorkerGone,
    /// An SRTP key does not fit its suite.
    BadKey,
    /// A codec of a transcoded call could not be set up.
    Codec(String),
    /// A media service could not be carried out.
    Service(String),
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::NoPorts => f.write_str("no free media ports"),
            MediaError::NoEndpoints => f.write_str("no free endpoint slots"),
            MediaError::Io(e) => write!(f, "socket error: {e}"),
            MediaError::UnknownSession => f.write_str("unknown media session"),
            MediaError::WorkerGone => f.write_str("media worker not answering"),
            MediaError::BadKey => f.write_str("SRTP key does not fit its crypto-suite"),
            MediaError::Codec(e) => write!(f, "codec: {e}"),
            MediaError::Service(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for MediaError {}

/// What one side of one media line needs.
#[derive(Debug, Clone, Default)]
pub struct SidePlan {
    /// Open the RTP endpoint if missing.
    pub open_rtp: bool,
    /// Open the separate RTCP endpoint if missing.
    pub open_rtcp: bool,
    /// New peer description, if the SDP gave one.
    pub peer: Option<PeerSpec>,
    /// New SRTP keying for the leg; `None` leaves it as it is.
    pub srtp: Option<LegSrtp>,
    /// Open new endpoints on this relay address (the IPv6 one, a realm's);
    /// none: the relay's IPv4 address.
    pub local: Option<IpAddr>,
    /// Make (or update) the leg a WebRTC one: rvoip terminates ICE and
    /// DTLS-SRTP on it.
    pub webrtc: Option<super::webrtc::WebRtcPlan>,
    /// Put the line in this side's bundle (RFC 9143); `None` leaves it as
    /// it is.
    pub bundle: Option<super::bundle::BundleLine>,
}

/// What one media line needs, per side (A, B).
#[derive(Debug, Clone, Default)]
pub struct MediaPlan {
    /// Side A, side B.
    pub sides: [SidePlan; 2],
    /// What the sides speak, when the offer/answer decided it: a stage
    /// between them where they differ (`Some(None)`: relay unchanged);
    /// `None` leaves it as it is.
    pub transcode: Option<Option<(LegCodec, LegCodec)>>,
}

impl MediaPlan {
    /// The plan of `side`.
    pub fn side_mut(&mut self, side: Side) -> &mut SidePlan {
        &mut self.sides[side.index()]
    }
}

/// Local ports of one leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegPorts {
    /// RTP port (0: none).
    pub rtp: u16,
    /// RTCP port, when a separate RTCP endpoint is open.
    pub rtcp: Option<u16>,
}

/// A session in the engine: which worker, which session there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaHandle {
    /// Worker index.
    pub worker: usize,
    /// Session id in that worker.
    pub session: SessionId,
}

/// A copy of a session taken by its worker.
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    /// The session state and statistics.
    pub session: Session,
    /// The worker's clock when the copy was taken (the clock of `last_seen_ms`).
    pub now_ms: u64,
}

/// The result of applying plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The session.
    pub handle: MediaHandle,
    /// Per media line, the local ports of side A and side B.
    pub ports: Vec<[LegPorts; 2]>,
}

/// What the media sessions need from the media plane (the engine implements
/// it; tests and fuzz targets fake it).
pub trait MediaControl {
    /// The worker a new call's media goes to.
    fn place(&self) -> usize;
    /// Workers.
    fn workers(&self) -> usize {
        1
    }
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
    /// Carries out a media service on media line `media` of a session.
    fn service(&self, h: MediaHandle, media: usize, op: ServiceOp) -> Result<(), MediaError> {
        let _ = (h, media, op);
        Err(MediaError::Service("no media services here".into()))
    }
    /// Events the media plane reported since the last call.
    fn take_events(&self) -> Vec<(MediaHandle, MediaEvent)> {
        Vec::new()
    }
    /// A recording step (files are the recorder's).
    fn record(&self, step: RecordStep) -> Result<(), MediaError> {
        let _ = step;
        Err(MediaError::Service("no recorder here".into()))
    }
    /// A capture step (files are the capture writer's).
    fn capture(&self, step: crate::engine::media::capturer::CaptureStep) -> Result<(), MediaError> {
        let _ = step;
        Err(MediaError::Service("no capture writer here".into()))
    }
}

/// What the recorder is asked.
#[derive(Debug)]
pub enum RecordStep {
    /// Open a recording's files (or resume it).
    Start(Box<crate::engine::media::recorder::RecordingSpec>),
    /// Pause it.
    Pause(u32),
    /// Complete its files.
    Stop(u32),
}
