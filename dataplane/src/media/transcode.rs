//! The media worker's processing stage, sans-IO: a call whose two sides
//! speak different codecs (or frame sizes) is decoded, resampled and
//! re-encoded here, in the worker that owns the call.
//!
//! Per direction (side X's packets to side Y): an adaptive jitter buffer
//! on X's RTP timestamps; decode (loss concealed: the codec's own for Opus
//! and G.729, G.711 Appendix I style for the others; RFC 3389 comfort noise
//! played during X's silences); resample to Y's encoder rate where they
//! differ; encode Y's frame size; Y's packets carry rvoip's own SSRC,
//! sequence numbers and timestamps, leave when each is due (paced, never in
//! bursts), and RTCP sender reports towards Y are rewritten to describe
//! that stream. DTMF crosses as RFC 4733 events where both sides have
//! telephone-event, and is turned into tones (or tones into events) where
//! only one has.
//!
//! Driving contract, one [`Transcoder`] per media line of a transcoded
//! call, held by the relay:
//! 1. [`Transcoder::ingest`] for each RTP packet from a side (after SRTP,
//!    validation and latching, which the relay does as for any packet);
//! 2. [`Transcoder::produce`] for a direction when [`Transcoder::due`] says
//!    it is due: it writes the next packet towards the other side (or
//!    says nothing is to be sent now) and moves the due time on;
//! 3. [`Transcoder::rewrite_rtcp`] for each RTCP packet crossing.
//!
//! Nothing here allocates after [`Transcoder::new`]: the jitter buffer's
//! slots, the PCM buffers and the codec states are made up front.

use rvoip_codecs::cng::ComfortNoise;
use rvoip_codecs::dtmf::{Detected, DtmfDetector, DtmfTone, TelephoneEvent};
use rvoip_codecs::opus::OpusSettings;
use rvoip_codecs::resample::Resampler;
use rvoip_codecs::{CodecError, Decoder, Encoder, Format};

use super::relay::Side;
use super::rtp::{RtpHeader, Ssrc, write_rtp_header};

/// What one side of a transcoded media line speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegCodec {
    /// The codec and payload type of the side's audio (both ways).
    pub format: Format,
    /// Its telephone-event payload type, if it negotiated one.
    pub te_pt: Option<u8>,
    /// Its comfort noise payload type, if it negotiated one.
    pub cn_pt: Option<u8>,
    /// The frame length rvoip sends it, ms.
    pub ptime_ms: u16,
    /// The SSRC of rvoip's stream towards it.
    pub ssrc: Ssrc,
    /// Opus encoder settings (when the side speaks Opus).
    pub opus: OpusSettings,
    /// AMR payloads octet-aligned (`octet-align=1`), else bandwidth-efficient.
    pub octet_align: bool,
}

impl LegCodec {
    /// A side speaking `format`, 20 ms frames.
    pub fn new(format: Format, ssrc: Ssrc) -> LegCodec {
        LegCodec {
            format,
            te_pt: None,
            cn_pt: None,
            ptime_ms: 20,
            ssrc,
            opus: OpusSettings::default(),
            octet_align: false,
        }
    }
}

/// Whether a call's sides need the stage: different codecs or frame sizes.
pub fn needs_transcoding(a: &LegCodec, b: &LegCodec) -> bool {
    a.format.codec != b.format.codec || a.format.clock != b.format.clock || a.ptime_ms != b.ptime_ms
}

/// Counters of the stage, per worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCounters {
    /// Audio packets decoded.
    pub decoded: u64,
    /// Audio packets encoded and sent.
    pub encoded: u64,
    /// Frames concealed (lost or late).
    pub concealed: u64,
    /// Frames of comfort noise played.
    pub comfort_noise: u64,
    /// Packets too late for the jitter buffer.
    pub late: u64,
    /// Packets dropped: buffer full, payload type unknown, payload too big.
    pub dropped: u64,
    /// Payloads the codec refused.
    pub codec_errors: u64,
    /// Jitter buffer grew by a frame (underrun).
    pub underruns: u64,
    /// Jitter buffer shrank by a frame.
    pub shrunk: u64,
    /// RFC 4733 event packets sent.
    pub events_sent: u64,
    /// DTMF digits detected in-band.
    pub digits_detected: u64,
    /// DTMF digits played in-band from events.
    pub digits_played: u64,
    /// RTCP packets rewritten.
    pub rtcp_rewritten: u64,
    /// RTCP receiver reports ended here (they describe rvoip's streams).
    pub rtcp_ended: u64,
}

impl StageCounters {
    /// Adds `o`'s counts.
    pub fn add(&mut self, o: &StageCounters) {
        self.decoded += o.decoded;
        self.encoded += o.encoded;
        self.concealed += o.concealed;
        self.comfort_noise += o.comfort_noise;
        self.late += o.late;
        self.dropped += o.dropped;
        self.codec_errors += o.codec_errors;
        self.underruns += o.underruns;
        self.shrunk += o.shrunk;
        self.events_sent += o.events_sent;
        self.digits_detected += o.digits_detected;
        self.digits_played += o.digits_played;
        self.rtcp_rewritten += o.rtcp_rewritten;
        self.rtcp_ended += o.rtcp_ended;
    }
}

/// Jitter buffer slots: 16 frames (320 ms of 20 ms frames).
const SLOTS: usize = 16;
/// Largest payload kept (an Opus packet is at most 1275 octets).
pub(super) const MAX_PAYLOAD: usize = 1280;
/// Largest PCM frame handled: 120 ms at 48 kHz.
pub(super) const MAX_PCM: usize = 5760;
/// Frames of underrun after which the talker is taken as silent.
const SILENT_AFTER: u32 = 3;
/// Frames without input after which the direction stops sending.
const IDLE_AFTER: u32 = 50;
/// Due times fall on this grid (ns): every call's frames that fall due in
/// the same slot are made together, so a worker wakes once for them and
/// runs the codec on warm caches; each stream still leaves one frame per
/// frame time, at most one slot after its exact time.
const GRID_NS: u64 = 2_000_000;

/// `t` rounded up to the grid.
pub(super) fn on_grid(t: u64) -> u64 {
    t.div_ceil(GRID_NS) * GRID_NS
}

#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) used: bool,
    pub(super) ts: u32,
    pub(super) len: u16,
    pub(super) data: [u8; MAX_PAYLOAD],
}

/// An adaptive jitter buffer of one direction, on RTP timestamps.
#[derive(Debug)]
pub(super) struct JitterBuffer {
    pub(super) slots: Box<[Slot]>,
    pub(super) count: usize,
    /// The timestamp to play next.
    pub(super) next_ts: u32,
    /// Whether `next_ts` is set (a talk spurt is running).
    pub(super) started: bool,
    /// Timestamp units per frame, from the last packet.
    pub(super) frame_ts: u32,
    /// Interarrival jitter (RFC 3550 §6.4.1), timestamp units × 16.
    pub(super) jitter_x16: u32,
    pub(super) last_transit: Option<u32>,
    /// The fewest frames held at a pull in the current window.
    pub(super) window_min: usize,
    pub(super) window_pulls: u32,
}

pub(super) enum Pull {
    /// The frame due is in slot `i`.
    Frame(usize),
    /// The frame due is missing but later ones are here (lost).
    Lost,
    /// Nothing to play.
    Empty,
}

impl JitterBuffer {
    pub(super) fn new() -> JitterBuffer {
        let slot = Slot {
            used: false,
            ts: 0,
            len: 0,
            data: [0; MAX_PAYLOAD],
        };
        JitterBuffer {
            slots: vec![slot; SLOTS].into_boxed_slice(),
            count: 0,
            next_ts: 0,
            started: false,
            frame_ts: 0,
            jitter_x16: 0,
            last_transit: None,
            window_min: usize::MAX,
            window_pulls: 0,
        }
    }

    /// Frames the current jitter asks to hold: one, plus one per frame of
    /// twice the jitter (at most eight).
    pub(super) fn target(&self) -> usize {
        let frame = self.frame_ts.max(1);
        let jitter = self.jitter_x16 / 16;
        (1 + (2 * jitter).div_ceil(frame) as usize).min(8)
    }

    /// Keeps a packet; false if it is late, a duplicate, too big or the
    /// buffer is full.
    pub(super) fn insert(&mut self, ts: u32, arrival_units: u32, payload: &[u8]) -> bool {
        let transit = arrival_units.wrapping_sub(ts);
        if let Some(last) = self.last_transit {
            let d = transit.wrapping_sub(last) as i32;
            let d = d.unsigned_abs();
            // J += (|D| - J) / 16, kept ×16.
            self.jitter_x16 = self.jitter_x16 + d - ((self.jitter_x16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
        if self.started && (ts.wrapping_sub(self.next_ts) as i32) < 0 {
            return false;
        }
        if payload.len() > MAX_PAYLOAD || self.slots.iter().any(|s| s.used && s.ts == ts) {
            return false;
        }
        let Some(i) = self.slots.iter().position(|s| !s.used) else {
            return false;
        };
        let s = &mut self.slots[i];
        s.used = true;
        s.ts = ts;
        s.len = payload.len() as u16;
        s.data[..payload.len()].copy_from_slice(payload);
        self.count += 1;
        if !self.started {
            // A new talk spurt plays from its first packet.
            self.next_ts = self.oldest().unwrap_or(ts);
            self.started = true;
        }
        true
    }

    pub(super) fn oldest(&self) -> Option<u32> {
        let base = self.next_ts;
        self.slots
            .iter()
            .filter(|s| s.used)
            .map(|s| s.ts)
            .min_by_key(|t| t.wrapping_sub(base))
    }

    pub(super) fn pull(&mut self) -> Pull {
        if !self.started {
            return Pull::Empty;
        }
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.used && s.ts == self.next_ts)
        {
            return Pull::Frame(i);
        }
        if self.count > 0 {
            Pull::Lost
        } else {
            Pull::Empty
        }
    }

    pub(super) fn release(&mut self, i: usize) {
        if self.slots[i].used {
            self.slots[i].used = false;
            self.count -= 1;
        }
    }

    /// Frames held beyond the one due.
    pub(super) fn depth(&self) -> usize {
        self.count
    }
}

/// An RFC 4733 packet waiting to go out.
#[derive(Debug, Clone, Copy)]
struct EventOut {
    marker: bool,
    ts: u32,
    payload: [u8; 4],
}

/// One direction: from side `from`'s peer to side `to`'s peer.
#[derive(Debug)]
struct Direction {
    input: LegCodec,
    output: LegCodec,
    decoder: Decoder,
    encoder: Encoder,
    resampler: Option<Resampler>,
    jb: JitterBuffer,
    cn: ComfortNoise,
    cn_active: bool,
    /// PCM at the encoder's rate waiting to be encoded.
    fifo: Box<[i16]>,
    fifo_len: usize,
    decoded: Box<[i16]>,
    resampled: Box<[i16]>,
    /// In-band detection, when the input has no telephone-event and the
    /// output has.
    detector: Option<DtmfDetector>,
    /// The in-band digit being played from the input's events: its tone,
    /// its event timestamp, and when the last event packet came (ns).
    playing: Option<(DtmfTone, u32, u64)>,
    /// Events to send, oldest first.
    events: [Option<EventOut>; 8],
    /// The input event being passed on: its timestamp in, out.
    event_map: Option<(u32, u32)>,
    /// The detected digit being sent as events: event, start ts, duration.
    detected: Option<(u8, u32, u32)>,
    seq: u16,
    ts: u32,
    marker: bool,
    /// When the next audio packet is due (worker ns); `None` when idle.
    due_ns: Option<u64>,
    /// Output frames since input last arrived.
    starved: u32,
    /// For RTCP: packets and octets sent, and the timestamp of the last
    /// packet with the time it left.
    sent_packets: u32,
    sent_octets: u32,
    last_sent: Option<(u32, u64)>,
    frame_ns: u64,
    out_samples: usize,
    counters: StageCounters,
}

impl Direction {
    fn new(input: LegCodec, output: LegCodec) -> Result<Direction, CodecError> {
        let out_codec = output.format.codec;
        let in_codec = input.format.codec;
        // Opus runs at the rate its other side needs (libopus resamples
        // internally), or 48 kHz where that is not one of libopus's.
        let opus_rate = |r: u32| {
            if rvoip_codecs::opus::supported_rate(r) {
                r
            } else {
                48_000
            }
        };
        let enc_rate = out_codec.pcm_rate(
            output.format.clock,
            opus_rate(in_codec.pcm_rate(input.format.clock, 16_000)),
        );
        let dec_rate = in_codec.pcm_rate(input.format.clock, opus_rate(enc_rate));
        let mut decoder = Decoder::new(in_codec, dec_rate)?;
        decoder.set_octet_align(input.octet_align);
        let mut encoder = Encoder::new(out_codec, enc_rate, &output.opus)?;
        encoder.set_octet_align(output.octet_align);
        let resampler = if dec_rate == enc_rate {
            None
        } else {
            Some(Resampler::new(dec_rate, enc_rate)?)
        };
        let ptime = u64::from(output.ptime_ms.clamp(10, 120));
        let out_samples = (enc_rate as u64 * ptime / 1000) as usize;
        let detector =
            (input.te_pt.is_none() && output.te_pt.is_some()).then(|| DtmfDetector::new(dec_rate));
        Ok(Direction {
            input,
            output,
            decoder,
            encoder,
            resampler,
            jb: JitterBuffer::new(),
            cn: ComfortNoise::new(),
            cn_active: false,
            fifo: vec![0; 2 * MAX_PCM].into_boxed_slice(),
            fifo_len: 0,
            decoded: vec![0; MAX_PCM].into_boxed_slice(),
            resampled: vec![0; MAX_PCM].into_boxed_slice(),
            detector,
            playing: None,
            events: [None; 8],
            event_map: None,
            detected: None,
            seq: (output.ssrc.0 >> 16) as u16,
            ts: output.ssrc.0.rotate_left(11),
            marker: true,
            due_ns: None,
            starved: 0,
            sent_packets: 0,
            sent_octets: 0,
            last_sent: None,
            frame_ns: ptime * 1_000_000,
            out_samples,
            counters: StageCounters::default(),
        })
    }

    fn push_event(&mut self, e: EventOut) {
        if let Some(slot) = self.events.iter_mut().find(|s| s.is_none()) {
            *slot = Some(e);
        } else {
            self.counters.dropped += 1;
        }
    }

    fn take_event(&mut self) -> Option<EventOut> {
        let e = self.events[0].take()?;
        self.events.rotate_left(1);
        Some(e)
    }

    /// Output timestamp units for `units` of the input's event clock.
    fn scale_event(&self, units: u32) -> u32 {
        let out_clock = u64::from(self.output.format.clock);
        let in_clock = u64::from(self.input.format.clock.max(1));
        (u64::from(units) * out_clock / in_clock) as u32
    }

    /// Takes one packet from the input side.
    fn ingest(&mut self, now_ns: u64, h: &RtpHeader, payload: &[u8]) {
        let pt = h.payload_type;
        if Some(pt) == self.input.te_pt {
            self.on_event(now_ns, h, payload);
            return;
        }
        if Some(pt) == self.input.cn_pt || (pt == 13 && self.input.cn_pt.is_none()) {
            if self.cn.update(payload).is_ok() {
                self.cn_active = true;
                self.wake(now_ns);
            } else {
                self.counters.codec_errors += 1;
            }
            return;
        }
        if pt != self.input.format.pt {
            self.counters.dropped += 1;
            return;
        }
        let clock = u64::from(self.input.format.clock.max(1));
        let arrival_units = ((now_ns / 1000) * clock / 1_000_000) as u32;
        if !self.jb.insert(h.timestamp, arrival_units, payload) {
            if self.jb.started && (h.timestamp.wrapping_sub(self.jb.next_ts) as i32) < 0 {
                self.counters.late += 1;
            } else {
                self.counters.dropped += 1;
            }
            return;
        }
        self.cn_active = false;
        self.starved = 0;
        self.wake(now_ns);
    }

    /// Starts sending, after a short wait for the jitter buffer to fill.
    fn wake(&mut self, now_ns: u64) {
        if self.due_ns.is_none() {
            self.due_ns = Some(on_grid(now_ns + self.frame_ns.min(30_000_000)));
            // A new talk spurt after silence: timestamps move on by the time
            // that passed (RFC 3550 §5.1) and the marker is set.
            if let Some((ts, at)) = self.last_sent {
                let gone = now_ns.saturating_sub(at);
                let units = gone / 1000 * u64::from(self.output.format.clock) / 1_000_000;
                self.ts = ts.wrapping_add(units as u32);
            }
            self.marker = true;
        }
    }

    fn on_event(&mut self, now_ns: u64, h: &RtpHeader, payload: &[u8]) {
        let Some(e) = TelephoneEvent::parse(payload) else {
            self.counters.dropped += 1;
            return;
        };
        match self.output.te_pt {
            Some(_) => {
                // Passed on with this stream's numbers: the event's
                // timestamp is where the audio is now.
                let out_ts = match self.event_map {
                    Some((in_ts, out_ts)) if in_ts == h.timestamp => out_ts,
                    _ => {
                        let out_ts = self.ts;
                        self.event_map = Some((h.timestamp, out_ts));
                        out_ts
                    }
                };
                let out = TelephoneEvent {
                    duration: self.scale_event(u32::from(e.duration)).min(0xffff) as u16,
                    ..e
                };
                self.push_event(EventOut {
                    marker: h.marker,
                    ts: out_ts,
                    payload: out.write(),
                });
                self.wake(now_ns);
            }
            None => {
                // Played as tones over the audio towards a side without
                // telephone-event.
                let rate = self.encoder.pcm_rate();
                match &mut self.playing {
                    Some((_, ts, seen)) if *ts == h.timestamp => *seen = now_ns,
                    _ if !e.end => {
                        if let Some(tone) = DtmfTone::new(e.event, e.volume.max(6), rate) {
                            self.playing = Some((tone, h.timestamp, now_ns));
                            self.counters.digits_played += 1;
                        }
                    }
                    _ => {}
                }
                if e.end && self.playing.as_ref().is_some_and(|p| p.1 == h.timestamp) {
                    self.playing = None;
                }
                self.wake(now_ns);
            }
        }
    }

    /// Decodes the next input frame (or conceals it) into the FIFO.
    fn refill(&mut self) {
        let n = match self.jb.pull() {
            Pull::Frame(i) => {
                let slot = &self.jb.slots[i];
                let payload = &slot.data[..usize::from(slot.len)];
                let r = self.decoder.decode(payload, &mut self.decoded);
                self.jb.release(i);
                match r {
                    Ok(n) => {
                        self.counters.decoded += 1;
                        let units =
                            Format::rtp_units(&self.input.format, n, self.decoder.pcm_rate());
                        self.jb.frame_ts = units.max(1);
                        self.jb.next_ts = self.jb.next_ts.wrapping_add(units.max(1));
                        self.starved = 0;
                        n
                    }
                    Err(_) => {
                        self.counters.codec_errors += 1;
                        self.conceal(None)
                    }
                }
            }
            Pull::Lost => {
                // The next packet's FEC, for Opus.
                let next_ts = self.jb.next_ts.wrapping_add(self.jb.frame_ts);
                let next = self.jb.slots.iter().position(|s| s.used && s.ts == next_ts);
                let n = match next {
                    Some(i) => {
                        let s = &self.jb.slots[i];
                        let mut copy = [0u8; MAX_PAYLOAD];
                        let len = usize::from(s.len);
                        copy[..len].copy_from_slice(&s.data[..len]);
                        self.conceal(Some(&copy[..len]))
                    }
                    None => self.conceal(None),
                };
                let step = self.jb.frame_ts.max(1);
                self.jb.next_ts = self.jb.next_ts.wrapping_add(step);
                n
            }
            Pull::Empty if self.cn_active => {
                let n = self.frame_len_in();
                self.cn.fill(&mut self.decoded[..n]);
                self.decoder.heard(&mut self.decoded[..n]);
                self.counters.comfort_noise += 1;
                self.jb.started = false;
                n
            }
            Pull::Empty => {
                // Underrun: conceal without moving the play-out point, so
                // the buffer is a frame deeper when the packet comes. A
                // talker silent for longer starts a new spurt later.
                self.starved += 1;
                if self.starved > SILENT_AFTER {
                    self.jb.started = false;
                } else {
                    self.counters.underruns += 1;
                }
                self.conceal(None)
            }
        };
        let pcm = &mut self.decoded[..n];
        if let Some(det) = &mut self.detector {
            let mut found: [Option<Detected>; 4] = [None; 4];
            let mut k = 0;
            det.feed(pcm, |d| {
                if k < found.len() {
                    found[k] = Some(d);
                    k += 1;
                }
            });
            for d in found.into_iter().flatten() {
                self.on_detected(d);
            }
        }
        let pcm = &self.decoded[..n];
        let room = self.fifo.len() - self.fifo_len;
        let written = match &mut self.resampler {
            Some(r) => {
                let m = r.process(pcm, &mut self.resampled);
                let m = m.min(room);
                self.fifo[self.fifo_len..self.fifo_len + m].copy_from_slice(&self.resampled[..m]);
                m
            }
            None => {
                let m = n.min(room);
                self.fifo[self.fifo_len..self.fifo_len + m].copy_from_slice(&pcm[..m]);
                m
            }
        };
        self.fifo_len += written;
    }

    /// Samples of one input frame at the decoder's rate.
    fn frame_len_in(&self) -> usize {
        let rate = u64::from(self.decoder.pcm_rate());
        let units = u64::from(self.jb.frame_ts.max(1));
        let clock = u64::from(self.input.format.clock.max(1));
        let n = if self.jb.frame_ts == 0 {
            rate / 50
        } else {
            units * rate / clock
        };
        (n as usize).clamp(1, MAX_PCM)
    }

    fn conceal(&mut self, next: Option<&[u8]>) -> usize {
        let n = self.frame_len_in();
        self.counters.concealed += 1;
        self.decoder.conceal(next, &mut self.decoded[..n])
    }

    fn on_detected(&mut self, d: Detected) {
        if self.output.te_pt.is_none() {
            return;
        }
        let rate = u64::from(self.decoder.pcm_rate().max(1));
        let clock = u64::from(self.output.format.clock);
        let to_units = |samples: u32| (u64::from(samples) * clock / rate).min(0xffff) as u32;
        match d {
            Detected::Began { event, offset } => {
                let start = self.ts;
                let duration = to_units(offset);
                self.detected = Some((event, start, duration));
                self.counters.digits_detected += 1;
                self.push_event(EventOut {
                    marker: true,
                    ts: start,
                    payload: TelephoneEvent {
                        event,
                        end: false,
                        volume: 10,
                        duration: duration as u16,
                    }
                    .write(),
                });
            }
            Detected::Ended { event, samples } => {
                let start = self.detected.map_or(self.ts, |d| d.1);
                let end = TelephoneEvent {
                    event,
                    end: true,
                    volume: 10,
                    duration: to_units(samples) as u16,
                }
                .write();
                // RFC 4733 §2.5.1.4: the end packet is sent three times.
                for _ in 0..3 {
                    self.push_event(EventOut {
                        marker: false,
                        ts: start,
                        payload: end,
                    });
                }
                self.detected = None;
            }
        }
    }

    /// Writes the next packet towards the output side into `out`; returns
    /// its length, or `None` when nothing goes now (and whether the
    /// direction still has a due time).
    fn produce(&mut self, now_ns: u64, out: &mut [u8]) -> Option<usize> {
        if let Some(e) = self.take_event() {
            let pt = self.output.te_pt?;
            let mut h = [0u8; 12];
            write_rtp_header(&mut h, e.marker, pt, self.seq, e.ts, self.output.ssrc);
            self.seq = self.seq.wrapping_add(1);
            out.get_mut(..12)?.copy_from_slice(&h);
            out.get_mut(12..16)?.copy_from_slice(&e.payload);
            self.counters.events_sent += 1;
            self.count_sent(16, now_ns, None);
            return Some(16);
        }
        let due = self.due_ns?;
        if now_ns < due {
            return None;
        }
        // Fill one output frame.
        let mut guard = 0;
        while self.fifo_len < self.out_samples && guard < 16 {
            self.refill();
            guard += 1;
        }
        if self.fifo_len < self.out_samples {
            return None;
        }
        let frame_len = self.out_samples;
        // A digit being played over the audio.
        if let Some((tone, _, seen)) = &mut self.playing {
            tone.fill(&mut self.fifo[..frame_len]);
            // Events stop coming: the digit is over (RFC 4733 §2.5.2.2).
            if now_ns.saturating_sub(*seen) > 200_000_000 {
                self.playing = None;
            }
        }
        // A detected digit still running: an update every frame.
        if let Some((event, start, duration)) = self.detected {
            let frame_units =
                Format::rtp_units(&self.output.format, frame_len, self.encoder.pcm_rate());
            let duration = (duration + frame_units).min(0xffff);
            self.detected = Some((event, start, duration));
            self.push_event(EventOut {
                marker: false,
                ts: start,
                payload: TelephoneEvent {
                    event,
                    end: false,
                    volume: 10,
                    duration: duration as u16,
                }
                .write(),
            });
        }
        let encoded = match out.get_mut(12..) {
            Some(body) => self.encoder.encode(&self.fifo[..frame_len], body),
            None => Err(CodecError::OutputTooSmall),
        };
        self.fifo.copy_within(frame_len..self.fifo_len, 0);
        self.fifo_len -= frame_len;
        // The next frame's time, resynchronised after a stall.
        let next = due + self.frame_ns;
        self.due_ns = Some(if now_ns > next + 3 * self.frame_ns {
            on_grid(now_ns + self.frame_ns)
        } else {
            next
        });
        let ts = self.ts;
        self.ts = self.ts.wrapping_add(Format::rtp_units(
            &self.output.format,
            frame_len,
            self.encoder.pcm_rate(),
        ));
        // Input stopped: stop sending until it resumes.
        self.starved += u32::from(!self.cn_active && self.jb.depth() == 0);
        if self.starved > IDLE_AFTER && !self.cn_active {
            self.due_ns = None;
            self.jb.started = false;
        }
        let n = match encoded {
            Ok(n) if n > 0 => n,
            // DTX: the encoder had nothing to say for this frame.
            Ok(_) => return None,
            Err(_) => {
                self.counters.codec_errors += 1;
                return None;
            }
        };
        let mut h = [0u8; 12];
        write_rtp_header(
            &mut h,
            self.marker,
            self.output.format.pt,
            self.seq,
            ts,
            self.output.ssrc,
        );
        self.marker = false;
        self.seq = self.seq.wrapping_add(1);
        out[..12].copy_from_slice(&h);
        self.counters.encoded += 1;
        self.count_sent(12 + n, now_ns, Some(ts));
        // Jitter buffer too deep for its jitter for a second: one frame
        // less (played through the decoder, not heard).
        self.shrink_if_deep();
        Some(12 + n)
    }

    fn shrink_if_deep(&mut self) {
        let depth = self.jb.depth();
        self.jb.window_min = self.jb.window_min.min(depth);
        self.jb.window_pulls += 1;
        if self.jb.window_pulls >= 50 {
            if self.jb.window_min != usize::MAX
                && self.jb.window_min > self.jb.target() + 1
                && let Pull::Frame(i) = self.jb.pull()
            {
                let slot = &self.jb.slots[i];
                let payload = &slot.data[..usize::from(slot.len)];
                let _ = self.decoder.decode(payload, &mut self.decoded);
                self.jb.release(i);
                let step = self.jb.frame_ts.max(1);
                self.jb.next_ts = self.jb.next_ts.wrapping_add(step);
                self.counters.shrunk += 1;
            }
            self.jb.window_min = usize::MAX;
            self.jb.window_pulls = 0;
        }
    }

    fn count_sent(&mut self, len: usize, now_ns: u64, ts: Option<u32>) {
        self.sent_packets = self.sent_packets.wrapping_add(1);
        self.sent_octets = self.sent_octets.wrapping_add((len - 12) as u32);
        if let Some(ts) = ts {
            self.last_sent = Some((ts, now_ns));
        }
    }

    /// The stream's RTP timestamp at `now_ns`.
    fn ts_at(&self, now_ns: u64) -> u32 {
        match self.last_sent {
            Some((ts, at)) => {
                let gone = now_ns.saturating_sub(at) / 1000;
                ts.wrapping_add((gone * u64::from(self.output.format.clock) / 1_000_000) as u32)
            }
            None => self.ts,
        }
    }
}

/// The stage for one media line: both directions.
#[derive(Debug)]
pub struct Transcoder {
    /// A→B (decoding A's packets for B), B→A.
    dirs: [Direction; 2],
    /// The due time the relay's schedule holds for the direction towards
    /// side A, side B (entries that differ are stale).
    pub(super) scheduled: [Option<u64>; 2],
}

impl Transcoder {
    /// A stage between side A speaking `a` and side B speaking `b`.
    pub fn new(a: LegCodec, b: LegCodec) -> Result<Transcoder, CodecError> {
        Ok(Transcoder {
            dirs: [Direction::new(a, b)?, Direction::new(b, a)?],
            scheduled: [None; 2],
        })
    }

    /// What side `side` speaks.
    pub fn leg(&self, side: Side) -> &LegCodec {
        &self.dirs[side.index()].input
    }

    /// Takes an RTP packet (`h` its header, `pkt` the whole packet) that
    /// arrived from side `from` at `now_ns`.
    pub fn ingest(&mut self, from: Side, now_ns: u64, h: &RtpHeader, pkt: &[u8]) {
        let end = (h.payload_offset + h.payload_len).min(pkt.len());
        let payload = pkt.get(h.payload_offset..end).unwrap_or_default();
        self.dirs[from.index()].ingest(now_ns, h, payload);
    }

    /// When the direction towards side `to` next has something to send.
    pub fn due(&self, to: Side) -> Option<u64> {
        let d = &self.dirs[to.other().index()];
        if d.events.iter().any(Option::is_some) {
            return Some(0);
        }
        d.due_ns
    }

    /// Writes the next packet towards side `to` into `out` (at least
    /// 1500 octets); `None` when nothing goes now.
    pub fn produce(&mut self, to: Side, now_ns: u64, out: &mut [u8]) -> Option<usize> {
        self.dirs[to.other().index()].produce(now_ns, out)
    }

    /// Rewrites an RTCP compound packet crossing towards side `to`
    /// (`buf[..len]`, already unprotected and checked): a sender report
    /// describes rvoip's stream towards `to` (its SSRC, timestamp now,
    /// counts) with the report blocks taken out (they describe the stream
    /// the other side received from rvoip); a compound that starts with a
    /// receiver report ends here. Returns the new length, or `None` to drop.
    pub fn rewrite_rtcp(
        &mut self,
        to: Side,
        now_ns: u64,
        buf: &mut [u8],
        len: usize,
    ) -> Option<usize> {
        let d = &mut self.dirs[to.other().index()];
        let p = buf.get(..len)?;
        if p.len() < 8 {
            return None;
        }
        match p[1] {
            200 if p.len() >= 28 => {
                let first_len = (usize::from(u16::from_be_bytes([p[2], p[3]])) + 1) * 4;
                if first_len > len {
                    return None;
                }
                let rest = len - first_len;
                buf[0] &= 0xe0; // RC = 0; version and padding kept.
                buf[2..4].copy_from_slice(&6u16.to_be_bytes());
                buf[4..8].copy_from_slice(&d.output.ssrc.0.to_be_bytes());
                // NTP timestamp (8..16) kept: the sender's wall clock.
                let ts = d.ts_at(now_ns);
                buf[16..20].copy_from_slice(&ts.to_be_bytes());
                buf[20..24].copy_from_slice(&d.sent_packets.to_be_bytes());
                buf[24..28].copy_from_slice(&d.sent_octets.to_be_bytes());
                buf.copy_within(first_len..len, 28);
                d.counters.rtcp_rewritten += 1;
                Some(28 + rest)
            }
            _ => {
                d.counters.rtcp_ended += 1;
                None
            }
        }
    }

    /// Counters of both directions.
    pub fn counters(&self) -> StageCounters {
        let mut c = self.dirs[0].counters;
        c.add(&self.dirs[1].counters);
        c
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::net::SocketAddr;

    use rvoip_codecs::dtmf::{DtmfDetector, DtmfTone};
    use rvoip_codecs::tone::{Tone, analyse};

    use super::*;
    use crate::media::relay::{Action, Component, PeerSpec, Relay, RelayConfig, Transmit};
    use crate::media::rtp::parse_rtp;
    use rvoip_codecs::Codec;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const A: &str = "10.0.0.1:4000";
    const B: &str = "10.0.0.2:5000";

    /// A relay with one call: A on endpoint 1, B on endpoint 2, muxed.
    fn call(a: LegCodec, b: LegCodec) -> Relay {
        let mut r = Relay::new(RelayConfig::default(), 0);
        let id = r.create_session(0, 1);
        r.bind_endpoint(1, id, 0, Side::A, Component::Rtp);
        r.bind_endpoint(2, id, 0, Side::B, Component::Rtp);
        for (side, at) in [(Side::A, A), (Side::B, B)] {
            r.set_peer(
                id,
                0,
                side,
                PeerSpec {
                    rtp: Some(addr(at)),
                    rtcp: None,
                    rtcp_mux: true,
                    clock_rate: 8000,
                    feedback: false,
                },
            );
        }
        r.set_transcode(id, 0, Some((a, b))).unwrap();
        r
    }

    fn leg(codec: Codec, pt: u8, ssrc: u32) -> LegCodec {
        LegCodec::new(Format::new(codec, pt), Ssrc(ssrc))
    }

    /// A sender of one codec's packets: a tone (or whatever `fill` makes),
    /// encoded in 20 ms frames.
    struct Sender {
        enc: Encoder,
        format: Format,
        seq: u16,
        ts: u32,
    }

    impl Sender {
        fn new(format: Format) -> Sender {
            let rate = format.codec.pcm_rate(format.clock, 48_000);
            Sender {
                enc: Encoder::new(format.codec, rate, &OpusSettings::default()).unwrap(),
                format,
                seq: 1,
                ts: 1000,
            }
        }
        fn rate(&self) -> u32 {
            self.enc.pcm_rate()
        }
        fn packet(&mut self, pcm: &[i16]) -> Vec<u8> {
            let mut p = vec![0u8; 1500];
            let n = self.enc.encode(pcm, &mut p[12..]).unwrap();
            let mut h = [0u8; 12];
            write_rtp_header(&mut h, false, self.format.pt, self.seq, self.ts, Ssrc(77));
            p[..12].copy_from_slice(&h);
            p.truncate(12 + n);
            self.seq = self.seq.wrapping_add(1);
            self.ts = self
                .ts
                .wrapping_add(self.format.rtp_units(pcm.len(), self.rate()));
            p
        }
    }

    /// Runs the relay for `frames` × 20 ms of simulated time: `input(k)`
    /// gives the k-th packet from `from` (or none), sent every 20 ms from
    /// `via`'s peer; returns what left towards the other side, with the
    /// time each left.
    fn run(
        r: &mut Relay,
        from: Side,
        frames: usize,
        mut input: impl FnMut(usize) -> Option<Vec<u8>>,
    ) -> Vec<(u64, Transmit, Vec<u8>)> {
        let (ep, src) = match from {
            Side::A => (1, A),
            Side::B => (2, B),
        };
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        let step = 1_000_000u64; // 1 ms
        let mut now = 1_000_000_000u64;
        for k in 0..frames * 20 {
            if k % 20 == 0
                && let Some(p) = input(k / 20)
            {
                let a = r.on_packet(now / 1_000_000, now, ep, addr(src), &p);
                assert!(matches!(a, Action::Consumed), "{a:?}");
            }
            while let Some(t) = r.poll_transmit(now, &mut buf) {
                out.push((now, t, buf[..t.len].to_vec()));
            }
            now += step;
        }
        out
    }

    fn decode_all(format: Format, rate: u32, packets: &[(u64, Transmit, Vec<u8>)]) -> Vec<i16> {
        let mut dec = Decoder::new(format.codec, rate).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0i16; MAX_PCM];
        for (_, _, p) in packets {
            let h = parse_rtp(p).unwrap();
            if h.payload_type != format.pt {
                continue;
            }
            let n = dec
                .decode(
                    &p[h.payload_offset..h.payload_offset + h.payload_len],
                    &mut buf,
                )
                .unwrap();
            pcm.extend_from_slice(&buf[..n]);
        }
        pcm
    }

    #[test]
    fn pcmu_and_opus_carry_a_tone_each_way_in_paced_twenty_ms_frames() {
        let pcmu = leg(Codec::Pcmu, 0, 0x1111);
        let opus = leg(Codec::Opus, 96, 0x2222);
        let mut r = call(pcmu, opus);
        // A (PCMU) → B (Opus).
        let mut tx = Sender::new(pcmu.format);
        let mut tone = Tone::new(1000.0, 10_000.0, 8000);
        let sent = run(&mut r, Side::A, 100, |_| {
            let mut pcm = [0i16; 160];
            tone.fill(&mut pcm);
            Some(tx.packet(&pcm))
        });
        assert!(sent.len() >= 97, "{} packets", sent.len());
        assert!(sent.iter().all(|(_, t, _)| t.to == addr(B) && t.via == 2));
        // rvoip's own stream: its SSRC, consecutive numbers, 960 per frame,
        // one packet every 20 ms.
        let heads: Vec<_> = sent.iter().map(|(_, _, p)| parse_rtp(p).unwrap()).collect();
        assert!(
            heads
                .iter()
                .all(|h| h.ssrc == Ssrc(0x2222) && h.payload_type == 96)
        );
        for w in heads.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].timestamp.wrapping_sub(w[0].timestamp), 960);
        }
        for w in sent.windows(2) {
            assert_eq!(w[1].0 - w[0].0, 20_000_000, "paced");
        }
        let pcm = decode_all(opus.format, 8000, &sent);
        let (f, snr) = analyse(&pcm[800..], 8000);
        assert!((f - 1000.0).abs() < 2.0, "{f}");
        assert!(snr > 15.0, "{snr}");
        // B (Opus) → A (PCMU).
        let mut tx = Sender::new(opus.format);
        let mut tone = Tone::new(440.0, 10_000.0, 48_000);
        let back = run(&mut r, Side::B, 100, |_| {
            let mut pcm = [0i16; 960];
            tone.fill(&mut pcm);
            Some(tx.packet(&pcm))
        });
        assert!(back.len() >= 97);
        let pcm = decode_all(pcmu.format, 8000, &back);
        let (f, snr) = analyse(&pcm[800..], 8000);
        assert!((f - 440.0).abs() < 2.0, "{f}");
        assert!(snr > 15.0, "{snr}");
        let c = r.counters();
        assert!(c.stage.decoded >= 195 && c.stage.encoded >= 194, "{c:?}");
    }

    #[test]
    fn srtp_is_removed_before_the_stage_and_applied_after_it() {
        use crate::media::relay::LegSrtp;
        use crate::srtp::{SrtpContext, SrtpParams, Suite, sdes};
        let pcmu = leg(Codec::Pcmu, 0, 1);
        let opus = leg(Codec::Opus, 96, 2);
        let mut r = call(pcmu, opus);
        // Side B speaks SRTP: its key protects what it sends, rvoip's key
        // what rvoip sends it.
        let rng = crate::entropy::SeededEntropy::new(9);
        let suite = Suite::AesCm128HmacSha1_80;
        let theirs = SrtpParams::new(suite, sdes::generate(suite, &rng).unwrap());
        let ours = SrtpParams::new(suite, sdes::generate(suite, &rng).unwrap());
        assert!(r.set_crypto(
            0,
            0,
            Side::B,
            &LegSrtp {
                rx: Some(theirs.clone()),
                tx: Some(ours.clone()),
            }
        ));
        // A (plain PCMU) → B (SRTP opus): B decrypts with rvoip's key.
        let mut tx = Sender::new(pcmu.format);
        let mut tone = Tone::new(1000.0, 9000.0, 8000);
        let sent = run(&mut r, Side::A, 50, |_| {
            let mut pcm = [0i16; 160];
            tone.fill(&mut pcm);
            Some(tx.packet(&pcm))
        });
        let mut b_rx = SrtpContext::new(&ours).unwrap();
        let mut plain = Vec::new();
        for (at, t, p) in sent {
            let mut buf = p.clone();
            buf.resize(p.len() + 64, 0);
            let n = b_rx
                .unprotect_rtp(&mut buf, p.len())
                .expect("B authenticates rvoip's SRTP");
            buf.truncate(n);
            plain.push((at, t, buf));
        }
        let pcm = decode_all(opus.format, 8000, &plain);
        let (f, snr) = analyse(&pcm[800..], 8000);
        assert!((f - 1000.0).abs() < 2.0 && snr > 15.0, "{f} Hz {snr} dB");
        // B (SRTP opus) → A (plain PCMU): rvoip decrypts before decoding.
        let mut b_tx = SrtpContext::new(&theirs).unwrap();
        let mut tx = Sender::new(opus.format);
        let mut tone = Tone::new(600.0, 9000.0, 48_000);
        let back = run(&mut r, Side::B, 50, |_| {
            let mut pcm = [0i16; 960];
            tone.fill(&mut pcm);
            let p = tx.packet(&pcm);
            let mut buf = p.clone();
            buf.resize(p.len() + 64, 0);
            let n = b_tx.protect_rtp(&mut buf, p.len()).unwrap();
            buf.truncate(n);
            Some(buf)
        });
        let pcm = decode_all(pcmu.format, 8000, &back);
        let (f, snr) = analyse(&pcm[800..], 8000);
        assert!((f - 600.0).abs() < 2.0 && snr > 15.0, "{f} Hz {snr} dB");
        assert_eq!(r.counters().srtp_drops.total(), 0);
    }

    #[test]
    fn g722_to_pcma_resamples_and_thirty_ms_frames_become_twenty() {
        let mut g722 = leg(Codec::G722, 9, 1);
        g722.ptime_ms = 30;
        let pcma = leg(Codec::Pcma, 8, 2);
        let mut r = call(g722, pcma);
        let mut tx = Sender::new(g722.format);
        let mut tone = Tone::new(700.0, 9000.0, 16_000);
        let mut k = 0;
        // 30 ms packets: two every three 20 ms steps.
        let sent = run(&mut r, Side::A, 150, |i| {
            (i % 3 != 2).then(|| {
                k += 1;
                let mut pcm = [0i16; 480];
                tone.fill(&mut pcm);
                tx.packet(&pcm)
            })
        });
        let _ = k;
        let pcm = decode_all(pcma.format, 8000, &sent);
        let heads: Vec<_> = sent.iter().map(|(_, _, p)| parse_rtp(p).unwrap()).collect();
        assert!(heads.iter().all(|h| h.payload_len == 160), "20 ms of PCMA");
        let (f, snr) = analyse(&pcm[1600..], 8000);
        assert!((f - 700.0).abs() < 2.0, "{f}");
        assert!(snr > 20.0, "{snr}");
    }

    #[cfg(feature = "amr")]
    #[test]
    fn pcmu_and_octet_aligned_amr_wb_carry_a_tone() {
        let pcmu = leg(Codec::Pcmu, 0, 1);
        let mut amr = leg(Codec::AmrWb, 97, 2);
        amr.octet_align = true;
        let mut r = call(pcmu, amr);
        let mut tx = Sender::new(pcmu.format);
        let mut tone = Tone::new(900.0, 9000.0, 8000);
        let sent = run(&mut r, Side::A, 60, |_| {
            let mut pcm = [0i16; 160];
            tone.fill(&mut pcm);
            Some(tx.packet(&pcm))
        });
        let mut dec = Decoder::new(Codec::AmrWb, 16_000).unwrap();
        dec.set_octet_align(true);
        let mut pcm = Vec::new();
        let mut buf = vec![0i16; 5760];
        for (_, _, p) in &sent {
            let h = parse_rtp(p).unwrap();
            assert_eq!(p[h.payload_offset], 0xf0, "octet-aligned, no mode request");
            let n = dec.decode(&p[h.payload_offset..], &mut buf).unwrap();
            pcm.extend_from_slice(&buf[..n]);
        }
        let (f, snr) = analyse(&pcm[3200..], 16_000);
        assert!((f - 900.0).abs() < 3.0, "{f}");
        assert!(snr > 10.0, "{snr}");
    }

    #[test]
    fn a_lost_packet_is_concealed_and_the_stream_keeps_its_timing() {
        let pcmu = leg(Codec::Pcmu, 0, 1);
        let g722 = leg(Codec::G722, 9, 2);
        let mut r = call(pcmu, g722);
        let mut tx = Sender::new(pcmu.format);
        let mut tone = Tone::new(500.0, 9000.0, 8000);
        let sent = run(&mut r, Side::A, 60, |i| {
            let mut pcm = [0i16; 160];
            tone.fill(&mut pcm);
            let p = tx.packet(&pcm);
            (i != 30).then_some(p)
        });
        assert!(sent.len() >= 58, "{}", sent.len());
        assert!(r.counters().stage.concealed >= 1);
        let pcm = decode_all(g722.format, 16_000, &sent);
        let (f, snr) = analyse(&pcm[3200..], 16_000);
        assert!((f - 500.0).abs() < 2.0, "{f}");
        assert!(snr > 10.0, "{snr}");
    }

    #[test]
    fn events_become_tones_for_a_side_without_telephone_event() {
        let mut pcmu = leg(Codec::Pcmu, 0, 1);
        pcmu.te_pt = Some(101);
        let g722 = leg(Codec::G722, 9, 2);
        let mut r = call(pcmu, g722);
        let mut tx = Sender::new(pcmu.format);
        let mut event_seq = 500u16;
        let sent = run(&mut r, Side::A, 40, |i| {
            if (10..20).contains(&i) {
                // Digit 5 as RFC 4733 events, 200 ms, the last three ended.
                let mut h = [0u8; 12];
                write_rtp_header(&mut h, i == 10, 101, event_seq, 5000, Ssrc(77));
                event_seq += 1;
                let e = TelephoneEvent {
                    event: 5,
                    end: i == 19,
                    volume: 10,
                    duration: ((i - 9) * 160) as u16,
                };
                tx.seq = tx.seq.wrapping_add(1);
                tx.ts = tx.ts.wrapping_add(160);
                Some([&h[..], &e.write()[..]].concat())
            } else {
                Some(tx.packet(&[0i16; 160]))
            }
        });
        let pcm = decode_all(g722.format, 16_000, &sent);
        let mut det = DtmfDetector::new(16_000);
        let mut digits = Vec::new();
        det.feed(&pcm, |d| digits.push(d));
        assert!(
            digits
                .iter()
                .any(|d| matches!(d, Detected::Began { event: 5, .. })),
            "{digits:?}"
        );
        assert_eq!(r.counters().stage.digits_played, 1);
    }

    #[test]
    fn tones_become_events_for_a_side_with_telephone_event() {
        let pcmu = leg(Codec::Pcmu, 0, 1);
        let mut opus = leg(Codec::Opus, 96, 2);
        opus.te_pt = Some(101);
        let mut r = call(pcmu, opus);
        let mut tx = Sender::new(pcmu.format);
        let mut digit = DtmfTone::new(11, 8, 8000).unwrap();
        let sent = run(&mut r, Side::A, 40, |i| {
            let mut pcm = [0i16; 160];
            if (10..20).contains(&i) {
                digit.fill(&mut pcm);
            }
            Some(tx.packet(&pcm))
        });
        let events: Vec<TelephoneEvent> = sent
            .iter()
            .filter_map(|(_, _, p)| {
                let h = parse_rtp(p).unwrap();
                (h.payload_type == 101).then(|| TelephoneEvent::parse(&p[12..]).unwrap())
            })
            .collect();
        assert!(!events.is_empty());
        assert!(events.iter().all(|e| e.event == 11));
        let ends = events.iter().filter(|e| e.end).count();
        assert_eq!(ends, 3, "{events:?}");
        let last = events.last().unwrap();
        // About 200 ms of digit at 48 kHz.
        assert!((8000..=12_000).contains(&last.duration), "{last:?}");
        assert_eq!(r.counters().stage.digits_detected, 1);
    }

    #[test]
    fn a_sender_report_describes_rvoips_stream_and_receiver_reports_end_here() {
        let pcmu = leg(Codec::Pcmu, 0, 0xaaaa);
        let opus = leg(Codec::Opus, 96, 0xbbbb);
        let mut r = call(pcmu, opus);
        let mut tx = Sender::new(pcmu.format);
        let _ = run(&mut r, Side::A, 10, |_| Some(tx.packet(&[0i16; 160])));
        // SR from A with one report block, then an SDES.
        let mut sr = vec![0x81, 200, 0, 12, 0, 0, 0, 77];
        sr.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 1, 0, 0, 0, 0, 10, 0, 0, 6, 64]);
        sr.extend_from_slice(&[0u8; 24]);
        sr.extend_from_slice(&[0x81, 202, 0, 2, 0, 0, 0, 77, 0, 0, 0, 0]);
        let mut buf = [0u8; 2048];
        buf[..sr.len()].copy_from_slice(&sr);
        let mut len = sr.len();
        let a = r.on_datagram(500, 1_500_000_000, 1, addr(A), &mut buf, &mut len);
        assert_eq!(
            a,
            Action::Forward {
                via: 2,
                to: addr(B)
            }
        );
        assert_eq!(len, 28 + 12);
        assert_eq!(buf[0] & 0x1f, 0, "no report blocks");
        assert_eq!(&buf[4..8], &0xbbbbu32.to_be_bytes());
        assert_eq!(&buf[8..16], &[1, 2, 3, 4, 5, 6, 7, 8], "NTP kept");
        let packets = u32::from_be_bytes([buf[20], buf[21], buf[22], buf[23]]);
        assert!((8..=10).contains(&packets), "{packets}");
        assert_eq!(buf[29], 202);
        let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 77];
        assert_eq!(
            r.on_packet(600, 1_600_000_000, 1, addr(A), &rr),
            Action::Consumed
        );
    }

    #[test]
    fn garbage_payloads_are_counted_not_fatal() {
        let pcmu = leg(Codec::Pcmu, 0, 1);
        let opus = leg(Codec::Opus, 96, 2);
        let mut r = call(opus, pcmu);
        let mut seq = 0u16;
        let sent = run(&mut r, Side::A, 20, |i| {
            let mut h = [0u8; 12];
            seq += 1;
            write_rtp_header(
                &mut h,
                false,
                if i % 5 == 0 { 33 } else { 96 },
                seq,
                u32::from(seq) * 960,
                Ssrc(5),
            );
            Some([&h[..], &[0xff; 7][..]].concat())
        });
        let c = r.counters().stage;
        assert!(c.dropped >= 4, "{c:?}");
        assert!(c.codec_errors + c.concealed > 0, "{c:?}");
        let _ = sent;
    }
}
