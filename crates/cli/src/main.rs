//! The `strata` binary: `strata train` trains SimpleNN on the embedded MNIST subset with no
//! flags and no downloads.

mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// strata: define, check, train and ship neural networks.
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train PyTorch's SimpleNN (784-128-64-10, ReLU) on the embedded MNIST subset.
    Train(train::TrainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
