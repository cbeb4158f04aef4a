//! Setting a run up: the run file and its overrides (and what `--resume` may change), the model,
//! the thread pool, the data, the memory check, the optimizer.

use super::args::*;
use crate::check::{Verdict, load_or_report, report_errors};
use crate::checkpoint::{self, Meta};
use crate::config::{OPTIMIZER_NAMES, RunConfig, loss_error};
use crate::data_setup::{Prepared, prepare};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use strata_core::{ConvAlgorithm, DType, Tensor, manual_seed};
use strata_data::{BatchSize, DataLoader, Dataset};
use strata_nn::check::error::ShapeErrorKind;
use strata_nn::check::{SymShape, check_spec};
use strata_nn::model_file::parse_model_at;
use strata_nn::summary::group_digits;
use strata_nn::{
    Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, Loss, ModelSpec, Module, Optimizer, RMSprop, RMSpropConfig, SGD,
    SgdConfig, SimpleNN, Summary,
};

/// The run's resolved configuration and where it came from.
pub(super) struct Setup {
    pub(super) config: RunConfig,
    pub(super) spec: ModelSpec,
    /// Where the model came from, for the console.
    pub(super) model_source: Option<String>,
    pub(super) out: Option<PathBuf>,
    pub(super) resume: Option<(PathBuf, strata_nn::StateDict, strata_nn::StateDict, Meta)>,
}

/// The config as a run directory's `config.toml` stores it, so that `strata train
/// RUN_DIR/config.toml` runs it again as is: the model is the `model.toml` beside it, data paths
/// are absolute, and the output goes to a new directory (`runs/config` unless `--out` says).
pub(super) fn rerunnable(config: &RunConfig) -> RunConfig {
    let mut c = config.clone();
    c.model = Some(toml::Value::String("model.toml".into()));
    c.training.out = None;
    for p in [&mut c.data.path, &mut c.data.test_path, &mut c.training.init].into_iter().flatten() {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    }
    c
}

/// The model of a run: `--model`, the run file's `model` (path or inline table), or SimpleNN.
pub(super) fn model_spec(args: &TrainArgs, config: &RunConfig) -> Result<Option<ModelSpec>> {
    let from_file = |p: &Path| load_or_report(p);
    if let Some(p) = &args.model {
        return Ok(from_file(p));
    }
    match (&config.model, &args.run) {
        (Some(toml::Value::String(p)), run) => {
            let base = run.as_ref().and_then(|r| r.parent()).unwrap_or(Path::new(""));
            Ok(from_file(&base.join(p)))
        }
        (Some(toml::Value::Table(_)), Some(run)) => {
            let text = std::fs::read_to_string(run)?;
            let name = run.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            match parse_model_at(&text, &run.display().to_string(), &name, Some("model")) {
                Ok(spec) => Ok(spec),
                Err(errors) => {
                    eprintln!("{errors}");
                    Ok(None)
                }
            }
        }
        (Some(_), _) => bail!("`model` must be a path to a model file or a [model] table"),
        (None, _) => {
            let spec =
                ModelSpec::from_module("SimpleNN", &SimpleNN::new()?).expect("SimpleNN has a spec").input(&[784]);
            Ok(Some(spec))
        }
    }
}

/// Sets up the ops' thread pool, all cores unless the config says otherwise, with this (the
/// training loop's) thread as one of its workers. Must come before the first op: building a
/// model or a data set may already run in parallel.
pub(super) fn init_threads(threads: Option<usize>) -> Result<()> {
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1);
    match strata_core::set_num_threads(n) {
        Ok(()) => Ok(()),
        // Already set up (a second run in one process): fine if it has the size asked for.
        Err(_) if strata_core::get_num_threads() == n => Ok(()),
        Err(e) => Err(e).context("setting up the thread pool"),
    }
}

/// Why `key` of the run config cannot change on `--resume`, or `None` when it can: what the
/// rest of the run can honour exactly as asked (its length, the optimizer's hyper-parameters,
/// the schedule, logging, threads, where the same data now lives) is applied; what would make it
/// a different run than the one checkpointed (the batches, the seed, the model, the optimizer
/// state's kind) is refused.
pub(super) fn fixed_on_resume(key: &str, base: &RunConfig) -> Option<String> {
    let applied = [
        "training.epochs",
        "training.threads",
        "training.checkpoint_every",
        "training.keep_last",
        "training.log_every",
        // What a diverging run is resumed with: clipping, or skipping the bad steps.
        "training.clip_grad_norm",
        "training.on_divergence",
        // The micro-batches change nothing in the optimizer state or the batches (nor does the
        // number of MPI processes).
        "training.accumulate",
        // Pipelining changes when the stages compute, not what (accumulation's numbers).
        "training.pipeline_chunks",
        // Where BatchNorm's statistics come from changes no state's shape (as the processes).
        "training.sync_bn",
        // Buckets change how the gradient travels, not its value.
        "training.bucket_cap_mb",
        // Checkpoints are f32 whatever the products' precision: a run may switch either way.
        "training.precision",
        // Checkpoints hold host data: a run resumes on any device (f32 results agree to rounding).
        "training.device",
        // A device map places the same parameters elsewhere.
        "training.device_map",
        "optimizer.lr",
        "optimizer.momentum",
        "optimizer.dampening",
        "optimizer.nesterov",
        "optimizer.weight_decay",
        "optimizer.betas",
        "optimizer.eps",
        "optimizer.alpha",
        "optimizer.lr_decay",
        "data.path",
        "data.test_path",
        // Early stopping's count goes on across a resume (its state is in the checkpoint): a new
        // patience applies to it. (Another monitor or min_delta starts the count over, as the
        // figures are not comparable: refused below, as a change the run would not honour.)
        "early_stopping.patience",
    ];
    if applied.contains(&key) || key.starts_with("schedule.") {
        return None;
    }
    Some(match key {
        "optimizer.name" | "optimizer.amsgrad" | "optimizer.centered" => format!(
            "the optimizer state in the checkpoint is {}'s{}",
            base.optimizer.name,
            match base.optimizer.name.as_str() {
                "adam" | "adamw" if base.optimizer.amsgrad => " with AMSGrad",
                "rmsprop" if base.optimizer.centered => " (centered)",
                _ => "",
            }
        ),
        "optimizer.initial_accumulator_value" => {
            "it sets where the accumulators start, and the checkpoint's hold the sums so far".into()
        }
        k if k.starts_with("loss.") => {
            format!("the run so far minimised {}, and its model was trained against it", base.loss.describe())
        }
        "training.batch_size" => "every remaining batch would hold other samples than an uninterrupted run's".into(),
        "training.seed" => {
            "the seed fixed the initial weights, the validation split and the order of every epoch's batches".into()
        }
        "training.dtype" | "training.conv_algorithm" => "the model in the checkpoint was built with it".into(),
        "training.out" => "--resume continues a run in its own directory".into(),
        "model" => "the model is the checkpoint's".into(),
        k if k.starts_with("data.") => "the training data would differ from the run's so far".into(),
        k if k.starts_with("augment.") => "the augmentation fixed what every remaining batch holds".into(),
        // A key added later and not sorted into either kind yet: refused, to be safe.
        _ => "strata does not carry a change of it into a run under way".into(),
    })
}

/// `spec` with `training.device_map` (`--device-map 'encoder=gpu:0,head=cpu'`) over the model
/// file's placement.
fn with_device_map(spec: ModelSpec, config: &RunConfig) -> Result<ModelSpec> {
    let Some(map) = &config.training.device_map else { return Ok(spec) };
    let map = strata_nn::check::edit::parse_device_map(map).map_err(|e| anyhow::anyhow!("--device-map: {e}"))?;
    spec.with_device_map(&map).context("--device-map")
}

/// The flag that sets a run-config key, for messages.
pub(super) fn flag_of(key: &str) -> String {
    let flag = match key {
        "training.epochs" => "--epochs",
        "training.batch_size" => "--batch-size",
        "optimizer.lr" => "--lr",
        "optimizer.momentum" => "--momentum",
        "training.seed" => "--seed",
        "training.out" => "--out",
        "training.init" => "--init",
        "training.threads" => "--threads",
        "training.checkpoint_every" => "--checkpoint-every",
        "training.dtype" => "--dtype",
        "training.conv_algorithm" => "--conv-algorithm",
        "training.device" => "--device",
        "training.device_map" => "--device-map",
        "training.accumulate" => "--accumulate",
        "training.pipeline_chunks" => "--pipeline-chunks",
        "training.sync_bn" => "--sync-bn",
        "training.bucket_cap_mb" => "--bucket-cap-mb",
        "training.precision" => "--precision",
        "data.source" | "data.path" => "--data",
        _ => return format!("--set {key}=…"),
    };
    flag.to_string()
}

/// A config as `section.key → value`.
pub(super) fn flatten(config: &RunConfig) -> Result<std::collections::BTreeMap<String, toml::Value>> {
    pub(super) fn walk(prefix: &str, table: &toml::Table, out: &mut std::collections::BTreeMap<String, toml::Value>) {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) if key != "model" => walk(&key, t, out),
                v => {
                    out.insert(key, v.clone());
                }
            }
        }
    }
    let mut out = Default::default();
    walk("", &toml::Table::try_from(config).context("encoding the run config")?, &mut out);
    Ok(out)
}

/// The value of a key that written configs leave out when it holds its default (so that
/// `--precision f32` on resume reads `"bf16" → "f32" (the default)`, not "(unset)"); `None` for
/// the keys that are absent because unset (no clipping, no early stopping).
fn omitted_default(key: &str) -> Option<&'static str> {
    match key {
        "training.precision" => Some("\"f32\""),
        "training.accumulate" | "training.pipeline_chunks" => Some("1"),
        "training.sync_bn" => Some("false"),
        _ => None,
    }
}

/// The config of a resumed run: the checkpoint's, with the command line's overrides applied
/// where the rest of the run can honour them (each one said on stderr) and refused where they
/// would break it ([`fixed_on_resume`]). Never ignored.
pub(super) fn resume_config(
    base: &RunConfig,
    args: &TrainArgs,
    run: &Path,
    checkpoint: &Path,
    meta: &Meta,
) -> Result<RunConfig> {
    if let Some(file) = &args.run {
        bail!(
            "--resume {}: the run file {} cannot be given with --resume: the run's config is the one in its checkpoint {}\nfix: drop {}, and give the keys to change as flags (`--lr 0.001`, `--epochs 20`, `--set schedule.name=cosine`)",
            run.display(),
            file.display(),
            checkpoint.display(),
            file.display()
        );
    }
    if let Some(model) = &args.model {
        bail!(
            "--resume {}: --model {} cannot be given with --resume: the model is the one in its checkpoint {}\nfix: drop --model, or train it as a new run (`strata train --model {} --out NEW_DIR`)",
            run.display(),
            model.display(),
            checkpoint.display(),
            model.display()
        );
    }
    let config = base.with_overrides(&overrides(args)?)?;
    config.validate()?;
    let (old, new) = (flatten(base)?, flatten(&config)?);
    let show = |v: Option<&toml::Value>, key: &str| match (v, omitted_default(key)) {
        (Some(v), _) => v.to_string(),
        (None, Some(d)) => format!("{d} (the default)"),
        (None, None) => "(unset)".to_string(),
    };
    let mut notes = vec![];
    for key in old.keys().chain(new.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (was, now) = (old.get(key), new.get(key));
        if was == now {
            continue;
        }
        if let Some(why) = fixed_on_resume(key, base) {
            let flag = flag_of(key);
            bail!(
                "--resume {}: {key} cannot change on resume: {flag} asks for {}, the checkpoint {} has {}; {why}, so the resumed run would not be the one checkpointed\nfix: drop {flag} to continue the run, or start a new run with it (`strata train … --out NEW_DIR`)",
                run.display(),
                show(now, key),
                checkpoint.display(),
                show(was, key)
            );
        }
        notes.push(format!(
            "overriding {key} {} → {} from the checkpoint {}",
            show(was, key),
            show(now, key),
            checkpoint.display()
        ));
    }
    let epochs = config.training.epochs;
    if epochs < meta.epoch || (epochs == meta.epoch && meta.batch > 0) {
        let need = meta.epoch + usize::from(meta.batch > 0);
        bail!(
            "--resume {}: training.epochs = {epochs} (--epochs) ends before the checkpoint {}, which is {} of epoch {}\nfix: give --epochs {need} or more",
            run.display(),
            checkpoint.display(),
            if meta.batch > 0 { format!("at batch {}", meta.batch) } else { "at the end".into() },
            if meta.batch > 0 { meta.epoch + 1 } else { meta.epoch },
        );
    }
    for note in notes {
        eprintln!("{note}");
    }
    Ok(config)
}

/// The checkpoint's position must be one that this training data and batch size reach: the
/// same data as when the run started gives `step = epoch × batches per epoch + batch`.
pub(super) fn check_resume_position(path: &Path, meta: &Meta, train: &Dataset, batch_size: BatchSize) -> Result<()> {
    let per_epoch = DataLoader::new(train, batch_size).num_batches();
    let expected = meta.epoch.checked_mul(per_epoch).and_then(|s| s.checked_add(meta.batch));
    if (meta.batch > 0 && meta.batch >= per_epoch) || expected != Some(meta.step) {
        bail!(
            "{}: metadata `strata.step` = {} (epoch {} batch {}) does not fit the training data, which now gives {per_epoch} batches of {} per epoch ({} samples): the data changed since the run started\nfix: resume with the data the run was started with",
            path.display(),
            meta.step,
            meta.epoch,
            meta.batch,
            batch_size.resolve(train.len()),
            train.len()
        );
    }
    Ok(())
}

pub(super) fn setup(args: &TrainArgs) -> Result<Option<Setup>> {
    if let (Some(r), Some(i)) = (&args.resume, &args.init) {
        bail!(
            "--init {} cannot be given with --resume {}: a resumed run continues from its checkpoint's weights\nfix: drop --init to continue the run, or drop --resume to start a new run from {}",
            i.display(),
            r.display(),
            i.display()
        );
    }
    if let Some(r) = &args.resume {
        if !r.exists() {
            bail!(
                "--resume {}: no such run directory or checkpoint file\nfix: give the run's directory (its --out) or one of its checkpoints/*.safetensors",
                r.display()
            );
        }
        // A checkpoint file continues its run in its run directory, RUN_DIR/checkpoints/FILE:
        // one anywhere else has no run directory to write into.
        if r.is_file() && r.parent().and_then(Path::file_name).is_none_or(|n| n != "checkpoints") {
            bail!(
                "--resume {}: the checkpoint is not in a run directory's checkpoints/ folder, and a resumed run continues writing into its run directory (metrics.jsonl, checkpoints, model.safetensors)\nfix: give the run directory (--resume RUN_DIR), or start a new run from its weights (`strata train … --init {} --out NEW_DIR`)",
                r.display(),
                r.display()
            );
        }
        let out = if r.is_dir() {
            Some(r.clone())
        } else {
            r.parent()
                .and_then(Path::parent)
                .map(|d| if d.as_os_str().is_empty() { PathBuf::from(".") } else { d.to_path_buf() })
        };
        if let Some(dir) = &out {
            super::run_dir::check_writable(dir, true)?;
        }
        // Locked before any checkpoint is read: no other process may be writing or pruning them.
        if let Some(dir) = out.as_deref().filter(|d| d.is_dir() && super::dist::is_lead()) {
            crate::run_lock::acquire(dir)?;
        }
        let (path, params, optim, meta) = checkpoint::load_for_resume(r)?;
        let base: RunConfig = toml::from_str(&meta.config)
            .with_context(|| format!("{}: the run config in its metadata (`strata.config`)", path.display()))?;
        let config = resume_config(&base, args, r, &path, &meta)?;
        init_threads(config.training.threads)?;
        let spec =
            strata_nn::model_file::parse_model(&meta.model, &format!("{} (its model)", path.display()), "model")?;
        let spec = with_device_map(spec, &config)?;
        return Ok(Some(Setup { config, spec, model_source: None, out, resume: Some((path, params, optim, meta)) }));
    }
    let base = match &args.run {
        Some(p) => RunConfig::load(p)?,
        None => RunConfig::default(),
    };
    let config = base.with_overrides(&overrides(args)?)?;
    config.validate()?;
    init_threads(config.training.threads)?;
    let Some(mut spec) = model_spec(args, &config)? else { return Ok(None) };
    // The run file's (or flag's) precision and algorithm choice override the model file's.
    if let Some(d) = &config.training.dtype {
        spec.dtype = if d == "f64" { DType::F64 } else { DType::F32 };
    }
    if let Some(a) = &config.training.conv_algorithm {
        spec.conv_algorithm = ConvAlgorithm::from_name(a).expect("validated");
    }
    let spec = with_device_map(spec, &config)?;
    let model_source = match (&args.model, &config.model, &args.run) {
        (Some(p), _, _) => Some(p.display().to_string()),
        (None, Some(toml::Value::String(p)), run) => {
            Some(run.as_ref().and_then(|r| r.parent()).unwrap_or(Path::new("")).join(p).display().to_string())
        }
        (None, Some(_), Some(run)) => Some(run.display().to_string()),
        _ => None,
    };
    let out = config
        .training
        .out
        .clone()
        .or_else(|| args.run.as_ref().map(|r| PathBuf::from("runs").join(r.file_stem().unwrap_or_default())));
    Ok(Some(Setup { config, spec, model_source, out, resume: None }))
}

/// Everything a run needs before its first step.
pub(crate) struct Built {
    pub config: RunConfig,
    pub(super) model_source: Option<String>,
    pub(super) out: Option<PathBuf>,
    pub(super) resume: Option<(PathBuf, strata_nn::StateDict, strata_nn::StateDict, Meta)>,
    pub data: Prepared,
    /// The training samples' augmentation (`[augment]`), for data normalised already; `None`: off.
    pub augment: Option<strata_data::Augment>,
    /// The shape one sample takes on its way into the model.
    pub sample: Vec<usize>,
    pub resolved: ModelSpec,
    pub model: strata_nn::Sequential,
    pub(super) params_count: usize,
    pub optimizer: Box<dyn Optimizer>,
    /// The configured loss (`[loss]`), for the model's output classes, on its output's device.
    pub loss: Box<dyn Loss>,
    /// Where the model lives and the batches go.
    pub device: strata_core::Device,
}

/// Resolves the config, loads the data, checks the model against it (input and classes) and
/// instantiates model and optimizer. `None` when problems were found and printed.
pub(crate) fn build(args: &TrainArgs) -> Result<Option<Built>> {
    let Some(Setup { config, spec, model_source, out, resume }) = setup(args)? else { return Ok(None) };
    let t = &config.training;
    // strata's datasets hold float features: a model over token ids cannot take them.
    if !spec.input_dtype.is_float() {
        bail!(
            "the model `{}` takes {} token ids (input_dtype), but the training data (images or CSV columns) are float features; train it from Rust on token data, or remove input_dtype if it takes features",
            spec.name,
            strata_nn::check::dtype_name(spec.input_dtype)
        );
    }
    // The placement needs no data: a device the machine lacks, or merged outputs on two
    // devices, stop the run before the data loads (when the model file gives its input).
    if spec.is_placed() && spec.input.is_some() {
        let report = check_spec(&spec, None, None);
        let placement = |e: &strata_nn::check::error::ShapeError| {
            matches!(e.kind, ShapeErrorKind::NoSuchDevice { .. } | ShapeErrorKind::DevicesDiffer { .. })
        };
        if report.errors.iter().any(placement) {
            report_errors(&report, &spec.name);
            return Ok(None);
        }
    }
    let data = prepare(&config.data, t.seed)?;
    let augment = config.augment.for_data(&data.train.sample_shape, &data.mean, &data.std)?;

    // The model must fit the data before anything is allocated: its input and its classes.
    let sample = spec.input.clone().unwrap_or_else(|| data.train.sample_shape.clone());
    if sample.iter().product::<usize>() != data.train.sample_len() {
        // An image folder can be read to fit the model instead: its channels, its size.
        let read_as = match (config.data.source.as_str(), sample.as_slice(), data.train.sample_shape.as_slice()) {
            ("images", &[c, h, w], &[dc, dh, dw]) if (c == 1 || c == 3) && (c, h, w) != (dc, dh, dw) => {
                let mut keys = vec![];
                if c != dc {
                    keys.push(format!("channels = {c}"));
                }
                if (h, w) != (dh, dw) {
                    keys.push(format!("size = [{h}, {w}]"));
                }
                format!(", or read the images as the model takes them: {} under [data]", keys.join(" and "))
            }
            _ => String::new(),
        };
        bail!(
            "the model takes samples of shape {sample:?} ({} values), but the data's samples are {:?} ({} values); set `input` in the model file to {:?}{read_as}",
            sample.iter().product::<usize>(),
            data.train.sample_shape,
            data.train.sample_len(),
            data.train.sample_shape
        );
    }
    let report = check_spec(&spec, Some(&SymShape::batched(&sample)), Some(data.train.num_classes));
    if !report.errors.is_empty() {
        report_errors(&report, &spec.name);
        return Ok(None);
    }
    let mut resolved = report.resolved.clone();
    // Checkpoints and run directories store the model with the input shape it was trained on,
    // so `eval` and `predict` can rebuild it when the model file left `input` out.
    resolved.input = Some(sample.clone());
    let device = crate::devices::resolve(t.device.as_deref(), resolved.dtype)?;
    if t.precision == "bf16" {
        // bf16 autocast rounds f32 products on the CPU; anything else would silently be f32.
        if resolved.dtype != strata_core::DType::F32 {
            bail!(
                "training.precision = \"bf16\" (--precision) mixes bf16 into an f32 model, but `{}` is {}: use --dtype f32, or drop --precision bf16",
                resolved.name,
                strata_nn::check::dtype_name(resolved.dtype)
            );
        }
        if device != strata_core::Device::Cpu || resolved.is_placed() {
            bail!(
                "training.precision = \"bf16\" (--precision) runs on the CPU's bf16 instructions, and this run places the model on {}: train on the CPU (--device cpu, no device map), or drop --precision bf16",
                if resolved.is_placed() { "several devices".to_string() } else { device.to_string() }
            );
        }
    }
    if device == strata_core::Device::Cpu {
        // A batch larger than the training set is one batch of all of it (what the loader gives).
        let n = data.train.len();
        fits_in_memory(&report, resolved.dtype, t.batch_size.resolve(n).min(n))?;
    }
    manual_seed(t.seed);
    // Built (and initialised, from the seed) on the CPU, then moved: the same initial weights
    // on every device. A placed model moves each layer to its own device (`device` as the
    // default for the layers placed nowhere).
    let model = if resolved.is_placed() {
        ModelSpec { device: resolved.device.or(Some(device)), ..resolved.clone() }.build()?
    } else {
        let model = resolved.build()?;
        model.to_device(device)?;
        model
    };
    // `--init`: given weights over the fresh ones, checked against the model first. A resumed
    // run has its checkpoint's weights instead.
    if let (Some(path), None) = (&t.init, &resume) {
        crate::convert::init_model(&model, path)?;
    }
    let params_count = Summary::from_report(&report, 1).total_params;
    let optimizer = make_optimizer(&config, model.parameters())?;
    let loss = config
        .loss
        .build(data.train.num_classes, resolved.dtype, resolved.output_device(device))
        .map_err(loss_error)?;
    Ok(Some(Built {
        config,
        model_source,
        out,
        resume,
        data,
        augment,
        sample,
        resolved,
        model,
        params_count,
        optimizer,
        loss,
        device,
    }))
}

/// Refuses, before anything is allocated, a run whose parameters (with gradients and optimizer
/// state) and activations at `batch` samples (kept for backward, and their gradients: twice the
/// outputs) exceed this machine's memory, naming the sizes and the largest batch that fits.
pub(super) fn fits_in_memory(report: &strata_nn::CheckReport, dtype: DType, batch: usize) -> Result<()> {
    let Some(memory) = strata_core::Device::Cpu.total_memory() else { return Ok(()) };
    let summary = Summary::from_report(report, 1);
    let elem = dtype.size_in_bytes() as u128;
    let params =
        (summary.total_params as u128 + summary.total_non_trainable as u128) * elem * strata_nn::check::TRAINING_COPIES;
    // The summary counts activations in f32 bytes per sample.
    let per_sample = summary.total_activation_bytes as u128 / 4 * elem * 2;
    let need = params.saturating_add(per_sample.saturating_mul(batch as u128));
    if need > u128::from(memory) {
        let fits = u128::from(memory).saturating_sub(params) / per_sample.max(1);
        let largest = summary
            .rows
            .iter()
            .filter(|r| !r.is_block)
            .rev() // the first of equals: a Flatten after a conv shares its buffer
            .max_by_key(|r| r.activation_bytes)
            .map(|r| {
                format!(
                    "; the largest output is `{}`'s, {} per sample",
                    r.path,
                    human_bytes(r.activation_bytes as u128 / 4 * elem)
                )
            })
            .unwrap_or_default();
        bail!(
            "the run needs about {} of memory at batch size {batch} ({} for the parameters with gradients and optimizer state, {} per sample for activations and their gradients{largest}), more than this machine's {}; {}",
            human_bytes(need),
            human_bytes(params),
            human_bytes(per_sample),
            human_bytes(u128::from(memory)),
            if fits >= 1 {
                format!("use --batch-size {} or less", fits.min(u128::from(u32::MAX)))
            } else {
                "make the model smaller".into()
            }
        );
    }
    Ok(())
}

/// Bytes for messages (`usize` saturates, which the summary shows as "more than").
pub(super) fn human_bytes(b: u128) -> String {
    strata_nn::summary::human_bytes(usize::try_from(b).unwrap_or(usize::MAX))
}

/// `--compute-stats`: the per-channel mean and standard deviation of the training set, as raw
/// values in [0, 1] before any normalisation, ready for `data.mean` / `data.std`.
pub(super) fn compute_stats(args: &TrainArgs) -> Result<Verdict> {
    let Some(Setup { config, .. }) = setup(args)? else { return Ok(Verdict::Failed) };
    let mut data_cfg = config.data.clone();
    // Identity normalisation, so the statistics are those of the raw data.
    (data_cfg.mean, data_cfg.std) = (Some(vec![0.0]), Some(vec![1.0]));
    let data = prepare(&data_cfg, config.training.seed)?;
    let (mean, std) = strata_data::compute_stats(&data.train)?;
    println!("statistics of the {} training samples of {}:", group_digits(data.train.len()), data.description);
    println!("[data]\nmean = {mean:?}\nstd = {std:?}");
    Ok(Verdict::Ok)
}

/// The optimizer named in the config (validated: an unknown name is an error here too, never a
/// silent SGD).
pub fn make_optimizer(config: &RunConfig, params: Vec<Tensor>) -> Result<Box<dyn Optimizer>> {
    let o = &config.optimizer;
    let adam = AdamConfig {
        lr: o.lr,
        betas: (o.betas[0], o.betas[1]),
        eps: o.resolved_eps(),
        weight_decay: o.weight_decay,
        amsgrad: o.amsgrad,
    };
    Ok(match o.name.as_str() {
        "sgd" => Box::new(SGD::with_config(
            params,
            SgdConfig {
                lr: o.lr,
                momentum: o.resolved_momentum(),
                dampening: o.dampening,
                nesterov: o.nesterov,
                weight_decay: o.weight_decay,
            },
        )?),
        "adam" => Box::new(Adam::with_config(params, adam)?),
        "adamw" => Box::new(AdamW::with_config(params, adam)?),
        "rmsprop" => Box::new(RMSprop::with_config(
            params,
            RMSpropConfig {
                lr: o.lr,
                alpha: o.alpha,
                eps: o.resolved_eps(),
                weight_decay: o.weight_decay,
                momentum: o.resolved_momentum(),
                centered: o.centered,
            },
        )?),
        "adagrad" => Box::new(Adagrad::with_config(
            params,
            AdagradConfig {
                lr: o.lr,
                lr_decay: o.lr_decay,
                weight_decay: o.weight_decay,
                initial_accumulator_value: o.initial_accumulator_value,
                eps: o.resolved_eps(),
            },
        )?),
        other => bail!("optimizer.name must be one of {}, got `{other}`", OPTIMIZER_NAMES.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name builds its own optimizer (its state after a step says which), never a fallback.
    #[test]
    fn each_optimizer_name_builds_that_optimizer() {
        for (name, state) in [
            ("sgd", "momentum_buffer.0"),
            ("adam", "exp_avg.0"),
            ("adamw", "exp_avg.0"),
            ("rmsprop", "square_avg.0"),
            ("adagrad", "sum.0"),
        ] {
            let mut config = RunConfig::default();
            config.optimizer.name = name.into();
            let p = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap().requires_grad_().unwrap();
            let mut opt = make_optimizer(&config, vec![p.clone()]).unwrap();
            p.mul(&p).unwrap().sum_all().unwrap().backward().unwrap();
            opt.step().unwrap();
            assert!(opt.state_dict().get(state).is_some(), "{name}: {:?}", opt.state_dict().keys().collect::<Vec<_>>());
        }
        let mut config = RunConfig::default();
        config.optimizer.name = "lion".into();
        let e = make_optimizer(&config, vec![]).err().unwrap().to_string();
        assert_eq!(e, "optimizer.name must be one of sgd, adam, adamw, rmsprop, adagrad, got `lion`");
    }
}
