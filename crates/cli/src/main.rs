//! The `strata` binary: `strata train` trains SimpleNN on the embedded MNIST subset with no
//! flags and no downloads; `strata check` and `strata summary` explain a model file's shapes
//! before anything runs.

mod check;
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
    /// Train a model (default: PyTorch's SimpleNN) on the embedded MNIST subset.
    Train(train::TrainArgs),
    /// Check a model file's shapes end to end; print the trace, or every error (exit 1).
    Check(check::CheckArgs),
    /// Print a model file's summary: output shapes, parameters, MACs, activation memory.
    Summary(check::SummaryArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(&args),
        Command::Check(args) => check::check(&args),
        Command::Summary(args) => check::summary(&args),
    };
    match result {
        Ok(check::Verdict::Ok) => ExitCode::SUCCESS,
        Ok(check::Verdict::Failed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
