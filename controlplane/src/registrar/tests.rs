use rvoip_dataplane::sip::{Framing, Limits, SipMessage};

use super::digest::{Authenticator, Credentials};
use super::location::LocationService;
use super::*;

fn register(
    reg: &mut Registrar,
    contacts: &str,
    extra: &str,
    cseq: u32,
    now: u64,
) -> RegisterOutcome {
    let text = format!(
        "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{cseq}\r\nFrom: <sip:alice@rvoip.test>;tag=1\r\n\
To: <sip:alice@rvoip.test>\r\nCall-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n{contacts}{extra}Content-Length: 0\r\n\r\n"
    );
    let msg = SipMessage::parse(text.as_bytes(), Framing::Datagram, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    reg.register(&msg, now, "udp:10.0.0.1:5060", None)
}

fn contacts(o: &RegisterOutcome) -> Vec<String> {
    match o {
        RegisterOutcome::Ok { contacts, .. } => contacts.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn binds_refreshes_and_removes() {
    let mut reg = Registrar::new(RegistrarConfig::default(), LocationService::in_memory());
    let o = register(
        &mut reg,
        "Contact: <sip:alice@10.0.0.1>;q=0.5, <sip:alice@10.0.0.2>;expires=120\r\n",
        "Expires: 600\r\n",
        1,
        0,
    );
    assert_eq!(
        contacts(&o),
        vec![
            "<sip:alice@10.0.0.2>;expires=120",
            "<sip:alice@10.0.0.1>;expires=600"
        ],
        "q 1.0 before q 0.5"
    );
    assert_eq!(reg.location.lock().lookup("alice@rvoip.test", 0).len(), 2);
    // Refresh one, remove the other.
    let o = register(
        &mut reg,
        "Contact: <sip:alice@10.0.0.1>;expires=300\r\nContact: <sip:alice@10.0.0.2>;expires=0\r\n",
        "",
        2,
        10_000,
    );
    assert_eq!(contacts(&o), vec!["<sip:alice@10.0.0.1>;expires=300"]);
    // A query (no Contact) lists what is bound.
    assert_eq!(
        contacts(&register(&mut reg, "", "", 3, 20_000)),
        vec!["<sip:alice@10.0.0.1>;expires=290"]
    );
    // '*' with Expires: 0 removes everything.
    assert!(
        contacts(&register(
            &mut reg,
            "Contact: *\r\n",
            "Expires: 0\r\n",
            4,
            30_000
        ))
        .is_empty()
    );
    assert!(
        reg.location
            .lock()
            .lookup("alice@rvoip.test", 30_000)
            .is_empty()
    );
}

#[test]
fn refuses_brief_intervals_and_stale_cseqs() {
    let mut reg = Registrar::new(RegistrarConfig::default(), LocationService::in_memory());
    match register(
        &mut reg,
        "Contact: <sip:alice@10.0.0.1>\r\n",
        "Expires: 10\r\n",
        1,
        0,
    ) {
        RegisterOutcome::Reject {
            status: 423,
            extra: Some((HeaderName::MinExpires, v)),
            ..
        } => assert_eq!(v, "60"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        contacts(&register(
            &mut reg,
            "Contact: <sip:alice@10.0.0.1>\r\n",
            "",
            5,
            0
        ))
        .len(),
        1
    );
    assert!(matches!(
        register(&mut reg, "Contact: <sip:alice@10.0.0.1>\r\n", "", 5, 0),
        RegisterOutcome::Reject { status: 400, .. }
    ));
    // Longer than the maximum is granted the maximum.
    assert_eq!(
        contacts(&register(
            &mut reg,
            "Contact: <sip:alice@10.0.0.1>;expires=999999\r\n",
            "",
            6,
            0
        )),
        vec!["<sip:alice@10.0.0.1>;expires=7200"]
    );
}

#[test]
fn keeps_uri_parameters_escaped_headers_and_path() {
    let mut reg = Registrar::new(RegistrarConfig::default(), LocationService::in_memory());
    // RFC 4475 §3.3.12/13/14: contact-param vs url-param, escaped Route.
    let o = register(
        &mut reg,
        "Contact: sip:+19725552222@gw1.example.net;unknownparam\r\nContact: <sip:alice@10.0.0.9;unknownparam>\r\nContact: <sip:alice@example.com?Route=%3Csip:sip.example.com%3E>\r\n",
        "Path: <sip:edge.example.net;lr>\r\n",
        1,
        0,
    );
    let RegisterOutcome::Ok { contacts, path } = o else {
        panic!("registered")
    };
    assert!(
        contacts.contains(&"<sip:+19725552222@gw1.example.net>;expires=3600".to_string()),
        "{contacts:?}"
    );
    assert!(contacts.contains(&"<sip:alice@10.0.0.9;unknownparam>;expires=3600".to_string()));
    assert!(contacts.contains(
        &"<sip:alice@example.com?Route=%3Csip:sip.example.com%3E>;expires=3600".to_string()
    ));
    assert_eq!(path, vec!["sip:edge.example.net;lr".to_string()]);
    assert_eq!(
        reg.location.lock().lookup("alice@rvoip.test", 0)[0].path,
        path
    );
}

#[test]
fn an_authenticated_user_registers_only_its_own_aor() {
    let mut reg = Registrar::new(RegistrarConfig::default(), LocationService::in_memory());
    let mut auth = Authenticator::new(
        "rvoip.test",
        b"k",
        60_000,
        &rvoip_dataplane::entropy::SeededEntropy::new(1),
    );
    let nonce = auth.challenges(0, false)[0]
        .split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    let a = digest::Algorithm::Md5;
    let (ha1, ha2) = (
        a.hex(b"bob:rvoip.test:bobpw"),
        a.hex(b"REGISTER:sip:rvoip.test"),
    );
    let creds = Credentials {
        username: "bob".into(),
        realm: "rvoip.test".into(),
        nonce: nonce.clone(),
        uri: "sip:rvoip.test".into(),
        response: a.hex(format!("{ha1}:{nonce}:{ha2}").as_bytes()),
        ..Credentials::default()
    };
    let proof = auth
        .verify(1, b"REGISTER", &creds, |_| {
            Some(digest::Secret::Password("bobpw".into()))
        })
        .unwrap_or_else(|e| panic!("{e:?}"));
    let text = "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:alice@rvoip.test>;tag=1\r\nTo: <sip:alice@rvoip.test>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@10.0.0.1>\r\nContent-Length: 0\r\n\r\n";
    let msg = SipMessage::parse(text.as_bytes(), Framing::Datagram, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        reg.register(&msg, 0, "udp:10.0.0.1:5060", Some(&proof)),
        RegisterOutcome::Reject { status: 403, .. }
    ));
}

#[test]
fn users_file() {
    let u = Users::parse("[[user]]\nname = \"alice\"\npassword = \"alicepw\"\n[[user]]\nname = \"bob\"\nha1_md5 = \"abc\"\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(u.len(), 2);
    assert_eq!(
        u.secret("alice"),
        Some(digest::Secret::Password("alicepw".into()))
    );
    assert!(Users::parse("[[user]]\nname = \"x\"\n").is_err());
    assert!(Users::parse("[[user]]\nname = \"x\"\npassword = \"a\"\nbogus = 1\n").is_err());
}

#[test]
fn own_address_stands_for_the_domain() {
    let reg = Registrar::new(
        RegistrarConfig {
            host_aliases: vec!["192.0.2.1".into(), "[2001:db8::1]".into()],
            domain: Some("rvoip.test".into()),
            ..RegistrarConfig::default()
        },
        LocationService::in_memory(),
    );
    let aor = |u: &str| {
        reg.aor(&rvoip_dataplane::sip::Uri::parse(u.as_bytes()).unwrap_or_else(|e| panic!("{e}")))
    };
    assert_eq!(
        aor("sip:bob@192.0.2.1:5060").as_deref(),
        Some("bob@rvoip.test")
    );
    assert_eq!(
        aor("sip:bob@[2001:db8::1]").as_deref(),
        Some("bob@rvoip.test")
    );
    assert_eq!(aor("sip:bob@192.0.2.9").as_deref(), Some("bob@192.0.2.9"));
    assert_eq!(aor("sip:bob@RVOIP.test").as_deref(), Some("bob@rvoip.test"));
}
