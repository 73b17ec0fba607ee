//! A global allocator that counts allocations (shared by `tests/alloc_free.rs` and
//! `benches/fanout.rs`): wraps the system allocator and changes nothing else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts every allocation and reallocation.
pub struct Counting;

/// Allocations so far.
pub static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Allocations made by this thread.
    static HERE: Cell<u64> = const { Cell::new(0) };
}

/// Allocations so far, by every thread (relaxed read).
#[allow(dead_code)] // each includer uses one of the two
pub fn allocations() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// Allocations so far by the calling thread only: what a test measures on its own
/// thread, undisturbed by the test harness's threads (which allocate when other tests
/// start or finish, more so on a busy machine).
#[allow(dead_code)]
pub fn allocations_here() -> u64 {
    HERE.with(Cell::get)
}

fn count() {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: a thread being torn down has no counter left; its allocations
    // still count globally.
    let _ = HERE.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}
