//! Recording: two sides of a call laid side by side in time, as the left
//! and right channel of one stereo track.
//!
//! Each side's audio is placed by its RTP timestamps (so network jitter
//! does not move it), anchored to the wall clock by the arrival time of
//! its first packet (so the two sides line up, and a side that starts late
//! starts late in the file). A new SSRC, or timestamps that drift more than
//! a second from arrival times, re-anchor. Gaps are silence. What is older
//! than the flush point is final and handed out as interleaved samples.

/// Where one side's samples go.
#[derive(Debug, Clone, Copy, Default)]
struct Anchor {
    ssrc: u32,
    ts: u32,
    /// Sample index (at the track rate) of `ts`.
    pos: u64,
    /// RTP clock of the side.
    clock: u32,
    set: bool,
}

/// A stereo track being assembled.
#[derive(Debug, Clone)]
pub struct Timeline {
    rate: u32,
    origin_ns: u64,
    anchors: [Anchor; 2],
    /// Sample index of `pending[0]`.
    flushed: u64,
    /// Interleaved L/R samples from `flushed` on.
    pending: Vec<i16>,
    /// Highest sample index written on either side, + 1.
    end: u64,
    /// Samples that came after their place was final.
    late: u64,
}

/// Most a side may run ahead of the flush point (10 s): beyond it, the
/// track flushes so memory stays bounded.
const MAX_PENDING_S: u64 = 10;

impl Timeline {
    /// A track at `rate` Hz whose sample 0 is at `origin_ns`.
    pub fn new(rate: u32, origin_ns: u64) -> Timeline {
        Timeline {
            rate,
            origin_ns,
            anchors: [Anchor::default(); 2],
            flushed: 0,
            pending: Vec::new(),
            end: 0,
            late: 0,
        }
    }

    /// The track's rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Samples that arrived after their place was written out.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The sample index of wall time `ns`.
    pub fn index_at(&self, ns: u64) -> u64 {
        ns.saturating_sub(self.origin_ns) / 1000 * u64::from(self.rate) / 1_000_000
    }

    /// Places `pcm` (at the track rate) from `channel` (0 left, 1 right),
    /// which carried RTP timestamp `ts` of SSRC `ssrc` at clock `clock` and
    /// arrived at `arrival_ns`.
    pub fn place(
        &mut self,
        channel: usize,
        ssrc: u32,
        ts: u32,
        clock: u32,
        arrival_ns: u64,
        pcm: &[i16],
    ) {
        let channel = channel.min(1);
        let here = self.index_at(arrival_ns);
        let a = &mut self.anchors[channel];
        let clock = clock.max(1);
        let by_ts = if a.set && a.ssrc == ssrc && a.clock == clock {
            let units = ts.wrapping_sub(a.ts) as i32;
            let samples = i64::from(units) * i64::from(self.rate) / i64::from(clock);
            Some(a.pos as i64 + samples)
        } else {
            None
        };
        let pos = match by_ts {
            Some(p) if p >= 0 && (p - here as i64).unsigned_abs() <= u64::from(self.rate) => {
                p as u64
            }
            _ => {
                *a = Anchor {
                    ssrc,
                    ts,
                    pos: here,
                    clock,
                    set: true,
                };
                here
            }
        };
        self.write(channel, pos, pcm);
    }

    /// Writes `pcm` into `channel` from sample index `pos`.
    pub fn write(&mut self, channel: usize, pos: u64, pcm: &[i16]) {
        let mut pcm = pcm;
        let mut pos = pos;
        if pos < self.flushed {
            let skip = (self.flushed - pos).min(pcm.len() as u64) as usize;
            self.late += skip as u64;
            pcm = &pcm[skip..];
            pos = self.flushed;
        }
        if pcm.is_empty() {
            return;
        }
        let limit = self.flushed + MAX_PENDING_S * u64::from(self.rate);
        let end = pos + pcm.len() as u64;
        if end > limit {
            // A side far ahead: what lies beyond the window is dropped
            // (counted), never an unbounded buffer.
            let keep = limit.saturating_sub(pos) as usize;
            self.late += (pcm.len() - keep.min(pcm.len())) as u64;
            pcm = &pcm[..keep.min(pcm.len())];
        }
        let start = ((pos - self.flushed) * 2) as usize;
        let need = start + pcm.len() * 2;
        if self.pending.len() < need {
            self.pending.resize(need, 0);
        }
        for (i, &x) in pcm.iter().enumerate() {
            self.pending[start + i * 2 + channel.min(1)] = x;
        }
        self.end = self.end.max(pos + pcm.len() as u64);
    }

    /// Hands out, interleaved, every sample before index `upto` (the
    /// caller's "now minus the jitter it waits for"); silence where no side
    /// wrote.
    pub fn flush(&mut self, upto: u64, out: &mut Vec<i16>) {
        if upto <= self.flushed {
            return;
        }
        let n = (upto - self.flushed) as usize * 2;
        if self.pending.len() < n {
            self.pending.resize(n, 0);
        }
        out.extend(self.pending.drain(..n));
        self.flushed = upto;
    }

    /// Hands out everything written so far (the recording stops).
    pub fn finish(&mut self, out: &mut Vec<i16>) {
        let end = self.end.max(self.flushed);
        self.flush(end, out);
    }

    /// Goes on after a pause: wall time `ns` becomes the end of what was
    /// written, so the paused time leaves no gap; both sides re-anchor.
    pub fn rebase(&mut self, ns: u64) {
        let end = self.end.max(self.flushed);
        let offset_ns = end.saturating_mul(1_000_000_000) / u64::from(self.rate.max(1));
        self.origin_ns = ns.saturating_sub(offset_ns);
        self.anchors = [Anchor::default(); 2];
    }

    /// Sample index up to which the track is final.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_line_up_by_arrival_and_follow_their_timestamps_through_jitter() {
        let mut t = Timeline::new(8000, 1_000_000_000);
        // Left starts at 0 ms; right at 100 ms. Right's second packet is
        // 15 ms late on the wire but keeps its place by timestamp.
        let frame = vec![1000i16; 160];
        t.place(0, 1, 500, 8000, 1_000_000_000, &frame);
        t.place(0, 1, 660, 8000, 1_020_000_000, &frame);
        t.place(1, 2, 9000, 8000, 1_100_000_000, &vec![-7i16; 160]);
        t.place(1, 2, 9160, 8000, 1_135_000_000, &vec![-9i16; 160]);
        let mut out = Vec::new();
        t.finish(&mut out);
        assert_eq!(out.len(), 2 * (800 + 320));
        let left: Vec<i16> = out.iter().step_by(2).copied().collect();
        let right: Vec<i16> = out.iter().skip(1).step_by(2).copied().collect();
        assert!(left[..320].iter().all(|&x| x == 1000));
        assert!(
            left[320..].iter().all(|&x| x == 0),
            "silence where left sent nothing"
        );
        assert!(right[..800].iter().all(|&x| x == 0));
        assert!(right[800..960].iter().all(|&x| x == -7));
        assert!(
            right[960..1120].iter().all(|&x| x == -9),
            "placed by timestamp, not arrival"
        );
    }

    #[test]
    fn flushed_audio_is_final_and_a_late_packet_is_counted() {
        let mut t = Timeline::new(8000, 0);
        t.place(0, 1, 0, 8000, 0, &[5i16; 160]);
        let mut out = Vec::new();
        t.flush(240, &mut out);
        assert_eq!(out.len(), 480);
        t.place(1, 2, 0, 8000, 10_000_000, &[6i16; 160]);
        assert_eq!(
            t.late(),
            160,
            "right's first 20 ms came after they were written"
        );
        t.finish(&mut out);
        assert_eq!(out.len(), 2 * 240, "nothing past what was written");
    }

    #[test]
    fn a_new_ssrc_or_a_timestamp_jump_re_anchors_on_arrival() {
        let mut t = Timeline::new(8000, 0);
        t.place(0, 1, 0, 8000, 0, &[1i16; 160]);
        // Same SSRC, timestamp jumped a minute: placed at its arrival.
        t.place(0, 1, 480_000, 8000, 40_000_000, &[2i16; 160]);
        let mut out = Vec::new();
        t.finish(&mut out);
        assert_eq!(out.len(), 2 * (320 + 160));
        assert_eq!(out[2 * 320], 2);
    }
}
