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

criterion_group!(benches, mix);
criterion_main!(benches);
