//! BUNDLE (RFC 9143): several media lines of one side on one transport
//! (one port, one ICE agent, one DTLS association, one SRTP context).
//!
//! What arrives on a side's bundle transport is told apart per packet
//! (RFC 8843 §9.2): RTP by its MID header extension (RFC 8285,
//! `urn:ietf:params:rtp-hdrext:sdes:mid`), else by an SSRC already tied to
//! a line (signalled with `a=ssrc`, or learned from an earlier packet),
//! else by a payload type only one line has. RTCP goes by the sender's
//! SSRC, else by the SSRCs its report blocks and feedback name (streams
//! rvoip sent on a line), else to the transport's own line. All of it
//! without allocation: the tables are inline and bounded.

use smallvec::SmallVec;

use super::rtp::RtpHeader;

/// The header extension that carries a packet's MID (RFC 9143 §15.2).
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

/// One media line of a side's bundle, as that side's SDP says it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BundleLine {
    /// The media line whose transport the bundle uses.
    pub transport: usize,
    /// The line's `a=mid`.
    pub mid: Vec<u8>,
    /// The `a=extmap` id of the MID header extension, if offered.
    pub mid_ext: Option<u8>,
    /// The payload types of the line.
    pub payload_types: Vec<u8>,
    /// The SSRCs its `a=ssrc` lines name.
    pub ssrcs: Vec<u32>,
}

/// Longest MID kept (RFC 8843 §5: 1–16 octets in practice, browsers use a
/// few digits).
const MID_MAX: usize = 32;
/// SSRCs tied to lines per bundle (signalled and learned; the oldest
/// learned one makes room).
const SSRCS: usize = 16;

#[derive(Debug, Clone, Default)]
struct Route {
    media: u16,
    mid: SmallVec<[u8; MID_MAX]>,
    /// Payload types 0-127, one bit each.
    pts: u128,
}

/// How one side's bundle transport is demultiplexed.
#[derive(Debug, Clone, Default)]
pub struct BundleDemux {
    /// The media line whose transport the bundle uses.
    pub transport: u16,
    mid_ext: Option<u8>,
    routes: SmallVec<[Route; 4]>,
    /// Inbound SSRC → line.
    ssrcs: SmallVec<[(u32, u16); SSRCS]>,
    /// Where the next learned SSRC goes once the table is full.
    next_evict: usize,
    /// SSRCs rvoip sends on each line: RTCP that reports on them or asks
    /// them for something belongs to that line.
    sent: SmallVec<[(u32, u16); SSRCS]>,
}

impl BundleDemux {
    /// An empty demux of the bundle on `transport`'s transport.
    pub fn new(transport: usize) -> Self {
        BundleDemux {
            transport: transport as u16,
            ..BundleDemux::default()
        }
    }

    /// Adds line `media` (or updates it).
    pub fn set_line(&mut self, media: usize, line: &BundleLine) {
        let media = media as u16;
        if line.mid_ext.is_some() {
            self.mid_ext = line.mid_ext;
        }
        let mut pts = 0u128;
        for pt in &line.payload_types {
            if *pt < 128 {
                pts |= 1 << pt;
            }
        }
        let route = Route {
            media,
            mid: line.mid.iter().copied().take(MID_MAX).collect(),
            pts,
        };
        match self.routes.iter_mut().find(|r| r.media == media) {
            Some(r) => *r = route,
            None => self.routes.push(route),
        }
        for ssrc in &line.ssrcs {
            self.tie(*ssrc, media);
        }
    }

    /// The lines of the bundle.
    pub fn lines(&self) -> impl Iterator<Item = usize> + '_ {
        self.routes.iter().map(|r| usize::from(r.media))
    }

    /// Ties `ssrc` to line `media`.
    fn tie(&mut self, ssrc: u32, media: u16) {
        if let Some(e) = self.ssrcs.iter_mut().find(|e| e.0 == ssrc) {
            e.1 = media;
        } else if self.ssrcs.len() < SSRCS {
            self.ssrcs.push((ssrc, media));
        } else {
            self.ssrcs[self.next_evict % SSRCS] = (ssrc, media);
            self.next_evict = self.next_evict.wrapping_add(1);
        }
    }

    fn line_of_ssrc(&self, ssrc: u32) -> Option<u16> {
        self.ssrcs.iter().find(|e| e.0 == ssrc).map(|e| e.1)
    }

    /// The line an RTP packet (`pkt`, parsed as `h`) belongs to; `None`
    /// when nothing ties it to one (RFC 9143 §9.2: it is discarded).
    pub fn route_rtp(&mut self, pkt: &[u8], h: &RtpHeader) -> Option<usize> {
        let ssrc = h.ssrc.0;
        if let Some(mid) = self.mid_ext.and_then(|id| header_extension(pkt, id))
            && let Some(r) = self.routes.iter().find(|r| r.mid.as_slice() == mid)
        {
            let media = r.media;
            if self.line_of_ssrc(ssrc) != Some(media) {
                self.tie(ssrc, media);
            }
            return Some(usize::from(media));
        }
        if let Some(media) = self.line_of_ssrc(ssrc) {
            return Some(usize::from(media));
        }
        let bit = 1u128 << (h.payload_type & 0x7f);
        let mut with = self.routes.iter().filter(|r| r.pts & bit != 0);
        let first = with.next()?.media;
        if with.next().is_some() {
            return None;
        }
        self.tie(ssrc, first);
        Some(usize::from(first))
    }

    /// The line a (valid, unprotected) RTCP compound packet belongs to:
    /// its sender's, else the one whose streams it reports on; else the
    /// transport's own.
    pub fn route_rtcp(&self, pkt: &[u8]) -> usize {
        if pkt.len() >= 8
            && let Some(m) = self.line_of_ssrc(be32(pkt, 4))
        {
            return usize::from(m);
        }
        let mut at = 0;
        while at + 8 <= pkt.len() {
            let count = usize::from(pkt[at] & 0x1f);
            let size = 4 * (usize::from(u16::from_be_bytes([pkt[at + 2], pkt[at + 3]])) + 1);
            let named = match pkt[at + 1] {
                // SR: report blocks after the 20 octets of sender info.
                200 if count > 0 => Some(at + 28),
                // RR: report blocks right after the sender SSRC.
                201 if count > 0 => Some(at + 8),
                // RTPFB, PSFB: the media source.
                205 | 206 => Some(at + 8),
                _ => None,
            };
            if let Some(o) = named.filter(|o| o + 4 <= pkt.len().min(at + size))
                && let Some(e) = self.sent.iter().find(|e| e.0 == be32(pkt, o))
            {
                return usize::from(e.1);
            }
            at += size;
        }
        usize::from(self.transport)
    }

    /// Notes that rvoip sent SSRC `ssrc` on line `media`.
    pub fn note_sent(&mut self, media: usize, ssrc: u32) {
        let media = media as u16;
        if let Some(e) = self.sent.iter_mut().find(|e| e.0 == ssrc) {
            e.1 = media;
            return;
        }
        if self.sent.len() == SSRCS {
            self.sent.remove(0);
        }
        self.sent.push((ssrc, media));
    }

    /// Whether `ssrc` is known to have been sent on `media`.
    pub fn sent_on(&self, media: usize, ssrc: u32) -> bool {
        self.sent
            .iter()
            .any(|e| e.0 == ssrc && usize::from(e.1) == media)
    }
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

/// The value of header extension `id` of an RTP packet (RFC 8285: the
/// one-byte form, profile 0xBEDE, and the two-byte form, 0x100x).
pub fn header_extension(pkt: &[u8], id: u8) -> Option<&[u8]> {
    if pkt.len() < 12 || pkt[0] & 0x10 == 0 {
        return None;
    }
    let at = 12 + 4 * usize::from(pkt[0] & 0x0f);
    let head = pkt.get(at..at + 4)?;
    let profile = u16::from_be_bytes([head[0], head[1]]);
    let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let data = pkt.get(at + 4..at + 4 + 4 * words)?;
    let mut i = 0;
    if profile == 0xBEDE {
        while i < data.len() {
            let b = data[i];
            if b == 0 {
                // Padding.
                i += 1;
                continue;
            }
            let (eid, len) = (b >> 4, usize::from(b & 0x0f) + 1);
            if eid == 15 {
                // RFC 8285 §4.2: stop.
                return None;
            }
            let v = data.get(i + 1..i + 1 + len)?;
            if eid == id {
                return Some(v);
            }
            i += 1 + len;
        }
    } else if profile & 0xfff0 == 0x1000 {
        while i + 1 < data.len() {
            let eid = data[i];
            if eid == 0 {
                i += 1;
                continue;
            }
            let len = usize::from(data[i + 1]);
            let v = data.get(i + 2..i + 2 + len)?;
            if eid == id {
                return Some(v);
            }
            i += 2 + len;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::parse_rtp;

    /// An RTP packet with payload type `pt`, SSRC `ssrc` and, when given,
    /// a one-byte MID extension (id 4).
    fn rtp(pt: u8, ssrc: u32, mid: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 1, 0, 0, 0, 160];
        p.extend_from_slice(&ssrc.to_be_bytes());
        if let Some(mid) = mid {
            p[0] |= 0x10;
            let mut ext = vec![(4 << 4) | (mid.len() as u8 - 1)];
            ext.extend_from_slice(mid);
            while ext.len() % 4 != 0 {
                ext.push(0);
            }
            p.extend_from_slice(&[0xBE, 0xDE]);
            p.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(&ext);
        }
        p.extend_from_slice(&[0xd5; 20]);
        p
    }

    fn demux() -> BundleDemux {
        let mut d = BundleDemux::new(0);
        d.set_line(
            0,
            &BundleLine {
                transport: 0,
                mid: b"a".to_vec(),
                mid_ext: Some(4),
                payload_types: vec![111, 0, 126],
                ssrcs: vec![0x1111],
            },
        );
        d.set_line(
            1,
            &BundleLine {
                transport: 0,
                mid: b"v".to_vec(),
                mid_ext: Some(4),
                payload_types: vec![96, 97, 126],
                ssrcs: vec![],
            },
        );
        d
    }

    fn route(d: &mut BundleDemux, p: &[u8]) -> Option<usize> {
        let h = parse_rtp(p).unwrap();
        d.route_rtp(p, &h)
    }

    #[test]
    fn rtp_goes_by_mid_then_ssrc_then_a_payload_type_only_one_line_has() {
        let mut d = demux();
        // Signalled SSRC.
        assert_eq!(route(&mut d, &rtp(111, 0x1111, None)), Some(0));
        // MID wins over payload type, and ties the SSRC.
        assert_eq!(route(&mut d, &rtp(0, 0x2222, Some(b"v"))), Some(1));
        assert_eq!(route(&mut d, &rtp(0, 0x2222, None)), Some(1));
        // Unique payload type.
        assert_eq!(route(&mut d, &rtp(96, 0x3333, None)), Some(1));
        assert_eq!(
            route(&mut d, &rtp(8, 0x3333, None)),
            Some(1),
            "SSRC learned"
        );
        // Shared payload type, unknown SSRC, no MID: nothing ties it.
        assert_eq!(route(&mut d, &rtp(126, 0x4444, None)), None);
        assert_eq!(route(&mut d, &rtp(55, 0x4444, None)), None);
        // An unknown MID falls back to the rest.
        assert_eq!(route(&mut d, &rtp(0, 0x5555, Some(b"x"))), Some(0));
    }

    #[test]
    fn rtcp_goes_by_sender_then_the_streams_it_reports_on() {
        let mut d = demux();
        let rr = |sender: u32, about: u32| {
            let mut p = vec![0x81, 201, 0, 7];
            p.extend_from_slice(&sender.to_be_bytes());
            p.extend_from_slice(&about.to_be_bytes());
            p.extend_from_slice(&[0; 20]);
            p
        };
        assert_eq!(d.route_rtcp(&rr(0x1111, 9)), 0);
        d.note_sent(1, 0xabcd);
        assert!(d.sent_on(1, 0xabcd));
        assert_eq!(
            d.route_rtcp(&rr(1, 0xabcd)),
            1,
            "reports on line 1's stream"
        );
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0xab, 0xcd];
        assert_eq!(d.route_rtcp(&pli), 1);
        assert_eq!(d.route_rtcp(&rr(1, 2)), 0, "the transport's own");
    }

    #[test]
    fn two_byte_extensions_and_bad_lengths() {
        let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0x10, 0x00, 0, 1];
        p.extend_from_slice(&[4, 1, b'v', 0]);
        assert_eq!(header_extension(&p, 4), Some(&b"v"[..]));
        assert_eq!(header_extension(&p, 5), None);
        // A length past the end.
        let mut q = p.clone();
        q[17] = 9;
        assert_eq!(header_extension(&q, 4), None);
        let short = &p[..14];
        assert_eq!(header_extension(short, 4), None);
    }

    #[test]
    fn the_ssrc_table_stays_bounded() {
        let mut d = demux();
        for s in 0..1000u32 {
            assert_eq!(route(&mut d, &rtp(96, 0x10_0000 + s, None)), Some(1));
        }
        assert!(d.ssrcs.len() <= SSRCS);
        for s in 0..100u32 {
            d.note_sent(0, s);
        }
        assert!(d.sent.len() <= SSRCS);
    }
}
