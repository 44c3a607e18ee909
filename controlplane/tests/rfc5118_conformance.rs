//! RFC 5118 IPv6 torture messages, both as archived (bare LF: judged as text)
//! and in wire form (the conformance README's one transformation).

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use std::net::Ipv6Addr;

use rvoip_controlplane::lint::{FramingChoice, LintOptions, judge};
use rvoip_dataplane::sdp::Sdp;
use rvoip_dataplane::sip::{Framing, Host, Limits, SipMessage};

fn v6(s: &str) -> Host<'static> {
    Host::V6(s.parse::<Ipv6Addr>().unwrap_or_else(|e| panic!("{s}: {e}")))
}

#[test]
fn every_message_gets_its_manifest_verdict_raw_and_on_the_wire() {
    let rows = common::manifest("rfc5118");
    assert_eq!(rows.len(), 12);
    for row in &rows {
        let raw = common::read("rfc5118", &row["file"]);
        let wire = common::rfc5118_wire(&raw);
        let expect_valid = row["verdict"] != "invalid-must-reject";
        let expect_status = if expect_valid { None } else { Some(400) };
        for (form, bytes, framing) in [
            ("archived", &raw, FramingChoice::Auto),
            ("wire", &wire, FramingChoice::Datagram),
        ] {
            let j = judge(
                bytes,
                &LintOptions {
                    framing,
                    ..LintOptions::default()
                },
            );
            assert_eq!(
                (j.valid, j.status),
                (expect_valid, expect_status),
                "{} ({form}): {}",
                row["name"],
                j.reason
            );
        }
    }
}

fn wire(name: &str) -> Vec<u8> {
    common::rfc5118_wire(&common::read("rfc5118", name))
}

fn parse(bytes: &[u8]) -> SipMessage<'_> {
    SipMessage::parse(bytes, Framing::Datagram, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn ipv6_references_parse_as_the_rfc_says() {
    let good = wire("ipv6-good");
    let m = parse(&good);
    assert_eq!(
        m.request_uri().map(|u| u.host),
        Ok(Some(v6("2001:db8::10")))
    );

    // §4.3: ":5070" inside the brackets belongs to the address.
    let amb = wire("port-ambiguous");
    let u = parse(&amb).request_uri().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((u.host, u.port), (Some(v6("2001:db8::10:5070")), None));

    // §4.4
    let unamb = wire("port-unambiguous");
    let u = parse(&unamb)
        .request_uri()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((u.host, u.port), (Some(v6("2001:db8::10")), Some(5070)));

    // §4.5: received with and without brackets.
    for name in [
        "via-received-param-with-delim",
        "via-received-param-no-delim",
    ] {
        let b = wire(name);
        let m = parse(&b);
        let received = m.top_via().map(|v| v.received().map(<[u8]>::to_vec));
        let text = received
            .ok()
            .flatten()
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .unwrap_or_default();
        assert_eq!(
            text.trim_matches(|c| c == '[' || c == ']'),
            "2001:db8::9:255",
            "{name}"
        );
    }

    // §4.10: the extra colon is tolerated and means the same address.
    let three = wire("ipv6-bug-abnf-3-colons");
    let two = wire("ipv6-correct-abnf-2-colons");
    let h3 = parse(&three).request_uri().map(|u| u.host);
    let h2 = parse(&two).request_uri().map(|u| u.host);
    assert_eq!(h3, h2);
    assert_eq!(h2, Ok(Some(v6("2001:db8::192.0.2.1"))));

    // §4.7: Via list mixing IPv6 references and IPv4.
    let mult = wire("mult-ip-in-header");
    let hosts: Vec<_> = parse(&mult)
        .vias()
        .map(|v| v.map(|v| v.host.ip().map(|a| a.is_ipv6())))
        .collect();
    assert!(
        hosts.contains(&Ok(Some(true))) && hosts.contains(&Ok(Some(false))),
        "{hosts:?}"
    );
}

#[test]
fn ipv6_sdp_addresses_have_no_brackets() {
    for name in ["ipv6-in-sdp", "mult-ip-in-sdp", "ipv4-mapped-ipv6"] {
        let b = wire(name);
        let m = parse(&b);
        let sdp = Sdp::parse(m.body()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let addrs: Vec<_> = (0..sdp.media.len())
            .filter_map(|i| sdp.media_connection(i))
            .map(|c| c.address)
            .collect();
        assert!(!addrs.is_empty(), "{name}");
        if name != "ipv4-mapped-ipv6" {
            assert!(addrs.iter().any(|a| a.is_ipv6()), "{name}: {addrs:?}");
        }
    }
}
