//! SRTP/SRTCP protect and unprotect, and SDES `a=crypto` parsing, on
//! arbitrary input: errors only, never a panic or an out-of-bounds write.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::srtp::{MasterKey, Mki, SrtpContext, SrtpParams, Suite, sdes};

fn context(suite: Suite, mki: bool) -> Option<SrtpContext> {
    let key = [7u8; 32];
    let salt = [9u8; 14];
    let mut m = MasterKey::new(
        suite,
        &key[..suite.master_key_len()],
        &salt[..suite.master_salt_len()],
    )?;
    if mki {
        m.mki = Some(Mki { value: 3, len: 2 });
        m.kdr_log2 = Some(2);
    }
    SrtpContext::new(&SrtpParams::new(suite, m))
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else { return };
    if op & 0x80 != 0 {
        let _ = sdes::parse(rest);
        return;
    }
    let suite = Suite::ALL[usize::from(op >> 3) % Suite::ALL.len()];
    let Some(mut ctx) = context(suite, op & 4 != 0) else { return };
    // Room after the packet varies, down to none.
    let room = usize::from(op & 0x40 != 0) * 40;
    let mut buf = rest.to_vec();
    buf.resize(rest.len() + room, 0);
    let len = rest.len();
    let _ = match op & 3 {
        0 => ctx.unprotect_rtp(&mut buf, len),
        1 => ctx.unprotect_rtcp(&mut buf, len),
        2 => ctx.protect_rtp(&mut buf, len),
        _ => ctx.protect_rtcp(&mut buf, len),
    };
    // A second packet exercises the stream state left by the first.
    let n = len.min(buf.len());
    let _ = ctx.unprotect_rtp(&mut buf, n);
});
