//! The B2BUA (SIP core in SBC mode) on arbitrary message sequences, with the
//! real ng server behind its media orders (on a media plane without
//! sockets). Input: chunks separated by NUL. A chunk's first octet picks
//! the sender (bit 0: caller or core peer), whether the chunk is a message
//! or a response to the last request the SBC sent that way (bit 1: then
//! the next three octets are the status digits and the rest its extra
//! header lines and body), and how much simulated time passes first
//! (bits 2..7, × 150 ms). Numbers starting with 9 go to a trunk that is a
//! DNS name; a chunk's length picks what the name resolves to when a
//! resolution is asked (two servers, one, no such name, servers failing),
//! and every seventh length reports the first core peer unreachable.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;

#[path = "fake_media.rs"]
mod fake_media;
use fake_media::FakeMedia;
use rvoip_controlplane::b2bua::{B2b, B2bConfig};
use rvoip_controlplane::element::{CoreConfig, Inbound, Outbound, SipCore, Transport};
use rvoip_controlplane::registrar::location::LocationService;
use rvoip_controlplane::registrar::{Registrar, RegistrarConfig, Users};
use rvoip_controlplane::sbc::journal::Journal;
use rvoip_controlplane::sbc::media::{MediaOrders, OrderRecord};
use rvoip_controlplane::sbc::policy::Policy;
use rvoip_dataplane::entropy::SeededEntropy;
use rvoip_dataplane::media::orders::{MediaOrder, OrderError, Outcome};
use rvoip_dataplane::ng::NgServer;
use rvoip_dataplane::sip::{Framing, HeaderName, Limits, SipMessage};


struct Relay(NgServer<FakeMedia>, std::collections::VecDeque<(u64, Outcome)>);

impl MediaOrders for Relay {
    fn send(&mut self, _now: u64, token: u64, order: OrderRecord) -> Result<(), OrderError> {
        // Every record the B2BUA writes reads back as an order.
        let order: MediaOrder = order.order().expect("an order record reads back");
        let outcome = Outcome::of(self.0.execute(order, 0));
        self.1.push_back((token, outcome));
        Ok(())
    }
    fn poll(&mut self, _now: u64) -> Option<(u64, Outcome)> {
        self.1.pop_front()
    }
    fn pending(&self) -> usize {
        self.1.len()
    }
}

const CONFIG: &str = r#"
[node]
mode = "b2bua"
[sip]
listen = [
  { address = "127.0.0.1:5060", transport = "udp", realm = "access" },
  { address = "127.0.0.1:5062", transport = "udp", realm = "core" },
]
[media]
address = "127.0.0.1"
port_min = 30000
port_max = 39999
[[realms]]
name = "access"
allow = ["127.0.0.0/8"]
media = "srtp"
cps_per_source = 50
[[realms]]
name = "core"
allow = ["127.0.0.1/32"]
[[trunks]]
name = "core"
realm = "core"
targets = ["127.0.0.1:5070", "127.0.0.1:5072"]
codecs = ["PCMA", "telephone-event"]
headers = [{ action = "rewrite", name = "P-Asserted-Identity", pattern = "sip:0(\\d+)@", value = "sip:+44$1@" }]
[[trunks]]
name = "named"
realm = "core"
targets = [{ uri = "sip:trunk.fuzz.test" }, "127.0.0.1:5074"]
[sbc]
session_expires_secs = 90
[sbc.numbering]
country_code = "44"
national_prefix = "0"
international_prefix = "00"
[[sbc.routes]]
trunk = "core"
[[sbc.routes]]
prefix = "9"
trunk = "named"
"#;

fn core() -> SipCore {
    let c = rvoip_tuning::Config::from_str_at(CONFIG, std::path::Path::new("fuzz.toml")).expect("config");
    let mut core = SipCore::new(
        CoreConfig {
            listeners: vec![
                (Transport::Udp, "127.0.0.1:5060".parse().expect("addr")),
                (Transport::Udp, "127.0.0.1:5062".parse().expect("addr")),
            ],
            ..CoreConfig::default()
        },
        Registrar::new(RegistrarConfig::default(), LocationService::in_memory()),
        Users::default(),
        b"fuzz",
        &SeededEntropy::new(1),
    );
    let relay = Relay(NgServer::new(FakeMedia::new(false), IpAddr::V4(Ipv4Addr::LOCALHOST), Box::new(SeededEntropy::new(2))), Default::default());
    core.set_b2bua(B2b::new(
        Policy::from_config(&c).expect("policy"),
        B2bConfig {
            session_expires: 90,
            min_se: 90,
            reject_refer: false,
            health_interval_ms: 5000,
            // The media server's applications answer conf-*, echo and ivr.
            media_server: rvoip_controlplane::b2bua::MediaServer {
                config: rvoip_tuning::mediaserver::MediaServerConfig {
                    conference_prefix: "conf-".into(),
                    echo: "echo".into(),
                    music_on_hold: Some("moh.wav".into()),
                    ivr: vec![rvoip_tuning::mediaserver::IvrMenu {
                        user: "ivr".into(),
                        prompt: "welcome.wav".into(),
                        timeout_secs: 1,
                        retries: 1,
                        digits: [("1".to_string(), "room:conf-1".to_string()), ("9".to_string(), "hangup".to_string())].into_iter().collect(),
                    }],
                    announcements: [("486".to_string(), "busy.wav".into())].into_iter().collect(),
                    ..Default::default()
                },
                prompt_dir: "/nonexistent".into(),
            },
        },
        Box::new(relay),
        Journal::disabled(),
        Vec::new(),
        &SeededEntropy::new(3),
    ));
    core
}

/// A response to `req` with `code`, its To tagged, and `rest` appended.
fn reflect(req: &Outbound, code: &[u8], rest: &[u8]) -> Option<Vec<u8>> {
    let m = SipMessage::parse(&req.bytes, Framing::Datagram, &Limits::default()).ok()?;
    if !m.is_request() {
        return None;
    }
    let mut out = b"SIP/2.0 ".to_vec();
    out.extend_from_slice(code);
    out.extend_from_slice(b" X\r\n");
    for f in m.headers() {
        if matches!(f.name, HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq) {
            out.extend_from_slice(f.raw_name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(f.value);
            out.extend_from_slice(b"\r\n");
        }
        if f.name == HeaderName::To {
            out.extend_from_slice(b"To: ");
            out.extend_from_slice(f.value);
            if !f.value.windows(4).any(|w| w == b"tag=") {
                out.extend_from_slice(b";tag=fz");
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Contact: <sip:peer@127.0.0.1:5070>\r\n");
    out.extend_from_slice(rest);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let mut core = core();
    let caller: SipAddrs = ("127.0.0.2:5080", "127.0.0.1:5060");
    let peer: SipAddrs = ("127.0.0.1:5070", "127.0.0.1:5062");
    let mut now = 0u64;
    let mut last_out: [Option<Outbound>; 2] = [None, None];
    for chunk in data.split(|b| *b == 0).take(16) {
        let Some((&ctl, rest)) = chunk.split_first() else { continue };
        now += u64::from(ctl >> 2) * 150;
        core.on_timer(now);
        let side = usize::from(ctl & 1);
        let (from, to) = if side == 0 { caller } else { peer };
        let bytes = if ctl & 2 != 0 && rest.len() >= 3 {
            match last_out[side].as_ref().and_then(|o| reflect(o, &rest[..3], &rest[3..])) {
                Some(b) => b,
                None => continue,
            }
        } else {
            rest.to_vec()
        };
        core.on_message(
            now,
            1_800_000_000_000 + now,
            Inbound {
                bytes: &bytes,
                transport: Transport::Udp,
                local: to.parse::<SocketAddr>().expect("addr"),
                remote: from.parse::<SocketAddr>().expect("addr"),
                conn: 0,
            },
        );
        core.poll_media(now, 1_800_000_000_000 + now);
        while let Some(q) = core.poll_dns() {
            use rvoip_controlplane::dns::{Answer, Failure, Resolution, Server};
            let server = |port: u16, priority| Server {
                transport: Transport::Udp,
                address: SocketAddr::from(([127, 0, 0, 1], port)),
                priority,
                weight: 1,
            };
            let result = match rest.len() % 4 {
                0 => Ok(Resolution { servers: vec![server(5070, 10), server(5072, 20)], ttl_secs: 1 }),
                1 => Ok(Resolution { servers: vec![server(5076, 0)], ttl_secs: 60 }),
                2 => Err(Failure::NoSuchName),
                _ => Err(Failure::Unreachable("SERVFAIL".into())),
            };
            core.on_dns(now, 1_800_000_000_000 + now, Answer { key: q.key, result, negative_ttl_secs: Some(5) });
        }
        if rest.len() % 7 == 6 {
            let dead = "127.0.0.1:5070".parse().expect("addr");
            core.on_unreachable(now, Transport::Udp, dead);
        }
        while let Some(o) = core.poll_outbound() {
            let s = if o.dest.ip() == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)) { 0 } else { 1 };
            if o.bytes.first().is_some_and(|b| *b != b'S') {
                last_out[s] = Some(o);
            }
        }
        while core.poll_cdr().is_some() {}
    }
    core.on_timer(now + 200_000);
    while core.poll_outbound().is_some() {}
});

type SipAddrs = (&'static str, &'static str);
