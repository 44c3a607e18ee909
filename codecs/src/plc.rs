//! Packet loss concealment for codecs without their own (G.711, G.722,
//! L16), in the manner of ITU-T G.711 Appendix I: the lost audio is
//! synthesised by repeating the last pitch period of what was heard (the
//! period found by correlation, so the repetition joins in phase); after the first
//! 10 ms of loss more periods are repeated (two, then three) so the sound
//! does not buzz, and from then it fades by 20 % per 10 ms, to silence at
//! 60 ms. The first good frame after a loss is cross-faded from the
//! synthetic signal over a quarter period plus 4 ms per 10 ms lost (at
//! most 10 ms). Works at any rate; lengths are the Appendix's at 8 kHz,
//! scaled. Nothing allocates after `new`.

/// Appendix I's figures at 8 kHz, in samples.
const HISTORY_8K: usize = 390;
const PITCH_MIN_8K: usize = 40;
const PITCH_MAX_8K: usize = 120;
const CORRELATION_8K: usize = 160;

/// A concealer for one stream.
#[derive(Debug, Clone)]
pub struct Concealer {
    /// Samples per 8 kHz sample.
    scale: usize,
    rate: u32,
    /// The last audio heard (or synthesised), newest last.
    history: Vec<f32>,
    /// The pitch period found at the start of the loss.
    pitch: usize,
    /// The periods being repeated, oldest first (up to three).
    pattern: Vec<f32>,
    /// Periods in `pattern` now.
    periods: usize,
    /// Read position in `pattern`.
    pos: usize,
    /// Samples concealed in this loss.
    lost: usize,
    /// The synthetic signal's continuation, for the cross-fade into the
    /// next good frame.
    tail: Vec<f32>,
}

impl Concealer {
    /// A concealer for audio at `rate` Hz (a multiple of 8000 up to 48000
    /// works as the Appendix does; other rates are rounded down).
    pub fn new(rate: u32) -> Concealer {
        let scale = (rate / 8000).max(1) as usize;
        Concealer {
            scale,
            rate,
            history: vec![0.0; HISTORY_8K * scale],
            pitch: PITCH_MAX_8K * scale,
            pattern: Vec::with_capacity(3 * PITCH_MAX_8K * scale),
            periods: 0,
            pos: 0,
            lost: 0,
            tail: Vec::with_capacity(10 * 8 * scale + PITCH_MAX_8K * scale),
        }
    }

    /// The rate this concealer runs at.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Whether the stream is in a loss now.
    pub fn concealing(&self) -> bool {
        self.lost > 0
    }

    /// A good frame was decoded into `frame`: after a loss it is
    /// cross-faded in place from the synthetic signal; then it joins the
    /// history.
    pub fn good(&mut self, frame: &mut [i16]) {
        if self.lost > 0 {
            // Cross-fade over a quarter period plus 4 ms per 10 ms lost.
            let ms10 = 80 * self.scale;
            let extra = (self.lost / ms10) * 32 * self.scale;
            let len = (self.pitch / 4 + extra)
                .min(80 * self.scale)
                .min(frame.len());
            self.fill_tail(len);
            for (i, s) in frame.iter_mut().take(len).enumerate() {
                let w = (i + 1) as f32 / (len + 1) as f32;
                let v = self.tail[i] * (1.0 - w) + f32::from(*s) * w;
                *s = v.round().clamp(-32768.0, 32767.0) as i16;
            }
            self.lost = 0;
            self.periods = 0;
        }
        self.remember(frame);
    }

    /// Fills `out` with concealment for lost audio.
    pub fn conceal(&mut self, out: &mut [i16]) {
        if self.lost == 0 {
            self.start_loss();
        }
        let ms10 = 80 * self.scale;
        for s in out.iter_mut() {
            // More periods after 10 and 20 ms, as the Appendix does.
            let wanted = 1 + (self.lost / ms10).min(2);
            if wanted > self.periods {
                self.widen(wanted);
            }
            let v = self.pattern[self.pos];
            self.pos = (self.pos + 1) % self.pattern.len();
            // Fade: full for 10 ms, then −20 % per 10 ms, silent at 60 ms.
            let gain = if self.lost < ms10 {
                1.0
            } else {
                (1.0 - 0.2 * (self.lost - ms10) as f32 / ms10 as f32).max(0.0)
            };
            *s = (v * gain).round().clamp(-32768.0, 32767.0) as i16;
            self.lost += 1;
        }
        // The history keeps what was heard before the loss: widening
        // repeats real periods, not synthetic ones.
    }

    fn remember(&mut self, frame: &[i16]) {
        let h = self.history.len();
        if frame.len() >= h {
            for (d, s) in self.history.iter_mut().zip(&frame[frame.len() - h..]) {
                *d = f32::from(*s);
            }
        } else {
            self.history.copy_within(frame.len().., 0);
            for (d, s) in self.history[h - frame.len()..].iter_mut().zip(frame) {
                *d = f32::from(*s);
            }
        }
    }

    /// The pitch period: the lag in 5–15 ms whose past best matches the
    /// last 20 ms (normalised cross-correlation).
    fn find_pitch(&self) -> usize {
        let h = &self.history;
        let n = CORRELATION_8K * self.scale;
        let end = h.len();
        let recent = &h[end - n..];
        let mut best = (PITCH_MAX_8K * self.scale, f32::MIN);
        for lag in PITCH_MIN_8K * self.scale..=PITCH_MAX_8K * self.scale {
            if lag + n > end {
                break;
            }
            let past = &h[end - n - lag..end - lag];
            let (mut xy, mut yy) = (0f32, 0f32);
            for (x, y) in recent.iter().zip(past) {
                xy += x * y;
                yy += y * y;
            }
            let score = if yy > 0.0 { xy / yy.sqrt() } else { 0.0 };
            if score > best.1 {
                best = (lag, score);
            }
        }
        best.0
    }

    fn start_loss(&mut self) {
        self.pitch = self.find_pitch();
        self.periods = 0;
        self.widen(1);
    }

    /// Repeats the last `periods` pitch periods of what was heard before
    /// the loss, continuing at the same phase.
    fn widen(&mut self, periods: usize) {
        let p = self.pitch;
        let len = (p * periods).min(self.history.len() / p * p);
        let end = self.history.len();
        let phase = if self.pattern.is_empty() {
            0
        } else {
            self.pos % p
        };
        self.pattern.clear();
        self.pattern.extend_from_slice(&self.history[end - len..]);
        self.periods = periods;
        // The pattern's last period is the one played so far.
        self.pos = (len - p + phase) % len;
    }

    fn fill_tail(&mut self, len: usize) {
        self.tail.clear();
        let mut pos = self.pos;
        for _ in 0..len {
            let v = if self.pattern.is_empty() {
                0.0
            } else {
                self.pattern[pos]
            };
            pos = (pos + 1) % self.pattern.len().max(1);
            self.tail.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tone::{Tone, analyse};

    #[test]
    fn a_lost_frame_of_a_tone_is_filled_with_the_tone() {
        for rate in [8000u32, 16_000] {
            let frame = rate as usize / 50;
            let mut plc = Concealer::new(rate);
            let mut tone = Tone::new(400.0, 10_000.0, rate);
            let mut buf = vec![0i16; frame];
            for _ in 0..10 {
                tone.fill(&mut buf);
                plc.good(&mut buf);
            }
            plc.conceal(&mut buf);
            let (f, snr) = analyse(&buf, rate);
            assert!((f - 400.0).abs() < 5.0, "{rate}: {f}");
            assert!(snr > 10.0, "{rate}: {snr}");
            let level = crate::tone::level_dbov(&buf);
            assert!(level > -14.0, "{rate}: {level}");
        }
    }

    #[test]
    fn a_long_loss_fades_to_silence() {
        let mut plc = Concealer::new(8000);
        let mut tone = Tone::new(300.0, 10_000.0, 8000);
        let mut buf = [0i16; 160];
        for _ in 0..10 {
            tone.fill(&mut buf);
            plc.good(&mut buf);
        }
        for _ in 0..3 {
            plc.conceal(&mut buf);
        }
        assert!(plc.concealing());
        plc.conceal(&mut buf);
        assert!(buf.iter().all(|&s| s == 0), "silent after 60 ms");
        tone.fill(&mut buf);
        plc.good(&mut buf);
        assert!(!plc.concealing());
    }
}
