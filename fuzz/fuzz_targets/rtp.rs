//! RTP and RTCP validation, RTCP feedback stripping, and the relay's packet
//! path: any datagram on any endpoint of a call, from any source.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::media::relay::{Component, PeerSpec, Relay, RelayConfig, Side};
use rvoip_dataplane::media::rtp::{check_rtcp, looks_like_rtcp, parse_rtp, strip_rtcp_feedback};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_rtp(data) {
        assert!(h.payload_offset + h.payload_len <= data.len());
    }
    let _ = looks_like_rtcp(data);
    if check_rtcp(data).is_ok() {
        // What is left of a valid compound without its feedback is valid
        // again (or empty).
        let mut buf = data.to_vec();
        let (kept, _) = strip_rtcp_feedback(&mut buf, data.len());
        assert!(kept <= data.len());
        assert!(kept == 0 || kept < 8 || check_rtcp(&buf[..kept]).is_ok());
    }
    let Some((&selector, packet)) = data.split_first() else { return };
    let mut relay = Relay::new(RelayConfig::default(), 0);
    let id = relay.create_session(0, 1);
    relay.bind_endpoint(0, id, 0, Side::A, Component::Rtp);
    relay.bind_endpoint(1, id, 0, Side::B, Component::Rtp);
    relay.bind_endpoint(2, id, 0, Side::B, Component::Rtcp);
    let a: SocketAddr = "10.0.0.1:4000".parse().unwrap_or_else(|_| unreachable!());
    let b: SocketAddr = "10.0.0.2:5000".parse().unwrap_or_else(|_| unreachable!());
    relay.set_peer(id, 0, Side::A, PeerSpec { rtp: Some(a), rtcp: None, rtcp_mux: true, clock_rate: 8000, feedback: selector & 4 == 0 });
    relay.set_peer(id, 0, Side::B, PeerSpec { rtp: Some(b), rtcp: None, rtcp_mux: selector & 1 == 0, clock_rate: 48000, feedback: false });
    let src = if selector & 2 == 0 { a } else { b };
    for (i, t) in [0u64, 1, 5_000, 70_000].into_iter().enumerate() {
        let _ = relay.on_packet(t, t * 1_000_000, u32::from(selector >> 2) % 4, src, packet);
        if i == 2 {
            relay.tick(t);
        }
    }
    let _ = relay.remove_session(id);
});
