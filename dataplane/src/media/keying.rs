//! SDES negotiation for an offer and its answer (RFC 4568 §5, §7).
//!
//! rvoip terminates SRTP on each leg with keys of its own: it never passes
//! one side's `a=crypto` to the other. For an SRTP offerer, rvoip picks the
//! first offered suite it supports (the offerer's preference) and makes its
//! own key for the answer at offer time, so early media can be protected; for
//! an SRTP recipient it offers one fresh key per allowed suite and learns the
//! recipient's key and choice from the answer.

use crate::entropy::Entropy;

use super::orders::OrderError;
use crate::media::relay::LegSrtp;
use crate::sdp::MediaSection as Media;
use crate::srtp::sdes::{self, CryptoAttr, SdesError};
use crate::srtp::{MasterKey, SrtpParams, Suite};

/// The order rvoip offers suites in: the one every SRTP endpoint implements
/// first, then the stronger ones.
pub(crate) const OFFER_ORDER: [Suite; 6] = [
    Suite::AesCm128HmacSha1_80,
    Suite::AeadAes128Gcm,
    Suite::AeadAes256Gcm,
    Suite::AesCm256HmacSha1_80,
    Suite::AesCm128HmacSha1_32,
    Suite::AesCm256HmacSha1_32,
];

/// The SDES flags of a request.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SdesFlags {
    /// `SDES-off`: offer no SDES.
    pub off: bool,
    /// `SDES-only-<suite>`: offer and accept only these.
    pub only: Vec<Suite>,
    /// `SDES-no-<suite>`: never offer or accept these.
    pub no: Vec<Suite>,
}

impl SdesFlags {
    /// Reads one `SDES-...` flag (the `SDES-` prefix removed).
    pub fn read(&mut self, flag: &[u8]) -> Result<(), OrderError> {
        let unknown = |s: &[u8]| {
            OrderError::Unacceptable(format!(
                "Unknown SDES crypto suite: {}",
                String::from_utf8_lossy(s)
            ))
        };
        if flag.eq_ignore_ascii_case(b"off") {
            self.off = true;
        } else if let Some(s) = flag.strip_prefix(b"only-") {
            self.only
                .push(Suite::from_name(s).ok_or_else(|| unknown(s))?);
        } else if let Some(s) = flag.strip_prefix(b"no-") {
            self.no.push(Suite::from_name(s).ok_or_else(|| unknown(s))?);
        }
        // Other SDES flags (lifetimes, session parameters) change nothing here.
        Ok(())
    }

    fn allows(&self, s: Suite) -> bool {
        (self.only.is_empty() || self.only.contains(&s)) && !self.no.contains(&s)
    }

    /// Suites to offer, in offer order; AES-f8 only when `SDES-only-` names it.
    pub(crate) fn offer_suites(&self) -> Vec<Suite> {
        let f8 = Some(Suite::F8128HmacSha1_80).filter(|s| self.only.contains(s));
        OFFER_ORDER
            .into_iter()
            .chain(f8)
            .filter(|s| self.allows(*s))
            .collect()
    }
}

/// A key rvoip made for one side: the tag it goes under, its suite, the key.
#[derive(Debug, Clone)]
pub(crate) struct OwnKey {
    pub(crate) tag: u32,
    pub(crate) suite: Suite,
    pub(crate) master: MasterKey,
}

impl OwnKey {
    pub(crate) fn line(&self) -> String {
        sdes::format(self.tag, &self.master, self.suite)
    }
}

/// Whether an SDP profile is secure RTP.
pub(crate) fn is_savp(proto: &[u8]) -> bool {
    proto.eq_ignore_ascii_case(b"RTP/SAVP") || proto.eq_ignore_ascii_case(b"RTP/SAVPF")
}

/// The same profile with or without the S.
pub(crate) fn profile(feedback: bool, secure: bool) -> &'static str {
    match (secure, feedback) {
        (true, true) => "RTP/SAVPF",
        (true, false) => "RTP/SAVP",
        (false, true) => "RTP/AVPF",
        (false, false) => "RTP/AVP",
    }
}

/// The usable `a=crypto` attributes of a media section, in order, and the
/// reason the first unusable one was refused (for the error when none is).
fn attributes(m: &Media<'_>, flags: &SdesFlags) -> (Vec<CryptoAttr>, Option<SdesError>) {
    let mut good = Vec::new();
    let mut first_err = None;
    for (name, value) in m.attributes() {
        if !name.eq_ignore_ascii_case(b"crypto") {
            continue;
        }
        match sdes::parse(value.unwrap_or_default()) {
            Ok(a) if flags.allows(a.suite) => good.push(a),
            Ok(a) => {
                first_err.get_or_insert(SdesError::Refused(format!(
                    "{} excluded by the SDES flags",
                    a.suite.name()
                )));
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    (good, first_err)
}

fn no_usable(err: Option<SdesError>) -> OrderError {
    OrderError::Unacceptable(match err {
        Some(e) => format!("No usable SDES crypto offered: {e}"),
        None => "No usable SDES crypto offered: no a=crypto line".to_owned(),
    })
}

fn fresh(suite: Suite, rng: &dyn Entropy) -> Result<MasterKey, OrderError> {
    sdes::generate(suite, rng).ok_or(OrderError::KeyGeneration)
}

/// The offerer's side: its key (first usable offered suite) and rvoip's key
/// for the answer, reusing `previous` when the suite is unchanged (a re-offer
/// keeps rvoip's key and so its crypto context).
pub(crate) fn accept_offer(
    m: &Media<'_>,
    flags: &SdesFlags,
    previous: Option<&OwnKey>,
    rng: &dyn Entropy,
) -> Result<(LegSrtp, OwnKey), OrderError> {
    let (attrs, err) = attributes(m, flags);
    let chosen = attrs.into_iter().next().ok_or_else(|| no_usable(err))?;
    let ours = match previous {
        Some(p) if p.suite == chosen.suite => OwnKey {
            tag: chosen.tag,
            ..p.clone()
        },
        _ => OwnKey {
            tag: chosen.tag,
            suite: chosen.suite,
            master: fresh(chosen.suite, rng)?,
        },
    };
    let leg = LegSrtp {
        rx: Some(SrtpParams::new(chosen.suite, chosen.master)),
        tx: Some(SrtpParams::new(ours.suite, ours.master.clone())),
    };
    Ok((leg, ours))
}

/// Keys rvoip offers to an SRTP recipient: one per allowed suite, tags from 1,
/// reusing `previous` keys of the same suites.
pub(crate) fn make_offer(
    flags: &SdesFlags,
    previous: &[OwnKey],
    rng: &dyn Entropy,
) -> Result<Vec<OwnKey>, OrderError> {
    let suites = flags.offer_suites();
    if suites.is_empty() {
        return Err(OrderError::Unacceptable(
            "SDES flags leave no crypto suite to offer".into(),
        ));
    }
    suites
        .into_iter()
        .enumerate()
        .map(|(i, suite)| {
            let master = match previous.iter().find(|p| p.suite == suite) {
                Some(p) => p.master.clone(),
                None => fresh(suite, rng)?,
            };
            Ok(OwnKey {
                tag: i as u32 + 1,
                suite,
                master,
            })
        })
        .collect()
}

/// The recipient's answer to rvoip's offer: the accepted tag must be one
/// rvoip offered, with the same suite. Returns the leg keying and the key of
/// rvoip's that was accepted.
pub(crate) fn take_answer(
    m: &Media<'_>,
    offered: &[OwnKey],
) -> Result<(LegSrtp, OwnKey), OrderError> {
    let all = SdesFlags::default();
    let (attrs, err) = attributes(m, &all);
    for a in attrs {
        if let Some(ours) = offered
            .iter()
            .find(|o| o.tag == a.tag && o.suite == a.suite)
        {
            let leg = LegSrtp {
                rx: Some(SrtpParams::new(a.suite, a.master)),
                tx: Some(SrtpParams::new(ours.suite, ours.master.clone())),
            };
            return Ok((leg, ours.clone()));
        }
    }
    Err(OrderError::Unacceptable(match err {
        Some(e) => format!("Answer accepts none of the offered SDES crypto: {e}"),
        None => "Answer accepts none of the offered SDES crypto".to_owned(),
    }))
}
