//! DTLS-SRTP on a WebRTC leg (RFC 5763, RFC 5764), sans-IO: the handshake
//! in either role on the media port, the peer's certificate checked
//! against the `a=fingerprint` of its SDP, and the SRTP keys exported from
//! the handshake into rvoip's SRTP.
//!
//! The DTLS itself is OpenSSL's (DTLS 1.2; ECDHE with ECDSA or RSA peers,
//! as browsers, rtpengine and SIP stacks use it), driven through memory:
//! a [`DtlsLeg`] takes the datagrams classified as DTLS, gives the
//! datagrams to send, retransmits a flight when [`DtlsLeg::on_timeout`]
//! finds its timer run out, and once the handshake is done holds the SRTP
//! parameters of both directions. One [`DtlsIdentity`] per process: a fresh
//! self-signed ECDSA P-256 certificate whose SHA-256 fingerprint rvoip's
//! SDP carries.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::time::Instant;

use foreign_types::ForeignTypeRef;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode,
};
use openssl::x509::{X509, X509NameBuilder};

use crate::entropy::Entropy;
use crate::srtp::{MasterKey, SrtpParams, Suite};

/// Why DTLS failed on a leg (the leg's DTLS is over; the call goes on
/// without media on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsError {
    /// The certificate could not be made.
    Certificate(String),
    /// The handshake failed or a record was refused.
    Handshake(String),
    /// The peer's certificate is not the one its SDP's fingerprint names.
    Fingerprint,
    /// The peer chose no SRTP profile rvoip speaks, or exported too little.
    Keys,
}

impl std::fmt::Display for DtlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DtlsError::Certificate(e) => write!(f, "DTLS certificate: {e}"),
            DtlsError::Handshake(e) => write!(f, "DTLS: {e}"),
            DtlsError::Fingerprint => {
                f.write_str("DTLS peer certificate does not match its fingerprint")
            }
            DtlsError::Keys => f.write_str("DTLS-SRTP keys not exported"),
        }
    }
}

impl std::error::Error for DtlsError {}

/// A SHA-256 certificate fingerprint (RFC 8122 §5).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        let mut f = [0u8; 32];
        f.copy_from_slice(d.as_ref());
        Fingerprint(f)
    }

    /// Reads an `a=fingerprint` value: `sha-256 AB:CD:…` (other hash
    /// functions are not read).
    pub fn parse(value: &str) -> Option<Fingerprint> {
        let (hash, hex) = value.trim().split_once(' ')?;
        if !hash.eq_ignore_ascii_case("sha-256") {
            return None;
        }
        let mut f = [0u8; 32];
        let mut n = 0;
        for part in hex.trim().split(':') {
            *f.get_mut(n)? = u8::from_str_radix(part, 16).ok()?;
            n += 1;
        }
        (n == 32).then_some(Fingerprint(f))
    }
}

impl std::fmt::Display for Fingerprint {
    /// `sha-256 AB:CD:…`, as `a=fingerprint` writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha-256 ")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The SRTP protection profiles offered and accepted, rvoip's preference
/// first (RFC 5764 §4.1.2, RFC 7714 §14.2).
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AEAD_AES_256_GCM:SRTP_AES128_CM_SHA1_80";
/// The largest datagram a handshake flight is cut into.
const MTU: u32 = 1200;

/// rvoip's DTLS certificate: made once per process, presented on every
/// WebRTC leg, named in the SDP by its fingerprint.
#[derive(Clone)]
pub struct DtlsIdentity {
    context: SslContext,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

fn certificate(entropy: &dyn Entropy) -> Result<(X509, PKey<Private>), DtlsError> {
    let err = |e: &dyn std::fmt::Display| DtlsError::Certificate(e.to_string());
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| err(&e))?;
    let key =
        PKey::from_ec_key(EcKey::generate(&group).map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    let mut b = X509::builder().map_err(|e| err(&e))?;
    b.set_version(2).map_err(|e| err(&e))?;
    // A random serial number: browsers refuse two peers' certificates
    // with the same issuer and serial.
    let mut serial = [0u8; 16];
    entropy.fill(&mut serial).map_err(|e| err(&e))?;
    serial[0] &= 0x7f;
    let serial = BigNum::from_slice(&serial).and_then(|n| n.to_asn1_integer());
    let serial = serial.map_err(|e| err(&e))?;
    b.set_serial_number(&serial).map_err(|e| err(&e))?;
    let mut name = X509NameBuilder::new().map_err(|e| err(&e))?;
    name.append_entry_by_nid(Nid::COMMONNAME, "rvoip")
        .map_err(|e| err(&e))?;
    let name = name.build();
    b.set_subject_name(&name).map_err(|e| err(&e))?;
    b.set_issuer_name(&name).map_err(|e| err(&e))?;
    let (from, until) = (
        Asn1Time::days_from_now(0).map_err(|e| err(&e))?,
        Asn1Time::days_from_now(30).map_err(|e| err(&e))?,
    );
    b.set_not_before(&from).map_err(|e| err(&e))?;
    b.set_not_after(&until).map_err(|e| err(&e))?;
    b.set_pubkey(&key).map_err(|e| err(&e))?;
    b.sign(&key, MessageDigest::sha256()).map_err(|e| err(&e))?;
    Ok((b.build(), key))
}

impl DtlsIdentity {
    /// A fresh self-signed ECDSA P-256 certificate (random serial number,
    /// as browsers require of every peer), and the DTLS settings every leg
    /// shares: DTLS 1.2, the peer must present a certificate (checked
    /// against its fingerprint after the handshake, not against CAs),
    /// `use_srtp` with the profiles rvoip's SRTP speaks.
    pub fn generate(entropy: &dyn Entropy) -> Result<DtlsIdentity, DtlsError> {
        let err = |e: &dyn std::fmt::Display| DtlsError::Certificate(e.to_string());
        let (cert, key) = certificate(entropy)?;
        let der = cert.to_der().map_err(|e| err(&e))?;
        let mut ctx: SslContextBuilder =
            SslContext::builder(SslMethod::dtls()).map_err(|e| err(&e))?;
        ctx.set_certificate(&cert).map_err(|e| err(&e))?;
        ctx.set_private_key(&key).map_err(|e| err(&e))?;
        ctx.check_private_key().map_err(|e| err(&e))?;
        ctx.set_min_proto_version(Some(openssl::ssl::SslVersion::DTLS1_2))
            .map_err(|e| err(&e))?;
        ctx.set_cipher_list(
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA",
        )
        .map_err(|e| err(&e))?;
        ctx.set_tlsext_use_srtp(SRTP_PROFILES)
            .map_err(|e| err(&e))?;
        ctx.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
        ctx.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            // Self-signed by nature: the fingerprint in the SDP is the trust.
            |_, _| true,
        );
        Ok(DtlsIdentity {
            context: ctx.build(),
            fingerprint: Fingerprint::of(&der),
        })
    }

    /// The fingerprint rvoip's SDP carries.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

/// Which side of the handshake rvoip takes (RFC 5763 §5: `a=setup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `a=setup:active`: rvoip is the DTLS client.
    Active,
    /// `a=setup:passive`: rvoip is the DTLS server.
    Passive,
}

/// The SRTP parameters a handshake gave: what rvoip protects with, and
/// what it unprotects the peer's packets with.
#[derive(Debug, Clone)]
pub struct SrtpKeys {
    /// rvoip's sending direction.
    pub outbound: SrtpParams,
    /// The peer's sending direction.
    pub inbound: SrtpParams,
}

/// The datagrams between OpenSSL and the socket: what the peer sent,
/// waiting to be read by OpenSSL, and what OpenSSL wrote, waiting to be
/// sent (one datagram per write).
#[derive(Debug, Default)]
struct Datagrams {
    incoming: VecDeque<Vec<u8>>,
    outgoing: Vec<Vec<u8>>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(d) = self.incoming.pop_front() else {
            return Err(std::io::ErrorKind::WouldBlock.into());
        };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.outgoing.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `DTLS_CTRL_HANDLE_TIMEOUT`: retransmit the last flight if its timer ran out.
const DTLS_CTRL_HANDLE_TIMEOUT: std::ffi::c_int = 74;

/// How long OpenSSL's first retransmission waits (it doubles after).
const FIRST_RETRANSMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One leg's DTLS.
pub struct DtlsLeg {
    stream: SslStream<Datagrams>,
    /// The fingerprint the peer's SDP named.
    expected: Fingerprint,
    role: Role,
    keys: Option<SrtpKeys>,
    next_timeout: Option<Instant>,
    failed: Option<DtlsError>,
}

impl std::fmt::Debug for DtlsLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsLeg")
            .field("role", &self.role)
            .field("keys", &self.keys.is_some())
            .field("failed", &self.failed)
            .finish()
    }
}

/// The SRTP suite of a DTLS-SRTP profile, if rvoip speaks it.
fn suite(p: SrtpProfileId) -> Option<Suite> {
    if p == SrtpProfileId::SRTP_AES128_CM_SHA1_80 {
        Some(Suite::AesCm128HmacSha1_80)
    } else if p == SrtpProfileId::SRTP_AEAD_AES_128_GCM {
        Some(Suite::AeadAes128Gcm)
    } else if p == SrtpProfileId::SRTP_AEAD_AES_256_GCM {
        Some(Suite::AeadAes256Gcm)
    } else {
        None
    }
}

impl DtlsLeg {
    /// The DTLS of a leg whose peer's SDP named `expected`; rvoip takes
    /// `role`. An active leg's ClientHello is ready at the first
    /// [`DtlsLeg::on_timeout`].
    pub fn new(
        identity: &DtlsIdentity,
        role: Role,
        expected: Fingerprint,
        now: Instant,
    ) -> Result<DtlsLeg, DtlsError> {
        let err = |e: &dyn std::fmt::Display| DtlsError::Handshake(e.to_string());
        let mut ssl = Ssl::new(&identity.context).map_err(|e| err(&e))?;
        ssl.set_mtu(MTU).map_err(|e| err(&e))?;
        match role {
            Role::Active => ssl.set_connect_state(),
            Role::Passive => ssl.set_accept_state(),
        }
        let stream = SslStream::new(ssl, Datagrams::default()).map_err(|e| err(&e))?;
        Ok(DtlsLeg {
            stream,
            expected,
            role,
            keys: None,
            next_timeout: Some(now),
            failed: None,
        })
    }

    /// rvoip's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The SRTP parameters, once the handshake is done and the peer's
    /// certificate matched.
    pub fn keys(&self) -> Option<&SrtpKeys> {
        self.keys.as_ref()
    }

    /// Why the leg's DTLS failed, if it did.
    pub fn failure(&self) -> Option<&DtlsError> {
        self.failed.as_ref()
    }

    /// When [`DtlsLeg::on_timeout`] is due.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }

    /// A DTLS datagram from the peer; what to send back goes to `send`.
    pub fn on_packet(
        &mut self,
        packet: &[u8],
        now: Instant,
        send: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DtlsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.stream.get_mut().incoming.push_back(packet.to_vec());
        let r = self.step(now);
        self.flush(send);
        self.stick(r)
    }

    /// Time passed: starts an active handshake, and retransmits a flight
    /// whose answer is late.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DtlsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = if self.keys.is_none() && self.next_timeout.is_some_and(|t| t <= now) {
            // SAFETY: a control call on our own SSL object (no pointer
            // argument): OpenSSL retransmits the flight if its timer ran out.
            unsafe {
                openssl_sys::SSL_ctrl(
                    self.stream.ssl().as_ptr(),
                    DTLS_CTRL_HANDLE_TIMEOUT,
                    0,
                    std::ptr::null_mut(),
                );
            }
            self.step(now)
        } else {
            Ok(())
        };
        self.flush(send);
        self.stick(r)
    }

    fn stick(&mut self, r: Result<(), DtlsError>) -> Result<(), DtlsError> {
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.next_timeout = None;
        }
        r
    }

    fn flush(&mut self, send: &mut dyn FnMut(&[u8])) {
        for d in self.stream.get_mut().outgoing.drain(..) {
            send(&d);
        }
    }

    /// Runs the handshake as far as what arrived allows; once done, checks
    /// the peer and exports the keys. Application data after it is read
    /// and dropped (WebRTC sends none on media legs without SCTP).
    fn step(&mut self, now: Instant) -> Result<(), DtlsError> {
        if self.keys.is_some() {
            let mut sink = [0u8; 2048];
            loop {
                match self.stream.ssl_read(&mut sink) {
                    Ok(_) => {}
                    Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                        return Err(DtlsError::Handshake("the peer closed DTLS".into()));
                    }
                    Err(_) => return Ok(()),
                }
            }
        }
        match self.stream.do_handshake() {
            Ok(()) => {}
            Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {
                self.next_timeout = Some(now + FIRST_RETRANSMIT);
                return Ok(());
            }
            Err(e) => return Err(DtlsError::Handshake(e.to_string())),
        }
        let ssl = self.stream.ssl();
        let der = ssl
            .peer_certificate()
            .and_then(|c| c.to_der().ok())
            .ok_or(DtlsError::Fingerprint)?;
        if Fingerprint::of(&der) != self.expected {
            return Err(DtlsError::Fingerprint);
        }
        let suite = ssl
            .selected_srtp_profile()
            .and_then(|p| suite(p.id()))
            .ok_or(DtlsError::Keys)?;
        let mut material = [0u8; 2 * (32 + 14)];
        let len = 2 * (suite.master_key_len() + suite.master_salt_len());
        let material = &mut material[..len];
        ssl.export_keying_material(material, "EXTRACTOR-dtls_srtp", None)
            .map_err(|_| DtlsError::Keys)?;
        self.keys = Some(Self::split(material, suite, self.role)?);
        self.next_timeout = None;
        Ok(())
    }

    /// RFC 5764 §4.2: client key, server key, client salt, server salt;
    /// the client sends with the client's.
    fn split(material: &[u8], suite: Suite, role: Role) -> Result<SrtpKeys, DtlsError> {
        let (k, s) = (suite.master_key_len(), suite.master_salt_len());
        if material.len() < 2 * (k + s) {
            return Err(DtlsError::Keys);
        }
        let (client_key, rest) = material.split_at(k);
        let (server_key, rest) = rest.split_at(k);
        let (client_salt, rest) = rest.split_at(s);
        let server_salt = &rest[..s];
        let params = |key, salt| {
            MasterKey::new(suite, key, salt)
                .map(|m| SrtpParams::new(suite, m))
                .ok_or(DtlsError::Keys)
        };
        let client = params(client_key, client_salt)?;
        let server = params(server_key, server_salt)?;
        Ok(match role {
            Role::Active => SrtpKeys {
                outbound: client,
                inbound: server,
            },
            Role::Passive => SrtpKeys {
                outbound: server,
                inbound: client,
            },
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]
mod tests {
    use super::*;
    use crate::entropy::SystemEntropy;
    use crate::srtp::SrtpContext;
    use std::time::Duration;

    fn identity() -> DtlsIdentity {
        DtlsIdentity::generate(&SystemEntropy::new()).unwrap()
    }

    fn key(p: &SrtpParams) -> Vec<u8> {
        let mut b = [0u8; 46];
        let n = p.master.concatenated(&mut b);
        b[..n].to_vec()
    }

    /// Runs a handshake between two legs, each datagram handed over whole
    /// (`drop_first`: the first flight of the active side is lost and
    /// retransmitted).
    fn handshake(a: &mut DtlsLeg, b: &mut DtlsLeg, drop_first: bool) -> Result<(), DtlsError> {
        let mut now = Instant::now();
        let mut to_b: Vec<Vec<u8>> = Vec::new();
        let mut to_a: Vec<Vec<u8>> = Vec::new();
        a.on_timeout(now, &mut |p| to_b.push(p.to_vec()))?;
        if drop_first {
            to_b.clear();
            // OpenSSL's retransmission timer runs on the real clock.
            std::thread::sleep(Duration::from_millis(1100));
            now += Duration::from_secs(2);
            a.on_timeout(now, &mut |p| to_b.push(p.to_vec()))?;
            assert!(!to_b.is_empty(), "the first flight is sent again");
        }
        for _ in 0..20 {
            for p in std::mem::take(&mut to_b) {
                b.on_packet(&p, now, &mut |q| to_a.push(q.to_vec()))?;
            }
            for p in std::mem::take(&mut to_a) {
                a.on_packet(&p, now, &mut |q| to_b.push(q.to_vec()))?;
            }
            if a.keys().is_some() && b.keys().is_some() && to_a.is_empty() && to_b.is_empty() {
                return Ok(());
            }
        }
        Err(DtlsError::Handshake("no keys after 20 rounds".into()))
    }

    const RTP: [u8; 32] = [
        0x80, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xa0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6,
        7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    ];

    #[test]
    fn both_roles_agree_on_keys_and_srtp_crosses_after_a_lost_flight() {
        let (x, y) = (identity(), identity());
        assert_ne!(x.fingerprint(), y.fingerprint());
        let now = Instant::now();
        let mut a = DtlsLeg::new(&x, Role::Active, y.fingerprint(), now).unwrap();
        let mut b = DtlsLeg::new(&y, Role::Passive, x.fingerprint(), now).unwrap();
        handshake(&mut a, &mut b, true).unwrap();
        let (ka, kb) = (a.keys().unwrap().clone(), b.keys().unwrap().clone());
        assert_eq!(key(&ka.outbound), key(&kb.inbound));
        assert_eq!(key(&ka.inbound), key(&kb.outbound));
        assert_ne!(key(&ka.outbound), key(&ka.inbound));
        // What one side protects, the other unprotects.
        let mut send = SrtpContext::new(&ka.outbound).unwrap();
        let mut recv = SrtpContext::new(&kb.inbound).unwrap();
        let mut buf = [0u8; 128];
        buf[..32].copy_from_slice(&RTP);
        let n = send.protect_rtp(&mut buf, 32).unwrap();
        assert!(n > 32);
        let m = recv.unprotect_rtp(&mut buf, n).unwrap();
        assert_eq!(&buf[..m], &RTP);
    }

    #[test]
    fn a_certificate_other_than_the_fingerprint_names_is_refused() {
        let (x, y, z) = (identity(), identity(), identity());
        let now = Instant::now();
        // The passive side expects z's certificate; x presents its own.
        let mut a = DtlsLeg::new(&x, Role::Active, y.fingerprint(), now).unwrap();
        let mut b = DtlsLeg::new(&y, Role::Passive, z.fingerprint(), now).unwrap();
        let e = handshake(&mut a, &mut b, false).unwrap_err();
        assert_eq!(e, DtlsError::Fingerprint);
        assert!(b.keys().is_none());
        assert_eq!(b.failure(), Some(&DtlsError::Fingerprint));
        // Garbage is not a handshake: no keys, no panic.
        let mut c = DtlsLeg::new(&x, Role::Passive, y.fingerprint(), now).unwrap();
        let _ = c.on_packet(
            &[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3],
            now,
            &mut |_| {},
        );
        assert!(c.keys().is_none());
    }

    #[test]
    fn fingerprints_read_and_write_as_sdp_does() {
        let f = Fingerprint::of(b"certificate");
        let text = f.to_string();
        assert!(text.starts_with("sha-256 ") && text.len() == 8 + 32 * 3 - 1);
        assert_eq!(Fingerprint::parse(&text), Some(f));
        assert_eq!(
            Fingerprint::parse(&text.to_lowercase().replace("sha-256", "SHA-256")),
            Some(f)
        );
        assert_eq!(Fingerprint::parse("sha-1 AB:CD"), None);
        assert_eq!(Fingerprint::parse(&text[..text.len() - 3]), None);
        assert_eq!(Fingerprint::parse(&format!("{text}:00")), None);
    }
}
