//! SIP parse cost: rvoip's indexer (and the accessors a proxy reads) against
//! the rsip crate on the same messages, plus allocations per parse.
//!
//! Run: `cargo bench -p rvoip-benches --bench sip_parse`. Besides criterion's
//! report it prints one summary line per message with ns/parse, allocations
//! and the ratio to rsip.
// A benchmark reads the clock to time what it measures.
#![allow(clippy::disallowed_methods)]

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

/// The same reads with rsip: parse, then the typed forms of the same headers.
fn rsip_proxy_view(msg: &[u8]) -> usize {
    use rsip::headers::untyped::{ToTypedHeader, UntypedHeader};
    use rsip::message::HeadersExt;
    let Ok(m) = rsip::SipMessage::try_from(msg) else {
        return 0;
    };
    let mut n = 0;
    n += m
        .via_header()
        .ok()
        .and_then(|v| v.typed().ok())
        .and_then(|v| v.branch().map(|b| b.to_string().len()))
        .unwrap_or(0);
    n += m
        .cseq_header()
        .ok()
        .and_then(|c| c.seq().ok())
        .map_or(0, |s| s as usize);
    n += m.call_id_header().map_or(0, |c| c.value().len());
    n += m
        .from_header()
        .ok()
        .and_then(|f| f.tag().ok().flatten())
        .map_or(0, |t| t.to_string().len());
    n += m
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .map_or(0, |t| t.to_string().len());
    n += m
        .max_forwards_header()
        .ok()
        .and_then(|mf| mf.num().ok())
        .map_or(0, |v| v as usize);
    n += m
        .contact_header()
        .ok()
        .map_or(0, |c| c.typed().is_ok() as usize);
    n
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
        g.bench_function("rsip_proxy_view", |b| {
            b.iter(|| rsip_proxy_view(black_box(msg)))
        });
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
    println!("\nsummary (median of 15 rounds x 20000 parses, ns per parse; allocations per parse)");
    println!(
        "{:<12} {:>8} {:>8} {:>7} {:>14} {:>16} {:>16}",
        "message", "index", "rsip", "ratio", "proxy_view", "rsip_proxy_view", "ratio"
    );
    for (name, msg) in [("invite_sdp", INVITE), ("ok_200", OK_200)] {
        let idx = measure(rvoip_index, msg, 15, 20_000);
        let rsip = measure(rsip_parse, msg, 15, 20_000);
        let view = measure(rvoip_proxy_view, msg, 15, 20_000);
        let rsip_view = measure(rsip_proxy_view, msg, 15, 20_000);
        println!(
            "{name:<12} {idx:>8.0} {rsip:>8.0} {:>6.1}x {view:>14.0} {rsip_view:>16.0} {:>15.1}x",
            rsip / idx,
            rsip_view / view
        );
        println!(
            "{:<12} allocations: index {:.1}, rsip {:.1}, proxy_view {:.1}, rsip_proxy_view {:.1}",
            "",
            allocs_per_call(rvoip_index, msg),
            allocs_per_call(rsip_parse, msg),
            allocs_per_call(rvoip_proxy_view, msg),
            allocs_per_call(rsip_proxy_view, msg)
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
