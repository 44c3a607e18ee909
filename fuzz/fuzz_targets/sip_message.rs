//! Whole messages in every framing: index, check, every accessor, and the
//! writers. Anything that parses must re-serialize into something that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::sip::{
    Forward, Framing, HeaderName, Limits, SipMessage, check, frame_stream, scan_call_id, write_message,
    write_response,
};

fn exercise(m: &SipMessage<'_>) {
    let _ = check(m);
    let _ = m.request_uri();
    let _ = (m.cseq(), m.call_id(), m.from(), m.to(), m.max_forwards(), m.expires(), m.content_type());
    for _ in m.vias() {}
    for _ in m.contacts() {}
    for _ in m.routes() {}
    for _ in m.record_routes() {}
    for _ in m.accept() {}
    for _ in m.tokens(HeaderName::Require) {}
    if let Ok(v) = m.top_via() {
        let _ = (v.branch(), v.received(), v.rport());
    }
    let mut out = Vec::new();
    write_message(m, &mut out);
    let again = SipMessage::parse(&out, Framing::Datagram, &Limits::default());
    assert!(again.is_ok(), "re-serialized message must parse: {:?}", again.err());
    write_response(m, 400, b"Bad Request", Some(b"t1"), &[], &mut out);
    let mut f = Forward::new(m);
    f.push_via(b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfuzz");
    let _ = f.pop_route();
    let _ = f.decrement_max_forwards();
    let _ = f.set_contact_uri(b"sip:fuzz@127.0.0.1");
    f.add_record_route(b"<sip:127.0.0.1;lr>");
    f.write_to(&mut out);
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for framing in [Framing::Datagram, Framing::Stream, Framing::Text] {
        if let Ok(m) = SipMessage::parse(data, framing, &limits) {
            exercise(&m);
        }
    }
    let _ = frame_stream(data, &limits);
    // The SIP workers' scan for a flow key takes whatever the control plane hands them.
    let _ = scan_call_id(data);
});
