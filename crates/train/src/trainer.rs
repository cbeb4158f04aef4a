//! The training loop as a library: [`Trainer`] fits a model to a data set (Keras' `fit()`),
//! with any loss, optimizer and schedule, shuffled mini-batches, validation after each epoch,
//! divergence checks, gradient clipping, resume from a position, and [`Callback`]s for
//! everything around it (early stopping, checkpoints, logs, progress).

use crate::callback::{Callback, Control, EpochLog, Outcome, Progress, StepLog, TrainState};
use crate::divergence::diagnose;
use crate::error::{Error, Result};
use crate::evaluate::{Evaluation, count_correct, evaluate};
use crate::layout::InputLayout;
use crate::schedule::Schedule;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use strata_core::Tensor;
use strata_data::{Augment, BatchSize, DataLoader, Dataset};
use strata_nn::{CrossEntropyLoss, Loss, Module, Optimizer};

/// What a step with a non-finite loss or gradient does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDivergence {
    /// Stop the run with [`Error::Diverged`], naming where it went non-finite.
    #[default]
    Stop,
    /// Skip the step (no update) and go on; an epoch in which every step is skipped stops the
    /// run with [`Error::AllStepsSkipped`].
    Skip,
}

/// What a finished `fit` reports.
#[derive(Debug, Clone)]
pub struct History {
    /// Each epoch this call ran, in order.
    pub epochs: Vec<EpochLog>,
    /// How the run ended.
    pub outcome: Outcome,
    /// The position at the end.
    pub state: TrainState,
    /// Steps skipped for a non-finite loss or gradient.
    pub skipped: usize,
}

impl History {
    /// The last epoch's validation figures.
    pub fn last_val(&self) -> Option<Evaluation> {
        self.epochs.last().and_then(|e| e.val)
    }
}

/// Fits a model: mini-batches from a [`Dataset`], forward, loss, backward, optimizer step, with
/// the learning rate from a [`Schedule`], validation after each epoch and [`Callback`]s.
///
/// ```
/// use strata_train::prelude::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (mut train, mut val) = strata_data::embedded_mnist()?;
/// train.normalize(MNIST_MEAN, MNIST_STD)?;
/// val.normalize(MNIST_MEAN, MNIST_STD)?;
/// let model = ModelSpec::new("SimpleNN").input(&[784]).linear("fc1", 784, 128).relu()
///     .linear("fc2", 128, 64).relu().linear("fc3", 64, 10).build()?;
/// let optimizer = SGD::with_config(model.parameters(), SgdConfig { lr: 0.01, momentum: 0.9, ..Default::default() })?;
/// let history = Trainer::new(&model, Box::new(optimizer))
///     .epochs(1)
///     .batch_size(64)
///     .callback(EarlyStopping::new("val_loss").patience(3))
///     .fit(&train, Some(&val))?;
/// assert!(history.last_val().unwrap().accuracy.unwrap() > 0.8);
/// # Ok(()) }
/// ```
pub struct Trainer<'m> {
    model: &'m dyn Module,
    optimizer: Box<dyn Optimizer>,
    loss: Box<dyn Loss>,
    base_lr: f64,
    schedule: Schedule,
    epochs: usize,
    batch_size: BatchSize,
    seed: u64,
    input_shape: Option<Vec<usize>>,
    augment: Option<Augment>,
    layout: Option<InputLayout>,
    clip_grad_norm: Option<f64>,
    on_divergence: OnDivergence,
    log_every: usize,
    eval_batch_size: usize,
    prefetch: usize,
    interrupt: Arc<AtomicBool>,
    start: TrainState,
    callbacks: Vec<Box<dyn Callback + 'm>>,
}

impl<'m> Trainer<'m> {
    /// A trainer of `model` with `optimizer` (its learning rate is the schedule's base rate), and
    /// PyTorch's defaults elsewhere: `CrossEntropyLoss`, a constant rate, batch 64, 10 epochs,
    /// seed 0, no clipping, stop on divergence.
    pub fn new(model: &'m dyn Module, optimizer: Box<dyn Optimizer>) -> Trainer<'m> {
        let base_lr = optimizer.lr();
        Trainer {
            model,
            optimizer,
            loss: Box::new(CrossEntropyLoss::new()),
            base_lr,
            schedule: Schedule::constant(),
            epochs: 10,
            batch_size: BatchSize::Samples(64),
            seed: 0,
            input_shape: None,
            augment: None,
            layout: None,
            clip_grad_norm: None,
            on_divergence: OnDivergence::Stop,
            log_every: 0,
            eval_batch_size: 1000,
            prefetch: 2,
            interrupt: Arc::new(AtomicBool::new(false)),
            start: TrainState::default(),
            callbacks: vec![],
        }
    }

    /// The loss to minimise (any [`Loss`]; cross-entropy by default).
    pub fn loss(mut self, loss: impl Loss + 'static) -> Self {
        self.loss = Box::new(loss);
        self
    }

    /// The loss, boxed.
    pub fn boxed_loss(mut self, loss: Box<dyn Loss>) -> Self {
        self.loss = loss;
        self
    }

    /// The schedule's base rate, when it is not the optimizer's rate at construction (a
    /// resumed optimizer's state holds the last step's rate, not the base).
    pub fn base_lr(mut self, lr: f64) -> Self {
        self.base_lr = lr;
        self
    }

    /// The learning-rate schedule (its base rate is the optimizer's rate at construction).
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Epochs to train (the run's whole length, counting epochs before a resume).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Samples per step: a number, or [`BatchSize::Full`] for full-batch training.
    pub fn batch_size(mut self, batch_size: impl Into<BatchSize>) -> Self {
        self.batch_size = batch_size.into();
        self
    }

    /// The shuffling seed (the order of each epoch is a function of it and the epoch).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The shape one sample takes into the model (`&[784]` for a Linear first layer on MNIST's
    /// `[1, 28, 28]` images); by default, the model's own ([`Module::input_shape`]: a model
    /// built from a spec with `input`), else the data's sample shape.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }

    /// Augments the training images (crops, flips, affine warps: [`Augment`]) on the loader's
    /// background thread, seeded by the trainer's seed, the epoch and each sample's index;
    /// validation data is never augmented.
    pub fn augment(mut self, augment: impl Into<Option<Augment>>) -> Self {
        self.augment = augment.into();
        self
    }

    /// The whole input layout (shape, batch dimension, element type, devices), for models the
    /// defaults do not describe (placed or time-major models).
    pub fn layout(mut self, layout: InputLayout) -> Self {
        self.layout = Some(layout);
        self
    }

    /// Clips the gradients' global L2 norm to `max_norm` before each step
    /// (`torch.nn.utils.clip_grad_norm_`).
    pub fn clip_grad_norm(mut self, max_norm: f64) -> Self {
        self.clip_grad_norm = Some(max_norm);
        self
    }

    /// What a non-finite loss or gradient does.
    pub fn on_divergence(mut self, on: OnDivergence) -> Self {
        self.on_divergence = on;
        self
    }

    /// Marks every `n`th step for logging ([`StepLog::log`]; 0: none), and computes its
    /// gradient norm.
    pub fn log_every(mut self, n: usize) -> Self {
        self.log_every = n;
        self
    }

    /// Samples per batch in validation (1000 by default).
    pub fn eval_batch_size(mut self, n: usize) -> Self {
        self.eval_batch_size = n.max(1);
        self
    }

    /// Adds a callback, called in the order added.
    pub fn callback(mut self, callback: impl Callback + 'm) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Continues from a checkpoint's position (after [`crate::checkpoint::restore`] loaded its
    /// states into the model and optimizer).
    pub fn resume(self, meta: &crate::checkpoint::Meta) -> Self {
        self.start_at(meta.epoch, meta.batch, meta.step, meta.best_val_acc)
    }

    /// Starts at a position of an earlier run (the model's and optimizer's states are the
    /// caller's to load, as [`crate::checkpoint::restore`] does): the epoch's order is the same,
    /// its first `batch` batches are skipped, and the schedule continues from `step`.
    pub fn start_at(mut self, epoch: usize, batch: usize, step: usize, best_val_acc: Option<f64>) -> Self {
        self.start = TrainState { epoch, batch, step, best_val_acc, ..TrainState::default() };
        self
    }

    /// A flag that, once set (from a Ctrl-C handler, another thread), stops the run after the
    /// current step with [`Outcome::Interrupted`].
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }

    /// The optimizer (its state after `fit`).
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// The loss.
    pub fn loss_fn(&self) -> &dyn Loss {
        self.loss.as_ref()
    }

    /// The input layout for `data` (the one set, else the defaults).
    pub fn layout_for(&self, data: &Dataset) -> InputLayout {
        if let Some(l) = &self.layout {
            return l.clone();
        }
        let sample =
            self.input_shape.clone().or_else(|| self.model.input_shape()).unwrap_or_else(|| data.sample_shape.clone());
        InputLayout::for_module(self.model, &sample)
    }

    /// Mean loss and accuracy of the model over `data`.
    pub fn evaluate(&self, data: &Dataset) -> Result<Evaluation> {
        self.check_input(data)?;
        evaluate(self.model, self.loss.as_ref(), data, &self.layout_for(data), self.eval_batch_size)
    }

    /// Refuses data whose samples do not have the input shape's element count.
    fn check_input(&self, data: &Dataset) -> Result<()> {
        let sample = self.layout_for(data).sample;
        let n: usize = sample.iter().product();
        if n != data.sample_len() {
            return Err(Error::InvalidOption(format!(
                "the model's input shape {sample:?} ({n} values) does not match the data's samples {:?} ({} values); set Trainer::input_shape to a shape of {} values",
                data.sample_shape,
                data.sample_len(),
                data.sample_len()
            )));
        }
        Ok(())
    }

    /// Trains on `train`, evaluating on `val` after each epoch, with the trainer's callbacks.
    pub fn fit(&mut self, train: &Dataset, val: Option<&Dataset>) -> Result<History> {
        self.fit_with(train, val, &mut [])
    }

    /// [`Trainer::fit`] with more callbacks, borrowed (so the caller reads them afterwards),
    /// called after the trainer's own.
    pub fn fit_with(
        &mut self,
        train: &Dataset,
        val: Option<&Dataset>,
        extra: &mut [&mut dyn Callback],
    ) -> Result<History> {
        if train.is_empty() {
            return Err(Error::InvalidOption(
                "the training set is empty: there is nothing to train on; give a data set with samples".into(),
            ));
        }
        self.check_input(train)?;
        if let Some(v) = val {
            self.check_input(v)?;
        }
        if let Some(max) = self.clip_grad_norm
            && !(max > 0.0 && max.is_finite())
        {
            return Err(Error::InvalidOption(format!(
                "clip_grad_norm = {max}: the largest gradient norm must be positive and finite"
            )));
        }
        let layout = self.layout_for(train);
        let batch_size = self.batch_size.resolve(train.len());
        let loader = DataLoader::new(train, batch_size).shuffle(self.seed).augment(self.augment.clone(), self.seed)?;
        let steps_per_epoch = loader.num_batches();
        let total_steps = steps_per_epoch * self.epochs;
        let mut state = TrainState { epochs: self.epochs, steps_per_epoch, ..self.start };
        let (epoch0, batch0) = (state.epoch, state.batch);
        if epoch0 > self.epochs || (epoch0 == self.epochs && batch0 > 0) || batch0 > steps_per_epoch {
            return Err(Error::InvalidOption(format!(
                "start position epoch {epoch0}, batch {batch0} is beyond a run of {} epochs of {steps_per_epoch} batches",
                self.epochs
            )));
        }

        let Trainer { model, optimizer, loss: loss_fn, base_lr, schedule, callbacks, .. } = self;
        let model: &dyn Module = *model;
        // One list, the trainer's own first; each borrowed for this call only.
        fn shorten<'a>(c: &'a mut (dyn Callback + '_)) -> &'a mut (dyn Callback + 'a) {
            c
        }
        let mut cbs: Vec<&mut dyn Callback> = callbacks.iter_mut().map(|c| shorten(c.as_mut())).collect();
        cbs.extend(extra.iter_mut().map(|c| shorten(&mut **c)));
        macro_rules! progress {
            () => {
                Progress { model, optimizer: optimizer.as_ref(), state }
            };
        }
        for cb in cbs.iter_mut() {
            cb.on_fit_start(&progress!())?;
        }

        let started = Instant::now();
        let mut history = History { epochs: vec![], outcome: Outcome::Completed, state, skipped: 0 };
        for epoch in epoch0..self.epochs {
            let t0 = Instant::now();
            let skip = if epoch == epoch0 { batch0 } else { 0 };
            state.epoch = epoch;
            state.batch = skip;
            for cb in cbs.iter_mut() {
                cb.on_epoch_start(&progress!())?;
            }
            let (mut loss_sum, mut correct, mut seen) = (0.0, Some(0usize), 0usize);
            let mut stop: Option<Outcome> = None;
            loader.epoch_prefetched(epoch as u64, self.prefetch, |batches| -> Result<()> {
                for (i, batch) in batches.enumerate().skip(skip) {
                    let lr = schedule.lr_at(*base_lr, state.step, steps_per_epoch, total_steps);
                    optimizer.set_lr(lr);
                    optimizer.zero_grad()?;
                    let input = layout.apply(&batch.x)?;
                    let y = layout.labels(&batch.y)?;
                    let output = model.forward(&input)?;
                    let loss = loss_fn.loss(&output, &y)?;
                    loss.backward()?;
                    let l = loss.item()?;
                    let log = self.log_every > 0 && (state.step + 1).is_multiple_of(self.log_every);
                    // The gradients' norm, clipped when asked; a non-finite loss or gradient is
                    // a divergence: the step is skipped or the run stops, naming where.
                    let params = model.parameters();
                    let grad_norm = match self.clip_grad_norm {
                        Some(max) => Some(strata_nn::optim::clip_grad_norm_(&params, max)?),
                        None if log => Some(grad_norm(&params)?),
                        None => None,
                    };
                    let grads_finite = match grad_norm {
                        Some(norm) => norm.is_finite(),
                        // One check for all the gradients (on a GPU, one read back).
                        None => strata_core::all_finite(&params.iter().filter_map(Tensor::grad).collect::<Vec<_>>()),
                    };
                    let diverged = |report: String| Error::Diverged {
                        epoch: epoch + 1,
                        step: state.step + 1,
                        batch: i + 1,
                        batches: steps_per_epoch,
                        report,
                    };
                    if !l.is_finite() || !grads_finite {
                        if self.on_divergence == OnDivergence::Skip {
                            history.skipped += 1;
                            state.step += 1;
                            state.batch = i + 1;
                            for cb in cbs.iter_mut() {
                                cb.on_step_skipped(&progress!(), history.skipped, l.is_finite())?;
                            }
                            continue;
                        }
                        return Err(diverged(diagnose(model, &input, &y, l)));
                    }
                    optimizer.step()?;
                    if !strata_core::all_finite(&params) {
                        return Err(diverged(diagnose(model, &input, &y, l)));
                    }
                    state.step += 1;
                    state.batch = i + 1;
                    let n = batch.y.numel();
                    loss_sum += l * n as f64;
                    correct = match (correct, count_correct(&output, &y)?) {
                        (Some(c), Some(k)) => Some(c + k),
                        _ => None,
                    };
                    seen += n;
                    let step_log = StepLog {
                        epoch: epoch + 1,
                        step: state.step,
                        batch: i + 1,
                        loss: l,
                        lr,
                        grad_norm,
                        running_loss: loss_sum / seen as f64,
                        running_acc: correct.map(|c| c as f64 / seen as f64),
                        samples_per_s: seen as f64 / t0.elapsed().as_secs_f64(),
                        time_s: started.elapsed().as_secs_f64(),
                        log,
                    };
                    for cb in cbs.iter_mut() {
                        if cb.on_step_end(&progress!(), &step_log)? == Control::Stop && stop.is_none() {
                            stop = Some(Outcome::Stopped { by: cb.name() });
                        }
                    }
                    if stop.is_none() && self.interrupt.load(Ordering::SeqCst) {
                        stop = Some(Outcome::Interrupted);
                    }
                    if stop.is_some() {
                        break;
                    }
                }
                Ok(())
            })?;
            if seen == 0 && stop.is_none() && history.skipped > 0 && state.batch > skip {
                return Err(Error::AllStepsSkipped { epoch: epoch + 1, skipped: history.skipped });
            }
            if let Some(outcome) = stop {
                // A stop after the epoch's last batch is a stop between epochs.
                if state.batch == steps_per_epoch {
                    state.epoch = epoch + 1;
                    state.batch = 0;
                }
                history.outcome = outcome;
                break;
            }
            let train_secs = t0.elapsed().as_secs_f64();
            let val = val.map(|v| evaluate(model, loss_fn.as_ref(), v, &layout, self.eval_batch_size)).transpose()?;
            let acc = val.and_then(|v| v.accuracy);
            let improved = acc.is_some_and(|a| state.best_val_acc.is_none_or(|b| a > b));
            if improved {
                state.best_val_acc = acc;
            }
            state.epoch = epoch + 1;
            state.batch = 0;
            let log = EpochLog {
                epoch: epoch + 1,
                epochs: self.epochs,
                step: state.step,
                train_loss: (seen > 0).then(|| loss_sum / seen as f64),
                train_acc: correct.filter(|_| seen > 0).map(|c| c as f64 / seen as f64),
                val,
                improved,
                lr: optimizer.lr(),
                samples_per_s: if seen > 0 { seen as f64 / train_secs } else { 0.0 },
                time_s: started.elapsed().as_secs_f64(),
            };
            history.epochs.push(log);
            let mut stop_by = None;
            for cb in cbs.iter_mut() {
                if cb.on_epoch_end(&progress!(), &log)? == Control::Stop && stop_by.is_none() {
                    stop_by = Some(cb.name());
                }
            }
            if let Some(by) = stop_by {
                history.outcome = Outcome::Stopped { by };
                break;
            }
        }
        history.state = state;
        for cb in cbs.iter_mut() {
            cb.on_fit_end(&progress!(), &history.outcome)?;
        }
        self.start = TrainState { epochs: 0, steps_per_epoch: 0, ..state };
        Ok(history)
    }
}

/// The L2 norm of all gradients together (what `clip_grad_norm_` measures).
fn grad_norm(params: &[Tensor]) -> Result<f64> {
    let mut sum = 0.0;
    for p in params {
        if let Some(g) = p.grad() {
            sum += g.to_vec_f64().iter().map(|v| v * v).sum::<f64>();
        }
    }
    Ok(sum.sqrt())
}
