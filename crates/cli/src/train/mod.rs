//! `strata train`: the main job. With no arguments it trains PyTorch's SimpleNN on the embedded
//! MNIST subset (SGD lr 0.01 momentum 0.9, batch 64, 10 epochs). With a run file (and/or flags)
//! it trains any model file on any supported data, logs metrics (`metrics.jsonl`, TensorBoard
//! events), writes checkpoints, resumes bit-identically, and stops cleanly on Ctrl-C.
//!
//! The parts: `args.rs` (flags and overrides), `setup.rs` (config, model, data, memory, optimizer),
//! `step.rs` (input layout, divergence, evaluation), `logger.rs` (console, logs, checkpoints); the
//! loop is here.

mod args;
pub(crate) mod dist;
mod logger;
mod run_dir;
mod setup;
mod step;

pub use args::TrainArgs;
pub(crate) use setup::{Built, build};
pub use step::InputLayout;

use self::args::*;
use self::logger::*;
use self::setup::*;
use self::step::*;
use crate::check::Verdict;
use crate::checkpoint::Meta;
use anyhow::{Context, Result, bail};
use std::sync::atomic::Ordering;
use strata_core::Precision;
use strata_nn::Module;
use strata_nn::model_file::to_toml;
use strata_nn::state_dict::atomic_write;
use strata_nn::summary::group_digits;
use strata_train::{Checkpointing, Decay, EarlyStopping, OnDivergence, Outcome, ProgressBar, Schedule, Trainer};

/// The run file's schedule as strata-train's.
pub(crate) fn schedule_of(c: &crate::config::ScheduleConfig) -> Schedule {
    let s = match c.name.as_str() {
        "step" => Schedule::step(c.step_size, c.gamma),
        "cosine" => Schedule::cosine(c.min_lr),
        "one_cycle" => Schedule::one_cycle(c.pct_start),
        _ => Schedule { decay: Decay::Constant, warmup_epochs: 0.0 },
    };
    s.warmup(c.warmup_epochs)
}

/// Runs the training job: alone, or as one rank of a data-parallel run when `mpirun` started
/// the process (the `mpi` feature).
pub fn run(args: &TrainArgs) -> Result<Verdict> {
    let world = dist::join()?;
    match world.as_ref() {
        None => run_in(args, None),
        // An error on one rank ends all of them, naming it, rather than leaving them waiting.
        Some(w) => run_in(args, Some(w)).or_else(|e| dist::fail(w, &e)),
    }
}

/// The training job, in `world` when there is one.
fn run_in(args: &TrainArgs, world: Option<&dist::World>) -> Result<Verdict> {
    let lead = dist::is_lead();
    let output = if !lead {
        Output::Quiet
    } else if args.json {
        Output::Json
    } else if args.quiet {
        Output::Quiet
    } else {
        Output::Human
    };
    if args.compute_stats {
        return compute_stats(args);
    }
    // --save writes after the last epoch: a path it cannot write is refused now, not after the run.
    if let Some(path) = &args.save {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            bail!(
                "--save {}: its directory {} does not exist; create it first, or choose another path",
                path.display(),
                dir.display()
            );
        }
        if path.is_dir() {
            bail!(
                "--save {}: a directory, not a file; give a file path (e.g. --save {})",
                path.display(),
                path.join("model.safetensors").display()
            );
        }
        // As `export`, `convert` and `import`: nothing already on disk is replaced unasked.
        if path.exists() && !args.force {
            bail!("--save {}: the file exists; pass --force to replace it, or choose another --save", path.display());
        }
    }
    let Some(Built {
        config,
        model_source,
        out,
        resume,
        data,
        sample,
        resolved,
        model,
        params_count,
        mut optimizer,
        loss: criterion,
        augment,
        device,
    }) = build(args)?
    else {
        return Ok(Verdict::Failed);
    };
    let t = &config.training;
    // Nothing the run reads is written over, --force or not: its run directory's files and
    // --save against its run file, model file, data, --init weights and resumed checkpoint.
    {
        let model_file = args.model.clone().or_else(|| match (&config.model, &args.run) {
            (Some(toml::Value::String(p)), run) => {
                Some(run.as_ref().and_then(|r| r.parent()).unwrap_or(std::path::Path::new("")).join(p))
            }
            _ => None,
        });
        let inputs: Vec<(&str, &std::path::Path)> = [
            ("the run file", args.run.as_deref()),
            ("the model file", model_file.as_deref()),
            ("the training data", config.data.path.as_deref()),
            ("the test data", config.data.test_path.as_deref()),
            ("the --init weights", t.init.as_deref().filter(|_| resume.is_none())),
            ("the checkpoint it resumes", resume.as_ref().map(|r| r.0.as_path())),
        ]
        .into_iter()
        .filter_map(|(what, p)| p.map(|p| (what, p)))
        .collect();
        let save = args.save.as_deref().filter(|_| lead);
        let run_dir = out.as_deref().filter(|_| lead);
        // A directory strata did not make first (the message that says what it is), then the
        // inputs in one that it did.
        if let Some(dir) = run_dir {
            run_dir::check_writable(dir, resume.is_some())?;
        }
        run_dir::refuse_overwriting_inputs(run_dir, save, &inputs)?;
    }
    let bucket_cap_mb = t.bucket_cap_mb.unwrap_or(strata_train::parallel::DEFAULT_BUCKET_CAP_MB);
    // Only rank 0 writes the run directory; the others train the same model beside it.
    let out = out.filter(|_| lead);
    if let Some(w) = world {
        let sets: Vec<&strata_data::Dataset> = [&data.train, &data.val].into_iter().chain(data.test.as_ref()).collect();
        dist::check_same(w, dist::run_hash(&toml::to_string(&config)?, &sets))?;
    }

    // Where the run starts: from scratch, or from a checkpoint.
    let mut start = Meta::default();
    if let Some((path, params, optim, meta)) = &resume {
        check_resume_position(path, meta, &data.train, t.batch_size)?;
        let (what, header) =
            (format!("loading {}", path.display()), format!("{}: its tensors do not fit its model:", path.display()));
        crate::convert::load_whole(&model, params, &what, &header, crate::convert::CHECKPOINT_MISMATCH_FIX)?;
        optimizer
            .load_state_dict(optim)
            .with_context(|| format!("loading the optimizer state of {}", path.display()))?;
        model
            .load_extra_state(&meta.extra_state)
            .with_context(|| format!("loading the layers' state (Dropout masks) of {}", path.display()))?;
        start = meta.clone();
    }

    // A run resumed at its end has nothing to train: say so, and how to train it further,
    // instead of opening its directory, writing a TensorBoard log and a model file for no step.
    if let Some((path, ..)) = &resume
        && start.epoch == t.epochs
        && start.batch == 0
    {
        if lead {
            let dir = out.as_deref().unwrap_or(path);
            eprintln!(
                "{}: the run is already finished: {} is the end of its epoch {} of {} (step {}), so there is nothing to train\nto train it further, give more epochs: strata train --resume {} --epochs {}",
                dir.display(),
                path.display(),
                start.epoch,
                t.epochs,
                start.step,
                dir.display(),
                t.epochs + 1
            );
        }
        return Ok(Verdict::Ok);
    }
    let batch_size = t.batch_size.resolve(data.train.len());
    let layout = InputLayout::of(&resolved, &sample).on(device).labels_on(resolved.output_device(device));
    let mut trainer = Trainer::new(&model, optimizer)
        .boxed_loss(criterion)
        .augment(augment)
        .schedule(schedule_of(&config.schedule))
        .epochs(t.epochs)
        .batch_size(t.batch_size)
        .seed(t.seed)
        .layout(layout)
        .log_every(t.log_every)
        .accumulate(t.accumulate)
        .pipeline_chunks(t.pipeline_chunks)
        .sync_bn(t.sync_bn)
        .bucket_cap_mb(bucket_cap_mb)
        .precision(Precision::parse(&t.precision).expect("validated"))
        .on_divergence(if t.on_divergence == "skip" { OnDivergence::Skip } else { OnDivergence::Stop })
        .resume(&start);
    if let Some(max) = t.clip_grad_norm {
        trainer = trainer.clip_grad_norm(max);
    }
    if let Some(w) = world {
        trainer = trainer.distributed(dist::reducer(w));
    }
    // The base rate is the run file's (a resumed optimizer's state holds the last step's rate).
    trainer = trainer.base_lr(config.optimizer.lr);
    let mut early = config.early_stopping.as_ref().map(|e| {
        EarlyStopping::new(&e.monitor).patience(e.patience).min_delta(e.min_delta).restore_best(e.restore_best)
    });
    if early.as_ref().is_some_and(|e| e.monitors_validation()) && data.val.is_empty() {
        bail!(
            "early_stopping.monitor = \"{}\" needs held-out data, and this run has none (data.validation = 0?); monitor train_loss, or hold some samples out (data.validation = N)",
            config.early_stopping.as_ref().map_or("", |e| e.monitor.as_str())
        );
    }
    let val = Some(&data.val).filter(|v| !v.is_empty());
    // The trainer's own checks of its options against the model and the data (micro-batches
    // that a batch cannot fill, pipelining a model that is not a chain, …) before the run
    // directory is made or written: a run refused for its options leaves nothing on disk.
    trainer.check(&data.train, val)?;

    let mut logger = Logger::open(out.as_deref(), output, resume.is_some(), start.step)?;
    if let Some(dir) = &out {
        atomic_write(&dir.join("config.toml"), toml::to_string(&rerunnable(&config))?.as_bytes())
            .context("writing config.toml")?;
        atomic_write(&dir.join("model.toml"), to_toml(&resolved).as_bytes()).context("writing model.toml")?;
    }
    let meta_base = Meta {
        config: toml::to_string(&config)?,
        model: to_toml(&resolved),
        mean: data.mean.clone(),
        std: data.std.clone(),
        classes: data.classes.clone(),
        ..Meta::default()
    };

    let title = match &model_source {
        Some(src) => format!("{} from {src} ({} parameters, shape-checked)", resolved.name, group_digits(params_count)),
        None => format!("{} ({} parameters)", resolved.name, group_digits(params_count)),
    };
    logger.header(&title, resolved.dtype, &data, &config, batch_size, resume.as_ref().map(|r| r.0.as_path()));
    if t.pipeline_chunks > 1 {
        logger.note(&pipeline_note(&model, t.pipeline_chunks, device));
    }
    if let (Some(init), None) = (&t.init, &resume) {
        logger.note(&format!("  initial weights: {} (checked against the model)", init.display()));
    }
    if let Some(w) = world {
        let (_, n) = dist::place(w);
        let sizes = strata_train::parallel::micro_batch_sizes(batch_size, n);
        logger.note(&format!(
            "data-parallel over {n} MPI processes: each computes {}–{} samples of every batch of {batch_size}",
            sizes.iter().min().unwrap_or(&0),
            sizes.iter().max().unwrap_or(&0)
        ));
    }
    {
        let flag = trainer.interrupt_flag();
        // Only the first handler installation can succeed in a process; tests call run() once.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }
    let mut checkpoints = out
        .as_ref()
        .map(|dir| Checkpointing::new(dir).every_steps(t.checkpoint_every).keep_last(t.keep_last).meta(meta_base));
    let mut bar = ProgressBar::new();
    let started = std::time::Instant::now();
    let history = {
        let mut callbacks: Vec<&mut dyn strata_train::Callback> = vec![&mut logger];
        // Before the checkpoints: the weights it restores are the ones the run ends with.
        if let Some(e) = &mut early {
            callbacks.push(e);
        }
        if output == Output::Human && lead {
            callbacks.push(&mut bar);
        }
        if let Some(c) = &mut checkpoints {
            callbacks.push(c);
        }
        trainer.fit_with(&data.train, val, &mut callbacks)
    };
    let history = match history {
        Ok(h) => h,
        Err(strata_train::Error::Diverged { epoch, step, batch, batches, report }) => {
            bail!("{}", divergence_message(epoch, step, batch, batches, &report, &config))
        }
        Err(strata_train::Error::AllStepsSkipped { epoch, skipped }) => bail!(
            "training diverged: every step of epoch {epoch} had a non-finite loss or gradient and was skipped ({skipped} skipped in all); \
             try a lower learning rate (--lr, now {}) or gradient clipping (training.clip_grad_norm = 1.0)",
            config.optimizer.lr
        ),
        Err(e) => return Err(e.into()),
    };
    let state = history.state;
    if let Some(w) = world {
        let params: usize = model.parameters().iter().map(|p| p.numel() * p.dtype().size_in_bytes()).sum();
        logger.note(&format!(
            "reduced {} bytes of gradients per step over {} processes, {}: each process sent and received {} bytes per step, and rank 0 waited {:.3} ms per step after its backward (for the exchange and for slower ranks)",
            group_digits(params),
            dist::place(w).1,
            match history.reduced_buckets {
                1 => "in one bucket after backward".to_string(),
                n => format!(
                    "in {n} buckets of about {bucket_cap_mb} MiB, each sent as soon as backward had finished it"
                ),
            },
            group_digits(history.reduced_bytes),
            history.reduce_wait.as_secs_f64() * 1e3 / history.reduced_steps.max(1) as f64
        ));
    }
    // The epoch the interruption came in (1-based): after an epoch's last batch, that epoch.
    let shown = if state.batch == 0 { state.epoch } else { state.epoch + 1 };
    if history.outcome == Outcome::Interrupted && !lead {
        return Ok(Verdict::Interrupted);
    }
    if history.outcome == Outcome::Interrupted {
        match checkpoints.as_ref().and_then(|c| c.last_written()) {
            Some(p) => eprintln!(
                "interrupted at epoch {} step {}: checkpoint written to {}; continue with `strata train --resume {}`",
                shown,
                state.step,
                p.display(),
                out.as_ref().map(|d| d.display().to_string()).unwrap_or_default()
            ),
            None => eprintln!(
                "interrupted at epoch {} step {} (no run directory, so no checkpoint: pass --out DIR to keep one)",
                shown, state.step
            ),
        }
        return Ok(Verdict::Interrupted);
    }

    if let Some(e) = &early
        && let Some(at) = e.stopped_at()
    {
        let (best, best_epoch) = e.best().unwrap_or((f64::NAN, 0));
        logger.note(&format!(
            "stopped early after epoch {at}: {} did not improve for {} epochs (best {best:.4} at epoch {best_epoch}{})",
            e.monitor(),
            e.patience_epochs(),
            if e.restores_best() { ", whose weights the run ends with" } else { "" }
        ));
    }
    if let Some(dir) = &out {
        model.state_dict().save(dir.join("model.safetensors"))?;
    }
    if let Some(path) = args.save.as_ref().filter(|_| lead) {
        model
            .state_dict()
            .save(path)
            .with_context(|| format!("saving the trained parameters to {}", path.display()))?;
        logger.note(&format!("saved the state_dict to {}", path.display()));
    }
    if history.skipped > 0 {
        logger.note(&format!(
            "{} steps were skipped for a non-finite loss or gradient (training.on_divergence = \"skip\")",
            history.skipped
        ));
    }
    if !lead {
        // The other ranks of a data-parallel run hold the same model: rank 0 alone reports.
        return Ok(Verdict::Ok);
    }
    // The test set is evaluated once, at the very end: its accuracy is the last figure printed.
    let test = data.test.as_ref().map(|d| trainer.evaluate(d)).transpose()?;
    let last_val = history.last_val().map(|v| (v.loss, v.accuracy.unwrap_or(0.0)));
    logger.finish(
        t.epochs,
        state.step,
        last_val,
        test.map(|v| (v.loss, v.accuracy.unwrap_or(0.0))),
        state.best_val_acc,
        started.elapsed().as_secs_f64(),
    )?;
    Ok(Verdict::Ok)
}

/// The run header's line on pipelining: the stages (their layers and device) and the
/// micro-batches, or that one stage overlaps nothing.
fn pipeline_note(model: &strata_nn::Sequential, k: usize, input_device: strata_core::Device) -> String {
    let stages: Vec<String> = model
        .stages()
        .iter()
        .map(|(range, device)| {
            let names: Vec<&str> = model.layers().skip(range.start).take(range.len()).map(|(n, _)| n).collect();
            format!("{} on {}", names.join(", "), device.unwrap_or(input_device))
        })
        .collect();
    match stages.as_slice() {
        [one] => format!(
            "  pipeline: one stage ({one}): its {k} micro-batches a batch run one after another, as --accumulate {k}; place layers on several devices (`device =`, --device-map) for them to overlap"
        ),
        _ => format!(
            "  pipeline: {} stages ({}), {k} micro-batches a batch in flight together (GPipe; the numbers of --accumulate {k})",
            stages.len(),
            stages.join(" | ")
        ),
    }
}
