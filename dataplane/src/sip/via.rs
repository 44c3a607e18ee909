//! The Via header (RFC 3261 §20.42, RFC 3581 rport).

use core::fmt;

use super::grammar::{Host, In, PResult, expect, fail, header_params, host, lws, port, sep, token};
use super::uri::Params;
use nom::Parser;

pub use rvoip_tuning::config::Transport;

/// One Via value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name, `SIP` in practice.
    pub protocol: &'a [u8],
    /// Protocol version, `2.0` in practice.
    pub version: &'a [u8],
    /// The transport token as written (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, or
    /// an extension).
    pub transport_token: &'a [u8],
    /// The transport it names, when rvoip speaks it.
    pub transport: Option<Transport>,
    /// sent-by host.
    pub host: Host<'a>,
    /// sent-by port, when written.
    pub port: Option<u16>,
    /// Via parameters (`branch`, `received`, `rport`, `maddr`, `ttl`, ...).
    pub params: Params<'a>,
}

/// RFC 3261 §8.1.1.7: branch IDs of compliant elements start with this cookie.
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

impl<'a> Via<'a> {
    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.params.get("branch").flatten()
    }

    /// Whether the branch carries the RFC 3261 magic cookie.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a [u8]> {
        self.params.get("received").flatten()
    }

    /// The `rport` parameter: `Some(None)` when present without a value (RFC 3581 §3).
    pub fn rport(&self) -> Option<Option<&'a [u8]>> {
        self.params.get("rport")
    }
}

impl fmt::Debug for Via<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Via")
            .field("transport", &self.transport)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("params", &self.params)
            .finish()
    }
}

/// `via-parm = sent-protocol LWS sent-by *( SEMI via-params )`
pub(crate) fn via(i: In<'_>) -> PResult<'_, Via<'_>> {
    let (i, _) = super::grammar::sws(i)?;
    let (i, protocol) = expect("a protocol name in Via", token).parse(i)?;
    let (i, _) = sep(b'/', "'/' in Via")(i)?;
    let (i, version) = expect("a protocol version in Via", token).parse(i)?;
    let (i, _) = sep(b'/', "'/' in Via")(i)?;
    let (i, transport) = expect("a transport in Via", token).parse(i)?;
    let (i, _) = expect("white space before sent-by", lws).parse(i)?;
    let (i, h) = expect("a sent-by host in Via", host).parse(i)?;
    let (i, p) = match sep(b':', ":")(i) {
        Ok((r, _)) => {
            let (r, p) = port(r)?;
            (r, Some(p))
        }
        Err(_) => (i, None),
    };
    let (i, params) = header_params(i)?;
    if !version.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        return fail("a numeric protocol version in Via");
    }
    Ok((
        i,
        Via {
            protocol,
            version,
            transport_token: transport,
            transport: Transport::from_token(transport),
            host: h,
            port: p,
            params: Params::header(params),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::grammar::all;

    #[test]
    fn folded_via() {
        let v = all(
            via,
            b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw",
            "x",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.transport, Some(Transport::Udp));
        assert_eq!(v.transport_token, b"UDP");
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        assert!(!v.is_rfc3261_branch());
    }

    #[test]
    fn received_with_and_without_brackets() {
        let v = all(
            via,
            b"SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3",
            "x",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.received(), Some(&b"[2001:db8::9:255]"[..]));
        let v = all(
            via,
            b"SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKx",
            "x",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.port, Some(5060));
    }

    #[test]
    fn stray_separators_fail() {
        assert!(all(via, b"SIP/2.0/UDP 192.0.2.15;;", "x").is_err());
        assert!(all(via, b"SIP/2.0/UDP", "x").is_err());
    }
}
