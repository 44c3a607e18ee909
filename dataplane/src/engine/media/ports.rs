//! Local port pairs for media legs: an even RTP port and the odd RTCP port
//! after it, taken from the worker's slice of the configured range.

use std::collections::VecDeque;

/// Free even ports of one worker.
#[derive(Debug)]
pub(super) struct PortPool {
    free: VecDeque<u16>,
}

impl PortPool {
    /// The even ports of `[lo, hi]` whose pair fits in the range, given to
    /// worker `worker` of `workers` (interleaved, so each worker's ports are
    /// spread over the range).
    pub(super) fn new(lo: u16, hi: u16, worker: usize, workers: usize) -> Self {
        let first = if lo.is_multiple_of(2) { lo } else { lo + 1 };
        let free = (u32::from(first)..u32::from(hi))
            .step_by(2)
            .enumerate()
            .filter(|(i, _)| i % workers.max(1) == worker)
            .map(|(_, p)| p as u16)
            .collect();
        PortPool { free }
    }

    /// Takes a pair's RTP port.
    pub(super) fn take(&mut self) -> Option<u16> {
        self.free.pop_front()
    }

    /// Returns a pair's RTP port; reused last, so a port is not reused while
    /// late packets for its old call may still arrive.
    pub(super) fn put(&mut self, port: u16) {
        self.free.push_back(port);
    }
}

#[cfg(test)]
mod tests {
    use super::PortPool;

    #[test]
    fn workers_share_the_range_without_overlap() {
        let mut a = PortPool::new(30000, 30011, 0, 2);
        let mut b = PortPool::new(30000, 30011, 1, 2);
        let mut all: Vec<u16> = std::iter::from_fn(|| a.take())
            .chain(std::iter::from_fn(|| b.take()))
            .collect();
        all.sort_unstable();
        assert_eq!(all, vec![30000, 30002, 30004, 30006, 30008, 30010]);
        let mut c = PortPool::new(30001, 30004, 0, 1);
        assert_eq!((c.take(), c.take()), (Some(30002), None));
        c.put(30002);
        assert_eq!(c.take(), Some(30002));
    }
}
