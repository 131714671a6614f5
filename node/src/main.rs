//! The `cairn` binary: `cairn node` runs a server; the other subcommands are the command line.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
