//! Early stopping: stop when a monitored figure has not improved for `patience` epochs, and
//! optionally put back the weights of the best epoch (Keras' `EarlyStopping`). Its counters
//! and kept weights go into every checkpoint, so a resumed run stops where the uninterrupted
//! one would have (PyTorch Lightning keeps the same state).

use crate::callback::{Callback, Control, EpochLog, Outcome, Progress};
use crate::checkpoint::CallbackState;
use crate::error::{Error, Result};
use strata_nn::StateDict;

/// What a checkpoint keeps of an [`EarlyStopping`] (its `value`, as JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    monitor: String,
    max: bool,
    min_delta: f64,
    best: Option<f64>,
    best_epoch: usize,
    wait: usize,
}

/// Whether a smaller or a larger value of the monitored figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Smaller is better (losses).
    Min,
    /// Larger is better (accuracies).
    Max,
}

/// Stops training when `monitor` (`val_loss`, `val_acc`, `train_loss`, `train_acc`) has not
/// improved by more than `min_delta` for `patience` epochs in a row; with `restore_best`, the
/// model ends with the weights of its best epoch. Keras' `EarlyStopping(monitor, min_delta,
/// patience, mode="auto", restore_best_weights)`: the mode follows the name (`acc` → larger is
/// better), and an epoch without the figure (no validation data) is an error, not a silent pass.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    monitor: String,
    patience: usize,
    min_delta: f64,
    mode: Mode,
    restore_best: bool,
    best: Option<f64>,
    best_epoch: usize,
    wait: usize,
    best_weights: Option<StateDict>,
    stopped_at: Option<usize>,
}

/// The figures early stopping can watch.
pub const MONITORS: [&str; 4] = ["val_loss", "val_acc", "train_loss", "train_acc"];

impl EarlyStopping {
    /// Watching `monitor`, patience 5, `min_delta` 0, without restoring.
    pub fn new(monitor: &str) -> EarlyStopping {
        let mode = if monitor.contains("acc") { Mode::Max } else { Mode::Min };
        EarlyStopping {
            monitor: monitor.to_string(),
            patience: 5,
            min_delta: 0.0,
            mode,
            restore_best: false,
            best: None,
            best_epoch: 0,
            wait: 0,
            best_weights: None,
            stopped_at: None,
        }
    }

    /// Epochs without improvement before stopping.
    pub fn patience(mut self, epochs: usize) -> Self {
        self.patience = epochs;
        self
    }

    /// The least change that counts as an improvement.
    pub fn min_delta(mut self, delta: f64) -> Self {
        self.min_delta = delta.abs();
        self
    }

    /// Ends with the best epoch's weights (kept in memory as they are reached).
    pub fn restore_best(mut self, restore: bool) -> Self {
        self.restore_best = restore;
        self
    }

    /// Overrides the mode the name implies.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks the monitored name.
    pub fn validate(&self) -> Result<()> {
        if !MONITORS.contains(&self.monitor.as_str()) {
            return Err(Error::InvalidOption(format!(
                "early stopping monitors `{}`: not a figure training reports; use one of {}",
                self.monitor,
                MONITORS.join(", ")
            )));
        }
        Ok(())
    }

    /// The monitored figure's name.
    pub fn monitor(&self) -> &str {
        &self.monitor
    }

    /// Whether the monitored figure is a validation figure (it needs held-out data).
    pub fn monitors_validation(&self) -> bool {
        self.monitor.starts_with("val")
    }

    /// Epochs without improvement before stopping.
    pub fn patience_epochs(&self) -> usize {
        self.patience.max(1)
    }

    /// Whether the best epoch's weights are put back at the end.
    pub fn restores_best(&self) -> bool {
        self.restore_best
    }

    /// The best value seen and its epoch (1-based).
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best.map(|b| (b, self.best_epoch))
    }

    /// The epoch (1-based) after which it stopped the run, if it did.
    pub fn stopped_at(&self) -> Option<usize> {
        self.stopped_at
    }

    fn improves(&self, value: f64) -> bool {
        match (self.best, self.mode) {
            (None, _) => value.is_finite(),
            (Some(b), Mode::Min) => value < b - self.min_delta,
            (Some(b), Mode::Max) => value > b + self.min_delta,
        }
    }
}

impl Callback for EarlyStopping {
    fn on_fit_start(&mut self, _progress: &Progress) -> Result<()> {
        self.validate()
    }

    fn on_epoch_end(&mut self, progress: &Progress, epoch: &EpochLog) -> Result<Control> {
        let Some(value) = epoch.get(&self.monitor) else {
            return Err(Error::InvalidOption(format!(
                "early stopping monitors `{}`, which epoch {} did not report{}",
                self.monitor,
                epoch.epoch,
                if self.monitor.starts_with("val") {
                    ": there is no validation data; give some, or monitor train_loss"
                } else {
                    ""
                }
            )));
        };
        if self.improves(value) {
            self.best = Some(value);
            self.best_epoch = epoch.epoch;
            self.wait = 0;
            if self.restore_best {
                // Copy-on-write snapshots: the next steps write copies, not these.
                let mut kept = StateDict::new();
                for (k, t) in progress.model.state_dict().iter() {
                    kept.insert(k, t.detach());
                }
                self.best_weights = Some(kept);
            }
            return Ok(Control::Continue);
        }
        self.wait += 1;
        if self.wait >= self.patience.max(1) {
            self.stopped_at = Some(epoch.epoch);
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }

    fn on_fit_end(&mut self, progress: &Progress, outcome: &Outcome) -> Result<()> {
        // Not on an interruption: the run goes on from there (`--resume`), with its own weights;
        // the checkpoint written at the interruption must hold those, not the best epoch's.
        if *outcome == Outcome::Interrupted {
            return Ok(());
        }
        if let Some(w) = self.best_weights.take().filter(|_| self.restore_best) {
            progress.model.load_state_dict(&w, true)?;
        }
        Ok(())
    }

    fn state_key(&self) -> Option<String> {
        Some("early_stopping".into())
    }

    /// The best value, its epoch and the epochs waited since, with what they were measured by
    /// (monitor, mode, min_delta); with `restore_best`, the best epoch's weights as tensors.
    fn state(&self) -> CallbackState {
        let saved = Saved {
            monitor: self.monitor.clone(),
            max: self.mode == Mode::Max,
            min_delta: self.min_delta,
            best: self.best,
            best_epoch: self.best_epoch,
            wait: self.wait,
        };
        CallbackState {
            value: serde_json::to_string(&saved).expect("plain fields encode"),
            tensors: self.best_weights.clone().filter(|_| self.restore_best).unwrap_or_default(),
        }
    }

    /// Goes on from a checkpoint's counters when they were measured the same way (the same
    /// monitor, mode and min_delta); a resume that changes any of them starts the watch over,
    /// as the figures are not comparable. With `restore_best`, the best epoch's weights must be
    /// in the checkpoint (they are unless the run before the resume did not restore).
    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        let saved: Saved = serde_json::from_str(&state.value).map_err(|e| {
            Error::Checkpoint(format!("early stopping's state in the checkpoint does not parse ({e}): {}", state.value))
        })?;
        if saved.monitor != self.monitor || saved.max != (self.mode == Mode::Max) || saved.min_delta != self.min_delta {
            return Ok(());
        }
        if self.restore_best && saved.best.is_some() && state.tensors.is_empty() {
            return Err(Error::InvalidOption(format!(
                "early stopping restores the best epoch's weights, but the checkpoint kept none (the run before the resume did not restore them): its best epoch ({}) cannot be put back at the end; resume without restore_best, or start the run over",
                saved.best_epoch
            )));
        }
        self.best = saved.best;
        self.best_epoch = saved.best_epoch;
        self.wait = saved.wait;
        self.best_weights = (self.restore_best && !state.tensors.is_empty()).then(|| state.tensors.clone());
        Ok(())
    }
}
