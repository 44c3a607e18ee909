//! RFC 3261 §17 transactions (with RFC 6026's Accepted state), sans-IO.
//!
//! Each transaction is a state machine over injected time (milliseconds of a
//! monotonic clock). Driving contract:
//!
//! 1. create it with the first message ([`ClientTransaction::new`] sends the
//!    request, [`ServerTransaction::new`] records it);
//! 2. feed it what arrives (`on_response`, `on_request`, `on_ack`) and what
//!    the transaction user decides (`send_response`);
//! 3. call [`ClientTransaction::on_timer`] / [`ServerTransaction::on_timer`]
//!    when `next_deadline` has passed;
//! 4. after each call drain `poll_transmit` (bytes to send to the
//!    transaction's peer) and `poll_event` (what the TU must know), and drop
//!    the transaction once it is `Terminated`.
//!
//! Nothing here reads a clock, opens a socket or allocates per retransmission.

use smallvec::SmallVec;

pub(crate) mod layer;
#[cfg(test)]
mod tests;

/// Milliseconds of a monotonic clock.
pub type Millis = u64;

/// RFC 3261 §17.1.1.1 timer values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (default 500 ms).
    pub t1: Millis,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Millis,
    /// Maximum time a message stays in the network (5 s).
    pub t4: Millis,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: 500,
            t2: 4_000,
            t4: 5_000,
        }
    }
}

/// State of a client transaction (§17.1.1.2 figure 5, §17.1.2.2 figure 6,
/// RFC 6026 §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing heard.
    Calling,
    /// Non-INVITE sent, nothing heard.
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived (non-2xx for INVITE); absorbing retransmissions.
    Completed,
    /// RFC 6026: an INVITE got a 2xx; further 2xx are passed to the TU.
    Accepted,
    /// Done; drop the transaction.
    Terminated,
}

/// What a client transaction tells its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// Timer B or F fired: no final response in time (the TU acts as on 408).
    Timeout,
}

/// What the transaction does with a response it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Pass it to the transaction user.
    Deliver,
    /// A retransmission the transaction handled; drop it.
    Absorb,
}

/// Messages a transaction has to send, in order. The core takes them after
/// every step, so there is nearly always at most one: it is held without a
/// queue allocation of its own, in 32 octets (tens of thousands of
/// transactions linger for 32 s with an empty outbox).
#[derive(Debug, Default)]
struct Outbox(SmallVec<[Vec<u8>; 1]>);

impl Outbox {
    fn push_back(&mut self, m: Vec<u8>) {
        self.0.push(m);
    }

    fn pop_front(&mut self) -> Option<Vec<u8>> {
        (!self.0.is_empty()).then(|| self.0.remove(0))
    }
}

/// A client transaction, INVITE or not.
#[derive(Debug)]
pub struct ClientTransaction {
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ClientState,
    request: Box<[u8]>,
    ack: Option<Box<[u8]>>,
    /// Timer A or E: when and at what interval the request is resent.
    retransmit: Option<(Millis, Millis)>,
    /// Timer B or F.
    timeout_at: Option<Millis>,
    /// Timer D, K or M.
    linger_until: Option<Millis>,
    out: Outbox,
    /// A transaction tells its user at most one thing, as it ends.
    event: Option<ClientEvent>,
}

impl ClientTransaction {
    /// Starts a transaction for `request` (already complete bytes), sent over
    /// a reliable (TCP) or unreliable (UDP) transport.
    pub fn new(
        now: Millis,
        request: Vec<u8>,
        invite: bool,
        reliable: bool,
        timers: Timers,
    ) -> Self {
        let mut t = ClientTransaction {
            invite,
            reliable,
            timers,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            // Kept exactly sized; the message itself goes out first.
            request: request.as_slice().into(),
            ack: None,
            retransmit: None,
            timeout_at: Some(now + 64 * timers.t1),
            linger_until: None,
            out: Outbox::default(),
            event: None,
        };
        t.out.push_back(request);
        if !reliable {
            // §17.1.1.2 Timer A / §17.1.2.2 Timer E start at T1.
            t.retransmit = Some((now + timers.t1, timers.t1));
        }
        t
    }

    /// The state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The request this transaction sends.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// Whether this is an INVITE transaction.
    pub fn is_invite(&self) -> bool {
        self.invite
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.request = Box::default();
        self.retransmit = None;
        self.timeout_at = None;
        self.linger_until = None;
    }

    fn linger(&mut self, now: Millis, unreliable_wait: Millis) {
        // Nothing is retransmitted any more: the request's bytes go.
        self.request = Box::default();
        self.retransmit = None;
        self.timeout_at = None;
        if self.reliable || unreliable_wait == 0 {
            self.terminate();
        } else {
            self.linger_until = Some(now + unreliable_wait);
        }
    }

    /// A response with status `code` matched this transaction. `ack` builds
    /// the ACK for a non-2xx final response to an INVITE (§17.1.1.3); it is
    /// called at most once.
    pub fn on_response(
        &mut self,
        now: Millis,
        code: u16,
        ack: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Delivery {
        use ClientState::*;
        let provisional = code < 200;
        let success = (200..300).contains(&code);
        match (self.state, self.invite) {
            (Calling | Proceeding, true) => {
                if provisional {
                    // §17.1.1.2: a provisional response stops retransmission
                    // and Timer B.
                    self.state = Proceeding;
                    self.retransmit = None;
                    self.timeout_at = None;
                } else if success {
                    // RFC 6026 §8.4: Accepted, Timer M = 64*T1.
                    self.state = Accepted;
                    self.request = Box::default();
                    self.retransmit = None;
                    self.timeout_at = None;
                    self.linger_until = Some(now + 64 * self.timers.t1);
                } else {
                    if let Some(a) = ack() {
                        self.ack = Some(a.as_slice().into());
                        self.out.push_back(a);
                    }
                    self.state = Completed;
                    // Timer D: at least 32 s for unreliable transports.
                    self.linger(now, 32_000.max(64 * self.timers.t1));
                }
                Delivery::Deliver
            }
            (Completed, true) => {
                // A retransmitted final response: resend the ACK (§17.1.1.2).
                if !success
                    && !provisional
                    && let Some(a) = &self.ack
                {
                    self.out.push_back(a.to_vec());
                }
                Delivery::Absorb
            }
            (Accepted, true) => {
                if success {
                    Delivery::Deliver
                } else {
                    Delivery::Absorb
                }
            }
            (Trying | Proceeding, false) => {
                if provisional {
                    self.state = Proceeding;
                } else {
                    self.state = Completed;
                    // Timer K = T4 for unreliable transports.
                    let t4 = self.timers.t4;
                    self.linger(now, t4);
                }
                Delivery::Deliver
            }
            _ => Delivery::Absorb,
        }
    }

    /// The transport reported a failure sending to the peer (§17.1.4).
    pub fn on_transport_error(&mut self) {
        if !matches!(
            self.state,
            ClientState::Terminated | ClientState::Completed | ClientState::Accepted
        ) {
            self.event = Some(ClientEvent::Timeout);
            self.terminate();
        }
    }

    /// When `on_timer` must next be called.
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            self.retransmit.map(|r| r.0),
            self.timeout_at,
            self.linger_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires whatever timers are due at `now`.
    pub fn on_timer(&mut self, now: Millis) {
        if self.timeout_at.is_some_and(|t| t <= now) {
            // Timer B (§17.1.1.2) or F (§17.1.2.2).
            self.event = Some(ClientEvent::Timeout);
            self.terminate();
            return;
        }
        if let Some((at, interval)) = self.retransmit
            && at <= now
        {
            self.out.push_back(self.request.to_vec());
            // INVITE: Timer A doubles without bound; non-INVITE: Timer E
            // doubles up to T2, and is T2 in Proceeding.
            let next = if self.invite {
                interval * 2
            } else if self.state == ClientState::Proceeding {
                self.timers.t2
            } else {
                (interval * 2).min(self.timers.t2)
            };
            self.retransmit = Some((now + next, next));
        }
        if self.linger_until.is_some_and(|t| t <= now) {
            self.terminate();
        }
    }

    /// The next message to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// The next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.event.take()
    }
}

/// State of a server transaction (§17.2.1 figure 7, §17.2.2 figure 8,
/// RFC 6026 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, no response yet.
    Trying,
    /// A provisional response was sent (INVITE starts here).
    Proceeding,
    /// A final response (non-2xx for INVITE) was sent.
    Completed,
    /// INVITE: the ACK for the non-2xx response arrived.
    Confirmed,
    /// RFC 6026: a 2xx was sent for the INVITE.
    Accepted,
    /// Done; drop the transaction.
    Terminated,
}

/// What a server transaction tells its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// Timer H fired: the ACK for a non-2xx final response never came.
    AckTimeout,
}

/// A server transaction, INVITE or not.
#[derive(Debug)]
pub struct ServerTransaction {
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ServerState,
    /// Kept exactly sized: a non-INVITE's lingers with it for 32 s.
    last_response: Option<Box<[u8]>>,
    /// Timer G: when and at what interval the final response is resent.
    retransmit: Option<(Millis, Millis)>,
    /// Timer H.
    ack_deadline: Option<Millis>,
    /// Timer I, J or L.
    linger_until: Option<Millis>,
    out: Outbox,
    /// A transaction tells its user at most one thing, as it ends.
    event: Option<ServerEvent>,
}

impl ServerTransaction {
    /// A transaction for a request just received.
    pub fn new(invite: bool, reliable: bool, timers: Timers) -> Self {
        ServerTransaction {
            invite,
            reliable,
            timers,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            last_response: None,
            retransmit: None,
            ack_deadline: None,
            linger_until: None,
            out: Outbox::default(),
            event: None,
        }
    }

    /// The state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Whether any response went out.
    pub fn responded(&self) -> bool {
        self.last_response.is_some()
            || !matches!(self.state, ServerState::Trying | ServerState::Proceeding)
    }

    /// Whether this is an INVITE transaction.
    pub fn is_invite(&self) -> bool {
        self.invite
    }

    /// Whether a final response was sent.
    pub fn is_final(&self) -> bool {
        !matches!(self.state, ServerState::Trying | ServerState::Proceeding)
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.retransmit = None;
        self.ack_deadline = None;
        self.linger_until = None;
    }

    /// The request was retransmitted by the client: resend the last response
    /// (§17.2.1, §17.2.2). Returns `Absorb` always: a retransmission never
    /// reaches the TU.
    pub fn on_request(&mut self) -> Delivery {
        match self.state {
            ServerState::Proceeding | ServerState::Completed => {
                if let Some(r) = &self.last_response {
                    self.out.push_back(r.to_vec());
                }
            }
            // RFC 6026 §7.1: INVITE retransmissions in Accepted are absorbed.
            _ => {}
        }
        Delivery::Absorb
    }

    /// An ACK matched this INVITE transaction (a non-2xx ACK, §17.2.1).
    pub fn on_ack(&mut self, now: Millis) -> Delivery {
        match self.state {
            ServerState::Completed if self.invite => {
                self.state = ServerState::Confirmed;
                self.retransmit = None;
                self.ack_deadline = None;
                // Timer I = T4 for unreliable transports.
                if self.reliable {
                    self.terminate();
                } else {
                    self.linger_until = Some(now + self.timers.t4);
                }
                Delivery::Absorb
            }
            // RFC 6026 §7.1: an ACK in Accepted goes to the TU.
            ServerState::Accepted => Delivery::Deliver,
            _ => Delivery::Absorb,
        }
    }

    /// The TU sends response `bytes` with status `code`. Ignored once a final
    /// response went out (except 2xx retransmissions in Accepted).
    pub fn send_response(&mut self, now: Millis, code: u16, bytes: Vec<u8>) {
        use ServerState::*;
        let provisional = code < 200;
        let success = (200..300).contains(&code);
        match self.state {
            Trying | Proceeding => {
                if self.invite && success {
                    // RFC 6026 §7.1: Accepted, Timer L = 64*T1. Retransmitted
                    // INVITEs are absorbed and 2xx retransmissions come from
                    // the TU, so no response is kept for the 32 s.
                    self.out.push_back(bytes);
                    self.last_response = None;
                    self.state = Accepted;
                    self.linger_until = Some(now + 64 * self.timers.t1);
                    return;
                }
                self.last_response = Some(bytes.as_slice().into());
                self.out.push_back(bytes);
                if provisional {
                    self.state = Proceeding;
                } else if self.invite {
                    self.state = Completed;
                    // Timer G (unreliable) and H.
                    if !self.reliable {
                        self.retransmit = Some((now + self.timers.t1, self.timers.t1));
                    }
                    self.ack_deadline = Some(now + 64 * self.timers.t1);
                } else {
                    self.state = Completed;
                    // Timer J = 64*T1 for unreliable transports.
                    if self.reliable {
                        self.terminate();
                    } else {
                        self.linger_until = Some(now + 64 * self.timers.t1);
                    }
                }
            }
            Accepted if success => self.out.push_back(bytes),
            _ => {}
        }
    }

    /// When `on_timer` must next be called.
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            self.retransmit.map(|r| r.0),
            self.ack_deadline,
            self.linger_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires whatever timers are due at `now`.
    pub fn on_timer(&mut self, now: Millis) {
        if self.ack_deadline.is_some_and(|t| t <= now) {
            // Timer H.
            self.event = Some(ServerEvent::AckTimeout);
            self.terminate();
            return;
        }
        if let Some((at, interval)) = self.retransmit
            && at <= now
        {
            if let Some(r) = &self.last_response {
                self.out.push_back(r.to_vec());
            }
            // Timer G doubles up to T2.
            let next = (interval * 2).min(self.timers.t2);
            self.retransmit = Some((now + next, next));
        }
        if self.linger_until.is_some_and(|t| t <= now) {
            self.terminate();
        }
    }

    /// The next response to send to the client.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// The next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.event.take()
    }
}
