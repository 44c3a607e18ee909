//! Media orders: the B2BUA anchors every call's media on the relay with
//! typed orders ([`MediaOrder`]: offer, answer, delete), the contract the
//! ng protocol is also translated into. In the appliance they travel over
//! the shared-memory order channel ([`ShmOrders`]); tests serve them
//! in-process. A failure comes back as an [`OrderError`], which says which
//! SIP status the caller gets.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use rustc_hash::FxHashMap;
use rvoip_dataplane::entropy::Entropy;
use rvoip_dataplane::media::orders::{
    AddressFamily, CodecOptions, CodecSpec, IceFlag, MediaOrder, OrderError, OrderRef, Outcome,
    Profile, SdpOptions, record,
};
use rvoip_dataplane::media::plan::MediaError;
use rvoip_dataplane::shm::{Channel, Direction, META_BYTES};

use crate::transaction::Millis;

/// Media totals of a call as the relay reports them when it is deleted.
pub use rvoip_dataplane::media::orders::Totals as MediaTotals;

/// An order's token and its outcome.
pub type Answered = (u64, Outcome);

/// Something that carries out media orders, asynchronously: the B2BUA
/// sends an order and carries on; the outcome comes back later through
/// `poll`.
pub trait MediaOrders: Send {
    /// Sends one order; its outcome comes back from [`MediaOrders::poll`]
    /// with `token`. `now` is the control plane's clock, for the order's
    /// reply deadline.
    fn send(&mut self, now: Millis, token: u64, order: OrderRecord) -> Result<(), OrderError>;
    /// The next answered (or failed: no reply in time, as of `now`) order.
    fn poll(&mut self, now: Millis) -> Option<Answered>;
    /// Orders sent and not answered yet.
    fn pending(&self) -> usize;
}

/// The SDP an offer or answer returned, or why there is none.
pub fn reply_sdp(outcome: Outcome) -> Result<Vec<u8>, OrderError> {
    match outcome {
        Outcome::Sdp(s) => Ok(s),
        Outcome::Failed(e) => Err(e),
        _ => Err(OrderError::Unacceptable(
            "the relay answered an SDP order without SDP".into(),
        )),
    }
}

/// The relay's totals in a delete's outcome.
pub fn reply_totals(outcome: &Outcome) -> MediaTotals {
    match outcome {
        Outcome::Totals(t) => *t,
        _ => MediaTotals::default(),
    }
}

/// What the relay gives the side an SDP goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protection {
    /// SRTP keyed by SDES (RTP/SAVP).
    pub srtp: bool,
    /// WebRTC: ICE-lite, DTLS-SRTP, rtcp-mux (UDP/TLS/RTP/SAVPF).
    pub webrtc: bool,
    /// RTCP on its own port towards it (the offer came from WebRTC, which
    /// multiplexes, and goes to a side that may not).
    pub demux: bool,
}

fn options(out: Protection) -> SdpOptions {
    SdpOptions {
        replace_origin: true,
        transport_protocol: Some(if out.webrtc {
            Profile::DtlsSavpf
        } else if out.srtp {
            Profile::Savp
        } else {
            Profile::Avp
        }),
        ice: Some(if out.webrtc {
            IceFlag::Force
        } else {
            IceFlag::Remove
        }),
        mux_demux: out.demux && !out.webrtc,
        ..SdpOptions::default()
    }
}

/// A media order as the record the order channel carries, written from
/// the call's own octets (no order is built first); its sender and number
/// are stamped when it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord(pub Vec<u8>);

impl OrderRecord {
    /// The order it reads back as.
    pub fn order(&self) -> Option<MediaOrder> {
        record::read_order(&self.0).map(|(_, _, o)| o)
    }
}

/// The relay addresses an offer asks for: the other side is reached from
/// rvoip's address `to_local` and gets the relay's address of the same
/// family, or `to_iface` (its realm's own); the offerer gets `from_iface`
/// (its realm's own) or the relay's address of its SDP's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sides {
    /// rvoip's address towards the other side.
    pub to_local: SocketAddr,
    /// The offerer's realm's relay address, if it has one.
    pub from_iface: Option<IpAddr>,
    /// The other side's realm's relay address, if it has one.
    pub to_iface: Option<IpAddr>,
}

/// An offer of `sdp` from side `from`; the reply holds the SDP for the other
/// side (protected as `out` says), at the relay addresses `sides` says.
pub fn offer(call: &[u8], from: &[u8], sdp: &[u8], out: Protection, sides: Sides) -> OrderRecord {
    offer_with(call, from, sdp, out, sides, CodecOptions::default())
}

/// An offer as [`offer`], with codec options: what the other side is
/// offered and whether the relay may transcode.
pub fn offer_with(
    call: &[u8],
    from: &[u8],
    sdp: &[u8],
    out: Protection,
    sides: Sides,
    codecs: CodecOptions,
) -> OrderRecord {
    let sdp = hide_identity(sdp);
    OrderRecord(record::order_record(&OrderRef::Offer {
        call_id: call,
        from_tag: from,
        sdp: &sdp,
        options: SdpOptions {
            codecs,
            address_family: Some(if sides.to_local.is_ipv6() {
                AddressFamily::Ip6
            } else {
                AddressFamily::Ip4
            }),
            from_interface: sides.from_iface,
            to_interface: sides.to_iface,
            ..options(out)
        },
    }))
}

/// The codec options of an offer towards a side that is offered `codecs`
/// (encoding names or static payload numbers) and transcoded for: the
/// caller's other codecs hidden (telephone-event and comfort noise kept),
/// the listed ones added where the caller lacks them.
pub fn transcoding_to(codecs: &[String]) -> CodecOptions {
    let spec = |c: &String| {
        let name = match c.parse::<u8>() {
            Ok(pt) => rvoip_codecs::static_name(pt).unwrap_or(c).to_string(),
            Err(_) => c.clone(),
        };
        CodecSpec::parse(name.as_bytes())
    };
    CodecOptions {
        mask: vec![CodecSpec {
            name: b"all".to_vec(),
            ..CodecSpec::default()
        }],
        transcode: codecs.iter().filter_map(spec).collect(),
        ..CodecOptions::default()
    }
}

/// The answer `sdp` from side `to`; the reply holds the SDP for the offerer
/// (protected as `out` says).
pub fn answer(call: &[u8], to: &[u8], sdp: &[u8], out: Protection) -> OrderRecord {
    let sdp = hide_identity(sdp);
    OrderRecord(record::order_record(&OrderRef::Answer {
        call_id: call,
        to_tag: to,
        sdp: &sdp,
        options: options(out),
    }))
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

/// The end of a call's media; the reply holds its totals.
pub fn delete(call: &[u8]) -> OrderRecord {
    OrderRecord(record::order_record(&OrderRef::Delete { call_id: call }))
}

/// The order asking a live call's figures.
pub fn query(call: &[u8]) -> OrderRecord {
    OrderRecord(record::order_record(&OrderRef::Query { call_id: call }))
}

/// How long an order waits for its outcome before it is sent again (same
/// number: the relay answers a repeat from its cache), and how many tries.
const RETRY: Millis = 200;
const TRIES: u32 = 3;

#[derive(Debug)]
struct Pending {
    token: u64,
    record: Vec<u8>,
    sent: Millis,
    tries: u32,
}

/// Media orders over the dataplane's order channel (`media.ring`).
#[derive(Debug)]
pub struct ShmOrders {
    channel: Channel,
    /// This control plane's sender id: outcomes of an earlier control
    /// plane's orders are not ours.
    sender: u64,
    next: u64,
    /// Orders in flight by their number.
    pending: FxHashMap<u64, Pending>,
    last_check: Millis,
}

impl ShmOrders {
    /// Attaches to the order channel in `ring_dir`; `entropy` makes this
    /// control plane's sender id.
    pub fn open(ring_dir: &Path, entropy: &dyn Entropy) -> std::io::Result<ShmOrders> {
        Self::open_shard(ring_dir, 0, entropy)
    }

    /// Attaches to control-plane shard `shard`'s order channel in
    /// `ring_dir`.
    pub fn open_shard(
        ring_dir: &Path,
        shard: usize,
        entropy: &dyn Entropy,
    ) -> std::io::Result<ShmOrders> {
        let path = rvoip_dataplane::engine::ng_shm::shard_orders_path(ring_dir, shard);
        let channel = Channel::open(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        // Outcomes left from an earlier control plane are not ours.
        {
            let mut c = channel.consumer(Direction::ToControlPlane);
            while c.peek().is_some() {
                c.advance();
            }
        }
        let mut id = [0u8; 8];
        let _ = entropy.fill(&mut id);
        Ok(ShmOrders {
            channel,
            sender: u64::from_le_bytes(id),
            next: 0,
            pending: FxHashMap::default(),
            last_check: 0,
        })
    }

    /// The ring outcomes arrive on, to sleep on with the SIP rings.
    pub fn replies(&self) -> rvoip_dataplane::shm::Consumer<'_> {
        self.channel.consumer(Direction::ToControlPlane)
    }
}

/// An order the relay never answered.
fn unanswered() -> OrderError {
    OrderError::Media(MediaError::WorkerGone)
}

impl MediaOrders for ShmOrders {
    fn send(&mut self, now: Millis, token: u64, order: OrderRecord) -> Result<(), OrderError> {
        self.next += 1;
        let mut rec = order.0;
        record::stamp(&mut rec, self.sender, self.next);
        self.channel
            .producer(Direction::ToDataplane)
            .push(1, &[0u8; META_BYTES], &rec)
            .map_err(|_| unanswered())?;
        self.pending.insert(
            self.next,
            Pending {
                token,
                record: rec,
                sent: now,
                tries: 1,
            },
        );
        Ok(())
    }

    fn poll(&mut self, now: Millis) -> Option<Answered> {
        let mut replies = self.channel.consumer(Direction::ToControlPlane);
        while let Some(r) = replies.peek() {
            let found = record::read_outcome(r.payload)
                .filter(|(sender, _, _)| *sender == self.sender)
                .and_then(|(_, n, outcome)| Some((self.pending.remove(&n)?.token, outcome)));
            replies.advance();
            if found.is_some() {
                return found;
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
            .map(|(n, _)| *n)
            .collect();
        for n in late {
            let Some(p) = self.pending.get_mut(&n) else {
                continue;
            };
            if p.tries >= TRIES {
                let token = p.token;
                self.pending.remove(&n);
                return Some((token, Outcome::Failed(unanswered())));
            }
            p.tries += 1;
            p.sent = now;
            let _ = self.channel.producer(Direction::ToDataplane).push(
                1,
                &[0u8; META_BYTES],
                &p.record,
            );
        }
        None
    }

    fn pending(&self) -> usize {
        self.pending.len()
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
