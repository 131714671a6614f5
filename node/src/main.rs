//! The `cairn` binary: `cairn node` runs a server; the other subcommands are the command line.

mod cli;

/// mimalloc instead of glibc's malloc: allocation was a fifth of the CPU under load (issue 7,
/// BENCHMARKS.md), mostly glibc's free-list upkeep for the large buffers of event groups.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
