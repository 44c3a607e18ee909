//! Codec negotiation for the media sessions: an offer's codec options
//! (add, strip, mask) applied to the SDP given to the answerer, and the
//! answer read to decide whether the call is relayed as it is (the sides
//! share a codec) or goes through the processing stage ([`super::transcode`]),
//! in which case the answer given to the offerer names the offerer's own
//! codec. Names, static payload types and clocks come from the one
//! registry, `rvoip_codecs::Codec`.

use rvoip_codecs::{Codec, Format};

use super::orders::{CodecOptions, CodecSpec, OrderError};
use super::rtp::Ssrc;
use super::transcode::LegCodec;
use crate::sdp::MediaSection;

/// A payload format as one side's SDP wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpFormat {
    /// Payload type.
    pub pt: u8,
    /// Encoding name as written (from the rtpmap, or the static table).
    pub name: Vec<u8>,
    /// Clock rate.
    pub clock: u32,
    /// Channels.
    pub channels: u8,
    /// Its `a=fmtp` parameters.
    pub fmtp: Option<Vec<u8>>,
}

impl SdpFormat {
    /// The codec rvoip knows it as.
    pub fn codec(&self) -> Option<Codec> {
        Codec::from_name(&self.name)
    }

    fn rtpmap(&self) -> Vec<u8> {
        let mut v = self.name.clone();
        v.extend_from_slice(format!("/{}", self.clock).as_bytes());
        if self.channels > 1 {
            v.extend_from_slice(format!("/{}", self.channels).as_bytes());
        }
        v
    }

    fn same_as(&self, o: &SdpFormat) -> bool {
        self.name.eq_ignore_ascii_case(&o.name) && self.clock == o.clock
    }

    /// Whether its fmtp asks for octet-aligned AMR (RFC 4867 §8.1).
    fn octet_align(&self) -> bool {
        self.fmtp.as_deref().is_some_and(|f| {
            f.split(|b| *b == b';')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"octet-align=1"))
        })
    }

    fn is_event_or_noise(&self) -> bool {
        matches!(self.codec(), Some(Codec::TelephoneEvent | Codec::Cn))
    }
}

/// The formats of a media section, in its order of preference.
pub fn formats_of(m: &MediaSection<'_>) -> Vec<SdpFormat> {
    m.payload_types()
        .filter_map(|pt| {
            let (name, clock, channels) = match m.rtpmap(pt) {
                Some(r) => (r.encoding.to_vec(), r.clock_rate, r.channels.unwrap_or(1)),
                None => (
                    rvoip_codecs::static_name(pt)?.as_bytes().to_vec(),
                    rvoip_codecs::static_clock(pt)?,
                    1,
                ),
            };
            Some(SdpFormat {
                pt,
                name,
                clock,
                channels,
                fmtp: m.fmtp(pt).map(|f| f.params.to_vec()),
            })
        })
        .collect()
}

/// What the offer decided for one media line, kept for its answer.
#[derive(Debug, Clone, Default)]
pub struct Negotiation {
    /// The offer's codec options.
    pub options: CodecOptions,
    /// The offerer's formats, all of them.
    pub offered: Vec<SdpFormat>,
    /// The offerer's `a=ptime`.
    pub offered_ptime: Option<u32>,
    /// Payload types rvoip added to the SDP given to the answerer.
    pub added: Vec<u8>,
    /// How the relay encodes Opus (an offer's bit rate overrides).
    pub opus: rvoip_codecs::opus::OpusSettings,
}

fn spec_matches(spec: &CodecSpec, f: &SdpFormat) -> bool {
    if spec.is_all() {
        return !f.is_event_or_noise();
    }
    spec.matches(&f.name, f.clock, f.channels)
}

/// Applies `options` to `m`, the offerer's media section about to go to
/// the answerer: strip and mask take formats out; transcode and offer add
/// the codecs missing (the offerer's own format where it was masked, else
/// the codec's static payload type or a free dynamic one).
pub fn apply_offer(
    m: &mut MediaSection<'_>,
    options: &CodecOptions,
) -> Result<Negotiation, OrderError> {
    let offered = formats_of(m);
    let mut n = Negotiation {
        options: options.clone(),
        offered: offered.clone(),
        offered_ptime: m.ptime(),
        added: Vec::new(),
        opus: rvoip_codecs::opus::OpusSettings::default(),
    };
    let removed: Vec<u8> = offered
        .iter()
        .filter(|f| {
            options
                .strip
                .iter()
                .chain(&options.mask)
                .any(|s| spec_matches(s, f))
        })
        .map(|f| f.pt)
        .collect();
    m.retain_formats(|pt, _| !removed.contains(&pt));
    for spec in options.transcode.iter().chain(&options.offer) {
        let Some(codec) = Codec::from_name(&spec.name) else {
            continue;
        };
        if !(codec.transcodable() || codec == Codec::TelephoneEvent) {
            continue;
        }
        let present = formats_of(m);
        if present.iter().any(|f| spec_matches(spec, f)) {
            continue;
        }
        let format = match offered.iter().find(|f| spec_matches(spec, f)) {
            Some(f) => f.clone(),
            None => {
                let used: Vec<u8> = present
                    .iter()
                    .map(|f| f.pt)
                    .chain(offered.iter().map(|f| f.pt))
                    .collect();
                let pt = codec
                    .static_pt()
                    .filter(|p| !used.contains(p))
                    .or_else(|| (96..=127).find(|p| !used.contains(p)))
                    .ok_or_else(|| {
                        OrderError::Unacceptable("no payload type left to add a codec".into())
                    })?;
                SdpFormat {
                    pt,
                    name: codec.name().as_bytes().to_vec(),
                    clock: spec.clock.unwrap_or(codec.default_clock()),
                    channels: spec.channels.unwrap_or(codec.sdp_channels()),
                    fmtp: codec.default_fmtp().map(|f| f.as_bytes().to_vec()),
                }
            }
        };
        m.add_format(format.pt, &format.rtpmap(), format.fmtp.as_deref());
        n.added.push(format.pt);
    }
    if m.payload_types().next().is_none() {
        return Err(OrderError::Unacceptable(
            "the codec options leave no codec to offer".into(),
        ));
    }
    Ok(n)
}

/// Why the answer's section goes through the stage, and how.
pub type Legs = (LegCodec, LegCodec);

/// Reads the answerer's section `m` against what the offer decided:
/// `Ok(None)` when the answerer picked a codec the offerer has (relayed as
/// is; formats rvoip added are taken out of the answer); otherwise `m`
/// becomes the answer to the offerer, naming the offerer's first codec
/// rvoip can transcode (and its telephone-event), and the legs are
/// returned as (offerer's, answerer's). `ssrcs` are the two streams'
/// SSRCs rvoip will send with.
pub fn read_answer(
    m: &mut MediaSection<'_>,
    n: &Negotiation,
    ssrcs: (Ssrc, Ssrc),
) -> Result<Option<Legs>, OrderError> {
    let answered = formats_of(m);
    let Some(chosen) = answered.iter().find(|f| !f.is_event_or_noise()) else {
        return Ok(None);
    };
    let shared = n.offered.iter().any(|o| o.same_as(chosen));
    if shared && !n.options.always_transcode {
        let added: Vec<u8> = n
            .added
            .iter()
            .copied()
            .filter(|pt| !n.offered.iter().any(|o| o.pt == *pt))
            .collect();
        if !added.is_empty() && answered.iter().any(|f| !added.contains(&f.pt)) {
            m.retain_formats(|pt, _| !added.contains(&pt));
        }
        return Ok(None);
    }
    let theirs = chosen.codec().filter(|c| c.transcodable()).ok_or_else(|| {
        OrderError::Unacceptable(format!(
            "the answer's codec {} cannot be transcoded",
            String::from_utf8_lossy(&chosen.name)
        ))
    })?;
    let (ours_format, ours) = n
        .offered
        .iter()
        .find_map(|f| f.codec().filter(|c| c.transcodable()).map(|c| (f, c)))
        .ok_or_else(|| {
            OrderError::Unacceptable("the offer has no codec rvoip transcodes".into())
        })?;
    let offerer_te = n
        .offered
        .iter()
        .find(|f| f.codec() == Some(Codec::TelephoneEvent));
    let answerer_te = answered
        .iter()
        .find(|f| f.codec() == Some(Codec::TelephoneEvent))
        .map(|f| f.pt);
    let answerer_cn = answered
        .iter()
        .find(|f| f.codec() == Some(Codec::Cn))
        .map(|f| f.pt);
    let answer_ptime = m.ptime();
    // The answer to the offerer: its own codec, its telephone-event.
    m.retain_formats(|_, _| false);
    m.add_format(
        ours_format.pt,
        &ours_format.rtpmap(),
        ours_format.fmtp.as_deref(),
    );
    if let Some(te) = offerer_te {
        m.add_format(te.pt, &te.rtpmap(), te.fmtp.as_deref());
    }
    m.remove_attribute("ptime");
    if let Some(p) = n.offered_ptime {
        m.add_attribute("ptime", Some(p.to_string().as_bytes()));
    }
    let bitrate = |c: Codec| {
        n.options
            .transcode
            .iter()
            .chain(&n.options.offer)
            .find(|s| Codec::from_name(&s.name) == Some(c))
            .and_then(|s| s.bitrate)
    };
    let leg = |f: &SdpFormat, codec: Codec, ssrc: Ssrc, ptime: Option<u32>| {
        let mut l = LegCodec::new(
            Format {
                codec,
                pt: f.pt,
                clock: f.clock,
                channels: f.channels,
            },
            ssrc,
        );
        l.ptime_ms = ptime.unwrap_or(20).clamp(10, 120) as u16;
        l.octet_align = f.octet_align();
        l.opus = n.opus;
        if let Some(b) = bitrate(codec) {
            l.opus.bitrate = b.clamp(6000, 510_000) as i32;
        }
        l
    };
    let mut offerer = leg(ours_format, ours, ssrcs.0, n.offered_ptime);
    offerer.te_pt = offerer_te.map(|f| f.pt);
    let mut answerer = leg(chosen, theirs, ssrcs.1, answer_ptime.or(n.offered_ptime));
    answerer.te_pt = answerer_te;
    answerer.cn_pt = answerer_cn;
    Ok(Some((offerer, answerer)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sdp::Sdp;

    const PCMU_ONLY: &[u8] = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n";

    fn spec(s: &str) -> CodecSpec {
        CodecSpec::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn transcode_adds_opus_keeping_the_offered_codecs() {
        let mut sdp = Sdp::parse(PCMU_ONLY).unwrap();
        let opts = CodecOptions {
            transcode: vec![spec("opus")],
            ..CodecOptions::default()
        };
        let n = apply_offer(&mut sdp.media[0], &opts).unwrap();
        let text = String::from_utf8(sdp.to_bytes()).unwrap();
        assert!(text.contains("m=audio 4000 RTP/AVP 0 101 96\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:96 opus/48000/2\r\n"), "{text}");
        assert!(text.contains("a=fmtp:96 useinbandfec=1\r\n"), "{text}");
        assert_eq!(n.added, vec![96]);
    }

    #[test]
    fn the_answerer_picking_the_added_codec_means_transcoding_and_the_offerer_hears_pcmu() {
        let mut sdp = Sdp::parse(PCMU_ONLY).unwrap();
        let opts = CodecOptions {
            transcode: vec![spec("opus")],
            ..CodecOptions::default()
        };
        let n = apply_offer(&mut sdp.media[0], &opts).unwrap();
        let answer = b"v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n";
        let mut a = Sdp::parse(answer).unwrap();
        let legs = read_answer(&mut a.media[0], &n, (Ssrc(1), Ssrc(2)))
            .unwrap()
            .unwrap();
        assert_eq!(legs.0.format.codec, Codec::Pcmu);
        assert_eq!(legs.0.te_pt, Some(101));
        assert_eq!(legs.1.format.codec, Codec::Opus);
        assert_eq!((legs.1.format.pt, legs.1.format.clock), (96, 48_000));
        let text = String::from_utf8(a.to_bytes()).unwrap();
        assert!(text.contains("m=audio 5000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:0 PCMU/8000\r\n"), "{text}");
        assert!(!text.contains("opus"), "{text}");
    }

    #[test]
    fn the_configured_opus_encoder_serves_unless_the_offer_names_a_bit_rate() {
        let answer = b"v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n";
        for (spec_text, want) in [("opus", 32_000), ("opus/48000/2/16000", 16_000)] {
            let mut sdp = Sdp::parse(PCMU_ONLY).unwrap();
            let opts = CodecOptions {
                transcode: vec![spec(spec_text)],
                ..CodecOptions::default()
            };
            let mut n = apply_offer(&mut sdp.media[0], &opts).unwrap();
            n.opus.bitrate = 32_000;
            n.opus.complexity = 3;
            let mut a = Sdp::parse(answer).unwrap();
            let legs = read_answer(&mut a.media[0], &n, (Ssrc(1), Ssrc(2)))
                .unwrap()
                .unwrap();
            assert_eq!(
                (legs.1.opus.bitrate, legs.1.opus.complexity),
                (want, 3),
                "{spec_text}"
            );
        }
    }

    #[test]
    fn a_shared_codec_is_relayed_and_added_codecs_leave_the_answer() {
        let mut sdp = Sdp::parse(PCMU_ONLY).unwrap();
        let opts = CodecOptions {
            transcode: vec![spec("opus")],
            ..CodecOptions::default()
        };
        let n = apply_offer(&mut sdp.media[0], &opts).unwrap();
        let answer = b"v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 opus/48000/2\r\n";
        let mut a = Sdp::parse(answer).unwrap();
        assert!(
            read_answer(&mut a.media[0], &n, (Ssrc(1), Ssrc(2)))
                .unwrap()
                .is_none()
        );
        let text = String::from_utf8(a.to_bytes()).unwrap();
        assert!(text.contains("m=audio 5000 RTP/AVP 0\r\n"), "{text}");
    }

    #[test]
    fn strip_all_and_mask_take_codecs_out_and_keep_events() {
        let mut sdp = Sdp::parse(PCMU_ONLY).unwrap();
        let opts = CodecOptions {
            strip: vec![spec("all")],
            transcode: vec![spec("G722")],
            ..CodecOptions::default()
        };
        apply_offer(&mut sdp.media[0], &opts).unwrap();
        let text = String::from_utf8(sdp.to_bytes()).unwrap();
        assert!(text.contains("m=audio 4000 RTP/AVP 101 9\r\n"), "{text}");
        assert!(!text.contains("PCMU"), "{text}");
        let mut sdp = Sdp::parse(PCMU_ONLY).unwrap();
        let opts = CodecOptions {
            mask: vec![spec("PCMU")],
            ..CodecOptions::default()
        };
        assert!(apply_offer(&mut sdp.media[0], &opts).is_ok());
        let mut sdp = Sdp::parse(PCMU_ONLY).unwrap();
        let opts = CodecOptions {
            strip: vec![spec("PCMU"), spec("telephone-event")],
            ..CodecOptions::default()
        };
        assert!(
            apply_offer(&mut sdp.media[0], &opts).is_err(),
            "nothing left"
        );
    }

    #[cfg(feature = "amr")]
    #[test]
    fn an_amr_answer_with_octet_align_gets_octet_aligned_frames() {
        let mut sdp = Sdp::parse(PCMU_ONLY).unwrap();
        let opts = CodecOptions {
            transcode: vec![spec("AMR-WB")],
            ..CodecOptions::default()
        };
        let n = apply_offer(&mut sdp.media[0], &opts).unwrap();
        let text = String::from_utf8(sdp.to_bytes()).unwrap();
        assert!(text.contains("a=rtpmap:96 AMR-WB/16000\r\n"), "{text}");
        assert!(text.contains("a=fmtp:96 octet-align=1\r\n"), "{text}");
        let answer = b"v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 96\r\na=rtpmap:96 AMR-WB/16000\r\na=fmtp:96 mode-change-capability=2; octet-align=1\r\n";
        let mut a = Sdp::parse(answer).unwrap();
        let legs = read_answer(&mut a.media[0], &n, (Ssrc(1), Ssrc(2)))
            .unwrap()
            .unwrap();
        assert_eq!(legs.1.format.codec, Codec::AmrWb);
        assert!(legs.1.octet_align && !legs.0.octet_align);
    }

    #[test]
    fn specs_read_as_ng_writes_them() {
        let s = spec("opus/48000/2/32000");
        assert_eq!(
            (s.clock, s.channels, s.bitrate),
            (Some(48_000), Some(2), Some(32_000))
        );
        assert!(s.matches(b"OPUS", 48_000, 2));
        assert!(!s.matches(b"opus", 16_000, 2));
        assert!(CodecSpec::parse(b"").is_none());
        assert!(CodecSpec::parse(b"PCMU/x").is_none());
    }
}
