//! `name-addr` / `addr-spec` values: From, To, Contact, Route, Record-Route,
//! Path and friends (RFC 3261 §20.10, §25.1).

use core::fmt;

use nom::Parser;

use super::chars::is_lws;
use super::grammar::{In, PResult, cut_fail, fail, header_params, quoted_string, sws, token};
use super::uri::{Params, Uri, UriEnd, uri};

/// An address with optional display name and header parameters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written: a quoted string (quotes kept) or tokens.
    pub display_name: Option<&'a [u8]>,
    /// The URI.
    pub uri: Uri<'a>,
    /// Whether the URI was written inside `<>`.
    pub angle_brackets: bool,
    /// Header parameters after the address (`tag`, `expires`, `q`, ...).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// The `tag` parameter (RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.params.get("tag").flatten()
    }
}

impl fmt::Debug for NameAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameAddr")
            .field(
                "display_name",
                &self.display_name.map(String::from_utf8_lossy),
            )
            .field("uri", &self.uri)
            .field("params", &self.params)
            .finish()
    }
}

/// One value of a Contact header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *` (only in a REGISTER that removes every binding).
    Star,
    /// An address.
    Addr(NameAddr<'a>),
}

/// `display-name = *(token LWS) / quoted-string`, followed by `<`.
/// RFC 4475 §3.1.1.6: the LWS between a token display name and `<` is
/// tolerated when missing.
fn display_name(i: In<'_>) -> PResult<'_, Option<In<'_>>> {
    if i.first() == Some(&b'"') {
        let (r, q) = quoted_string(i)?;
        let (r, _) = sws(r)?;
        if r.first() != Some(&b'<') {
            return cut_fail("'<' after a quoted display name");
        }
        return Ok((r, Some(q)));
    }
    if i.first() == Some(&b'<') {
        return Ok((i, None));
    }
    let mut rest = i;
    let mut end = 0;
    while let Ok((r, _)) = token(rest) {
        end = i.len() - r.len();
        let (r2, _) = sws(r)?;
        rest = r2;
    }
    if end > 0 && rest.first() == Some(&b'<') {
        Ok((rest, Some(&i[..end])))
    } else {
        fail("a display name followed by '<'")
    }
}

/// `name-addr / addr-spec` followed by header parameters.
pub(crate) fn name_addr_or_spec(i: In<'_>) -> PResult<'_, NameAddr<'_>> {
    let (i, _) = sws(i)?;
    match display_name(i) {
        Ok((r, display)) => bracketed(r, display),
        Err(nom::Err::Failure(e)) => Err(nom::Err::Failure(e)),
        Err(_) => {
            let (r, u) = match uri(i, UriEnd::AddrSpec) {
                Ok(ok) => ok,
                // Something before a '<' that is neither tokens nor a quoted
                // string (RFC 4475 §3.1.2.15).
                Err(_) if memchr::memchr(b'<', i).is_some() => {
                    return cut_fail("a display name of tokens or a quoted string");
                }
                Err(e) => return Err(e),
            };
            // RFC 3261 §20: a URI with a comma, question mark or semicolon
            // must be written in name-addr form (RFC 4475 §3.1.2.13).
            if u.headers.is_some() {
                return cut_fail("a URI with headers to be enclosed in <>");
            }
            let (r, params) = header_params(r)?;
            Ok((
                r,
                NameAddr {
                    display_name: None,
                    uri: u,
                    angle_brackets: false,
                    params: Params::header(params),
                },
            ))
        }
    }
}

/// `name-addr` only (Route, Record-Route, Path require the brackets).
pub(crate) fn name_addr(i: In<'_>) -> PResult<'_, NameAddr<'_>> {
    let (i, _) = sws(i)?;
    match display_name(i) {
        Ok((r, display)) => bracketed(r, display),
        Err(nom::Err::Failure(e)) => Err(nom::Err::Failure(e)),
        Err(_) => fail("an address in <>"),
    }
}

/// `LAQUOT addr-spec RAQUOT *( SEMI param )`, at the `<`.
fn bracketed<'a>(i: In<'a>, display_name: Option<In<'a>>) -> PResult<'a, NameAddr<'a>> {
    // Caller guarantees i[0] == '<'.
    let inner_start = &i[1..];
    let Some(close) = memchr::memchr(b'>', inner_start) else {
        return cut_fail("a closing '>'");
    };
    let inner = &inner_start[..close];
    if inner.first().is_some_and(|b| is_lws(*b)) || inner.last().is_some_and(|b| is_lws(*b)) {
        // RFC 4475 §3.1.2.14: no spaces inside the angle brackets.
        return cut_fail("no white space inside <>");
    }
    let u = match uri(inner, UriEnd::Whole) {
        Ok((&[], u)) => u,
        Ok(_) => return cut_fail("a valid URI inside <>"),
        Err(e) => {
            return Err(nom::Err::Failure(super::grammar::Expected(
                super::grammar::reason(e),
            )));
        }
    };
    let (r, params) = header_params(&inner_start[close + 1..])?;
    Ok((
        r,
        NameAddr {
            display_name,
            uri: u,
            angle_brackets: true,
            params: Params::header(params),
        },
    ))
}

/// One Contact value: `*` or an address.
pub(crate) fn contact(i: In<'_>) -> PResult<'_, Contact<'_>> {
    let (r, _) = sws(i)?;
    if r.first() == Some(&b'*') {
        return Ok((&r[1..], Contact::Star));
    }
    name_addr_or_spec.map(Contact::Addr).parse(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::grammar::all;

    fn addr(s: &[u8]) -> Result<NameAddr<'_>, &'static str> {
        all(name_addr_or_spec, s, "trailing text")
    }

    #[test]
    fn forms() {
        let a = addr(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.tag(), Some(&b"98asjd8"[..]));
        assert!(a.angle_brackets);
        let a = addr(b"sip:+19725552222@gw1.example.net;unknownparam")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(a.params.contains("unknownparam"));
        assert!(a.uri.params.is_empty());
        let a = addr(b"<sip:+19725552222@gw1.example.net;unknownparam>")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(a.uri.params.contains("unknownparam"));
        let a = addr(b"caller<sip:caller@example.com>;tag=323").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.display_name, Some(&b"caller"[..]));
    }

    #[test]
    fn rejects_malformed() {
        assert!(addr(b"\"Mr. J. User <sip:j.user@example.com>").is_err());
        assert!(addr(b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43").is_err());
        assert!(addr(b"\"Watson, Thomas\" < sip:t.watson@example.org >").is_err());
        assert!(addr(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
        assert!(addr(b"\"Joe\" <sip:joe@example.org>;;;;").is_err());
        assert!(all(name_addr, b"sip:a@b", "").is_err());
    }
}
