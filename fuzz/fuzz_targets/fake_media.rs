//! A media plane for the fuzz targets: hands out ports without sockets.

use std::cell::Cell;

use rvoip_dataplane::engine::media::{Applied, LegPorts, MediaError, MediaHandle, MediaPlan, SessionSnapshot};
use rvoip_dataplane::media::relay::{RelayCounters, Session};
use rvoip_dataplane::media::plan::MediaControl;

pub struct FakeMedia {
    pub next: Cell<u16>,
    /// `remove` fails (the session is unknown) and every session times out,
    /// to reach the ng server's error and expiry paths.
    pub hostile: bool,
}

impl FakeMedia {
    pub fn new(hostile: bool) -> Self {
        FakeMedia { next: Cell::new(30000), hostile }
    }
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
        if self.hostile {
            Err(MediaError::UnknownSession)
        } else {
            Ok(SessionSnapshot { session: Session::default(), now_ms: 0 })
        }
    }
    fn counters(&self) -> RelayCounters {
        RelayCounters::default()
    }
    fn take_timed_out(&self) -> Vec<MediaHandle> {
        if self.hostile { vec![MediaHandle { worker: 0, session: 7 }] } else { Vec::new() }
    }
    fn service(&self, _: MediaHandle, _: usize, _: rvoip_dataplane::media::services::ServiceOp) -> Result<(), MediaError> {
        Ok(())
    }
    fn record(&self, _: rvoip_dataplane::media::plan::RecordStep) -> Result<(), MediaError> {
        if self.hostile { Err(MediaError::Service("no recorder".into())) } else { Ok(()) }
    }
}
