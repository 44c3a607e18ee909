//! Shared pieces of rvoip's benchmarks: realistic messages and an
//! allocation-counting allocator.

#[cfg(libsrtp2)]
pub mod libsrtp2;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Wraps the system allocator and counts allocations, so a benchmark can
/// report allocations per operation next to its timings.
#[derive(Debug)]
pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a relaxed atomic and does not affect the allocation.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations so far (process-wide).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Octets allocated and not yet freed (process-wide), as requested (the
/// allocator's own rounding and bookkeeping not counted).
pub fn live_bytes() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// A simulated run of calls through one of the control plane's cores: one
/// call per `step`, with the time and allocations spent inside the core
/// (not in building the peers' messages) added up.
pub trait CallRun {
    /// Runs one more call.
    fn step(&mut self);
    /// Time spent inside the core so far.
    fn busy(&self) -> Duration;
    /// Allocations made inside the core so far.
    fn allocs(&self) -> u64;
}

/// The time inside the core over `iters` more calls (criterion's
/// `iter_custom`).
pub fn timed_calls<R: CallRun>(run: &mut R, iters: u64) -> Duration {
    let before = run.busy();
    for _ in 0..iters {
        run.step();
    }
    run.busy() - before
}

/// Runs `warm` calls, then `measured` more: µs and allocations per call over
/// the measured ones.
pub fn per_call<R: CallRun>(run: &mut R, warm: u64, measured: u64) -> (f64, f64) {
    for _ in 0..warm {
        run.step();
    }
    let (busy, allocs) = (run.busy(), run.allocs());
    for _ in 0..measured {
        run.step();
    }
    let n = measured.max(1) as f64;
    (
        (run.busy() - busy).as_secs_f64() * 1e6 / n,
        (run.allocs() - allocs) as f64 / n,
    )
}

/// A realistic INVITE as a carrier access side sees it: 15 headers and an
/// SDP offer with three codecs and DTMF.
pub const INVITE: &[u8] = b"INVITE sip:+14155550123@core.example.net;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-524287-1---7f1a2b3c4d5e6f70;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:alice@198.51.100.20:5060;transport=udp>\r\n\
To: <sip:+14155550123@core.example.net;user=phone>\r\n\
From: \"Alice\" <sip:alice@access.example.net>;tag=9fxced76sl\r\n\
Call-ID: 3848276298220188511@198.51.100.20\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE, PRACK\r\n\
Supported: replaces, timer, 100rel\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
User-Agent: ExamplePhone/5.2.1\r\n\
P-Asserted-Identity: \"Alice\" <sip:+14155550100@access.example.net;user=phone>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 282\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 9 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=sendrecv\r\n";

/// The 200 OK a core proxy sends back for it, with two Record-Routes.
pub const OK_200: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-proxy-1;received=203.0.113.5\r\n\
Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-524287-1---7f1a2b3c4d5e6f70;rport=5060;received=198.51.100.20\r\n\
Record-Route: <sip:203.0.113.5;lr;ftag=9fxced76sl>\r\n\
Record-Route: <sip:192.0.2.10;lr>\r\n\
Contact: <sip:+14155550123@192.0.2.77:5060>\r\n\
To: <sip:+14155550123@core.example.net;user=phone>;tag=as5d8f1a2b\r\n\
From: \"Alice\" <sip:alice@access.example.net>;tag=9fxced76sl\r\n\
Call-ID: 3848276298220188511@198.51.100.20\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n\
Content-Length: 0\r\n\
\r\n";
