//! The run's figures on disk: one JSON object per line in `metrics.jsonl` (an `event` key of
//! `step`, `epoch` or what [`MetricsLog::emit`] is given) and the same scalars as TensorBoard
//! events, both in the run directory.

use crate::callback::{Callback, Control, EpochLog, Progress, StepLog};
use crate::error::{Error, Result};
use crate::tensorboard::EventWriter;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Logs steps (those marked by `Trainer::log_every`) and epochs to `metrics.jsonl` and
/// TensorBoard event files in a run directory; optionally echoes each JSON line to stdout.
pub struct MetricsLog {
    dir: PathBuf,
    metrics: std::fs::File,
    events: EventWriter,
}

impl MetricsLog {
    /// Opens (appends to) `dir/metrics.jsonl` and a new TensorBoard event file in `dir`,
    /// creating `dir`. Resuming from `resume_step`, the lines an interrupted run logged after
    /// it are dropped first (atomically), so the log reads as one run.
    pub fn open(dir: impl AsRef<Path>, resume_step: Option<usize>) -> Result<MetricsLog> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the run directory", dir, e))?;
        let path = dir.join("metrics.jsonl");
        if let Some(resume_step) = resume_step {
            // Read as bytes, line by line: a log that cannot be read is an error, not an empty
            // log to write back, and one line that is not UTF-8 (a torn write) is that line's
            // loss only — `read_to_string(..).unwrap_or_default()` emptied the whole log.
            let old = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
                Err(e) => return Err(Error::io("reading, to continue it,", &path, e)),
            };
            let kept: String = old
                .split(|&b| b == b'\n')
                .filter_map(|l| std::str::from_utf8(l).ok())
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= resume_step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            strata_nn::state_dict::atomic_write(&path, kept.as_bytes())
                .map_err(|e| Error::Checkpoint(format!("rewriting {}: {e}", path.display())))?;
        }
        let metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        let events = EventWriter::create(dir).map_err(|e| Error::io("creating TensorBoard events in", dir, e))?;
        Ok(MetricsLog { dir: dir.to_path_buf(), metrics, events })
    }

    /// A step's line of metrics.jsonl.
    pub fn step_json(s: &StepLog) -> serde_json::Value {
        json!({"event": "step", "epoch": s.epoch, "step": s.step, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm, "samples_per_s": s.samples_per_s, "time_s": s.time_s})
    }

    /// An epoch's line of metrics.jsonl.
    pub fn epoch_json(e: &EpochLog) -> serde_json::Value {
        let (val_loss, val_acc) = (e.val.map(|v| v.loss), e.val.and_then(|v| v.accuracy));
        let mut v = json!({"event": "epoch", "epoch": e.epoch, "step": e.step, "train_loss": e.train_loss, "train_acc": e.train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "lr": e.lr, "samples_per_s": e.samples_per_s, "time_s": e.time_s});
        if let Some(val) = e.val {
            v["val_f1_macro"] = json!(val.f1_macro);
            v["val_f1_weighted"] = json!(val.f1_weighted);
            if let Some((k, acc)) = val.top_k {
                v[format!("val_top{k}_acc")] = json!(acc);
            }
        }
        v
    }

    /// The TensorBoard event file.
    pub fn events_path(&self) -> &Path {
        self.events.path()
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one event: `value` as a line of metrics.jsonl, each present scalar as a
    /// TensorBoard scalar at `step`.
    pub fn emit(&mut self, value: serde_json::Value, scalars: &[(&str, Option<f64>)], step: usize) -> Result<()> {
        let path = self.dir.join("metrics.jsonl");
        // One write of the whole line: `writeln!` on a file writes each formatted piece with a
        // system call of its own, so a run killed mid-line left a line cut short.
        self.metrics.write_all(format!("{value}\n").as_bytes()).map_err(|e| Error::io("writing", &path, e))?;
        let events = self.events.path().to_path_buf();
        for (tag, v) in scalars {
            if let Some(v) = v {
                self.events.add_scalar(tag, *v as f32, step as i64).map_err(|e| Error::io("writing", &events, e))?;
            }
        }
        self.events.flush().map_err(|e| Error::io("writing", &events, e))?;
        Ok(())
    }
}

impl Callback for MetricsLog {
    fn on_step_end(&mut self, _p: &Progress, s: &StepLog) -> Result<Control> {
        if s.log {
            self.emit(
                Self::step_json(s),
                &[
                    ("train/loss", Some(s.loss)),
                    ("train/lr", Some(s.lr)),
                    ("train/grad_norm", s.grad_norm),
                    ("train/samples_per_s", Some(s.samples_per_s)),
                ],
                s.step,
            )?;
        }
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, _p: &Progress, e: &EpochLog) -> Result<Control> {
        let (val_loss, val_acc) = (e.val.map(|v| v.loss), e.val.and_then(|v| v.accuracy));
        let scalars = [
            ("epoch/train_loss", e.train_loss),
            ("epoch/train_acc", e.train_acc),
            ("epoch/val_loss", val_loss),
            ("epoch/val_acc", val_acc),
            ("epoch/val_f1_macro", e.val.and_then(|v| v.f1_macro)),
            ("epoch/val_top5_acc", e.val.and_then(|v| v.top_k).map(|t| t.1)),
            ("epoch/lr", Some(e.lr)),
        ];
        self.emit(Self::epoch_json(e), &scalars, e.step)?;
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resume keeps the lines up to its step even when another line is not UTF-8 (a torn
    /// write): `read_to_string` failed on it, and the whole log was rewritten empty.
    #[test]
    fn a_resume_keeps_the_log_around_a_line_that_is_not_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = b"{\"event\":\"step\",\"step\":1}\n{\"event\":\"epoch\",\"step\":2}\n".to_vec();
        log.extend_from_slice(b"{\"event\":\"step\",\"st\xff\xfe\n{\"event\":\"step\",\"step\":3}\n");
        std::fs::write(&path, &log).unwrap();
        drop(MetricsLog::open(dir.path(), Some(2)).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"event\":\"step\",\"step\":1}\n{\"event\":\"epoch\",\"step\":2}\n"
        );
        // A log that cannot be read is an error, and is left as it is.
        let blocked = tempfile::tempdir().unwrap();
        std::fs::create_dir(blocked.path().join("metrics.jsonl")).unwrap();
        let e = MetricsLog::open(blocked.path(), Some(2)).err().unwrap().to_string();
        assert!(e.starts_with("reading, to continue it, ") && e.contains("metrics.jsonl"), "{e}");
    }
}
