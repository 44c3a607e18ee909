//! The B2BUA on simulated time and a simulated network, with a media
//! double that rewrites SDP the way the relay does (its own address and a
//! port per side) and records every order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rvoip_dataplane::media::orders::{CallId, MediaOrder, OrderError};
use rvoip_dataplane::sip::{Framing, HeaderName, Limits, SipMessage};

use super::*;
use crate::element::{CoreConfig, Inbound, Outbound, SipCore, Transport};
use crate::registrar::location::LocationService;
use crate::registrar::{Registrar, RegistrarConfig, Users};
use crate::sbc::journal::Journal;
use crate::sbc::media::Answered;
use crate::sbc::policy::Policy;

const ACCESS: &str = "127.0.0.1:5060";
const CORE: &str = "127.0.0.1:5062";
const CALLER: &str = "127.0.0.2:5080";
const PEER1: &str = "127.0.0.1:5070";
const PEER2: &str = "127.0.0.1:5072";
const RELAY: &str = "192.0.2.1";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Answers media orders as the relay would: the SDP comes back with the
/// relay's address and a port of the side it is for.
#[derive(Clone, Default)]
struct FakeRelay {
    orders: Arc<Mutex<Vec<String>>>,
    replies: Arc<Mutex<std::collections::VecDeque<Answered>>>,
    /// While set, replies wait (a slow relay).
    hold: Arc<std::sync::atomic::AtomicBool>,
    /// Media events the next `Events` order returns.
    events: Arc<Mutex<Vec<(CallId, rvoip_dataplane::media::services::MediaEvent)>>>,
    /// The call of the last `Terminate` order.
    terminated: Arc<Mutex<Option<CallId>>>,
}

impl MediaOrders for FakeRelay {
    fn send(
        &mut self,
        _now: Millis,
        token: u64,
        order: media::OrderRecord,
    ) -> Result<(), OrderError> {
        let order = order.order().ok_or(OrderError::BadSdp)?;
        let outcome = self.carry_out(&order);
        self.replies
            .lock()
            .map_err(|_| OrderError::KeyGeneration)?
            .push_back((token, outcome));
        Ok(())
    }
    fn poll(&mut self, _now: Millis) -> Option<Answered> {
        if self.hold.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.replies.lock().ok()?.pop_front()
    }
    fn pending(&self) -> usize {
        self.replies.lock().map_or(0, |r| r.len())
    }
}

impl FakeRelay {
    /// Logs "<command> <tag>" and answers as the relay would.
    fn carry_out(&mut self, order: &MediaOrder) -> Outcome {
        let Ok(mut log) = self.orders.lock() else {
            return Outcome::Failed(OrderError::KeyGeneration);
        };
        let tag = |t: &[u8]| String::from_utf8_lossy(t).into_owned();
        let (command, tag, sdp, options) = match order {
            MediaOrder::Offer {
                from_tag,
                sdp,
                options,
                ..
            } => ("offer", tag(from_tag.as_bytes()), sdp, options),
            MediaOrder::Answer {
                to_tag,
                sdp,
                options,
                ..
            } => ("answer", tag(to_tag.as_bytes()), sdp, options),
            MediaOrder::Terminate {
                call_id,
                from_tag,
                sdp,
                options,
                ..
            } => {
                if let Ok(mut t) = self.terminated.lock() {
                    *t = Some(call_id.clone());
                }
                ("terminate", tag(from_tag.as_bytes()), sdp, options)
            }
            MediaOrder::Service { service, .. } => {
                log.push(format!("service {}", service.name()));
                return Outcome::Done {
                    duration_ms: Some(1000),
                };
            }
            MediaOrder::Events => {
                let events = self
                    .events
                    .lock()
                    .map(|mut e| std::mem::take(&mut *e))
                    .unwrap_or_default();
                return Outcome::Events(events);
            }
            MediaOrder::Delete { .. } => {
                log.push("delete ".into());
                return Outcome::Totals(MediaTotals {
                    packets: 500,
                    bytes: 86_000,
                    errors: 0,
                    ..Default::default()
                });
            }
            other => {
                return Outcome::Failed(OrderError::Unacceptable(format!("unexpected {other:?}")));
            }
        };
        log.push(format!("{command} {tag}"));
        let port = 40_000 + 2 * log.len();
        if options.codecs.any() {
            let names = |l: &[rvoip_dataplane::media::orders::CodecSpec]| {
                l.iter()
                    .map(|c| String::from_utf8_lossy(&c.name).into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            log.push(format!(
                "codecs mask={} transcode={}",
                names(&options.codecs.mask),
                names(&options.codecs.transcode)
            ));
        }
        let proto = options.transport_protocol.map_or("RTP/AVP", |p| p.name());
        let rewritten: String = String::from_utf8_lossy(sdp)
            .lines()
            .map(|l| {
                if l.starts_with("o=") {
                    let mut f: Vec<&str> = l.split(' ').collect();
                    if let Some(last) = f.last_mut() {
                        *last = RELAY;
                    }
                    format!("{}\r\n", f.join(" "))
                } else if l.starts_with("c=") {
                    format!("c=IN IP4 {RELAY}\r\n")
                } else if let Some(rest) = l.strip_prefix("m=audio ") {
                    let fmts: Vec<&str> = rest.split(' ').skip(2).collect();
                    format!("m=audio {port} {proto} {}\r\n", fmts.join(" "))
                } else {
                    format!("{l}\r\n")
                }
            })
            .collect();
        Outcome::Sdp(rewritten.into_bytes())
    }
}

const CONFIG: &str = r#"
[node]
mode = "b2bua"
[sip]
listen = [
  { address = "127.0.0.1:5060", transport = "udp", realm = "access" },
  { address = "127.0.0.1:5062", transport = "udp", realm = "core" },
]
[media]
address = "127.0.0.1"
port_min = 30000
port_max = 39999
[[realms]]
name = "access"
allow = ["127.0.0.2/32"]
[[realms]]
name = "core"
allow = ["127.0.0.1/32"]
[[trunks]]
name = "core"
realm = "core"
targets = ["127.0.0.1:5070", "127.0.0.1:5072"]
invite_timeout_secs = 2.0
codecs = ["PCMA", "telephone-event"]
headers = [
  { action = "remove", name = "User-Agent" },
  { action = "add", name = "X-Origin", value = "access" },
]
health_checks = false
[sbc]
session_expires_secs = 0
[[sbc.routes]]
trunk = "core"
"#;

struct Net {
    core: SipCore,
    relay: FakeRelay,
    now: Millis,
}

/// `user` registers with Contact `contact`, sent from `source` to
/// `listener` (`(source, listener)`); the registrar answers 200. `id`
/// makes the branch, tag and Call-ID its own.
fn register_user(
    n: &mut Net,
    user: &str,
    contact: &str,
    (source, listener): (&str, &str),
    id: &str,
) {
    let register = format!(
        "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP {contact};branch=z9hG4bK-reg{id};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@rvoip.test>;tag=r{id}\r\nTo: <sip:{user}@rvoip.test>\r\nCall-ID: reg{id}\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:{user}@{contact}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    let out = n.deliver(0, source, listener, &register);
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(200)]);
}

/// The core (PEER1) calls `user`; what the element sends. `id` makes the
/// branch, tag and Call-ID its own.
fn core_calls(n: &mut Net, user: &str, id: &str) -> Vec<Outbound> {
    let call = format!(
        "INVITE sip:{user}@rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP {PEER1};branch=z9hG4bK-in{id}\r\nMax-Forwards: 70\r\n\
From: <sip:+15550001@core.example>;tag=core{id}\r\nTo: <sip:{user}@rvoip.test>\r\nCall-ID: in{id}@core\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:core@{PEER1}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{ANSWER}",
        ANSWER.len()
    );
    n.deliver(10, PEER1, CORE, &call)
}

fn net_with(config: &str, journal: Journal, saved: Vec<(u64, SavedCall)>) -> Net {
    let c = rvoip_tuning::Config::from_str_at(config, std::path::Path::new("t.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let relay = FakeRelay::default();
    let mut core = SipCore::new(
        CoreConfig {
            domains: vec!["rvoip.test".into()],
            listeners: vec![(Transport::Udp, addr(ACCESS)), (Transport::Udp, addr(CORE))],
            ..CoreConfig::default()
        },
        Registrar::new(RegistrarConfig::default(), LocationService::in_memory()),
        Users::default(),
        b"test-secret",
        &rvoip_dataplane::entropy::SeededEntropy::new(1),
    );
    let s = &c.sbc;
    core.set_b2bua(B2b::new(
        Policy::from_config(&c).unwrap_or_else(|e| panic!("{e}")),
        B2bConfig {
            session_expires: s.session_expires_secs,
            min_se: s.min_se_secs,
            reject_refer: s.refer == rvoip_tuning::sbc::ReferMode::Reject,
            health_interval_ms: 5000,
            media_server: MediaServer {
                config: c.mediaserver.clone(),
                prompt_dir: "/prompts".into(),
            },
        },
        Box::new(relay.clone()),
        journal,
        saved,
        &rvoip_dataplane::entropy::SeededEntropy::new(1),
    ));
    Net {
        core,
        relay,
        now: 0,
    }
}

fn net() -> Net {
    net_with(CONFIG, Journal::disabled(), Vec::new())
}

impl Net {
    /// Delivers `text` from `from` to listener `to`; returns what goes out.
    fn deliver(&mut self, now: Millis, from: &str, to: &str, text: &str) -> Vec<Outbound> {
        self.now = now;
        self.core.on_message(
            now,
            1_800_000_000_000 + now,
            Inbound {
                bytes: text.as_bytes(),
                transport: Transport::Udp,
                local: addr(to),
                remote: addr(from),
                conn: 0,
            },
        );
        self.drain()
    }

    fn tick(&mut self, now: Millis) -> Vec<Outbound> {
        self.now = now;
        self.core.on_timer(now);
        self.drain()
    }

    /// What the core sends, once the relay answered every media order.
    fn drain(&mut self) -> Vec<Outbound> {
        self.core.poll_media(self.now, 1_800_000_000_000 + self.now);
        let _ = self.core.flush(0);
        std::iter::from_fn(|| self.core.poll_outbound()).collect()
    }

    fn orders(&self) -> Vec<String> {
        self.relay
            .orders
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default()
    }
}

fn parse(o: &Outbound) -> SipMessage<'_> {
    SipMessage::parse(&o.bytes, Framing::Datagram, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.bytes)))
}

fn text(o: &Outbound) -> String {
    String::from_utf8_lossy(&o.bytes).into_owned()
}

fn status(o: &Outbound) -> Option<u16> {
    parse(o).status_code()
}

fn header(o: &Outbound, name: HeaderName) -> String {
    String::from_utf8_lossy(parse(o).header(name).unwrap_or_default()).into_owned()
}

/// The one message among `out` sent to `dest`.
fn to<'a>(out: &'a [Outbound], dest: &str) -> Vec<&'a Outbound> {
    out.iter().filter(|o| o.dest == addr(dest)).collect()
}

const OFFER: &str = "v=0\r\no=caller 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
m=audio 7000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

const ANSWER: &str = "v=0\r\no=callee 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 9000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";

fn invite(call: &str, body: &str) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "INVITE sip:+15551234@{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{call};rport\r\n\
Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@127.0.0.2>;tag=caller-{call}\r\nTo: <sip:+15551234@{ACCESS}>\r\n\
Call-ID: {call}@127.0.0.2\r\nCSeq: 10 INVITE\r\nContact: <sip:alice@{CALLER}>\r\nRecord-Route: <sip:edge.caller.example;lr>\r\n\
User-Agent: CallerPhone 1.0\r\nSupported: 100rel\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A response of the peer to `req`, with `tag` on To, a Contact and body.
fn reply(req: &Outbound, code: u16, tag: &str, extra: &str, body: &str) -> String {
    let m = parse(req);
    let mut out = format!("SIP/2.0 {code} Reason\r\n");
    for v in m.header_lines(HeaderName::Via) {
        out.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(v)));
    }
    let to = header(req, HeaderName::To);
    let to = if to.contains("tag=") || tag.is_empty() {
        to
    } else {
        format!("{to};tag={tag}")
    };
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:peer@{}>\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        header(req, HeaderName::From),
        header(req, HeaderName::CallId),
        header(req, HeaderName::CSeq),
        req.dest,
        body.len()
    ));
    out
}

/// An in-dialog request from a peer, built from a message it received from
/// the SBC (`seen`: the SBC's request or response in that dialog).
fn peer_request(
    seen: &Outbound,
    method: &str,
    cseq: u32,
    from_peer: &str,
    body: &str,
    extra: &str,
) -> String {
    let m = parse(seen);
    // The peer's own tag is on To of what it received (it added it in its answer)
    // when `seen` is a request of the SBC; the SBC's tag is on From.
    let sbc = header(seen, HeaderName::From);
    let peer = header(seen, HeaderName::To);
    let peer = if peer.contains("tag=") {
        peer
    } else {
        format!("{peer};tag=calleetag")
    };
    let target = m
        .contacts()
        .next()
        .and_then(Result::ok)
        .and_then(|c| match c {
            rvoip_dataplane::sip::Contact::Addr(a) => {
                Some(String::from_utf8_lossy(a.uri.as_bytes()).into_owned())
            }
            rvoip_dataplane::sip::Contact::Star => None,
        })
        .unwrap_or_default();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {from_peer};branch=z9hG4bK-{method}-{cseq}\r\nMax-Forwards: 70\r\n\
From: {peer}\r\nTo: {sbc}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <sip:peer@{from_peer}>\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        header(seen, HeaderName::CallId),
        body.len()
    )
}

/// The caller's BYE in call `call` (as [`invite`] and [`answered`] set it
/// up), to the SBC's tag `to` (the To of the 200 the caller got).
fn caller_bye(call: &str, to: &str) -> String {
    format!(
        "BYE sip:{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-bye-{call}\r\nMax-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@127.0.0.2>;tag=caller-{call}\r\nTo: {to}\r\nCall-ID: {call}@127.0.0.2\r\nCSeq: 11 BYE\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Sets up an answered call; returns the INVITE B got, the 200 A got and
/// the network.
fn answered(n: &mut Net, call: &str) -> (Outbound, Outbound) {
    let out = n.deliver(0, CALLER, ACCESS, &invite(call, OFFER));
    let inv = to(&out, PEER1)[0].clone();
    let out = n.deliver(10, PEER1, CORE, &reply(&inv, 200, "calleetag", "", ANSWER));
    let ok = to(&out, CALLER)[0].clone();
    assert_eq!(status(&ok), Some(200));
    // The caller's ACK.
    let ack = format!(
        "ACK sip:{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-ack-{call}\r\nMax-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@127.0.0.2>;tag=caller-{call}\r\nTo: {}\r\nCall-ID: {call}@127.0.0.2\r\nCSeq: 10 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&ok, HeaderName::To)
    );
    assert!(n.deliver(20, CALLER, ACCESS, &ack).is_empty());
    (inv, ok)
}

#[test]
fn the_caller_hears_100_trying_only_when_nothing_else_reaches_it_within_200_ms() {
    let mut n = net();
    let out = n.deliver(0, CALLER, ACCESS, &invite("t1", OFFER));
    assert!(to(&out, CALLER).is_empty(), "no 100 at once");
    let inv = to(&out, PEER1)[0].clone();
    assert!(to(&n.tick(199), CALLER).is_empty());
    let out = n.tick(200);
    let trying = to(&out, CALLER);
    assert_eq!(trying.len(), 1);
    assert_eq!(status(trying[0]), Some(100));
    assert_eq!(header(trying[0], HeaderName::CallId), "t1@127.0.0.2");
    // Ringing within 200 ms: no 100 at all.
    let out = n.deliver(1_000, CALLER, ACCESS, &invite("t2", OFFER));
    let inv2 = to(&out, PEER1)[0].clone();
    let out = n.deliver(1_050, PEER1, CORE, &reply(&inv2, 180, "tag2", "", ""));
    assert_eq!(status(to(&out, CALLER)[0]), Some(180));
    let later = n.tick(1_500);
    assert!(
        to(&later, CALLER).iter().all(|o| status(o) != Some(100)),
        "no 100 after a 180"
    );
    // Each call goes on as before.
    let out = n.deliver(1_600, PEER1, CORE, &reply(&inv, 180, "tag1", "", ""));
    assert_eq!(status(to(&out, CALLER)[0]), Some(180));
}

#[test]
fn a_call_is_two_dialogs_and_neither_side_sees_the_other() {
    let mut n = net();
    let out = n.deliver(0, CALLER, ACCESS, &invite("c1", OFFER));
    let inv = to(&out, PEER1)[0].clone();
    let t = text(&inv);
    assert!(
        t.starts_with("INVITE sip:+15551234@127.0.0.1:5070 SIP/2.0\r\n"),
        "{t}"
    );
    // Nothing of the caller: address, Call-ID, tag, Via, Record-Route, Contact, User-Agent.
    // (The Call-ID is compared whole: a fresh random one may end in "c1".)
    for trace in ["127.0.0.2", "caller-c1", "edge.caller", "CallerPhone"] {
        assert!(!t.contains(trace), "{trace} in {t}");
    }
    let call_id = header(&inv, HeaderName::CallId);
    assert!(!call_id.starts_with("c1@"), "{call_id}");
    let m = parse(&inv);
    assert_eq!(m.vias().count(), 1);
    assert_eq!(inv.local, addr(CORE), "sent from the core realm's listener");
    assert!(t.contains("X-Origin: access\r\n"), "{t}");
    assert!(t.contains("Supported: 100rel\r\n"), "{t}");
    // SDP through the relay, codecs of the trunk only, in its order.
    assert!(t.contains(&format!("c=IN IP4 {RELAY}")), "{t}");
    assert!(t.contains(" RTP/AVP 8 101\r\n"), "{t}");
    assert!(!t.contains("PCMU"), "{t}");
    assert!(!t.contains("127.0.0.2"), "{t}");

    let out = n.deliver(5, PEER1, CORE, &reply(&inv, 180, "calleetag", "", ""));
    let ringing = to(&out, CALLER)[0];
    assert_eq!(status(ringing), Some(180));
    let a_tag = header(ringing, HeaderName::To);
    assert!(
        a_tag.contains("tag=") && !a_tag.contains("calleetag"),
        "{a_tag}"
    );

    let out = n.deliver(10, PEER1, CORE, &reply(&inv, 200, "calleetag", "", ANSWER));
    let ack_b = to(&out, PEER1)[0];
    assert!(
        text(ack_b).starts_with("ACK sip:peer@127.0.0.1:5070 SIP/2.0"),
        "{}",
        text(ack_b)
    );
    assert!(header(ack_b, HeaderName::To).contains("tag=calleetag"));
    let ok = to(&out, CALLER)[0];
    let t = text(ok);
    assert_eq!(status(ok), Some(200));
    assert_eq!(
        header(ok, HeaderName::To),
        a_tag,
        "one To tag for the caller's dialog"
    );
    assert!(t.contains(&format!("Contact: <sip:{ACCESS}>")), "{t}");
    assert!(t.contains(&format!("c=IN IP4 {RELAY}")), "{t}");
    for trace in ["peer@", ":5070", "calleetag"] {
        assert!(!t.contains(trace), "{trace} in {t}");
    }
    // The offer names the offerer's tag, the answer the answerer's.
    assert_eq!(n.orders(), vec!["offer caller-c1", "answer calleetag"]);

    // Unacknowledged, the 200 is sent again (T1, doubling).
    let again = n.tick(510);
    assert_eq!(
        again.iter().filter_map(status).collect::<Vec<_>>(),
        vec![200]
    );
    let ack = format!(
        "ACK sip:{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-ack1\r\nMax-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@127.0.0.2>;tag=caller-c1\r\nTo: {a_tag}\r\nCall-ID: c1@127.0.0.2\r\nCSeq: 10 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    assert!(n.deliver(600, CALLER, ACCESS, &ack).is_empty());
    assert!(n.tick(5_000).is_empty(), "no retransmission after the ACK");

    // The caller hangs up: 200 to it, BYE to the callee in its dialog.
    let bye = caller_bye("c1", &a_tag);
    let out = n.deliver(6_000, CALLER, ACCESS, &bye);
    assert_eq!(status(to(&out, CALLER)[0]), Some(200));
    let bye_b = to(&out, PEER1)[0];
    assert!(text(bye_b).starts_with("BYE sip:peer@127.0.0.1:5070 SIP/2.0"));
    assert_eq!(
        header(bye_b, HeaderName::CallId),
        header(&inv, HeaderName::CallId)
    );
    assert_eq!(header(bye_b, HeaderName::CSeq), "2 BYE");
    let cdr = n.core.poll_cdr().expect("a CDR");
    assert_eq!(cdr.end_reason, "bye-caller");
    assert_eq!((cdr.a_status, cdr.b_status, cdr.attempts), (200, 200, 1));
    assert_eq!(cdr.to, "+15551234");
    assert_eq!(cdr.from, "alice");
    assert_eq!(cdr.media.packets, 500);
    assert_eq!(cdr.duration_ms, 5_990);
    assert_eq!(n.core.b2bua().map(B2b::calls), Some(0));
}

#[test]
fn a_late_offer_is_answered_in_the_callers_ack() {
    let mut n = net();
    let out = n.deliver(0, CALLER, ACCESS, &invite("lo", ""));
    let inv = to(&out, PEER1)[0].clone();
    assert!(parse(&inv).body().is_empty());
    let out = n.deliver(10, PEER1, CORE, &reply(&inv, 200, "calleetag", "", ANSWER));
    assert!(to(&out, PEER1).is_empty(), "leg B waits for the answer");
    let ok = to(&out, CALLER)[0];
    assert!(text(ok).contains(&format!("c=IN IP4 {RELAY}")));
    let ack = format!(
        "ACK sip:{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-ack-lo\r\nMax-Forwards: 70\r\n\
From: <sip:alice@127.0.0.2>;tag=caller-lo\r\nTo: {}\r\nCall-ID: lo@127.0.0.2\r\nCSeq: 10 ACK\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
        header(ok, HeaderName::To),
        OFFER.len()
    );
    let out = n.deliver(20, CALLER, ACCESS, &ack);
    let ack_b = to(&out, PEER1)[0];
    let t = text(ack_b);
    assert!(t.starts_with("ACK "), "{t}");
    assert_eq!(
        header(ack_b, HeaderName::CSeq),
        "1 ACK",
        "the INVITE's CSeq"
    );
    assert!(
        t.contains(&format!("c=IN IP4 {RELAY}")) && !t.contains("127.0.0.2"),
        "{t}"
    );
    assert_eq!(n.orders(), vec!["offer calleetag", "answer caller-lo"]);
}

#[test]
fn hold_by_reinvite_crosses_with_the_sdp_rewritten() {
    let mut n = net();
    let (inv, ok) = answered(&mut n, "h1");
    // The callee puts the caller on hold.
    let hold = ANSWER.replace(
        "a=rtpmap:8 PCMA/8000\r\n",
        "a=rtpmap:8 PCMA/8000\r\na=sendonly\r\n",
    );
    let reinvite = peer_request(&inv, "INVITE", 5, PEER1, &hold, "");
    let out = n.deliver(1_000, PEER1, CORE, &reinvite);
    let fwd = to(&out, CALLER)[0].clone();
    let t = text(&fwd);
    assert!(
        t.starts_with("INVITE sip:alice@127.0.0.2:5080 SIP/2.0"),
        "{t}"
    );
    assert!(t.contains("Route: <sip:edge.caller.example;lr>"), "{t}");
    assert!(
        t.contains("a=sendonly") && t.contains(&format!("c=IN IP4 {RELAY}")),
        "{t}"
    );
    assert_eq!(header(&fwd, HeaderName::CallId), "h1@127.0.0.2");
    assert_eq!(header(&fwd, HeaderName::CSeq), "1 INVITE");
    assert_eq!(header(&fwd, HeaderName::From), header(&ok, HeaderName::To));
    // The caller accepts: 200 goes to the callee with the answer rewritten,
    // and the SBC acknowledges the caller's 200 itself.
    let recv_only = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
    let out = n.deliver(1_010, CALLER, ACCESS, &reply(&fwd, 200, "", "", &recv_only));
    let ack_a = to(&out, CALLER)[0];
    // The caller's 200 refreshes its leg's target (§12.2.1.2): the ACK,
    // and every later request on that leg, goes to the 200's Contact.
    assert!(
        text(ack_a).starts_with("ACK sip:peer@127.0.0.2:5080"),
        "{}",
        text(ack_a)
    );
    assert_eq!(header(ack_a, HeaderName::CSeq), "1 ACK");
    let ok_b = to(&out, PEER1)[0];
    assert_eq!(status(ok_b), Some(200));
    assert_eq!(header(ok_b, HeaderName::CSeq), "5 INVITE");
    let t = text(ok_b);
    assert!(t.contains("a=recvonly") && !t.contains("127.0.0.2"), "{t}");
    assert!(t.contains(&format!("Contact: <sip:{CORE}>")), "{t}");
    assert_eq!(
        n.orders()[2..],
        [
            "offer calleetag".to_string(),
            "answer caller-h1".to_string()
        ]
    );
}

#[test]
fn reliable_provisionals_and_prack_cross_with_rack_mapped() {
    let mut n = net();
    let out = n.deliver(0, CALLER, ACCESS, &invite("p1", OFFER));
    let inv = to(&out, PEER1)[0].clone();
    let out = n.deliver(
        5,
        PEER1,
        CORE,
        &reply(
            &inv,
            183,
            "calleetag",
            "Require: 100rel\r\nRSeq: 77\r\n",
            ANSWER,
        ),
    );
    let prov = to(&out, CALLER)[0].clone();
    let t = text(&prov);
    assert!(
        t.contains("RSeq: 77") && t.contains("Require: 100rel"),
        "{t}"
    );
    assert!(
        t.contains(&format!("c=IN IP4 {RELAY}")),
        "early media through the relay: {t}"
    );
    let prack = format!(
        "PRACK sip:{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-prack\r\nMax-Forwards: 70\r\n\
From: <sip:alice@127.0.0.2>;tag=caller-p1\r\nTo: {}\r\nCall-ID: p1@127.0.0.2\r\nCSeq: 11 PRACK\r\nRAck: 77 10 INVITE\r\nContent-Length: 0\r\n\r\n",
        header(&prov, HeaderName::To)
    );
    let out = n.deliver(10, CALLER, ACCESS, &prack);
    let fwd = to(&out, PEER1)[0];
    assert_eq!(header(fwd, HeaderName::RAck), "77 1 INVITE");
    assert_eq!(header(fwd, HeaderName::CSeq), "2 PRACK");
    let out = n.deliver(15, PEER1, CORE, &reply(fwd, 200, "", "", ""));
    let ok = to(&out, CALLER)[0];
    assert_eq!(
        (status(ok), header(ok, HeaderName::CSeq)),
        (Some(200), "11 PRACK".into())
    );
}

#[test]
fn a_cancel_before_the_answer_ends_both_legs() {
    let mut n = net();
    let out = n.deliver(0, CALLER, ACCESS, &invite("x1", OFFER));
    let inv = to(&out, PEER1)[0].clone();
    n.deliver(5, PEER1, CORE, &reply(&inv, 180, "calleetag", "", ""));
    let cancel = format!(
        "CANCEL sip:+15551234@{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-x1;rport\r\nMax-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@127.0.0.2>;tag=caller-x1\r\nTo: <sip:+15551234@{ACCESS}>\r\nCall-ID: x1@127.0.0.2\r\nCSeq: 10 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    let out = n.deliver(100, CALLER, ACCESS, &cancel);
    let mut codes: Vec<(u16, String)> = to(&out, CALLER)
        .iter()
        .map(|o| (status(o).unwrap_or(0), header(o, HeaderName::CSeq)))
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        vec![(200, "10 CANCEL".into()), (487, "10 INVITE".into())]
    );
    let c = to(&out, PEER1)[0];
    assert!(
        text(c).starts_with("CANCEL sip:+15551234@127.0.0.1:5070"),
        "{}",
        text(c)
    );
    assert_eq!(
        header(c, HeaderName::CallId),
        header(&inv, HeaderName::CallId)
    );
    let cdr = n.core.poll_cdr().expect("cdr");
    assert_eq!((cdr.end_reason, cdr.a_status), ("cancel", 487));
    assert_eq!(n.orders().last().map(String::as_str), Some("delete "));
}

#[test]
fn failures_fail_over_then_map_for_the_caller() {
    let mut n = net();
    let out = n.deliver(0, CALLER, ACCESS, &invite("f1", OFFER));
    let first = to(&out, PEER1)[0].clone();
    // 503 from the primary: the same call goes to the secondary at once.
    let out = n.deliver(5, PEER1, CORE, &reply(&first, 503, "p1", "", ""));
    assert!(
        text(to(&out, PEER1)[0]).starts_with("ACK "),
        "non-2xx ACKed"
    );
    let second = to(&out, PEER2)[0].clone();
    assert_ne!(
        header(&second, HeaderName::CallId),
        header(&first, HeaderName::CallId)
    );
    assert!(to(&out, CALLER).is_empty(), "the caller sees no failure");
    // The secondary redirects: the caller gets 480, not the core's Contact.
    let out = n.deliver(10, PEER2, CORE, &reply(&second, 302, "p2", "", ""));
    let fin = to(&out, CALLER)[0];
    assert_eq!(status(fin), Some(480));
    assert!(!text(fin).contains("peer@"));
    let cdr = n.core.poll_cdr().expect("cdr");
    assert_eq!((cdr.a_status, cdr.b_status, cdr.attempts), (480, 302, 2));
    assert_eq!(n.core.b2bua().map(|b| b.counters.failovers), Some(1));

    // The primary answered 503: the next call tries the secondary first
    // while the primary is avoided ([dns] avoid_secs, 60 s by default).
    let out = n.deliver(1_000, CALLER, ACCESS, &invite("f1b", OFFER));
    assert_eq!(to(&out, PEER1).len(), 0);
    assert_eq!(to(&out, PEER2).len(), 1);
    // After the avoid time the primary comes first again. A peer that does
    // not answer at all is left after invite_timeout.
    let out = n.deliver(61_000, CALLER, ACCESS, &invite("f2", OFFER));
    assert_eq!(to(&out, PEER1).len(), 1);
    let out = n.tick(63_001);
    let second = to(&out, PEER2);
    assert_eq!(second.len(), 1, "{out:?}");
    let out = n.tick(65_002);
    let fin: Vec<Option<u16>> = to(&out, CALLER)
        .into_iter()
        .filter(|o| header(o, HeaderName::CallId) == "f2@127.0.0.2")
        .map(status)
        .collect();
    assert_eq!(fin, vec![Some(408)], "both silent");
}

#[test]
fn sources_outside_the_realm_are_refused() {
    let mut n = net();
    let out = n.deliver(0, "127.0.0.9:5080", ACCESS, &invite("acl", OFFER));
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(403)]);
    // The caller's address is not allowed on the core side either.
    let out = n.deliver(0, CALLER, CORE, &invite("acl2", OFFER));
    assert_eq!(status(&out[0]), Some(403));
    assert!(n.orders().is_empty());
}

#[test]
fn a_session_nobody_refreshes_is_torn_down() {
    let mut n = net_with(
        &CONFIG.replace("session_expires_secs = 0", "session_expires_secs = 90"),
        Journal::disabled(),
        Vec::new(),
    );
    let out = n.deliver(0, CALLER, ACCESS, &invite("s1", OFFER));
    let inv = to(&out, PEER1)[0].clone();
    assert!(
        text(&inv).contains("Session-Expires: 90\r\n"),
        "{}",
        text(&inv)
    );
    let out = n.deliver(
        10,
        PEER1,
        CORE,
        &reply(
            &inv,
            200,
            "calleetag",
            "Session-Expires: 90;refresher=uas\r\n",
            ANSWER,
        ),
    );
    let ok = to(&out, CALLER)[0].clone();
    let ack = format!(
        "ACK sip:{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-ack-s1\r\nMax-Forwards: 70\r\n\
From: <sip:alice@127.0.0.2>;tag=caller-s1\r\nTo: {}\r\nCall-ID: s1@127.0.0.2\r\nCSeq: 10 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&ok, HeaderName::To)
    );
    n.deliver(20, CALLER, ACCESS, &ack);
    // A refresh from the callee at 60 s moves the end.
    let refresh = peer_request(
        &inv,
        "UPDATE",
        2,
        PEER1,
        "",
        "Session-Expires: 90;refresher=uas\r\n",
    );
    let out = n.deliver(60_000, PEER1, CORE, &refresh);
    let fwd = to(&out, CALLER)[0].clone();
    assert!(text(&fwd).starts_with("UPDATE "));
    let out = n.deliver(60_010, CALLER, ACCESS, &reply(&fwd, 200, "", "", ""));
    assert_eq!(status(to(&out, PEER1)[0]), Some(200));
    assert!(n.tick(91_000).iter().all(|o| !text(o).starts_with("BYE")));
    // Nobody refreshes again: at 150 s both legs get a BYE.
    let out = n.tick(150_020);
    let byes: Vec<SocketAddr> = out
        .iter()
        .filter(|o| text(o).starts_with("BYE "))
        .map(|o| o.dest)
        .collect();
    assert_eq!(byes, vec![addr(CALLER), addr(PEER1)], "{out:?}");
    let cdr = n.core.poll_cdr().expect("cdr");
    assert_eq!(cdr.end_reason, "session-timer");
}

#[test]
fn a_recovered_call_ends_on_the_callees_bye() {
    let dir = std::env::temp_dir().join(format!("rvoip-b2b-recover-{}", std::process::id()));
    let path = dir.join("dialogs.journal");
    let _ = std::fs::remove_dir_all(&dir);
    let (journal, saved) = Journal::open::<SavedCall>(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(saved.is_empty());
    let mut n = net_with(CONFIG, journal, saved);
    let (inv, ok) = answered(&mut n, "r1");
    drop(n);
    // A new control plane reads the journal.
    let (journal, saved) = Journal::open::<SavedCall>(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(saved.len(), 1);
    let mut n = net_with(CONFIG, journal, saved);
    assert_eq!(n.core.b2bua().map(|b| b.counters.recovered), Some(1));
    let bye = peer_request(&inv, "BYE", 9, PEER1, "", "");
    let out = n.deliver(50, PEER1, CORE, &bye);
    assert_eq!(status(to(&out, PEER1)[0]), Some(200));
    let bye_a = to(&out, CALLER)[0];
    assert!(
        text(bye_a).starts_with("BYE sip:alice@127.0.0.2:5080"),
        "{}",
        text(bye_a)
    );
    assert_eq!(header(bye_a, HeaderName::From), header(&ok, HeaderName::To));
    assert_eq!(n.orders(), vec!["delete "]);
    let cdr = n.core.poll_cdr().expect("cdr");
    assert_eq!(cdr.end_reason, "bye-callee");
    drop(n);
    let (_, saved) = Journal::open::<SavedCall>(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(saved.is_empty(), "the ended call left the journal");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refer_is_declined_when_configured_and_unknown_dialogs_get_481() {
    let mut n = net_with(
        &CONFIG.replace("[sbc]\n", "[sbc]\nrefer = \"reject\"\n"),
        Journal::disabled(),
        Vec::new(),
    );
    let (inv, _) = answered(&mut n, "rf");
    let refer = peer_request(
        &inv,
        "REFER",
        3,
        PEER1,
        "",
        "Refer-To: <sip:other@127.0.0.1>\r\n",
    );
    let out = n.deliver(100, PEER1, CORE, &refer);
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(603)]);
    let info = peer_request(&inv, "INFO", 4, PEER1, "", "")
        .replace(&header(&inv, HeaderName::CallId), "nosuch@127.0.0.1");
    let out = n.deliver(200, PEER1, CORE, &info);
    assert_eq!(status(&out[0]), Some(481));
}

#[test]
fn calls_from_the_core_reach_a_registered_user_where_it_registered_from() {
    let mut n = net();
    // Alice registers from behind a NAT: her Contact is private, her
    // REGISTER comes from 127.0.0.2:5090.
    register_user(
        &mut n,
        "alice",
        "10.0.0.5:5060",
        ("127.0.0.2:5090", ACCESS),
        "1",
    );
    // The core calls her.
    let out = core_calls(&mut n, "alice", "1");
    let to_alice = to(&out, "127.0.0.2:5090");
    assert_eq!(to_alice.len(), 1, "{out:?}");
    let inv = to_alice[0];
    let t = text(inv);
    assert!(
        t.starts_with("INVITE sip:alice@10.0.0.5:5060 SIP/2.0\r\n"),
        "{t}"
    );
    assert_eq!(
        inv.local,
        addr(ACCESS),
        "sent from the access realm's listener"
    );
    assert!(!t.contains("in1@core") && !t.contains(PEER1), "{t}");
    let out = n.deliver(
        20,
        "127.0.0.2:5090",
        ACCESS,
        &reply(inv, 200, "alice", "", OFFER),
    );
    let ok = to(&out, PEER1);
    assert_eq!(
        ok.iter().map(|o| status(o)).collect::<Vec<_>>(),
        vec![Some(200)]
    );
    assert!(!text(ok[0]).contains("10.0.0.5"));
}

#[test]
fn a_call_keeps_its_events_in_order_while_the_relay_is_slow() {
    let mut n = net();
    let out = n.deliver(0, CALLER, ACCESS, &invite("slow", OFFER));
    let inv = to(&out, PEER1)[0].clone();
    // The relay sits on the answer for the 183's SDP ...
    n.relay
        .hold
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let out = n.deliver(5, PEER1, CORE, &reply(&inv, 183, "calleetag", "", ANSWER));
    assert!(to(&out, CALLER).is_empty());
    // ... while the 200 (no SDP: the answer was in the 183) arrives.
    let out = n.deliver(6, PEER1, CORE, &reply(&inv, 200, "calleetag", "", ""));
    assert!(to(&out, CALLER).is_empty(), "the 200 waits for the 183");
    assert!(n.core.media_pending());
    n.relay
        .hold
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let out = n.drain();
    let codes: Vec<Option<u16>> = to(&out, CALLER).into_iter().map(status).collect();
    assert_eq!(codes, vec![Some(183), Some(200)]);
    assert!(text(to(&out, CALLER)[0]).contains(&format!("c=IN IP4 {RELAY}")));
    assert!(text(to(&out, PEER1)[0]).starts_with("ACK "));
    assert!(!n.core.media_pending());
}

#[test]
fn refer_and_info_cross_to_the_other_leg_by_default() {
    let mut n = net();
    let (inv, ok) = answered(&mut n, "tr");
    let refer = peer_request(
        &inv,
        "REFER",
        3,
        PEER1,
        "",
        "Refer-To: <sip:+15559999@core.example>\r\n",
    );
    let out = n.deliver(100, PEER1, CORE, &refer);
    let fwd = to(&out, CALLER)[0].clone();
    let t = text(&fwd);
    assert!(
        t.starts_with("REFER sip:alice@127.0.0.2:5080 SIP/2.0"),
        "{t}"
    );
    assert!(t.contains("Refer-To: <sip:+15559999@core.example>"), "{t}");
    assert_eq!(header(&fwd, HeaderName::From), header(&ok, HeaderName::To));
    let out = n.deliver(110, CALLER, ACCESS, &reply(&fwd, 202, "", "", ""));
    let back = to(&out, PEER1)[0];
    assert_eq!(
        (status(back), header(back, HeaderName::CSeq)),
        (Some(202), "3 REFER".to_string())
    );
    let info = peer_request(&inv, "INFO", 4, PEER1, "", "");
    let out = n.deliver(200, PEER1, CORE, &info);
    assert!(text(to(&out, CALLER)[0]).starts_with("INFO "));
}

#[test]
fn a_calls_journal_record_reads_back_as_the_saved_call_it_was_written_from() {
    let mut n = net();
    answered(&mut n, "jr");
    let b = n.core.b2bua().expect("b2bua");
    let call = b.calls.values().next().expect("the answered call");
    let written = serde_json::to_string(&saved(call)).expect("serializes");
    let read: SavedCall = serde_json::from_str(&written).expect("reads back as SavedCall");
    assert_eq!(serde_json::to_string(&read).expect("serializes"), written);
    assert!(written.contains("\"attempts\":1"), "{written}");
    assert!(written.contains(call.legs[0].call_id()), "{written}");
}

fn register_from(from: &str, n: u32) -> String {
    format!(
        "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-regf{n};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@rvoip.test>;tag=rf{n}\r\nTo: <sip:alice@rvoip.test>\r\nCall-ID: regf{n}\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:alice@{from}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The test configuration with `extra` keys in the access realm.
fn with_access(extra: &str) -> String {
    CONFIG.replace(
        "allow = [\"127.0.0.2/32\"]",
        &format!("allow = [\"127.0.0.2/32\"]\n{extra}"),
    )
}

/// The test configuration with flood bans at 10 requests a second and the
/// whole loopback network allowed in the access realm.
fn flood_config() -> String {
    let config = CONFIG.replace("allow = [\"127.0.0.2/32\"]", "allow = [\"127.0.0.0/8\"]");
    format!("{config}\n[sbc.flood]\nrequests_per_sec = 10\nban_secs = 60\n")
}

#[test]
fn register_goes_through_the_realms_access_list() {
    let mut n = net();
    // Outside the access realm's allow list: 403, never a challenge or a
    // binding, so nobody outside can guess passwords.
    let out = n.deliver(
        0,
        "127.0.0.9:5090",
        ACCESS,
        &register_from("127.0.0.9:5090", 1),
    );
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(403)]);
    assert!(header(&out[0], HeaderName::Warning).contains("not allowed"));
    assert_eq!(n.core.counters().registrations, 0);
    // Inside it: registered.
    let out = n.deliver(10, CALLER, ACCESS, &register_from(CALLER, 2));
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(200)]);
}

#[test]
fn a_register_flood_bans_its_source_and_no_other() {
    let mut n = net_with(&flood_config(), Journal::disabled(), Vec::new());
    let mut answered = 0;
    for i in 0..30 {
        let out = n.deliver(i * 10, CALLER, ACCESS, &register_from(CALLER, i as u32));
        answered += out.len();
    }
    assert_eq!(answered, 10, "ten REGISTERs a second, the rest dropped");
    assert_eq!(n.core.b2bua().map(|b| b.policy.counters.bans), Some(1));
    // Banned: a new call from it is dropped too.
    assert!(
        n.deliver(400, CALLER, ACCESS, &invite("after-ban", OFFER))
            .is_empty()
    );
    // Another source of the realm still registers.
    let out = n.deliver(
        500,
        "127.0.0.3:6000",
        ACCESS,
        &register_from("127.0.0.3:6000", 99),
    );
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(200)]);
}

#[test]
fn a_banned_source_still_ends_its_calls_that_are_up() {
    let mut n = net_with(&flood_config(), Journal::disabled(), Vec::new());
    let (inv, ok) = answered(&mut n, "up1");
    // The caller floods OPTIONS and is banned.
    for i in 0..20u64 {
        let opt = format!(
            "OPTIONS sip:{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-fl{i}\r\nMax-Forwards: 70\r\n\
From: <sip:x@127.0.0.2>;tag=fl{i}\r\nTo: <sip:{ACCESS}>\r\nCall-ID: fl{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        n.deliver(100 + i, CALLER, ACCESS, &opt);
    }
    assert_eq!(n.core.b2bua().map(|b| b.policy.counters.bans), Some(1));
    assert!(
        n.deliver(200, CALLER, ACCESS, &invite("new", OFFER))
            .is_empty(),
        "nothing new"
    );
    // Its BYE in the established call still ends both legs.
    let bye = caller_bye("up1", &header(&ok, HeaderName::To));
    let out = n.deliver(300, CALLER, ACCESS, &bye);
    assert_eq!(
        to(&out, CALLER)
            .iter()
            .map(|o| status(o))
            .collect::<Vec<_>>(),
        vec![Some(200)]
    );
    let bye_b = to(&out, PEER1);
    assert_eq!(bye_b.len(), 1, "{out:?}");
    assert!(text(bye_b[0]).starts_with("BYE "));
    let _ = inv;
    // The callee's 200 to that BYE ends the call; the relay is told.
    let out = n.deliver(310, PEER1, CORE, &reply(bye_b[0], 200, "calleetag", "", ""));
    assert!(out.is_empty() || out.iter().all(|o| o.dest != addr(CALLER)));
    assert!(
        n.orders().iter().any(|o| o.contains("delete")),
        "{:?}",
        n.orders()
    );
}

#[test]
fn an_srtp_realm_refuses_plain_rtp_unless_srtp_is_optional() {
    let strict = with_access("media = \"srtp\"");
    let mut n = net_with(&strict, Journal::disabled(), Vec::new());
    let out = n.deliver(0, CALLER, ACCESS, &invite("plain", OFFER));
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(488)]);
    assert!(header(&out[0], HeaderName::Warning).contains("SRTP"));
    assert!(n.orders().is_empty(), "no media for a refused call");
    assert!(to(&out, PEER1).is_empty());

    let optional = with_access("media = \"srtp-optional\"");
    let mut n = net_with(&optional, Journal::disabled(), Vec::new());
    let out = n.deliver(0, CALLER, ACCESS, &invite("plain-ok", OFFER));
    assert_eq!(to(&out, PEER1).len(), 1, "{out:?}");
}

fn media_load(busy_permille: u32) -> crate::element::Load {
    crate::element::Load {
        media: Some(rvoip_dataplane::shm::load::MediaLoad {
            busy_permille,
            workers: 2,
            packets_per_sec: 40_000,
        }),
        sip_backlog: 0,
    }
}

#[test]
fn an_overloaded_sbc_refuses_new_calls_and_keeps_the_ones_up() {
    let mut n = net();
    let (_inv, ok) = answered(&mut n, "kept");
    let orders = n.orders().len();
    // The busiest media worker passes 95 %: new calls get 503 with
    // Retry-After and the reason, nothing reaches the core or the relay.
    n.core.set_load(media_load(980));
    let out = n.deliver(100, CALLER, ACCESS, &invite("shed", OFFER));
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(503)]);
    assert_eq!(header(&out[0], HeaderName::RetryAfter), "5");
    assert!(header(&out[0], HeaderName::Warning).contains("98% busy"));
    assert_eq!(n.orders().len(), orders, "no media ordered");
    assert_eq!(n.core.counters().overload_refused, 1);
    // The call already up ends normally.
    let bye = caller_bye("kept", &header(&ok, HeaderName::To));
    let out = n.deliver(200, CALLER, ACCESS, &bye);
    assert_eq!(to(&out, PEER1).len(), 1, "BYE crosses: {out:?}");
    // 93 % is below the limit but not below 95 % of it: still shedding.
    n.core.set_load(media_load(930));
    let out = n.deliver(300, CALLER, ACCESS, &invite("still", OFFER));
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(503)]);
    // At 90 % calls are taken again.
    n.core.set_load(media_load(900));
    let out = n.deliver(400, CALLER, ACCESS, &invite("again", OFFER));
    assert_eq!(to(&out, PEER1).len(), 1, "{out:?}");
}

#[test]
fn a_peer_that_speaks_rfc_7339_is_told_how_much_to_shed() {
    let mut n = net();
    n.core.set_load(crate::element::Load {
        media: None,
        sip_backlog: 5_000,
    });
    let inv = invite("oc", OFFER).replace(
        &format!("Via: SIP/2.0/UDP {CALLER};"),
        &format!("Via: SIP/2.0/UDP {CALLER};oc;"),
    );
    assert!(inv.contains(";oc;"), "{inv}");
    let out = n.deliver(0, CALLER, ACCESS, &inv);
    assert_eq!(status(&out[0]), Some(503));
    let via = header(&out[0], HeaderName::Via);
    assert!(
        via.contains(";oc=50;oc-algo=\"loss\";oc-validity=5000;oc-seq="),
        "{via}"
    );
    assert!(header(&out[0], HeaderName::Warning).contains("5000 SIP messages waiting"));
    // A peer that did not ask gets plain 503 + Retry-After.
    let out = n.deliver(10, CALLER, ACCESS, &invite("no-oc", OFFER));
    assert_eq!(status(&out[0]), Some(503));
    assert!(!header(&out[0], HeaderName::Via).contains("oc="));
}

#[test]
fn a_call_past_the_sources_rate_gets_503_with_the_limit_named_on_the_wire() {
    let config = with_access("cps_per_source = 1");
    let mut n = net_with(&config, Journal::disabled(), Vec::new());
    let out = n.deliver(0, CALLER, ACCESS, &invite("rate1", OFFER));
    assert_eq!(
        to(&out, PEER1).len(),
        1,
        "the first call of the second goes on"
    );
    let out = n.deliver(10, CALLER, ACCESS, &invite("rate2", OFFER));
    let to_caller: Vec<_> = to(&out, CALLER);
    assert_eq!(
        to_caller.iter().map(|o| status(o)).collect::<Vec<_>>(),
        vec![Some(503)]
    );
    let warning = header(to_caller[0], HeaderName::Warning);
    assert!(warning.starts_with("399 rvoip \""), "{warning}");
    assert!(to(&out, PEER1).is_empty(), "nothing reaches the core");
    assert_eq!(
        n.core.b2bua().map(|b| b.policy.counters.source_limited),
        Some(1)
    );
}

#[test]
fn a_2xx_the_caller_never_acknowledges_ends_both_legs() {
    let mut n = net();
    let out = n.deliver(0, CALLER, ACCESS, &invite("noack", OFFER));
    let inv = to(&out, PEER1)[0].clone();
    let out = n.deliver(10, PEER1, CORE, &reply(&inv, 200, "calleetag", "", ANSWER));
    assert_eq!(
        to(&out, CALLER)
            .iter()
            .map(|o| status(o))
            .collect::<Vec<_>>(),
        vec![Some(200)]
    );
    // No ACK from the caller: the 200 is retransmitted, then after 64·T1
    // (32 s) the call ends on both legs and its media is deleted.
    let mut byes_to_callee = std::collections::BTreeSet::new();
    let mut t = 10;
    while t < 40_000 {
        t += 500;
        for o in n.tick(t) {
            if o.dest == addr(PEER1) && text(&o).starts_with("BYE ") {
                // Its retransmissions (unanswered here) share one branch.
                byes_to_callee.insert(header(&o, HeaderName::Via));
            }
        }
    }
    assert_eq!(
        byes_to_callee.len(),
        1,
        "one BYE to the callee: {byes_to_callee:?}"
    );
    assert!(
        n.orders().iter().any(|o| o.contains("delete")),
        "{:?}",
        n.orders()
    );
    let cdr = n.core.poll_cdr().expect("a CDR");
    assert_eq!(cdr.end_reason, "ack-timeout");
}

#[test]
fn a_2xx_from_a_second_fork_is_acknowledged_and_ended_and_the_call_stays_on_the_first() {
    let mut n = net();
    let (inv, ok) = answered(&mut n, "f1");
    // A forking proxy before the callee lets a second phone answer too.
    let out = n.deliver(30, PEER1, CORE, &reply(&inv, 200, "fork2tag", "", ANSWER));
    assert!(
        to(&out, CALLER).is_empty(),
        "the caller hears of no second answer"
    );
    let to_peer = to(&out, PEER1);
    let methods: Vec<String> = to_peer
        .iter()
        .map(|o| text(o).split(' ').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(methods, ["ACK", "BYE"], "§13.2.2.4: ACK the 2xx, then BYE");
    for o in &to_peer {
        assert!(
            header(o, HeaderName::To).ends_with(";tag=fork2tag"),
            "{}",
            text(o)
        );
        assert_eq!(
            header(o, HeaderName::CallId),
            header(&inv, HeaderName::CallId)
        );
    }
    assert_eq!(header(to_peer[0], HeaderName::CSeq), "1 ACK");
    assert_eq!(header(to_peer[1], HeaderName::CSeq), "2 BYE");
    assert_eq!(n.core.b2bua().map(|b| b.counters.forks_ended), Some(1));
    // The call goes on with the first fork: the caller's BYE reaches it.
    let out = n.deliver(
        40,
        CALLER,
        ACCESS,
        &caller_bye("f1", &header(&ok, HeaderName::To)),
    );
    let bye = to(&out, PEER1)[0];
    assert!(text(bye).starts_with("BYE "), "{}", text(bye));
    assert!(
        header(bye, HeaderName::To).ends_with(";tag=calleetag"),
        "{}",
        text(bye)
    );
}

#[test]
fn an_in_dialog_request_out_of_order_gets_500_and_one_for_another_dialog_481() {
    let mut n = net();
    let (_inv, ok) = answered(&mut n, "o1");
    let to_value = header(&ok, HeaderName::To);
    let request = |cseq: u32, to: &str, branch: &str| {
        format!(
            "INFO sip:{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{branch}\r\nMax-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@127.0.0.2>;tag=caller-o1\r\nTo: {to}\r\nCall-ID: o1@127.0.0.2\r\nCSeq: {cseq} INFO\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // The INVITE had CSeq 10: 9 is out of order (§12.2.2).
    let out = n.deliver(30, CALLER, ACCESS, &request(9, &to_value, "i9"));
    assert_eq!(out.len(), 1);
    assert_eq!((status(&out[0]), out[0].dest), (Some(500), addr(CALLER)));
    // Another To tag of the same Call-ID names no dialog of the SBC's.
    let out = n.deliver(
        40,
        CALLER,
        ACCESS,
        &request(12, "<sip:x@h>;tag=nope", "i12"),
    );
    assert_eq!(status(&out[0]), Some(481));
    // In order, it crosses to the callee.
    let out = n.deliver(50, CALLER, ACCESS, &request(13, &to_value, "i13"));
    assert!(text(to(&out, PEER1)[0]).starts_with("INFO "));
}

#[test]
fn the_sbc_answers_for_its_uas_what_it_requires_and_what_body_it_reads() {
    let mut n = net();
    // Require names an extension the SBC does not implement: 420 with it
    // listed in Unsupported (RFC 3261 §8.2.2.3), and nothing reaches a peer.
    let inv = invite("r1", OFFER).replace("Supported: 100rel\r\n", "Require: foo, 100rel\r\n");
    let out = n.deliver(0, CALLER, ACCESS, &inv);
    assert_eq!(
        out.len(),
        1,
        "{:?}",
        out.iter().map(text).collect::<Vec<_>>()
    );
    assert_eq!(status(&out[0]), Some(420));
    assert_eq!(header(&out[0], HeaderName::Unsupported), "foo");
    // A session body that is not SDP: 415 (§8.2.3).
    let inv = invite("r2", OFFER).replace("application/sdp", "text/plain");
    let out = n.deliver(10, CALLER, ACCESS, &inv);
    assert_eq!(status(&out[0]), Some(415));
    assert!(to(&out, PEER1).is_empty());
}

#[test]
fn a_forking_callee_keeps_an_early_dialog_per_fork_and_each_prack_reaches_its_fork() {
    let mut n = net();
    let out = n.deliver(0, CALLER, ACCESS, &invite("k1", OFFER));
    let inv = to(&out, PEER1)[0].clone();
    let reliable = |tag: &str, rseq: u32| {
        reply(
            &inv,
            183,
            tag,
            &format!("Require: 100rel\r\nRSeq: {rseq}\r\n"),
            ANSWER,
        )
    };
    let out = n.deliver(5, PEER1, CORE, &reliable("forkone", 11));
    let prov = to(&out, CALLER)[0].clone();
    n.deliver(6, PEER1, CORE, &reliable("forktwo", 22));
    let prack = |rseq: u32, cseq: u32| {
        format!(
            "PRACK sip:{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-prack{rseq}\r\nMax-Forwards: 70\r\n\
From: <sip:alice@127.0.0.2>;tag=caller-k1\r\nTo: {}\r\nCall-ID: k1@127.0.0.2\r\nCSeq: {cseq} PRACK\r\nRAck: {rseq} 10 INVITE\r\nContent-Length: 0\r\n\r\n",
            header(&prov, HeaderName::To)
        )
    };
    // Each PRACK goes to the fork whose provisional it acknowledges.
    for (rseq, cseq, tag) in [(11, 11, "forkone"), (22, 12, "forktwo")] {
        let out = n.deliver(10 + u64::from(cseq), CALLER, ACCESS, &prack(rseq, cseq));
        let fwd = to(&out, PEER1)[0].clone();
        assert!(
            header(&fwd, HeaderName::To).ends_with(&format!(";tag={tag}")),
            "{}",
            text(&fwd)
        );
        assert_eq!(header(&fwd, HeaderName::RAck), format!("{rseq} 1 INVITE"));
        assert_eq!(
            header(&fwd, HeaderName::CSeq),
            "2 PRACK",
            "each fork its own CSeq"
        );
        n.deliver(30, PEER1, CORE, &reply(&fwd, 200, "", "", ""));
    }
    // The first fork answers: the call goes on with it.
    let out = n.deliver(40, PEER1, CORE, &reply(&inv, 200, "forkone", "", ANSWER));
    let ok = to(&out, CALLER)[0].clone();
    assert_eq!(status(&ok), Some(200));
    let ack = format!(
        "ACK sip:{ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-ack-k1\r\nMax-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@127.0.0.2>;tag=caller-k1\r\nTo: {}\r\nCall-ID: k1@127.0.0.2\r\nCSeq: 10 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&ok, HeaderName::To)
    );
    n.deliver(45, CALLER, ACCESS, &ack);
    let out = n.deliver(
        50,
        CALLER,
        ACCESS,
        // After the PRACKs' CSeq 11 and 12 (a lower one would be out of
        // order: 500).
        &caller_bye("k1", &header(&ok, HeaderName::To)).replace("CSeq: 11 BYE", "CSeq: 13 BYE"),
    );
    let bye = to(&out, PEER1)[0];
    assert!(
        header(bye, HeaderName::To).ends_with(";tag=forkone"),
        "{}",
        text(bye)
    );
}

#[test]
fn a_transcoding_trunk_is_offered_its_codecs_and_the_callers_others_are_hidden() {
    let config = CONFIG.replace(
        "codecs = [\"PCMA\", \"telephone-event\"]",
        "codecs = [\"opus\", \"0\"]\ntranscode = true",
    );
    let mut n = net_with(&config, Journal::disabled(), Vec::new());
    let out = n.deliver(0, CALLER, ACCESS, &invite("t1", OFFER));
    assert!(!to(&out, PEER1).is_empty());
    let orders = n.orders();
    assert!(
        orders.contains(&"codecs mask=all transcode=opus,PCMU".to_string()),
        "{orders:?}"
    );
    // The realm's list serves a trunk that names none.
    let config = CONFIG
        .replace("codecs = [\"PCMA\", \"telephone-event\"]\n", "")
        .replace(
            "name = \"core\"\nallow = [\"127.0.0.1/32\"]",
            "name = \"core\"\nallow = [\"127.0.0.1/32\"]\ncodecs = [\"G722\"]\ntranscode = true",
        );
    let mut n = net_with(&config, Journal::disabled(), Vec::new());
    n.deliver(0, CALLER, ACCESS, &invite("t2", OFFER));
    assert!(
        n.orders()
            .contains(&"codecs mask=all transcode=G722".to_string()),
        "{:?}",
        n.orders()
    );
}

/// An IVR menu on the B2BUA: `1` joins conf-1, `3` transfers the caller
/// (REFER), nothing for 5 s hangs up (no retries).
const IVR_CONFIG: &str = r#"
[node]
mode = "b2bua"
[sip]
listen = [
  { address = "127.0.0.1:5060", transport = "udp", realm = "access" },
  { address = "127.0.0.1:5062", transport = "udp", realm = "core" },
]
[media]
address = "127.0.0.1"
port_min = 30000
port_max = 39999
[[realms]]
name = "access"
allow = ["127.0.0.2/32"]
[[realms]]
name = "core"
allow = ["127.0.0.1/32"]
[[trunks]]
name = "core"
realm = "core"
targets = ["127.0.0.1:5070"]
health_checks = false
[sbc]
session_expires_secs = 0
[[sbc.routes]]
trunk = "core"
[mediaserver]
[[mediaserver.ivr]]
user = "ivr"
prompt = "welcome.wav"
timeout_secs = 5
retries = 0
digits = { "1" = "room:conf-1", "3" = "transfer:sip:100@rvoip.test" }
"#;

fn ivr_call(n: &mut Net, call: &str) -> Vec<Outbound> {
    let inv = invite(call, OFFER).replace("+15551234", "ivr");
    let out = n.deliver(0, CALLER, ACCESS, &inv);
    let ok = to(&out, CALLER)
        .into_iter()
        .find(|o| status(o) == Some(200))
        .map(text)
        .unwrap_or_else(|| {
            panic!(
                "the media server answers: {:?}",
                out.iter().map(text).collect::<Vec<_>>()
            )
        });
    assert!(ok.contains("m=audio"), "with its SDP: {ok}");
    out
}

fn dtmf(n: &Net, event: u8) {
    let cid = n
        .relay
        .terminated
        .lock()
        .ok()
        .and_then(|t| t.clone())
        .expect("a terminated call");
    if let Ok(mut e) = n.relay.events.lock() {
        e.push((
            cid,
            rvoip_dataplane::media::services::MediaEvent::Dtmf {
                side: 0,
                event,
                inband: false,
            },
        ));
    }
}

#[test]
fn an_ivr_caller_hears_the_menu_its_digits_act_and_silence_hangs_up() {
    let mut n = net_with(IVR_CONFIG, Journal::disabled(), Vec::new());
    ivr_call(&mut n, "ivr1");
    let orders = n.orders();
    assert!(
        orders
            .iter()
            .any(|o| o.starts_with("terminate caller-ivr1")),
        "{orders:?}"
    );
    assert!(
        orders.iter().any(|o| o == "service play media"),
        "the menu's prompt: {orders:?}"
    );
    assert!(
        !orders.iter().any(|o| o.starts_with("offer")),
        "nothing goes to a trunk: {orders:?}"
    );
    // 3: the caller is referred to the transfer target.
    dtmf(&n, 3);
    let out = n.tick(150);
    let refer = to(&out, CALLER)
        .into_iter()
        .map(text)
        .find(|t| t.starts_with("REFER "))
        .unwrap_or_else(|| panic!("a REFER: {:?}", out.iter().map(text).collect::<Vec<_>>()));
    assert!(refer.contains("Refer-To: <sip:100@rvoip.test>"), "{refer}");
    // 1: the prompt stops and the caller joins conf-1.
    dtmf(&n, 1);
    n.tick(300);
    let orders = n.orders();
    let tail: Vec<&String> = orders.iter().rev().take(2).collect();
    assert_eq!(
        tail,
        [
            &"service join".to_string(),
            &"service stop media".to_string()
        ],
        "{orders:?}"
    );

    // A second caller presses nothing: after 5 s, BYE (no retries).
    let mut n = net_with(IVR_CONFIG, Journal::disabled(), Vec::new());
    ivr_call(&mut n, "ivr2");
    let out = n.tick(4_900);
    assert!(!to(&out, CALLER).iter().any(|o| text(o).starts_with("BYE ")));
    let out = n.tick(5_100);
    assert!(
        to(&out, CALLER).iter().any(|o| text(o).starts_with("BYE ")),
        "hung up after the menu's timeout"
    );
}

#[test]
fn a_user_registered_over_ipv6_is_called_from_the_realms_ipv6_listener() {
    let config = CONFIG
        .replace(
            "{ address = \"127.0.0.1:5060\", transport = \"udp\", realm = \"access\" },",
            "{ address = \"127.0.0.1:5060\", transport = \"udp\", realm = \"access\" },\n  \
             { address = \"[::1]:5060\", transport = \"udp\", realm = \"access\" },",
        )
        .replace(
            "allow = [\"127.0.0.2/32\"]",
            "allow = [\"127.0.0.2/32\", \"::1/128\"]",
        );
    let mut n = net_with(&config, Journal::disabled(), Vec::new());
    register_user(
        &mut n,
        "bob",
        "[::1]:5090",
        ("[::1]:5090", "[::1]:5060"),
        "6",
    );
    let out = core_calls(&mut n, "bob", "6");
    let to_bob = to(&out, "[::1]:5090");
    assert_eq!(to_bob.len(), 1, "{out:?}");
    assert_eq!(
        to_bob[0].local,
        addr("[::1]:5060"),
        "sent from the access realm's IPv6 listener"
    );
    assert!(text(to_bob[0]).starts_with("INVITE sip:bob@[::1]:5090 SIP/2.0\r\n"));
}
