//! A WebRTC leg of the relay: what rvoip terminates on it (ICE-lite and
//! DTLS-SRTP) and what it was told to (a [`WebRtcPlan`] from the offer and
//! the answer).
//!
//! On such a leg every datagram is classified by its first octet (RFC 7983):
//! STUN checks are answered by the leg's [`IceLite`] agent (a nominating
//! check latches the leg's media on its source), DTLS goes to its
//! [`DtlsLeg`], whose exported keys become the leg's SRTP contexts; media
//! goes the usual way, SRTP in and out. Until the keys are there nothing
//! is sent towards the peer.

use std::time::Instant;

use super::dtls::{DtlsIdentity, DtlsLeg, Fingerprint, Role};
use super::ice::IceLite;

/// What the relay terminates on a WebRTC leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebRtcPlan {
    /// rvoip's ICE ufrag on the leg.
    pub ufrag: String,
    /// rvoip's ICE password on the leg.
    pub pwd: String,
    /// rvoip's DTLS role and the peer's certificate fingerprint, once the
    /// offer and answer decided them.
    pub dtls: Option<(Role, Fingerprint)>,
}

/// The ICE and DTLS state of a WebRTC leg.
#[derive(Debug)]
pub struct WebRtcLeg {
    /// The leg's ICE-lite agent.
    pub ice: IceLite,
    /// Its DTLS, once its role and the peer's fingerprint are known.
    pub dtls: Option<DtlsLeg>,
    /// Whether the exported keys are installed.
    pub keyed: bool,
}

impl WebRtcLeg {
    /// A leg as `plan` says.
    pub fn new(plan: &WebRtcPlan, identity: &DtlsIdentity, now: Instant) -> WebRtcLeg {
        let mut leg = WebRtcLeg {
            ice: IceLite::new(&plan.ufrag, &plan.pwd),
            dtls: None,
            keyed: false,
        };
        leg.update(plan, identity, now);
        leg
    }

    /// Takes a later plan (an answer): new ICE credentials restart ICE;
    /// the DTLS starts once its role is known and is kept after.
    pub fn update(&mut self, plan: &WebRtcPlan, identity: &DtlsIdentity, now: Instant) {
        if self.ice.ufrag() != plan.ufrag || self.ice.pwd() != plan.pwd {
            self.ice = IceLite::new(&plan.ufrag, &plan.pwd);
        }
        if let (None, Some((role, expected))) = (&self.dtls, plan.dtls) {
            // A leg whose DTLS cannot start stays unkeyed: nothing is sent.
            self.dtls = DtlsLeg::new(identity, role, expected, now).ok();
        }
    }
}
