//! The media server's applications on the B2BUA's dialogs: calls it
//! answers itself (conference rooms, IVR menus, the echo test), music on
//! hold for a party its peer holds, and announcements instead of bare
//! failure codes.
//!
//! A call the media server answers has only leg A: its offer goes to the
//! relay as a `Terminate` order (the media server takes side B's place),
//! the answer goes back in a 200, and from then on the application drives
//! the call's media with service orders (play, stop, join a room, echo).
//! DTMF reaches an IVR as media events, asked for every 100 ms while a
//! menu listens.

use std::path::PathBuf;

use rvoip_dataplane::media::orders::{
    CallId, MediaOrder, MediaService, Outcome, Party, SdpOptions, Tag,
};
use rvoip_dataplane::media::services::{LocalMode, MediaEvent};
use rvoip_dataplane::sip::{HeaderName, SipMessage};
use rvoip_tuning::mediaserver::{IvrAction, MediaServerConfig};

use super::{B2b, Call, CallTimer, State, Then, reread, response_to, sdp_body};
use crate::build;
use crate::element::{Element, ServerKey, TimerRef};
use crate::sbc::media::{self, OrderRecord};
use crate::transaction::Millis;
use rvoip_dataplane::media::relay::Side;

/// The media server's settings as the B2BUA uses them.
#[derive(Debug, Clone, Default)]
pub struct MediaServer {
    /// `[mediaserver]`.
    pub config: MediaServerConfig,
    /// Its prompt directory, resolved.
    pub prompt_dir: PathBuf,
}

/// What the media server does with a call it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AppKind {
    /// A conference room.
    Conference(String),
    /// The echo test.
    Echo,
    /// IVR menu `n`.
    Ivr(usize),
}

/// A call's application state.
#[derive(Debug, Clone)]
pub(crate) struct LocalApp {
    pub(crate) kind: AppKind,
    /// The answer SDP last given to the caller.
    answer: Vec<u8>,
    /// Menu starts left (IVR).
    tries: u32,
    /// Bumped at each menu start, so an old timeout is ignored.
    round: u32,
}

/// A step of a media-server call waiting for the relay.
#[derive(Debug)]
pub(crate) enum LocalStep {
    /// The answer to the caller's INVITE.
    Answer,
    /// The answer to a re-INVITE (`key`, `msg`).
    Reanswer { key: ServerKey, msg: Vec<u8> },
    /// The announcement's session: early media to the caller, then the
    /// prompt, then `status`.
    Announce { status: u16, file: PathBuf },
    /// The announcement plays; it lasts the reply's duration.
    Announcing { status: u16 },
}

/// Timers of the applications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum AppTimer {
    /// Ask the relay for DTMF (IVR listening).
    Poll,
    /// No valid digit in round `n`.
    MenuTimeout(u32),
    /// The announcement has played.
    AnnounceEnd,
}

/// How often an IVR asks for digits.
const POLL_MS: Millis = 100;

/// The media server answers `sdp` from the caller of `call` (leg A).
fn terminate(
    call: &Call,
    media_id: &str,
    sdp: &[u8],
    mode: LocalMode,
    placement: Option<String>,
    iface: Option<std::net::IpAddr>,
) -> OrderRecord {
    record_of(&MediaOrder::Terminate {
        call_id: CallId::from(media_id.as_bytes()),
        from_tag: Tag::from(call.legs[0].remote_tag().as_bytes()),
        to_tag: Tag::from(call.legs[0].local_tag().as_bytes()),
        sdp: media::hide_identity(sdp).into_owned(),
        options: SdpOptions {
            replace_origin: true,
            from_interface: iface,
            ..SdpOptions::default()
        },
        mode,
        placement,
    })
}

/// An order record of any media order.
pub(super) fn record_of(order: &MediaOrder) -> OrderRecord {
    let mut v = Vec::new();
    rvoip_dataplane::media::orders::record::write_order(0, 0, order, &mut v);
    OrderRecord(v)
}

impl MediaServer {
    /// The application a call to `user` in a served domain reaches.
    pub(crate) fn app_for(&self, user: &str) -> Option<AppKind> {
        let c = &self.config;
        if !c.conference_prefix.is_empty()
            && user.len() > c.conference_prefix.len()
            && user.starts_with(&c.conference_prefix)
        {
            return Some(AppKind::Conference(user.to_owned()));
        }
        if !c.echo.is_empty() && user == c.echo {
            return Some(AppKind::Echo);
        }
        c.ivr.iter().position(|m| m.user == user).map(AppKind::Ivr)
    }

    fn prompt(&self, file: &std::path::Path) -> PathBuf {
        if file.is_absolute() {
            file.to_path_buf()
        } else {
            self.prompt_dir.join(file)
        }
    }
}

impl B2b {
    /// Whether the call's Request-URI reaches a media-server application.
    pub(crate) fn app_for(&self, msg: &SipMessage<'_>, local_domain: bool) -> Option<AppKind> {
        if !local_domain || !self.config.media_server.config.answers_calls() {
            return None;
        }
        self.config.media_server.app_for(&super::uri_user(msg))
    }

    /// The media server answers `call` (leg A only): its offer goes to the
    /// relay as a `Terminate` order.
    pub(crate) fn local_call(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        mut call: Box<Call>,
        kind: AppKind,
        sdp: &[u8],
    ) {
        let (mode, placement) = match &kind {
            AppKind::Conference(room) => (LocalMode::Room(room.clone()), Some(room.clone())),
            AppKind::Echo => (LocalMode::Echo, None),
            // Where the menu's rooms are, so the caller can join them.
            AppKind::Ivr(n) => (
                LocalMode::Silence,
                self.config.media_server.config.ivr.get(*n).and_then(|m| {
                    m.digits.values().find_map(|a| match IvrAction::parse(a) {
                        Ok(IvrAction::Room(r)) => Some(r),
                        _ => None,
                    })
                }),
            ),
        };
        let tries = match &kind {
            AppKind::Ivr(n) => self
                .config
                .media_server
                .config
                .ivr
                .get(*n)
                .map_or(1, |m| m.retries + 1),
            _ => 0,
        };
        call.app = Some(Box::new(LocalApp {
            kind,
            answer: Vec::new(),
            tries,
            round: 0,
        }));
        let iface = self.media_iface(&call, Side::A);
        let order = terminate(&call, &call.media_id, sdp, mode, placement, iface);
        let id = call.id;
        self.calls.insert(id, call);
        self.order(
            el,
            now,
            unix_ms,
            order,
            Then::Local {
                call: id,
                step: LocalStep::Answer,
            },
        );
    }

    /// A service for the caller of `call` (`party`: its tag), outcome
    /// only logged.
    fn service(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        call: &Call,
        service: MediaService,
    ) {
        let order = MediaOrder::Service {
            call_id: CallId::from(call.media_id.as_bytes()),
            party: Party::Tag(Tag::from(call.legs[0].remote_tag().as_bytes())),
            service,
        };
        self.order(el, now, unix_ms, record_of(&order), Then::Noted);
    }

    /// A relay reply for a media-server step.
    pub(crate) fn local_then(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        id: u64,
        step: LocalStep,
        outcome: Outcome,
    ) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        match step {
            LocalStep::Answer => {
                let sdp = match media::reply_sdp(outcome) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, call_id = %call.legs[0].call_id(), "the media server cannot answer the call");
                        self.counters.media_errors += 1;
                        let status = e.sip_status();
                        el.b2b_reject_a(&call, now, status);
                        call.a_status = status;
                        self.finish(el, call, unix_ms, "media-error");
                        return;
                    }
                };
                if call.cancelled {
                    el.b2b_reject_a(&call, now, 487);
                    call.a_status = 487;
                    self.finish(el, call, unix_ms, "cancel");
                    return;
                }
                let allow: &[u8] = b"INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY";
                let bytes = reread(&call.a_invite).map_or_else(Vec::new, |req| {
                    response(
                        &call,
                        &req,
                        (200, b"OK"),
                        &[(HeaderName::Allow, allow)],
                        &sdp,
                    )
                });
                call.state = State::Up;
                call.a_status = 200;
                call.b_status = 200;
                call.answer_ms = Some(unix_ms);
                self.counters.answered += 1;
                self.tally.answered(call.in_realm, call.trunk);
                let server = call.a_invite_key;
                el.b2b_await_ack(
                    &mut call,
                    now,
                    super::Side::A,
                    server,
                    bytes.clone(),
                    false,
                    1,
                );
                el.txl.server_respond(now, &call.a_invite_key, 200, bytes);
                call.a_invite = Vec::new();
                if let Some(app) = &mut call.app {
                    app.answer = sdp;
                }
                self.apps_by_media.insert(call.media_id.clone(), id);
                let ivr = matches!(call.app.as_ref().map(|a| &a.kind), Some(AppKind::Ivr(_)));
                if ivr {
                    self.start_menu(el, now, unix_ms, &mut call);
                }
                self.calls.insert(id, call);
            }
            LocalStep::Reanswer { key, msg } => {
                let answer = media::reply_sdp(outcome)
                    .ok()
                    .or_else(|| call.app.as_ref().map(|a| a.answer.clone()))
                    .unwrap_or_default();
                if let Ok(m) = SipMessage::parse(
                    &msg,
                    rvoip_dataplane::sip::Framing::Datagram,
                    &Default::default(),
                ) {
                    let bytes = response(&call, &m, (200, b"OK"), &[], &answer);
                    el.txl.server_respond(now, &key, 200, bytes);
                }
                self.calls.insert(id, call);
            }
            LocalStep::Announce { status, file } => {
                let sdp = media::reply_sdp(outcome).unwrap_or_default();
                if sdp.is_empty() || call.cancelled {
                    self.release_announced(el, now, unix_ms, call, status);
                    return;
                }
                if let Some(req) = reread(&call.a_invite) {
                    let bytes = response(&call, &req, (183, b"Session Progress"), &[], &sdp);
                    el.txl.server_respond(now, &call.a_invite_key, 183, bytes);
                }
                let order = MediaOrder::Service {
                    call_id: CallId::from(announcement_id(&call.media_id).as_bytes()),
                    party: Party::All,
                    service: MediaService::Play { file, repeat: 1 },
                };
                self.calls.insert(id, call);
                self.order(
                    el,
                    now,
                    unix_ms,
                    record_of(&order),
                    Then::Local {
                        call: id,
                        step: LocalStep::Announcing { status },
                    },
                );
            }
            LocalStep::Announcing { status } => {
                let ms = match outcome {
                    Outcome::Done {
                        duration_ms: Some(d),
                    } => d,
                    _ => {
                        self.release_announced(el, now, unix_ms, call, status);
                        return;
                    }
                };
                call.a_status = status;
                el.txl.schedule(
                    Some(now + ms + 200),
                    TimerRef::Call(id, CallTimer::App(AppTimer::AnnounceEnd)),
                );
                self.calls.insert(id, call);
            }
        }
    }

    /// Starts (or starts again) an IVR menu: its prompt in a loop, digits
    /// listened for, a timeout.
    fn start_menu(&mut self, el: &mut Element, now: Millis, unix_ms: u64, call: &mut Call) {
        let Some(app) = call.app.as_mut() else {
            return;
        };
        let AppKind::Ivr(n) = app.kind else {
            return;
        };
        let Some(menu) = self.config.media_server.config.ivr.get(n).cloned() else {
            return;
        };
        app.round += 1;
        app.tries = app.tries.saturating_sub(1);
        let round = app.round;
        let file = self.config.media_server.prompt(&menu.prompt);
        self.service(
            el,
            now,
            unix_ms,
            call,
            MediaService::Play { file, repeat: 0 },
        );
        el.txl.schedule(
            Some(now + Millis::from(menu.timeout_secs.max(1)) * 1000),
            TimerRef::Call(call.id, CallTimer::App(AppTimer::MenuTimeout(round))),
        );
        el.txl.schedule(
            Some(now + POLL_MS),
            TimerRef::Call(call.id, CallTimer::App(AppTimer::Poll)),
        );
    }

    /// An application timer.
    pub(crate) fn app_timer(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        id: u64,
        t: AppTimer,
    ) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        match t {
            AppTimer::Poll => {
                let listening = matches!(call.app.as_ref().map(|a| &a.kind), Some(AppKind::Ivr(_)));
                if listening {
                    if !self.events_asked {
                        self.events_asked = true;
                        self.calls.insert(id, call);
                        self.order(
                            el,
                            now,
                            unix_ms,
                            record_of(&MediaOrder::Events),
                            Then::Events,
                        );
                        call = match self.calls.remove(&id) {
                            Some(c) => c,
                            None => return,
                        };
                    }
                    el.txl.schedule(
                        Some(now + POLL_MS),
                        TimerRef::Call(id, CallTimer::App(AppTimer::Poll)),
                    );
                }
                self.calls.insert(id, call);
            }
            AppTimer::MenuTimeout(round) => {
                let current = call
                    .app
                    .as_ref()
                    .is_some_and(|a| a.round == round && matches!(a.kind, AppKind::Ivr(_)));
                if !current {
                    self.calls.insert(id, call);
                    return;
                }
                if call.app.as_ref().is_some_and(|a| a.tries > 0) {
                    self.service(el, now, unix_ms, &call, MediaService::StopPlay);
                    self.start_menu(el, now, unix_ms, &mut call);
                    self.calls.insert(id, call);
                } else {
                    el.b2b_local_request(&mut call, now, super::Side::A, "BYE");
                    self.finish(el, call, unix_ms, "ivr-timeout");
                }
            }
            AppTimer::AnnounceEnd => {
                let status = call.a_status;
                self.release_announced(el, now, unix_ms, call, status);
            }
        }
    }

    /// Events from the relay: digits reach the IVR menus.
    pub(crate) fn app_events(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        outcome: Outcome,
    ) {
        self.events_asked = false;
        let Outcome::Events(events) = outcome else {
            return;
        };
        for (cid, e) in events {
            let MediaEvent::Dtmf { event, .. } = e else {
                continue;
            };
            let key = String::from_utf8_lossy(cid.as_bytes()).into_owned();
            let Some(&id) = self.apps_by_media.get(&key) else {
                continue;
            };
            let Some(digit) = rvoip_codecs::dtmf::event_char(event) else {
                continue;
            };
            self.digit(el, now, unix_ms, id, digit);
        }
    }

    /// A digit from an IVR caller.
    fn digit(&mut self, el: &mut Element, now: Millis, unix_ms: u64, id: u64, digit: char) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        let action = match call.app.as_ref().map(|a| &a.kind) {
            Some(AppKind::Ivr(n)) => self
                .config
                .media_server
                .config
                .ivr
                .get(*n)
                .and_then(|m| m.action(digit)),
            _ => None,
        };
        tracing::debug!(call = id, %digit, ?action, "IVR digit");
        let Some(action) = action else {
            self.calls.insert(id, call);
            return;
        };
        match action {
            IvrAction::Room(room) => {
                self.service(el, now, unix_ms, &call, MediaService::StopPlay);
                self.service(
                    el,
                    now,
                    unix_ms,
                    &call,
                    MediaService::Join { room: room.clone() },
                );
                if let Some(app) = &mut call.app {
                    app.kind = AppKind::Conference(room);
                }
            }
            IvrAction::Echo => {
                self.service(el, now, unix_ms, &call, MediaService::StopPlay);
                self.service(el, now, unix_ms, &call, MediaService::Mode(LocalMode::Echo));
                if let Some(app) = &mut call.app {
                    app.kind = AppKind::Echo;
                }
            }
            IvrAction::Play(file) => {
                let file = self.config.media_server.prompt(&file);
                self.service(
                    el,
                    now,
                    unix_ms,
                    &call,
                    MediaService::Play { file, repeat: 1 },
                );
            }
            IvrAction::Hangup => {
                el.b2b_local_request(&mut call, now, super::Side::A, "BYE");
                self.finish(el, call, unix_ms, "ivr-hangup");
                return;
            }
            IvrAction::Transfer(uri) => {
                // RFC 3515: the caller is asked to call `uri` itself.
                let leg = &mut call.legs[0];
                let cseq = leg.next_cseq();
                let branch =
                    build::branch(&[leg.call_id().as_bytes(), b"refer", &cseq.to_le_bytes()]);
                let refer_to = format!("<{uri}>");
                let bytes = leg.request(
                    "REFER",
                    cseq,
                    &branch,
                    &[("Refer-To".into(), refer_to.into())],
                    None,
                    b"",
                );
                let hop = leg.hop();
                el.b2b_send(
                    now,
                    hop,
                    bytes,
                    b"REFER",
                    branch.as_bytes(),
                    super::CallTxn::Local,
                );
            }
        }
        self.calls.insert(id, call);
    }

    /// An in-dialog request on a media-server call (there is no leg B):
    /// re-INVITE answered by the media server, others answered here.
    /// Returns the call when the request is not one it handles.
    pub(crate) fn local_in_dialog(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        key: ServerKey,
        msg: &SipMessage<'_>,
        call: Box<Call>,
    ) {
        use rvoip_dataplane::sip::Method;
        let id = call.id;
        match msg.method().unwrap_or(Method::Options) {
            Method::Invite | Method::Update => match sdp_body(msg) {
                Some(sdp) => {
                    let iface = self.media_iface(&call, Side::A);
                    let order =
                        terminate(&call, &call.media_id, sdp, LocalMode::Silence, None, iface);
                    self.calls.insert(id, call);
                    self.order(
                        el,
                        now,
                        unix_ms,
                        order,
                        Then::Local {
                            call: id,
                            step: LocalStep::Reanswer {
                                key,
                                msg: msg.as_bytes().to_vec(),
                            },
                        },
                    );
                }
                None => {
                    let answer = call
                        .app
                        .as_ref()
                        .map(|a| a.answer.clone())
                        .unwrap_or_default();
                    let bytes = response(&call, msg, (200, b"OK"), &[], &answer);
                    el.txl.server_respond(now, &key, 200, bytes);
                    self.calls.insert(id, call);
                }
            },
            Method::Info | Method::Notify | Method::Options | Method::Message => {
                el.txl.respond(now, &key, msg, 200, "OK", &[]);
                self.calls.insert(id, call);
            }
            _ => {
                el.txl
                    .respond(now, &key, msg, 405, "Method Not Allowed", &[]);
                self.calls.insert(id, call);
            }
        }
    }

    /// Music on hold: `from` sent SDP holding its peer (sendonly or
    /// inactive) or taking it off hold.
    pub(crate) fn hold_music(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        id: u64,
        from: super::Side,
        sdp: &[u8],
    ) {
        let Some(moh) = self.config.media_server.config.music_on_hold.clone() else {
            return;
        };
        let holds = holds(sdp);
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        let held = from.other();
        let tag = call.legs[held.index()].remote_tag().as_bytes().to_vec();
        let service = match (holds, call.held[held.index()]) {
            (true, false) => Some(MediaService::Play {
                file: self.config.media_server.prompt(&moh),
                repeat: 0,
            }),
            (false, true) => Some(MediaService::StopPlay),
            _ => None,
        };
        call.held[held.index()] = holds;
        if let Some(service) = service {
            let order = MediaOrder::Service {
                call_id: CallId::from(call.media_id.as_bytes()),
                party: Party::Tag(Tag::from(tag.as_slice())),
                service,
            };
            self.calls.insert(id, call);
            self.order(el, now, unix_ms, record_of(&order), Then::Noted);
        } else {
            self.calls.insert(id, call);
        }
    }

    /// An announcement for a call about to fail with `status`, when one is
    /// configured and the caller made an offer. Returns the call when
    /// there is none (the caller then gets `status` at once).
    pub(crate) fn announce(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        call: Box<Call>,
        status: u16,
    ) -> Option<Box<Call>> {
        let file = self
            .config
            .media_server
            .config
            .announcements
            .get(&status.to_string())
            .cloned();
        let offer = reread(&call.a_invite).and_then(|m| sdp_body(&m).map(<[u8]>::to_vec));
        let (Some(file), Some(offer)) = (file, offer) else {
            return Some(call);
        };
        if call.cancelled || call.app.is_some() {
            return Some(call);
        }
        let iface = self.media_iface(&call, Side::A);
        let order = terminate(
            &call,
            &announcement_id(&call.media_id),
            &offer,
            LocalMode::Silence,
            None,
            iface,
        );
        let id = call.id;
        self.calls.insert(id, call);
        let file = self.config.media_server.prompt(&file);
        self.order(
            el,
            now,
            unix_ms,
            order,
            Then::Local {
                call: id,
                step: LocalStep::Announce { status, file },
            },
        );
        None
    }

    /// The announcement is over (or could not play): the caller gets
    /// `status`, the announcement's media goes.
    fn release_announced(
        &mut self,
        el: &mut Element,
        now: Millis,
        unix_ms: u64,
        mut call: Box<Call>,
        status: u16,
    ) {
        el.b2b_reject_a(&call, now, status);
        call.a_status = status;
        let order = media::delete(announcement_id(&call.media_id).as_bytes());
        self.order(el, now, unix_ms, order, Then::Noted);
        self.finish(el, call, unix_ms, "announced");
    }
}

/// The media server's response `code` to `req` from the caller of `call`:
/// its tag, its Contact, `extra` headers and `body` (an SDP).
fn response(
    call: &Call,
    req: &SipMessage<'_>,
    (code, reason): (u16, &[u8]),
    extra: &[(HeaderName, &[u8])],
    body: &[u8],
) -> Vec<u8> {
    let contact = [b"<", call.legs[0].contact().as_bytes(), b">"].concat();
    let headers: Vec<(HeaderName, &[u8])> = std::iter::once((HeaderName::Contact, &contact[..]))
        .chain(extra.iter().copied())
        .collect();
    response_to(req, code, reason, call.legs[0].local_tag(), &headers, body)
}

/// The media session of a call's announcement.
fn announcement_id(media_id: &str) -> String {
    format!("{media_id}-ann")
}

/// Whether an SDP puts its peer on hold: its (first) audio stream, or the
/// session, is `sendonly` or `inactive`, or its address is 0.0.0.0
/// (RFC 2543 hold).
pub(crate) fn holds(sdp: &[u8]) -> bool {
    let Ok(parsed) = rvoip_dataplane::sdp::Sdp::parse(sdp) else {
        return false;
    };
    let text = String::from_utf8_lossy(sdp);
    let _ = parsed;
    text.lines().any(|l| {
        let l = l.trim();
        l == "a=sendonly" || l == "a=inactive" || l.starts_with("c=IN IP4 0.0.0.0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_reach_their_applications() {
        let mut ms = MediaServer::default();
        ms.config.conference_prefix = "conf-".into();
        ms.config.echo = "echo".into();
        ms.config.ivr.push(rvoip_tuning::mediaserver::IvrMenu {
            user: "ivr".into(),
            prompt: "welcome.wav".into(),
            timeout_secs: 5,
            retries: 1,
            digits: Default::default(),
        });
        assert_eq!(
            ms.app_for("conf-7"),
            Some(AppKind::Conference("conf-7".into()))
        );
        assert_eq!(ms.app_for("conf-"), None);
        assert_eq!(ms.app_for("echo"), Some(AppKind::Echo));
        assert_eq!(ms.app_for("ivr"), Some(AppKind::Ivr(0)));
        assert_eq!(ms.app_for("alice"), None);
        assert!(holds(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"));
        assert!(!holds(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"));
    }
}
