//! `strata train`: the main job. With no arguments it trains PyTorch's SimpleNN on the embedded
//! MNIST subset (SGD lr 0.01 momentum 0.9, batch 64, 10 epochs). With a run file (and/or flags)
//! it trains any model file on any supported data, logs metrics (`metrics.jsonl`, TensorBoard
//! events), writes checkpoints, resumes bit-identically, and stops cleanly on Ctrl-C.
//!
//! The parts: `args.rs` (flags and overrides), `setup.rs` (config, model, data, memory, optimizer),
//! `step.rs` (input layout, divergence, evaluation), `logger.rs` (console, logs, checkpoints); the
//! loop is here.

mod args;
mod logger;
mod setup;
mod step;

pub use args::TrainArgs;
pub(crate) use setup::{Built, build};
pub use step::{InputLayout, evaluate};

use self::args::*;
use self::logger::*;
use self::setup::*;
use self::step::*;
use crate::check::Verdict;
use crate::checkpoint::{self, Meta};
use crate::schedule::lr_at;
use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use strata_core::Tensor;
use strata_data::DataLoader;
use strata_nn::model_file::to_toml;
use strata_nn::summary::group_digits;
use strata_nn::{CrossEntropyLoss, Module};

/// Runs the training job.
pub fn run(args: &TrainArgs) -> Result<Verdict> {
    let output = if args.json {
        Output::Json
    } else if args.quiet {
        Output::Quiet
    } else {
        Output::Human
    };
    if args.compute_stats {
        return compute_stats(args);
    }
    let Some(Built {
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
        mut optimizer,
        device,
    }) = build(args)?
    else {
        return Ok(Verdict::Failed);
    };
    let t = &config.training;

    // Where the run starts: from scratch, or from a checkpoint.
    let (mut epoch0, mut batch0, mut step, mut best) = (0, 0, 0, None);
    if let Some((path, params, optim, meta)) = &resume {
        check_resume_position(path, meta, &data.train, t.batch_size)?;
        model.load_state_dict(params, true).with_context(|| format!("loading {}", path.display()))?;
        optimizer
            .load_state_dict(optim)
            .with_context(|| format!("loading the optimizer state of {}", path.display()))?;
        model
            .load_extra_state(&meta.extra_state)
            .with_context(|| format!("loading the layers' state (Dropout masks) of {}", path.display()))?;
        (epoch0, batch0, step, best) = (meta.epoch, meta.batch, meta.step, meta.best_val_acc);
    }

    let batch_size = t.batch_size.resolve(data.train.len());
    let layout = InputLayout::of(&resolved, &sample).on(device).labels_on(resolved.output_device(device));
    let loader = DataLoader::new(&data.train, batch_size).shuffle(t.seed).augment(augment, t.seed)?;
    let steps_per_epoch = loader.num_batches();
    let total_steps = steps_per_epoch * t.epochs;
    let mut logger = Logger::open(out.as_deref(), output, resume.is_some(), step)?;
    if let Some(dir) = &out {
        std::fs::write(dir.join("config.toml"), toml::to_string(&rerunnable(&config))?)
            .context("writing config.toml")?;
        std::fs::write(dir.join("model.toml"), to_toml(&resolved)).context("writing model.toml")?;
    }
    let meta_base = Meta {
        epoch: 0,
        batch: 0,
        step: 0,
        best_val_acc: None,
        config: toml::to_string(&config)?,
        model: to_toml(&resolved),
        mean: data.mean.clone(),
        std: data.std.clone(),
        classes: data.classes.clone(),
        extra_state: Default::default(),
    };

    let title = match &model_source {
        Some(src) => format!("{} from {src} ({} parameters, shape-checked)", resolved.name, group_digits(params_count)),
        None => format!("{} ({} parameters)", resolved.name, group_digits(params_count)),
    };
    logger.header(&title, resolved.dtype, &data, &config, batch_size, resume.as_ref().map(|r| r.0.as_path()));
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // Only the first handler installation can succeed in a process; tests call run() once.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }

    let criterion = CrossEntropyLoss::new();
    let started = Instant::now();
    let mut last_val = None;
    // Steps skipped for a non-finite loss or gradient (`training.on_divergence = "skip"`).
    let mut skipped = 0usize;
    for epoch in epoch0..t.epochs {
        let t0 = Instant::now();
        let skip = if epoch == epoch0 { batch0 } else { 0 };
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let bar = logger.epoch_bar(epoch, t.epochs, steps_per_epoch as u64, skip as u64);
        let mut stop = None;
        loader.epoch_prefetched(epoch as u64, 2, |batches| -> Result<()> {
            for (i, batch) in batches.enumerate().skip(skip) {
                let lr = lr_at(&config.schedule, config.optimizer.lr, step, steps_per_epoch, total_steps);
                optimizer.set_lr(lr);
                optimizer.zero_grad()?;
                let input = layout.apply(&batch.x)?;
                let y = layout.labels(&batch.y)?;
                let logits = model.forward(&input)?;
                let loss = criterion.forward(&logits, &y)?;
                loss.backward()?;
                let l = loss.item()?;
                let log_now = t.log_every > 0 && (step + 1) % t.log_every == 0;
                // The gradients' norm, clipped when asked; a non-finite loss or gradient is a
                // divergence: the step is skipped or the run stops, naming where it happened.
                let params = model.parameters();
                let grad_norm = match t.clip_grad_norm {
                    Some(max) => Some(strata_nn::optim::clip_grad_norm_(&params, max)?),
                    None if log_now => Some(grad_norm(&model)?),
                    None => None,
                };
                let grads_finite = match grad_norm {
                    Some(norm) => norm.is_finite(),
                    // One check for all the gradients (on a GPU, one read back).
                    None => strata_core::all_finite(&params.iter().filter_map(Tensor::grad).collect::<Vec<_>>()),
                };
                if !l.is_finite() || !grads_finite {
                    if t.on_divergence == "skip" {
                        skipped += 1;
                        step += 1;
                        // The first few and then every hundredth, not a line per step.
                        let say = skipped <= 3 || skipped.is_multiple_of(100);
                        say.then(|| {
                            logger.note(&format!(
                                "epoch {} step {step}: {} non-finite, step skipped ({skipped} so far)",
                                epoch + 1,
                                if l.is_finite() { "a gradient is" } else { "the loss is" }
                            ))
                        });
                        continue;
                    }
                    let report = diagnose(&model, &input, &y, l);
                    bail!("{}", divergence_message(epoch + 1, step + 1, i + 1, steps_per_epoch, &report, &config));
                }
                optimizer.step()?;
                if !strata_core::all_finite(&params) {
                    let report = diagnose(&model, &input, &y, l);
                    bail!("{}", divergence_message(epoch + 1, step + 1, i + 1, steps_per_epoch, &report, &config));
                }
                step += 1;
                let n = batch.y.numel();
                loss_sum += l * n as f64;
                correct += count_correct(&logits, &y)?;
                seen += n;
                let rate = seen as f64 / t0.elapsed().as_secs_f64();
                if let Some(bar) = &bar {
                    bar.set_position((i + 1) as u64);
                    bar.set_message(format!(
                        "loss {:.4}  acc {:5.2}%  {} samples/s",
                        loss_sum / seen as f64,
                        100.0 * correct as f64 / seen as f64,
                        group_digits(rate as usize)
                    ));
                }
                if log_now {
                    logger.step(epoch + 1, step, l, lr, grad_norm, rate, started.elapsed().as_secs_f64())?;
                }
                let done = i + 1;
                if t.checkpoint_every > 0 && step % t.checkpoint_every == 0 && done < steps_per_epoch {
                    logger.checkpoint(
                        &model,
                        optimizer.as_ref(),
                        &Meta { epoch, batch: done, step, best_val_acc: best, ..meta_base.clone() },
                        t.keep_last,
                    )?;
                }
                if interrupted.load(Ordering::SeqCst) {
                    stop = Some(done);
                    break;
                }
            }
            Ok(())
        })?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if seen == 0 && stop.is_none() && skipped > 0 {
            bail!(
                "training diverged: every step of epoch {} had a non-finite loss or gradient and was skipped ({skipped} skipped in all); \
                 try a lower learning rate (--lr, now {}) or gradient clipping (training.clip_grad_norm = 1.0)",
                epoch + 1,
                config.optimizer.lr
            );
        }
        if let Some(done) = stop {
            let at = if done == steps_per_epoch {
                Meta { epoch: epoch + 1, batch: 0, step, best_val_acc: best, ..meta_base.clone() }
            } else {
                Meta { epoch, batch: done, step, best_val_acc: best, ..meta_base.clone() }
            };
            let path = logger.checkpoint(&model, optimizer.as_ref(), &at, t.keep_last)?;
            match path {
                Some(p) => eprintln!(
                    "interrupted at epoch {} step {step}: checkpoint written to {}; continue with `strata train --resume {}`",
                    epoch + 1,
                    p.display(),
                    out.as_ref().map(|d| d.display().to_string()).unwrap_or_default()
                ),
                None => eprintln!(
                    "interrupted at epoch {} step {step} (no run directory, so no checkpoint: pass --out DIR to keep one)",
                    epoch + 1
                ),
            }
            return Ok(Verdict::Interrupted);
        }
        let train_secs = t0.elapsed().as_secs_f64();
        let val = if data.val.is_empty() { None } else { Some(evaluate(&model, &data.val, &layout)?) };
        if let Some((_, acc)) = val
            && best.is_none_or(|b| acc > b)
        {
            best = Some(acc);
            if let Some(dir) = &out {
                let meta = Meta { epoch: epoch + 1, batch: 0, step, best_val_acc: best, ..meta_base.clone() };
                checkpoint::save(
                    &checkpoint::dir(dir).join("best.safetensors"),
                    &model,
                    &optimizer.state_dict(),
                    &meta,
                )?;
            }
        }
        last_val = val;
        let rate = if seen > 0 { seen as f64 / train_secs } else { 0.0 };
        let lr = optimizer.lr();
        let train_metrics = (seen > 0).then(|| (loss_sum / seen as f64, correct as f64 / seen as f64));
        logger.epoch(epoch + 1, t.epochs, step, train_metrics, val, lr, rate, started.elapsed().as_secs_f64())?;
        logger.checkpoint(
            &model,
            optimizer.as_ref(),
            &Meta { epoch: epoch + 1, batch: 0, step, best_val_acc: best, ..meta_base.clone() },
            t.keep_last,
        )?;
    }

    if let Some(dir) = &out {
        model.state_dict().save(dir.join("model.safetensors"))?;
    }
    if let Some(path) = &args.save {
        model
            .state_dict()
            .save(path)
            .with_context(|| format!("saving the trained parameters to {}", path.display()))?;
        logger.note(&format!("saved the state_dict to {}", path.display()));
    }
    if skipped > 0 {
        logger.note(&format!(
            "{skipped} steps were skipped for a non-finite loss or gradient (training.on_divergence = \"skip\")"
        ));
    }
    // The test set is evaluated once, at the very end: its accuracy is the last figure printed.
    let test = data.test.as_ref().map(|d| evaluate(&model, d, &layout)).transpose()?;
    logger.finish(t.epochs, step, last_val, test, best, started.elapsed().as_secs_f64())?;
    Ok(Verdict::Ok)
}
