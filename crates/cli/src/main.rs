//! The `strata` binary: `strata train` trains SimpleNN on the embedded MNIST subset with no
//! flags and no downloads; `strata check` and `strata summary` explain a model file's shapes
//! before anything runs.

// One unsafe call is needed (`die_on_closed_pipe`, which has no safe std equivalent): it is
// allowed there alone, documented, and any other unsafe code is an error.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod augment_config;
mod check;
mod checkpoint;
mod config;
mod convert;
mod data_setup;
mod devices;
mod eval;
mod export;
mod import;
mod logs;
mod lr_find;
mod paths;
mod run_lock;
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
    /// List the devices a run can use: the CPU and every GPU adapter (`--device gpu:N`).
    #[command(after_help = "Examples:
  strata devices
  strata train --device gpu                             train on the first GPU listed")]
    Devices,
    /// Train a model (default: PyTorch's SimpleNN) on the embedded MNIST subset.
    #[command(after_help = "Examples:
  strata train                                          SimpleNN on the embedded MNIST subset
  strata train examples/simple_nn_mnist.toml --data ../shared/data/mnist
  strata train --model examples/resnet_mnist_model.toml --epochs 2 --out runs/resnet
  strata train run.toml --set optimizer.name=adam --set training.clip_grad_norm=1.0
  strata train --resume runs/resnet --epochs 4          continue a run, extended to 4 epochs
  strata train --dtype f64 --save model.safetensors     double precision, a PyTorch state_dict
  strata train --precision bf16                         mixed precision (bf16 products, f32 weights)")]
    // Boxed: the flags are most of the enum's size, and the other commands need not carry it.
    Train(Box<train::TrainArgs>),
    /// Check a model file's shapes end to end; print the trace, or every error (exit 1).
    #[command(after_help = "Examples:
  strata check examples/simple_nn.toml --classes 10
  strata check examples/broken_simple_nn.toml           every mismatch, with fixes (exit 1)
  strata check examples/simple_nn.toml --input 1x28x28  another input shape
  strata check examples/simple_nn.toml --weights runs/x/checkpoints/best.safetensors")]
    Check(check::CheckArgs),
    /// Print a model file's summary: output shapes, parameters, MACs, activation memory.
    #[command(after_help = "Examples:
  strata summary examples/resnet_mnist_model.toml
  strata summary examples/simple_nn.toml --batch-size 256")]
    Summary(check::SummaryArgs),
    /// Evaluate a checkpoint: accuracy, top-k accuracy, macro and weighted F1, confusion matrix.
    #[command(after_help = "Examples:
  strata eval runs/simple_nn_mnist                     the run's best checkpoint on its test data
  strata eval runs/simple_nn_mnist --report            with per-class precision, recall, F1, support
  strata eval runs/simple_nn_mnist --top-k 3           top-3 accuracy too (--top-k 0: none)
  strata eval runs/x/checkpoints/step-000000250.safetensors --data ../shared/data/mnist")]
    Eval(eval::EvalArgs),
    /// Class probabilities for image files or IDX records, from a checkpoint.
    #[command(after_help = "Examples:
  strata predict runs/simple_nn_mnist digit.png
  strata predict runs/simple_nn_mnist --idx ../shared/data/mnist/t10k-images-idx3-ubyte.gz --index 0,1,2")]
    Predict(eval::PredictArgs),
    /// Export a model to ONNX: a checkpoint's or run's trained model, or a model file's.
    #[command(after_help = "Examples:
  strata export runs/simple_nn_mnist -o simple_nn.onnx     the run's best checkpoint, with its normalisation
  strata export runs/x/checkpoints/step-000000250.safetensors -o model.onnx
  strata export examples/resnet_mnist_model.toml -o resnet.onnx      freshly initialised weights
  strata export examples/simple_nn.toml --weights model.safetensors -o simple_nn.onnx")]
    Export(export::ExportArgs),
    /// The learning-rate range test: loss against an exponentially growing rate, and a suggestion.
    #[command(after_help = "Examples:
  strata lr-find                                       SimpleNN on the embedded data; prints the rate
  strata lr-find --out plots                           also writes plots/lr_find.png and .svg
  strata lr-find examples/simple_nn_mnist.toml --data ../shared/data/mnist   plots in the run's directory
  strata lr-find run.toml --set optimizer.name=adam --batch-size 128 --start-lr 1e-6 --end-lr 1")]
    LrFind(lr_find::LrFindArgs),
    /// Summarise run directories' metrics.jsonl and plot their loss and accuracy curves.
    #[command(after_help = "Examples:
  strata logs runs/simple_nn_mnist
  strata logs runs/a runs/b --out plots                both runs overlaid: loss and accuracy as PNG and SVG")]
    Logs(logs::LogsArgs),
    /// Import an ONNX model (torch.onnx.export's or strata export's) as a model file and weights.
    #[command(after_help = "Examples:
  strata import model.onnx -o imported                 writes imported/model.toml and imported/weights.safetensors
  strata import resnet.onnx -o imported --force        replaces the files if imported/ has them
  strata check imported/model.toml --weights imported/weights.safetensors")]
    Import(import::ImportArgs),
    /// Convert a PyTorch checkpoint (torch.save, zip format) to safetensors, running no code from it.
    #[command(after_help = "Examples:
  strata convert weights.pt -o weights.safetensors
  strata convert checkpoint.pth -o model.safetensors --force    a dict with a `state_dict` entry; replaces the output
  strata convert weights.pt -o weights.safetensors --model examples/simple_nn.toml   keys and shapes checked
  strata train --init weights.pt                                 or start a run from them directly

Only the globals that rebuild tensors are allowed; a file that names any other (os.system,
builtins.eval, …) is refused by that name, and nothing in it runs.")]
    Convert(convert::ConvertArgs),
}

/// Die quietly on a closed pipe (`strata logs … | head`) as command-line tools do, instead of
/// panicking on the failed write: restores SIGPIPE's default action, which Rust's runtime sets
/// to "ignore" before `main`. Stable std has no API for it (`#[unix_sigpipe]` and
/// `-Zon-broken-pipe` are unstable), hence the one libc call.
#[cfg(unix)]
#[allow(unsafe_code)]
fn die_on_closed_pipe() {
    // SAFETY: `signal` with `SIG_DFL` installs no handler, so no code runs in signal context;
    // it is called first thing in `main`, before any thread exists, so nothing else reads or
    // changes SIGPIPE's disposition concurrently.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    #[cfg(unix)]
    die_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => devices::list().map(|()| check::Verdict::Ok),
        Command::Train(args) => train::run(&args),
        Command::Check(args) => check::check(&args),
        Command::Summary(args) => check::summary(&args),
        Command::Eval(args) => eval::eval(&args),
        Command::Predict(args) => eval::predict(&args),
        Command::Export(args) => export::run(&args),
        Command::LrFind(args) => lr_find::run(&args),
        Command::Logs(args) => logs::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Convert(args) => convert::run(&args),
    };
    match result {
        Ok(check::Verdict::Ok) => ExitCode::SUCCESS,
        Ok(check::Verdict::Failed) => ExitCode::FAILURE,
        // 128 + SIGINT, as shells report a process stopped by Ctrl-C.
        Ok(check::Verdict::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {}", render_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `outer: inner`, skipping a cause whose text the message already
/// contains (library errors often quote their source in their own message).
fn render_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
