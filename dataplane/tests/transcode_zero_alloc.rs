//! A transcoded call in steady state allocates nothing, with either
//! driver: a counting global allocator sees zero allocations while two
//! seconds of PCMU from A become Opus towards B and B's Opus becomes PCMU
//! towards A (decode, jitter buffer, encode, pacing, rvoip's own RTP
//! numbering), after a second of warm-up.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rvoip_codecs::opus::OpusSettings;
use rvoip_codecs::tone::{Tone, coverage};
use rvoip_codecs::{Codec, Decoder, Encoder, Format};
use rvoip_dataplane::engine::media::{
    DriverKind, MediaEngine, MediaEngineConfig, MediaPlan, Polling,
};
use rvoip_dataplane::media::relay::{PeerSpec, RelayConfig, Side};
use rvoip_dataplane::media::rtp::{Ssrc, parse_rtp, write_rtp_header};
use rvoip_dataplane::media::transcode::LegCodec;

mod counting;
use counting::ALLOCS;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One side of the test call: its socket, its encoder and RTP numbering,
/// its decoder, and what it heard.
struct Phone {
    sock: UdpSocket,
    format: Format,
    enc: Encoder,
    dec: Decoder,
    tone: Tone,
    seq: u16,
    ts: u32,
    pcm: Box<[i16; 960]>,
    packet: Box<[u8; 1500]>,
    heard: Vec<i16>,
    recv: Box<[u8; 2048]>,
    out: Box<[i16; 5760]>,
}

impl Phone {
    fn new(codec: Codec, pt: u8, freq: f64) -> Phone {
        let format = Format::new(codec, pt);
        let rate = codec.pcm_rate(8000, 8000);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        Phone {
            sock,
            format,
            enc: Encoder::new(codec, rate, &OpusSettings::default()).unwrap(),
            dec: Decoder::new(codec, rate).unwrap(),
            tone: Tone::new(freq, 9000.0, rate),
            seq: 0,
            ts: 0,
            pcm: Box::new([0; 960]),
            packet: Box::new([0; 1500]),
            heard: Vec::with_capacity(8000 * 10),
            recv: Box::new([0; 2048]),
            out: Box::new([0; 5760]),
        }
    }

    fn send(&mut self, to: SocketAddr) {
        let n = (self.enc.pcm_rate() / 50) as usize;
        self.tone.fill(&mut self.pcm[..n]);
        let len = self
            .enc
            .encode(&self.pcm[..n], &mut self.packet[12..])
            .unwrap();
        let mut h = [0u8; 12];
        write_rtp_header(&mut h, false, self.format.pt, self.seq, self.ts, Ssrc(9));
        self.packet[..12].copy_from_slice(&h);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self
            .ts
            .wrapping_add(self.format.rtp_units(n, self.enc.pcm_rate()));
        self.sock.send_to(&self.packet[..12 + len], to).unwrap();
    }

    fn receive(&mut self) {
        while let Ok((n, _)) = self.sock.recv_from(&mut self.recv[..]) {
            let Ok(h) = parse_rtp(&self.recv[..n]) else {
                continue;
            };
            let payload = &self.recv[h.payload_offset..h.payload_offset + h.payload_len];
            if let Ok(m) = self.dec.decode(payload, &mut self.out[..]) {
                // Capacity reserved up front: no allocation here.
                if self.heard.len() + m <= self.heard.capacity() {
                    self.heard.extend_from_slice(&self.out[..m]);
                }
            }
        }
    }
}

fn steady_state_allocations(driver: DriverKind, base: u16) -> (u64, Phone, Phone) {
    let eng = MediaEngine::start(&MediaEngineConfig {
        address: LOCALHOST,
        address_v6: None,
        extra_addresses: Vec::new(),
        port_min: base,
        port_max: base + 99,
        cores: vec![],
        driver,
        polling: Polling::Interrupt { batch_wait_us: 0 },
        relay: RelayConfig::default(),
        fill_calls: 0,
        max_endpoints_per_worker: 64,
    })
    .expect("engine");
    let mut a = Phone::new(Codec::Pcmu, 0, 1000.0);
    let mut b = Phone::new(Codec::Opus, 96, 600.0);
    let spec = |s: &UdpSocket| PeerSpec {
        rtp: s.local_addr().ok(),
        rtcp: None,
        rtcp_mux: true,
        clock_rate: 8000,
        feedback: false,
    };
    let mut plan = MediaPlan::default();
    plan.side_mut(Side::A).open_rtp = true;
    plan.side_mut(Side::A).peer = Some(spec(&a.sock));
    plan.side_mut(Side::B).open_rtp = true;
    plan.side_mut(Side::B).peer = Some(spec(&b.sock));
    plan.transcode = Some(Some((
        LegCodec::new(a.format, Ssrc(0x0a0a)),
        LegCodec::new(b.format, Ssrc(0x0b0b)),
    )));
    let applied = eng.apply(0, None, vec![plan]).expect("session");
    let [pa, pb] = applied.ports[0];
    let to_a = SocketAddr::new(LOCALHOST, pa.rtp);
    let to_b = SocketAddr::new(LOCALHOST, pb.rtp);
    let start = Instant::now();
    let mut frame = 0u32;
    let mut run = |a: &mut Phone, b: &mut Phone, frames: u32| {
        for _ in 0..frames {
            // Both phones send on a 20 ms clock, as real ones do.
            let at = Duration::from_millis(20 * u64::from(frame));
            while start.elapsed() < at {
                a.receive();
                b.receive();
                std::thread::sleep(Duration::from_millis(1));
            }
            a.send(to_a);
            b.send(to_b);
            frame += 1;
        }
    };
    run(&mut a, &mut b, 50);
    let before = ALLOCS.load(Ordering::Relaxed);
    run(&mut a, &mut b, 100);
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    drop(eng);
    (allocs, a, b)
}

/// One test for the whole file: the counter is process-wide.
#[test]
fn a_transcoded_call_allocates_nothing_in_steady_state() {
    for (driver, base) in [(DriverKind::IoUring, 51000), (DriverKind::Fallback, 51200)] {
        let (allocs, a, b) = steady_state_allocations(driver, base);
        assert_eq!(allocs, 0, "{driver:?}");
        // And the audio made it: B heard A's 1 kHz, A heard B's 600 Hz,
        // judged per 100 ms block (a stall of this shared host costs a
        // block, not the verdict).
        let cb = coverage(&b.heard[b.heard.len() / 4..], 8000, 1000.0, 15.0);
        let ca = coverage(&a.heard[a.heard.len() / 4..], 8000, 600.0, 15.0);
        assert!(cb >= 0.8, "{driver:?}: B hears 1 kHz clearly in {cb} of it");
        assert!(
            ca >= 0.8,
            "{driver:?}: A hears 600 Hz clearly in {ca} of it"
        );
        assert!(
            b.heard.len() > 8000 * 2,
            "{driver:?}: {} samples",
            b.heard.len()
        );
    }
}
