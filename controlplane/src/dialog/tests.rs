//! The dialog layer on its own: dialogs made from real messages on both
//! sides, requests written in them, requests checked against them.

use std::net::SocketAddr;

use rvoip_dataplane::sip::{Framing, HeaderName, Limits, SipMessage};

use super::*;

const ACCESS: &str = "127.0.0.1:5060";
const PEER1: &str = "127.0.0.1:5090";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a test address")
}

fn parse(text: &str) -> SipMessage<'_> {
    SipMessage::parse(text.as_bytes(), Framing::Datagram, &Limits::default())
        .expect("a test message parses")
}

const INVITE: &str = "INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
Record-Route: <sip:p1.example;lr>\r\n\
Record-Route: <sip:p2.example;lr>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: d1@example.com\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5070>\r\n\
Content-Length: 0\r\n\r\n";

fn uas() -> Dialog {
    let msg = parse(INVITE);
    let inb = Inbound {
        bytes: INVITE.as_bytes(),
        transport: Transport::Udp,
        local: addr(ACCESS),
        remote: addr("127.0.0.1:5070"),
        conn: 0,
    };
    Dialog::uas(&msg, &inb, false, |t| t.push_str("ours"))
}

fn in_dialog(method: &str, cseq: u32, to_tag: &str, contact: &str) -> String {
    format!(
        "{method} sip:bob@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{method}{cseq}\r\n\
From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag={to_tag}\r\nCall-ID: d1@example.com\r\n\
CSeq: {cseq} {method}\r\n{contact}Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_request_makes_the_answering_sides_dialog_as_section_12_1_1_says() {
    let d = uas();
    assert_eq!(d.call_id(), "d1@example.com");
    assert_eq!(d.local_tag(), "ours");
    assert_eq!(d.remote_tag(), "a1");
    assert_eq!(d.remote_uri(), "\"Alice\" <sip:alice@example.com>");
    assert_eq!(d.local_uri(), "<sip:bob@example.com>");
    assert_eq!(d.remote_target(), "sip:alice@127.0.0.1:5070");
    assert_eq!(d.route_set, ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
    assert_eq!(d.remote_cseq, Some(10));
    // A request of ours in it: Request-URI from the remote target, Route
    // from the route set in order, From/To swapped with the tags.
    let mut d = d;
    let cseq = d.next_cseq();
    let bye = d.request("BYE", cseq, "z9hG4bK-bye", &[], None, b"");
    let bye = String::from_utf8(bye).expect("text");
    let m = parse(&bye);
    assert_eq!(
        m.request_uri().expect("a uri").as_bytes(),
        b"sip:alice@127.0.0.1:5070"
    );
    let routes: Vec<&[u8]> = m.header_lines(HeaderName::Route).collect();
    assert_eq!(
        routes,
        [b"<sip:p1.example;lr>".as_slice(), b"<sip:p2.example;lr>"]
    );
    assert_eq!(m.from().expect("From").tag(), Some(b"ours".as_slice()));
    assert_eq!(m.to().expect("To").tag(), Some(b"a1".as_slice()));
    assert_eq!(m.cseq().expect("CSeq").seq, 1);
}

#[test]
fn requests_in_a_dialog_are_checked_and_a_reinvite_moves_the_target() {
    let mut d = uas();
    // In order, with a new Contact: the target moves (§12.2.2).
    let reinvite = in_dialog(
        "INVITE",
        11,
        "ours",
        "Contact: <sip:alice@127.0.0.1:6000>\r\n",
    );
    assert_eq!(d.on_request(&parse(&reinvite)), Ok(()));
    assert_eq!(d.remote_target(), "sip:alice@127.0.0.1:6000");
    // A lower CSeq is out of order: 500.
    let late = in_dialog("INFO", 9, "ours", "");
    assert_eq!(d.on_request(&parse(&late)), Err(DialogError::OutOfOrder));
    assert_eq!(DialogError::OutOfOrder.sip_status().0, 500);
    // The same CSeq again (a new request, not a retransmission) is not lower.
    let same = in_dialog("INFO", 11, "ours", "");
    assert_eq!(d.on_request(&parse(&same)), Ok(()));
    // Another To tag names another dialog: 481.
    let other = in_dialog("BYE", 12, "theirs", "");
    assert_eq!(d.on_request(&parse(&other)), Err(DialogError::NoSuchDialog));
    assert_eq!(DialogError::NoSuchDialog.sip_status().0, 481);
    // A BYE with no Contact leaves the target alone.
    let bye = in_dialog("BYE", 12, "ours", "");
    assert_eq!(d.on_request(&parse(&bye)), Ok(()));
    assert_eq!(d.remote_target(), "sip:alice@127.0.0.1:6000");
}

fn response(code: u16, tag: &str, contact: &str, rr: &str) -> String {
    format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-u\r\n{rr}\
From: <sip:alice@127.0.0.1>;tag=b-tag\r\nTo: <sip:bob@127.0.0.1:5090>;tag={tag}\r\nCall-ID: u1@h\r\n\
CSeq: 1 INVITE\r\nContact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_uac_dialog_is_early_on_18x_confirmed_on_2xx_and_tells_another_fork_apart() {
    let mut d = Dialog::uac(addr(ACCESS), "alice", false, |t| t.push_str("b-tag"));
    d.restart("u1@h", "sip:bob@127.0.0.1:5090", addr(PEER1));
    assert_eq!((d.remote_tag(), d.local_cseq), ("", 1));
    assert_eq!(d.remote_uri(), "<sip:bob@127.0.0.1:5090>");
    // Early: tag, target and the route set reversed (§12.1.2).
    let ringing = response(
        180,
        "fork1",
        "sip:bob@127.0.0.1:5091",
        "Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n",
    );
    d.on_response(&parse(&ringing), 180);
    assert_eq!(d.remote_tag(), "fork1");
    assert_eq!(d.remote_target(), "sip:bob@127.0.0.1:5091");
    assert_eq!(d.route_set, ["<sip:p2;lr>", "<sip:p1;lr>"]);
    // Confirmed by the 2xx of the same fork; its route set is final, even
    // when empty.
    let ok = response(200, "fork1", "sip:bob@127.0.0.1:5092", "");
    assert!(!d.is_other_fork(&parse(&ok)));
    d.on_response(&parse(&ok), 200);
    assert_eq!(d.remote_target(), "sip:bob@127.0.0.1:5092");
    assert!(d.route_set.is_empty());
    // A 2xx with another tag is another fork (§13.2.2.4).
    let other = response(200, "fork2", "sip:bob@127.0.0.1:5093", "");
    assert!(d.is_other_fork(&parse(&other)));
    // A failover starts over: new Call-ID, no tag, no route set, CSeq 1.
    d.restart("u2@h", "sip:carol@127.0.0.1:5094", addr("127.0.0.1:5094"));
    assert_eq!((d.call_id(), d.remote_tag(), d.local_cseq), ("u2@h", "", 1));
    assert_eq!(d.dest, addr("127.0.0.1:5094"));
    assert!(d.route_set.is_empty());
}

#[test]
fn each_fork_keeps_its_early_dialog_and_a_prack_finds_the_fork_it_acknowledges() {
    let mut d = Dialog::uac(addr(ACCESS), "alice", false, |t| t.push_str("b-tag"));
    d.restart("u1@h", "sip:bob@127.0.0.1:5090", addr(PEER1));
    let mut forks = Forks::default();
    let reliable = |tag: &str, rseq: u32, contact: &str, rr: &str| {
        response(
            183,
            tag,
            contact,
            &format!("{rr}RSeq: {rseq}\r\nRequire: 100rel\r\n"),
        )
    };
    // Fork 1 with a route set, then fork 2 without one.
    let one = reliable(
        "fork1",
        11,
        "sip:bob@127.0.0.1:6001",
        "Record-Route: <sip:p1;lr>\r\n",
    );
    forks.on_response(&mut d, &parse(&one), 183);
    d.next_cseq(); // a PRACK on fork 1: its CSeq 2
    let two = reliable("fork2", 22, "sip:bob@127.0.0.1:6002", "");
    forks.on_response(&mut d, &parse(&two), 183);
    assert_eq!(
        (d.remote_tag(), d.remote_target()),
        ("fork2", "sip:bob@127.0.0.1:6002")
    );
    assert!(
        d.route_set.is_empty(),
        "fork 2 has no route set of fork 1's"
    );
    assert_eq!(d.local_cseq, 1, "its own CSeq space, from the INVITE's");
    // A PRACK for RSeq 11 goes to fork 1, with its route set and CSeq.
    forks.select_by_rseq(&mut d, 11);
    assert_eq!((d.remote_tag(), d.remote_rseq), ("fork1", Some(11)));
    assert_eq!(d.route_set, ["<sip:p1;lr>"]);
    assert_eq!(d.local_cseq, 2);
    // Fork 2's 2xx confirms fork 2, whatever is current.
    let ok = response(200, "fork2", "sip:bob@127.0.0.1:6002", "");
    forks.on_response(&mut d, &parse(&ok), 200);
    assert_eq!(d.remote_tag(), "fork2");
    forks.select_by_rseq(&mut d, 11);
    assert_eq!(
        d.remote_tag(),
        "fork2",
        "no early dialog is left once one is confirmed"
    );
}

#[test]
fn rack_reads_and_writes_rfc_3262_values_and_nothing_else() {
    assert_eq!(
        RAck::parse(b"776656 1 INVITE"),
        Some(RAck {
            rseq: 776656,
            cseq: 1
        })
    );
    assert_eq!(
        RAck::parse(b"  5   22 invite "),
        Some(RAck { rseq: 5, cseq: 22 })
    );
    assert_eq!(RAck::parse(b"5 22 BYE"), None);
    assert_eq!(RAck::parse(b"5 INVITE"), None);
    assert_eq!(RAck::parse(b"x 1 INVITE"), None);
    assert_eq!(RAck::parse(b"1 1 INVITE extra"), None);
    assert_eq!(RAck { rseq: 7, cseq: 3 }.value(), "7 3 INVITE");
}

#[test]
fn the_session_interval_is_the_smaller_ask_never_below_min_se() {
    use super::session_timer::{delta_secs, interval};
    assert_eq!(delta_secs(b"1800;refresher=uac"), Some(1800));
    assert_eq!(delta_secs(b" 90 "), Some(90));
    assert_eq!(delta_secs(b"soon"), None);
    assert_eq!(interval(None, 1800, 90), 1800);
    assert_eq!(interval(Some(600), 1800, 90), 600);
    assert_eq!(interval(Some(3600), 1800, 90), 1800);
    assert_eq!(interval(Some(30), 1800, 90), 90);
}

#[test]
fn the_tag_parameter_is_taken_out_of_from_and_to_values_and_nothing_else() {
    let strip_tag = |v: &[u8]| {
        let mut out = String::from("kept:");
        strip_tag_into(&mut out, v);
        out.strip_prefix("kept:")
            .expect("appended after what was there")
            .to_owned()
    };
    assert_eq!(
        strip_tag(b"\"A\" <sip:a@x;tag=inside>;tag=1;foo=bar"),
        "\"A\" <sip:a@x;tag=inside>;foo=bar"
    );
    assert_eq!(strip_tag(b"sip:a@x;TAG=1"), "sip:a@x");
    assert_eq!(strip_tag(b"<sip:a@x> ; tagx=2 ;tag=3"), "<sip:a@x>;tagx=2");
    assert_eq!(strip_tag(b"<sip:a@x>"), "<sip:a@x>");
}

#[test]
fn a_dialogs_texts_change_one_at_a_time_and_a_journaled_dialog_reads_back_the_same() {
    let mut leg = Dialog {
        text: DialogText::new([
            "c1@h",
            "lt",
            "",
            "<sip:a@h>",
            "<sip:b@h>",
            "sip:b@h",
            "sip:127.0.0.1:5060",
        ]),
        route_set: vec!["<sip:p1;lr>".into()],
        local_cseq: 3,
        remote_cseq: None,
        remote_rseq: None,
        tcp: false,
        tls: false,
        ws: false,
        webrtc: false,
        local: addr(ACCESS),
        dest: addr(PEER1),
        conn: None,
        srtp: true,
    };
    // Longer, shorter, emptied: the other texts stay as they were.
    leg.text.set(Text::RemoteTag, &["peer-", "tag"]);
    leg.text
        .set_bytes(Text::RemoteTarget, b"sip:b@192.0.2.9:5090;transport=udp");
    leg.text.set(Text::CallId, &["c"]);
    leg.text.set(Text::LocalTag, &[]);
    let texts = |l: &Dialog| {
        [
            l.call_id().to_owned(),
            l.local_tag().to_owned(),
            l.remote_tag().to_owned(),
            l.local_uri().to_owned(),
            l.remote_uri().to_owned(),
            l.remote_target().to_owned(),
            l.contact().to_owned(),
        ]
    };
    assert_eq!(
        texts(&leg),
        [
            "c",
            "",
            "peer-tag",
            "<sip:a@h>",
            "<sip:b@h>",
            "sip:b@192.0.2.9:5090;transport=udp",
            "sip:127.0.0.1:5060"
        ]
    );
    // The journal holds each text as a field of its own, and reads it back.
    let json = serde_json::to_string(&leg).expect("a leg serializes");
    let v: serde_json::Value = serde_json::from_str(&json).expect("as JSON");
    assert_eq!(v["remote_tag"], "peer-tag");
    assert_eq!(v["contact"], "sip:127.0.0.1:5060");
    assert_eq!(v["route_set"][0], "<sip:p1;lr>");
    let back: Dialog = serde_json::from_str(&json).expect("and reads back");
    assert_eq!(texts(&back), texts(&leg));
    assert_eq!(
        (back.route_set, back.local_cseq, back.dest, back.srtp),
        (leg.route_set.clone(), 3, addr(PEER1), true)
    );
    // A record as the previous build wrote it (Contact after the addresses)
    // reads the same.
    let earlier = format!(
        r#"{{"call_id":"c","local_tag":"","remote_tag":"peer-tag","local_uri":"<sip:a@h>","remote_uri":"<sip:b@h>","remote_target":"sip:b@192.0.2.9:5090;transport=udp","route_set":["<sip:p1;lr>"],"local_cseq":3,"tcp":false,"local":"{ACCESS}","dest":"{PEER1}","conn":null,"contact":"sip:127.0.0.1:5060","srtp":true}}"#
    );
    let old: Dialog = serde_json::from_str(&earlier).expect("an earlier record reads");
    assert_eq!(texts(&old), texts(&leg));
    assert_eq!((old.local, old.dest), (addr(ACCESS), addr(PEER1)));
}
