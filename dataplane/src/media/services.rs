//! The media server inside the relay: what a worker does to a call's media
//! beyond relaying it — prompts played to a party, DTMF sent from a party,
//! a party's DTMF or media blocked or silenced, packets tapped for
//! recording, and calls the media server answers itself (echo, IVR,
//! conference rooms). Sans-IO, owned by the worker's [`Relay`](super::relay::Relay),
//! no allocation per packet once a service is set up.
//!
//! A line's services sit beside its relay state ([`LineServices`]). What a
//! party hears from the media server leaves through the relay's schedule,
//! as the transcoding stage's packets do; the packets it replaces are
//! consumed. A call the media server answers ([`Terminal`]) has its caller
//! on side A and the media server in place of side B: its audio goes
//! through a jitter buffer and a decoder, and what the caller hears is
//! made per 20 ms frame — its own voice (echo), a prompt, silence, or, in a
//! room ([`Room`]), the mix of the others.

use std::sync::Arc;

use rvoip_codecs::dtmf::{Detected, DtmfDetector, TelephoneEvent};
use rvoip_codecs::resample::Resampler;
use rvoip_codecs::{Codec, CodecError, Decoder, Encoder, Format};
use rvoip_mixer::{Heard, MemberId, MemberSettings, Mixer};

use super::prompt::Prompt;
use super::relay::{SessionId, Side};
use super::rtp::{RtpHeader, Ssrc, write_rtp_header};
use super::transcode::{JitterBuffer, LegCodec, MAX_PAYLOAD, MAX_PCM, Pull, on_grid};

/// Frame time of everything the media server makes, ns.
pub const FRAME_NS: u64 = 20_000_000;

/// What a party's media is subjected to, by the side that sends it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Blocking {
    /// Its RFC 4733 events are dropped.
    pub dtmf: bool,
    /// All its RTP is dropped.
    pub media: bool,
    /// Its audio is replaced by silence.
    pub silence: bool,
}

/// Something the media server noticed, for the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MediaEvent {
    /// A DTMF digit from a party: RFC 4733 or detected in its audio.
    Dtmf {
        /// The party's side: 0 A, 1 B.
        side: u8,
        /// The event (0-9, 10 `*`, 11 `#`, 12-15 A-D).
        event: u8,
        /// Found in the audio (not RFC 4733).
        inband: bool,
    },
    /// A prompt played to its end (all its repeats).
    PlayEnded {
        /// The side that heard it.
        side: u8,
    },
}

/// A packet copied for a recording, handed to the recorder off the
/// packet path.
#[derive(Debug, Clone)]
pub struct RecPacket {
    /// The recording.
    pub rec: u32,
    /// The side that sent it: 0 A, 1 B.
    pub side: u8,
    /// Arrival, worker ns.
    pub arrival_ns: u64,
    /// RTP header fields.
    pub pt: u8,
    /// RTP timestamp.
    pub ts: u32,
    /// SSRC.
    pub ssrc: u32,
    /// Payload length.
    pub len: u16,
    /// Payload.
    pub payload: [u8; MAX_PAYLOAD],
}

/// The payload type of a [`RecPacket`] that carries a room's mix as 16-bit
/// little-endian PCM (its rate in `ssrc`, its sample index in `ts`).
pub const RAW_PCM: u8 = 0xff;

/// A prompt being played towards one side.
#[derive(Debug)]
struct Playback {
    prompt: Arc<Prompt>,
    next: usize,
    /// Plays left after this one (`u32::MAX`: until stopped).
    repeats_left: u32,
    /// Stops when the listener presses a digit.
    stop_on_dtmf: bool,
}

/// An RFC 4733 digit being sent towards one side.
#[derive(Debug, Clone, Copy)]
struct EventPlay {
    event: u8,
    volume: u8,
    /// Its length, timestamp units.
    total: u32,
    /// Sent so far, timestamp units.
    sent: u32,
    start_ts: u32,
    /// End packets sent (three, RFC 4733 §2.5.1.4).
    ends: u8,
}

/// What the media server sends towards one side, in place of what the
/// other side sends.
#[derive(Debug)]
pub(super) struct Injection {
    play: Option<Playback>,
    event: Option<EventPlay>,
    ssrc: Ssrc,
    seq: u16,
    ts: u32,
    marker: bool,
    pub(super) due_ns: Option<u64>,
    /// When the last packet left (ns), so a new spurt's timestamps move on
    /// by the time in between (RFC 3550 §5.1).
    last_sent_ns: Option<u64>,
}

impl Injection {
    fn new(ssrc: Ssrc) -> Injection {
        Injection {
            play: None,
            event: None,
            ssrc,
            seq: (ssrc.0 >> 16) as u16,
            ts: ssrc.0.rotate_left(13),
            marker: true,
            due_ns: None,
            last_sent_ns: None,
        }
    }

    /// Whether it replaces the other side's audio now.
    pub(super) fn active(&self) -> bool {
        self.play.is_some() || self.event.is_some()
    }

    fn start(&mut self, now_ns: u64, clock: u32) {
        if self.due_ns.is_none() {
            if let Some(at) = self.last_sent_ns {
                let gone = now_ns.saturating_sub(at) / 1000 * u64::from(clock) / 1_000_000;
                self.ts = self.ts.wrapping_add(gone as u32);
            }
            self.marker = true;
            self.due_ns = Some(on_grid(now_ns));
        }
    }

    fn header(&mut self, out: &mut [u8], pt: u8, ts: u32, marker: bool) -> Option<()> {
        let mut h = [0u8; 12];
        write_rtp_header(&mut h, marker, pt, self.seq, ts, self.ssrc);
        self.seq = self.seq.wrapping_add(1);
        out.get_mut(..12)?.copy_from_slice(&h);
        Some(())
    }

    /// The next frame of a prompt being played, into `out`; events to
    /// report go to `events`.
    fn produce_play(
        &mut self,
        pt: u8,
        out: &mut [u8],
        side: Side,
        events: &mut EventSink,
    ) -> Option<usize> {
        let p = self.play.as_mut()?;
        if p.next >= p.prompt.frames() {
            if p.repeats_left == 0 || p.prompt.frames() == 0 {
                self.play = None;
                events.push(MediaEvent::PlayEnded {
                    side: side.index() as u8,
                });
                return None;
            }
            if p.repeats_left != u32::MAX {
                p.repeats_left -= 1;
            }
            p.next = 0;
        }
        let frame = p.prompt.frame(p.next);
        let units = p.prompt.units;
        p.next += 1;
        let len = 12 + frame.len();
        out.get_mut(12..len)?.copy_from_slice(frame);
        let (ts, marker) = (self.ts, self.marker);
        self.header(out, pt, ts, marker)?;
        self.marker = false;
        self.ts = self.ts.wrapping_add(units);
        Some(len)
    }

    /// The next RFC 4733 packet of the digit being sent.
    fn produce_event(&mut self, te_pt: u8, frame_units: u32, out: &mut [u8]) -> Option<usize> {
        let e = self.event.as_mut()?;
        let first = e.sent == 0;
        e.sent = (e.sent + frame_units).min(e.total);
        let end = e.sent >= e.total;
        let payload = TelephoneEvent {
            event: e.event,
            end,
            volume: e.volume,
            duration: e.sent.min(0xffff) as u16,
        }
        .write();
        let (start, total) = (e.start_ts, e.total);
        if end {
            e.ends += 1;
            if e.ends >= 3 {
                self.event = None;
                // The audio after the digit starts at its end.
                self.ts = start.wrapping_add(total);
            }
        }
        out.get_mut(12..16)?.copy_from_slice(&payload);
        self.header(out, te_pt, start, first)?;
        Some(16)
    }
}

/// Event reports waiting for the control plane (bounded), each with the
/// session it came from.
#[derive(Debug, Default)]
pub(super) struct EventSink {
    /// The session being handled.
    pub(super) current: SessionId,
    pub(super) events: Vec<(SessionId, MediaEvent)>,
}

impl EventSink {
    fn push(&mut self, e: MediaEvent) {
        if self.events.len() < 256 {
            self.events.push((self.current, e));
        }
    }
}

/// A service order for one media line, as the worker carries it out.
#[derive(Debug, Clone)]
pub enum ServiceOp {
    /// What the sides speak (`None` leaves a side as it is).
    Audio([Option<LegCodec>; 2]),
    /// A prompt towards `to`.
    Play {
        /// The side that hears it.
        to: Side,
        /// The prompt, encoded for that side.
        prompt: Arc<Prompt>,
        /// Times (0: until stopped).
        repeat: u32,
        /// A digit from the listener stops it.
        stop_on_dtmf: bool,
    },
    /// Stops the prompt towards `to`.
    StopPlay {
        /// The side that heard it.
        to: Side,
    },
    /// An RFC 4733 digit towards `to`.
    Event {
        /// The side that receives it.
        to: Side,
        /// The event.
        event: u8,
        /// Its length, ms.
        duration_ms: u32,
        /// Its level, −dBm0.
        volume: u8,
    },
    /// What is blocked of what `from` sends.
    Block {
        /// The sending side.
        from: Side,
        /// What is blocked.
        blocking: Blocking,
        /// A silent payload of its codec, for silencing.
        silence: Option<Box<[u8]>>,
    },
    /// Packets copied to recording `Some(id)`, or no longer.
    Record(Option<u32>),
    /// Every packet of the session, both ways, as on the wire, copied to
    /// capture `Some(id)` (`rvoip ctl capture`), or no longer.
    Capture(Option<u32>),
    /// The media server answers in place of side B.
    Terminate {
        /// What the caller (side A) speaks.
        audio: LegCodec,
        /// What it hears first.
        mode: LocalMode,
    },
    /// A media server call moves to another mode (room, echo, silence).
    Mode(LocalMode),
    /// The mix of room `room` (of this worker) goes to recording `Some(id)`,
    /// or no longer.
    RecordRoom {
        /// The room.
        room: String,
        /// The recording.
        rec: Option<u32>,
    },
}

/// How a media-server call's audio is answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LocalMode {
    /// The caller hears silence (and prompts played to it).
    Silence,
    /// The caller hears itself.
    Echo,
    /// The caller is in a conference room.
    Room(String),
}

/// The media server's end of a call it answered: the caller is side A.
#[derive(Debug)]
pub struct Terminal {
    /// What the caller speaks.
    pub audio: LegCodec,
    jb: JitterBuffer,
    decoder: Decoder,
    encoder: Encoder,
    pcm_rate: u32,
    frame: usize,
    pcm_in: Box<[i16]>,
    resampled: Box<[i16]>,
    detector: DtmfDetector,
    /// Timestamp of the last RFC 4733 event reported.
    last_event_ts: Option<u32>,
    /// Whether input has arrived since the last frame.
    pub(super) mode: LocalMode,
    /// The room it is in: (room, member).
    pub(super) member: Option<(u32, MemberId)>,
    to_mix: Option<Resampler>,
    from_mix: Option<Resampler>,
    mix_rate: u32,
    /// Frames with no input in a row.
    idle: u32,
    /// Opus frames too small to hold speech, not decoded.
    pub quiet: u64,
}

fn decoder_for(leg: &LegCodec, rate: u32) -> Result<Decoder, CodecError> {
    let mut d = Decoder::new(leg.format.codec, rate)?;
    d.set_octet_align(leg.octet_align);
    Ok(d)
}

fn encoder_for(leg: &LegCodec, rate: u32) -> Result<Encoder, CodecError> {
    let mut e = Encoder::new(leg.format.codec, rate, &leg.opus)?;
    e.set_octet_align(leg.octet_align);
    Ok(e)
}

/// The PCM rate the media server runs a codec at: its own; Opus at
/// 16 kHz (wideband, what voice needs: libopus decodes and encodes at 16 kHz
/// for about half its 48 kHz cost, and a room of Opus callers mixes a
/// third of the samples).
pub fn pcm_rate_of(leg: &LegCodec) -> u32 {
    leg.format.codec.pcm_rate(leg.format.clock, 16_000)
}

/// Opus frames of at most this many octets carry no speech: a silent
/// frame, a DTX frame, or comfort noise (the smallest SILK speech frame,
/// 6 kbit/s at 20 ms, is 15 octets). They are not decoded for the mix.
const OPUS_QUIET_MAX: usize = 12;

impl Terminal {
    /// The media server's end towards a caller speaking `audio`.
    pub fn new(audio: LegCodec, mode: LocalMode) -> Result<Terminal, CodecError> {
        let pcm_rate = pcm_rate_of(&audio);
        let frame = (pcm_rate / 50) as usize;
        Ok(Terminal {
            audio,
            jb: JitterBuffer::new(),
            decoder: decoder_for(&audio, pcm_rate)?,
            encoder: encoder_for(&audio, pcm_rate)?,
            pcm_rate,
            frame,
            pcm_in: vec![0; MAX_PCM].into_boxed_slice(),
            resampled: vec![0; MAX_PCM].into_boxed_slice(),
            detector: DtmfDetector::new(pcm_rate),
            last_event_ts: None,
            mode,
            member: None,
            to_mix: None,
            from_mix: None,
            mix_rate: pcm_rate,
            idle: 0,
            quiet: 0,
        })
    }

    /// Takes a packet from the caller: audio into the jitter buffer, RFC
    /// 4733 events reported.
    fn ingest(
        &mut self,
        now_ns: u64,
        h: &RtpHeader,
        payload: &[u8],
        events: &mut EventSink,
    ) -> Option<u8> {
        if Some(h.payload_type) == self.audio.te_pt {
            let e = TelephoneEvent::parse(payload)?;
            if self.last_event_ts != Some(h.timestamp) {
                self.last_event_ts = Some(h.timestamp);
                events.push(MediaEvent::Dtmf {
                    side: 0,
                    event: e.event,
                    inband: false,
                });
                return Some(e.event);
            }
            return None;
        }
        if h.payload_type != self.audio.format.pt {
            return None;
        }
        let clock = u64::from(self.audio.format.clock.max(1));
        let arrival_units = ((now_ns / 1000) * clock / 1_000_000) as u32;
        self.jb.insert(h.timestamp, arrival_units, payload);
        self.idle = 0;
        None
    }

    /// The caller's next 20 ms at the codec's rate (decoded, concealed or
    /// silence), with in-band digits reported.
    fn pull(&mut self, events: &mut EventSink) -> (&[i16], Option<u8>) {
        let n = self.frame.min(MAX_PCM);
        let got = match self.jb.pull() {
            Pull::Frame(i)
                if self.audio.format.codec == Codec::Opus
                    && usize::from(self.jb.slots[i].len) <= OPUS_QUIET_MAX =>
            {
                // Silence: not decoded, nothing to mix.
                let units = self.jb.frame_ts.max(self.audio.format.clock / 50);
                self.jb.release(i);
                self.jb.frame_ts = units;
                self.jb.next_ts = self.jb.next_ts.wrapping_add(units);
                self.quiet += 1;
                None
            }
            Pull::Frame(i) => {
                let slot = &self.jb.slots[i];
                let r = self
                    .decoder
                    .decode(&slot.data[..usize::from(slot.len)], &mut self.pcm_in);
                let units = self.jb.frame_ts.max(self.audio.format.clock / 50);
                self.jb.release(i);
                self.jb.frame_ts = units;
                self.jb.next_ts = self.jb.next_ts.wrapping_add(units);
                r.ok()
            }
            Pull::Lost => {
                let step = self.jb.frame_ts.max(self.audio.format.clock / 50);
                self.jb.next_ts = self.jb.next_ts.wrapping_add(step);
                Some(self.decoder.conceal(None, &mut self.pcm_in[..n]))
            }
            Pull::Empty => {
                self.idle += 1;
                if self.idle > 3 {
                    self.jb.started = false;
                }
                None
            }
        };
        match got {
            Some(m) if m >= n => {}
            Some(m) => self.pcm_in[m..n].fill(0),
            None => self.pcm_in[..n].fill(0),
        }
        // In-band digits are listened for where a menu may want them, not
        // in rooms (their RFC 4733 events are still reported).
        let mut digit = None;
        if self.member.is_none() {
            self.detector.feed(&self.pcm_in[..n], |d| {
                if let Detected::Began { event, .. } = d {
                    digit = Some(event);
                }
            });
        }
        if let Some(event) = digit {
            events.push(MediaEvent::Dtmf {
                side: 0,
                event,
                inband: true,
            });
        }
        (&self.pcm_in[..n], digit)
    }

    /// Encodes `pcm` (codec rate) as a payload into `out`.
    fn encode(&mut self, pcm_is_input: bool, out: &mut [u8]) -> usize {
        let n = self.frame.min(MAX_PCM);
        if !pcm_is_input {
            self.pcm_in[..n].fill(0);
        }
        self.encoder.encode(&self.pcm_in[..n], out).unwrap_or(0)
    }

    fn units(&self) -> u32 {
        Format::rtp_units(&self.audio.format, self.frame, self.pcm_rate)
    }

    /// Sets the resamplers for a room mixing at `rate`.
    fn set_mix_rate(&mut self, rate: u32) {
        if self.mix_rate == rate && (self.to_mix.is_some() || rate == self.pcm_rate) {
            return;
        }
        self.mix_rate = rate;
        if rate == self.pcm_rate {
            self.to_mix = None;
            self.from_mix = None;
        } else {
            self.to_mix = Resampler::new(self.pcm_rate, rate).ok();
            self.from_mix = Resampler::new(rate, self.pcm_rate).ok();
        }
    }
}

/// One media line's services.
#[derive(Debug)]
pub struct LineServices {
    /// What side A and side B speak (both ways), when known.
    pub audio: [Option<LegCodec>; 2],
    /// Blocking, by the side that sends.
    pub block: [Blocking; 2],
    /// A silent 20 ms payload in each side's codec (silencing).
    pub(super) silence: [Option<Box<[u8]>>; 2],
    /// What the media server sends towards side A, side B.
    pub(super) inject: [Injection; 2],
    /// The recording the line's packets are copied to.
    pub record: Option<u32>,
    /// The media server answering in place of side B.
    pub(super) terminal: Option<Box<Terminal>>,
    /// When each direction is scheduled.
    pub(super) scheduled: [Option<u64>; 2],
    /// Timestamp of the last RFC 4733 event each side sent (reported once).
    last_event_ts: [Option<u32>; 2],
}

impl LineServices {
    /// No service yet; rvoip's streams towards A and B carry `ssrcs`.
    pub fn new(ssrcs: [Ssrc; 2]) -> LineServices {
        LineServices {
            audio: [None, None],
            block: [Blocking::default(); 2],
            silence: [None, None],
            inject: [Injection::new(ssrcs[0]), Injection::new(ssrcs[1])],
            record: None,
            terminal: None,
            scheduled: [None, None],
            last_event_ts: [None, None],
        }
    }

    /// Plays `prompt` towards `to`, `repeat` times (0: until stopped).
    pub fn play(
        &mut self,
        to: Side,
        prompt: Arc<Prompt>,
        repeat: u32,
        stop_on_dtmf: bool,
        now_ns: u64,
    ) {
        let clock = prompt.clock;
        let inj = &mut self.inject[to.index()];
        inj.play = Some(Playback {
            prompt,
            next: 0,
            repeats_left: if repeat == 0 { u32::MAX } else { repeat - 1 },
            stop_on_dtmf,
        });
        inj.start(now_ns, clock);
    }

    /// Stops what is played towards `to`.
    pub fn stop_play(&mut self, to: Side) {
        self.inject[to.index()].play = None;
    }

    /// Whether a prompt plays towards `to`.
    pub fn playing(&self, to: Side) -> bool {
        self.inject[to.index()].play.is_some()
    }

    /// Sends DTMF `event` towards `to` as RFC 4733 events (its side
    /// negotiated telephone-event).
    pub fn send_event(&mut self, to: Side, event: u8, duration_ms: u32, volume: u8, now_ns: u64) {
        let Some(leg) = self.audio[to.index()] else {
            return;
        };
        let clock = leg.format.clock.max(8000);
        let inj = &mut self.inject[to.index()];
        inj.start(now_ns, clock);
        inj.event = Some(EventPlay {
            event,
            volume: volume.min(63),
            total: (u64::from(duration_ms.clamp(40, 5000)) * u64::from(clock) / 1000) as u32,
            sent: 0,
            start_ts: inj.ts,
            ends: 0,
        });
    }

    /// Answers in place of side B with `terminal`.
    pub fn set_terminal(&mut self, terminal: Option<Box<Terminal>>) {
        self.terminal = terminal;
    }

    /// The media server's end, if it answers this line.
    pub fn terminal(&self) -> Option<&Terminal> {
        self.terminal.as_deref()
    }

    /// The terminal's end, mutable.
    pub fn terminal_mut(&mut self) -> Option<&mut Terminal> {
        self.terminal.as_deref_mut()
    }

    /// When the direction towards `to` is next due.
    pub(super) fn due(&self, to: Side) -> Option<u64> {
        let inj = &self.inject[to.index()];
        if let Some(t) = &self.terminal
            && to == Side::A
        {
            // A terminal not in a room makes a frame every 20 ms; in a
            // room, the room does.
            if t.member.is_none() {
                return inj.due_ns;
            }
        }
        if inj.active() { inj.due_ns } else { None }
    }

    /// Starts the terminal's own frame clock.
    pub(super) fn start_terminal(&mut self, now_ns: u64) {
        let clock = self
            .terminal
            .as_ref()
            .map_or(8000, |t| t.audio.format.clock);
        self.inject[0].start(now_ns, clock);
    }

    /// A packet from side `from` (RTP, valid, SRTP removed): whether the
    /// relay passes it on (`false`: consumed by a service or blocked);
    /// `silenced` when its payload was replaced by silence.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_rtp(
        &mut self,
        from: Side,
        now_ns: u64,
        h: &RtpHeader,
        buf: &mut [u8],
        len: usize,
        events: &mut EventSink,
        counters: &mut ServiceCounters,
    ) -> Verdict {
        let f = from.index();
        let te = self.audio[f].and_then(|a| a.te_pt);
        let is_event = te == Some(h.payload_type);
        if let Some(t) = &mut self.terminal
            && from == Side::A
        {
            let payload = &buf[h.payload_offset.min(len)..len];
            if t.ingest(now_ns, h, payload, events).is_some() {
                self.stop_on_digit();
            }
            counters.terminated_in += 1;
            return Verdict::Consumed;
        }
        if is_event {
            // Reported as they pass, once per event.
            let payload = &buf[h.payload_offset.min(len)..len];
            if let Some(e) = TelephoneEvent::parse(payload)
                && self.last_event_ts[f] != Some(h.timestamp)
            {
                self.last_event_ts[f] = Some(h.timestamp);
                events.push(MediaEvent::Dtmf {
                    side: f as u8,
                    event: e.event,
                    inband: false,
                });
            }
            if self.block[f].dtmf || self.block[f].media {
                counters.blocked += 1;
                return Verdict::Blocked;
            }
        } else if self.block[f].media {
            counters.blocked += 1;
            return Verdict::Blocked;
        } else if self.block[f].silence {
            let body = h.payload_offset.min(len);
            match self.audio[f].map(|a| a.format.codec) {
                Some(Codec::Pcmu) => buf[body..len].fill(0xff),
                Some(Codec::Pcma) => buf[body..len].fill(0xd5),
                Some(Codec::L16) => buf[body..len].fill(0),
                _ => match &self.silence[f] {
                    Some(s) if body + s.len() <= buf.len() => {
                        buf[body..body + s.len()].copy_from_slice(s);
                        counters.silenced += 1;
                        return Verdict::Resized(body + s.len());
                    }
                    _ => {
                        counters.blocked += 1;
                        return Verdict::Blocked;
                    }
                },
            }
            counters.silenced += 1;
        }
        let to = from.other();
        if self.inject[to.index()].active() {
            counters.replaced += 1;
            return Verdict::Consumed;
        }
        Verdict::Pass
    }

    /// Makes the next packet towards `to` (the terminal's frame, a prompt
    /// frame, or a digit's event) into `out`.
    pub(super) fn produce(
        &mut self,
        to: Side,
        now_ns: u64,
        out: &mut [u8],
        events: &mut EventSink,
        counters: &mut ServiceCounters,
    ) -> Option<usize> {
        let i = to.index();
        let due = self.inject[i].due_ns?;
        if now_ns < due {
            return None;
        }
        let next = due + FRAME_NS;
        self.inject[i].due_ns = Some(if now_ns > next + 3 * FRAME_NS {
            on_grid(now_ns + FRAME_NS)
        } else {
            next
        });
        // The terminal's input is consumed every frame whatever is sent.
        let mut echo = None;
        if let Some(t) = &mut self.terminal
            && to == Side::A
            && t.member.is_none()
        {
            let (_, digit) = t.pull(events);
            if digit.is_some() && self.inject[0].play.as_ref().is_some_and(|p| p.stop_on_dtmf) {
                self.inject[0].play = None;
            }
            echo = Some(t.mode == LocalMode::Echo);
        }
        let audio = self.audio[i];
        let inj = &mut self.inject[i];
        let made = if inj.event.is_some() {
            let te = audio.and_then(|a| a.te_pt);
            let units = audio.map_or(160, |a| a.format.clock / 50);
            match te {
                Some(pt) => inj.produce_event(pt, units, out),
                None => {
                    inj.event = None;
                    None
                }
            }
        } else if inj.play.is_some() {
            let pt = audio.map_or(0, |a| a.format.pt);
            let r = inj.produce_play(pt, out, to, events);
            if r.is_some() {
                counters.prompt_frames += 1;
            }
            r
        } else if let (Some(echo), Some(t)) = (echo, self.terminal.as_deref_mut()) {
            let n = t.encode(echo, out.get_mut(12..)?);
            let units = t.units();
            let (pt, ts, marker) = (t.audio.format.pt, inj.ts, inj.marker);
            inj.marker = false;
            inj.ts = inj.ts.wrapping_add(units);
            if n == 0 {
                return None;
            }
            inj.header(out, pt, ts, marker)?;
            counters.terminal_frames += 1;
            Some(12 + n)
        } else {
            None
        };
        let inj = &mut self.inject[i];
        if made.is_some() {
            inj.last_sent_ns = Some(now_ns);
        }
        if !inj.active()
            && self
                .terminal
                .as_ref()
                .is_none_or(|t| to != Side::A || t.member.is_some())
        {
            inj.due_ns = None;
        }
        made
    }
}

/// What the services decide for a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Relay it (perhaps silenced in place).
    Pass,
    /// Relay it; its length is now this (a silent payload of another size).
    Resized(usize),
    /// Taken by a service.
    Consumed,
    /// Dropped by blocking.
    Blocked,
}

/// Counters of the media services of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Prompt frames sent.
    pub prompt_frames: u64,
    /// Frames the media server made for calls it answered (echo, silence).
    pub terminal_frames: u64,
    /// Packets into calls the media server answered.
    pub terminated_in: u64,
    /// Packets dropped by blocking.
    pub blocked: u64,
    /// Packets silenced.
    pub silenced: u64,
    /// Packets replaced by what the media server played.
    pub replaced: u64,
    /// Packets copied to recordings.
    pub recorded: u64,
    /// Packets a full recorder queue lost.
    pub record_dropped: u64,
    /// Packets copied to per-call captures (`rvoip ctl capture`).
    pub captured: u64,
    /// Packets a full capture queue lost.
    pub capture_dropped: u64,
    /// Room frames mixed.
    pub room_frames: u64,
    /// Frames sent to room members.
    pub room_sent: u64,
    /// Encoded frames shared by several room members.
    pub room_shared: u64,
}

impl ServiceCounters {
    /// Adds `o`'s counts.
    pub fn add(&mut self, o: &ServiceCounters) {
        self.prompt_frames += o.prompt_frames;
        self.terminal_frames += o.terminal_frames;
        self.terminated_in += o.terminated_in;
        self.blocked += o.blocked;
        self.silenced += o.silenced;
        self.replaced += o.replaced;
        self.recorded += o.recorded;
        self.record_dropped += o.record_dropped;
        self.captured += o.captured;
        self.capture_dropped += o.capture_dropped;
        self.room_frames += o.room_frames;
        self.room_sent += o.room_sent;
        self.room_shared += o.room_shared;
    }
}

/// One encoded frame shared by every room member that hears the common
/// mix in the same codec.
#[derive(Debug)]
struct Shared {
    key: (Codec, u32, bool, i32),
    encoder: Encoder,
    from_mix: Option<Resampler>,
    pcm: Box<[i16]>,
    made: u64,
    len: usize,
    payload: Box<[u8]>,
}

/// A room member: where its line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RoomMember {
    pub(super) session: SessionId,
    pub(super) media: u16,
    pub(super) generation: u32,
    pub(super) member: MemberId,
}

/// A conference room owned by a worker.
#[derive(Debug)]
pub struct Room {
    /// Its name.
    pub name: String,
    pub(super) mixer: Mixer,
    pub(super) members: Vec<RoomMember>,
    pub(super) due_ns: Option<u64>,
    shared: Vec<Shared>,
    frame_no: u64,
    mixbuf: Box<[i16]>,
    /// The recording its mix goes to.
    pub(super) record: Option<u32>,
}

impl Room {
    /// An empty room.
    pub fn new(name: String) -> Room {
        Room {
            name,
            mixer: Mixer::new(),
            members: Vec::new(),
            due_ns: None,
            shared: Vec::new(),
            frame_no: 0,
            mixbuf: vec![0; MAX_PCM].into_boxed_slice(),
            record: None,
        }
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adds a line's terminal.
    pub(super) fn join(&mut self, at: (SessionId, u16, u32), t: &mut Terminal, now_ns: u64) {
        let member = self.mixer.add(t.pcm_rate, MemberSettings::default());
        t.member = Some((0, member));
        self.members.push(RoomMember {
            session: at.0,
            media: at.1,
            generation: at.2,
            member,
        });
        if self.due_ns.is_none() {
            self.due_ns = Some(on_grid(now_ns + FRAME_NS));
        }
        self.shared.clear();
    }

    /// Takes a line's terminal out.
    pub(super) fn leave(&mut self, session: SessionId, media: u16) -> Option<MemberId> {
        let i = self
            .members
            .iter()
            .position(|m| m.session == session && m.media == media)?;
        let m = self.members.swap_remove(i);
        self.mixer.remove(m.member);
        self.shared.clear();
        if self.members.is_empty() {
            self.due_ns = None;
        }
        Some(m.member)
    }

    /// Step 1 of a frame: each member's input, from `lines`.
    pub(super) fn feed(
        &mut self,
        t: &mut Terminal,
        member: MemberId,
        events: &mut EventSink,
    ) -> bool {
        let rate = self.mixer.rate();
        t.set_mix_rate(rate);
        let (pcm, digit) = t.pull(events);
        let n = pcm.len();
        match &mut t.to_mix {
            Some(r) => {
                let pcm_copy: &[i16] = &t.pcm_in[..n];
                let m = r.process(pcm_copy, &mut t.resampled);
                self.mixer.put(member, &t.resampled[..m]);
            }
            None => self.mixer.put(member, &t.pcm_in[..n]),
        }
        digit.is_some()
    }

    /// Step 2: mix; with a recording, the whole room's frame is copied
    /// to `sink` (in payload-sized parts).
    pub(super) fn mix(
        &mut self,
        now_ns: u64,
        sink: Option<&crossbeam_queue::ArrayQueue<RecPacket>>,
    ) -> (u64, u64) {
        self.mixer.mix();
        self.frame_no += 1;
        let (Some(rec), Some(sink)) = (self.record, sink) else {
            return (0, 0);
        };
        let (mut sent, mut lost) = (0, 0);
        let rate = self.mixer.rate();
        let all = self.mixer.everyone();
        let start = (self.frame_no - 1) * all.len() as u64;
        for (k, part) in all.chunks(MAX_PAYLOAD / 2).enumerate() {
            let mut p = RecPacket {
                rec,
                side: 0,
                arrival_ns: now_ns,
                pt: RAW_PCM,
                ts: (start + (k * MAX_PAYLOAD / 2) as u64) as u32,
                ssrc: rate,
                len: (part.len() * 2) as u16,
                payload: [0; MAX_PAYLOAD],
            };
            for (o, s) in p.payload.chunks_exact_mut(2).zip(part) {
                o.copy_from_slice(&s.to_le_bytes());
            }
            if sink.push(p).is_ok() {
                sent += 1;
            } else {
                lost += 1;
            }
        }
        (sent, lost)
    }

    /// Step 3: the payload member `member` hears, written after a 12-octet
    /// header room in `out`; its length.
    pub(super) fn payload_for(
        &mut self,
        t: &mut Terminal,
        member: MemberId,
        out: &mut [u8],
        counters: &mut ServiceCounters,
    ) -> usize {
        let body = match out.get_mut(12..) {
            Some(b) => b,
            None => return 0,
        };
        let n = t.frame.min(MAX_PCM);
        match self.mixer.heard(member) {
            Heard::Own(mix) => {
                let m = match &mut t.from_mix {
                    Some(r) => r.process(mix, &mut t.pcm_in),
                    None => {
                        let m = mix.len().min(t.pcm_in.len());
                        t.pcm_in[..m].copy_from_slice(&mix[..m]);
                        m
                    }
                };
                if m < n {
                    t.pcm_in[m..n].fill(0);
                }
                t.encoder.encode(&t.pcm_in[..n], body).unwrap_or(0)
            }
            heard => {
                let key = (
                    t.audio.format.codec,
                    t.audio.format.clock,
                    t.audio.octet_align,
                    t.audio.opus.bitrate,
                );
                let rate = self.mixer.rate();
                let i = match self.shared.iter().position(|s| s.key == key) {
                    Some(i) => i,
                    None => {
                        let Ok(encoder) = encoder_for(&t.audio, t.pcm_rate) else {
                            return 0;
                        };
                        self.shared.push(Shared {
                            key,
                            encoder,
                            from_mix: (rate != t.pcm_rate)
                                .then(|| Resampler::new(rate, t.pcm_rate).ok())
                                .flatten(),
                            pcm: vec![0; MAX_PCM].into_boxed_slice(),
                            made: 0,
                            len: 0,
                            payload: vec![0; MAX_PAYLOAD].into_boxed_slice(),
                        });
                        self.shared.len() - 1
                    }
                };
                let s = &mut self.shared[i];
                if s.made != self.frame_no {
                    let mixlen = self.mixer.frame_len();
                    let src: &[i16] = match heard.samples() {
                        Some(mix) => mix,
                        None => {
                            self.mixbuf[..mixlen].fill(0);
                            &self.mixbuf[..mixlen]
                        }
                    };
                    let m = match &mut s.from_mix {
                        Some(r) => r.process(src, &mut s.pcm),
                        None => {
                            let m = src.len().min(s.pcm.len());
                            s.pcm[..m].copy_from_slice(&src[..m]);
                            m
                        }
                    };
                    if m < n {
                        s.pcm[m..n].fill(0);
                    }
                    s.len = s.encoder.encode(&s.pcm[..n], &mut s.payload).unwrap_or(0);
                    s.made = self.frame_no;
                } else {
                    counters.room_shared += 1;
                }
                let len = s.len.min(body.len());
                body[..len].copy_from_slice(&s.payload[..len]);
                len
            }
        }
    }
}

/// Writes the RTP header of a room frame towards a terminal's caller.
pub(super) fn room_header(inj: &mut Injection, t: &Terminal, out: &mut [u8]) -> Option<()> {
    let (ts, marker) = (inj.ts, inj.marker);
    inj.marker = false;
    inj.ts = inj.ts.wrapping_add(t.units());
    inj.header(out, t.audio.format.pt, ts, marker)
}

/// Produces the next prompt frame for a room member hearing a prompt.
pub(super) fn room_prompt(
    inj: &mut Injection,
    pt: u8,
    out: &mut [u8],
    events: &mut EventSink,
) -> Option<usize> {
    inj.produce_play(pt, out, Side::A, events)
}

impl LineServices {
    /// The injection towards A (room frames use its numbering).
    pub(super) fn inject_a(&mut self) -> &mut Injection {
        &mut self.inject[0]
    }

    /// The terminal and the injection towards A, borrowed apart.
    pub(super) fn parts(&mut self) -> (Option<&mut Terminal>, &mut Injection) {
        (self.terminal.as_deref_mut(), &mut self.inject[0])
    }

    /// The caller pressed a digit: a prompt that stops on DTMF stops.
    pub(super) fn stop_on_digit(&mut self) {
        if self.inject[0].play.as_ref().is_some_and(|p| p.stop_on_dtmf) {
            self.inject[0].play = None;
        }
    }
}
