//! SIP over a stream transport, sans-IO: what a connection's octets mean
//! on the way in and what goes on the wire on the way out.
//!
//! A SIP worker owns the socket and never the protocol: it hands every
//! octet it reads to [`StreamSession::on_bytes`], takes the whole SIP
//! messages [`StreamSession::poll_message`] finds, hands the messages to
//! send to [`StreamSession::send`], and writes [`StreamSession::wire`] as
//! far as the socket takes it, telling the session with
//! [`StreamSession::consumed`]. A session of plain TCP ([`PlainStream`])
//! frames by Content-Length (RFC 3261 §18.3); a TLS session decrypts in
//! `on_bytes` and encrypts in `send`, a WebSocket session (RFC 7118) takes
//! its messages out of frames; the worker stays the same.

use super::{Limits, SipError, frame_stream};

/// Why a stream cannot go on; the worker closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// A message's framing is lost (a bad Content-Length, a malformed
    /// start): the stream cannot be resynchronized (RFC 4475 §3.1.2.3).
    Framing(SipError),
    /// More octets wait for a message than the largest message allowed.
    TooLarge,
    /// More octets wait to be sent than the session will hold: the peer
    /// has not read for a long while.
    Stalled,
    /// TLS failed: a handshake refused, a certificate not trusted, a
    /// record that does not decrypt, an alert from the peer.
    Tls(String),
    /// The WebSocket protocol was broken (an unmasked client frame, a
    /// stray continuation, an unknown opcode).
    WebSocket(String),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Framing(e) => write!(f, "SIP framing lost: {e}"),
            StreamError::TooLarge => f.write_str("message larger than allowed"),
            StreamError::Stalled => f.write_str("peer does not read"),
            StreamError::Tls(e) => write!(f, "TLS: {e}"),
            StreamError::WebSocket(e) => write!(f, "WebSocket: {e}"),
        }
    }
}

impl std::error::Error for StreamError {}

/// One connection's SIP session (see the module documentation for the
/// driving contract).
pub trait StreamSession: Send {
    /// Octets read from the socket, in order.
    fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), StreamError>;

    /// The next whole SIP message received, if one is complete.
    fn poll_message(&mut self) -> Result<Option<Vec<u8>>, StreamError>;

    /// Queues a SIP message to send.
    fn send(&mut self, message: &[u8]) -> Result<(), StreamError>;

    /// Octets for the socket, in order.
    fn wire(&self) -> &[u8];

    /// The socket took the first `n` octets of [`StreamSession::wire`].
    fn consumed(&mut self, n: usize);

    /// Whether the session's handshakes (TLS, WebSocket upgrade) are done:
    /// a connection that is not established within the handshake timeout
    /// is closed.
    fn established(&self) -> bool {
        true
    }
}

/// Most octets a session holds for a peer that does not read.
pub const MAX_UNSENT: usize = 1 << 20;

/// Octets a session holds for the socket, at most [`MAX_UNSENT`] (and what
/// one more message may add).
#[derive(Debug, Default)]
pub(crate) struct Unsent(pub(crate) Vec<u8>);

impl Unsent {
    /// Whether `n` octets more may wait; a peer that has not read for a
    /// long while is [`StreamError::Stalled`].
    pub(crate) fn room_for(&self, n: usize) -> Result<(), StreamError> {
        if self.0.len() + n > MAX_UNSENT {
            return Err(StreamError::Stalled);
        }
        Ok(())
    }

    /// The socket took the first `n` octets.
    pub(crate) fn consumed(&mut self, n: usize) {
        self.0.drain(..n.min(self.0.len()));
    }
}

/// SIP on plain TCP: messages framed by Content-Length, the CRLF
/// keep-alives of RFC 5626 §4.4.1 skipped between them.
#[derive(Debug)]
pub struct PlainStream {
    limits: Limits,
    inbuf: Vec<u8>,
    out: Unsent,
}

impl PlainStream {
    /// A session whose messages are held to `limits`.
    pub fn new(limits: Limits) -> Self {
        PlainStream {
            limits,
            inbuf: Vec::new(),
            out: Unsent::default(),
        }
    }
}

impl StreamSession for PlainStream {
    fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        self.inbuf.extend_from_slice(bytes);
        if self.inbuf.len() > self.limits.max_message_size.saturating_mul(2) {
            return Err(StreamError::TooLarge);
        }
        Ok(())
    }

    fn poll_message(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        let skip = self
            .inbuf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        self.inbuf.drain(..skip);
        if self.inbuf.is_empty() {
            return Ok(None);
        }
        match frame_stream(&self.inbuf, &self.limits) {
            Ok(Some(len)) => Ok(Some(self.inbuf.drain(..len).collect())),
            Ok(None) if self.inbuf.len() > self.limits.max_message_size => {
                Err(StreamError::TooLarge)
            }
            Ok(None) => Ok(None),
            Err(e) => Err(StreamError::Framing(e)),
        }
    }

    fn send(&mut self, message: &[u8]) -> Result<(), StreamError> {
        self.out.room_for(message.len())?;
        self.out.0.extend_from_slice(message);
        Ok(())
    }

    fn wire(&self) -> &[u8] {
        &self.out.0
    }

    fn consumed(&mut self, n: usize) {
        self.out.consumed(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: s1\r\nCSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn messages_come_out_whole_however_the_octets_are_cut() {
        let mut s = PlainStream::new(Limits::default());
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(MSG);
        for piece in stream.chunks(7) {
            s.on_bytes(piece).expect("within limits");
        }
        assert_eq!(s.poll_message(), Ok(Some(MSG.to_vec())));
        assert_eq!(s.poll_message(), Ok(Some(MSG.to_vec())));
        assert_eq!(s.poll_message(), Ok(None));
        // Half a message waits for the rest.
        s.on_bytes(&MSG[..40]).expect("within limits");
        assert_eq!(s.poll_message(), Ok(None));
        s.on_bytes(&MSG[40..]).expect("within limits");
        assert_eq!(s.poll_message(), Ok(Some(MSG.to_vec())));
    }

    #[test]
    fn lost_framing_and_oversized_input_end_the_stream() {
        let mut s = PlainStream::new(Limits::default());
        let bad = String::from_utf8_lossy(MSG).replace("Content-Length: 4", "Content-Length: x");
        s.on_bytes(bad.as_bytes()).expect("within limits");
        assert!(matches!(s.poll_message(), Err(StreamError::Framing(_))));
        let limits = Limits::default();
        let mut s = PlainStream::new(limits);
        let junk = vec![b'a'; limits.max_message_size * 2 + 1];
        assert_eq!(s.on_bytes(&junk), Err(StreamError::TooLarge));
    }

    #[test]
    fn what_is_sent_waits_until_the_socket_takes_it_and_a_stalled_peer_is_refused() {
        let mut s = PlainStream::new(Limits::default());
        s.send(MSG).expect("room");
        s.send(b"xy").expect("room");
        assert_eq!(s.wire().len(), MSG.len() + 2);
        s.consumed(MSG.len());
        assert_eq!(s.wire(), b"xy");
        s.consumed(10);
        assert!(s.wire().is_empty());
        let big = vec![0u8; MAX_UNSENT];
        s.send(&big).expect("exactly the limit");
        assert_eq!(s.send(b"!"), Err(StreamError::Stalled));
    }
}
