//! libsrtp2 (Debian `libsrtp2-dev`) as an independent SRTP implementation,
//! behind `tests/libsrtp/oracle.c`, built with the system C compiler.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use rvoip_dataplane::srtp::{MasterKey, Mki, Suite};

pub fn oracle_binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/libsrtp/oracle.c");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libsrtp-oracle");
        // Built under a name of this process's and renamed into place: test
        // processes running side by side (nextest) never write a binary
        // another one is executing ("Text file busy").
        let tmp = out.with_extension(std::process::id().to_string());
        let status = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&tmp)
            .arg(&src)
            .arg("-lsrtp2")
            .status()
            .unwrap_or_else(|e| panic!("cannot run cc: {e}"));
        assert!(
            status.success(),
            "building the libsrtp2 oracle failed: install libsrtp2-dev (.ci/run does)"
        );
        std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        out
    })
}

pub struct Oracle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    pub fn start(suite: Suite, master: &MasterKey, mki: Option<Mki>) -> Oracle {
        let mut raw = [0u8; 46];
        let n = master.concatenated(&mut raw);
        let mut cmd = Command::new(oracle_binary());
        cmd.arg(suite.name()).arg(hex(&raw[..n]));
        if let Some(m) = mki {
            let be = m.value.to_be_bytes();
            cmd.arg(hex(&be[4 - usize::from(m.len)..]));
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("oracle: {e}"));
        let stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
        let stdout = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
        Oracle {
            child,
            stdin,
            stdout,
        }
    }

    pub fn call(&mut self, op: &str, pkt: &[u8]) -> Result<Vec<u8>, String> {
        writeln!(self.stdin, "{op} {}", hex(pkt)).unwrap_or_else(|e| panic!("{e}"));
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{e}"));
        match line.trim_end().split_once(' ') {
            Some(("ok", h)) => Ok(unhex(h)),
            _ => Err(line),
        }
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}
