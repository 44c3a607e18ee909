//! RTP and RTCP validation, RTCP feedback stripping, header extensions,
//! and the relay's packet path: any datagram on any endpoint of a call,
//! from any source, with side A's two lines BUNDLEd or not.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::media::bundle::{BundleLine, header_extension};
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
    for id in [1, 4, 15] {
        if let Some(v) = header_extension(data, id) {
            assert!(v.len() <= data.len());
        }
    }
    let Some((&selector, packet)) = data.split_first() else { return };
    let mut relay = Relay::new(RelayConfig::default(), 0);
    let id = relay.create_session(0, 2);
    relay.bind_endpoint(0, id, 0, Side::A, Component::Rtp);
    relay.bind_endpoint(1, id, 0, Side::B, Component::Rtp);
    relay.bind_endpoint(2, id, 0, Side::B, Component::Rtcp);
    relay.bind_endpoint(3, id, 1, Side::B, Component::Rtp);
    if selector & 8 == 0 {
        for (m, mid, pts) in [(0, b"0", vec![0, 8, 101]), (1, b"1", vec![96, 97, 101])] {
            let line = BundleLine { transport: 0, mid: mid.to_vec(), mid_ext: Some(4), payload_types: pts, ssrcs: vec![0x1111 * (m as u32 + 1)] };
            relay.set_bundle(id, m, Side::A, &line);
        }
    }
    let a: SocketAddr = "10.0.0.1:4000".parse().unwrap_or_else(|_| unreachable!());
    let b: SocketAddr = "10.0.0.2:5000".parse().unwrap_or_else(|_| unreachable!());
    relay.set_peer(id, 0, Side::A, PeerSpec { rtp: Some(a), rtcp: None, rtcp_mux: true, clock_rate: 8000, feedback: selector & 4 == 0 });
    relay.set_peer(id, 0, Side::B, PeerSpec { rtp: Some(b), rtcp: None, rtcp_mux: selector & 1 == 0, clock_rate: 48000, feedback: false });
    let c: SocketAddr = "10.0.0.3:6000".parse().unwrap_or_else(|_| unreachable!());
    relay.set_peer(id, 1, Side::B, PeerSpec { rtp: Some(c), rtcp: None, rtcp_mux: true, clock_rate: 90000, feedback: true });
    let src = if selector & 2 == 0 { a } else { b };
    for (i, t) in [0u64, 1, 5_000, 70_000].into_iter().enumerate() {
        let _ = relay.on_packet(t, t * 1_000_000, u32::from(selector >> 2) % 4, src, packet);
        if i == 2 {
            relay.tick(t);
        }
    }
    let _ = relay.remove_session(id);
});
