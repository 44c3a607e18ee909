//! Media orders: the B2BUA anchors every call's media on the relay with ng
//! requests (offer, answer, delete), the same protocol Kamailio's rtpengine
//! module speaks. In the appliance they travel over the shared-memory order
//! channel (`ShmOrders`); tests can serve them in-process.

use std::path::Path;
use std::time::{Duration, Instant};

use rvoip_dataplane::ng::bencode::{self, Value};
use rvoip_dataplane::shm::{Channel, Direction, META_BYTES};

/// Something that answers ng requests.
pub trait MediaOrders: Send {
    /// Sends one ng request (a bencoded dictionary) and returns the reply
    /// (a bencoded dictionary).
    fn order(&mut self, request: &[u8]) -> Result<Vec<u8>, String>;
}

/// Media totals of a call as the relay reports them when it is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MediaTotals {
    /// RTP packets received by the relay over both legs.
    pub packets: u64,
    /// RTP octets.
    pub bytes: u64,
    /// Packets refused (errors).
    pub errors: u64,
}

fn bstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{}:", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// What a media order needs to know about one side.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The tag that names the side in the relay (its dialog tag).
    pub tag: &'a [u8],
    /// SRTP towards the other side of this order.
    pub srtp: bool,
}

/// Builds an ng request with its entries in key order (bencode requires
/// sorted dictionary keys).
fn request(entries: &mut [(&str, Vec<u8>)]) -> Vec<u8> {
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(256 + entries.iter().map(|e| e.1.len()).sum::<usize>());
    out.push(b'd');
    for (k, v) in entries.iter() {
        bstr(&mut out, k.as_bytes());
        out.extend_from_slice(v);
    }
    out.push(b'e');
    out
}

fn s(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len() + 6);
    bstr(&mut o, v);
    o
}

fn reply_sdp(reply: &[u8]) -> Result<Vec<u8>, String> {
    let (v, _) = bencode::decode(reply).map_err(|e| format!("relay reply: {e}"))?;
    match v.get("result").and_then(Value::as_bytes) {
        Some(b"ok") => v
            .get("sdp")
            .and_then(Value::as_bytes)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "relay reply without SDP".to_string()),
        _ => Err(v
            .get("error-reason")
            .and_then(Value::as_str)
            .unwrap_or("relay refused the order")
            .to_string()),
    }
}

/// Offers `sdp` from side `from`; returns the SDP for the other side.
pub fn offer(
    m: &mut dyn MediaOrders,
    call: &[u8],
    from: &[u8],
    sdp: &[u8],
    srtp_out: bool,
) -> Result<Vec<u8>, String> {
    let proto: &[u8] = if srtp_out { b"RTP/SAVP" } else { b"RTP/AVP" };
    let replace = {
        let mut o = b"l".to_vec();
        bstr(&mut o, b"origin");
        o.push(b'e');
        o
    };
    let req = request(&mut [
        ("command", s(b"offer")),
        ("call-id", s(call)),
        ("from-tag", s(from)),
        ("sdp", s(sdp)),
        ("replace", replace),
        ("transport-protocol", s(proto)),
    ]);
    reply_sdp(&m.order(&req)?)
}

/// Answers with `sdp` from side `to` (the offer came from `from`); returns
/// the SDP for the offerer.
pub fn answer(
    m: &mut dyn MediaOrders,
    call: &[u8],
    from: &[u8],
    to: &[u8],
    sdp: &[u8],
    srtp_out: bool,
) -> Result<Vec<u8>, String> {
    let proto: &[u8] = if srtp_out { b"RTP/SAVP" } else { b"RTP/AVP" };
    let replace = {
        let mut o = b"l".to_vec();
        bstr(&mut o, b"origin");
        o.push(b'e');
        o
    };
    let req = request(&mut [
        ("command", s(b"answer")),
        ("call-id", s(call)),
        ("from-tag", s(from)),
        ("to-tag", s(to)),
        ("sdp", s(sdp)),
        ("replace", replace),
        ("transport-protocol", s(proto)),
    ]);
    reply_sdp(&m.order(&req)?)
}

/// Deletes the call's media; returns the relay's totals.
pub fn delete(m: &mut dyn MediaOrders, call: &[u8]) -> Result<MediaTotals, String> {
    let req = request(&mut [("command", s(b"delete")), ("call-id", s(call))]);
    let reply = m.order(&req)?;
    let (v, _) = bencode::decode(&reply).map_err(|e| format!("relay reply: {e}"))?;
    let rtp = v.get("totals").and_then(|t| t.get("RTP"));
    let get = |k: &str| {
        rtp.and_then(|r| r.get(k))
            .and_then(Value::as_int)
            .map_or(0, |n| n.max(0) as u64)
    };
    Ok(MediaTotals {
        packets: get("packets"),
        bytes: get("bytes"),
        errors: get("errors"),
    })
}

/// Media orders over the dataplane's order channel (`media.ring`).
#[derive(Debug)]
pub struct ShmOrders {
    channel: Channel,
    prefix: String,
    next: u64,
    timeout: Duration,
}

impl ShmOrders {
    /// Attaches to the order channel in `ring_dir`.
    pub fn open(ring_dir: &Path) -> Result<ShmOrders, String> {
        let path = rvoip_dataplane::engine::ng_shm::orders_path(ring_dir);
        let channel = Channel::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Replies left from an earlier control plane are not ours.
        {
            let mut c = channel.consumer(Direction::ToControlPlane);
            while c.peek().is_some() {
                c.advance();
            }
        }
        let mut nonce = [0u8; 6];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
        Ok(ShmOrders {
            channel,
            prefix: nonce.iter().map(|b| format!("{b:02x}")).collect(),
            next: 0,
            timeout: Duration::from_millis(500),
        })
    }
}

impl MediaOrders for ShmOrders {
    fn order(&mut self, req: &[u8]) -> Result<Vec<u8>, String> {
        self.next += 1;
        let cookie = format!("{}-{}", self.prefix, self.next);
        let mut datagram = Vec::with_capacity(cookie.len() + 1 + req.len());
        datagram.extend_from_slice(cookie.as_bytes());
        datagram.push(b' ');
        datagram.extend_from_slice(req);
        let meta = [0u8; META_BYTES];
        let mut replies = self.channel.consumer(Direction::ToControlPlane);
        let start = Instant::now();
        // Asked again (same cookie: answered from the relay's cache) if the
        // first try is not answered quickly.
        for attempt in 0..3u32 {
            if self
                .channel
                .producer(Direction::ToDataplane)
                .push(1, &meta, &datagram)
                .is_err()
            {
                return Err("the media order channel is full".into());
            }
            let until = start + self.timeout * (attempt + 1) / 3;
            while Instant::now() < until {
                replies.wait(until.saturating_duration_since(Instant::now()));
                while let Some(r) = replies.peek() {
                    let payload = r.payload;
                    replies.advance();
                    if let Some(body) = payload
                        .strip_prefix(cookie.as_bytes())
                        .and_then(|b| b.strip_prefix(b" "))
                    {
                        return Ok(body.to_vec());
                    }
                }
            }
        }
        Err("the relay did not answer the media order".into())
    }
}
