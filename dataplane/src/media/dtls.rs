//! DTLS-SRTP on a WebRTC leg (RFC 5763, RFC 5764), sans-IO: the handshake
//! in either role on the media port, the peer's certificate checked
//! against the `a=fingerprint` of its SDP, and the SRTP keys exported from
//! the handshake into rvoip's SRTP.
//!
//! The DTLS itself is dimpl's (DTLS 1.2, ECDHE-ECDSA with AES-GCM or
//! ChaCha20, extended master secret); this module is what rvoip makes of
//! it: one [`DtlsIdentity`] per process (a fresh self-signed ECDSA P-256
//! certificate whose SHA-256 fingerprint rvoip's SDP carries), and per leg
//! a [`DtlsLeg`] that takes the datagrams classified as DTLS, gives the
//! datagrams to send and the time of its next retransmission, and once
//! the handshake is done the SRTP parameters of both directions.

use std::sync::Arc;
use std::time::Instant;

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

/// rvoip's DTLS certificate: made once per process, presented on every
/// WebRTC leg, named in the SDP by its fingerprint.
#[derive(Clone)]
pub struct DtlsIdentity {
    certificate: dimpl::DtlsCertificate,
    fingerprint: Fingerprint,
    config: Arc<dimpl::Config>,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl DtlsIdentity {
    /// A fresh self-signed ECDSA P-256 certificate (random serial number,
    /// as browsers require of every peer).
    pub fn generate(entropy: &dyn Entropy) -> Result<DtlsIdentity, DtlsError> {
        let err = |e: &dyn std::fmt::Display| DtlsError::Certificate(e.to_string());
        let key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| err(&e))?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rvoip");
        let mut serial = [0u8; 16];
        entropy.fill(&mut serial).map_err(|e| err(&e))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(serial.to_vec().into());
        let cert = params.self_signed(&key).map_err(|e| err(&e))?;
        let der = cert.der().to_vec();
        let config = dimpl::Config::builder()
            .build()
            .map_err(|e| err(&format!("{e:?}")))?;
        Ok(DtlsIdentity {
            fingerprint: Fingerprint::of(&der),
            certificate: dimpl::DtlsCertificate {
                certificate: der,
                private_key: key.serialize_der(),
            },
            config: Arc::new(config),
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

/// One leg's DTLS.
pub struct DtlsLeg {
    dtls: dimpl::Dtls,
    /// The fingerprint the peer's SDP named.
    expected: Fingerprint,
    role: Role,
    peer_checked: bool,
    keys: Option<SrtpKeys>,
    connected: bool,
    next_timeout: Option<Instant>,
    failed: Option<DtlsError>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for DtlsLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsLeg")
            .field("role", &self.role)
            .field("connected", &self.connected)
            .field("keys", &self.keys.is_some())
            .field("failed", &self.failed)
            .finish()
    }
}

/// The SRTP suite of a DTLS-SRTP profile, if rvoip speaks it.
fn suite(p: dimpl::SrtpProfile) -> Option<Suite> {
    match p {
        dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(Suite::AesCm128HmacSha1_80),
        dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(Suite::AeadAes128Gcm),
        dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(Suite::AeadAes256Gcm),
        _ => None,
    }
}

impl DtlsLeg {
    /// The DTLS of a leg whose peer's SDP named `expected`; rvoip takes
    /// `role`. An active leg's ClientHello is ready at once.
    pub fn new(
        identity: &DtlsIdentity,
        role: Role,
        expected: Fingerprint,
        now: Instant,
    ) -> DtlsLeg {
        let mut dtls = dimpl::Dtls::new_12(
            Arc::clone(&identity.config),
            identity.certificate.clone(),
            now,
        );
        if role == Role::Active {
            dtls.set_active(true);
        }
        DtlsLeg {
            dtls,
            expected,
            role,
            peer_checked: false,
            keys: None,
            connected: false,
            next_timeout: None,
            failed: None,
            buf: vec![0u8; 2048],
        }
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
        let r = self
            .dtls
            .handle_timeout(now)
            .and_then(|_| self.dtls.handle_packet(packet));
        self.after(r, send)
    }

    /// Time passed: retransmits a flight whose answer is late.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DtlsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.dtls.handle_timeout(now);
        self.after(r, send)
    }

    /// Takes what the engine has after an event; the first error sticks.
    fn after(
        &mut self,
        r: Result<(), dimpl::Error>,
        send: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DtlsError> {
        let r = r
            .map_err(|e| DtlsError::Handshake(format!("{e:?}")))
            .and_then(|_| self.drain(send));
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn drain(&mut self, send: &mut dyn FnMut(&[u8])) -> Result<(), DtlsError> {
        loop {
            match self.dtls.poll_output(&mut self.buf) {
                dimpl::Output::Packet(p) => send(p),
                dimpl::Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                dimpl::Output::Timeout(t) => {
                    self.next_timeout = Some(t);
                    return Ok(());
                }
                dimpl::Output::Connected => self.connected = true,
                dimpl::Output::PeerCert(der) => {
                    if Fingerprint::of(der) != self.expected {
                        return Err(DtlsError::Fingerprint);
                    }
                    self.peer_checked = true;
                }
                dimpl::Output::KeyingMaterial(material, profile) => {
                    if !self.peer_checked {
                        return Err(DtlsError::Fingerprint);
                    }
                    let suite = suite(profile).ok_or(DtlsError::Keys)?;
                    self.keys = Some(Self::split(&material, suite, self.role)?);
                }
                dimpl::Output::CloseNotify => {
                    return Err(DtlsError::Handshake("the peer closed DTLS".into()));
                }
                _ => {}
            }
        }
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
        let mut a = DtlsLeg::new(&x, Role::Active, y.fingerprint(), now);
        let mut b = DtlsLeg::new(&y, Role::Passive, x.fingerprint(), now);
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
        let mut a = DtlsLeg::new(&x, Role::Active, y.fingerprint(), now);
        let mut b = DtlsLeg::new(&y, Role::Passive, z.fingerprint(), now);
        let e = handshake(&mut a, &mut b, false).unwrap_err();
        assert_eq!(e, DtlsError::Fingerprint);
        assert!(b.keys().is_none());
        assert_eq!(b.failure(), Some(&DtlsError::Fingerprint));
        // Garbage is not a handshake: no keys, no panic.
        let mut c = DtlsLeg::new(&x, Role::Passive, y.fingerprint(), now);
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
