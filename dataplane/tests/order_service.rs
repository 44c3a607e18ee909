//! The media order service: one thread owns the media sessions and serves
//! both the control plane's order channel (typed records) and the ng socket,
//! so a call ordered on either is one the other sees, and no lock guards
//! them.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rvoip_dataplane::engine::media::{DriverKind, MediaEngine, MediaEngineConfig, Polling};
use rvoip_dataplane::engine::ng_shm::{NgOrders, orders_path, shard_orders_path};
use rvoip_dataplane::entropy::SeededEntropy;
use rvoip_dataplane::media::orders::{MediaOrder, Outcome, SdpOptions, record};
use rvoip_dataplane::media::relay::RelayConfig;
use rvoip_dataplane::ng::NgServer;
use rvoip_dataplane::shm::{Channel, Direction, META_BYTES};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn one_service_serves_every_shards_order_channel_and_the_ng_socket_on_one_set_of_calls() {
    let dir = std::env::temp_dir().join(format!("rvoip-order-service-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let engine = MediaEngine::start(&MediaEngineConfig {
        address: LOCALHOST,
        address_v6: None,
        extra_addresses: Vec::new(),
        port_min: 46_400,
        port_max: 46_599,
        cores: vec![],
        driver: DriverKind::Auto,
        polling: Polling::Interrupt { batch_wait_us: 0 },
        relay: RelayConfig::default(),
        fill_calls: 0,
        max_endpoints_per_worker: 1024,
    })
    .expect("engine");
    let stop = Arc::new(AtomicBool::new(false));
    let service = NgOrders::spawn(
        &dir,
        Some("127.0.0.1:0".parse().unwrap()),
        NgServer::new(engine, LOCALHOST, Box::new(SeededEntropy::new(1))),
        Arc::clone(&stop),
        Duration::ZERO,
        None,
        2,
    )
    .expect("service");
    let ng = service.ng.expect("the ng socket's address");

    // The control plane's offer, as a typed record on the channel.
    let channel = Channel::open(&orders_path(&dir)).expect("the service made the channel");
    channel.heartbeat();
    let offer = MediaOrder::Offer {
        call_id: rvoip_dataplane::media::orders::CallId(b"b2b-1".to_vec()),
        from_tag: rvoip_dataplane::media::orders::Tag(b"a".to_vec()),
        sdp: b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
            .to_vec(),
        options: SdpOptions::default(),
    };
    let mut rec = Vec::new();
    record::write_order(77, 1, &offer, &mut rec);
    channel
        .producer(Direction::ToDataplane)
        .push(1, &[0u8; META_BYTES], &rec)
        .expect("room on the ring");
    let mut outcomes = channel.consumer(Direction::ToControlPlane);
    let deadline = Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        if let Some(r) = outcomes.peek() {
            let o = record::read_outcome(r.payload).expect("an outcome record");
            outcomes.advance();
            break o;
        }
        assert!(Instant::now() < deadline, "no outcome");
        std::thread::sleep(Duration::from_millis(2));
    };
    let (sender, number, outcome) = outcome;
    assert_eq!((sender, number), (77, 1));
    let Outcome::Sdp(sdp) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        String::from_utf8_lossy(&sdp).contains("m=audio 464"),
        "{}",
        String::from_utf8_lossy(&sdp)
    );

    // The second control-plane shard's channel is served too: its call
    // is one of the same set.
    let second = Channel::open(&shard_orders_path(&dir, 1)).expect("shard 1's channel");
    assert_ne!(shard_orders_path(&dir, 1), orders_path(&dir));
    second.heartbeat();
    let offer = MediaOrder::Offer {
        call_id: rvoip_dataplane::media::orders::CallId(b"b2b-2".to_vec()),
        from_tag: rvoip_dataplane::media::orders::Tag(b"a".to_vec()),
        sdp: b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n"
            .to_vec(),
        options: SdpOptions::default(),
    };
    rec.clear();
    record::write_order(78, 1, &offer, &mut rec);
    second
        .producer(Direction::ToDataplane)
        .push(1, &[0u8; META_BYTES], &rec)
        .expect("room on the ring");
    let mut outcomes = second.consumer(Direction::ToControlPlane);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (sender, _, outcome) = loop {
        if let Some(r) = outcomes.peek() {
            let o = record::read_outcome(r.payload).expect("an outcome record");
            outcomes.advance();
            break o;
        }
        assert!(Instant::now() < deadline, "no outcome on shard 1's channel");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(sender, 78);
    assert!(matches!(outcome, Outcome::Sdp(_)), "{outcome:?}");

    // The ng socket lists those calls: one set of calls.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(b"l1 d7:command4:liste", ng).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = client.recv_from(&mut buf).expect("a reply to list");
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(reply.starts_with("l1 d"), "{reply}");
    assert!(reply.contains("5:b2b-1"), "{reply}");
    assert!(reply.contains("5:b2b-2"), "{reply}");

    stop.store(true, Ordering::Relaxed);
    let report = service.join();
    assert_eq!(report.orders, 2);
    assert_eq!(report.ng.ng.requests, 3, "the orders and the list");
    assert_eq!(report.ng.ng.errors, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
