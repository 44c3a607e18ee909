//! Talking to systemd (`Type=notify`): ready once serving, the watchdog
//! petted while the main loop runs, stopping when asked to. Without
//! `NOTIFY_SOCKET` (not started by systemd, or a child of `rvoip run`)
//! nothing is sent.
#![allow(clippy::disallowed_methods)] // an I/O shell: it reads the clock

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Tells systemd the service is up.
pub fn ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        tracing::warn!(error = %e, "cannot tell systemd the service is ready");
    }
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Pets systemd's watchdog (`WatchdogSec`) at half its interval.
#[derive(Debug)]
pub struct Watchdog {
    every: Option<Duration>,
    last: Instant,
}

impl Watchdog {
    /// The watchdog systemd asked for, if any.
    pub fn new() -> Watchdog {
        Watchdog {
            every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last: Instant::now(),
        }
    }

    /// Call from the main loop: tells systemd the process is alive when
    /// half the interval has passed.
    pub fn pet(&mut self) {
        if let Some(every) = self.every
            && self.last.elapsed() >= every
        {
            self.last = Instant::now();
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    }
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog::new()
    }
}
