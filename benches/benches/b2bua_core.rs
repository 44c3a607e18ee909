//! The control plane's own CPU per B2BUA call: the SIP core in B2BUA mode,
//! built from `config/sbc.toml` the way the control-plane process builds it
//! (policy, dialog journal on disk, CDR writer thread, media orders over a
//! real shared-memory order channel), fed the calls `rvoip-loadtest` places
//! and answers (INVITE with SDP, 180, 200 with SDP, ACK, a 1 s hold, BYE,
//! 200), 4000 calls per second on simulated time, so about 4000 calls are up
//! at once and finished transactions linger their 32 s as under load.
//!
//! Only the control plane's side is timed: delivering a message, answering
//! what the relay sent back, firing due timers, writing the journal, handing
//! CDRs to their writer, taking what it sends. The relay's side of the order
//! channel (reading an order, writing an SDP reply) and the peers' messages
//! are not. No SIP sockets: what is left is parsing, transactions, the
//! B2BUA's dialogs and policy, SDP handling and writing both legs' messages.
//!
//! The same calls again with the core trunk as a DNS name (`{ uri =
//! "sip:trunk.rvoip.test" }`, resolved once to the same two peers, cache
//! warm): the cost of RFC 3263 routing per call, side by side.
//!
//! Run: `cargo bench -p rvoip-benches --bench b2bua_core`. Besides
//! criterion's report it prints µs per call and allocations per call.
// A benchmark reads the clock to time what it measures.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use rvoip_benches::{CallRun, CountingAlloc, allocations, per_call, timed_calls};
use rvoip_controlplane::element::{Inbound, Outbound, SipCore, Transport};
use rvoip_controlplane::process::{b2bua_from_config, core_from_config};
use rvoip_controlplane::sbc::cdr::CdrWriter;
use rvoip_dataplane::engine::ng_shm::{
    ORDER_CHANNEL_ID, ORDER_SLOT_SIZE, ORDER_SLOTS, orders_path,
};
use rvoip_dataplane::media::orders::{MediaOrder, Outcome, Totals, record};
use rvoip_dataplane::shm::{Channel, Direction};
use rvoip_dataplane::sip::{Framing, Limits, SipMessage};
use rvoip_loadtest::sip::{self as msgs, Dialog, Local, Text};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const ACCESS: &str = "127.0.0.1:5060";
const CORE: &str = "127.0.0.1:5062";
const UAC: &str = "127.0.0.1:5080";
const UAS: &str = "127.0.0.1:5070";
/// Simulated time per call: 4000 calls per second.
const CALL_SPACING_US: u64 = 250;
/// How long a call stays up, as `rvoip-loadtest --hold 1s`.
const HOLD_US: u64 = 1_000_000;
const UNIX_MS: u64 = 1_700_000_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Stops the benchmark: the B2BUA did not carry a call through.
fn fail(why: &str) -> ! {
    eprintln!("b2bua_core: {why}");
    std::process::exit(1)
}

/// A directory of its own for the order channel, journal and CDRs.
fn work_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rvoip-b2bua-core-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        fail(&format!("{}: {e}", dir.display()));
    }
    dir
}

/// The core trunk's targets in `config/sbc.toml`.
const LITERAL_TARGETS: &str = "targets = [
    { address = \"127.0.0.1:5070\", priority = 1 },
    { address = \"127.0.0.1:5072\", priority = 2 },
]";

/// `config/sbc.toml` with its state, rings and CDRs moved into `dir`; with
/// `dns`, the core trunk is the name `sip:trunk.rvoip.test`.
fn config(dir: &Path, dns: bool) -> rvoip_tuning::Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sbc.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    let d = dir.display();
    let text = text
        .replace(
            "state_dir = \"../state\"",
            &format!("state_dir = \"{d}/state\""),
        )
        .replace(
            "ring_dir = \"/dev/shm/rvoip\"",
            &format!("ring_dir = \"{d}\""),
        )
        .replace(
            "cdr_file = \"cdr.jsonl\"",
            &format!("cdr_file = \"{d}/cdr.jsonl\""),
        );
    if !text.contains(LITERAL_TARGETS) {
        fail("config/sbc.toml's core trunk targets changed");
    }
    let text = if dns {
        text.replace(
            LITERAL_TARGETS,
            "targets = [{ uri = \"sip:trunk.rvoip.test\" }]",
        )
    } else {
        text
    };
    rvoip_tuning::Config::from_str_at(&text, &path).unwrap_or_else(|e| fail(&e.to_string()))
}

fn parse(bytes: &[u8]) -> SipMessage<'_> {
    SipMessage::parse(bytes, Framing::Datagram, &Limits::default()).unwrap_or_else(|e| {
        fail(&format!(
            "the B2BUA sent an unparsable message ({e}): {}",
            String::from_utf8_lossy(bytes)
        ))
    })
}

/// The relay's side of the order channel: every order answered at once, an
/// offer or answer with SDP at the relay's address, a delete with totals.
struct Relay {
    channel: Channel,
    port: u32,
}

impl Relay {
    fn answer_all(&mut self) {
        let mut orders = self.channel.consumer(Direction::ToDataplane);
        let mut replies = self.channel.producer(Direction::ToControlPlane);
        let mut rec = Vec::with_capacity(512);
        while let Some(r) = orders.peek() {
            let meta = *r.meta;
            let Some((sender, number, order)) = record::read_order(r.payload) else {
                fail("an order record that does not read back");
            };
            let outcome = if matches!(order, MediaOrder::Delete { .. }) {
                Outcome::Totals(Totals {
                    packets: 100,
                    bytes: 17_200,
                    errors: 0,
                    ..Default::default()
                })
            } else {
                self.port = if self.port >= 39_998 {
                    30_000
                } else {
                    self.port + 2
                };
                let mut sdp = Text::with_capacity(300);
                sdp.s("v=0\r\no=- ").n(u64::from(self.port));
                sdp.s(" 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ")
                    .n(u64::from(self.port))
                    .s(" RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\na=rtcp:")
                    .n(u64::from(self.port) + 1)
                    .s("\r\n");
                Outcome::Sdp(sdp.0)
            };
            record::write_outcome(sender, number, &outcome, &mut rec);
            orders.advance();
            if replies.push(1, &meta, &rec).is_err() {
                fail("the order channel's reply ring is full");
            }
        }
    }
}

/// What the caller keeps of an answered call until it hangs up.
struct Up {
    due_us: u64,
    n: u64,
    dialog: Dialog,
    to: String,
    target: String,
    route: Vec<String>,
}

/// One B2BUA on its simulated clock; `busy` is the time spent inside it.
struct Run {
    core: SipCore,
    relay: Relay,
    cdrs: Option<CdrWriter>,
    uac: Local,
    uas: Local,
    request_uri: Arc<str>,
    now_us: u64,
    calls: u64,
    up: VecDeque<Up>,
    busy: Duration,
    allocs: u64,
    out: Vec<Outbound>,
    dir: PathBuf,
}

/// What the name server says of `sip:trunk.rvoip.test`: the two peers of
/// `config/sbc.toml`, in the same order, for an hour.
fn trunk_answer(q: rvoip_controlplane::dns::Query) -> rvoip_controlplane::dns::Answer {
    use rvoip_controlplane::dns::{Answer, Resolution, Server};
    let server = |port: &str, priority| Server {
        transport: Transport::Udp,
        address: addr(port),
        priority,
        weight: 1,
    };
    Answer {
        key: q.key,
        result: Ok(Resolution {
            servers: vec![server(UAS, 10), server("127.0.0.1:5072", 20)],
            ttl_secs: 3600,
        }),
        negative_ttl_secs: None,
    }
}

impl Run {
    fn new(dns: bool) -> Self {
        let dir = work_dir();
        let config = config(&dir, dns);
        let channel = Channel::create(
            &orders_path(&dir),
            ORDER_CHANNEL_ID,
            ORDER_SLOT_SIZE,
            ORDER_SLOTS,
        )
        .unwrap_or_else(|e| fail(&format!("order channel: {e}")));
        let mut core = core_from_config(&config).unwrap_or_else(|e| fail(&e.to_string()));
        let (b2b, cdrs) = b2bua_from_config(&config, &dir).unwrap_or_else(|e| fail(&e.to_string()));
        core.set_b2bua(b2b);
        Run {
            core,
            relay: Relay {
                channel,
                port: 30_000,
            },
            cdrs,
            uac: Local::new(addr(UAC), addr("127.0.0.1:6000")),
            uas: Local::new(addr(UAS), addr("127.0.0.1:7000")),
            request_uri: format!("sip:service@{ACCESS}").into(),
            now_us: 0,
            calls: 0,
            up: VecDeque::new(),
            busy: Duration::ZERO,
            allocs: 0,
            out: Vec::new(),
            dir,
        }
    }

    /// Runs `f` on the core as the process's loop does after a batch of
    /// messages: media replies, due timers, the journal, CDRs, what to send.
    fn timed(&mut self, f: impl FnOnce(&mut SipCore, u64, u64)) {
        let now = self.now_us / 1000;
        let unix = UNIX_MS + now;
        self.out.clear();
        self.out.reserve(4);
        let a = allocations();
        let t = Instant::now();
        f(&mut self.core, now, unix);
        if self.core.next_deadline().is_some_and(|d| d <= now) {
            self.core.on_timer(now);
        }
        // The name server answers at once (the first call's, then one per
        // TTL: none within a run).
        while let Some(q) = self.core.poll_dns() {
            self.core.on_dns(now, unix, trunk_answer(q));
        }
        let _ = self.core.flush(now);
        while let Some(cdr) = self.core.poll_cdr() {
            if let Some(w) = self.cdrs.as_mut() {
                w.write(cdr);
            }
        }
        while let Some(o) = self.core.poll_outbound() {
            self.out.push(o);
        }
        self.busy += t.elapsed();
        self.allocs += allocations() - a;
    }

    /// Delivers `bytes` from `from` to the listener `to`; what the core
    /// sends is in `self.out`, after the relay answered its orders.
    fn deliver(&mut self, from: &str, to: &str, bytes: &[u8]) {
        self.timed(|core, now, unix| {
            core.on_message(
                now,
                unix,
                Inbound {
                    bytes,
                    transport: Transport::Udp,
                    local: addr(to),
                    remote: addr(from),
                    conn: 0,
                },
            )
        });
        let mut sent = std::mem::take(&mut self.out);
        self.relay.answer_all();
        self.timed(|core, now, unix| core.poll_media(now, unix));
        sent.append(&mut self.out);
        self.out = sent;
        self.answer_health_checks();
    }

    /// OPTIONS to the trunk get their 200, as a live peer answers them.
    fn answer_health_checks(&mut self) {
        let checks: Vec<Outbound> = self
            .out
            .iter()
            .filter(|o| o.bytes.starts_with(b"OPTIONS "))
            .cloned()
            .collect();
        for o in checks {
            let req = parse(&o.bytes);
            let ok = msgs::response(&req, 200, "OK", Some("hc"), None, "");
            let from = o.dest.to_string();
            self.timed(|core, now, unix| {
                core.on_message(
                    now,
                    unix,
                    Inbound {
                        bytes: &ok,
                        transport: Transport::Udp,
                        local: addr(CORE),
                        remote: addr(&from),
                        conn: 0,
                    },
                )
            });
        }
    }

    /// The one message the core sent to `dest` starting with `start`.
    fn sent(&self, dest: &str, start: &[u8]) -> Outbound {
        let d = addr(dest);
        self.out
            .iter()
            .find(|o| o.dest == d && o.bytes.starts_with(start))
            .cloned()
            .unwrap_or_else(|| {
                let seen: Vec<String> = self
                    .out
                    .iter()
                    .map(|o| {
                        let line = o.bytes.split(|b| *b == b'\r').next().unwrap_or_default();
                        format!("{} to {}", String::from_utf8_lossy(line), o.dest)
                    })
                    .collect();
                fail(&format!(
                    "nothing starting {:?} sent to {dest}; sent: {seen:?}",
                    String::from_utf8_lossy(start)
                ))
            })
    }

    /// Places one call and answers it.
    fn place(&mut self) {
        let n = self.calls;
        self.calls += 1;
        let mut call_id = Text::with_capacity(40);
        call_id.n(n).s("-1@rvoip-loadtest");
        let mut from_tag = Text::with_capacity(24);
        from_tag.x(n).s("-1");
        let dialog = Dialog {
            call_id: call_id.into_string(),
            from_tag: from_tag.into_string(),
            request_uri: self.request_uri.clone(),
            local: self.uac.sip.clone(),
        };
        let offer = msgs::sdp(n, &self.uac, n as u32, None, &msgs::SdpCodec::pcmu());
        let branch = format!("z9hG4bK-{n}-i");
        let invite = msgs::invite(&dialog, &branch, 1, None, &offer);
        self.deliver(UAC, ACCESS, &invite);
        let fwd = self.sent(UAS, b"INVITE ");
        let fwd = parse(&fwd.bytes);
        let tag = format!("{n:x}-2");
        let contact = Some(&*self.uas.sip);
        let ringing = msgs::response(&fwd, 180, "Ringing", Some(&tag), contact, "");
        let answer = msgs::sdp(n, &self.uas, n as u32 + 1, None, &msgs::SdpCodec::pcmu());
        let ok = msgs::response(&fwd, 200, "OK", Some(&tag), contact, &answer);
        self.deliver(UAS, CORE, &ringing);
        self.deliver(UAS, CORE, &ok);
        // The B2BUA acknowledges the callee's 200 itself.
        self.sent(UAS, b"ACK ");
        let ok = self.sent(UAC, b"SIP/2.0 200");
        let ok = parse(&ok.bytes);
        let to = msgs::to_value(&ok).unwrap_or_else(|| fail("a 200 without To"));
        let target = msgs::contact_uri(&ok).unwrap_or_else(|| fail("a 200 without Contact"));
        let route = msgs::route_set(&ok);
        let ack = msgs::in_dialog(
            &dialog,
            "ACK",
            1,
            &format!("z9hG4bK-{n}-a"),
            &target,
            &to,
            &route,
        );
        self.deliver(UAC, ACCESS, &ack);
        self.up.push_back(Up {
            due_us: self.now_us + HOLD_US,
            n,
            dialog,
            to,
            target,
            route,
        });
    }

    /// The caller hangs up; the callee answers the BYE.
    fn hang_up(&mut self, c: Up) {
        let n = c.n;
        let bye = msgs::in_dialog(
            &c.dialog,
            "BYE",
            2,
            &format!("z9hG4bK-{n}-b"),
            &c.target,
            &c.to,
            &c.route,
        );
        self.deliver(UAC, ACCESS, &bye);
        // Each leg's BYE is answered on its own leg.
        self.sent(UAC, b"SIP/2.0 200");
        let fwd = self.sent(UAS, b"BYE ");
        let ok = msgs::response(&parse(&fwd.bytes), 200, "OK", None, None, "");
        self.deliver(UAS, CORE, &ok);
    }

    /// One call placed, and the calls whose hold is over hung up.
    fn step(&mut self) {
        self.now_us += CALL_SPACING_US;
        // Due timers (fired inside `timed`) and what they send.
        self.timed(|_, _, _| {});
        self.answer_health_checks();
        for o in &self.out {
            black_box(o);
        }
        self.place();
        while self.up.front().is_some_and(|c| c.due_us <= self.now_us) {
            if let Some(c) = self.up.pop_front() {
                self.hang_up(c);
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(w) = self.cdrs.as_mut() {
            w.finish();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl CallRun for Run {
    fn step(&mut self) {
        Run::step(self);
    }
    fn busy(&self) -> Duration {
        self.busy
    }
    fn allocs(&self) -> u64 {
        self.allocs
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("b2bua_core");
    let mut run = Run::new(false);
    group.bench_function("call", |b| {
        b.iter_custom(|iters| timed_calls(&mut run, iters))
    });
    drop(run);
    let mut run = Run::new(true);
    group.bench_function("call_dns_trunk", |b| {
        b.iter_custom(|iters| timed_calls(&mut run, iters))
    });
    group.finish();
}

/// A fixed run outside criterion for the summary line: 200,000 calls (50 s
/// of simulated time, past the 32 s linger), figures over the last 100,000.
fn summary() {
    let mut figures = Vec::new();
    // Alternated, twice each, so drift on a shared host hits both alike.
    for dns in [false, true, false, true] {
        let mut run = Run::new(dns);
        let (per_call, allocs) = per_call(&mut run, 100_000, 100_000);
        let (servers, clients) = run.core.transactions();
        let up = run.core.b2bua().map_or(0, |b| b.calls());
        let queries = run.core.dns_counters().queries;
        let trunk = if dns { "DNS name" } else { "literal" };
        println!(
            "b2bua_core ({trunk} trunk): {per_call:.2} µs of control-plane CPU per call, \
             {allocs:.1} allocations per call (4000 cps simulated; {up} calls up, {servers} \
             server and {clients} client transactions held; {queries} resolutions in 200,000 calls)"
        );
        figures.push((dns, per_call));
    }
    let mean = |d: bool| {
        let v: Vec<f64> = figures.iter().filter(|f| f.0 == d).map(|f| f.1).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    println!(
        "b2bua_core: trunk as a DNS name / literal address: {:.3}x CPU per call",
        mean(true) / mean(false)
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
