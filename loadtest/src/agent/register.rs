//! REGISTER storms: per registration a REGISTER, the 401 with a digest
//! challenge, the REGISTER again with credentials (RFC 3261 §10, §22; RFC
//! 7616), then 200. Each REGISTER is a non-INVITE transaction: retransmitted
//! from T1 doubling to T2 until a response, abandoned after 64·T1.
//! `latency_ms.invite_to_200` holds first REGISTER → 200.

use rvoip_controlplane::registrar::digest::answer_challenge;
use rvoip_dataplane::sip::{HeaderName, Method};

use super::{Agent, T1, T2, Timer};
use crate::sip;

/// One registration in progress.
#[derive(Debug)]
pub(super) struct RegCall {
    cseq: u32,
    request: Vec<u8>,
    interval: u64,
    started_ns: u64,
    generation: u32,
}

impl Agent {
    fn reg_user(&self) -> &str {
        self.cfg
            .auth
            .as_ref()
            .map_or("loadtest", |(u, _)| u.as_str())
    }

    fn reg_call_id(&self, n: u64) -> String {
        format!("reg-{n}-{}@rvoip-loadtest", self.cfg.run_id)
    }

    fn reg_send(&mut self, now_ns: u64, n: u64, cseq: u32, auth: Option<&str>) {
        let request = sip::register(
            self.reg_user(),
            &self.cfg.domain,
            self.cfg.sip_local,
            &self.reg_call_id(n),
            &format!("{n:x}-{:x}", self.cfg.run_id),
            &format!("z9hG4bK-r{n:x}-{:x}-{cseq}", self.cfg.run_id),
            cseq,
            self.cfg.expires,
            auth,
        );
        if let Some(to) = self.cfg.target {
            self.out.push((n, request.clone(), to));
        }
        let Some(call) = self.reg.get_mut(&n) else {
            return;
        };
        call.cseq = cseq;
        call.request = request;
        call.interval = T1;
        call.generation += 1;
        let g = call.generation;
        self.schedule(now_ns + T1, n, Timer::RegisterRetransmit, g);
        self.schedule(now_ns + 64 * T1, n, Timer::RegisterTimeout, g);
    }

    /// Starts registration `n`.
    pub(super) fn register_start(&mut self, now_ns: u64, n: u64) {
        self.reg.insert(
            n,
            RegCall {
                cseq: 1,
                request: Vec::new(),
                interval: T1,
                started_ns: now_ns,
                generation: 0,
            },
        );
        self.reg_send(now_ns, n, 1, None);
    }

    fn reg_end(&mut self, n: u64, failure: Option<&str>) {
        if self.reg.remove(&n).is_some() {
            self.active = self.active.saturating_sub(1);
            match failure {
                Some(reason) => self.report.fail(reason),
                None => self.report.completed += 1,
            }
        }
    }

    /// Timer E (retransmit) or F (give up).
    pub(super) fn register_timer(&mut self, now_ns: u64, n: u64, t: Timer, generation: u32) {
        let Some(call) = self.reg.get_mut(&n) else {
            return;
        };
        if call.generation != generation {
            return;
        }
        match t {
            Timer::RegisterRetransmit => {
                call.interval = (call.interval * 2).min(T2);
                let at = now_ns + call.interval;
                let req = call.request.clone();
                if let Some(to) = self.cfg.target {
                    self.out.push((n, req, to));
                }
                self.schedule(at, n, Timer::RegisterRetransmit, generation);
            }
            Timer::RegisterTimeout => self.reg_end(n, Some("timeout")),
            _ => {}
        }
    }

    /// A response to a REGISTER.
    pub(super) fn on_register_response(&mut self, now_ns: u64, buf: &[u8]) {
        let Some(msg) = sip::parse(buf) else {
            return;
        };
        let (Some(code), Ok(cseq), Ok(cid)) = (msg.status_code(), msg.cseq(), msg.call_id()) else {
            return;
        };
        if cseq.method != Method::Register || code < 200 {
            return;
        }
        let Some(n) = std::str::from_utf8(cid)
            .ok()
            .and_then(|c| c.strip_prefix("reg-"))
            .and_then(|c| c.split('-').next())
            .and_then(|c| c.parse::<u64>().ok())
        else {
            return;
        };
        let Some(call) = self.reg.get(&n) else {
            return;
        };
        if call.cseq != cseq.seq || self.reg_call_id(n).as_bytes() != cid {
            return;
        }
        if (200..300).contains(&code) {
            let us = now_ns.saturating_sub(call.started_ns) / 1000;
            self.report.record_setup(us);
            self.reg_end(n, None);
            return;
        }
        if code == 401 && call.cseq == 1 {
            let uri = format!("sip:{}", self.cfg.domain);
            let cnonce = format!("{:x}", self.random());
            let value = self.cfg.auth.as_ref().and_then(|(user, pw)| {
                msg.header_lines(HeaderName::WwwAuthenticate)
                    .find_map(|ch| answer_challenge(ch, user, pw, "REGISTER", &uri, &cnonce, 1))
            });
            if let Some(v) = value {
                self.reg_send(now_ns, n, 2, Some(&v));
                return;
            }
        }
        self.reg_end(n, Some(&sip::failure_reason(code, &msg)));
    }
}
