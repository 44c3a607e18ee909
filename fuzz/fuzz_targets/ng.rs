//! The ng server on arbitrary datagrams: bencode, commands, flags and SDP,
//! against a media plane that hands out ports without sockets.
#![no_main]

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::engine::media::{Applied, LegPorts, MediaError, MediaHandle, MediaPlan, SessionSnapshot};
use rvoip_dataplane::media::relay::{RelayCounters, Session};
use rvoip_dataplane::ng::{MediaControl, NgServer};

struct FakeMedia {
    next: Cell<u16>,
}

impl MediaControl for FakeMedia {
    fn place(&self) -> usize {
        0
    }
    fn apply(&self, worker: usize, session: Option<u32>, medias: Vec<MediaPlan>) -> Result<Applied, MediaError> {
        let ports = medias
            .iter()
            .map(|_| {
                let p = self.next.get();
                self.next.set(p.wrapping_add(4));
                [LegPorts { rtp: p, rtcp: Some(p + 1) }, LegPorts { rtp: p + 2, rtcp: None }]
            })
            .collect();
        Ok(Applied { handle: MediaHandle { worker, session: session.unwrap_or(7) }, ports })
    }
    fn snapshot(&self, _: MediaHandle) -> Result<SessionSnapshot, MediaError> {
        Ok(SessionSnapshot { session: Session::default(), now_ms: 0 })
    }
    fn remove(&self, _: MediaHandle) -> Result<SessionSnapshot, MediaError> {
        Err(MediaError::UnknownSession)
    }
    fn counters(&self) -> RelayCounters {
        RelayCounters::default()
    }
    fn take_timed_out(&self) -> Vec<MediaHandle> {
        vec![MediaHandle { worker: 0, session: 7 }]
    }
}

fuzz_target!(|data: &[u8]| {
    let mut server = NgServer::new(FakeMedia { next: Cell::new(30000) }, IpAddr::V4(Ipv4Addr::LOCALHOST));
    // The input may hold several requests separated by NUL octets (SDP
    // bodies hold newlines, so those cannot separate requests).
    for (i, request) in data.split(|b| *b == 0).enumerate().take(8) {
        if i == 4 {
            server.expire();
        }
        if let Some(reply) = server.handle(request, i as u64) {
            assert!(reply.starts_with(&request[..request.iter().position(|b| *b == b' ').unwrap_or(0)]));
            let body = &reply[reply.iter().position(|b| *b == b' ').map_or(0, |p| p + 1)..];
            assert!(rvoip_dataplane::ng::bencode::decode(body).is_ok(), "replies are valid bencode");
        }
    }
});
