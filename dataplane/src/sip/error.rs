//! What can be wrong with a SIP message, and what an element answers for it.

use core::fmt;

use super::header::HeaderName;

/// The part of a message a [`SipError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The Request-Line or Status-Line.
    StartLine,
    /// The Request-URI of the start line.
    RequestUri,
    /// A header field, by name.
    Header(HeaderName),
    /// An extension header field (its name is in the message).
    ExtensionHeader,
    /// The framing of the message: header section end, Content-Length, body size.
    Framing,
    /// The message body.
    Body,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::StartLine => f.write_str("start line"),
            Part::RequestUri => f.write_str("Request-URI"),
            Part::Header(h) => f.write_str(h.as_str()),
            Part::ExtensionHeader => f.write_str("extension header"),
            Part::Framing => f.write_str("framing"),
            Part::Body => f.write_str("body"),
        }
    }
}

/// A limit of [`super::Limits`] that a message exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Total message size in octets.
    MessageSize,
    /// Length of one line of the header section in octets.
    LineLength,
    /// Number of header fields.
    HeaderCount,
    /// Number of values in one list header.
    ListLength,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::MessageSize => "message size",
            Limit::LineLength => "header line length",
            Limit::HeaderCount => "header count",
            Limit::ListLength => "values in one header",
        })
    }
}

/// Why a message could not be accepted.
///
/// Each variant maps to wire behaviour through [`SipError::status`]: the
/// response a server sends for a request, while a bad response is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipError {
    /// The message breaks the RFC 3261 grammar.
    Malformed {
        /// Where.
        part: Part,
        /// What is wrong, in a few words.
        reason: &'static str,
    },
    /// A configured limit was exceeded.
    TooLarge {
        /// Which limit.
        limit: Limit,
        /// The configured maximum.
        max: usize,
    },
    /// The SIP-Version is not 2.0 (RFC 3261 §8.2.2: 505).
    VersionNotSupported,
    /// The CSeq method differs from the Request-Line method (RFC 4475 §3.1.2.17/18).
    CSeqMethodMismatch {
        /// Whether the Request-Line method is one rvoip knows; an unknown one is
        /// answered 501, a known one 400.
        known_method: bool,
    },
    /// A stream frame is not complete yet: more octets are needed.
    Incomplete,
}

impl SipError {
    pub(crate) const fn malformed(part: Part, reason: &'static str) -> SipError {
        SipError::Malformed { part, reason }
    }

    /// The status code a server answers a request with when it fails this way.
    pub const fn status(&self) -> u16 {
        match self {
            SipError::Malformed { .. } | SipError::Incomplete => 400,
            SipError::TooLarge { .. } => 513,
            SipError::VersionNotSupported => 505,
            SipError::CSeqMethodMismatch { known_method: true } => 400,
            SipError::CSeqMethodMismatch {
                known_method: false,
            } => 501,
        }
    }

    /// A reason phrase for the response.
    pub const fn reason_phrase(&self) -> &'static str {
        match self.status() {
            513 => "Message Too Large",
            505 => "Version Not Supported",
            501 => "Not Implemented",
            _ => "Bad Request",
        }
    }
}

impl fmt::Display for SipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SipError::Malformed { part, reason } => write!(f, "{part}: {reason}"),
            SipError::TooLarge { limit, max } => write!(f, "{limit} exceeds the limit of {max}"),
            SipError::VersionNotSupported => f.write_str("SIP version is not SIP/2.0"),
            SipError::CSeqMethodMismatch { .. } => {
                f.write_str("CSeq method differs from the Request-Line method")
            }
            SipError::Incomplete => f.write_str("message is incomplete"),
        }
    }
}

impl std::error::Error for SipError {}
