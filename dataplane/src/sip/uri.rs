//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), and any other scheme as
//! an opaque absolute URI. Nothing is copied: every part borrows the message.

use core::fmt;

use super::chars::{
    self, ALPHA, DIGIT, HEX, HNV_EXTRA, PARAM_EXTRA, PASSWORD_EXTRA, TEL, UNRESERVED, USER_EXTRA,
    is, is_lws,
};
use super::grammar::{Host, In, PResult, escaped_run1, fail, generic_param, host, port, sep};

/// A URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Anything else; the URI is kept opaque.
    Other,
}

/// How a run of parameters is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamStyle {
    /// Header parameters: `SEMI token [EQUAL gen-value]`, white space allowed.
    Header,
    /// URI parameters: `;name[=value]` with no white space, `%HH` escapes allowed.
    Uri,
}

/// A run of `;name[=value]` parameters, kept as the raw text and walked on demand.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a [u8],
    style: ParamStyle,
}

impl<'a> Params<'a> {
    pub(crate) const fn header(raw: &'a [u8]) -> Self {
        Params {
            raw,
            style: ParamStyle::Header,
        }
    }

    pub(crate) const fn uri(raw: &'a [u8]) -> Self {
        Params {
            raw,
            style: ParamStyle::Uri,
        }
    }

    /// The parameters exactly as written, leading `;` included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Every parameter as `(name, value)`, in order. Names are as written;
    /// compare them case-insensitively.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter {
            rest: self.raw,
            style: self.style,
        }
    }

    /// The value of the first parameter named `name` (case-insensitive):
    /// `Some(None)` for a flag such as `lr`, `None` when absent.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Whether a parameter named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Params({:?})", String::from_utf8_lossy(self.raw))
    }
}

/// Iterator over [`Params`].
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    rest: &'a [u8],
    style: ParamStyle,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.style {
            ParamStyle::Header => {
                let (i, _) = sep(b';', ";")(self.rest).ok()?;
                generic_param(i).ok()
            }
            ParamStyle::Uri => uri_param(self.rest).ok(),
        };
        match item {
            Some((rest, param)) => {
                self.rest = rest;
                Some(param)
            }
            None => {
                self.rest = &[];
                None
            }
        }
    }
}

const PARAM_CHARS: u16 = UNRESERVED | PARAM_EXTRA;

/// `";" pname [ "=" pvalue ]`
fn uri_param(i: In<'_>) -> PResult<'_, (In<'_>, Option<In<'_>>)> {
    if i.first() != Some(&b';') {
        return fail(";");
    }
    let (i, name) = escaped_run1(PARAM_CHARS, "a URI parameter name")(&i[1..])?;
    if i.first() == Some(&b'=') {
        let (i, value) = escaped_run1(PARAM_CHARS, "a URI parameter value")(&i[1..])?;
        Ok((i, (name, Some(value))))
    } else {
        Ok((i, (name, None)))
    }
}

/// `*( ";" uri-parameter )`, returning their raw text.
fn uri_params(i: In<'_>) -> PResult<'_, In<'_>> {
    let mut rest = i;
    while rest.first() == Some(&b';') {
        rest = uri_param(rest)?.0;
    }
    Ok((rest, &i[..i.len() - rest.len()]))
}

/// `"?" header *( "&" header )`, returning their raw text without the `?`.
fn uri_headers(i: In<'_>) -> PResult<'_, In<'_>> {
    const HNV: u16 = UNRESERVED | HNV_EXTRA;
    let start = i;
    let mut rest = i;
    loop {
        let (r, _) = escaped_run1(HNV, "a URI header name")(rest)?;
        if r.first() != Some(&b'=') {
            return fail("'=' in a URI header");
        }
        rest = &r[1..];
        if let Ok((r, _)) = escaped_run1(HNV, "")(rest) {
            rest = r;
        }
        if rest.first() == Some(&b'&') {
            rest = &rest[1..];
        } else {
            break;
        }
    }
    Ok((rest, &start[..start.len() - rest.len()]))
}

/// Where a URI ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriEnd {
    /// The input is exactly the URI (a Request-URI, or the text between `<` and `>`).
    Whole,
    /// An addr-spec written without `<>`: the URI ends at `;`, `,` or white space,
    /// which start header parameters, the next value, or trailing space.
    AddrSpec,
}

/// A URI, borrowed from the message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    raw: &'a [u8],
    /// The scheme.
    pub scheme: Scheme,
    /// The user part, still `%`-escaped (SIP/SIPS only).
    pub user: Option<&'a [u8]>,
    /// The password, still escaped (SIP/SIPS only; RFC 3261 discourages its use).
    pub password: Option<&'a [u8]>,
    /// The host (SIP/SIPS only).
    pub host: Option<Host<'a>>,
    host_raw: &'a [u8],
    /// The port, when written.
    pub port: Option<u16>,
    /// `;` parameters (SIP/SIPS/tel).
    pub params: Params<'a>,
    /// The `?` headers part without the `?`, still escaped (SIP/SIPS).
    pub headers: Option<&'a [u8]>,
    /// For tel URIs the number, for other schemes everything after the colon.
    pub opaque: &'a [u8],
}

impl<'a> Uri<'a> {
    /// The URI exactly as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// The host exactly as written (brackets of an IPv6 reference included).
    pub fn host_bytes(&self) -> &'a [u8] {
        self.host_raw
    }

    /// Whether this is a `sip:` or `sips:` URI.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }

    /// Whether the user part, unescaped, equals `user` (RFC 3261 §19.1.4:
    /// escaped and unescaped forms of a character are equivalent).
    pub fn user_is(&self, user: &[u8]) -> bool {
        self.user.is_some_and(|u| unescaped_eq(u, user))
    }

    /// The user part with `%HH` escapes decoded, into `out`.
    pub fn user_unescaped(&self, out: &mut Vec<u8>) {
        if let Some(u) = self.user {
            unescape(u, out);
        }
    }

    /// Parses a URI that must be the whole of `text` (e.g. a Request-URI).
    pub fn parse(text: &'a [u8]) -> Result<Uri<'a>, &'static str> {
        match uri(text, UriEnd::Whole) {
            Ok((&[], u)) => Ok(u),
            Ok(_) => Err("unexpected characters in URI"),
            Err(e) => Err(super::grammar::reason(e)),
        }
    }
}

impl fmt::Debug for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uri({:?})", String::from_utf8_lossy(self.raw))
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.raw))
    }
}

/// Decodes `%HH` escapes into `out`. Decoding is never recursive: `%2541`
/// gives `%41` (RFC 4475 §3.1.1.3).
pub fn unescape(text: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' && i + 2 < text.len() && is(text[i + 1], HEX) && is(text[i + 2], HEX) {
            out.push(chars::hex_value(text[i + 1]) << 4 | chars::hex_value(text[i + 2]));
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
}

/// Compares escaped `text` with plain `plain`, without allocating.
pub fn unescaped_eq(text: &[u8], plain: &[u8]) -> bool {
    let mut i = 0;
    let mut j = 0;
    while i < text.len() {
        let c = if text[i] == b'%'
            && i + 2 < text.len()
            && is(text[i + 1], HEX)
            && is(text[i + 2], HEX)
        {
            i += 3;
            chars::hex_value(text[i - 2]) << 4 | chars::hex_value(text[i - 1])
        } else {
            i += 1;
            text[i - 1]
        };
        if plain.get(j) != Some(&c) {
            return false;
        }
        j += 1;
    }
    j == plain.len()
}

fn scheme_of(name: &[u8]) -> Scheme {
    if name.eq_ignore_ascii_case(b"sip") {
        Scheme::Sip
    } else if name.eq_ignore_ascii_case(b"sips") {
        Scheme::Sips
    } else if name.eq_ignore_ascii_case(b"tel") {
        Scheme::Tel
    } else {
        Scheme::Other
    }
}

/// Parses a URI at the start of `i`.
pub(crate) fn uri(i: In<'_>, end: UriEnd) -> PResult<'_, Uri<'_>> {
    // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    match i.first() {
        Some(b) if is(*b, ALPHA) => {}
        Some(b'<') => return fail("a URI without enclosing <>"),
        _ => return fail("a URI"),
    }
    let n = i
        .iter()
        .position(|b| !(is(*b, ALPHA | DIGIT) || matches!(b, b'+' | b'-' | b'.')))
        .unwrap_or(i.len());
    if i.get(n) != Some(&b':') {
        return fail("a URI scheme followed by ':'");
    }
    let scheme = scheme_of(&i[..n]);
    let body = &i[n + 1..];
    let extent_len = match end {
        UriEnd::Whole => body.len(),
        UriEnd::AddrSpec => body
            .iter()
            .position(|b| matches!(b, b';' | b',' | b'>') || is_lws(*b))
            .unwrap_or(body.len()),
    };
    let extent = &body[..extent_len];
    let mut u = Uri {
        raw: &[],
        scheme,
        user: None,
        password: None,
        host: None,
        host_raw: &[],
        port: None,
        params: Params::uri(&[]),
        headers: None,
        opaque: &[],
    };
    let rest = match scheme {
        Scheme::Sip | Scheme::Sips => sip_body(extent, &mut u)?,
        Scheme::Tel => {
            let (r, number) = escaped_run1(TEL, "a telephone number")(extent)?;
            u.opaque = number;
            let (r, params) = uri_params(r)?;
            u.params = Params::uri(params);
            r
        }
        Scheme::Other => {
            const OPAQUE: u16 = chars::RESERVED | UNRESERVED;
            let (r, text) = escaped_run1(OPAQUE, "an absolute URI")(extent)?;
            u.opaque = text;
            r
        }
    };
    if !rest.is_empty() {
        return fail(match rest[0] {
            b' ' | b'\t' | b'\r' | b'\n' => "no white space inside a URI",
            b'<' | b'>' => "no '<' or '>' inside a URI",
            _ => "a valid URI character",
        });
    }
    let used = n + 1 + extent_len;
    u.raw = &i[..used];
    Ok((&i[used..], u))
}

/// `[ userinfo ] hostport uri-parameters [ headers ]`, which must fill `extent`.
fn sip_body<'a>(
    extent: In<'a>,
    u: &mut Uri<'a>,
) -> Result<In<'a>, nom::Err<super::grammar::Expected>> {
    let mut rest = extent;
    if let Some(at) = memchr::memchr(b'@', extent) {
        let userinfo = &extent[..at];
        let (user, password) = match memchr::memchr(b':', userinfo) {
            Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
            None => (userinfo, None),
        };
        let (r, _) = escaped_run1(UNRESERVED | USER_EXTRA, "a URI user part")(user)?;
        if !r.is_empty() {
            return Err(nom::Err::Error(super::grammar::Expected(
                "a valid URI user part",
            )));
        }
        if let Some(pw) = password
            && !pw.is_empty()
        {
            let (r, _) = escaped_run1(UNRESERVED | PASSWORD_EXTRA, "a URI password")(pw)?;
            if !r.is_empty() {
                return Err(nom::Err::Error(super::grammar::Expected(
                    "a valid URI password",
                )));
            }
        }
        u.user = Some(user);
        u.password = password;
        rest = &extent[at + 1..];
    }
    if rest.first() != Some(&b'[')
        && rest
            .iter()
            .take_while(|b| !matches!(b, b';' | b'?'))
            .filter(|b| **b == b':')
            .count()
            > 1
    {
        // RFC 5118 §4.2
        return Err(nom::Err::Error(super::grammar::Expected(
            "an IPv6 address enclosed in []",
        )));
    }
    let (r, h) = host(rest)?;
    u.host = Some(h);
    u.host_raw = &rest[..rest.len() - r.len()];
    rest = r;
    if rest.first() == Some(&b':') {
        let (r, p) = port(&rest[1..])?;
        u.port = Some(p);
        rest = r;
    }
    let (r, params) = uri_params(rest)?;
    u.params = Params::uri(params);
    rest = r;
    if rest.first() == Some(&b'?') {
        let (r, headers) = uri_headers(&rest[1..])?;
        u.headers = Some(headers);
        rest = r;
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn parse(s: &[u8]) -> Uri<'_> {
        match Uri::parse(s) {
            Ok(u) => u,
            Err(e) => panic!("{e}: {}", String::from_utf8_lossy(s)),
        }
    }

    #[test]
    fn sip_uri_parts() {
        let u = parse(b"sip:alice:pw@192.0.2.1:5070;transport=tcp;lr?Subject=hi&X=");
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.password, Some(&b"pw"[..]));
        assert_eq!(u.host, Some(Host::V4(Ipv4Addr::new(192, 0, 2, 1))));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params.get("TRANSPORT"), Some(Some(&b"tcp"[..])));
        assert!(u.params.contains("lr"));
        assert_eq!(u.headers, Some(&b"Subject=hi&X="[..]));
    }

    #[test]
    fn user_part_with_semicolon_and_escapes() {
        // RFC 4475 §3.1.1.9
        let u = parse(b"sip:user;par=u%40example.net@example.com");
        assert!(u.user_is(b"user;par=u@example.net"));
        assert_eq!(u.host, Some(Host::Name(b"example.com")));
        let u = parse(b"sip:null-%00-null@example.com");
        assert!(u.user_is(b"null-\0-null"));
        assert!(!u.user_is(b"null-"));
    }

    #[test]
    fn unescaping_is_not_recursive() {
        let mut out = Vec::new();
        unescape(b"v%61lue%25%34%31", &mut out);
        assert_eq!(out, b"value%41");
    }

    #[test]
    fn ipv6_and_ports() {
        let u = parse(b"sip:[2001:db8::10]:5070");
        assert_eq!(u.port, Some(5070));
        // RFC 5118 §4.3: the ":5070" is inside the brackets, so there is no port.
        let u = parse(b"sip:[2001:db8::10:5070]");
        assert_eq!(u.port, None);
        // RFC 5118 §4.2: unbracketed IPv6 is not a host.
        assert!(Uri::parse(b"sip:2001:db8::10").is_err());
        assert!(Uri::parse(b"sip:host:99999").is_err());
    }

    #[test]
    fn other_schemes_are_opaque() {
        let u = parse(b"tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.opaque, b"+1-201-555-0123");
        assert!(u.params.contains("phone-context"));
        let u = parse(b"soap.beep://192.0.2.103:3002");
        assert_eq!(u.scheme, Scheme::Other);
        assert!(Uri::parse(b"<sip:a@b>").is_err());
        assert!(Uri::parse(b"sip:a@b c").is_err());
        assert!(Uri::parse(b"sip:a@b;;").is_err());
        assert!(Uri::parse(b"sip:a%zz@b").is_err());
    }

    #[test]
    fn addr_spec_stops_at_header_params() {
        let (rest, u) = uri(b"sip:caller@example.net;tag=1", UriEnd::AddrSpec)
            .map_err(|_| ())
            .unwrap_or_else(|_| panic!());
        assert_eq!(u.as_bytes(), b"sip:caller@example.net");
        assert_eq!(rest, b";tag=1");
    }
}
