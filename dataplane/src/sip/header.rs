//! Header field names: every RFC 3261 header, the common extensions, and
//! their compact forms (RFC 3261 §7.3.3 and the IANA SIP header registry).

macro_rules! header_names {
    ($( $variant:ident => $canonical:literal $(, compact $compact:literal)? $(, list $list:literal)? ;)*) => {
        /// A header field name, resolved case-insensitively from its long or compact form.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HeaderName {
            $(
                #[doc = $canonical]
                $variant,
            )*
            /// Any other (extension) header; its name is kept byte-exact in the message.
            Other,
        }

        impl HeaderName {
            /// The canonical long name, as rvoip writes it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( HeaderName::$variant => $canonical, )*
                    HeaderName::Other => "",
                }
            }

            /// The single-letter compact form, if the header has one.
            pub const fn compact(self) -> Option<u8> {
                match self {
                    $( $( HeaderName::$variant => Some($compact), )? )*
                    _ => None,
                }
            }

            /// Whether the header's grammar is a comma-separated list, so that
            /// several values may share one header line (RFC 3261 §7.3.1).
            pub const fn is_list(self) -> bool {
                match self {
                    $( $( HeaderName::$variant => $list, )? )*
                    _ => false,
                }
            }

            /// Whether the header's value may be empty: its RFC 3261 §25
            /// grammar brackets the whole list or text as optional, e.g.
            /// `Supported = ("Supported" / "k") HCOLON [option-tag *(COMMA option-tag)]`.
            /// Require, Proxy-Require and Unsupported are not among them: their
            /// grammar needs at least one option tag.
            pub const fn may_be_empty(self) -> bool {
                matches!(
                    self,
                    HeaderName::Accept
                        | HeaderName::AcceptEncoding
                        | HeaderName::AcceptLanguage
                        | HeaderName::Allow
                        | HeaderName::Supported
                        | HeaderName::Subject
                        | HeaderName::Organization
                )
            }

            const ALL: &'static [HeaderName] = &[ $( HeaderName::$variant, )* ];
        }
    };
}

header_names! {
    Accept => "Accept", list true;
    AcceptContact => "Accept-Contact", compact b'a', list true;
    AcceptEncoding => "Accept-Encoding", list true;
    AcceptLanguage => "Accept-Language", list true;
    AlertInfo => "Alert-Info", list true;
    Allow => "Allow", list true;
    AllowEvents => "Allow-Events", compact b'u', list true;
    AuthenticationInfo => "Authentication-Info";
    Authorization => "Authorization";
    CallId => "Call-ID", compact b'i';
    CallInfo => "Call-Info", list true;
    Contact => "Contact", compact b'm', list true;
    ContentDisposition => "Content-Disposition";
    ContentEncoding => "Content-Encoding", compact b'e', list true;
    ContentLanguage => "Content-Language", list true;
    ContentLength => "Content-Length", compact b'l';
    ContentType => "Content-Type", compact b'c';
    CSeq => "CSeq";
    Date => "Date";
    ErrorInfo => "Error-Info", list true;
    Event => "Event", compact b'o';
    Expires => "Expires";
    From => "From", compact b'f';
    Identity => "Identity", compact b'y';
    IdentityInfo => "Identity-Info", compact b'n';
    InReplyTo => "In-Reply-To", list true;
    MaxForwards => "Max-Forwards";
    MimeVersion => "MIME-Version";
    MinExpires => "Min-Expires";
    MinSe => "Min-SE";
    Organization => "Organization";
    PAssertedIdentity => "P-Asserted-Identity", list true;
    PPreferredIdentity => "P-Preferred-Identity", list true;
    Path => "Path", list true;
    Priority => "Priority";
    Privacy => "Privacy";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyRequire => "Proxy-Require", list true;
    RAck => "RAck";
    Reason => "Reason", list true;
    RecordRoute => "Record-Route", list true;
    ReferTo => "Refer-To", compact b'r';
    ReferredBy => "Referred-By", compact b'b';
    RejectContact => "Reject-Contact", compact b'j', list true;
    Replaces => "Replaces";
    ReplyTo => "Reply-To";
    RequestDisposition => "Request-Disposition", compact b'd', list true;
    Require => "Require", list true;
    RetryAfter => "Retry-After";
    Route => "Route", list true;
    RSeq => "RSeq";
    Server => "Server";
    ServiceRoute => "Service-Route", list true;
    SessionExpires => "Session-Expires", compact b'x';
    Subject => "Subject", compact b's';
    SubscriptionState => "Subscription-State";
    Supported => "Supported", compact b'k', list true;
    Timestamp => "Timestamp";
    To => "To", compact b't';
    Unsupported => "Unsupported", list true;
    UserAgent => "User-Agent";
    Via => "Via", compact b'v', list true;
    Warning => "Warning", list true;
    WwwAuthenticate => "WWW-Authenticate";
}

/// Hash of a name from its length and three of its octets, lowercased:
/// constant time whatever the name's length (it selects a slot; a full
/// comparison confirms the match).
const fn name_hash(bytes: &[u8]) -> u32 {
    let n = bytes.len();
    if n == 0 {
        return 0;
    }
    let first = bytes[0].to_ascii_lowercase() as u32;
    let mid = bytes[n / 2].to_ascii_lowercase() as u32;
    let last = bytes[n - 1].to_ascii_lowercase() as u32;
    let h = (n as u32).wrapping_mul(0x9E37_79B1)
        ^ first.wrapping_mul(0x85EB_CA77)
        ^ mid.wrapping_mul(0x27D4_EB2F)
        ^ last.wrapping_mul(0xC2B2_AE3D);
    h ^ (h >> 15)
}

const EMPTY: u8 = u8::MAX;
const TABLE_BITS: usize = 8;
const TABLE_MASK: usize = (1 << TABLE_BITS) - 1;

/// Open-addressing table from name hash to index in `HeaderName::ALL`,
/// built at compile time.
const fn build_long_table() -> [u8; 1 << TABLE_BITS] {
    let mut t = [EMPTY; 1 << TABLE_BITS];
    let mut i = 0;
    while i < HeaderName::ALL.len() {
        let mut slot = name_hash(HeaderName::ALL[i].as_str().as_bytes()) as usize & TABLE_MASK;
        while t[slot] != EMPTY {
            slot = (slot + 1) & TABLE_MASK;
        }
        t[slot] = i as u8;
        i += 1;
    }
    t
}

/// Compact form letter (`a`..`z`) to index in `HeaderName::ALL`.
const fn build_compact_table() -> [u8; 26] {
    let mut t = [EMPTY; 26];
    let mut i = 0;
    while i < HeaderName::ALL.len() {
        if let Some(c) = HeaderName::ALL[i].compact() {
            t[(c - b'a') as usize] = i as u8;
        }
        i += 1;
    }
    t
}

/// Case-insensitive equality of a canonical name (letters, digits and `-`)
/// with a token from the wire, eight octets at a time. Setting bit 5 lowercases
/// a letter and leaves `-` and digits alone; no other token octet can turn into
/// a letter, digit or `-` that way, so the comparison is exact for tokens.
#[inline]
fn token_eq_ignore_case(canonical: &[u8], name: &[u8]) -> bool {
    if canonical.len() != name.len() {
        return false;
    }
    const LOWER: u64 = 0x2020_2020_2020_2020;
    let mut a = canonical.chunks_exact(8);
    let mut b = name.chunks_exact(8);
    for (x, y) in a.by_ref().zip(b.by_ref()) {
        let x = u64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
        let y = u64::from_le_bytes([y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7]]);
        if (x | LOWER) != (y | LOWER) {
            return false;
        }
    }
    a.remainder()
        .iter()
        .zip(b.remainder())
        .all(|(x, y)| (x | 0x20) == (y | 0x20))
}

static LONG: [u8; 1 << TABLE_BITS] = build_long_table();
static COMPACT: [u8; 26] = build_compact_table();

impl HeaderName {
    /// Resolves a header name as it appears on the wire (any case, long or
    /// compact form): one hash and, for a known name, one comparison.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if let [c] = name {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() {
                let i = COMPACT[(c - b'a') as usize];
                if i != EMPTY {
                    return HeaderName::ALL[i as usize];
                }
            }
            return HeaderName::Other;
        }
        let mut slot = name_hash(name) as usize & TABLE_MASK;
        loop {
            let i = LONG[slot];
            if i == EMPTY {
                return HeaderName::Other;
            }
            let h = HeaderName::ALL[i as usize];
            if token_eq_ignore_case(h.as_str().as_bytes(), name) {
                return h;
            }
            slot = (slot + 1) & TABLE_MASK;
        }
    }

    /// Whether RFC 3261 allows at most one instance of this header in a message
    /// (§7.3 and Table 2/3 of §20).
    pub const fn is_single(self) -> bool {
        matches!(
            self,
            HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::From
                | HeaderName::To
                | HeaderName::MaxForwards
                | HeaderName::ContentLength
                | HeaderName::ContentType
                | HeaderName::Expires
        )
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName;

    #[test]
    fn resolves_long_compact_and_case() {
        assert_eq!(
            HeaderName::from_bytes(b"MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"I"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::from_bytes(b"cseq"), HeaderName::CSeq);
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"q"), HeaderName::Other);
        assert_eq!(
            HeaderName::from_bytes(b"NewFangledHeader"),
            HeaderName::Other
        );
    }

    #[test]
    fn every_compact_form_is_unique() {
        for a in HeaderName::ALL {
            for b in HeaderName::ALL {
                if a != b && a.compact().is_some() {
                    assert_ne!(a.compact(), b.compact(), "{a:?} {b:?}");
                }
            }
        }
    }
}
