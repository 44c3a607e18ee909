//! The figures are right: a UAC and a UAS agent talk over a simulated
//! network on simulated time that delays every datagram by a known amount,
//! delays some RTP packets more, reorders some and drops known ones; the
//! reports must show exactly that loss, reordering and transit time.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use rvoip_dataplane::srtp::Suite;
use rvoip_loadtest::agent::{Agent, AgentRole, Config};
use rvoip_loadtest::media;

mod common;

const MS: u64 = 1_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An agent on `cfg` from `now_ns`, its SRTP keys from a fixed seed (the
/// runs are simulated: the same every time).
fn agent(cfg: Config, now_ns: u64) -> Agent {
    Agent::new(
        cfg,
        now_ns,
        Box::new(rvoip_dataplane::entropy::SeededEntropy::new(1)),
    )
}

fn config(role: AgentRole, sip: &str, rtp: &str, target: Option<&str>) -> Config {
    common::agent_config(role, sip, rtp, target, 5)
}

/// What the network does to RTP from the UAS to the UAC, by (SSRC, seq):
/// dropped, or delivered this much later than the base delay.
struct Network {
    rtp_seen: BTreeMap<u32, u64>,
    dropped: u64,
    extra_late: u64,
}

impl Network {
    /// Packets 7, 32, 57, 82 of a stream are dropped, packets 3, 13, ..., 93
    /// are 45 ms late (two later packets overtake each); a stream has about
    /// 100, so each of these has later packets that reveal it.
    fn fate(&mut self, pkt: &[u8]) -> Option<u64> {
        let (_, ssrc, _) = media::read(pkt)?;
        let n = self.rtp_seen.entry(ssrc).or_default();
        *n += 1;
        if *n % 25 == 7 {
            self.dropped += 1;
            None
        } else if *n % 10 == 3 && *n < 95 {
            self.extra_late += 1;
            Some(45 * MS)
        } else {
            Some(0)
        }
    }
}

/// Runs five calls between a UAC and a UAS agent over a network that delays
/// every datagram 30 ms and applies `net` to the UAS's RTP; returns both
/// agents (streams folded) and the sizes of the UAC's RTP datagrams.
fn simulate(srtp: Option<Suite>, net: &mut Network) -> (Agent, Agent, Vec<usize>) {
    let mut wire = Vec::new();
    let (uac_sip, uac_rtp, uas_sip, uas_rtp) = (
        "10.0.0.1:5060",
        "10.0.0.1:4000",
        "10.0.0.2:5070",
        "10.0.0.2:4002",
    );
    let t0 = 1_000 * MS;
    let mut uac = agent(
        Config {
            srtp,
            ..config(AgentRole::Uac, uac_sip, uac_rtp, Some(uas_sip))
        },
        t0,
    );
    let mut uas = agent(config(AgentRole::Uas, uas_sip, uas_rtp, None), t0);
    let base = 30 * MS;
    // In flight: (arrival, destination, source, bytes, is RTP).
    let mut flight: Vec<(u64, SocketAddr, SocketAddr, Vec<u8>, bool)> = Vec::new();
    let mut t = t0;
    while t < t0 + 10_000 * MS {
        let (due, rest): (Vec<_>, Vec<_>) = flight.into_iter().partition(|f| f.0 <= t);
        flight = rest;
        for (_, to, from, bytes, rtp) in due {
            let agent = if to == addr(uac_sip) || to == addr(uac_rtp) {
                &mut uac
            } else {
                &mut uas
            };
            if rtp {
                agent.on_rtp(t, &bytes, from);
            } else {
                agent.on_sip(t, &bytes, from);
            }
        }
        uac.tick(t);
        uas.tick(t);
        for (_, msg, to) in uac.take_out() {
            flight.push((t + base, to, addr(uac_sip), msg, false));
        }
        for (_, msg, to) in uas.take_out() {
            flight.push((t + base, to, addr(uas_sip), msg, false));
        }
        uac.media_due(t, |p, to| {
            wire.push(p.len());
            flight.push((t + base, to, addr(uac_rtp), p.to_vec(), true));
            true
        });
        let mut late = Vec::new();
        uas.media_due(t, |p, to| {
            late.push((p.to_vec(), to));
            true
        });
        for (p, to) in late {
            if let Some(extra) = net.fate(&p) {
                flight.push((t + base + extra, to, addr(uas_rtp), p, true));
            }
        }
        t += MS;
        if uac.finished(t) && flight.is_empty() {
            break;
        }
    }
    uac.fold_streams(t, true);
    uas.fold_streams(t, true);
    (uac, uas, wire)
}

#[test]
fn loss_reordering_and_transit_match_what_the_network_did() {
    let mut net = Network {
        rtp_seen: BTreeMap::new(),
        dropped: 0,
        extra_late: 0,
    };
    let (uac, uas, _) = simulate(None, &mut net);
    let (a, b) = (&uac.report, &uas.report);
    assert_eq!((a.attempted, a.completed, a.failed), (5, 5, 0));
    assert_eq!((b.attempted, b.completed), (5, 5));
    // SIP: the request and the answer each take 30 ms: INVITE→180 is 60 ms.
    assert_eq!(a.invite_to_180.value_at_quantile(0.5) / 1000, 60);
    // UAS → UAC RTP: exactly the dropped packets are lost, the late ones
    // arrive after later ones.
    assert!(net.dropped > 0 && net.extra_late > 0);
    assert_eq!(a.rtp_lost, net.dropped, "loss");
    assert_eq!(a.rtp_received, b.rtp_sent - net.dropped);
    assert_eq!(
        a.rtp_out_of_order, net.extra_late,
        "each late packet is overtaken"
    );
    // Transit: 30 ms for most, 75 ms for the late tenth.
    assert_eq!(a.rtp_transit.value_at_quantile(0.5) / 1000, 30);
    assert_eq!(a.rtp_transit.max() / 1000, 75);
    // Jitter comes only from the late packets: the UAC sees some, the UAS
    // (whose incoming path is steady) none.
    assert!(a.jitter.max() > 1000, "UAC jitter {} µs", a.jitter.max());
    assert_eq!(
        b.jitter.max(),
        1,
        "UAS jitter is zero (recorded as the 1 µs floor)"
    );
    // UAC → UAS RTP: nothing lost, 30 ms each.
    assert_eq!((b.rtp_lost, b.rtp_received), (0, a.rtp_sent));
    assert_eq!(b.rtp_transit.max() / 1000, 30);
    // MOS from 30 ms and the loss rate.
    let loss_pct = 100.0 * net.dropped as f64 / b.rtp_sent as f64;
    let expected = rvoip_loadtest::report::mos(30.0, loss_pct);
    assert!((a.mos().unwrap() - expected).abs() < 0.01);
}

#[test]
fn srtp_media_is_encrypted_on_the_wire_and_measured_the_same() {
    for suite in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm] {
        let mut net = Network {
            rtp_seen: BTreeMap::new(),
            dropped: 0,
            extra_late: 0,
        };
        let (uac, uas, wire) = simulate(Some(suite), &mut net);
        let (a, b) = (&uac.report, &uas.report);
        assert_eq!((a.completed, b.completed), (5, 5), "{suite:?}");
        // Every UAC packet went out as SRTP (tag added).
        assert!(!wire.is_empty());
        assert!(
            wire.iter()
                .all(|n| *n == media::PACKET + suite.rtp_tag_len())
        );
        // Both sides decrypted everything; the UAS's stream shows the known losses.
        assert_eq!((a.srtp_errors, b.srtp_errors), (0, 0), "{suite:?}");
        assert_eq!((b.rtp_received, b.rtp_lost), (a.rtp_sent, 0));
        assert_eq!(a.rtp_lost, net.dropped);
        assert_eq!(a.rtp_transit.value_at_quantile(0.5) / 1000, 30);
    }
}

#[test]
fn srtp_that_arrives_before_the_answer_is_not_read_as_plain_rtp() {
    // A UAC offering SRTP, before any call is answered: a relay forwards
    // the far end's (encrypted) media ahead of the 200 with its keys.
    let t0 = 1_000_000_000;
    let mut uac = agent(
        Config {
            srtp: Some(Suite::AesCm128HmacSha1_80),
            ..config(
                AgentRole::Uac,
                "127.0.0.1:5080",
                "127.0.0.1:7000",
                Some("127.0.0.1:5060"),
            )
        },
        t0,
    );
    // An SRTP packet: RTP header, then ciphertext where a load packet's
    // send stamp would be.
    let mut pkt = vec![0x80, 0x08, 0x00, 0x01, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
    pkt.extend((0..160u32).map(|i| (i.wrapping_mul(97) ^ 0xa5) as u8));
    pkt.extend_from_slice(&[0xde; 10]);
    uac.on_rtp(t0 + 1_000_000, &pkt, addr("127.0.0.1:7002"));
    uac.fold_streams(t0 + 10_000_000_000, true);
    assert_eq!(uac.report.rtp_received, 0);
    assert_eq!(uac.report.jitter.len(), 0, "no stream was measured");
}

/// Calls start on the rate schedule, and between them the loop sleeps until
/// the next one is due rather than waking every millisecond.
#[test]
fn the_next_wake_up_is_the_next_call_on_the_schedule() {
    let start = 1_000_000_000_000;
    let mut cfg = config(
        AgentRole::Uac,
        "127.0.0.1:5080",
        "127.0.0.1:6000",
        Some("127.0.0.1:5070"),
    );
    cfg.media = false;
    let mut uac = agent(cfg.clone(), start);
    uac.tick(start);
    assert_eq!(uac.take_out().count(), 1, "call 0 starts at once");
    // 10 calls per second: the next one 100 ms on, reached in a few
    // wake-ups (its INVITE's retransmission is later, at 500 ms).
    let (at, wakes) = next_invite(&mut uac, start);
    assert!(
        (start + 100_000_000..start + 101_000_000).contains(&at),
        "{}",
        at - start
    );
    assert!(wakes <= 3, "{wakes} wake-ups");
    // A 0.5 s ramp: call k is due at sqrt(2·0.5·k/10) s, call 1 at 316 ms.
    cfg.ramp_s = 0.5;
    let mut ramped = agent(cfg, start);
    ramped.tick(start);
    assert_eq!(ramped.take_out().count(), 1);
    let (at, wakes) = next_invite(&mut ramped, start);
    assert!(
        (start + 316_000_000..start + 317_000_000).contains(&at),
        "{}",
        at - start
    );
    assert!(wakes <= 12, "{wakes} wake-ups");
}

/// Runs `agent` as the loop would, from `now`, sleeping until each
/// deadline, until it sends something: when, and after how many wake-ups.
fn next_invite(agent: &mut Agent, mut now: u64) -> (u64, u32) {
    for wakes in 1..1000 {
        now = agent.next_deadline(now).max(now + 1);
        agent.tick(now);
        if agent.take_out().count() > 0 {
            return (now, wakes);
        }
    }
    panic!("no call started");
}
