//! Reused byte buffers. A worker takes a buffer, fills it, sends it and gives
//! it back; after warm-up no buffer is allocated on the packet path.

/// A per-worker pool of byte buffers of one capacity. Not shared between
/// threads: each worker owns its own.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    capacity: usize,
    max_free: usize,
    misses: u64,
}

impl BufPool {
    /// A pool handing out buffers of `capacity` bytes, pre-filled with
    /// `prealloc` of them and keeping at most `max_free` idle ones.
    pub fn new(capacity: usize, prealloc: usize, max_free: usize) -> Self {
        let free = (0..prealloc)
            .map(|_| Vec::with_capacity(capacity))
            .collect();
        BufPool {
            free,
            capacity,
            max_free: max_free.max(prealloc),
            misses: 0,
        }
    }

    /// Takes an empty buffer, allocating only when the pool is empty.
    pub fn take(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(b) => b,
            None => {
                self.misses += 1;
                Vec::with_capacity(self.capacity)
            }
        }
    }

    /// Returns a buffer. Buffers that grew far past the pool's size are
    /// dropped rather than kept, so one huge message does not pin memory.
    pub fn put(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < self.max_free && buf.capacity() <= self.capacity * 4 {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// How many times `take` had to allocate.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Idle buffers held.
    pub fn idle(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::BufPool;

    #[test]
    fn reuses_buffers() {
        let mut p = BufPool::new(1500, 2, 4);
        let a = p.take();
        let b = p.take();
        let c = p.take();
        assert_eq!(p.misses(), 1);
        p.put(a);
        p.put(b);
        p.put(c);
        assert_eq!(p.idle(), 3);
        let big = Vec::with_capacity(1 << 20);
        p.put(big);
        assert_eq!(p.idle(), 3);
    }
}
