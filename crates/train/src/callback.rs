//! Callbacks: what a [`crate::Trainer`] tells the code around it as a run goes (PyTorch
//! Lightning's hooks, Keras' `Callback`). Each hook sees the model, the optimizer and the run's
//! position ([`Progress`]); the step and epoch hooks may stop the run ([`Control::Stop`]).

use crate::checkpoint::CallbackState;
use crate::error::Result;
use crate::evaluate::Evaluation;
use std::collections::BTreeMap;
use strata_nn::{Module, Optimizer};

/// Whether the run goes on after a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Control {
    /// Go on.
    #[default]
    Continue,
    /// Stop the run (after this step, or after this epoch).
    Stop,
}

/// Where a run is. Epochs and batches are 0-based positions: `epoch` is the epoch in progress
/// (or the next one, between epochs), `batch` the batches of it already done.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TrainState {
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Batches of that epoch already done.
    pub batch: usize,
    /// Optimizer steps taken in the whole run (skipped steps count).
    pub step: usize,
    /// The best validation accuracy so far.
    pub best_val_acc: Option<f64>,
    /// The run's length in epochs.
    pub epochs: usize,
    /// Batches per epoch.
    pub steps_per_epoch: usize,
    /// Steps skipped for a non-finite loss or gradient ([`crate::OnDivergence::Skip`]) in the
    /// whole run, a resumed run's before the resume included (they count in `step` too).
    pub skipped: usize,
}

/// What every hook sees: the model, its optimizer and the run's position.
pub struct Progress<'a> {
    /// The model being trained.
    pub model: &'a dyn Module,
    /// Its optimizer (its state, learning rate).
    pub optimizer: &'a dyn Optimizer,
    /// The run's position after the event.
    pub state: TrainState,
    /// The states of the callbacks that keep one ([`Callback::state`]), by key: as of their
    /// last `on_fit_start` or `on_epoch_end`, so a callback added after another sees that
    /// one's state of this very event. What a checkpoint stores.
    pub callbacks: &'a BTreeMap<String, CallbackState>,
}

/// One optimizer step, as [`Callback::on_step_end`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLog {
    /// The epoch (1-based).
    pub epoch: usize,
    /// The step just taken (1-based over the run).
    pub step: usize,
    /// The batch of the epoch just done (1-based).
    pub batch: usize,
    /// The batch's loss.
    pub loss: f64,
    /// The learning rate the step used.
    pub lr: f64,
    /// The gradients' global L2 norm, when it was computed (clipping on, or `log`).
    pub grad_norm: Option<f64>,
    /// The epoch's running mean loss per sample.
    pub running_loss: f64,
    /// The epoch's running accuracy (classification only).
    pub running_acc: Option<f64>,
    /// Samples per second so far this epoch.
    pub samples_per_s: f64,
    /// Seconds since the run (this process) started.
    pub time_s: f64,
    /// Whether this is a step to log (every `log_every` steps).
    pub log: bool,
}

/// One finished epoch, as [`Callback::on_epoch_end`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochLog {
    /// The epoch (1-based).
    pub epoch: usize,
    /// The run's length in epochs.
    pub epochs: usize,
    /// Steps taken so far in the run.
    pub step: usize,
    /// Mean training loss over the epoch's steps (`None` when every step was skipped, or the
    /// epoch resumed after its last batch).
    pub train_loss: Option<f64>,
    /// Training accuracy over the epoch (classification only).
    pub train_acc: Option<f64>,
    /// The validation figures, when there is validation data.
    pub val: Option<Evaluation>,
    /// Whether the validation accuracy is the best so far (a new best model).
    pub improved: bool,
    /// The learning rate at the epoch's end.
    pub lr: f64,
    /// Training samples per second over the epoch.
    pub samples_per_s: f64,
    /// Seconds since the run (this process) started.
    pub time_s: f64,
}

impl EpochLog {
    /// The value of a monitored quantity, by Keras' names: `val_loss`, `val_acc`
    /// (`val_accuracy`), `train_loss` (`loss`), `train_acc` (`accuracy`).
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "val_loss" => self.val.map(|v| v.loss),
            "val_acc" | "val_accuracy" => self.val.and_then(|v| v.accuracy),
            "train_loss" | "loss" => self.train_loss,
            "train_acc" | "accuracy" => self.train_acc,
            _ => None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every epoch ran.
    Completed,
    /// The interrupt flag was raised ([`crate::Trainer::interrupt_flag`]); the state is where it
    /// stopped.
    Interrupted,
    /// A callback stopped the run (early stopping); `by` names it.
    Stopped {
        /// The callback's [`Callback::name`].
        by: String,
    },
}

/// Hooks into a [`crate::Trainer`]'s run. Every method has a default that does nothing, so a
/// callback implements only what it needs. Errors stop the run and are returned by `fit`.
pub trait Callback {
    /// The callback's name, for messages ("stopped by EarlyStopping").
    fn name(&self) -> String {
        std::any::type_name::<Self>().rsplit("::").next().unwrap_or("callback").to_string()
    }

    /// Before the first step (of this process: after a resume, at the resumed position).
    fn on_fit_start(&mut self, _progress: &Progress) -> Result<()> {
        Ok(())
    }

    /// Before an epoch's first step.
    fn on_epoch_start(&mut self, _progress: &Progress) -> Result<()> {
        Ok(())
    }

    /// After each optimizer step.
    fn on_step_end(&mut self, _progress: &Progress, _step: &StepLog) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// After a step skipped for a non-finite loss or gradient ([`crate::OnDivergence::Skip`]);
    /// `skipped` counts them over the run, `loss_finite` says whether the loss was.
    fn on_step_skipped(&mut self, _progress: &Progress, _skipped: usize, _loss_finite: bool) -> Result<()> {
        Ok(())
    }

    /// After an epoch and its validation.
    fn on_epoch_end(&mut self, _progress: &Progress, _epoch: &EpochLog) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// When the run ends, however it ends short of an error.
    fn on_fit_end(&mut self, _progress: &Progress, _outcome: &Outcome) -> Result<()> {
        Ok(())
    }

    /// The key (no dots) under which a checkpoint keeps this callback's [`Callback::state`],
    /// or `None` (the default): a callback with nothing a resume needs.
    fn state_key(&self) -> Option<String> {
        None
    }

    /// What a resume needs to go on exactly where the run was (counters, best values, kept
    /// weights). The trainer reads it after `on_fit_start` and after each `on_epoch_end`, and
    /// every checkpoint written after that stores it.
    fn state(&self) -> CallbackState {
        CallbackState::default()
    }

    /// Puts back the state a checkpoint stored under [`Callback::state_key`], before
    /// `on_fit_start` of a run resumed from it ([`crate::Trainer::resume`]).
    fn load_state(&mut self, _state: &CallbackState) -> Result<()> {
        Ok(())
    }
}
