//! `rvoip ctl`: a local control socket (`ctl.sock` in the ring directory,
//! mode 0600) where one request per connection is read as a JSON line and
//! answered with one JSON document. What only the control plane's loop
//! can do (its calls, hang-ups, drain, reload) goes to the loop as a
//! [`Request`] and is answered when the loop has done it; counters are
//! answered from the last snapshot here.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The control socket of the appliance whose ring directory is `ring_dir`.
pub fn socket_path(ring_dir: &Path) -> PathBuf {
    ring_dir.join("ctl.sock")
}

/// A request: as `rvoip ctl` takes it on its command line, and as the
/// client writes it on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Live calls: both legs' Call-IDs, realm, trunk, start, codecs, media
    /// packets each way so far.
    Calls,
    /// One live call, by either leg's Call-ID.
    Call {
        /// The Call-ID.
        id: String,
    },
    /// Capture one call, both legs' SIP and RTP, into a pcap file
    /// (`<[capture] pcap_dir>/<Call-ID>.pcap`), from now until the call
    /// ends (or `--seconds`, or `--stop`).
    Capture {
        /// Either leg's Call-ID.
        id: String,
        /// End a capture running now.
        #[arg(long)]
        #[serde(default)]
        stop: bool,
        /// End it after this many seconds, if the call lasts longer.
        #[arg(long)]
        #[serde(default)]
        seconds: Option<u64>,
    },
    /// End a call that is up (BYE on both legs).
    Hangup {
        /// Either leg's Call-ID.
        id: String,
    },
    /// Counters of the control plane and of every dataplane worker.
    Counters,
    /// Take no new calls (503 to INVITE and OPTIONS); stop once the calls
    /// have ended, or at the deadline (the calls still up are hung up).
    Drain {
        /// Seconds to wait for the calls (default: as long as they last).
        #[arg(long = "deadline")]
        deadline_secs: Option<u64>,
    },
    /// Read the configuration again: realms, trunks, routes, limits, users
    /// and log level change without dropping a call; anything else is
    /// refused with the reason.
    Reload,
    /// Change the log filter (`debug`, `info,rvoip_controlplane::b2bua=debug`).
    LogLevel {
        /// The filter.
        level: String,
    },
}

/// What the loop is asked, with where its answer goes.
#[derive(Debug)]
pub struct Asked {
    /// The request.
    pub request: Request,
    /// Its answer.
    pub reply: SyncSender<Value>,
}

/// How long a client waits for the loop (a `calls` request waits for the
/// relay's figures of every call).
pub(crate) const LOOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `stop`: requests the loop answers go through
/// `to_loop`; `counters` answers the rest.
pub(super) fn serve(
    listener: &UnixListener,
    to_loop: &Sender<Asked>,
    counters: &mut dyn FnMut() -> Value,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => answer(stream, to_loop, counters),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn answer(stream: UnixStream, to_loop: &Sender<Asked>, counters: &mut dyn FnMut() -> Value) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    let reply = match reader.read_line(&mut line) {
        Ok(0) | Err(_) => return,
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => json!({"ok": false, "error": format!("not a request: {e}")}),
            Ok(Request::Counters) => counters(),
            Ok(request) => {
                let (tx, rx) = sync_channel(1);
                if to_loop.send(Asked { request, reply: tx }).is_err() {
                    json!({"ok": false, "error": "the control plane is stopping"})
                } else {
                    rx.recv_timeout(LOOP_TIMEOUT).unwrap_or_else(|_| {
                        json!({"ok": false, "error": "the control plane did not answer in 10 s"})
                    })
                }
            }
        },
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = (&stream).write_all(&out);
}

/// Binds the control socket at `path` (a stale one left by a killed
/// process is replaced; one a running appliance answers on is not), owner
/// only.
pub(super) fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is answered by a running appliance", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Sends `request` to the appliance listening at `path` and returns its
/// answer.
pub fn ask(path: &Path, request: &Request, wait: Duration) -> Result<Value, String> {
    let stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "{}: {e} (is the appliance running with this configuration?)",
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(wait))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| format!("no answer: {e}"))?;
    serde_json::from_str(&answer).map_err(|e| format!("an answer that is not JSON: {e}"))
}

/// The loop's side: requests waiting for it.
#[derive(Debug)]
pub struct Inbox(pub(super) Receiver<Asked>);

impl Inbox {
    /// The next request, if one is waiting.
    pub fn next(&self) -> Option<Asked> {
        self.0.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_the_client_writes_them() {
        for (text, req) in [
            (r#"{"cmd":"calls"}"#, Request::Calls),
            (
                r#"{"cmd":"call","id":"a@b"}"#,
                Request::Call { id: "a@b".into() },
            ),
            (
                r#"{"cmd":"drain","deadline_secs":30}"#,
                Request::Drain {
                    deadline_secs: Some(30),
                },
            ),
            (r#"{"cmd":"reload"}"#, Request::Reload),
            (
                r#"{"cmd":"capture","id":"a@b"}"#,
                Request::Capture {
                    id: "a@b".into(),
                    stop: false,
                    seconds: None,
                },
            ),
            (
                r#"{"cmd":"capture","id":"a@b","stop":true,"seconds":5}"#,
                Request::Capture {
                    id: "a@b".into(),
                    stop: true,
                    seconds: Some(5),
                },
            ),
            (
                r#"{"cmd":"log-level","level":"debug"}"#,
                Request::LogLevel {
                    level: "debug".into(),
                },
            ),
        ] {
            assert_eq!(
                serde_json::from_str::<Request>(text).unwrap(),
                req,
                "{text}"
            );
            let back = serde_json::to_string(&req).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&back).unwrap(), req);
        }
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
        let dir = std::env::temp_dir().join(format!("rvoip-ctl-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = socket_path(&dir);
        let first = bind(&path).unwrap();
        assert!(bind(&path).is_err(), "a live socket is kept");
        drop(first);
        // The file is left behind, as by a killed process: taken over.
        assert!(path.exists());
        assert!(bind(&path).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
