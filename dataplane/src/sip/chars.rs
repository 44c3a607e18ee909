//! Byte classes of the RFC 3261 grammar (§25.1), as one lookup table.
//!
//! Every class test is a single load and mask, which keeps the hot indexing
//! loop and the typed parsers free of chains of comparisons.

/// `alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"`
pub(crate) const TOKEN: u16 = 1 << 0;
/// `alphanum / mark` where mark is `"-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"`
pub(crate) const UNRESERVED: u16 = 1 << 1;
/// user-unreserved: `"&" / "=" / "+" / "$" / "," / ";" / "?" / "/"`
pub(crate) const USER_EXTRA: u16 = 1 << 2;
/// password extras: `"&" / "=" / "+" / "$" / ","`
pub(crate) const PASSWORD_EXTRA: u16 = 1 << 3;
/// param-unreserved: `"[" / "]" / "/" / ":" / "&" / "+" / "$"`
pub(crate) const PARAM_EXTRA: u16 = 1 << 4;
/// hnv-unreserved: `"[" / "]" / "/" / "?" / ":" / "+" / "$"`
pub(crate) const HNV_EXTRA: u16 = 1 << 5;
/// reserved: `";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","`
pub(crate) const RESERVED: u16 = 1 << 6;
/// Call-ID `word` characters.
pub(crate) const WORD: u16 = 1 << 7;
/// Characters of a host name or an IPv4 address (`_` tolerated: it is common in practice).
pub(crate) const HOSTNAME: u16 = 1 << 8;
/// `DIGIT`
pub(crate) const DIGIT: u16 = 1 << 9;
/// `ALPHA`
pub(crate) const ALPHA: u16 = 1 << 10;
/// `HEXDIG`
pub(crate) const HEX: u16 = 1 << 11;
/// Characters of a tel URI number (RFC 3966): digits, hex digits, `+ - . ( ) * #`.
pub(crate) const TEL: u16 = 1 << 12;
/// Characters that may appear between `[` and `]` of an IPv6 reference.
pub(crate) const IPV6: u16 = 1 << 13;
/// SP or HTAB.
pub(crate) const WSP: u16 = 1 << 14;

const fn build() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        let mut v = 0u16;
        let alpha = b.is_ascii_alphabetic();
        let digit = b.is_ascii_digit();
        if alpha {
            v |= ALPHA;
        }
        if digit {
            v |= DIGIT;
        }
        if b.is_ascii_hexdigit() {
            v |= HEX;
        }
        if alpha || digit {
            v |= TOKEN | UNRESERVED | WORD | HOSTNAME;
        }
        if matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        ) {
            v |= TOKEN;
        }
        if matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        ) {
            v |= UNRESERVED;
        }
        if matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            v |= USER_EXTRA;
        }
        if matches!(b, b'&' | b'=' | b'+' | b'$' | b',') {
            v |= PASSWORD_EXTRA;
        }
        if matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            v |= PARAM_EXTRA;
        }
        if matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$') {
            v |= HNV_EXTRA;
        }
        if matches!(
            b,
            b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
        ) {
            v |= RESERVED;
        }
        if matches!(
            b,
            b'-' | b'.'
                | b'!'
                | b'%'
                | b'*'
                | b'_'
                | b'+'
                | b'`'
                | b'\''
                | b'~'
                | b'('
                | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        ) {
            v |= WORD;
        }
        if matches!(b, b'-' | b'.' | b'_') {
            v |= HOSTNAME;
        }
        if b.is_ascii_hexdigit() || matches!(b, b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#') {
            v |= TEL;
        }
        if b.is_ascii_hexdigit() || matches!(b, b':' | b'.') {
            v |= IPV6;
        }
        if matches!(b, b' ' | b'\t') {
            v |= WSP;
        }
        t[c] = v;
        c += 1;
    }
    t
}

static TABLE: [u16; 256] = build();

/// Whether `b` belongs to any of the classes in `mask`.
#[inline(always)]
pub(crate) fn is(b: u8, mask: u16) -> bool {
    TABLE[b as usize] & mask != 0
}

/// Value of a hex digit; callers test [`HEX`] first.
#[inline]
pub(crate) fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Whether `b` is linear white space inside a header value: SP, HTAB, or the
/// CR/LF of a folded line (the indexer only lets CRLF into a value when a
/// SP or HTAB follows it).
#[inline(always)]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trims linear white space from both ends.
pub(crate) fn trim_lws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_lws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_lws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_the_abnf() {
        for b in b"abcXYZ019-.!%*_+`'~" {
            assert!(is(*b, TOKEN), "{}", *b as char);
        }
        for b in b"()<>@,;:\\\"/[]?={} \t" {
            assert!(!is(*b, TOKEN), "{}", *b as char);
        }
        assert!(is(b'(', UNRESERVED) && !is(b'%', UNRESERVED));
        assert!(is(b';', USER_EXTRA) && !is(b'@', USER_EXTRA));
        assert!(is(b'{', WORD) && !is(b' ', WORD) && !is(b'@', WORD));
        assert_eq!(hex_value(b'c'), 12);
        assert_eq!(trim_lws(b" \r\n a b \t"), b"a b");
    }
}
