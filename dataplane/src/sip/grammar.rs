//! nom parsers for the pieces of the RFC 3261 grammar (§25.1) that typed
//! accessors are built from. They run over a header value as the indexer
//! found it, folded lines included: a CR or LF inside a value is always part
//! of a fold, so linear white space is simply any run of SP, HTAB, CR, LF.

use core::net::{Ipv4Addr, Ipv6Addr};

use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};

use super::chars::{self, DIGIT, HEX, HOSTNAME, IPV6, TOKEN, is, is_lws};

/// The error of every grammar parser: what was expected where parsing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected(pub(crate) &'static str);

impl<'a> ParseError<&'a [u8]> for Expected {
    fn from_error_kind(_: &'a [u8], _: ErrorKind) -> Self {
        Expected("well-formed syntax")
    }
    fn append(_: &'a [u8], _: ErrorKind, other: Self) -> Self {
        other
    }
}

pub(crate) type In<'a> = &'a [u8];
pub(crate) type PResult<'a, O> = IResult<In<'a>, O, Expected>;

/// Fails with `what`.
pub(crate) fn fail<'a, O>(what: &'static str) -> PResult<'a, O> {
    Err(nom::Err::Error(Expected(what)))
}

/// Fails with `what`, without letting an enclosing alternative try something else.
pub(crate) fn cut_fail<'a, O>(what: &'static str) -> PResult<'a, O> {
    Err(nom::Err::Failure(Expected(what)))
}

/// Runs `p`, reporting any failure as `what`.
pub(crate) fn expect<'a, O, P>(
    what: &'static str,
    mut p: P,
) -> impl Parser<In<'a>, Output = O, Error = Expected>
where
    P: Parser<In<'a>, Output = O, Error = Expected>,
{
    move |i: In<'a>| p.parse(i).map_err(|e| e.map(|_| Expected(what)))
}

/// The reason carried by a parser error.
pub(crate) fn reason(e: nom::Err<Expected>) -> &'static str {
    match e {
        nom::Err::Error(Expected(w)) | nom::Err::Failure(Expected(w)) => w,
        nom::Err::Incomplete(_) => "incomplete value",
    }
}

/// Runs a parser over a whole value: it must consume everything but trailing LWS.
pub(crate) fn all<'a, O>(
    mut p: impl Parser<In<'a>, Output = O, Error = Expected>,
    input: In<'a>,
    trailing: &'static str,
) -> Result<O, &'static str> {
    match p.parse(input) {
        Ok((rest, out)) => {
            if chars::trim_lws(rest).is_empty() {
                Ok(out)
            } else {
                Err(trailing)
            }
        }
        Err(e) => Err(reason(e)),
    }
}

/// `SWS = [LWS]`: any linear white space, folds included.
#[inline]
pub(crate) fn sws(i: In<'_>) -> PResult<'_, ()> {
    let n = i.iter().position(|b| !is_lws(*b)).unwrap_or(i.len());
    Ok((&i[n..], ()))
}

/// `LWS`: at least one white space octet.
pub(crate) fn lws(i: In<'_>) -> PResult<'_, ()> {
    match i.first() {
        Some(b) if is_lws(*b) => sws(i),
        _ => fail("white space"),
    }
}

/// A run of octets of the class `mask`, at least one.
#[inline]
pub(crate) fn take_class1(mask: u16, what: &'static str) -> impl Fn(In<'_>) -> PResult<'_, In<'_>> {
    move |i: In<'_>| {
        let n = i.iter().position(|b| !is(*b, mask)).unwrap_or(i.len());
        if n == 0 {
            fail(what)
        } else {
            Ok((&i[n..], &i[..n]))
        }
    }
}

/// `token`
#[inline]
pub(crate) fn token(i: In<'_>) -> PResult<'_, In<'_>> {
    take_class1(TOKEN, "a token")(i)
}

/// A run of octets of class `mask` or `%HH` escapes, at least one. A `%` not
/// followed by two hex digits ends the run (the caller then fails on it).
pub(crate) fn escaped_run1(
    mask: u16,
    what: &'static str,
) -> impl Fn(In<'_>) -> PResult<'_, In<'_>> {
    move |i: In<'_>| {
        let mut n = 0;
        while n < i.len() {
            let b = i[n];
            if is(b, mask) {
                n += 1;
            } else if b == b'%' && n + 2 < i.len() && is(i[n + 1], HEX) && is(i[n + 2], HEX) {
                n += 3;
            } else {
                break;
            }
        }
        if n == 0 {
            fail(what)
        } else {
            Ok((&i[n..], &i[..n]))
        }
    }
}

/// One literal octet.
#[inline]
pub(crate) fn byte(c: u8, what: &'static str) -> impl Fn(In<'_>) -> PResult<'_, ()> {
    move |i: In<'_>| match i.first() {
        Some(b) if *b == c => Ok((&i[1..], ())),
        _ => fail(what),
    }
}

/// `SWS c SWS`, the shape of SEMI, COMMA, EQUAL, SLASH, COLON (RFC 3261 §25.1).
#[inline]
pub(crate) fn sep(c: u8, what: &'static str) -> impl Fn(In<'_>) -> PResult<'_, ()> {
    move |i: In<'_>| {
        let (i, _) = sws(i)?;
        let (i, _) = byte(c, what)(i)?;
        sws(i)
    }
}

/// `quoted-string`, returned with its quotes. Escapes (`quoted-pair`) are kept.
pub(crate) fn quoted_string(i: In<'_>) -> PResult<'_, In<'_>> {
    if i.first() != Some(&b'"') {
        return fail("a quoted string");
    }
    let mut n = 1;
    while n < i.len() {
        match i[n] {
            b'"' => return Ok((&i[n + 1..], &i[..n + 1])),
            // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
            b'\\' => match i.get(n + 1) {
                Some(c) if *c <= 0x7f && *c != b'\r' && *c != b'\n' => n += 2,
                _ => return cut_fail("a valid escape in a quoted string"),
            },
            // qdtext excludes control octets; CR/LF here are a fold (LWS).
            c if (c < 0x20 && c != b'\t' && c != b'\r' && c != b'\n') || c == 0x7f => {
                return cut_fail("no control characters in a quoted string");
            }
            _ => n += 1,
        }
    }
    cut_fail("a closing quote")
}

/// Characters of a generic parameter value: `token / host / quoted-string`
/// (a host adds `:` `[` `]` for IPv6 references; RFC 5118 §4.5 asks parsers to
/// accept a bracketed `received` too).
const GEN_VALUE: u16 = TOKEN | chars::PARAM_EXTRA;

/// `generic-param = token [ EQUAL gen-value ]`
pub(crate) fn generic_param(i: In<'_>) -> PResult<'_, (In<'_>, Option<In<'_>>)> {
    let (i, name) = expect("a parameter name", token).parse(i)?;
    let (after_eq, eq) = nom::combinator::opt(sep(b'=', "=")).parse(i)?;
    if eq.is_none() {
        return Ok((i, (name, None)));
    }
    let (rest, value) = if after_eq.first() == Some(&b'"') {
        quoted_string(after_eq)?
    } else {
        expect(
            "a parameter value",
            take_class1(GEN_VALUE, "a parameter value"),
        )
        .parse(after_eq)?
    };
    Ok((rest, (name, Some(value))))
}

/// `*( SEMI generic-param )`, returning the raw text of all of them. A `;`
/// with no parameter after it is an error (RFC 4475 §3.1.2.1).
pub(crate) fn header_params(i: In<'_>) -> PResult<'_, In<'_>> {
    let start = i;
    let mut rest = i;
    loop {
        let Ok((after_semi, _)) = sep(b';', ";")(rest) else {
            break;
        };
        match generic_param(after_semi) {
            Ok((r, _)) => rest = r,
            Err(_) => return cut_fail("a parameter after ';'"),
        }
    }
    let used = start.len() - rest.len();
    Ok((rest, &start[..used]))
}

/// A host: name, IPv4 address, or bracketed IPv6 reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A domain name, as written.
    Name(&'a [u8]),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address (written in brackets).
    V6(Ipv6Addr),
}

impl Host<'_> {
    /// The IP address, when the host is a literal one.
    pub fn ip(&self) -> Option<core::net::IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::V4(a) => Some((*a).into()),
            Host::V6(a) => Some((*a).into()),
        }
    }
}

impl core::fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(&String::from_utf8_lossy(n)),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Parses the text of an IPv6 address. RFC 5118 §4.10: RFC 3261's ABNF wrongly
/// admits a third colon before an embedded IPv4 address (`2001:db8:::192.0.2.1`);
/// such a reference is read as if the extra colon were absent.
pub(crate) fn parse_ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    let s = core::str::from_utf8(text).ok()?;
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let at = s.find(":::")?;
    let mut fixed = [0u8; 64];
    let fixed_len = text.len() - 1;
    if fixed_len > fixed.len() {
        return None;
    }
    fixed[..at].copy_from_slice(&text[..at]);
    fixed[at..fixed_len].copy_from_slice(&text[at + 1..]);
    core::str::from_utf8(&fixed[..fixed_len]).ok()?.parse().ok()
}

/// Dotted-quad digits as an IPv4 address, by the rules of `Ipv4Addr`'s
/// `FromStr` (four decimal octets up to 255, no leading zeros), without
/// going through `str`: every Via and URI host of a message is one.
pub(crate) fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split(|b| *b == b'.');
    for o in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut v = 0u32;
        for d in part {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(d - b'0');
        }
        *o = u8::try_from(v).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// `host = hostname / IPv4address / IPv6reference`
pub(crate) fn host(i: In<'_>) -> PResult<'_, Host<'_>> {
    if i.first() == Some(&b'[') {
        let n = i[1..]
            .iter()
            .position(|b| !is(*b, IPV6))
            .map_or(i.len(), |p| p + 1);
        if i.get(n) != Some(&b']') {
            return fail("a closing ']' of an IPv6 reference");
        }
        return match parse_ipv6(&i[1..n]) {
            Some(a) => Ok((&i[n + 1..], Host::V6(a))),
            None => fail("a valid IPv6 address"),
        };
    }
    let (rest, name) = take_class1(HOSTNAME, "a host")(i)?;
    if name.iter().all(|b| is(*b, DIGIT) || *b == b'.') {
        return match parse_ipv4(name) {
            Some(a) => Ok((rest, Host::V4(a))),
            None => fail("a valid IPv4 address"),
        };
    }
    // Labels may not be empty, save for one trailing dot (a fully qualified name).
    let labels = name.strip_suffix(b".").unwrap_or(name);
    if labels.split(|b| *b == b'.').any(|l| l.is_empty()) {
        return fail("a host name without empty labels");
    }
    Ok((rest, Host::Name(name)))
}

/// `port = 1*DIGIT`, at most 65535.
pub(crate) fn port(i: In<'_>) -> PResult<'_, u16> {
    let (rest, digits) = take_class1(DIGIT, "a port number")(i)?;
    match parse_u32(digits) {
        Some(p) if p <= u16::MAX as u32 => Ok((rest, p as u16)),
        _ => fail("a port number up to 65535"),
    }
}

/// Decimal digits to u32, None on overflow or non-digits.
pub(crate) fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    let mut v: u32 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((d - b'0') as u32)?;
    }
    Some(v)
}

/// `1*DIGIT` read as a u32 (RFC 3261 bounds CSeq, Expires and friends at 2^32-1).
pub(crate) fn number_u32(what: &'static str) -> impl Fn(In<'_>) -> PResult<'_, u32> {
    move |i: In<'_>| {
        let (rest, digits) = take_class1(DIGIT, what)(i)?;
        match parse_u32(digits) {
            Some(v) => Ok((rest, v)),
            None => fail(what),
        }
    }
}

/// Removes the quotes and quoted-pair escapes of a quoted string into `out`;
/// unquoted input is copied as is.
pub fn unquote(value: &[u8], out: &mut Vec<u8>) {
    let inner = match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => {
            out.extend_from_slice(value);
            return;
        }
    };
    let mut escaped = false;
    for &b in inner {
        if escaped {
            out.push(b);
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_reject_stray_semicolons() {
        assert!(header_params(b";;").is_err());
        assert_eq!(
            header_params(b" ; tag = 1 ;x").map(|r| r.1),
            Ok(&b" ; tag = 1 ;x"[..])
        );
        assert_eq!(
            header_params(b";a=\"q;\\\"\" z").map(|r| r.0),
            Ok(&b" z"[..])
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host(b"192.0.2.1:5060").map(|r| r.1),
            Ok(Host::V4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert!(host(b"192.0.2.300").is_err());
        assert!(host(b"a..b").is_err());
        assert_eq!(
            host(b"example.com.").map(|r| r.1),
            Ok(Host::Name(b"example.com."))
        );
        let v6: Ipv6Addr = "2001:db8::192.0.2.1"
            .parse()
            .unwrap_or(Ipv6Addr::UNSPECIFIED);
        assert_eq!(
            host(b"[2001:db8:::192.0.2.1]").map(|r| r.1),
            Ok(Host::V6(v6))
        );
        assert!(host(b"[2001:db8::10").is_err());
    }

    #[test]
    fn ipv4_addresses_read_as_the_standard_library_reads_them() {
        let mut cases: Vec<String> = [
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.04",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "1000.1.1.1",
            "127.0.0.1",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every octet form at every position.
        for v in 0..1000u32 {
            for pad in [format!("{v}"), format!("0{v}"), format!("00{v}")] {
                cases.push(format!("{pad}.1.2.3"));
                cases.push(format!("1.2.3.{pad}"));
            }
        }
        for c in cases {
            assert_eq!(
                parse_ipv4(c.as_bytes()),
                c.parse::<Ipv4Addr>().ok(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(
            quoted_string(b"\"a\\\"b\" rest").map(|r| r.1),
            Ok(&b"\"a\\\"b\""[..])
        );
        assert!(quoted_string(b"\"unterminated").is_err());
        let mut out = Vec::new();
        unquote(b"\"J Rosenberg \\\\\\\"\"", &mut out);
        assert_eq!(out, b"J Rosenberg \\\"");
    }

    #[test]
    fn escapes_need_two_hex_digits() {
        let run = escaped_run1(chars::UNRESERVED, "x");
        assert_eq!(run(b"ab%41c").map(|r| r.1), Ok(&b"ab%41c"[..]));
        assert_eq!(run(b"ab%4xc").map(|r| r.1), Ok(&b"ab"[..]));
    }
}
