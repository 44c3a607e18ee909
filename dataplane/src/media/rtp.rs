//! RTP and RTCP headers (RFC 3550 §5.1, §6.4), validated without copying.

/// Why a packet is not valid RTP or RTCP; the relay drops and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketError {
    /// Shorter than the fixed header.
    TooShort,
    /// Version is not 2.
    Version,
    /// The CSRC list runs past the end.
    CsrcOverrun,
    /// The header extension runs past the end.
    ExtensionOverrun,
    /// The padding count is zero or larger than the payload.
    Padding,
    /// An RTCP length field does not match the packet.
    RtcpLength,
    /// An RTCP packet type outside 192-223.
    RtcpType,
}

impl PacketError {
    /// Short name for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PacketError::TooShort => "too-short",
            PacketError::Version => "version",
            PacketError::CsrcOverrun => "csrc-overrun",
            PacketError::ExtensionOverrun => "extension-overrun",
            PacketError::Padding => "padding",
            PacketError::RtcpLength => "rtcp-length",
            PacketError::RtcpType => "rtcp-type",
        }
    }
}

/// The fixed RTP header and where the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub seq: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: Ssrc,
    /// Offset of the payload (after CSRCs and extension).
    pub payload_offset: usize,
    /// Payload length (padding excluded).
    pub payload_len: usize,
}

/// A synchronization source (RFC 3550 §3): the 32-bit identifier of one
/// RTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// Parses and validates an RTP packet (RFC 3550 §5.1, §5.3.1).
pub fn parse_rtp(p: &[u8]) -> Result<RtpHeader, PacketError> {
    if p.len() < 12 {
        return Err(PacketError::TooShort);
    }
    if p[0] >> 6 != 2 {
        return Err(PacketError::Version);
    }
    let padding = p[0] & 0x20 != 0;
    let extension = p[0] & 0x10 != 0;
    let cc = usize::from(p[0] & 0x0f);
    let mut offset = 12 + 4 * cc;
    if offset > p.len() {
        return Err(PacketError::CsrcOverrun);
    }
    if extension {
        // 16-bit profile, 16-bit length in 32-bit words, then the data.
        if offset + 4 > p.len() {
            return Err(PacketError::ExtensionOverrun);
        }
        let words = usize::from(u16::from_be_bytes([p[offset + 2], p[offset + 3]]));
        offset += 4 + 4 * words;
        if offset > p.len() {
            return Err(PacketError::ExtensionOverrun);
        }
    }
    let mut end = p.len();
    if padding {
        // RFC 3550 §5.1: the last octet counts the padding, itself included.
        let count = usize::from(p[p.len() - 1]);
        if count == 0 || offset + count > p.len() {
            return Err(PacketError::Padding);
        }
        end -= count;
    }
    Ok(RtpHeader {
        marker: p[1] & 0x80 != 0,
        payload_type: p[1] & 0x7f,
        seq: u16::from_be_bytes([p[2], p[3]]),
        timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ssrc: Ssrc(u32::from_be_bytes([p[8], p[9], p[10], p[11]])),
        payload_offset: offset,
        payload_len: end - offset,
    })
}

/// RFC 5761 §4: on a port that carries both, an RTCP packet is one whose
/// second octet (the RTP marker and payload type) is 192-223.
pub fn looks_like_rtcp(p: &[u8]) -> bool {
    p.len() >= 2 && (192..=223).contains(&p[1])
}

/// What a valid RTCP compound packet tells the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpInfo {
    /// SSRC of the sender of the first packet.
    pub ssrc: Ssrc,
    /// Packet type of the first packet.
    pub first_type: u8,
    /// Number of packets in the compound.
    pub packets: usize,
}

/// Validates an RTCP compound packet: every packet has version 2, a type in
/// 192-223, and a length that lands exactly on the end (RFC 3550 §6.4, A.2).
pub fn check_rtcp(p: &[u8]) -> Result<RtcpInfo, PacketError> {
    if p.len() < 8 {
        return Err(PacketError::TooShort);
    }
    let mut offset = 0;
    let mut packets = 0;
    while offset < p.len() {
        let h = &p[offset..];
        if h.len() < 4 {
            return Err(PacketError::RtcpLength);
        }
        if h[0] >> 6 != 2 {
            return Err(PacketError::Version);
        }
        if !(192..=223).contains(&h[1]) {
            return Err(PacketError::RtcpType);
        }
        let len = 4 * (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1);
        if len > h.len() {
            return Err(PacketError::RtcpLength);
        }
        offset += len;
        packets += 1;
    }
    Ok(RtcpInfo {
        ssrc: Ssrc(u32::from_be_bytes([p[4], p[5], p[6], p[7]])),
        first_type: p[1],
        packets,
    })
}

/// RTCP packet types of feedback messages (RFC 4585 §6.1): transport-layer
/// (NACK, transport-wide congestion control) and payload-specific (PLI,
/// FIR, REMB).
const RTPFB: u8 = 205;
const PSFB: u8 = 206;

/// Takes the feedback messages (RTPFB, PSFB) out of the compound RTCP
/// packet `buf[..len]` (one [`check_rtcp`] accepted), moving what follows
/// them down; returns the length left and how many were taken out.
pub fn strip_rtcp_feedback(buf: &mut [u8], len: usize) -> (usize, usize) {
    let (mut read, mut write, mut removed) = (0, 0, 0);
    while read + 4 <= len {
        let size = 4 * (usize::from(u16::from_be_bytes([buf[read + 2], buf[read + 3]])) + 1);
        let end = (read + size).min(len);
        if matches!(buf[read + 1], RTPFB | PSFB) {
            removed += 1;
        } else {
            if write != read {
                buf.copy_within(read..end, write);
            }
            write += end - read;
        }
        read = end;
    }
    (write, removed)
}

/// Writes a 12-octet RTP header (no CSRC, no extension) at the start of `out`.
pub fn write_rtp_header(
    out: &mut [u8; 12],
    marker: bool,
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: Ssrc,
) {
    out[0] = 0x80;
    out[1] = (u8::from(marker) << 7) | (payload_type & 0x7f);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.0.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_is_taken_out_of_a_compound_and_the_rest_kept_in_order() {
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 42];
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 42, 0, 0, 0, 9];
        let sdes = [0x81, 202, 0, 2, 0, 0, 0, 42, 1, 1, b'x', 0];
        let remb = [
            0x8f, 206, 0, 4, 0, 0, 0, 42, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 1, 0, 0, 0,
        ];
        let mut buf = [&rr[..], &pli[..], &sdes[..], &remb[..]].concat();
        let len = buf.len();
        assert!(check_rtcp(&buf).is_ok());
        let (kept, removed) = strip_rtcp_feedback(&mut buf, len);
        assert_eq!(removed, 2);
        assert_eq!(&buf[..kept], &[&rr[..], &sdes[..]].concat()[..]);
        assert!(check_rtcp(&buf[..kept]).is_ok());
        // Nothing but feedback: nothing left; no feedback: unchanged.
        let mut only = pli.to_vec();
        assert_eq!(strip_rtcp_feedback(&mut only, pli.len()), (0, 1));
        let mut none = rr.to_vec();
        assert_eq!(strip_rtcp_feedback(&mut none, rr.len()), (8, 0));
        assert_eq!(none, rr);
    }

    fn packet(first: u8, extra: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut h = [0u8; 12];
        write_rtp_header(&mut h, true, 0, 7, 160, Ssrc(0xdead_beef));
        h[0] = first;
        [&h[..], extra, payload].concat()
    }

    #[test]
    fn parses_header_csrc_extension_padding() {
        let p = packet(0x80, &[], &[1; 160]);
        let h = parse_rtp(&p).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (h.marker, h.payload_type, h.seq, h.timestamp, h.ssrc),
            (true, 0, 7, 160, Ssrc(0xdead_beef))
        );
        assert_eq!((h.payload_offset, h.payload_len), (12, 160));
        // One CSRC, an extension of one word, 3 octets of padding.
        let p = packet(
            0xb1,
            &[0, 0, 0, 1, 0xbe, 0xde, 0, 1, 9, 9, 9, 9],
            &[5, 5, 5, 5, 0, 0, 3],
        );
        let h = parse_rtp(&p).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((h.payload_offset, h.payload_len), (24, 4));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_rtp(&[0x80; 11]), Err(PacketError::TooShort));
        assert_eq!(
            parse_rtp(&packet(0x40, &[], &[0; 4])),
            Err(PacketError::Version)
        );
        assert_eq!(
            parse_rtp(&packet(0x8f, &[], &[0; 4])),
            Err(PacketError::CsrcOverrun)
        );
        assert_eq!(
            parse_rtp(&packet(0x90, &[0xbe, 0xde, 0, 9], &[0; 4])),
            Err(PacketError::ExtensionOverrun)
        );
        assert_eq!(
            parse_rtp(&packet(0xa0, &[], &[0, 0, 0, 0])),
            Err(PacketError::Padding)
        );
        assert_eq!(
            parse_rtp(&packet(0xa0, &[], &[0, 0, 9])),
            Err(PacketError::Padding)
        );
    }

    #[test]
    fn rtcp_compounds() {
        // RR with no report blocks (length 1) + SDES (length 2).
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 42];
        let sdes = [0x81, 202, 0, 2, 0, 0, 0, 42, 0, 0, 0, 0];
        let p = [&rr[..], &sdes[..]].concat();
        assert!(looks_like_rtcp(&p));
        assert_eq!(
            check_rtcp(&p),
            Ok(RtcpInfo {
                ssrc: Ssrc(42),
                first_type: 201,
                packets: 2
            })
        );
        assert_eq!(check_rtcp(&p[..10]), Err(PacketError::RtcpLength));
        let mut bad = p.clone();
        bad[9] = 100;
        assert_eq!(check_rtcp(&bad), Err(PacketError::RtcpType));
        assert!(!looks_like_rtcp(&packet(0x80, &[], &[0; 4])));
    }
}
