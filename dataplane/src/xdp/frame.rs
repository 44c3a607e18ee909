//! Ethernet II, IPv4, IPv6 and UDP headers as the AF_XDP path reads and
//! writes them itself: frames taken from the NIC are checked (lengths,
//! IPv4 header checksum, UDP checksum when present; a frame a local peer
//! left for its NIC to finish, holding the pseudo-header's sum, is taken
//! as such) before their payload goes on; frames sent are built with both
//! checksums. Sans-IO, no allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A MAC address.
pub type Mac = [u8; 6];

/// Octets of Ethernet + IPv4 + UDP headers.
pub const V4_HEADERS: usize = 14 + 20 + 8;
/// Octets of Ethernet + IPv6 + UDP headers.
pub const V6_HEADERS: usize = 14 + 40 + 8;

/// Why a frame was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than its headers say.
    Truncated,
    /// Not IPv4/IPv6 carrying UDP (or with options, extension headers, or
    /// fragmented).
    NotUdp,
    /// The IPv4 header checksum is wrong.
    IpChecksum,
    /// The UDP checksum is wrong (or missing over IPv6).
    UdpChecksum,
}

/// A UDP datagram found in a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Udp {
    /// The frame's source and destination MAC.
    pub macs: (Mac, Mac),
    /// Source.
    pub src: SocketAddr,
    /// Destination.
    pub dst: SocketAddr,
    /// Where the payload is in the frame.
    pub payload: std::ops::Range<usize>,
}

/// One's complement sum of `data` (as 16-bit big-endian words) added to
/// `sum`, four octets at a time into a 64-bit accumulator (RFC 1071 §2:
/// the sum is the same whatever the order and width of the additions).
fn sum16(sum: u32, data: &[u8]) -> u32 {
    // The one's complement sum does not depend on byte order (RFC 1071
    // §2(B)): words are added as the CPU reads them, without a swap each
    // (which lets the loop run on vector registers), and the folded sum is
    // swapped once.
    let mut acc = 0u64;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_ne_bytes(tail));
    // Fold 64 → 32 → 16 bits (end-around carries).
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut s = (acc & 0xffff) + (acc >> 16);
    s = (s & 0xffff) + (s >> 16);
    let s = u16::from_be_bytes((s as u16).to_ne_bytes());
    let mut t = u64::from(sum) + u64::from(s);
    t = (t & 0xffff) + (t >> 16);
    t = (t & 0xffff) + (t >> 16);
    t as u32
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The one's complement sum of the UDP pseudo-header (addresses,
/// protocol, UDP length), not folded.
fn pseudo(src: IpAddr, dst: IpAddr, len: usize) -> u32 {
    let s = match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => sum16(sum16(0, &a.octets()), &b.octets()),
        (IpAddr::V6(a), IpAddr::V6(b)) => sum16(sum16(0, &a.octets()), &b.octets()),
        _ => 0,
    };
    s + 17 + len as u32
}

/// The (not inverted) sum of the UDP pseudo-header: what a sender that
/// leaves the checksum to its NIC writes in the field (Linux's
/// CHECKSUM_PARTIAL, which a veth peer hands over as it is).
fn pseudo_sum(src: IpAddr, dst: IpAddr, len: usize) -> u16 {
    !fold(pseudo(src, dst, len))
}

/// The UDP checksum over the pseudo-header and `udp` (its checksum field
/// included as it stands).
fn udp_sum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    fold(sum16(pseudo(src, dst, udp.len()), udp))
}

/// Reads the UDP datagram of an Ethernet frame, checking its headers.
pub fn parse(frame: &[u8]) -> Result<Udp, FrameError> {
    if frame.len() < 14 {
        return Err(FrameError::Truncated);
    }
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[..6]);
    src_mac.copy_from_slice(&frame[6..12]);
    let ether = u16::from_be_bytes([frame[12], frame[13]]);
    // The addresses, and where the IP packet ends (Ethernet may pad).
    let (src, dst, ip_end) = match ether {
        0x0800 => {
            let ip = frame.get(14..34).ok_or(FrameError::Truncated)?;
            if ip[0] != 0x45 || ip[9] != 17 || (ip[6] & 0x3f) != 0 || ip[7] != 0 {
                return Err(FrameError::NotUdp);
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if total < 28 || 14 + total > frame.len() {
                return Err(FrameError::Truncated);
            }
            if fold(sum16(0, ip)) != 0 {
                return Err(FrameError::IpChecksum);
            }
            let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (IpAddr::V4(s), IpAddr::V4(d), 14 + total)
        }
        0x86dd => {
            let ip = frame.get(14..54).ok_or(FrameError::Truncated)?;
            if ip[0] >> 4 != 6 || ip[6] != 17 {
                return Err(FrameError::NotUdp);
            }
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if payload < 8 || 54 + payload > frame.len() {
                return Err(FrameError::Truncated);
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            d.copy_from_slice(&ip[24..40]);
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                54 + payload,
            )
        }
        _ => return Err(FrameError::NotUdp),
    };
    let udp_at = if src.is_ipv6() { 54 } else { 34 };
    let udp = frame.get(udp_at..udp_at + 8).ok_or(FrameError::Truncated)?;
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    // The UDP length fills the IP packet exactly.
    if len < 8 || udp_at + len != ip_end {
        return Err(FrameError::Truncated);
    }
    let checksum = u16::from_be_bytes([udp[6], udp[7]]);
    let datagram = &frame[udp_at..udp_at + len];
    // IPv4 may leave it out (0); IPv6 may not (RFC 8200 §8.1). A frame
    // from a local peer whose NIC was to finish it holds the pseudo-
    // header's sum alone.
    if (checksum != 0 || src.is_ipv6())
        && udp_sum(src, dst, datagram) != 0
        && checksum != pseudo_sum(src, dst, len)
    {
        return Err(FrameError::UdpChecksum);
    }
    Ok(Udp {
        macs: (src_mac, dst_mac),
        src: SocketAddr::new(src, u16::from_be_bytes([udp[0], udp[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([udp[2], udp[3]])),
        payload: udp_at + 8..udp_at + len,
    })
}

/// Octets of the headers in front of a payload from `src`.
pub fn headers_len(src: SocketAddr) -> usize {
    if src.is_ipv6() {
        V6_HEADERS
    } else {
        V4_HEADERS
    }
}

/// Writes the Ethernet, IP and UDP headers in front of the `payload_len`
/// octets already at `out[headers_len(src)..]`, checksums included;
/// returns the frame's length, or `None` when `out` is too short or the
/// families differ. `id` is the IPv4 identification.
pub fn build(
    out: &mut [u8],
    (src_mac, dst_mac): (Mac, Mac),
    src: SocketAddr,
    dst: SocketAddr,
    payload_len: usize,
    id: u16,
) -> Option<usize> {
    let h = headers_len(src);
    let total = h + payload_len;
    if out.len() < total || src.is_ipv6() != dst.is_ipv6() || payload_len > 65_000 {
        return None;
    }
    out[..6].copy_from_slice(&dst_mac);
    out[6..12].copy_from_slice(&src_mac);
    let udp_len = (8 + payload_len) as u16;
    let udp_at = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let ip = &mut out[14..34];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
            ip[4..6].copy_from_slice(&id.to_be_bytes());
            // Don't fragment.
            ip[6..8].copy_from_slice(&[0x40, 0]);
            ip[8] = 64;
            ip[9] = 17;
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = fold(sum16(0, ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            34
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let ip = &mut out[14..54];
            ip[..4].copy_from_slice(&[0x60, 0, 0, 0]);
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = 17;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            54
        }
        _ => return None,
    };
    let udp = &mut out[udp_at..total];
    udp[..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    let c = match udp_sum(src.ip(), dst.ip(), udp) {
        // RFC 768: a computed zero is sent as all ones.
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];

    fn round_trip(src: &str, dst: &str) {
        let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let mut buf = [0u8; 256];
        let h = headers_len(src);
        buf[h..h + 5].copy_from_slice(b"hello");
        let n = build(&mut buf, (A, B), src, dst, 5, 7).unwrap();
        assert_eq!(n, h + 5);
        let u = parse(&buf[..n]).unwrap();
        assert_eq!((u.src, u.dst, u.macs), (src, dst, (A, B)));
        assert_eq!(&buf[u.payload.clone()], b"hello");
        // Any flipped bit in the headers or payload is caught (the MACs,
        // and IPv6's traffic class, flow label and hop limit, which no
        // checksum covers, aside).
        for i in 14..n {
            if src.is_ipv6() && ((14..18).contains(&i) || i == 21) {
                continue;
            }
            let mut bad = buf;
            bad[i] ^= 0x04;
            assert!(parse(&bad[..n]).is_err(), "bit flip at {i} went unnoticed");
        }
        assert_eq!(parse(&buf[..n - 1]), Err(FrameError::Truncated));
        // Left for the NIC to finish (the pseudo-header's sum in the field).
        let mut partial = buf;
        let c = pseudo_sum(src.ip(), dst.ip(), 8 + 5).to_be_bytes();
        partial[h - 2..h].copy_from_slice(&c);
        assert!(parse(&partial[..n]).is_ok());
    }

    #[test]
    fn frames_built_parse_back_and_damage_is_caught() {
        round_trip("10.99.0.1:5060", "10.99.0.2:5070");
        round_trip("[fd00::1]:30000", "[fd00::2]:40000");
    }

    #[test]
    fn a_known_ipv4_header_checksum() {
        // RFC 1071-style check on a textbook header (checksum 0xb861).
        let ip = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(sum16(0, &ip)), 0xb861);
    }

    #[test]
    fn fragments_options_and_other_protocols_are_not_taken() {
        let src: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let dst: SocketAddr = "10.0.0.2:2".parse().unwrap();
        let mut buf = [0u8; 64];
        let n = build(&mut buf, (A, B), src, dst, 4, 1).unwrap();
        let mut frag = buf;
        frag[20] |= 0x20;
        assert_eq!(parse(&frag[..n]), Err(FrameError::NotUdp));
        let mut tcp = buf;
        tcp[23] = 6;
        assert_eq!(parse(&tcp[..n]), Err(FrameError::NotUdp));
        let mut arp = buf;
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse(&arp[..n]), Err(FrameError::NotUdp));
        // A zero UDP checksum over IPv4 means none.
        let mut none = buf;
        none[40..42].copy_from_slice(&[0, 0]);
        assert!(parse(&none[..n]).is_ok());
        assert_eq!(build(&mut buf[..20], (A, B), src, dst, 4, 1), None);
    }
}
