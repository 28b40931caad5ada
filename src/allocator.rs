//! What the C allocator is told at start-up, so that request buffers are
//! reused rather than handed back to the kernel and faulted in again.
//!
//! Measured (BENCHMARKS.md, "Issue 12: allocator"): with glibc's defaults
//! every 190 KB trace request cost 9 to 29 minor page faults, about 10 % of
//! the sidecar's CPU under load. glibc serves a block above its mmap
//! threshold (128 KiB at first, raised on the fly to the largest block freed)
//! with a fresh mapping, and gives the top of a heap back to the kernel as
//! soon as more than twice that threshold is free there: a request body read
//! whole (1 MiB HTTP/2 frames) and freed after the walk leaves exactly that
//! behind, so the next request's body lands on pages the kernel must zero
//! and map again. Fixed thresholds end the churn; a trim every 30 s gives
//! back what a burst left, so resident memory still follows the load.
//!
//! Tested in tests/suite/allocator.rs (page faults under steady load).
//!
//! Written here rather than by swapping the allocator (mimalloc, jemalloc):
//! two `mallopt` calls keep the system allocator, its RSS behaviour and the
//! build as they are. Only glibc has these knobs; elsewhere this is a no-op.

use std::time::Duration;

/// Blocks up to this size come from the heap, not from their own mapping:
/// the default `receivers.otlp_grpc.max_message_bytes` (4 MiB), so a request
/// body of any accepted size is reused memory.
pub const MMAP_THRESHOLD: usize = 4 << 20;

/// Free memory kept at the top of a heap before it is given back at once.
/// Bounded by what was in use at the peak: nothing is kept that was not
/// needed, and [`TRIM_EVERY`] gives it back later.
pub const TRIM_THRESHOLD: usize = 8 << 20;

/// How often free heap memory is given back to the kernel.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Sets the thresholds; call before any thread starts (glibc reads them per
/// allocation, and fixed values also stop its own adjustment).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets two integer parameters of glibc's malloc; it
    // takes its own lock and is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
    }
}

/// Gives free heap memory back to the kernel (every arena), returning
/// whether any was given back.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim walks glibc's arenas under their locks; it frees
    // nothing that is in use.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Trims every [`TRIM_EVERY`] on a blocking thread (it may take an arena's
/// lock for a moment), for as long as the runtime runs.
pub fn spawn_trim() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    });
}
