//! RFC 4475 torture messages: every referenced message gets the verdict and
//! the answer its manifest row gives, valid ones show the property the RFC
//! describes, and they round-trip through the writer.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use rvoip_controlplane::lint::{LintOptions, judge};
use rvoip_dataplane::sip::{
    Contact, Framing, HeaderName, Limits, Method, SipMessage, Transport, unquote, write_message,
};

/// rvoip's answer for each non-`valid` row. Each status must appear in the
/// manifest's expected behaviour; `None` rows must say the message is dropped
/// or processed normally by the role rvoip plays. The
/// `invalid-reject-or-tolerate` policy: reject (400) every malformation in a
/// part rvoip interprets; carry uninterpreted headers (Date) opaque.
const EXPECTED: &[(&str, bool, Option<u16>)] = &[
    ("badinv01", false, Some(400)),
    ("clerr", false, Some(400)),
    ("ncl", false, Some(400)),
    ("scalar02", false, Some(400)),
    ("scalarlg", false, None),
    ("quotbal", false, Some(400)),
    ("ltgtruri", false, Some(400)),
    ("lwsruri", false, Some(400)),
    ("lwsstart", false, Some(400)),
    ("trws", false, Some(400)),
    ("escruri", false, Some(400)),
    ("baddate", true, None),
    ("regbadct", false, Some(400)),
    ("badaspec", false, Some(400)),
    ("baddn", false, Some(400)),
    ("badvers", false, Some(505)),
    ("mismatch01", false, Some(400)),
    ("mismatch02", false, Some(501)),
    ("bigcode", false, None),
    ("badbranch", true, Some(400)),
    ("insuf", true, Some(400)),
    ("unkscm", true, Some(416)),
    ("novelsc", true, Some(416)),
    ("unksm2", true, Some(400)),
    ("bext01", true, Some(420)),
    ("invut", true, Some(415)),
    ("regaut01", true, None),
    ("multi01", true, Some(400)),
    ("mcl01", false, Some(400)),
    ("bcast", true, None),
    ("zeromf", true, Some(483)),
    ("sdp01", true, Some(406)),
];

fn parse(bytes: &[u8]) -> SipMessage<'_> {
    SipMessage::parse(bytes, Framing::Datagram, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_referenced_message_gets_its_manifest_answer() {
    let rows = common::manifest("rfc4475");
    let referenced: Vec<_> = rows
        .iter()
        .filter(|r| r["verdict"] != "unreferenced")
        .collect();
    assert_eq!(referenced.len(), 49);
    for row in referenced {
        let name = row["name"].as_str();
        let j = judge(
            &common::read("rfc4475", &row["file"]),
            &LintOptions::default(),
        );
        let (valid, status) = match row["verdict"].as_str() {
            "valid" => (true, None),
            _ => {
                let &(_, valid, status) = EXPECTED
                    .iter()
                    .find(|e| e.0 == name)
                    .unwrap_or_else(|| panic!("no expectation for {name}"));
                (valid, status)
            }
        };
        assert_eq!((j.valid, j.status), (valid, status), "{name}: {}", j.reason);
        let behaviour = row["expected_behaviour"].to_ascii_lowercase();
        match status {
            Some(code) => assert!(
                behaviour.contains(&code.to_string())
                    || behaviour.contains("respond with an error")
                    || (code == 400 && behaviour.contains("reject as malformed")),
                "{name}: {code} not in manifest: {behaviour}"
            ),
            None if !valid => assert!(
                behaviour.contains("drop") || behaviour.contains("discard"),
                "{name}"
            ),
            None => {}
        }
        if row["verdict"] == "invalid-must-reject" {
            assert!(!j.valid, "{name} must be rejected");
        }
        if row["verdict"] == "valid" || row["verdict"] == "valid-semantic-error" {
            assert!(j.valid, "{name} is well-formed: {}", j.reason);
        }
    }
}

#[test]
fn valid_messages_show_the_property_the_rfc_describes() {
    let wsinv = common::read("rfc4475", "wsinv.dat");
    let m = parse(&wsinv);
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(
        m.extension_header("UnknownHeaderWithUnusualValue"),
        Some(&b";;,,;;,;"[..])
    );
    assert_eq!(m.max_forwards(), Ok(Some(68)));
    assert_eq!(m.cseq().map(|c| (c.seq, c.method)), Ok((9, Method::Invite)));
    assert_eq!(m.vias().count(), 3);
    assert_eq!(m.header(HeaderName::Subject), Some(&b""[..]));
    let mut display = Vec::new();
    unquote(
        m.from()
            .map(|f| f.display_name)
            .ok()
            .flatten()
            .unwrap_or_default(),
        &mut display,
    );
    assert_eq!(display, b"J Rosenberg \\\"");
    assert_eq!(m.body().len(), 150);

    let intmeth = common::read("rfc4475", "intmeth.dat");
    let m = parse(&intmeth);
    assert_eq!(
        m.method().map(|x| x.as_bytes().to_vec()),
        Some(b"!interesting-Method0123456789_*+`.%indeed'~".to_vec())
    );
    let to = m.to().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        to.display_name.unwrap_or_default().contains(&0u8),
        "NUL kept in the display name"
    );

    let esc01 = common::read("rfc4475", "esc01.dat");
    let m = parse(&esc01);
    assert!(
        m.request_uri()
            .is_ok_and(|u| u.user_is(b"sips:user@example.com"))
    );
    assert!(m.to().is_ok_and(|t| t.uri.user_is(b"user")));

    let escnull = common::read("rfc4475", "escnull.dat");
    let m = parse(&escnull);
    let contacts: Vec<_> = m
        .contacts()
        .map(|c| c.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(contacts.len(), 2);
    let users: Vec<Vec<u8>> = contacts
        .iter()
        .map(|c| match c {
            Contact::Addr(a) => {
                let mut u = Vec::new();
                a.uri.user_unescaped(&mut u);
                u
            }
            Contact::Star => Vec::new(),
        })
        .collect();
    assert_eq!(users, vec![b"\0".to_vec(), b"\0\0".to_vec()]);
    assert!(m.to().is_ok_and(|t| t.uri.user_is(b"null-\0-null")));

    let esc02 = common::read("rfc4475", "esc02.dat");
    let m = parse(&esc02);
    assert_eq!(m.method(), Some(Method::Other(b"RE%47IST%45R")));
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(
        m.extension_header("C%6Fntact"),
        Some(&b"<sip:alias2@host2.example.com>"[..])
    );

    let lwsdisp = common::read("rfc4475", "lwsdisp.dat");
    assert_eq!(
        parse(&lwsdisp).from().map(|f| f.display_name),
        Ok(Some(&b"caller"[..]))
    );

    let longreq = common::read("rfc4475", "longreq.dat");
    let m = parse(&longreq);
    assert!(m.call_id().is_ok_and(|c| c.len() > 100));
    assert!(m.to().is_ok_and(|t| t.uri.params.iter().count() == 3));
    assert_eq!(m.vias().filter(Result::is_ok).count(), m.vias().count());

    let dblreq = common::read("rfc4475", "dblreq.dat");
    let m = parse(&dblreq);
    assert_eq!(m.method(), Some(Method::Register));
    assert!(m.body().is_empty());
    assert!(
        m.len() < dblreq.len(),
        "trailing octets are not part of the message"
    );

    let semiuri = common::read("rfc4475", "semiuri.dat");
    let m = parse(&semiuri);
    assert!(
        m.request_uri()
            .is_ok_and(|u| u.user_is(b"user;par=u@example.net"))
    );
    assert_eq!(m.accept().count(), 6);

    let transports = common::read("rfc4475", "transports.dat");
    let m = parse(&transports);
    let t: Vec<_> = m
        .vias()
        .map(|v| v.map(|v| (v.transport_token, v.transport)))
        .collect();
    assert_eq!(
        t,
        vec![
            Ok((&b"UDP"[..], Some(Transport::Udp))),
            Ok((&b"SCTP"[..], None)),
            Ok((&b"TLS"[..], Some(Transport::Tls))),
            Ok((&b"UNKNOWN"[..], None)),
            Ok((&b"TCP"[..], Some(Transport::Tcp)))
        ]
    );

    let mpart01 = common::read("rfc4475", "mpart01.dat");
    let m = parse(&mpart01);
    assert_eq!(m.body().len(), 553);
    assert!(m.body().contains(&0u8));

    let unreason = common::read("rfc4475", "unreason.dat");
    let m = parse(&unreason);
    assert_eq!(m.status_code(), Some(200));
    assert!(
        m.reason_phrase().is_some_and(
            |r| std::str::from_utf8(r).is_ok_and(|s| s.starts_with("= 2**3 * 5**2 но"))
        )
    );

    let noreason = common::read("rfc4475", "noreason.dat");
    assert_eq!(parse(&noreason).reason_phrase(), Some(&b""[..]));

    let cparam01 = common::read("rfc4475", "cparam01.dat");
    let m = parse(&cparam01);
    let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
        panic!("contact")
    };
    assert!(c.params.contains("unknownparam") && !c.uri.params.contains("unknownparam"));

    let cparam02 = common::read("rfc4475", "cparam02.dat");
    let m = parse(&cparam02);
    let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
        panic!("contact")
    };
    assert!(!c.params.contains("unknownparam") && c.uri.params.contains("unknownparam"));

    let regescrt = common::read("rfc4475", "regescrt.dat");
    let m = parse(&regescrt);
    let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
        panic!("contact")
    };
    assert_eq!(c.uri.headers, Some(&b"Route=%3Csip:sip.example.com%3E"[..]));

    let inv2543 = common::read("rfc4475", "inv2543.dat");
    let m = parse(&inv2543);
    assert_eq!(
        m.body().len(),
        105,
        "no Content-Length: the body is the rest of the datagram"
    );
    assert_eq!(m.max_forwards(), Ok(None));
    assert!(m.top_via().is_ok_and(|v| v.branch().is_none()));
}

/// Header values compared across a round trip: folds collapse to one SP.
fn normalized_headers(m: &SipMessage<'_>) -> Vec<(String, String)> {
    m.headers()
        .filter(|h| h.name != HeaderName::ContentLength)
        .map(|h| {
            let name = if h.name == HeaderName::Other {
                String::from_utf8_lossy(h.raw_name).to_ascii_lowercase()
            } else {
                h.name.as_str().to_string()
            };
            let mut v = Vec::new();
            rvoip_dataplane::sip::unfold_into(h.value, &mut v);
            (name, String::from_utf8_lossy(&v).into_owned())
        })
        .collect()
}

fn typed_summary(m: &SipMessage<'_>) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        m.method(),
        m.request_uri().map(|u| u.to_string()),
        m.vias()
            .map(|v| v.map(|v| (v.transport, v.host, v.port, v.branch())))
            .collect::<Vec<_>>(),
        m.from().map(|f| (f.uri.to_string(), f.tag())),
        m.to().map(|t| (t.uri.to_string(), t.tag())),
        m.call_id(),
        m.cseq(),
        m.contacts()
            .map(|c| c.map(|c| match c {
                Contact::Star => "*".to_string(),
                Contact::Addr(a) => format!(
                    "{:?} {} {:?}",
                    a.display_name,
                    a.uri,
                    a.params.iter().collect::<Vec<_>>()
                ),
            }))
            .collect::<Vec<_>>(),
        m.body(),
    )
}

#[test]
fn valid_messages_round_trip_through_the_writer() {
    let rows = common::manifest("rfc4475");
    let mut n = 0;
    for row in rows
        .iter()
        .filter(|r| matches!(r["verdict"].as_str(), "valid" | "valid-semantic-error"))
    {
        let raw = common::read("rfc4475", &row["file"]);
        let m = parse(&raw);
        let mut out = Vec::new();
        write_message(&m, &mut out);
        let again = SipMessage::parse(&out, Framing::Datagram, &Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", row["name"]));
        assert_eq!(
            normalized_headers(&m),
            normalized_headers(&again),
            "{}",
            row["name"]
        );
        // Typed values borrow different buffers, so compare their rendering.
        let first = typed_summary(&m);
        let second = typed_summary(&again);
        assert_eq!(first, second, "{}", row["name"]);
        assert_eq!(
            rvoip_dataplane::sip::check(&again).is_ok(),
            rvoip_dataplane::sip::check(&m).is_ok(),
            "{}",
            row["name"]
        );
        n += 1;
    }
    assert_eq!(n, 29);
}

#[test]
fn the_proxy_role_forwards_what_only_a_uas_refuses() {
    let opts = LintOptions {
        role: rvoip_controlplane::admission::Role::Proxy,
        ..LintOptions::default()
    };
    for (name, status) in [
        ("invut", None),
        ("sdp01", None),
        ("unksm2", None),
        ("zeromf", Some(483)),
        ("bext01", Some(420)),
    ] {
        let j = judge(&common::read("rfc4475", &format!("{name}.dat")), &opts);
        assert_eq!((j.valid, j.status), (true, status), "{name}: {}", j.reason);
    }
}
