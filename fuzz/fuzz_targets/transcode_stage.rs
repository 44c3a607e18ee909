//! The media worker's processing stage on arbitrary packets: a transcoded
//! call (the codec pair picked by the first octet, telephone-event on one
//! side) fed datagrams from either side at arbitrary times, with the
//! relay's schedule run as a worker runs it. No packet may panic the
//! stage, and draining what is due always ends (nothing stalls a worker).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_codecs::{Codec, Format};
use rvoip_dataplane::media::relay::{Component, PeerSpec, Relay, RelayConfig, Side};
use rvoip_dataplane::media::rtp::Ssrc;
use rvoip_dataplane::media::transcode::LegCodec;

const PAIRS: [(Codec, u8, Codec, u8); 4] = [
    (Codec::Pcmu, 0, Codec::Opus, 96),
    (Codec::Pcma, 8, Codec::G722, 9),
    (Codec::G722, 9, Codec::Opus, 111),
    (Codec::L16, 98, Codec::Pcmu, 0),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let (ca, pa, cb, pb) = PAIRS[usize::from(pick) % PAIRS.len()];
    let mut a = LegCodec::new(Format::new(ca, pa), Ssrc(1));
    a.te_pt = Some(101);
    a.cn_pt = Some(13);
    let mut b = LegCodec::new(Format::new(cb, pb), Ssrc(2));
    b.ptime_ms = [10, 20, 30, 40][usize::from(pick >> 2) % 4];
    let mut r = Relay::new(RelayConfig::default(), 0);
    let id = r.create_session(0, 1);
    r.bind_endpoint(1, id, 0, Side::A, Component::Rtp);
    r.bind_endpoint(2, id, 0, Side::B, Component::Rtp);
    let (src_a, src_b) = (
        "10.0.0.1:4000".parse().unwrap(),
        "10.0.0.2:5000".parse().unwrap(),
    );
    for (side, at) in [(Side::A, src_a), (Side::B, src_b)] {
        r.set_peer(
            id,
            0,
            side,
            PeerSpec {
                rtp: Some(at),
                rtcp: None,
                rtcp_mux: true,
                clock_rate: 8000, feedback: false,
            },
        );
    }
    if r.set_transcode(id, 0, Some((a, b))).is_err() {
        return;
    }
    let mut now = 1_000_000_000u64;
    let mut out = [0u8; 2048];
    let mut buf = [0u8; 2048];
    while rest.len() >= 2 {
        let (ctl, len) = (rest[0], usize::from(rest[1]));
        let body = &rest[2..];
        let n = len.min(body.len());
        let (pkt, next) = body.split_at(n);
        rest = next;
        // Time moves on 0–31 ms; the packet comes from A or B.
        now += u64::from(ctl & 0x1f) * 1_000_000;
        let (ep, src) = if ctl & 0x80 == 0 {
            (1, src_a)
        } else {
            (2, src_b)
        };
        // A valid RTP header in front when asked, so payloads reach codecs.
        let mut p = Vec::with_capacity(12 + pkt.len());
        if ctl & 0x40 != 0 {
            let pt = [pa, pb, 101, 13]
                [usize::from(ctl >> 5 & 1) + usize::from(pkt.first().copied().unwrap_or(0) & 2)];
            p.extend_from_slice(&[0x80, pt, 0, ctl, 0, 0, 0, ctl, 0, 0, 0, 9]);
        }
        p.extend_from_slice(pkt);
        let l = p.len().min(buf.len() - 64);
        buf[..l].copy_from_slice(&p[..l]);
        let mut len = l;
        let _ = r.on_datagram(now / 1_000_000, now, ep, src, &mut buf, &mut len);
        let mut sent = 0;
        while let Some(t) = r.poll_transmit(now, &mut out) {
            assert!(t.len <= out.len());
            sent += 1;
            assert!(sent < 1000, "draining what is due never ends");
        }
    }
});
