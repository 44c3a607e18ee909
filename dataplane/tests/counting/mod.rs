//! A global allocator that counts every allocation and reallocation of the
//! process, for the tests that prove a path allocates nothing: each test
//! binary declares `#[global_allocator] static GLOBAL: counting::Counting`
//! and reads [`ALLOCS`] around the window it measures.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations and reallocations so far, every thread.
pub(crate) static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// The counting allocator (the system's underneath).
pub(crate) struct Counting;

// SAFETY: forwards to the system allocator; counting is a relaxed atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
