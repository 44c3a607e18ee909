use std::net::SocketAddr;

use super::relay::*;
use super::rtp::{PacketError, Ssrc, write_rtp_header};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut h = [0u8; 12];
    write_rtp_header(&mut h, false, 0, seq, u32::from(seq) * 160, Ssrc(ssrc));
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
        feedback: false,
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
        feedback: false,
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
            feedback: false,
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
            feedback: false,
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
            feedback: false,
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

mod srtp {
    use super::*;
    use crate::srtp::{Mki, SrtpContext, SrtpError, SrtpParams, Suite, sdes};

    fn keyed() -> SrtpParams {
        let mut k = sdes::generate(
            Suite::AesCm128HmacSha1_80,
            &crate::entropy::SystemEntropy::new(),
        )
        .unwrap_or_else(|| panic!("key"));
        k.mki = Some(Mki { value: 1, len: 1 });
        SrtpParams::new(Suite::AesCm128HmacSha1_80, k)
    }

    fn protect(ctx: &mut SrtpContext, p: &[u8]) -> Vec<u8> {
        let mut buf = p.to_vec();
        buf.resize(p.len() + 32, 0);
        let n = ctx
            .protect_rtp(&mut buf, p.len())
            .unwrap_or_else(|e| panic!("{e:?}"));
        buf.truncate(n);
        buf
    }

    #[test]
    fn srtp_drops_are_counted_by_reason_and_never_forwarded() {
        let mut r = Relay::new(RelayConfig::default(), 0);
        let id = call(&mut r, true);
        answer(&mut r, id, true);
        let params = keyed();
        let srtp = LegSrtp {
            rx: Some(params.clone()),
            tx: None,
        };
        assert!(r.set_crypto(id, 0, Side::A, &srtp));
        assert_eq!(r.is_srtp(id, 0, Side::A), (true, false));
        let mut peer = SrtpContext::new(&params).unwrap_or_else(|| panic!("ctx"));
        let a = addr("10.0.0.1:4000");
        let good = protect(&mut peer, &rtp(1, 7));
        let second = protect(&mut peer, &rtp(2, 7));
        // The genuine packet passes, decrypted, to B (and latches A).
        let mut buf = [0u8; 2048];
        buf[..good.len()].copy_from_slice(&good);
        let mut len = good.len();
        assert!(matches!(
            r.on_datagram(1, 1, 1, a, &mut buf, &mut len),
            Action::Forward { via: 2, .. }
        ));
        assert_eq!(&buf[..len], &rtp(1, 7)[..]);
        // From another source: dropped before SRTP, the replay state untouched.
        assert_eq!(
            r.on_packet(2, 2, 1, addr("10.9.9.9:1"), &second),
            Action::Drop(DropReason::WrongSource)
        );
        let mut bad = second.clone();
        bad[30] ^= 4;
        let mut other_mki = second.clone();
        other_mki[172] = 2;
        let cases = [
            (bad, SrtpError::AuthFailed),
            (second[..15].to_vec(), SrtpError::Truncated),
            (other_mki, SrtpError::UnknownMki),
            // Plain RTP: the octet where the MKI belongs is payload.
            (rtp(3, 7), SrtpError::UnknownMki),
            (good.clone(), SrtpError::Replayed),
        ];
        for (pkt, e) in &cases {
            assert_eq!(
                r.on_packet(3, 3, 1, a, pkt),
                Action::Drop(DropReason::Srtp(*e))
            );
        }
        assert!(matches!(
            r.on_packet(4, 4, 1, a, &second),
            Action::Forward { .. }
        ));
        let c = r.counters();
        assert_eq!(
            (
                c.srtp_drops.auth_failed,
                c.srtp_drops.truncated,
                c.srtp_drops.unknown_mki
            ),
            (1, 1, 2)
        );
        assert_eq!((c.srtp_drops.replayed, c.srtp_drops.total()), (1, 5));
        assert_eq!((c.srtp_unprotected, c.forwarded), (2, 2));
        let leg = r.session(id).map(|s| s.medias[0].legs[0].srtp_in_errors);
        assert_eq!(leg, Some(5));
        // Switching the leg back to plain RTP lets plain packets through.
        assert!(r.set_crypto(id, 0, Side::A, &LegSrtp::default()));
        assert!(matches!(
            r.on_packet(5, 5, 1, a, &rtp(3, 7)),
            Action::Forward { .. }
        ));
    }

    #[test]
    fn a_re_offer_with_the_same_key_keeps_the_context() {
        let mut r = Relay::new(RelayConfig::default(), 0);
        let id = call(&mut r, true);
        answer(&mut r, id, true);
        let params = keyed();
        let srtp = LegSrtp {
            rx: Some(params.clone()),
            tx: None,
        };
        assert!(r.set_crypto(id, 0, Side::A, &srtp));
        let mut peer = SrtpContext::new(&params).unwrap_or_else(|| panic!("ctx"));
        let first = protect(&mut peer, &rtp(1, 7));
        assert!(matches!(
            r.on_packet(1, 1, 1, addr("10.0.0.1:4000"), &first),
            Action::Forward { .. }
        ));
        // Same keys again: the replay window survives, so the replay is caught.
        assert!(r.set_crypto(id, 0, Side::A, &srtp));
        assert_eq!(
            r.on_packet(2, 2, 1, addr("10.0.0.1:4000"), &first),
            Action::Drop(DropReason::Srtp(SrtpError::Replayed))
        );
        // A new key starts a new context: the old key's packets fail.
        let fresh = LegSrtp {
            rx: Some(keyed()),
            tx: None,
        };
        assert!(r.set_crypto(id, 0, Side::A, &fresh));
        let next = protect(&mut peer, &rtp(2, 7));
        assert_eq!(
            r.on_packet(3, 3, 1, addr("10.0.0.1:4000"), &next),
            Action::Drop(DropReason::Srtp(SrtpError::AuthFailed))
        );
    }
}

/// A WebRTC leg end to end in the relay, with time under the test's
/// control: a browser's check answered, its DTLS handshake completed
/// through the relay's transmit queue, SRTP both ways; then its consent
/// lapses (no check for 30 s) and nothing more is sent to it, until a new
/// check answers.
#[test]
#[allow(clippy::disallowed_methods)] // the test plays the I/O shell
fn a_webrtc_leg_is_keyed_by_its_handshake_and_silenced_when_consent_lapses() {
    use super::dtls::{DtlsIdentity, DtlsLeg, Role};
    use super::webrtc::WebRtcPlan;
    use crate::entropy::SystemEntropy;
    use crate::srtp::SrtpContext;

    let epoch = std::time::Instant::now();
    let (relay_id, browser_id) = (
        DtlsIdentity::generate(&SystemEntropy::new()).unwrap(),
        DtlsIdentity::generate(&SystemEntropy::new()).unwrap(),
    );
    let mut r = Relay::new(RelayConfig::default(), 0);
    r.set_dtls(relay_id.clone(), epoch);
    let id = call(&mut r, true);
    answer(&mut r, id, true);
    let plan = WebRtcPlan {
        ufrag: "lite".into(),
        pwd: "relaypasswordrelaypassword".into(),
        dtls: Some((Role::Passive, browser_id.fingerprint())),
        remote_ice: None,
    };
    assert!(r.set_webrtc(id, 0, Side::A, &plan, 0));
    let browser = addr("10.0.0.1:4000");
    let mut out = [0u8; 2048];
    let mut drain = |r: &mut Relay| {
        let mut got = Vec::new();
        while let Some(t) = r.poll_transmit(0, &mut out) {
            got.push((t.via, t.to, out[..t.len].to_vec()));
        }
        got
    };
    // Before the handshake nothing goes to the browser.
    assert_eq!(
        r.on_packet(10, 10_000_000, 2, addr("10.0.0.2:5000"), &rtp(1, 9)),
        Action::Drop(DropReason::NoDestination)
    );
    // The browser's check is answered from the relay port, to it.
    let check = super::ice::binding_request("lite:brws", &plan.pwd, [3; 12], 1);
    assert_eq!(
        r.on_packet(20, 20_000_000, 1, browser, &check),
        Action::Consumed
    );
    let answered = drain(&mut r);
    assert_eq!(answered.len(), 1);
    assert_eq!((answered[0].0, answered[0].1), (1, browser));
    // DTLS: the browser is the client; its records go in, the relay's
    // come out of the transmit queue.
    let mut leg = DtlsLeg::new(&browser_id, Role::Active, relay_id.fingerprint(), epoch).unwrap();
    let mut to_relay = Vec::new();
    leg.on_timeout(epoch, &mut |d| to_relay.push(d.to_vec()))
        .unwrap();
    for _ in 0..10 {
        for d in std::mem::take(&mut to_relay) {
            assert_eq!(
                r.on_packet(30, 30_000_000, 1, browser, &d),
                Action::Consumed
            );
        }
        for (_, to, d) in drain(&mut r) {
            assert_eq!(to, browser);
            leg.on_packet(&d, epoch, &mut |x| to_relay.push(x.to_vec()))
                .unwrap();
        }
        if leg.keys().is_some() && to_relay.is_empty() {
            break;
        }
    }
    let keys = leg.keys().unwrap().clone();
    let (mut tx, mut rx) = (
        SrtpContext::new(&keys.outbound).unwrap(),
        SrtpContext::new(&keys.inbound).unwrap(),
    );
    // B → browser: protected with the relay's keys; the browser reads it.
    let mut buf = [0u8; 2048];
    let p = rtp(2, 9);
    buf[..p.len()].copy_from_slice(&p);
    let mut len = p.len();
    let a = r.on_datagram(
        1_000,
        1_000_000_000,
        2,
        addr("10.0.0.2:5000"),
        &mut buf,
        &mut len,
    );
    assert_eq!(
        a,
        Action::Forward {
            via: 1,
            to: browser
        }
    );
    let n = rx.unprotect_rtp(&mut buf, len).unwrap();
    assert_eq!(&buf[..n], &p[..]);
    // Browser → B: unprotected by the relay.
    let q = rtp(1, 7);
    buf[..q.len()].copy_from_slice(&q);
    let mut len = tx.protect_rtp(&mut buf, q.len()).unwrap();
    let a = r.on_datagram(1_010, 1_010_000_000, 1, browser, &mut buf, &mut len);
    assert_eq!(
        a,
        Action::Forward {
            via: 2,
            to: addr("10.0.0.2:5000")
        }
    );
    assert_eq!(&buf[..len], &q[..]);
    // 31 s after the last check: consent has lapsed, nothing goes to it.
    assert_eq!(
        r.on_packet(31_000, 31_000_000_000, 2, addr("10.0.0.2:5000"), &rtp(3, 9)),
        Action::Drop(DropReason::NoDestination)
    );
    // A new check restores it.
    let check = super::ice::binding_request("lite:brws", &plan.pwd, [4; 12], 1);
    assert_eq!(
        r.on_packet(31_100, 31_100_000_000, 1, browser, &check),
        Action::Consumed
    );
    drain(&mut r);
    assert_eq!(
        r.on_packet(31_200, 31_200_000_000, 2, addr("10.0.0.2:5000"), &rtp(4, 9)),
        Action::Forward {
            via: 1,
            to: browser
        }
    );
}

#[test]
fn rtcp_feedback_reaches_only_a_peer_whose_profile_has_it() {
    let mut r = Relay::new(RelayConfig::default(), 0);
    let id = call(&mut r, true);
    answer(&mut r, id, true);
    // A is a browser (UDP/TLS/RTP/SAVPF: feedback), B plain RTP/AVP.
    let a = PeerSpec {
        rtp: Some(addr("10.0.0.1:4000")),
        rtcp: Some(addr("10.0.0.1:4001")),
        rtcp_mux: true,
        clock_rate: 8000,
        feedback: true,
    };
    r.set_peer(id, 0, Side::A, a);
    let pli = [0x81, 206, 0, 2, 0, 0, 0, 42, 0, 0, 0, 9];
    let nack = [0x81, 205, 0, 3, 0, 0, 0, 42, 0, 0, 0, 9, 0, 7, 0, 0];
    let send = |r: &mut Relay, ep, from: &str, pkt: &[u8]| {
        let mut buf = [0u8; 2048];
        buf[..pkt.len()].copy_from_slice(pkt);
        let mut len = pkt.len();
        let action = r.on_datagram(5, 5_000_000, ep, addr(from), &mut buf, &mut len);
        (action, buf[..len].to_vec())
    };
    // From the browser to the plain peer: the receiver report goes on,
    // the picture-loss indication and the NACK end here.
    let compound = [&RR[..], &pli[..], &nack[..]].concat();
    let (action, sent) = send(&mut r, 1, "10.0.0.1:4000", &compound);
    assert_eq!(
        action,
        Action::Forward {
            via: 2,
            to: addr("10.0.0.2:5000")
        }
    );
    assert_eq!(sent, RR.to_vec());
    // Feedback alone (reduced-size RTCP, RFC 5506): nothing to send.
    let (action, _) = send(&mut r, 1, "10.0.0.1:4000", &pli);
    assert_eq!(action, Action::Consumed);
    assert_eq!(r.counters().rtcp_feedback_terminated, 3);
    // Towards the browser, whose profile has feedback, all of it passes.
    let from_b = [&RR[..], &nack[..]].concat();
    let (action, sent) = send(&mut r, 2, "10.0.0.2:5000", &from_b);
    assert_eq!(
        action,
        Action::Forward {
            via: 1,
            to: addr("10.0.0.1:4000")
        }
    );
    assert_eq!(sent, from_b);
    assert_eq!(r.counters().rtcp_feedback_terminated, 3);
}
