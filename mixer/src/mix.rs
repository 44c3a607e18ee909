//! N-party mixing: each participant hears the sum of the others.
//!
//! Per 20 ms frame, every talker's samples (after its gain) go into one
//! 32-bit sum. A participant who talked hears the sum minus its own voice,
//! saturated to 16 bits; everyone else hears the same saturated sum, so
//! all of them share one mix — and, in the dataplane, one encoded frame
//! per codec. Voice activity decides who talks: a silent participant costs
//! one energy sum per frame. The mix runs at the highest rate any
//! participant needs; the caller resamples to and from it.
//!
//! Driving contract, once per frame: write each participant's samples
//! with [`Mixer::put`] (or nothing, for a participant with no audio this
//! frame), call [`Mixer::mix`], then read [`Mixer::heard`] for each. No
//! allocation after [`Mixer::add`].

use crate::kernel::{Kernel, UNITY};
use crate::vad::{Agc, Vad};

/// A participant's handle in its mixer.
pub type MemberId = u32;

/// Frame length in milliseconds.
pub const FRAME_MS: u32 = 20;

/// What a participant hears this frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard<'a> {
    /// Nothing: nobody else talks, or the participant is deaf.
    Silence,
    /// The mix every non-talker hears; the same slice for all of them.
    Common(&'a [i16]),
    /// A mix of its own (it talked, or its volume differs).
    Own(&'a [i16]),
}

impl<'a> Heard<'a> {
    /// The samples, `None` for silence.
    pub fn samples(&self) -> Option<&'a [i16]> {
        match *self {
            Heard::Silence => None,
            Heard::Common(s) | Heard::Own(s) => Some(s),
        }
    }
}

/// Per-participant settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberSettings {
    /// Gain on what it says, dB.
    pub talk_db: f64,
    /// Gain on what it hears, dB.
    pub listen_db: f64,
    /// Muted: heard by nobody.
    pub muted: bool,
    /// Deaf: hears nothing.
    pub deaf: bool,
    /// Automatic gain on its voice towards −20 dBov.
    pub agc: bool,
}

impl Default for MemberSettings {
    fn default() -> Self {
        MemberSettings {
            talk_db: 0.0,
            listen_db: 0.0,
            muted: false,
            deaf: false,
            agc: false,
        }
    }
}

fn q12(db: f64) -> i32 {
    (f64::from(UNITY) * 10f64.powf(db.clamp(-60.0, 24.0) / 20.0)).round() as i32
}

#[derive(Debug)]
struct Member {
    /// Rate it needs (its codec's PCM rate).
    rate: u32,
    input: Vec<i16>,
    has_input: bool,
    /// Its voice as it went into the sum.
    own: Vec<i32>,
    out: Vec<i16>,
    talk: i32,
    listen: i32,
    settings: MemberSettings,
    vad: Vad,
    agc: Agc,
    talking: bool,
    personal: bool,
}

/// Mixer counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixCounters {
    /// Frames mixed.
    pub frames: u64,
    /// Participant-frames with a talker's voice in the sum.
    pub talker_frames: u64,
    /// Personal mixes made (talkers and listeners with their own volume).
    pub personal_mixes: u64,
}

/// One conference room's mix.
#[derive(Debug)]
pub struct Mixer {
    kernel: Kernel,
    rate: u32,
    members: Vec<Option<Member>>,
    sum: Vec<i32>,
    common: Vec<i16>,
    talkers: usize,
    counters: MixCounters,
}

/// Samples in one frame at `rate`.
pub fn frame_len(rate: u32) -> usize {
    (rate * FRAME_MS / 1000) as usize
}

impl Default for Mixer {
    fn default() -> Self {
        Mixer::new()
    }
}

impl Mixer {
    /// An empty room; the fastest kernel the CPU runs.
    pub fn new() -> Mixer {
        Mixer::with_kernel(Kernel::detect())
    }

    /// An empty room mixing with `kernel`.
    pub fn with_kernel(kernel: Kernel) -> Mixer {
        Mixer {
            kernel,
            rate: 8000,
            members: Vec::new(),
            sum: vec![0; frame_len(8000)],
            common: vec![0; frame_len(8000)],
            talkers: 0,
            counters: MixCounters::default(),
        }
    }

    /// The mixing rate: the highest any participant needs (8 kHz alone).
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Samples per frame at the mixing rate.
    pub fn frame_len(&self) -> usize {
        frame_len(self.rate)
    }

    /// Participants.
    pub fn len(&self) -> usize {
        self.members.iter().flatten().count()
    }

    /// Whether nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Talkers in the last frame mixed.
    pub fn talkers(&self) -> usize {
        self.talkers
    }

    /// Counters so far.
    pub fn counters(&self) -> MixCounters {
        self.counters
    }

    /// Adds a participant whose codec runs at `rate` Hz (8000, 16000,
    /// 48000, …); the room's rate rises to it if higher.
    pub fn add(&mut self, rate: u32, settings: MemberSettings) -> MemberId {
        let m = Member {
            rate,
            input: Vec::new(),
            has_input: false,
            own: Vec::new(),
            out: Vec::new(),
            talk: UNITY,
            listen: UNITY,
            settings,
            vad: Vad::new(),
            agc: Agc::new(-20.0),
            talking: false,
            personal: false,
        };
        let id = match self.members.iter().position(Option::is_none) {
            Some(i) => {
                self.members[i] = Some(m);
                i
            }
            None => {
                self.members.push(Some(m));
                self.members.len() - 1
            }
        } as MemberId;
        self.set(id, settings);
        self.resize();
        id
    }

    /// Removes a participant; the room's rate falls to what the others need.
    pub fn remove(&mut self, id: MemberId) {
        if let Some(slot) = self.members.get_mut(id as usize) {
            *slot = None;
        }
        while matches!(self.members.last(), Some(None)) {
            self.members.pop();
        }
        self.resize();
    }

    /// Changes a participant's gains, mute, deaf and AGC.
    pub fn set(&mut self, id: MemberId, settings: MemberSettings) {
        if let Some(Some(m)) = self.members.get_mut(id as usize) {
            m.settings = settings;
            m.talk = q12(settings.talk_db);
            m.listen = q12(settings.listen_db);
        }
    }

    /// A participant's settings.
    pub fn settings(&self, id: MemberId) -> Option<MemberSettings> {
        self.members.get(id as usize)?.as_ref().map(|m| m.settings)
    }

    fn resize(&mut self) {
        let rate = self
            .members
            .iter()
            .flatten()
            .map(|m| m.rate)
            .max()
            .unwrap_or(8000);
        self.rate = rate;
        let n = frame_len(rate);
        self.sum.resize(n, 0);
        self.common.resize(n, 0);
        for m in self.members.iter_mut().flatten() {
            m.input.resize(n, 0);
            m.own.resize(n, 0);
            m.out.resize(n, 0);
        }
    }

    /// This frame's audio from `id`, at the mixing rate; shorter input is
    /// padded with silence.
    pub fn put(&mut self, id: MemberId, pcm: &[i16]) {
        if let Some(Some(m)) = self.members.get_mut(id as usize) {
            let n = pcm.len().min(m.input.len());
            m.input[..n].copy_from_slice(&pcm[..n]);
            m.input[n..].fill(0);
            m.has_input = true;
        }
    }

    /// Mixes the frame: decides who talks, sums them, makes the mixes.
    pub fn mix(&mut self) {
        let k = self.kernel;
        let n = self.sum.len();
        self.sum.fill(0);
        self.talkers = 0;
        for m in self.members.iter_mut().flatten() {
            m.talking = false;
            if !m.has_input {
                m.vad.update(0, n);
                continue;
            }
            let energy = k.energy(&m.input);
            let voiced = m.vad.update(energy, n);
            if m.settings.agc {
                m.agc.update(energy, n, voiced);
            }
            if voiced && !m.settings.muted {
                let gain = if m.settings.agc {
                    ((i64::from(m.talk) * i64::from(m.agc.gain())) >> 12) as i32
                } else {
                    m.talk
                };
                k.scaled(&mut m.own, &m.input, gain);
                for (s, &o) in self.sum.iter_mut().zip(&m.own) {
                    *s += o;
                }
                m.talking = true;
                self.talkers += 1;
            }
            m.has_input = false;
        }
        k.saturate(&mut self.common, &self.sum, UNITY);
        self.counters.frames += 1;
        self.counters.talker_frames += self.talkers as u64;
        for m in self.members.iter_mut().flatten() {
            m.personal = false;
            if m.settings.deaf {
                continue;
            }
            if m.talking {
                k.minus(&mut m.out, &self.sum, &m.own, m.listen);
                m.personal = true;
            } else if m.listen != UNITY && self.talkers > 0 {
                k.saturate(&mut m.out, &self.sum, m.listen);
                m.personal = true;
            }
            if m.personal {
                self.counters.personal_mixes += 1;
            }
        }
    }

    /// What `id` hears this frame.
    pub fn heard(&self, id: MemberId) -> Heard<'_> {
        let Some(Some(m)) = self.members.get(id as usize) else {
            return Heard::Silence;
        };
        if m.settings.deaf {
            return Heard::Silence;
        }
        let others = self.talkers - usize::from(m.talking);
        if others == 0 {
            return Heard::Silence;
        }
        if m.personal {
            Heard::Own(&m.out)
        } else {
            Heard::Common(&self.common)
        }
    }

    /// The whole room this frame: every talker, saturated (what a room
    /// recording keeps).
    pub fn everyone(&self) -> &[i16] {
        &self.common
    }

    /// Whether `id` talked in the last frame.
    pub fn is_talking(&self, id: MemberId) -> bool {
        matches!(self.members.get(id as usize), Some(Some(m)) if m.talking)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvoip_codecs::tone::{Tone, goertzel};

    fn frames(
        mixer: &mut Mixer,
        tones: &mut [Option<Tone>],
        ids: &[MemberId],
        n: usize,
    ) -> Vec<Vec<i16>> {
        let mut heard = vec![Vec::new(); ids.len()];
        let len = mixer.frame_len();
        let mut buf = vec![0i16; len];
        for _ in 0..n {
            for (t, &id) in tones.iter_mut().zip(ids) {
                if let Some(t) = t {
                    t.fill(&mut buf);
                    mixer.put(id, &buf);
                }
            }
            mixer.mix();
            for (h, &id) in heard.iter_mut().zip(ids) {
                match mixer.heard(id).samples() {
                    Some(s) => h.extend_from_slice(s),
                    None => h.extend(std::iter::repeat_n(0, len)),
                }
            }
        }
        heard
    }

    /// Amplitude of the `f` Hz sine in the second half of `pcm`.
    fn level(pcm: &[i16], f: f64, rate: u32) -> f64 {
        let half = &pcm[pcm.len() / 2..];
        2.0 * goertzel(half, f, rate).sqrt() / half.len() as f64
    }

    #[test]
    fn each_participant_hears_the_others_and_not_itself() {
        let mut m = Mixer::new();
        let ids: Vec<_> = (0..3)
            .map(|_| m.add(8000, MemberSettings::default()))
            .collect();
        let freqs = [400.0, 700.0, 1100.0];
        let mut tones: Vec<_> = freqs
            .iter()
            .map(|&f| Some(Tone::new(f, 6000.0, 8000)))
            .collect();
        let heard = frames(&mut m, &mut tones, &ids, 50);
        for (i, h) in heard.iter().enumerate() {
            for (j, &f) in freqs.iter().enumerate() {
                let l = level(h, f, 8000);
                if i == j {
                    assert!(l < 30.0, "participant {i} hears itself: {l}");
                } else {
                    assert!(l > 5000.0, "participant {i} does not hear {f} Hz: {l}");
                }
            }
        }
        assert_eq!(m.talkers(), 3);
    }

    #[test]
    fn listeners_share_one_mix_and_silent_members_cost_no_personal_mix() {
        let mut m = Mixer::new();
        let ids: Vec<_> = (0..10)
            .map(|_| m.add(8000, MemberSettings::default()))
            .collect();
        let mut tones: Vec<Option<Tone>> = (0..10).map(|_| None).collect();
        tones[0] = Some(Tone::new(500.0, 6000.0, 8000));
        frames(&mut m, &mut tones, &ids, 5);
        let Heard::Common(a) = m.heard(ids[1]) else {
            panic!("a listener hears the common mix")
        };
        let Heard::Common(b) = m.heard(ids[9]) else {
            panic!("a listener hears the common mix")
        };
        assert!(std::ptr::eq(a, b), "one mix shared by every listener");
        assert_eq!(
            m.heard(ids[0]),
            Heard::Silence,
            "the only talker hears nobody"
        );
        assert_eq!(
            m.counters().personal_mixes,
            5,
            "only the talker had its own mix"
        );
    }

    #[test]
    fn mute_deaf_and_gains_do_what_they_say() {
        let mut m = Mixer::new();
        let a = m.add(8000, MemberSettings::default());
        let b = m.add(
            8000,
            MemberSettings {
                muted: true,
                ..MemberSettings::default()
            },
        );
        let c = m.add(
            8000,
            MemberSettings {
                deaf: true,
                ..MemberSettings::default()
            },
        );
        let d = m.add(
            8000,
            MemberSettings {
                listen_db: -6.0,
                ..MemberSettings::default()
            },
        );
        let mut tones = vec![
            Some(Tone::new(400.0, 8000.0, 8000)),
            Some(Tone::new(900.0, 8000.0, 8000)),
            None,
            None,
        ];
        let heard = frames(&mut m, &mut tones, &[a, b, c, d], 30);
        assert!(
            level(&heard[3], 900.0, 8000) < 30.0,
            "a muted member is heard by nobody"
        );
        assert!(level(&heard[0], 900.0, 8000) < 30.0);
        assert!(
            heard[2].iter().all(|&x| x == 0),
            "a deaf member hears nothing"
        );
        let full = level(&heard[1], 400.0, 8000);
        let half = level(&heard[3], 400.0, 8000);
        assert!(
            (half / full - 0.5).abs() < 0.05,
            "−6 dB listen gain: {half} vs {full}"
        );
    }

    #[test]
    fn the_room_runs_at_the_highest_rate_and_saturates_instead_of_wrapping() {
        let mut m = Mixer::new();
        let a = m.add(8000, MemberSettings::default());
        let b = m.add(48000, MemberSettings::default());
        let c = m.add(16000, MemberSettings::default());
        assert_eq!(m.rate(), 48000);
        assert_eq!(m.frame_len(), 960);
        let loud = vec![30000i16; 960];
        m.put(a, &loud);
        m.put(b, &loud);
        m.mix();
        let h = m.heard(c).samples().unwrap_or_default();
        assert!(
            h.iter().all(|&x| x == 32767),
            "two full-scale talkers clip at the rail"
        );
        m.remove(b);
        assert_eq!(m.rate(), 16000);
    }

    #[test]
    fn scalar_and_vectorised_rooms_mix_identically() {
        let mut outs = Vec::new();
        for k in [Kernel::Scalar, Kernel::detect()] {
            let mut m = Mixer::with_kernel(k);
            let ids: Vec<_> = (0..5)
                .map(|i| {
                    m.add(
                        16000,
                        MemberSettings {
                            talk_db: i as f64,
                            agc: i == 2,
                            ..MemberSettings::default()
                        },
                    )
                })
                .collect();
            let mut tones: Vec<_> = (0..5)
                .map(|i| Some(Tone::new(300.0 + 170.0 * i as f64, 9000.0, 16000)))
                .collect();
            outs.push(frames(&mut m, &mut tones, &ids, 40));
        }
        assert_eq!(outs[0], outs[1]);
    }
}
