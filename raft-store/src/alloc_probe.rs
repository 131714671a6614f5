//! The largest single allocation a piece of code makes on the calling thread: how the
//! hostile-input tests prove that no length field read from the network or a file makes a
//! decoder allocate more than its input justifies. A test binary installs [`ProbeAllocator`]
//! as its global allocator; [`largest_allocation`] measures a closure. Other threads (tests
//! running beside it) are not counted. Test builds and feature `fault-injection` only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// `Some(largest so far)` while this thread is measured.
    static LARGEST: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note(size: usize) {
    // `try_with`: the thread-local may already be gone while a thread exits.
    let _ = LARGEST.try_with(|largest| {
        if let Some(so_far) = largest.get() {
            largest.set(Some(so_far.max(size)));
        }
    });
}

/// The system allocator, noting each allocation's size on measured threads.
pub struct ProbeAllocator;

// SAFETY: every call is passed to `System` unchanged; `note` only reads a size and touches a
// const-initialised thread-local without a destructor, so it never allocates.
unsafe impl GlobalAlloc for ProbeAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `f` and returns its result with the largest single allocation it made on this thread
/// (0 if none, or if [`ProbeAllocator`] is not the global allocator).
pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(Some(0)));
    let result = f();
    let largest = LARGEST.with(|l| l.take()).unwrap_or(0);
    (result, largest)
}

/// Allocation any decode may make whatever its input: buffers of fixed size (a snapshot
/// reader's 256 KiB), tables, a runtime, error text.
pub const FIXED_ALLOCATION_BYTES: usize = 1024 * 1024;
/// An allocation may be this many times the input, on top of [`FIXED_ALLOCATION_BYTES`].
pub const ALLOCATION_PER_INPUT_BYTE: usize = 8;

/// The largest single allocation that decoding `input_len` bytes justifies.
pub fn justified(input_len: usize) -> usize {
    FIXED_ALLOCATION_BYTES + ALLOCATION_PER_INPUT_BYTE * input_len
}

/// Damages `bytes` as a bad disk or a hostile peer would: flips bits at each edit's position
/// (taken modulo the length), then cuts it at `cut` (modulo the length plus one) if given.
pub fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(at, flip) in edits {
        if !bytes.is_empty() {
            let at = at % bytes.len();
            bytes[at] ^= flip.max(1);
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}
