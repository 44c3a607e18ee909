//! SRTP and SRTCP (RFC 3711) with the AES-CM/HMAC-SHA1 suites (RFC 3711,
//! RFC 6188) and AEAD AES-GCM (RFC 7714); SDES keying (RFC 4568) in [`sdes`].
//!
//! One [`SrtpContext`] protects *or* unprotects one direction of one call
//! leg: it holds the master key, the session keys of SRTP and SRTCP, and the
//! rollover counter and replay window of each SSRC it has seen (up to
//! [`STREAMS`], least recently used replaced). Contexts are built on the
//! control path; on the packet path nothing allocates: packets are
//! transformed in place in the receive buffer, which must have room for the
//! tag (`protect_*` report [`SrtpError::NoRoom`] otherwise).
//!
//! Driving contract: `protect_rtp(buf, len)` encrypts the RTP packet in
//! `buf[..len]` and returns the SRTP length; `unprotect_rtp(buf, len)`
//! authenticates, checks replay, decrypts, and returns the RTP length. The
//! same for RTCP. An error means "drop and count": nothing in `buf` is to be
//! sent. The crypto: ring for AES-GCM, RustCrypto `aes` + `ctr` + `hmac` +
//! `sha1` for AES-CM (SHA-NI and AES-NI paths on this hardware).

mod keys;
mod replay;
pub mod sdes;
#[cfg(test)]
mod tests;

pub use keys::{DEFAULT_LIFETIME, MAX_KEY, MAX_SALT, MasterKey, Mki};
pub use replay::{RtcpIndex, RtpIndex, WINDOW};

use keys::{Cipher, Labels, SessionKeys};
use ring::aead;
use subtle::ConstantTimeEq;

/// The protection profiles rvoip offers and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Suite {
    /// AES_CM_128_HMAC_SHA1_80 (RFC 4568 §6.2.1).
    AesCm128HmacSha1_80,
    /// AES_CM_128_HMAC_SHA1_32 (RFC 4568 §6.2.2; SRTCP keeps an 80-bit tag).
    AesCm128HmacSha1_32,
    /// AES_256_CM_HMAC_SHA1_80 (RFC 6188 §7.1).
    AesCm256HmacSha1_80,
    /// AES_256_CM_HMAC_SHA1_32 (RFC 6188 §7.1).
    AesCm256HmacSha1_32,
    /// AEAD_AES_128_GCM (RFC 7714 §14.2).
    AeadAes128Gcm,
    /// AEAD_AES_256_GCM (RFC 7714 §14.2).
    AeadAes256Gcm,
    /// F8_128_HMAC_SHA1_80 (RFC 4568 §6.2.3; AES in f8 mode, RFC 3711
    /// §4.1.2). Accepted, never offered: few endpoints implement it.
    F8128HmacSha1_80,
}

impl Suite {
    /// Every suite.
    pub const ALL: [Suite; 7] = [
        Suite::AeadAes256Gcm,
        Suite::AeadAes128Gcm,
        Suite::AesCm256HmacSha1_80,
        Suite::AesCm256HmacSha1_32,
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::F8128HmacSha1_80,
    ];

    /// The SDES name (`a=crypto` crypto-suite).
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AesCm256HmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            Suite::AesCm256HmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Suite::AeadAes256Gcm => "AEAD_AES_256_GCM",
            Suite::F8128HmacSha1_80 => "F8_128_HMAC_SHA1_80",
        }
    }

    /// The suite of an SDES name (case-sensitive, as RFC 4568 registers them).
    pub fn from_name(name: &[u8]) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name().as_bytes() == name)
    }

    /// Whether this is an AEAD (GCM) suite.
    pub fn is_gcm(self) -> bool {
        matches!(self, Suite::AeadAes128Gcm | Suite::AeadAes256Gcm)
    }

    /// Master key octets.
    pub fn master_key_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80
            | Suite::AesCm128HmacSha1_32
            | Suite::AeadAes128Gcm
            | Suite::F8128HmacSha1_80 => 16,
            _ => 32,
        }
    }

    /// Master salt octets: 112 bits, 96 for GCM (RFC 7714 §12).
    pub fn master_salt_len(self) -> usize {
        if self.is_gcm() { 12 } else { 14 }
    }

    /// Session encryption key octets.
    pub(crate) fn session_key_len(self) -> usize {
        self.master_key_len()
    }

    /// Session salt octets.
    pub(crate) fn session_salt_len(self) -> usize {
        self.master_salt_len()
    }

    /// Authentication tag octets of SRTP.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_32 | Suite::AesCm256HmacSha1_32 => 4,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => 16,
            _ => 10,
        }
    }

    /// Authentication tag octets of SRTCP: the _32 suites keep 80 bits for
    /// SRTCP (RFC 4568 §6.2.2, RFC 6188 §7.1).
    pub fn rtcp_tag_len(self) -> usize {
        if self.is_gcm() { 16 } else { 10 }
    }

    /// The most octets protecting a packet adds (SRTCP: index, MKI, tag).
    pub const MAX_OVERHEAD: usize = 4 + 4 + 16;
}

/// Why a packet was not protected or unprotected. Each maps to one drop
/// counter; none of them is ever forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpError {
    /// Shorter than its header, index, MKI and tag.
    Truncated,
    /// Not version 2, or a header that runs past the end.
    Malformed,
    /// The authentication tag does not verify (tampered, or the wrong key).
    AuthFailed,
    /// Already received (replay window).
    Replayed,
    /// Older than the replay window.
    TooOld,
    /// An MKI this context does not know.
    UnknownMki,
    /// The master key's lifetime (or the SRTCP index space) is used up.
    KeyExpired,
    /// No room in the buffer for the tag.
    NoRoom,
}

impl SrtpError {
    /// Short name for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SrtpError::Truncated => "truncated",
            SrtpError::Malformed => "malformed",
            SrtpError::AuthFailed => "auth-failed",
            SrtpError::Replayed => "replayed",
            SrtpError::TooOld => "too-old",
            SrtpError::UnknownMki => "unknown-mki",
            SrtpError::KeyExpired => "key-expired",
            SrtpError::NoRoom => "no-room",
        }
    }
}

/// What a context is configured with.
#[derive(Debug, Clone)]
pub struct SrtpParams {
    /// The protection profile.
    pub suite: Suite,
    /// Master key, salt, MKI, lifetime, key derivation rate.
    pub master: MasterKey,
    /// Authenticate RTP without encrypting it (`UNENCRYPTED_SRTP`). SDES
    /// negotiation never turns this on; it exists for the RFC 7714 vectors.
    pub danger_unencrypted_rtp: bool,
}

impl SrtpParams {
    /// Parameters with the default protection (everything encrypted).
    pub fn new(suite: Suite, master: MasterKey) -> Self {
        SrtpParams {
            suite,
            master,
            danger_unencrypted_rtp: false,
        }
    }
}

/// SSRCs tracked per context (a leg rarely has more than one per direction).
pub const STREAMS: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    ssrc: u32,
    live: bool,
    last_use: u64,
    rtp: RtpIndex,
    rtcp: RtcpIndex,
    /// SRTCP index of the last packet this context protected.
    rtcp_sent: u32,
}

/// Per-direction counters of one context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrtpCounters {
    /// Packets protected or unprotected.
    pub packets: u64,
    /// Times the session keys were derived again (KDR).
    pub rekeys: u64,
}

/// One direction of SRTP/SRTCP for one leg.
pub struct SrtpContext {
    suite: Suite,
    master: MasterKey,
    encrypt_rtp: bool,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    streams: [Stream; STREAMS],
    clock: u64,
    counters: SrtpCounters,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("master", &self.master)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Length of the RTP header, CSRCs and extension included.
fn rtp_header_len(p: &[u8]) -> Result<usize, SrtpError> {
    if p.len() < 12 {
        return Err(SrtpError::Truncated);
    }
    if p[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let mut n = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        if n + 4 > p.len() {
            return Err(SrtpError::Malformed);
        }
        n += 4 + 4 * usize::from(u16::from_be_bytes([p[n + 2], p[n + 3]]));
    }
    if n > p.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(n)
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

impl SrtpContext {
    /// A context for `params`; `None` if the key does not fit the suite.
    pub fn new(params: &SrtpParams) -> Option<Self> {
        let SrtpParams {
            suite,
            master,
            danger_unencrypted_rtp,
        } = params;
        Some(SrtpContext {
            suite: *suite,
            rtp: SessionKeys::derive(*suite, master, Labels::Rtp, 0)?,
            rtcp: SessionKeys::derive(*suite, master, Labels::Rtcp, 0)?,
            master: master.clone(),
            encrypt_rtp: !danger_unencrypted_rtp,
            streams: [Stream::default(); STREAMS],
            clock: 0,
            counters: SrtpCounters::default(),
        })
    }

    /// Whether this context runs with exactly `params` (same suite and keys).
    pub fn uses(&self, params: &SrtpParams) -> bool {
        self.suite == params.suite
            && self.encrypt_rtp != params.danger_unencrypted_rtp
            && self.master.same_as(&params.master)
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Counters so far.
    pub fn counters(&self) -> SrtpCounters {
        self.counters
    }

    /// The rollover counter of `ssrc`, if the stream is known.
    pub fn roc(&self, ssrc: crate::media::rtp::Ssrc) -> Option<u32> {
        self.find(ssrc.0).map(|i| self.streams[i].rtp.roc())
    }

    /// Sets the SRTCP index last sent for `ssrc` (the RFC 7714 examples start at 0x5d4).
    #[cfg(test)]
    fn set_rtcp_sent(&mut self, ssrc: u32, index: u32) {
        let (slot, mut s) = self.stream(ssrc);
        s.rtcp_sent = index;
        self.store(slot, s);
    }

    fn find(&self, ssrc: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.live && s.ssrc == ssrc)
    }

    /// The slot of `ssrc`, made fresh (replacing the least recently used) if
    /// the SSRC is new.
    fn slot_for(&mut self, ssrc: u32) -> usize {
        self.clock += 1;
        if let Some(i) = self.find(ssrc) {
            return i;
        }
        let (slot, fresh) = self.stream(ssrc);
        self.streams[slot] = fresh;
        slot
    }

    /// The stream of `ssrc` (a fresh one if unknown) and the slot it goes to.
    fn stream(&mut self, ssrc: u32) -> (usize, Stream) {
        self.clock += 1;
        if let Some(i) = self.find(ssrc) {
            return (i, self.streams[i]);
        }
        let slot = self
            .streams
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (s.live, s.last_use))
            .map_or(0, |(i, _)| i);
        let fresh = Stream {
            ssrc,
            live: true,
            ..Stream::default()
        };
        (slot, fresh)
    }

    fn store(&mut self, slot: usize, mut s: Stream) {
        s.last_use = self.clock;
        self.streams[slot] = s;
    }

    fn mki_len(&self) -> usize {
        self.master.mki.map_or(0, |m| usize::from(m.len))
    }

    fn spend(&mut self) -> Result<(), SrtpError> {
        if self.counters.packets >= self.master.lifetime {
            return Err(SrtpError::KeyExpired);
        }
        self.counters.packets += 1;
        Ok(())
    }

    /// Session keys of `labels` for packet `index` (re-derived when the key
    /// derivation rate moves them to a new epoch; no allocation).
    fn keys(&mut self, labels: Labels, index: u64) -> Result<&SessionKeys, SrtpError> {
        let epoch = self.master.epoch(index);
        let keys = match labels {
            Labels::Rtp => &mut self.rtp,
            Labels::Rtcp => &mut self.rtcp,
        };
        if keys.epoch != epoch {
            *keys = SessionKeys::derive(self.suite, &self.master, labels, epoch)
                .ok_or(SrtpError::KeyExpired)?;
            self.counters.rekeys += 1;
        }
        Ok(keys)
    }

    /// Encrypts and tags the RTP packet in `buf[..len]`; returns the SRTP length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let p = buf.get(..len).ok_or(SrtpError::Truncated)?;
        let hdr = rtp_header_len(p)?;
        let (seq, ssrc) = (u16::from_be_bytes([p[2], p[3]]), be32(p, 8));
        let (tag_len, mki_len) = (self.suite.rtp_tag_len(), self.mki_len());
        if len + tag_len + mki_len > buf.len() {
            return Err(SrtpError::NoRoom);
        }
        // The sender's own streams: taken in place (an evicted stream costs
        // nothing but a fresh ROC for an SSRC that stopped sending).
        let slot = self.slot_for(ssrc);
        let index = self.streams[slot]
            .rtp
            .estimate(seq)
            .ok_or(SrtpError::TooOld)?;
        // A sender never reuses an index: the same keystream twice would leak
        // both plaintexts.
        self.streams[slot].rtp.check(index)?;
        self.spend()?;
        let encrypt = self.encrypt_rtp;
        let suite = self.suite;
        let mki = self.master.mki;
        let keys = self.keys(Labels::Rtp, index)?;
        let out_len = if suite.is_gcm() {
            let nonce = gcm_rtp_nonce(&keys.salt, ssrc, index);
            let Cipher::Gcm(key) = &keys.cipher else {
                return Err(SrtpError::Malformed);
            };
            let (head, rest) = buf.split_at_mut(if encrypt { hdr } else { len });
            let tag = if encrypt {
                key.seal_in_place_separate_tag(
                    nonce,
                    aead::Aad::from(&*head),
                    &mut rest[..len - hdr],
                )
            } else {
                key.seal_in_place_separate_tag(nonce, aead::Aad::from(&*head), &mut [])
            }
            .map_err(|_| SrtpError::Malformed)?;
            buf[len..len + 16].copy_from_slice(tag.as_ref());
            if let Some(m) = mki {
                m.write(&mut buf[len + 16..len + 16 + mki_len]);
            }
            len + 16 + mki_len
        } else {
            if encrypt {
                let head = first12(buf);
                rtp_keystream(keys, &head, ssrc, index, &mut buf[hdr..len]);
            }
            let roc = ((index >> 16) as u32).to_be_bytes();
            let tag = hmac_sha1(keys, &buf[..len], &roc);
            if let Some(m) = mki {
                m.write(&mut buf[len..len + mki_len]);
            }
            // RFC 3711 §3.1: the MKI is not authenticated; the tag follows it.
            buf[len + mki_len..len + mki_len + tag_len].copy_from_slice(&tag[..tag_len]);
            len + mki_len + tag_len
        };
        let clock = self.clock;
        let stream = &mut self.streams[slot];
        stream.rtp.commit(index);
        stream.last_use = clock;
        Ok(out_len)
    }

    /// Authenticates, replay-checks and decrypts the SRTP packet in
    /// `buf[..len]`; returns the RTP length.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let p = buf.get(..len).ok_or(SrtpError::Truncated)?;
        let hdr = rtp_header_len(p)?;
        let (tag_len, mki_len) = (self.suite.rtp_tag_len(), self.mki_len());
        if len < hdr + tag_len + mki_len {
            return Err(SrtpError::Truncated);
        }
        let (seq, ssrc) = (u16::from_be_bytes([p[2], p[3]]), be32(p, 8));
        let (body_end, mki_at) = if self.suite.is_gcm() {
            // RFC 7714 §7: the tag is part of the ciphertext; the MKI follows.
            (len - mki_len, len - mki_len)
        } else {
            (len - mki_len - tag_len, len - mki_len - tag_len)
        };
        if let Some(m) = self.master.mki
            && !m.matches(&p[mki_at..mki_at + mki_len])
        {
            return Err(SrtpError::UnknownMki);
        }
        // A known stream is read in place; a new one takes a slot only once
        // its first packet authenticates (forged packets evict nothing).
        self.clock += 1;
        let known = self.find(ssrc);
        let fresh = RtpIndex::default();
        let window = known.map_or(&fresh, |i| &self.streams[i].rtp);
        let index = window.estimate(seq).ok_or(SrtpError::TooOld)?;
        window.check(index)?;
        if self.counters.packets >= self.master.lifetime {
            return Err(SrtpError::KeyExpired);
        }
        let encrypt = self.encrypt_rtp;
        let suite = self.suite;
        let keys = self.keys(Labels::Rtp, index)?;
        let plain_len = if suite.is_gcm() {
            let nonce = gcm_rtp_nonce(&keys.salt, ssrc, index);
            let Cipher::Gcm(key) = &keys.cipher else {
                return Err(SrtpError::Malformed);
            };
            let split = if encrypt { hdr } else { body_end - 16 };
            let (head, rest) = buf.split_at_mut(split);
            let n = key
                .open_in_place(
                    nonce,
                    aead::Aad::from(&*head),
                    &mut rest[..body_end - split],
                )
                .map_err(|_| SrtpError::AuthFailed)?
                .len();
            split + n
        } else {
            let roc = ((index >> 16) as u32).to_be_bytes();
            let tag = hmac_sha1(keys, &buf[..body_end], &roc);
            let wire = &buf[len - tag_len..len];
            if !bool::from(tag[..tag_len].ct_eq(wire)) {
                return Err(SrtpError::AuthFailed);
            }
            if encrypt {
                let head = first12(buf);
                rtp_keystream(keys, &head, ssrc, index, &mut buf[hdr..body_end]);
            }
            body_end
        };
        self.counters.packets += 1;
        let slot = match known {
            Some(i) => i,
            None => {
                let (slot, fresh) = self.stream(ssrc);
                self.streams[slot] = fresh;
                slot
            }
        };
        let clock = self.clock;
        let stream = &mut self.streams[slot];
        stream.rtp.commit(index);
        stream.last_use = clock;
        Ok(plain_len)
    }

    /// Encrypts and tags the RTCP compound packet in `buf[..len]`; returns the
    /// SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let p = buf.get(..len).ok_or(SrtpError::Truncated)?;
        if len < 8 {
            return Err(SrtpError::Truncated);
        }
        if p[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(p, 4);
        let (tag_len, mki_len) = (self.suite.rtcp_tag_len(), self.mki_len());
        if len + 4 + tag_len + mki_len > buf.len() {
            return Err(SrtpError::NoRoom);
        }
        let (slot, mut stream) = self.stream(ssrc);
        // The index is counted before use, so the first SRTCP packet carries 1
        // (as libsrtp does); RFC 3711 §3.3.2: 31 bits, then a new key is due.
        if stream.rtcp_sent >= 0x7fff_ffff {
            return Err(SrtpError::KeyExpired);
        }
        let index = stream.rtcp_sent + 1;
        self.spend()?;
        let suite = self.suite;
        let mki = self.master.mki;
        let keys = self.keys(Labels::Rtcp, u64::from(index))?;
        let e_index = (0x8000_0000 | index).to_be_bytes();
        let out_len = if suite.is_gcm() {
            let nonce = gcm_rtcp_nonce(&keys.salt, ssrc, index);
            let Cipher::Gcm(key) = &keys.cipher else {
                return Err(SrtpError::Malformed);
            };
            // RFC 7714 §9.3: AAD = the first 8 octets || E-flag and index.
            let mut aad = [0u8; 12];
            aad[..8].copy_from_slice(&buf[..8]);
            aad[8..].copy_from_slice(&e_index);
            let tag = key
                .seal_in_place_separate_tag(nonce, aead::Aad::from(&aad), &mut buf[8..len])
                .map_err(|_| SrtpError::Malformed)?;
            buf[len..len + 16].copy_from_slice(tag.as_ref());
            buf[len + 16..len + 20].copy_from_slice(&e_index);
            if let Some(m) = mki {
                m.write(&mut buf[len + 20..len + 20 + mki_len]);
            }
            len + 20 + mki_len
        } else {
            let head = first12(buf);
            rtcp_keystream(keys, &head, 0x8000_0000 | index, &mut buf[8..len]);
            buf[len..len + 4].copy_from_slice(&e_index);
            let tag = hmac_sha1(keys, &buf[..len + 4], &[]);
            if let Some(m) = mki {
                m.write(&mut buf[len + 4..len + 4 + mki_len]);
            }
            let t = len + 4 + mki_len;
            buf[t..t + tag_len].copy_from_slice(&tag[..tag_len]);
            t + tag_len
        };
        stream.rtcp_sent = index;
        self.store(slot, stream);
        Ok(out_len)
    }

    /// Authenticates, replay-checks and decrypts the SRTCP packet in
    /// `buf[..len]`; returns the RTCP length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let p = buf.get(..len).ok_or(SrtpError::Truncated)?;
        let (tag_len, mki_len) = (self.suite.rtcp_tag_len(), self.mki_len());
        if len < 8 + 4 + tag_len + mki_len {
            return Err(SrtpError::Truncated);
        }
        if p[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(p, 4);
        let gcm = self.suite.is_gcm();
        // AES-CM: ... || E+index || MKI || tag. GCM: ... || tag || E+index || MKI.
        let (index_at, mki_at) = if gcm {
            (len - mki_len - 4, len - mki_len)
        } else {
            (len - tag_len - mki_len - 4, len - tag_len - mki_len)
        };
        if let Some(m) = self.master.mki
            && !m.matches(&p[mki_at..mki_at + mki_len])
        {
            return Err(SrtpError::UnknownMki);
        }
        let e_index = be32(p, index_at);
        let (encrypted, index) = (e_index & 0x8000_0000 != 0, e_index & 0x7fff_ffff);
        let (slot, mut stream) = self.stream(ssrc);
        stream.rtcp.check(index)?;
        if self.counters.packets >= self.master.lifetime {
            return Err(SrtpError::KeyExpired);
        }
        let keys = self.keys(Labels::Rtcp, u64::from(index))?;
        let plain_len = if gcm {
            let nonce = gcm_rtcp_nonce(&keys.salt, ssrc, index);
            let Cipher::Gcm(key) = &keys.cipher else {
                return Err(SrtpError::Malformed);
            };
            let e_bytes = e_index.to_be_bytes();
            if encrypted {
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&e_bytes);
                let n = key
                    .open_in_place(nonce, aead::Aad::from(&aad), &mut buf[8..index_at])
                    .map_err(|_| SrtpError::AuthFailed)?
                    .len();
                8 + n
            } else {
                // RFC 7714 §9.2, E = 0: the whole packet and the index are AAD.
                let body = index_at - 16;
                let mut aad = [0u8; 2048];
                if body + 4 > aad.len() {
                    return Err(SrtpError::Malformed);
                }
                aad[..body].copy_from_slice(&buf[..body]);
                aad[body..body + 4].copy_from_slice(&e_bytes);
                key.open_in_place(
                    nonce,
                    aead::Aad::from(&aad[..body + 4]),
                    &mut buf[body..index_at],
                )
                .map_err(|_| SrtpError::AuthFailed)?;
                body
            }
        } else {
            let tag = hmac_sha1(keys, &buf[..index_at + 4], &[]);
            if !bool::from(tag[..tag_len].ct_eq(&buf[len - tag_len..len])) {
                return Err(SrtpError::AuthFailed);
            }
            if encrypted {
                let head = first12(buf);
                rtcp_keystream(keys, &head, e_index, &mut buf[8..index_at]);
            }
            index_at
        };
        self.counters.packets += 1;
        stream.rtcp.commit(index);
        self.store(slot, stream);
        Ok(plain_len)
    }
}

/// The first 12 octets of a packet (callers checked the length).
fn first12(buf: &[u8]) -> [u8; 12] {
    let mut h = [0u8; 12];
    let n = buf.len().min(12);
    h[..n].copy_from_slice(&buf[..n]);
    h
}

/// XORs the SRTP keystream of packet `index` over `data` (encrypts or
/// decrypts): AES-CM (RFC 3711 §4.1.1) or AES-f8 with the RTP IV of §4.1.2.2,
/// 0x00 || M || PT || SEQ || TS || SSRC || ROC.
fn rtp_keystream(keys: &SessionKeys, head: &[u8; 12], ssrc: u32, index: u64, data: &mut [u8]) {
    if let Cipher::F8 { .. } = keys.cipher {
        let mut iv = [0u8; 16];
        iv[1..12].copy_from_slice(&head[1..12]);
        iv[12..].copy_from_slice(&((index >> 16) as u32).to_be_bytes());
        keys::aes_f8(&keys.cipher, &iv, data);
    } else {
        keys::aes_cm(&keys.cipher, &cm_iv(&keys.salt, ssrc, index), data);
    }
}

/// The SRTCP keystream for `e_index` (E flag and index): AES-CM, or AES-f8
/// with the IV of RFC 3711 §4.1.2.3, 0 (32 bits) || E || index || V P RC PT
/// length || SSRC.
fn rtcp_keystream(keys: &SessionKeys, head: &[u8; 12], e_index: u32, data: &mut [u8]) {
    if let Cipher::F8 { .. } = keys.cipher {
        let mut iv = [0u8; 16];
        iv[4..8].copy_from_slice(&e_index.to_be_bytes());
        iv[8..16].copy_from_slice(&head[..8]);
        keys::aes_f8(&keys.cipher, &iv, data);
    } else {
        let ssrc = be32(head, 4);
        let iv = cm_iv(&keys.salt, ssrc, u64::from(e_index & 0x7fff_ffff));
        keys::aes_cm(&keys.cipher, &iv, data);
    }
}

/// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
fn cm_iv(salt: &[u8; MAX_SALT], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
        iv[4 + i] ^= b;
    }
    for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
        iv[8 + i] ^= b;
    }
    iv
}

/// RFC 7714 §8.1: IV = (00 00 || SSRC || ROC || SEQ) XOR salt.
fn gcm_rtp_nonce(salt: &[u8; MAX_SALT], ssrc: u32, index: u64) -> aead::Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (v, s) in iv.iter_mut().zip(salt) {
        *v ^= s;
    }
    aead::Nonce::assume_unique_for_key(iv)
}

/// RFC 7714 §9.1: IV = (00 00 || SSRC || 00 00 || 0 || SRTCP index) XOR salt.
fn gcm_rtcp_nonce(salt: &[u8; MAX_SALT], ssrc: u32, index: u32) -> aead::Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&(index & 0x7fff_ffff).to_be_bytes());
    for (v, s) in iv.iter_mut().zip(salt) {
        *v ^= s;
    }
    aead::Nonce::assume_unique_for_key(iv)
}

/// HMAC-SHA1 of `data || tail` with the session authentication key.
fn hmac_sha1(keys: &SessionKeys, data: &[u8], tail: &[u8]) -> [u8; 20] {
    keys.auth
        .as_ref()
        .map_or([0u8; 20], |mac| mac.mac(data, tail))
}
