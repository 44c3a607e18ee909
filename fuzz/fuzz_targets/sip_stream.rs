//! A SIP stream session fed arbitrary octets cut at arbitrary places: every
//! message it gives is one whole message that parses as a datagram, it
//! never holds more than its limits allow, and what it is given to send
//! comes out on the wire in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::sip::stream::{PlainStream, StreamSession};
use rvoip_dataplane::sip::{Framing, Limits, SipMessage};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    let mut s = PlainStream::new(limits);
    let step = usize::from(cut).max(1);
    'feed: for piece in rest.chunks(step) {
        if s.on_bytes(piece).is_err() {
            break;
        }
        loop {
            match s.poll_message() {
                Ok(Some(m)) => {
                    assert!(m.len() <= limits.max_message_size);
                    assert!(SipMessage::parse(&m, Framing::Stream, &limits).is_ok());
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    let mut sent = Vec::new();
    for piece in rest.chunks(step) {
        if s.send(piece).is_err() {
            break;
        }
        sent.extend_from_slice(piece);
    }
    let mut wire = Vec::new();
    while !s.wire().is_empty() {
        let n = s.wire().len().min(step);
        wire.extend_from_slice(&s.wire()[..n]);
        s.consumed(n);
    }
    assert_eq!(wire, sent);
});
