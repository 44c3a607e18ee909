//! Small typed header values: methods, CSeq, media types, token lists.

use core::fmt;

use nom::Parser;

use super::grammar::{In, PResult, expect, fail, header_params, lws, number_u32, sep, token};
use super::uri::Params;

/// A SIP method (RFC 3261 §7.1 and the extensions rvoip handles). Method
/// names are case-sensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// REGISTER
    Register,
    /// OPTIONS
    Options,
    /// INFO (RFC 6086)
    Info,
    /// UPDATE (RFC 3311)
    Update,
    /// PRACK (RFC 3262)
    Prack,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// REFER (RFC 3515)
    Refer,
    /// MESSAGE (RFC 3428)
    Message,
    /// PUBLISH (RFC 3903)
    Publish,
    /// An extension method token.
    Other(&'a [u8]),
}

impl<'a> Method<'a> {
    /// Resolves a method token.
    pub fn from_bytes(t: &'a [u8]) -> Method<'a> {
        match t {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            other => Method::Other(other),
        }
    }

    /// The method token.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Method::Invite => b"INVITE",
            Method::Ack => b"ACK",
            Method::Bye => b"BYE",
            Method::Cancel => b"CANCEL",
            Method::Register => b"REGISTER",
            Method::Options => b"OPTIONS",
            Method::Info => b"INFO",
            Method::Update => b"UPDATE",
            Method::Prack => b"PRACK",
            Method::Subscribe => b"SUBSCRIBE",
            Method::Notify => b"NOTIFY",
            Method::Refer => b"REFER",
            Method::Message => b"MESSAGE",
            Method::Publish => b"PUBLISH",
            Method::Other(t) => t,
        }
    }

    /// Whether rvoip knows this method.
    pub fn is_known(&self) -> bool {
        !matches!(self, Method::Other(_))
    }
}

impl fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Sequence number, below 2^31 when rvoip generates it, up to 2^32-1 accepted.
    pub seq: u32,
    /// Method.
    pub method: Method<'a>,
}

/// `CSeq = 1*DIGIT LWS Method`
pub(crate) fn cseq(i: In<'_>) -> PResult<'_, CSeq<'_>> {
    let (i, _) = super::grammar::sws(i)?;
    let (i, seq) = number_u32("a CSeq number up to 2^32-1")(i)?;
    let (i, _) = expect("white space between CSeq number and method", lws).parse(i)?;
    let (i, m) = expect("a CSeq method", token).parse(i)?;
    Ok((
        i,
        CSeq {
            seq,
            method: Method::from_bytes(m),
        },
    ))
}

/// A media type with parameters (Content-Type, Accept entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    /// Top-level type (`application`), or `*`.
    pub kind: &'a [u8],
    /// Subtype (`sdp`), or `*`.
    pub subtype: &'a [u8],
    /// Parameters (`boundary`, `charset`, `q`, ...).
    pub params: Params<'a>,
}

impl MediaType<'_> {
    /// Case-insensitive comparison with `type/subtype`.
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind.as_bytes())
            && self.subtype.eq_ignore_ascii_case(subtype.as_bytes())
    }

    /// Whether this (possibly wildcard) range covers `type/subtype`.
    pub fn covers(&self, kind: &str, subtype: &str) -> bool {
        (self.kind == b"*" || self.kind.eq_ignore_ascii_case(kind.as_bytes()))
            && (self.subtype == b"*" || self.subtype.eq_ignore_ascii_case(subtype.as_bytes()))
    }
}

/// `m-type SLASH m-subtype *( SEMI m-parameter )`; `*` is accepted in either
/// place (Accept's media-range).
pub(crate) fn media_type(i: In<'_>) -> PResult<'_, MediaType<'_>> {
    let (i, _) = super::grammar::sws(i)?;
    let (i, kind) = expect("a media type", token).parse(i)?;
    let (i, _) = sep(b'/', "'/' in a media type")(i)?;
    let (i, subtype) = expect("a media subtype", token).parse(i)?;
    let (i, params) = header_params(i)?;
    Ok((
        i,
        MediaType {
            kind,
            subtype,
            params: Params::header(params),
        },
    ))
}

/// One option tag, method or other token of a token list (Require, Supported, Allow, ...).
pub(crate) fn list_token(i: In<'_>) -> PResult<'_, &[u8]> {
    let (i, _) = super::grammar::sws(i)?;
    expect("a token", token).parse(i)
}

/// `delta-seconds` (Expires, Min-Expires), at most 2^32-1.
pub(crate) fn delta_seconds(i: In<'_>) -> PResult<'_, u32> {
    let (i, _) = super::grammar::sws(i)?;
    number_u32("delta-seconds up to 2^32-1")(i)
}

/// Max-Forwards: `1*DIGIT`, 0 to 255 (RFC 3261 §8.1.1.6).
pub(crate) fn max_forwards(i: In<'_>) -> PResult<'_, u8> {
    let (i, _) = super::grammar::sws(i)?;
    let (i, v) = number_u32("a Max-Forwards number")(i)?;
    if v > 255 {
        return fail("Max-Forwards of at most 255");
    }
    Ok((i, v as u8))
}

/// An authorization scheme and its raw credentials (Authorization,
/// Proxy-Authorization and the challenge headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthHeader<'a> {
    /// The scheme token (`Digest`, or an unknown one).
    pub scheme: &'a [u8],
    /// Everything after the scheme.
    pub params: &'a [u8],
}

pub(crate) fn auth_header(i: In<'_>) -> PResult<'_, AuthHeader<'_>> {
    let (i, _) = super::grammar::sws(i)?;
    let (i, scheme) = expect("an authentication scheme", token).parse(i)?;
    let (i, _) = super::grammar::sws(i)?;
    Ok((&i[i.len()..], AuthHeader { scheme, params: i }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::grammar::all;

    #[test]
    fn cseq_values() {
        assert_eq!(
            all(cseq, b"0009\r\n  INVITE", "x"),
            Ok(CSeq {
                seq: 9,
                method: Method::Invite
            })
        );
        assert!(all(cseq, b"36893488147419103232 REGISTER", "x").is_err());
        assert!(all(cseq, b"8INVITE", "x").is_err());
    }

    #[test]
    fn media_types() {
        let m = all(
            media_type,
            b"multipart/mixed;boundary=7a9cbec02ceef655",
            "x",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(m.is("Multipart", "MIXED"));
        assert_eq!(
            m.params.get("boundary"),
            Some(Some(&b"7a9cbec02ceef655"[..]))
        );
        let any = all(media_type, b"application/*", "x").unwrap_or_else(|e| panic!("{e}"));
        assert!(any.covers("application", "sdp"));
    }

    #[test]
    fn max_forwards_bounds() {
        assert_eq!(all(max_forwards, b"0068", "x"), Ok(68));
        assert!(all(max_forwards, b"300", "x").is_err());
    }
}
