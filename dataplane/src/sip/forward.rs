//! Modify-and-forward: a proxy changes a few headers of a received message
//! and sends the rest on unchanged (RFC 3261 §16.6). [`Forward`] records the
//! changes as splices over the original octets and writes the result in one
//! pass; headers it does not touch are copied, never re-serialized.

use smallvec::SmallVec;

use super::error::{Part, SipError};
use super::grammar::{PResult, sws};
use super::header::HeaderName;
use super::message::{Field, SipMessage};

/// One splice: replace `buf[at..remove_to]` with `arena[new_start..new_end]`.
#[derive(Debug, Clone, Copy)]
struct Edit {
    at: u32,
    remove_to: u32,
    new_start: u32,
    new_end: u32,
}

/// A set of changes to a received message.
///
/// Driving contract: create with [`Forward::new`], call the edit methods (each
/// at most once per header, except [`Forward::add_header`]), then
/// [`Forward::write_to`] into a pooled buffer. Edits up to 8 and 512 octets of
/// new text live inline: no allocation.
///
/// ```
/// use rvoip_dataplane::sip::{Forward, Framing, Limits, SipMessage};
/// let raw = b"INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
/// Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
/// let msg = SipMessage::parse(raw, Framing::Datagram, &Limits::default()).unwrap();
/// let mut fwd = Forward::new(&msg);
/// fwd.push_via(b"SIP/2.0/UDP p1.example.com;branch=z9hG4bK2");
/// fwd.pop_route().unwrap();
/// fwd.decrement_max_forwards().unwrap();
/// let mut out = Vec::new();
/// fwd.write_to(&mut out);
/// let sent = SipMessage::parse(&out, Framing::Datagram, &Limits::default()).unwrap();
/// assert_eq!(sent.vias().count(), 2);
/// assert_eq!(sent.routes().count(), 1);
/// assert_eq!(sent.max_forwards(), Ok(Some(69)));
/// ```
#[derive(Debug)]
pub struct Forward<'m, 'a> {
    msg: &'m SipMessage<'a>,
    edits: SmallVec<[Edit; 8]>,
    arena: SmallVec<[u8; 512]>,
    popped: SmallVec<[HeaderName; 2]>,
}

impl<'m, 'a> Forward<'m, 'a> {
    /// Starts with no changes.
    pub fn new(msg: &'m SipMessage<'a>) -> Self {
        Forward {
            msg,
            edits: SmallVec::new(),
            arena: SmallVec::new(),
            popped: SmallVec::new(),
        }
    }

    fn splice(&mut self, at: usize, remove_to: usize, parts: &[&[u8]]) {
        let new_start = self.arena.len() as u32;
        for p in parts {
            self.arena.extend_from_slice(p);
        }
        self.edits.push(Edit {
            at: at as u32,
            remove_to: remove_to as u32,
            new_start,
            new_end: self.arena.len() as u32,
        });
    }

    fn first(&self, name: HeaderName) -> Option<Field> {
        self.msg
            .fields_raw()
            .iter()
            .find(|f| f.name == name)
            .copied()
    }

    /// Where a new header line goes when there is no line of its kind: right
    /// after the start line.
    fn top_of_headers(&self) -> usize {
        self.msg.headers_start()
    }

    /// Adds `Via: value` above the topmost Via (RFC 3261 §16.6 step 8).
    pub fn push_via(&mut self, value: &[u8]) {
        let at = self
            .first(HeaderName::Via)
            .map_or(self.top_of_headers(), |f| f.name_span.start as usize);
        self.splice(at, at, &[b"Via: ", value, b"\r\n"]);
    }

    /// Adds `Record-Route: value` above any existing Record-Route (§16.6
    /// step 4); the first one goes below the Via lines, which stay together.
    pub fn add_record_route(&mut self, value: &[u8]) {
        let below_vias = || {
            self.msg
                .fields_raw()
                .iter()
                .rfind(|f| f.name == HeaderName::Via)
                .map_or(self.top_of_headers(), |f| f.line_end as usize)
        };
        let at = self
            .first(HeaderName::RecordRoute)
            .map_or_else(below_vias, |f| f.name_span.start as usize);
        self.splice(at, at, &[b"Record-Route: ", value, b"\r\n"]);
    }

    /// Appends a header line at the end of the header section.
    pub fn add_header(&mut self, name: &[u8], value: &[u8]) {
        let at = self
            .msg
            .fields_raw()
            .last()
            .map_or(self.top_of_headers(), |f| f.line_end as usize);
        self.splice(at, at, &[name, b": ", value, b"\r\n"]);
    }

    /// Removes every line of header `name`.
    pub fn remove_header(&mut self, name: HeaderName) {
        let lines: SmallVec<[Field; 4]> = self
            .msg
            .fields_raw()
            .iter()
            .filter(|f| f.name == name)
            .copied()
            .collect();
        for f in lines {
            self.splice(f.name_span.start as usize, f.line_end as usize, &[]);
        }
    }

    /// Removes the first value of list header `name`, parsed with `p`: the
    /// whole line when it holds one value, else the value and its comma.
    fn pop_first<T>(
        &mut self,
        name: HeaderName,
        p: fn(&'a [u8]) -> PResult<'a, T>,
    ) -> Result<bool, SipError> {
        if self.popped.contains(&name) {
            return Err(SipError::malformed(
                Part::Header(name),
                "removed once already",
            ));
        }
        let f = self
            .first(name)
            .ok_or(SipError::malformed(Part::Header(name), "missing"))?;
        let buf = self.msg.buffer();
        let value = &buf[f.value.range()];
        let (rest, _) = p(value)
            .map_err(|e| SipError::malformed(Part::Header(name), super::grammar::reason(e)))?;
        let rest = sws(rest).map_or(rest, |(r, _)| r);
        let more = if let Some(after_comma) = rest.strip_prefix(b",") {
            let next = sws(after_comma).map_or(after_comma, |(r, _)| r);
            let next_at = f.value.end as usize - next.len();
            self.splice(f.value.start as usize, next_at, &[]);
            true
        } else if rest.is_empty() {
            self.splice(f.name_span.start as usize, f.line_end as usize, &[]);
            self.msg
                .fields_raw()
                .iter()
                .filter(|f| f.name == name)
                .nth(1)
                .is_some()
        } else {
            return Err(SipError::malformed(
                Part::Header(name),
                "unexpected text after a value",
            ));
        };
        self.popped.push(name);
        Ok(more)
    }

    /// Replaces the Request-URI (a proxy retargeting to a registered contact).
    pub fn set_request_uri(&mut self, uri: &[u8]) -> Result<(), SipError> {
        let span = self
            .msg
            .request_uri_span()
            .ok_or(SipError::malformed(Part::StartLine, "not a request"))?;
        self.splice(span.start as usize, span.end as usize, &[uri]);
        Ok(())
    }

    /// Adds `Route: value` lines above any existing Route (a Path set, RFC 3327).
    pub fn add_route(&mut self, value: &[u8]) {
        let at = self
            .first(HeaderName::Route)
            .map_or(self.top_of_headers(), |f| f.name_span.start as usize);
        self.splice(at, at, &[b"Route: ", value, b"\r\n"]);
    }

    /// Replaces the topmost Via value (only that value, when a line holds
    /// several): RFC 3581 `received`/`rport` on arrival.
    pub fn set_top_via(&mut self, value: &[u8]) -> Result<(), SipError> {
        let f = self.first(HeaderName::Via).ok_or(SipError::malformed(
            Part::Header(HeaderName::Via),
            "missing",
        ))?;
        let buf = self.msg.buffer();
        let v = &buf[f.value.range()];
        let (rest, _) = super::via::via(v).map_err(|e| {
            SipError::malformed(Part::Header(HeaderName::Via), super::grammar::reason(e))
        })?;
        let end = f.value.end as usize - rest.len();
        self.splice(f.value.start as usize, end, &[value]);
        Ok(())
    }

    /// Removes the topmost Via (a response on its way back, §16.7 step 3).
    /// Says whether another Via value remains (where the response goes next).
    pub fn pop_via(&mut self) -> Result<bool, SipError> {
        self.pop_first(HeaderName::Via, super::via::via)
    }

    /// Removes the topmost Route (loose routing, §16.4 / §16.6 step 7).
    pub fn pop_route(&mut self) -> Result<(), SipError> {
        self.pop_first(HeaderName::Route, super::addr::name_addr)
            .map(|_| ())
    }

    /// Decrements Max-Forwards (§16.6 step 3), adding `Max-Forwards: 70` when
    /// absent. Returns the value sent, or an error when it was already 0: the
    /// caller answers 483 (§16.3 step 3).
    pub fn decrement_max_forwards(&mut self) -> Result<u8, SipError> {
        match self.msg.max_forwards()? {
            None => {
                let at = self.top_of_headers();
                self.splice(at, at, &[b"Max-Forwards: 70\r\n"]);
                Ok(70)
            }
            Some(0) => Err(SipError::malformed(
                Part::Header(HeaderName::MaxForwards),
                "Max-Forwards is 0",
            )),
            Some(n) => {
                // A header is present, or max_forwards() would have said None.
                let f = self
                    .first(HeaderName::MaxForwards)
                    .ok_or(SipError::malformed(
                        Part::Header(HeaderName::MaxForwards),
                        "missing",
                    ))?;
                // n - 1 is at most 254: three digits, without leading zeros.
                let m = n - 1;
                let digits = [b'0' + m / 100, b'0' + m / 10 % 10, b'0' + m % 10];
                let from = if m >= 100 {
                    0
                } else if m >= 10 {
                    1
                } else {
                    2
                };
                self.splice(
                    f.value.start as usize,
                    f.value.end as usize,
                    &[&digits[from..]],
                );
                Ok(n - 1)
            }
        }
    }

    /// Replaces the URI of the first Contact with `uri` (an SBC or NAT
    /// fix-up), keeping its display name and parameters. An addr-spec Contact
    /// gets angle brackets, since the new URI may carry parameters.
    pub fn set_contact_uri(&mut self, uri: &[u8]) -> Result<(), SipError> {
        let contact = self.msg.contacts().next().ok_or(SipError::malformed(
            Part::Header(HeaderName::Contact),
            "missing",
        ))??;
        let super::addr::Contact::Addr(addr) = contact else {
            return Err(SipError::malformed(
                Part::Header(HeaderName::Contact),
                "is '*'",
            ));
        };
        let at = offset_in(self.msg.buffer(), addr.uri.as_bytes());
        let end = at + addr.uri.as_bytes().len();
        if addr.angle_brackets {
            self.splice(at, end, &[uri]);
        } else {
            self.splice(at, end, &[b"<", uri, b">"]);
        }
        Ok(())
    }

    /// Replaces the value of the first line of `name`, or adds the header.
    pub fn set_header(&mut self, name: HeaderName, value: &[u8]) {
        match self.first(name) {
            Some(f) => self.splice(f.value.start as usize, f.value.end as usize, &[value]),
            None => self.add_header(name.as_str().as_bytes(), value),
        }
    }

    /// Replaces the body and sets Content-Length to match (an SDP rewrite).
    pub fn set_body(&mut self, body: &[u8]) {
        let mut digits = [0u8; 20];
        self.remove_header(HeaderName::ContentLength);
        self.add_header(
            b"Content-Length",
            crate::text::decimal(body.len() as u64, &mut digits),
        );
        let span = self.msg.body_span();
        self.splice(span.start as usize, span.end as usize, &[body]);
    }

    /// Writes the changed message into `out` (cleared first).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let buf = self.msg.as_bytes();
        let mut order: SmallVec<[Edit; 8]> = self.edits.clone();
        // Stable: edits at one position keep the order they were made in.
        order.sort_by_key(|e| e.at);
        out.clear();
        let mut cursor = 0usize;
        for e in &order {
            let at = e.at as usize;
            if at > cursor {
                out.extend_from_slice(&buf[cursor..at]);
                cursor = at;
            }
            out.extend_from_slice(&self.arena[e.new_start as usize..e.new_end as usize]);
            cursor = cursor.max(e.remove_to as usize);
        }
        out.extend_from_slice(&buf[cursor.min(buf.len())..]);
    }
}

/// Offset of `part` inside `whole`; `part` must be a subslice of it (values
/// handed out by [`SipMessage`] are).
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize)
        .saturating_sub(whole.as_ptr() as usize)
        .min(whole.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};

    const MSG: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKa, SIP/2.0/UDP b.example.com;branch=z9hG4bKb\r\n\
Route: <sip:p1.example.com;lr>\r\n\
Route: <sip:p2.example.com;lr>\r\n\
X-Opaque:   keep ;; this ,, exactly\r\n\
Contact: sip:alice@192.0.2.1:5060;expires=60\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    fn parse(b: &[u8]) -> SipMessage<'_> {
        match SipMessage::parse(b, Framing::Datagram, &Limits::default()) {
            Ok(m) => m,
            Err(e) => panic!("{e}: {}", String::from_utf8_lossy(b)),
        }
    }

    #[test]
    fn edits_leave_the_rest_byte_exact() {
        let msg = parse(MSG);
        let mut f = Forward::new(&msg);
        f.pop_via().unwrap_or_else(|e| panic!("{e}"));
        f.pop_route().unwrap_or_else(|e| panic!("{e}"));
        f.push_via(b"SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp");
        f.add_record_route(b"<sip:proxy.example.com;lr>");
        assert_eq!(f.decrement_max_forwards(), Ok(70));
        f.set_contact_uri(b"sip:alice@203.0.113.9:5060;transport=udp")
            .unwrap_or_else(|e| panic!("{e}"));
        f.set_body(b"v=0\r\ns=-\r\n");
        let mut out = Vec::new();
        f.write_to(&mut out);
        let m = parse(&out);
        let vias: Vec<_> = m.vias().map(|v| v.map(|v| v.branch())).collect();
        assert_eq!(
            vias,
            vec![Ok(Some(&b"z9hG4bKp"[..])), Ok(Some(&b"z9hG4bKb"[..]))]
        );
        let routes: Vec<_> = m
            .routes()
            .filter_map(Result::ok)
            .map(|r| r.uri.as_bytes().to_vec())
            .collect();
        assert_eq!(routes, vec![b"sip:p2.example.com;lr".to_vec()]);
        assert_eq!(m.record_routes().count(), 1);
        assert_eq!(m.max_forwards(), Ok(Some(70)));
        assert_eq!(
            m.extension_header("x-opaque"),
            Some(&b"keep ;; this ,, exactly"[..])
        );
        let c = m.contacts().next().and_then(Result::ok);
        let Some(crate::sip::Contact::Addr(c)) = c else {
            panic!("no contact")
        };
        assert_eq!(
            c.uri.as_bytes(),
            b"sip:alice@203.0.113.9:5060;transport=udp"
        );
        assert_eq!(c.params.get("expires"), Some(Some(&b"60"[..])));
        assert_eq!(m.body(), b"v=0\r\ns=-\r\n");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("\r\nX-Opaque:   keep ;; this ,, exactly\r\n"),
            "{text}"
        );
    }

    #[test]
    fn the_top_via_value_alone_is_replaced() {
        let msg = parse(MSG);
        let mut f = Forward::new(&msg);
        f.set_top_via(b"SIP/2.0/UDP a.example.com;branch=z9hG4bKa;received=192.0.2.7;rport=5099")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        f.write_to(&mut out);
        let m = parse(&out);
        let vias: Vec<_> = m
            .vias()
            .filter_map(Result::ok)
            .map(|v| {
                (
                    v.received().map(<[u8]>::to_vec),
                    v.branch().map(<[u8]>::to_vec),
                )
            })
            .collect();
        assert_eq!(
            vias,
            vec![
                (Some(b"192.0.2.7".to_vec()), Some(b"z9hG4bKa".to_vec())),
                (None, Some(b"z9hG4bKb".to_vec()))
            ]
        );
    }

    #[test]
    fn max_forwards_goes_down_by_one_across_digit_counts() {
        for (from, to) in [
            (255u8, 254u8),
            (100, 99),
            (101, 100),
            (10, 9),
            (11, 10),
            (1, 0),
        ] {
            let raw = format!(
                "OPTIONS sip:a@b SIP/2.0\r\nMax-Forwards: {from}\r\nContent-Length: 0\r\n\r\n"
            );
            let msg = parse(raw.as_bytes());
            let mut f = Forward::new(&msg);
            assert_eq!(f.decrement_max_forwards(), Ok(to));
            let mut out = Vec::new();
            f.write_to(&mut out);
            let sent = parse(&out);
            assert_eq!(sent.max_forwards(), Ok(Some(to)), "from {from}");
            assert_eq!(
                sent.header(HeaderName::MaxForwards),
                Some(to.to_string().as_bytes())
            );
        }
    }

    #[test]
    fn zero_max_forwards_is_refused() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nMax-Forwards: 0\r\nContent-Length: 0\r\n\r\n";
        let msg = parse(raw);
        assert!(Forward::new(&msg).decrement_max_forwards().is_err());
    }

    #[test]
    fn popping_twice_is_an_error() {
        let msg = parse(MSG);
        let mut f = Forward::new(&msg);
        assert!(f.pop_via().is_ok());
        assert!(f.pop_via().is_err());
    }

    #[test]
    fn popping_a_via_says_whether_another_remains() {
        for (vias, more) in [
            ("Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\n", false),
            (
                "Via: SIP/2.0/UDP a;branch=z9hG4bK1 , SIP/2.0/UDP b\r\n",
                true,
            ),
            (
                "Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP b\r\n",
                true,
            ),
        ] {
            let raw = format!("SIP/2.0 200 OK\r\n{vias}CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n");
            let msg = parse(raw.as_bytes());
            let mut f = Forward::new(&msg);
            assert_eq!(f.pop_via(), Ok(more), "{vias}");
            let mut out = Vec::new();
            f.write_to(&mut out);
            assert_eq!(parse(&out).vias().count(), usize::from(more), "{vias}");
        }
    }
}
