//! The SIP message layer (RFC 3261 §7, §18.3, §20, §25).
//!
//! - [`SipMessage::parse`] indexes a datagram or stream frame in one pass:
//!   start line, every header field (folded lines, compact names, unknown
//!   headers byte-exact) and the body, without copying and, up to
//!   [`INLINE_HEADERS`] header fields, without allocating.
//! - Typed accessors ([`SipMessage::top_via`], [`SipMessage::cseq`],
//!   [`SipMessage::contacts`], ...) parse one header when asked, with nom.
//! - [`check`] runs every typed parser once: the well-formedness verdict.
//! - [`MessageWriter`] builds new messages into a reused buffer;
//!   [`Forward`] rewrites a few headers of a received message (Via push/pop,
//!   Route pop, Record-Route add, Max-Forwards, Contact, body) and copies
//!   everything else unchanged.

mod addr;
mod chars;
mod check;
mod error;
mod forward;
mod grammar;
mod header;
mod limits;
mod message;
mod shard;
pub mod stream;
pub mod tls;
mod uri;
mod values;
mod via;
mod writer;
pub mod ws;

pub use addr::{Contact, NameAddr};
pub use check::{carries_sdp, check};
pub use error::{Limit, Part, SipError};
pub use forward::Forward;
pub use grammar::{Host, unquote};
pub use header::HeaderName;
pub use limits::Limits;
pub use message::{Framing, HeaderField, INLINE_HEADERS, List, SipMessage, scan_call_id};
pub use shard::shard_of;
pub use uri::{ParamIter, Params, Scheme, Uri, unescape, unescaped_eq};
pub use values::{AuthHeader, CSeq, MediaType, Method};
pub use via::{MAGIC_COOKIE, Transport, Via};
pub use writer::{
    MessageWriter, unfold_into, write_message, write_response, write_response_with_body,
    write_warning,
};

/// Frames one message at the start of a stream buffer: `Ok(Some(len))` when a
/// whole message is there, `Ok(None)` when more octets are needed.
pub fn frame_stream(buf: &[u8], limits: &Limits) -> Result<Option<usize>, SipError> {
    match SipMessage::parse(buf, Framing::Stream, limits) {
        Ok(m) => Ok(Some(m.len())),
        Err(SipError::Incomplete) => Ok(None),
        Err(e) => Err(e),
    }
}
