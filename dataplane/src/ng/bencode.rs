//! Bencode, the encoding of the ng control protocol: integers `i42e`, byte
//! strings `3:abc`, lists `l...e`, dictionaries `d...e` with byte-string keys.
//!
//! Decoding borrows the input and is bounded: nesting depth and item count are
//! limited, so a hostile datagram costs at most a few thousand steps.

use std::fmt;

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(&'a [u8]),
    /// `l...e`
    List(Vec<Value<'a>>),
    /// `d...e`, in the order written.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The entry `key` of a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Dict(entries) => entries
                .iter()
                .find(|(k, _)| *k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The bytes of a byte string.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A byte string as UTF-8 text.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer (or a byte string holding decimal digits, as some clients send).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The items of a list.
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

/// Why a bencoded text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BencodeError {
    /// Offset where decoding stopped.
    pub at: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for BencodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bencode at octet {}: {}", self.at, self.reason)
    }
}

impl std::error::Error for BencodeError {}

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 16;
/// Most values (of any kind) in one document.
pub const MAX_ITEMS: usize = 4096;

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    items: usize,
}

impl<'a> Decoder<'a> {
    fn err<T>(&self, reason: &'static str) -> Result<T, BencodeError> {
        Err(BencodeError {
            at: self.pos,
            reason,
        })
    }

    /// Counts one more value at `depth`, within the bounds.
    fn enter(&mut self, depth: usize) -> Result<(), BencodeError> {
        if depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        self.items += 1;
        if self.items > MAX_ITEMS {
            return self.err("too many values");
        }
        Ok(())
    }

    /// An integer `i<n>e`; `pos` is at the `i`.
    fn int(&mut self) -> Result<i64, BencodeError> {
        self.pos += 1;
        let start = self.pos;
        let end = match self.input[start..].iter().position(|b| *b == b'e') {
            Some(n) => start + n,
            None => return self.err("unterminated integer"),
        };
        let text = &self.input[start..end];
        let valid = match text {
            [b'-', b'0', ..] | [b'0', _, ..] | [] | [b'-'] => false,
            [b'-', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
            digits => digits.iter().all(u8::is_ascii_digit),
        };
        let n = std::str::from_utf8(text)
            .ok()
            .filter(|_| valid)
            .and_then(|t| t.parse::<i64>().ok());
        match n {
            Some(n) => {
                self.pos = end + 1;
                Ok(n)
            }
            None => self.err("malformed integer"),
        }
    }

    /// The next key of the dictionary being read, or `None` at its end
    /// (which is consumed).
    fn key(&mut self) -> Result<Option<&'a [u8]>, BencodeError> {
        match self.input.get(self.pos) {
            Some(b'e') => {
                self.pos += 1;
                Ok(None)
            }
            Some(b'0'..=b'9') => self.string().map(Some),
            Some(_) => self.err("dictionary key is not a byte string"),
            None => self.err("unterminated dictionary"),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, BencodeError> {
        self.enter(depth)?;
        match self.input.get(self.pos) {
            Some(b'i') => self.int().map(Value::Int),
            Some(b'l') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    match self.input.get(self.pos) {
                        Some(b'e') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        Some(_) => items.push(self.value(depth + 1)?),
                        None => return self.err("unterminated list"),
                    }
                }
            }
            Some(b'd') => {
                self.pos += 1;
                let mut entries = Vec::new();
                while let Some(key) = self.key()? {
                    let value = self.value(depth + 1)?;
                    entries.push((key, value));
                }
                Ok(Value::Dict(entries))
            }
            Some(b'0'..=b'9') => self.string().map(Value::Bytes),
            Some(_) => self.err("not a bencode value"),
            None => self.err("unexpected end"),
        }
    }

    fn string(&mut self) -> Result<&'a [u8], BencodeError> {
        let start = self.pos;
        let colon = match self.input[start..].iter().take(10).position(|b| *b == b':') {
            Some(n) => start + n,
            None => return self.err("malformed string length"),
        };
        let len_text = &self.input[start..colon];
        if len_text.is_empty()
            || !len_text.iter().all(u8::is_ascii_digit)
            || (len_text.len() > 1 && len_text[0] == b'0')
        {
            return self.err("malformed string length");
        }
        let len: usize = len_text
            .iter()
            .fold(0, |a, d| a * 10 + usize::from(d - b'0'));
        let begin = colon + 1;
        let Some(end) = begin.checked_add(len).filter(|e| *e <= self.input.len()) else {
            self.pos = colon;
            return self.err("string longer than the input");
        };
        self.pos = end;
        Ok(&self.input[begin..end])
    }
}

/// Decodes one value at the start of `input`; returns it and the octets used.
pub fn decode(input: &[u8]) -> Result<(Value<'_>, usize), BencodeError> {
    let mut d = Decoder {
        input,
        pos: 0,
        items: 0,
    };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

/// Appends the byte string `s` (`<len>:<bytes>`).
pub fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(crate::text::decimal(s.len() as u64, &mut digits));
    out.push(b':');
    out.extend_from_slice(s);
}

/// Encodes `value` into `out`. Dictionary keys are written sorted, as bencode
/// requires.
pub fn encode(value: &Value<'_>, out: &mut Vec<u8>) {
    use std::io::Write;
    match value {
        Value::Int(i) => {
            let _ = write!(out, "i{i}e");
        }
        Value::Bytes(b) => put_bytes(out, b),
        Value::List(items) => {
            out.push(b'l');
            for i in items {
                encode(i, out);
            }
            out.push(b'e');
        }
        Value::Dict(entries) => {
            let mut sorted: Vec<&(&[u8], Value<'_>)> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'd');
            for (k, v) in sorted {
                put_bytes(out, k);
                encode(v, out);
            }
            out.push(b'e');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let text = b"d7:command5:offer3:sdpl3:abci-7ee5:flagsle4:zero0:e";
        let (v, used) = decode(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(used, text.len());
        assert_eq!(v.get("command").and_then(Value::as_str), Some("offer"));
        assert_eq!(
            v.get("sdp").and_then(Value::as_list).map(<[_]>::len),
            Some(2)
        );
        let mut out = Vec::new();
        encode(&v, &mut out);
        let (again, _) = decode(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.get("command"), v.get("command"));
        assert!(
            out.starts_with(b"d7:command5:offer5:flagsle3:sdp"),
            "keys sorted: {}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b""[..],
            b"i12",
            b"i-0e",
            b"i03e",
            b"ie",
            b"5:abc",
            b"d3:keye",
            b"di1ei2ee",
            b"l",
            b"x",
            b"99999999999:a",
            b"01:a",
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = [b"l".repeat(100), b"e".repeat(100)].concat();
        assert_eq!(
            decode(&deep).map_err(|e| e.reason),
            Err("nested too deeply")
        );
        let wide = [b"l".to_vec(), b"i1e".repeat(5000), b"e".to_vec()].concat();
        assert_eq!(decode(&wide).map_err(|e| e.reason), Err("too many values"));
    }
}
