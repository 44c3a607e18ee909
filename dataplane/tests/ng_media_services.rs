//! The media server's ng commands, end to end on real sockets, as
//! rtpengine 10.5 takes them: `play media` (the party with the from-tag
//! hears the file instead of the other side, then the other side again),
//! `play DTMF` (sent from the tagged party: the other side receives RFC
//! 4733 events, or the tone pair in its audio when it has no
//! telephone-event), `block DTMF`, `block media`, `silence media`, and
//! `start recording` → a stereo WAV whose left channel is what the offerer
//! sent and right what the answerer sent, complete when `delete` answers.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rvoip_codecs::dtmf::{Detected, DtmfDetector, TelephoneEvent};
use rvoip_codecs::tone::{Tone, coverage, goertzel};
use rvoip_codecs::{Codec, Decoder, Encoder, Format};
use rvoip_dataplane::engine::media::DriverKind;
use rvoip_dataplane::media::relay::RelayConfig;
use rvoip_dataplane::media::rtp::{Ssrc, parse_rtp, write_rtp_header};
use rvoip_dataplane::ng::bencode::Value;

mod common;

use common::*;

/// A phone speaking PCMU: sends a tone, keeps what it hears (decoded) and
/// the RFC 4733 events it receives.
struct Phone {
    sock: UdpSocket,
    te: bool,
    enc: Encoder,
    dec: Decoder,
    tone: Tone,
    seq: u16,
    ts: u32,
    heard: Vec<i16>,
    /// (arrival, payload type) of each packet.
    packets: Vec<(Instant, u8)>,
    events: Vec<TelephoneEvent>,
}

impl Phone {
    fn new(freq: f64, te: bool) -> Phone {
        let sock = peer();
        sock.set_nonblocking(true).unwrap();
        Phone {
            sock,
            te,
            enc: Encoder::new(Codec::Pcmu, 8000, &Default::default()).unwrap(),
            dec: Decoder::new(Codec::Pcmu, 8000).unwrap(),
            tone: Tone::new(freq, 9000.0, 8000),
            seq: 0,
            ts: 0,
            heard: Vec::new(),
            packets: Vec::new(),
            events: Vec::new(),
        }
    }

    fn sdp(&self) -> Vec<u8> {
        let a = self.sock.local_addr().unwrap();
        let (fmts, te) = if self.te {
            (
                "0 101",
                "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
            )
        } else {
            ("0", "")
        };
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {fmts}\r\na=rtpmap:0 PCMU/8000\r\n{te}a=rtcp-mux\r\na=sendrecv\r\n",
            ip = a.ip(),
            port = a.port()
        )
        .into_bytes()
    }

    fn send(&mut self, to: SocketAddr) {
        let mut pcm = [0i16; 160];
        self.tone.fill(&mut pcm);
        let mut payload = [0u8; 160];
        self.enc.encode(&pcm, &mut payload).unwrap();
        let mut h = [0u8; 12];
        write_rtp_header(
            &mut h,
            false,
            0,
            self.seq,
            self.ts,
            Ssrc(0x1234 + u32::from(self.te)),
        );
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        self.sock
            .send_to(&[&h[..], &payload[..]].concat(), to)
            .unwrap();
    }

    fn receive(&mut self) {
        let mut buf = [0u8; 2048];
        let mut pcm = [0i16; 960];
        while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            let h = parse_rtp(&buf[..n]).unwrap();
            let payload = &buf[h.payload_offset..h.payload_offset + h.payload_len];
            self.packets.push((Instant::now(), h.payload_type));
            if h.payload_type == 101 {
                self.events.push(TelephoneEvent::parse(payload).unwrap());
                continue;
            }
            assert_eq!(h.payload_type, 0, "PCMU at the phone's own payload type");
            let m = self.dec.decode(payload, &mut pcm).unwrap();
            self.heard.extend_from_slice(&pcm[..m]);
        }
    }
}

/// A relayed call between `a` and `b`; returns the relay addresses each
/// sends to.
fn call(relay: &mut Relay, id: &str, a: &Phone, b: &Phone) -> (SocketAddr, SocketAddr) {
    // Kamailio users set `inject-DTMF` on calls they will send DTMF into,
    // as rtpengine needs; rvoip takes it (and needs it for nothing).
    let offer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(id.as_bytes())),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("sdp", Value::Bytes(&a.sdp())),
        ("flags", Value::List(vec![Value::Bytes(b"inject-DTMF")])),
    ]);
    let (to_b, _) = target(&offer);
    let answer = relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(id.as_bytes())),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("to-tag", Value::Bytes(b"tag-b")),
        ("sdp", Value::Bytes(&b.sdp())),
        ("flags", Value::List(vec![Value::Bytes(b"inject-DTMF")])),
    ]);
    let (to_a, _) = target(&answer);
    (to_a, to_b)
}

/// Both phones talk for `ms`, 20 ms apart, and listen.
fn talk(a: &mut Phone, b: &mut Phone, to_a: SocketAddr, to_b: SocketAddr, ms: u64) {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(ms) {
        a.send(to_a);
        b.send(to_b);
        n += 1;
        let next = start + Duration::from_millis(20 * n);
        while Instant::now() < next {
            a.receive();
            b.receive();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    a.receive();
    b.receive();
}

/// Writes a 44.1 kHz stereo WAV of `freq` Hz lasting `ms`.
fn wav_file(name: &str, freq: f64, ms: u32) -> PathBuf {
    let rate = 44_100;
    let n = (rate * ms / 1000) as usize;
    let mut tone = Tone::new(freq, 12_000.0, rate);
    let mut pcm = vec![0i16; n];
    tone.fill(&mut pcm);
    let mut f = rvoip_mixer::wav::header(rate, 2, (n * 4) as u32).to_vec();
    for s in pcm {
        f.extend_from_slice(&s.to_le_bytes());
        f.extend_from_slice(&s.to_le_bytes());
    }
    let dir = std::env::temp_dir().join(format!("rvoip-prompts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, f).unwrap();
    path
}

fn ok(reply: &[u8]) {
    assert_eq!(
        get(reply, "result"),
        Value::Bytes(b"ok"),
        "{}",
        String::from_utf8_lossy(reply)
    );
}

/// Share of 20 ms blocks of `pcm` in which `freq` is heard clearly.
fn share(pcm: &[i16], freq: f64) -> f64 {
    coverage(pcm, 8000, freq, 10.0)
}

#[test]
fn play_media_replaces_what_the_tagged_party_hears_then_the_call_resumes() {
    let mut relay = Relay::start(DriverKind::IoUring, 53000);
    let mut a = Phone::new(1000.0, true);
    let mut b = Phone::new(600.0, true);
    let (to_a, to_b) = call(&mut relay, "play-1", &a, &b);
    talk(&mut a, &mut b, to_a, to_b, 400);
    let file = wav_file("beep440.wav", 440.0, 600);
    let reply = relay.command(&[
        ("command", Value::Bytes(b"play media")),
        ("call-id", Value::Bytes(b"play-1")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("file", Value::Bytes(file.to_str().unwrap().as_bytes())),
        ("repeat-times", Value::Int(2)),
    ]);
    ok(&reply);
    assert_eq!(
        get(&reply, "duration"),
        Value::Int(1200),
        "two plays of 600 ms"
    );
    let before = a.heard.len();
    talk(&mut a, &mut b, to_a, to_b, 1200);
    let during = a.heard[before..].to_vec();
    talk(&mut a, &mut b, to_a, to_b, 600);
    let after = &a.heard[before + during.len()..];
    // A hears the prompt, not B, while it plays; then B again.
    assert!(
        share(&during, 440.0) > 0.8,
        "A hears the prompt: {}",
        share(&during, 440.0)
    );
    assert!(share(&during, 600.0) < 0.1, "not B meanwhile");
    assert!(
        share(after, 600.0) > 0.6,
        "then B again: {}",
        share(after, 600.0)
    );
    // B heard A throughout.
    assert!(
        share(&b.heard, 1000.0) > 0.8,
        "B hears A: {}",
        share(&b.heard, 1000.0)
    );
    // A missing file is an error, named.
    let reply = relay.command(&[
        ("command", Value::Bytes(b"play media")),
        ("call-id", Value::Bytes(b"play-1")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("file", Value::Bytes(b"/nonexistent/prompt.wav")),
    ]);
    assert_eq!(get(&reply, "result"), Value::Bytes(b"error"));
    // stop media ends a prompt played until stopped.
    ok(&relay.command(&[
        ("command", Value::Bytes(b"play media")),
        ("call-id", Value::Bytes(b"play-1")),
        ("to-tag", Value::Bytes(b"tag-b")),
        ("file", Value::Bytes(file.to_str().unwrap().as_bytes())),
        ("repeat-times", Value::Int(0)),
    ]));
    let before = b.heard.len();
    talk(&mut a, &mut b, to_a, to_b, 400);
    assert!(share(&b.heard[before..], 440.0) > 0.7, "B hears the prompt");
    ok(&relay.command(&[
        ("command", Value::Bytes(b"stop media")),
        ("call-id", Value::Bytes(b"play-1")),
        ("to-tag", Value::Bytes(b"tag-b")),
    ]));
    std::thread::sleep(Duration::from_millis(60));
    b.receive();
    let before = b.heard.len();
    talk(&mut a, &mut b, to_a, to_b, 400);
    assert!(share(&b.heard[before..], 1000.0) > 0.7, "B hears A again");
}

#[test]
fn play_dtmf_reaches_the_other_party_as_events_or_in_its_audio() {
    let mut relay = Relay::start(DriverKind::IoUring, 54000);
    // B negotiated telephone-event: RFC 4733 events.
    let mut a = Phone::new(1000.0, true);
    let mut b = Phone::new(600.0, true);
    let (to_a, to_b) = call(&mut relay, "dtmf-1", &a, &b);
    talk(&mut a, &mut b, to_a, to_b, 200);
    ok(&relay.command(&[
        ("command", Value::Bytes(b"play DTMF")),
        ("call-id", Value::Bytes(b"dtmf-1")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("code", Value::Bytes(b"5")),
        ("duration", Value::Int(200)),
    ]));
    talk(&mut a, &mut b, to_a, to_b, 500);
    assert!(
        b.events.iter().any(|e| e.event == 5 && e.end),
        "B got digit 5 with its end: {:?}",
        b.events
    );
    assert_eq!(
        b.events.iter().filter(|e| e.end).count(),
        3,
        "three end packets"
    );
    assert!(
        a.events.is_empty(),
        "the sender does not hear its own digit"
    );
    // B without telephone-event: the tone pair in its audio.
    let mut a = Phone::new(1000.0, true);
    let mut b = Phone::new(600.0, false);
    let (to_a, to_b) = call(&mut relay, "dtmf-2", &a, &b);
    talk(&mut a, &mut b, to_a, to_b, 200);
    ok(&relay.command(&[
        ("command", Value::Bytes(b"play DTMF")),
        ("call-id", Value::Bytes(b"dtmf-2")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("code", Value::Bytes(b"#")),
        ("duration", Value::Int(200)),
    ]));
    talk(&mut a, &mut b, to_a, to_b, 500);
    let mut det = DtmfDetector::new(8000);
    let mut found = Vec::new();
    det.feed(&b.heard, |d| {
        if let Detected::Began { event, .. } = d {
            found.push(event);
        }
    });
    assert_eq!(found, vec![11], "B hears # in-band");
}

#[test]
fn blocked_dtmf_and_media_do_not_reach_the_other_party_and_silenced_media_is_silence() {
    let mut relay = Relay::start(DriverKind::IoUring, 55000);
    let mut a = Phone::new(1000.0, true);
    let mut b = Phone::new(600.0, true);
    let (to_a, to_b) = call(&mut relay, "block-1", &a, &b);
    talk(&mut a, &mut b, to_a, to_b, 200);
    let cmd = |relay: &mut Relay, c: &[u8]| {
        ok(&relay.command(&[
            ("command", Value::Bytes(c)),
            ("call-id", Value::Bytes(b"block-1")),
            ("from-tag", Value::Bytes(b"tag-a")),
        ]))
    };
    // block DTMF: A's events stop at the relay, its audio still passes.
    cmd(&mut relay, b"block DTMF");
    let ev = TelephoneEvent {
        event: 1,
        end: true,
        volume: 10,
        duration: 800,
    };
    let mut h = [0u8; 12];
    write_rtp_header(&mut h, true, 101, 500, 1000, Ssrc(0x1235));
    a.sock
        .send_to(&[&h[..], &ev.write()[..]].concat(), to_a)
        .unwrap();
    talk(&mut a, &mut b, to_a, to_b, 200);
    assert!(b.events.is_empty(), "no event reaches B");
    cmd(&mut relay, b"unblock DTMF");
    // silence media: B hears silence from A.
    cmd(&mut relay, b"silence media");
    std::thread::sleep(Duration::from_millis(40));
    b.receive();
    let before = b.heard.len();
    talk(&mut a, &mut b, to_a, to_b, 300);
    let quiet = &b.heard[before..];
    assert!(
        !quiet.is_empty() && quiet.iter().all(|&s| s.abs() < 16),
        "B hears silence from A"
    );
    cmd(&mut relay, b"unsilence media");
    // block media: nothing from A reaches B.
    cmd(&mut relay, b"block media");
    std::thread::sleep(Duration::from_millis(40));
    b.receive();
    let before = b.packets.len();
    talk(&mut a, &mut b, to_a, to_b, 300);
    assert_eq!(b.packets.len(), before, "no packet from A reaches B");
    assert!(
        goertzel(&a.heard[a.heard.len() - 1600..], 600.0, 8000) > 1e9,
        "A still hears B"
    );
    cmd(&mut relay, b"unblock media");
    let before = b.heard.len();
    talk(&mut a, &mut b, to_a, to_b, 300);
    assert!(share(&b.heard[before..], 1000.0) > 0.7, "A is heard again");
}

#[test]
fn a_recorded_call_is_a_stereo_wav_with_each_side_on_its_channel() {
    let dir = std::env::temp_dir().join(format!("rvoip-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut relay = Relay::start_configured(
        DriverKind::IoUring,
        56000,
        RelayConfig::default(),
        Some(dir.clone()),
    );
    let mut a = Phone::new(1000.0, true);
    let mut b = Phone::new(600.0, true);
    let (to_a, to_b) = call(&mut relay, "rec-1@host", &a, &b);
    ok(&relay.command(&[
        ("command", Value::Bytes(b"start recording")),
        ("call-id", Value::Bytes(b"rec-1@host")),
    ]));
    talk(&mut a, &mut b, to_a, to_b, 1500);
    ok(&relay.command(&[
        ("command", Value::Bytes(b"delete")),
        ("call-id", Value::Bytes(b"rec-1@host")),
    ]));
    // Complete as soon as delete answered.
    let bytes = std::fs::read(dir.join("rec-1@host.wav")).expect("the recording");
    assert_eq!(&bytes[22..24], &2u16.to_le_bytes(), "stereo");
    assert_eq!(&bytes[24..28], &8000u32.to_le_bytes(), "at PCMU's 8 kHz");
    let data_len = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
    assert_eq!(data_len, bytes.len() - 44, "the header has the final size");
    let audio = rvoip_mixer::wav::read(&bytes).unwrap();
    let samples: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let secs = left.len() as f64 / 8000.0;
    assert!((1.3..=1.8).contains(&secs), "about 1.5 s: {secs}");
    assert!(audio.samples.len() == left.len());
    assert!(
        share(&left, 1000.0) > 0.8,
        "left is the offerer: {}",
        share(&left, 1000.0)
    );
    assert!(share(&left, 600.0) < 0.05);
    assert!(
        share(&right, 600.0) > 0.8,
        "right is the answerer: {}",
        share(&right, 600.0)
    );
    assert!(share(&right, 1000.0) < 0.05);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("rec-1@host.json")).unwrap()).unwrap();
    assert_eq!(meta["call_id"], "rec-1@host");
    assert_eq!(meta["from_tag"], "tag-a");
    assert_eq!(meta["to_tag"], "tag-b");
    assert_eq!(meta["codecs"][0], "PCMU/8000");
    assert!(meta["stop"].as_f64().unwrap() >= meta["start"].as_f64().unwrap());
    let _ = Format::new(Codec::Pcmu, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
