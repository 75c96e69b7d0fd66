//! How the process's allocator hands memory back (issue 19: the first
//! backup's peak memory).
//!
//! glibc's `malloc` serves an allocation of 128 KiB or more with its own
//! `mmap`, and unmaps it when freed, but raises that threshold to the size
//! of each such block freed (up to 32 MiB). After the first 4 MiB chunk or
//! pack buffer is freed, buffers of a few MiB come from the heap instead,
//! where a freed one in the middle is kept: a backup's compressors, whose
//! buffers are sized to each chunk, then left the heap about 10 MiB larger
//! than what was live (`local backup` of the bench tree, two workers: a
//! peak RSS of 55 MiB against 44 MiB with the threshold fixed).

/// The threshold from which allocations are mapped on their own, and so
/// given back to the kernel as soon as they are freed.
pub const MAP_FROM: usize = 256 << 10;

/// Fixes glibc's mapping threshold at [`MAP_FROM`], so that large buffers
/// go back to the kernel when freed. Call it first thing in `main`, before
/// any thread is started. Elsewhere than glibc it does nothing.
pub fn hand_back_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a malloc parameter; it is called
        // before the process starts any thread.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MAP_FROM as libc::c_int) };
    }
}
