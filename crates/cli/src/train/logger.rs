//! The run's console output (human lines or `--json` events), as a strata-train callback; the
//! run directory's checks and its metrics log (metrics.jsonl, TensorBoard: strata-train's
//! `MetricsLog`).

use super::args::*;
use super::run_dir;
use crate::checkpoint;
use crate::config::RunConfig;
use crate::data_setup::Prepared;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use strata_core::DType;
use strata_nn::summary::group_digits;
use strata_train::{Callback, Control, EpochLog, MetricsLog, Progress, StepLog};

/// Console output of a run, and its metrics log when it has a run directory.
pub(super) struct Logger {
    pub(super) output: Output,
    pub(super) dir: Option<PathBuf>,
    pub(super) metrics: Option<MetricsLog>,
}

impl Logger {
    pub(super) fn open(dir: Option<&Path>, output: Output, resuming: bool, resume_step: usize) -> Result<Logger> {
        let mut metrics = None;
        if let Some(d) = dir {
            // Only a new or empty directory, or strata's own run directory, is written into.
            run_dir::check_writable(d, resuming)?;
            std::fs::create_dir_all(checkpoint::dir(d))
                .with_context(|| format!("creating the run directory {}", d.display()))?;
            // One writer per run directory (a resumed run took the lock before reading its
            // checkpoint already).
            crate::run_lock::acquire(d)?;
            if !resuming {
                if checkpoint::any(d) || d.join("model.safetensors").exists() {
                    bail!(
                        "{} already holds a run; continue it with `strata train --resume {}`, or choose another --out",
                        d.display(),
                        d.display()
                    );
                }
                run_dir::restart_in_place(d)?;
            }
            metrics = Some(MetricsLog::open(d, resuming.then_some(resume_step))?);
        }
        Ok(Logger { output, dir: dir.map(Path::to_path_buf), metrics })
    }

    /// One event: to the metrics log, and to stdout under `--json`.
    pub(super) fn emit(
        &mut self,
        value: serde_json::Value,
        scalars: &[(&str, Option<f64>)],
        step: usize,
    ) -> Result<()> {
        if let Some(m) = &mut self.metrics {
            m.emit(value.clone(), scalars, step)?;
        }
        if self.output == Output::Json {
            println!("{value}");
        }
        Ok(())
    }

    pub(super) fn header(
        &mut self,
        model: &str,
        dtype: DType,
        data: &Prepared,
        config: &RunConfig,
        batch: usize,
        resumed: Option<&Path>,
    ) {
        let o = &config.optimizer;
        let t = &config.training;
        let opt = o.describe();
        let mut line = format!(
            "{}, {opt}{}, batch {batch}{}, {} epoch{}, seed {}, {} threads",
            config.loss.describe(),
            if config.schedule.name == "constant" {
                String::new()
            } else {
                format!(", {} schedule", config.schedule.name)
            },
            // A batch beyond the training set is one batch of all of it (the loader's).
            if batch > data.train.len() && !data.train.is_empty() {
                format!(" (one batch of all {} samples)", strata_nn::summary::group_digits(data.train.len()))
            } else {
                String::new()
            },
            t.epochs,
            if t.epochs == 1 { "" } else { "s" },
            t.seed,
            rayon::current_num_threads()
        );
        if dtype != DType::F32 {
            line.push_str(&format!(", {}", strata_nn::check::dtype_name(dtype)));
        }
        if t.precision != "f32" {
            line.push_str(&format!(", {} products (f32 master weights)", t.precision));
        }
        let augmentation = config.augment.pipeline().map(|a| {
            format!("{a} per training sample, seed {} (on normalised pixels: fills are normalised black)", t.seed)
        });
        match self.output {
            Output::Human => {
                println!("strata train: {model}");
                println!("  data: {}", data.description);
                println!("  normalisation: {}", data.normalization);
                println!("  {line}");
                if let Some(a) = &augmentation {
                    println!("  augmentation: {a}");
                }
                if let Some(d) = &self.dir {
                    println!("  run directory: {} (metrics.jsonl, checkpoints/)", d.display());
                }
                if let Some(m) = &self.metrics {
                    println!(
                        "  TensorBoard events: {} (tensorboard --logdir {})",
                        m.events_path().display(),
                        self.dir.as_deref().unwrap_or(Path::new(".")).display()
                    );
                }
                if let Some(p) = resumed {
                    println!("  resumed from {}", p.display());
                }
            }
            Output::Json => {
                let mut start = json!({"event": "start", "model": model, "data": data.description, "normalization": data.normalization, "setup": line, "run_dir": self.dir, "resumed_from": resumed});
                if let Some(a) = augmentation {
                    start["augmentation"] = json!(a);
                }
                println!("{start}");
            }
            Output::Quiet => {}
        }
    }

    pub(super) fn finish(
        &mut self,
        epochs: usize,
        step: usize,
        val: Option<(f64, f64)>,
        test: Option<(f64, f64)>,
        best: Option<f64>,
        time: f64,
    ) -> Result<()> {
        if let Some((l, a)) = test {
            self.emit(
                json!({"event": "test", "epoch": epochs, "step": step, "test_loss": l, "test_acc": a, "time_s": time}),
                &[("test/loss", Some(l)), ("test/acc", Some(a))],
                step,
            )?;
        }
        match self.output {
            Output::Json => println!(
                "{}",
                json!({"event": "done", "time_s": time, "val_acc": val.map(|v| v.1), "best_val_acc": best, "test_acc": test.map(|t| t.1)})
            ),
            _ => {
                let mut line = format!("done in {time:.1} s:");
                if let Some((_, a)) = val {
                    line.push_str(&format!(" held-out accuracy {:.2}%", 100.0 * a));
                }
                if let Some((_, a)) = test {
                    line.push_str(&format!(" test accuracy {:.2}%", 100.0 * a));
                }
                println!("{line}");
            }
        }
        Ok(())
    }

    pub(super) fn note(&self, text: &str) {
        if self.output == Output::Human {
            println!("{text}");
        }
    }
}

/// The console side of a run's events: under `--json`, each logged step and each epoch as a
/// JSON line (the metrics log writes the files itself); for people, a line per epoch and a note
/// per skipped step.
impl Callback for Logger {
    fn on_step_end(&mut self, p: &Progress, s: &StepLog) -> strata_train::Result<Control> {
        if let Some(m) = &mut self.metrics {
            m.on_step_end(p, s)?;
        }
        if s.log && self.output == Output::Json {
            println!("{}", MetricsLog::step_json(s));
        }
        Ok(Control::Continue)
    }

    fn on_step_skipped(&mut self, p: &Progress, skipped: usize, loss_finite: bool) -> strata_train::Result<()> {
        // The first few and then every hundredth, not a line per step.
        if skipped <= 3 || skipped.is_multiple_of(100) {
            self.note(&format!(
                "epoch {} step {}: {} non-finite, step skipped ({skipped} so far)",
                p.state.epoch + 1,
                p.state.step,
                if loss_finite { "a gradient is" } else { "the loss is" }
            ));
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, p: &Progress, e: &EpochLog) -> strata_train::Result<Control> {
        if let Some(m) = &mut self.metrics {
            m.on_epoch_end(p, e)?;
        }
        match self.output {
            Output::Json => println!("{}", MetricsLog::epoch_json(e)),
            Output::Human => {
                let train_part = match (e.train_loss, e.train_acc) {
                    (Some(l), Some(a)) => format!("loss {l:.4}  train acc {:5.2}%  ", 100.0 * a),
                    (Some(l), None) => format!("loss {l:.4}  "),
                    _ => String::new(),
                };
                let val_part = e
                    .val
                    .and_then(|v| v.accuracy)
                    .map_or(String::new(), |a| format!("held-out acc {:5.2}%  ", 100.0 * a));
                println!(
                    "epoch {:>2}/{}  {train_part}{val_part}{:>7} samples/s",
                    e.epoch,
                    e.epochs,
                    group_digits(e.samples_per_s as usize)
                );
            }
            Output::Quiet => {}
        }
        Ok(Control::Continue)
    }
}
