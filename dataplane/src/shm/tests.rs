#![allow(clippy::disallowed_methods)] // tests read the clock
use std::time::{Duration, Instant};

use super::*;

fn path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rvoip-shm-test-{}-{name}", std::process::id()))
}

#[test]
fn records_cross_between_two_mappings_in_order_with_wraparound() {
    let p = path("order");
    let dp = Channel::create(&p, 3, 256, 16).unwrap_or_else(|e| panic!("{e}"));
    let cp = Channel::open(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cp.worker(), 3);
    let mut prod = dp.producer(Direction::ToControlPlane);
    let mut cons = cp.consumer(Direction::ToControlPlane);
    let mut expected_seq = 0;
    for round in 0..200usize {
        // Sizes from 0 to 700 octets: one to four slots, forcing padding.
        let len = (round * 37) % 700;
        let payload: Vec<u8> = (0..len).map(|i| (i + round) as u8).collect();
        let mut meta = [0u8; META_BYTES];
        meta[0] = round as u8;
        prod.push(7, &meta, &payload)
            .unwrap_or_else(|_| panic!("full at round {round}"));
        let r = cons
            .peek()
            .unwrap_or_else(|| panic!("no record at round {round}"));
        expected_seq += 1;
        assert_eq!(
            (r.kind, r.seq, r.meta[0], r.payload),
            (7, expected_seq, round as u8, &payload[..])
        );
        cons.advance();
        assert!(cons.peek().is_none());
    }
    let s = dp.stats(Direction::ToControlPlane);
    assert_eq!((s.records, s.dropped, s.used_slots), (200, 0, 0));
    let _ = std::fs::remove_file(&p);
}

#[test]
fn a_full_ring_refuses_and_counts() {
    let p = path("full");
    let dp = Channel::create(&p, 0, 128, 8).unwrap_or_else(|e| panic!("{e}"));
    let mut prod = dp.producer(Direction::ToDataplane);
    let meta = [0u8; META_BYTES];
    let mut accepted = 0;
    while prod.push(1, &meta, &[0u8; 60]).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, 8, "one slot per 60-octet record");
    assert_eq!(dp.stats(Direction::ToDataplane).dropped, 1);
    assert!(
        prod.push(1, &meta, &vec![0u8; prod.max_payload() + 1])
            .is_err()
    );
    let mut cons = dp.consumer(Direction::ToDataplane);
    assert!(cons.peek().is_some());
    cons.advance();
    assert!(
        prod.push(1, &meta, &[0u8; 60]).is_ok(),
        "space again after the consumer advanced"
    );
    let _ = std::fs::remove_file(&p);
}

#[test]
fn a_sleeping_consumer_is_woken_and_a_busy_one_is_not_slept() {
    let p = path("wake");
    let dp = Channel::create(&p, 0, 256, 64).unwrap_or_else(|e| panic!("{e}"));
    let p2 = p.clone();
    let consumer = std::thread::spawn(move || {
        let cp = Channel::open(&p2).unwrap_or_else(|e| panic!("{e}"));
        let mut cons = cp.consumer(Direction::ToControlPlane);
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < 1000 && start.elapsed() < Duration::from_secs(10) {
            cons.wait(Duration::from_secs(5));
            while let Some(r) = cons.peek() {
                got.push(u32::from_le_bytes(r.payload.try_into().unwrap_or([0; 4])));
                cons.advance();
            }
        }
        got
    });
    let mut prod = dp.producer(Direction::ToControlPlane);
    for i in 0..1000u32 {
        while prod.push(2, &[0; META_BYTES], &i.to_le_bytes()).is_err() {
            std::thread::yield_now();
        }
        if i % 100 == 0 {
            // Let the consumer fall asleep now and then.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let got = consumer.join().unwrap_or_default();
    assert_eq!(
        got,
        (0..1000).collect::<Vec<_>>(),
        "every record, in order, despite sleeps"
    );
    let _ = std::fs::remove_file(&p);
}

#[test]
fn open_refuses_what_is_not_a_channel() {
    let p = path("bad");
    std::fs::write(&p, vec![0u8; 8192]).unwrap_or_else(|e| panic!("{e}"));
    assert!(Channel::open(&p).is_err());
    let dp = Channel::create(&p, 0, 128, 8).unwrap_or_else(|e| panic!("{e}"));
    drop(dp);
    let f = OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap_or_else(|e| panic!("{e}"));
    f.set_len(5000).unwrap_or_else(|e| panic!("{e}"));
    assert!(Channel::open(&p).is_err(), "size mismatch");
    let _ = std::fs::remove_file(&p);
}

#[test]
fn heartbeats_tell_whether_a_control_plane_is_alive() {
    let p = path("hb");
    let dp = Channel::create(&p, 0, 128, 8).unwrap_or_else(|e| panic!("{e}"));
    assert!(!dp.controlplane_alive(Duration::from_secs(1)));
    let cp = Channel::open(&p).unwrap_or_else(|e| panic!("{e}"));
    cp.heartbeat();
    assert!(dp.controlplane_alive(Duration::from_secs(1)));
    assert_eq!(dp.attaches(), 1);
    let _ = std::fs::remove_file(&p);
}

#[test]
fn sip_metadata_round_trips() {
    for (l, r) in [
        ("127.0.0.1:5060", "192.0.2.9:40000"),
        ("[::1]:5060", "[2001:db8::5]:5070"),
    ] {
        let m = SipMeta {
            transport: crate::sip::Transport::Tcp,
            local: l.parse().unwrap_or_else(|_| unreachable!()),
            remote: r.parse().unwrap_or_else(|_| unreachable!()),
            conn: 0x0100_0007,
        };
        assert_eq!(SipMeta::decode(&m.encode()), m);
    }
}

#[test]
fn one_waiter_sleeps_on_many_rings() {
    let (p1, p2) = (path("many1"), path("many2"));
    let a = Channel::create(&p1, 0, 256, 16).unwrap_or_else(|e| panic!("{e}"));
    let b = Channel::create(&p2, 1, 256, 16).unwrap_or_else(|e| panic!("{e}"));
    let (q1, q2) = (p1.clone(), p2.clone());
    let waiter = std::thread::spawn(move || {
        let (a, b) = (
            Channel::open(&q1).unwrap_or_else(|e| panic!("{e}")),
            Channel::open(&q2).unwrap_or_else(|e| panic!("{e}")),
        );
        let (ca, cb) = (
            a.consumer(Direction::ToControlPlane),
            b.consumer(Direction::ToControlPlane),
        );
        let start = Instant::now();
        wait_any(&[&ca, &cb], Duration::from_secs(5));
        (start.elapsed(), cb.has_data())
    });
    std::thread::sleep(Duration::from_millis(100));
    b.producer(Direction::ToControlPlane)
        .push(1, &[0; META_BYTES], b"x")
        .unwrap_or_else(|_| panic!("push"));
    let (waited, data) = waiter.join().unwrap_or_default();
    assert!(data, "woken with the record there");
    assert!(
        waited < Duration::from_secs(2),
        "woken by the push, not the timeout: {waited:?}"
    );
    let _ = (std::fs::remove_file(&p1), std::fs::remove_file(&p2), a);
}

#[test]
fn a_ring_whose_head_was_moved_by_another_process_refuses_instead_of_panicking() {
    let p = path("foreign-head");
    let dp = Channel::create(&p, 0, 256, 16).unwrap_or_else(|e| panic!("{e}"));
    let mut prod = dp.producer(Direction::ToDataplane);
    // Another writer of the same file put the consumer's head far ahead.
    dp.ring(Direction::ToDataplane)
        .head
        .store(1_000, Ordering::Release);
    assert_eq!(prod.push(1, &[0; META_BYTES], b"x"), Err(Full));
    assert_eq!(dp.stats(Direction::ToDataplane).dropped, 1);
    let _ = std::fs::remove_file(&p);
}

#[test]
fn one_dataplane_per_ring_directory() {
    let dir = path("lockdir");
    let first = lock_dir(&dir, "dataplane.lock").unwrap_or_else(|e| panic!("{e}"));
    let second = lock_dir(&dir, "dataplane.lock");
    let err = second.err().map(|e| (e.kind(), e.to_string()));
    assert!(
        err.as_ref().is_some_and(
            |(k, m)| *k == io::ErrorKind::AddrInUse && m.contains("another running dataplane")
        ),
        "{err:?}"
    );
    drop(first);
    assert!(lock_dir(&dir, "dataplane.lock").is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
