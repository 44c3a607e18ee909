//! pcap files of captured calls (`rvoip ctl capture`): the classic pcap
//! format with nanosecond timestamps and raw IP records (LINKTYPE_RAW), so
//! Wireshark, tshark and sngrep read them as they are. rvoip sees payloads
//! and addresses, not frames: each record gets an IPv4 or IPv6 header and
//! a UDP or TCP header made here, with lengths and checksums as the kernel
//! would have written them.
//!
//! Records are appended whole to a buffer the caller writes with one
//! `write` to a file opened for appending, so two writers (the control
//! plane with SIP, the media plane with RTP) can share one file.

use std::net::{IpAddr, SocketAddr};

/// pcap's magic for nanosecond timestamps.
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// LINKTYPE_RAW: each record starts with an IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u32 = 101;
/// The snapshot length written in the header.
const SNAPLEN: u32 = 65_535;
/// The largest payload a record carries (an IPv4 packet's length is 16 bits).
pub const MAX_PAYLOAD: usize = 65_000;

/// The octets of a media packet a capture keeps (longer ones are
/// truncated, their length kept).
pub const CAP_BYTES: usize = 1500;

/// A packet the media plane copied for a captured call, handed to the
/// capture writer off the packet path.
#[derive(Debug, Clone)]
pub struct CapPacket {
    /// The capture.
    pub capture: u32,
    /// When it was received or sent, Unix ns.
    pub unix_ns: u64,
    /// Sender (`0.0.0.0`: the relay's IPv4 address).
    pub src: SocketAddr,
    /// Receiver (`0.0.0.0`: the relay's IPv4 address).
    pub dst: SocketAddr,
    /// Its length on the wire (UDP payload).
    pub orig_len: u16,
    /// The octets kept.
    pub len: u16,
    /// The packet.
    pub data: [u8; CAP_BYTES],
}

/// The transport header a record gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP, one segment carrying the payload (PSH, ACK).
    Tcp {
        /// Sequence number of its first octet.
        seq: u32,
        /// What the other direction has sent so far.
        ack: u32,
    },
}

/// Where a captured packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Transport.
    pub proto: Proto,
}

/// The file header (24 octets, host byte order as pcap readers expect).
pub fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC_NS.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    h[16..20].copy_from_slice(&SNAPLEN.to_ne_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_RAW.to_ne_bytes());
    h
}

/// Both addresses in one family: an IPv4 address beside an IPv6 one is
/// written IPv4-mapped.
fn same_family(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (src, dst),
        _ => (IpAddr::V6(v6(src)), IpAddr::V6(v6(dst))),
    }
}

/// The one's-complement sum of `data` added to `sum`.
fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn octets(ip: IpAddr) -> ([u8; 16], usize) {
    let mut o = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            o[..4].copy_from_slice(&v4.octets());
            (o, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

/// Appends one record of `payload` (the first octets of a packet of
/// `orig_len` payload octets) sent at `unix_ns`.
pub fn append(out: &mut Vec<u8>, unix_ns: u64, wire: &Wire, payload: &[u8], orig_len: usize) {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    let orig_len = orig_len.clamp(payload.len(), MAX_PAYLOAD);
    let (src, dst) = same_family(wire.src.ip(), wire.dst.ip());
    let ((s, n), (d, _)) = (octets(src), octets(dst));
    let (s, d) = (&s[..n], &d[..n]);
    let ip_len = if n == 4 { 20 } else { 40 };
    let (l4_len, proto) = match wire.proto {
        Proto::Udp => (8, 17u8),
        Proto::Tcp { .. } => (20, 6u8),
    };
    let caplen = ip_len + l4_len + payload.len();
    let wirelen = ip_len + l4_len + orig_len;
    let l4_total = (l4_len + orig_len) as u16;
    out.extend_from_slice(&((unix_ns / 1_000_000_000) as u32).to_ne_bytes());
    out.extend_from_slice(&((unix_ns % 1_000_000_000) as u32).to_ne_bytes());
    out.extend_from_slice(&(caplen as u32).to_ne_bytes());
    out.extend_from_slice(&(wirelen as u32).to_ne_bytes());
    let start = out.len();
    if n == 4 {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&(wirelen as u16).to_be_bytes());
        h[6] = 0x40; // DF
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(s);
        h[16..20].copy_from_slice(d);
        let c = fold(sum16(0, &h));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&h);
    } else {
        let mut h = [0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&l4_total.to_be_bytes());
        h[6] = proto;
        h[7] = 64;
        h[8..24].copy_from_slice(s);
        h[24..40].copy_from_slice(d);
        out.extend_from_slice(&h);
    }
    // The pseudo-header's sum, then the transport header's and payload's.
    let pseudo = sum16(sum16(0, s), d) + u32::from(proto) + u32::from(l4_total);
    let l4 = out.len();
    out.extend_from_slice(&wire.src.port().to_be_bytes());
    out.extend_from_slice(&wire.dst.port().to_be_bytes());
    match wire.proto {
        Proto::Udp => {
            out.extend_from_slice(&l4_total.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        Proto::Tcp { seq, ack } => {
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&ack.to_be_bytes());
            out.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        }
    }
    out.extend_from_slice(payload);
    // A truncated payload cannot be summed; its checksum stays 0 (as a
    // capture with a short snapshot length shows it).
    if orig_len == payload.len() {
        let mut c = fold(sum16(pseudo, &out[l4..]));
        if c == 0 && proto == 17 {
            c = 0xffff;
        }
        let at = l4 + if proto == 17 { 6 } else { 16 };
        out[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    debug_assert_eq!(out.len() - start, caplen);
}

/// The address written for a relay endpoint whose address is "the relay's
/// IPv4 address" (`0.0.0.0`), once that address is known.
pub fn or_default(addr: SocketAddr, v4: IpAddr) -> SocketAddr {
    if addr.ip().is_unspecified() && addr.is_ipv4() {
        SocketAddr::new(v4, addr.port())
    } else {
        addr
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    /// (seconds, nanoseconds, captured, original, record data) of each record.
    fn records(file: &[u8]) -> Vec<(u32, u32, usize, usize, &[u8])> {
        let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
        assert_eq!(u32_at(file, 0), MAGIC_NS);
        assert_eq!(u32_at(file, 20), LINKTYPE_RAW);
        let mut out = Vec::new();
        let mut at = 24;
        while at < file.len() {
            let (cap, orig) = (
                u32_at(file, at + 8) as usize,
                u32_at(file, at + 12) as usize,
            );
            out.push((
                u32_at(file, at),
                u32_at(file, at + 4),
                cap,
                orig,
                &file[at + 16..at + 16 + cap],
            ));
            at += 16 + cap;
        }
        out
    }

    #[test]
    fn udp_over_ipv4_carries_addresses_lengths_and_valid_checksums() {
        let mut f = file_header().to_vec();
        let wire = Wire {
            src: "127.0.0.2:5060".parse().unwrap(),
            dst: "127.0.0.1:5080".parse().unwrap(),
            proto: Proto::Udp,
        };
        append(
            &mut f,
            1_700_000_000_123_456_789,
            &wire,
            b"OPTIONS sip:x SIP/2.0\r\n",
            23,
        );
        let r = records(&f);
        assert_eq!(r.len(), 1);
        let (sec, nsec, cap, orig, p) = r[0];
        assert_eq!((sec, nsec, cap, orig), (1_700_000_000, 123_456_789, 51, 51));
        assert_eq!(p[0], 0x45);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 51);
        assert_eq!(&p[12..16], &[127, 0, 0, 2]);
        assert_eq!(&p[16..20], &[127, 0, 0, 1]);
        // A header with its checksum sums to all ones.
        assert_eq!(fold(sum16(0, &p[..20])), 0);
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 5060);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 5080);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 31);
        let pseudo = sum16(sum16(0, &p[12..16]), &p[16..20]) + 17 + 31;
        assert_eq!(fold(sum16(pseudo, &p[20..])), 0);
        assert_eq!(&p[28..], b"OPTIONS sip:x SIP/2.0\r\n");
    }

    #[test]
    fn tcp_over_ipv6_and_mixed_families_are_written_in_one_family() {
        let mut f = file_header().to_vec();
        let wire = Wire {
            src: "[::1]:5060".parse().unwrap(),
            dst: "127.0.0.1:5070".parse().unwrap(),
            proto: Proto::Tcp { seq: 1000, ack: 7 },
        };
        append(&mut f, 5, &wire, b"BYE", 3);
        let r = records(&f);
        let (_, _, cap, _, p) = r[0];
        assert_eq!(cap, 40 + 20 + 3);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 23);
        assert_eq!(p[6], 6);
        assert_eq!(
            &p[24..40],
            &"::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(u32::from_be_bytes(p[44..48].try_into().unwrap()), 1000);
        assert_eq!(u32::from_be_bytes(p[48..52].try_into().unwrap()), 7);
        let pseudo = sum16(sum16(0, &p[8..24]), &p[24..40]) + 6 + 23;
        assert_eq!(fold(sum16(pseudo, &p[40..])), 0);
    }

    #[test]
    fn a_truncated_payload_keeps_its_original_length() {
        let mut f = file_header().to_vec();
        let wire = Wire {
            src: "10.0.0.1:30000".parse().unwrap(),
            dst: "10.0.0.2:40000".parse().unwrap(),
            proto: Proto::Udp,
        };
        append(&mut f, 0, &wire, &[0x80; 100], 1400);
        let (_, _, cap, orig, p) = records(&f)[0];
        assert_eq!((cap, orig), (128, 1428));
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 1428);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 1408);
        assert_eq!(
            or_default(
                "0.0.0.0:30000".parse().unwrap(),
                "10.0.0.1".parse().unwrap()
            ),
            "10.0.0.1:30000".parse().unwrap()
        );
    }
}
