//! SIP over WebSocket sessions: any octets from a client (an upgrade
//! request, then frames), cut anywhere, end in an error, an HTTP refusal,
//! or whole messages no larger than allowed; never a panic. What the
//! session writes is an HTTP answer followed by well-formed frames.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::sip::Limits;
use rvoip_dataplane::sip::stream::StreamSession;
use rvoip_dataplane::sip::ws::{WsPolicy, WsStream};

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_message_size: 4096,
        ..Limits::default()
    };
    let mut s = WsStream::server(Arc::new(WsPolicy::default()), limits);
    // Half the inputs start with a good upgrade, so the frames are reached.
    let mut input = if mode & 1 == 0 { UPGRADE.to_vec() } else { Vec::new() };
    input.extend_from_slice(rest);
    for piece in input.chunks(usize::from(mode >> 1).max(1)) {
        if s.on_bytes(piece).is_err() {
            return;
        }
        while let Ok(Some(m)) = s.poll_message() {
            assert!(m.len() <= limits.max_message_size);
        }
    }
    let wire = s.wire();
    assert!(wire.is_empty() || wire.starts_with(b"HTTP/1.1 "));
    let _ = s.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n");
});
