//! The transaction layer (RFC 3261 §17), sans-IO: the tables of server and
//! client transactions under keys no sender can make collide, the one timer
//! wheel of the element (transaction timers and the transaction user's),
//! and the messages to send.
//!
//! Driving contract: the element hands each request to
//! [`TransactionLayer::receive_request`] and each response to
//! [`TransactionLayer::receive_response`]; what they do not absorb (a
//! retransmission, an ACK to a non-2xx) goes to the transaction user, which
//! opens server transactions ([`TransactionLayer::open_server`]), answers
//! through them ([`TransactionLayer::respond`],
//! [`TransactionLayer::server_respond`]) and starts client transactions
//! ([`TransactionLayer::start_client`]). When [`TransactionLayer::next_deadline`]
//! passes, [`TransactionLayer::take_due`] gives the timers due and
//! [`TransactionLayer::fire`] runs those of transactions (the rest are the
//! user's). After each input, [`TransactionLayer::poll_event`] gives what
//! the user must hear (timeouts, ended server transactions) and
//! [`TransactionLayer::poll_outbound`] what to send. No clock, no socket.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rustc_hash::FxHashMap;
use rvoip_dataplane::sip::{
    Framing, HeaderName, Host, Limits, Method, SipMessage, Transport, write_response,
};
use rvoip_dataplane::wheel::Wheel;

use super::{ClientTransaction, Delivery, Millis, ServerTransaction, Timers};
use crate::b2bua;
use crate::build;
use crate::element::reason_phrase;

/// A message for the dataplane to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The message.
    pub bytes: Vec<u8>,
    /// Transport.
    pub transport: Transport,
    /// Local listener address to send from.
    pub local: SocketAddr,
    /// Destination.
    pub dest: SocketAddr,
    /// For TCP, the connection to reuse when still open.
    pub conn: Option<u32>,
}

/// Where a transaction's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hop {
    pub(crate) transport: Transport,
    pub(crate) local: SocketAddr,
    pub(crate) dest: SocketAddr,
    pub(crate) conn: Option<u32>,
}

/// Identifies a server transaction (RFC 3261 §17.2.3): a keyed 128-bit
/// hash of branch, sent-by and method. Small and `Copy`, so the maps and the
/// timer queue hold no allocation per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ServerKey(u128);

/// Identifies a client transaction (RFC 3261 §17.1.3): keyed hash of branch
/// and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ClientKey(u128);

impl ServerKey {
    /// No transaction (a recovered call's INVITE is long gone).
    pub(crate) const NONE: ServerKey = ServerKey(0);

    /// Bytes that stand for the transaction, e.g. to derive a To tag.
    pub(crate) fn seed(&self) -> [u8; 16] {
        self.0.to_le_bytes()
    }
}

/// Hashes transaction identifiers with a secret key, so that no sender can
/// make two transactions collide.
#[derive(Clone)]
pub(crate) struct KeyHasher(siphasher::sip128::SipHasher13);

impl KeyHasher {
    fn new(secret: &[u8]) -> Self {
        let d = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"rvoip transaction keys\0".as_slice(), secret].concat(),
        );
        let mut key = [0u8; 16];
        key.copy_from_slice(&d.as_ref()[..16]);
        KeyHasher(siphasher::sip128::SipHasher13::new_with_key(&key))
    }

    fn hash(&self, parts: &[&[u8]]) -> u128 {
        use siphasher::sip128::Hasher128 as _;
        use std::hash::Hasher as _;
        let mut h = self.0;
        for p in parts {
            h.write(p);
            h.write_u8(0xff);
        }
        h.finish128().as_u128()
    }

    pub(crate) fn server(&self, branch: &[u8], sent_by: &[u8], method: &[u8]) -> ServerKey {
        ServerKey(self.hash(&[branch, sent_by, method]))
    }

    pub(crate) fn client(&self, branch: &[u8], method: &[u8]) -> ClientKey {
        ClientKey(self.hash(&[branch, method]))
    }
}

pub(crate) struct ServerEntry {
    pub(crate) txn: ServerTransaction,
    pub(crate) hop: Hop,
    /// A REGISTER as received, for the 500 that replaces its 200 when the
    /// binding cannot be stored (empty for other methods).
    pub(crate) request: Box<[u8]>,
    pub(crate) proxy: Option<u64>,
}

pub(crate) struct ClientEntry {
    pub(crate) txn: ClientTransaction,
    pub(crate) hop: Hop,
    /// Who in the transaction user the transaction is for (none: a CANCEL
    /// or another request whose outcome nobody waits for).
    pub(crate) owner: Option<Owner>,
}

/// What a client transaction is for, in its transaction user.
#[derive(Debug, Clone)]
pub(crate) enum Owner {
    /// Branch `.1` of the stateful proxy's context `.0`.
    Branch(u64, usize),
    /// A request of a B2BUA call.
    Call(b2bua::CallTxn),
}

/// What the transaction layer reports to the transaction user besides the
/// messages it is handed: a client transaction that timed out, a server
/// transaction of a proxy context that ended.
#[derive(Debug, Clone)]
pub(crate) enum LayerEvent {
    TimedOut(Owner),
    /// The transport reported an error towards the transaction's peer.
    Unreachable(Owner),
    ServerEnded(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerRef {
    Server(ServerKey),
    Client(ClientKey),
    TimerC(u64, usize),
    Call(u64, b2bua::CallTimer),
    Health,
}

/// What the layer counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LayerCounters {
    /// Retransmissions absorbed by a transaction.
    pub(crate) retransmissions: u64,
    /// Responses generated here.
    pub(crate) generated: u64,
}

/// What [`TransactionLayer::receive_request`] made of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// A retransmission or an ACK its transaction absorbed.
    Absorbed,
    /// A request no server transaction holds yet (an ACK to a 2xx among
    /// them): the transaction user's.
    New(ServerKey),
    /// No transaction can be named for it (no Via).
    Malformed,
}

/// What [`TransactionLayer::receive_response`] made of a response.
#[derive(Debug, Clone)]
pub(crate) enum Matched {
    /// For the client transaction of `Owner` (first copy of each status).
    Owner(Owner),
    /// For a transaction with no owner, or a retransmission absorbed.
    Absorbed,
    /// For no client transaction.
    Stray,
    /// No Via or CSeq to match it by.
    Malformed,
}

/// The transaction layer.
pub(crate) struct TransactionLayer {
    pub(crate) keys: KeyHasher,
    t: Timers,
    /// Boxed, so the tables hold a key and a pointer per transaction: tens
    /// of thousands linger for 32 s (Timers J, L, M), and growing a table
    /// then moves 24-octet slots rather than whole transactions.
    pub(crate) servers: FxHashMap<ServerKey, Box<ServerEntry>>,
    pub(crate) clients: FxHashMap<ClientKey, Box<ClientEntry>>,
    pub(crate) timers: Wheel<TimerRef>,
    due_timers: Vec<TimerRef>,
    out: VecDeque<Outbound>,
    events: VecDeque<LayerEvent>,
    pub(crate) counters: LayerCounters,
}

impl std::fmt::Debug for TransactionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionLayer")
            .field("servers", &self.servers.len())
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl TransactionLayer {
    /// A layer whose transaction keys are keyed by `secret`.
    pub(crate) fn new(secret: &[u8], t: Timers) -> Self {
        TransactionLayer {
            keys: KeyHasher::new(secret),
            t,
            servers: FxHashMap::default(),
            clients: FxHashMap::default(),
            timers: Wheel::new(0),
            due_timers: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            counters: LayerCounters::default(),
        }
    }

    /// Live transactions (server, client).
    pub(crate) fn transactions(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// A received request: retransmissions (and ACKs to non-2xx final
    /// responses) are absorbed by their transaction, which sends again
    /// what it last sent.
    pub(crate) fn receive_request(&mut self, now: Millis, msg: &SipMessage<'_>) -> Received {
        let Some(key) = self.server_key(msg, None) else {
            return Received::Malformed;
        };
        let Some(entry) = self.servers.get_mut(&key) else {
            return Received::New(key);
        };
        if msg.method() == Some(Method::Ack) {
            let d = entry.txn.on_ack(now);
            let next = entry.txn.next_deadline();
            self.schedule(next, TimerRef::Server(key));
            self.drain_server(&key);
            if d == Delivery::Absorb {
                self.counters.retransmissions += 1;
                return Received::Absorbed;
            }
            Received::New(key)
        } else {
            entry.txn.on_request();
            self.counters.retransmissions += 1;
            self.drain_server(&key);
            Received::Absorbed
        }
    }

    /// Opens server transaction `key` for `msg`, its responses going to
    /// `hop`; `keep` keeps the request for a response rebuilt later.
    pub(crate) fn open_server(
        &mut self,
        key: ServerKey,
        msg: &SipMessage<'_>,
        hop: Hop,
        keep: bool,
    ) {
        let txn = ServerTransaction::new(
            msg.method() == Some(Method::Invite),
            hop.transport.reliable(),
            self.t,
        );
        self.servers.insert(
            key,
            Box::new(ServerEntry {
                txn,
                hop,
                request: if keep {
                    msg.as_bytes().into()
                } else {
                    Box::default()
                },
                proxy: None,
            }),
        );
    }

    /// A received response, matched to its client transaction (§17.1.3).
    pub(crate) fn receive_response(&mut self, now: Millis, msg: &SipMessage<'_>) -> Matched {
        let (Ok(via), Ok(cseq)) = (msg.top_via(), msg.cseq()) else {
            return Matched::Malformed;
        };
        let key = self
            .keys
            .client(via.branch().unwrap_or_default(), cseq.method.as_bytes());
        let code = msg.status_code().unwrap_or(500);
        let Some(entry) = self.clients.get_mut(&key) else {
            return Matched::Stray;
        };
        // Only a non-2xx final response to an INVITE needs the request (for
        // the ACK); nothing is copied otherwise.
        let request = if code >= 300 && entry.txn.is_invite() {
            entry.txn.request().to_vec()
        } else {
            Vec::new()
        };
        let delivery = entry.txn.on_response(now, code, || {
            let req = SipMessage::parse(&request, Framing::Datagram, &Limits::default()).ok()?;
            build::ack_for(&req, msg)
        });
        let next = entry.txn.next_deadline();
        let owner = entry.owner.clone();
        self.schedule(next, TimerRef::Client(key));
        self.drain_client(&key);
        if delivery == Delivery::Absorb {
            self.counters.retransmissions += 1;
            return Matched::Absorbed;
        }
        owner.map_or(Matched::Absorbed, Matched::Owner)
    }

    /// The timers due at `now` (call again until it gives none: handlers
    /// may set timers already due).
    pub(crate) fn take_due(&mut self, now: Millis) -> Vec<TimerRef> {
        let mut due = std::mem::take(&mut self.due_timers);
        self.timers.advance(now, |_, _, r| due.push(r));
        due
    }

    /// Gives back the vector [`TransactionLayer::take_due`] lent.
    pub(crate) fn return_due(&mut self, mut due: Vec<TimerRef>) {
        due.clear();
        self.due_timers = due;
    }

    /// Runs a due timer of a transaction; `false` for the user's timers.
    pub(crate) fn fire(&mut self, now: Millis, r: TimerRef) -> bool {
        match r {
            TimerRef::Server(k) => {
                let Some(e) = self.servers.get_mut(&k) else {
                    return true;
                };
                if e.txn.next_deadline().is_none_or(|d| d > now) {
                    return true;
                }
                e.txn.on_timer(now);
                let next = e.txn.next_deadline();
                self.schedule(next, TimerRef::Server(k));
                self.drain_server(&k);
                true
            }
            TimerRef::Client(k) => {
                let Some(e) = self.clients.get_mut(&k) else {
                    return true;
                };
                if e.txn.next_deadline().is_none_or(|d| d > now) {
                    return true;
                }
                e.txn.on_timer(now);
                let next = e.txn.next_deadline();
                self.schedule(next, TimerRef::Client(k));
                self.drain_client(&k);
                true
            }
            TimerRef::TimerC(..) | TimerRef::Call(..) | TimerRef::Health => false,
        }
    }

    /// What the transaction user has still to hear.
    pub(crate) fn poll_event(&mut self) -> Option<LayerEvent> {
        self.events.pop_front()
    }

    /// The next message to send.
    pub(crate) fn poll_outbound(&mut self) -> Option<Outbound> {
        self.out.pop_front()
    }

    pub(crate) fn emit(&mut self, hop: Hop, bytes: Vec<u8>) {
        self.out.push_back(Outbound {
            bytes,
            transport: hop.transport,
            local: hop.local,
            dest: hop.dest,
            conn: hop.conn,
        });
    }

    /// Starts client transaction `key` sending `bytes` towards `hop` for its
    /// owner (a proxy branch or a B2BUA call), and sends its first copy.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_client(
        &mut self,
        now: Millis,
        key: ClientKey,
        bytes: Vec<u8>,
        invite: bool,
        hop: Hop,
        owner: Option<Owner>,
    ) {
        let txn = ClientTransaction::new(now, bytes, invite, hop.transport.reliable(), self.t);
        let next = txn.next_deadline();
        self.clients
            .insert(key, Box::new(ClientEntry { txn, hop, owner }));
        self.schedule(next, TimerRef::Client(key));
        self.drain_client(&key);
    }

    /// When `on_timer` must next run.
    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.timers.next_due()
    }

    pub(crate) fn schedule(&mut self, at: Option<Millis>, r: TimerRef) {
        if let Some(at) = at {
            self.timers.schedule(at, r);
        }
    }

    /// The server transaction `msg` belongs to; `method` overrides the
    /// request's own (ACK → INVITE, CANCEL → the INVITE it cancels).
    pub(crate) fn server_key(
        &self,
        msg: &SipMessage<'_>,
        method: Option<&[u8]>,
    ) -> Option<ServerKey> {
        let via = msg.top_via().ok()?;
        let method = match (method, msg.method()?) {
            (Some(m), _) => m,
            (None, Method::Ack) => b"INVITE".as_slice(),
            (None, m) => m.as_bytes(),
        };
        // sent-by as bytes: port, kind, host.
        let mut buf = [0u8; 19];
        buf[..2].copy_from_slice(&via.port.unwrap_or(5060).to_be_bytes());
        let name;
        let sent_by: &[u8] = match via.host {
            Host::V4(a) => {
                buf[2] = 4;
                buf[3..7].copy_from_slice(&a.octets());
                &buf[..7]
            }
            Host::V6(a) => {
                buf[2] = 6;
                buf[3..19].copy_from_slice(&a.octets());
                &buf[..19]
            }
            Host::Name(n) => {
                name = [&buf[..2], n].concat();
                &name
            }
        };
        Some(match via.branch() {
            Some(b) if via.is_rfc3261_branch() => self.keys.server(b, sent_by, method),
            // RFC 2543 requests: the transaction is what the request says
            // about itself (§17.2.3, simplified).
            _ => {
                let mut k = msg.call_id().ok()?.to_vec();
                k.extend_from_slice(&msg.cseq().ok()?.seq.to_be_bytes());
                k.extend_from_slice(msg.from().ok()?.tag().unwrap_or_default());
                self.keys.server(&k, sent_by, method)
            }
        })
    }

    /// Answers a request through its server transaction.
    pub(crate) fn respond(
        &mut self,
        now: Millis,
        key: &ServerKey,
        msg: &SipMessage<'_>,
        status: u16,
        reason: &str,
        extra: &[(HeaderName, &[u8])],
    ) {
        let mut out = Vec::with_capacity(512);
        let tag = build::to_tag(&[&key.seed(), msg.call_id().unwrap_or_default()]);
        write_response(
            msg,
            status,
            reason.as_bytes(),
            Some(tag.as_bytes()),
            extra,
            &mut out,
        );
        self.counters.generated += 1;
        self.server_respond(now, key, status, out);
    }

    /// Sends `bytes` (a response with `status`) through server transaction `key`.
    pub(crate) fn server_respond(
        &mut self,
        now: Millis,
        key: &ServerKey,
        status: u16,
        bytes: Vec<u8>,
    ) {
        let Some(entry) = self.servers.get_mut(key) else {
            return;
        };
        entry.txn.send_response(now, status, bytes);
        let next = entry.txn.next_deadline();
        self.schedule(next, TimerRef::Server(*key));
        self.drain_server(key);
    }

    pub(crate) fn drain_server(&mut self, key: &ServerKey) {
        let Some(entry) = self.servers.get_mut(key) else {
            return;
        };
        let hop = entry.hop;
        let mut msgs = Vec::new();
        while let Some(m) = entry.txn.poll_transmit() {
            msgs.push(m);
        }
        while entry.txn.poll_event().is_some() {}
        let done = entry.txn.state() == crate::transaction::ServerState::Terminated;
        let proxy = entry.proxy;
        for m in msgs {
            self.emit(hop, m);
        }
        if done {
            self.servers.remove(key);
            if let Some(p) = proxy {
                self.events.push_back(LayerEvent::ServerEnded(p));
            }
        }
    }

    pub(crate) fn drain_client(&mut self, key: &ClientKey) {
        let Some(entry) = self.clients.get_mut(key) else {
            return;
        };
        let hop = entry.hop;
        let mut msgs = Vec::new();
        while let Some(m) = entry.txn.poll_transmit() {
            msgs.push(m);
        }
        let mut timed_out = false;
        while entry.txn.poll_event().is_some() {
            timed_out = true;
        }
        let done = entry.txn.state() == crate::transaction::ClientState::Terminated;
        let owner = if timed_out { entry.owner.clone() } else { None };
        for m in msgs {
            self.emit(hop, m);
        }
        if done {
            self.clients.remove(key);
        }
        if let Some(owner) = owner {
            self.events.push_back(LayerEvent::TimedOut(owner));
        }
    }

    /// Ends every client transaction to `dest` over `transport` that has
    /// no final response yet: its transport failed (RFC 3261 §17.1.4).
    pub(crate) fn unreachable(&mut self, transport: Transport, dest: SocketAddr) {
        let failed: Vec<ClientKey> = self
            .clients
            .iter()
            .filter(|(_, e)| {
                e.hop.transport == transport
                    && e.hop.dest == dest
                    && matches!(
                        e.txn.state(),
                        crate::transaction::ClientState::Calling
                            | crate::transaction::ClientState::Trying
                            | crate::transaction::ClientState::Proceeding
                    )
            })
            .map(|(k, _)| *k)
            .collect();
        for k in failed {
            if let Some(owner) = self.clients.remove(&k).and_then(|e| e.owner) {
                self.events.push_back(LayerEvent::Unreachable(owner));
            }
        }
    }

    /// Writes a bare response with `status` to `req`.
    pub(crate) fn response_bytes(req: &SipMessage<'_>, key_branch: &[u8], status: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let tag = build::to_tag(&[key_branch, req.call_id().unwrap_or_default()]);
        write_response(
            req,
            status,
            reason_phrase(status).as_bytes(),
            Some(tag.as_bytes()),
            &[],
            &mut out,
        );
        out
    }
}
