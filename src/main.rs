//! The `biovm` binary: parse arguments, set up logging, dispatch.
//! Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = biovm::cli::Cli::parse();
    biovm::cli::init_logging(&cli.global);
    biovm::cli::run(cli)
}
