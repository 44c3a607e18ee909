//! Interop with libsrtp2 (Debian `libsrtp2-dev`), in both directions, for
//! every suite: libsrtp2 unprotects what rvoip protects and rvoip unprotects
//! what libsrtp2 protects, RTP and RTCP, across a sequence-number wrap, with
//! and without an MKI. libsrtp2 runs behind `tests/libsrtp/oracle.c`, built
//! here with the system C compiler.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use common::libsrtp::Oracle;
use rvoip_dataplane::media::rtp::write_rtp_header;
use rvoip_dataplane::srtp::{Mki, SrtpContext, SrtpParams, Suite, sdes};

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut h = [0u8; 12];
    write_rtp_header(
        &mut h,
        seq.is_multiple_of(50),
        0,
        seq,
        u32::from(seq) * 160,
        rvoip_dataplane::media::rtp::Ssrc(ssrc),
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
    let rng = rvoip_dataplane::entropy::SeededEntropy::new(3);
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
    // libsrtp 2 has no AES-f8 (F8_128_HMAC_SHA1_80); it is checked against
    // the RFC 3711 B.1 vector instead.
    for suite in Suite::ALL
        .into_iter()
        .filter(|s| *s != Suite::F8128HmacSha1_80)
    {
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
