//! SRTP cost per 172-octet RTP packet (12-octet header, 160 octets of G.711):
//! rvoip's protect and unprotect for every suite, side by side with the
//! system libsrtp2 on the same packets; then the relay's own CPU per packet
//! (`Relay::on_datagram`, no socket I/O) plain, SRTP→RTP and RTP→SRTP.
//!
//! Run: `cargo bench -p rvoip-benches --bench srtp`. After criterion's report
//! it prints a summary (median of 15 rounds × 20,000 packets) with the ratios
//! and the targets (AES_CM_128_HMAC_SHA1_80 protect ≤ 300 ns,
//! AEAD_AES_128_GCM ≤ 150 ns, transcrypt adding no more than that).
// A benchmark reads the clock to time what it measures.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group};
use rvoip_dataplane::media::relay::{
    Action, Component, LegSrtp, PeerSpec, Relay, RelayConfig, Side,
};
use rvoip_dataplane::media::rtp::{Ssrc, write_rtp_header};
use rvoip_dataplane::srtp::{MasterKey, SrtpContext, SrtpParams, Suite};

const LEN: usize = 172;
const ROUND: usize = 20_000;
const ROUNDS: usize = 15;

fn key(suite: Suite) -> MasterKey {
    let raw: Vec<u8> = (0..46u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    MasterKey::from_concatenated(
        suite,
        &raw[..suite.master_key_len() + suite.master_salt_len()],
    )
    .unwrap_or_else(|| unreachable!("lengths come from the suite"))
}

#[cfg(libsrtp2)]
fn raw_key(suite: Suite) -> Vec<u8> {
    let mut raw = [0u8; 46];
    let n = key(suite).concatenated(&mut raw);
    raw[..n].to_vec()
}

fn params(suite: Suite) -> SrtpParams {
    SrtpParams::new(suite, key(suite))
}

fn context(suite: Suite) -> SrtpContext {
    SrtpContext::new(&params(suite)).unwrap_or_else(|| unreachable!("key fits"))
}

fn rtp(seq: u16) -> [u8; 2048] {
    let mut buf = [0u8; 2048];
    let mut h = [0u8; 12];
    write_rtp_header(
        &mut h,
        false,
        0,
        seq,
        u32::from(seq).wrapping_mul(160),
        Ssrc(0x1234_5678),
    );
    buf[..12].copy_from_slice(&h);
    for (i, b) in buf[12..LEN].iter_mut().enumerate() {
        *b = (i as u8) ^ (seq as u8);
    }
    buf
}

/// `n` packets protected in sequence by a fresh context (what unprotect eats).
fn protected(suite: Suite, n: usize) -> Vec<(Vec<u8>, usize)> {
    let mut tx = context(suite);
    (0..n)
        .map(|i| {
            let mut b = rtp(i as u16);
            let len = tx.protect_rtp(&mut b, LEN).unwrap_or(0);
            (b[..len + 32].to_vec(), len)
        })
        .collect()
}

/// One side of the comparison: protect `n` packets, or unprotect them.
trait Impl {
    fn protect_round(&self, suite: Suite, n: usize) -> Duration;
    fn unprotect_round(&self, suite: Suite, pkts: &[(Vec<u8>, usize)]) -> Duration;
}

struct Rvoip;

impl Impl for Rvoip {
    fn protect_round(&self, suite: Suite, n: usize) -> Duration {
        let mut tx = context(suite);
        let template = rtp(0);
        let mut buf = [0u8; 2048];
        let t = Instant::now();
        for i in 0..n {
            buf[..LEN].copy_from_slice(&template[..LEN]);
            buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            black_box(tx.protect_rtp(&mut buf, LEN).ok());
        }
        t.elapsed()
    }
    fn unprotect_round(&self, suite: Suite, pkts: &[(Vec<u8>, usize)]) -> Duration {
        let mut rx = context(suite);
        let mut buf = [0u8; 2048];
        let t = Instant::now();
        for (p, len) in pkts {
            buf[..*len].copy_from_slice(&p[..*len]);
            black_box(rx.unprotect_rtp(&mut buf, *len).ok());
        }
        t.elapsed()
    }
}

/// libsrtp2 (through `rvoip_benches::libsrtp2`).
#[cfg(libsrtp2)]
mod libsrtp2 {
    use super::*;
    use rvoip_benches::libsrtp2::Session;

    pub(crate) struct Libsrtp;

    impl Impl for Libsrtp {
        fn protect_round(&self, suite: Suite, n: usize) -> Duration {
            let mut tx = Session::new(suite.name(), &raw_key(suite), true);
            let template = rtp(0);
            let mut buf = [0u8; 2048];
            let t = Instant::now();
            for i in 0..n {
                buf[..LEN].copy_from_slice(&template[..LEN]);
                buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
                black_box(tx.protect(&mut buf, LEN));
            }
            t.elapsed()
        }
        fn unprotect_round(&self, suite: Suite, pkts: &[(Vec<u8>, usize)]) -> Duration {
            let mut rx = Session::new(suite.name(), &raw_key(suite), false);
            let mut buf = [0u8; 2048];
            let t = Instant::now();
            for (p, len) in pkts {
                buf[..*len].copy_from_slice(&p[..*len]);
                let st = rx.unprotect(&mut buf, *len);
                debug_assert_eq!(st, 0);
                black_box(st);
            }
            t.elapsed()
        }
    }
}

/// A relay with one call: A at 10.0.0.1 (endpoint 1), B at 10.0.0.2
/// (endpoint 2), RTCP multiplexed; leg A keyed with `srtp`, B plain.
fn relay(srtp: Option<Suite>) -> Relay {
    let mut r = Relay::new(RelayConfig::default(), 0);
    let id = r.create_session(0, 1);
    r.bind_endpoint(1, id, 0, Side::A, Component::Rtp);
    r.bind_endpoint(2, id, 0, Side::B, Component::Rtp);
    for (side, ip) in [(Side::A, "10.0.0.1:4000"), (Side::B, "10.0.0.2:5000")] {
        let addr: SocketAddr = ip.parse().unwrap_or_else(|_| unreachable!("literal"));
        r.set_peer(
            id,
            0,
            side,
            PeerSpec {
                rtp: Some(addr),
                rtcp: None,
                rtcp_mux: true,
                clock_rate: 8000,
                feedback: false,
            },
        );
    }
    if let Some(suite) = srtp {
        r.set_crypto(
            id,
            0,
            Side::A,
            &LegSrtp {
                rx: Some(params(suite)),
                tx: Some(params(suite)),
            },
        );
    }
    r
}

const A: &str = "10.0.0.1:4000";
const B: &str = "10.0.0.2:5000";

/// The relay's time for `n` packets from `from` on endpoint `ep`; packets are
/// taken from `pkts` when given (SRTP in), else plain RTP with rising seq.
fn relay_round(
    r: &mut Relay,
    ep: u32,
    from: &str,
    n: usize,
    pkts: Option<&[(Vec<u8>, usize)]>,
) -> Duration {
    let src: SocketAddr = from.parse().unwrap_or_else(|_| unreachable!("literal"));
    let template = rtp(0);
    let mut buf = [0u8; 2048];
    let t = Instant::now();
    for i in 0..n {
        let mut len = match pkts {
            Some(p) => {
                let (p, l) = &p[i];
                buf[..*l].copy_from_slice(&p[..*l]);
                *l
            }
            None => {
                buf[..LEN].copy_from_slice(&template[..LEN]);
                buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
                LEN
            }
        };
        let a = r.on_datagram(i as u64, i as u64 * 20_000_000, ep, src, &mut buf, &mut len);
        debug_assert!(matches!(a, Action::Forward { .. }), "{a:?}");
        black_box(a);
    }
    t.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for suite in Suite::ALL {
        let name = suite.name();
        g.bench_function(format!("rvoip_protect/{name}"), |b| {
            b.iter_custom(|iters| Rvoip.protect_round(suite, iters as usize));
        });
        g.bench_function(format!("rvoip_unprotect/{name}"), |b| {
            b.iter_batched(
                || protected(suite, 1000),
                |p| Rvoip.unprotect_round(suite, &p),
                BatchSize::LargeInput,
            );
        });
        #[cfg(libsrtp2)]
        if suite != Suite::F8128HmacSha1_80 {
            g.bench_function(format!("libsrtp2_protect/{name}"), |b| {
                b.iter_custom(|iters| libsrtp2::Libsrtp.protect_round(suite, iters as usize));
            });
        }
    }
    g.finish();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ns_per_packet(mut round: impl FnMut() -> Duration) -> f64 {
    median(
        (0..ROUNDS)
            .map(|_| round().as_nanos() as f64 / ROUND as f64)
            .collect(),
    )
}

fn summary() {
    println!(
        "\nsummary (median of {ROUNDS} rounds x {ROUND} packets of {LEN} octets, ns per packet)"
    );
    println!(
        "{:<26} {:>14} {:>16} {:>17} {:>19} {:>8} {:>8}",
        "suite",
        "rvoip protect",
        "rvoip unprotect",
        "libsrtp2 protect",
        "libsrtp2 unprotect",
        "ratio p",
        "ratio u"
    );
    for suite in Suite::ALL {
        let pkts = protected(suite, ROUND);
        let p = ns_per_packet(|| Rvoip.protect_round(suite, ROUND));
        let u = ns_per_packet(|| Rvoip.unprotect_round(suite, &pkts));
        // libsrtp 2 has no AES-f8.
        #[cfg(libsrtp2)]
        let (lp, lu) = if suite == Suite::F8128HmacSha1_80 {
            (f64::NAN, f64::NAN)
        } else {
            (
                ns_per_packet(|| libsrtp2::Libsrtp.protect_round(suite, ROUND)),
                ns_per_packet(|| libsrtp2::Libsrtp.unprotect_round(suite, &pkts)),
            )
        };
        #[cfg(not(libsrtp2))]
        let (lp, lu) = (f64::NAN, f64::NAN);
        println!(
            "{:<26} {p:>14.1} {u:>16.1} {lp:>17.1} {lu:>19.1} {:>7.1}x {:>7.1}x",
            suite.name(),
            lp / p,
            lu / u
        );
    }
    println!("\nrelay CPU per packet (Relay::on_datagram, no socket I/O), ns");
    println!(
        "{:<26} {:>10} {:>16} {:>16}",
        "leg A keying", "plain", "SRTP->RTP (A>B)", "RTP->SRTP (B>A)"
    );
    let mut plain = relay(None);
    let base = ns_per_packet(|| relay_round(&mut plain, 1, A, ROUND, None));
    println!("{:<26} {base:>10.1}", "none (RTP both legs)");
    for suite in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm] {
        let pkts = protected(suite, ROUND);
        let down = ns_per_packet(|| {
            let mut r = relay(Some(suite));
            relay_round(&mut r, 1, A, ROUND, Some(&pkts))
        });
        let up = ns_per_packet(|| {
            let mut r = relay(Some(suite));
            // B's packets need A latched first, so A's peer is known: it is
            // (the SDP gives it), and B's first packet latches B.
            relay_round(&mut r, 2, B, ROUND, None)
        });
        println!(
            "{:<26} {:>10} {down:>16.1} {up:>16.1}   (+{:.1}, +{:.1} over plain)",
            suite.name(),
            "",
            down - base,
            up - base
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    summary();
    Criterion::default().configure_from_args().final_summary();
}
