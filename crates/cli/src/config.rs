//! Run files: one TOML file holds the model (a path or an inline `[model]` table), the data,
//! the optimizer, the loss, the learning-rate schedule and the training options. Every key has a default,
//! unknown keys are errors (with line and column), and any key can be overridden from the
//! command line (`--epochs 5`, `--lr 0.1`, `--set optimizer.name=adam`).
//!
//! Over 700 lines on purpose: it is the run file's schema, one struct per table with every key
//! documented where it is declared, and the checks that name a key beside it.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use strata_data::BatchSize;
use strata_nn::LossConfig;

pub use crate::augment_config::AugmentConfig;

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The model: a path to a model file (relative to the run file), or an inline table. Absent:
    /// PyTorch's SimpleNN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<toml::Value>,
    /// Where the data comes from.
    #[serde(default)]
    pub data: DataConfig,
    /// The optimizer.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// The loss (absent: cross_entropy, PyTorch's `nn.CrossEntropyLoss()`).
    #[serde(default)]
    pub loss: LossConfig,
    /// The learning-rate schedule.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Epochs, batches, seed, output.
    #[serde(default)]
    pub training: TrainingConfig,
    /// Early stopping (Keras' `EarlyStopping`); absent: every epoch runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStoppingConfig>,
    /// Augmentation of the training images (`[augment]`; off by default, and then not saved).
    #[serde(default, skip_serializing_if = "AugmentConfig::is_default")]
    pub augment: AugmentConfig,
}

/// `[early_stopping]`: stop when `monitor` has not improved by more than `min_delta` for
/// `patience` epochs; with `restore_best`, the run's final weights (`model.safetensors`,
/// `--save`) are the best epoch's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStoppingConfig {
    /// `val_loss` (default), `val_acc`, `train_loss` or `train_acc`.
    pub monitor: String,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The least change that counts as an improvement.
    pub min_delta: f64,
    /// End with the best epoch's weights.
    pub restore_best: bool,
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        EarlyStoppingConfig { monitor: "val_loss".into(), patience: 5, min_delta: 0.0, restore_best: false }
    }
}

/// The data set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `embedded` (the MNIST subset compiled in), `mnist` (a folder with the four IDX files),
    /// `csv` (a file; the last column is the label unless `label_column` says otherwise) or
    /// `images` (a folder with one sub-folder per class).
    pub source: String,
    /// The folder (mnist, images) or file (csv).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// For csv/images: a separate test file or folder, evaluated at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_path: Option<PathBuf>,
    /// For csv: the label column, by name or index (negative from the end).
    pub label_column: String,
    /// For images: 1 (grayscale) or 3 (RGB) channels.
    pub channels: usize,
    /// For images: `[height, width]` every image is resized to when it is read (bilinear,
    /// torchvision's `Resize((height, width))`); absent, all images must have one size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<[u32; 2]>,
    /// Samples held out of the training set for validation each epoch (seeded split).
    /// The embedded set always holds out 2,000.
    pub validation: usize,
    /// Per-channel normalisation mean; absent: MNIST's for MNIST data, computed from the
    /// training set otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    /// Per-channel normalisation standard deviation (see `mean`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    /// The classes' names, label 0 first (`["zero", "one", …]`), for any source: one per class
    /// of the data, each different. Stored in checkpoints and shown by `eval` and `predict`.
    /// Absent: the sub-folder names for images, the label numbers otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: "embedded".into(),
            path: None,
            test_path: None,
            label_column: "last".into(),
            channels: 1,
            size: None,
            validation: 5000,
            mean: None,
            std: None,
            classes: None,
        }
    }
}

/// The optimizers `optimizer.name` takes.
pub const OPTIMIZER_NAMES: [&str; 5] = ["sgd", "adam", "adamw", "rmsprop", "adagrad"];

/// The optimizer and its hyper-parameters (`torch.optim` names and meanings). A key an
/// optimizer does not have is ignored by it; `momentum` and `eps` default per optimizer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// `sgd`, `adam`, `adamw`, `rmsprop` or `adagrad`.
    pub name: String,
    /// Learning rate (the peak rate for schedules).
    pub lr: f64,
    /// SGD and RMSprop momentum. Absent: 0.9 for sgd (strata's default run), 0 for rmsprop
    /// (PyTorch's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// SGD dampening.
    pub dampening: f64,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay (L2 for sgd/adam/rmsprop/adagrad, decoupled for adamw).
    pub weight_decay: f64,
    /// Adam's betas.
    pub betas: [f64; 2],
    /// Added to the denominator (adam, adamw, rmsprop, adagrad). Absent: PyTorch's default for
    /// the optimizer, 1e-8 (1e-10 for adagrad).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// Adam's AMSGrad variant.
    pub amsgrad: bool,
    /// RMSprop's smoothing constant.
    pub alpha: f64,
    /// Centered RMSprop (normalised by the gradient's estimated variance).
    pub centered: bool,
    /// Adagrad's learning-rate decay (step t uses lr / (1 + (t − 1)·lr_decay)).
    pub lr_decay: f64,
    /// Where Adagrad's sums of squared gradients start.
    pub initial_accumulator_value: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            name: "sgd".into(),
            lr: 0.01,
            momentum: None,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            betas: [0.9, 0.999],
            eps: None,
            amsgrad: false,
            alpha: 0.99,
            centered: false,
            lr_decay: 0.0,
            initial_accumulator_value: 0.0,
        }
    }
}

impl OptimizerConfig {
    /// The momentum the optimizer uses: the key's, else 0.9 for sgd and 0 for the others.
    pub fn resolved_momentum(&self) -> f64 {
        self.momentum.unwrap_or(if self.name == "sgd" { 0.9 } else { 0.0 })
    }

    /// The eps the optimizer uses: the key's, else PyTorch's default for it.
    pub fn resolved_eps(&self) -> f64 {
        self.eps.unwrap_or(if self.name == "adagrad" { 1e-10 } else { 1e-8 })
    }

    /// The optimizer in words, for the run header: its PyTorch name, the rate and the options
    /// that shape its steps (`SGD lr 0.01 momentum 0.9`, `RMSprop lr 0.01 alpha 0.99 centered`).
    pub fn describe(&self) -> String {
        let mut s = match self.name.as_str() {
            "sgd" => return format!("SGD lr {} momentum {}", self.lr, self.resolved_momentum()),
            "adam" => return format!("Adam lr {}", self.lr),
            "adamw" => return format!("AdamW lr {}", self.lr),
            "rmsprop" => format!("RMSprop lr {} alpha {}", self.lr, self.alpha),
            "adagrad" => format!("Adagrad lr {}", self.lr),
            other => return format!("{other} lr {}", self.lr),
        };
        let mut option = |key: &str, value: f64, shown: bool| {
            if shown {
                s.push_str(&format!(" {key} {value}"));
            }
        };
        let momentum = self.resolved_momentum();
        option("momentum", momentum, self.name == "rmsprop" && momentum > 0.0);
        option("lr_decay", self.lr_decay, self.name == "adagrad" && self.lr_decay > 0.0);
        let init = self.initial_accumulator_value;
        option("initial_accumulator_value", init, self.name == "adagrad" && init > 0.0);
        option("weight_decay", self.weight_decay, self.weight_decay > 0.0);
        option("eps", self.resolved_eps(), self.eps.is_some());
        if self.name == "rmsprop" && self.centered {
            s.push_str(" centered");
        }
        s
    }
}

/// How the learning rate changes over the run, computed per step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// `constant`, `step` (×gamma every step_size epochs), `cosine` (to min_lr) or `one_cycle`.
    pub name: String,
    /// Linear warm-up from 0 over this many epochs (fractions allowed), then the schedule. At
    /// most `training.epochs`: a longer warm-up would never reach `optimizer.lr`.
    pub warmup_epochs: f64,
    /// For `step`: epochs between decays.
    pub step_size: usize,
    /// For `step`: the decay factor.
    pub gamma: f64,
    /// For `cosine`: the final rate.
    pub min_lr: f64,
    /// For `one_cycle`: the fraction of the run spent increasing the rate.
    pub pct_start: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            name: "constant".into(),
            warmup_epochs: 0.0,
            step_size: 5,
            gamma: 0.1,
            min_lr: 0.0,
            pct_start: 0.3,
        }
    }
}

/// Training options.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Samples per step, or `"full"` for the whole training set per step.
    #[serde(with = "batch_size_serde")]
    pub batch_size: BatchSize,
    /// Seed for initial weights, shuffling and the validation split.
    pub seed: u64,
    /// The run directory (metrics, TensorBoard events, checkpoints). Absent: `runs/<run file name>`,
    /// or no directory at all for `strata train` without a run file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// Initial weights (`--init`): a PyTorch `torch.save` state_dict (`.pt`, read without running
    /// any code from it) or a safetensors state_dict or checkpoint, checked against the model and
    /// loaded after it is built. Relative to the working directory, like `data.path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// Also write a checkpoint every this many steps (0: only at the end of each epoch).
    pub checkpoint_every: usize,
    /// How many of the newest step checkpoints to keep, at least 1 (`--resume` continues from
    /// the newest); older ones are deleted as new ones are written. `best.safetensors` is kept
    /// besides them. 0 is refused: it would keep none to resume from (to keep every checkpoint,
    /// give a number at least as large as the run writes).
    pub keep_last: usize,
    /// Log step metrics every this many steps.
    pub log_every: usize,
    /// Worker threads (absent: all cores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// `"f32"` or `"f64"`: the element type the model is built, trained, checkpointed and
    /// evaluated in (PyTorch's `model.double()`). Absent: the model file's `dtype` (f32 unless it
    /// says otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// `"cpu"` (the default), `"gpu"` or `"gpu:N"`: where the model trains (`strata devices`
    /// lists the GPUs). Checkpoints do not depend on it: a run resumes on another device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Layers placed on devices over the model file's `device` keys: `"encoder=gpu:0,head=cpu"`
    /// (dotted layer paths; the layers placed nowhere run on `device`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_map: Option<String>,
    /// `"default"` or `"fast"`: which algorithms the model's convolutions may use
    /// (`strata_core::ConvAlgorithm`). Absent: the model file's `conv_algorithm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv_algorithm: Option<String>,
    /// Clip the gradients' total L2 norm to this before each step
    /// (`torch.nn.utils.clip_grad_norm_`). Absent: no clipping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
    /// What a step with a non-finite loss or gradient does: `"stop"` (the default: the run ends
    /// with an error naming the step and the first layer that went non-finite) or `"skip"` (the
    /// step is not applied, as PyTorch's GradScaler skips it, and the run goes on).
    pub on_divergence: String,
    /// Gradient accumulation (PyTorch Lightning's `accumulate_grad_batches`, also accepted as
    /// that name): each batch of `batch_size` is cut into this many micro-batches whose
    /// gradients are combined before one optimizer step (`strata_train::parallel` defines how,
    /// the same as this many MPI processes). 1 (the default): none.
    #[serde(alias = "accumulate_grad_batches", skip_serializing_if = "is_one")]
    pub accumulate: usize,
    /// Pipelined training (GPipe) of a model whose layers sit on several devices: each batch is
    /// cut into this many micro-batches (as `accumulate` cuts it) and the model's stages — its
    /// stretches of layers on one device — work on different micro-batches at the same time,
    /// each on its own thread. The numbers are `accumulate`'s with the same count, bit for bit.
    /// 1 (the default): none.
    #[serde(skip_serializing_if = "is_one")]
    pub pipeline_chunks: usize,
    /// Synchronised BatchNorm under `mpirun` (PyTorch's `SyncBatchNorm`): in training mode the
    /// BatchNorms normalise with the whole global batch's statistics, summed over the
    /// processes, instead of each process's micro-batch's. Off (the default) as in PyTorch; it
    /// changes nothing in a single-process run.
    #[serde(skip_serializing_if = "is_false")]
    pub sync_bn: bool,
    /// The gradient buckets of a data-parallel run, in MiB (PyTorch DDP's `bucket_cap_mb`): each
    /// bucket is exchanged as soon as backward has finished its parameters, overlapping the rest
    /// of backward; 0 puts everything in one bucket, exchanged after backward. Absent:
    /// `strata_train::parallel::DEFAULT_BUCKET_CAP_MB`. Any size gives the same numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket_cap_mb: Option<f64>,
    /// `"f32"` (the default) or `"bf16"`: mixed precision as `torch.autocast("cpu",
    /// dtype=torch.bfloat16)`: the matrix products take bf16 operands and accumulate in f32;
    /// parameters, optimizer state, losses and checkpoints stay f32 (`strata_core::autocast`).
    #[serde(skip_serializing_if = "is_f32")]
    pub precision: String,
}

/// Whether `p` is "f32" (the default of `training.precision`, left out of written configs).
fn is_f32(p: &str) -> bool {
    p == "f32"
}

/// Whether `n` is 1 (the default of `training.accumulate`, left out of written configs).
fn is_one(n: &usize) -> bool {
    *n == 1
}

/// Whether `b` is false (the default of `training.sync_bn`, left out of written configs).
fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            epochs: 10,
            batch_size: BatchSize::Samples(64),
            seed: 0,
            out: None,
            init: None,
            checkpoint_every: 0,
            keep_last: 3,
            log_every: 10,
            threads: None,
            dtype: None,
            device: None,
            device_map: None,
            conv_algorithm: None,
            clip_grad_norm: None,
            on_divergence: "stop".into(),
            accumulate: 1,
            pipeline_chunks: 1,
            sync_bn: false,
            bucket_cap_mb: None,
            precision: "f32".into(),
        }
    }
}

mod batch_size_serde;
mod run_checks;

impl RunConfig {
    /// Reads a run file; errors carry the file, line and column.
    pub fn load(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the run file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // A model file given where a run file goes: say so, not just "unknown field `input`".
            let model_like = toml::from_str::<toml::Table>(&text).is_ok_and(|t| t.contains_key("layers"));
            let hint = if model_like {
                format!(
                    "\n{} is a model file (it has `layers`), not a run file: pass it as `--model {}` (with `--data`), \
                     or name it in a run file's `model = \"…\"`",
                    path.display(),
                    path.display()
                )
            } else {
                String::new()
            };
            anyhow::anyhow!("{}: {e}{hint}", path.display())
        })
    }

    /// Applies `key=value` overrides (`training.epochs=5`, `optimizer.name="adam"`); values are
    /// TOML (bare words are taken as strings). Unknown keys are errors.
    pub fn with_overrides(&self, overrides: &[(String, String)]) -> Result<RunConfig> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        // Values are TOML; a bare word is taken as a string.
        let parse = |key: &str, value: &str| -> Result<toml::Value> {
            Ok(match toml::from_str::<toml::Table>(&format!("v = {value}")) {
                Ok(mut t) => t.remove("v").expect("just parsed"),
                // A whole number TOML cannot hold would otherwise become a string, and the
                // error "expected an integer, found a string".
                Err(_)
                    if !value.is_empty()
                        && value.trim_start_matches(['-', '+']).chars().all(|c| c.is_ascii_digit()) =>
                {
                    bail!("{key} = {value}: too large (TOML integers, and so run files, hold at most {})", i64::MAX)
                }
                Err(_) => toml::Value::String(value.to_string()),
            })
        };
        let mut parsed: Vec<(&str, &str, toml::Value)> = Vec::with_capacity(overrides.len());
        for (key, value) in overrides {
            let v = parse(key, value)?;
            // A key given twice with different values (a flag and `--set` for the same key, or
            // two `--set`s): which one won would be silent, so neither does. (The same value
            // twice, as `--data x.csv` and `--set data.source=csv` both give, is harmless.)
            match parsed.iter().find(|(k, _, _)| k == key) {
                Some((_, first, f)) if *f != v => bail!(
                    "`{key}` is given twice on the command line (`{first}` and `{value}`, by its flag and/or \
                     `--set {key}=…`); give it once"
                ),
                Some(_) => {}
                None => parsed.push((key, value, v)),
            }
        }
        let mut table = toml::Table::try_from(self).context("encoding the run config")?;
        for (key, _, parsed) in parsed {
            let parts: Vec<&str> = key.split('.').collect();
            let (last, sections) = parts.split_last().expect("split gives at least one part");
            let mut cursor = &mut table;
            for s in sections {
                cursor = cursor
                    .entry(s.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .with_context(|| format!("--set {key}: `{s}` is not a section"))?;
            }
            cursor.insert(last.to_string(), parsed);
        }
        toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
            // Name the override at fault: the first that fails alone (all of them only when
            // none does, an error of their combination).
            let culprit = match overrides {
                [one] => Some(one),
                _ => overrides.iter().find(|o| self.with_overrides(std::slice::from_ref(o)).is_err()),
            };
            let keys: Vec<&str> = match culprit {
                Some((k, _)) => vec![k.as_str()],
                None => overrides.iter().map(|(k, _)| k.as_str()).collect(),
            };
            anyhow::anyhow!("overriding {}: {}", keys.join(", "), e.message())
        })
    }

    /// Checks values that the types alone do not rule out, for a run to start or go on: every
    /// check of [`RunConfig::validate_stored`], and those of the run as a whole that a
    /// checkpoint written before them may fail ([`RunConfig::validate_run`]).
    pub fn validate(&self) -> Result<()> {
        self.validate_stored()?;
        self.validate_run()
    }

    /// Checks values that the types alone do not rule out, key by key: what a checkpoint's
    /// stored run config must pass to be read (see [`RunConfig::validate`] for a run's).
    pub fn validate_stored(&self) -> Result<()> {
        // Paths given empty (`--set training.out=`) would fail later with an OS error about "".
        for (key, path) in
            [("training.out (--out)", &self.training.out), ("training.init (--init)", &self.training.init)]
        {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                bail!("{key} is empty; give a path, or leave the key out");
            }
        }
        let o = &self.optimizer;
        if !OPTIMIZER_NAMES.contains(&o.name.as_str()) {
            bail!("optimizer.name must be one of {}, got `{}`", OPTIMIZER_NAMES.join(", "), o.name);
        }
        if !(o.lr.is_finite() && o.lr > 0.0) {
            bail!("optimizer.lr (--lr) must be a positive number, got {}", o.lr);
        }
        // Every number PyTorch's constructors would refuse, named by its key (and flag).
        let in_range = |key: &str, v: f64, ok: bool, what: &str| -> Result<()> {
            if !v.is_finite() || !ok {
                bail!("{key} must be {what}, got {v}");
            }
            Ok(())
        };
        let (momentum, eps) = (o.resolved_momentum(), o.resolved_eps());
        in_range("optimizer.momentum (--momentum)", momentum, momentum >= 0.0, "a number ≥ 0 (0.9 is usual)")?;
        in_range("optimizer.dampening", o.dampening, (0.0..=1.0).contains(&o.dampening), "between 0 and 1")?;
        in_range("optimizer.weight_decay", o.weight_decay, o.weight_decay >= 0.0, "a number ≥ 0")?;
        in_range("optimizer.eps", eps, eps >= 0.0, "a number ≥ 0 (1e-8 is usual, 1e-10 for adagrad)")?;
        for (i, b) in o.betas.iter().enumerate() {
            in_range(&format!("optimizer.betas[{i}]"), *b, (0.0..1.0).contains(b), "in [0, 1) (0.9, 0.999 are usual)")?;
        }
        in_range("optimizer.alpha", o.alpha, (0.0..1.0).contains(&o.alpha), "in [0, 1) (0.99 is usual)")?;
        in_range("optimizer.lr_decay", o.lr_decay, o.lr_decay >= 0.0, "a number ≥ 0")?;
        let init = o.initial_accumulator_value;
        in_range("optimizer.initial_accumulator_value", init, init >= 0.0, "a number ≥ 0")?;
        if o.name == "sgd" && o.nesterov && (momentum <= 0.0 || o.dampening != 0.0) {
            bail!(
                "optimizer.nesterov needs momentum > 0 and dampening = 0 (as torch.optim.SGD), got momentum {} and dampening {}",
                momentum,
                o.dampening
            );
        }
        self.loss.validate(None).map_err(loss_error)?;
        let sc = &self.schedule;
        in_range("schedule.warmup_epochs", sc.warmup_epochs, sc.warmup_epochs >= 0.0, "a number of epochs ≥ 0")?;
        in_range("schedule.gamma", sc.gamma, sc.gamma > 0.0, "a positive factor (0.1 is usual)")?;
        in_range("schedule.min_lr", sc.min_lr, sc.min_lr >= 0.0, "a rate ≥ 0")?;
        in_range(
            "schedule.pct_start",
            sc.pct_start,
            sc.pct_start > 0.0 && sc.pct_start < 1.0,
            "in (0, 1) (0.3 is usual)",
        )?;
        if sc.name == "step" && sc.step_size == 0 {
            bail!("schedule.step_size must be at least 1 epoch");
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        if let Some(n) = self.training.threads
            && !(1..=4 * cores.max(1)).contains(&n)
        {
            bail!(
                "training.threads (--threads) must be between 1 and {} (4 per core; this machine has {cores} cores), got {n}",
                4 * cores.max(1)
            );
        }
        let (mean, std) = (self.data.mean.as_deref().unwrap_or(&[]), self.data.std.as_deref().unwrap_or(&[]));
        if let Some(bad) = mean.iter().chain(std).find(|v| !v.is_finite()) {
            bail!("data.mean and data.std must be finite numbers, got {bad}");
        }
        if let Some(bad) = std.iter().find(|v| **v <= 0.0) {
            bail!("data.std values must be positive (they divide the data), got {bad}");
        }
        if let (Some(m), Some(sd)) = (&self.data.mean, &self.data.std)
            && (m.len() != sd.len() || m.is_empty())
        {
            bail!(
                "data.mean and data.std must have one value per channel each, got {} and {} values",
                m.len(),
                sd.len()
            );
        }
        if let Some(names) = &self.data.classes {
            validate_class_names(names)?;
        }
        if !["constant", "step", "cosine", "one_cycle"].contains(&self.schedule.name.as_str()) {
            bail!("schedule.name must be constant, step, cosine or one_cycle, got `{}`", self.schedule.name);
        }
        if self.training.epochs == 0 {
            bail!("training.epochs (--epochs) must be at least 1");
        }
        if !["embedded", "mnist", "csv", "images"].contains(&self.data.source.as_str()) {
            bail!("data.source must be embedded, mnist, csv or images, got `{}`", self.data.source);
        }
        if let Some([h, w]) = self.data.size {
            if self.data.source != "images" {
                bail!("data.size = [{h}, {w}] resizes images; data.source is `{}`: drop data.size", self.data.source);
            }
            if h == 0 || w == 0 || h > 16_384 || w > 16_384 {
                bail!("data.size = [{h}, {w}]: give a height and width from 1 to 16384 pixels, e.g. [224, 224]");
            }
        }
        if let Some(d) = &self.training.dtype
            && !["f32", "f64"].contains(&d.as_str())
        {
            bail!("training.dtype (--dtype) must be f32 or f64, got `{d}`");
        }
        if let Some(d) = &self.training.device
            && let Err(e) = d.parse::<strata_core::Device>()
        {
            bail!("training.device (--device): {e}");
        }
        if let Some(m) = &self.training.device_map
            && let Err(e) = strata_nn::check::edit::parse_device_map(m)
        {
            bail!("training.device_map (--device-map): {e}");
        }
        if let Some(a) = &self.training.conv_algorithm
            && strata_core::ConvAlgorithm::from_name(a).is_none()
        {
            bail!(
                "training.conv_algorithm (--conv-algorithm) must be default (as accurate as PyTorch) or fast (Winograd F(4×4) on large planes, ~10× PyTorch's f32 error), got `{a}`"
            );
        }
        if strata_core::Precision::parse(&self.training.precision).is_none() {
            bail!(
                "training.precision (--precision) must be f32 or bf16 (bf16 matrix products with f32 accumulation, as torch.autocast), got `{}`",
                self.training.precision
            );
        }
        if let Some(es) = &self.early_stopping {
            if !strata_train::callbacks::MONITORS.contains(&es.monitor.as_str()) {
                bail!(
                    "early_stopping.monitor must be one of {}, got `{}`",
                    strata_train::callbacks::MONITORS.join(", "),
                    es.monitor
                );
            }
            if es.patience == 0 {
                bail!("early_stopping.patience must be at least 1 (epochs without improvement before stopping), got 0");
            }
            in_range("early_stopping.min_delta", es.min_delta, es.min_delta >= 0.0, "a number >= 0")?;
        }
        if self.training.accumulate == 0 {
            bail!(
                "training.accumulate (--accumulate) must be at least 1 (the micro-batches a batch is cut into; 1: no accumulation), got 0"
            );
        }
        if self.training.pipeline_chunks == 0 {
            bail!(
                "training.pipeline_chunks (--pipeline-chunks) must be at least 1 (the micro-batches a pipelined batch is cut into; 1: no pipelining), got 0"
            );
        }
        if self.training.pipeline_chunks > 1 && self.training.accumulate > 1 {
            bail!(
                "training.pipeline_chunks = {} and training.accumulate = {}: pipelining cuts each batch into micro-batches itself (with accumulation's numbers); keep one of them",
                self.training.pipeline_chunks,
                self.training.accumulate
            );
        }
        if let Some(c) = self.training.bucket_cap_mb
            && !(c.is_finite() && c >= 0.0)
        {
            bail!(
                "training.bucket_cap_mb (--bucket-cap-mb) must be a size in MiB, 0 or more (0: one bucket exchanged after backward), got {c}"
            );
        }
        if let Some(c) = self.training.clip_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            bail!("training.clip_grad_norm must be a positive number (the largest total gradient norm), got {c}");
        }
        if !["stop", "skip"].contains(&self.training.on_divergence.as_str()) {
            bail!(
                "training.on_divergence must be stop (end the run with an error) or skip (skip the step), got `{}`",
                self.training.on_divergence
            );
        }
        self.augment.validate(&self.data.source)?;
        if self.data.source != "embedded" && self.data.path.is_none() {
            bail!("data.source = \"{}\" needs data.path (or --data PATH)", self.data.source);
        }
        Ok(())
    }
}

/// `data.classes`: at least one name, none blank, none twice (the count is checked against the
/// data when it loads).
fn validate_class_names(names: &[String]) -> Result<()> {
    if names.is_empty() {
        bail!(
            "data.classes is empty: name every class, label 0 first (`classes = [\"cat\", \"dog\"]`), or leave the key out"
        );
    }
    if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
        bail!("data.classes[{i}] is blank: every class needs a name");
    }
    for (j, name) in names.iter().enumerate() {
        if let Some(i) = names[..j].iter().position(|n| n == name) {
            bail!("data.classes names `{name}` twice (classes {i} and {j}): each class needs its own name");
        }
    }
    Ok(())
}

/// A loss error as the run file's key names it (`loss.weight must be …`); others unchanged.
pub fn loss_error(e: strata_nn::Error) -> anyhow::Error {
    match e {
        strata_nn::Error::InvalidOption { owner: "loss", key, value, expected } => {
            anyhow::anyhow!("loss.{key} must be {expected}, got {value}")
        }
        e => anyhow::Error::new(e),
    }
}

#[cfg(test)]
mod tests;
