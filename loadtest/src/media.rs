//! RTP streams of the load: G.711 packets (172 octets, 20 ms) carrying their
//! send time, or, with `--codec`, a tone encoded in any codec rvoip knows
//! (encoded once and replayed, so the generator's cost does not grow with
//! the codec's); per-stream receive statistics: loss, reordering, one-way
//! transit time (stamped packets) and RFC 3550 jitter; and, for a few
//! streams, the tone heard after decoding.

use rvoip_codecs::opus::OpusSettings;
use rvoip_codecs::tone::{Tone, coverage};
use rvoip_codecs::{Codec, CodecError, Decoder, Encoder, Format};
use rvoip_dataplane::media::rtp::{Ssrc, parse_rtp, write_rtp_header};

/// Octets per packet: 12 of header, 160 of payload (G.711, 20 ms).
pub const PACKET: usize = 172;
/// Packet interval.
pub const PTIME_NS: u64 = 20_000_000;

/// The tone the calling side (UAC, ng leg A) sends, Hz.
pub const CALLER_TONE: f64 = 1000.0;
/// The tone the called side (UAS, ng leg B) sends, Hz.
pub const CALLEE_TONE: f64 = 600.0;

/// Thirty seconds of a tone in a codec, as 20 ms payloads, replayed by
/// every stream that sends it from its first frame, so that each far-end
/// decoder starts with the encoder's first packet as it would in a real
/// call (an Opus decoder that starts mid-stream on a pure tone takes
/// seconds to converge). A whole number of cycles per second loops the
/// samples seamlessly; a stateful codec hears one join every thirty
/// seconds.
#[derive(Debug)]
pub struct ToneFrames {
    /// The codec.
    pub codec: Codec,
    /// RTP timestamp units per frame.
    pub units: u32,
    /// The payloads.
    pub frames: Vec<Vec<u8>>,
}

impl ToneFrames {
    /// A tone of `freq` Hz encoded in `codec`.
    pub fn new(codec: Codec, freq: f64) -> Result<ToneFrames, CodecError> {
        let rate = codec.pcm_rate(Format::new(codec, 0).clock, 8000);
        let mut tone = Tone::new(freq, 9000.0, rate);
        ToneFrames::encode(codec, 1500, |pcm| tone.fill(pcm))
    }

    /// DTMF `event` as its tone pair, 200 ms of it, encoded in `codec`.
    pub fn dtmf(codec: Codec, event: u8) -> Result<ToneFrames, CodecError> {
        let rate = codec.pcm_rate(Format::new(codec, 0).clock, 8000);
        let mut tone =
            rvoip_codecs::dtmf::DtmfTone::new(event, 6, rate).ok_or(CodecError::Empty)?;
        ToneFrames::encode(codec, 10, |pcm| tone.fill(pcm))
    }

    /// `count` 20 ms frames of what `fill` writes, encoded in `codec`.
    fn encode(
        codec: Codec,
        count: usize,
        mut fill: impl FnMut(&mut [i16]),
    ) -> Result<ToneFrames, CodecError> {
        let format = Format::new(codec, 0);
        let rate = codec.pcm_rate(format.clock, 8000);
        let mut enc = Encoder::new(codec, rate, &OpusSettings::default())?;
        let n = (rate / 50) as usize;
        let mut pcm = vec![0i16; n];
        let mut out = vec![0u8; 1500];
        let mut frames = Vec::with_capacity(count);
        for _ in 0..count {
            fill(&mut pcm);
            let len = enc.encode(&pcm, &mut out)?;
            frames.push(out[..len].to_vec());
        }
        Ok(ToneFrames {
            codec,
            units: format.rtp_units(n, rate),
            frames,
        })
    }
}

/// A received stream's audio, decoded and kept (four seconds from the
/// judged start) to be judged by the tones heard.
#[derive(Debug)]
pub struct AudioCheck {
    decoder: Decoder,
    /// What must and must not be heard.
    pub listen: crate::agent::Listen,
    pcm: Vec<i16>,
    buf: Vec<i16>,
}

impl AudioCheck {
    /// A check of a stream in `codec` judged by `listen`.
    pub fn new(codec: Codec, listen: crate::agent::Listen) -> Result<AudioCheck, CodecError> {
        let rate = codec.pcm_rate(Format::new(codec, 0).clock, 8000);
        let keep = rate as u64 * (listen.after_ms + 3500) / 1000;
        Ok(AudioCheck {
            decoder: Decoder::new(codec, rate)?,
            listen,
            pcm: Vec::with_capacity(keep as usize),
            buf: vec![0; 5760],
        })
    }

    /// Decodes one payload.
    pub fn on_payload(&mut self, payload: &[u8]) {
        if self.pcm.len() >= self.pcm.capacity() {
            return;
        }
        if let Ok(n) = self.decoder.decode(payload, &mut self.buf) {
            let room = self.pcm.capacity() - self.pcm.len();
            self.pcm.extend_from_slice(&self.buf[..n.min(room)]);
        }
    }

    /// The level of what came before the judged part (an IVR's prompt,
    /// before the caller's digit), dBov; −120 for nothing.
    pub fn before_dbov(&self) -> f64 {
        let rate = self.decoder.pcm_rate();
        let skip = (u64::from(rate) * self.listen.after_ms / 1000) as usize;
        let p = &self.pcm[..skip.min(self.pcm.len())];
        if p.is_empty() {
            return -120.0;
        }
        rvoip_codecs::tone::level_dbov(p).max(-120.0)
    }

    /// The share of the stream (after the judged start) in which the
    /// expected tone is heard clearly (SNR ≥ 15 dB), 0–1. With several
    /// tones expected (a conference): the share of 20 ms blocks in which
    /// every one of them carries at least a tenth of the power; with tones
    /// that must be absent, 0 when one of them carries a hundredth of the
    /// power in more than 5 % of the blocks.
    pub fn clear(&self) -> f64 {
        let rate = self.decoder.pcm_rate();
        let skip = (u64::from(rate) * self.listen.after_ms / 1000) as usize;
        let Some(p) = self.pcm.get(skip..) else {
            return 0.0;
        };
        if let ([f], []) = (&self.listen.expect[..], &self.listen.absent[..]) {
            return coverage(p, rate, *f, 15.0);
        }
        let block = (rate / 50) as usize;
        let (mut blocks, mut all_heard, mut leaked) = (0u32, 0u32, 0u32);
        for b in p.chunks_exact(block) {
            let mean = b.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / block as f64;
            blocks += 1;
            if mean < 1.0 {
                continue;
            }
            let share = |f: f64| {
                let g = rvoip_codecs::tone::goertzel(b, f, rate);
                2.0 * g / (block * block) as f64 / mean
            };
            all_heard += u32::from(self.listen.expect.iter().all(|&f| share(f) >= 0.1));
            leaked += u32::from(self.listen.absent.iter().any(|&f| share(f) >= 0.01));
        }
        if blocks == 0 || f64::from(leaked) > 0.05 * f64::from(blocks) {
            return 0.0;
        }
        f64::from(all_heard) / f64::from(blocks)
    }
}

/// What a sender keeps per stream.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    /// SSRC.
    pub ssrc: u32,
    seq: u16,
    ts: u32,
    event_ts: u32,
}

impl Sender {
    /// A stream with `ssrc`, starting at sequence number `seq`.
    pub fn new(ssrc: u32, seq: u16) -> Self {
        Sender {
            ssrc,
            seq,
            ts: 0,
            event_ts: 0,
        }
    }

    /// Writes the next packet into `out`, stamped with `now_ns` (the
    /// sender's monotonic clock; sender and receiver share the host).
    pub fn next(&mut self, now_ns: u64, out: &mut [u8; PACKET]) {
        let mut h = [0u8; 12];
        write_rtp_header(&mut h, false, 0, self.seq, self.ts, Ssrc(self.ssrc));
        out[..12].copy_from_slice(&h);
        out[12..20].copy_from_slice(&now_ns.to_be_bytes());
        out[20..].fill(0xff);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
    }

    /// Writes packet `n` (1-13) of an RFC 4733 digit (payload type 101):
    /// ten updates 20 ms apart, then three end packets; the audio's clock
    /// runs on under it.
    pub fn next_event(&mut self, event: u8, n: u32, out: &mut [u8]) -> usize {
        if n == 1 {
            self.event_ts = self.ts;
        }
        let end = n > 10;
        let e = rvoip_codecs::dtmf::TelephoneEvent {
            event,
            end,
            volume: 10,
            duration: (n.min(10) * 160) as u16,
        };
        let mut h = [0u8; 12];
        write_rtp_header(
            &mut h,
            n == 1,
            101,
            self.seq,
            self.event_ts,
            Ssrc(self.ssrc),
        );
        out[..12].copy_from_slice(&h);
        out[12..16].copy_from_slice(&e.write());
        self.seq = self.seq.wrapping_add(1);
        if !end {
            self.ts = self.ts.wrapping_add(160);
        }
        16
    }

    /// Writes the next packet of a tone (payload type `pt`) into `out`;
    /// returns its length.
    pub fn next_tone(&mut self, tone: &ToneFrames, pt: u8, out: &mut [u8]) -> usize {
        let frame = &tone.frames[(self.ts / tone.units.max(1)) as usize % tone.frames.len().max(1)];
        let mut h = [0u8; 12];
        write_rtp_header(&mut h, false, pt, self.seq, self.ts, Ssrc(self.ssrc));
        let len = 12 + frame.len();
        out[..12].copy_from_slice(&h);
        out[12..len].copy_from_slice(frame);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(tone.units);
        len
    }
}

/// Receive statistics of one stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Receiver {
    started: bool,
    base: u64,
    highest: u64,
    /// Packets received.
    pub received: u64,
    /// Packets that arrived after a later one.
    pub out_of_order: u64,
    transit_prev_ns: i64,
    /// RFC 3550 A.8 interarrival jitter, nanoseconds.
    pub jitter_ns: f64,
}

/// What one received packet told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// SSRC of the stream.
    pub ssrc: u32,
    /// One-way transit, nanoseconds.
    pub transit_ns: u64,
}

impl Receiver {
    /// Accounts a packet with sequence number `seq` sent at `sent_ns`,
    /// received at `now_ns`.
    pub fn on_packet(&mut self, seq: u16, sent_ns: u64, now_ns: u64) {
        // Extend the 16-bit sequence number around the highest seen.
        let ext = if !self.started {
            self.started = true;
            self.base = u64::from(seq) + (1 << 16);
            self.highest = self.base;
            self.base
        } else {
            let cycle = self.highest & !0xffff;
            let candidates = [cycle.wrapping_sub(1 << 16), cycle, cycle + (1 << 16)];
            candidates
                .into_iter()
                .map(|c| c | u64::from(seq))
                .min_by_key(|e| e.abs_diff(self.highest))
                .unwrap_or(self.highest)
        };
        if ext > self.highest {
            self.highest = ext;
        } else if ext < self.highest {
            self.out_of_order += 1;
        }
        if ext < self.base {
            self.base = ext;
        }
        self.received += 1;
        // RFC 3550 A.8 with nanosecond clocks: D is the change in transit time.
        let transit = now_ns as i64 - sent_ns as i64;
        if self.received > 1 {
            let d = (transit - self.transit_prev_ns).unsigned_abs() as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.transit_prev_ns = transit;
    }

    /// Packets expected from the sequence numbers seen.
    pub fn expected(&self) -> u64 {
        if self.started {
            self.highest - self.base + 1
        } else {
            0
        }
    }

    /// Packets lost (expected minus received, never negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

/// Reads the sequence number, SSRC and send stamp of a load packet.
pub fn read(pkt: &[u8]) -> Option<(u16, u32, u64)> {
    let h = parse_rtp(pkt).ok()?;
    let p = pkt.get(h.payload_offset..h.payload_offset + 8)?;
    let mut stamp = [0u8; 8];
    stamp.copy_from_slice(p);
    Some((h.seq, h.ssrc.0, u64::from_be_bytes(stamp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_reordering_and_jitter_are_counted() {
        let mut tx = Sender::new(7, 65_530);
        let mut rx = Receiver::default();
        let mut pkts = Vec::new();
        for i in 0..20u64 {
            let mut p = [0u8; PACKET];
            tx.next(i * PTIME_NS, &mut p);
            pkts.push(p);
        }
        // Drop packets 3 and 11 (across the wrap), swap 6 and 7; constant
        // transit, except packet 9 which is 4 ms late.
        let mut order: Vec<usize> = (0..20).filter(|i| *i != 3 && *i != 11).collect();
        order.swap(4, 5);
        for i in order {
            let (seq, ssrc, sent) = read(&pkts[i]).unwrap_or_else(|| panic!("reads"));
            assert_eq!(ssrc, 7);
            let delay = if i == 9 { 5_000_000 } else { 1_000_000 };
            rx.on_packet(seq, sent, sent + delay);
        }
        assert_eq!((rx.expected(), rx.received, rx.lost()), (20, 18, 2));
        assert_eq!(rx.out_of_order, 1);
        assert!(
            rx.jitter_ns > 0.0 && rx.jitter_ns < 1_000_000.0,
            "{}",
            rx.jitter_ns
        );
    }
}
