//! The message view: one pass over a datagram or stream frame records where
//! the start line, every header field and the body are. Nothing is copied and,
//! up to [`INLINE_HEADERS`] header fields, nothing is allocated. Header values
//! are parsed into typed values only when an accessor asks for them.

use core::cell::Cell;
use core::fmt;

use nom::Parser;
use smallvec::SmallVec;

use super::addr::{Contact, NameAddr, contact, name_addr, name_addr_or_spec};
use super::chars::{self, DIGIT, TOKEN, WSP, is};
use super::error::{Limit, Part, SipError};
use super::grammar::{Expected, In, PResult, reason, sws};
use super::header::HeaderName;
use super::limits::Limits;
use super::uri::Uri;
use super::values::{self, AuthHeader, CSeq, MediaType, Method};
use super::via::{Via, via};

/// Header fields indexed without a heap allocation.
pub const INLINE_HEADERS: usize = 64;

/// How the message was delimited by its transport (RFC 3261 §18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A UDP datagram: the body is Content-Length octets, or the rest of the
    /// datagram when Content-Length is absent; octets past it are discarded.
    Datagram,
    /// A stream (TCP, TLS): Content-Length is mandatory and a message whose
    /// body has not fully arrived is [`SipError::Incomplete`].
    Stream,
    /// A message stored as text (a file, a log excerpt): lines may end in a bare
    /// LF, the header section may end at the end of the text, and the body is
    /// the rest of the text whatever Content-Length says.
    Text,
}

/// Offsets into the message buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    #[inline]
    fn new(start: usize, end: usize) -> Span {
        // Messages are bounded by Limits::max_message_size, far below u32::MAX.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    #[inline]
    pub(crate) fn range(self) -> core::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One header field line (folded continuation lines included).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: HeaderName,
    /// The name as written; starts at the beginning of the line.
    pub(crate) name_span: Span,
    /// The value, leading and trailing white space excluded.
    pub(crate) value: Span,
    /// End of the whole field, line terminator included.
    pub(crate) line_end: u32,
}

#[derive(Debug, Clone, Copy)]
enum StartLine {
    Request { method: Span, uri: Span },
    Response { code: u16, reason: Span },
}

/// A SIP request or response, indexed in place.
#[derive(Clone)]
pub struct SipMessage<'a> {
    buf: &'a [u8],
    start: StartLine,
    /// The whole start line, terminator excluded.
    start_line: Span,
    /// Offset of the first header line.
    headers_start: u32,
    fields: SmallVec<[Field; INLINE_HEADERS]>,
    body: Span,
    max_list_values: u32,
    /// Accessors whose values the proxy and B2BUA read several times per
    /// message, parsed once on first use.
    memo: Memo<'a>,
}

/// The values [`SipMessage`] keeps once parsed.
#[derive(Clone, Default)]
struct Memo<'a> {
    top_via: Cell<Option<Result<Via<'a>, SipError>>>,
    request_uri: Cell<Option<Result<Uri<'a>, SipError>>>,
    from: Cell<Option<Result<NameAddr<'a>, SipError>>>,
    to: Cell<Option<Result<NameAddr<'a>, SipError>>>,
    cseq: Cell<Option<Result<CSeq<'a>, SipError>>>,
}

/// The value in `cell`, computed by `f` the first time.
fn memo<T: Copy>(cell: &Cell<Option<T>>, f: impl FnOnce() -> T) -> T {
    match cell.get() {
        Some(v) => v,
        None => {
            let v = f();
            cell.set(Some(v));
            v
        }
    }
}

/// A header field as written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HeaderField<'a> {
    /// The resolved name.
    pub name: HeaderName,
    /// The name exactly as written (compact form, odd case and all).
    pub raw_name: &'a [u8],
    /// The value exactly as written, folds included, outer white space excluded.
    pub value: &'a [u8],
}

impl fmt::Debug for HeaderField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            String::from_utf8_lossy(self.raw_name),
            String::from_utf8_lossy(self.value)
        )
    }
}

/// `callid = word [ "@" word ]` (RFC 3261 §25.1).
pub(crate) fn is_call_id(v: &[u8]) -> bool {
    let mut ats = 0;
    let mut run = 0;
    for &b in v {
        if b == b'@' {
            if run == 0 {
                return false;
            }
            ats += 1;
            run = 0;
        } else if is(b, chars::WORD) {
            run += 1;
        } else {
            return false;
        }
    }
    run > 0 && ats <= 1
}

/// The Call-ID of a message, found by a scan of its header lines without
/// parsing them (the long or compact name in any case); for a message this
/// element built or already checked. `None` if it has none before the body.
pub fn scan_call_id(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = memchr::memchr(b'\n', bytes)? + 1;
    loop {
        let rest = &bytes[at..];
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        if line.is_empty() {
            return None;
        }
        if let Some(colon) = memchr::memchr(b':', line) {
            let name = line[..colon].trim_ascii_end();
            if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
                return Some(line[colon + 1..].trim_ascii());
            }
        }
        if end == rest.len() {
            return None;
        }
        at += end + 1;
    }
}

/// Finds the end of the line starting at `from`: (end of content, start of next line).
#[inline]
fn line_at(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = memchr::memchr(b'\n', &buf[from..])? + from;
    let end = if nl > from && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

fn parse_start_line(line: &[u8], base: usize) -> Result<StartLine, SipError> {
    const BAD: fn(&'static str) -> SipError = |r| SipError::malformed(Part::StartLine, r);
    let is_version = |v: &[u8]| v.len() >= 4 && v[..4].eq_ignore_ascii_case(b"SIP/");
    let check_version = |v: &[u8]| -> Result<(), SipError> {
        // SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT; only 2.0 is spoken.
        let num = &v[4..];
        let Some(dot) = num.iter().position(|b| *b == b'.') else {
            return Err(BAD("malformed SIP-Version"));
        };
        let (major, minor) = (&num[..dot], &num[dot + 1..]);
        if major.is_empty() || minor.is_empty() || !major.iter().chain(minor).all(|b| is(*b, DIGIT))
        {
            return Err(BAD("malformed SIP-Version"));
        }
        if major != b"2" || minor != b"0" {
            return Err(SipError::VersionNotSupported);
        }
        Ok(())
    };
    if is_version(line) {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = memchr::memchr(b' ', line).ok_or(BAD("no status code"))?;
        check_version(&line[..sp])?;
        let rest = &line[sp + 1..];
        if rest.len() < 3
            || !rest[..3].iter().all(|b| is(*b, DIGIT))
            || rest.get(3).is_some_and(|b| *b != b' ')
        {
            return Err(BAD("status code is not three digits"));
        }
        let code = u16::from(rest[0] - b'0') * 100
            + u16::from(rest[1] - b'0') * 10
            + u16::from(rest[2] - b'0');
        if !(100..=699).contains(&code) {
            return Err(BAD("status code outside 100-699"));
        }
        let reason_start = (sp + 1 + 4).min(line.len());
        let reason = &line[reason_start..];
        if reason
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            return Err(BAD("control character in the reason phrase"));
        }
        return Ok(StartLine::Response {
            code,
            reason: Span::new(base + reason_start, base + line.len()),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version; exactly one SP
    // between elements and none at the end (RFC 4475 §3.1.2.9, §3.1.2.10).
    let m_end = line
        .iter()
        .position(|b| !is(*b, TOKEN))
        .unwrap_or(line.len());
    if m_end == 0 {
        return Err(BAD("no method"));
    }
    if line.get(m_end) != Some(&b' ') {
        return Err(BAD("method is not a token followed by one space"));
    }
    let uri_start = m_end + 1;
    let uri_len = line[uri_start..]
        .iter()
        .position(|b| *b == b' ')
        .ok_or(BAD("no SIP-Version"))?;
    if uri_len == 0 {
        return Err(BAD("more than one space between method and Request-URI"));
    }
    let version = &line[uri_start + uri_len + 1..];
    if !is_version(version) {
        return Err(BAD(if version.first() == Some(&b' ') {
            "more than one space before SIP-Version"
        } else {
            "Request-URI contains white space or SIP-Version is missing"
        }));
    }
    if version.iter().any(|b| *b == b' ' || *b == b'\t') {
        return Err(BAD("white space after SIP-Version"));
    }
    check_version(version)?;
    Ok(StartLine::Request {
        method: Span::new(base, base + m_end),
        uri: Span::new(base + uri_start, base + uri_start + uri_len),
    })
}

impl<'a> SipMessage<'a> {
    /// Indexes one message at the start of `buf`.
    ///
    /// With [`Framing::Datagram`] octets after the body are ignored
    /// (RFC 3261 §18.3); [`SipMessage::len`] tells how many were used.
    pub fn parse(
        buf: &'a [u8],
        framing: Framing,
        limits: &Limits,
    ) -> Result<SipMessage<'a>, SipError> {
        // RFC 3261 §7.5: CRLFs before the start line are ignored (keep-alives).
        let mut pos = buf
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .unwrap_or(buf.len());
        if pos == buf.len() {
            return Err(if framing == Framing::Stream {
                SipError::Incomplete
            } else {
                SipError::malformed(Part::StartLine, "empty message")
            });
        }
        let limit_line = |len: usize| -> Result<(), SipError> {
            if len > limits.max_line_length {
                Err(SipError::TooLarge {
                    limit: Limit::LineLength,
                    max: limits.max_line_length,
                })
            } else {
                Ok(())
            }
        };
        let unterminated = |pos: usize| -> SipError {
            if buf.len() - pos > limits.max_line_length {
                SipError::TooLarge {
                    limit: Limit::LineLength,
                    max: limits.max_line_length,
                }
            } else if framing == Framing::Stream {
                SipError::Incomplete
            } else {
                SipError::malformed(
                    Part::Framing,
                    "header section is not terminated by an empty line",
                )
            }
        };

        let (sl_end, next) = match line_at(buf, pos) {
            Some(l) => l,
            None if framing == Framing::Text => (buf.len(), buf.len()),
            None => return Err(unterminated(pos)),
        };
        limit_line(sl_end - pos)?;
        let start = parse_start_line(&buf[pos..sl_end], pos)?;
        let start_line = Span::new(pos, sl_end);
        pos = next;
        let headers_start = pos as u32;

        let mut fields: SmallVec<[Field; INLINE_HEADERS]> = SmallVec::new();
        let body_start;
        loop {
            let (end, next) = match line_at(buf, pos) {
                Some(l) => l,
                None if framing == Framing::Text => {
                    if pos < buf.len() {
                        (buf.len(), buf.len())
                    } else {
                        (pos, pos)
                    }
                }
                // A datagram that ends right after a complete header line is
                // read as having no body: the empty line is all that is
                // missing, and the header lines themselves are intact.
                None if framing == Framing::Datagram && pos == buf.len() && !fields.is_empty() => {
                    (pos, pos)
                }
                None => return Err(unterminated(pos)),
            };
            limit_line(end - pos)?;
            if end == pos {
                body_start = next;
                break;
            }
            let line = &buf[pos..end];
            if is(line[0], WSP) {
                // A fold: the previous field's value continues on this line.
                let Some(last) = fields.last_mut() else {
                    return Err(SipError::malformed(
                        Part::Framing,
                        "continuation line before any header",
                    ));
                };
                let trimmed = line.iter().rposition(|b| !is(*b, WSP)).map(|p| pos + p + 1);
                if let Some(value_end) = trimmed {
                    if last.value.start == last.value.end {
                        let first = line.iter().position(|b| !is(*b, WSP)).unwrap_or(0);
                        last.value.start = (pos + first) as u32;
                    }
                    last.value.end = value_end as u32;
                }
                last.line_end = next as u32;
            } else {
                let name_len = line
                    .iter()
                    .position(|b| !is(*b, TOKEN))
                    .unwrap_or(line.len());
                if name_len == 0 {
                    return Err(SipError::malformed(
                        Part::Framing,
                        "header line does not start with a field name",
                    ));
                }
                let mut colon = name_len;
                while colon < line.len() && is(line[colon], WSP) {
                    colon += 1;
                }
                if line.get(colon) != Some(&b':') {
                    return Err(SipError::malformed(
                        Part::Framing,
                        "header field name is not followed by ':'",
                    ));
                }
                let mut vs = colon + 1;
                while vs < line.len() && is(line[vs], WSP) {
                    vs += 1;
                }
                let mut ve = line.len();
                while ve > vs && is(line[ve - 1], WSP) {
                    ve -= 1;
                }
                if fields.len() == limits.max_headers {
                    return Err(SipError::TooLarge {
                        limit: Limit::HeaderCount,
                        max: limits.max_headers,
                    });
                }
                fields.push(Field {
                    name: HeaderName::from_bytes(&line[..name_len]),
                    name_span: Span::new(pos, pos + name_len),
                    value: Span::new(pos + vs, pos + ve),
                    line_end: next as u32,
                });
            }
            if next >= buf.len() && framing == Framing::Text {
                body_start = buf.len();
                break;
            }
            pos = next;
        }

        // Content-Length (RFC 3261 §18.3, §20.14); values must agree.
        let mut content_length: Option<usize> = None;
        for f in fields
            .iter()
            .filter(|f| f.name == HeaderName::ContentLength)
        {
            let v = chars::trim_lws(&buf[f.value.range()]);
            if v.is_empty() || !v.iter().all(|b| is(*b, DIGIT)) {
                if framing == Framing::Text {
                    continue;
                }
                return Err(SipError::malformed(
                    Part::Header(HeaderName::ContentLength),
                    "Content-Length is not a non-negative integer",
                ));
            }
            let n = super::grammar::parse_u32(v).map_or(usize::MAX, |n| n as usize);
            match content_length {
                Some(prev) if prev != n && framing != Framing::Text => {
                    return Err(SipError::malformed(
                        Part::Framing,
                        "conflicting Content-Length values",
                    ));
                }
                _ => content_length = Some(n),
            }
        }
        let available = buf.len() - body_start;
        let body_len = match framing {
            Framing::Text => available,
            Framing::Datagram => match content_length {
                Some(n) if n > available => {
                    return Err(SipError::malformed(
                        Part::Framing,
                        "Content-Length exceeds the octets in the datagram",
                    ));
                }
                Some(n) => n,
                None => available,
            },
            Framing::Stream => match content_length {
                None => {
                    return Err(SipError::malformed(
                        Part::Header(HeaderName::ContentLength),
                        "Content-Length is required on stream transports",
                    ));
                }
                Some(n) if n > limits.max_message_size => {
                    return Err(SipError::TooLarge {
                        limit: Limit::MessageSize,
                        max: limits.max_message_size,
                    });
                }
                Some(n) if n > available => return Err(SipError::Incomplete),
                Some(n) => n,
            },
        };
        if body_start + body_len > limits.max_message_size {
            return Err(SipError::TooLarge {
                limit: Limit::MessageSize,
                max: limits.max_message_size,
            });
        }
        Ok(SipMessage {
            buf,
            start,
            start_line,
            headers_start,
            fields,
            body: Span::new(body_start, body_start + body_len),
            max_list_values: limits.max_list_values.min(u32::MAX as usize) as u32,
            memo: Memo::default(),
        })
    }

    /// The octets of this message, from the start of the buffer to the end of
    /// the body (octets past the body in a datagram are not included).
    pub fn as_bytes(&self) -> &'a [u8] {
        &self.buf[..self.body.end as usize]
    }

    /// How many octets of the buffer the message used (for stream framing).
    pub fn len(&self) -> usize {
        self.body.end as usize
    }

    /// Whether the message used no octets (never true for a parsed message).
    pub fn is_empty(&self) -> bool {
        self.body.end == 0
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &'a [u8] {
        self.buf
    }

    /// The start line, terminator excluded.
    pub fn start_line(&self) -> &'a [u8] {
        &self.buf[self.start_line.range()]
    }

    pub(crate) fn headers_start(&self) -> usize {
        self.headers_start as usize
    }

    pub(crate) fn body_span(&self) -> Span {
        self.body
    }

    pub(crate) fn fields_raw(&self) -> &[Field] {
        &self.fields
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request.
    pub fn method(&self) -> Option<Method<'a>> {
        match self.start {
            StartLine::Request { method, .. } => {
                Some(Method::from_bytes(&self.buf[method.range()]))
            }
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI as written.
    pub fn request_uri_bytes(&self) -> Option<&'a [u8]> {
        match self.start {
            StartLine::Request { uri, .. } => Some(&self.buf[uri.range()]),
            StartLine::Response { .. } => None,
        }
    }

    pub(crate) fn request_uri_span(&self) -> Option<Span> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The parsed Request-URI of a request.
    pub fn request_uri(&self) -> Result<Uri<'a>, SipError> {
        memo(&self.memo.request_uri, || {
            let raw = self
                .request_uri_bytes()
                .ok_or(SipError::malformed(Part::StartLine, "not a request"))?;
            Uri::parse(raw).map_err(|r| SipError::malformed(Part::RequestUri, r))
        })
    }

    /// The status code of a response.
    pub fn status_code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response.
    pub fn reason_phrase(&self) -> Option<&'a [u8]> {
        match self.start {
            StartLine::Response { reason, .. } => Some(&self.buf[reason.range()]),
            StartLine::Request { .. } => None,
        }
    }

    /// The body (exactly Content-Length octets).
    pub fn body(&self) -> &'a [u8] {
        &self.buf[self.body.range()]
    }

    /// Every header field in order.
    pub fn headers(&self) -> impl Iterator<Item = HeaderField<'a>> + '_ {
        self.fields.iter().map(|f| HeaderField {
            name: f.name,
            raw_name: &self.buf[f.name_span.range()],
            value: &self.buf[f.value.range()],
        })
    }

    /// Number of header fields.
    pub fn header_count(&self) -> usize {
        self.fields.len()
    }

    /// The value of the first field named `name`.
    pub fn header(&self, name: HeaderName) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &self.buf[f.value.range()])
    }

    /// The values of every field named `name`, one per line.
    pub fn header_lines(&self, name: HeaderName) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.fields
            .iter()
            .filter(move |f| f.name == name)
            .map(|f| &self.buf[f.value.range()])
    }

    /// The value of the first extension header with this exact name (case-insensitive).
    pub fn extension_header(&self, name: &str) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .find(|f| {
                f.name == HeaderName::Other
                    && self.buf[f.name_span.range()].eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|f| &self.buf[f.value.range()])
    }

    /// How many lines carry `name`.
    pub fn count(&self, name: HeaderName) -> usize {
        self.fields.iter().filter(|f| f.name == name).count()
    }

    /// Parses the single value of header `name` with `p`.
    fn single<T>(
        &self,
        name: HeaderName,
        p: impl Parser<In<'a>, Output = T, Error = Expected>,
    ) -> Result<T, SipError> {
        let v = self
            .header(name)
            .ok_or(SipError::malformed(Part::Header(name), "missing"))?;
        super::grammar::all(p, v, "unexpected text after the value")
            .map_err(|r| SipError::malformed(Part::Header(name), r))
    }

    fn optional<T>(
        &self,
        name: HeaderName,
        p: impl Parser<In<'a>, Output = T, Error = Expected>,
    ) -> Result<Option<T>, SipError> {
        match self.header(name) {
            None => Ok(None),
            Some(_) => self.single(name, p).map(Some),
        }
    }

    /// Every value of list header `name` across all its lines, parsed with `p`.
    pub(crate) fn list<T>(
        &self,
        name: HeaderName,
        p: fn(In<'a>) -> PResult<'a, T>,
    ) -> List<'_, 'a, T> {
        List {
            msg: self,
            name,
            field: 0,
            rest: None,
            parse: p,
            count: 0,
            done: false,
        }
    }

    /// Call-ID (RFC 3261 §20.8): `word [ "@" word ]`.
    pub fn call_id(&self) -> Result<&'a [u8], SipError> {
        let v = self.header(HeaderName::CallId).ok_or(SipError::malformed(
            Part::Header(HeaderName::CallId),
            "missing",
        ))?;
        if is_call_id(v) {
            Ok(v)
        } else {
            Err(SipError::malformed(
                Part::Header(HeaderName::CallId),
                "not word[@word]",
            ))
        }
    }

    /// CSeq.
    pub fn cseq(&self) -> Result<CSeq<'a>, SipError> {
        memo(&self.memo.cseq, || {
            self.single(HeaderName::CSeq, values::cseq)
        })
    }

    /// From.
    pub fn from(&self) -> Result<NameAddr<'a>, SipError> {
        memo(&self.memo.from, || {
            self.single(HeaderName::From, name_addr_or_spec)
        })
    }

    /// To.
    pub fn to(&self) -> Result<NameAddr<'a>, SipError> {
        memo(&self.memo.to, || {
            self.single(HeaderName::To, name_addr_or_spec)
        })
    }

    /// Max-Forwards, if present.
    pub fn max_forwards(&self) -> Result<Option<u8>, SipError> {
        self.optional(HeaderName::MaxForwards, values::max_forwards)
    }

    /// Expires, if present.
    pub fn expires(&self) -> Result<Option<u32>, SipError> {
        self.optional(HeaderName::Expires, values::delta_seconds)
    }

    /// Content-Type, if present.
    pub fn content_type(&self) -> Result<Option<MediaType<'a>>, SipError> {
        self.optional(HeaderName::ContentType, values::media_type)
    }

    /// Authorization-style header `name` (Authorization, Proxy-Authorization, challenges).
    pub fn auth(&self, name: HeaderName) -> Result<Option<AuthHeader<'a>>, SipError> {
        self.optional(name, values::auth_header)
    }

    /// Every Via value, top first.
    pub fn vias(&self) -> List<'_, 'a, Via<'a>> {
        self.list(HeaderName::Via, via)
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Result<Via<'a>, SipError> {
        memo(&self.memo.top_via, || {
            self.vias().next().unwrap_or(Err(SipError::malformed(
                Part::Header(HeaderName::Via),
                "missing",
            )))
        })
    }

    /// Every Contact value.
    pub fn contacts(&self) -> List<'_, 'a, Contact<'a>> {
        self.list(HeaderName::Contact, contact)
    }

    /// Every Route value, top first.
    pub fn routes(&self) -> List<'_, 'a, NameAddr<'a>> {
        self.list(HeaderName::Route, name_addr)
    }

    /// Every Record-Route value, top first.
    pub fn record_routes(&self) -> List<'_, 'a, NameAddr<'a>> {
        self.list(HeaderName::RecordRoute, name_addr)
    }

    /// Every Path value (RFC 3327).
    pub fn paths(&self) -> List<'_, 'a, NameAddr<'a>> {
        self.list(HeaderName::Path, name_addr)
    }

    /// Every token of a token-list header (Require, Proxy-Require, Supported,
    /// Unsupported, Allow, ...).
    pub fn tokens(&self, name: HeaderName) -> List<'_, 'a, &'a [u8]> {
        self.list(name, values::list_token)
    }

    /// Every media range of Accept.
    pub fn accept(&self) -> List<'_, 'a, MediaType<'a>> {
        self.list(HeaderName::Accept, values::media_type)
    }
}

impl fmt::Debug for SipMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipMessage")
            .field("start_line", &String::from_utf8_lossy(self.start_line()))
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("body_len", &self.body().len())
            .finish()
    }
}

/// Iterator over the comma-separated values of one header name, across all
/// lines that carry it, parsed lazily. After the first error it yields that
/// error and stops.
pub struct List<'m, 'a, T> {
    msg: &'m SipMessage<'a>,
    name: HeaderName,
    field: usize,
    rest: Option<&'a [u8]>,
    parse: fn(In<'a>) -> PResult<'a, T>,
    count: usize,
    done: bool,
}

impl<T> fmt::Debug for List<'_, '_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "List({})", self.name.as_str())
    }
}

impl<'a, T> Iterator for List<'_, 'a, T> {
    type Item = Result<T, SipError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let name = self.name;
        let err = |r: &'static str| SipError::malformed(Part::Header(name), r);
        let input = match self.rest.take() {
            Some(r) => r,
            None => loop {
                let f = self.msg.fields[self.field..]
                    .iter()
                    .position(|f| f.name == name)?;
                self.field += f + 1;
                let v = &self.msg.buf[self.msg.fields[self.field - 1].value.range()];
                if !v.is_empty() {
                    break v;
                }
                // RFC 3261 §25: an empty line of a header whose list is
                // optional (`Supported:`) holds no values; of any other, it
                // is malformed.
                if !name.may_be_empty() {
                    self.done = true;
                    return Some(Err(err("empty value")));
                }
            },
        };
        self.count += 1;
        let max = self.msg.max_list_values as usize;
        if self.count > max {
            self.done = true;
            return Some(Err(SipError::TooLarge {
                limit: Limit::ListLength,
                max,
            }));
        }
        match (self.parse)(input) {
            Ok((rest, v)) => {
                // sws never fails.
                let rest = sws(rest).map_or(rest, |(r, _)| r);
                match rest.first() {
                    None => {}
                    Some(b',') => {
                        let (after, _) = sws(&rest[1..]).unwrap_or((&rest[1..], ()));
                        if after.is_empty() {
                            self.done = true;
                            return Some(Err(err("empty value after ','")));
                        }
                        self.rest = Some(after);
                    }
                    Some(_) => {
                        self.done = true;
                        return Some(Err(err("unexpected text after a value")));
                    }
                }
                Some(Ok(v))
            }
            Err(e) => {
                self.done = true;
                Some(Err(err(reason(e))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scanned_call_id_is_the_one_the_parser_reads() {
        let long = b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\ncall-ID :  abc@h \r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let compact = b"BYE sip:b@h SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK2\r\nf: <sip:a@h>;tag=1\r\nt: <sip:b@h>;tag=2\r\nI: x-1\r\nCSeq: 2 BYE\r\nl: 0\r\n\r\n";
        for bytes in [&long[..], &compact[..]] {
            let parsed = SipMessage::parse(bytes, Framing::Datagram, &Limits::default())
                .expect("well-formed");
            assert_eq!(scan_call_id(bytes), parsed.call_id().ok(), "{bytes:?}");
        }
        assert_eq!(scan_call_id(long), Some(&b"abc@h"[..]));
        assert_eq!(scan_call_id(compact), Some(&b"x-1"[..]));
        // Only header lines count: not a Call-ID in the body, not another
        // header whose name ends in "i", not a message without one.
        let body =
            b"MESSAGE sip:b@h SIP/2.0\r\nX-i: 1\r\nContent-Length: 12\r\n\r\nCall-ID: no\r\n";
        assert_eq!(scan_call_id(body), None);
        assert_eq!(
            scan_call_id(b"SIP/2.0 200 OK\r\nCall-ID: cut"),
            Some(&b"cut"[..])
        );
        assert_eq!(scan_call_id(b"no line end"), None);
    }

    #[test]
    fn remembered_values_are_the_ones_parsed_and_stay_so() {
        let raw = b"INVITE sip:bob@example.com;transport=udp SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5080;branch=z9hG4bK1;rport\r\nVia: SIP/2.0/TCP h.example\r\n\
From: \"A\" <sip:alice@example.com>;tag=f\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: c@h\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = SipMessage::parse(raw, Framing::Datagram, &Limits::default());
        let Ok(m) = m else { panic!("{m:?}") };
        for _ in 0..2 {
            assert_eq!(
                m.top_via(),
                m.vias()
                    .next()
                    .unwrap_or(Err(SipError::malformed(Part::StartLine, "none")))
            );
            assert_eq!(
                m.top_via().ok().and_then(|v| v.branch()),
                Some(&b"z9hG4bK1"[..])
            );
            assert_eq!(m.request_uri().ok().and_then(|u| u.user), Some(&b"bob"[..]));
            assert_eq!(m.from().ok().and_then(|f| f.tag()), Some(&b"f"[..]));
            assert_eq!(m.to().ok().and_then(|t| t.tag()), None);
            assert_eq!(m.cseq().map(|c| c.seq), Ok(7));
        }
        let bad =
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [::1\r\nCSeq: x\r\nContent-Length: 0\r\n\r\n";
        let m = SipMessage::parse(bad, Framing::Datagram, &Limits::default());
        let Ok(m) = m else { panic!("{m:?}") };
        for _ in 0..2 {
            assert!(m.top_via().is_err());
            assert!(m.cseq().is_err());
            assert!(m.request_uri().is_err());
            assert!(m.from().is_err());
        }
    }
}
