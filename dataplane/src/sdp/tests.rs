use super::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const OFFER: &[u8] = b"v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
a=ice-lite\r\n\
a=x-vendor-thing:keep me\r\n\
m=audio 49170 RTP/SAVP 0 8 111 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=rtcp:49171 IN IP4 198.51.100.7\r\n\
a=rtcp-mux\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n\
a=ice-ufrag:8hhY\r\n\
a=ice-pwd:asd88fgpdd777uzjYhagZg\r\n\
a=candidate:1 1 UDP 2130706431 198.51.100.7 49170 typ host\r\n\
a=end-of-candidates\r\n\
m=video 0 RTP/AVP 31\r\n";

fn parse(b: &[u8]) -> Sdp<'_> {
    Sdp::parse(b).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn typed_views() {
    let sdp = parse(OFFER);
    let o = sdp.origin().unwrap_or_else(|| panic!("origin"));
    assert_eq!(o.session_version, 2890844527);
    assert_eq!(
        sdp.connection().map(|c| c.address),
        Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)))
    );
    let audio = &sdp.media[0];
    assert_eq!(audio.media.port, 49170);
    assert_eq!(
        audio.payload_types().collect::<Vec<_>>(),
        vec![0, 8, 111, 101]
    );
    let opus = audio.rtpmap(111).unwrap_or_else(|| panic!("opus"));
    assert!(opus.is("OPUS"));
    assert_eq!((opus.clock_rate, opus.channels), (48000, Some(2)));
    assert_eq!(
        audio.fmtp(111).and_then(|f| f.get("useinbandfec")),
        Some(&b"1"[..])
    );
    assert_eq!(audio.ptime(), Some(20));
    assert_eq!(audio.direction(), Some(Direction::SendRecv));
    assert_eq!(
        audio.rtcp(),
        Some(Rtcp {
            port: 49171,
            address: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)))
        })
    );
    assert!(audio.rtcp_mux());
    let c: Vec<_> = audio.crypto().collect();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].suite, b"AES_CM_128_HMAC_SHA1_80");
    assert_eq!(c[0].keys[0].lifetime, Some(&b"2^20"[..]));
    assert_eq!(c[0].keys[0].mki, Some((&b"1"[..], &b"4"[..])));
    assert_eq!(
        audio.ice_credentials(),
        Some((&b"8hhY"[..], &b"asd88fgpdd777uzjYhagZg"[..]))
    );
    assert_eq!(audio.candidates().next().map(|c| c.port), Some(49170));
    assert_eq!(sdp.media[1].media.port, 0);
}

#[test]
fn writes_back_byte_exact() {
    assert_eq!(parse(OFFER).to_bytes(), OFFER);
}

#[test]
fn sbc_rewrite() {
    let mut sdp = parse(OFFER);
    let relay = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    sdp.set_connection_address(relay);
    sdp.media[0].set_port(30000);
    sdp.media[0].set_proto("RTP/AVP");
    sdp.media[0].remove_attribute("crypto");
    let left = sdp.media[0]
        .retain_formats(|pt, map| pt == 101 || map.is_some_and(|m| m.is("PCMA") || m.is("opus")));
    assert_eq!(left, 3);
    sdp.media[0].prefer_formats(&[8]);
    sdp.remove_ice();
    sdp.set_session_version(2890844528);
    let text = String::from_utf8(sdp.to_bytes()).unwrap_or_default();
    let again = parse(text.as_bytes());
    assert!(
        text.contains("o=alice 2890844526 2890844528 IN IP4 127.0.0.1\r\n"),
        "{text}"
    );
    assert!(text.contains("c=IN IP4 127.0.0.1\r\n"));
    assert!(
        text.contains("m=audio 30000 RTP/AVP 8 111 101\r\n"),
        "{text}"
    );
    assert!(
        !text.contains("PCMU")
            && !text.contains("crypto")
            && !text.contains("candidate")
            && !text.contains("ice-")
    );
    assert!(text.contains("a=fmtp:111 minptime=10;useinbandfec=1\r\n"));
    assert!(text.contains("a=x-vendor-thing:keep me\r\n"));
    assert!(!text.contains("198.51.100.7 49170"));
    assert_eq!(again.media[0].direction(), Some(Direction::SendRecv));
    let mut again = again;
    again.media[0].set_direction(Direction::SendOnly);
    assert_eq!(again.media[0].direction(), Some(Direction::SendOnly));
    assert_eq!(
        again.media[0]
            .attributes()
            .filter(|(n, _)| Direction::from_name(n).is_some())
            .count(),
        1
    );
}

#[test]
fn ipv6_and_media_level_connections() {
    // RFC 5118 §4.8 shape: one section per address family.
    let text = b"v=0\no=bob 280744730 28977631 IN IP4 host.example.com\ns=\nt=0 0\n\
m=audio 22334 RTP/AVP 0\nc=IN IP4 192.0.2.1\nm=video 6060 RTP/AVP 34\nc=IN IP6 2001:db8::1\n";
    let sdp = parse(text);
    assert_eq!(
        sdp.media_connection(1).map(|c| c.address),
        Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))
    );
    assert!(sdp.to_bytes().starts_with(b"v=0\r\no=bob"));
}

#[test]
fn rejects_what_it_cannot_use() {
    for (bad, why) in [
        (&b"o=a 1 1 IN IP4 1.2.3.4\r\nv=0\r\n"[..], "first line"),
        (b"v=0\r\ns=-\r\n", "no o="),
        (
            b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 999.1.1.1\r\n",
            "bad c=",
        ),
        (
            b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\nc=IN IP4 1.2.3.4\r\n",
            "port",
        ),
        (
            b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP\r\nc=IN IP4 1.2.3.4\r\n",
            "no formats",
        ),
        (
            b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\n",
            "no connection",
        ),
        (b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nbogus\r\n", "not a line"),
    ] {
        assert!(Sdp::parse(bad).is_err(), "{why}");
    }
    let many = b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\n"
        .iter()
        .copied()
        .chain(b"a=x\r\n".repeat(600))
        .collect::<Vec<u8>>();
    assert_eq!(
        Sdp::parse(&many).map(|_| ()).map_err(|e| e.reason),
        Err("too many lines")
    );
}
