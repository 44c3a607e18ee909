//! The `query` and `delete` reports, shaped like rtpengine's so existing
//! tooling reads them: per tag, per media, per stream packets/bytes/errors.

use std::net::SocketAddr;

use super::Key;
use super::Out;
use crate::media::plan::{LegPorts, SessionSnapshot};
use crate::media::relay::{Leg, PeerSpec};

pub(super) struct MediaReport<'a> {
    pub(super) kind: &'a [u8],
    pub(super) proto: &'a [u8],
    pub(super) ports: [LegPorts; 2],
    pub(super) peers: [Option<PeerSpec>; 2],
}

pub(super) struct CallReport<'a> {
    pub(super) tags: [Option<&'a [u8]>; 2],
    pub(super) labels: [Option<&'a [u8]>; 2],
    pub(super) created: u64,
    pub(super) last_signal: u64,
    pub(super) medias: Vec<MediaReport<'a>>,
}

fn endpoint(a: Option<SocketAddr>) -> Out {
    match a {
        Some(a) => Out::Dict(vec![
            (
                "family".into(),
                Out::str(if a.is_ipv4() { "IPv4" } else { "IPv6" }),
            ),
            ("address".into(), Out::Str(a.ip().to_string().into_bytes())),
            ("port".into(), Out::Int(i64::from(a.port()))),
        ]),
        None => Out::Dict(vec![]),
    }
}

fn counts(packets: u64, bytes: u64, errors: u64) -> Out {
    Out::Dict(vec![
        ("packets".into(), Out::Int(packets as i64)),
        ("bytes".into(), Out::Int(bytes as i64)),
        ("errors".into(), Out::Int(errors as i64)),
    ])
}

/// Unix time of a worker-clock instant, given the worker's clock now.
fn unix_at(now_unix: u64, worker_now_ms: u64, at_ms: u64) -> u64 {
    now_unix.saturating_sub(worker_now_ms.saturating_sub(at_ms) / 1000)
}

/// What a report holds: everything, or the call's totals without the
/// per-tag detail (the `totals-only` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Detail {
    Full,
    TotalsOnly,
}

pub(super) fn report(
    call: &CallReport<'_>,
    snap: Option<&SessionSnapshot>,
    now: u64,
    detail: Detail,
) -> Vec<(Key, Out)> {
    let mut totals = [(0u64, 0u64, 0u64); 2];
    let mut tags = Vec::new();
    for side in 0..2 {
        let Some(tag) = call.tags[side] else { continue };
        let mut medias = Vec::new();
        for (i, m) in call.medias.iter().enumerate() {
            let leg: Option<&Leg> = snap
                .and_then(|s| s.session.medias.get(i))
                .map(|p| &p.legs[side]);
            if detail == Detail::TotalsOnly {
                if let Some(leg) = leg {
                    add(&mut totals, leg);
                }
                continue;
            }
            let leg = leg.cloned().unwrap_or_default();
            let last = snap
                .filter(|_| leg.rtp_in.last_seen_ms > 0)
                .map_or(call.created, |s| {
                    unix_at(now, s.now_ms, leg.rtp_in.last_seen_ms)
                });
            let rtp_stream = Out::Dict(vec![
                ("local port".into(), Out::Int(i64::from(m.ports[side].rtp))),
                (
                    "endpoint".into(),
                    endpoint(leg.latched_rtp.or(m.peers[side].and_then(|p| p.rtp))),
                ),
                (
                    "advertised endpoint".into(),
                    endpoint(m.peers[side].and_then(|p| p.rtp)),
                ),
                ("last packet".into(), Out::Int(last as i64)),
                ("flags".into(), Out::List(vec![Out::str("RTP")])),
                (
                    "stats".into(),
                    counts(leg.rtp_in.packets, leg.rtp_in.bytes, leg.rtp_in.errors),
                ),
                ("lost".into(), Out::Int(leg.rtp_in.lost().max(0))),
                (
                    "jitter-us".into(),
                    Out::Int(
                        (leg.rtp_in
                            .jitter_ms(m.peers[side].map_or(8000, |p| p.clock_rate))
                            * 1000.0) as i64,
                    ),
                ),
                (
                    "ssrc changes".into(),
                    Out::Int(i64::from(leg.rtp_in.ssrc_changes)),
                ),
            ]);
            let mut streams = vec![rtp_stream];
            if let Some(rtcp_port) = m.ports[side].rtcp {
                streams.push(Out::Dict(vec![
                    ("local port".into(), Out::Int(i64::from(rtcp_port))),
                    (
                        "endpoint".into(),
                        endpoint(leg.latched_rtcp.or(m.peers[side].and_then(|p| p.rtcp))),
                    ),
                    ("flags".into(), Out::List(vec![Out::str("RTCP")])),
                    (
                        "stats".into(),
                        counts(leg.rtcp_in.packets, leg.rtcp_in.bytes, leg.rtcp_in.errors),
                    ),
                ]));
            }
            add(&mut totals, &leg);
            medias.push(Out::Dict(vec![
                ("index".into(), Out::Int(i as i64 + 1)),
                ("type".into(), Out::Str(m.kind.to_vec())),
                ("protocol".into(), Out::Str(m.proto.to_vec())),
                ("streams".into(), Out::List(streams)),
            ]));
        }
        if detail == Detail::TotalsOnly {
            continue;
        }
        let mut entry = vec![
            ("tag".into(), Out::Str(tag.to_vec())),
            ("created".into(), Out::Int(call.created as i64)),
            ("medias".into(), Out::List(medias)),
        ];
        if let Some(other) = call.tags[1 - side] {
            entry.push(("in dialogue with".into(), Out::Str(other.to_vec())));
        }
        if let Some(label) = call.labels[side] {
            entry.push(("label".into(), Out::Str(label.to_vec())));
        }
        tags.push((
            String::from_utf8_lossy(tag).into_owned().into(),
            Out::Dict(entry),
        ));
    }
    let timed_out = snap.is_some_and(|s| s.session.timed_out);
    let mut out = vec![
        ("created".into(), Out::Int(call.created as i64)),
        ("last signal".into(), Out::Int(call.last_signal as i64)),
        (
            "totals".into(),
            Out::Dict(vec![
                ("RTP".into(), counts(totals[0].0, totals[0].1, totals[0].2)),
                ("RTCP".into(), counts(totals[1].0, totals[1].1, totals[1].2)),
            ]),
        ),
        ("media timeout".into(), Out::Int(i64::from(timed_out))),
    ];
    if detail == Detail::Full {
        out.push(("tags".into(), Out::Dict(tags)));
    }
    out
}

/// Adds a leg's received RTP and RTCP counts to the call's totals.
fn add(totals: &mut [(u64, u64, u64); 2], leg: &Leg) {
    totals[0].0 += leg.rtp_in.packets;
    totals[0].1 += leg.rtp_in.bytes;
    totals[0].2 += leg.rtp_in.errors;
    totals[1].0 += leg.rtcp_in.packets;
    totals[1].1 += leg.rtcp_in.bytes;
    totals[1].2 += leg.rtcp_in.errors;
}
