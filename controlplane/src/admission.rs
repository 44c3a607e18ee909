//! Admission: what a well-formed request is answered with before any routing.
//!
//! [`admit`] applies the checks of RFC 3261 §8.2 (UAS), §16.3 (proxy) and
//! §10.3 (registrar) that depend only on the message, in the order the RFC
//! lists them, and returns the error response to send, if any. What counts as
//! supported (option tags, body types) is policy, given by [`Supported`].

use std::borrow::Cow;

use rvoip_dataplane::sip::{Contact, HeaderName, MAGIC_COOKIE, Method, Scheme, SipMessage};

/// The element whose answer is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// rvoip as a B2BUA/SBC: the UAS of the incoming leg (it reads the SDP of
    /// INVITE, UPDATE, PRACK and ACK), the registrar for REGISTER, and the
    /// element that forwards everything else, so Max-Forwards and
    /// Proxy-Require apply too (RFC 7332 §3: a B2BUA keeps Max-Forwards).
    Sbc,
    /// rvoip as a proxy: REGISTER and other requests are forwarded; bodies
    /// are not read; Proxy-Require and Max-Forwards apply (RFC 3261 §16.3).
    Proxy,
}

/// What rvoip supports, for the checks that depend on it.
#[derive(Debug, Clone)]
pub struct Supported {
    /// Option tags rvoip implements (Require, Proxy-Require).
    pub supported_option_tags: Vec<String>,
}

impl Default for Supported {
    fn default() -> Self {
        // path (RFC 3327), 100rel (RFC 3262, passed through), timer (RFC 4028),
        // replaces (RFC 3891, passed through).
        Supported {
            supported_option_tags: ["path", "100rel", "timer", "replaces"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// An error response to send instead of processing the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Status code.
    pub status: u16,
    /// Why, for logs and the Reason/Warning text.
    pub reason: Cow<'static, str>,
    /// Option tags to list in Unsupported (420 only).
    pub unsupported: Vec<String>,
}

impl Rejection {
    fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
            unsupported: Vec::new(),
        }
    }
}

/// Headers every request must carry (RFC 3261 §8.1.1). Max-Forwards is also
/// mandatory there, but an RFC 2543 element omits it and a proxy then adds
/// one (§16.6 step 3), so its absence is not refused.
const MANDATORY: [HeaderName; 5] = [
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
];

/// Returns the refusal for a request that passed [`rvoip_dataplane::sip::check`],
/// or `None` when it is processed normally. Responses are never refused.
pub fn admit(msg: &SipMessage<'_>, role: Role, policy: &Supported) -> Option<Rejection> {
    let method = msg.method()?;
    for h in MANDATORY {
        if msg.count(h) == 0 {
            return Some(Rejection::new(
                400,
                format!("missing {} header", h.as_str()),
            ));
        }
    }
    // RFC 4475 §3.3.8: more than one value of a single-value header.
    for h in [
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::From,
        HeaderName::To,
        HeaderName::MaxForwards,
        HeaderName::ContentType,
    ] {
        if msg.count(h) > 1 {
            return Some(Rejection::new(
                400,
                format!("more than one {} header", h.as_str()),
            ));
        }
    }
    // RFC 3261 §8.2.2.1: 416 for a Request-URI scheme rvoip does not serve.
    let uri = msg.request_uri().ok()?;
    if !matches!(uri.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel) {
        return Some(Rejection::new(
            416,
            "Request-URI scheme is not sip, sips or tel",
        ));
    }
    // RFC 4475 §3.2.1: a branch that is only the magic cookie identifies nothing.
    if let Ok(via) = msg.top_via()
        && via.branch() == Some(MAGIC_COOKIE)
    {
        return Some(Rejection::new(400, "Via branch is only the magic cookie"));
    }
    // RFC 3261 §16.3 step 3 / RFC 7332: a request that would be forwarded
    // with Max-Forwards 0 is answered 483.
    let consumed_locally = role == Role::Sbc && method == Method::Register;
    if !consumed_locally && matches!(msg.max_forwards(), Ok(Some(0))) {
        return Some(Rejection::new(483, "Max-Forwards is 0"));
    }
    // RFC 3261 §16.3 step 5 (Proxy-Require) and §8.2.2.3 (Require, not for
    // ACK and CANCEL): 420 listing what is not supported.
    let names: &[HeaderName] =
        if role == Role::Sbc && !matches!(method, Method::Ack | Method::Cancel) {
            &[HeaderName::ProxyRequire, HeaderName::Require]
        } else {
            &[HeaderName::ProxyRequire]
        };
    let unsupported: Vec<String> = names
        .iter()
        .flat_map(|&h| msg.tokens(h).filter_map(Result::ok))
        .filter(|t| {
            !policy
                .supported_option_tags
                .iter()
                .any(|s| s.as_bytes().eq_ignore_ascii_case(t))
        })
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    if !unsupported.is_empty() {
        let mut r = Rejection::new(
            420,
            format!("unsupported option tags: {}", unsupported.join(", ")),
        );
        r.unsupported = unsupported;
        return Some(r);
    }
    if role == Role::Sbc {
        if let Some(r) = session_body_checks(msg, method) {
            return Some(r);
        }
        if method == Method::Register {
            return registrar_checks(msg);
        }
    }
    None
}

/// RFC 3261 §8.2.3 (415) and §21.4.7 (406) for the methods whose session
/// description the SBC must read and answer.
fn session_body_checks(msg: &SipMessage<'_>, method: Method<'_>) -> Option<Rejection> {
    if !rvoip_dataplane::sip::carries_sdp(method) {
        return None;
    }
    if !msg.body().is_empty() {
        match msg.content_type() {
            Ok(Some(t))
                if t.is("application", "sdp") || t.kind.eq_ignore_ascii_case(b"multipart") => {}
            Ok(Some(_)) => return Some(Rejection::new(415, "body is not application/sdp")),
            Ok(None) => return Some(Rejection::new(415, "body without Content-Type")),
            Err(_) => return Some(Rejection::new(400, "bad Content-Type")),
        }
        if let Some(enc) = msg.header(HeaderName::ContentEncoding)
            && !enc.eq_ignore_ascii_case(b"identity")
        {
            return Some(Rejection::new(415, "Content-Encoding is not supported"));
        }
    }
    if method == Method::Invite && msg.count(HeaderName::Accept) > 0 {
        let sdp_ok = msg
            .accept()
            .filter_map(Result::ok)
            .any(|m| m.covers("application", "sdp"));
        if !sdp_ok {
            return Some(Rejection::new(406, "Accept does not allow application/sdp"));
        }
    }
    None
}

/// RFC 3261 §10.3 steps 5 and 6.
fn registrar_checks(msg: &SipMessage<'_>) -> Option<Rejection> {
    match msg.to() {
        Ok(to) if to.uri.is_sip() => {}
        _ => {
            return Some(Rejection::new(
                400,
                "To of a REGISTER is not a SIP or SIPS address-of-record",
            ));
        }
    }
    let contacts: Vec<_> = msg.contacts().filter_map(Result::ok).collect();
    if contacts.iter().any(|c| matches!(c, Contact::Star)) {
        if contacts.len() > 1 {
            return Some(Rejection::new(400, "Contact '*' must be the only Contact"));
        }
        if !matches!(msg.expires(), Ok(Some(0))) {
            return Some(Rejection::new(400, "Contact '*' requires Expires: 0"));
        }
    }
    None
}
