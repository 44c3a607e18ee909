//! Via, Contact, From/To and Route values: the fuzz input becomes the value
//! of each of those headers (line breaks turned into folds so it stays one value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::sip::{Contact, Framing, Limits, SipMessage, check};

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 {
        return;
    }
    let mut value = Vec::with_capacity(data.len() + 16);
    for &b in data {
        match b {
            b'\n' => value.extend_from_slice(b"\r\n "),
            b'\r' => {}
            b => value.push(b),
        }
    }
    let mut msg = Vec::with_capacity(value.len() * 5 + 200);
    msg.extend_from_slice(b"OPTIONS sip:a@example.com SIP/2.0\r\n");
    for name in [&b"Via"[..], b"Contact", b"From", b"To", b"Route", b"Record-Route"] {
        msg.extend_from_slice(name);
        msg.extend_from_slice(b": ");
        msg.extend_from_slice(&value);
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    let Ok(m) = SipMessage::parse(&msg, Framing::Datagram, &Limits::default()) else { return };
    let _ = check(&m);
    for v in m.vias().flatten() {
        let _ = (v.branch(), v.received(), v.rport(), v.is_rfc3261_branch());
        for _ in v.params.iter() {}
    }
    for c in m.contacts().flatten() {
        if let Contact::Addr(a) = c {
            let _ = (a.tag(), a.uri.params.get("transport"));
        }
    }
    let _ = (m.from().map(|f| f.tag()), m.to().map(|t| t.tag()));
    for _ in m.routes() {}
    for _ in m.record_routes() {}
});
