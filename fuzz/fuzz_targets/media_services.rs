//! The media server in a worker on arbitrary packets and orders: two calls
//! the media server answers (in one conference room, or one echoing) and
//! a relayed call with a prompt, blocking and a recording tap, fed
//! datagrams from any side at arbitrary times, with services changed on
//! the way and the relay's schedule run as a worker runs it. No packet or
//! order may panic, and draining what is due always ends.
#![no_main]

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use libfuzzer_sys::fuzz_target;
use rvoip_codecs::{Codec, Format};
use rvoip_dataplane::media::prompt::Prompt;
use rvoip_dataplane::media::relay::{Component, PeerSpec, Relay, RelayConfig, Side};
use rvoip_dataplane::media::rtp::Ssrc;
use rvoip_dataplane::media::services::{Blocking, LocalMode, ServiceOp};
use rvoip_dataplane::media::transcode::LegCodec;

const CODECS: [(Codec, u8); 4] = [(Codec::Pcmu, 0), (Codec::G722, 9), (Codec::Opus, 111), (Codec::Pcma, 8)];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let mut r = Relay::new(RelayConfig::default(), 0);
    r.set_record_sink(Arc::new(ArrayQueue::new(64)));
    let src = |i: u8| format!("10.0.0.{}:4000", i + 1).parse().unwrap();
    let mut ids = Vec::new();
    for i in 0..3u8 {
        let id = r.create_session(0, 1);
        for (side, ep) in [(Side::A, u32::from(i) * 2 + 1), (Side::B, u32::from(i) * 2 + 2)] {
            r.bind_endpoint(ep, id, 0, side, Component::Rtp);
            r.set_peer(id, 0, side, PeerSpec { rtp: Some(src(i * 2 + side.index() as u8)), rtcp: None, rtcp_mux: true, clock_rate: 8000, feedback: side == Side::A });
        }
        ids.push(id);
    }
    let (codec, pt) = CODECS[usize::from(pick) % CODECS.len()];
    let mut leg = LegCodec::new(Format::new(codec, pt), Ssrc(5));
    leg.te_pt = Some(101);
    let now = 1_000_000_000u64;
    let room = if pick & 4 == 0 { LocalMode::Room("r".into()) } else { LocalMode::Echo };
    for (i, mode) in [room.clone(), LocalMode::Room("r".into())].into_iter().enumerate() {
        let _ = r.service(ids[i], 0, ServiceOp::Terminate { audio: leg, mode }, now);
    }
    let prompt = Prompt::encode(&[1000i16; 1600], 8000, &leg).ok().map(Arc::new);
    let _ = r.service(ids[2], 0, ServiceOp::Audio([Some(leg), Some(leg)]), now);
    let _ = r.service(ids[2], 0, ServiceOp::Record(Some(1)), now);
    let mut now = now;
    let mut out = [0u8; 2048];
    let mut buf = [0u8; 2048];
    while rest.len() >= 3 {
        let (ctl, op, len) = (rest[0], rest[1], usize::from(rest[2]));
        let body = &rest[3..];
        let n = len.min(body.len());
        let (pkt, next) = body.split_at(n);
        rest = next;
        now += u64::from(ctl & 0x1f) * 1_000_000;
        // Now and then a service changes.
        let call = ids[usize::from(op >> 6) % 3];
        let side = if op & 1 == 0 { Side::A } else { Side::B };
        let _ = match op & 0x3e {
            2 => match &prompt {
                Some(p) => r.service(call, 0, ServiceOp::Play { to: side, prompt: Arc::clone(p), repeat: u32::from(op >> 6), stop_on_dtmf: op & 0x40 != 0 }, now),
                None => Ok(()),
            },
            4 => r.service(call, 0, ServiceOp::StopPlay { to: side }, now),
            6 => r.service(call, 0, ServiceOp::Event { to: side, event: op & 15, duration_ms: u32::from(op), volume: 10 }, now),
            8 => r.service(call, 0, ServiceOp::Block { from: side, blocking: Blocking { dtmf: op & 0x40 != 0, media: op & 0x80 != 0, silence: op & 0x10 != 0 }, silence: None }, now),
            10 => r.service(call, 0, ServiceOp::Mode(LocalMode::Room(format!("r{}", op >> 7))), now),
            12 => r.service(call, 0, ServiceOp::Mode(LocalMode::Echo), now),
            14 => r.service(call, 0, ServiceOp::Record(None), now),
            _ => Ok(()),
        };
        // A packet from one of the six legs, with a valid RTP header in
        // front when asked so payloads reach decoders.
        let leg_no = (ctl >> 5) % 6;
        let mut p = Vec::with_capacity(12 + pkt.len());
        if op & 0x80 != 0 {
            let pt = [pt, 101, 13, pt][usize::from(op >> 5 & 3)];
            p.extend_from_slice(&[0x80, pt, 0, ctl, 0, 0, 1, ctl, 0, 0, 0, 9]);
        }
        p.extend_from_slice(pkt);
        let l = p.len().min(buf.len() - 64);
        buf[..l].copy_from_slice(&p[..l]);
        let mut len = l;
        let _ = r.on_datagram(now / 1_000_000, now, u32::from(leg_no) + 1, src(leg_no), &mut buf, &mut len);
        let mut sent = 0;
        while let Some(t) = r.poll_transmit(now, &mut out) {
            assert!(t.len <= out.len());
            sent += 1;
            assert!(sent < 2000, "draining what is due never ends");
        }
        r.take_events(|_, _| {});
    }
    for id in ids {
        r.remove_session(id);
    }
});
