//! DTMF both ways: RFC 4733 telephone-event payloads read and written,
//! in-band tones generated (ITU-T Q.23 frequency pairs) and detected
//! (Goertzel filters on each 20 ms block with the usual checks: both tones
//! present, twist within limits, no other tone of the group close, the
//! pair most of the block's energy, and two blocks in a row). When one side
//! of a call negotiated telephone-event and the other did not, the media
//! stage turns one form into the other.

use crate::tone::{Tone, goertzel};

/// Low-group (row) frequencies, Hz.
const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies, Hz.
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Keys by row and column.
const KEYS: [[u8; 4]; 4] = [[1, 2, 3, 12], [4, 5, 6, 13], [7, 8, 9, 14], [10, 0, 11, 15]];

/// The character of an RFC 4733 DTMF event (0–15): `0`–`9`, `*`, `#`,
/// `A`–`D`.
pub fn event_char(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The RFC 4733 event of a DTMF character.
pub fn char_event(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(c as u8 - b'A' + 12),
        'a'..='d' => Some(c as u8 - b'a' + 12),
        _ => None,
    }
}

/// An RFC 4733 §2.3 event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event (0–15 for DTMF).
    pub event: u8,
    /// E: the event has ended.
    pub end: bool,
    /// Power level, −dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads the first event of a payload (four octets; a payload may
    /// carry more, RFC 4733 §2.5.1.5, which the first stands for).
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let b = payload.get(..4)?;
        Some(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// Writes the payload.
    pub fn write(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// The in-band tone pair of one DTMF event.
#[derive(Debug, Clone, Copy)]
pub struct DtmfTone {
    low: Tone,
    high: Tone,
}

impl DtmfTone {
    /// The tones of `event` at `rate` Hz, each at `volume` −dBm0 (Q.23
    /// sends each between −4 and −13 dBm0; 0 dBm0 is taken as −3.17 dBov).
    pub fn new(event: u8, volume: u8, rate: u32) -> Option<DtmfTone> {
        let (r, c) =
            (0..16).find_map(|i| (KEYS[i / 4][i % 4] == event).then_some((i / 4, i % 4)))?;
        let dbov = -3.17 - f64::from(volume.min(63));
        let amplitude = 32767.0 * 10f64.powf(dbov / 20.0);
        Some(DtmfTone {
            low: Tone::new(ROWS[r], amplitude, rate),
            high: Tone::new(COLS[c], amplitude, rate),
        })
    }

    /// Writes the next samples of the pair over `out`.
    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out.iter_mut() {
            let v = self.low.next_sample() + self.high.next_sample();
            *s = v.clamp(-32768.0, 32767.0) as i16;
        }
    }
}

/// What the detector saw in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// A digit began (confirmed over two blocks); its first block started
    /// `offset` samples before the end of this one.
    Began {
        /// The event.
        event: u8,
        /// Samples from its start to the end of this block.
        offset: u32,
    },
    /// The digit ended after `samples`.
    Ended {
        /// The event.
        event: u8,
        /// Its length in samples.
        samples: u32,
    },
}

/// An in-band DTMF detector for one stream.
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    rate: u32,
    block: usize,
    /// Samples gathered towards the next block.
    pending: Vec<i16>,
    /// The digit the last block held.
    last: Option<u8>,
    /// The digit confirmed and running, with its length so far.
    current: Option<(u8, u32)>,
    /// Blocks without the running digit.
    gap: u8,
}

impl DtmfDetector {
    /// A detector for PCM at `rate` Hz, in blocks of 20 ms.
    pub fn new(rate: u32) -> DtmfDetector {
        let block = (rate / 50).max(1) as usize;
        DtmfDetector {
            rate,
            block,
            pending: Vec::with_capacity(block),
            last: None,
            current: None,
            gap: 0,
        }
    }

    /// Feeds `pcm`; calls `on` for what it detects.
    pub fn feed(&mut self, pcm: &[i16], mut on: impl FnMut(Detected)) {
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (self.block - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.block {
                let digit = self.classify();
                self.pending.clear();
                self.step(digit, &mut on);
            }
        }
    }

    fn step(&mut self, digit: Option<u8>, on: &mut impl FnMut(Detected)) {
        let block = self.block as u32;
        match self.current {
            Some((d, n)) if digit == Some(d) => {
                self.current = Some((d, n + block));
                self.gap = 0;
            }
            Some((d, n)) => {
                // One block's dropout is tolerated; two end the digit.
                self.gap += 1;
                if self.gap >= 2 || digit.is_some() {
                    on(Detected::Ended {
                        event: d,
                        samples: n,
                    });
                    self.current = None;
                    self.gap = 0;
                } else {
                    self.current = Some((d, n));
                }
            }
            None => {
                if let Some(d) = digit
                    && self.last == Some(d)
                {
                    self.current = Some((d, 2 * block));
                    on(Detected::Began {
                        event: d,
                        offset: 2 * block,
                    });
                }
            }
        }
        self.last = digit;
    }

    /// The digit in the pending block, if the checks pass.
    fn classify(&self) -> Option<u8> {
        let pcm = &self.pending;
        let n = pcm.len() as f64;
        let amplitude = |f: f64| 2.0 * goertzel(pcm, f, self.rate).max(0.0).sqrt() / n;
        let rows = ROWS.map(amplitude);
        let cols = COLS.map(amplitude);
        let best = |a: &[f64; 4]| {
            let mut i = 0;
            for j in 1..4 {
                if a[j] > a[i] {
                    i = j;
                }
            }
            i
        };
        let (r, c) = (best(&rows), best(&cols));
        let (ar, ac) = (rows[r], cols[c]);
        // Each tone at least about −35 dBov.
        if ar < 600.0 || ac < 600.0 {
            return None;
        }
        // Twist: the high tone at most 4 dB under or 8 dB over the low.
        let twist = 20.0 * (ac / ar).log10();
        if !(-4.0..=8.0).contains(&twist) {
            return None;
        }
        // No other tone of either group within 10 dB.
        let clear = |a: &[f64; 4], i: usize| (0..4).all(|j| j == i || a[j] * 3.16 < a[i]);
        if !clear(&rows, r) || !clear(&cols, c) {
            return None;
        }
        // The pair is most of the block's power.
        let power: f64 = pcm
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            / n;
        if (ar * ar + ac * ac) / 2.0 < 0.7 * power {
            return None;
        }
        Some(KEYS[r][c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_generated_is_detected_as_itself() {
        for rate in [8000u32, 16_000] {
            for event in 0..16u8 {
                let mut det = DtmfDetector::new(rate);
                let mut got = Vec::new();
                let mut tone = DtmfTone::new(event, 10, rate).unwrap_or_else(|| panic!("{event}"));
                let mut pcm = vec![0i16; rate as usize / 10];
                tone.fill(&mut pcm);
                det.feed(&pcm, |d| got.push(d));
                det.feed(&vec![0i16; rate as usize / 10], |d| got.push(d));
                let block = rate / 50;
                assert_eq!(
                    got,
                    vec![
                        Detected::Began {
                            event,
                            offset: 2 * block
                        },
                        Detected::Ended {
                            event,
                            samples: 5 * block
                        }
                    ],
                    "{event} at {rate}"
                );
            }
        }
    }

    #[test]
    fn speech_like_tones_and_silence_are_not_digits() {
        let mut det = DtmfDetector::new(8000);
        let mut got = 0;
        let mut pcm = vec![0i16; 8000];
        Tone::new(697.0, 8000.0, 8000).fill(&mut pcm);
        det.feed(&pcm, |_| got += 1);
        let mut chord = vec![0i16; 8000];
        Tone::new(697.0, 6000.0, 8000).fill(&mut chord);
        Tone::new(1209.0, 6000.0, 8000).add_to(&mut chord);
        Tone::new(400.0, 9000.0, 8000).add_to(&mut chord);
        det.feed(&chord, |_| got += 1);
        det.feed(&[0i16; 8000], |_| got += 1);
        assert_eq!(got, 0);
    }

    #[test]
    fn event_payloads_read_back_as_written() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1600,
        };
        assert_eq!(e.write(), [11, 0x8a, 0x06, 0x40]);
        assert_eq!(TelephoneEvent::parse(&e.write()), Some(e));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
        assert_eq!(event_char(10), Some('*'));
        assert_eq!(char_event('D'), Some(15));
        assert_eq!(event_char(16), None);
    }
}
