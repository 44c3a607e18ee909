//! What the report says about calls that fail, on simulated time: each
//! failure by its reason (a call dropped silently is not a bare timeout, a
//! refusal carries its status and phrase), an answer that comes after the
//! caller gave up is acknowledged and hung up so its media stops, and the
//! RTP figures are those of completed calls, with what failed calls
//! received counted apart.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::SocketAddr;

use rvoip_dataplane::sip::{Framing, Limits, SipMessage};
use rvoip_loadtest::agent::{Agent, AgentRole, Config};

mod common;

const MS: u64 = 1_000_000;
const T0: u64 = 1_000 * MS;
const UAC_SIP: &str = "10.0.0.1:5060";
const UAC_RTP: &str = "10.0.0.1:4000";
const UAS_SIP: &str = "10.0.0.2:5070";
const UAS_RTP: &str = "10.0.0.2:4002";

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

fn config(role: AgentRole, sip: &str, rtp: &str, target: Option<&str>, calls: u64) -> Config {
    common::agent_config(role, sip, rtp, target, calls)
}

/// What the network does with a SIP message: deliver it after this many
/// ns, or drop it.
type Fate<'a> = &'a mut dyn FnMut(&SipMessage<'_>, bool) -> Option<u64>;

/// Runs a UAC and, when given, a UAS over a network that delays everything
/// 10 ms and applies `fate` to SIP (`true`: from the UAC), for `secs`.
/// Returns the UAS's RTP packets sent after `quiet_after` (ns since T0).
fn run(
    uac: &mut Agent,
    mut uas: Option<&mut Agent>,
    secs: u64,
    fate: Fate<'_>,
    quiet_after: u64,
) -> u64 {
    let mut flight: Vec<(u64, SocketAddr, SocketAddr, Vec<u8>, bool)> = Vec::new();
    let mut uas_late_rtp = 0;
    let mut t = T0;
    while t < T0 + secs * 1000 * MS {
        let (due, rest): (Vec<_>, Vec<_>) = flight.into_iter().partition(|f| f.0 <= t);
        flight = rest;
        for (_, to, from, bytes, rtp) in due {
            let agent: &mut Agent = if to == addr(UAC_SIP) || to == addr(UAC_RTP) {
                &mut *uac
            } else if let Some(u) = uas.as_deref_mut() {
                u
            } else {
                continue;
            };
            if rtp {
                agent.on_rtp(t, &bytes, from);
            } else {
                agent.on_sip(t, &bytes, from);
            }
        }
        uac.tick(t);
        for (_, msg, to) in uac.take_out() {
            let m = SipMessage::parse(&msg, Framing::Datagram, &Limits::default()).unwrap();
            if let Some(extra) = fate(&m, true) {
                flight.push((t + 10 * MS + extra, to, addr(UAC_SIP), msg, false));
            }
        }
        uac.media_due(t, |p, to| {
            flight.push((t + 10 * MS, to, addr(UAC_RTP), p.to_vec(), true));
            true
        });
        if let Some(u) = uas.as_deref_mut() {
            u.tick(t);
            for (_, msg, to) in u.take_out() {
                let m = SipMessage::parse(&msg, Framing::Datagram, &Limits::default()).unwrap();
                if let Some(extra) = fate(&m, false) {
                    flight.push((t + 10 * MS + extra, to, addr(UAS_SIP), msg, false));
                }
            }
            let mut sent = Vec::new();
            u.media_due(t, |p, to| {
                sent.push((p.to_vec(), to));
                true
            });
            for (p, to) in sent {
                if t - T0 > quiet_after {
                    uas_late_rtp += 1;
                }
                flight.push((t + 10 * MS, to, addr(UAS_RTP), p, true));
            }
        }
        t += MS;
    }
    uac.finish(t);
    if let Some(u) = uas {
        u.finish(t);
    }
    uas_late_rtp
}

#[test]
fn a_call_nobody_answers_is_no_response_and_a_refusal_keeps_its_phrase() {
    // Nobody at the target: every INVITE goes unanswered (a ban drops it).
    let mut uac = agent(
        config(AgentRole::Uac, UAC_SIP, UAC_RTP, Some(UAS_SIP), 2),
        T0,
    );
    run(&mut uac, None, 40, &mut |_, _| Some(0), u64::MAX);
    assert_eq!(
        uac.report.failures.get("no-response"),
        Some(&2),
        "{:?}",
        uac.report.failures
    );
    assert_eq!(uac.report.failed, 2);

    // A refusal (an SBC shedding load): each INVITE answered 503 Service
    // Unavailable; the caller reports the status and its phrase.
    let mut uac = agent(
        config(AgentRole::Uac, UAC_SIP, UAC_RTP, Some(UAS_SIP), 2),
        T0,
    );
    let mut refused = 0;
    let mut t = T0;
    while t < T0 + 5_000 * MS {
        uac.tick(t);
        let mut answers = Vec::new();
        for (_, msg, _) in uac.take_out() {
            let m = SipMessage::parse(&msg, Framing::Datagram, &Limits::default()).unwrap();
            if m.method().is_some_and(|m| m.as_bytes() == b"INVITE") {
                let mut out = Vec::new();
                let reason = b"Service Unavailable";
                rvoip_dataplane::sip::write_response(&m, 503, reason, Some(b"sbc"), &[], &mut out);
                answers.push(out);
                refused += 1;
            }
        }
        for a in answers {
            uac.on_sip(t, &a, addr(UAS_SIP));
        }
        t += MS;
    }
    assert_eq!(refused, 2);
    assert_eq!(
        uac.report.failures.get("503 Service Unavailable"),
        Some(&2),
        "{:?}",
        uac.report.failures
    );
}

#[test]
fn an_answer_after_the_caller_gave_up_is_hung_up_and_its_media_stops() {
    let mut uac = agent(
        config(AgentRole::Uac, UAC_SIP, UAC_RTP, Some(UAS_SIP), 1),
        T0,
    );
    let mut uas = agent(config(AgentRole::Uas, UAS_SIP, UAS_RTP, None, 0), T0);
    // The INVITE (and its retransmissions) reach the UAS 33 s late: after
    // the caller's Timer B (32 s) has given the call up.
    let mut fate = |m: &SipMessage<'_>, from_uac: bool| {
        let invite = m.method().is_some_and(|m| m.as_bytes() == b"INVITE");
        if from_uac && invite {
            Some(33_000 * MS)
        } else {
            Some(0)
        }
    };
    let late = run(&mut uac, Some(&mut uas), 60, &mut fate, 36_000 * MS);
    assert_eq!(uac.report.failed, 1);
    assert_eq!(
        uac.report.failures.get("no-response"),
        Some(&1),
        "{:?}",
        uac.report.failures
    );
    assert_eq!(
        uac.report.abandoned_hung_up, 1,
        "the late 2xx was acknowledged and hung up"
    );
    assert_eq!(uas.active(), 0, "the UAS's call ended by the caller's BYE");
    assert_eq!(
        uas.report.failures.get("ack-timeout"),
        None,
        "acknowledged, not timed out: {:?}",
        uas.report.failures
    );
    assert_eq!(
        late, 0,
        "the UAS sends no media for the abandoned call after its BYE"
    );
}

#[test]
fn rtp_figures_are_of_completed_calls_and_failed_calls_are_counted_apart() {
    let mut uac = agent(
        config(AgentRole::Uac, UAC_SIP, UAC_RTP, Some(UAS_SIP), 5),
        T0,
    );
    let mut uas = agent(config(AgentRole::Uas, UAS_SIP, UAS_RTP, None, 0), T0);
    // The first call's BYE is never answered: it fails (bye-timeout) after
    // its media.
    let mut fate = |m: &SipMessage<'_>, from_uac: bool| {
        let first = m.call_id().is_ok_and(|c| c.starts_with(b"0-"));
        let bye = m.cseq().is_ok_and(|c| c.method.as_bytes() == b"BYE");
        if first && bye && !from_uac {
            None
        } else {
            Some(0)
        }
    };
    run(&mut uac, Some(&mut uas), 45, &mut fate, u64::MAX);
    let r = &uac.report;
    assert_eq!((r.completed, r.failed), (4, 1), "{:?}", r.failures);
    assert_eq!(r.failures.get("bye-timeout"), Some(&1));
    assert!(r.rtp_completed_only);
    // About 2 s of 50 packets a second per call, from the UAS.
    assert!(
        (4 * 90..=4 * 110).contains(&r.rtp_received),
        "{}",
        r.rtp_received
    );
    assert!(
        (90..=110).contains(&r.rtp_failed_calls),
        "{}",
        r.rtp_failed_calls
    );
    assert_eq!(r.rtp_lost, 0);
    let j = r.json(45.0);
    assert_eq!(j["rtp"]["scope"], "completed calls");
    assert_eq!(j["rtp"]["expected"], j["rtp"]["received"]);
    assert_eq!(j["rtp"]["received_in_failed_calls"], r.rtp_failed_calls);
}

#[test]
fn packets_of_calls_still_up_when_the_run_stops_are_counted_apart() {
    let mut uac = agent(
        config(AgentRole::Uac, UAC_SIP, UAC_RTP, Some(UAS_SIP), 1),
        T0,
    );
    let mut uas = agent(config(AgentRole::Uas, UAS_SIP, UAS_RTP, None, 0), T0);
    // Stopped (the run helper ends with `finish`) after 1 s of a call held
    // for 2 s.
    run(&mut uac, Some(&mut uas), 1, &mut |_, _| Some(0), u64::MAX);
    let r = &uac.report;
    assert_eq!((r.completed, r.failed), (0, 0));
    assert_eq!(
        r.rtp_received, 0,
        "no completed call: nothing in the figures"
    );
    assert!(r.rtp_calls_still_up >= 40, "{}", r.rtp_calls_still_up);
    assert_eq!(
        r.json(1.0)["rtp"]["received_in_calls_still_up"],
        r.rtp_calls_still_up
    );
}
