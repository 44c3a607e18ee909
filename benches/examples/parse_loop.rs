//! Parses one of the benchmark messages N times: for callgrind and perf.
//! usage: parse_loop invite|ok [N] [view]
use rvoip_dataplane::sip::{Framing, Limits, SipMessage};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let msg = if args.get(1).map(String::as_str) == Some("ok") {
        rvoip_benches::OK_200
    } else {
        rvoip_benches::INVITE
    };
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let view = args.get(3).is_some();
    let mut sum = 0usize;
    for _ in 0..n {
        let Ok(m) = SipMessage::parse(
            std::hint::black_box(msg),
            Framing::Datagram,
            &Limits::DEFAULT,
        ) else {
            continue;
        };
        sum += m.header_count();
        if view {
            sum += m
                .top_via()
                .ok()
                .and_then(|v| v.branch())
                .map_or(0, <[u8]>::len);
            sum += m.cseq().map_or(0, |c| c.seq as usize);
            sum += m.call_id().map_or(0, <[u8]>::len);
            sum += m.from().ok().and_then(|f| f.tag()).map_or(0, <[u8]>::len);
            sum += m.to().ok().and_then(|t| t.tag()).map_or(0, <[u8]>::len);
            sum += m.max_forwards().ok().flatten().map_or(0, usize::from);
            sum += m.contacts().next().map_or(0, |c| c.is_ok() as usize);
        }
    }
    println!("{sum}");
}
