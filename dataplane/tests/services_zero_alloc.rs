//! The media server in a worker allocates nothing in steady state: a
//! counting global allocator sees zero allocations while, for two seconds
//! of simulated time after a second of warm-up, three callers talk in a
//! conference room (G.722 and PCMU members: decode, resample, mix, shared
//! and own encodes), one caller is echoed, and a relayed call hears a
//! prompt on one side while both of its sides are copied to a recording.
//! The relay is driven as a worker drives it (packets in, then everything
//! due out), on one thread.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_queue::ArrayQueue;
use rvoip_codecs::tone::Tone;
use rvoip_codecs::{Codec, Encoder, Format};
use rvoip_dataplane::media::prompt::Prompt;
use rvoip_dataplane::media::relay::{Component, PeerSpec, Relay, RelayConfig, Side};
use rvoip_dataplane::media::rtp::{Ssrc, write_rtp_header};
use rvoip_dataplane::media::services::{LocalMode, RecPacket, ServiceOp};
use rvoip_dataplane::media::transcode::LegCodec;

mod counting;
use counting::ALLOCS;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// One RTP sender: its leg's endpoint and address, codec and stream.
struct Sender {
    ep: u32,
    from: SocketAddr,
    codec: Codec,
    pt: u8,
    enc: Encoder,
    tone: Tone,
    seq: u16,
    ts: u32,
    pcm: Box<[i16; 960]>,
    pkt: Box<[u8; 1500]>,
}

impl Sender {
    fn new(ep: u32, port: u16, codec: Codec, pt: u8, freq: f64) -> Sender {
        let rate = codec.pcm_rate(Format::new(codec, pt).clock, 8000);
        Sender {
            ep,
            from: SocketAddr::from(([10, 0, 0, 1], port)),
            codec,
            pt,
            enc: Encoder::new(codec, rate, &Default::default()).unwrap(),
            tone: Tone::new(freq, 8000.0, rate),
            seq: 0,
            ts: 0,
            pcm: Box::new([0; 960]),
            pkt: Box::new([0; 1500]),
        }
    }

    /// Sends the next 20 ms into the relay.
    fn send(&mut self, r: &mut Relay, now_ns: u64) {
        let n = (self.enc.pcm_rate() / 50) as usize;
        self.tone.fill(&mut self.pcm[..n]);
        let len = self
            .enc
            .encode(&self.pcm[..n], &mut self.pkt[12..])
            .unwrap();
        let mut h = [0u8; 12];
        write_rtp_header(&mut h, false, self.pt, self.seq, self.ts, Ssrc(self.ep));
        self.pkt[..12].copy_from_slice(&h);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self
            .ts
            .wrapping_add(Format::new(self.codec, self.pt).rtp_units(n, self.enc.pcm_rate()));
        let mut buf = [0u8; 2048];
        buf[..12 + len].copy_from_slice(&self.pkt[..12 + len]);
        let mut l = 12 + len;
        let _ = r.on_datagram(
            now_ns / 1_000_000,
            now_ns,
            self.ep,
            self.from,
            &mut buf,
            &mut l,
        );
    }
}

/// A session with both legs bound; the peers' addresses set.
fn session(r: &mut Relay, eps: (u32, u32), ports: (u16, u16)) -> u32 {
    let id = r.create_session(0, 1);
    for (side, ep, port) in [(Side::A, eps.0, ports.0), (Side::B, eps.1, ports.1)] {
        r.bind_endpoint(ep, id, 0, side, Component::Rtp);
        r.set_peer(
            id,
            0,
            side,
            PeerSpec {
                rtp: Some(SocketAddr::from(([10, 0, 0, 1], port))),
                rtcp: None,
                rtcp_mux: true,
                clock_rate: 8000,
                feedback: false,
            },
        );
    }
    id
}

#[test]
fn the_media_server_allocates_nothing_in_steady_state() {
    let mut r = Relay::new(RelayConfig::default(), 0);
    let sink = Arc::new(ArrayQueue::<RecPacket>::new(4096));
    r.set_record_sink(Arc::clone(&sink));
    let leg = |c: Codec, pt: u8| LegCodec::new(Format::new(c, pt), Ssrc(pt.into()));
    let now = 1_000_000_000u64;
    // A room of three: two G.722 (16 kHz) members and one PCMU (8 kHz).
    let mut senders = Vec::new();
    let members = [
        (Codec::G722, 9, 400.0),
        (Codec::G722, 9, 700.0),
        (Codec::Pcmu, 0, 1100.0),
    ];
    for (i, (c, pt, f)) in members.into_iter().enumerate() {
        let ep = 1 + 2 * i as u32;
        let id = session(&mut r, (ep, ep + 1), (4000 + i as u16, 5000 + i as u16));
        let mode = LocalMode::Room("room".into());
        r.service(
            id,
            0,
            ServiceOp::Terminate {
                audio: leg(c, pt),
                mode,
            },
            now,
        )
        .unwrap();
        senders.push(Sender::new(ep, 4000 + i as u16, c, pt, f));
    }
    // An echo call.
    let id = session(&mut r, (7, 8), (4003, 5003));
    r.service(
        id,
        0,
        ServiceOp::Terminate {
            audio: leg(Codec::Pcmu, 0),
            mode: LocalMode::Echo,
        },
        now,
    )
    .unwrap();
    senders.push(Sender::new(7, 4003, Codec::Pcmu, 0, 900.0));
    // A relayed call: A hears a prompt on a loop, both sides recorded.
    let id = session(&mut r, (9, 10), (4004, 5004));
    let pcmu = leg(Codec::Pcmu, 0);
    r.service(id, 0, ServiceOp::Audio([Some(pcmu), Some(pcmu)]), now)
        .unwrap();
    let mut tone = vec![0i16; 8000];
    Tone::new(440.0, 9000.0, 8000).fill(&mut tone);
    let prompt = Arc::new(Prompt::encode(&tone, 8000, &pcmu).unwrap());
    let play = ServiceOp::Play {
        to: Side::A,
        prompt,
        repeat: 0,
        stop_on_dtmf: false,
    };
    r.service(id, 0, play, now).unwrap();
    r.service(id, 0, ServiceOp::Record(Some(1)), now).unwrap();
    senders.push(Sender::new(9, 4004, Codec::Pcmu, 0, 500.0));
    senders.push(Sender::new(10, 5004, Codec::Pcmu, 0, 600.0));

    let mut out = Box::new([0u8; 2048]);
    let mut sent = 0u64;
    let mut recorded = 0u64;
    let mut run = |r: &mut Relay,
                   senders: &mut [Sender],
                   from_ms: u64,
                   ms: u64,
                   (sent, recorded): (&mut u64, &mut u64)| {
        for t in (from_ms..from_ms + ms).step_by(2) {
            let now_ns = now + t * 1_000_000;
            if t % 20 == 0 {
                for s in senders.iter_mut() {
                    s.send(r, now_ns);
                }
            }
            while r.poll_transmit(now_ns, &mut out[..]).is_some() {
                *sent += 1;
            }
            r.take_events(|_, _| {});
            while sink.pop().is_some() {
                *recorded += 1;
            }
        }
    };
    // Warm-up: jitter buffers fill, encoders and buffers reach their size.
    run(&mut r, &mut senders, 0, 1000, (&mut sent, &mut recorded));
    let before = ALLOCS.load(Ordering::Relaxed);
    let (sent0, recorded0) = (sent, recorded);
    run(&mut r, &mut senders, 1000, 2000, (&mut sent, &mut recorded));
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    // Three room members and the echo get 50 frames a second each, the
    // prompt's listener 50; the recording takes both sides' 100.
    let frames = sent - sent0;
    assert!(
        frames >= 9 * 50 * 2 / 2,
        "the media server kept sending: {frames} frames in 2 s"
    );
    assert!(
        recorded - recorded0 >= 190,
        "both sides recorded: {}",
        recorded - recorded0
    );
    assert_eq!(allocs, 0, "{allocs} allocations in 2 s of steady state");
    let c = r.counters().services;
    assert!(
        c.room_frames >= 140 && c.prompt_frames >= 140 && c.terminal_frames >= 140,
        "{c:?}"
    );
}
