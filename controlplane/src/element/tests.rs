//! The proxy and registrar on simulated time and a simulated network.

use std::net::SocketAddr;

use rvoip_dataplane::sip::{Framing, HeaderName, Limits, SipMessage};

use super::*;
use crate::registrar::location::LocationService;
use crate::registrar::{RegistrarConfig, Users};

const PROXY: &str = "127.0.0.1:5060";
const UAC: &str = "127.0.0.1:5080";
const UAS: &str = "127.0.0.1:5070";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn core(auth: AuthPolicy) -> SipCore {
    let config = CoreConfig {
        auth,
        ..CoreConfig::routing_all_to(&["rvoip.test"], addr(PROXY), addr(UAS))
    };
    let users =
        Users::parse("[[user]]\nname = \"alice\"\npassword = \"alicepw\"\n").unwrap_or_default();
    SipCore::new(
        config,
        Registrar::new(RegistrarConfig::default(), LocationService::in_memory()),
        users,
        b"test-secret",
        &rvoip_dataplane::entropy::SeededEntropy::new(1),
    )
}

/// Delivers `text` from `from` and returns everything the core sends.
fn deliver(c: &mut SipCore, now: Millis, from: &str, text: &str) -> Vec<Outbound> {
    c.on_message(
        now,
        1_000_000 + now,
        Inbound {
            bytes: text.as_bytes(),
            transport: Transport::Udp,
            local: addr(PROXY),
            remote: addr(from),
            conn: 0,
        },
    );
    c.flush(now).unwrap_or_else(|e| panic!("{e}"));
    std::iter::from_fn(|| c.poll_outbound()).collect()
}

fn tick(c: &mut SipCore, now: Millis) -> Vec<Outbound> {
    c.on_timer(now);
    std::iter::from_fn(|| c.poll_outbound()).collect()
}

fn parse(o: &Outbound) -> SipMessage<'_> {
    SipMessage::parse(&o.bytes, Framing::Datagram, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.bytes)))
}

fn status(o: &Outbound) -> Option<u16> {
    parse(o).status_code()
}

fn invite(branch: &str, call: &str) -> String {
    format!(
        "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch={branch}\r\nMax-Forwards: 70\r\n\
From: <sip:uac@127.0.0.1:5080>;tag=f1\r\nTo: <sip:service@127.0.0.1:5060>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:uac@{UAC}>\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
    )
}

/// A response from the UAS to a forwarded request: its Vias copied.
fn answer(forwarded: &Outbound, code: u16, to_tag: &str) -> String {
    let m = parse(forwarded);
    let mut out = format!("SIP/2.0 {code} X\r\n");
    for v in m.header_lines(HeaderName::Via) {
        out.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(v)));
    }
    for r in m.header_lines(HeaderName::RecordRoute) {
        out.push_str(&format!("Record-Route: {}\r\n", String::from_utf8_lossy(r)));
    }
    let to = String::from_utf8_lossy(m.header(HeaderName::To).unwrap_or_default()).into_owned();
    let to = if to.contains("tag=") || code == 100 {
        to
    } else {
        format!("{to};tag={to_tag}")
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:uas@{UAS}>\r\nContent-Length: 0\r\n\r\n",
        String::from_utf8_lossy(m.header(HeaderName::From).unwrap_or_default()),
        String::from_utf8_lossy(m.header(HeaderName::CallId).unwrap_or_default()),
        String::from_utf8_lossy(m.header(HeaderName::CSeq).unwrap_or_default()),
    ));
    out
}

/// A core that has forwarded an INVITE from the UAC (sent at 0 ms) to the
/// UAS, and that INVITE as forwarded.
fn invite_forwarded(branch: &str, call: &str) -> (SipCore, Outbound) {
    let mut c = core(AuthPolicy::Off);
    let out = deliver(&mut c, 0, UAC, &invite(branch, call));
    let fwd = out
        .into_iter()
        .find(|o| o.dest == addr(UAS))
        .unwrap_or_else(|| panic!("INVITE forwarded"));
    (c, fwd)
}

#[test]
fn a_call_through_the_stateful_proxy() {
    let mut c = core(AuthPolicy::Off);
    let out = deliver(&mut c, 0, UAC, &invite("z9hG4bK-c1", "call-1"));
    assert_eq!(out.len(), 2);
    assert_eq!(
        (status(&out[0]), out[0].dest),
        (Some(100), addr(UAC)),
        "100 Trying at once"
    );
    let fwd = &out[1];
    assert_eq!(fwd.dest, addr(UAS));
    let m = parse(fwd);
    assert_eq!(m.max_forwards(), Ok(Some(69)));
    assert_eq!(m.vias().count(), 2);
    assert_eq!(
        m.top_via().map(|v| v.host.to_string()),
        Ok("127.0.0.1".into())
    );
    assert_eq!(m.record_routes().count(), 1, "Record-Route added");
    assert_eq!(m.body(), b"v=0\n");
    // A retransmitted INVITE is absorbed: 100 again, nothing forwarded.
    let again = deliver(&mut c, 300, UAC, &invite("z9hG4bK-c1", "call-1"));
    assert_eq!(
        again.iter().map(status).collect::<Vec<_>>(),
        vec![Some(100)]
    );
    // 180 and 200 come back with our Via removed.
    let ringing = deliver(&mut c, 400, UAS, &answer(fwd, 180, "t2"));
    assert_eq!(
        (status(&ringing[0]), ringing[0].dest),
        (Some(180), addr(UAC))
    );
    assert_eq!(parse(&ringing[0]).vias().count(), 1);
    let ok = deliver(&mut c, 500, UAS, &answer(fwd, 200, "t2"));
    assert_eq!((status(&ok[0]), ok[0].dest), (Some(200), addr(UAC)));
    // The ACK for the 2xx follows the Record-Route and is forwarded statelessly.
    let rr = String::from_utf8_lossy(
        parse(&ok[0])
            .header(HeaderName::RecordRoute)
            .unwrap_or_default(),
    )
    .into_owned();
    let ack = format!(
        "ACK sip:uas@{UAS} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bK-a1\r\nRoute: {rr}\r\nMax-Forwards: 70\r\nFrom: <sip:uac@127.0.0.1:5080>;tag=f1\r\n\
To: <sip:service@127.0.0.1:5060>;tag=t2\r\nCall-ID: call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    let fwd_ack = deliver(&mut c, 600, UAC, &ack);
    assert_eq!(fwd_ack.len(), 1);
    assert_eq!(fwd_ack[0].dest, addr(UAS));
    assert_eq!(parse(&fwd_ack[0]).routes().count(), 0, "our Route popped");
    // A BYE from the callee goes to the caller the same way.
    let bye = format!(
        "BYE sip:uac@{UAC} SIP/2.0\r\nVia: SIP/2.0/UDP {UAS};branch=z9hG4bK-b1\r\nRoute: {rr}\r\nMax-Forwards: 70\r\nFrom: <sip:service@127.0.0.1:5060>;tag=t2\r\n\
To: <sip:uac@127.0.0.1:5080>;tag=f1\r\nCall-ID: call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let fwd_bye = deliver(&mut c, 700, UAS, &bye);
    assert_eq!(fwd_bye.len(), 1);
    assert_eq!(fwd_bye[0].dest, addr(UAC));
    let bye_ok = deliver(&mut c, 800, UAC, &answer(&fwd_bye[0], 200, "f1"));
    assert_eq!((status(&bye_ok[0]), bye_ok[0].dest), (Some(200), addr(UAS)));
    // Everything winds down by the timers.
    tick(&mut c, 100_000);
    assert_eq!(c.transactions(), (0, 0));
}

#[test]
fn provisionals_add_no_timers_and_the_transactions_still_end() {
    let (mut c, fwd) = invite_forwarded("z9hG4bK-w1", "call-w");
    let on_wheel = c.el.txl.timers.len();
    // Provisionals restart Timer C: the one timer on the wheel comes first
    // and carries the later deadline on when it fires.
    for (at, code) in [(100, 100), (200, 180), (300, 183), (400, 180)] {
        deliver(&mut c, at, UAS, &answer(&fwd, code, "t2"));
    }
    assert_eq!(c.el.txl.timers.len(), on_wheel, "provisionals set no timer");
    deliver(&mut c, 500, UAS, &answer(&fwd, 200, "t2"));
    // Timer A lapsed without a retransmission; both transactions linger
    // in Accepted for 64*T1 after the 200, then end.
    assert!(tick(&mut c, 20_000).is_empty(), "no INVITE sent again");
    assert_eq!(c.transactions(), (1, 1));
    tick(&mut c, 32_400);
    assert_eq!(c.transactions(), (1, 1), "still lingering");
    tick(&mut c, 32_600);
    assert_eq!(c.transactions(), (0, 0));
}

#[test]
fn timer_c_cancels_a_ringing_branch_only_after_its_last_provisional() {
    let (mut c, fwd) = invite_forwarded("z9hG4bK-tc", "call-tc");
    deliver(&mut c, 100, UAS, &answer(&fwd, 180, "t2"));
    // Ringing again at 170 s restarts Timer C (§16.7 step 5).
    deliver(&mut c, 170_000, UAS, &answer(&fwd, 180, "t2"));
    let cancels = |out: &[Outbound]| {
        out.iter()
            .filter(|o| o.dest == addr(UAS) && parse(o).method() == Some(Method::Cancel))
            .count()
    };
    let fires = 170_000 + c.el.config.timer_c_ms;
    assert_eq!(cancels(&tick(&mut c, 181_000)), 0, "restarted at 170 s");
    assert_eq!(cancels(&tick(&mut c, fires - 100)), 0, "still running");
    assert_eq!(
        cancels(&tick(&mut c, fires)),
        1,
        "CANCEL when Timer C fires"
    );
}

#[test]
fn cancel_before_200_cancels_the_branch_and_returns_487() {
    let (mut c, fwd) = invite_forwarded("z9hG4bK-x", "call-c");
    deliver(&mut c, 100, UAS, &answer(&fwd, 180, "t9"));
    let cancel = format!(
        "CANCEL sip:service@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bK-x\r\nMax-Forwards: 70\r\nFrom: <sip:uac@127.0.0.1:5080>;tag=f1\r\n\
To: <sip:service@127.0.0.1:5060>\r\nCall-ID: call-c\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    let out = deliver(&mut c, 200, UAC, &cancel);
    assert_eq!(status(&out[0]), Some(200), "CANCEL answered");
    let down = &out[1];
    assert_eq!(
        parse(down).method().map(|m| m.as_bytes().to_vec()),
        Some(b"CANCEL".to_vec())
    );
    assert_eq!(
        parse(down)
            .top_via()
            .map(|v| v.branch().map(<[u8]>::to_vec)),
        parse(&fwd)
            .top_via()
            .map(|v| v.branch().map(<[u8]>::to_vec)),
        "same branch as the INVITE"
    );
    deliver(&mut c, 300, UAS, &answer(down, 200, "t9"));
    let out = deliver(&mut c, 400, UAS, &answer(&fwd, 487, "t9"));
    let ack = out
        .iter()
        .find(|o| o.dest == addr(UAS))
        .unwrap_or_else(|| panic!("ACK for the 487"));
    assert_eq!(
        parse(ack).method().map(|m| m.as_bytes().to_vec()),
        Some(b"ACK".to_vec())
    );
    let up = out
        .iter()
        .find(|o| o.dest == addr(UAC))
        .unwrap_or_else(|| panic!("487 upstream"));
    assert_eq!(status(up), Some(487));
}

#[test]
fn a_silent_next_hop_gives_408_after_timer_b() {
    let mut c = core(AuthPolicy::Off);
    let out = deliver(&mut c, 0, UAC, &invite("z9hG4bK-t", "call-t"));
    assert_eq!(out.len(), 2);
    let mut retransmits = 0;
    let mut upstream = Vec::new();
    let mut now = 0;
    while now < 40_000 {
        now += 100;
        for o in tick(&mut c, now) {
            if o.dest == addr(UAS) {
                retransmits += 1;
            } else {
                upstream.push(status(&o));
            }
        }
    }
    assert_eq!(retransmits, 6, "Timer A");
    // The 408 goes upstream, and is resent by Timer G until an ACK comes.
    assert!(
        !upstream.is_empty() && upstream.iter().all(|s| *s == Some(408)),
        "{upstream:?}"
    );
    let ack = "ACK sip:service@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-t\r\nMax-Forwards: 70\r\nFrom: <sip:uac@127.0.0.1:5080>;tag=f1\r\nTo: <sip:service@127.0.0.1:5060>\r\nCall-ID: call-t\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    assert!(
        deliver(&mut c, now, UAC, ack).is_empty(),
        "the ACK for the 408 is absorbed"
    );
    assert!(tick(&mut c, now + 40_000).is_empty());
    assert_eq!(c.transactions(), (0, 0));
}

#[test]
fn register_with_digest_then_calls_reach_the_contact() {
    let mut c = core(AuthPolicy::Register);
    let reg = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-r{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@rvoip.test>;tag=a\r\n\
To: <sip:alice@rvoip.test>\r\nCall-ID: reg-a\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alice@127.0.0.1:5090>\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let out = deliver(&mut c, 0, "127.0.0.1:5090", &reg(1, ""));
    assert_eq!(status(&out[0]), Some(401));
    let m = parse(&out[0]);
    let challenge = m
        .header_lines(HeaderName::WwwAuthenticate)
        .find(|v| v.windows(3).any(|w| w == b"MD5"))
        .unwrap_or_default();
    let text = String::from_utf8_lossy(challenge);
    let nonce = text
        .split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    let a = crate::registrar::digest::Algorithm::Md5;
    let ha1 = a.hex(b"alice:rvoip.test:alicepw");
    let ha2 = a.hex(b"REGISTER:sip:rvoip.test");
    let response = a.hex(format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}").as_bytes());
    let auth = format!(
        "Authorization: Digest username=\"alice\", realm=\"rvoip.test\", nonce=\"{nonce}\", uri=\"sip:rvoip.test\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n"
    );
    let out = deliver(&mut c, 100, "127.0.0.1:5090", &reg(2, &auth));
    assert_eq!(status(&out[0]), Some(200));
    assert_eq!(
        out[0].dest,
        addr("127.0.0.1:5090"),
        "rport: back to the source"
    );
    assert!(
        String::from_utf8_lossy(
            parse(&out[0])
                .header(HeaderName::Contact)
                .unwrap_or_default()
        )
        .contains("expires=600")
    );
    // The same credentials again are a replay: challenged.
    let out = deliver(&mut c, 200, "127.0.0.1:5090", &reg(3, &auth));
    assert_eq!(status(&out[0]), Some(401));
    // An INVITE for alice goes to her registered contact.
    let inv = invite("z9hG4bK-ia", "call-a").replace(
        "sip:service@127.0.0.1:5060 SIP/2.0",
        "sip:alice@rvoip.test SIP/2.0",
    );
    let out = deliver(&mut c, 300, UAC, &inv);
    let fwd = out
        .iter()
        .find(|o| status(o).is_none())
        .unwrap_or_else(|| panic!("forwarded"));
    assert_eq!(fwd.dest, addr("127.0.0.1:5090"));
    assert_eq!(
        parse(fwd).request_uri_bytes(),
        Some(&b"sip:alice@127.0.0.1:5090"[..])
    );
}

#[test]
fn options_to_the_proxy_and_hop_limits_are_answered_locally() {
    let mut c = core(AuthPolicy::Off);
    let opt = |mf: u8| {
        format!(
            "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bK-o{mf}\r\nMax-Forwards: {mf}\r\nFrom: <sip:p@x>;tag=1\r\nTo: <sip:127.0.0.1:5060>\r\nCall-ID: o{mf}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let out = deliver(&mut c, 0, UAC, &opt(70));
    assert_eq!(status(&out[0]), Some(200));
    assert!(parse(&out[0]).header(HeaderName::Allow).is_some());
    let out = deliver(
        &mut c,
        0,
        UAC,
        &invite("z9hG4bK-m", "mf").replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(status(&out[0]), Some(483));
}

#[test]
fn a_failed_first_contact_falls_over_to_the_next_q_group() {
    let mut c = core(AuthPolicy::Off);
    for (i, (contact, q)) in [
        ("sip:alice@127.0.0.1:6001", "1.0"),
        ("sip:alice@127.0.0.1:6002", "0.5"),
    ]
    .iter()
    .enumerate()
    {
        let reg = format!(
            "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:600{};branch=z9hG4bK-rq{i}\r\nFrom: <sip:alice@rvoip.test>;tag=a\r\nTo: <sip:alice@rvoip.test>\r\n\
Call-ID: r{i}\r\nCSeq: 1 REGISTER\r\nContact: <{contact}>;q={q}\r\nContent-Length: 0\r\n\r\n",
            i + 1
        );
        assert_eq!(
            status(&deliver(&mut c, 0, &format!("127.0.0.1:600{}", i + 1), &reg)[0]),
            Some(200)
        );
    }
    let inv = invite("z9hG4bK-seq", "call-s").replace(
        "sip:service@127.0.0.1:5060 SIP/2.0",
        "sip:alice@rvoip.test SIP/2.0",
    );
    let out = deliver(&mut c, 10, UAC, &inv);
    let first = out
        .iter()
        .find(|o| status(o).is_none())
        .unwrap_or_else(|| panic!("first branch"))
        .clone();
    assert_eq!(first.dest, addr("127.0.0.1:6001"), "best q first");
    let out = deliver(&mut c, 20, "127.0.0.1:6001", &answer(&first, 486, "busy"));
    let second = out
        .iter()
        .find(|o| o.dest == addr("127.0.0.1:6002") && status(o).is_none())
        .unwrap_or_else(|| panic!("second branch"));
    let out = deliver(&mut c, 30, "127.0.0.1:6002", &answer(second, 200, "ok"));
    let up = out
        .iter()
        .find(|o| o.dest == addr(UAC))
        .unwrap_or_else(|| panic!("answer upstream"));
    assert_eq!(status(up), Some(200));
}

/// Registers `contacts` (contact, q) for alice, one REGISTER each.
fn register_alice(c: &mut SipCore, contacts: &[(&str, &str)]) {
    for (i, (contact, q)) in contacts.iter().enumerate() {
        let from = format!("127.0.0.1:{}", 6001 + i);
        let reg = format!(
            "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-rp{i}\r\nFrom: <sip:alice@rvoip.test>;tag=a\r\nTo: <sip:alice@rvoip.test>\r\n\
Call-ID: rp{i}\r\nCSeq: 1 REGISTER\r\nContact: <{contact}>;q={q}\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(status(&deliver(c, 0, &from, &reg)[0]), Some(200));
    }
}

#[test]
fn equal_q_contacts_ring_in_parallel_and_the_answer_cancels_the_rest() {
    let mut c = core(AuthPolicy::Off);
    register_alice(
        &mut c,
        &[
            ("sip:alice@127.0.0.1:6001", "0.7"),
            ("sip:alice@127.0.0.1:6002", "0.7"),
        ],
    );
    let inv = invite("z9hG4bK-par", "call-p").replace(
        "sip:service@127.0.0.1:5060 SIP/2.0",
        "sip:alice@rvoip.test SIP/2.0",
    );
    let out = deliver(&mut c, 10, UAC, &inv);
    let branch = |port: &str| {
        out.iter()
            .find(|o| o.dest == addr(port) && status(o).is_none())
            .unwrap_or_else(|| panic!("a branch to {port}"))
            .clone()
    };
    let (a, b) = (branch("127.0.0.1:6001"), branch("127.0.0.1:6002"));
    assert_ne!(
        parse(&a).top_via().ok().and_then(|v| v.branch()),
        parse(&b).top_via().ok().and_then(|v| v.branch()),
        "each fork is its own client transaction"
    );
    // Both ring; the first answers; the other is cancelled (§16.7 step 10).
    deliver(&mut c, 20, "127.0.0.1:6001", &answer(&a, 180, "ra"));
    deliver(&mut c, 20, "127.0.0.1:6002", &answer(&b, 180, "rb"));
    let out = deliver(&mut c, 30, "127.0.0.1:6001", &answer(&a, 200, "ra"));
    assert!(
        out.iter()
            .any(|o| o.dest == addr(UAC) && status(o) == Some(200)),
        "the 2xx goes upstream"
    );
    let cancel = out
        .iter()
        .find(|o| o.dest == addr("127.0.0.1:6002"))
        .unwrap_or_else(|| panic!("CANCEL to the other fork"));
    let m = parse(cancel);
    assert_eq!(m.method(), Some(rvoip_dataplane::sip::Method::Cancel));
    assert_eq!(
        m.top_via().ok().and_then(|v| v.branch()),
        parse(&b).top_via().ok().and_then(|v| v.branch()),
        "the CANCEL matches the INVITE it cancels"
    );
}

#[test]
fn invites_are_challenged_with_407_when_configured() {
    let mut c = core(AuthPolicy::RegisterAndInvite);
    let out = deliver(&mut c, 0, UAC, &invite("z9hG4bK-407", "call-407"));
    assert_eq!(out.len(), 1, "challenged, not forwarded");
    assert_eq!(status(&out[0]), Some(407));
    let m = parse(&out[0]);
    let offers: Vec<String> = m
        .header_lines(HeaderName::ProxyAuthenticate)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    // MD5 alone by default (registrar.digest_algorithms).
    assert!(
        offers.len() == 1 && offers[0].contains("algorithm=MD5"),
        "{offers:?}"
    );
    // REGISTER alone is challenged with 401 in this mode too.
    let reg = "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-r407\r\nFrom: <sip:alice@rvoip.test>;tag=a\r\n\
To: <sip:alice@rvoip.test>\r\nCall-ID: r407\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5090>\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        status(&deliver(&mut c, 0, "127.0.0.1:5090", reg)[0]),
        Some(401)
    );
}

#[test]
fn a_stateless_proxy_forwards_without_100_trying_and_keeps_no_state() {
    let mut c = core(AuthPolicy::Off);
    c.el.config.stateful = false;
    c.tu = Box::new(crate::proxy::StatelessProxy);
    let top_branch = |o: &Outbound| {
        parse(o)
            .top_via()
            .ok()
            .and_then(|v| v.branch())
            .map(<[u8]>::to_vec)
    };
    let inv = invite("z9hG4bK-sl", "call-sl");
    let out = deliver(&mut c, 0, UAC, &inv);
    assert_eq!(out.len(), 1, "forwarded, and no 100 Trying (§16.11)");
    assert_eq!(out[0].dest, addr(UAS));
    let fwd = out[0].clone();
    assert!(
        parse(&fwd).header(HeaderName::RecordRoute).is_some(),
        "record-routed"
    );
    // A retransmission is forwarded again, with the same branch.
    let again = deliver(&mut c, 500, UAC, &inv);
    assert_eq!(again.len(), 1);
    assert_eq!(top_branch(&again[0]), top_branch(&fwd));
    // The CANCEL leaves with the branch of the INVITE it cancels.
    let cancel = format!(
        "CANCEL sip:service@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bK-sl\r\nMax-Forwards: 70\r\n\
From: <sip:uac@127.0.0.1:5080>;tag=f1\r\nTo: <sip:service@127.0.0.1:5060>\r\nCall-ID: call-sl\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    let out = deliver(&mut c, 600, UAC, &cancel);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dest, addr(UAS));
    assert_eq!(top_branch(&out[0]), top_branch(&fwd));
    // Responses go back by their Via, ours removed.
    let out = deliver(&mut c, 700, UAS, &answer(&fwd, 180, "t1"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dest, addr(UAC));
    assert_eq!(status(&out[0]), Some(180));
    assert_eq!(parse(&out[0]).vias().count(), 1);
    assert_eq!(c.transactions(), (0, 0), "no transaction state");
}

/// RFC 3581: the top Via gets the source's address and port; a stale
/// `received` and the bare `rport` go, everything else (and the next Via)
/// stays as it was.
#[test]
fn the_top_via_gets_received_and_rport_and_keeps_its_other_parameters() {
    let text = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.9:5099;branch=z9hG4bK1;Received=1.2.3.4;rport;x=y, SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK0\r\n\
        Via: SIP/2.0/UDP 10.8.8.8;branch=z9hG4bKz\r\n\
        From: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: v1\r\nCSeq: 1 OPTIONS\r\n\
        Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let msg = SipMessage::parse(text.as_bytes(), Framing::Datagram, &Limits::DEFAULT)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let inb = Inbound {
        bytes: text.as_bytes(),
        transport: Transport::Udp,
        local: addr(PROXY),
        remote: addr("127.0.0.2:6000"),
        conn: 0,
    };
    let (mut via, mut out) = (Vec::new(), b"left from before".to_vec());
    assert!(
        Element::fix_via(&msg, &inb, &mut via, &mut out).is_some(),
        "rewritten"
    );
    let out = String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.starts_with("OPTIONS "), "{out}");
    assert!(
        out.contains(
            "\r\nVia: SIP/2.0/UDP 10.0.0.9:5099;branch=z9hG4bK1;x=y;received=127.0.0.2;rport=6000, SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK0\r\n\
             Via: SIP/2.0/UDP 10.8.8.8;branch=z9hG4bKz\r\n"
        ),
        "{out}"
    );
    // From its own address without rport: nothing to add.
    let text = text.replace(
        "10.0.0.9:5099;branch=z9hG4bK1;Received=1.2.3.4;rport;x=y",
        "127.0.0.2:6000;branch=z9hG4bK1",
    );
    let msg = SipMessage::parse(text.as_bytes(), Framing::Datagram, &Limits::DEFAULT)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(Element::fix_via(&msg, &inb, &mut via, &mut Vec::new()).is_none());
}

/// A REGISTER for `user` from `from`, with `auth` (an Authorization line or "").
fn register_from(from: &str, user: &str, branch: &str, cseq: u32, auth: &str) -> String {
    format!(
        "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@rvoip.test>;tag=g\r\n\
To: <sip:{user}@rvoip.test>\r\nCall-ID: reg-{user}-{from}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{from}>\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

/// The challenges of a 401, as (algorithm, nonce), in order.
fn challenges_of(o: &Outbound) -> Vec<(String, String)> {
    parse(o)
        .header_lines(HeaderName::WwwAuthenticate)
        .map(|v| {
            let v = String::from_utf8_lossy(v);
            let field = |name: &str| {
                v.split(name)
                    .nth(1)
                    .map(|s| {
                        s.trim_start_matches('"')
                            .split(['"', ','])
                            .next()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .unwrap_or_default()
            };
            (field("algorithm="), field("nonce=\""))
        })
        .collect()
}

/// An Authorization line answering `nonce` with `password`.
fn authorization(
    a: crate::registrar::digest::Algorithm,
    user: &str,
    password: &str,
    nonce: &str,
) -> String {
    let ha1 = a.hex(format!("{user}:rvoip.test:{password}").as_bytes());
    let ha2 = a.hex(b"REGISTER:sip:rvoip.test");
    let response = a.hex(format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}").as_bytes());
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"rvoip.test\", nonce=\"{nonce}\", uri=\"sip:rvoip.test\", response=\"{response}\", algorithm={}, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n",
        a.token()
    )
}

fn core_with(config: impl FnOnce(&mut CoreConfig)) -> SipCore {
    let mut cfg = CoreConfig {
        auth: AuthPolicy::Register,
        ..CoreConfig::routing_all_to(&["rvoip.test"], addr(PROXY), addr(UAS))
    };
    config(&mut cfg);
    let users =
        Users::parse("[[user]]\nname = \"alice\"\npassword = \"alicepw\"\n").unwrap_or_default();
    SipCore::new(
        cfg,
        Registrar::new(RegistrarConfig::default(), LocationService::in_memory()),
        users,
        b"test-secret",
        &rvoip_dataplane::entropy::SeededEntropy::new(1),
    )
}

#[test]
fn one_md5_challenge_by_default_and_each_configured_algorithm_in_its_order() {
    use crate::registrar::digest::Algorithm;
    let mut c = core_with(|_| {});
    let out = deliver(
        &mut c,
        0,
        "127.0.0.1:5090",
        &register_from("127.0.0.1:5090", "alice", "d1", 1, ""),
    );
    let ch = challenges_of(&out[0]);
    assert_eq!(ch.len(), 1, "one challenge: {ch:?}");
    assert_eq!(ch[0].0, "MD5");
    // An answer in an algorithm that was not offered is challenged again.
    let sha = authorization(Algorithm::Sha256, "alice", "alicepw", &ch[0].1);
    let out = deliver(
        &mut c,
        10,
        "127.0.0.1:5090",
        &register_from("127.0.0.1:5090", "alice", "d2", 2, &sha),
    );
    assert_eq!(status(&out[0]), Some(401));
    let md5 = authorization(
        Algorithm::Md5,
        "alice",
        "alicepw",
        &challenges_of(&out[0])[0].1,
    );
    let out = deliver(
        &mut c,
        20,
        "127.0.0.1:5090",
        &register_from("127.0.0.1:5090", "alice", "d3", 3, &md5),
    );
    assert_eq!(status(&out[0]), Some(200));

    let mut c = core_with(|c| c.digest_algorithms = vec![Algorithm::Sha256, Algorithm::Md5]);
    let out = deliver(
        &mut c,
        0,
        "127.0.0.1:5090",
        &register_from("127.0.0.1:5090", "alice", "d4", 1, ""),
    );
    let ch = challenges_of(&out[0]);
    let algs: Vec<&str> = ch.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(algs, ["SHA-256", "MD5"]);
    let sha = authorization(Algorithm::Sha256, "alice", "alicepw", &ch[0].1);
    let out = deliver(
        &mut c,
        10,
        "127.0.0.1:5090",
        &register_from("127.0.0.1:5090", "alice", "d5", 2, &sha),
    );
    assert_eq!(status(&out[0]), Some(200));
}

#[test]
fn a_password_guesser_is_refused_while_the_users_own_phone_registers() {
    use crate::registrar::digest::Algorithm;
    let mut c = core_with(|_| {});
    let guesser = "127.0.0.9:5099";
    let phone = "127.0.0.1:5090";
    let mut now = 0;
    // 20 wrong passwords within a minute, each answering a fresh challenge.
    for i in 0..20u32 {
        let out = deliver(
            &mut c,
            now,
            guesser,
            &register_from(guesser, "alice", &format!("g{i}a"), 2 * i + 1, ""),
        );
        assert_eq!(status(&out[0]), Some(401), "guess {i}: challenged");
        let nonce = challenges_of(&out[0])[0].1.clone();
        let wrong = authorization(Algorithm::Md5, "alice", &format!("guess{i}"), &nonce);
        let out = deliver(
            &mut c,
            now + 1,
            guesser,
            &register_from(guesser, "alice", &format!("g{i}b"), 2 * i + 2, &wrong),
        );
        assert_eq!(status(&out[0]), Some(401), "guess {i}: refused");
        now += 2_000;
    }
    // Now the source gets 403 whatever it sends, even the right password.
    let out = deliver(
        &mut c,
        now,
        guesser,
        &register_from(guesser, "alice", "g-after", 100, ""),
    );
    assert_eq!(status(&out[0]), Some(403));
    let warning = String::from_utf8_lossy(
        parse(&out[0])
            .header(HeaderName::Warning)
            .unwrap_or_default(),
    )
    .into_owned();
    assert!(
        warning.starts_with("399 ") && warning.contains("failed authentications"),
        "{warning}"
    );
    // The user's own phone still registers.
    let out = deliver(
        &mut c,
        now,
        phone,
        &register_from(phone, "alice", "p1", 1, ""),
    );
    let nonce = challenges_of(&out[0])[0].1.clone();
    let right = authorization(Algorithm::Md5, "alice", "alicepw", &nonce);
    let out = deliver(
        &mut c,
        now + 1,
        phone,
        &register_from(phone, "alice", "p2", 2, &right),
    );
    assert_eq!(status(&out[0]), Some(200));
    let counters = c.counters();
    assert_eq!(
        (
            counters.auth_failures,
            counters.auth_bans,
            counters.auth_refused
        ),
        (20, 1, 1)
    );
    // 300 s later the source is challenged again.
    let out = deliver(
        &mut c,
        now + 300_000,
        guesser,
        &register_from(guesser, "alice", "g-later", 101, ""),
    );
    assert_eq!(status(&out[0]), Some(401));
}

#[test]
fn failures_spread_wider_than_the_window_never_ban() {
    use crate::registrar::digest::Algorithm;
    let mut c = core_with(|_| {});
    let guesser = "127.0.0.9:5099";
    for i in 0..40u32 {
        let now = u64::from(i) * 4_000;
        let out = deliver(
            &mut c,
            now,
            guesser,
            &register_from(guesser, "alice", &format!("s{i}a"), 2 * i + 1, ""),
        );
        assert_eq!(status(&out[0]), Some(401), "{i}");
        let nonce = challenges_of(&out[0])[0].1.clone();
        let wrong = authorization(Algorithm::Md5, "alice", "nope", &nonce);
        deliver(
            &mut c,
            now + 1,
            guesser,
            &register_from(guesser, "alice", &format!("s{i}b"), 2 * i + 2, &wrong),
        );
    }
    assert_eq!(c.counters().auth_bans, 0);
}

fn request_to(method: &str, ruri: &str, branch: &str, extra: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bK-{branch}\r\nMax-Forwards: 70\r\n\
From: <sip:scanner@192.0.2.66>;tag=s1\r\nTo: <{ruri}>\r\nCall-ID: relay-{branch}\r\nCSeq: 1 {method}\r\n\
Contact: <sip:scanner@{UAC}>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn the_proxy_is_no_open_relay() {
    let mut c = core(AuthPolicy::Off);
    for (i, method) in ["INVITE", "OPTIONS", "MESSAGE"].iter().enumerate() {
        let out = deliver(
            &mut c,
            0,
            UAC,
            &request_to(method, "sip:x@192.0.2.77", &format!("r{i}"), ""),
        );
        assert_eq!(out.len(), 1, "{method}: answered, not forwarded: {out:?}");
        assert_eq!(out[0].dest, addr(UAC));
        assert_eq!(status(&out[0]), Some(403), "{method}");
        assert!(
            String::from_utf8_lossy(
                parse(&out[0])
                    .header(HeaderName::Warning)
                    .unwrap_or_default()
            )
            .starts_with("399 rvoip ")
        );
    }
    // A Route header naming another element is relaying too.
    let out = deliver(
        &mut c,
        0,
        UAC,
        &request_to(
            "INVITE",
            "sip:service@127.0.0.1:5060",
            "r9",
            "Route: <sip:192.0.2.77;lr>\r\n",
        ),
    );
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(403)]);
    assert_eq!(c.counters().relay_denied, 4);
    // A stray ACK to elsewhere is dropped.
    assert!(
        deliver(
            &mut c,
            0,
            UAC,
            &request_to("ACK", "sip:x@192.0.2.77", "r10", "")
        )
        .is_empty()
    );
    // Served targets: our own address, a static route's next hop, and a
    // dialog this proxy record-routed.
    for (i, (ruri, extra)) in [
        ("sip:service@127.0.0.1:5060", String::new()),
        ("sip:service@127.0.0.1:5070", String::new()),
        (
            "sip:peer@192.0.2.77",
            "Route: <sip:127.0.0.1:5060;lr>\r\n".to_string(),
        ),
    ]
    .iter()
    .enumerate()
    {
        let mut req = request_to("INVITE", ruri, &format!("ok{i}"), extra);
        if i == 2 {
            req = req.replace(
                &format!("To: <{ruri}>"),
                &format!("To: <{ruri}>;tag=callee"),
            );
        }
        let out = deliver(&mut c, 0, UAC, &req);
        assert!(
            out.iter()
                .any(|o| o.dest != addr(UAC) && status(o).is_none()),
            "{ruri}: forwarded: {out:?}"
        );
    }
}

#[test]
fn trusted_sources_and_authenticated_users_may_relay() {
    use crate::registrar::digest::Algorithm;
    let mut c = core_with(|c| {
        c.trusted_sources = crate::sbc::policy::Net::parse("127.0.0.7/32")
            .into_iter()
            .collect();
    });
    let out = deliver(
        &mut c,
        0,
        "127.0.0.7:5080",
        &request_to("INVITE", "sip:x@192.0.2.77", "t1", ""),
    );
    assert!(
        out.iter().any(|o| o.dest == addr("192.0.2.77:5060")),
        "{out:?}"
    );
    // One of our users (From in our domain) is asked for credentials and
    // relays with them.
    let ours = |branch: &str, auth: &str| {
        request_to("INVITE", "sip:x@192.0.2.78", branch, auth)
            .replace("sip:scanner@192.0.2.66", "sip:alice@rvoip.test")
    };
    let out = deliver(&mut c, 10, UAC, &ours("t2", ""));
    assert_eq!(status(&out[0]), Some(407));
    let nonce = parse(&out[0])
        .header(HeaderName::ProxyAuthenticate)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .and_then(|v| {
            v.split("nonce=\"")
                .nth(1)
                .map(|s| s.split('"').next().unwrap_or_default().to_string())
        })
        .unwrap_or_default();
    let a = Algorithm::Md5;
    let ha1 = a.hex(b"alice:rvoip.test:alicepw");
    let ha2 = a.hex(b"INVITE:sip:x@192.0.2.78");
    let response = a.hex(format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}").as_bytes());
    let auth = format!(
        "Proxy-Authorization: Digest username=\"alice\", realm=\"rvoip.test\", nonce=\"{nonce}\", uri=\"sip:x@192.0.2.78\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n"
    );
    let out = deliver(&mut c, 20, UAC, &ours("t3", &auth));
    assert!(
        out.iter().any(|o| o.dest == addr("192.0.2.78:5060")),
        "{out:?}"
    );
}

/// alice's INVITE as the UAC sends it, for the AOR.
fn invite_alice(branch: &str, call: &str) -> String {
    invite(branch, call).replace(
        "sip:service@127.0.0.1:5060 SIP/2.0",
        "sip:alice@rvoip.test SIP/2.0",
    )
}

#[test]
fn a_registration_through_an_edge_proxy_is_reached_through_its_path() {
    let mut c = core(AuthPolicy::Off);
    // The REGISTER came through an edge proxy at 127.0.0.9:5066 that added
    // Path (RFC 3327); the phone's contact is on a network we cannot reach.
    let reg = "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5066;branch=z9hG4bK-edge1\r\n\
Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-ph1\r\nFrom: <sip:alice@rvoip.test>;tag=a\r\nTo: <sip:alice@rvoip.test>\r\n\
Call-ID: path-1\r\nCSeq: 1 REGISTER\r\nSupported: path\r\nPath: <sip:edge@127.0.0.9:5066;lr>\r\n\
Contact: <sip:alice@10.1.1.1:5060>\r\nContent-Length: 0\r\n\r\n";
    let ok = deliver(&mut c, 0, "127.0.0.9:5066", reg);
    assert_eq!(status(&ok[0]), Some(200));
    assert!(
        String::from_utf8_lossy(&ok[0].bytes).contains("Path: <sip:edge@127.0.0.9:5066;lr>"),
        "the 200 echoes the Path"
    );

    let out = deliver(&mut c, 10, UAC, &invite_alice("z9hG4bK-pth", "call-path"));
    let fwd = out
        .iter()
        .find(|o| status(o).is_none())
        .unwrap_or_else(|| panic!("INVITE forwarded: {out:?}"));
    let m = parse(fwd);
    assert_eq!(fwd.dest, addr("127.0.0.9:5066"), "sent to the edge proxy");
    assert_eq!(m.request_uri_bytes(), Some(&b"sip:alice@10.1.1.1:5060"[..]));
    assert_eq!(
        m.header(HeaderName::Route),
        Some(&b"<sip:edge@127.0.0.9:5066;lr>"[..]),
        "the Path became the Route"
    );
}

#[test]
fn a_phone_behind_nat_is_reached_where_its_register_came_from() {
    let mut c = core(AuthPolicy::Off);
    // The contact names the phone's private address; its REGISTER arrived
    // from the NAT's public one.
    let reg = "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-nat1;rport\r\n\
From: <sip:alice@rvoip.test>;tag=a\r\nTo: <sip:alice@rvoip.test>\r\nCall-ID: nat-1\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:alice@192.168.1.20:5060>\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        status(&deliver(&mut c, 0, "127.0.0.7:40123", reg)[0]),
        Some(200)
    );
    let out = deliver(&mut c, 10, UAC, &invite_alice("z9hG4bK-nat", "call-nat"));
    let fwd = out
        .iter()
        .find(|o| status(o).is_none())
        .unwrap_or_else(|| panic!("INVITE forwarded: {out:?}"));
    assert_eq!(fwd.dest, addr("127.0.0.7:40123"), "to the NAT's mapping");
    assert_eq!(
        parse(fwd).request_uri_bytes(),
        Some(&b"sip:alice@192.168.1.20:5060"[..]),
        "the contact stays the Request-URI"
    );
    // A contact at the address the REGISTER came from is used as it is.
    let mut c = core(AuthPolicy::Off);
    register_alice(&mut c, &[("sip:alice@127.0.0.1:6001", "1.0")]);
    let out = deliver(&mut c, 10, UAC, &invite_alice("z9hG4bK-pub", "call-pub"));
    assert!(
        out.iter()
            .any(|o| status(o).is_none() && o.dest == addr("127.0.0.1:6001")),
        "{out:?}"
    );
}

/// A proxy without static routes that trusts the loopback UAC: a request
/// to a name goes where the name resolves.
fn resolving_proxy() -> SipCore {
    core_with(|c| {
        c.routes.clear();
        c.auth = AuthPolicy::Off;
        c.trusted_sources = crate::sbc::policy::Net::parse("127.0.0.0/8")
            .into_iter()
            .collect();
    })
}

fn invite_to(ruri: &str, branch: &str, call: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch={branch}\r\nMax-Forwards: 70\r\n\
From: <sip:uac@127.0.0.1:5080>;tag=f1\r\nTo: <{ruri}>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:uac@{UAC}>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn server(port: u16, priority: u32) -> crate::dns::Server {
    crate::dns::Server {
        transport: Transport::Udp,
        address: addr(&format!("127.0.0.1:{port}")),
        priority,
        weight: 1,
    }
}

#[test]
fn a_request_to_a_name_waits_in_its_transaction_then_tries_its_servers_in_order() {
    let mut c = resolving_proxy();
    let inv = invite_to("sip:svc@trunk.example", "z9hG4bK-n1", "call-n1");
    let out = deliver(&mut c, 0, UAC, &inv);
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(100)]);
    // A retransmission while the name resolves asks nothing more.
    assert!(deliver(&mut c, 500, UAC, &inv).len() <= 1);
    let q = c
        .poll_dns()
        .unwrap_or_else(|| panic!("a resolution asked for"));
    assert_eq!(q.name.host, "trunk.example");
    assert!(c.poll_dns().is_none());
    c.on_dns(
        600,
        1_000_600,
        crate::dns::Answer {
            key: q.key,
            result: Ok(crate::dns::Resolution {
                servers: vec![server(5072, 1), server(5070, 0)],
                ttl_secs: 60,
            }),
            negative_ttl_secs: None,
        },
    );
    let out: Vec<Outbound> = std::iter::from_fn(|| c.poll_outbound()).collect();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].dest, addr("127.0.0.1:5070"), "SRV priority 0 first");
    assert!(String::from_utf8_lossy(&out[0].bytes).starts_with("INVITE sip:svc@trunk.example "));
    // 503 from the first server: ACKed, and the second server tried.
    let out = deliver(&mut c, 700, "127.0.0.1:5070", &answer(&out[0], 503, "s1"));
    let to_second: Vec<&Outbound> = out
        .iter()
        .filter(|o| o.dest == addr("127.0.0.1:5072"))
        .collect();
    assert_eq!(to_second.len(), 1, "{out:?}");
    assert!(
        out.iter().all(|o| o.dest != addr(UAC)),
        "the caller sees no 503"
    );
    let ok = deliver(
        &mut c,
        800,
        "127.0.0.1:5072",
        &answer(to_second[0], 200, "s2"),
    );
    assert_eq!(
        ok.iter()
            .filter(|o| o.dest == addr(UAC))
            .map(status)
            .collect::<Vec<_>>(),
        vec![Some(200)]
    );
    // The next request to the name: no new query, the server that
    // answered 503 avoided.
    let out = deliver(
        &mut c,
        1_000,
        UAC,
        &invite_to("sip:svc@trunk.example", "z9hG4bK-n2", "call-n2"),
    );
    assert!(c.poll_dns().is_none());
    assert_eq!(
        out.iter().find(|o| status(o).is_none()).map(|o| o.dest),
        Some(addr("127.0.0.1:5072"))
    );
}

#[test]
fn a_name_without_servers_is_answered_503_and_remembered() {
    let mut c = resolving_proxy();
    let out = deliver(
        &mut c,
        0,
        UAC,
        &invite_to("sip:svc@gone.example", "z9hG4bK-g1", "call-g1"),
    );
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(100)]);
    let q = c.poll_dns().unwrap_or_else(|| panic!("a resolution"));
    c.on_dns(
        10,
        1_000_010,
        crate::dns::Answer {
            key: q.key,
            result: Err(crate::dns::Failure::NoSuchName),
            negative_ttl_secs: Some(30),
        },
    );
    let out: Vec<Outbound> = std::iter::from_fn(|| c.poll_outbound()).collect();
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(503)]);
    // Within the negative TTL: 503 at once, nothing asked.
    let out = deliver(
        &mut c,
        20,
        UAC,
        &invite_to("sip:svc@gone.example", "z9hG4bK-g2", "call-g2"),
    );
    assert!(out.iter().any(|o| status(o) == Some(503)), "{out:?}");
    assert!(c.poll_dns().is_none());
}

/// RFC 3263 §5: a response goes to `received` (and `rport`) of the Via:
/// a sent-by that is a name is never looked up.
#[test]
fn responses_to_a_client_whose_via_names_a_host_go_to_its_source() {
    let mut c = core(AuthPolicy::Off);
    let inv = String::from(
        "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP client.example:5099;branch=z9hG4bK-s5\r\nMax-Forwards: 70\r\n\
From: <sip:uac@client.example>;tag=f1\r\nTo: <sip:service@127.0.0.1:5060>\r\nCall-ID: s5\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:uac@client.example:5099>\r\nContent-Length: 0\r\n\r\n",
    );
    let out = deliver(&mut c, 0, "127.0.0.2:6000", &inv);
    assert_eq!(
        out.iter().find(|o| status(o) == Some(100)).map(|o| o.dest),
        Some(addr("127.0.0.2:5099"))
    );
    let fwd = out
        .iter()
        .find(|o| o.dest == addr(UAS))
        .cloned()
        .unwrap_or_else(|| panic!("forwarded"));
    let out = deliver(&mut c, 100, UAS, &answer(&fwd, 180, "t"));
    assert_eq!(
        out.iter().map(|o| o.dest).collect::<Vec<_>>(),
        vec![addr("127.0.0.2:5099")]
    );
    assert!(c.poll_dns().is_none(), "no lookup of client.example");
}

/// RFC 3261 §16.9: a transport error towards a branch counts as a 503, so
/// the next server of the name is tried at once.
#[test]
fn a_server_the_transport_cannot_reach_is_left_for_the_next_at_once() {
    let mut c = resolving_proxy();
    c.el.config.listeners.push((Transport::Tcp, addr(PROXY)));
    let out = deliver(
        &mut c,
        0,
        UAC,
        &invite_to("sip:svc@trunk.example", "z9hG4bK-t1", "call-t1"),
    );
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(100)]);
    let q = c.poll_dns().unwrap_or_else(|| panic!("a resolution"));
    let tcp = crate::dns::Server {
        transport: Transport::Tcp,
        ..server(5090, 0)
    };
    c.on_dns(
        5,
        1_000_005,
        crate::dns::Answer {
            key: q.key,
            result: Ok(crate::dns::Resolution {
                servers: vec![tcp, server(5072, 1)],
                ttl_secs: 60,
            }),
            negative_ttl_secs: None,
        },
    );
    let out: Vec<Outbound> = std::iter::from_fn(|| c.poll_outbound()).collect();
    assert_eq!(
        out.iter()
            .map(|o| (o.transport, o.dest))
            .collect::<Vec<_>>(),
        vec![(Transport::Tcp, addr("127.0.0.1:5090"))]
    );
    // The connect is refused: the UDP server gets the request now, not
    // after Timer B.
    c.on_unreachable(10, Transport::Tcp, addr("127.0.0.1:5090"));
    let out: Vec<Outbound> = std::iter::from_fn(|| c.poll_outbound()).collect();
    assert_eq!(
        out.iter()
            .map(|o| (o.transport, o.dest))
            .collect::<Vec<_>>(),
        vec![(Transport::Udp, addr("127.0.0.1:5072"))]
    );
    assert_eq!(c.counters().unreachable, 1);
}
