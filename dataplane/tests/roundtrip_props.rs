//! Property tests: messages built by the writer parse back to the values they
//! were built from (with folds and compact names thrown in), and no input makes
//! the parser or any accessor panic.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use rvoip_dataplane::sdp::Sdp;
use rvoip_dataplane::sip::{
    Contact, Framing, HeaderName, Host, Limits, MessageWriter, Method, SipMessage, Transport, Uri,
    check, unquote, write_message,
};

#[derive(Debug, Clone)]
enum HostGen {
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl HostGen {
    fn text(&self) -> String {
        match self {
            HostGen::Name(n) => n.clone(),
            HostGen::V4(a) => a.to_string(),
            HostGen::V6(a) => format!("[{a}]"),
        }
    }
    fn matches(&self, h: &Host<'_>) -> bool {
        match (self, h) {
            (HostGen::Name(n), Host::Name(m)) => n.as_bytes() == *m,
            (HostGen::V4(a), Host::V4(b)) => a == b,
            (HostGen::V6(a), Host::V6(b)) => a == b,
            _ => false,
        }
    }
}

fn host() -> impl Strategy<Value = HostGen> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,8}[a-z0-9](\\.[a-z][a-z0-9]{0,6}){0,3}".prop_map(HostGen::Name),
        any::<[u8; 4]>().prop_map(|o| HostGen::V4(Ipv4Addr::from(o))),
        any::<[u16; 8]>().prop_map(|s| HostGen::V6(Ipv6Addr::from(s))),
    ]
}

#[derive(Debug, Clone)]
struct UriGen {
    sips: bool,
    user: Option<String>,
    host: HostGen,
    port: Option<u16>,
    params: Vec<(String, Option<String>)>,
}

impl UriGen {
    fn text(&self) -> String {
        let mut s = String::from(if self.sips { "sips:" } else { "sip:" });
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host.text());
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        for (n, v) in &self.params {
            s.push(';');
            s.push_str(n);
            if let Some(v) = v {
                s.push('=');
                s.push_str(v);
            }
        }
        s
    }
    fn check(&self, u: &Uri<'_>) {
        assert_eq!(
            u.user.map(|x| x.to_vec()),
            self.user.as_ref().map(|x| x.as_bytes().to_vec())
        );
        assert!(
            u.host.is_some_and(|h| self.host.matches(&h)),
            "{u:?} vs {self:?}"
        );
        assert_eq!(u.port, self.port);
        let got: Vec<(Vec<u8>, Option<Vec<u8>>)> = u
            .params
            .iter()
            .map(|(n, v)| (n.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        let want: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .params
            .iter()
            .map(|(n, v)| {
                (
                    n.as_bytes().to_vec(),
                    v.as_ref().map(|v| v.as_bytes().to_vec()),
                )
            })
            .collect();
        assert_eq!(got, want);
    }
}

fn uri() -> impl Strategy<Value = UriGen> {
    (
        any::<bool>(),
        proptest::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,10}|[a-z]{1,4}%[0-9A-F]{2}[a-z]{0,3}"),
        host(),
        proptest::option::of(1u16..),
        proptest::collection::vec(
            (
                "[a-z][a-z0-9-]{0,6}",
                proptest::option::of("[a-zA-Z0-9.:+$-]{1,8}"),
            ),
            0..3,
        ),
    )
        .prop_map(|(sips, user, host, port, params)| UriGen {
            sips,
            user,
            host,
            port,
            params,
        })
}

#[derive(Debug, Clone)]
enum Display {
    None,
    Tokens(String),
    Quoted(String),
}

fn display() -> impl Strategy<Value = Display> {
    prop_oneof![
        Just(Display::None),
        "[A-Za-z][A-Za-z0-9.]{0,6}( [A-Za-z][A-Za-z0-9]{0,6}){0,2}".prop_map(Display::Tokens),
        "[ -~]{0,16}".prop_map(Display::Quoted),
    ]
}

fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

#[derive(Debug, Clone)]
struct Addr {
    display: Display,
    uri: UriGen,
    tag: Option<String>,
}

impl Addr {
    fn text(&self) -> String {
        let d = match &self.display {
            Display::None => String::new(),
            Display::Tokens(t) => format!("{t} "),
            Display::Quoted(q) => format!("{} ", quote(q)),
        };
        let tag = self
            .tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        format!("{d}<{}>{tag}", self.uri.text())
    }
}

fn addr() -> impl Strategy<Value = Addr> {
    (display(), uri(), proptest::option::of("[a-zA-Z0-9]{1,12}"))
        .prop_map(|(display, uri, tag)| Addr { display, uri, tag })
}

#[derive(Debug, Clone)]
struct ViaGen {
    transport: usize,
    host: HostGen,
    port: Option<u16>,
    branch: String,
    rport: bool,
}

const TRANSPORTS: [&str; 4] = ["UDP", "TCP", "TLS", "SCTP"];

fn via() -> impl Strategy<Value = ViaGen> {
    (
        0..4usize,
        host(),
        proptest::option::of(1u16..),
        "[a-zA-Z0-9.-]{1,16}",
        any::<bool>(),
    )
        .prop_map(|(transport, host, port, b, rport)| ViaGen {
            transport,
            host,
            port,
            branch: format!("z9hG4bK{b}"),
            rport,
        })
}

impl ViaGen {
    fn text(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let rport = if self.rport { ";rport" } else { "" };
        format!(
            "SIP/2.0/{} {}{port};branch={}{rport}",
            TRANSPORTS[self.transport],
            self.host.text(),
            self.branch
        )
    }
}

#[derive(Debug, Clone)]
struct MessageGen {
    method: usize,
    ruri: UriGen,
    vias: Vec<ViaGen>,
    via_per_line: bool,
    from: Addr,
    to: Addr,
    call_id: String,
    cseq: u32,
    max_forwards: u8,
    contacts: Vec<Addr>,
    extensions: Vec<(String, String)>,
    body: Vec<u8>,
    fold: bool,
    compact: bool,
}

const METHODS: [&str; 6] = [
    "INVITE",
    "OPTIONS",
    "REGISTER",
    "BYE",
    "MESSAGE",
    "X-CUSTOM.METHOD",
];

fn message() -> impl Strategy<Value = MessageGen> {
    (
        (
            0..METHODS.len(),
            uri(),
            proptest::collection::vec(via(), 1..4),
            any::<bool>(),
            addr(),
            addr(),
        ),
        (
            "[a-zA-Z0-9.!%*_+`'~()<>:\\\\\"/\\[\\]?{}-]{1,24}(@[a-z0-9.]{1,12})?",
            any::<u32>(),
            any::<u8>(),
        ),
        proptest::collection::vec(addr(), 0..3),
        proptest::collection::vec(("X-[A-Za-z0-9-]{1,10}", "[ -~]{0,30}"), 0..4),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                (method, ruri, vias, via_per_line, from, to),
                (call_id, cseq, max_forwards),
                contacts,
                extensions,
                body,
                fold,
                compact,
            )| {
                let extensions = extensions
                    .into_iter()
                    .map(|(n, v)| (n, v.trim().to_string()))
                    .collect();
                MessageGen {
                    method,
                    ruri,
                    vias,
                    via_per_line,
                    from,
                    to,
                    call_id,
                    cseq,
                    max_forwards,
                    contacts,
                    extensions,
                    body,
                    fold,
                    compact,
                }
            },
        )
}

/// Folds a header value before its last `;` (the start of a parameter, where
/// LWS is allowed), as a sender may.
fn maybe_fold(v: &str, fold: bool) -> String {
    let after_uri = v.rfind('>').unwrap_or(0);
    match (fold, v[after_uri..].rfind(';').map(|i| i + after_uri)) {
        (true, Some(i)) => format!("{}\r\n   {}", &v[..i], &v[i..]),
        _ => v.to_string(),
    }
}

impl MessageGen {
    fn bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let method = Method::from_bytes(METHODS[self.method].as_bytes());
        let mut w = MessageWriter::request(&mut buf, method, self.ruri.text().as_bytes());
        let via_texts: Vec<String> = self.vias.iter().map(ViaGen::text).collect();
        if self.via_per_line {
            for v in &via_texts {
                w.header_raw(
                    if self.compact { b"v" } else { b"Via" },
                    maybe_fold(v, self.fold).as_bytes(),
                );
            }
        } else {
            w.header(HeaderName::Via, via_texts.join(" ,\r\n ").as_bytes());
        }
        w.header_raw(
            if self.compact { b"f" } else { b"From" },
            maybe_fold(&self.from.text(), self.fold).as_bytes(),
        );
        w.header_raw(
            if self.compact { b"t" } else { b"tO" },
            self.to.text().as_bytes(),
        );
        w.header_raw(
            if self.compact { b"i" } else { b"Call-ID" },
            self.call_id.as_bytes(),
        );
        w.header(
            HeaderName::CSeq,
            format!("{} {}", self.cseq, METHODS[self.method]).as_bytes(),
        );
        w.header(
            HeaderName::MaxForwards,
            self.max_forwards.to_string().as_bytes(),
        );
        if !self.contacts.is_empty() {
            let c: Vec<String> = self.contacts.iter().map(Addr::text).collect();
            w.header(HeaderName::Contact, c.join(", ").as_bytes());
        }
        for (n, v) in &self.extensions {
            w.header_raw(n.as_bytes(), v.as_bytes());
        }
        w.finish(&self.body);
        buf
    }
}

fn check_addr(want: &Addr, got: &rvoip_dataplane::sip::NameAddr<'_>) {
    want.uri.check(&got.uri);
    assert_eq!(
        got.tag().map(<[u8]>::to_vec),
        want.tag.as_ref().map(|t| t.as_bytes().to_vec())
    );
    match &want.display {
        Display::None => assert_eq!(got.display_name, None),
        Display::Tokens(t) => {
            // A fold between tokens is one SP.
            let mut out = Vec::new();
            rvoip_dataplane::sip::unfold_into(got.display_name.unwrap_or_default(), &mut out);
            assert_eq!(out, t.as_bytes());
        }
        Display::Quoted(q) => {
            let mut unfolded = Vec::new();
            rvoip_dataplane::sip::unfold_into(got.display_name.unwrap_or_default(), &mut unfolded);
            let mut out = Vec::new();
            unquote(&unfolded, &mut out);
            assert_eq!(out, q.as_bytes());
        }
    }
}

fn check_message(g: &MessageGen, m: &SipMessage<'_>) {
    assert_eq!(check(m), Ok(()));
    assert_eq!(
        m.method().map(|x| x.as_bytes().to_vec()),
        Some(METHODS[g.method].as_bytes().to_vec())
    );
    g.ruri.check(&m.request_uri().expect("ruri"));
    let vias: Vec<_> = m.vias().map(|v| v.expect("via")).collect();
    assert_eq!(vias.len(), g.vias.len());
    for (want, got) in g.vias.iter().zip(&vias) {
        let (token, spoken) = [
            ("UDP", Some(Transport::Udp)),
            ("TCP", Some(Transport::Tcp)),
            ("TLS", Some(Transport::Tls)),
            ("SCTP", None),
        ][want.transport];
        assert!(got.transport_token.eq_ignore_ascii_case(token.as_bytes()));
        assert_eq!(got.transport, spoken);
        assert!(want.host.matches(&got.host));
        assert_eq!(got.port, want.port);
        assert_eq!(got.branch(), Some(want.branch.as_bytes()));
        assert_eq!(got.rport().is_some(), want.rport);
    }
    check_addr(&g.from, &m.from().expect("from"));
    check_addr(&g.to, &m.to().expect("to"));
    assert_eq!(m.call_id(), Ok(g.call_id.as_bytes()));
    assert_eq!(m.cseq().map(|c| c.seq), Ok(g.cseq));
    assert_eq!(m.max_forwards(), Ok(Some(g.max_forwards)));
    let contacts: Vec<_> = m.contacts().map(|c| c.expect("contact")).collect();
    assert_eq!(contacts.len(), g.contacts.len());
    for (want, got) in g.contacts.iter().zip(&contacts) {
        let Contact::Addr(a) = got else {
            panic!("star")
        };
        check_addr(want, a);
    }
    for (n, v) in &g.extensions {
        assert!(
            m.headers()
                .any(|h| h.raw_name == n.as_bytes() && h.value == v.as_bytes()),
            "{n}: {v}"
        );
    }
    assert_eq!(m.body(), &g.body[..]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn written_messages_parse_to_what_was_written(g in message()) {
        let bytes = g.bytes();
        let m = SipMessage::parse(&bytes, Framing::Datagram, &Limits::default()).expect("parses");
        check_message(&g, &m);
        // Stream framing sees the same message.
        let s = SipMessage::parse(&bytes, Framing::Stream, &Limits::default()).expect("stream");
        prop_assert_eq!(s.len(), bytes.len());
        // parse → write → parse keeps every value.
        let mut out = Vec::new();
        write_message(&m, &mut out);
        let again = SipMessage::parse(&out, Framing::Datagram, &Limits::default()).expect("re-parses");
        check_message(&g, &again);
        // A truncated stream frame is incomplete, never an error or a panic.
        let cut = &bytes[..bytes.len() - 1];
        prop_assert!(matches!(SipMessage::parse(cut, Framing::Stream, &Limits::default()), Err(rvoip_dataplane::sip::SipError::Incomplete)));
    }

    #[test]
    fn uris_parse_to_their_parts(u in uri()) {
        let text = u.text();
        let parsed = Uri::parse(text.as_bytes()).expect("uri parses");
        u.check(&parsed);
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn mutated_messages_never_panic(g in message(), cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = g.bytes();
        for (at, b) in cuts {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        for framing in [Framing::Datagram, Framing::Stream, Framing::Text] {
            if let Ok(m) = SipMessage::parse(&bytes, framing, &Limits::default()) {
                let _ = check(&m);
                let _ = (m.request_uri(), m.from(), m.to(), m.cseq(), m.call_id(), m.max_forwards());
                let n = m.vias().count() + m.contacts().count() + m.routes().count();
                prop_assert!(n < 1000);
            }
        }
    }

    #[test]
    fn sdp_writes_back_what_it_read(
        sess_version in any::<u32>(),
        ip in any::<[u8; 4]>(),
        media in proptest::collection::vec((1024u16.., proptest::collection::vec(0u8..128, 1..5), any::<bool>()), 1..4),
        unknown in proptest::collection::vec("[a-z-]{1,10}(:[ -~]{1,20})?", 0..4),
    ) {
        let ip = Ipv4Addr::from(ip);
        let mut text = format!("v=0\r\no=- 42 {sess_version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n");
        for u in &unknown {
            text.push_str(&format!("a={u}\r\n"));
        }
        for (port, pts, mux) in &media {
            let fmts: Vec<String> = pts.iter().map(u8::to_string).collect();
            text.push_str(&format!("m=audio {port} RTP/AVP {}\r\n", fmts.join(" ")));
            for pt in pts {
                text.push_str(&format!("a=rtpmap:{pt} X{pt}/8000\r\n"));
            }
            if *mux {
                text.push_str("a=rtcp-mux\r\n");
            }
        }
        let sdp = Sdp::parse(text.as_bytes()).expect("sdp parses");
        prop_assert_eq!(String::from_utf8(sdp.to_bytes()).expect("utf8"), text.clone());
        prop_assert_eq!(sdp.origin().map(|o| o.session_version), Some(u64::from(sess_version)));
        for (i, (port, pts, mux)) in media.iter().enumerate() {
            prop_assert_eq!(sdp.media[i].media.port, *port);
            prop_assert_eq!(sdp.media[i].payload_types().collect::<Vec<_>>(), pts.clone());
            prop_assert_eq!(sdp.media[i].rtcp_mux(), *mux);
            for pt in pts {
                prop_assert_eq!(sdp.media[i].rtpmap(*pt).map(|m| m.clock_rate), Some(8000));
            }
        }
    }
}
