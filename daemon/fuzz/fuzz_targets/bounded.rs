//! The fuzz targets' global allocator: the system allocator, counting. One allocation of more
//! than [`ONE`] bytes, or more than [`LIVE`] bytes held at once by the Rust code (libFuzzer's own
//! C++ allocations are not counted), aborts the process with a line on stderr saying which:
//! libFuzzer then reports a crash and saves the input. No input of a few kilobytes has a reason to
//! cost that much; past the bound it is a defect (an allocation sized by a length field, a
//! recursion that multiplies) or a leak (then the live count grows over many inputs and the line
//! says so).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most bytes one allocation may ask for.
pub const ONE: usize = 64 << 20;
/// Most bytes the Rust code may hold at once.
pub const LIVE: usize = 512 << 20;

static HELD: AtomicUsize = AtomicUsize::new(0);

/// The counting allocator.
pub struct Bounded;

fn stop(what: &[u8]) -> ! {
    // stderr is unbuffered: this write allocates nothing.
    let _ = std::io::stderr().write_all(what);
    std::process::abort()
}

fn take(size: usize) {
    if size > ONE {
        stop(b"\n==bounded== one allocation of more than 64 MiB\n");
    }
    if HELD.fetch_add(size, Ordering::Relaxed) + size > LIVE {
        stop(b"\n==bounded== more than 512 MiB held at once\n");
    }
}

// SAFETY: every call goes to the system allocator with the caller's arguments; the counting
// around it touches no memory the allocator hands out.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        take(layout.size());
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        take(layout.size());
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        take(new_size);
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
