//! The SIP edge: what the dataplane does with each SIP datagram before the
//! control plane sees it. Sans-IO: bytes in, an action (and response bytes) out.
//!
//! - A message that cannot be indexed at all is dropped and counted: without
//!   its Via there is nowhere to send an answer.
//! - A malformed request is answered statelessly with the error's status
//!   (400, 505, 513, 501) and a `Warning: 399 rvoip "..."` header saying
//!   what is wrong (RFC 3261 §20.43), and counted; a malformed response is
//!   dropped. [`SipEdge::last_refusal`] tells the driver what to log.
//! - A well-formed message is delivered to the control plane. While no
//!   control plane is attached, requests other than ACK are answered
//!   `503 Service Unavailable` with `Retry-After`, so peers fail over
//!   instead of retransmitting into silence.

use std::io::Write as _;

use crate::sip::{
    Framing, HeaderName, Limits, Method, SipError, SipMessage, check, write_response, write_warning,
};

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeAction {
    /// Send the bytes written into `out` back to the source.
    Reply,
    /// Hand the datagram to the control plane: to the shard that owns
    /// its Call-ID.
    Deliver {
        /// The shard, below [`SipEdge::set_shards`]'s count.
        shard: usize,
    },
    /// Drop it (already counted).
    Drop,
}

/// Counters of the edge, per worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeCounters {
    /// Datagrams seen.
    pub received: u64,
    /// Datagrams that could not be indexed (dropped).
    pub unparsable: u64,
    /// Malformed requests answered with an error.
    pub malformed_requests: u64,
    /// Malformed responses dropped.
    pub malformed_responses: u64,
    /// Requests answered 503 while no control plane was attached.
    pub unavailable: u64,
    /// Messages handed to the control plane.
    pub delivered: u64,
    /// Well-formed messages dropped (responses or ACKs with no control plane).
    pub dropped: u64,
}

/// The per-worker SIP edge.
#[derive(Debug)]
pub struct SipEdge {
    limits: Limits,
    control_plane_attached: bool,
    retry_after: u32,
    counters: EdgeCounters,
    /// The Warning value of the last refusal, kept for the next one.
    warning: Vec<u8>,
    last_refusal: Option<SipError>,
    /// Control-plane shards the messages are spread over by Call-ID.
    shards: usize,
}

impl SipEdge {
    /// A new edge with the given parser limits.
    pub fn new(limits: Limits) -> Self {
        SipEdge {
            limits,
            control_plane_attached: false,
            retry_after: 5,
            counters: EdgeCounters::default(),
            warning: Vec::new(),
            last_refusal: None,
            shards: 1,
        }
    }

    /// Spreads the messages delivered over `shards` control-plane shards.
    pub fn set_shards(&mut self, shards: usize) {
        self.shards = shards.max(1);
    }

    /// Marks the control plane as attached or gone.
    pub fn set_control_plane_attached(&mut self, attached: bool) {
        self.control_plane_attached = attached;
    }

    /// The counters so far.
    pub fn counters(&self) -> EdgeCounters {
        self.counters
    }

    /// Why the last malformed request was refused, taken once: the driver
    /// logs it (with a budget) together with the source and Call-ID.
    pub fn last_refusal(&mut self) -> Option<SipError> {
        self.last_refusal.take()
    }

    /// Judges one datagram; on [`EdgeAction::Reply`] the response is in `out`.
    pub fn on_datagram(&mut self, data: &[u8], out: &mut Vec<u8>) -> EdgeAction {
        self.counters.received += 1;
        let msg = match SipMessage::parse(data, Framing::Datagram, &self.limits) {
            Ok(m) => m,
            Err(_) => {
                self.counters.unparsable += 1;
                return EdgeAction::Drop;
            }
        };
        if let Err(e) = check(&msg) {
            if !msg.is_request() {
                self.counters.malformed_responses += 1;
                return EdgeAction::Drop;
            }
            self.counters.malformed_requests += 1;
            if msg.method() == Some(Method::Ack) {
                // RFC 3261 §17: an ACK is never answered.
                return EdgeAction::Drop;
            }
            let mut text = [0u8; 128];
            let len = {
                let mut w = &mut text[..];
                let _ = write!(w, "{e}");
                128 - w.len()
            };
            self.warning.clear();
            write_warning(
                399,
                b"rvoip",
                std::str::from_utf8(&text[..len]).unwrap_or("malformed request"),
                &mut self.warning,
            );
            write_response(
                &msg,
                e.status(),
                e.reason_phrase().as_bytes(),
                None,
                &[(HeaderName::Warning, &self.warning)],
                out,
            );
            self.last_refusal = Some(e);
            return EdgeAction::Reply;
        }
        if self.control_plane_attached {
            self.counters.delivered += 1;
            // check() made sure there is a Call-ID.
            let call_id = msg.call_id().unwrap_or_default();
            return EdgeAction::Deliver {
                shard: crate::sip::shard_of(call_id, self.shards),
            };
        }
        if !msg.is_request() || msg.method() == Some(Method::Ack) {
            self.counters.dropped += 1;
            return EdgeAction::Drop;
        }
        self.counters.unavailable += 1;
        let mut retry = [0u8; 20];
        let retry = crate::text::decimal(u64::from(self.retry_after), &mut retry);
        write_response(
            &msg,
            503,
            b"Service Unavailable",
            None,
            &[(HeaderName::RetryAfter, retry)],
            out,
        );
        EdgeAction::Reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK77;rport\r\n\
From: <sip:probe@rvoip.test>;tag=1\r\nTo: <sip:rvoip.test>\r\nCall-ID: edge-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn answers_503_until_the_control_plane_attaches() {
        let mut edge = SipEdge::new(Limits::default());
        let mut out = Vec::new();
        assert_eq!(edge.on_datagram(OPTIONS, &mut out), EdgeAction::Reply);
        let r = SipMessage::parse(&out, Framing::Datagram, &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status_code(), Some(503));
        assert_eq!(r.header(HeaderName::RetryAfter), Some(&b"5"[..]));
        assert_eq!(r.call_id(), Ok(&b"edge-1"[..]));
        assert_eq!(r.top_via().map(|v| v.branch()), Ok(Some(&b"z9hG4bK77"[..])));
        edge.set_control_plane_attached(true);
        assert_eq!(
            edge.on_datagram(OPTIONS, &mut out),
            EdgeAction::Deliver { shard: 0 }
        );
        edge.set_shards(4);
        assert_eq!(
            edge.on_datagram(OPTIONS, &mut out),
            EdgeAction::Deliver {
                shard: crate::sip::shard_of(b"edge-1", 4)
            }
        );
        assert_eq!(edge.counters().unavailable, 1);
        assert_eq!(edge.counters().delivered, 2);
    }

    #[test]
    fn malformed_requests_get_their_status_and_garbage_is_dropped() {
        let mut edge = SipEdge::new(Limits::default());
        let mut out = Vec::new();
        let bad = String::from_utf8_lossy(OPTIONS).replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        assert_eq!(
            edge.on_datagram(bad.as_bytes(), &mut out),
            EdgeAction::Reply
        );
        assert!(
            out.starts_with(b"SIP/2.0 400 Bad Request\r\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let r = SipMessage::parse(&out, Framing::Datagram, &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.header(HeaderName::Warning),
            Some(&b"399 rvoip \"CSeq method differs from the Request-Line method\""[..])
        );
        assert!(matches!(
            edge.last_refusal(),
            Some(SipError::CSeqMethodMismatch { .. })
        ));
        assert_eq!(edge.last_refusal(), None, "taken once");
        let empty_require =
            String::from_utf8_lossy(OPTIONS).replace("Max-Forwards", "Require:\r\nMax-Forwards");
        edge.on_datagram(empty_require.as_bytes(), &mut out);
        let r = SipMessage::parse(&out, Framing::Datagram, &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.header(HeaderName::Warning),
            Some(&b"399 rvoip \"Require: empty value\""[..]),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(
            edge.on_datagram(b"\x16\x03\x01 garbage", &mut out),
            EdgeAction::Drop
        );
        assert_eq!(edge.counters().unparsable, 1);
        assert_eq!(edge.counters().malformed_requests, 2);
    }
}
