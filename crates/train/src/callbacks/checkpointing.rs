//! Checkpoints as a callback: a step checkpoint every `every_steps` steps and at each epoch's
//! end (the newest `keep_last` kept), `best.safetensors` when the validation accuracy improves,
//! and one where an interrupted or stopped run ended, so `--resume` continues exactly there.

use crate::callback::{Callback, Control, EpochLog, Outcome, Progress, StepLog, TrainState};
use crate::checkpoint::{self, CallbackState, Meta};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strata_nn::ModelSpec;
use strata_nn::model_file::to_toml;

/// Writes checkpoints of a run into `DIR/checkpoints/` (see [`crate::checkpoint`] for the
/// format). Callbacks run in the order they were added: add [`crate::EarlyStopping`] before this
/// one, so the weights it restores are the ones [`Checkpointing::save_final`] writes.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    run: PathBuf,
    every_steps: usize,
    keep_last: usize,
    save_best: bool,
    save_final: bool,
    meta: Meta,
    last: Option<PathBuf>,
}

impl Checkpointing {
    /// Checkpoints into `run_dir/checkpoints/`: at each epoch's end, the newest 3 kept, and the
    /// best.
    pub fn new(run_dir: impl AsRef<Path>) -> Checkpointing {
        Checkpointing {
            run: run_dir.as_ref().to_path_buf(),
            every_steps: 0,
            keep_last: 3,
            save_best: true,
            save_final: false,
            meta: Meta::default(),
            last: None,
        }
    }

    /// Also every `n` steps within epochs (0: only at epoch ends).
    pub fn every_steps(mut self, n: usize) -> Self {
        self.every_steps = n;
        self
    }

    /// How many step checkpoints to keep, at least 1: a resume continues from the newest, so
    /// keeping none is refused when the run starts (`usize::MAX`: keep them all).
    pub fn keep_last(mut self, n: usize) -> Self {
        self.keep_last = n;
        self
    }

    /// Whether to keep `best.safetensors`, the model of the best validation accuracy.
    pub fn save_best(mut self, on: bool) -> Self {
        self.save_best = on;
        self
    }

    /// Whether to write the final weights as `run_dir/model.safetensors` (a plain state_dict)
    /// when the run completes or is stopped by a callback.
    pub fn save_final(mut self, on: bool) -> Self {
        self.save_final = on;
        self
    }

    /// The metadata every checkpoint carries (run config, model file, normalisation, class
    /// names); the position is filled in per checkpoint. Without it, the model file is
    /// derived from the model when it can be.
    pub fn meta(mut self, meta: Meta) -> Self {
        self.meta = meta;
        self
    }

    /// The newest checkpoint written.
    pub fn last_written(&self) -> Option<&Path> {
        self.last.as_deref()
    }

    /// Writes a step checkpoint of `p`'s model, optimizer and callbacks' states at `state`'s
    /// position, and prunes the old ones.
    pub fn write(&mut self, p: &Progress, state: &TrainState) -> Result<PathBuf> {
        let path = checkpoint::step_file(&self.run, state.step);
        checkpoint::save(&path, p.model, &p.optimizer.state_dict(), &self.at(state, p.callbacks))?;
        checkpoint::prune(&self.run, self.keep_last)?;
        self.last = Some(path.clone());
        Ok(path)
    }

    fn at(&self, s: &TrainState, callbacks: &BTreeMap<String, CallbackState>) -> Meta {
        Meta {
            epoch: s.epoch,
            batch: s.batch,
            step: s.step,
            best_val_acc: s.best_val_acc,
            skipped: s.skipped,
            callbacks: callbacks.clone(),
            ..self.meta.clone()
        }
    }
}

impl Callback for Checkpointing {
    fn on_fit_start(&mut self, progress: &Progress) -> Result<()> {
        if self.keep_last == 0 {
            return Err(Error::InvalidOption(
                "Checkpointing::keep_last(0) asks to keep no step checkpoint, but a resume continues from the newest one; give keep_last(1) to keep only the newest (the default is 3, and best.safetensors is kept besides them), or usize::MAX to keep them all".into(),
            ));
        }
        let dir = checkpoint::dir(&self.run);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating the checkpoint directory", &dir, e))?;
        if self.meta.model.is_empty()
            && let Some(spec) = ModelSpec::from_module("model", progress.model)
        {
            self.meta.model = to_toml(&spec);
        }
        if self.meta.config.is_empty() {
            self.meta.config = format!("[training]\nepochs = {}\n", progress.state.epochs);
        }
        Ok(())
    }

    fn on_step_end(&mut self, p: &Progress, _step: &StepLog) -> Result<Control> {
        let s = p.state;
        if self.every_steps > 0 && s.step.is_multiple_of(self.every_steps) && s.batch < s.steps_per_epoch {
            self.write(p, &s)?;
        }
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, p: &Progress, epoch: &EpochLog) -> Result<Control> {
        if epoch.improved && self.save_best {
            let path = checkpoint::dir(&self.run).join("best.safetensors");
            checkpoint::save(&path, p.model, &p.optimizer.state_dict(), &self.at(&p.state, p.callbacks))?;
        }
        self.write(p, &p.state)?;
        Ok(Control::Continue)
    }

    fn on_fit_end(&mut self, p: &Progress, outcome: &Outcome) -> Result<()> {
        // Where the run stopped, unless the epoch's end just wrote it.
        let mid_epoch = *outcome != Outcome::Completed && p.state.batch > 0;
        if mid_epoch || *outcome == Outcome::Interrupted {
            self.write(p, &p.state)?;
        }
        if self.save_final && *outcome != Outcome::Interrupted {
            let path = self.run.join("model.safetensors");
            p.model.state_dict().save(&path)?;
        }
        Ok(())
    }
}
