//! The well-formedness check: every part of a message that rvoip interprets
//! is parsed against the RFC 3261 grammar, so later stages may trust it.
//!
//! Policy for malformations RFC 4475 lets an element either reject or repair
//! (§3.1.2.6–§3.1.2.15): rvoip never repairs. A message that is malformed in
//! any part rvoip reads (start line, URIs, addresses, Via, the framing headers)
//! is rejected with 400, so a malformation is never propagated. Header fields
//! rvoip does not interpret (Date, Subject, extension headers, ...) are carried
//! as opaque text and forwarded byte-exact, so a bad Date is not an error.

use super::error::{Part, SipError};
use super::header::HeaderName;
use super::message::SipMessage;
use super::values::Method;

/// Checks `msg` against the grammar; see the module documentation for the policy.
pub fn check(msg: &SipMessage<'_>) -> Result<(), SipError> {
    if msg.is_request() {
        let uri = msg.request_uri()?;
        // RFC 3261 §19.1.1 (Table 1): headers are not allowed in a Request-URI
        // (RFC 4475 §3.1.2.11).
        if uri.headers.is_some() {
            return Err(SipError::malformed(
                Part::RequestUri,
                "escaped headers are not allowed in a Request-URI",
            ));
        }
    }
    let mut seen = [false; 128];
    for field in msg.headers() {
        let name = field.name;
        let slot = &mut seen[(name as usize).min(127)];
        if *slot {
            continue;
        }
        *slot = true;
        check_header(msg, name)?;
    }
    if let (Some(method), Ok(cseq)) = (msg.method(), msg.cseq())
        && cseq.method != method
    {
        return Err(SipError::CSeqMethodMismatch {
            known_method: method.is_known(),
        });
    }
    Ok(())
}

/// Parses every line of header `name`.
fn check_header(msg: &SipMessage<'_>, name: HeaderName) -> Result<(), SipError> {
    fn lines<'a, T>(
        msg: &SipMessage<'a>,
        name: HeaderName,
        p: impl Fn(&'a [u8]) -> super::grammar::PResult<'a, T> + Copy,
    ) -> Result<(), SipError> {
        for v in msg.header_lines(name) {
            super::grammar::all(p, v, "unexpected text after the value")
                .map_err(|r| SipError::malformed(Part::Header(name), r))?;
        }
        Ok(())
    }
    fn list<T>(items: impl Iterator<Item = Result<T, SipError>>) -> Result<(), SipError> {
        for item in items {
            item?;
        }
        Ok(())
    }
    use super::{addr, values};
    match name {
        HeaderName::Via => list(msg.vias()),
        HeaderName::From | HeaderName::To => lines(msg, name, addr::name_addr_or_spec),
        HeaderName::CallId => {
            // call_id() reads the first line; check each.
            if msg.header_lines(name).all(super::message::is_call_id) {
                Ok(())
            } else {
                Err(SipError::malformed(Part::Header(name), "not word[@word]"))
            }
        }
        HeaderName::CSeq => lines(msg, name, values::cseq),
        HeaderName::MaxForwards => lines(msg, name, values::max_forwards),
        HeaderName::Expires | HeaderName::MinExpires => lines(msg, name, values::delta_seconds),
        HeaderName::ContentType => lines(msg, name, values::media_type),
        HeaderName::Contact => list(msg.contacts()),
        HeaderName::Route
        | HeaderName::RecordRoute
        | HeaderName::Path
        | HeaderName::ServiceRoute => list(msg.list(name, addr::name_addr)),
        HeaderName::Require
        | HeaderName::ProxyRequire
        | HeaderName::Supported
        | HeaderName::Unsupported
        | HeaderName::Allow => list(msg.tokens(name)),
        // An empty Accept is legal (no body type is acceptable); the list
        // skips empty lines of the headers whose grammar allows them.
        HeaderName::Accept => list(msg.accept()),
        HeaderName::Authorization
        | HeaderName::ProxyAuthorization
        | HeaderName::WwwAuthenticate
        | HeaderName::ProxyAuthenticate => lines(msg, name, values::auth_header),
        _ => Ok(()),
    }
}

/// Whether `method` is one whose body rvoip reads as a session description.
pub fn carries_sdp(method: Method<'_>) -> bool {
    matches!(
        method,
        Method::Invite | Method::Ack | Method::Update | Method::Prack
    )
}
