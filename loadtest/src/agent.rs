//! The call logic of both roles, sans-IO: datagrams and the time in,
//! datagrams out, figures into the [`Report`].
//!
//! Driving contract: call [`Agent::on_sip`] for every SIP datagram and
//! [`Agent::on_rtp`] for every RTP datagram received, [`Agent::tick`] at
//! least every millisecond (it fires timers and, as a UAC, starts calls on
//! the rate schedule), [`Agent::media_due`] to get the RTP packets to send;
//! then send what [`Agent::take_out`] returns. Time is nanoseconds on one
//! monotonic clock.
//!
//! UAC scenario: INVITE (SDP offer) → 100/180/200 → ACK → hold → BYE → 200,
//! INVITE retransmitted per RFC 3261 Timer A until a response (Timer B: 64·T1),
//! BYE per Timer E (capped at T2) until its answer (Timer F). UAS: 180 and
//! 200 (SDP answer) to an INVITE, the 200 retransmitted until the ACK
//! (Timer G/H), 200 to BYE, retransmitted requests answered again.

use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rvoip_dataplane::sip::{Method, SipMessage};

use crate::media::{self, AudioCheck, PACKET, Receiver, Sender, ToneFrames};
use crate::report::{self, Report};
use crate::sip::{self, Dialog, Local, Text};
use rvoip_codecs::Codec;
use rvoip_controlplane::registrar::digest::answer_challenge;
use rvoip_dataplane::sip::HeaderName;
use rvoip_dataplane::wheel::Wheel;

mod ng;
pub use ng::NgService;
mod register;
mod webrtc;
use rvoip_dataplane::media::dtls::DtlsIdentity;
use rvoip_dataplane::srtp::{MasterKey, SrtpContext, SrtpParams, Suite, sdes};

/// The flow of datagrams that belong to no call.
const NO_CALL: u64 = u64::MAX;

/// RFC 3261 T1 and T2, nanoseconds.
const T1: u64 = 500_000_000;
const T2: u64 = 4_000_000_000;

/// Which side of the calls this agent plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentRole {
    /// Places calls.
    Uac,
    /// Answers calls.
    Uas,
    /// Drives an ng relay directly (offer, answer, RTP both ways, delete).
    Ng,
    /// Registers (REGISTER, 401, REGISTER with digest credentials, 200).
    Register,
}

/// How long a call is held after the answer: fixed or uniform in a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Shortest, milliseconds.
    pub min_ms: u64,
    /// Longest, milliseconds.
    pub max_ms: u64,
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Config {
    /// UAC or UAS.
    pub role: AgentRole,
    /// Where INVITEs go (UAC).
    pub target: Option<SocketAddr>,
    /// User part of the Request-URI.
    pub service: String,
    /// Calls started per second at full rate (UAC).
    pub rate: f64,
    /// Seconds to reach full rate, linearly (UAC).
    pub ramp_s: f64,
    /// Calls to place in all (UAC); `u64::MAX` for no limit.
    pub calls: u64,
    /// Most calls in progress at once (UAC).
    pub max_concurrent: u64,
    /// Stop starting calls after this many nanoseconds (UAC); a UAS stops then.
    pub duration_ns: Option<u64>,
    /// Hold time (UAC).
    pub hold: Hold,
    /// Send and measure RTP.
    pub media: bool,
    /// The SIP socket's address (Via, Contact).
    pub sip_local: SocketAddr,
    /// The RTP socket's address (SDP).
    pub rtp_local: SocketAddr,
    /// Distinguishes this run's Call-IDs and tags.
    pub run_id: u32,
    /// Offer SRTP with this suite (SDES); a UAS answers any suite offered.
    pub srtp: Option<Suite>,
    /// Digest credentials (user, password) for 401/407 challenges.
    pub auth: Option<(String, String)>,
    /// Domain of REGISTER requests.
    pub domain: String,
    /// Expires of REGISTER requests.
    pub expires: u32,
    /// The codec this side speaks (ng: leg A). PCMU with nothing else set
    /// sends the stamped load packets; anything else a tone.
    pub codec: Codec,
    /// ng: the codec leg B answers with.
    pub answer_codec: Codec,
    /// ng: ask the relay to add the answer codec and transcode.
    pub transcode: bool,
    /// Streams whose audio is decoded and judged (tone mode).
    pub audio_check: usize,
    /// Send tones even in PCMU (a codec was named).
    pub tone: bool,
    /// ng with transcoding: the Opus bit rate asked of the relay
    /// (`opus/48000/2/<bitrate>`), so relays compared encode alike.
    pub opus_bitrate: Option<u32>,
    /// What a caller hears is judged by: tones it must hear (default the
    /// callee's 600 Hz), tones it must not (its own, in a conference), and
    /// from how long after the first packet.
    pub listen: Listen,
    /// The tone a caller sends (default 1 kHz).
    pub caller_tone: f64,
    /// A DTMF digit a caller sends after the answer.
    pub dtmf: Option<Dtmf>,
    /// ng: a media service for each call once it is up.
    pub ng_service: Option<ng::NgService>,
    /// Calls to `<service><n / rooms_of>`: conference rooms of this many
    /// callers (0: every call to `service`).
    pub rooms_of: u64,
    /// In each room only the first this many callers talk; the others send
    /// silence (0: all talk).
    pub talkers: u64,
    /// ng: leg A is a WebRTC endpoint (ICE, DTLS-SRTP, rtcp-mux,
    /// UDP/TLS/RTP/SAVPF) bridged by the relay to a plain RTP/AVP leg B.
    pub webrtc: bool,
}

/// How a caller judges what it hears.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    /// Tones that must be heard.
    pub expect: Vec<f64>,
    /// Tones that must not.
    pub absent: Vec<f64>,
    /// Audio before this is not judged, ms.
    pub after_ms: u64,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            expect: vec![media::CALLEE_TONE],
            absent: Vec::new(),
            after_ms: 500,
        }
    }
}

/// A DTMF digit a caller sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dtmf {
    /// The event (0-9, 10 `*`, 11 `#`).
    pub event: u8,
    /// When, ms after the answer.
    pub after_ms: u64,
    /// As its tone pair in the audio instead of RFC 4733 events.
    pub inband: bool,
}

impl Config {
    /// Whether streams carry a tone in a codec rather than stamped PCMU.
    pub fn tones(&self) -> bool {
        self.tone || self.codec != Codec::Pcmu || self.answer_codec != Codec::Pcmu || self.transcode
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    InviteRetransmit,
    InviteTimeout,
    Hangup,
    ByeRetransmit,
    ByeTimeout,
    OkRetransmit,
    AckTimeout,
    Forget,
    NgRetransmit,
    WebRtc,
    RegisterRetransmit,
    RegisterTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UacState {
    Calling,
    Proceeding,
    Confirmed,
    Hangup,
}

#[derive(Debug)]
struct UacCall {
    dialog: Dialog,
    state: UacState,
    started_ns: u64,
    invite: Vec<u8>,
    invite_branch: String,
    interval: u64,
    ringing: bool,
    ack: Option<Vec<u8>>,
    bye: Option<Vec<u8>>,
    generation: u32,
    /// The SDES key this side offered.
    srtp_key: Option<MasterKey>,
    /// The far end's announced SSRC, once answered.
    remote_ssrc: Option<u32>,
    /// CSeq of the current INVITE (2 after a digest challenge).
    cseq: u32,
    /// The SDP offer, kept to send again with credentials.
    offer: String,
}

#[derive(Debug)]
struct UasCall {
    call_id: Box<[u8]>,
    src: SocketAddr,
    /// The 200 for the INVITE while unacknowledged, then the 200 for the BYE.
    last: Vec<u8>,
    interval: u64,
    acked: bool,
    ended: bool,
    media_to: Option<SocketAddr>,
    /// SRTP keys to send with, when the offer was SRTP.
    srtp_tx: Option<SrtpParams>,
    remote_ssrc: Option<u32>,
    key: u64,
    generation: u32,
    /// The payload type of its answer's codec.
    pt: u8,
}

#[derive(Debug)]
struct Stream {
    sender: Sender,
    to: SocketAddr,
    srtp: Option<Box<SrtpContext>>,
    /// Tone mode: which side's tone (0 caller, 1 callee) at which
    /// payload type.
    tone: Option<(usize, u8)>,
    /// A digit to send: when (ns), and packets of it sent so far.
    dtmf: Option<(u64, u32)>,
}

/// A received stream in tone mode: where its timestamps started (for
/// jitter), and its audio when it is one of those judged.
#[derive(Debug)]
struct Heard {
    first: (u32, u64),
    clock: u32,
    audio: Option<AudioCheck>,
}

/// One role's calls, timers and media.
#[derive(Debug)]
pub struct Agent {
    cfg: Config,
    /// What was measured.
    pub report: Report,
    start_ns: u64,
    next_call: u64,
    active: u64,
    uac: HashMap<u64, UacCall>,
    /// A UAS's calls by key, and the keys by Call-ID.
    uas: HashMap<u64, UasCall>,
    ng: HashMap<u64, ng::NgCall>,
    reg: HashMap<u64, register::RegCall>,
    uas_index: HashMap<Box<[u8]>, u64>,
    uas_keys: u64,
    timers: Wheel<(u64, Timer, u32)>,
    due: Vec<(u64, Timer, u32)>,
    streams: HashMap<u64, Stream>,
    wheel: Vec<Vec<u64>>,
    wheel_ms: u64,
    receivers: HashMap<u32, (Receiver, u64)>,
    /// SRTP contexts for the far ends' streams, by their SSRC.
    srtp_rx: HashMap<u32, Box<SrtpContext>>,
    /// Where the SRTP keys it offers come from.
    keys: Box<dyn rvoip_dataplane::entropy::Entropy>,
    /// Datagrams to send: the call (flow) each belongs to, the datagram,
    /// where to.
    out: Vec<(u64, Vec<u8>, SocketAddr)>,
    rng: u64,
    /// This side's addresses as messages carry them.
    local: Local,
    /// The Request-URI every call uses, written once.
    request_uri: Option<Arc<str>>,
    /// Calls given up whose late 2xx was acknowledged and hung up.
    abandoned: rustc_hash::FxHashSet<u64>,
    /// Tone mode: the caller's and the callee's tone in their codecs.
    /// The caller's tone, the callee's, the caller's DTMF digit as its
    /// tone pair, and silence (callers who do not talk).
    tones: [Option<Arc<ToneFrames>>; 4],
    /// Tone mode: what each received stream needs.
    heard: HashMap<u32, Heard>,
    /// ng, tone mode: leg B's payload type (from the offer's reply), by call.
    b_pt: HashMap<u64, u8>,
    /// ng with WebRTC: leg A's ICE and DTLS by call, and the calls by the
    /// relay's address for leg A.
    webrtc: HashMap<u64, webrtc::WebRtcLeg>,
    webrtc_from: HashMap<SocketAddr, u64>,
    /// STUN and DTLS that came before their leg was known, by source.
    webrtc_early: HashMap<SocketAddr, Vec<Vec<u8>>>,
    /// The certificate WebRTC legs present.
    dtls_identity: Option<DtlsIdentity>,
    /// The instant a reading of the monotonic clock (ns) stands for, for
    /// DTLS timers.
    clock: Option<(std::time::Instant, u64)>,
    /// Datagrams to send from the RTP socket (STUN, DTLS), and where to.
    rtp_out: Vec<(Vec<u8>, SocketAddr)>,
}

/// A Via branch unique to call `n` of run `run` and its request `what`.
fn branch(n: u64, run: u64, what: &str) -> String {
    let mut b = Text::with_capacity(40);
    b.s("z9hG4bK-").x(n).s("-").x(run).s("-").s(what);
    b.into_string()
}

impl Agent {
    /// An agent starting at `now_ns`, drawing the SRTP keys it offers from
    /// `keys`.
    pub fn new(cfg: Config, now_ns: u64, keys: Box<dyn rvoip_dataplane::entropy::Entropy>) -> Self {
        let local = Local::new(cfg.sip_local, cfg.rtp_local);
        // A UAC knows which call each stream belongs to (SSRCs announced in
        // the SDP), so its RTP figures are of completed calls only.
        let mut report = Report::default();
        report.rtp_completed_only = cfg.role == AgentRole::Uac;
        let dtls_identity = if cfg.webrtc {
            DtlsIdentity::generate(keys.as_ref()).ok()
        } else {
            None
        };
        Agent {
            rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(cfg.run_id),
            cfg,
            report,
            start_ns: now_ns,
            next_call: 0,
            active: 0,
            uac: HashMap::default(),
            uas: HashMap::default(),
            ng: HashMap::default(),
            reg: HashMap::default(),
            uas_index: HashMap::default(),
            uas_keys: 0,
            timers: Wheel::new(now_ns / 1_000_000),
            due: Vec::new(),
            streams: HashMap::default(),
            wheel: (0..20).map(|_| Vec::new()).collect(),
            wheel_ms: now_ns / 1_000_000,
            receivers: HashMap::default(),
            srtp_rx: HashMap::default(),
            keys,
            out: Vec::new(),
            local,
            request_uri: None,
            abandoned: rustc_hash::FxHashSet::default(),
            tones: [None, None, None, None],
            heard: HashMap::default(),
            b_pt: HashMap::default(),
            webrtc: HashMap::default(),
            webrtc_from: HashMap::default(),
            webrtc_early: HashMap::default(),
            dtls_identity,
            clock: None,
            rtp_out: Vec::new(),
        }
        .with_tones()
    }

    /// Encodes the tones of tone mode once: the caller's (UAC, ng leg A)
    /// in its codec, the callee's (UAS, ng leg B) in its own.
    fn with_tones(mut self) -> Self {
        if self.cfg.tones() {
            let callee = if self.cfg.role == AgentRole::Ng {
                self.cfg.answer_codec
            } else {
                self.cfg.codec
            };
            self.tones = [
                ToneFrames::new(self.cfg.codec, self.cfg.caller_tone)
                    .ok()
                    .map(Arc::new),
                ToneFrames::new(callee, media::CALLEE_TONE)
                    .ok()
                    .map(Arc::new),
                self.cfg
                    .dtmf
                    .filter(|d| d.inband)
                    .and_then(|d| ToneFrames::dtmf(self.cfg.codec, d.event).ok())
                    .map(Arc::new),
                (self.cfg.talkers > 0)
                    .then(|| ToneFrames::new(self.cfg.codec, 0.0).ok())
                    .flatten()
                    .map(Arc::new),
            ];
        }
        self
    }

    /// The SDP codec this side offers or answers with.
    fn own_codec(&self) -> sip::SdpCodec {
        let mut c = if self.cfg.tones() {
            sip::SdpCodec::default_for(self.cfg.codec)
        } else {
            sip::SdpCodec::pcmu()
        };
        c.events = self.cfg.dtmf.is_some_and(|d| !d.inband);
        c
    }

    /// Calls in progress.
    pub fn active(&self) -> u64 {
        self.active
    }

    fn places_calls(&self) -> bool {
        matches!(
            self.cfg.role,
            AgentRole::Uac | AgentRole::Ng | AgentRole::Register
        )
    }

    /// Whether a UAC has placed every call it will place and all have ended.
    pub fn finished(&self, now_ns: u64) -> bool {
        self.places_calls()
            && self.active == 0
            && (self.next_call >= self.cfg.calls || self.past_duration(now_ns))
    }

    fn past_duration(&self, now_ns: u64) -> bool {
        self.cfg
            .duration_ns
            .is_some_and(|d| now_ns.saturating_sub(self.start_ns) >= d)
    }

    /// Tells the agent which instant the monotonic reading `epoch_ns`
    /// stands for (DTLS timers run on instants).
    pub fn set_clock(&mut self, epoch: std::time::Instant, epoch_ns: u64) {
        self.clock = Some((epoch, epoch_ns));
    }

    /// The datagrams to send now from the RTP socket (a WebRTC leg's STUN
    /// and DTLS), and where to.
    pub fn take_rtp_out(&mut self) -> std::vec::Drain<'_, (Vec<u8>, SocketAddr)> {
        self.rtp_out.drain(..)
    }

    /// The datagrams to send now, each with the call it belongs to (a
    /// call's datagrams must leave in this order; different calls' need not).
    pub fn take_out(&mut self) -> std::vec::Drain<'_, (u64, Vec<u8>, SocketAddr)> {
        self.out.drain(..)
    }

    /// When `tick` next has work (a timer or a call to start), at the latest.
    pub fn next_deadline(&self, now_ns: u64) -> u64 {
        let timer = self.timers.next_due().map_or(u64::MAX, |ms| ms * 1_000_000);
        let media = if self.streams.is_empty() {
            u64::MAX
        } else {
            (self.wheel_ms + 1) * 1_000_000
        };
        let call = if self.places_calls()
            && self.next_call < self.cfg.calls
            && self.active < self.cfg.max_concurrent
        {
            // Calls due within a millisecond start together, at most one
            // wake-up per millisecond for them.
            self.call_due_ns(self.next_call).max(now_ns + 1_000_000)
        } else {
            // Nothing to place, or at the concurrency limit: a call's end
            // (a datagram or a timer) wakes the loop.
            u64::MAX
        };
        timer.min(media).min(call)
    }

    fn schedule(&mut self, at: u64, key: u64, t: Timer, generation: u32) {
        // Rounded up: a timer never fires early.
        self.timers
            .schedule(at.div_ceil(1_000_000), (key, t, generation));
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Calls that should have started by `now_ns` on the rate schedule
    /// (linear ramp to `rate` over `ramp_s`, then flat).
    fn due_calls(&self, now_ns: u64) -> u64 {
        let t = now_ns.saturating_sub(self.start_ns) as f64 / 1e9;
        let r = self.cfg.ramp_s.max(0.0);
        let n = if t < r {
            self.cfg.rate * t * t / (2.0 * r)
        } else {
            self.cfg.rate * (t - r / 2.0)
        };
        (n.floor() as u64 + 1).min(self.cfg.calls)
    }

    /// When call number `k` (from 0) is due on the rate schedule: the
    /// inverse of [`Agent::due_calls`].
    fn call_due_ns(&self, k: u64) -> u64 {
        if self.cfg.rate <= 0.0 {
            return u64::MAX;
        }
        let (k, rate, r) = (k as f64, self.cfg.rate, self.cfg.ramp_s.max(0.0));
        // Before the ramp's end rate·t²/2r calls are due, after it rate·(t - r/2).
        let ramp_calls = rate * r / 2.0;
        let t = if r > 0.0 && k < ramp_calls {
            (2.0 * r * k / rate).sqrt()
        } else {
            k / rate + r / 2.0
        };
        // A microsecond late, so the schedule has surely reached it then.
        self.start_ns + (t * 1e9).ceil() as u64 + 1_000
    }

    /// Fires due timers and starts due calls.
    pub fn tick(&mut self, now_ns: u64) {
        let mut due = std::mem::take(&mut self.due);
        self.timers
            .advance(now_ns / 1_000_000, |_, _, timer| due.push(timer));
        for (key, t, generation) in due.drain(..) {
            self.on_timer(now_ns, key, t, generation);
        }
        self.due = due;
        if self.places_calls() && !self.past_duration(now_ns) {
            let due = self.due_calls(now_ns);
            while self.next_call < due && self.active < self.cfg.max_concurrent {
                self.start_call(now_ns);
            }
        }
    }

    fn start_call(&mut self, now_ns: u64) {
        let Some(target) = self.cfg.target else {
            return;
        };
        if matches!(self.cfg.role, AgentRole::Ng | AgentRole::Register) {
            let n = self.next_call;
            self.next_call += 1;
            self.report.attempt(now_ns);
            self.active += 1;
            if self.cfg.role == AgentRole::Ng {
                self.ng_start(now_ns, n);
            } else {
                self.register_start(now_ns, n);
            }
            return;
        }
        let n = self.next_call;
        self.next_call += 1;
        let run = u64::from(self.cfg.run_id);
        let mut call_id = Text::with_capacity(40);
        call_id.n(n).s("-").n(run).s("@rvoip-loadtest");
        let mut from_tag = Text::with_capacity(24);
        from_tag.x(n).s("-").x(run);
        let request_uri = if let Some(room) = n.checked_div(self.cfg.rooms_of) {
            format!("sip:{}{room}@{target}", self.cfg.service).into()
        } else {
            self.request_uri
                .get_or_insert_with(|| format!("sip:{}@{target}", self.cfg.service).into())
                .clone()
        };
        let dialog = Dialog {
            call_id: call_id.into_string(),
            from_tag: from_tag.into_string(),
            request_uri,
            local: self.local.sip.clone(),
        };
        let branch = branch(n, run, "i");
        let srtp_key = self
            .cfg
            .srtp
            .and_then(|s| sdes::generate(s, self.keys.as_ref()));
        let line = self
            .cfg
            .srtp
            .zip(srtp_key.as_ref())
            .map(|(s, k)| sdes::format(1, k, s));
        let ssrc = (n as u32).wrapping_mul(2).wrapping_add(1);
        let offer = sip::sdp(n, &self.local, ssrc, line.as_deref(), &self.own_codec());
        let invite = sip::invite(&dialog, &branch, 1, None, &offer);
        self.out.push((n, invite.clone(), target));
        self.uac.insert(
            n,
            UacCall {
                dialog,
                state: UacState::Calling,
                started_ns: now_ns,
                invite,
                invite_branch: branch,
                interval: T1,
                ringing: false,
                ack: None,
                bye: None,
                generation: 0,
                srtp_key,
                remote_ssrc: None,
                cseq: 1,
                offer,
            },
        );
        self.report.attempt(now_ns);
        self.active += 1;
        self.schedule(now_ns + T1, n, Timer::InviteRetransmit, 0);
        self.schedule(now_ns + 64 * T1, n, Timer::InviteTimeout, 0);
    }

    /// Ends UAC call `n`, completed or failed for `failure`. A failed
    /// call's media stops, and what it received leaves the RTP figures
    /// (they describe completed calls): counted apart.
    fn end_uac(&mut self, n: u64, failure: Option<&str>) {
        if let Some(call) = self.uac.remove(&n) {
            if let Some(ssrc) = call.remote_ssrc {
                self.srtp_rx.remove(&ssrc);
                if failure.is_some()
                    && let Some((r, _)) = self.receivers.remove(&ssrc)
                {
                    self.report.rtp_received -= r.received.min(self.report.rtp_received);
                    self.report.rtp_failed_calls += r.received;
                }
            }
            self.active = self.active.saturating_sub(1);
            match failure {
                Some(reason) => self.report.fail(reason),
                None => self.report.completed += 1,
            }
        }
        self.stop_media(n);
    }

    fn on_timer(&mut self, now_ns: u64, key: u64, t: Timer, generation: u32) {
        match self.cfg.role {
            AgentRole::Ng => return self.ng_timer(now_ns, key, t, generation),
            AgentRole::Register => return self.register_timer(now_ns, key, t, generation),
            AgentRole::Uac | AgentRole::Uas => {}
        }
        let target = self.cfg.target;
        match t {
            Timer::InviteRetransmit
            | Timer::InviteTimeout
            | Timer::Hangup
            | Timer::ByeRetransmit
            | Timer::ByeTimeout => {
                let Some(call) = self.uac.get_mut(&key) else {
                    return;
                };
                if call.generation != generation {
                    return;
                }
                match t {
                    Timer::InviteRetransmit if call.state == UacState::Calling => {
                        if let Some(to) = target {
                            self.out.push((key, call.invite.clone(), to));
                        }
                        call.interval *= 2;
                        let at = now_ns + call.interval;
                        self.schedule(at, key, Timer::InviteRetransmit, generation);
                    }
                    Timer::InviteTimeout
                        if matches!(call.state, UacState::Calling | UacState::Proceeding) =>
                    {
                        // Timer B: nothing at all came back (the request was
                        // dropped: a ban, a dead peer) or only provisionals
                        // (a Proceeding call waits here too rather than
                        // forever: Timer C's role, at 64·T1).
                        let reason = if call.state == UacState::Calling {
                            "no-response"
                        } else {
                            "no-final-response"
                        };
                        self.end_uac(key, Some(reason));
                    }
                    Timer::Hangup if call.state == UacState::Confirmed => {
                        call.state = UacState::Hangup;
                        call.generation += 1;
                        call.interval = T1;
                        let g = call.generation;
                        if let (Some(bye), Some(to)) = (&call.bye, target) {
                            self.out.push((key, bye.clone(), to));
                        }
                        self.stop_media(key);
                        self.schedule(now_ns + T1, key, Timer::ByeRetransmit, g);
                        self.schedule(now_ns + 64 * T1, key, Timer::ByeTimeout, g);
                    }
                    Timer::ByeRetransmit if call.state == UacState::Hangup => {
                        if let (Some(bye), Some(to)) = (&call.bye, target) {
                            self.out.push((key, bye.clone(), to));
                        }
                        call.interval = (call.interval * 2).min(T2);
                        let at = now_ns + call.interval;
                        self.schedule(at, key, Timer::ByeRetransmit, generation);
                    }
                    Timer::ByeTimeout if call.state == UacState::Hangup => {
                        self.end_uac(key, Some("bye-timeout"));
                    }
                    _ => {}
                }
            }
            Timer::OkRetransmit
            | Timer::AckTimeout
            | Timer::Forget
            | Timer::NgRetransmit
            | Timer::WebRtc
            | Timer::RegisterRetransmit
            | Timer::RegisterTimeout => {
                let Some(call) = self.uas.get_mut(&key) else {
                    return;
                };
                if call.generation != generation {
                    return;
                }
                match t {
                    Timer::OkRetransmit if !call.acked => {
                        self.out.push((key, call.last.clone(), call.src));
                        call.interval = (call.interval * 2).min(T2);
                        let at = now_ns + call.interval;
                        self.schedule(at, key, Timer::OkRetransmit, generation);
                    }
                    Timer::AckTimeout if !call.acked => {
                        // Timer H: the ACK never came.
                        call.ended = true;
                        self.report.fail("ack-timeout");
                        self.active = self.active.saturating_sub(1);
                        self.stop_media(key);
                        self.schedule(now_ns + 32_000_000_000, key, Timer::Forget, generation);
                    }
                    Timer::Forget if call.ended => {
                        if let Some(call) = self.uas.remove(&key) {
                            self.uas_index.remove(&call.call_id);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The UAS call with this Call-ID.
    fn uas_call(&mut self, cid: &[u8]) -> Option<&mut UasCall> {
        let key = self.uas_index.get(cid)?;
        self.uas.get_mut(key)
    }

    /// Handles one SIP datagram from `src`.
    pub fn on_sip(&mut self, now_ns: u64, buf: &[u8], src: SocketAddr) {
        if self.cfg.role == AgentRole::Ng {
            self.on_ng(now_ns, buf);
            return;
        }
        if self.cfg.role == AgentRole::Register {
            self.on_register_response(now_ns, buf);
            return;
        }
        let Some(msg) = sip::parse(buf) else {
            return;
        };
        if msg.is_request() {
            self.on_request(now_ns, &msg, src);
        } else {
            self.on_response(now_ns, &msg);
        }
    }

    fn call_number(&self, msg: &SipMessage<'_>) -> Option<u64> {
        let cid = msg.call_id().ok()?;
        let n: u64 = std::str::from_utf8(cid.split(|b| *b == b'-').next()?)
            .ok()?
            .parse()
            .ok()?;
        let call = self.uac.get(&n)?;
        (call.dialog.call_id.as_bytes() == cid).then_some(n)
    }

    fn on_response(&mut self, now_ns: u64, msg: &SipMessage<'_>) {
        let (Some(code), Ok(cseq)) = (msg.status_code(), msg.cseq()) else {
            return;
        };
        let Some(n) = self.call_number(msg) else {
            if cseq.method == Method::Invite && (200..300).contains(&code) {
                self.hang_up_abandoned(msg, cseq.seq);
            }
            return;
        };
        let target = self.cfg.target;
        let hold = self.hold_ns();
        let media = self.cfg.media;
        let Some(call) = self.uac.get_mut(&n) else {
            return;
        };
        match cseq.method {
            Method::Invite => {
                if code < 200 {
                    if call.state == UacState::Calling {
                        call.state = UacState::Proceeding;
                    }
                    if code == 180 && !call.ringing {
                        call.ringing = true;
                        let us = now_ns.saturating_sub(call.started_ns) / 1000;
                        report::record(&mut self.report.invite_to_180, us);
                    }
                } else if code < 300 {
                    if let Some(ack) = &call.ack {
                        // A retransmitted 2xx: the ACK again (§13.2.2.4).
                        if let Some(to) = target {
                            self.out.push((n, ack.clone(), to));
                        }
                        return;
                    }
                    let us = now_ns.saturating_sub(call.started_ns) / 1000;
                    self.report.record_setup(us);
                    let to = sip::to_value(msg).unwrap_or_default();
                    let route = sip::route_set(msg);
                    let remote = sip::contact_uri(msg)
                        .unwrap_or_else(|| call.dialog.request_uri.to_string());
                    let run = u64::from(self.cfg.run_id);
                    let ack = sip::in_dialog(
                        &call.dialog,
                        "ACK",
                        call.cseq,
                        &branch(n, run, "a"),
                        &remote,
                        &to,
                        &route,
                    );
                    let bye = sip::in_dialog(
                        &call.dialog,
                        "BYE",
                        call.cseq + 1,
                        &branch(n, run, "b"),
                        &remote,
                        &to,
                        &route,
                    );
                    if let Some(t) = target {
                        self.out.push((n, ack.clone(), t));
                    }
                    call.ack = Some(ack);
                    call.bye = Some(bye);
                    call.state = UacState::Confirmed;
                    call.generation += 1;
                    let g = call.generation;
                    let remote = media.then(|| sip::remote_media(msg.body())).flatten();
                    // SRTP both ways when the answer accepted the offered key.
                    let ours = self.cfg.srtp.zip(call.srtp_key.clone());
                    let keys = remote.as_ref().and_then(|r| {
                        let (suite, key) = ours.clone()?;
                        let theirs = r.crypto.iter().find(|c| c.tag == 1 && c.suite == suite)?;
                        Some((
                            SrtpParams::new(suite, key),
                            SrtpParams::new(suite, theirs.master.clone()),
                        ))
                    });
                    call.remote_ssrc = remote.as_ref().and_then(|r| r.ssrc);
                    self.schedule(now_ns + hold, n, Timer::Hangup, g);
                    if let Some(r) = remote {
                        let (tx, rx) = keys.unzip();
                        if let (Some(rx), Some(ssrc)) = (rx, r.ssrc)
                            && let Some(ctx) = SrtpContext::new(&rx)
                        {
                            self.srtp_rx.insert(ssrc, Box::new(ctx));
                        }
                        let ssrc = (n as u32).wrapping_mul(2).wrapping_add(1);
                        let pt = r.pt_of(self.cfg.codec).unwrap_or(self.own_codec().pt);
                        let quiet = self.cfg.talkers > 0
                            && self.cfg.rooms_of > 0
                            && n % self.cfg.rooms_of >= self.cfg.talkers;
                        let tone = self.cfg.tones().then_some((if quiet { 3 } else { 0 }, pt));
                        self.start_media(now_ns, n, ssrc, r.to, tx.as_ref(), tone);
                    }
                } else {
                    // §17.1.1.3: ACK the failure, on the INVITE's branch.
                    let to = sip::to_value(msg).unwrap_or_default();
                    let ack =
                        sip::ack_for_failure(&call.dialog, &call.invite_branch, call.cseq, &to);
                    if let Some(t) = target {
                        self.out.push((n, ack, t));
                    }
                    if !matches!(call.state, UacState::Calling | UacState::Proceeding) {
                        return;
                    }
                    // A digest challenge, answered once (RFC 3261 §22.2).
                    let (header, answer) = match code {
                        401 => (HeaderName::WwwAuthenticate, "Authorization"),
                        _ => (HeaderName::ProxyAuthenticate, "Proxy-Authorization"),
                    };
                    let creds = (call.cseq == 1 && matches!(code, 401 | 407))
                        .then_some(self.cfg.auth.as_ref())
                        .flatten()
                        .and_then(|(user, pw)| {
                            msg.header_lines(header).find_map(|ch| {
                                answer_challenge(
                                    ch,
                                    user,
                                    pw,
                                    "INVITE",
                                    &call.dialog.request_uri,
                                    &format!("{:x}", self.rng),
                                    1,
                                )
                            })
                        });
                    match creds {
                        Some(value) => {
                            call.cseq = 2;
                            call.state = UacState::Calling;
                            call.interval = T1;
                            call.generation += 1;
                            let g = call.generation;
                            call.invite_branch = branch(n, u64::from(self.cfg.run_id), "i2");
                            call.invite = sip::invite(
                                &call.dialog,
                                &call.invite_branch,
                                2,
                                Some((answer, &value)),
                                &call.offer,
                            );
                            if let Some(t) = target {
                                self.out.push((n, call.invite.clone(), t));
                            }
                            self.schedule(now_ns + T1, n, Timer::InviteRetransmit, g);
                            self.schedule(now_ns + 64 * T1, n, Timer::InviteTimeout, g);
                        }
                        None => self.end_uac(n, Some(&sip::failure_reason(code, msg))),
                    }
                }
            }
            Method::Bye if code >= 200 && call.state == UacState::Hangup => {
                if code < 300 {
                    self.end_uac(n, None);
                } else {
                    self.end_uac(n, Some(&format!("bye-{code}")));
                }
            }
            _ => {}
        }
    }

    /// A 2xx to an INVITE of this run whose call was already given up
    /// (it timed out): acknowledged and hung up at once (RFC 3261
    /// §13.2.2.4), so the far end does not keep a call and its media up
    /// that nobody measures.
    fn hang_up_abandoned(&mut self, msg: &SipMessage<'_>, cseq: u32) {
        let Some(target) = self.cfg.target else {
            return;
        };
        let (Ok(cid), Ok(from)) = (msg.call_id(), msg.from()) else {
            return;
        };
        let run = u64::from(self.cfg.run_id);
        let ours = std::str::from_utf8(cid).ok().and_then(|c| {
            let (n, rest) = c.split_once('-')?;
            let (r, _) = rest.split_once('@')?;
            (r.parse::<u64>().ok()? == run).then(|| n.parse::<u64>().ok())?
        });
        let Some(n) = ours else {
            return;
        };
        let dialog = Dialog {
            call_id: String::from_utf8_lossy(cid).into_owned(),
            from_tag: String::from_utf8_lossy(from.tag().unwrap_or_default()).into_owned(),
            request_uri: Arc::from(""),
            local: self.local.sip.clone(),
        };
        let to = sip::to_value(msg).unwrap_or_default();
        let route = sip::route_set(msg);
        let Some(remote) = sip::contact_uri(msg) else {
            return;
        };
        for (method, seq, what) in [("ACK", cseq, "la"), ("BYE", cseq + 1, "lb")] {
            let m = sip::in_dialog(
                &dialog,
                method,
                seq,
                &branch(n, run, what),
                &remote,
                &to,
                &route,
            );
            self.out.push((n, m, target));
        }
        // Each retransmission of the 2xx gets its ACK again (and the BYE,
        // a retransmission of the same transaction); the call counts once.
        if self.abandoned.insert(n) {
            self.report.abandoned_hung_up += 1;
        }
    }

    fn hold_ns(&mut self) -> u64 {
        let Hold { min_ms, max_ms } = self.cfg.hold;
        let ms = if max_ms > min_ms {
            min_ms + self.random() % (max_ms - min_ms + 1)
        } else {
            min_ms
        };
        ms * 1_000_000
    }

    fn on_request(&mut self, now_ns: u64, msg: &SipMessage<'_>, src: SocketAddr) {
        let Some(method) = msg.method() else {
            return;
        };
        let Ok(cid) = msg.call_id() else {
            return;
        };
        match method {
            Method::Invite if self.cfg.role == AgentRole::Uas => {
                if let Some(call) = self.uas_index.get(cid).and_then(|k| self.uas.get(k)) {
                    // A retransmitted INVITE: the last answer again.
                    if !call.acked {
                        self.out.push((call.key, call.last.clone(), src));
                    }
                    return;
                }
                self.report.attempt(now_ns);
                self.active += 1;
                let key = self.uas_keys;
                self.uas_keys += 1;
                let mut tag = Text::with_capacity(24);
                tag.x(key).s("-").x(u64::from(self.cfg.run_id));
                let tag = tag.into_string();
                let contact = Some(&*self.local.sip);
                let ringing = sip::response(msg, 180, "Ringing", Some(&tag), contact, "");
                let remote = sip::remote_media(msg.body());
                // An SRTP offer: its first usable key to receive with, a key
                // of our own for its suite to send with.
                let offered = remote.as_ref().and_then(|r| r.crypto.first().cloned());
                let own = offered
                    .as_ref()
                    .and_then(|c| Some((c, sdes::generate(c.suite, self.keys.as_ref())?)));
                let line = own.as_ref().map(|(c, k)| sdes::format(c.tag, k, c.suite));
                let ssrc = (key as u32).wrapping_mul(2);
                // Its codec at the payload type the offer gave it.
                let mut codec = self.own_codec();
                if let Some(pt) = remote.as_ref().and_then(|r| r.pt_of(codec.codec)) {
                    codec.pt = pt;
                }
                let answer = sip::sdp(key, &self.local, ssrc, line.as_deref(), &codec);
                let uas_pt = codec.pt;
                let ok = sip::response(msg, 200, "OK", Some(&tag), contact, &answer);
                self.out.push((key, ringing, src));
                self.out.push((key, ok.clone(), src));
                let srtp_tx = own.map(|(c, k)| SrtpParams::new(c.suite, k));
                let remote_ssrc = remote.as_ref().and_then(|r| r.ssrc);
                if let (Some(c), Some(ssrc)) = (&offered, remote_ssrc)
                    && let Some(ctx) = SrtpContext::new(&SrtpParams::new(c.suite, c.master.clone()))
                {
                    self.srtp_rx.insert(ssrc, Box::new(ctx));
                }
                let media_to = remote.filter(|_| self.cfg.media).map(|r| r.to);
                self.uas.insert(
                    key,
                    UasCall {
                        call_id: cid.into(),
                        src,
                        last: ok,
                        interval: T1,
                        acked: false,
                        ended: false,
                        media_to,
                        srtp_tx,
                        remote_ssrc,
                        key,
                        generation: 0,
                        pt: uas_pt,
                    },
                );
                self.uas_index.insert(cid.into(), key);
                self.schedule(now_ns + T1, key, Timer::OkRetransmit, 0);
                self.schedule(now_ns + 64 * T1, key, Timer::AckTimeout, 0);
            }
            Method::Ack => {
                let Some(call) = self.uas_call(cid) else {
                    return;
                };
                if call.acked || call.ended {
                    return;
                }
                call.acked = true;
                call.generation += 1;
                let (key, to, tx, pt) = (call.key, call.media_to, call.srtp_tx.clone(), call.pt);
                if let Some(to) = to {
                    let tone = self.cfg.tones().then_some((1, pt));
                    self.start_media(
                        now_ns,
                        key,
                        (key as u32).wrapping_mul(2),
                        to,
                        tx.as_ref(),
                        tone,
                    );
                }
            }
            Method::Bye => {
                let ok = sip::response(msg, 200, "OK", None, None, "");
                let flow = self.uas_index.get(cid).copied().unwrap_or(NO_CALL);
                self.out.push((flow, ok.clone(), src));
                if let Some(call) = self.uas_call(cid)
                    && !call.ended
                {
                    {
                        call.ended = true;
                        call.acked = true;
                        call.generation += 1;
                        call.last = ok;
                        let (key, g, rs) = (call.key, call.generation, call.remote_ssrc);
                        self.report.completed += 1;
                        self.active = self.active.saturating_sub(1);
                        self.stop_media(key);
                        if let Some(s) = rs {
                            self.srtp_rx.remove(&s);
                        }
                        // Kept a while to answer a retransmitted BYE (Timer J's span).
                        self.schedule(now_ns + 32_000_000_000, key, Timer::Forget, g);
                    }
                }
            }
            Method::Cancel => {
                let ok = sip::response(msg, 200, "OK", None, None, "");
                self.out.push((NO_CALL, ok, src));
            }
            _ => {
                // OPTIONS and anything else: 200, so the peer's checks pass.
                let ok = sip::response(msg, 200, "OK", None, None, "");
                self.out.push((NO_CALL, ok, src));
            }
        }
    }

    fn start_media(
        &mut self,
        now_ns: u64,
        key: u64,
        ssrc: u32,
        to: SocketAddr,
        srtp: Option<&SrtpParams>,
        tone: Option<(usize, u8)>,
    ) {
        let seq = (self.random() & 0x7fff) as u16;
        self.streams.insert(
            key,
            Stream {
                sender: Sender::new(ssrc, seq),
                to,
                srtp: srtp.and_then(SrtpContext::new).map(Box::new),
                tone,
                dtmf: self
                    .cfg
                    .dtmf
                    .filter(|_| self.cfg.role == AgentRole::Uac)
                    .map(|d| (now_ns + d.after_ms * 1_000_000, 0)),
            },
        );
        let slot = ((now_ns / 1_000_000) % 20) as usize;
        self.wheel[slot].push(key);
    }

    fn stop_media(&mut self, key: u64) {
        self.streams.remove(&key);
    }

    /// Sends, through `send`, every RTP packet due by `now_ns` (one per
    /// stream every 20 ms).
    pub fn media_due(&mut self, now_ns: u64, mut send: impl FnMut(&[u8], SocketAddr) -> bool) {
        let now_ms = now_ns / 1_000_000;
        let mut pkt = [0u8; 1500];
        let mut protected = [0u8; 1500 + 64];
        let tones = &self.tones;
        // Each millisecond's slot holds the streams that send in it.
        while self.wheel_ms < now_ms {
            self.wheel_ms += 1;
            let slot = (self.wheel_ms % 20) as usize;
            let mut keys = std::mem::take(&mut self.wheel[slot]);
            let dtmf = self.cfg.dtmf;
            keys.retain(|k| match self.streams.get_mut(k) {
                Some(s) => {
                    // A digit: ten frames (200 ms) of events or of its
                    // tone pair in place of the audio, then three end
                    // packets (RFC 4733 §2.5.1.4).
                    let digit = match (s.dtmf.as_mut(), dtmf) {
                        (Some((at, sent)), Some(d)) if now_ns >= *at && *sent < 13 => {
                            *sent += 1;
                            Some((d, *sent))
                        }
                        _ => None,
                    };
                    let len = match (digit, s.tone) {
                        (Some((d, n)), Some((_, pt))) if d.inband => match tones[2].as_deref() {
                            Some(frames) if n <= 10 => s.sender.next_tone(frames, pt, &mut pkt),
                            _ => 0,
                        },
                        (Some((d, n)), _) if !d.inband => s.sender.next_event(d.event, n, &mut pkt),
                        _ => 0,
                    };
                    let len = if len > 0 {
                        len
                    } else {
                        match s
                            .tone
                            .and_then(|(side, pt)| Some((tones[side].as_deref()?, pt)))
                        {
                            Some((frames, pt)) => s.sender.next_tone(frames, pt, &mut pkt),
                            None => {
                                let stamped: &mut [u8; PACKET] =
                                    match (&mut pkt[..PACKET]).try_into() {
                                        Ok(p) => p,
                                        Err(_) => return true,
                                    };
                                s.sender.next(now_ns, stamped);
                                PACKET
                            }
                        }
                    };
                    let out = match &mut s.srtp {
                        Some(ctx) => {
                            protected[..len].copy_from_slice(&pkt[..len]);
                            match ctx.protect_rtp(&mut protected, len) {
                                Ok(n) => &protected[..n],
                                Err(_) => return true,
                            }
                        }
                        None => &pkt[..len],
                    };
                    if send(out, s.to) {
                        self.report.rtp_sent += 1;
                    }
                    true
                }
                None => false,
            });
            self.wheel[slot] = keys;
        }
    }

    /// Accounts one datagram received on the RTP socket from `src`.
    pub fn on_rtp(&mut self, now_ns: u64, pkt: &[u8], src: SocketAddr) {
        if self.cfg.webrtc && self.on_webrtc(now_ns, pkt, src) {
            return;
        }
        // RTCP on the RTP port (a relay's own reports, RFC 5761 demux) is not
        // part of the load's streams.
        if rvoip_dataplane::media::rtp::looks_like_rtcp(pkt) {
            return;
        }
        // Plain RTP everywhere: read as it came.
        if !self.cfg.webrtc && self.cfg.srtp.is_none() && self.srtp_rx.is_empty() {
            self.account_rtp(now_ns, pkt);
            return;
        }
        // SRTP from a far end that announced its SSRC: unprotect first, into
        // room for a load packet and the largest SRTP trailer, or a tone
        // frame of any codec.
        let mut plain = [0u8; 1500];
        // A WebRTC leg's SRTP is told by where it comes from (the relay's
        // port for the leg): a transcoding relay sends under SSRCs of its own.
        let pkt = if self.cfg.webrtc {
            match self.webrtc_unprotect(pkt, src, &mut plain) {
                Some(p) => p,
                None => return,
            }
        } else {
            // A UAC offering SRTP reads only streams it has keys for: SRTP
            // that comes before the answer with the keys (a relay forwards
            // the far end's media as soon as it has it) is not read as
            // plain RTP.
            let ssrc = pkt
                .get(8..12)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            match ssrc {
                Some(ssrc) if pkt.len() <= plain.len() => match self.srtp_rx.get_mut(&ssrc) {
                    Some(ctx) => {
                        plain[..pkt.len()].copy_from_slice(pkt);
                        match ctx.unprotect_rtp(&mut plain, pkt.len()) {
                            Ok(n) => &plain[..n],
                            Err(_) => {
                                self.report.srtp_errors += 1;
                                return;
                            }
                        }
                    }
                    // SRTP of a call whose keys are not here yet (its answer
                    // is on its way) or are gone (it ended): nothing to read
                    // in it.
                    None if self.cfg.srtp.is_some() => return,
                    None => pkt,
                },
                _ => pkt,
            }
        };
        self.account_rtp(now_ns, pkt);
    }

    /// Accounts one RTP packet as the load reads it (unprotected).
    fn account_rtp(&mut self, now_ns: u64, pkt: &[u8]) {
        if self.cfg.tones() {
            self.on_tone(now_ns, pkt);
            return;
        }
        let Some((seq, ssrc, sent)) = media::read(pkt) else {
            return;
        };
        let r = self
            .receivers
            .entry(ssrc)
            .or_insert((Receiver::default(), now_ns));
        r.0.on_packet(seq, sent, now_ns);
        r.1 = now_ns;
        self.report.rtp_received += 1;
        self.report
            .record_transit(now_ns.saturating_sub(sent) / 1000);
    }

    /// Tone mode: a received packet, whose payload the relay may have
    /// re-encoded (no send stamp): loss and order from its sequence
    /// numbers, jitter from its timestamps, and for the first few streams
    /// the audio, decoded and kept to be judged.
    fn on_tone(&mut self, now_ns: u64, pkt: &[u8]) {
        let Ok(h) = rvoip_dataplane::media::rtp::parse_rtp(pkt) else {
            return;
        };
        let own = self.own_codec();
        let codec = if h.payload_type == own.pt {
            self.cfg.codec
        } else {
            self.cfg.answer_codec
        };
        let ssrc = h.ssrc.0;
        let expect = match self.cfg.role {
            AgentRole::Uac => media::CALLEE_TONE,
            AgentRole::Ng if self.cfg.codec != self.cfg.answer_codec => {
                if h.payload_type == own.pt {
                    media::CALLEE_TONE
                } else {
                    media::CALLER_TONE
                }
            }
            AgentRole::Ng if ssrc % 2 == 1 => media::CALLEE_TONE,
            _ => media::CALLER_TONE,
        };
        let judged = self.heard.values().filter(|h| h.audio.is_some()).count();
        let want_audio = judged < self.cfg.audio_check;
        let listen = match self.cfg.role {
            AgentRole::Uac => self.cfg.listen.clone(),
            _ => Listen {
                expect: vec![expect],
                ..Listen::default()
            },
        };
        let heard = self.heard.entry(ssrc).or_insert_with(|| Heard {
            first: (h.timestamp, now_ns),
            clock: rvoip_codecs::Format::new(codec, 0).clock,
            audio: want_audio
                .then(|| AudioCheck::new(codec, listen).ok())
                .flatten(),
        });
        let units = h.timestamp.wrapping_sub(heard.first.0);
        let sent = heard.first.1 + u64::from(units) * 1_000_000_000 / u64::from(heard.clock.max(1));
        if let Some(a) = &mut heard.audio {
            let end = (h.payload_offset + h.payload_len).min(pkt.len());
            a.on_payload(&pkt[h.payload_offset.min(end)..end]);
        }
        let r = self
            .receivers
            .entry(ssrc)
            .or_insert((Receiver::default(), now_ns));
        r.0.on_packet(h.seq, sent, now_ns);
        r.1 = now_ns;
        self.report.rtp_received += 1;
        self.report.rtp_octets_received += pkt.len() as u64;
    }

    /// At the end of a run: what the calls still up (the run was stopped
    /// before they ended) received is counted apart, neither completed nor
    /// failed; then every stream is folded into the report.
    pub fn finish(&mut self, now_ns: u64) {
        let up: Vec<u32> = self.uac.values().filter_map(|c| c.remote_ssrc).collect();
        for ssrc in up {
            if let Some((r, _)) = self.receivers.remove(&ssrc) {
                self.report.rtp_received -= r.received.min(self.report.rtp_received);
                self.report.rtp_calls_still_up += r.received;
            }
        }
        self.fold_streams(now_ns, true);
    }

    /// Folds the statistics of streams silent for 2 s (all of them with
    /// `all`) into the report, freeing their state.
    pub fn fold_streams(&mut self, now_ns: u64, all: bool) {
        let report = &mut self.report;
        let heard = &mut self.heard;
        self.receivers.retain(|ssrc, (r, last)| {
            if all || now_ns.saturating_sub(*last) > 2_000_000_000 {
                report.rtp_lost += r.lost();
                report.rtp_out_of_order += r.out_of_order;
                report::record(&mut report.jitter, (r.jitter_ns / 1000.0) as u64);
                if let Some(a) = heard.remove(ssrc).and_then(|h| h.audio) {
                    report.record_audio(a.clear(), a.before_dbov());
                }
                false
            } else {
                true
            }
        });
    }

    /// Lost packets so far in live streams (for the progress line).
    pub fn live_loss(&self) -> u64 {
        self.receivers.values().map(|(r, _)| r.lost()).sum()
    }
}
