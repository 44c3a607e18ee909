//! Known-answer tests: every vector of `../shared/conformance/srtp-vectors.md`
//! that covers a suite rvoip implements (RFC 3711 B.2/B.3, libsrtp's
//! `srtp_validate*` packets, RFC 7714 §16/§17), plus tamper and replay.

use super::keys::{Cipher, HmacSha1, Labels, SessionKeys, aes_cm, aes_f8, prf};
use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}

fn ctx(suite: Suite, key: &str, salt: &str) -> SrtpContext {
    let master = MasterKey::new(suite, &hex(key), &hex(salt)).unwrap_or_else(|| panic!("key"));
    SrtpContext::new(&SrtpParams::new(suite, master)).unwrap_or_else(|| panic!("context"))
}

/// Runs `f` on a copy of `pkt` in a buffer with room for the tag.
fn apply(
    pkt: &[u8],
    f: impl FnOnce(&mut [u8], usize) -> Result<usize, SrtpError>,
) -> Result<Vec<u8>, SrtpError> {
    let mut buf = vec![0u8; pkt.len() + 64];
    buf[..pkt.len()].copy_from_slice(pkt);
    let n = f(&mut buf, pkt.len())?;
    buf.truncate(n);
    Ok(buf)
}

const RTP_CAFEBABE: &str = "800f1234 decafbad cafebabe abababab abababab abababab abababab";
const RTCP_CAFEBABE: &str = "81c8000b cafebabe abababab abababab abababab abababab";

#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
    let cipher = Cipher::Cm128(
        <aes::Aes128Enc as aes::cipher::KeyInit>::new_from_slice(&key)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let iv: [u8; 16] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
        .try_into()
        .unwrap_or_else(|_| panic!("iv"));
    let mut ks = vec![0u8; 1_044_512];
    aes_cm(&cipher, &iv, &mut ks);
    assert_eq!(
        ks[..48],
        hex(
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB 41E95B3BB0A2E8DD477901E4FCA894C0"
        )[..]
    );
    assert_eq!(
        ks[ks.len() - 48..],
        hex(
            "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE 6A2CC3787889374FBEB4C81B17BA6C44"
        )[..]
    );
}

#[test]
fn rfc3711_b3_key_derivation() {
    let m = MasterKey::new(
        Suite::AesCm128HmacSha1_80,
        &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
        &hex("0EC675AD498AFEEBB6960B3AABE6"),
    )
    .unwrap_or_else(|| panic!("key"));
    let mut k = [0u8; 16];
    prf(&m, 0x00, 0, &mut k);
    assert_eq!(k[..], hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
    let mut s = [0u8; 14];
    prf(&m, 0x02, 0, &mut s);
    assert_eq!(s[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
    let mut a = [0u8; 94];
    prf(&m, 0x01, 0, &mut a);
    assert_eq!(
        a[..],
        hex(
            "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
        )[..]
    );
    // The session keys the context derives are these.
    let keys = SessionKeys::derive(Suite::AesCm128HmacSha1_80, &m, Labels::Rtp, 0)
        .unwrap_or_else(|| panic!("derive"));
    assert_eq!(keys.salt[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
}

/// Asserts protect gives `want`, unprotect gives `plain` back, and any
/// flipped bit after the header (ciphertext, index, tag) is refused.
fn known_answer(
    protect: &mut SrtpContext,
    unprotect: &mut SrtpContext,
    rtcp: bool,
    plain: &[u8],
    want: &[u8],
) {
    let got = if rtcp {
        apply(plain, |b, n| protect.protect_rtcp(b, n))
    } else {
        apply(plain, |b, n| protect.protect_rtp(b, n))
    };
    assert_eq!(got.as_deref().map(hex_of), Ok(hex_of(want)));
    for bit in [8 * 12 + 3, 8 * (want.len() - 1), 8 * (want.len() - 5) + 7] {
        let mut bad = want.to_vec();
        bad[bit / 8] ^= 1 << (bit % 8);
        let r = if rtcp {
            apply(&bad, |b, n| unprotect.unprotect_rtcp(b, n))
        } else {
            apply(&bad, |b, n| unprotect.unprotect_rtp(b, n))
        };
        assert!(r.is_err(), "bit {bit} flipped was accepted");
    }
    let back = if rtcp {
        apply(want, |b, n| unprotect.unprotect_rtcp(b, n))
    } else {
        apply(want, |b, n| unprotect.unprotect_rtp(b, n))
    };
    assert_eq!(back.as_deref().map(hex_of), Ok(hex_of(plain)));
    // The same packet again is a replay.
    let again = if rtcp {
        apply(want, |b, n| unprotect.unprotect_rtcp(b, n))
    } else {
        apply(want, |b, n| unprotect.unprotect_rtp(b, n))
    };
    assert_eq!(again, Err(SrtpError::Replayed));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn libsrtp_validate_aes_cm_128_hmac_sha1_80() {
    let (k, s) = (
        "e1f97a0d3e018be0d64fa32c06de4139",
        "0ec675ad498afeebb6960b3aabe6",
    );
    let suite = Suite::AesCm128HmacSha1_80;
    let (mut tx, mut rx) = (ctx(suite, k, s), ctx(suite, k, s));
    known_answer(
        &mut tx,
        &mut rx,
        false,
        &hex(RTP_CAFEBABE),
        &hex(
            "800f1234 decafbad cafebabe 4e55dc4c e79978d8 8ca4d215 949d2402 b78d6acc 99ea179b 8dbb",
        ),
    );
    known_answer(
        &mut tx,
        &mut rx,
        true,
        &hex(RTCP_CAFEBABE),
        &hex(
            "81c8000b cafebabe 7128035b e487b9bd bef89041 f977a5a8 80000001 993e08cd 54d6c123 0798",
        ),
    );
}

#[test]
fn libsrtp_validate_aes_256_cm_hmac_sha1_80() {
    let k = "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6";
    let s = "3b04803de51ee7c96423ab5b78d2";
    let suite = Suite::AesCm256HmacSha1_80;
    let (mut tx, mut rx) = (ctx(suite, k, s), ctx(suite, k, s));
    known_answer(
        &mut tx,
        &mut rx,
        false,
        &hex(RTP_CAFEBABE),
        &hex(
            "800f1234 decafbad cafebabe f1d9de17 ff251ff1 aa007774 b0b4b40d a08d9d9a 5b3a55d8 873b",
        ),
    );
}

#[test]
fn libsrtp_validate_gcm_128_with_key_derivation() {
    let (k, s) = (
        "000102030405060708090a0b0c0d0e0f",
        "a0a1a2a3a4a5a6a7a8a9aaab",
    );
    let suite = Suite::AeadAes128Gcm;
    let (mut tx, mut rx) = (ctx(suite, k, s), ctx(suite, k, s));
    known_answer(
        &mut tx,
        &mut rx,
        false,
        &hex(RTP_CAFEBABE),
        &hex(
            "800f1234 decafbad cafebabe c5002ede 04cfdd2e b91159e0 880aa06e d2976826 f796b201 df3131a1 27e8a392",
        ),
    );
    known_answer(
        &mut tx,
        &mut rx,
        true,
        &hex(RTCP_CAFEBABE),
        &hex(
            "81c8000b cafebabe c98b8b5d f0392a55 852b6c21 ac8e7025 c52c6fbe a2b3b446 ea31123b a88ce61e 80000001",
        ),
    );
}

/// A context with the RFC 7714 session keys put in directly (the RFC's
/// examples start after key derivation).
fn rfc7714(suite: Suite, key: &str, unencrypted: bool) -> SrtpContext {
    let mut c = ctx(
        suite,
        &"00".repeat(suite.master_key_len()),
        &"00".repeat(12),
    );
    let salt = hex("517569642070726f2071756f");
    let alg = if suite == Suite::AeadAes128Gcm {
        &ring::aead::AES_128_GCM
    } else {
        &ring::aead::AES_256_GCM
    };
    for keys in [&mut c.rtp, &mut c.rtcp] {
        let k = ring::aead::UnboundKey::new(alg, &hex(key)).unwrap_or_else(|e| panic!("{e}"));
        keys.cipher = Cipher::Gcm(keys::Wiped::new(ring::aead::LessSafeKey::new(k)));
        keys.salt[..12].copy_from_slice(&salt);
    }
    c.encrypt_rtp = !unencrypted;
    c
}

const GALLIA: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
                      69736120 696e2070 61727465 73207472 6573";
const KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

#[test]
fn rfc7714_section16_rtp() {
    let cases = [
        (
            Suite::AeadAes128Gcm,
            KEY_128,
            false,
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
          0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
        ),
        (
            Suite::AeadAes128Gcm,
            KEY_128,
            true,
            "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
          69736120 696e2070 61727465 73207472 65732249 3f82d2bc e397e9d7 9e3b19aa 4216",
        ),
        (
            Suite::AeadAes256Gcm,
            KEY_256,
            false,
            "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238
          9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
        ),
        (
            Suite::AeadAes256Gcm,
            KEY_256,
            true,
            "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
          69736120 696e2070 61727465 73207472 6573a866 d5910f88 7463067c eefec452 15d4",
        ),
    ];
    for (suite, key, unencrypted, want) in cases {
        let (mut tx, mut rx) = (
            rfc7714(suite, key, unencrypted),
            rfc7714(suite, key, unencrypted),
        );
        known_answer(&mut tx, &mut rx, false, &hex(GALLIA), &hex(want));
    }
}

const RTCP_7714: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
                         deadbeef deadbeef deadbeef deadbeef deadbeef";

#[test]
fn rfc7714_section17_rtcp() {
    let ssrc = 0x4d61_7273;
    for (suite, key, want) in [
        (Suite::AeadAes128Gcm, KEY_128,
         "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
          c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade 800005d4"),
        (Suite::AeadAes256Gcm, KEY_256,
         "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50
          a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c b26ac3be 800005d4"),
    ] {
        let (mut tx, mut rx) = (rfc7714(suite, key, false), rfc7714(suite, key, false));
        tx.set_rtcp_sent(ssrc, 0x5d3);
        known_answer(&mut tx, &mut rx, true, &hex(RTCP_7714), &hex(want));
    }
    // 17.3 and 17.4: tagged only (E = 0); rvoip verifies such packets.
    for (suite, key, tagged) in [
        (
            Suite::AeadAes128Gcm,
            KEY_128,
            "841dd968 3dd78ec9 2ae58790 125f62b3 000005d4",
        ),
        (
            Suite::AeadAes256Gcm,
            KEY_256,
            "91db4afb feee5a97 8fab4393 ed2615fe 000005d4",
        ),
    ] {
        let pkt = [hex(RTCP_7714), hex(tagged)].concat();
        let mut rx = rfc7714(suite, key, false);
        let mut bad = pkt.clone();
        bad[20] ^= 0x10;
        assert_eq!(
            apply(&bad, |b, n| rx.unprotect_rtcp(b, n)),
            Err(SrtpError::AuthFailed)
        );
        assert_eq!(
            apply(&pkt, |b, n| rx.unprotect_rtcp(b, n)).map(|p| hex_of(&p)),
            Ok(hex_of(&hex(RTCP_7714)))
        );
    }
}

fn rtp(seq: u16, ssrc: u32, payload: usize) -> Vec<u8> {
    let mut h = [0u8; 12];
    crate::media::rtp::write_rtp_header(
        &mut h,
        false,
        0,
        seq,
        u32::from(seq) * 160,
        crate::media::rtp::Ssrc(ssrc),
    );
    let mut p = h.to_vec();
    p.extend((0..payload).map(|i| (i as u8) ^ (seq as u8)));
    p
}

#[test]
fn every_suite_round_trips_across_the_sequence_wrap_with_reordering() {
    let rng = crate::entropy::SeededEntropy::new(11);
    for suite in Suite::ALL {
        let master = sdes::generate(suite, &rng).unwrap_or_else(|| panic!("key"));
        let params = SrtpParams::new(suite, master);
        let mut tx = SrtpContext::new(&params).unwrap_or_else(|| panic!("ctx"));
        let mut rx = SrtpContext::new(&params).unwrap_or_else(|| panic!("ctx"));
        // Sent in order across the wrap; delivered with neighbours swapped.
        let seqs: Vec<u16> = (65_500u32..65_600).map(|s| s as u16).collect();
        let protected: Vec<Vec<u8>> = seqs
            .iter()
            .map(|&s| {
                apply(&rtp(s, 7, 160), |b, n| tx.protect_rtp(b, n))
                    .unwrap_or_else(|e| panic!("{suite:?} {s}: {e:?}"))
            })
            .collect();
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        for pair in order.chunks_mut(2) {
            pair.reverse();
        }
        for i in order {
            let plain = apply(&protected[i], |b, n| rx.unprotect_rtp(b, n))
                .unwrap_or_else(|e| panic!("{suite:?} seq {}: {e:?}", seqs[i]));
            assert_eq!(plain, rtp(seqs[i], 7, 160));
        }
        let seven = crate::media::rtp::Ssrc(7);
        assert_eq!((tx.roc(seven), rx.roc(seven)), (Some(1), Some(1)));
        // RTCP both ways.
        let sr = hex(RTCP_CAFEBABE);
        for _ in 0..3 {
            let p = apply(&sr, |b, n| tx.protect_rtcp(b, n)).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(p.len(), sr.len() + 4 + suite.rtcp_tag_len());
            assert_eq!(apply(&p, |b, n| rx.unprotect_rtcp(b, n)), Ok(sr.clone()));
        }
    }
}

#[test]
fn bad_packets_are_refused_by_reason() {
    let suite = Suite::AesCm128HmacSha1_80;
    let rng = crate::entropy::SeededEntropy::new(11);
    let mut master = sdes::generate(suite, &rng).unwrap_or_else(|| panic!("key"));
    master.mki = Some(Mki { value: 5, len: 2 });
    let mut tx =
        SrtpContext::new(&SrtpParams::new(suite, master.clone())).unwrap_or_else(|| panic!());
    let mut rx = SrtpContext::new(&SrtpParams::new(suite, master)).unwrap_or_else(|| panic!());
    let p =
        apply(&rtp(10, 1, 160), |b, n| tx.protect_rtp(b, n)).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(p.len(), 172 + 2 + 10);
    assert_eq!(&p[172..174], &[0, 5]);
    // Truncated: shorter than header + MKI + tag.
    assert_eq!(
        apply(&p[..20], |b, n| rx.unprotect_rtp(b, n)),
        Err(SrtpError::Truncated)
    );
    assert_eq!(
        apply(&p[..5], |b, n| rx.unprotect_rtp(b, n)),
        Err(SrtpError::Truncated)
    );
    // Another MKI.
    let mut other = p.clone();
    other[173] = 6;
    assert_eq!(
        apply(&other, |b, n| rx.unprotect_rtp(b, n)),
        Err(SrtpError::UnknownMki)
    );
    // Tampered payload.
    let mut bad = p.clone();
    bad[40] ^= 1;
    assert_eq!(
        apply(&bad, |b, n| rx.unprotect_rtp(b, n)),
        Err(SrtpError::AuthFailed)
    );
    // The genuine one passes once, then is a replay.
    assert!(apply(&p, |b, n| rx.unprotect_rtp(b, n)).is_ok());
    assert_eq!(
        apply(&p, |b, n| rx.unprotect_rtp(b, n)),
        Err(SrtpError::Replayed)
    );
    // A sender never protects the same index twice.
    assert_eq!(
        apply(&rtp(10, 1, 160), |b, n| tx.protect_rtp(b, n)),
        Err(SrtpError::Replayed)
    );
    // No room for the tag.
    let mut tight = rtp(11, 1, 160);
    let n = tight.len();
    assert_eq!(tx.protect_rtp(&mut tight, n), Err(SrtpError::NoRoom));
    // After a re-key, packets under the old key fail authentication.
    let mut newer = sdes::generate(suite, &rng).unwrap_or_else(|| panic!("key"));
    newer.mki = Some(Mki { value: 5, len: 2 });
    let mut rekeyed = SrtpContext::new(&SrtpParams::new(suite, newer)).unwrap_or_else(|| panic!());
    let old =
        apply(&rtp(12, 1, 160), |b, n| tx.protect_rtp(b, n)).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        apply(&old, |b, n| rekeyed.unprotect_rtp(b, n)),
        Err(SrtpError::AuthFailed)
    );
}

#[test]
fn the_key_lifetime_is_enforced() {
    let suite = Suite::AeadAes128Gcm;
    let rng = crate::entropy::SeededEntropy::new(11);
    let mut master = sdes::generate(suite, &rng).unwrap_or_else(|| panic!("key"));
    master.lifetime = 3;
    let mut tx = SrtpContext::new(&SrtpParams::new(suite, master)).unwrap_or_else(|| panic!());
    for s in 0..3 {
        assert!(apply(&rtp(s, 1, 20), |b, n| tx.protect_rtp(b, n)).is_ok());
    }
    assert_eq!(
        apply(&rtp(3, 1, 20), |b, n| tx.protect_rtp(b, n)),
        Err(SrtpError::KeyExpired)
    );
}

#[test]
fn a_key_derivation_rate_rekeys_both_sides_alike() {
    let suite = Suite::AesCm128HmacSha1_80;
    let rng = crate::entropy::SeededEntropy::new(11);
    let mut master = sdes::generate(suite, &rng).unwrap_or_else(|| panic!("key"));
    master.kdr_log2 = Some(4);
    let params = SrtpParams::new(suite, master);
    let mut tx = SrtpContext::new(&params).unwrap_or_else(|| panic!());
    let mut rx = SrtpContext::new(&params).unwrap_or_else(|| panic!());
    let mut first = None;
    for s in 0..40u16 {
        let p =
            apply(&rtp(s, 9, 40), |b, n| tx.protect_rtp(b, n)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(apply(&p, |b, n| rx.unprotect_rtp(b, n)), Ok(rtp(s, 9, 40)));
        if s == 0 {
            first = Some(p);
        }
    }
    assert_eq!(tx.counters().rekeys, 2);
    assert_eq!(rx.counters().rekeys, 2);
    // Without KDR the keystream of packet 0 would be the same as this one's.
    let mut plain_kdr0 = SrtpContext::new(&SrtpParams::new(suite, {
        let mut m = params.master.clone();
        m.kdr_log2 = None;
        m
    }))
    .unwrap_or_else(|| panic!());
    let p0 = apply(&rtp(0, 9, 40), |b, n| plain_kdr0.protect_rtp(b, n))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(first, Some(p0), "epoch 0 uses the r = 0 keys either way");
}

#[test]
fn hmac_sha1_matches_rfc2202_and_the_hmac_crate_at_every_length() {
    // RFC 2202 test case 1 (20-octet key).
    let mac = HmacSha1::new(&[0x0b; 20]);
    assert_eq!(
        hex_of(&mac.mac(b"Hi There", &[])),
        "b617318655057264e28bc0b6fb378c8ef146be00"
    );
    // Every length across the one/two padding block boundary, with a tail.
    use hmac::{KeyInit, Mac};
    let key: [u8; 20] = std::array::from_fn(|i| i as u8 * 7);
    let ours = HmacSha1::new(&key);
    let data: Vec<u8> = (0..300u32).map(|i| (i * 13) as u8).collect();
    for len in 0..data.len() {
        for tail in [&[][..], &[1, 2, 3, 4][..]] {
            let mut m = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&key)
                .unwrap_or_else(|_| panic!());
            m.update(&data[..len]);
            m.update(tail);
            assert_eq!(
                ours.mac(&data[..len], tail)[..],
                m.finalize().into_bytes()[..],
                "len {len}"
            );
        }
    }
}

#[test]
fn rfc3711_b1_aes_f8() {
    use aes::cipher::KeyInit;
    let key = hex("234829008467be186c3de14aae72d62c");
    // The vector's salt is 32 bits: m = salt || 0x55... (RFC 3711 B.1).
    let mut m = [0x55u8; 16];
    m[..4].copy_from_slice(&hex("32f2870d"));
    let masked: Vec<u8> = key.iter().zip(m.iter()).map(|(k, m)| k ^ m).collect();
    assert_eq!(hex_of(&masked), "11baae0dd132eb4d3968b41ffb278379");
    let cipher = Cipher::F8 {
        key: aes::Aes128Enc::new_from_slice(&key).unwrap_or_else(|e| panic!("{e}")),
        masked: aes::Aes128Enc::new_from_slice(&masked).unwrap_or_else(|e| panic!("{e}")),
    };
    // IV = 0x00 || M || PT || SEQ || TS || SSRC || ROC.
    let header = hex("806e5cba50681de55c621599");
    let mut iv = [0u8; 16];
    iv[1..12].copy_from_slice(&header[1..]);
    iv[12..].copy_from_slice(&hex("d462564a"));
    assert_eq!(hex_of(&iv), "006e5cba50681de55c621599d462564a");
    let mut payload =
        hex("70736575646f72616e646f6d6e657373 20697320746865206e65787420626573 74207468696e67");
    aes_f8(&cipher, &iv, &mut payload);
    assert_eq!(
        hex_of(&payload),
        hex_of(&hex(
            "019ce7a26e7854014a6366aa95d4eefd 1ad4172a14f9faf455b7f1d4b62bd08f 562c0eef7c4802"
        ))
    );
    // The same IV layout through a context: protect then unprotect.
    let suite = Suite::F8128HmacSha1_80;
    let (mut tx, mut rx) = (
        ctx(
            suite,
            "234829008467be186c3de14aae72d62c",
            "32f2870d555555555555555555aa",
        ),
        ctx(
            suite,
            "234829008467be186c3de14aae72d62c",
            "32f2870d555555555555555555aa",
        ),
    );
    let p = apply(&rtp(9, 3, 37), |b, n| tx.protect_rtp(b, n)).unwrap_or_else(|e| panic!("{e:?}"));
    assert_ne!(p[12..49], rtp(9, 3, 37)[12..]);
    assert_eq!(apply(&p, |b, n| rx.unprotect_rtp(b, n)), Ok(rtp(9, 3, 37)));
    let sr = hex(RTCP_CAFEBABE);
    let p = apply(&sr, |b, n| tx.protect_rtcp(b, n)).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(apply(&p, |b, n| rx.unprotect_rtcp(b, n)), Ok(sr));
}

/// Keys are never logged: nothing that holds one prints it with `{:?}`, in
/// any of the forms a log would show it (the `a=crypto` base64, hex, or
/// the bytes as a list).
#[test]
fn no_debug_form_shows_a_key() {
    use base64::Engine as _;
    let key_salt: Vec<u8> = (0xc1..0xc1 + 30).collect();
    let inline = base64::engine::general_purpose::STANDARD.encode(&key_salt);
    let attr =
        sdes::parse(format!("1 AES_CM_128_HMAC_SHA1_80 inline:{inline}|2^20|1:4").as_bytes())
            .unwrap_or_else(|e| panic!("{e:?}"));
    let params = SrtpParams::new(attr.suite, attr.master.clone());
    let context = SrtpContext::new(&params).unwrap_or_else(|| panic!("context"));
    let printed = [
        format!("{attr:?}"),
        format!("{:?}", attr.master),
        format!("{params:?}"),
        format!("{context:?}"),
        format!("{context:#?}"),
    ];
    let hex_lower: String = key_salt.iter().map(|b| format!("{b:02x}")).collect();
    let listed = format!("{}, {}, {}", key_salt[0], key_salt[1], key_salt[2]);
    let listed_hex = format!("{:#x}, {:#x}", key_salt[0], key_salt[1]);
    for p in &printed {
        for secret in [&inline[..8], &hex_lower[..8], &listed, &listed_hex] {
            assert!(!p.contains(secret), "{secret} in {p}");
        }
        assert!(!p.to_lowercase().contains(&hex_lower[..8]), "{p}");
    }
    // What is printed still says what the key is for.
    assert!(
        printed[0].contains("AesCm128HmacSha1_80") || printed[0].contains("suite"),
        "{}",
        printed[0]
    );
}
