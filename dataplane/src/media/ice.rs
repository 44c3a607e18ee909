//! ICE-lite (RFC 8445 §2.5) on a relay port, sans-IO: the STUN Binding
//! requests (RFC 5389) a full agent (a browser) sends to rvoip's host
//! candidate are checked and answered, and their arrival keeps the
//! consent to send (RFC 7675).
//!
//! A request is answered only when it is a well-formed Binding request
//! whose USERNAME starts with rvoip's ufrag and whose MESSAGE-INTEGRITY is
//! the HMAC-SHA1 of rvoip's password (the short-term credential of RFC 8445
//! §7.2.2); a FINGERPRINT, when present, must match. The answer carries
//! XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT. A lite agent is
//! always controlled: a request with USE-CANDIDATE nominates the address
//! it came from, where media then goes.
//!
//! [`classify`] tells STUN, DTLS and RTP/RTCP apart on one port by their
//! first octet (RFC 7983 §7).

use std::net::{IpAddr, SocketAddr};

use subtle::ConstantTimeEq;

/// STUN's magic cookie (RFC 5389 §6).
pub const MAGIC: u32 = 0x2112_A442;
const HEADER: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_INTEGRITY: u16 = 0x0008;
const ATTR_XOR_MAPPED: u16 = 0x0020;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
const ATTR_PRIORITY: u16 = 0x0024;
const ATTR_ICE_CONTROLLING: u16 = 0x802a;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// How long consent lasts after the last check answered (RFC 7675 §5.1).
pub const CONSENT_MS: u64 = 30_000;

/// What a packet on a WebRTC port is, by its first octet (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 0–3: STUN.
    Stun,
    /// 20–63: DTLS.
    Dtls,
    /// 128–191: RTP or RTCP.
    Media,
    /// Anything else: dropped.
    Other,
}

/// Classifies a packet received on a port that carries ICE, DTLS and media.
pub fn classify(packet: &[u8]) -> Kind {
    match packet.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) => Kind::Media,
        _ => Kind::Other,
    }
}

/// Why a STUN packet was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a well-formed STUN message.
    Malformed,
    /// A STUN message other than a Binding request (a response, an
    /// indication): nothing to answer.
    NotBindingRequest,
    /// Its USERNAME is missing or does not start with rvoip's ufrag.
    WrongUser,
    /// Its MESSAGE-INTEGRITY is missing or wrong.
    BadIntegrity,
    /// Its FINGERPRINT is wrong.
    BadFingerprint,
}

impl Refusal {
    /// Its counter name.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::NotBindingRequest => "not_binding_request",
            Refusal::WrongUser => "wrong_user",
            Refusal::BadIntegrity => "bad_integrity",
            Refusal::BadFingerprint => "bad_fingerprint",
        }
    }
}

/// A check answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Octets of the answer written.
    pub len: usize,
    /// The request carried USE-CANDIDATE: its source is where media goes.
    pub nominated: bool,
}

/// One leg's ICE-lite agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceLite {
    ufrag: String,
    pwd: String,
    /// When the last check was answered (ms), for consent.
    last_check: Option<u64>,
    /// The address the controlling agent nominated.
    nominated: Option<SocketAddr>,
}

/// Reads a big-endian u16 at `at`.
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// One attribute of a STUN message: its type, value, and the offset of
/// its header.
type Attribute<'a> = (u16, &'a [u8], usize);

/// The attributes of a STUN message, in order.
fn attributes(msg: &[u8]) -> Result<Vec<Attribute<'_>>, Refusal> {
    let mut out = Vec::with_capacity(8);
    let mut at = HEADER;
    while at < msg.len() {
        let kind = u16_at(msg, at).ok_or(Refusal::Malformed)?;
        let len = usize::from(u16_at(msg, at + 2).ok_or(Refusal::Malformed)?);
        let value = msg.get(at + 4..at + 4 + len).ok_or(Refusal::Malformed)?;
        out.push((kind, value, at));
        at += 4 + len.div_ceil(4) * 4;
    }
    if at != msg.len() {
        return Err(Refusal::Malformed);
    }
    Ok(out)
}

/// HMAC-SHA1 of `msg` up to the MESSAGE-INTEGRITY attribute at `at`, with
/// the header's length covering it (RFC 5389 §15.4).
fn integrity(msg: &[u8], at: usize, key: &[u8]) -> [u8; 20] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    let len = (at - HEADER + 24) as u16;
    ctx.update(&msg[..2]);
    ctx.update(&len.to_be_bytes());
    ctx.update(&msg[4..at]);
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// CRC-32 of `msg` up to the FINGERPRINT attribute at `at`, with the
/// header's length covering it, XOR 0x5354554e (RFC 5389 §15.5).
fn fingerprint(msg: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let len = (at - HEADER + 8) as u16;
    h.update(&msg[..2]);
    h.update(&len.to_be_bytes());
    h.update(&msg[4..at]);
    h.finalize() ^ FINGERPRINT_XOR
}

impl IceLite {
    /// An agent with rvoip's ufrag and password for this leg (what its
    /// SDP's `a=ice-ufrag` and `a=ice-pwd` say).
    pub fn new(ufrag: &str, pwd: &str) -> IceLite {
        IceLite {
            ufrag: ufrag.to_string(),
            pwd: pwd.to_string(),
            last_check: None,
            nominated: None,
        }
    }

    /// rvoip's ufrag.
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// rvoip's password.
    pub fn pwd(&self) -> &str {
        &self.pwd
    }

    /// The address the controlling agent nominated, if it has.
    pub fn nominated(&self) -> Option<SocketAddr> {
        self.nominated
    }

    /// Whether rvoip may send to the peer at `now_ms`: a check was answered
    /// within the last 30 s (RFC 7675).
    pub fn consent(&self, now_ms: u64) -> bool {
        self.last_check
            .is_some_and(|t| now_ms.saturating_sub(t) < CONSENT_MS)
    }

    /// Checks a STUN packet from `from` received at `now_ms`; a Binding
    /// request that passes is answered into `out` (cleared first).
    pub fn on_stun(
        &mut self,
        msg: &[u8],
        from: SocketAddr,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<Answered, Refusal> {
        if msg.len() < HEADER
            || msg[0] & 0xc0 != 0
            || u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]) != MAGIC
            || usize::from(u16_at(msg, 2).ok_or(Refusal::Malformed)?) != msg.len() - HEADER
            || !msg.len().is_multiple_of(4)
        {
            return Err(Refusal::Malformed);
        }
        if u16_at(msg, 0) != Some(BINDING_REQUEST) {
            return Err(Refusal::NotBindingRequest);
        }
        let attrs = attributes(msg)?;
        let find = |t: u16| attrs.iter().find(|a| a.0 == t);
        // FINGERPRINT, when present, is last and covers all before it.
        if let Some(&(_, value, at)) = find(ATTR_FINGERPRINT) {
            let expected = fingerprint(msg, at);
            if value.len() != 4
                || u32::from_be_bytes([value[0], value[1], value[2], value[3]]) != expected
                || at + 8 != msg.len()
            {
                return Err(Refusal::BadFingerprint);
            }
        }
        let user = find(ATTR_USERNAME).map(|a| a.1).ok_or(Refusal::WrongUser)?;
        let ours = user
            .split(|b| *b == b':')
            .next()
            .is_some_and(|u| u == self.ufrag.as_bytes());
        if !ours || !user.contains(&b':') {
            return Err(Refusal::WrongUser);
        }
        let &(_, mac, at) = find(ATTR_INTEGRITY).ok_or(Refusal::BadIntegrity)?;
        // Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are not
        // covered by it: refused (RFC 5389 §15.4).
        let after_ok = attrs
            .iter()
            .filter(|a| a.2 > at)
            .all(|a| a.0 == ATTR_FINGERPRINT);
        if mac.len() != 20
            || !after_ok
            || !bool::from(mac.ct_eq(&integrity(msg, at, self.pwd.as_bytes())))
        {
            return Err(Refusal::BadIntegrity);
        }
        let nominated = find(ATTR_USE_CANDIDATE).is_some();
        if nominated {
            self.nominated = Some(from);
        }
        self.last_check = Some(now_ms);
        self.answer(&msg[8..20], from, out);
        Ok(Answered {
            len: out.len(),
            nominated,
        })
    }

    /// The Binding success response to transaction `txid` from `from`.
    fn answer(&self, txid: &[u8], from: SocketAddr, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(txid);
        // XOR-MAPPED-ADDRESS (RFC 5389 §15.2).
        let port = from.port() ^ (MAGIC >> 16) as u16;
        match from.ip() {
            IpAddr::V4(a) => {
                out.extend_from_slice(&ATTR_XOR_MAPPED.to_be_bytes());
                out.extend_from_slice(&8u16.to_be_bytes());
                out.extend_from_slice(&[0, 1]);
                out.extend_from_slice(&port.to_be_bytes());
                out.extend_from_slice(&(u32::from(a) ^ MAGIC).to_be_bytes());
            }
            IpAddr::V6(a) => {
                out.extend_from_slice(&ATTR_XOR_MAPPED.to_be_bytes());
                out.extend_from_slice(&20u16.to_be_bytes());
                out.extend_from_slice(&[0, 2]);
                out.extend_from_slice(&port.to_be_bytes());
                let mut mask = [0u8; 16];
                mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
                mask[4..].copy_from_slice(txid);
                out.extend(a.octets().iter().zip(mask).map(|(x, m)| x ^ m));
            }
        }
        let at = out.len();
        let mac = integrity(out, at, self.pwd.as_bytes());
        out.extend_from_slice(&ATTR_INTEGRITY.to_be_bytes());
        out.extend_from_slice(&20u16.to_be_bytes());
        out.extend_from_slice(&mac);
        let at = out.len();
        let crc = fingerprint(out, at);
        out.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&crc.to_be_bytes());
        let len = (out.len() - HEADER) as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

/// Where a controlling agent's check to one remote address stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairState {
    /// Sent (`tries` times), no answer yet.
    InProgress,
    /// Answered: the pair works (and, with aggressive nomination, is
    /// nominated).
    Succeeded,
    /// No answer after every retransmission.
    Failed,
}

/// One candidate pair: rvoip's host candidate and a remote address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair {
    remote: SocketAddr,
    txid: [u8; 12],
    state: PairState,
    tries: u32,
    next_ms: u64,
}

/// How many remote candidates a leg checks (the SDP's, and peer-reflexive
/// ones learned from the peer's own checks).
pub const MAX_PAIRS: usize = 8;
/// A check is sent again after this long, doubling, until
/// [`CHECK_TRIES`] went unanswered.
const CHECK_RTO_MS: u64 = 250;
const CHECK_TRIES: u32 = 7;
/// How often the selected pair is checked again for consent (RFC 7675
/// §5.1: about every 5 s).
const CONSENT_EVERY_MS: u64 = 5_000;

/// The checks of a full agent in the controlling role (RFC 8445 §6.1.4,
/// §7.2.5), when rvoip offered full ICE: one host candidate of rvoip's,
/// paired with each remote candidate; every check carries USE-CANDIDATE
/// (aggressive nomination), so the first pair answered is the selected
/// one, where media goes. Then the selected pair is checked every 5 s and
/// its answers keep the consent to send (RFC 7675). Sans-IO: what to send
/// comes from [`IceChecks::due`], answers go to [`IceChecks::on_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceChecks {
    /// `remote_ufrag:local_ufrag`.
    user: String,
    remote_pwd: String,
    tiebreaker: u64,
    pairs: Vec<Pair>,
    selected: Option<SocketAddr>,
    last_answer_ms: Option<u64>,
    next_consent_ms: u64,
    /// Feeds the transaction IDs.
    counter: u64,
}

impl IceChecks {
    /// Checks from the agent `local_ufrag` to the remote agent with
    /// `remote_ufrag` and `remote_pwd`, whose candidates are `remote`
    /// (the first [`MAX_PAIRS`]); `seed` makes transaction IDs and the
    /// tie-breaker unguessable.
    pub fn new(
        local_ufrag: &str,
        remote_ufrag: &str,
        remote_pwd: &str,
        remote: &[SocketAddr],
        seed: u64,
        now_ms: u64,
    ) -> IceChecks {
        let mut c = IceChecks {
            user: format!("{remote_ufrag}:{local_ufrag}"),
            remote_pwd: remote_pwd.to_owned(),
            tiebreaker: seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
            pairs: Vec::with_capacity(remote.len().min(MAX_PAIRS)),
            selected: None,
            last_answer_ms: None,
            next_consent_ms: 0,
            counter: seed,
        };
        for r in remote {
            c.add(*r, now_ms);
        }
        c
    }

    /// Whether these checks are for the remote agent `remote_ufrag` with
    /// `remote_pwd` (an ICE restart changes them).
    pub fn is_for(&self, remote_ufrag: &str, remote_pwd: &str) -> bool {
        self.user.split(':').next() == Some(remote_ufrag) && self.remote_pwd == remote_pwd
    }

    fn txid(&mut self) -> [u8; 12] {
        // SplitMix64 over the counter: distinct and unpredictable enough
        // for transaction IDs (RFC 5389 §6 asks for randomness against
        // guessing; the seed comes from the system's entropy).
        self.counter = self.counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.counter;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let mut t = [0u8; 12];
        t[..8].copy_from_slice(&z.to_be_bytes());
        t[8..].copy_from_slice(&(self.counter as u32).to_be_bytes());
        t
    }

    /// Pairs a remote address (a candidate, or the source of a check the
    /// peer sent: a peer-reflexive candidate, RFC 8445 §7.3.1.3), checked
    /// at once. False when it is known already or there is no room.
    pub fn add(&mut self, remote: SocketAddr, now_ms: u64) -> bool {
        if self.pairs.len() >= MAX_PAIRS || self.pairs.iter().any(|p| p.remote == remote) {
            return false;
        }
        let txid = self.txid();
        self.pairs.push(Pair {
            remote,
            txid,
            state: PairState::InProgress,
            tries: 0,
            next_ms: now_ms,
        });
        true
    }

    /// The checks to send at `now_ms`, each as (where to, the request):
    /// first checks, retransmissions, and once a pair is selected its
    /// consent checks.
    pub fn due(&mut self, now_ms: u64, mut send: impl FnMut(SocketAddr, Vec<u8>)) {
        if let Some(selected) = self.selected {
            if now_ms >= self.next_consent_ms {
                self.next_consent_ms = now_ms + CONSENT_EVERY_MS;
                let txid = self.txid();
                if let Some(p) = self.pairs.iter_mut().find(|p| p.remote == selected) {
                    p.txid = txid;
                }
                send(
                    selected,
                    binding_request(&self.user, &self.remote_pwd, txid, self.tiebreaker),
                );
            }
            return;
        }
        for i in 0..self.pairs.len() {
            let p = &self.pairs[i];
            if p.state != PairState::InProgress || now_ms < p.next_ms {
                continue;
            }
            if p.tries >= CHECK_TRIES {
                self.pairs[i].state = PairState::Failed;
                continue;
            }
            let p = &mut self.pairs[i];
            p.tries += 1;
            p.next_ms = now_ms + (CHECK_RTO_MS << (p.tries - 1).min(4));
            let (remote, txid) = (p.remote, p.txid);
            send(
                remote,
                binding_request(&self.user, &self.remote_pwd, txid, self.tiebreaker),
            );
        }
    }

    /// When [`IceChecks::due`] next has something to send.
    pub fn next_due_ms(&self) -> Option<u64> {
        if self.selected.is_some() {
            return Some(self.next_consent_ms);
        }
        self.pairs
            .iter()
            .filter(|p| p.state == PairState::InProgress)
            .map(|p| p.next_ms)
            .min()
    }

    /// A STUN message from `from`: an answer to one of the checks (its
    /// MESSAGE-INTEGRITY keyed with the remote password) marks its pair
    /// succeeded and, the first time, selects it. Returns the pair it
    /// selected, if this answer did.
    pub fn on_response(&mut self, msg: &[u8], from: SocketAddr, now_ms: u64) -> Option<SocketAddr> {
        let txid = binding_success(msg, &self.remote_pwd)?;
        let pair = self
            .pairs
            .iter_mut()
            .find(|p| p.txid == txid && p.remote == from)?;
        pair.state = PairState::Succeeded;
        self.last_answer_ms = Some(now_ms);
        if self.selected.is_none() {
            self.selected = Some(from);
            self.next_consent_ms = now_ms + CONSENT_EVERY_MS;
            return Some(from);
        }
        None
    }

    /// The selected pair's remote address, once a check was answered.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Whether the peer answered a check within the last 30 s (RFC 7675).
    pub fn consent(&self, now_ms: u64) -> bool {
        self.last_answer_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < CONSENT_MS)
    }

    /// Whether every pair failed (nothing to send media to).
    pub fn failed(&self) -> bool {
        !self.pairs.is_empty() && self.pairs.iter().all(|p| p.state == PairState::Failed)
    }
}

/// A connectivity check as a controlling agent (a browser, or the load
/// generator standing in for one) sends it with aggressive nomination:
/// USERNAME `user` (`theirs:ours`), PRIORITY of a host candidate,
/// ICE-CONTROLLING with `tiebreaker`, USE-CANDIDATE, MESSAGE-INTEGRITY
/// keyed with the peer's `pwd`, FINGERPRINT (RFC 8445 §7.1.1).
pub fn binding_request(user: &str, pwd: &str, txid: [u8; 12], tiebreaker: u64) -> Vec<u8> {
    let mut req = Vec::with_capacity(HEADER + 12 + user.len() + 4 + 8 + 12 + 4 + 24 + 8);
    req.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    req.extend_from_slice(&[0, 0]);
    req.extend_from_slice(&MAGIC.to_be_bytes());
    req.extend_from_slice(&txid);
    req.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
    req.extend_from_slice(&(user.len() as u16).to_be_bytes());
    req.extend_from_slice(user.as_bytes());
    req.resize(req.len() + (4 - user.len() % 4) % 4, 0);
    // Type preference 126 (host), local preference 65535, component 1.
    let priority: u32 = (126 << 24) | (65_535 << 8) | 255;
    req.extend_from_slice(&ATTR_PRIORITY.to_be_bytes());
    req.extend_from_slice(&4u16.to_be_bytes());
    req.extend_from_slice(&priority.to_be_bytes());
    req.extend_from_slice(&ATTR_ICE_CONTROLLING.to_be_bytes());
    req.extend_from_slice(&8u16.to_be_bytes());
    req.extend_from_slice(&tiebreaker.to_be_bytes());
    req.extend_from_slice(&ATTR_USE_CANDIDATE.to_be_bytes());
    req.extend_from_slice(&0u16.to_be_bytes());
    let at = req.len();
    let mac = integrity(&req, at, pwd.as_bytes());
    req.extend_from_slice(&ATTR_INTEGRITY.to_be_bytes());
    req.extend_from_slice(&20u16.to_be_bytes());
    req.extend_from_slice(&mac);
    let at = req.len();
    let crc = fingerprint(&req, at);
    req.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    req.extend_from_slice(&4u16.to_be_bytes());
    req.extend_from_slice(&crc.to_be_bytes());
    let len = (req.len() - HEADER) as u16;
    req[2..4].copy_from_slice(&len.to_be_bytes());
    req
}

/// The transaction ID of a Binding success response whose
/// MESSAGE-INTEGRITY is keyed with `pwd` (the password of the agent that
/// was checked); `None` for anything else.
pub fn binding_success(msg: &[u8], pwd: &str) -> Option<[u8; 12]> {
    if msg.len() < HEADER
        || u16_at(msg, 0) != Some(BINDING_SUCCESS)
        || u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]) != MAGIC
        || usize::from(u16_at(msg, 2)?) != msg.len() - HEADER
    {
        return None;
    }
    let attrs = attributes(msg).ok()?;
    let &(_, mac, at) = attrs.iter().find(|a| a.0 == ATTR_INTEGRITY)?;
    if mac.len() != 20 || !bool::from(mac.ct_eq(&integrity(msg, at, pwd.as_bytes()))) {
        return None;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&msg[8..20]);
    Some(txid)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// RFC 5769 §2.1: a Binding request with USERNAME `evtj:h6vY`,
    /// password `VOkJxbRl1RmTxUk/WvJxBt`, MESSAGE-INTEGRITY and FINGERPRINT.
    const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];
    const PWD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

    fn from() -> SocketAddr {
        "192.0.2.1:32853".parse().unwrap()
    }

    /// Reads the XOR-MAPPED-ADDRESS of an answer.
    fn mapped(answer: &[u8]) -> SocketAddr {
        let attrs = attributes(answer).unwrap();
        let v = attrs.iter().find(|a| a.0 == ATTR_XOR_MAPPED).unwrap().1;
        let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC >> 16) as u16;
        match v[1] {
            1 => {
                let a = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC;
                SocketAddr::new(IpAddr::V4(a.into()), port)
            }
            _ => {
                let mut mask = [0u8; 16];
                mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
                mask[4..].copy_from_slice(&answer[8..20]);
                let mut ip = [0u8; 16];
                for i in 0..16 {
                    ip[i] = v[4 + i] ^ mask[i];
                }
                SocketAddr::new(IpAddr::V6(ip.into()), port)
            }
        }
    }

    #[test]
    fn the_rfc_5769_request_passes_and_its_answer_is_signed_for_the_requester() {
        assert_eq!(classify(&RFC5769_REQUEST), Kind::Stun);
        let mut ice = IceLite::new("evtj", PWD);
        assert!(!ice.consent(0));
        let mut out = Vec::new();
        let a = ice
            .on_stun(&RFC5769_REQUEST, from(), 1_000, &mut out)
            .unwrap();
        assert_eq!(a.len, out.len());
        assert!(!a.nominated);
        assert!(ice.consent(1_000) && ice.consent(30_999) && !ice.consent(31_000));
        // The answer: a Binding success of the same transaction, the
        // requester's address, integrity with the same password, and a
        // good fingerprint.
        assert_eq!(&out[..2], &BINDING_SUCCESS.to_be_bytes());
        assert_eq!(&out[8..20], &RFC5769_REQUEST[8..20]);
        assert_eq!(
            usize::from(u16::from_be_bytes([out[2], out[3]])),
            out.len() - 20
        );
        assert_eq!(mapped(&out), from());
        let attrs = attributes(&out).unwrap();
        let (_, mac, at) = attrs
            .iter()
            .find(|a| a.0 == ATTR_INTEGRITY)
            .copied()
            .unwrap();
        assert_eq!(mac, integrity(&out, at, PWD.as_bytes()));
        let (_, crc, at) = attrs
            .iter()
            .find(|a| a.0 == ATTR_FINGERPRINT)
            .copied()
            .unwrap();
        assert_eq!(crc, fingerprint(&out, at).to_be_bytes());
        // IPv6 sources are mapped too.
        let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        ice.on_stun(&RFC5769_REQUEST, v6, 2_000, &mut out).unwrap();
        assert_eq!(mapped(&out), v6);
    }

    #[test]
    fn wrong_users_passwords_fingerprints_and_other_messages_are_not_answered() {
        let mut out = Vec::new();
        let mut at = |ice: &mut IceLite, m: &[u8]| ice.on_stun(m, from(), 0, &mut out);
        assert_eq!(
            at(&mut IceLite::new("other", PWD), &RFC5769_REQUEST),
            Err(Refusal::WrongUser)
        );
        assert_eq!(
            at(&mut IceLite::new("evtj", "wrong"), &RFC5769_REQUEST),
            Err(Refusal::BadIntegrity)
        );
        let mut ice = IceLite::new("evtj", PWD);
        let mut bad_crc = RFC5769_REQUEST;
        bad_crc[107] ^= 1;
        assert_eq!(at(&mut ice, &bad_crc), Err(Refusal::BadFingerprint));
        // A flipped octet inside the signed part: the fingerprint catches
        // it first; without a fingerprint, the integrity does.
        let mut tampered = RFC5769_REQUEST;
        tampered[45] ^= 1;
        assert_eq!(at(&mut ice, &tampered), Err(Refusal::BadFingerprint));
        let mut no_fp = tampered[..100].to_vec();
        no_fp[3] = 0x50;
        assert_eq!(at(&mut ice, &no_fp), Err(Refusal::BadIntegrity));
        let mut response = RFC5769_REQUEST;
        response[1] = 0x11;
        assert_eq!(at(&mut ice, &response), Err(Refusal::NotBindingRequest));
        for cut in [0, 19, 20, 50, 107] {
            assert_eq!(
                at(&mut ice, &RFC5769_REQUEST[..cut]),
                Err(Refusal::Malformed),
                "cut {cut}"
            );
        }
        let mut no_cookie = RFC5769_REQUEST;
        no_cookie[4] = 0;
        assert_eq!(at(&mut ice, &no_cookie), Err(Refusal::Malformed));
        assert!(out.is_empty() && !ice.consent(0));
    }

    #[test]
    fn use_candidate_nominates_the_source_and_packets_are_told_apart() {
        // A request with USE-CANDIDATE, signed as a browser signs it.
        let req = binding_request("lite:full", "secretsecretsecretsecret", [7; 12], 42);
        let mut ice = IceLite::new("lite", "secretsecretsecretsecret");
        let mut out = Vec::new();
        let a = ice.on_stun(&req, from(), 5, &mut out).unwrap();
        assert!(a.nominated);
        assert_eq!(ice.nominated(), Some(from()));
        assert_eq!(classify(&[22, 254, 253]), Kind::Dtls);
        assert_eq!(classify(&[0x80, 0]), Kind::Media);
        assert_eq!(classify(&[0xff]), Kind::Other);
        assert_eq!(classify(&[]), Kind::Other);
    }

    #[test]
    fn a_controlling_agent_nominates_the_first_pair_answered_and_keeps_consent_by_its_checks() {
        // The remote agent (as a browser answering rvoip's offer would be)
        // is played by a lite agent with its own credentials.
        let mut peer = IceLite::new("brws", "browserpasswordbrowserpw");
        let (good, dead) = (from(), "192.0.2.1:9".parse().unwrap());
        let mut c = IceChecks::new(
            "rvop",
            "brws",
            "browserpasswordbrowserpw",
            &[dead, good],
            42,
            0,
        );
        let mut sent = Vec::new();
        c.due(0, |to, req| sent.push((to, req)));
        assert_eq!(
            sent.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![dead, good]
        );
        // The peer answers the check sent to it (USERNAME brws:rvop, its
        // password): that pair is selected.
        let mut answer = Vec::new();
        let a = peer.on_stun(&sent[1].1, from(), 0, &mut answer).unwrap();
        assert!(
            a.nominated,
            "aggressive nomination: USE-CANDIDATE on every check"
        );
        assert!(!c.consent(10));
        assert_eq!(c.on_response(&answer, good, 10), Some(good));
        assert_eq!(c.selected(), Some(good));
        assert!(c.consent(10));
        // An answer from elsewhere, or one signed with another password,
        // selects nothing.
        assert_eq!(c.on_response(&answer, dead, 11), None);
        // Nothing more until the consent check 5 s on, to the selected pair only.
        sent.clear();
        c.due(4_000, |to, req| sent.push((to, req)));
        assert!(sent.is_empty());
        c.due(5_010, |to, req| sent.push((to, req)));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, good);
        // Unanswered for 30 s: no consent.
        assert!(!c.consent(30_010));
        answer.clear();
        peer.on_stun(&sent[0].1, good, 30_000, &mut answer).unwrap();
        assert_eq!(c.on_response(&answer, good, 30_020), None);
        assert!(c.consent(30_020));
    }

    #[test]
    fn unanswered_checks_are_retransmitted_then_fail_and_sources_become_pairs() {
        let dead: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let mut c = IceChecks::new("rvop", "brws", "browserpasswordbrowserpw", &[dead], 7, 0);
        let mut times = Vec::new();
        for ms in (0..40_000).step_by(10) {
            c.due(ms, |_, _| times.push(ms));
        }
        assert_eq!(times, vec![0, 250, 750, 1750, 3750, 7750, 11750]);
        c.due(40_000, |_, _| {});
        assert!(c.failed());
        // A check from a new source (a peer-reflexive candidate) is checked.
        assert!(c.add(from(), 40_000));
        assert!(!c.add(from(), 40_000), "once");
        assert!(!c.failed());
        let mut to = Vec::new();
        c.due(40_000, |t, _| to.push(t));
        assert_eq!(to, vec![from()]);
    }

    #[test]
    fn a_check_s_answer_is_recognised_only_under_the_checked_agent_s_password() {
        let pwd = "secretsecretsecretsecret";
        let req = binding_request("lite:full", pwd, [9; 12], 7);
        let mut ice = IceLite::new("lite", pwd);
        let mut out = Vec::new();
        ice.on_stun(&req, from(), 5, &mut out).unwrap();
        assert_eq!(binding_success(&out, pwd), Some([9; 12]));
        assert_eq!(binding_success(&out, "another-password-entirely"), None);
        // A request is not an answer; a truncated answer is nothing.
        assert_eq!(binding_success(&req, pwd), None);
        assert_eq!(binding_success(&out[..out.len() - 4], pwd), None);
    }
}
