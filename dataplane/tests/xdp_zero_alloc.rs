//! The media relay on AF_XDP allocates nothing per packet in steady state
//! (as root, on the test topology made and removed here): a counting
//! global allocator sees zero allocations while 2,000 RTP packets cross
//! the relay, taken from and sent on its AF_XDP socket.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

mod counting;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use counting::ALLOCS;
use rvoip_dataplane::xdp::testbed::{self, Topology};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// `range` packets A → relay → B and back, from fixed buffers (this
/// thread allocates nothing either).
fn exchange(
    (a, b): (&UdpSocket, &UdpSocket),
    (ra, rb): (SocketAddr, SocketAddr),
    range: std::ops::Range<u16>,
) {
    let mut p = [0u8; 172];
    p[0] = 0x80;
    let mut buf = [0u8; 2048];
    for seq in range {
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        a.send_to(&p, ra).unwrap();
        let (n, _) = b.recv_from(&mut buf).expect("relayed to B");
        assert_eq!(&buf[..n], &p[..]);
        b.send_to(&p, rb).unwrap();
        let (n, _) = a.recv_from(&mut buf).expect("relayed to A");
        assert_eq!(&buf[..n], &p[..]);
    }
}

/// One test for the whole file: the counter is process-wide.
#[test]
fn relaying_on_af_xdp_allocates_nothing_in_steady_state() {
    let _topology = Topology::up().unwrap();
    let (a, b): (SocketAddr, SocketAddr) = (
        "10.99.0.2:42000".parse().unwrap(),
        "10.99.0.2:42001".parse().unwrap(),
    );
    let (to_peer, ports) = mpsc::channel::<(u16, u16)>();
    let (done, finished) = mpsc::channel::<u64>();
    let rvx = std::thread::spawn(move || {
        testbed::enter(testbed::RVX).unwrap();
        let eng = testbed::af_xdp_engine(vec![]).unwrap();
        let applied = eng.apply(0, None, vec![testbed::relay_plan(a, b)]).unwrap();
        let [pa, pb] = applied.ports[0];
        to_peer.send((pa.rtp, pb.rtp)).unwrap();
        let allocs = finished.recv_timeout(Duration::from_secs(60)).unwrap();
        drop(eng);
        allocs
    });
    let peer = std::thread::spawn(move || {
        testbed::enter(testbed::PEER).unwrap();
        let (sa, sb) = (UdpSocket::bind(a).unwrap(), UdpSocket::bind(b).unwrap());
        for s in [&sa, &sb] {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        }
        let (pa, pb) = ports.recv_timeout(Duration::from_secs(10)).unwrap();
        let relay = (
            SocketAddr::from(([10, 99, 0, 1], pa)),
            SocketAddr::from(([10, 99, 0, 1], pb)),
        );
        // Warm up: latches, neighbours learned, rings cycled.
        exchange((&sa, &sb), relay, 0..2000);
        let before = ALLOCS.load(Ordering::Relaxed);
        exchange((&sa, &sb), relay, 2000..3000);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        done.send(allocs).unwrap();
    });
    peer.join().unwrap();
    let allocs = rvx.join().unwrap();
    assert_eq!(
        allocs, 0,
        "allocations while 2,000 packets crossed on AF_XDP"
    );
}
