//! Media-only load with a WebRTC leg A (`media --webrtc`): leg A offers
//! what a browser offers (UDP/TLS/RTP/SAVPF, ICE credentials and a host
//! candidate, a DTLS fingerprint with `a=setup:actpass`, rtcp-mux) and asks
//! the relay to bridge it to a plain RTP/AVP leg B. Once the relay answers,
//! leg A runs a controlling agent's connectivity check against the relay's
//! candidate (and answers the relay's own checks, as a full agent such as
//! rtpengine sends them), takes the DTLS role the answer's `a=setup`
//! leaves it, and sends SRTP under the keys the handshake exported; leg B
//! sends plain RTP from the answer on. Each leg's STUN and DTLS arrive on
//! the shared RTP socket from the relay's port for leg A, which names the
//! call.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rvoip_dataplane::media::dtls::{DtlsLeg, Fingerprint, Role};
use rvoip_dataplane::media::ice::{self, IceLite, Kind};
use rvoip_dataplane::srtp::SrtpContext;

use super::{Agent, Timer};

/// How often a leg's check is sent again and its DTLS timer looked at
/// until the leg is keyed.
const RECHECK_NS: u64 = 100_000_000;
/// A leg not keyed this long after the answer fails the call.
const GIVE_UP_NS: u64 = 10_000_000_000;
/// Datagrams kept from a relay port no leg knows yet: sources, and per source.
const EARLY_SOURCES: usize = 4096;
const EARLY_PER_SOURCE: usize = 4;

/// Leg A's ICE credentials, made at the offer.
#[derive(Debug, Clone)]
pub(super) struct Credentials {
    pub(super) ufrag: String,
    pub(super) pwd: String,
}

/// What the relay's answer to leg A says about its WebRTC side.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RelaySide {
    ufrag: String,
    pwd: String,
    fingerprint: Fingerprint,
    /// The DTLS role leg A takes: the opposite of the answer's `a=setup`.
    role: Role,
}

impl RelaySide {
    /// Reads the answer's ICE credentials, fingerprint and setup, at media
    /// or session level.
    fn parse(sdp: &[u8]) -> Option<RelaySide> {
        let sdp = rvoip_dataplane::sdp::Sdp::parse(sdp).ok()?;
        let find = |name: &[u8]| -> Option<String> {
            let m = sdp.media.first()?;
            m.attributes()
                .chain(sdp.attributes())
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| std::str::from_utf8(v?).ok())
                .map(|v| v.trim().to_owned())
        };
        let role = match find(b"setup")?.as_str() {
            "active" => Role::Passive,
            // `passive`; `actpass` in an answer is an error RFC 5763 §5
            // resolves as passive.
            _ => Role::Active,
        };
        Some(RelaySide {
            ufrag: find(b"ice-ufrag")?,
            pwd: find(b"ice-pwd")?,
            fingerprint: Fingerprint::parse(&find(b"fingerprint")?)?,
            role,
        })
    }
}

/// Leg A's WebRTC state from the relay's answer until its keys.
pub(super) struct WebRtcLeg {
    relay: SocketAddr,
    /// Answers the relay's checks.
    ice: IceLite,
    relay_pwd: String,
    check: Vec<u8>,
    txid: [u8; 12],
    checked: bool,
    dtls: DtlsLeg,
    answered_ns: u64,
    keyed: bool,
    /// Unprotects what the relay sends the leg, once keyed.
    rx: Option<Box<SrtpContext>>,
}

impl std::fmt::Debug for WebRtcLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcLeg")
            .field("relay", &self.relay)
            .field("checked", &self.checked)
            .field("keyed", &self.keyed)
            .finish()
    }
}

impl Agent {
    /// Fresh ICE credentials for leg A of a call.
    pub(super) fn webrtc_credentials(&mut self) -> Credentials {
        let (a, b, c) = (self.random(), self.random(), self.random());
        Credentials {
            ufrag: format!("{:08x}", a as u32),
            pwd: format!("{b:016x}{:08x}", c as u32),
        }
    }

    /// Leg A's offer: `plain` (an RTP/AVP offer of this agent) as a
    /// browser would send it.
    pub(super) fn webrtc_offer(&self, plain: &str, creds: &Credentials) -> Option<String> {
        let fp = self.dtls_identity.as_ref()?.fingerprint();
        let (ip, port) = (&*self.local.rtp_ip, self.local.rtp_port);
        let mut sdp = plain.replacen(" RTP/AVP ", " UDP/TLS/RTP/SAVPF ", 1);
        sdp.push_str(&format!(
            "a=rtcp-mux\r\na=mid:0\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:{fp}\r\n\
             a=setup:actpass\r\na=candidate:1 1 UDP 2130706431 {ip} {port} typ host\r\n",
            creds.ufrag, creds.pwd
        ));
        Some(sdp)
    }

    /// The instant `now_ns` is, on the clock DTLS timers run on.
    fn instant(&self, now_ns: u64) -> Option<Instant> {
        let (epoch, epoch_ns) = self.clock?;
        Some(epoch + Duration::from_nanos(now_ns.saturating_sub(epoch_ns)))
    }

    /// The relay answered leg A (`sdp`, its media at `relay`): checks it,
    /// starts the handshake. `Err` names why the call fails.
    pub(super) fn webrtc_begin(
        &mut self,
        now_ns: u64,
        n: u64,
        creds: &Credentials,
        sdp: &[u8],
        relay: SocketAddr,
    ) -> Result<(), &'static str> {
        let side = RelaySide::parse(sdp).ok_or("webrtc-answer")?;
        let (Some(identity), Some(now)) = (self.dtls_identity.as_ref(), self.instant(now_ns))
        else {
            return Err("webrtc-identity");
        };
        let dtls =
            DtlsLeg::new(identity, side.role, side.fingerprint, now).map_err(|_| "webrtc-dtls")?;
        let mut txid = [0u8; 12];
        txid[..8].copy_from_slice(&self.random().to_be_bytes());
        txid[8..].copy_from_slice(&(n as u32).to_be_bytes());
        let tiebreaker = self.random();
        let user = format!("{}:{}", side.ufrag, creds.ufrag);
        let check = ice::binding_request(&user, &side.pwd, txid, tiebreaker);
        self.rtp_out.push((check.clone(), relay));
        let mut leg = WebRtcLeg {
            relay,
            ice: IceLite::new(&creds.ufrag, &creds.pwd),
            relay_pwd: side.pwd,
            check,
            txid,
            checked: false,
            dtls,
            answered_ns: now_ns,
            keyed: false,
            rx: None,
        };
        // An active leg's ClientHello leaves now.
        let out = &mut self.rtp_out;
        let _ = leg
            .dtls
            .on_timeout(now, &mut |d: &[u8]| out.push((d.to_vec(), relay)));
        self.webrtc_from.insert(relay, n);
        self.webrtc.insert(n, leg);
        for early in self.webrtc_early.remove(&relay).unwrap_or_default() {
            self.on_webrtc(now_ns, &early, relay);
        }
        let g = self.ng.get(&n).map_or(0, |c| c.generation);
        self.schedule(now_ns + RECHECK_NS, n, Timer::WebRtc, g);
        Ok(())
    }

    /// A STUN or DTLS datagram on the RTP socket from `src`; false when it
    /// is media (or nothing of a WebRTC leg) and the caller reads it.
    pub(super) fn on_webrtc(&mut self, now_ns: u64, pkt: &[u8], src: SocketAddr) -> bool {
        let kind = ice::classify(pkt);
        if !matches!(kind, Kind::Stun | Kind::Dtls) {
            return false;
        }
        let Some(&n) = self.webrtc_from.get(&src) else {
            // A relay that is the DTLS client sends its ClientHello (and a
            // full agent its checks) as soon as it has the answer, which
            // can be before the ng reply with it is read here: kept for
            // the leg, a few per source.
            if self.webrtc_early.len() < EARLY_SOURCES {
                let kept = self.webrtc_early.entry(src).or_default();
                if kept.len() < EARLY_PER_SOURCE {
                    kept.push(pkt.to_vec());
                }
            }
            return true;
        };
        let Some(now) = self.instant(now_ns) else {
            return true;
        };
        let Some(leg) = self.webrtc.get_mut(&n) else {
            return true;
        };
        let out = &mut self.rtp_out;
        match kind {
            Kind::Stun => {
                if ice::binding_success(pkt, &leg.relay_pwd) == Some(leg.txid) {
                    leg.checked = true;
                } else {
                    let mut answer = Vec::with_capacity(80);
                    if leg
                        .ice
                        .on_stun(pkt, src, now_ns / 1_000_000, &mut answer)
                        .is_ok()
                    {
                        out.push((answer, src));
                    }
                }
            }
            _ => {
                let relay = leg.relay;
                if leg
                    .dtls
                    .on_packet(pkt, now, &mut |d: &[u8]| out.push((d.to_vec(), relay)))
                    .is_err()
                {
                    self.webrtc_fail(now_ns, n, "webrtc-dtls");
                    return true;
                }
            }
        }
        self.webrtc_keys(now_ns, n);
        true
    }

    /// A media datagram from `src` as the load reads it: a WebRTC leg's
    /// SRTP unprotected into `plain`, anything else as it is; `None` for
    /// SRTP that cannot be read (not keyed yet, or refused).
    pub(super) fn webrtc_unprotect<'a>(
        &mut self,
        pkt: &'a [u8],
        src: SocketAddr,
        plain: &'a mut [u8],
    ) -> Option<&'a [u8]> {
        let Some(n) = self.webrtc_from.get(&src) else {
            return Some(pkt);
        };
        let ctx = self.webrtc.get_mut(n)?.rx.as_mut()?;
        let room = plain.get_mut(..pkt.len())?;
        room.copy_from_slice(pkt);
        match ctx.unprotect_rtp(plain, pkt.len()) {
            Ok(len) => plain.get(..len),
            Err(_) => {
                self.report.srtp_errors += 1;
                None
            }
        }
    }

    /// Once the handshake has given keys: SRTP both ways on leg A.
    fn webrtc_keys(&mut self, now_ns: u64, n: u64) {
        let Some(leg) = self.webrtc.get_mut(&n) else {
            return;
        };
        if leg.keyed {
            return;
        }
        let Some(keys) = leg.dtls.keys().cloned() else {
            return;
        };
        leg.keyed = true;
        // The relay's stream to leg A, under the relay's keys.
        leg.rx = SrtpContext::new(&keys.inbound).map(Box::new);
        let (relay, answered) = (leg.relay, leg.answered_ns);
        self.report.webrtc_keyed += 1;
        self.report
            .webrtc_setup
            .saturating_record(now_ns.saturating_sub(answered) / 1000);
        let tones = self.cfg.tones();
        let a_pt = self.own_codec().pt;
        self.start_media(
            now_ns,
            n * 2,
            n as u32 * 2,
            relay,
            Some(&keys.outbound),
            tones.then_some((0, a_pt)),
        );
    }

    /// A leg's timer: its check again until answered, DTLS retransmits,
    /// and the call given up when the leg is not keyed in time.
    pub(super) fn webrtc_timer(&mut self, now_ns: u64, n: u64) {
        let Some(now) = self.instant(now_ns) else {
            return;
        };
        let Some(leg) = self.webrtc.get_mut(&n) else {
            return;
        };
        if leg.keyed && leg.checked {
            return;
        }
        if now_ns.saturating_sub(leg.answered_ns) > GIVE_UP_NS {
            let why = if leg.checked {
                "webrtc-dtls-timeout"
            } else {
                "webrtc-ice-timeout"
            };
            self.webrtc_fail(now_ns, n, why);
            return;
        }
        let relay = leg.relay;
        if !leg.checked {
            self.rtp_out.push((leg.check.clone(), relay));
        }
        let out = &mut self.rtp_out;
        let failed = leg
            .dtls
            .on_timeout(now, &mut |d: &[u8]| out.push((d.to_vec(), relay)))
            .is_err();
        if failed {
            self.webrtc_fail(now_ns, n, "webrtc-dtls");
            return;
        }
        self.webrtc_keys(now_ns, n);
        let g = self.ng.get(&n).map_or(0, |c| c.generation);
        self.schedule(now_ns + RECHECK_NS, n, Timer::WebRtc, g);
    }

    /// Leg A could not be keyed: the call is deleted and counted failed
    /// (the leg is forgotten with the call: until then what the relay
    /// sends it is not read).
    fn webrtc_fail(&mut self, now_ns: u64, n: u64, why: &'static str) {
        match self.ng.get_mut(&n) {
            Some(c) if c.state == super::ng::NgState::Up => c.failure = Some(why),
            // Hung up already.
            _ => return,
        }
        self.ng_hang_up(now_ns, n);
    }

    /// Forgets call `n`'s WebRTC leg (once the relay deleted the call).
    pub(super) fn webrtc_forget(&mut self, n: u64) {
        if let Some(leg) = self.webrtc.remove(&n) {
            self.webrtc_from.remove(&leg.relay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_s_answer_gives_credentials_fingerprint_and_the_opposite_role() {
        let fp = Fingerprint([0xab; 32]);
        let answer = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             a=fingerprint:{fp}\r\nm=audio 30000 UDP/TLS/RTP/SAVPF 0\r\na=ice-ufrag:rl01\r\n\
             a=ice-pwd:relaypasswordrelaypassword\r\na=setup:active\r\na=rtcp-mux\r\n"
        );
        let side = RelaySide::parse(answer.as_bytes()).unwrap();
        assert_eq!(
            side,
            RelaySide {
                ufrag: "rl01".into(),
                pwd: "relaypasswordrelaypassword".into(),
                fingerprint: fp,
                role: Role::Passive,
            }
        );
        let passive = answer.replace("setup:active", "setup:passive");
        assert_eq!(
            RelaySide::parse(passive.as_bytes()).unwrap().role,
            Role::Active
        );
        // No fingerprint: not a WebRTC answer.
        let plain = answer.replace(&format!("a=fingerprint:{fp}\r\n"), "");
        assert_eq!(RelaySide::parse(plain.as_bytes()), None);
    }
}
