//! Local port pairs for media legs: an even RTP port and the odd RTCP port
//! after it, taken from the worker's slice of the configured range.
//!
//! A pair whose call ended stays open ("parked"): its sockets keep their
//! receive armed and whatever reaches them is dropped and counted as for an
//! unknown endpoint. A later call takes it without a system call, once it has
//! been quiet for [`QUIET_MS`]; a pair unused for [`IDLE_MS`] is closed.

use std::collections::VecDeque;

use crate::media::relay::EndpointId;

/// How long a parked pair waits before another call gets it, so late packets
/// of its old call do not reach the new one.
pub(super) const QUIET_MS: u64 = 1000;
/// How long a parked pair stays open unused.
pub(super) const IDLE_MS: u64 = 10_000;

/// An open pair whose call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Parked {
    /// The RTP port.
    pub(super) port: u16,
    /// The RTP endpoint.
    pub(super) rtp: EndpointId,
    /// The RTCP endpoint on `port + 1`, if the call had one.
    pub(super) rtcp: Option<EndpointId>,
    /// The worker's clock when it was parked.
    pub(super) since_ms: u64,
}

/// A pair handed out: a port to open, or a parked pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pair {
    /// A closed port: its sockets are to be opened.
    Closed(u16),
    /// An open pair.
    Open(Parked),
}

/// Free pairs of one worker.
#[derive(Debug)]
pub(super) struct PortPool {
    closed: VecDeque<u16>,
    parked: VecDeque<Parked>,
}

/// The worker of `workers` whose pool holds `port` of `[lo, hi]` (the pair's
/// RTCP port too); none outside the range.
pub(super) fn owner(lo: u16, hi: u16, port: u16, workers: usize) -> Option<usize> {
    let first = if lo.is_multiple_of(2) { lo } else { lo + 1 };
    if port < first || port > hi {
        return None;
    }
    Some(usize::from((port - first) / 2) % workers.max(1))
}

impl PortPool {
    /// The even ports of `[lo, hi]` whose pair fits in the range, given to
    /// worker `worker` of `workers` (interleaved, so each worker's ports are
    /// spread over the range).
    pub(super) fn new(lo: u16, hi: u16, worker: usize, workers: usize) -> Self {
        let first = if lo.is_multiple_of(2) { lo } else { lo + 1 };
        let closed = (u32::from(first)..u32::from(hi))
            .step_by(2)
            .enumerate()
            .filter(|(i, _)| i % workers.max(1) == worker)
            .map(|(_, p)| p as u16)
            .collect();
        PortPool {
            closed,
            parked: VecDeque::new(),
        }
    }

    /// Takes a pair at `now_ms`: the longest-parked one if it has been quiet
    /// long enough, else a closed one, else the longest-parked one anyway.
    pub(super) fn take(&mut self, now_ms: u64) -> Option<Pair> {
        if let Some(p) = self.parked.front()
            && now_ms >= p.since_ms + QUIET_MS
        {
            return self.parked.pop_front().map(Pair::Open);
        }
        match self.closed.pop_front() {
            Some(port) => Some(Pair::Closed(port)),
            None => self.parked.pop_front().map(Pair::Open),
        }
    }

    /// Returns a closed pair's port; reused last, so a port is not reused
    /// while late packets for its old call may still arrive.
    pub(super) fn put(&mut self, port: u16) {
        self.closed.push_back(port);
    }

    /// Keeps an open pair for a later call.
    pub(super) fn park(&mut self, pair: Parked) {
        self.parked.push_back(pair);
    }

    /// The longest-parked pair, to be closed by the caller (its port comes
    /// back with [`PortPool::put`]).
    pub(super) fn unpark_oldest(&mut self) -> Option<Parked> {
        self.parked.pop_front()
    }

    /// The next pair parked and unused for [`IDLE_MS`] at `now_ms`, to be
    /// closed by the caller.
    pub(super) fn unpark_idle(&mut self, now_ms: u64) -> Option<Parked> {
        if self
            .parked
            .front()
            .is_some_and(|p| now_ms >= p.since_ms + IDLE_MS)
        {
            self.parked.pop_front()
        } else {
            None
        }
    }

    /// Pairs a new leg can take (closed ones and parked ones).
    pub(super) fn available(&self) -> usize {
        self.closed.len() + self.parked.len()
    }

    /// Pairs parked.
    #[cfg(test)]
    pub(super) fn parked(&self) -> usize {
        self.parked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{IDLE_MS, Pair, Parked, PortPool, QUIET_MS};

    #[test]
    fn workers_share_the_range_without_overlap() {
        let mut a = PortPool::new(30000, 30011, 0, 2);
        let mut b = PortPool::new(30000, 30011, 1, 2);
        let mut all: Vec<Pair> = std::iter::from_fn(|| a.take(0))
            .chain(std::iter::from_fn(|| b.take(0)))
            .collect();
        all.sort_unstable_by_key(|p| match p {
            Pair::Closed(port) => *port,
            Pair::Open(p) => p.port,
        });
        let ports = [30000, 30002, 30004, 30006, 30008, 30010].map(Pair::Closed);
        assert_eq!(all, ports);
        // Each port (and its RTCP neighbour) is known to be its worker's.
        for worker in [0, 1] {
            let mut p = PortPool::new(30000, 30011, worker, 2);
            while let Some(Pair::Closed(port)) = p.take(0) {
                assert_eq!(super::owner(30000, 30011, port, 2), Some(worker));
                assert_eq!(super::owner(30000, 30011, port + 1, 2), Some(worker));
            }
        }
        assert_eq!(super::owner(30000, 30011, 29999, 2), None);
        assert_eq!(super::owner(30000, 30011, 30012, 2), None);
        let mut c = PortPool::new(30001, 30004, 0, 1);
        assert_eq!((c.take(0), c.take(0)), (Some(Pair::Closed(30002)), None));
        c.put(30002);
        assert_eq!(c.take(0), Some(Pair::Closed(30002)));
    }

    #[test]
    fn a_parked_pair_is_reused_once_quiet_and_closed_when_idle() {
        let mut pool = PortPool::new(40000, 40003, 0, 1);
        let parked = Parked {
            port: 40000,
            rtp: 7,
            rtcp: Some(8),
            since_ms: 5000,
        };
        assert_eq!(pool.take(0), Some(Pair::Closed(40000)));
        pool.park(parked);
        // Not quiet yet: a closed port goes first.
        assert_eq!(pool.take(5000 + QUIET_MS - 1), Some(Pair::Closed(40002)));
        assert_eq!(pool.take(5000 + QUIET_MS), Some(Pair::Open(parked)));
        // With no closed port left, a parked pair goes even if not quiet.
        pool.park(parked);
        assert_eq!(pool.take(5000), Some(Pair::Open(parked)));
        assert_eq!(pool.take(5000), None);
        pool.park(parked);
        assert_eq!(pool.parked(), 1);
        assert_eq!(pool.unpark_idle(5000 + IDLE_MS - 1), None);
        assert_eq!(pool.unpark_idle(5000 + IDLE_MS), Some(parked));
        assert_eq!(pool.unpark_oldest(), None);
    }
}

/// A worker's pairs on each of the relay's addresses: the IPv4 one (key
/// none) and the others it was given (IPv6, realms'): the same port numbers
/// on another address. A pool is made when its address is first used.
#[derive(Debug)]
pub(super) struct Pools {
    range: (u16, u16, usize, usize),
    pools: Vec<(Option<std::net::IpAddr>, PortPool)>,
}

impl Pools {
    /// Pools over the same ports (see [`PortPool::new`]).
    pub(super) fn new(lo: u16, hi: u16, worker: usize, workers: usize) -> Self {
        Pools {
            range: (lo, hi, worker, workers),
            pools: vec![(None, PortPool::new(lo, hi, worker, workers))],
        }
    }

    /// The pool of one address (none: the IPv4 address).
    pub(super) fn of(&mut self, at: Option<std::net::IpAddr>) -> &mut PortPool {
        let i = match self.pools.iter().position(|(a, _)| *a == at) {
            Some(i) => i,
            None => {
                let (lo, hi, w, n) = self.range;
                self.pools.push((at, PortPool::new(lo, hi, w, n)));
                self.pools.len() - 1
            }
        };
        &mut self.pools[i].1
    }

    /// How many addresses have a pool.
    pub(super) fn len(&self) -> usize {
        self.pools.len()
    }

    /// The pool of the `i`-th address, for closing idle pairs.
    pub(super) fn nth(&mut self, i: usize) -> Option<&mut PortPool> {
        self.pools.get_mut(i).map(|(_, p)| p)
    }

    /// Pairs still free on the IPv4 address (nearly every call has a leg
    /// there).
    pub(super) fn available(&self) -> usize {
        self.pools[0].1.available()
    }
}
