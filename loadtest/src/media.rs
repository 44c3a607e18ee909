//! RTP streams of the load: G.711 packets (172 octets, 20 ms) carrying their
//! send time, and per-stream receive statistics: loss, reordering, one-way
//! transit time and RFC 3550 jitter.

use rvoip_dataplane::media::rtp::{Ssrc, parse_rtp, write_rtp_header};

/// Octets per packet: 12 of header, 160 of payload (G.711, 20 ms).
pub const PACKET: usize = 172;
/// Packet interval.
pub const PTIME_NS: u64 = 20_000_000;

/// What a sender keeps per stream.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    /// SSRC.
    pub ssrc: u32,
    seq: u16,
    ts: u32,
}

impl Sender {
    /// A stream with `ssrc`, starting at sequence number `seq`.
    pub fn new(ssrc: u32, seq: u16) -> Self {
        Sender { ssrc, seq, ts: 0 }
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
