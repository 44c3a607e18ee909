//! The AF_XDP path's frame reader: any octets are a UDP datagram whose
//! payload lies inside the frame, or an error, never a panic; a datagram
//! read is written back as a frame that reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::xdp::frame::{build, headers_len, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(u) = parse(data) else { return };
    assert!(u.payload.end <= data.len() && u.payload.start <= u.payload.end);
    let payload = &data[u.payload.clone()];
    let mut out = vec![0u8; headers_len(u.src) + payload.len()];
    let h = headers_len(u.src);
    out[h..].copy_from_slice(payload);
    let n = build(&mut out, u.macs, u.src, u.dst, payload.len(), 1).unwrap_or_else(|| unreachable!());
    let again = parse(&out[..n]).unwrap_or_else(|e| panic!("a frame rvoip built does not read back: {e:?}"));
    assert_eq!((again.src, again.dst), (u.src, u.dst));
    assert_eq!(&out[again.payload], payload);
});
