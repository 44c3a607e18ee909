//! Packet indices and replay windows (RFC 3711 §3.3.1, §3.3.2, Appendix A).

use super::SrtpError;

/// Replay window width in packets (RFC 3711 §3.3.2 asks for at least 64).
pub const WINDOW: u64 = 128;

/// The rollover counter, highest sequence number and replay window of one
/// SRTP stream (one SSRC in one direction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpIndex {
    started: bool,
    roc: u32,
    s_l: u16,
    /// Bit k set: index (highest - k) was seen.
    window: u128,
}

impl RtpIndex {
    /// The rollover counter.
    pub fn roc(&self) -> u32 {
        self.roc
    }

    /// The 48-bit packet index of sequence number `seq`: RFC 3711 Appendix A's
    /// guess of the ROC the sender used (one behind when `seq` is far above
    /// the highest seen, one ahead when far below). `None` when that would be
    /// before the stream's first rollover period.
    pub fn estimate(&self, seq: u16) -> Option<u64> {
        if !self.started {
            // RFC 3711 §3.3.1: the ROC starts at zero.
            return Some(u64::from(seq));
        }
        let (roc, s_l, seq_i) = (i64::from(self.roc), i64::from(self.s_l), i64::from(seq));
        let v = if s_l < 32_768 {
            if seq_i - s_l > 32_768 { roc - 1 } else { roc }
        } else if s_l - 32_768 > seq_i {
            roc + 1
        } else {
            roc
        };
        if !(0..=i64::from(u32::MAX)).contains(&v) {
            return None;
        }
        Some(((v as u64) << 16) | u64::from(seq))
    }

    fn highest(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.s_l)
    }

    /// Whether `index` may still be accepted: newer than the highest, or
    /// inside the window and not seen yet.
    pub fn check(&self, index: u64) -> Result<(), SrtpError> {
        if !self.started || index > self.highest() {
            return Ok(());
        }
        let delta = self.highest() - index;
        if delta >= WINDOW {
            return Err(SrtpError::TooOld);
        }
        if self.window & (1u128 << delta) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Records `index` as received (after it was authenticated).
    pub fn commit(&mut self, index: u64) {
        if !self.started {
            self.started = true;
            self.roc = (index >> 16) as u32;
            self.s_l = index as u16;
            self.window = 1;
            return;
        }
        let highest = self.highest();
        if index > highest {
            let shift = index - highest;
            self.window = if shift >= WINDOW {
                1
            } else {
                (self.window << shift) | 1
            };
            self.roc = (index >> 16) as u32;
            self.s_l = index as u16;
        } else {
            self.window |= 1u128 << (highest - index);
        }
    }
}

/// The SRTCP index window of one stream (RFC 3711 §3.4: the index travels
/// in every packet, 31 bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpIndex {
    started: bool,
    highest: u32,
    window: u128,
}

impl RtcpIndex {
    /// Whether `index` may still be accepted.
    pub fn check(&self, index: u32) -> Result<(), SrtpError> {
        if !self.started || index > self.highest {
            return Ok(());
        }
        let delta = u64::from(self.highest - index);
        if delta >= WINDOW {
            return Err(SrtpError::TooOld);
        }
        if self.window & (1u128 << delta) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Records `index` as received (after it was authenticated).
    pub fn commit(&mut self, index: u32) {
        if !self.started {
            *self = RtcpIndex {
                started: true,
                highest: index,
                window: 1,
            };
        } else if index > self.highest {
            let shift = u64::from(index - self.highest);
            self.window = if shift >= WINDOW {
                1
            } else {
                (self.window << shift) | 1
            };
            self.highest = index;
        } else {
            self.window |= 1u128 << (self.highest - index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut RtpIndex, seq: u16) -> Result<u64, SrtpError> {
        let i = w.estimate(seq).ok_or(SrtpError::TooOld)?;
        w.check(i)?;
        w.commit(i);
        Ok(i)
    }

    #[test]
    fn the_rollover_counter_follows_the_wrap_and_reordering_around_it() {
        let mut w = RtpIndex::default();
        assert_eq!(accept(&mut w, 65_530), Ok(65_530));
        assert_eq!(accept(&mut w, 65_535), Ok(65_535));
        // Wrapped: ROC 1.
        assert_eq!(accept(&mut w, 2), Ok((1 << 16) | 2));
        // A late packet from before the wrap still belongs to ROC 0.
        assert_eq!(accept(&mut w, 65_533), Ok(65_533));
        assert_eq!(w.roc(), 1);
        // And a packet from after the wrap that arrives late is ROC 1.
        assert_eq!(accept(&mut w, 1), Ok((1 << 16) | 1));
        assert_eq!(accept(&mut w, 30_000), Ok((1 << 16) | 30_000));
        assert_eq!(accept(&mut w, 60_000), Ok((1 << 16) | 60_000));
        // More than half the space below the highest: the next wrap.
        assert_eq!(accept(&mut w, 3), Ok((2 << 16) | 3));
        // More than half the space above the highest: the previous period
        // (and there, older than the window).
        assert_eq!(w.estimate(65_000), Some((1 << 16) | 65_000));
        assert_eq!(accept(&mut w, 65_000), Err(SrtpError::TooOld));
        assert_eq!(w.roc(), 2);
    }

    #[test]
    fn duplicates_and_packets_older_than_the_window_are_refused() {
        let mut w = RtpIndex::default();
        for s in 1000..1300u16 {
            accept(&mut w, s).ok();
        }
        assert_eq!(accept(&mut w, 1299), Err(SrtpError::Replayed));
        assert_eq!(accept(&mut w, 1299 - 127), Err(SrtpError::Replayed));
        assert_eq!(accept(&mut w, 1299 - 128), Err(SrtpError::TooOld));
        // A gap: the missing ones are accepted once, late.
        assert_eq!(accept(&mut w, 1310), Ok(1310));
        assert_eq!(accept(&mut w, 1305), Ok(1305));
        assert_eq!(accept(&mut w, 1305), Err(SrtpError::Replayed));
        assert_eq!(accept(&mut w, 1301), Ok(1301));
    }

    #[test]
    fn a_128_packet_window_holds_exactly() {
        let mut w = RtpIndex::default();
        accept(&mut w, 500).ok();
        accept(&mut w, 500 + 127).ok();
        // 500 is at delta 127: still inside, and a duplicate.
        assert_eq!(accept(&mut w, 500), Err(SrtpError::Replayed));
        assert_eq!(accept(&mut w, 501), Ok(501));
        accept(&mut w, 500 + 128).ok();
        assert_eq!(accept(&mut w, 500), Err(SrtpError::TooOld));
    }

    #[test]
    fn srtcp_indices_are_windowed_too() {
        let mut w = RtcpIndex::default();
        for i in [5u32, 6, 8, 7] {
            assert_eq!(w.check(i), Ok(()));
            w.commit(i);
        }
        assert_eq!(w.check(7), Err(SrtpError::Replayed));
        w.commit(300);
        assert_eq!(w.check(100), Err(SrtpError::TooOld));
        assert_eq!(w.check(299), Ok(()));
    }
}
