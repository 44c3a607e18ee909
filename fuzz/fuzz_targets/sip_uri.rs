//! URIs: SIP, SIPS, tel and opaque, with every accessor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::sip::{Uri, unescape};

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = Uri::parse(data) {
        assert_eq!(u.as_bytes(), data);
        for _ in u.params.iter() {}
        let _ = (u.params.get("transport"), u.params.contains("lr"), u.host.map(|h| h.ip()));
        let mut out = Vec::new();
        u.user_unescaped(&mut out);
        let _ = u.user_is(b"alice");
        let again = Uri::parse(u.as_bytes());
        assert_eq!(again.map(|a| a.as_bytes().len()), Ok(data.len()));
    }
    let mut out = Vec::new();
    unescape(data, &mut out);
    assert!(out.len() <= data.len());
});
