//! Per codec: nanoseconds to encode and to decode one 20 ms frame, rvoip's
//! codecs beside the implementations other SBCs use, called directly on
//! the same input in the same run: spandsp (G.711, G.722), libopus (Opus at
//! 8 and 48 kHz, rvoip's settings: 24 kbit/s, complexity 10), bcg729 (G.729A,
//! with `--features g729`). Also the resampler (8 ↔ 16 ↔ 48 kHz).
//!
//!     cargo bench -p rvoip-benches --bench codecs [--features g729]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use rvoip_codec_reference as reference;
use rvoip_codecs::opus::{OpusDecoder, OpusEncoder, OpusSettings};
use rvoip_codecs::resample::Resampler;
use rvoip_codecs::tone::Tone;
use rvoip_codecs::{g711, g722};

fn tone(rate: u32, n: usize) -> Vec<i16> {
    let mut t = Tone::new(1000.0, 9000.0, rate);
    let mut v = vec![0i16; n];
    t.fill(&mut v);
    v
}

fn g711_frames(c: &mut Criterion) {
    let pcm = tone(8000, 160);
    let mut codes = [0u8; 160];
    let mut out = [0i16; 160];
    let mut g = c.benchmark_group("g711_ulaw_20ms");
    g.bench_function("rvoip_encode", |b| {
        b.iter(|| g711::encode_ulaw(black_box(&pcm), &mut codes))
    });
    g.bench_function("rvoip_decode", |b| {
        b.iter(|| g711::decode_ulaw(black_box(&codes), &mut out))
    });
    let mut s = reference::SpandspG711::new(true).unwrap();
    g.bench_function("spandsp_encode", |b| {
        b.iter(|| s.encode(black_box(&pcm), &mut codes))
    });
    g.bench_function("spandsp_decode", |b| {
        b.iter(|| s.decode(black_box(&codes), &mut out))
    });
    g.finish();
}

fn g722_frames(c: &mut Criterion) {
    let pcm = tone(16_000, 320);
    let mut codes = [0u8; 160];
    let mut out = [0i16; 320];
    let mut g = c.benchmark_group("g722_20ms");
    let mut enc = g722::G722Encoder::new();
    let mut dec = g722::G722Decoder::new();
    g.bench_function("rvoip_encode", |b| {
        b.iter(|| enc.encode(black_box(&pcm), &mut codes))
    });
    g.bench_function("rvoip_decode", |b| {
        b.iter(|| dec.decode(black_box(&codes), &mut out))
    });
    let mut senc = reference::SpandspG722Encoder::new().unwrap();
    let mut sdec = reference::SpandspG722Decoder::new().unwrap();
    g.bench_function("spandsp_encode", |b| {
        b.iter(|| senc.encode(black_box(&pcm), &mut codes))
    });
    g.bench_function("spandsp_decode", |b| {
        b.iter(|| sdec.decode(black_box(&codes), &mut out))
    });
    g.finish();
}

fn opus_frames(c: &mut Criterion) {
    let settings = OpusSettings::default();
    for rate in [8000u32, 48_000] {
        let n = rate as usize / 50;
        let pcm = tone(rate, n);
        let mut packet = [0u8; 1500];
        let mut out = vec![0i16; n];
        let mut g = c.benchmark_group(format!("opus_{}k_20ms", rate / 1000));
        let mut enc = OpusEncoder::new(rate, &settings).unwrap();
        let len = enc.encode(&pcm, &mut packet).unwrap();
        let sample = packet[..len].to_vec();
        g.bench_function("rvoip_encode", |b| {
            b.iter(|| enc.encode(black_box(&pcm), &mut packet).unwrap())
        });
        let mut dec = OpusDecoder::new(rate).unwrap();
        g.bench_function("rvoip_decode", |b| {
            b.iter(|| dec.decode(black_box(&sample), &mut out).unwrap())
        });
        let mut lenc =
            reference::OpusEncoder::new(rate as i32, settings.bitrate, settings.complexity)
                .unwrap();
        g.bench_function("libopus_encode", |b| {
            b.iter(|| lenc.encode(black_box(&pcm), &mut packet))
        });
        let mut ldec = reference::OpusDecoder::new(rate as i32).unwrap();
        g.bench_function("libopus_decode", |b| {
            b.iter(|| ldec.decode(black_box(&sample), &mut out))
        });
        g.finish();
    }
}

#[cfg(feature = "g729")]
fn g729_frames(c: &mut Criterion) {
    use rvoip_codecs::g729::{G729Decoder, G729Encoder};
    let pcm = tone(8000, 160);
    let mut bits = [0u8; 20];
    let mut out = [0i16; 160];
    let mut g = c.benchmark_group("g729_20ms");
    let mut enc = G729Encoder::new().unwrap();
    let mut dec = G729Decoder::new().unwrap();
    enc.encode(&pcm, &mut bits).unwrap();
    let sample = bits;
    g.bench_function("rvoip_encode", |b| {
        b.iter(|| enc.encode(black_box(&pcm), &mut bits).unwrap())
    });
    g.bench_function("rvoip_decode", |b| {
        b.iter(|| dec.decode(black_box(&sample), &mut out).unwrap())
    });
    let mut benc = reference::Bcg729Encoder::new().unwrap();
    let mut bdec = reference::Bcg729Decoder::new().unwrap();
    let frames: Vec<[i16; 80]> = pcm
        .chunks_exact(80)
        .map(|c| c.try_into().unwrap())
        .collect();
    let mut one = [0u8; 10];
    let mut half = [0i16; 80];
    g.bench_function("bcg729_encode", |b| {
        b.iter(|| {
            for f in &frames {
                benc.encode(black_box(f), &mut one);
            }
        })
    });
    let s0: [u8; 10] = sample[..10].try_into().unwrap();
    g.bench_function("bcg729_decode", |b| {
        b.iter(|| {
            bdec.decode(black_box(&s0), &mut half);
            bdec.decode(black_box(&s0), &mut half);
        })
    });
    g.finish();
}

#[cfg(not(feature = "g729"))]
fn g729_frames(_: &mut Criterion) {}

fn resampling(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample_20ms");
    for (from, to) in [
        (8000u32, 16_000u32),
        (16_000, 8000),
        (8000, 48_000),
        (48_000, 8000),
    ] {
        let pcm = tone(from, from as usize / 50);
        let mut out = vec![0i16; to as usize / 50];
        let mut r = Resampler::new(from, to).unwrap();
        g.bench_function(format!("{}k_to_{}k", from / 1000, to / 1000), |b| {
            b.iter(|| r.process(black_box(&pcm), &mut out))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    g711_frames,
    g722_frames,
    opus_frames,
    g729_frames,
    resampling
);
criterion_main!(benches);
