use std::net::SocketAddr;

use super::relay::*;
use super::rtp::{PacketError, write_rtp_header};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut h = [0u8; 12];
    write_rtp_header(&mut h, false, 0, seq, u32::from(seq) * 160, ssrc);
    [&h[..], &[0xd5; 160][..]].concat()
}

const RR: [u8; 8] = [0x80, 201, 0, 1, 0, 0, 0, 42];

/// A call: A at 10.0.0.1:4000 (relay port for A = ep 1), B at 10.0.0.2:5000
/// (relay port for B = ep 2); RTCP endpoints 11 and 12.
fn call(relay: &mut Relay, mux: bool) -> SessionId {
    let id = relay.create_session(0, 1);
    assert!(relay.bind_endpoint(1, id, 0, Side::A, Component::Rtp));
    assert!(relay.bind_endpoint(2, id, 0, Side::B, Component::Rtp));
    if !mux {
        assert!(relay.bind_endpoint(11, id, 0, Side::A, Component::Rtcp));
        assert!(relay.bind_endpoint(12, id, 0, Side::B, Component::Rtcp));
    }
    let a = PeerSpec {
        rtp: Some(addr("10.0.0.1:4000")),
        rtcp: Some(addr("10.0.0.1:4001")),
        rtcp_mux: mux,
        clock_rate: 8000,
    };
    relay.set_peer(id, 0, Side::A, a);
    id
}

fn answer(relay: &mut Relay, id: SessionId, mux: bool) {
    let b = PeerSpec {
        rtp: Some(addr("10.0.0.2:5000")),
        rtcp: Some(addr("10.0.0.2:5001")),
        rtcp_mux: mux,
        clock_rate: 8000,
    };
    relay.set_peer(id, 0, Side::B, b);
}

#[test]
fn forwards_both_ways_once_answered() {
    let mut r = Relay::new(RelayConfig::default(), 0);
    let id = call(&mut r, false);
    // Before the answer, A's packets have nowhere to go.
    assert_eq!(
        r.on_packet(1, 1, 1, addr("10.0.0.1:4000"), &rtp(1, 7)),
        Action::Drop(DropReason::NoDestination)
    );
    answer(&mut r, id, false);
    assert_eq!(
        r.on_packet(2, 2, 1, addr("10.0.0.1:4000"), &rtp(2, 7)),
        Action::Forward {
            via: 2,
            to: addr("10.0.0.2:5000")
        }
    );
    assert_eq!(
        r.on_packet(3, 3, 2, addr("10.0.0.2:5000"), &rtp(1, 9)),
        Action::Forward {
            via: 1,
            to: addr("10.0.0.1:4000")
        }
    );
    // RTCP on the separate ports goes to the peer's RTCP address.
    assert_eq!(
        r.on_packet(4, 4, 11, addr("10.0.0.1:4001"), &RR),
        Action::Forward {
            via: 12,
            to: addr("10.0.0.2:5001")
        }
    );
    let s = r.session(id).unwrap_or_else(|| panic!("session"));
    assert_eq!(
        s.medias[0].leg(Side::A).rtp_in.packets,
        2,
        "received, even when not forwardable"
    );
    assert_eq!(
        s.medias[0].leg(Side::B).sent_packets,
        2,
        "one RTP and one RTCP packet sent to B"
    );
    assert_eq!(s.medias[0].leg(Side::A).rtcp_in.packets, 1);
    assert_eq!(r.counters().forwarded, 3);
}

#[test]
fn learning_latches_to_the_real_source() {
    let mut r = Relay::new(RelayConfig::default(), 0);
    let id = call(&mut r, true);
    answer(&mut r, id, true);
    // B is behind NAT: it sends from 192.0.2.9:6000, not from its SDP address.
    assert_eq!(
        r.on_packet(1, 1, 2, addr("192.0.2.9:6000"), &rtp(1, 9)),
        Action::Forward {
            via: 1,
            to: addr("10.0.0.1:4000")
        }
    );
    // Traffic to B now goes where B really is.
    assert_eq!(
        r.on_packet(2, 2, 1, addr("10.0.0.1:4000"), &rtp(1, 7)),
        Action::Forward {
            via: 2,
            to: addr("192.0.2.9:6000")
        }
    );
    // A third party on B's port is dropped while B is active...
    assert_eq!(
        r.on_packet(3, 3, 2, addr("203.0.113.66:1"), &rtp(2, 9)),
        Action::Drop(DropReason::WrongSource)
    );
    // ...and can take over only after B was silent for the relatch time.
    assert_eq!(
        r.on_packet(2_500, 4, 2, addr("203.0.113.66:1"), &rtp(3, 9)),
        Action::Forward {
            via: 1,
            to: addr("10.0.0.1:4000")
        }
    );
}

#[test]
fn strict_mode_accepts_only_the_sdp_address() {
    let mut r = Relay::new(
        RelayConfig {
            latch: LatchMode::Strict,
            ..RelayConfig::default()
        },
        0,
    );
    let id = call(&mut r, true);
    answer(&mut r, id, true);
    assert_eq!(
        r.on_packet(1, 1, 2, addr("192.0.2.9:6000"), &rtp(1, 9)),
        Action::Drop(DropReason::WrongSource)
    );
    assert!(matches!(
        r.on_packet(2, 2, 2, addr("10.0.0.2:5000"), &rtp(2, 9)),
        Action::Forward { .. }
    ));
    assert_eq!(r.counters().wrong_source, 1);
}

#[test]
fn malformed_packets_are_dropped_and_counted() {
    let mut r = Relay::new(RelayConfig::default(), 0);
    let id = call(&mut r, true);
    answer(&mut r, id, true);
    let mut bad = rtp(1, 7);
    bad[0] = 0x40;
    assert_eq!(
        r.on_packet(1, 1, 1, addr("10.0.0.1:4000"), &bad),
        Action::Drop(DropReason::Malformed(PacketError::Version))
    );
    assert_eq!(
        r.on_packet(1, 1, 1, addr("10.0.0.1:4000"), &[0x80, 0]),
        Action::Drop(DropReason::Malformed(PacketError::TooShort))
    );
    let s = r.session(id).unwrap_or_else(|| panic!("session"));
    assert_eq!(s.medias[0].leg(Side::A).rtp_in.errors, 2);
    assert_eq!(r.counters().malformed, 2);
    // Malformed packets do not latch: the real peer still gets through.
    assert!(matches!(
        r.on_packet(2, 2, 1, addr("10.0.0.1:4000"), &rtp(2, 7)),
        Action::Forward { .. }
    ));
}

#[test]
fn rtcp_mux_on_one_side_is_demultiplexed_for_the_other() {
    let mut r = Relay::new(RelayConfig::default(), 0);
    let id = r.create_session(0, 1);
    r.bind_endpoint(1, id, 0, Side::A, Component::Rtp);
    r.bind_endpoint(2, id, 0, Side::B, Component::Rtp);
    r.bind_endpoint(12, id, 0, Side::B, Component::Rtcp);
    r.set_peer(
        id,
        0,
        Side::A,
        PeerSpec {
            rtp: Some(addr("10.0.0.1:4000")),
            rtcp: None,
            rtcp_mux: true,
            clock_rate: 8000,
        },
    );
    r.set_peer(
        id,
        0,
        Side::B,
        PeerSpec {
            rtp: Some(addr("10.0.0.2:5000")),
            rtcp: None,
            rtcp_mux: false,
            clock_rate: 8000,
        },
    );
    // A muxes RTCP on its RTP port; B gets it on its RTCP port (RTP + 1).
    assert_eq!(
        r.on_packet(1, 1, 1, addr("10.0.0.1:4000"), &RR),
        Action::Forward {
            via: 12,
            to: addr("10.0.0.2:5001")
        }
    );
    // B's RTCP from its RTCP port goes to A muxed, out of A's RTP endpoint.
    assert_eq!(
        r.on_packet(2, 2, 12, addr("10.0.0.2:5001"), &RR),
        Action::Forward {
            via: 1,
            to: addr("10.0.0.1:4000")
        }
    );
}

#[test]
fn re_offer_moves_media_without_new_endpoints() {
    let mut r = Relay::new(RelayConfig::default(), 0);
    let id = call(&mut r, true);
    answer(&mut r, id, true);
    assert!(matches!(
        r.on_packet(1, 1, 2, addr("10.0.0.2:5000"), &rtp(1, 9)),
        Action::Forward { .. }
    ));
    // A re-INVITE moves B to a new address: the latch is cleared, the
    // endpoints stay, and the next packet to B goes to the new address.
    r.set_peer(
        id,
        0,
        Side::B,
        PeerSpec {
            rtp: Some(addr("10.0.0.3:7000")),
            rtcp: None,
            rtcp_mux: true,
            clock_rate: 8000,
        },
    );
    assert_eq!(
        r.on_packet(2, 2, 1, addr("10.0.0.1:4000"), &rtp(2, 7)),
        Action::Forward {
            via: 2,
            to: addr("10.0.0.3:7000")
        }
    );
}

#[test]
fn silent_sessions_time_out_through_the_wheel() {
    let cfg = RelayConfig {
        media_timeout_ms: 3_000,
        ..RelayConfig::default()
    };
    let mut r = Relay::new(cfg, 0);
    let quiet = call(&mut r, true);
    let busy = r.create_session(0, 1);
    r.bind_endpoint(5, busy, 0, Side::A, Component::Rtp);
    for t in 0..10u64 {
        let now = t * 1000;
        r.on_packet(
            now,
            now * 1_000_000,
            5,
            addr("10.0.0.5:4000"),
            &rtp(t as u16, 3),
        );
        r.tick(now);
    }
    assert_eq!(r.take_timed_out(), vec![quiet]);
    assert!(r.session(quiet).is_some_and(|s| s.timed_out));
    assert!(r.session(busy).is_some_and(|s| !s.timed_out));
    assert_eq!(r.counters().timeouts, 1);
}

#[test]
fn removed_sessions_free_their_endpoints() {
    let mut r = Relay::new(RelayConfig::default(), 0);
    let id = call(&mut r, false);
    let mut eps = r.remove_session(id).to_vec();
    eps.sort_unstable();
    assert_eq!(eps, vec![1, 2, 11, 12]);
    assert_eq!(
        r.on_packet(1, 1, 1, addr("10.0.0.1:4000"), &rtp(1, 7)),
        Action::Drop(DropReason::UnknownEndpoint)
    );
    assert_eq!(r.session_count(), 0);
    // The id is reused; old timers for it are ignored.
    let again = r.create_session(5, 1);
    assert_eq!(again, id);
    r.tick(70_000);
    assert!(r.take_timed_out().len() <= 1);
}
