//! The memory allocator: jemalloc, with its background thread purging
//! freed pages.
//!
//! A join storm allocates and frees hundreds of megabytes of frames in
//! seconds. glibc's malloc keeps what was freed in its arenas (the server
//! stayed at twice its live size after a storm), and mimalloc more so;
//! jemalloc gives it back by itself once its background thread is on. The
//! measurements are in BENCHMARKS.md, "A room of every connection"; the
//! features `system-allocator` and `mimalloc` build the alternatives.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(any(feature = "mimalloc", feature = "system-allocator")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long jemalloc keeps freed pages for reuse, in milliseconds.
#[cfg(not(any(feature = "mimalloc", feature = "system-allocator")))]
const DIRTY_DECAY_MS: isize = 1000;

/// Has freed memory returned to the system while the server idles: without
/// the background thread, jemalloc purges only when it is next called,
/// which an idle room never does.
pub fn return_freed_memory() -> Result<(), String> {
    #[cfg(not(any(feature = "mimalloc", feature = "system-allocator")))]
    {
        use tikv_jemalloc_ctl::{Access, AsName};
        // Pages freed and not reused for a second go back: a storm's
        // buffers are not reused soon, and the default of 10 s left the
        // server at twice its live size for that long.
        b"arenas.dirty_decay_ms\0"
            .name()
            .write(DIRTY_DECAY_MS)
            .map_err(|e| e.to_string())?;
        // That is for arenas made from now on; these exist already.
        let arenas = tikv_jemalloc_ctl::arenas::narenas::read().map_err(|e| e.to_string())?;
        for arena in 0..arenas {
            // Slots not yet in use refuse it, and will take the default.
            let _ = format!("arena.{arena}.dirty_decay_ms\0")
                .as_bytes()
                .name()
                .write(DIRTY_DECAY_MS);
        }
        // One thread is enough for one process's arenas.
        tikv_jemalloc_ctl::max_background_threads::write(1).map_err(|e| e.to_string())?;
        tikv_jemalloc_ctl::background_thread::write(true).map_err(|e| e.to_string())?;
    }
    Ok(())
}
