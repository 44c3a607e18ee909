//! `rvoip sip lint`: judge SIP messages stored in files as rvoip would judge
//! them on the wire, and say what it would answer.

use rvoip_dataplane::sip::{Framing, Limits, SipError, SipMessage, check};

use crate::admission::{Role, Supported, admit};

/// How a file's bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingChoice {
    /// A file with CRLF line ends is a datagram; one with no CR at all is text
    /// (a message copied from a document or log, where line ends were lost).
    Auto,
    /// Always a datagram.
    Datagram,
    /// Always a stream frame.
    Stream,
    /// Always text.
    Text,
}

/// Lint settings.
#[derive(Debug, Clone)]
pub struct LintOptions {
    /// Whose answer is reported.
    pub role: Role,
    /// Framing.
    pub framing: FramingChoice,
    /// Parser limits.
    pub limits: Limits,
    /// Supported extensions.
    pub policy: Supported,
}

impl Default for LintOptions {
    fn default() -> Self {
        LintOptions {
            role: Role::Sbc,
            framing: FramingChoice::Auto,
            limits: Limits::default(),
            policy: Supported::default(),
        }
    }
}

/// The judgement of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Whether the message is well-formed.
    pub valid: bool,
    /// The response an element answers with; `None` when the message is
    /// processed normally, or when nothing is sent (a bad response is dropped).
    pub status: Option<u16>,
    /// Why.
    pub reason: String,
}

fn looks_like_response(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    bytes[start..]
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
}

/// Judges one message.
pub fn judge(bytes: &[u8], opts: &LintOptions) -> Judgement {
    let framing = match opts.framing {
        FramingChoice::Auto if memchr_cr(bytes) => Framing::Datagram,
        FramingChoice::Auto | FramingChoice::Text => Framing::Text,
        FramingChoice::Datagram => Framing::Datagram,
        FramingChoice::Stream => Framing::Stream,
    };
    let response = looks_like_response(bytes);
    let invalid = |e: SipError| Judgement {
        valid: false,
        // A bad response is dropped silently (RFC 4475 §3.1.2.5, §3.1.2.19).
        status: if response { None } else { Some(e.status()) },
        reason: if response {
            format!("{e}; a malformed response is dropped")
        } else {
            e.to_string()
        },
    };
    let msg = match SipMessage::parse(bytes, framing, &opts.limits) {
        Ok(m) => m,
        Err(e) => return invalid(e),
    };
    if let Err(e) = check(&msg) {
        return invalid(e);
    }
    if !msg.is_request() {
        return Judgement {
            valid: true,
            status: None,
            reason: "well-formed response".into(),
        };
    }
    match admit(&msg, opts.role, &opts.policy) {
        Some(r) => Judgement {
            valid: true,
            status: Some(r.status),
            reason: r.reason.into_owned(),
        },
        None => Judgement {
            valid: true,
            status: None,
            reason: "well-formed request, processed normally".into(),
        },
    }
}

fn memchr_cr(bytes: &[u8]) -> bool {
    bytes.contains(&b'\r')
}

/// One JSON line: `{"file","verdict","status","reason"}`.
pub fn json_line(file: &str, j: &Judgement) -> String {
    serde_json::json!({
        "file": file,
        "verdict": if j.valid { "valid" } else { "invalid" },
        "status": j.status,
        "reason": j.reason,
    })
    .to_string()
}

/// One human-readable line.
pub fn text_line(file: &str, j: &Judgement) -> String {
    let verdict = if j.valid { "valid" } else { "invalid" };
    match j.status {
        Some(s) => format!("{file}: {verdict}, answer {s}: {}", j.reason),
        None => format!("{file}: {verdict}: {}", j.reason),
    }
}
