//! The training loop as a library: [`Trainer`] fits a model to a data set (Keras' `fit()`),
//! with any loss, optimizer and schedule, shuffled mini-batches, validation after each epoch,
//! divergence checks, gradient clipping, resume from a position, and [`Callback`]s for
//! everything around it (early stopping, checkpoints, logs, progress).
//!
//! Why one file over 700 lines: the builder and `fit_with`'s loop share private state; the
//! gradient arithmetic and its buckets already live in `parallel/`, the next split is the builder.

use crate::callback::{Callback, Control, EpochLog, Outcome, Progress, StepLog, TrainState};
use crate::checkpoint::CallbackState;
use crate::divergence::diagnose;
use crate::error::{Error, Result};
use crate::evaluate::{Evaluation, count_correct, evaluate};
use crate::layout::InputLayout;
use crate::parallel::{
    Accumulator, BucketPlan, BucketedReduction, DEFAULT_BUCKET_CAP_MB, GradBuffer, GradientReducer, coefficients,
    micro_batch_ranges, streams_at,
};
use crate::pipeline::{self, Chunk, StepPlan};
use crate::schedule::Schedule;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use strata_core::{AutocastGuard, Collective, Precision, Tensor};
use strata_data::{Augment, BatchSize, DataLoader, Dataset};
use strata_nn::{CrossEntropyLoss, Loss, Module, Optimizer, Sequential};

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
    /// Steps skipped for a non-finite loss or gradient in the whole run (a resumed run's
    /// before the resume included: [`TrainState::skipped`]).
    pub skipped: usize,
    /// In a data-parallel run, the bytes this process sent and received to combine one step's
    /// gradients (0 on one process).
    pub reduced_bytes: usize,
    /// In a data-parallel run, the buckets the gradient was exchanged in per step, the first ones
    /// while backward still ran ([`Trainer::bucket_cap_mb`]; 0 on one process).
    pub reduced_buckets: usize,
    /// In a data-parallel run, the time this process waited after backward for the exchanges
    /// to finish, summed over the steps of this call ([`History::reduced_steps`]): the part of
    /// the communication backward did not hide.
    pub reduce_wait: std::time::Duration,
    /// The data-parallel steps [`History::reduce_wait`] is summed over.
    pub reduced_steps: usize,
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
    /// The callbacks' states to start from (a resumed checkpoint's, or the last `fit`'s).
    start_callbacks: BTreeMap<String, CallbackState>,
    callbacks: Vec<Box<dyn Callback + 'm>>,
    accumulate: usize,
    pipeline_chunks: usize,
    reducer: Option<Box<dyn GradientReducer + 'm>>,
    bucket_cap_mb: f64,
    sync_bn: bool,
    precision: Precision,
}

/// What [`Trainer::plan`] derives from the options, the model and the data for one run.
struct Plan<'m, 'd> {
    layout: InputLayout,
    /// This process's rank in a data-parallel run (0 without one).
    rank: usize,
    /// A pipelined run's stages (the model's layer ranges, one per placement) and its chain.
    pipeline: Option<(Vec<std::ops::Range<usize>>, &'m Sequential)>,
    /// Micro-batches per batch, and which of them this process computes.
    parts: usize,
    mine: std::ops::Range<usize>,
    bucket_cap_bytes: usize,
    /// The collective that synchronised BatchNorms sum over (sync_bn with several processes).
    sync: Option<Rc<dyn Collective>>,
    loader: DataLoader<'d>,
    /// Where the run starts (its `steps_per_epoch` is the loader's batches).
    state: TrainState,
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
            start_callbacks: BTreeMap::new(),
            callbacks: vec![],
            accumulate: 1,
            pipeline_chunks: 1,
            reducer: None,
            bucket_cap_mb: DEFAULT_BUCKET_CAP_MB,
            sync_bn: false,
            precision: Precision::F32,
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

    /// Samples per batch in validation (1000 by default; at least 1, else `fit` refuses it).
    pub fn eval_batch_size(mut self, n: usize) -> Self {
        self.eval_batch_size = n;
        self
    }

    /// Gradient accumulation (PyTorch Lightning's `accumulate_grad_batches`): each batch of
    /// `batch_size` samples is cut into `n` micro-batches, in order, that go through the model
    /// one after another, and their gradients are combined before the one optimizer step
    /// (`n` = 1, the default: no accumulation). The split and the combination are
    /// [`crate::parallel`]'s: the same numbers as `n` processes of a data-parallel run. The
    /// optimizer state, the schedule and checkpoints do not change with `n`; BatchNorm sees
    /// the micro-batches.
    pub fn accumulate(mut self, n: usize) -> Self {
        self.accumulate = n;
        self
    }

    /// Pipelined training (GPipe) across the stages of a model whose layers sit on several
    /// devices ([`strata_nn::Sequential::stages`]): each batch is cut into `k` micro-batches, as
    /// [`Trainer::accumulate`]`(k)` cuts it, and each stage runs on its own thread, working on
    /// micro-batch `c` while the next stage works on `c − 1`, so the devices compute at the same
    /// time instead of in turn. The numbers are those of `accumulate(k)`, bit for bit
    /// (`crate::pipeline`'s docs say why); only the time changes. `k` = 1 (the default): no
    /// pipelining. The model must be a [`strata_nn::Sequential`] (as every built spec is);
    /// pipelining replaces accumulation and is refused beside it and in a data-parallel run.
    pub fn pipeline_chunks(mut self, k: usize) -> Self {
        self.pipeline_chunks = k;
        self
    }

    /// Trains data-parallel: this process is one rank of `reducer`'s world, computes only its
    /// micro-batch of each batch ([`crate::parallel`]'s split into `world_size` parts), and the
    /// gradients are combined by `reducer` before every step; every rank takes the same step.
    /// Every rank must call `fit` with the same data and options. The result is bit for bit that
    /// of one process with [`Trainer::accumulate`]`(world_size)`.
    pub fn distributed(mut self, reducer: Box<dyn GradientReducer + 'm>) -> Self {
        self.reducer = Some(reducer);
        self
    }

    /// The size of the gradient buckets of a data-parallel run, in MiB (DDP's `bucket_cap_mb`;
    /// [`DEFAULT_BUCKET_CAP_MB`] by default): backward hands each bucket to the reducer as soon as
    /// it has finished the bucket's parameters, so the exchange overlaps the rest of backward
    /// ([`crate::parallel::BucketedReduction`]). 0: one bucket, exchanged after backward. Any
    /// size gives the same bits. Without [`Trainer::distributed`] it changes nothing.
    pub fn bucket_cap_mb(mut self, mb: f64) -> Self {
        self.bucket_cap_mb = mb;
        self
    }

    /// Synchronised BatchNorm (PyTorch's `SyncBatchNorm`) in a data-parallel run: in training
    /// mode every BatchNorm normalises with the statistics of the whole global batch, summed
    /// over the processes ([`strata_core::sync_batch_norm`]), so the step is that of one
    /// process with the same batch (up to rounding) and every rank keeps the same running
    /// statistics. Off by default, as in PyTorch: each rank's own micro-batch statistics. It
    /// costs two small collectives per BatchNorm in forward and two in backward, and needs
    /// every process to get samples in every batch. Without [`Trainer::distributed`] (one
    /// process, accumulating or not) it changes nothing.
    pub fn sync_bn(mut self, on: bool) -> Self {
        self.sync_bn = on;
        self
    }

    /// The precision of the model's matrix products in training and evaluation:
    /// [`Precision::Bf16`] is mixed precision as `torch.autocast("cpu", dtype=torch.bfloat16)`
    /// (bf16 operands, f32 accumulation; parameters, optimizer state, losses and checkpoints
    /// stay f32; see [`strata_core::autocast`](mod@strata_core::autocast)). f32 by default.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Adds a callback, called in the order added.
    pub fn callback(mut self, callback: impl Callback + 'm) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Continues from a checkpoint's position (after [`crate::checkpoint::restore`] loaded its
    /// states into the model and optimizer), and its callbacks' states: each callback whose
    /// [`Callback::state_key`] the checkpoint holds gets its state back before `on_fit_start`.
    pub fn resume(self, meta: &crate::checkpoint::Meta) -> Self {
        let mut t = self.start_at(meta.epoch, meta.batch, meta.step, meta.best_val_acc);
        t.start.skipped = meta.skipped;
        t.start_callbacks = meta.callbacks.clone();
        t
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
        let _precision = AutocastGuard::new(self.precision);
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

    /// Every check [`Trainer::fit`] makes of the options against the model and the data before
    /// it trains, without training: the same errors, and nothing run or written. What a caller
    /// that prepares things around a run (a run directory, logs) calls first, so that a run
    /// refused for its options leaves nothing behind (`strata train` does).
    pub fn check(&self, train: &Dataset, val: Option<&Dataset>) -> Result<()> {
        self.plan(train, val).map(|_| ())
    }

    /// What a run of `train` (validated on `val`) takes from the options, checked.
    fn plan<'d>(&self, train: &'d Dataset, val: Option<&Dataset>) -> Result<Plan<'m, 'd>> {
        if train.is_empty() {
            return Err(Error::InvalidOption(
                "the training set is empty: there is nothing to train on; give a data set with samples".into(),
            ));
        }
        train.validate().map_err(|e| Error::InvalidOption(format!("the training set: {e}")))?;
        self.check_input(train)?;
        if let Some(v) = val {
            if v.is_empty() {
                return Err(Error::InvalidOption(
                    "the validation set is empty: its loss and accuracy would be figures of no samples; pass None for no validation, or give a validation set with samples".into(),
                ));
            }
            v.validate().map_err(|e| Error::InvalidOption(format!("the validation set: {e}")))?;
            self.check_input(v)?;
        }
        if self.batch_size == BatchSize::Samples(0) {
            return Err(Error::InvalidOption(
                "batch_size = 0: a step needs at least 1 sample; give a positive batch size (64 is usual), or BatchSize::Full for the whole training set per step".into(),
            ));
        }
        if self.eval_batch_size == 0 {
            return Err(Error::InvalidOption(
                "eval_batch_size = 0: validation needs at least 1 sample per batch; give a positive number (the default is 1000)".into(),
            ));
        }
        self.schedule.validate(self.epochs)?;
        if let Some(max) = self.clip_grad_norm
            && !(max > 0.0 && max.is_finite())
        {
            return Err(Error::InvalidOption(format!(
                "clip_grad_norm = {max}: the largest gradient norm must be positive and finite"
            )));
        }
        let layout = self.layout_for(train);
        let batch_size = self.batch_size.resolve(train.len());
        let world = self.reducer.as_ref().map_or(1, |r| r.world_size());
        let rank = self.reducer.as_ref().map_or(0, |r| r.rank());
        if self.accumulate == 0 {
            return Err(Error::InvalidOption(
                "accumulate = 0: a batch is cut into at least 1 micro-batch; give 1 (no accumulation) or more".into(),
            ));
        }
        if world > 1 && self.accumulate > 1 {
            return Err(Error::InvalidOption(format!(
                "accumulate = {} with {world} processes: a data-parallel run's micro-batches are its processes'; drop accumulate, or run {} processes",
                self.accumulate,
                world * self.accumulate
            )));
        }
        if self.pipeline_chunks == 0 {
            return Err(Error::InvalidOption(
                "pipeline_chunks = 0: a pipelined batch is cut into at least 1 micro-batch; give 1 (no pipelining) or more".into(),
            ));
        }
        if self.pipeline_chunks > 1 && (self.accumulate > 1 || world > 1) {
            return Err(Error::InvalidOption(format!(
                "pipeline_chunks = {} with {}: pipelining cuts each batch into micro-batches itself; drop {}",
                self.pipeline_chunks,
                if world > 1 { format!("{world} processes") } else { format!("accumulate = {}", self.accumulate) },
                if world > 1 {
                    "pipeline_chunks, or run one process"
                } else {
                    "accumulate (pipeline_chunks = k gives accumulate = k's numbers)"
                },
            )));
        }
        // A pipelined run's stages: the model's layer ranges, one per placement.
        let pipeline: Option<(Vec<std::ops::Range<usize>>, &Sequential)> = if self.pipeline_chunks > 1 {
            let Some(chain) = pipeline::chain(self.model) else {
                return Err(Error::InvalidOption(format!(
                    "pipeline_chunks = {}: pipelining cuts a Sequential model into stages by its layers' devices, and this model ({}) is not one; wrap its layers in a Sequential",
                    self.pipeline_chunks,
                    self.model.describe()
                )));
            };
            Some((chain.stages().into_iter().map(|(range, _)| range).collect(), chain))
        } else {
            None
        };
        // Micro-batches per batch, and which of them this process computes.
        let parts = world.max(self.accumulate).max(self.pipeline_chunks);
        let mine = if world > 1 { rank..rank + 1 } else { 0..parts };
        if parts > batch_size {
            return Err(Error::InvalidOption(format!(
                "{parts} micro-batches (accumulate, pipeline_chunks or processes) of a batch of {batch_size} {}: each needs at least one sample; use a batch_size of at least {parts}",
                if batch_size == 1 { "sample" } else { "samples" }
            )));
        }
        if !(self.bucket_cap_mb.is_finite() && self.bucket_cap_mb >= 0.0) {
            return Err(Error::InvalidOption(format!(
                "bucket_cap_mb = {}: the gradient bucket size must be a size in MiB, 0 or more (0: one bucket after backward; default {DEFAULT_BUCKET_CAP_MB})",
                self.bucket_cap_mb
            )));
        }
        let bucket_cap_bytes = (self.bucket_cap_mb * 1024.0 * 1024.0).round() as usize;
        // sync_bn: every rank computes every BatchNorm together, so none may sit a batch out.
        let sync = reducer_collective(self.sync_bn && world > 1, self.reducer.as_deref())?;
        let last = train.len() % batch_size;
        if sync.is_some() && last != 0 && last < world {
            return Err(Error::InvalidOption(format!(
                "sync_bn with {world} processes: the last batch of an epoch has {last} samples ({} samples, batch_size {batch_size}), fewer than the processes, so some would have none; choose a batch_size that leaves 0 or at least {world} samples over, or drop sync_bn",
                train.len()
            )));
        }
        let loader = DataLoader::new(train, batch_size).shuffle(self.seed).augment(self.augment.clone(), self.seed)?;
        let steps_per_epoch = loader.num_batches();
        let state = TrainState { epochs: self.epochs, steps_per_epoch, ..self.start };
        let (epoch0, batch0) = (state.epoch, state.batch);
        if epoch0 > self.epochs || (epoch0 == self.epochs && batch0 > 0) || batch0 > steps_per_epoch {
            return Err(Error::InvalidOption(format!(
                "start position epoch {epoch0}, batch {batch0} is beyond a run of {} epochs of {steps_per_epoch} batches",
                self.epochs
            )));
        }
        // Every step number the run reaches must fit the step counter (and the schedule's
        // total): a run of usize::MAX epochs, or a start at a step near usize::MAX.
        let total = steps_per_epoch.checked_mul(self.epochs);
        let remaining = total.map(|t| t - (epoch0 * steps_per_epoch + batch0));
        if remaining.and_then(|r| r.checked_add(state.step)).and_then(|end| end.checked_add(1)).is_none() {
            return Err(Error::InvalidOption(format!(
                "a run of {} epochs of {steps_per_epoch} batches from step {} takes more steps than a step counter holds ({}); give fewer epochs",
                self.epochs,
                state.step,
                usize::MAX
            )));
        }

        Ok(Plan { layout, rank, pipeline, parts, mine, bucket_cap_bytes, sync, loader, state })
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
        // Forward, backward and the validation passes all run on this thread (the backward of
        // every node would keep its forward's precision anyway).
        let _precision = AutocastGuard::new(self.precision);
        let Plan { layout, rank, pipeline, parts, mine, bucket_cap_bytes, sync, loader, mut state } =
            self.plan(train, val)?;
        let (steps_per_epoch, epoch0, batch0) = (state.steps_per_epoch, state.epoch, state.batch);
        let total_steps = steps_per_epoch * self.epochs;

        let Trainer { model, optimizer, loss: loss_fn, base_lr, schedule, callbacks, reducer, .. } = self;
        let model: &dyn Module = *model;
        let precision = self.precision;
        // Data-parallel: the gradient buckets, planned once (the parameters stay the same tensors).
        let plan = reducer.as_ref().map(|_| BucketPlan::new(&model.parameters(), bucket_cap_bytes));
        // The model's BatchNorms sum their statistics over the processes until fit returns.
        let _sync = sync.map(strata_core::install_collective);
        // One list, the trainer's own first; each borrowed for this call only.
        fn shorten<'a>(c: &'a mut (dyn Callback + '_)) -> &'a mut (dyn Callback + 'a) {
            c
        }
        let mut cbs: Vec<&mut dyn Callback> = callbacks.iter_mut().map(|c| shorten(c.as_mut())).collect();
        cbs.extend(extra.iter_mut().map(|c| shorten(&mut **c)));
        // The callbacks' states, each read after its on_fit_start and on_epoch_end (a
        // Checkpointing added after EarlyStopping stores the latter's state of the same epoch).
        let mut states = std::mem::take(&mut self.start_callbacks);
        for cb in cbs.iter_mut() {
            if let Some(saved) = cb.state_key().and_then(|k| states.get(&k)) {
                cb.load_state(saved)?;
            }
        }
        fn refresh(cb: &dyn Callback, states: &mut BTreeMap<String, CallbackState>) {
            if let Some(k) = cb.state_key() {
                states.insert(k, cb.state());
            }
        }
        macro_rules! progress {
            () => {
                Progress { model, optimizer: optimizer.as_ref(), state, callbacks: &states }
            };
        }
        for cb in cbs.iter_mut() {
            cb.on_fit_start(&progress!())?;
            refresh(&**cb, &mut states);
        }

        let started = Instant::now();
        let mut history = History {
            epochs: vec![],
            outcome: Outcome::Completed,
            state,
            skipped: state.skipped,
            reduced_bytes: 0,
            reduced_buckets: 0,
            reduce_wait: std::time::Duration::ZERO,
            reduced_steps: 0,
        };
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
            let interrupt = self.interrupt.clone();
            step_batches_prefetched(
                &loader,
                epoch as u64,
                self.prefetch,
                skip,
                parts,
                mine.clone(),
                |steps| -> Result<()> {
                    for StepBatches { index: i, size: batch_len, micro } in steps {
                        let lr = schedule.lr_at(*base_lr, state.step, steps_per_epoch, total_steps);
                        optimizer.set_lr(lr).map_err(|e| {
                            Error::InvalidOption(format!(
                                "the {} learning-rate schedule gave lr {lr} at step {} (base lr {base_lr}): {e}; \
                                 check the schedule's options and the base learning rate",
                                schedule.name(),
                                state.step + 1,
                            ))
                        })?;
                        optimizer.zero_grad()?;
                        let params = model.parameters();
                        // The step's loss, correct predictions and samples, with the gradients in
                        // the parameters; and the last input seen, for a divergence report.
                        let (l, correct_step, n, seen_input) = if parts == 1 {
                            let Some((_, _, Some(batch))) = micro.into_iter().next() else {
                                return Err(Error::InvalidOption("an empty batch".into()));
                            };
                            let input = layout.apply(&batch.x)?;
                            let y = layout.labels(&batch.y)?;
                            let output = model.forward(&input)?;
                            let loss = loss_fn.loss(&output, &y)?;
                            loss.backward()?;
                            let l = loss.item()?;
                            (l, count_correct(&output, &y)?, batch.y.numel(), Some((input, y)))
                        } else {
                            // Micro-batches one after another (accumulation), or this rank's one;
                            // each gradient is read out and combined as crate::parallel defines.
                            let sizes: Vec<usize> =
                                micro_batch_ranges(batch_len, parts).iter().map(|r| r.len()).collect();
                            let (coeffs, divisor) = coefficients(&sizes);
                            let mut acc = Accumulator::default();
                            // Data-parallel: this rank's gradient goes out in buckets while its
                            // backward still runs (crate::parallel::BucketedReduction).
                            let mut buckets = plan
                                .as_ref()
                                .zip(reducer.as_deref())
                                .map(|(plan, r)| BucketedReduction::new(plan, &params, r, &sizes));
                            // Per micro-batch: mean loss, correct count (-1: not a classifier).
                            let mut stats = vec![(f64::NAN, -1.0); parts];
                            let mut last = None;
                            // Dropout's mask streams: micro-batch k draws call `base + k`, wherever
                            // it runs, and the step moves them on by `parts` (see `streams_at`).
                            let streams = model.extra_state();
                            let shifting = streams_at(&streams, 0).is_some();
                            if let Some((stages, chain)) = &pipeline {
                                // Pipelined: the stages run the micro-batches on their threads
                                // and leave the combined gradient in the parameters.
                                let mut chunks = Vec::new();
                                for (k, _, batch) in micro {
                                    let Some(batch) = batch else { continue };
                                    let labels = layout.labels(&batch.y)?;
                                    chunks.push(Chunk { k, input: layout.apply(&batch.x)?, labels });
                                }
                                let plan = StepPlan {
                                    coeffs: &coeffs,
                                    divisor,
                                    streams: shifting.then_some(&streams),
                                    precision,
                                };
                                for (k, l, c) in pipeline::step(chain, stages, &chunks, loss_fn.as_ref(), &plan)? {
                                    stats[k] = (l, c.map_or(-1.0, |c| c as f64));
                                }
                                last = chunks.pop().map(|c| (c.input, c.labels));
                            } else {
                                for (k, _, batch) in micro {
                                    let Some(batch) = batch else { continue };
                                    if let Some(at) = streams_at(&streams, k as u64) {
                                        model.load_extra_state(&at)?;
                                    }
                                    optimizer.zero_grad()?;
                                    let input = layout.apply(&batch.x)?;
                                    let y = layout.labels(&batch.y)?;
                                    let output = model.forward(&input)?;
                                    let loss = loss_fn.loss(&output, &y)?;
                                    match buckets.as_mut() {
                                        Some(b) => loss.backward_with_hook(|leaf| b.grad_ready(leaf))?,
                                        None => {
                                            loss.backward()?;
                                            acc.add_grads(&params, coeffs[k])?;
                                        }
                                    }
                                    stats[k] = (loss.item()?, count_correct(&output, &y)?.map_or(-1.0, |c| c as f64));
                                    last = Some((input, y));
                                }
                            }
                            // The rest of the buckets (all of them on a rank whose micro-batch
                            // is empty: its gradients read as zeros), waited for; the combined
                            // gradients are then in the parameters.
                            let waiting = std::time::Instant::now();
                            let reduced = buckets.map(BucketedReduction::finish).transpose()?;
                            match (reduced, reducer.as_mut()) {
                                (Some(bytes), Some(r)) => {
                                    history.reduced_bytes = bytes;
                                    history.reduced_buckets = plan.as_ref().map_or(0, |p| p.buckets().len());
                                    history.reduce_wait += waiting.elapsed();
                                    history.reduced_steps += 1;
                                    // Every rank's loss and count.
                                    let (ml, mc) = stats[rank];
                                    let all = r.all_gather(&[ml, mc])?;
                                    for (k, s) in all.chunks(2).enumerate() {
                                        stats[k] = (s[0], s[1]);
                                    }
                                }
                                _ if pipeline.is_some() => {}
                                _ => {
                                    acc.finish(divisor).unwrap_or_else(|| GradBuffer::zeros(&params)).write(&params)?
                                }
                            }
                            if shifting && let Some(at) = streams_at(&streams, parts as u64) {
                                model.load_extra_state(&at)?;
                            }
                            // The batch's mean loss from the micro-batches' (in f64, in order).
                            let mut l = 0.0;
                            let mut correct = Some(0usize);
                            for (k, &(lk, ck)) in stats.iter().enumerate().filter(|(k, _)| sizes[*k] > 0) {
                                l += lk * sizes[k] as f64;
                                correct = correct.filter(|_| ck >= 0.0).map(|c| c + ck as usize);
                            }
                            (l / batch_len as f64, correct, batch_len, last)
                        };
                        let log = self.log_every > 0 && (state.step + 1).is_multiple_of(self.log_every);
                        // The gradients' norm, clipped when asked; a non-finite loss or gradient is
                        // a divergence: the step is skipped or the run stops, naming where.
                        let grad_norm = match self.clip_grad_norm {
                            Some(max) => Some(strata_nn::optim::clip_grad_norm_(&params, max)?),
                            None if log => Some(grad_norm(&params)?),
                            None => None,
                        };
                        let grads_finite = match grad_norm {
                            Some(norm) => norm.is_finite(),
                            // One check for all the gradients (on a GPU, one read back).
                            None => {
                                strata_core::all_finite(&params.iter().filter_map(Tensor::grad).collect::<Vec<_>>())
                            }
                        };
                        let diverged = |report: String| Error::Diverged {
                            epoch: epoch + 1,
                            step: state.step + 1,
                            batch: i + 1,
                            batches: steps_per_epoch,
                            report,
                        };
                        let report = |seen: &Option<(Tensor, Tensor)>| match seen {
                            Some((input, y)) => {
                                // This rank's micro-batch alone: the other ranks may not re-run.
                                let _alone = strata_core::suspend_collective();
                                diagnose(model, input, y, l)
                            }
                            None => format!("another process's micro-batch (this one, rank {rank}, had no samples)"),
                        };
                        if !l.is_finite() || !grads_finite {
                            if self.on_divergence == OnDivergence::Skip {
                                state.skipped += 1;
                                history.skipped = state.skipped;
                                state.step += 1;
                                state.batch = i + 1;
                                for cb in cbs.iter_mut() {
                                    cb.on_step_skipped(&progress!(), history.skipped, l.is_finite())?;
                                }
                                continue;
                            }
                            return Err(diverged(report(&seen_input)));
                        }
                        optimizer.step()?;
                        if !strata_core::all_finite(&params) {
                            return Err(diverged(report(&seen_input)));
                        }
                        state.step += 1;
                        state.batch = i + 1;
                        loss_sum += l * n as f64;
                        correct = match (correct, correct_step) {
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
                        if stop.is_none() && interrupt.load(Ordering::SeqCst) {
                            stop = Some(Outcome::Interrupted);
                        }
                        // Every rank stops after the same step (only rank 0 may have the callbacks
                        // that stop).
                        if let Some(r) = reducer.as_mut() {
                            let any = r.all_gather(&[f64::from(u8::from(stop.is_some()))])?.iter().any(|&v| v != 0.0);
                            if any && stop.is_none() {
                                stop = Some(Outcome::Interrupted);
                            }
                        }
                        if stop.is_some() {
                            break;
                        }
                    }
                    Ok(())
                },
            )?;
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
                let control = cb.on_epoch_end(&progress!(), &log)?;
                refresh(&**cb, &mut states);
                if control == Control::Stop && stop_by.is_none() {
                    stop_by = Some(cb.name());
                }
            }
            if let Some(r) = reducer.as_mut() {
                let any = r.all_gather(&[f64::from(u8::from(stop_by.is_some()))])?.iter().any(|&v| v != 0.0);
                if any && stop_by.is_none() {
                    stop_by = Some("another process".to_string());
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
        self.start_callbacks = states;
        Ok(history)
    }
}

/// The collective sync_bn sums BatchNorm statistics over, when `wanted`.
fn reducer_collective(
    wanted: bool,
    reducer: Option<&(dyn GradientReducer + '_)>,
) -> Result<Option<Rc<dyn Collective>>> {
    match (wanted, reducer) {
        (false, _) | (true, None) => Ok(None),
        (true, Some(r)) => r.collective().map(Some).ok_or_else(|| {
            Error::InvalidOption(
                "sync_bn: this data-parallel reducer cannot sum values during forward and backward (it offers no collective); drop sync_bn"
                    .into(),
            )
        }),
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

/// One step's share of this process: the batch's position in the epoch, its sample count, and
/// this process's micro-batches `(k, n_k, batch)` (`None` for an empty one).
struct StepBatches {
    index: usize,
    size: usize,
    micro: Vec<(usize, usize, Option<strata_data::Batch>)>,
}

/// The steps of epoch `epoch` from batch `skip` on, each batch cut into `parts` micro-batches
/// ([`crate::parallel::micro_batch_ranges`]) of which only those in `mine` are assembled (a
/// rank reads only its shard), on a background thread up to `depth` steps ahead, as
/// [`DataLoader::epoch_prefetched`] does. With one part, the batches are the loader's own.
fn step_batches_prefetched<R>(
    loader: &DataLoader,
    epoch: u64,
    depth: usize,
    skip: usize,
    parts: usize,
    mine: std::ops::Range<usize>,
    f: impl FnOnce(&mut dyn Iterator<Item = StepBatches>) -> R,
) -> R {
    let order = loader.order(epoch);
    let (bs, nb) = (loader.batch_size(), loader.num_batches());
    let (tx, rx) = std::sync::mpsc::sync_channel(depth.max(1));
    std::thread::scope(|scope| {
        let order = &order;
        scope.spawn(move || {
            for b in skip..nb {
                let idx = &order[b * bs..((b + 1) * bs).min(order.len())];
                let micro = micro_batch_ranges(idx.len(), parts)
                    .into_iter()
                    .enumerate()
                    .filter(|(k, _)| mine.contains(k))
                    .map(|(k, r)| (k, r.len(), (!r.is_empty()).then(|| loader.batch(epoch, &idx[r]))))
                    .collect();
                // A send fails only when the consumer is gone: stop assembling.
                if tx.send(StepBatches { index: b, size: idx.len(), micro }).is_err() {
                    break;
                }
            }
        });
        // `f` owns the receiver's iterator, dropped when it returns, unblocking the thread.
        f(&mut rx.into_iter())
    })
}
