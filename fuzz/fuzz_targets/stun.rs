//! ICE STUN: any packet is answered by the ICE-lite agent only when it is a
//! Binding request signed with the agent's password, never a panic, and an
//! answer is a whole STUN message; a controlling agent's checks take any
//! packet as a possible answer without panicking, and select a pair only
//! for an answer signed with the peer's password to one of its checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::media::ice::{IceChecks, IceLite, binding_success};

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
    let _ = binding_success(data, "VOkJxbRl1RmTxUk/WvJxBt");
    let mut checks = IceChecks::new("rvop", "evtj", "VOkJxbRl1RmTxUk/WvJxBt", &[from], 1, 0);
    checks.due(0, |_, _| {});
    // Without the transaction ID of a check sent, nothing is selected.
    assert_eq!(checks.on_response(data, from, 1), None);
});
