//! Building messages into a caller-owned, reused buffer: no allocation per
//! header, and none at all once the buffer has grown to its working size.

use std::io::Write;

use super::header::HeaderName;
use super::message::SipMessage;
use super::values::Method;

/// Writes one SIP message into `out`, which is cleared first.
///
/// ```
/// use rvoip_dataplane::sip::{HeaderName, MessageWriter, Method};
/// let mut buf = Vec::with_capacity(1500);
/// let mut w = MessageWriter::request(&mut buf, Method::Options, b"sip:example.com");
/// w.header(HeaderName::Via, b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1")
///     .header(HeaderName::MaxForwards, b"70")
///     .header_fmt(HeaderName::CSeq, format_args!("{} OPTIONS", 1));
/// w.finish(b"");
/// assert!(buf.starts_with(b"OPTIONS sip:example.com SIP/2.0\r\nVia: "));
/// assert!(buf.ends_with(b"Content-Length: 0\r\n\r\n"));
/// ```
#[derive(Debug)]
pub struct MessageWriter<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> MessageWriter<'b> {
    /// Starts a request: `METHOD uri SIP/2.0`.
    pub fn request(out: &'b mut Vec<u8>, method: Method<'_>, uri: &[u8]) -> Self {
        out.clear();
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(uri);
        out.extend_from_slice(b" SIP/2.0\r\n");
        MessageWriter { out }
    }

    /// Starts a response: `SIP/2.0 code reason`.
    pub fn response(out: &'b mut Vec<u8>, code: u16, reason: &[u8]) -> Self {
        out.clear();
        out.extend_from_slice(b"SIP/2.0 ");
        // Three digits, as the status-code grammar has it.
        let code = code.min(999);
        out.extend_from_slice(&[
            b'0' + (code / 100) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
            b' ',
        ]);
        out.extend_from_slice(reason);
        out.extend_from_slice(b"\r\n");
        MessageWriter { out }
    }

    /// Appends `Name: value`. The value is written as given; it must not contain
    /// a bare CR or LF (folded values copied from a parsed message are fine).
    pub fn header(&mut self, name: HeaderName, value: &[u8]) -> &mut Self {
        self.header_raw(name.as_str().as_bytes(), value)
    }

    /// Appends a header with a name given as bytes (extension headers).
    pub fn header_raw(&mut self, name: &[u8], value: &[u8]) -> &mut Self {
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Appends a header whose value is formatted in place.
    pub fn header_fmt(&mut self, name: HeaderName, value: core::fmt::Arguments<'_>) -> &mut Self {
        self.out.extend_from_slice(name.as_str().as_bytes());
        self.out.extend_from_slice(b": ");
        let _ = self.out.write_fmt(value);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Appends a header whose value `value` writes onto the message.
    pub fn header_with(&mut self, name: HeaderName, value: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.out.extend_from_slice(name.as_str().as_bytes());
        self.out.extend_from_slice(b": ");
        value(self.out);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Appends `Name: number token` (a CSeq, `RAck`-like values).
    pub fn header_number(&mut self, name: HeaderName, n: u64, then: &[u8]) -> &mut Self {
        let mut digits = [0u8; 20];
        let n = crate::text::decimal(n, &mut digits);
        self.header_parts(name, &[n, b" ", then])
    }

    /// Appends a header whose value is the concatenation of `parts`
    /// (`To: <copied value>;tag=abc`).
    pub fn header_parts(&mut self, name: HeaderName, parts: &[&[u8]]) -> &mut Self {
        self.out.extend_from_slice(name.as_str().as_bytes());
        self.out.extend_from_slice(b": ");
        for p in parts {
            self.out.extend_from_slice(p);
        }
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Ends the header section with Content-Length and appends the body.
    pub fn finish(self, body: &[u8]) {
        let mut digits = [0u8; 20];
        self.out.extend_from_slice(b"Content-Length: ");
        self.out
            .extend_from_slice(crate::text::decimal(body.len() as u64, &mut digits));
        self.out.extend_from_slice(b"\r\n\r\n");
        self.out.extend_from_slice(body);
    }
}

/// Builds a response to `request` as RFC 3261 §8.2.6.2 requires: Via
/// (every value, in order), From, Call-ID and CSeq copied; To copied, with
/// `to_tag` added when the request's To has no tag and the response is not 100
/// (§8.2.6.2: a 100 Trying may omit it); Timestamp copied into a 100 (§8.2.6.1).
/// `extra` headers follow, then `Content-Length: 0`.
pub fn write_response(
    request: &SipMessage<'_>,
    code: u16,
    reason: &[u8],
    to_tag: Option<&[u8]>,
    extra: &[(HeaderName, &[u8])],
    out: &mut Vec<u8>,
) {
    write_response_with_body(request, code, reason, to_tag, extra, b"", out);
}

/// [`write_response`] with a body (its Content-Type goes in `extra`).
pub fn write_response_with_body(
    request: &SipMessage<'_>,
    code: u16,
    reason: &[u8],
    to_tag: Option<&[u8]>,
    extra: &[(HeaderName, &[u8])],
    body: &[u8],
    out: &mut Vec<u8>,
) {
    let mut w = MessageWriter::response(out, code, reason);
    for field in request.headers() {
        match field.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                w.header(field.name, field.value);
            }
            HeaderName::To => {
                let has_tag = request.to().ok().and_then(|t| t.tag()).is_some();
                match to_tag {
                    Some(tag) if !has_tag && code != 100 => {
                        w.header_parts(HeaderName::To, &[field.value, b";tag=", tag]);
                    }
                    _ => {
                        w.header(HeaderName::To, field.value);
                    }
                }
            }
            HeaderName::Timestamp if code == 100 => {
                w.header(HeaderName::Timestamp, field.value);
            }
            _ => {}
        }
    }
    for (name, value) in extra {
        w.header(*name, value);
    }
    w.finish(body);
}

/// Re-serializes a parsed message: the start line as parsed, every header in
/// order under its canonical name (extension headers keep theirs) with folded
/// white space collapsed to one SP, a Content-Length that matches the body,
/// and the body. Parsing the output gives the same header values.
pub fn write_message(msg: &SipMessage<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(msg.start_line());
    out.extend_from_slice(b"\r\n");
    for h in msg.headers() {
        if h.name == HeaderName::ContentLength {
            continue;
        }
        if h.name == HeaderName::Other {
            out.extend_from_slice(h.raw_name);
        } else {
            out.extend_from_slice(h.name.as_str().as_bytes());
        }
        out.extend_from_slice(b": ");
        unfold_into(h.value, out);
        out.extend_from_slice(b"\r\n");
    }
    let mut digits = [0u8; 20];
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(crate::text::decimal(msg.body().len() as u64, &mut digits));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(msg.body());
}

/// Copies a header value, replacing each fold (white space around a CRLF)
/// with a single SP (RFC 3261 §7.3.1: a fold is equivalent to one SP).
pub fn unfold_into(value: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'\r' || b == b'\n' {
            while out.last().is_some_and(|c| *c == b' ' || *c == b'\t') {
                out.pop();
            }
            while i < value.len() && matches!(value[i], b' ' | b'\t' | b'\r' | b'\n') {
                i += 1;
            }
            out.push(b' ');
        } else {
            out.push(b);
            i += 1;
        }
    }
}

/// Appends a Warning value (RFC 3261 §20.43) to `out`: `code agent "text"`,
/// the text as a quoted-string (quotes and backslashes escaped, control
/// characters left out).
pub fn write_warning(code: u16, agent: &[u8], text: &str, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(crate::text::decimal(u64::from(code), &mut digits));
    out.push(b' ');
    out.extend_from_slice(agent);
    out.extend_from_slice(b" \"");
    for b in text.bytes() {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b if b < 0x20 || b == 0x7f => {}
            b => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_cseq_and_content_length_read_as_formatted() {
        for code in [100u16, 180, 200, 487, 503, 699] {
            let mut out = Vec::new();
            let mut w = MessageWriter::response(&mut out, code, b"Reason");
            w.header_number(HeaderName::CSeq, u64::from(code) * 1000, b"INVITE");
            w.finish(b"v=0\r\n");
            let text = String::from_utf8_lossy(&out);
            assert_eq!(
                text,
                format!(
                    "SIP/2.0 {code} Reason\r\nCSeq: {} INVITE\r\nContent-Length: 5\r\n\r\nv=0\r\n",
                    u64::from(code) * 1000
                )
            );
        }
    }
}
