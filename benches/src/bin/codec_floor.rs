//! The floor of a transcoded call: the codec work alone (decode, resample
//! where the rates differ, encode; both directions) per 20 ms frame, as
//! calls one core could carry if it did nothing else. Pairs as `A:B`
//! (`PCMU:opus PCMA:G722 PCMU:G729`); Opus at the rate its other side
//! needs, with rvoip's default settings (24 kbit/s, complexity 10), as
//! the relay runs it. `--calls N` keeps N calls' codec states and works
//! through them in turn, as a relay carrying N calls does (their states
//! do not all fit in the caches; default 1), each from its first frame
//! for `--seconds S` (default 10: a call's hold in the benchmark).
//!
//!     codec_floor [--calls N] [--seconds S] PCMU:opus PCMA:G722
// A benchmark binary is an I/O shell: it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use rvoip_codecs::opus::OpusSettings;
use rvoip_codecs::resample::Resampler;
use rvoip_codecs::tone::Tone;
use rvoip_codecs::{Codec, CodecError, Decoder, Encoder};

/// One direction's work: decode `from`, resample, encode `to`.
struct Direction {
    dec: Decoder,
    enc: Encoder,
    resampler: Option<Resampler>,
    /// Payloads of `from` to decode, in a loop.
    input: Vec<Vec<u8>>,
}

fn rate_of(c: Codec, other: Codec) -> u32 {
    match c {
        Codec::Opus => other.pcm_rate(8000, 16_000).clamp(8000, 48_000),
        _ => c.pcm_rate(8000, 16_000),
    }
}

impl Direction {
    fn new(from: Codec, to: Codec) -> Result<Direction, CodecError> {
        let (rf, rt) = (rate_of(from, to), rate_of(to, from));
        let opus = OpusSettings::default();
        let mut src = Encoder::new(from, rf, &opus)?;
        let mut tone = Tone::new(1000.0, 9000.0, rf);
        let n = (rf / 50) as usize;
        let mut pcm = vec![0i16; n];
        let mut out = vec![0u8; 1500];
        let mut input = Vec::new();
        for _ in 0..250 {
            tone.fill(&mut pcm);
            let len = src.encode(&pcm, &mut out)?;
            input.push(out[..len].to_vec());
        }
        Ok(Direction {
            dec: Decoder::new(from, rf)?,
            enc: Encoder::new(to, rt, &opus)?,
            resampler: (rf != rt).then(|| Resampler::new(rf, rt)).transpose()?,
            input,
        })
    }

    fn frame(&mut self, i: usize, pcm: &mut [i16], resampled: &mut [i16], out: &mut [u8]) {
        let payload = &self.input[i % self.input.len()];
        let n = self.dec.decode(payload, pcm).unwrap_or(0);
        let pcm = match &mut self.resampler {
            Some(r) => {
                let m = r.process(&pcm[..n], resampled);
                &resampled[..m]
            }
            None => &pcm[..n],
        };
        let _ = self.enc.encode(pcm, out);
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str, default: usize| -> usize {
        match args.iter().position(|a| a == flag) {
            Some(i) => {
                let v = args
                    .get(i + 1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(default);
                args.drain(i..(i + 2).min(args.len()));
                v.max(1)
            }
            None => default,
        }
    };
    let calls = take("--calls", 1);
    let seconds = take("--seconds", 10);
    let pairs = args;
    println!(
        "{:<11} {:>12} {:>10}",
        "pair", "calls_per_core", "us_per_call_s"
    );
    for pair in pairs {
        let Some((a, b)) = pair.split_once(':') else {
            continue;
        };
        let (Some(a), Some(b)) = (
            Codec::from_name(a.as_bytes()),
            Codec::from_name(b.as_bytes()),
        ) else {
            println!("{pair:<11} unknown codec");
            continue;
        };
        let made: Result<Vec<(Direction, Direction)>, CodecError> = (0..calls)
            .map(|_| Ok((Direction::new(a, b)?, Direction::new(b, a)?)))
            .collect();
        let Ok(mut calls_up) = made else {
            println!("{pair:<11} not in this build");
            continue;
        };
        let (mut pcm, mut rs, mut out) = (vec![0i16; 5760], vec![0i16; 5760], vec![0u8; 1500]);
        // Each call from its start for `seconds` (a codec's cost changes as
        // it adapts to the signal: Opus on a tone costs more in its first
        // seconds), every call in turn.
        let rounds = 50 * seconds;
        let t = Instant::now();
        for i in 0..rounds {
            for (ab, ba) in calls_up.iter_mut() {
                ab.frame(i, &mut pcm, &mut rs, &mut out);
                ba.frame(i, &mut pcm, &mut rs, &mut out);
            }
        }
        let frames = rounds * calls;
        let per_frame_ns = t.elapsed().as_nanos() as f64 / frames as f64;
        // A call is 50 frames a second each way.
        let per_call_second_us = per_frame_ns * 50.0 / 1000.0;
        println!(
            "{pair:<11} {:>12.0} {:>10.1}",
            1e6 / per_call_second_us,
            per_call_second_us
        );
    }
}
