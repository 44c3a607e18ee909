//! RFC 3261 §25: headers whose value is an optional list or text may be sent
//! empty, the others may not. Softphones do send them empty: baresip puts
//! `Supported:` with no value on every INVITE.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use rvoip_controlplane::lint::{LintOptions, judge};

fn invite_with(extra: &str) -> Vec<u8> {
    format!(
        "INVITE sip:bob@rvoip.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-empty;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@rvoip.test>;tag=a1\r\n\
To: <sip:bob@rvoip.test>\r\n\
Call-ID: empty-lists@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5080>\r\n\
{extra}\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Every header RFC 3261 §25 writes as `NAME HCOLON [ ... ]`.
#[test]
fn an_empty_optional_list_or_text_is_valid() {
    for header in [
        "Supported:",
        "k:",
        "Supported: ",
        "Allow:",
        "Accept:",
        "Accept-Encoding:",
        "Accept-Language:",
        "Subject:",
        "Organization:",
    ] {
        let j = judge(
            &invite_with(&format!("{header}\r\n")),
            &LintOptions::default(),
        );
        assert!(j.valid, "{header:?}: {}", j.reason);
        // An empty Accept on an INVITE is well-formed but accepts no
        // session description: a UAS answers 406, never 400.
        let expected = if header == "Accept:" { Some(406) } else { None };
        assert_eq!(j.status, expected, "{header:?}: {}", j.reason);
    }
}

/// An empty line among full ones adds nothing; the values of the others count.
#[test]
fn an_empty_supported_line_beside_others_keeps_their_tags() {
    let j = judge(
        &invite_with("Supported:\r\nRequire: 100rel\r\nSupported: 100rel, timer\r\n"),
        &LintOptions::default(),
    );
    // The message is well-formed; 100rel is required and supported, so no
    // 420 either.
    assert!(j.valid, "{}", j.reason);
}

/// baresip 1.0's INVITE as it reaches the SBC (empty Supported, its Allow list).
#[test]
fn baresips_invite_is_valid() {
    let j = judge(
        &invite_with(
            "Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER\r\n\
Supported:\r\nUser-Agent: baresip v1.0.0 (x86_64/linux)\r\n",
        ),
        &LintOptions::default(),
    );
    assert!(j.valid, "{}", j.reason);
    assert_eq!(j.status, None);
}

/// `Require = "Require" HCOLON option-tag *(COMMA option-tag)`: at least one.
#[test]
fn an_empty_mandatory_list_is_400() {
    for header in ["Require:", "Proxy-Require:", "Unsupported:"] {
        let j = judge(
            &invite_with(&format!("{header}\r\n")),
            &LintOptions::default(),
        );
        assert!(!j.valid, "{header:?} should be invalid");
        assert_eq!(j.status, Some(400), "{header:?}: {}", j.reason);
        assert!(j.reason.contains("empty"), "{header:?}: {}", j.reason);
    }
}
