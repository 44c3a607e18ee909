//! The control plane's own CPU per proxied call: the transaction-stateful
//! core (`rvoip_controlplane::element::SipCore`, record-routing, a static route)
//! fed the eleven messages of a call as SIPp's built-in uac and uas exchange
//! them through a proxy (INVITE, 180, 200, ACK, BYE, 200 and what the proxy
//! sends on), on simulated time advancing 250 µs per call (4000 calls per
//! second), so transactions linger for their 32 s as under load.
//!
//! Only the core's calls are timed (delivering a message, taking what it
//! sends, firing due timers); building the peers' messages is not. No
//! sockets, no rings: what is left is parsing, transactions, proxy logic and
//! writing the forwarded messages.
//!
//! Run: `cargo bench -p rvoip-benches --bench proxy_core`. Besides
//! criterion's report it prints µs per call and allocations per call.
// A benchmark reads the clock to time what it measures.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use rvoip_benches::{CallRun, CountingAlloc, allocations, live_bytes, per_call, timed_calls};
use rvoip_controlplane::element::{CoreConfig, Inbound, Outbound, SipCore, Transport};
use rvoip_controlplane::registrar::location::LocationService;
use rvoip_controlplane::registrar::{Registrar, RegistrarConfig, Users};
use rvoip_dataplane::sip::{Framing, HeaderName, Limits, SipMessage};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const PROXY: &str = "127.0.0.1:5060";
const UAC: &str = "127.0.0.1:5080";
const UAS: &str = "127.0.0.1:5070";
/// Simulated time per call: 4000 calls per second.
const CALL_SPACING_US: u64 = 250;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Stops the benchmark: the proxy did not pass a call through.
fn fail(why: &str) -> ! {
    eprintln!("proxy_core: {why}");
    std::process::exit(1)
}

fn new_core() -> SipCore {
    let config = CoreConfig {
        // As in the process: the dataplane checked the grammar.
        edge_checked: true,
        ..CoreConfig::routing_all_to(&["rvoip.test"], addr(PROXY), addr(UAS))
    };
    SipCore::new(
        config,
        Registrar::new(RegistrarConfig::default(), LocationService::in_memory()),
        Users::default(),
        b"bench-secret",
        &rvoip_dataplane::entropy::SeededEntropy::new(1),
    )
}

const SDP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn invite(n: u64) -> String {
    format!(
        "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bK-{n}-1-0\r\n\
From: sipp <sip:sipp@127.0.0.1:5080>;tag={n}SIPpTag001\r\nTo: service <sip:service@127.0.0.1:5060>\r\n\
Call-ID: {n}-bench@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@{UAC}\r\nMax-Forwards: 70\r\n\
Subject: Performance Test\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

/// The UAS's response to `req` (a request the proxy forwarded), with its To
/// tag and, for a 200 to the INVITE, its Contact and SDP.
fn response(req: &SipMessage<'_>, code: u16, reason: &str, n: u64) -> String {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.header_lines(HeaderName::Via) {
        s.push_str("Via: ");
        s.push_str(&String::from_utf8_lossy(v));
        s.push_str("\r\n");
    }
    for rr in req.header_lines(HeaderName::RecordRoute) {
        s.push_str("Record-Route: ");
        s.push_str(&String::from_utf8_lossy(rr));
        s.push_str("\r\n");
    }
    let h = |name| String::from_utf8_lossy(req.header(name).unwrap_or_default()).into_owned();
    s.push_str(&format!("From: {}\r\n", h(HeaderName::From)));
    let to = h(HeaderName::To);
    if to.contains("tag=") {
        s.push_str(&format!("To: {to}\r\n"));
    } else {
        s.push_str(&format!("To: {to};tag={n}SIPpTag012\r\n"));
    }
    s.push_str(&format!(
        "Call-ID: {}\r\nCSeq: {}\r\n",
        h(HeaderName::CallId),
        h(HeaderName::CSeq)
    ));
    if code == 200 && req.method().is_some_and(|m| m.as_bytes() == b"INVITE") {
        s.push_str(&format!(
            "Contact: <sip:{UAS};transport=UDP>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        ));
    } else {
        s.push_str("Content-Length: 0\r\n\r\n");
    }
    s
}

/// The UAC's in-dialog request (`ACK` or `BYE`) after the 200 it got.
fn in_dialog(ok: &SipMessage<'_>, method: &str, cseq: u32, n: u64) -> String {
    let h = |name| String::from_utf8_lossy(ok.header(name).unwrap_or_default()).into_owned();
    let mut s = format!(
        "{method} sip:{UAS};transport=UDP SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bK-{n}-{cseq}-{method}\r\n"
    );
    let routes: Vec<_> = ok.header_lines(HeaderName::RecordRoute).collect();
    for r in routes.iter().rev() {
        s.push_str(&format!("Route: {}\r\n", String::from_utf8_lossy(r)));
    }
    s.push_str(&format!(
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: sip:sipp@{UAC}\r\n\
Max-Forwards: 70\r\nSubject: Performance Test\r\nContent-Length: 0\r\n\r\n",
        h(HeaderName::From),
        h(HeaderName::To),
        h(HeaderName::CallId)
    ));
    s
}

fn parse(o: &Outbound) -> SipMessage<'_> {
    SipMessage::parse(&o.bytes, Framing::Datagram, &Limits::default()).unwrap_or_else(|e| {
        fail(&format!(
            "the proxy sent an unparsable message ({e}): {}",
            String::from_utf8_lossy(&o.bytes)
        ))
    })
}

/// One proxy and its simulated clock; `busy` is the time spent inside it.
struct Run {
    core: SipCore,
    now_us: u64,
    calls: u64,
    busy: Duration,
    /// Allocations made inside the core.
    allocs: u64,
    out: Vec<Outbound>,
}

impl Run {
    fn new() -> Self {
        Run {
            core: new_core(),
            now_us: 0,
            calls: 0,
            busy: Duration::ZERO,
            allocs: 0,
            out: Vec::new(),
        }
    }

    /// Delivers `text` from `from`; what the core sends is in `self.out`.
    fn deliver(&mut self, from: &str, text: &str) {
        let now = self.now_us / 1000;
        let inb = Inbound {
            bytes: text.as_bytes(),
            transport: Transport::Udp,
            local: addr(PROXY),
            remote: addr(from),
            conn: 0,
        };
        self.out.clear();
        self.out.reserve(4);
        let a = allocations();
        let t = Instant::now();
        self.core.on_message(now, 1_700_000_000_000 + now, inb);
        while let Some(o) = self.core.poll_outbound() {
            self.out.push(o);
        }
        self.busy += t.elapsed();
        self.allocs += allocations() - a;
    }

    /// The one message the core sent to `dest`.
    fn sent_to(&self, dest: &str) -> &Outbound {
        let d = addr(dest);
        self.out
            .iter()
            .find(|o| o.dest == d)
            .unwrap_or_else(|| fail(&format!("nothing sent to {dest}")))
    }

    /// One whole call; stops the process if the proxy does not pass it through.
    fn call(&mut self) {
        let n = self.calls;
        self.calls += 1;
        self.now_us += CALL_SPACING_US;
        let now = self.now_us / 1000;
        if self.core.next_deadline().is_some_and(|d| d <= now) {
            let a = allocations();
            let t = Instant::now();
            self.core.on_timer(now);
            while let Some(o) = self.core.poll_outbound() {
                black_box(o);
            }
            self.busy += t.elapsed();
            self.allocs += allocations() - a;
        }
        self.deliver(UAC, &invite(n));
        let fwd = self.sent_to(UAS).clone();
        let fwd = parse(&fwd);
        let ringing = response(&fwd, 180, "Ringing", n);
        let ok = response(&fwd, 200, "OK", n);
        self.deliver(UAS, &ringing);
        self.deliver(UAS, &ok);
        let ok_up = self.sent_to(UAC).clone();
        let ok_up = parse(&ok_up);
        if ok_up.status_code() != Some(200) {
            fail("the caller got no 200 for its INVITE");
        }
        self.deliver(UAC, &in_dialog(&ok_up, "ACK", 1, n));
        self.sent_to(UAS);
        self.deliver(UAC, &in_dialog(&ok_up, "BYE", 2, n));
        let bye = self.sent_to(UAS).clone();
        let bye = parse(&bye);
        self.deliver(UAS, &response(&bye, 200, "OK", n));
        if parse(self.sent_to(UAC)).status_code() != Some(200) {
            fail("the caller got no 200 for its BYE");
        }
    }
}

impl CallRun for Run {
    fn step(&mut self) {
        self.call();
    }
    fn busy(&self) -> Duration {
        self.busy
    }
    fn allocs(&self) -> u64 {
        self.allocs
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("proxy_core");
    let mut run = Run::new();
    group.bench_function("call", |b| {
        b.iter_custom(|iters| timed_calls(&mut run, iters))
    });
    group.finish();
}

/// A fixed run outside criterion for the summary line: 200,000 calls (50 s
/// of simulated time, past the 32 s linger), figures over the last 100,000.
fn summary() {
    let mut run = Run::new();
    let (per_call, allocs) = per_call(&mut run, 100_000, 100_000);
    let (servers, clients) = run.core.transactions();
    // The calls of the last 32 s are what the core still holds.
    let held = live_bytes() as f64 / (32 * 4000) as f64;
    println!(
        "proxy_core: {per_call:.2} µs of core CPU per call, {allocs:.1} allocations per call, \
         {held:.0} octets of heap held per call of the last 32 s \
         (4000 cps simulated; {servers} server and {clients} client transactions held)"
    );
}

criterion_group!(benches, bench);

fn main() {
    summary();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
