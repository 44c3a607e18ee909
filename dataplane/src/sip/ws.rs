//! SIP over WebSocket (RFC 7118), sans-IO, server side: a
//! [`StreamSession`] that answers the HTTP upgrade (RFC 6455 §4.2), then
//! takes one SIP message out of each WebSocket message and puts each SIP
//! message it sends into one. Over TLS (WSS) it is the inner session of a
//! [`super::tls::TlsStream`].
//!
//! - The upgrade must be a `GET` with `Upgrade: websocket`, `Connection:
//!   Upgrade`, `Sec-WebSocket-Version: 13`, a `Sec-WebSocket-Key`, and the
//!   `sip` subprotocol offered (RFC 7118 §4.1); with an Origin allow-list,
//!   its `Origin` must be on it. A refused upgrade gets its HTTP error
//!   (400, 403 or 426) and nothing more is read: the worker closes the
//!   connection when the handshake timeout runs out, or when the client
//!   goes.
//! - Client frames must be masked (RFC 6455 §5.1); fragments are joined;
//!   a message longer than the largest SIP message allowed ends the
//!   connection. Pings are answered with pongs carrying their payload; a
//!   Close is answered with a Close and nothing more is read.
//! - rvoip's messages go unmasked, as text frames (binary when a message is
//!   not UTF-8).

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine as _;

use super::Limits;
use super::stream::{StreamError, StreamSession, Unsent};

/// The GUID of RFC 6455 §1.3 the accept key is made with.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The longest upgrade request read.
const MAX_UPGRADE: usize = 8 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Who may open SIP WebSocket connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WsPolicy {
    /// Origins allowed (exactly as browsers send them, e.g.
    /// `https://phone.example.com`); empty: any, and clients without one.
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the HTTP upgrade.
    Upgrading,
    /// Frames flow.
    Open,
    /// The upgrade was refused or a Close exchanged: nothing more is read.
    Done,
}

/// SIP over WebSocket on one connection.
#[derive(Debug)]
pub struct WsStream {
    limits: Limits,
    policy: Arc<WsPolicy>,
    state: State,
    inbuf: Vec<u8>,
    /// A fragmented message being joined, and whether one is.
    partial: Vec<u8>,
    fragmented: bool,
    ready: VecDeque<Vec<u8>>,
    out: Unsent,
}

impl WsStream {
    /// The server side of a connection a WS (or, inside TLS, WSS)
    /// listener accepted.
    pub fn server(policy: Arc<WsPolicy>, limits: Limits) -> WsStream {
        WsStream {
            limits,
            policy,
            state: State::Upgrading,
            inbuf: Vec::new(),
            partial: Vec::new(),
            fragmented: false,
            ready: VecDeque::new(),
            out: Unsent::default(),
        }
    }

    /// Answers the upgrade request at the start of `inbuf`, when it is all
    /// there; returns how many octets it took.
    fn upgrade(&mut self) -> Result<usize, StreamError> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(&self.inbuf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.inbuf.len() > MAX_UPGRADE => {
                return Err(StreamError::TooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(0),
            Err(e) => {
                self.refuse(400, "Bad Request", &format!("not an HTTP request: {e}"));
                return Ok(self.inbuf.len());
            }
        };
        let header = |name: &str| {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let has_token = |value: &str, token: &str| {
            value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        let refusal = if req.method != Some("GET") {
            Some((400, "Bad Request", "not a GET".to_string()))
        } else if !has_token(&header("upgrade"), "websocket")
            || !has_token(&header("connection"), "upgrade")
        {
            Some((400, "Bad Request", "not a WebSocket upgrade".into()))
        } else if header("sec-websocket-version").trim() != "13" {
            Some((426, "Upgrade Required", "WebSocket version 13 only".into()))
        } else if header("sec-websocket-key").trim().is_empty() {
            Some((400, "Bad Request", "no Sec-WebSocket-Key".into()))
        } else if !has_token(&header("sec-websocket-protocol"), "sip") {
            Some((
                400,
                "Bad Request",
                "the sip subprotocol is required (RFC 7118)".into(),
            ))
        } else if !self.policy.origins.is_empty()
            && !self.policy.origins.iter().any(|o| *o == header("origin"))
        {
            Some((403, "Forbidden", "origin not allowed".into()))
        } else {
            None
        };
        if let Some((code, reason, why)) = refusal {
            self.refuse(code, reason, &why);
            return Ok(self.inbuf.len());
        }
        let key = header("sec-websocket-key");
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(key.trim().as_bytes());
        ctx.update(ACCEPT_GUID);
        let accept = base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
        );
        self.out.room_for(answer.len())?;
        self.out.0.extend_from_slice(answer.as_bytes());
        self.state = State::Open;
        Ok(len)
    }

    /// Answers the upgrade with an HTTP error; nothing more is read.
    fn refuse(&mut self, code: u16, reason: &str, why: &str) {
        let answer = format!(
            "HTTP/1.1 {code} {reason}\r\nSec-WebSocket-Version: 13\r\nContent-Type: text/plain\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{why}",
            why.len()
        );
        self.out.0.extend_from_slice(answer.as_bytes());
        self.state = State::Done;
    }

    /// Takes the next whole frame off `inbuf`; returns how many octets it
    /// took (0: the frame is not all there yet).
    fn frame(&mut self) -> Result<usize, StreamError> {
        let b = &self.inbuf;
        if b.len() < 2 {
            return Ok(0);
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
        let (masked, len7) = (b[1] & 0x80 != 0, b[1] & 0x7f);
        if rsv != 0 {
            return Err(protocol("reserved bits set"));
        }
        if !masked {
            return Err(protocol("client frame not masked"));
        }
        let (len, mut at) = match len7 {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            126 | 127 => return Ok(0),
            n => (u64::from(n), 2),
        };
        let control = opcode & 0x8 != 0;
        if control && (len > 125 || !fin) {
            return Err(protocol(
                "control frame fragmented or longer than 125 octets",
            ));
        }
        let max = self.limits.max_message_size as u64;
        if len > max || self.partial.len() as u64 + len > max {
            return Err(StreamError::TooLarge);
        }
        let len = len as usize;
        if b.len() < at + 4 + len {
            return Ok(0);
        }
        let mask = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        at += 4;
        let payload: Vec<u8> = b[at..at + len]
            .iter()
            .enumerate()
            .map(|(i, x)| x ^ mask[i % 4])
            .collect();
        let took = at + len;
        match opcode {
            OP_TEXT | OP_BINARY if self.fragmented => {
                return Err(protocol("a new message inside a fragmented one"));
            }
            OP_TEXT | OP_BINARY if fin => self.ready.push_back(payload),
            OP_TEXT | OP_BINARY => {
                self.partial = payload;
                self.fragmented = true;
            }
            OP_CONTINUATION if !self.fragmented => {
                return Err(protocol("a continuation without a message"));
            }
            OP_CONTINUATION => {
                self.partial.extend_from_slice(&payload);
                if fin {
                    self.ready.push_back(std::mem::take(&mut self.partial));
                    self.fragmented = false;
                }
            }
            OP_PING => self.put_frame(OP_PONG, &payload)?,
            OP_PONG => {}
            OP_CLOSE => {
                // Echo the status code (RFC 6455 §5.5.1), then read no more.
                let code = payload.get(..2).unwrap_or_default().to_vec();
                self.put_frame(OP_CLOSE, &code)?;
                self.state = State::Done;
            }
            _ => return Err(protocol("unknown opcode")),
        }
        Ok(took)
    }

    /// Queues one unmasked frame.
    fn put_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), StreamError> {
        self.out.room_for(payload.len() + 10)?;
        let o = &mut self.out.0;
        o.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => o.push(n as u8),
            n if n <= usize::from(u16::MAX) => {
                o.push(126);
                o.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                o.push(127);
                o.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        o.extend_from_slice(payload);
        Ok(())
    }
}

fn protocol(why: &str) -> StreamError {
    StreamError::WebSocket(why.to_string())
}

impl StreamSession for WsStream {
    fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        if self.state == State::Done {
            return Ok(());
        }
        self.inbuf.extend_from_slice(bytes);
        loop {
            let took = match self.state {
                State::Upgrading => self.upgrade()?,
                State::Open => self.frame()?,
                State::Done => self.inbuf.len(),
            };
            if took == 0 {
                break;
            }
            self.inbuf.drain(..took.min(self.inbuf.len()));
            if self.inbuf.is_empty() {
                break;
            }
        }
        if self.inbuf.len() > self.limits.max_message_size.saturating_mul(2) + MAX_UPGRADE {
            return Err(StreamError::TooLarge);
        }
        Ok(())
    }

    fn poll_message(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        Ok(self.ready.pop_front())
    }

    fn send(&mut self, message: &[u8]) -> Result<(), StreamError> {
        if self.state != State::Open {
            // Not upgraded (or closed): nothing SIP may go.
            return Err(protocol("not open"));
        }
        let opcode = if std::str::from_utf8(message).is_ok() {
            OP_TEXT
        } else {
            OP_BINARY
        };
        self.put_frame(opcode, message)
    }

    fn wire(&self) -> &[u8] {
        &self.out.0
    }

    fn consumed(&mut self, n: usize) {
        self.out.consumed(n);
    }

    fn established(&self) -> bool {
        self.state == State::Open
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"REGISTER sip:rvoip.test SIP/2.0\r\n\
Via: SIP/2.0/WSS abc.invalid;branch=z9hG4bK-1\r\nFrom: <sip:alice@rvoip.test>;tag=1\r\n\
To: <sip:alice@rvoip.test>\r\nCall-ID: w1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n\
Contact: <sip:x@abc.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n";

    /// RFC 6455 §1.3's example key and its accept value.
    const UPGRADE: &str = "GET /sip HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nUpgrade: websocket\r\n\
Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: https://phone.example\r\nSec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// A client frame: masked with `mask`.
    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// The frames a server wrote: (fin, opcode, payload) each.
    fn server_frames(mut w: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !w.is_empty() {
            assert_eq!(w[1] & 0x80, 0, "server frames are not masked");
            let (len, at) = match w[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([w[2], w[3]])), 4),
                127 => (
                    u64::from_be_bytes(w[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (usize::from(n), 2),
            };
            out.push((w[0] & 0x80 != 0, w[0] & 0x0f, w[at..at + len].to_vec()));
            w = &w[at + len..];
        }
        out
    }

    fn open(policy: WsPolicy) -> WsStream {
        let mut s = WsStream::server(Arc::new(policy), Limits::default());
        s.on_bytes(UPGRADE.as_bytes()).unwrap();
        let answer = String::from_utf8(s.wire().to_vec()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
        assert!(
            answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{answer}"
        );
        assert!(answer.contains("Sec-WebSocket-Protocol: sip\r\n"));
        let n = s.wire().len();
        s.consumed(n);
        assert!(s.established());
        s
    }

    #[test]
    fn the_upgrade_is_answered_with_the_accept_key_and_sip_comes_out_of_frames_however_cut() {
        let mut s = WsStream::server(Arc::default(), Limits::default());
        assert!(!s.established());
        // The upgrade and the first frames arrive in pieces of 5 octets.
        let mut stream = UPGRADE.as_bytes().to_vec();
        stream.extend(frame(true, OP_TEXT, MSG, [1, 2, 3, 4]));
        // A message in three fragments, a ping between two of them.
        stream.extend(frame(false, OP_BINARY, &MSG[..10], [9, 8, 7, 6]));
        stream.extend(frame(true, OP_PING, b"hi", [5, 5, 5, 5]));
        stream.extend(frame(false, OP_CONTINUATION, &MSG[10..200], [0, 1, 0, 1]));
        stream.extend(frame(true, OP_CONTINUATION, &MSG[200..], [7, 7, 7, 7]));
        for piece in stream.chunks(5) {
            s.on_bytes(piece).unwrap();
        }
        assert_eq!(s.poll_message().unwrap(), Some(MSG.to_vec()));
        assert_eq!(s.poll_message().unwrap(), Some(MSG.to_vec()));
        assert_eq!(s.poll_message().unwrap(), None);
        let wire = s.wire().to_vec();
        let text = String::from_utf8_lossy(&wire);
        let end = text.find("\r\n\r\n").unwrap() + 4;
        assert!(text.starts_with("HTTP/1.1 101 "));
        assert_eq!(
            server_frames(&wire[end..]),
            vec![(true, OP_PONG, b"hi".to_vec())]
        );
    }

    #[test]
    fn messages_sent_go_one_per_frame_and_a_close_is_answered() {
        let mut s = open(WsPolicy::default());
        s.send(MSG).unwrap();
        let big = vec![b'a'; 70_000];
        s.send(&big).unwrap();
        s.send(&[0xff, 0xfe]).unwrap();
        let frames = server_frames(s.wire());
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], (true, OP_TEXT, MSG.to_vec()));
        assert_eq!(frames[1].2.len(), 70_000);
        assert_eq!(frames[2].1, OP_BINARY);
        let n = s.wire().len();
        s.consumed(n);
        s.on_bytes(&frame(true, OP_CLOSE, &1000u16.to_be_bytes(), [3, 1, 4, 1]))
            .unwrap();
        assert_eq!(
            server_frames(s.wire()),
            vec![(true, OP_CLOSE, 1000u16.to_be_bytes().to_vec())]
        );
        assert!(!s.established());
        assert!(s.send(MSG).is_err());
        // What follows a Close is not read.
        s.on_bytes(&frame(true, OP_TEXT, MSG, [1, 1, 1, 1]))
            .unwrap();
        assert_eq!(s.poll_message().unwrap(), None);
    }

    #[test]
    fn bad_upgrades_get_their_http_error_and_nothing_more() {
        let cases = [
            (UPGRADE.replace("GET", "POST"), "400"),
            (UPGRADE.replace("Upgrade: websocket\r\n", ""), "400"),
            (UPGRADE.replace("Version: 13", "Version: 8"), "426"),
            (UPGRADE.replace("Protocol: sip", "Protocol: chat"), "400"),
            (
                UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                "400",
            ),
            ("\x16\x03\x01 not http\r\n\r\n".to_string(), "400"),
        ];
        for (req, code) in cases {
            let mut s = WsStream::server(Arc::default(), Limits::default());
            s.on_bytes(req.as_bytes()).unwrap();
            let answer = String::from_utf8_lossy(s.wire()).into_owned();
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {code} ")),
                "{req:?}: {answer}"
            );
            assert!(!s.established());
            s.on_bytes(&frame(true, OP_TEXT, MSG, [1, 2, 3, 4]))
                .unwrap();
            assert_eq!(s.poll_message().unwrap(), None);
        }
        // An Origin allow-list.
        let policy = WsPolicy {
            origins: vec!["https://phone.example".into()],
        };
        open(policy.clone());
        let mut s = WsStream::server(Arc::new(policy), Limits::default());
        s.on_bytes(UPGRADE.replace("phone.example", "evil.example").as_bytes())
            .unwrap();
        assert!(String::from_utf8_lossy(s.wire()).starts_with("HTTP/1.1 403 "));
        // An upgrade request that never ends.
        let mut s = WsStream::server(Arc::default(), Limits::default());
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_UPGRADE));
        assert_eq!(s.on_bytes(endless.as_bytes()), Err(StreamError::TooLarge));
    }

    #[test]
    fn protocol_errors_and_oversized_messages_end_the_connection() {
        let unmasked = {
            let mut f = frame(true, OP_TEXT, MSG, [0; 4]);
            f[1] &= 0x7f;
            f.drain(2..6);
            f
        };
        let long_ping = frame(true, OP_PING, &[0u8; 126], [1; 4]);
        let stray = frame(true, OP_CONTINUATION, b"x", [1; 4]);
        let mut nested = frame(false, OP_TEXT, b"a", [1; 4]);
        nested.extend(frame(true, OP_TEXT, b"b", [1; 4]));
        let reserved = {
            let mut f = frame(true, OP_TEXT, b"a", [1; 4]);
            f[0] |= 0x40;
            f
        };
        let unknown = frame(true, 0x3, b"a", [1; 4]);
        for bad in [unmasked, long_ping, stray, nested, reserved, unknown] {
            let mut s = open(WsPolicy::default());
            assert!(
                matches!(s.on_bytes(&bad), Err(StreamError::WebSocket(_))),
                "{bad:?}"
            );
        }
        let limits = Limits::default();
        let mut s = open(WsPolicy::default());
        let big = vec![b'a'; limits.max_message_size + 1];
        assert_eq!(
            s.on_bytes(&frame(true, OP_TEXT, &big, [1; 4])),
            Err(StreamError::TooLarge)
        );
        // Fragments adding up past the limit.
        let mut s = open(WsPolicy::default());
        let half = vec![b'a'; limits.max_message_size / 2 + 1];
        s.on_bytes(&frame(false, OP_TEXT, &half, [1; 4])).unwrap();
        assert_eq!(
            s.on_bytes(&frame(true, OP_CONTINUATION, &half, [1; 4])),
            Err(StreamError::TooLarge)
        );
    }
}
