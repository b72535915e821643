use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    licgate::cli::run(licgate::cli::Cli::parse())
}
