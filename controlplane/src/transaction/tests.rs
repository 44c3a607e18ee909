//! The RFC 3261 §17 state diagrams, walked on simulated time.

use super::*;

/// Runs timers from `from` to `to` in 10 ms steps; returns the times at which
/// something was transmitted.
fn run_client(t: &mut ClientTransaction, from: Millis, to: Millis) -> Vec<Millis> {
    let mut sent = Vec::new();
    let mut now = from;
    while now <= to && t.state() != ClientState::Terminated {
        if t.next_deadline().is_some_and(|d| d <= now) {
            t.on_timer(now);
        }
        while t.poll_transmit().is_some() {
            sent.push(now);
        }
        now += 10;
    }
    sent
}

fn run_server(t: &mut ServerTransaction, from: Millis, to: Millis) -> Vec<Millis> {
    let mut sent = Vec::new();
    let mut now = from;
    while now <= to && t.state() != ServerState::Terminated {
        if t.next_deadline().is_some_and(|d| d <= now) {
            t.on_timer(now);
        }
        while t.poll_transmit().is_some() {
            sent.push(now);
        }
        now += 10;
    }
    sent
}

#[test]
fn invite_client_retransmits_with_timer_a_until_timer_b() {
    let mut t = ClientTransaction::new(0, b"INVITE".to_vec(), true, false, Timers::default());
    let sent = run_client(&mut t, 0, 40_000);
    // Initial send, then Timer A at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s: 7 in all.
    assert_eq!(sent, vec![0, 500, 1_500, 3_500, 7_500, 15_500, 31_500]);
    assert_eq!(
        t.poll_event(),
        Some(ClientEvent::Timeout),
        "Timer B at 64*T1"
    );
    assert_eq!(t.state(), ClientState::Terminated);
}

#[test]
fn invite_client_provisional_then_error_sends_ack_and_absorbs_retransmissions() {
    let mut t = ClientTransaction::new(0, b"INVITE".to_vec(), true, false, Timers::default());
    assert_eq!(t.poll_transmit(), Some(b"INVITE".to_vec()));
    assert_eq!(t.on_response(100, 180, || None), Delivery::Deliver);
    assert_eq!(t.state(), ClientState::Proceeding);
    assert!(
        run_client(&mut t, 110, 60_000).is_empty(),
        "no retransmission and no Timer B in Proceeding"
    );
    assert_eq!(
        t.on_response(60_000, 486, || Some(b"ACK".to_vec())),
        Delivery::Deliver
    );
    assert_eq!(t.state(), ClientState::Completed);
    assert_eq!(t.poll_transmit(), Some(b"ACK".to_vec()));
    assert_eq!(
        t.on_response(60_500, 486, || panic!("ACK is built once")),
        Delivery::Absorb
    );
    assert_eq!(
        t.poll_transmit(),
        Some(b"ACK".to_vec()),
        "the ACK answers the retransmitted response"
    );
    run_client(&mut t, 60_500, 100_000);
    assert_eq!(t.state(), ClientState::Terminated, "Timer D");
}

#[test]
fn invite_client_2xx_goes_to_accepted_and_passes_retransmissions() {
    let mut t = ClientTransaction::new(0, b"INVITE".to_vec(), true, false, Timers::default());
    assert_eq!(t.on_response(50, 200, || None), Delivery::Deliver);
    assert_eq!(t.state(), ClientState::Accepted);
    assert_eq!(
        t.on_response(600, 200, || None),
        Delivery::Deliver,
        "RFC 6026: 2xx retransmissions go to the TU"
    );
    assert_eq!(t.on_response(700, 180, || None), Delivery::Absorb);
    run_client(&mut t, 700, 40_000);
    assert_eq!(t.state(), ClientState::Terminated, "Timer M");
}

#[test]
fn invite_client_over_tcp_does_not_retransmit_or_linger() {
    let mut t = ClientTransaction::new(0, b"INVITE".to_vec(), true, true, Timers::default());
    assert_eq!(run_client(&mut t, 0, 10_000), vec![0]);
    t.on_response(10_000, 503, || Some(b"ACK".to_vec()));
    assert_eq!(t.poll_transmit(), Some(b"ACK".to_vec()));
    assert_eq!(
        t.state(),
        ClientState::Terminated,
        "Timer D is zero on reliable transports"
    );
}

#[test]
fn non_invite_client_caps_timer_e_at_t2() {
    let mut t = ClientTransaction::new(0, b"OPTIONS".to_vec(), false, false, Timers::default());
    let sent = run_client(&mut t, 0, 40_000);
    assert_eq!(
        &sent[..6],
        &[0, 500, 1_500, 3_500, 7_500, 11_500],
        "E doubles to T2 = 4 s"
    );
    assert_eq!(*sent.last().unwrap_or(&0), 31_500);
    assert_eq!(t.poll_event(), Some(ClientEvent::Timeout), "Timer F");
}

#[test]
fn non_invite_client_proceeding_retransmits_every_t2_and_completes() {
    let mut t = ClientTransaction::new(0, b"BYE".to_vec(), false, false, Timers::default());
    t.poll_transmit();
    assert_eq!(t.on_response(100, 100, || None), Delivery::Deliver);
    t.on_timer(500);
    assert_eq!(t.poll_transmit(), Some(b"BYE".to_vec()));
    assert_eq!(t.next_deadline(), Some(4_500), "T2 after a provisional");
    assert_eq!(t.on_response(1_000, 200, || None), Delivery::Deliver);
    assert_eq!(t.state(), ClientState::Completed);
    assert_eq!(t.on_response(1_100, 200, || None), Delivery::Absorb);
    assert_eq!(t.next_deadline(), Some(6_000), "Timer K = T4");
    run_client(&mut t, 1_100, 7_000);
    assert_eq!(t.state(), ClientState::Terminated);
}

#[test]
fn invite_server_resends_responses_and_waits_for_the_ack() {
    let mut t = ServerTransaction::new(true, false, Timers::default());
    assert_eq!(t.state(), ServerState::Proceeding);
    t.send_response(0, 180, b"180".to_vec());
    assert_eq!(t.poll_transmit(), Some(b"180".to_vec()));
    assert_eq!(t.on_request(), Delivery::Absorb);
    assert_eq!(
        t.poll_transmit(),
        Some(b"180".to_vec()),
        "a retransmitted INVITE gets the last provisional"
    );
    t.send_response(1_000, 486, b"486".to_vec());
    assert_eq!(t.state(), ServerState::Completed);
    let sent = run_server(&mut t, 1_000, 13_000);
    assert_eq!(
        sent,
        vec![1_000, 1_500, 2_500, 4_500, 8_500, 12_500],
        "Timer G doubles to T2"
    );
    assert_eq!(t.on_ack(13_000), Delivery::Absorb);
    assert_eq!(t.state(), ServerState::Confirmed);
    assert!(run_server(&mut t, 13_000, 20_000).is_empty());
    assert_eq!(t.state(), ServerState::Terminated, "Timer I");
}

#[test]
fn invite_server_gives_up_without_ack_after_timer_h() {
    let mut t = ServerTransaction::new(true, false, Timers::default());
    t.send_response(0, 500, b"500".to_vec());
    run_server(&mut t, 0, 40_000);
    assert_eq!(t.poll_event(), Some(ServerEvent::AckTimeout));
    assert_eq!(t.state(), ServerState::Terminated);
}

#[test]
fn invite_server_2xx_is_accepted_and_absorbs_invite_retransmissions() {
    let mut t = ServerTransaction::new(true, false, Timers::default());
    t.send_response(0, 200, b"200".to_vec());
    assert_eq!(t.state(), ServerState::Accepted);
    t.poll_transmit();
    assert_eq!(t.on_request(), Delivery::Absorb);
    assert_eq!(
        t.poll_transmit(),
        None,
        "the TU retransmits 2xx, not the transaction"
    );
    t.send_response(500, 200, b"200".to_vec());
    assert_eq!(t.poll_transmit(), Some(b"200".to_vec()));
    assert_eq!(t.on_ack(600), Delivery::Deliver);
    run_server(&mut t, 600, 40_000);
    assert_eq!(t.state(), ServerState::Terminated, "Timer L");
}

#[test]
fn non_invite_server_absorbs_and_answers_retransmissions() {
    let mut t = ServerTransaction::new(false, false, Timers::default());
    assert_eq!(t.on_request(), Delivery::Absorb);
    assert_eq!(
        t.poll_transmit(),
        None,
        "Trying: a retransmission is discarded"
    );
    t.send_response(100, 200, b"200".to_vec());
    assert_eq!(t.poll_transmit(), Some(b"200".to_vec()));
    t.on_request();
    assert_eq!(t.poll_transmit(), Some(b"200".to_vec()));
    t.send_response(200, 500, b"500".to_vec());
    assert_eq!(t.poll_transmit(), None, "one final response only");
    run_server(&mut t, 200, 40_000);
    assert_eq!(t.state(), ServerState::Terminated, "Timer J");
    let mut tcp = ServerTransaction::new(false, true, Timers::default());
    tcp.send_response(0, 200, b"200".to_vec());
    assert_eq!(
        tcp.state(),
        ServerState::Terminated,
        "J is zero on reliable transports"
    );
}

#[test]
fn queued_messages_leave_in_the_order_queued() {
    let mut o = super::Outbox::default();
    assert_eq!(o.pop_front(), None);
    o.push_back(b"a".to_vec());
    o.push_back(b"b".to_vec());
    assert_eq!(o.pop_front(), Some(b"a".to_vec()));
    o.push_back(b"c".to_vec());
    assert_eq!(o.pop_front(), Some(b"b".to_vec()));
    assert_eq!(o.pop_front(), Some(b"c".to_vec()));
    assert_eq!(o.pop_front(), None);
    o.push_back(b"d".to_vec());
    assert_eq!(o.pop_front(), Some(b"d".to_vec()));
}
