use rvoip_dataplane::sip::*;
fn main() {
    for p in std::env::args().skip(1) {
        let b = std::fs::read(&p).unwrap();
        let framing = if b.windows(2).any(|w| w == b"\r\n") { Framing::Datagram } else { Framing::Text };
        let r = SipMessage::parse(&b, framing, &Limits::default()).and_then(|m| check(&m).map(|_| m));
        match r {
            Ok(_) => println!("{p}: valid"),
            Err(e) => println!("{p}: invalid {} {}", e.status(), e),
        }
    }
}
