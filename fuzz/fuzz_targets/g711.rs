//! G.711 on arbitrary samples and codes: a decoded code encodes back to
//! itself (µ-law's negative zero to positive zero), and a sample comes
//! back within half a step of its segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_codecs::g711::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};

fuzz_target!(|data: &[u8]| {
    for &c in data {
        let back = ulaw_encode(ulaw_decode(c));
        assert!(back == c || (c == 0x7f && back == 0xff), "µ-law {c:#04x} → {back:#04x}");
        assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law {c:#04x}");
    }
    for w in data.chunks_exact(2) {
        let x = i16::from_le_bytes([w[0], w[1]]);
        for (got, name) in [(ulaw_decode(ulaw_encode(x)), "µ-law"), (alaw_decode(alaw_encode(x)), "A-law")] {
            let err = (i32::from(got) - i32::from(x)).abs();
            // The coarsest step is 1024 (µ-law, A-law) plus the clip above
            // the largest code.
            let clip = if name == "µ-law" { 32_124 } else { 32_256 };
            let within = err <= 1024 || i32::from(x).abs() > clip;
            assert!(within, "{name}: {x} → {got}");
        }
    }
});
