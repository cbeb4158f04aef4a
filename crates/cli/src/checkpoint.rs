//! Checkpoints: one safetensors file holding the model's parameters under their PyTorch names
//! (so PyTorch can load it with `strict=False`), the optimizer state under the reserved prefix
//! `__strata__.optim.`, and in the header's metadata the position in the run (epoch, batch,
//! step), the best validation accuracy so far, the resolved run config, the model file and the
//! input normalisation and the modules' extra state (Dropout's mask stream) — everything
//! `--resume`, `strata eval` and `strata predict` need.
//! Written atomically (temporary file, fsync, rename), so a crash never leaves a torn file.

use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use strata_nn::{Module, StateDict, state_dict::atomic_write};

/// Prefix of the optimizer-state entries.
pub const OPTIM_PREFIX: &str = "__strata__.optim.";

/// Where in the run a checkpoint was taken, and what it needs to rebuild the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Batches of that epoch already done.
    pub batch: usize,
    /// Optimizer steps taken in the whole run.
    pub step: usize,
    /// Best validation accuracy so far.
    pub best_val_acc: Option<f64>,
    /// The resolved run config (TOML).
    pub config: String,
    /// The model file (TOML).
    pub model: String,
    /// Normalisation applied to inputs: per-channel mean and std.
    pub mean: Vec<f32>,
    /// See `mean`.
    pub std: Vec<f32>,
    /// Class names, when the data set has them.
    pub classes: Vec<String>,
    /// The model's extra state ([`Module::extra_state`]) as read from a checkpoint; [`save`]
    /// writes the model's current one instead.
    pub extra_state: BTreeMap<String, String>,
}

impl Meta {
    fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("strata.epoch".into(), self.epoch.to_string());
        m.insert("strata.batch".into(), self.batch.to_string());
        m.insert("strata.step".into(), self.step.to_string());
        if let Some(b) = self.best_val_acc {
            m.insert("strata.best_val_acc".into(), format!("{b:e}"));
        }
        m.insert("strata.config".into(), self.config.clone());
        m.insert("strata.model".into(), self.model.clone());
        m.insert("strata.mean".into(), serde_json::to_string(&self.mean).expect("floats encode"));
        m.insert("strata.std".into(), serde_json::to_string(&self.std).expect("floats encode"));
        m.insert("strata.classes".into(), serde_json::to_string(&self.classes).expect("strings encode"));
        m.insert("strata.extra_state".into(), serde_json::to_string(&self.extra_state).expect("strings encode"));
        m
    }

    fn from_map(m: &HashMap<String, String>, path: &Path) -> Result<Meta> {
        let get = |k: &str| {
            m.get(k).with_context(|| format!("{}: not a strata checkpoint (no `{k}` in its metadata)", path.display()))
        };
        let num = |k: &str| -> Result<usize> {
            get(k)?.parse().with_context(|| format!("{}: bad `{k}` in the metadata", path.display()))
        };
        let json = |k: &str| -> Result<serde_json::Value> {
            serde_json::from_str(get(k)?).with_context(|| format!("{}: bad `{k}` in the metadata", path.display()))
        };
        Ok(Meta {
            epoch: num("strata.epoch")?,
            batch: num("strata.batch")?,
            step: num("strata.step")?,
            best_val_acc: m.get("strata.best_val_acc").and_then(|v| v.parse().ok()),
            config: get("strata.config")?.clone(),
            model: get("strata.model")?.clone(),
            mean: serde_json::from_value(json("strata.mean")?)?,
            std: serde_json::from_value(json("strata.std")?)?,
            classes: serde_json::from_value(json("strata.classes")?)?,
            // Absent in checkpoints of models without extra state written before it existed.
            extra_state: match m.get("strata.extra_state") {
                Some(_) => serde_json::from_value(json("strata.extra_state")?)?,
                None => BTreeMap::new(),
            },
        })
    }
}

/// Writes a checkpoint of `model` (its state_dict and extra state) atomically.
pub fn save(path: &Path, model: &dyn Module, optim: &StateDict, meta: &Meta) -> Result<()> {
    let meta = Meta { extra_state: model.extra_state(), ..meta.clone() };
    let mut all = model.state_dict();
    for (k, t) in optim.iter() {
        all.insert(format!("{OPTIM_PREFIX}{k}"), t.clone());
    }
    let bytes = all.to_safetensors_bytes(Some(meta.to_map()))?;
    atomic_write(path, &bytes).with_context(|| format!("writing the checkpoint {}", path.display()))
}

/// Reads a checkpoint: parameters, optimizer state and metadata.
pub fn load(path: &Path) -> Result<(StateDict, StateDict, Meta)> {
    let (mut params, map) = StateDict::load_with_metadata(path)?;
    let optim = params.split_prefix(OPTIM_PREFIX);
    let meta = Meta::from_map(&map, path)?;
    Ok((params, optim, meta))
}

/// The checkpoints directory of a run.
pub fn dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// The file name of the checkpoint at a step.
pub fn step_file(run: &Path, step: usize) -> PathBuf {
    dir(run).join(format!("step-{step:09}.safetensors"))
}

/// The step checkpoints of a run, oldest first.
pub fn list(run: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir(run))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.strip_suffix(".safetensors")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The newest checkpoint of a run directory (or the file itself when given a file).
pub fn latest(run_or_file: &Path) -> Result<PathBuf> {
    if run_or_file.is_file() {
        return Ok(run_or_file.to_path_buf());
    }
    match list(run_or_file).pop() {
        Some((_, p)) => Ok(p),
        None => bail!(
            "{}: no checkpoints to resume from (expected {}/step-*.safetensors)",
            run_or_file.display(),
            dir(run_or_file).display()
        ),
    }
}

/// Deletes all but the newest `keep` step checkpoints.
pub fn prune(run: &Path, keep: usize) -> Result<()> {
    let all = list(run);
    for (_, p) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_file(p).with_context(|| format!("removing the old checkpoint {}", p.display()))?;
    }
    Ok(())
}
