//! The ng server on arbitrary datagrams: bencode, commands, flags and SDP,
//! against a media plane that hands out ports without sockets; and the same
//! bytes as records of the shared-memory order channel (typed orders and
//! outcomes), whose orders the server carries out.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;

#[path = "fake_media.rs"]
mod fake_media;
use fake_media::FakeMedia;
use rvoip_dataplane::ng::NgServer;

fuzz_target!(|data: &[u8]| {
    let mut server = NgServer::new(
        FakeMedia::new(true),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Box::new(rvoip_dataplane::entropy::SeededEntropy::new(1)),
    );
    // The input may hold several requests separated by NUL octets (SDP
    // bodies hold newlines, so those cannot separate requests).
    for (i, request) in data.split(|b| *b == 0).enumerate().take(8) {
        use rvoip_dataplane::media::orders::{record, Outcome};
        if let Some((s, n, order)) = record::read_order(request) {
            let mut again = Vec::new();
            record::write_order(s, n, &order, &mut again);
            assert_eq!(record::read_order(&again), Some((s, n, order.clone())), "an order reads back as written");
            let _ = Outcome::of(server.execute(order, i as u64));
        }
        let _ = record::read_outcome(request);
        if i == 4 {
            server.expire();
        }
        if let Some(reply) = server.handle(request, std::net::SocketAddr::from(([127, 0, 0, 1], 2000 + (i as u16 % 3))), i as u64) {
            assert!(reply.starts_with(&request[..request.iter().position(|b| *b == b' ').unwrap_or(0)]));
            let body = &reply[reply.iter().position(|b| *b == b' ').map_or(0, |p| p + 1)..];
            assert!(rvoip_dataplane::ng::bencode::decode(body).is_ok(), "replies are valid bencode");
        }
    }
});
