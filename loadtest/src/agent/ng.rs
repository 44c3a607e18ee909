//! Media-only load against an ng relay (rtpengine's protocol, which rvoip
//! speaks): per call an `offer` and an `answer` over ng, RTP both ways
//! through the relay for the hold time, then `delete`. Both legs are this
//! agent: one RTP socket sends leg A's stream to the relay port the answer
//! gave and leg B's stream to the port the offer gave; the relay returns each
//! to the socket, where the streams are told apart by SSRC.

use std::net::SocketAddr;

use rvoip_dataplane::ng::bencode::{Value, decode, encode};

use rvoip_dataplane::srtp::{MasterKey, SrtpContext, SrtpParams, Suite, sdes};

use rvoip_codecs::Codec;

use super::{Agent, T1, Timer};
use crate::sip;

/// Where an ng call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NgState {
    Offer,
    Answer,
    Up,
    Delete,
}

/// One call driven over ng.
#[derive(Debug)]
pub(super) struct NgCall {
    pub(super) state: NgState,
    request: Vec<u8>,
    interval: u64,
    started_ns: u64,
    /// Relay port leg B sends to (from the offer's reply).
    to_b: Option<SocketAddr>,
    pub(super) generation: u32,
    /// With `--srtp`: leg A's own key (offered).
    key_a: Option<MasterKey>,
    /// Leg B's choice among the relay's offered keys (tag, suite, the
    /// relay's key) and leg B's own key for that suite.
    b_keys: Option<(u32, Suite, MasterKey, MasterKey)>,
    /// With `--webrtc`: leg A's ICE credentials.
    creds: Option<super::webrtc::Credentials>,
    /// Why the call failed once up (its delete then counts it failed).
    pub(super) failure: Option<&'static str>,
}

/// The cookie step of a call's media service request.
const SERVICE_STEP: u8 = 9;

/// A media service asked for each call once it is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NgService {
    /// `play media` of `file` to leg A, `repeat` times (0: until the call ends).
    Play {
        /// The prompt, as the relay reads it.
        file: String,
        /// Times.
        repeat: u32,
    },
    /// `start recording`.
    Record,
}

/// ng requests are retried this many times (T1 doubling) before the call fails.
const NG_TRIES: u32 = 5;

impl Agent {
    fn ng_call_id(&self, n: u64) -> String {
        format!("{n}-{}@rvoip-loadtest", self.cfg.run_id)
    }

    fn ng_request(&self, n: u64, state: NgState) -> Vec<u8> {
        let cid = self.ng_call_id(n);
        let call = self.ng.get(&n);
        let line_a = self
            .cfg
            .srtp
            .zip(call.and_then(|c| c.key_a.as_ref()))
            .map(|(suite, k)| sdes::format(1, k, suite));
        let line_b = call
            .and_then(|c| c.b_keys.as_ref())
            .map(|(tag, suite, _, own)| sdes::format(*tag, own, *suite));
        let cookie = format!("{n}-{}", state as u8);
        let (a, b) = (n as u32 * 2, n as u32 * 2 + 1);
        let mut entries: Vec<(&[u8], Value<'_>)> = vec![
            (b"call-id", Value::Bytes(cid.as_bytes())),
            (b"from-tag", Value::Bytes(b"lt-a")),
        ];
        let sdp_a;
        let sdp_b;
        let webrtc;
        let answer_spec = match (self.cfg.answer_codec, self.cfg.opus_bitrate) {
            (Codec::Opus, Some(b)) => format!("opus/48000/1/{b}"),
            (c, _) => c.name().to_owned(),
        };
        let answer_codec = answer_spec.as_bytes();
        match state {
            NgState::Offer => {
                sdp_a = sip::sdp(n, &self.local, a, line_a.as_deref(), &self.own_codec());
                webrtc = call
                    .and_then(|c| c.creds.as_ref())
                    .and_then(|creds| self.webrtc_offer(&sdp_a, creds));
                entries.push((b"command", Value::Bytes(b"offer")));
                match &webrtc {
                    Some(offer) => {
                        entries.push((b"sdp", Value::Bytes(offer.as_bytes())));
                        // Leg B is plain RTP: the relay terminates ICE, DTLS
                        // and the mux on leg A.
                        entries.push((b"transport-protocol", Value::Bytes(b"RTP/AVP")));
                        entries.push((b"ICE", Value::Bytes(b"remove")));
                        entries.push((b"rtcp-mux", Value::List(vec![Value::Bytes(b"demux")])));
                    }
                    None => entries.push((b"sdp", Value::Bytes(sdp_a.as_bytes()))),
                }
                if self.cfg.transcode {
                    entries.push((
                        b"codec",
                        Value::Dict(vec![(
                            b"transcode",
                            Value::List(vec![Value::Bytes(answer_codec)]),
                        )]),
                    ));
                }
            }
            NgState::Answer => {
                // Leg B answers in its codec, at the payload type the offer
                // gave it.
                let mut codec = if self.cfg.tones() {
                    sip::SdpCodec::default_for(self.cfg.answer_codec)
                } else {
                    sip::SdpCodec::pcmu()
                };
                if let Some(pt) = self.b_pt.get(&n) {
                    codec.pt = *pt;
                }
                sdp_b = sip::sdp(n, &self.local, b, line_b.as_deref(), &codec);
                entries.push((b"command", Value::Bytes(b"answer")));
                entries.push((b"to-tag", Value::Bytes(b"lt-b")));
                entries.push((b"sdp", Value::Bytes(sdp_b.as_bytes())));
            }
            NgState::Up | NgState::Delete => {
                entries.push((b"command", Value::Bytes(b"delete")));
            }
        }
        let mut out = format!("{cookie} ").into_bytes();
        encode(&Value::Dict(entries), &mut out);
        out
    }

    fn ng_send(&mut self, n: u64, now_ns: u64, state: NgState) {
        let req = self.ng_request(n, state);
        if let Some(to) = self.cfg.target {
            self.out.push((n, req.clone(), to));
        }
        let Some(call) = self.ng.get_mut(&n) else {
            return;
        };
        call.state = state;
        call.request = req;
        call.interval = T1;
        call.generation += 1;
        let g = call.generation;
        self.schedule(now_ns + T1, n, Timer::NgRetransmit, g);
    }

    /// Starts call `n`: its offer.
    pub(super) fn ng_start(&mut self, now_ns: u64, n: u64) {
        self.ng.insert(
            n,
            NgCall {
                state: NgState::Offer,
                request: Vec::new(),
                interval: T1,
                started_ns: now_ns,
                to_b: None,
                generation: 0,
                key_a: self
                    .cfg
                    .srtp
                    .and_then(|s| sdes::generate(s, self.keys.as_ref())),
                b_keys: None,
                creds: None,
                failure: None,
            },
        );
        if self.cfg.webrtc {
            let creds = self.webrtc_credentials();
            if let Some(c) = self.ng.get_mut(&n) {
                c.creds = Some(creds);
            }
        }
        self.ng_send(n, now_ns, NgState::Offer);
    }

    fn ng_end(&mut self, n: u64, failure: Option<&str>) {
        if self.ng.remove(&n).is_some() {
            self.active = self.active.saturating_sub(1);
            match failure {
                Some(reason) => self.report.fail(reason),
                None => self.report.completed += 1,
            }
        }
        self.stop_media(n * 2);
        self.stop_media(n * 2 + 1);
        self.b_pt.remove(&n);
        self.srtp_rx.remove(&(n as u32 * 2));
        self.srtp_rx.remove(&(n as u32 * 2 + 1));
        self.webrtc_forget(n);
    }

    /// Ends call `n`'s media and asks the relay to delete it.
    pub(super) fn ng_hang_up(&mut self, now_ns: u64, n: u64) {
        self.stop_media(n * 2);
        self.stop_media(n * 2 + 1);
        self.ng_send(n, now_ns, NgState::Delete);
    }

    /// An ng timer: retransmit, or give up; or the hold ended.
    pub(super) fn ng_timer(&mut self, now_ns: u64, n: u64, t: Timer, generation: u32) {
        let Some(call) = self.ng.get_mut(&n) else {
            return;
        };
        if call.generation != generation {
            return;
        }
        match t {
            Timer::NgRetransmit if call.state != NgState::Up => {
                if call.interval >= T1 << NG_TRIES {
                    self.ng_end(n, Some("ng-timeout"));
                    return;
                }
                call.interval *= 2;
                let at = now_ns + call.interval;
                let req = call.request.clone();
                if let Some(to) = self.cfg.target {
                    self.out.push((n, req, to));
                }
                self.schedule(at, n, Timer::NgRetransmit, generation);
            }
            Timer::Hangup if call.state == NgState::Up => self.ng_hang_up(now_ns, n),
            Timer::WebRtc if call.state == NgState::Up => self.webrtc_timer(now_ns, n),
            _ => {}
        }
    }

    /// One ng reply datagram.
    pub(super) fn on_ng(&mut self, now_ns: u64, buf: &[u8]) {
        let Some(space) = buf.iter().position(|b| *b == b' ') else {
            return;
        };
        let cookie = String::from_utf8_lossy(&buf[..space]);
        let Some((n, step)) = cookie.split_once('-') else {
            return;
        };
        let (Ok(n), Ok(step)) = (n.parse::<u64>(), step.parse::<u8>()) else {
            return;
        };
        let Ok((reply, _)) = decode(&buf[space + 1..]) else {
            return;
        };
        let Some(call) = self.ng.get(&n) else {
            return;
        };
        if step == SERVICE_STEP {
            if reply.get("result").and_then(Value::as_bytes) == Some(b"ok") {
                self.report.ng_services += 1;
            } else {
                self.report.ng_service_errors += 1;
                if self.report.ng_service_errors == 1 {
                    let why = reply
                        .get("error-reason")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason");
                    eprintln!("ng media service refused: {why}");
                }
            }
            return;
        }
        if call.state as u8 != step {
            // A reply to an earlier retransmitted request.
            return;
        }
        if reply.get("result").and_then(Value::as_bytes) != Some(b"ok") {
            let failure = (call.state != NgState::Delete).then(|| {
                let why = reply
                    .get("error-reason")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason");
                format!("ng-error: {why}")
            });
            self.ng_end(n, failure.as_deref());
            return;
        }
        let remote = reply
            .get("sdp")
            .and_then(Value::as_bytes)
            .and_then(sip::remote_media);
        let relay = remote.as_ref().map(|r| r.to);
        match call.state {
            NgState::Offer => {
                let Some(to_b) = relay else {
                    self.ng_end(n, Some("ng-no-sdp"));
                    return;
                };
                // With SRTP, leg B takes the relay's key for our suite (or its
                // first) and answers with a key of its own.
                let b_keys = match (self.cfg.srtp, &remote) {
                    (Some(want), Some(r)) => {
                        let Some(c) = r
                            .crypto
                            .iter()
                            .find(|c| c.suite == want)
                            .or_else(|| r.crypto.first())
                        else {
                            self.ng_end(n, Some("ng-no-crypto"));
                            return;
                        };
                        let Some(own) = sdes::generate(c.suite, self.keys.as_ref()) else {
                            self.ng_end(n, Some("ng-no-crypto"));
                            return;
                        };
                        Some((c.tag, c.suite, c.master.clone(), own))
                    }
                    _ => None,
                };
                if let Some(pt) = remote
                    .as_ref()
                    .and_then(|r| r.pt_of(self.cfg.answer_codec))
                    .filter(|_| self.cfg.tones())
                {
                    self.b_pt.insert(n, pt);
                }
                if let Some(c) = self.ng.get_mut(&n) {
                    c.to_b = Some(to_b);
                    c.b_keys = b_keys;
                }
                self.ng_send(n, now_ns, NgState::Answer);
            }
            NgState::Answer => {
                let (Some(to_a), Some(to_b)) = (relay, call.to_b) else {
                    self.ng_end(n, Some("ng-no-sdp"));
                    return;
                };
                let us = now_ns.saturating_sub(call.started_ns) / 1000;
                self.report.record_setup(us);
                // SRTP: leg A sends with its key and hears leg B's stream under
                // the relay's key for A; leg B the other way round.
                let mut tx = (None, None);
                if let (Some(suite), Some(key_a), Some((_, b_suite, relay_b, own_b))) =
                    (self.cfg.srtp, call.key_a.clone(), call.b_keys.clone())
                {
                    let Some(relay_a) = remote
                        .as_ref()
                        .and_then(|r| r.crypto.iter().find(|c| c.tag == 1))
                        .filter(|c| c.suite == suite)
                        .map(|c| c.master.clone())
                    else {
                        self.ng_end(n, Some("ng-no-crypto"));
                        return;
                    };
                    let (a, b) = (n as u32 * 2, n as u32 * 2 + 1);
                    for (ssrc, params) in [
                        (a, SrtpParams::new(b_suite, relay_b)),
                        (b, SrtpParams::new(suite, relay_a)),
                    ] {
                        if let Some(ctx) = SrtpContext::new(&params) {
                            self.srtp_rx.insert(ssrc, Box::new(ctx));
                        }
                    }
                    tx = (
                        Some(SrtpParams::new(suite, key_a)),
                        Some(SrtpParams::new(b_suite, own_b)),
                    );
                }
                let hold = self.hold_ns();
                let Some(c) = self.ng.get_mut(&n) else {
                    return;
                };
                c.state = NgState::Up;
                c.generation += 1;
                let g = c.generation;
                self.schedule(now_ns + hold, n, Timer::Hangup, g);
                // Leg A's stream goes to the relay port of A, leg B's to B's.
                let tones = self.cfg.tones();
                let a_pt = self.own_codec().pt;
                let b_pt = self.b_pt.get(&n).copied().unwrap_or(a_pt);
                // A WebRTC leg A sends once ICE and DTLS have keyed it.
                let creds = self.ng.get(&n).and_then(|c| c.creds.clone());
                match (creds, reply.get("sdp").and_then(Value::as_bytes)) {
                    (Some(creds), Some(sdp)) => {
                        if let Err(why) = self.webrtc_begin(now_ns, n, &creds, sdp, to_a) {
                            if let Some(c) = self.ng.get_mut(&n) {
                                c.failure = Some(why);
                            }
                            self.ng_hang_up(now_ns, n);
                            return;
                        }
                    }
                    _ => self.start_media(
                        now_ns,
                        n * 2,
                        n as u32 * 2,
                        to_a,
                        tx.0.as_ref(),
                        tones.then_some((0, a_pt)),
                    ),
                }
                self.start_media(
                    now_ns,
                    n * 2 + 1,
                    n as u32 * 2 + 1,
                    to_b,
                    tx.1.as_ref(),
                    tones.then_some((1, b_pt)),
                );
                // A media service for the call once it is up (a prompt to
                // leg A, or its recording): sent once, its reply counted.
                if let Some(service) = self.cfg.ng_service.clone() {
                    let cid = self.ng_call_id(n);
                    let repeat = match &service {
                        NgService::Play { repeat, .. } => i64::from(*repeat),
                        NgService::Record => 0,
                    };
                    let mut entries: Vec<(&[u8], Value<'_>)> = vec![
                        (b"call-id", Value::Bytes(cid.as_bytes())),
                        (b"from-tag", Value::Bytes(b"lt-a")),
                    ];
                    match &service {
                        NgService::Play { file, .. } => {
                            entries.push((b"command", Value::Bytes(b"play media")));
                            entries.push((b"file", Value::Bytes(file.as_bytes())));
                            entries.push((b"repeat-times", Value::Int(repeat)));
                        }
                        NgService::Record => {
                            entries.push((b"command", Value::Bytes(b"start recording")));
                        }
                    }
                    let mut out = format!("{n}-{SERVICE_STEP} ").into_bytes();
                    encode(&Value::Dict(entries), &mut out);
                    if let Some(to) = self.cfg.target {
                        self.out.push((n, out, to));
                    }
                }
            }
            NgState::Delete => {
                let failure = call.failure;
                self.ng_end(n, failure);
            }
            NgState::Up => {}
        }
    }
}
