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

use std::net::SocketAddr;

use super::dtls::{DtlsIdentity, DtlsLeg, Fingerprint, Role};
use super::ice::{IceChecks, IceLite};

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
    /// When rvoip offered full ICE and the peer answered: its credentials
    /// and candidates, which rvoip checks as the controlling agent.
    pub remote_ice: Option<RemoteIce>,
}

/// The peer's side of ICE, from its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteIce {
    /// Its `a=ice-ufrag`.
    pub ufrag: String,
    /// Its `a=ice-pwd`.
    pub pwd: String,
    /// Its candidates for the RTP component that are IP addresses (a
    /// browser's mDNS names are not: its checks' sources stand in for
    /// them).
    pub candidates: Vec<SocketAddr>,
}

/// The ICE and DTLS state of a WebRTC leg.
#[derive(Debug)]
pub struct WebRtcLeg {
    /// The leg's ICE-lite agent.
    pub ice: IceLite,
    /// Its DTLS, once its role and the peer's fingerprint are known.
    pub dtls: Option<DtlsLeg>,
    /// Where rvoip offered full ICE: its checks as the controlling agent.
    pub checks: Option<IceChecks>,
    /// Whether the exported keys are installed.
    pub keyed: bool,
}

impl WebRtcLeg {
    /// A leg as `plan` says.
    pub fn new(plan: &WebRtcPlan, identity: &DtlsIdentity, now: Instant, now_ms: u64) -> WebRtcLeg {
        let mut leg = WebRtcLeg {
            ice: IceLite::new(&plan.ufrag, &plan.pwd),
            dtls: None,
            checks: None,
            keyed: false,
        };
        leg.update(plan, identity, now, now_ms);
        leg
    }

    /// Takes a later plan (an answer): new ICE credentials restart ICE;
    /// the DTLS starts once its role is known and is kept after.
    pub fn update(
        &mut self,
        plan: &WebRtcPlan,
        identity: &DtlsIdentity,
        now: Instant,
        now_ms: u64,
    ) {
        if self.ice.ufrag() != plan.ufrag || self.ice.pwd() != plan.pwd {
            self.ice = IceLite::new(&plan.ufrag, &plan.pwd);
            self.checks = None;
        }
        if let Some(r) = &plan.remote_ice
            && !self
                .checks
                .as_ref()
                .is_some_and(|c| c.is_for(&r.ufrag, &r.pwd))
        {
            // rvoip's password is random per leg: it seeds the checks'
            // transaction IDs and tie-breaker.
            let seed = plan.pwd.bytes().fold(now_ms, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            self.checks = Some(IceChecks::new(
                &plan.ufrag,
                &r.ufrag,
                &r.pwd,
                &r.candidates,
                seed,
                now_ms,
            ));
        }
        if let (None, Some((role, expected))) = (&self.dtls, plan.dtls) {
            // A leg whose DTLS cannot start stays unkeyed: nothing is sent.
            self.dtls = DtlsLeg::new(identity, role, expected, now).ok();
        }
    }
}
