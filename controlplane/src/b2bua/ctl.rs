//! What `rvoip ctl` asks of the B2BUA: its live calls with their media so
//! far (one query order per call to the relay, answered together), an
//! operator's hang-up.

use serde::Serialize;

use super::{B2b, Side, State, Then};
use crate::element::Element;
use crate::ops::metrics::CallTally;
use crate::sbc::media;
use crate::sbc::policy::Policy;
use crate::transaction::Millis;
use rvoip_dataplane::media::orders::{CallId, MediaOrder, MediaService, Outcome, Party};

/// A live call as `rvoip ctl calls` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallView {
    /// The caller's leg's Call-ID.
    pub a_call_id: String,
    /// The called leg's Call-ID (empty for calls the media server answers).
    pub b_call_id: String,
    /// The realm it came from.
    pub realm: String,
    /// The trunk it went to (empty: none).
    pub trunk: String,
    /// The peer of that trunk it went to.
    pub peer: String,
    /// Caller's user part, number called.
    pub from: String,
    /// Number called.
    pub to: String,
    /// `routing`, `early` or `up`.
    pub state: &'static str,
    /// INVITE received, Unix ms.
    pub start_ms: u64,
    /// Answered, Unix ms.
    pub answer_ms: Option<u64>,
    /// The codec each side speaks (A, B), as the relay read their SDP.
    pub codecs: [Option<String>; 2],
    /// RTP packets the relay received from the caller's side (A) so far.
    pub packets_from_a: u64,
    /// RTP packets the relay received from the called side (B) so far.
    pub packets_from_b: u64,
    /// Packets lost on the way to the relay, both sides.
    pub lost: u64,
    /// Whether the relay answered for it (false: its figures are missing).
    pub media_known: bool,
}

/// One `calls` request being answered: the views, and how many queries
/// are still out.
#[derive(Debug, Default)]
pub(super) struct Inspection {
    views: Vec<CallView>,
    waiting: usize,
}

impl B2b {
    /// Starts request `request`: the live calls (those whose either
    /// Call-ID is `only`, when given), each with its media so far. The
    /// answer comes out of [`B2b::poll_inspection`] once the relay has
    /// answered for every call (or failed to).
    pub(crate) fn inspect(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        request: u64,
        only: Option<&str>,
    ) {
        let mut ids: Vec<(u64, u64)> = self
            .calls
            .values()
            .filter(|c| only.is_none_or(|id| c.legs.iter().any(|l| l.call_id() == id)))
            .map(|c| (c.invite_ms, c.id))
            .collect();
        ids.sort_unstable();
        let mut inspection = Inspection::default();
        let mut orders = Vec::new();
        for (_, id) in ids {
            let Some(c) = self.calls.get(&id) else {
                continue;
            };
            let trunk = c.trunk.and_then(|t| self.policy.trunks.get(t));
            inspection.views.push(CallView {
                a_call_id: c.legs[0].call_id().to_string(),
                b_call_id: if c.app.is_some() {
                    String::new()
                } else {
                    c.legs[1].call_id().to_string()
                },
                realm: self
                    .policy
                    .realms
                    .get(c.in_realm)
                    .map(|r| r.name.clone())
                    .unwrap_or_default(),
                trunk: trunk.map(|t| t.name.clone()).unwrap_or_default(),
                peer: c
                    .targets
                    .get(c.attempt as usize)
                    .map(|t| t.address.to_string())
                    .unwrap_or_default(),
                from: c.from_user.clone(),
                to: c.number.clone(),
                state: match c.state {
                    State::Routing => "routing",
                    State::Early => "early",
                    State::Up => "up",
                },
                start_ms: c.invite_ms,
                answer_ms: c.answer_ms,
                ..CallView::default()
            });
            orders.push((
                inspection.views.len() - 1,
                media::query(c.media_id.as_bytes()),
            ));
        }
        inspection.waiting = orders.len();
        self.inspections.insert(request, inspection);
        for (row, order) in orders {
            self.order(el, now, unix_ms, order, Then::Inspected { request, row });
        }
        self.finish_inspection(request);
    }

    /// The relay's answer for one call of an inspection.
    pub(super) fn inspected(&mut self, request: u64, row: usize, outcome: Outcome) {
        if let Some(i) = self.inspections.get_mut(&request) {
            if let (Outcome::Live(t, codecs), Some(v)) = (outcome, i.views.get_mut(row)) {
                v.codecs = codecs;
                v.packets_from_a = t.from_a;
                v.packets_from_b = t.from_b;
                v.lost = t.lost;
                v.media_known = true;
            }
            i.waiting = i.waiting.saturating_sub(1);
        }
        self.finish_inspection(request);
    }

    fn finish_inspection(&mut self, request: u64) {
        if self
            .inspections
            .get(&request)
            .is_some_and(|i| i.waiting == 0)
            && let Some(i) = self.inspections.remove(&request)
        {
            self.inspected.push_back((request, i.views));
        }
    }

    /// An inspection answered: its request and the calls.
    pub fn poll_inspection(&mut self) -> Option<(u64, Vec<CallView>)> {
        self.inspected.pop_front()
    }

    /// Starts (`on`) or ends the relay's capture of every packet of the
    /// call one of whose legs has Call-ID `call_id`, into the pcap file
    /// `file`; returns its legs' Call-IDs. The relay's answer comes out of
    /// [`B2b::poll_capture`] under `request`.
    pub(crate) fn capture(
        &mut self,
        el: &mut Element,
        (now, unix_ms): (Millis, u64),
        request: u64,
        call_id: &str,
        file: std::path::PathBuf,
        on: bool,
    ) -> Result<Vec<String>, String> {
        let Some(c) = self
            .calls
            .values()
            .find(|c| c.legs.iter().any(|l| l.call_id() == call_id))
        else {
            return Err(format!("no call has the Call-ID {call_id}"));
        };
        let mut ids = vec![c.legs[0].call_id().to_string()];
        if c.app.is_none() && !c.legs[1].call_id().is_empty() {
            ids.push(c.legs[1].call_id().to_string());
        }
        let order = MediaOrder::Service {
            call_id: CallId::from(c.media_id.as_bytes()),
            party: Party::All,
            service: MediaService::Capture { file, on },
        };
        self.order(
            el,
            now,
            unix_ms,
            super::apps::record_of(&order),
            Then::Captured { request },
        );
        Ok(ids)
    }

    /// The relay's answer to a capture.
    pub(super) fn captured(&mut self, request: u64, outcome: Outcome) {
        let r = match outcome {
            Outcome::Done { .. } => Ok(()),
            Outcome::Failed(e) => Err(e.to_string()),
            other => Err(format!("unexpected answer {other:?}")),
        };
        self.captured.push_back((request, r));
    }

    /// A capture the relay answered: its request and how it went.
    pub fn poll_capture(&mut self) -> Option<(u64, Result<(), String>)> {
        self.captured.pop_front()
    }

    /// Hangs up the call one of whose legs has Call-ID `call_id`: BYE on
    /// both legs of a call that is up, the record ended `hangup-operator`.
    pub(crate) fn hang_up(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        call_id: &str,
    ) -> Result<(), String> {
        let Some(id) = self
            .calls
            .values()
            .find(|c| c.legs.iter().any(|l| l.call_id() == call_id))
            .map(|c| c.id)
        else {
            return Err(format!("no call has the Call-ID {call_id}"));
        };
        if self.calls.get(&id).is_some_and(|c| c.state != State::Up) {
            return Err("the call is not answered yet: it ends by itself or by its caller".into());
        }
        let Some(mut call) = self.calls.remove(&id) else {
            return Err(format!("no call has the Call-ID {call_id}"));
        };
        el.b2b_local_request(&mut call, now, Side::A, "BYE");
        if call.app.is_none() {
            el.b2b_local_request(&mut call, now, Side::B, "BYE");
        }
        self.finish(el, call, unix_ms, "hangup-operator");
        Ok(())
    }
}

impl B2b {
    /// Puts `new` in place of the policy (a reload): refused, with the
    /// reason, when a realm or trunk that calls are up on is gone; else
    /// every call keeps its realm and trunk by name, and the new policy
    /// takes over what the old one held ([`Policy::take_over`]).
    pub fn reload_policy(&mut self, mut new: Policy) -> Result<(), String> {
        let mut gone: Vec<String> = Vec::new();
        for c in self.calls.values() {
            let realm = self.policy.realms.get(c.in_realm).map(|r| r.name.as_str());
            if let Some(r) = realm
                && !new.realms.iter().any(|n| n.name == r)
            {
                gone.push(format!("realm {r}"));
            }
            let trunk = c.trunk.and_then(|t| self.policy.trunks.get(t));
            if let Some(t) = trunk
                && !new.trunks.iter().any(|n| n.name == t.name)
            {
                gone.push(format!("trunk {}", t.name));
            }
        }
        gone.sort_unstable();
        gone.dedup();
        if !gone.is_empty() {
            return Err(format!(
                "{} removed while calls are up on it; reload once they have ended",
                gone.join(", ")
            ));
        }
        let names = |p: &Policy| -> (Vec<String>, Vec<String>) {
            (
                p.realms.iter().map(|r| r.name.clone()).collect(),
                p.trunks.iter().map(|t| t.name.clone()).collect(),
            )
        };
        let (old_realms, old_trunks) = names(&self.policy);
        let old = std::mem::replace(&mut self.policy, Policy::empty());
        let (realm_map, trunk_map) = new.take_over(old);
        self.policy = new;
        for c in self.calls.values_mut() {
            c.in_realm = realm_map.get(c.in_realm).copied().flatten().unwrap_or(0);
            c.trunk = c.trunk.and_then(|t| trunk_map.get(t).copied().flatten());
        }
        let mut tally = CallTally::new(self.policy.realms.len(), self.policy.trunks.len());
        tally.take_over(&self.tally, |realm, trunk| {
            let r = realm_map.get(realm).copied().flatten()?;
            let t = match trunk {
                Some(t) => Some(trunk_map.get(t).copied().flatten()?),
                None => None,
            };
            Some((r, t))
        });
        self.tally = tally;
        tracing::info!(
            realms = ?(&old_realms, names(&self.policy).0),
            trunks = ?(&old_trunks, names(&self.policy).1),
            calls = self.calls.len(),
            "policy reloaded"
        );
        Ok(())
    }
}

impl B2b {
    /// Hangs up every call that is up (the end of a drain's deadline);
    /// returns how many.
    pub(crate) fn hang_up_all(&mut self, el: &mut Element, now: Millis, unix_ms: u64) -> usize {
        let ids: Vec<String> = self
            .calls
            .values()
            .filter(|c| c.state == State::Up)
            .map(|c| c.legs[0].call_id().to_string())
            .collect();
        ids.iter()
            .filter(|id| self.hang_up(el, now, unix_ms, id).is_ok())
            .count()
    }
}
