//! The conference mixer alone: one 20 ms frame of a room of 3, 10, 100 and
//! 1000 participants at 8 kHz — every participant's samples put, the mix
//! made, what each hears read — with the scalar and the AVX2 kernels (the
//! same arithmetic, results identical), all talking and with 3 talkers.
//! Criterion's element throughput is participant-frames per second; its
//! inverse is ns per participant-frame.
//!
//!     cargo bench -p rvoip-benches --bench mixer
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use rvoip_codecs::tone::Tone;
use rvoip_mixer::kernel::Kernel;
use rvoip_mixer::{MemberSettings, Mixer};

fn room(kernel: Kernel, n: usize, talkers: usize) -> (Mixer, Vec<u32>, Vec<Vec<i16>>) {
    let mut m = Mixer::with_kernel(kernel);
    let ids: Vec<u32> = (0..n)
        .map(|_| m.add(8000, MemberSettings::default()))
        .collect();
    let frames = (0..n)
        .map(|i| {
            let mut v = vec![0i16; 160];
            if i < talkers {
                Tone::new(300.0 + 37.0 * i as f64, 3000.0, 8000).fill(&mut v);
            }
            v
        })
        .collect();
    (m, ids, frames)
}

fn mix(c: &mut Criterion) {
    let kernels = [("scalar", Kernel::Scalar), ("avx2", Kernel::detect())];
    for (label, talkers) in [("all_talking", usize::MAX), ("3_talkers", 3)] {
        let mut g = c.benchmark_group(format!("mixer_frame_{label}"));
        for n in [3usize, 10, 100, 1000] {
            g.throughput(Throughput::Elements(n as u64));
            for (name, k) in kernels {
                let (mut m, ids, frames) = room(k, n, talkers.min(n));
                g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                    b.iter(|| {
                        for (id, f) in ids.iter().zip(&frames) {
                            m.put(*id, f);
                        }
                        m.mix();
                        let mut heard = 0usize;
                        for id in &ids {
                            heard += m.heard(*id).samples().map_or(0, |s| s.len());
                        }
                        black_box(heard)
                    })
                });
            }
        }
        g.finish();
    }
}

/// What a room's Opus costs per 20 ms frame: one encode (a talker's own
/// mix, or the mix every listener shares) and one decode, at the rates and
/// complexities a media server may run, with and without the voice hint
/// (the mix of three tones reads as music to libopus's analysis).
fn opus_room_codec(c: &mut Criterion) {
    use rvoip_codecs::opus::{OpusDecoder, OpusEncoder, OpusSettings};
    let mut g = c.benchmark_group("opus_room_frame");
    for rate in [16_000u32, 48_000] {
        let n = rate as usize / 50;
        // Three voices, as a mix sounds.
        let mut pcm = vec![0i16; n];
        for f in [310.0, 520.0, 770.0] {
            Tone::new(f, 3000.0, rate).add_to(&mut pcm);
        }
        for complexity in [1, 5, 10] {
            for voice in [false, true] {
                let s = OpusSettings {
                    complexity,
                    voice,
                    ..OpusSettings::default()
                };
                let mut enc = OpusEncoder::new(rate, &s).unwrap();
                let mut packet = [0u8; 1500];
                let id = format!(
                    "encode_{}k_c{complexity}{}",
                    rate / 1000,
                    if voice { "_voice" } else { "" }
                );
                g.bench_function(id, |b| {
                    b.iter(|| enc.encode(black_box(&pcm), &mut packet).unwrap())
                });
            }
        }
        let mut enc = OpusEncoder::new(rate, &OpusSettings::default()).unwrap();
        let mut packet = [0u8; 1500];
        let len = enc.encode(&pcm, &mut packet).unwrap();
        let sample = packet[..len].to_vec();
        let mut dec = OpusDecoder::new(rate).unwrap();
        let mut out = vec![0i16; n];
        g.bench_function(format!("decode_{}k", rate / 1000), |b| {
            b.iter(|| dec.decode(black_box(&sample), &mut out).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, mix, opus_room_codec);
criterion_main!(benches);
