//! The dialog layer (RFC 3261 §12), sans-IO, for every user agent rvoip
//! contains (the B2BUA's two legs today; a conference bridge, an IVR, an
//! announcement server next): a dialog made on either side (§12.1.1 as
//! UAS, §12.1.2 as UAC, early on a provisional response and confirmed on
//! the 2xx), requests written within it (§12.2.1.1: Request-URI from the
//! remote target, Route from the route set, CSeq counted), requests
//! received within it checked (§12.2.2: tags, CSeq order) and target
//! refreshes applied; a 2xx from a fork other than the one confirmed told
//! apart (§13.2.2.4); RAck of reliable provisionals (RFC 3262 §7.2); and
//! the session interval of session timers (RFC 4028).
//!
//! Driving contract: the user agent makes a [`Dialog`] from the request
//! or response that creates it, feeds it every request received in it
//! ([`Dialog::on_request`]; an error names the status to answer) and every
//! response to its own INVITE ([`Dialog::on_response`]), and writes its
//! requests with [`Dialog::next_cseq`] and [`Dialog::request`]. A dialog
//! does not send, time or store anything: its owner does.

use std::net::SocketAddr;

use rvoip_dataplane::sip::{Contact, HeaderName, MessageWriter, Method, SipMessage};
use serde::{Deserialize, Serialize};

use crate::build::{
    self,
    Piece::{Addr, Ip, Str},
};
use crate::element::{Hop, Inbound, Transport};
use crate::sbc::policy::HeaderText;

#[cfg(test)]
mod tests;

/// The texts of a dialog ([`Text`]), end to end in one string: a dialog
/// is one allocation instead of seven, read as a whole when a request of
/// the dialog is written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "DialogTextRecord")]
pub(crate) struct DialogText {
    text: String,
    /// Where each text ends in `text`, in [`Text`] order.
    ends: [u32; TEXTS],
}

const TEXTS: usize = 7;

/// The texts of a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Text {
    CallId,
    LocalTag,
    RemoteTag,
    /// Our address (name-addr, no tag) in From/To of this dialog.
    LocalUri,
    /// The peer's address (name-addr, no tag).
    RemoteUri,
    /// Request-URI of requests in the dialog.
    RemoteTarget,
    /// Our Contact on this leg.
    Contact,
}

impl DialogText {
    /// The texts in [`Text`] order.
    pub(crate) fn new(parts: [&str; TEXTS]) -> DialogText {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut b = DialogText::builder(len);
        for p in parts {
            b.text().push_str(p);
            b.end();
        }
        b.finish()
    }

    /// A leg's texts written in place, in [`Text`] order, into room for
    /// `len` octets and the tag and target the peer's answer brings.
    pub(crate) fn builder(len: usize) -> DialogTextBuilder {
        DialogTextBuilder {
            t: DialogText {
                text: String::with_capacity(len + 96),
                ends: [0; TEXTS],
            },
            next: 0,
        }
    }

    fn range(&self, which: Text) -> std::ops::Range<usize> {
        let i = which as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        start as usize..self.ends[i] as usize
    }

    pub(crate) fn get(&self, which: Text) -> &str {
        &self.text[self.range(which)]
    }

    /// Replaces one text with `parts`, end to end, in place.
    pub(crate) fn set(&mut self, which: Text, parts: &[&str]) {
        let r = self.range(which);
        let old = r.len();
        self.text.replace_range(r.clone(), "");
        let mut at = r.start;
        for p in parts {
            self.text.insert_str(at, p);
            at += p.len();
        }
        let new = at - r.start;
        for e in &mut self.ends[which as usize..] {
            *e = (*e as usize + new - old) as u32;
        }
    }

    /// Takes the Call-ID out in its own string (the leg's allocation,
    /// without a copy); all the leg's texts are empty afterwards.
    pub(crate) fn take_call_id(&mut self) -> String {
        let mut t = std::mem::take(&mut self.text);
        t.truncate(self.ends[0] as usize);
        self.ends = [0; TEXTS];
        t
    }

    /// Replaces one text with `v` (not UTF-8: replacement characters).
    pub(crate) fn set_bytes(&mut self, which: Text, v: &[u8]) {
        self.set(which, &[&String::from_utf8_lossy(v)]);
    }
}

/// Writes a [`DialogText`]: each text into [`DialogTextBuilder::text`], then
/// [`DialogTextBuilder::end`].
pub(crate) struct DialogTextBuilder {
    t: DialogText,
    next: usize,
}

impl DialogTextBuilder {
    /// The string the current text is appended to.
    pub(crate) fn text(&mut self) -> &mut String {
        &mut self.t.text
    }

    /// Appends `v` to the current text (not UTF-8: replacement characters).
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        match std::str::from_utf8(v) {
            Ok(v) => self.t.text.push_str(v),
            Err(_) => self.t.text.push_str(&String::from_utf8_lossy(v)),
        }
        self
    }

    /// Ends the current text.
    pub(crate) fn end(&mut self) -> &mut Self {
        if let Some(e) = self.t.ends.get_mut(self.next) {
            *e = self.t.text.len() as u32;
            self.next += 1;
        }
        self
    }

    /// The texts; those not written are empty.
    pub(crate) fn finish(mut self) -> DialogText {
        let len = self.t.text.len() as u32;
        for e in &mut self.t.ends[self.next..] {
            *e = len;
        }
        self.t
    }
}

/// A dialog (RFC 3261 §12) as one side of it keeps it, with where its
/// requests go. The dialog journal holds each of its texts as a field of
/// its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Dialog {
    #[serde(flatten)]
    pub(crate) text: DialogText,
    /// Route set, in the order of Route headers to send.
    pub(crate) route_set: Vec<String>,
    /// CSeq of the last request this side sent in the dialog.
    pub(crate) local_cseq: u32,
    /// CSeq of the last request the peer sent (§12.2.2); none yet, or not
    /// known (a dialog read back from an older journal).
    #[serde(default)]
    pub(crate) remote_cseq: Option<u32>,
    /// Over a stream (TCP or TLS).
    pub(crate) tcp: bool,
    /// Over TLS (with `tcp`).
    #[serde(default)]
    pub(crate) tls: bool,
    /// Over WebSocket (with `tcp`; WSS with `tls` too).
    #[serde(default)]
    pub(crate) ws: bool,
    /// Its media is WebRTC (ICE-lite, DTLS-SRTP): its realm's `media =
    /// "webrtc"`.
    #[serde(default)]
    pub(crate) webrtc: bool,
    pub(crate) local: SocketAddr,
    /// Where requests of the dialog are sent: the peer's address as seen
    /// (symmetric: a caller behind NAT gets them where it sent from).
    pub(crate) dest: SocketAddr,
    pub(crate) conn: Option<u32>,
    /// The peer's media is SRTP (SDES keys in its SDP).
    pub(crate) srtp: bool,
    /// RSeq of the last reliable provisional the peer sent in this early
    /// dialog (RFC 3262), so a PRACK finds the fork it acknowledges.
    #[serde(default)]
    pub(crate) remote_rseq: Option<u32>,
}

/// A dialog's texts as the dialog journal holds them, each a field of its own.
#[derive(Deserialize)]
struct DialogTextRecord {
    call_id: String,
    local_tag: String,
    remote_tag: String,
    local_uri: String,
    remote_uri: String,
    remote_target: String,
    contact: String,
}

impl From<DialogTextRecord> for DialogText {
    fn from(r: DialogTextRecord) -> DialogText {
        DialogText::new([
            &r.call_id,
            &r.local_tag,
            &r.remote_tag,
            &r.local_uri,
            &r.remote_uri,
            &r.remote_target,
            &r.contact,
        ])
    }
}

impl Serialize for DialogText {
    /// As [`DialogTextRecord`]: same fields, same order.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("DialogText", TEXTS)?;
        for (name, which) in [
            ("call_id", Text::CallId),
            ("local_tag", Text::LocalTag),
            ("remote_tag", Text::RemoteTag),
            ("local_uri", Text::LocalUri),
            ("remote_uri", Text::RemoteUri),
            ("remote_target", Text::RemoteTarget),
            ("contact", Text::Contact),
        ] {
            st.serialize_field(name, self.get(which))?;
        }
        st.end()
    }
}

/// A reader on [`Dialog`] for each of its texts.
macro_rules! dialog_texts {
    ($($name:ident => $which:ident),* $(,)?) => {
        impl Dialog {
            $(
                pub(crate) fn $name(&self) -> &str {
                    self.text.get(Text::$which)
                }
            )*
        }
    };
}

dialog_texts! {
    call_id => CallId,
    local_tag => LocalTag,
    remote_tag => RemoteTag,
    local_uri => LocalUri,
    remote_uri => RemoteUri,
    remote_target => RemoteTarget,
    contact => Contact,
}

impl Dialog {
    /// What the relay gives this side.
    pub(crate) fn protection(&self) -> crate::sbc::media::Protection {
        crate::sbc::media::Protection {
            srtp: self.srtp,
            webrtc: self.webrtc,
            demux: false,
        }
    }

    pub(crate) fn hop(&self) -> Hop {
        Hop {
            transport: match (self.tcp, self.tls, self.ws) {
                (true, true, true) => Transport::Wss,
                (true, false, true) => Transport::Ws,
                (true, true, false) => Transport::Tls,
                (true, false, false) => Transport::Tcp,
                (false, _, _) => Transport::Udp,
            },
            local: self.local,
            dest: self.dest,
            conn: self.conn,
        }
    }

    /// A request in this dialog, with `extra` headers, then a Content-Type
    /// of `content_type` when given, and `body`.
    pub(crate) fn request(
        &self,
        method: &str,
        cseq: u32,
        branch: &str,
        extra: &[(HeaderText, HeaderText)],
        content_type: Option<&[u8]>,
        body: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + body.len());
        let m = Method::from_bytes(method.as_bytes());
        let mut w = MessageWriter::request(&mut out, m, self.remote_target().as_bytes());
        let transport = self.hop().transport;
        w.header_with(HeaderName::Via, |out| {
            build::put_via(out, transport, self.local, branch)
        });
        for r in &self.route_set {
            w.header(HeaderName::Route, r.as_bytes());
        }
        w.header(HeaderName::MaxForwards, b"70");
        w.header_parts(
            HeaderName::From,
            &[
                self.local_uri().as_bytes(),
                b";tag=",
                self.local_tag().as_bytes(),
            ],
        );
        if self.remote_tag().is_empty() {
            w.header(HeaderName::To, self.remote_uri().as_bytes());
        } else {
            w.header_parts(
                HeaderName::To,
                &[
                    self.remote_uri().as_bytes(),
                    b";tag=",
                    self.remote_tag().as_bytes(),
                ],
            );
        }
        w.header(HeaderName::CallId, self.call_id().as_bytes());
        w.header_number(HeaderName::CSeq, u64::from(cseq), method.as_bytes());
        if !matches!(method, "ACK" | "CANCEL" | "BYE") {
            w.header_parts(
                HeaderName::Contact,
                &[b"<", self.contact().as_bytes(), b">"],
            );
        }
        for (n, v) in extra {
            w.header_raw(n.as_bytes(), v.as_bytes());
        }
        if let Some(t) = content_type {
            w.header(HeaderName::ContentType, t);
        }
        w.finish(body);
        out
    }
}

/// The other early dialogs of an INVITE this side sent: each fork that
/// answers with a tag of its own makes one (§12.1.2, §13.2.2.4). The user
/// agent works with one current dialog; the others wait here until a
/// PRACK names one of them or a fork's 2xx confirms one (the rest end with
/// the INVITE).
#[derive(Debug, Clone, Default)]
pub(crate) struct Forks(Vec<Dialog>);

impl Forks {
    /// A response to the INVITE: the fork it comes from becomes `current`
    /// (kept from before, or new: same Call-ID and local side, its own tag,
    /// target and route set, CSeq from the INVITE's), and the response is
    /// applied to it; a 2xx leaves no other early dialog.
    pub(crate) fn on_response(&mut self, current: &mut Dialog, msg: &SipMessage<'_>, code: u16) {
        if current.is_other_fork(msg) {
            let tag = msg.to().ok().and_then(|t| t.tag()).unwrap_or_default();
            let mut next = match self.0.iter().position(|d| d.remote_tag().as_bytes() == tag) {
                Some(i) => self.0.swap_remove(i),
                None => {
                    let mut d = current.clone();
                    d.route_set.clear();
                    d.remote_rseq = None;
                    d.local_cseq = msg.cseq().map_or(1, |c| c.seq);
                    d
                }
            };
            std::mem::swap(current, &mut next);
            self.0.push(next);
        }
        current.on_response(msg, code);
        if code >= 200 {
            self.0.clear();
        }
    }

    /// The early dialog whose last reliable provisional carried `rseq`
    /// becomes `current` (a PRACK goes to the fork it acknowledges).
    pub(crate) fn select_by_rseq(&mut self, current: &mut Dialog, rseq: u32) {
        if current.remote_rseq == Some(rseq) {
            return;
        }
        if let Some(d) = self.0.iter_mut().find(|d| d.remote_rseq == Some(rseq)) {
            std::mem::swap(current, d);
        }
    }
}

/// Why a request cannot be taken in a dialog (RFC 3261 §12.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialogError {
    /// Its tags name another dialog of the same Call-ID.
    NoSuchDialog,
    /// Its CSeq is lower than the last one the peer sent.
    OutOfOrder,
}

impl DialogError {
    /// The status the request is answered with.
    pub(crate) fn sip_status(self) -> (u16, &'static str) {
        match self {
            DialogError::NoSuchDialog => (481, "Call/Transaction Does Not Exist"),
            DialogError::OutOfOrder => (500, "Server Internal Error"),
        }
    }
}

impl Dialog {
    /// The dialog a request creates on the side that answers it (§12.1.1):
    /// remote target from its Contact (its source when it has none), route
    /// set from its Record-Route in order, remote tag and URI from its From,
    /// local URI from its To; `local_tag` writes this side's tag and
    /// `contact` is this side's Contact URI. Responses and requests go
    /// back where the request came from, on its transport.
    pub(crate) fn uas(
        msg: &SipMessage<'_>,
        inb: &Inbound<'_>,
        srtp: bool,
        local_tag: impl FnOnce(&mut String),
    ) -> Dialog {
        let from = msg.from().ok();
        let route_set = record_route(msg);
        let mut t = DialogText::builder(inb.bytes.len().min(512));
        t.bytes(msg.call_id().unwrap_or_default()).end();
        local_tag(t.text());
        t.end();
        t.bytes(from.as_ref().and_then(|f| f.tag()).unwrap_or_default())
            .end();
        if let Some(to) = msg.header(HeaderName::To) {
            strip_tag_into(t.text(), to);
        }
        t.end();
        if let Some(from) = msg.header(HeaderName::From) {
            strip_tag_into(t.text(), from);
        }
        t.end();
        match msg.contacts().next() {
            Some(Ok(Contact::Addr(a))) => t.bytes(a.uri.as_bytes()),
            _ => {
                build::push_text(t.text(), &[Str("sip:"), Addr(inb.remote)]);
                &mut t
            }
        }
        .end();
        // rvoip's Contact: the listener the request came to; over TLS with
        // its transport, so the peer's requests come back over TLS.
        let param = match inb.transport {
            Transport::Udp | Transport::Tcp => "",
            Transport::Tls => ";transport=tls",
            Transport::Ws => ";transport=ws",
            Transport::Wss => ";transport=wss",
        };
        build::push_text(t.text(), &[Str("sip:"), Addr(inb.local), Str(param)]);
        t.end();
        let tcp = inb.transport.reliable();
        Dialog {
            text: t.finish(),
            route_set,
            local_cseq: 0,
            remote_cseq: msg.cseq().ok().map(|c| c.seq),
            tcp,
            tls: inb.transport.secure(),
            ws: inb.transport.accepted_only(),
            webrtc: false,
            local: inb.local,
            dest: inb.remote,
            conn: tcp.then_some(inb.conn),
            srtp,
            remote_rseq: None,
        }
    }

    /// The dialog this side will open as UAC from `local` for `user`
    /// (From `<sip:user@local-ip>`, Contact `sip:local`); it has no peer
    /// until [`Dialog::restart`] gives it one.
    pub(crate) fn uac(
        local: SocketAddr,
        user: &str,
        srtp: bool,
        local_tag: impl FnOnce(&mut String),
    ) -> Dialog {
        let mut t = DialogText::builder(160);
        t.end();
        local_tag(t.text());
        t.end().end();
        build::push_text(
            t.text(),
            &[Str("<sip:"), Str(user), Str("@"), Ip(local.ip()), Str(">")],
        );
        t.end().end().end();
        build::push_text(t.text(), &[Str("sip:"), Addr(local)]);
        t.end();
        Dialog {
            text: t.finish(),
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: None,
            tcp: false,
            tls: false,
            ws: false,
            webrtc: false,
            local,
            dest: local,
            conn: None,
            srtp,
            remote_rseq: None,
        }
    }

    /// Makes this side's requests go over `transport` from `local` (its Via
    /// and Contact; over TLS the Contact says `;transport=tls`), before a
    /// [`Dialog::restart`] towards a peer reached that way.
    pub(crate) fn set_transport(&mut self, transport: Transport, local: SocketAddr) {
        self.tcp = transport.reliable();
        self.tls = transport.secure();
        self.ws = transport.accepted_only();
        self.local = local;
        self.conn = None;
        let contact = match transport {
            Transport::Udp => format!("sip:{local}"),
            t => format!("sip:{local};transport={}", t.param()),
        };
        self.text.set(Text::Contact, &[&contact]);
    }

    /// Starts over as UAC towards `target` at `dest` with a fresh Call-ID
    /// (a new INVITE, e.g. to the next peer): no remote tag, no route set,
    /// CSeq 1 for the INVITE.
    pub(crate) fn restart(&mut self, call_id: &str, target: &str, dest: SocketAddr) {
        self.text.set(Text::CallId, &[call_id]);
        self.text.set(Text::RemoteTag, &[]);
        self.text.set(Text::RemoteUri, &["<", target, ">"]);
        self.text.set(Text::RemoteTarget, &[target]);
        self.route_set.clear();
        self.remote_cseq = None;
        self.remote_rseq = None;
        self.dest = dest;
        self.local_cseq = 1;
    }

    /// A response with `code` to this side's INVITE (§12.1.2): an 18x with
    /// a To tag makes the dialog early, a 2xx confirms it; the remote tag
    /// and target come from the response, and the route set (Record-Route
    /// reversed) from any response that has one and from the 2xx always.
    pub(crate) fn on_response(&mut self, msg: &SipMessage<'_>, code: u16) {
        let tag = msg.to().ok().and_then(|t| t.tag()).unwrap_or_default();
        if !tag.is_empty() {
            self.text.set_bytes(Text::RemoteTag, tag);
        }
        if let Some(r) = msg
            .header(HeaderName::RSeq)
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        {
            self.remote_rseq = Some(r);
        }
        if let Some(Ok(Contact::Addr(a))) = msg.contacts().next() {
            self.text.set_bytes(Text::RemoteTarget, a.uri.as_bytes());
        }
        let mut rr = record_route(msg);
        rr.reverse();
        if !rr.is_empty() || code >= 200 {
            self.route_set = rr;
        }
    }

    /// Whether `msg`, a 2xx to this side's INVITE, comes from a fork other
    /// than the one this dialog was confirmed with (§13.2.2.4: that one is
    /// acknowledged and ended on its own).
    pub(crate) fn is_other_fork(&self, msg: &SipMessage<'_>) -> bool {
        let tag = msg.to().ok().and_then(|t| t.tag()).unwrap_or_default();
        !self.remote_tag().is_empty() && self.remote_tag().as_bytes() != tag
    }

    /// A request the peer sent in this dialog (§12.2.2): its tags must be
    /// this dialog's and its CSeq not lower than the peer's last; a target
    /// refresh (re-INVITE, UPDATE) moves the remote target to its Contact.
    pub(crate) fn on_request(&mut self, msg: &SipMessage<'_>) -> Result<(), DialogError> {
        let to_tag = msg.to().ok().and_then(|t| t.tag()).unwrap_or_default();
        let from_tag = msg.from().ok().and_then(|f| f.tag()).unwrap_or_default();
        if to_tag != self.local_tag().as_bytes()
            || (!self.remote_tag().is_empty() && from_tag != self.remote_tag().as_bytes())
        {
            return Err(DialogError::NoSuchDialog);
        }
        let method = msg.method();
        if !matches!(method, Some(Method::Ack | Method::Cancel))
            && let Ok(cseq) = msg.cseq()
        {
            if self.remote_cseq.is_some_and(|last| cseq.seq < last) {
                return Err(DialogError::OutOfOrder);
            }
            self.remote_cseq = Some(cseq.seq);
        }
        if matches!(method, Some(Method::Invite | Method::Update)) {
            self.refresh_target(msg);
        }
        Ok(())
    }

    /// A target refresh: the remote target becomes the message's Contact
    /// (a re-INVITE or UPDATE received, or the 2xx to one this side sent).
    pub(crate) fn refresh_target(&mut self, msg: &SipMessage<'_>) {
        if let Some(Ok(Contact::Addr(a))) = msg.contacts().next() {
            self.text.set_bytes(Text::RemoteTarget, a.uri.as_bytes());
        }
    }

    /// The CSeq of this side's next request.
    pub(crate) fn next_cseq(&mut self) -> u32 {
        self.local_cseq += 1;
        self.local_cseq
    }
}

/// The Record-Route values of `msg` in order, one per route, whether they
/// came on lines of their own or comma-separated on one.
fn record_route(msg: &SipMessage<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for line in msg.header_lines(HeaderName::RecordRoute) {
        let (mut angle, mut quote, mut start) = (false, false, 0);
        for (i, b) in line.iter().enumerate() {
            match b {
                b'"' if !angle => quote = !quote,
                b'<' if !quote => angle = true,
                b'>' if !quote => angle = false,
                b',' if !angle && !quote => {
                    push_route(&mut out, &line[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        push_route(&mut out, &line[start..]);
    }
    out
}

fn push_route(out: &mut Vec<String>, v: &[u8]) {
    let v = v.trim_ascii();
    if !v.is_empty() {
        out.push(String::from_utf8_lossy(v).into_owned());
    }
}

/// Appends the header value `v` without its tag parameter (outside <>
/// only) to `out`.
pub(crate) fn strip_tag_into(out: &mut String, v: &[u8]) {
    let v = String::from_utf8_lossy(v);
    let v: &str = &v;
    let (addr, params) = match v.rfind('>') {
        Some(i) => (&v[..=i], &v[i + 1..]),
        None => match v.find(';') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, ""),
        },
    };
    out.push_str(addr.trim());
    for p in params.split(';').map(str::trim) {
        let tag = p
            .as_bytes()
            .get(..4)
            .is_some_and(|b| b.eq_ignore_ascii_case(b"tag="));
        if !p.is_empty() && !tag {
            out.push(';');
            out.push_str(p);
        }
    }
}

/// The RAck of a PRACK (RFC 3262 §7.2): the RSeq of the reliable
/// provisional it acknowledges, and the CSeq number and method of the
/// request that provisional answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RAck {
    pub(crate) rseq: u32,
    pub(crate) cseq: u32,
}

impl RAck {
    /// Reads an RAck value; `None` when it is not `rseq cseq INVITE`.
    pub(crate) fn parse(v: &[u8]) -> Option<RAck> {
        let s = std::str::from_utf8(v).ok()?;
        let mut parts = s.split_whitespace();
        let rseq = parts.next()?.parse().ok()?;
        let cseq = parts.next()?.parse().ok()?;
        let method = parts.next()?;
        (method.eq_ignore_ascii_case("INVITE") && parts.next().is_none())
            .then_some(RAck { rseq, cseq })
    }

    /// The value of the RAck header.
    pub(crate) fn value(&self) -> String {
        format!("{} {} INVITE", self.rseq, self.cseq)
    }
}

/// Session timers (RFC 4028).
pub(crate) mod session_timer {
    /// `delta-seconds` of a Session-Expires or Min-SE value.
    pub(crate) fn delta_secs(v: &[u8]) -> Option<u32> {
        std::str::from_utf8(v)
            .ok()?
            .split(';')
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The session interval for a request that asked for `asked` seconds
    /// (none: it did not ask), this side wanting at most `local` and
    /// accepting no less than `min_se` (§8.1: raised to Min-SE).
    pub(crate) fn interval(asked: Option<u32>, local: u32, min_se: u32) -> u32 {
        asked.map_or(local, |a| a.min(local)).max(min_se)
    }
}
