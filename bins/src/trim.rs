//! Handing the C allocator's free memory back to the kernel after a large transient.
//!
//! An OVN agent reads the Southbound's snapshot (for 10 000 ports: 6.5 MiB of JSON, 9 MiB
//! of rows) into a 7.4 MiB replica, then frees the rest. glibc keeps freed memory inside its
//! heaps unless it is at the very top, and the replica's allocations sit above the
//! snapshot's, so without help the agent's RSS stays at its peak for good (measured: 23 MiB,
//! 12 MiB once trimmed; again after every resync). `malloc_trim(0)` returns the free pages
//! in the middle of the heaps too. It walks the free lists, so it runs from the loop's
//! periodic tick, and only when the free memory grew by 4 MiB since the last trim: a
//! snapshot, not the churn of requests.

use std::time::Duration;

use crate::runtime::Hook;

/// How often the free memory is looked at (`mallinfo2`: a walk of the free lists' heads).
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The tick hook: trims when worth it; never reloads anything.
pub fn hook() -> Hook {
    Box::new(|| {
        trim_if_worth();
        None
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_if_worth() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// Growth of the free memory that is worth a trim.
    const WORTH: usize = 4 << 20;
    /// The free bytes counted after the last trim (they stay counted as free once returned).
    static TRIMMED: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    let last = TRIMMED.load(Ordering::Relaxed);
    if free < last {
        // The freed memory was used again: measure growth from here.
        TRIMMED.store(free, Ordering::Relaxed);
    } else if free - last >= WORTH {
        // SAFETY: malloc_trim touches only free memory, under the allocator's own lock.
        unsafe { libc::malloc_trim(0) };
        log::debug!(
            "returned free heap memory to the kernel ({} KiB free)",
            free >> 10
        );
        TRIMMED.store(free, Ordering::Relaxed);
    }
}

/// Other C libraries (musl) give freed memory back by themselves, or have no trim.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_if_worth() {}
