//! DTLS on a WebRTC leg: any datagrams, to a leg in either role, end in
//! an error or wait for more, never a panic; no keys without a handshake
//! with the certificate the fingerprint names.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::entropy::SystemEntropy;
use rvoip_dataplane::media::dtls::{DtlsIdentity, DtlsLeg, Fingerprint, Role};

fn identity() -> &'static DtlsIdentity {
    static I: OnceLock<DtlsIdentity> = OnceLock::new();
    I.get_or_init(|| DtlsIdentity::generate(&SystemEntropy::new()).unwrap_or_else(|e| panic!("{e}")))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let role = if mode & 1 == 0 { Role::Passive } else { Role::Active };
    let start = Instant::now();
    let Ok(mut leg) = DtlsLeg::new(identity(), role, Fingerprint([7; 32]), start) else {
        return;
    };
    let mut step = 0u64;
    for packet in rest.split(|b| *b == 0xff).take(16) {
        step += 1;
        let now = start + Duration::from_millis(step * 300);
        if leg.on_packet(packet, now, &mut |_| {}).is_err() {
            break;
        }
    }
    assert!(leg.keys().is_none());
});
