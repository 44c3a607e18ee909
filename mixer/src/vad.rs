//! Voice activity and automatic gain, per participant and per 20 ms frame.
//!
//! The detector compares a frame's energy with a noise floor it tracks
//! (falling at once to a quieter frame, rising slowly through steady
//! noise) and keeps a hangover after speech so word endings are not cut.
//! Only frames it calls voice are mixed: a conference of listeners costs
//! an energy sum per frame each.

/// Frames of hangover after the last voiced frame (200 ms at 20 ms).
const HANGOVER: u32 = 10;
/// A frame is voice when its mean power is this many times the floor (9 dB).
const OVER_FLOOR: u64 = 8;
/// And above this mean power at least (about −55 dBov).
const ABSOLUTE: u64 = 3_500;
/// The floor never goes below this mean power (−75 dBov), so that a
/// silent line (digital zero) does not make every sound voice.
const FLOOR_MIN: u64 = 35;

/// Voice activity of one participant.
#[derive(Debug, Clone)]
pub struct Vad {
    floor: u64,
    hang: u32,
    active: bool,
}

impl Default for Vad {
    fn default() -> Self {
        Vad::new()
    }
}

impl Vad {
    /// A detector that has heard nothing yet.
    pub fn new() -> Vad {
        Vad {
            floor: FLOOR_MIN,
            hang: 0,
            active: false,
        }
    }

    /// Judges a frame from its sum of squares over `samples` samples;
    /// returns whether the participant is talking.
    pub fn update(&mut self, energy: u64, samples: usize) -> bool {
        let power = energy / samples.max(1) as u64;
        let voiced = power > ABSOLUTE && power > self.floor.saturating_mul(OVER_FLOOR);
        // The floor follows quieter frames at once and louder ones slowly
        // (about +0.4 dB per frame), so speech does not lift it but a
        // noisier line does within seconds.
        if power < self.floor {
            self.floor = power.max(FLOOR_MIN);
        } else if !voiced {
            self.floor += (self.floor >> 4).max(1);
        }
        if voiced {
            self.hang = HANGOVER;
        } else {
            self.hang = self.hang.saturating_sub(1);
        }
        self.active = voiced || self.hang > 0;
        self.active
    }

    /// Whether the last frame was judged voice (or hangover).
    pub fn active(&self) -> bool {
        self.active
    }
}

/// Automatic gain towards a speech level, applied to a participant's
/// input while it talks.
#[derive(Debug, Clone)]
pub struct Agc {
    /// Current gain, Q12.
    gain: i32,
    /// Target mean power of voiced frames.
    target: u64,
}

/// Gain bounds: −12 dB … +18 dB, Q12.
const AGC_MIN: i32 = 1027;
const AGC_MAX: i32 = 32_690;

impl Agc {
    /// Gain control aiming at `target_dbov` (e.g. −20) for speech.
    pub fn new(target_dbov: f64) -> Agc {
        let rms = 32768.0 * 10f64.powf(target_dbov / 20.0);
        Agc {
            gain: crate::kernel::UNITY,
            target: (rms * rms) as u64,
        }
    }

    /// The gain (Q12) to apply now.
    pub fn gain(&self) -> i32 {
        self.gain
    }

    /// Learns from a voiced frame's mean power (before gain): moves the
    /// gain about 0.5 dB per frame towards the target, faster down than up
    /// so a shout is tamed within a syllable.
    pub fn update(&mut self, energy: u64, samples: usize, voiced: bool) {
        if !voiced {
            return;
        }
        let power = energy / samples.max(1) as u64;
        let g = i64::from(self.gain);
        let heard = ((power as u128 * (g * g) as u128) >> 24) as u64;
        if heard > self.target.saturating_mul(2) {
            self.gain = ((g * 3875) >> 12) as i32; // −0.5 dB
        } else if heard < self.target / 2 {
            self.gain = ((g * 4215) >> 12) as i32; // +0.25 dB
        }
        self.gain = self.gain.clamp(AGC_MIN, AGC_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvoip_codecs::tone::Tone;

    fn energy(pcm: &[i16]) -> u64 {
        pcm.iter()
            .map(|&x| (i64::from(x) * i64::from(x)) as u64)
            .sum()
    }

    #[test]
    fn speech_level_tone_is_voice_and_silence_and_noise_are_not() {
        let mut vad = Vad::new();
        let mut quiet = vec![0i16; 160];
        let mut s = 7u32;
        for x in &mut quiet {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *x = ((s >> 16) as i16) >> 9; // about −50 dBov of noise
        }
        for _ in 0..50 {
            vad.update(energy(&quiet), 160);
        }
        assert!(
            !vad.update(energy(&quiet), 160),
            "steady noise is not voice"
        );
        let mut tone = Tone::new(440.0, 6000.0, 8000);
        let mut frame = vec![0i16; 160];
        tone.fill(&mut frame);
        assert!(vad.update(energy(&frame), 160), "a tone at speech level is");
        for _ in 0..HANGOVER - 1 {
            assert!(vad.update(0, 160), "hangover keeps it talking");
        }
        assert!(!vad.update(0, 160), "then it stops");
    }

    #[test]
    fn agc_brings_a_quiet_talker_up_and_a_loud_one_down() {
        for (amp, up) in [(800.0, true), (30000.0, false)] {
            let mut agc = Agc::new(-20.0);
            let mut tone = Tone::new(300.0, amp, 8000);
            let mut frame = vec![0i16; 160];
            for _ in 0..200 {
                tone.fill(&mut frame);
                agc.update(energy(&frame), 160, true);
            }
            assert_eq!(agc.gain() > crate::kernel::UNITY, up, "amplitude {amp}");
        }
    }
}
