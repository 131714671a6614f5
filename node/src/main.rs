//! The `cairn` binary: `cairn node` runs a server; the other subcommands are the command line.

mod cli;

/// mimalloc instead of glibc's malloc: allocation was a fifth of the CPU under load (issue 7,
/// BENCHMARKS.md), mostly glibc's free-list upkeep for the large buffers of event groups.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`, by its place in `mi_option_e` (v3, the version
/// Cargo.lock pins; `the_purge_delay_option_is_where_we_think` checks its default).
const MI_OPTION_PURGE_DELAY: i32 = 15;

unsafe extern "C" {
    fn mi_option_set_default(option: i32, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: i32) -> std::ffi::c_long;
}

/// How long mimalloc keeps freed memory before giving it back to the system, in ms (its
/// default is 1,000; set here so that a new mimalloc default does not move it unseen).
/// Measured with the log in segment files and the groups in sled (S3, two runs each): 0 ms
/// 53-58k events/s at 147-169 MiB peak RSS per node, the zeroing of re-faulted pages 7 % of
/// the CPU; 100 ms 64-66k at 169-189 MiB; 1,000 ms 67k at 208-241 MiB, so 100 ms was chosen.
/// With the groups out of sled (2026-12-07, alternating with 100 ms): 1,000 ms gave S2 -3 to
/// +14 % (median +6 %), S3 -6 to +15 % (median +8 %), multi-stream +9 and +11 %, at most 208
/// MiB peak RSS per node (100 ms: 198), still under issue 15's 256 MiB.
const PURGE_DELAY_MS: std::ffi::c_long = 1_000;

/// Sets the purge delay. `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn tune_allocator() {
    // SAFETY: a plain setter of mimalloc's option table, called before any thread starts.
    unsafe { mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    cli::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the option number above: if mimalloc renumbers its options, the purge delay's
    /// default (1,000 ms in its `options.c`) stops matching and this fails.
    #[test]
    fn the_purge_delay_option_is_where_we_think() {
        // SAFETY: reading mimalloc's option table.
        let delay = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000, "mi_option_get({MI_OPTION_PURGE_DELAY})");
    }
}
