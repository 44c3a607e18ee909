//! SIP parse cost: rvoip's indexer (and the accessors a proxy reads) against
//! the rsip crate on the same messages, plus allocations per parse.
//!
//! Run: `cargo bench -p rvoip-benches --bench sip_parse`. Besides criterion's
//! report it prints one summary line per message with ns/parse, allocations
//! and the ratio to rsip.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group};
use rvoip_benches::{CountingAlloc, INVITE, OK_200, allocations};
use rvoip_dataplane::sip::{Framing, Limits, SipMessage};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn rvoip_index(msg: &[u8]) -> usize {
    let m = SipMessage::parse(msg, Framing::Datagram, &Limits::DEFAULT).map(|m| m.header_count());
    m.unwrap_or(0)
}

/// What a stateful proxy reads of every message: the top Via's branch,
/// CSeq, Call-ID, From/To tags, Max-Forwards, and the first Contact.
fn rvoip_proxy_view(msg: &[u8]) -> usize {
    let Ok(m) = SipMessage::parse(msg, Framing::Datagram, &Limits::DEFAULT) else {
        return 0;
    };
    let mut n = 0;
    n += m
        .top_via()
        .ok()
        .and_then(|v| v.branch())
        .map_or(0, <[u8]>::len);
    n += m.cseq().map_or(0, |c| c.seq as usize);
    n += m.call_id().map_or(0, <[u8]>::len);
    n += m.from().ok().and_then(|f| f.tag()).map_or(0, <[u8]>::len);
    n += m.to().ok().and_then(|t| t.tag()).map_or(0, <[u8]>::len);
    n += m.max_forwards().ok().flatten().map_or(0, usize::from);
    n += m.contacts().next().map_or(0, |c| c.is_ok() as usize);
    n
}

fn rsip_parse(msg: &[u8]) -> usize {
    match rsip::SipMessage::try_from(msg) {
        Ok(m) => rsip::message::HasHeaders::headers(&m).iter().count(),
        Err(_) => 0,
    }
}

fn bench(c: &mut Criterion) {
    for (name, msg) in [("invite_sdp", INVITE), ("ok_200", OK_200)] {
        assert!(
            rvoip_index(msg) > 0 && rsip_parse(msg) > 0,
            "{name} must parse"
        );
        let mut g = c.benchmark_group(name);
        g.bench_function("rvoip_index", |b| b.iter(|| rvoip_index(black_box(msg))));
        g.bench_function("rvoip_proxy_view", |b| {
            b.iter(|| rvoip_proxy_view(black_box(msg)))
        });
        g.bench_function("rsip", |b| b.iter(|| rsip_parse(black_box(msg))));
        g.finish();
    }
}

/// Median ns per call over `rounds` rounds of `iters` calls.
fn measure(f: fn(&[u8]) -> usize, msg: &[u8], rounds: usize, iters: usize) -> f64 {
    let mut per_round: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f(black_box(msg)));
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    per_round.sort_by(f64::total_cmp);
    per_round[rounds / 2]
}

fn allocs_per_call(f: fn(&[u8]) -> usize, msg: &[u8]) -> f64 {
    let n = 1000;
    let before = allocations();
    for _ in 0..n {
        black_box(f(black_box(msg)));
    }
    (allocations() - before) as f64 / n as f64
}

fn summary() {
    println!("\nsummary (median of 15 rounds x 20000 parses; allocations per parse)");
    println!(
        "{:<12} {:>16} {:>18} {:>10} {:>14} {:>16}",
        "message", "rvoip_index ns", "rvoip_proxy ns", "rsip ns", "rsip/index", "rsip/proxy_view"
    );
    for (name, msg) in [("invite_sdp", INVITE), ("ok_200", OK_200)] {
        let idx = measure(rvoip_index, msg, 15, 20_000);
        let view = measure(rvoip_proxy_view, msg, 15, 20_000);
        let rsip = measure(rsip_parse, msg, 15, 20_000);
        println!(
            "{name:<12} {idx:>16.0} {view:>18.0} {rsip:>10.0} {:>13.1}x {:>15.1}x",
            rsip / idx,
            rsip / view
        );
        println!(
            "{:<12} allocations: rvoip_index {:.1}, rvoip_proxy_view {:.1}, rsip {:.1}",
            "",
            allocs_per_call(rvoip_index, msg),
            allocs_per_call(rvoip_proxy_view, msg),
            allocs_per_call(rsip_parse, msg)
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    summary();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
