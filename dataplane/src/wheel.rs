//! A two-level timer wheel with millisecond slots, for state machines that
//! set many timers and let most of them lapse (a retransmission timer
//! outlived by its answer): scheduling is a push onto a slot, firing visits
//! each millisecond once, and a lapsed timer costs nothing until its slot
//! comes round (the owner ignores it then, by a generation it keeps).
//!
//! The near level holds the next [`NEAR`] milliseconds, one slot each; timers
//! further out wait in [`BLOCK`]-millisecond buckets and move to the near
//! level when their block comes within reach, so every timer is handled at
//! most twice however far out it was set.

use std::collections::BTreeMap;

/// Milliseconds the near level covers.
pub const NEAR: u64 = 4096;
/// Milliseconds per far bucket; NEAR is a whole number of them.
pub const BLOCK: u64 = 1024;

/// Timers carrying a `T` each, due at millisecond times.
#[derive(Debug)]
pub struct Wheel<T> {
    /// The next millisecond to fire.
    cursor: u64,
    near: Vec<Vec<(u64, T)>>,
    near_len: usize,
    /// Timers beyond the near level, by block (`at / BLOCK`).
    far: BTreeMap<u64, Vec<(u64, T)>>,
    /// Timers set for a millisecond already fired: due at the next advance.
    overdue: Vec<(u64, T)>,
    spare: Vec<(u64, T)>,
    /// Emptied far buckets, kept for the next blocks: a bucket fills with a
    /// second's worth of timers, which would otherwise grow from nothing.
    far_spare: Vec<Vec<(u64, T)>>,
}

/// Emptied far buckets kept at most.
const FAR_SPARE: usize = 8;

impl<T> Wheel<T> {
    /// An empty wheel whose first millisecond to fire is `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Wheel {
            cursor: now_ms,
            near: (0..NEAR).map(|_| Vec::new()).collect(),
            near_len: 0,
            far: BTreeMap::new(),
            overdue: Vec::new(),
            spare: Vec::new(),
            far_spare: Vec::new(),
        }
    }

    /// Timers set and not yet fired.
    pub fn len(&self) -> usize {
        self.near_len + self.overdue.len() + self.far.values().map(Vec::len).sum::<usize>()
    }

    /// Whether no timer is set.
    pub fn is_empty(&self) -> bool {
        self.near_len == 0 && self.overdue.is_empty() && self.far.is_empty()
    }

    /// The first block the near level does not reach.
    fn horizon(&self) -> u64 {
        self.cursor / BLOCK + NEAR / BLOCK
    }

    /// Sets a timer for `at_ms`. One for a millisecond already fired fires
    /// at the next advance, or in the running one when set while firing.
    pub fn schedule(&mut self, at_ms: u64, item: T) {
        let at = at_ms;
        if at < self.cursor {
            self.overdue.push((at, item));
        } else if at / BLOCK < self.horizon() {
            self.near[(at % NEAR) as usize].push((at, item));
            self.near_len += 1;
        } else {
            let spare = &mut self.far_spare;
            self.far
                .entry(at / BLOCK)
                .or_insert_with(|| spare.pop().unwrap_or_default())
                .push((at, item));
        }
    }

    /// Fires, in time order by millisecond, every timer due by `now_ms`.
    pub fn advance(&mut self, now_ms: u64, mut fire: impl FnMut(&mut Self, u64, T)) {
        loop {
            if !self.overdue.is_empty() {
                let mut late = std::mem::take(&mut self.overdue);
                for (at, item) in late.drain(..) {
                    fire(self, at, item);
                }
                if self.overdue.is_empty() {
                    self.overdue = late;
                }
                continue;
            }
            if self.cursor > now_ms {
                break;
            }
            if self.near_len == 0 {
                // Nothing near: jump to the next far block's start (or now).
                let next = self.far.keys().next().map(|b| b * BLOCK);
                let to = next.map_or(now_ms + 1, |n| n.min(now_ms + 1));
                if to > self.cursor + 1 {
                    self.jump(to);
                    continue;
                }
            }
            let ms = self.cursor;
            let mut due = std::mem::take(&mut self.spare);
            std::mem::swap(&mut due, &mut self.near[(ms % NEAR) as usize]);
            self.near_len -= due.len();
            self.cursor += 1;
            if self.cursor.is_multiple_of(BLOCK) {
                self.pull_block();
            }
            for (at, item) in due.drain(..) {
                fire(self, at, item);
            }
            self.spare = due;
        }
    }

    /// Moves the cursor to `to` over empty near slots, bringing in each far
    /// block that comes within reach on the way.
    fn jump(&mut self, to: u64) {
        let crossed = to / BLOCK > self.cursor / BLOCK;
        self.cursor = to;
        if crossed {
            // Every block now within reach (pull takes all up to it).
            self.pull(self.horizon() - 1);
        }
    }

    /// The cursor entered a new block: the block that just came within the
    /// near level's reach moves in.
    fn pull_block(&mut self) {
        let b = self.horizon() - 1;
        self.pull(b);
    }

    fn pull(&mut self, block: u64) {
        // Blocks skipped over (a long idle jump) come in too.
        while let Some((&b, _)) = self.far.first_key_value() {
            if b > block {
                break;
            }
            let Some((_, mut items)) = self.far.pop_first() else {
                break;
            };
            for (at, item) in items.drain(..) {
                let at = at.max(self.cursor);
                self.near[(at % NEAR) as usize].push((at, item));
                self.near_len += 1;
            }
            if self.far_spare.len() < FAR_SPARE {
                self.far_spare.push(items);
            }
        }
    }

    /// The earliest time anything may be due: exact within the next 64 ms,
    /// otherwise a lower bound (the wheel's owner wakes then and asks again).
    pub fn next_due(&self) -> Option<u64> {
        if let Some(at) = self.overdue.iter().map(|(at, _)| *at).min() {
            return Some(at);
        }
        if self.near_len > 0 {
            for ms in self.cursor..self.cursor + 64 {
                if !self.near[(ms % NEAR) as usize].is_empty() {
                    return Some(ms);
                }
            }
            return Some(self.cursor + 64);
        }
        self.far.keys().next().map(|b| (b * BLOCK).max(self.cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fires everything due by `now`, returning (due time, item, fired at).
    fn fire_all(w: &mut Wheel<u32>, now: u64, out: &mut Vec<(u64, u32, u64)>) {
        w.advance(now, |_, at, item| out.push((at, item, now)));
    }

    #[test]
    fn timers_fire_at_their_millisecond_near_and_far() {
        let mut w = Wheel::new(1_000);
        let times = [1_000, 1_001, 1_500, 5_095, 5_096, 9_999, 33_000, 250_000];
        for (i, t) in times.iter().enumerate() {
            w.schedule(*t, i as u32);
        }
        assert_eq!(w.len(), times.len());
        let mut fired = Vec::new();
        // Advance one millisecond at a time: each fires exactly when due.
        for now in 1_000..=250_000 {
            let before = fired.len();
            fire_all(&mut w, now, &mut fired);
            for f in &fired[before..] {
                assert_eq!(f.0, now, "timer {} due {} fired at {now}", f.1, f.0);
            }
        }
        let mut items: Vec<u32> = fired.iter().map(|f| f.1).collect();
        items.sort_unstable();
        assert_eq!(items, (0..times.len() as u32).collect::<Vec<_>>());
        assert!(w.is_empty());
    }

    #[test]
    fn a_long_jump_fires_everything_due_in_order_and_keeps_later_timers() {
        let mut w = Wheel::new(0);
        for (i, t) in [10u64, 3_000, 4_100, 70_000, 70_001, 900_000]
            .iter()
            .enumerate()
        {
            w.schedule(*t, i as u32);
        }
        let mut fired = Vec::new();
        fire_all(&mut w, 70_000, &mut fired);
        let ats: Vec<u64> = fired.iter().map(|f| f.0).collect();
        assert_eq!(ats, [10, 3_000, 4_100, 70_000]);
        assert_eq!(w.len(), 2);
        assert_eq!(w.next_due(), Some(70_001));
        fired.clear();
        fire_all(&mut w, 899_999, &mut fired);
        assert_eq!(fired.iter().map(|f| f.0).collect::<Vec<_>>(), [70_001]);
        fired.clear();
        fire_all(&mut w, 900_000, &mut fired);
        assert_eq!(fired.iter().map(|f| f.1).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn a_timer_set_while_firing_or_in_the_past_fires_next() {
        let mut w = Wheel::new(100);
        w.schedule(50, 1);
        let mut fired = Vec::new();
        w.advance(100, |w, _, item| {
            fired.push(item);
            if item == 1 {
                w.schedule(100, 2); // already due: the next millisecond
                w.schedule(102, 3);
            }
        });
        // Both 1 (already past) and 2 (set while firing, for a fired
        // millisecond) fire in this advance; 3 when its time comes.
        assert_eq!(fired, [1, 2]);
        assert_eq!(w.next_due(), Some(102));
        w.advance(101, |_, _, item| fired.push(item));
        assert_eq!(fired, [1, 2]);
        w.advance(102, |_, _, item| fired.push(item));
        assert_eq!(fired, [1, 2, 3]);
    }

    #[test]
    fn next_due_is_never_later_than_the_first_timer() {
        let mut w = Wheel::new(0);
        assert_eq!(w.next_due(), None);
        w.schedule(5_000, 1);
        assert!(w.next_due().is_some_and(|d| d <= 5_000));
        w.schedule(30, 2);
        assert_eq!(w.next_due(), Some(30));
        w.schedule(200, 3);
        let mut fired = Vec::new();
        fire_all(&mut w, 30, &mut fired);
        assert!(w.next_due().is_some_and(|d| d <= 200));
    }
}
