//! ICE-lite STUN checks: any packet is answered only when it is a Binding
//! request signed with the agent's password, never a panic; an answer is a
//! whole STUN message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::media::ice::IceLite;

fuzz_target!(|data: &[u8]| {
    let mut ice = IceLite::new("evtj", "VOkJxbRl1RmTxUk/WvJxBt");
    let mut out = Vec::new();
    let from = std::net::SocketAddr::from(([192, 0, 2, 1], 32853));
    if let Ok(a) = ice.on_stun(data, from, 0, &mut out) {
        assert_eq!(a.len, out.len());
        assert_eq!(usize::from(u16::from_be_bytes([out[2], out[3]])) + 20, out.len());
        assert!(ice.consent(0));
    } else {
        assert!(out.is_empty());
    }
});
