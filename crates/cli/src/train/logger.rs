//! The run's console output, metrics.jsonl, TensorBoard events and checkpoints.

use super::args::*;
use crate::checkpoint::{self, Meta};
use crate::config::RunConfig;
use crate::data_setup::Prepared;
use crate::tensorboard::EventWriter;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use strata_core::DType;
use strata_nn::summary::group_digits;
use strata_nn::{Module, Optimizer};

/// Clears a run directory whose run stopped before its first checkpoint — nothing to resume —
/// so that the same command starts the run over in place: its logs (metrics.jsonl, TensorBoard
/// events) and resolved config go; the lock file stays.
pub(super) fn restart_in_place(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading the run directory {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ["metrics.jsonl", "config.toml", "model.toml"].contains(&name.as_str())
            || name.starts_with("events.out.tfevents.")
        {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {} to start the run over", entry.path().display()))?;
        }
    }
    eprintln!(
        "{}: its run stopped before its first checkpoint, so there is nothing to resume: starting it over in place",
        dir.display()
    );
    Ok(())
}

/// Console, metrics.jsonl, TensorBoard and checkpoint output of a run.
pub(super) struct Logger {
    pub(super) output: Output,
    pub(super) dir: Option<PathBuf>,
    pub(super) metrics: Option<std::fs::File>,
    pub(super) events: Option<EventWriter>,
    pub(super) tty: bool,
}

impl Logger {
    pub(super) fn open(dir: Option<&Path>, output: Output, resuming: bool, resume_step: usize) -> Result<Logger> {
        let (mut metrics, mut events) = (None, None);
        if let Some(d) = dir {
            let metrics_path = d.join("metrics.jsonl");
            std::fs::create_dir_all(checkpoint::dir(d))
                .with_context(|| format!("creating the run directory {}", d.display()))?;
            // One writer per run directory (a resumed run took the lock before reading its
            // checkpoint already).
            crate::run_lock::acquire(d)?;
            if !resuming && metrics_path.exists() {
                if checkpoint::any(d) || d.join("model.safetensors").exists() {
                    bail!(
                        "{} already holds a run; continue it with `strata train --resume {}`, or choose another --out",
                        d.display(),
                        d.display()
                    );
                }
                restart_in_place(d)?;
            }
            if resuming {
                // Lines written after the checkpoint by the interrupted run are dropped, so
                // the log reads as one run.
                let old = std::fs::read_to_string(&metrics_path).unwrap_or_default();
                let kept: String = old
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v["step"].as_u64())
                            .is_some_and(|s| s as usize <= resume_step)
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                // Atomically: a run killed while resuming must not lose the log of the run so far.
                strata_nn::state_dict::atomic_write(&metrics_path, kept.as_bytes())
                    .with_context(|| format!("rewriting {}", metrics_path.display()))?;
            }
            metrics = Some(std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)?);
            events = Some(
                EventWriter::create(d).with_context(|| format!("creating TensorBoard events in {}", d.display()))?,
            );
        }
        Ok(Logger { output, dir: dir.map(Path::to_path_buf), metrics, events, tty: std::io::stdout().is_terminal() })
    }

    pub(super) fn emit(
        &mut self,
        value: serde_json::Value,
        scalars: &[(&str, Option<f64>)],
        step: usize,
    ) -> Result<()> {
        if let Some(f) = &mut self.metrics {
            writeln!(f, "{value}")?;
        }
        if let Some(ev) = &mut self.events {
            for (tag, v) in scalars {
                if let Some(v) = v {
                    ev.add_scalar(tag, *v as f32, step as i64)?;
                }
            }
            ev.flush()?;
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
        let opt = match o.name.as_str() {
            "sgd" => format!("SGD lr {} momentum {}", o.lr, o.momentum),
            name => format!("{} lr {}", if name == "adam" { "Adam" } else { "AdamW" }, o.lr),
        };
        let mut line = format!(
            "CrossEntropyLoss, {opt}{}, batch {batch}, {} epochs, seed {}, {} threads",
            if config.schedule.name == "constant" {
                String::new()
            } else {
                format!(", {} schedule", config.schedule.name)
            },
            t.epochs,
            t.seed,
            rayon::current_num_threads()
        );
        if dtype != DType::F32 {
            line.push_str(&format!(", {}", strata_nn::check::dtype_name(dtype)));
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
                if let Some(ev) = &self.events {
                    println!(
                        "  TensorBoard events: {} (tensorboard --logdir {})",
                        ev.path().display(),
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

    pub(super) fn epoch_bar(&self, epoch: usize, epochs: usize, len: u64, pos: u64) -> Option<ProgressBar> {
        if self.output != Output::Human || !self.tty {
            return None;
        }
        let bar = ProgressBar::new(len).with_position(pos);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                // `wide_bar` takes what the terminal's width leaves, so the line never wraps.
                "epoch {:>2}/{epochs} [{{wide_bar}}] {{pos}}/{{len}} {{msg}} ETA {{eta}}",
                epoch + 1
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        Some(bar)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &mut self,
        epoch: usize,
        step: usize,
        loss: f64,
        lr: f64,
        grad_norm: Option<f64>,
        rate: f64,
        time: f64,
    ) -> Result<()> {
        let v = json!({"event": "step", "epoch": epoch, "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "samples_per_s": rate, "time_s": time});
        self.emit(
            v,
            &[
                ("train/loss", Some(loss)),
                ("train/lr", Some(lr)),
                ("train/grad_norm", grad_norm),
                ("train/samples_per_s", Some(rate)),
            ],
            step,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn epoch(
        &mut self,
        epoch: usize,
        epochs: usize,
        step: usize,
        train: Option<(f64, f64)>,
        val: Option<(f64, f64)>,
        lr: f64,
        rate: f64,
        time: f64,
    ) -> Result<()> {
        let v = json!({"event": "epoch", "epoch": epoch, "step": step, "train_loss": train.map(|t| t.0), "train_acc": train.map(|t| t.1),
            "val_loss": val.map(|v| v.0), "val_acc": val.map(|v| v.1), "lr": lr, "samples_per_s": rate, "time_s": time});
        let scalars = [
            ("epoch/train_loss", train.map(|t| t.0)),
            ("epoch/train_acc", train.map(|t| t.1)),
            ("epoch/val_loss", val.map(|v| v.0)),
            ("epoch/val_acc", val.map(|v| v.1)),
            ("epoch/lr", Some(lr)),
        ];
        self.emit(v, &scalars, step)?;
        if self.output == Output::Human {
            let train_part =
                train.map_or(String::new(), |(l, a)| format!("loss {l:.4}  train acc {:5.2}%  ", 100.0 * a));
            let val_part = val.map_or(String::new(), |(_, a)| format!("held-out acc {:5.2}%  ", 100.0 * a));
            println!("epoch {epoch:>2}/{epochs}  {train_part}{val_part}{:>7} samples/s", group_digits(rate as usize));
        }
        Ok(())
    }

    pub(super) fn checkpoint(
        &mut self,
        model: &dyn Module,
        optimizer: &dyn Optimizer,
        meta: &Meta,
        keep: usize,
    ) -> Result<Option<PathBuf>> {
        let Some(dir) = &self.dir else { return Ok(None) };
        let path = checkpoint::step_file(dir, meta.step);
        checkpoint::save(&path, model, &optimizer.state_dict(), meta)?;
        checkpoint::prune(dir, keep)?;
        Ok(Some(path))
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
