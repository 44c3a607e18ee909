//! Per-stream reception statistics: sequence tracking and loss (RFC 3550
//! A.1/A.3) and interarrival jitter (A.8).

use super::rtp::{RtpHeader, Ssrc};

/// A sequence number may jump this far and still be in order (A.1 MAX_DROPOUT).
const MAX_DROPOUT: u16 = 3000;
/// A jump back this far or more is a restart (A.1 MAX_MISORDER).
const MAX_MISORDER: u16 = 100;

/// Statistics of one direction of one stream, as received by the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Packets accepted.
    pub packets: u64,
    /// Octets accepted (whole packets).
    pub bytes: u64,
    /// Packets dropped as malformed or from a wrong source.
    pub errors: u64,
    /// Times the SSRC changed.
    pub ssrc_changes: u32,
    /// Packets that arrived with a sequence number below the highest seen.
    pub out_of_order: u64,
    /// Current SSRC (valid once `packets > 0`).
    pub ssrc: Ssrc,
    /// When the last packet arrived, in the relay's milliseconds.
    pub last_seen_ms: u64,
    base_seq: u16,
    max_seq: u16,
    cycles: u32,
    received: u64,
    /// Previous relative transit time, in timestamp units (A.8).
    transit: u32,
    /// Jitter estimate in timestamp units, scaled by 16 (A.8).
    jitter_x16: u32,
    started: bool,
}

impl StreamStats {
    /// Accounts one valid RTP packet of `len` octets, arrived at `arrival_ts`
    /// (the arrival time in the stream's timestamp units) and `now_ms`.
    pub fn on_rtp(&mut self, h: &RtpHeader, len: usize, arrival_ts: u32, now_ms: u64) {
        self.packets += 1;
        self.bytes += len as u64;
        self.last_seen_ms = now_ms;
        if !self.started || h.ssrc != self.ssrc {
            if self.started {
                self.ssrc_changes += 1;
            }
            self.started = true;
            self.ssrc = h.ssrc;
            self.base_seq = h.seq;
            self.max_seq = h.seq;
            self.cycles = 0;
            self.received = 1;
            self.transit = arrival_ts.wrapping_sub(h.timestamp);
            self.jitter_x16 = 0;
            return;
        }
        self.received += 1;
        let delta = h.seq.wrapping_sub(self.max_seq);
        if delta == 0 {
            // Duplicate.
        } else if delta < MAX_DROPOUT {
            if h.seq < self.max_seq {
                self.cycles += 1;
            }
            self.max_seq = h.seq;
        } else if delta <= u16::MAX - MAX_MISORDER {
            // A large jump: the sender restarted its sequence; start over.
            self.base_seq = h.seq;
            self.max_seq = h.seq;
            self.cycles = 0;
            self.received = 1;
        } else {
            self.out_of_order += 1;
        }
        // A.8: D(i-1,i) = (Rj - Ri) - (Sj - Si); J += (|D| - J) / 16.
        let transit = arrival_ts.wrapping_sub(h.timestamp);
        let d = transit.wrapping_sub(self.transit) as i32;
        self.transit = transit;
        let d = d.unsigned_abs();
        self.jitter_x16 = self
            .jitter_x16
            .wrapping_add(d.wrapping_sub((self.jitter_x16 + 8) >> 4));
    }

    /// Packets expected from the sequence numbers seen (A.3).
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let extended_max = (u64::from(self.cycles) << 16) + u64::from(self.max_seq);
        extended_max - u64::from(self.base_seq) + 1
    }

    /// Packets lost: expected minus received (negative with duplicates).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_x16 >> 4
    }

    /// Interarrival jitter in milliseconds for a clock of `clock_rate` Hz.
    pub fn jitter_ms(&self, clock_rate: u32) -> f64 {
        if clock_rate == 0 {
            0.0
        } else {
            f64::from(self.jitter()) * 1000.0 / f64::from(clock_rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(seq: u16, ts: u32, ssrc: u32) -> RtpHeader {
        RtpHeader {
            marker: false,
            payload_type: 0,
            seq,
            timestamp: ts,
            ssrc: Ssrc(ssrc),
            payload_offset: 12,
            payload_len: 160,
        }
    }

    #[test]
    fn counts_loss_across_a_wrap() {
        let mut s = StreamStats::default();
        let mut seq = 65_530u16;
        for i in 0..20u32 {
            if i != 7 && i != 8 {
                s.on_rtp(
                    &hdr(seq, i * 160, 1),
                    172,
                    i * 160 + 1000,
                    u64::from(i) * 20,
                );
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.expected(), 20);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.packets, 18);
        assert_eq!(s.jitter(), 0, "perfectly paced stream");
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        let mut s = StreamStats::default();
        // Arrivals alternate 0 and 80 timestamp units late: |D| = 80 each time after the first.
        for i in 0..200u32 {
            let late = if i % 2 == 0 { 0 } else { 80 };
            s.on_rtp(&hdr(i as u16, i * 160, 9), 172, i * 160 + late, 0);
        }
        // J converges to |D| = 80.
        assert!((75..=80).contains(&s.jitter()), "{}", s.jitter());
        assert!((s.jitter_ms(8000) - 10.0).abs() < 0.7);
    }

    #[test]
    fn ssrc_change_restarts_the_sequence() {
        let mut s = StreamStats::default();
        s.on_rtp(&hdr(100, 0, 1), 172, 0, 0);
        s.on_rtp(&hdr(101, 160, 1), 172, 160, 20);
        s.on_rtp(&hdr(5, 0, 2), 172, 320, 40);
        s.on_rtp(&hdr(6, 160, 2), 172, 480, 60);
        assert_eq!(s.ssrc_changes, 1);
        assert_eq!(s.ssrc, Ssrc(2));
        assert_eq!((s.expected(), s.lost()), (2, 0));
        s.on_rtp(&hdr(4, 0, 2), 172, 500, 80);
        assert_eq!(s.out_of_order, 1);
    }
}
