//! A global allocator that counts allocations and their bytes (shared by
//! `tests/alloc_free.rs` and `benches/fanout.rs`): wraps the system allocator and changes
//! nothing else.
//!
//! Counts are per thread: a measurement sees its own thread's allocations only, never
//! those the test harness makes meanwhile on its threads (reporting another test's
//! result, say).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // `const` and without a destructor: reading them never allocates.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

/// Counts every allocation and reallocation.
pub struct Counting;

/// Allocations made so far by this thread.
pub fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

#[allow(dead_code)] // used by tests/alloc_free.rs, not by the bench
/// Bytes requested so far by this thread's allocations (a reallocation counts its new
/// size; frees are not subtracted).
pub fn allocated_bytes() -> u64 {
    BYTES.with(Cell::get)
}

fn count(bytes: usize) {
    // `try_with`: a thread being torn down may still allocate.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|c| c.set(c.get() + bytes as u64));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}
