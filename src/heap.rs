//! Memory the process no longer uses goes back to the system. glibc's
//! allocator keeps freed memory in its arenas: after an overload (thousands
//! of calls' buffers freed at once) the node stayed at 2.5× its memory at
//! rest for good. Every [`TRIM_EVERY`] the node asks it to return what is
//! free (`malloc_trim`, which also releases free pages inside the heap, not
//! only at its top). Only glibc Linux has it; elsewhere this does nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free memory is returned. A trim walks the free lists: a few
/// milliseconds of one core on a heap of hundreds of megabytes, off the
/// async workers.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Returns free heap memory to the system now; true when some was returned.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists
        // under its locks; it is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every [`TRIM_EVERY`] until `stop`, after `release` has let go of
/// what the node's parts no longer need (a recognizer's idle state).
pub fn spawn_trimmer(stop: CancellationToken, release: impl Fn() + Send + Sync + 'static) {
    let release = std::sync::Arc::new(release);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => return,
            }
            let release = release.clone();
            let _ = tokio::task::spawn_blocking(move || {
                release();
                trim()
            })
            .await;
        }
    });
}
