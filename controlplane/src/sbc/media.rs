//! Media orders: the B2BUA anchors every call's media on the relay with ng
//! requests (offer, answer, delete), the same protocol Kamailio's rtpengine
//! module speaks. In the appliance they travel over the shared-memory order
//! channel (`ShmOrders`); tests can serve them in-process.

use crate::transaction::Millis;
use rustc_hash::FxHashMap;
use rvoip_dataplane::entropy::Entropy;
use std::path::Path;

use rvoip_dataplane::ng::bencode::{self, Value};
use rvoip_dataplane::shm::{Channel, Direction, META_BYTES};

/// An order's token and its reply (or why there is none).
pub type Answered = (u64, Result<Vec<u8>, String>);

/// Something that answers ng requests, asynchronously: the B2BUA sends an
/// order and carries on; the reply comes back later through `poll`.
pub trait MediaOrders: Send {
    /// Sends one ng request (a bencoded dictionary); its reply (or failure)
    /// comes back from [`MediaOrders::poll`] with `token`.
    /// `now` is the control plane's clock, for the order's reply deadline.
    fn send(&mut self, now: Millis, token: u64, request: &[u8]) -> Result<(), String>;
    /// The next answered (or failed: no reply in time, as of `now`) order.
    fn poll(&mut self, now: Millis) -> Option<Answered>;
    /// Orders sent and not answered yet.
    fn pending(&self) -> usize;
    /// Hands back a reply's buffer once read, for a later reply to reuse.
    fn recycle(&mut self, _reply: Vec<u8>) {}
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

/// An ng request written straight into its buffer: a dictionary whose
/// entries are added in key order (bencode requires sorted keys).
struct Request {
    out: Vec<u8>,
    #[cfg(debug_assertions)]
    last: &'static str,
}

impl Request {
    fn new(size: usize) -> Request {
        let mut out = Vec::with_capacity(size + 160);
        out.push(b'd');
        Request {
            out,
            #[cfg(debug_assertions)]
            last: "",
        }
    }

    fn key(&mut self, k: &'static str) -> &mut Vec<u8> {
        #[cfg(debug_assertions)]
        {
            debug_assert!(k > self.last, "ng keys in order: {k} after {}", self.last);
            self.last = k;
        }
        bencode::put_bytes(&mut self.out, k.as_bytes());
        &mut self.out
    }

    fn bytes(&mut self, k: &'static str, v: &[u8]) -> &mut Self {
        let out = self.key(k);
        bencode::put_bytes(out, v);
        self
    }

    /// `k: [item]`.
    fn one_item_list(&mut self, k: &'static str, item: &[u8]) -> &mut Self {
        let out = self.key(k);
        out.push(b'l');
        bencode::put_bytes(out, item);
        out.push(b'e');
        self
    }

    /// `replace: [origin]`: the relay writes its own o= line.
    fn replace_origin(&mut self) -> &mut Self {
        self.one_item_list("replace", b"origin")
    }

    /// `flags: [totals-only]`: the reply carries the call's totals without
    /// the per-tag detail (all a call's record keeps).
    fn totals_only(&mut self) -> &mut Self {
        self.one_item_list("flags", b"totals-only")
    }

    fn done(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.push(b'e');
        out
    }
}

/// The SDP of an offer or answer reply, or the relay's reason for refusing.
pub fn reply_sdp(reply: &[u8]) -> Result<Vec<u8>, String> {
    let find = |key: &str| bencode::lookup(reply, &[key]).map_err(|e| format!("relay reply: {e}"));
    match find("result")?.as_ref().and_then(Value::as_bytes) {
        Some(b"ok") => find("sdp")?
            .as_ref()
            .and_then(Value::as_bytes)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "relay reply without SDP".to_string()),
        _ => Err(find("error-reason")?
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or("relay refused the order")
            .to_string()),
    }
}

fn proto(srtp: bool) -> &'static [u8] {
    if srtp { b"RTP/SAVP" } else { b"RTP/AVP" }
}

/// An offer of `sdp` from side `from`; the reply holds the SDP for the other
/// side (with SRTP when `srtp_out`).
pub fn offer(call: &[u8], from: &[u8], sdp: &[u8], srtp_out: bool) -> Vec<u8> {
    let sdp = &hide_identity(sdp);
    Request::new(call.len() + from.len() + sdp.len())
        .bytes("call-id", call)
        .bytes("command", b"offer")
        .bytes("from-tag", from)
        .replace_origin()
        .bytes("sdp", sdp)
        .bytes("transport-protocol", proto(srtp_out))
        .done()
}

/// An answer with `sdp` from side `to` to an offer from `from`; the reply
/// holds the SDP for the offerer.
pub fn answer(call: &[u8], from: &[u8], to: &[u8], sdp: &[u8], srtp_out: bool) -> Vec<u8> {
    let sdp = &hide_identity(sdp);
    Request::new(call.len() + from.len() + to.len() + sdp.len())
        .bytes("call-id", call)
        .bytes("command", b"answer")
        .bytes("from-tag", from)
        .replace_origin()
        .bytes("sdp", sdp)
        .bytes("to-tag", to)
        .bytes("transport-protocol", proto(srtp_out))
        .done()
}

/// Topology hiding of what a session description says about the software
/// and user that wrote it: `a=tool:` lines go (session and media level),
/// and the `o=` username and the `s=` name become `-` (RFC 4566 §5.2, §5.3:
/// "-" when there is nothing to say). The relay replaces the addresses.
/// A description that does not parse is passed on as it is (the relay
/// refuses it with its reason).
pub fn hide_identity(sdp: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    let Ok(mut parsed) = rvoip_dataplane::sdp::Sdp::parse(sdp) else {
        return Cow::Borrowed(sdp);
    };
    let is_tool = |l: &rvoip_dataplane::sdp::Line<'_>| {
        l.attribute()
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case(b"tool"))
    };
    parsed.session.retain(|l| !is_tool(l));
    for m in parsed.media.iter_mut() {
        m.lines.retain(|l| !is_tool(l));
    }
    for l in parsed.session.iter_mut() {
        match l.kind {
            b'o' => {
                if let Some(sp) = l.value.iter().position(|b| *b == b' ') {
                    let mut v = b"-".to_vec();
                    v.extend_from_slice(&l.value[sp..]);
                    l.value = Cow::Owned(v);
                }
            }
            b's' => l.value = Cow::Borrowed(b"-"),
            _ => {}
        }
    }
    Cow::Owned(parsed.to_bytes())
}

/// The deletion of a call's media.
pub fn delete(call: &[u8]) -> Vec<u8> {
    Request::new(call.len())
        .bytes("call-id", call)
        .bytes("command", b"delete")
        .totals_only()
        .done()
}

/// The relay's totals in a delete reply.
pub fn reply_totals(reply: &[u8]) -> Result<MediaTotals, String> {
    // One pass to the small `totals.RTP` dictionary (a relay that ignores
    // `totals-only` puts its per-tag report before it: stepped over once).
    let rtp =
        bencode::lookup(reply, &["totals", "RTP"]).map_err(|e| format!("relay reply: {e}"))?;
    let get = |k: &str| {
        rtp.as_ref()
            .and_then(|r| r.get(k))
            .and_then(Value::as_int)
            .map_or(0, |n| n.max(0) as u64)
    };
    Ok(MediaTotals {
        packets: get("packets"),
        bytes: get("bytes"),
        errors: get("errors"),
    })
}

/// How long an order waits for its reply before it is sent again (same
/// cookie: the relay answers a repeat from its cache), and how many tries.
const RETRY: Millis = 200;
const TRIES: u32 = 3;

#[derive(Debug)]
struct Pending {
    token: u64,
    datagram: Vec<u8>,
    sent: Millis,
    tries: u32,
}

/// Media orders over the dataplane's order channel (`media.ring`).
#[derive(Debug)]
pub struct ShmOrders {
    channel: Channel,
    /// This control plane's cookie prefix (`<12 hex digits>-`): replies to
    /// an earlier control plane's orders are not ours.
    prefix: Vec<u8>,
    next: u64,
    /// Orders in flight by the number in their cookie.
    pending: FxHashMap<u64, Pending>,
    last_check: Millis,
    /// Buffers of replies read, for the next replies.
    spare: Vec<Vec<u8>>,
}

impl ShmOrders {
    /// Attaches to the order channel in `ring_dir`; `entropy` makes this
    /// control plane's cookie prefix.
    pub fn open(ring_dir: &Path, entropy: &dyn Entropy) -> Result<ShmOrders, String> {
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
        let _ = entropy.fill(&mut nonce);
        Ok(ShmOrders {
            channel,
            prefix: nonce
                .iter()
                .map(|b| format!("{b:02x}"))
                .chain(std::iter::once("-".to_string()))
                .collect::<String>()
                .into_bytes(),
            next: 0,
            pending: FxHashMap::default(),
            last_check: 0,
            spare: Vec::new(),
        })
    }

    /// The ring replies arrive on, to sleep on with the SIP rings.
    pub fn replies(&self) -> rvoip_dataplane::shm::Consumer<'_> {
        self.channel.consumer(Direction::ToControlPlane)
    }
}

impl MediaOrders for ShmOrders {
    fn send(&mut self, now: Millis, token: u64, req: &[u8]) -> Result<(), String> {
        self.next += 1;
        let mut digits = [0u8; 20];
        let n = rvoip_dataplane::text::decimal(self.next, &mut digits);
        let mut datagram = Vec::with_capacity(self.prefix.len() + n.len() + 1 + req.len());
        datagram.extend_from_slice(&self.prefix);
        datagram.extend_from_slice(n);
        datagram.push(b' ');
        datagram.extend_from_slice(req);
        self.channel
            .producer(Direction::ToDataplane)
            .push(1, &[0u8; META_BYTES], &datagram)
            .map_err(|_| "the media order channel is full".to_string())?;
        self.pending.insert(
            self.next,
            Pending {
                token,
                datagram,
                sent: now,
                tries: 1,
            },
        );
        Ok(())
    }

    fn poll(&mut self, now: Millis) -> Option<Answered> {
        let mut replies = self.channel.consumer(Direction::ToControlPlane);
        while let Some(r) = replies.peek() {
            let payload = r.payload;
            let sp = payload.iter().position(|b| *b == b' ');
            let found = sp.and_then(|sp| {
                let n = payload[..sp].strip_prefix(self.prefix.as_slice())?;
                let n = std::str::from_utf8(n).ok()?.parse::<u64>().ok()?;
                let p = self.pending.remove(&n)?;
                let mut body = self.spare.pop().unwrap_or_default();
                body.clear();
                body.extend_from_slice(&payload[sp + 1..]);
                Some((p.token, body))
            });
            replies.advance();
            if let Some((token, body)) = found {
                return Some((token, Ok(body)));
            }
        }
        // Unanswered orders: asked again, then given up.
        if self.pending.is_empty() || now.saturating_sub(self.last_check) < RETRY / 4 {
            return None;
        }
        self.last_check = now;
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.sent) >= RETRY)
            .map(|(c, _)| *c)
            .collect();
        for cookie in late {
            let Some(p) = self.pending.get_mut(&cookie) else {
                continue;
            };
            if p.tries >= TRIES {
                let token = p.token;
                self.pending.remove(&cookie);
                return Some((
                    token,
                    Err("the relay did not answer the media order".into()),
                ));
            }
            p.tries += 1;
            p.sent = now;
            let _ = self.channel.producer(Direction::ToDataplane).push(
                1,
                &[0u8; META_BYTES],
                &p.datagram,
            );
        }
        None
    }

    fn pending(&self) -> usize {
        self.pending.len()
    }

    fn recycle(&mut self, reply: Vec<u8>) {
        // A few in hand cover one pass's replies.
        if self.spare.len() < 16 {
            self.spare.push(reply);
        }
    }
}

#[cfg(test)]
mod identity_tests {
    use super::hide_identity;

    #[test]
    fn the_tool_the_username_and_the_session_name_are_hidden() {
        let sdp = b"v=0\r\no=alice-softphone 3891 3891 IN IP4 127.0.0.2\r\ns=baresip 1.0\r\n\
c=IN IP4 127.0.0.2\r\nt=0 0\r\na=tool:baresip 1.0.0\r\na=sendrecv\r\n\
m=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=tool:libre\r\n";
        let hidden = String::from_utf8_lossy(&hide_identity(sdp)).into_owned();
        assert!(
            hidden.contains("o=- 3891 3891 IN IP4 127.0.0.2\r\n"),
            "{hidden}"
        );
        assert!(hidden.contains("s=-\r\n"), "{hidden}");
        assert!(
            !hidden.contains("tool") && !hidden.contains("baresip") && !hidden.contains("alice"),
            "{hidden}"
        );
        // What the call needs stays.
        for kept in [
            "a=sendrecv",
            "m=audio 7000 RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
            "c=IN IP4 127.0.0.2",
        ] {
            assert!(hidden.contains(kept), "{kept}: {hidden}");
        }
    }
}
