//! HEP3 packets: any octets are read as a packet or refused with a reason,
//! never a panic; a packet that reads is written again from what was read
//! and reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::hep;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = hep::read(data) else {
        return;
    };
    let mut out = Vec::new();
    if hep::write(&mut out, &p.meta, p.payload) {
        let again = hep::read(&out).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(again.payload, p.payload);
        assert_eq!(again.meta.agent, p.meta.agent);
        assert_eq!(again.meta.correlation.unwrap_or_default(), p.meta.correlation.unwrap_or_default());
    }
});
