//! What the load generator's integration tests share.
// Each test file uses a part of this.
#![allow(dead_code)]

use std::net::UdpSocket;

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("a free port: {e}"))
}

/// A child started in a process group of its own; dropping it stops the
/// whole group (TERM, then KILL after 5 s), so a peer that forks workers
/// (Kamailio) leaves none behind.
pub(crate) struct Group(pub(crate) std::process::Child);

impl Group {
    pub(crate) fn spawn(cmd: &mut std::process::Command) -> Group {
        use std::os::unix::process::CommandExt as _;
        Group(
            cmd.process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
        )
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        use std::time::{Duration, Instant};
        let group = format!("-{}", self.0.id());
        let signal = |sig: &str| {
            let _ = std::process::Command::new("kill")
                .args([sig, "--", &group])
                .stderr(std::process::Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.0.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal("-KILL");
        let _ = self.0.wait();
    }
}
