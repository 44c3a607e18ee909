//! HEP version 3 (Homer Encapsulation Protocol): how a captured message is
//! carried to a collector (Homer, sngrep, tshark). A HEP3 packet is the
//! four octets `HEP3`, its total length (u16, network order), then chunks,
//! each a vendor id (0: generic), a type id and the chunk's length
//! including its 6-octet header, all u16 in network order, then the value.
//!
//! Sans-IO: [`write`] builds a packet into a buffer the caller reuses,
//! [`read`] takes one apart (tests, fuzzing), [`sampled`] says whether a
//! Call-ID is among the sampled ones.

use std::net::{IpAddr, SocketAddr};

/// Generic chunk types (vendor 0).
pub mod chunk {
    /// u8: 2 IPv4, 10 IPv6.
    pub const FAMILY: u16 = 1;
    /// u8: 17 UDP, 6 TCP.
    pub const PROTOCOL: u16 = 2;
    /// IPv4 source address.
    pub const IPV4_SRC: u16 = 3;
    /// IPv4 destination address.
    pub const IPV4_DST: u16 = 4;
    /// IPv6 source address.
    pub const IPV6_SRC: u16 = 5;
    /// IPv6 destination address.
    pub const IPV6_DST: u16 = 6;
    /// u16 source port.
    pub const SRC_PORT: u16 = 7;
    /// u16 destination port.
    pub const DST_PORT: u16 = 8;
    /// u32 seconds since the epoch.
    pub const SECONDS: u16 = 9;
    /// u32 microseconds to add.
    pub const MICROS: u16 = 10;
    /// u8 what the payload is ([`super::kind`]).
    pub const KIND: u16 = 11;
    /// u32 capture agent id.
    pub const AGENT: u16 = 12;
    /// The captured payload.
    pub const PAYLOAD: u16 = 15;
    /// Correlation id (a Call-ID).
    pub const CORRELATION: u16 = 17;
}

/// Payload kinds (chunk 11).
pub mod kind {
    /// A SIP message.
    pub const SIP: u8 = 1;
    /// A call's quality report, JSON.
    pub const QOS_REPORT: u8 = 0x22;
}

/// What a packet says besides its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta<'a> {
    /// Where the message came from.
    pub src: SocketAddr,
    /// Where it went.
    pub dst: SocketAddr,
    /// 17 UDP, 6 TCP.
    pub protocol: u8,
    /// When it was seen: seconds and microseconds since the epoch.
    pub time: (u32, u32),
    /// The capture agent's id.
    pub agent: u32,
    /// What the payload is ([`kind`]).
    pub kind: u8,
    /// The correlation id (the message's Call-ID), when there is one.
    pub correlation: Option<&'a [u8]>,
}

fn put(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((value.len() + 6) as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// Largest payload a packet carries (its length field is 16 bits).
pub const MAX_PAYLOAD: usize = 65_000;

/// Writes the HEP3 packet of `payload` into `out` (cleared first).
/// `false` when the payload is too large to carry.
pub fn write(out: &mut Vec<u8>, meta: &Meta<'_>, payload: &[u8]) -> bool {
    out.clear();
    append(out, meta, payload)
}

/// Appends the HEP3 packet of `payload` to `out` (a stream of packets, as
/// HEP over TCP carries them). `false`, and nothing appended, when the
/// payload is too large to carry.
pub fn append(out: &mut Vec<u8>, meta: &Meta<'_>, payload: &[u8]) -> bool {
    let correlation = meta.correlation.unwrap_or_default();
    if payload.len() + correlation.len() > MAX_PAYLOAD {
        return false;
    }
    let start = out.len();
    out.extend_from_slice(b"HEP3\0\0");
    let family6 = meta.src.is_ipv6() || meta.dst.is_ipv6();
    put(out, chunk::FAMILY, &[if family6 { 10 } else { 2 }]);
    put(out, chunk::PROTOCOL, &[meta.protocol]);
    for (addr, c4, c6) in [
        (meta.src.ip(), chunk::IPV4_SRC, chunk::IPV6_SRC),
        (meta.dst.ip(), chunk::IPV4_DST, chunk::IPV6_DST),
    ] {
        match addr {
            IpAddr::V4(a) if !family6 => put(out, c4, &a.octets()),
            IpAddr::V4(a) => put(out, c6, &a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => put(out, c6, &a.octets()),
        }
    }
    put(out, chunk::SRC_PORT, &meta.src.port().to_be_bytes());
    put(out, chunk::DST_PORT, &meta.dst.port().to_be_bytes());
    put(out, chunk::SECONDS, &meta.time.0.to_be_bytes());
    put(out, chunk::MICROS, &meta.time.1.to_be_bytes());
    put(out, chunk::KIND, &[meta.kind]);
    put(out, chunk::AGENT, &meta.agent.to_be_bytes());
    if !correlation.is_empty() {
        put(out, chunk::CORRELATION, correlation);
    }
    put(out, chunk::PAYLOAD, payload);
    let len = (out.len() - start) as u16;
    out[start + 4..start + 6].copy_from_slice(&len.to_be_bytes());
    true
}

/// The vendor id of rvoip's own chunks ("rv"); collectors skip the
/// chunks of vendors they do not know.
pub const RVOIP_VENDOR: u16 = 0x7276;
/// rvoip's padding chunk: octets that make equal-length datagrams, so the
/// kernel sends a pass's packets as one segmented send (UDP GSO).
pub const PADDING: u16 = 1;
/// The shortest padding: a chunk header.
pub const MIN_PADDING: usize = 6;

/// Lengthens the packet in `out` (one packet, from [`write`]) to `len`
/// octets with a padding chunk; `false`, and nothing changed, when that
/// cannot be done (shorter than [`MIN_PADDING`] to add, or too long).
pub fn pad(out: &mut Vec<u8>, len: usize) -> bool {
    let add = len.saturating_sub(out.len());
    if add == 0 {
        return len == out.len();
    }
    if add < MIN_PADDING || len > usize::from(u16::MAX) || out.len() < 6 {
        return false;
    }
    out.extend_from_slice(&RVOIP_VENDOR.to_be_bytes());
    out.extend_from_slice(&PADDING.to_be_bytes());
    out.extend_from_slice(&(add as u16).to_be_bytes());
    out.resize(len, 0);
    out[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    true
}

/// A packet taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Its addresses, protocol, time, agent, kind and correlation id.
    pub meta: Meta<'a>,
    /// The payload.
    pub payload: &'a [u8],
}

/// Why a packet is not HEP3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// It does not start with `HEP3`.
    NotHep3,
    /// Its length or a chunk's overruns it.
    Truncated,
    /// A chunk's value has the wrong size for its type.
    BadChunk(u16),
    /// No payload chunk.
    NoPayload,
}

/// Takes a HEP3 packet apart (generic chunks only; others are skipped).
pub fn read(buf: &[u8]) -> Result<Packet<'_>, ReadError> {
    if buf.len() < 6 || &buf[..4] != b"HEP3" {
        return Err(ReadError::NotHep3);
    }
    let total = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    if total < 6 || total > buf.len() {
        return Err(ReadError::Truncated);
    }
    let mut at = 6;
    let mut p = Packet {
        meta: Meta {
            src: SocketAddr::from(([0, 0, 0, 0], 0)),
            dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            protocol: 0,
            time: (0, 0),
            agent: 0,
            kind: 0,
            correlation: None,
        },
        payload: &[],
    };
    let mut payload = None;
    while at < total {
        let h = buf.get(at..at + 6).ok_or(ReadError::Truncated)?;
        let vendor = u16::from_be_bytes([h[0], h[1]]);
        let kind = u16::from_be_bytes([h[2], h[3]]);
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if len < 6 || at + len > total {
            return Err(ReadError::Truncated);
        }
        let v = &buf[at + 6..at + len];
        at += len;
        if vendor != 0 {
            continue;
        }
        let bad = ReadError::BadChunk(kind);
        let u8v = || v.first().copied().filter(|_| v.len() == 1).ok_or(bad);
        let u16v = || {
            <[u8; 2]>::try_from(v)
                .map(u16::from_be_bytes)
                .map_err(|_| bad)
        };
        let u32v = || {
            <[u8; 4]>::try_from(v)
                .map(u32::from_be_bytes)
                .map_err(|_| bad)
        };
        let v4 = || <[u8; 4]>::try_from(v).map(IpAddr::from).map_err(|_| bad);
        let v6 = || <[u8; 16]>::try_from(v).map(IpAddr::from).map_err(|_| bad);
        match kind {
            chunk::FAMILY => {
                u8v()?;
            }
            chunk::PROTOCOL => p.meta.protocol = u8v()?,
            chunk::IPV4_SRC => p.meta.src.set_ip(v4()?),
            chunk::IPV4_DST => p.meta.dst.set_ip(v4()?),
            chunk::IPV6_SRC => p.meta.src.set_ip(v6()?),
            chunk::IPV6_DST => p.meta.dst.set_ip(v6()?),
            chunk::SRC_PORT => p.meta.src.set_port(u16v()?),
            chunk::DST_PORT => p.meta.dst.set_port(u16v()?),
            chunk::SECONDS => p.meta.time.0 = u32v()?,
            chunk::MICROS => p.meta.time.1 = u32v()?,
            chunk::KIND => p.meta.kind = u8v()?,
            chunk::AGENT => p.meta.agent = u32v()?,
            chunk::CORRELATION => p.meta.correlation = Some(v),
            chunk::PAYLOAD => payload = Some(v),
            _ => {}
        }
    }
    p.payload = payload.ok_or(ReadError::NoPayload)?;
    Ok(p)
}

/// Whether messages of `call_id` are captured when `percent` of calls
/// are: the same answer for every message of a Call-ID (FNV-1a of it).
pub fn sampled(call_id: &[u8], percent: u8) -> bool {
    if percent >= 100 {
        return true;
    }
    let h = call_id.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    h % 100 < u64::from(percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta<'a>(src: &str, dst: &str, correlation: Option<&'a [u8]>) -> Meta<'a> {
        Meta {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: 17,
            time: (1_800_000_000, 123_456),
            agent: 2001,
            kind: kind::SIP,
            correlation,
        }
    }

    #[test]
    fn a_packet_reads_back_as_written_for_both_families() {
        let mut out = Vec::new();
        let sip = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c1\r\n\r\n";
        for (src, dst) in [
            ("127.0.0.1:5060", "127.0.0.2:5090"),
            ("[::1]:5060", "[2001:db8::1]:5062"),
        ] {
            let m = meta(src, dst, Some(b"c1"));
            assert!(write(&mut out, &m, sip));
            assert_eq!(&out[..4], b"HEP3");
            assert_eq!(usize::from(u16::from_be_bytes([out[4], out[5]])), out.len());
            let p = read(&out).unwrap();
            assert_eq!(p.meta, m);
            assert_eq!(p.payload, sip);
        }
        // The generic IPv4 chunks and the payload chunk as the layout says.
        assert!(write(
            &mut out,
            &meta("10.0.0.1:1", "10.0.0.2:2", None),
            b"x"
        ));
        let ipv4_src = [0, 0, 0, 3, 0, 10, 10, 0, 0, 1];
        assert!(out.windows(10).any(|w| w == ipv4_src));
        assert!(out.ends_with(&[0, 0, 0, 15, 0, 7, b'x']));
    }

    #[test]
    fn appended_packets_follow_each_other_as_a_stream() {
        let mut out = Vec::new();
        let m = meta("127.0.0.1:1", "127.0.0.1:2", Some(b"c"));
        assert!(append(&mut out, &m, b"one"));
        let first = out.len();
        assert!(append(&mut out, &m, b"second"));
        assert_eq!(read(&out[..first]).map(|p| p.payload), Ok(&b"one"[..]));
        assert_eq!(read(&out[first..]).map(|p| p.payload), Ok(&b"second"[..]));
    }

    #[test]
    fn a_padded_packet_reads_as_it_was_and_short_padding_is_refused() {
        let m = meta("127.0.0.1:5060", "127.0.0.2:5070", Some(b"id-1"));
        let mut p = Vec::new();
        assert!(write(&mut p, &m, b"INVITE sip:x SIP/2.0\r\n\r\n"));
        let (plain, n) = (p.clone(), p.len());
        assert!(pad(&mut p, n));
        assert!(!pad(&mut p, n + 3), "shorter than a chunk header");
        assert_eq!(p, plain);
        assert!(pad(&mut p, n + 100));
        assert_eq!(p.len(), n + 100);
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), n + 100);
        assert_eq!(read(&p).unwrap(), read(&plain).unwrap());
    }

    #[test]
    fn bad_packets_are_refused_not_misread() {
        assert_eq!(read(b"HEP2\0\x06"), Err(ReadError::NotHep3));
        let mut out = Vec::new();
        assert!(write(
            &mut out,
            &meta("127.0.0.1:1", "127.0.0.1:2", None),
            b"abc"
        ));
        assert_eq!(read(&out[..out.len() - 1]), Err(ReadError::Truncated));
        let mut bad = out.clone();
        // The protocol chunk (the second) says 2 octets of value.
        bad[6 + 7 + 5] = 8;
        assert!(read(&bad).is_err());
        assert!(!write(
            &mut out,
            &meta("127.0.0.1:1", "127.0.0.1:2", None),
            &[0; 70_000]
        ));
    }

    #[test]
    fn sampling_keeps_a_call_whole_and_takes_about_its_share() {
        assert!(sampled(b"anything", 100));
        assert!(!sampled(b"anything", 0));
        let n = (0..10_000)
            .filter(|i| sampled(format!("call-{i}@host").as_bytes(), 25))
            .count();
        assert!((2_200..2_800).contains(&n), "{n}");
        let id = b"same@host";
        assert!((0..5).all(|_| sampled(id, 50) == sampled(id, 50)));
    }
}
