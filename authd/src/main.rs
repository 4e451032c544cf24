//! The `authd` binary: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    authd::cli::run(authd::cli::Cli::parse())
}
