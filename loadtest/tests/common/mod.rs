//! What the load generator's integration tests share.

use std::net::UdpSocket;

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("a free port: {e}"))
}
