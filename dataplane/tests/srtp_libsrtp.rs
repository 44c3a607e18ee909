//! Interop with libsrtp2 (Debian `libsrtp2-dev`), in both directions, for
//! every suite: libsrtp2 unprotects what rvoip protects and rvoip unprotects
//! what libsrtp2 protects, RTP and RTCP, across a sequence-number wrap, with
//! and without an MKI. libsrtp2 runs behind `tests/libsrtp/oracle.c`, built
//! here with the system C compiler.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use rvoip_dataplane::media::rtp::write_rtp_header;
use rvoip_dataplane::srtp::{MasterKey, Mki, SrtpContext, SrtpParams, Suite, sdes};

fn oracle_binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/libsrtp/oracle.c");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libsrtp-oracle");
        let status = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-lsrtp2")
            .status()
            .unwrap_or_else(|e| panic!("cannot run cc: {e}"));
        assert!(
            status.success(),
            "building the libsrtp2 oracle failed: install libsrtp2-dev (.ci/run does)"
        );
        out
    })
}

struct Oracle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    fn start(suite: Suite, master: &MasterKey, mki: Option<Mki>) -> Oracle {
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

    fn call(&mut self, op: &str, pkt: &[u8]) -> Result<Vec<u8>, String> {
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut h = [0u8; 12];
    write_rtp_header(
        &mut h,
        seq.is_multiple_of(50),
        0,
        seq,
        u32::from(seq) * 160,
        ssrc,
    );
    let mut p = h.to_vec();
    p.extend((0..160u32).map(|i| (i as u8).wrapping_mul(31) ^ (seq as u8)));
    p
}

fn rtcp_sr(ssrc: u32, n: u8) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend(ssrc.to_be_bytes());
    p.extend((0..20).map(|i| i ^ n));
    p
}

fn ours(ctx: &mut SrtpContext, pkt: &[u8], op: &str) -> Result<Vec<u8>, String> {
    let mut buf = pkt.to_vec();
    buf.resize(pkt.len() + 64, 0);
    let r = match op {
        "p" => ctx.protect_rtp(&mut buf, pkt.len()),
        "u" => ctx.unprotect_rtp(&mut buf, pkt.len()),
        "pc" => ctx.protect_rtcp(&mut buf, pkt.len()),
        _ => ctx.unprotect_rtcp(&mut buf, pkt.len()),
    };
    let n = r.map_err(|e| format!("{e:?}"))?;
    buf.truncate(n);
    Ok(buf)
}

fn both_ways(suite: Suite, mki: Option<Mki>) {
    let rng = ring::rand::SystemRandom::new();
    let mut master = sdes::generate(suite, &rng).unwrap_or_else(|| panic!("key"));
    master.mki = mki;
    let params = SrtpParams::new(suite, master.clone());
    let mut oracle = Oracle::start(suite, &master, mki);
    let new = |p: &SrtpParams| SrtpContext::new(p).unwrap_or_else(|| panic!("context"));
    let (mut tx, mut rx) = (new(&params), new(&params));
    // rvoip → libsrtp2, across the wrap (ROC 0 → 1).
    for seq in (65_400u32..65_700).map(|s| s as u16) {
        let plain = rtp(seq, 0x1111_2222);
        let srtp = ours(&mut tx, &plain, "p").unwrap_or_else(|e| panic!("{suite:?}: {e}"));
        let back = oracle.call("u", &srtp);
        assert_eq!(
            back,
            Ok(plain),
            "{suite:?} seq {seq}: libsrtp2 refused rvoip's packet"
        );
    }
    // libsrtp2 → rvoip.
    for seq in (65_400u32..65_700).map(|s| s as u16) {
        let plain = rtp(seq, 0x3333_4444);
        let srtp = oracle
            .call("p", &plain)
            .unwrap_or_else(|e| panic!("{suite:?}: libsrtp2 protect: {e}"));
        assert_eq!(
            ours(&mut rx, &srtp, "u"),
            Ok(plain),
            "{suite:?} seq {seq}: rvoip refused libsrtp2's packet"
        );
    }
    // RTCP both ways.
    for n in 0..20 {
        let sr = rtcp_sr(0x1111_2222, n);
        let s = ours(&mut tx, &sr, "pc").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            oracle.call("uc", &s),
            Ok(sr),
            "{suite:?}: SRTCP to libsrtp2"
        );
        let sr = rtcp_sr(0x3333_4444, n);
        let s = oracle.call("pc", &sr).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ours(&mut rx, &s, "uc"),
            Ok(sr),
            "{suite:?}: SRTCP from libsrtp2"
        );
    }
    // A tampered packet from libsrtp2 is refused by rvoip, and vice versa.
    let mut bad = oracle.call("p", &rtp(200, 0x3333_4444)).unwrap_or_default();
    bad[30] ^= 0x40;
    assert_eq!(ours(&mut rx, &bad, "u"), Err("AuthFailed".to_string()));
    let mut bad = ours(&mut tx, &rtp(200, 0x1111_2222), "p").unwrap_or_default();
    bad[30] ^= 0x40;
    assert!(
        oracle.call("u", &bad).is_err(),
        "{suite:?}: libsrtp2 accepted a tampered packet"
    );
}

#[test]
fn every_suite_interoperates_with_libsrtp2_both_ways() {
    for suite in Suite::ALL {
        both_ways(suite, None);
    }
}

#[test]
fn packets_with_an_mki_interoperate_with_libsrtp2() {
    for suite in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm] {
        both_ways(
            suite,
            Some(Mki {
                value: 0x0102,
                len: 2,
            }),
        );
    }
}
