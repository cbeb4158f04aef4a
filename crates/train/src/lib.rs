//! strata-train: the training loop as a library — Keras' `fit()` with PyTorch Lightning's
//! callbacks as the model.
//!
//! - [`Trainer`]: model, loss, optimizer, [`Schedule`], mini-batches from a
//!   [`strata_data::Dataset`], validation each epoch, gradient clipping, divergence checks,
//!   resume from a position; [`Trainer::fit`] returns a [`History`].
//! - [`Callback`]s: [`EarlyStopping`], [`Checkpointing`] (exact checkpoints, see
//!   [`checkpoint`]), [`MetricsLog`] (metrics.jsonl and TensorBoard), [`ProgressBar`], or your
//!   own.
//! - [`evaluate()`]: a model's loss and accuracy on a data set.
//! - `distributed` (the `mpi` feature): MPI data-parallel training, bit-identical to
//!   accumulation.
//! - [`parallel`]: micro-batches and their combined gradient, shared by gradient accumulation
//!   ([`Trainer::accumulate`]) and data-parallel runs ([`Trainer::distributed`]).
//!
//! The `strata` command line is a thin layer over this crate: `strata train` builds a
//! `Trainer` from a run file.

#![warn(missing_docs)]
// One module calls C: MPI's non-blocking collectives (`distributed/exchange.rs`, the `mpi`
// feature), which rsmpi's safe API cannot keep in flight across backward.
#![deny(unsafe_code)]

mod callback;
pub mod callbacks;
pub mod checkpoint;
#[cfg(feature = "mpi")]
pub mod distributed;
mod divergence;
mod error;
mod evaluate;
mod layout;
pub mod parallel;
mod pipeline;
mod schedule;
pub mod tensorboard;
mod trainer;

pub use callback::{Callback, Control, EpochLog, Outcome, Progress, StepLog, TrainState};
pub use callbacks::{Checkpointing, EarlyStopping, MetricsLog, ProgressBar};
pub use divergence::diagnose;
pub use error::{Error, Result};
pub use evaluate::{Evaluation, count_correct, evaluate};
pub use layout::InputLayout;
pub use schedule::{Decay, Schedule};
pub use trainer::{History, OnDivergence, Trainer};

/// Everything a training program needs, in one `use`: tensors, layers, losses, optimizers,
/// data sets and loaders, and the trainer with its callbacks.
pub mod prelude {
    pub use crate::{
        Callback, Checkpointing, Control, EarlyStopping, EpochLog, Evaluation, History, InputLayout, MetricsLog,
        OnDivergence, Outcome, ProgressBar, Schedule, Trainer,
    };
    pub use strata_core::{DType, Device, Precision, Tensor, manual_seed, no_grad, with_seed};
    pub use strata_data::{BatchSize, DataLoader, Dataset, MNIST_MEAN, MNIST_STD, embedded_mnist};
    pub use strata_nn::{
        Adam, AdamConfig, AdamW, BCEWithLogitsLoss, CrossEntropyLoss, Linear, Loss, MSELoss, ModelSpec, Module,
        NLLLoss, Optimizer, SGD, Sequential, SgdConfig,
    };
}
