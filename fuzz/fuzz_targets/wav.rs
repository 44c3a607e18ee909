//! The WAV reader on arbitrary files (prompts come from operators and ng
//! clients): an error or audio, never a panic; audio read is resampled
//! to a call's rate as prompts are.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = rvoip_mixer::wav::read(data) {
        assert!(a.channels > 0 && (4000..=192_000).contains(&a.rate));
        let n = a.samples.len().min(4000);
        let out = rvoip_mixer::wav::resample(&a.samples[..n], a.rate, 8000);
        assert!(out.len() <= n * 8000 / a.rate as usize + 1);
    }
});
