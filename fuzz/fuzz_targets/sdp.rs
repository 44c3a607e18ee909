//! SDP: parse, every typed view, the SBC rewrites, write, and re-parse.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::sdp::{Direction, Sdp};

fuzz_target!(|data: &[u8]| {
    let Ok(mut sdp) = Sdp::parse(data) else { return };
    let _ = (sdp.origin(), sdp.connection(), sdp.session_name(), sdp.direction());
    for i in 0..sdp.media.len() {
        let _ = sdp.media_connection(i);
        let m = &sdp.media[i];
        for _ in m.rtpmaps() {}
        for _ in m.crypto() {}
        for _ in m.candidates() {}
        let _ = (m.ptime(), m.rtcp(), m.rtcp_mux(), m.direction(), m.ice_credentials(), m.fmtp(101));
    }
    let first = sdp.to_bytes();
    assert!(Sdp::parse(&first).is_ok(), "written SDP must parse");
    sdp.set_connection_address(IpAddr::V4(Ipv4Addr::LOCALHOST));
    sdp.remove_ice();
    for m in &mut sdp.media {
        m.set_port(30000);
        m.retain_formats(|pt, _| pt % 2 == 0);
        m.prefer_formats(&[8, 0]);
        m.set_direction(Direction::SendRecv);
    }
    let _ = sdp.to_bytes();
});
