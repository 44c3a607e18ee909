//! Transcoding over ng, end to end on real sockets: an offer with only PCMU
//! and `codec: {transcode: [opus]}` gives the answerer opus beside PCMU;
//! the answerer picks opus; the offerer's answer names PCMU; each phone
//! hears the other's tone (judged by frequency and SNR after decoding) in
//! its own codec, in 20 ms packets; DTMF crosses both ways between the side
//! with telephone-event and the side without.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rvoip_codecs::dtmf::{Detected, DtmfDetector, DtmfTone, TelephoneEvent};
use rvoip_codecs::opus::OpusSettings;
use rvoip_codecs::tone::{Tone, analyse, coverage};
use rvoip_codecs::{Codec, Decoder, Encoder, Format};
use rvoip_dataplane::engine::media::DriverKind;
use rvoip_dataplane::media::rtp::{Ssrc, parse_rtp, write_rtp_header};
use rvoip_dataplane::ng::bencode::Value;

mod common;

use common::*;

/// A phone on one side: what it sends (a tone, or a digit in-band or as
/// events), and what it hears, decoded.
struct Phone {
    sock: UdpSocket,
    format: Format,
    te_pt: Option<u8>,
    enc: Encoder,
    dec: Decoder,
    tone: Tone,
    seq: u16,
    ts: u32,
    heard: Vec<i16>,
    events: Vec<TelephoneEvent>,
    ptimes: Vec<u32>,
    last_ts: Option<u32>,
}

impl Phone {
    fn new(codec: Codec, pt: u8, te_pt: Option<u8>, freq: f64) -> Phone {
        let format = Format::new(codec, pt);
        let rate = codec.pcm_rate(8000, 8000);
        let sock = peer();
        sock.set_nonblocking(true).unwrap();
        Phone {
            sock,
            format,
            te_pt,
            enc: Encoder::new(codec, rate, &OpusSettings::default()).unwrap(),
            dec: Decoder::new(codec, rate).unwrap(),
            tone: Tone::new(freq, 9000.0, rate),
            seq: 0,
            ts: 0,
            heard: Vec::new(),
            events: Vec::new(),
            ptimes: Vec::new(),
            last_ts: None,
        }
    }

    fn rtp(&mut self, pt: u8, marker: bool, ts: u32, payload: &[u8], to: SocketAddr) {
        let mut h = [0u8; 12];
        write_rtp_header(&mut h, marker, pt, self.seq, ts, Ssrc(0x5eed));
        self.seq = self.seq.wrapping_add(1);
        self.sock.send_to(&[&h[..], payload].concat(), to).unwrap();
    }

    fn send_audio(&mut self, to: SocketAddr, digit: Option<&mut DtmfTone>) {
        let n = (self.enc.pcm_rate() / 50) as usize;
        let mut pcm = vec![0i16; n];
        match digit {
            Some(d) => d.fill(&mut pcm),
            None => self.tone.fill(&mut pcm),
        }
        let mut payload = vec![0u8; 1500];
        let len = self.enc.encode(&pcm, &mut payload).unwrap();
        let ts = self.ts;
        self.rtp(self.format.pt, false, ts, &payload[..len], to);
        self.ts = self
            .ts
            .wrapping_add(self.format.rtp_units(n, self.enc.pcm_rate()));
    }

    fn send_event(&mut self, to: SocketAddr, event: TelephoneEvent, start_ts: u32, first: bool) {
        let pt = self.te_pt.unwrap();
        self.rtp(pt, first, start_ts, &event.write(), to);
    }

    fn receive(&mut self) {
        let mut buf = [0u8; 2048];
        let mut pcm = vec![0i16; 5760];
        while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            let h = parse_rtp(&buf[..n]).unwrap();
            let payload = &buf[h.payload_offset..h.payload_offset + h.payload_len];
            if Some(h.payload_type) == self.te_pt {
                self.events.push(TelephoneEvent::parse(payload).unwrap());
                continue;
            }
            assert_eq!(h.payload_type, self.format.pt, "its own codec");
            if let Some(last) = self.last_ts {
                self.ptimes.push(h.timestamp.wrapping_sub(last));
            }
            self.last_ts = Some(h.timestamp);
            let m = self.dec.decode(payload, &mut pcm).unwrap();
            self.heard.extend_from_slice(&pcm[..m]);
        }
    }
}

#[test]
fn pcmu_and_opus_talk_through_ng_with_dtmf_both_ways() {
    let mut relay = Relay::start(DriverKind::IoUring, 52000);
    // A: PCMU with telephone-event; B: opus only.
    let mut a = Phone::new(Codec::Pcmu, 0, Some(101), 1000.0);
    let mut b = Phone::new(Codec::Opus, 96, None, 600.0);
    let offer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"tc-1")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("sdp", Value::Bytes(&sdp_for(&a.sock, true))),
        (
            "codec",
            Value::Dict(vec![(
                b"transcode",
                Value::List(vec![Value::Bytes(b"opus")]),
            )]),
        ),
    ]);
    assert_eq!(
        get(&offer, "result"),
        Value::Bytes(b"ok"),
        "{}",
        String::from_utf8_lossy(&offer)
    );
    let (to_b, sdp) = target(&offer);
    let text = String::from_utf8(sdp.to_bytes()).unwrap();
    assert!(text.contains("m=audio"), "{text}");
    let m = &sdp.media[0];
    let pts: Vec<u8> = m.payload_types().collect();
    assert_eq!(&pts[..2], &[0, 101], "the offered codecs kept: {text}");
    let opus_pt = pts[2];
    assert!(
        m.rtpmap(opus_pt)
            .is_some_and(|r| r.is("opus") && r.clock_rate == 48_000 && r.channels == Some(2)),
        "{text}"
    );
    // B answers opus at the payload type it was offered.
    b.format.pt = opus_pt;
    let bs = b.sock.local_addr().unwrap();
    let answer_sdp = format!(
        "v=0\r\no=- 2 2 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {opus_pt}\r\na=rtpmap:{opus_pt} opus/48000/2\r\na=rtcp-mux\r\na=sendrecv\r\n",
        ip = bs.ip(),
        port = bs.port()
    );
    let answer = relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(b"tc-1")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("to-tag", Value::Bytes(b"tag-b")),
        ("sdp", Value::Bytes(answer_sdp.as_bytes())),
    ]);
    assert_eq!(
        get(&answer, "result"),
        Value::Bytes(b"ok"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (to_a, sdp) = target(&answer);
    let pts: Vec<u8> = sdp.media[0].payload_types().collect();
    assert_eq!(
        pts,
        vec![0, 101],
        "the offerer is answered PCMU and its events"
    );
    // Three seconds of both talking; A sends digit 7 as events from 1.0 s
    // to 1.2 s; B plays digit 3 in-band from 2.0 s to 2.2 s.
    let start = Instant::now();
    let mut b_digit = DtmfTone::new(3, 8, 8000).unwrap();
    for frame in 0..150u32 {
        while start.elapsed() < Duration::from_millis(20 * u64::from(frame)) {
            a.receive();
            b.receive();
            std::thread::sleep(Duration::from_millis(1));
        }
        if (50..60).contains(&frame) {
            let event = TelephoneEvent {
                event: 7,
                end: frame == 59,
                volume: 10,
                duration: ((frame - 49) * 160) as u16,
            };
            let start_ts = 50 * 160;
            a.send_event(to_a, event, start_ts, frame == 50);
            a.ts = a.ts.wrapping_add(160);
        } else {
            a.send_audio(to_a, None);
        }
        let digit = (100..110).contains(&frame).then_some(&mut b_digit);
        b.send_audio(to_b, digit);
    }
    std::thread::sleep(Duration::from_millis(200));
    a.receive();
    b.receive();
    // B hears A's 1 kHz in opus, 20 ms frames (960 at 48 kHz): judged
    // per 100 ms block, so that a stall of this shared host's scheduler
    // costs a block, not the verdict.
    let (f, snr) = analyse(&b.heard[800..8000], 8000);
    let clear = coverage(&b.heard[800..8000], 8000, 1000.0, 15.0);
    assert!(
        clear >= 0.8,
        "B hears 1 kHz clearly in {clear} of it ({f} Hz, {snr} dB)"
    );
    assert!(
        b.ptimes.iter().filter(|p| **p == 960).count() > 100,
        "{:?}",
        b.ptimes
    );
    // A hears B's 600 Hz in PCMU, 160 per frame.
    let (f, snr) = analyse(&a.heard[800..8000], 8000);
    let clear = coverage(&a.heard[800..8000], 8000, 600.0, 15.0);
    assert!(
        clear >= 0.8,
        "A hears 600 Hz clearly in {clear} of it ({f} Hz, {snr} dB)"
    );
    assert!(a.ptimes.iter().filter(|p| **p == 160).count() > 100);
    // A's events reached B as the digit's tones.
    let mut det = DtmfDetector::new(8000);
    let mut heard = Vec::new();
    det.feed(&b.heard, |d| heard.push(d));
    assert!(
        heard
            .iter()
            .any(|d| matches!(d, Detected::Began { event: 7, .. })),
        "B hears digit 7: {heard:?}"
    );
    // B's in-band digit reached A as RFC 4733 events, ended three times.
    assert!(a.events.iter().any(|e| e.event == 3), "{:?}", a.events);
    assert_eq!(a.events.iter().filter(|e| e.event == 3 && e.end).count(), 3);
    let q = relay.command(&[
        ("command", Value::Bytes(b"delete")),
        ("call-id", Value::Bytes(b"tc-1")),
    ]);
    assert_eq!(get(&q, "result"), Value::Bytes(b"ok"));
}

#[test]
fn codec_flags_read_as_kamailio_sends_them() {
    let mut relay = Relay::start(DriverKind::Fallback, 52200);
    let a = peer();
    let offer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"tc-2")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("sdp", Value::Bytes(&sdp_for(&a, true))),
        (
            "flags",
            Value::List(vec![
                Value::Bytes(b"codec-mask-PCMU"),
                Value::Bytes(b"codec-transcode-G722"),
                Value::Bytes(b"codec-transcode-PCMA"),
            ]),
        ),
    ]);
    assert_eq!(get(&offer, "result"), Value::Bytes(b"ok"));
    let (_, sdp) = target(&offer);
    let pts: Vec<u8> = sdp.media[0].payload_types().collect();
    assert_eq!(pts, vec![101, 9, 8], "PCMU masked, G722 and PCMA added");
    let bad = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"tc-3")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("sdp", Value::Bytes(&sdp_for(&a, true))),
        (
            "flags",
            Value::List(vec![Value::Bytes(b"codec-strip-PCMU/x")]),
        ),
    ]);
    assert_eq!(get(&bad, "result"), Value::Bytes(b"error"));
}

#[test]
fn a_reoffer_from_the_opus_side_keeps_the_pcmu_side_transcoded() {
    let mut relay = Relay::start(DriverKind::IoUring, 52400);
    let mut a = Phone::new(Codec::Pcmu, 0, Some(101), 1000.0);
    let mut b = Phone::new(Codec::Opus, 96, None, 600.0);
    let offer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"tc-re")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("sdp", Value::Bytes(&sdp_for(&a.sock, true))),
        (
            "flags",
            Value::List(vec![Value::Bytes(b"codec-transcode-opus")]),
        ),
    ]);
    let (_, sdp) = target(&offer);
    let opus_pt = sdp.media[0].payload_types().nth(2).unwrap();
    b.format.pt = opus_pt;
    let bs = b.sock.local_addr().unwrap();
    let b_sdp = |version: u32| {
        format!(
            "v=0\r\no=- 2 {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {opus_pt}\r\na=rtpmap:{opus_pt} opus/48000/2\r\na=rtcp-mux\r\na=sendrecv\r\n",
            ip = bs.ip(),
            port = bs.port()
        )
    };
    let answer = relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(b"tc-re")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("to-tag", Value::Bytes(b"tag-b")),
        ("sdp", Value::Bytes(b_sdp(2).as_bytes())),
    ]);
    assert_eq!(get(&answer, "result"), Value::Bytes(b"ok"));
    // B re-offers, opus only, with no codec flags (a trunk's re-INVITE).
    let reoffer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"tc-re")),
        ("from-tag", Value::Bytes(b"tag-b")),
        ("to-tag", Value::Bytes(b"tag-a")),
        ("sdp", Value::Bytes(b_sdp(3).as_bytes())),
    ]);
    assert_eq!(
        get(&reoffer, "result"),
        Value::Bytes(b"ok"),
        "{}",
        String::from_utf8_lossy(&reoffer)
    );
    let (to_a, sdp) = target(&reoffer);
    let pts: Vec<u8> = sdp.media[0].payload_types().collect();
    assert!(pts.contains(&0), "A is offered its PCMU again: {pts:?}");
    // A answers PCMU; B is answered opus.
    let reanswer = relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(b"tc-re")),
        ("from-tag", Value::Bytes(b"tag-b")),
        ("to-tag", Value::Bytes(b"tag-a")),
        ("sdp", Value::Bytes(&sdp_for(&a.sock, true))),
    ]);
    assert_eq!(get(&reanswer, "result"), Value::Bytes(b"ok"));
    let (to_b, sdp) = target(&reanswer);
    let pts: Vec<u8> = sdp.media[0].payload_types().collect();
    assert_eq!(pts, vec![opus_pt], "B is answered in opus");
    // Both still hear each other through the stage.
    let start = Instant::now();
    for frame in 0..75u32 {
        while start.elapsed() < Duration::from_millis(20 * u64::from(frame)) {
            a.receive();
            b.receive();
            std::thread::sleep(Duration::from_millis(1));
        }
        a.send_audio(to_a, None);
        b.send_audio(to_b, None);
    }
    std::thread::sleep(Duration::from_millis(200));
    a.receive();
    b.receive();
    assert!(
        coverage(&b.heard[800..], 8000, 1000.0, 15.0) >= 0.8,
        "B hears A"
    );
    assert!(
        coverage(&a.heard[800..], 8000, 600.0, 15.0) >= 0.8,
        "A hears B"
    );
}
