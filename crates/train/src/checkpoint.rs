//! Checkpoints: one safetensors file holding the model's parameters under their PyTorch names
//! (so PyTorch can load it with `strict=False`), the optimizer state under the reserved prefix
//! `__strata__.optim.`, and in the header's metadata the position in the run (epoch, batch,
//! step), the best validation accuracy so far, the resolved run config, the model file and the
//! input normalisation, the modules' extra state (Dropout's mask stream) and the callbacks'
//! states (early stopping's counters; its kept best weights as tensors under
//! `__strata__.callback.`) — everything `--resume`, `strata eval` and `strata predict` need.
//! Written atomically (temporary file, fsync, rename), so a crash never leaves a torn file; and
//! sealed with a CRC32 of the whole file, so a file changed afterwards (a flipped bit on disk, an
//! edit by hand, a truncated copy) is refused by name instead of silently changing the run.
//!
//! The run config stored in a checkpoint is opaque text to this module (the CLI stores its run
//! file there); a [`ConfigCheck`] reads the run's length from it and may refuse it. The default,
//! [`default_config_check`], reads `training.epochs` from TOML.
//!
//! Just over 700 lines on purpose: the format, its seal, the listing and choice of a run's
//! checkpoints and their tests read as one contract; half the file is those tests.

/// Builds an [`Error::Checkpoint`] from a format string and returns it.
macro_rules! bail {
    ($($arg:tt)*) => { return Err(Error::Checkpoint(format!($($arg)*))) };
}
/// An [`Error::Checkpoint`] from a format string.
macro_rules! anyhow {
    ($($arg:tt)*) => { Error::Checkpoint(format!($($arg)*)) };
}

/// Reads the run config stored in a checkpoint (`Meta::config`): the run's number of epochs, or
/// why the config cannot be used, in words that follow "the run config in its metadata
/// (`strata.config`) ".
pub type ConfigCheck<'a> = &'a dyn Fn(&str) -> std::result::Result<usize, String>;

/// The default [`ConfigCheck`]: the config is TOML whose `training.epochs` (default 10) is the
/// run's length.
pub fn default_config_check(text: &str) -> std::result::Result<usize, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(String::new(), |s| format!(" (line {})", text[..s.start].lines().count().max(1)));
        format!("does not parse{line}: {}", e.message())
    })?;
    match table.get("training").and_then(|t| t.get("epochs")) {
        None => Ok(10),
        Some(toml::Value::Integer(n)) if *n >= 0 => Ok(*n as usize),
        Some(v) => Err(format!("is out of range: training.epochs = {v}: a whole number of epochs")),
    }
}

use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use strata_nn::model_file::parse_model;
use strata_nn::{Module, StateDict, state_dict::atomic_write};

mod callback_state;
pub use callback_state::{CALLBACK_PREFIX, CallbackState};

/// Prefix of the optimizer-state entries.
pub const OPTIM_PREFIX: &str = "__strata__.optim.";

/// Metadata key of the checksum.
const CHECKSUM_KEY: &str = "strata.checksum";
/// Written as the checksum's value while the checksum is computed, and put back in its place
/// when it is verified: the checksum covers every byte of the file but its own eight digits. Its
/// length is the real value's, so sealing the file moves no byte.
const PLACEHOLDER: &str = "crc32:00000000";
/// What every refusal of a damaged or inconsistent file suggests.
const FIX: &str = "fix: the file is damaged, or was not written by this strata: resume from an older checkpoint \
                   (`strata train --resume RUN_DIR` takes the newest one that verifies) or delete this one";

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
    /// Steps skipped for a non-finite loss or gradient so far (counted in `step` too).
    pub skipped: usize,
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
    /// The callbacks' states by key (early stopping's counters and best weights), so a resumed
    /// run's callbacks go on where they were ([`crate::Callback::state`]).
    pub callbacks: BTreeMap<String, CallbackState>,
}

impl Default for Meta {
    /// The start of a run, with no config or model file, and the identity normalisation.
    fn default() -> Self {
        Meta {
            epoch: 0,
            batch: 0,
            step: 0,
            best_val_acc: None,
            skipped: 0,
            config: String::new(),
            model: String::new(),
            mean: vec![0.0],
            std: vec![1.0],
            classes: vec![],
            extra_state: BTreeMap::new(),
            callbacks: BTreeMap::new(),
        }
    }
}

/// Loads a checkpoint into `model` (parameters, strictly, and extra state) and `optimizer`;
/// returns its metadata, whose position [`crate::Trainer::resume`] continues from.
pub fn restore(path: &Path, model: &dyn Module, optimizer: &mut dyn strata_nn::Optimizer) -> Result<Meta> {
    let (params, optim, meta) = load(path)?;
    model.load_state_dict(&params, true)?;
    optimizer.load_state_dict(&optim)?;
    model.load_extra_state(&meta.extra_state)?;
    Ok(meta)
}

impl Meta {
    fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("strata.epoch".into(), self.epoch.to_string());
        m.insert("strata.batch".into(), self.batch.to_string());
        m.insert("strata.step".into(), self.step.to_string());
        if self.skipped > 0 {
            m.insert("strata.skipped".into(), self.skipped.to_string());
        }
        if let Some(b) = self.best_val_acc {
            m.insert("strata.best_val_acc".into(), format!("{b:e}"));
        }
        m.insert("strata.config".into(), self.config.clone());
        m.insert("strata.model".into(), self.model.clone());
        m.insert("strata.mean".into(), serde_json::to_string(&self.mean).expect("floats encode"));
        m.insert("strata.std".into(), serde_json::to_string(&self.std).expect("floats encode"));
        m.insert("strata.classes".into(), serde_json::to_string(&self.classes).expect("strings encode"));
        m.insert("strata.extra_state".into(), serde_json::to_string(&self.extra_state).expect("strings encode"));
        if !self.callbacks.is_empty() {
            let values: BTreeMap<&str, &str> =
                self.callbacks.iter().map(|(k, c)| (k.as_str(), c.value.as_str())).collect();
            m.insert("strata.callbacks".into(), serde_json::to_string(&values).expect("strings encode"));
        }
        m
    }

    /// Reads and range-checks the metadata: every value must parse, and together they must
    /// describe a place the run can be in (the checksum only says the file is as written).
    fn from_map(m: &HashMap<String, String>, path: &Path, check: ConfigCheck) -> Result<Meta> {
        let file = path.display();
        let bad = |key: &str, problem: String| {
            let value = m.get(key).map_or(String::new(), |v| format!(" = {}", shorten(v)));
            anyhow!("{file}: metadata `{key}`{value}: {problem}\n{FIX}")
        };
        let get = |k: &str| {
            m.get(k)
                .map(String::as_str)
                .ok_or_else(|| anyhow!("{file}: not a strata checkpoint: no `{k}` in its metadata\n{FIX}"))
        };
        let num = |k: &str| -> Result<usize> { get(k)?.parse().map_err(|_| bad(k, "not a whole number".into())) };
        fn json<T: serde::de::DeserializeOwned>(text: &str) -> std::result::Result<T, String> {
            serde_json::from_str(text).map_err(|e| e.to_string())
        }

        // The run config and the model first: the positions and the normalisation are checked
        // against them.
        let config_text = get("strata.config")?;
        let epochs = check(config_text)
            .map_err(|problem| anyhow!("{file}: the run config in its metadata (`strata.config`) {problem}\n{FIX}"))?;
        let model = get("strata.model")?;
        // Empty for a model that has no model file (a hand-written Module trained from Rust).
        let spec = if model.is_empty() {
            None
        } else {
            Some(parse_model(model, &format!("{file} (metadata `strata.model`)"), "model").map_err(|e| {
                anyhow!("{file}: the model in its metadata (`strata.model`) does not parse:\n{e}\n{FIX}")
            })?)
        };
        let input = spec.as_ref().and_then(|s| s.input.clone());

        let (epoch, batch, step) = (num("strata.epoch")?, num("strata.batch")?, num("strata.step")?);
        if epoch > epochs {
            return Err(bad(
                "strata.epoch",
                format!(
                    "beyond the run's {epochs} epochs (training.epochs in `strata.config`): it is at most {epochs}, the end of the run"
                ),
            ));
        }
        if epoch == epochs && batch > 0 {
            return Err(bad(
                "strata.batch",
                format!(
                    "strata.epoch = {epoch} is the end of the run's {epochs} epochs, where no batch is left: it must be 0"
                ),
            ));
        }
        // Every epoch before this one took at least `batch + 1` steps when `batch` > 0 (it is
        // an index into an epoch of more batches), and at least one step in any case.
        let at_least = epoch.saturating_mul(batch.saturating_add(1)).saturating_add(batch);
        if step < at_least {
            return Err(bad(
                "strata.step",
                format!("strata.epoch = {epoch} and strata.batch = {batch} take at least {at_least} steps to reach"),
            ));
        }
        // Absent when no step was skipped (and before it was kept).
        let skipped = if m.contains_key("strata.skipped") { num("strata.skipped")? } else { 0 };
        if skipped > step {
            return Err(bad(
                "strata.skipped",
                format!("more skipped steps than the {step} steps taken (`strata.step`)"),
            ));
        }
        let best_val_acc = match m.get("strata.best_val_acc") {
            None => None,
            Some(v) => match v.parse::<f64>() {
                Ok(a) if (0.0..=1.0).contains(&a) => Some(a),
                _ => return Err(bad("strata.best_val_acc", "an accuracy must be a number from 0 to 1".into())),
            },
        };

        // Normalisation: one value per channel, or one for all (`Dataset::normalize_channels`).
        let values_per_sample = input.as_ref().map(|s| s.iter().product::<usize>());
        let norm = |key: &str| -> Result<Vec<f32>> {
            let v: Vec<f32> = json(get(key)?).map_err(|e| bad(key, format!("not a list of finite numbers ({e})")))?;
            if v.is_empty() {
                return Err(bad(key, "empty: it needs one value per input channel, or one for all".into()));
            }
            if let Some(n) = values_per_sample
                && v.len() > 1
                && (n == 0 || n % v.len() != 0)
            {
                return Err(bad(
                    key,
                    format!(
                        "{} values cannot be one per channel of the model's input {:?} (`input` in `strata.model`)",
                        v.len(),
                        input.as_deref().unwrap_or_default()
                    ),
                ));
            }
            Ok(v)
        };
        let (mean, std) = (norm("strata.mean")?, norm("strata.std")?);
        if mean.len() > 1 && std.len() > 1 && mean.len() != std.len() {
            return Err(bad("strata.std", format!("{} values, but `strata.mean` has {}", std.len(), mean.len())));
        }
        if let Some((i, v)) = mean.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(bad("strata.mean", format!("mean[{i}] is {v}; every mean must be finite")));
        }
        if let Some((i, v)) = std.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
            return Err(bad("strata.std", format!("std[{i}] is {v}; every std must be positive and finite")));
        }
        Ok(Meta {
            epoch,
            batch,
            step,
            best_val_acc,
            skipped,
            config: config_text.to_string(),
            model: model.to_string(),
            mean,
            std,
            classes: json(get("strata.classes")?)
                .map_err(|e| bad("strata.classes", format!("not a list of names ({e})")))?,
            // Absent in checkpoints of models without extra state written before it existed.
            extra_state: match m.get("strata.extra_state") {
                Some(v) => json(v).map_err(|e| bad("strata.extra_state", format!("not a table of strings ({e})")))?,
                None => BTreeMap::new(),
            },
            // Absent in checkpoints of runs without stateful callbacks (and before they existed).
            callbacks: match m.get("strata.callbacks") {
                Some(v) => json::<BTreeMap<String, String>>(v)
                    .map_err(|e| bad("strata.callbacks", format!("not a table of strings ({e})")))?
                    .into_iter()
                    .map(|(k, value)| (k, CallbackState { value, tensors: StateDict::new() }))
                    .collect(),
                None => BTreeMap::new(),
            },
        })
    }
}

/// A value cut to a length that fits in a message.
fn shorten(v: &str) -> String {
    const MAX: usize = 60;
    match v.char_indices().nth(MAX) {
        Some((i, _)) => format!("{:?}…", &v[..i]),
        None => format!("{v:?}"),
    }
}

/// Writes a checkpoint of `model` (its state_dict and extra state) atomically.
pub fn save(path: &Path, model: &dyn Module, optim: &StateDict, meta: &Meta) -> Result<()> {
    let meta = Meta { extra_state: model.extra_state(), ..meta.clone() };
    let mut all = model.state_dict();
    for (k, t) in optim.iter() {
        all.insert(format!("{OPTIM_PREFIX}{k}"), t.clone());
    }
    for (key, state) in &meta.callbacks {
        for (k, t) in state.tensors.iter() {
            all.insert(format!("{CALLBACK_PREFIX}{key}.{k}"), t.clone());
        }
    }
    let mut map = meta.to_map();
    map.insert(CHECKSUM_KEY.into(), PLACEHOLDER.into());
    let mut bytes = all.to_safetensors_bytes(Some(map))?;
    seal(&mut bytes);
    atomic_write(path, &bytes).map_err(|e| anyhow!("writing the checkpoint {}: {e}", path.display()))
}

/// Reads a checkpoint: parameters, optimizer state and metadata. The checksum and then the
/// metadata are checked before any tensor is read; a file that fails either is an error that
/// names the file and the field.
pub fn load(path: &Path) -> Result<(StateDict, StateDict, Meta)> {
    load_with(path, &default_config_check)
}

/// [`load`], reading the stored run config with `check`.
pub fn load_with(path: &Path, check: ConfigCheck) -> Result<(StateDict, StateDict, Meta)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading the checkpoint", path, e))?;
    from_bytes(&bytes, path, check)
}

/// [`load`] from the file's bytes; `path` names it in errors.
fn from_bytes(bytes: &[u8], path: &Path, check: ConfigCheck) -> Result<(StateDict, StateDict, Meta)> {
    let map = verify(bytes, path)?;
    let mut meta = Meta::from_map(&map, path, check)?;
    let mut params = StateDict::from_safetensors_bytes(bytes, path)?;
    let optim = params.split_prefix(OPTIM_PREFIX);
    // `<key>.<name>`: each callback's tensors back to its state (a key holds no dot).
    for (k, t) in params.split_prefix(CALLBACK_PREFIX).iter() {
        let state = k.split_once('.').and_then(|(key, name)| Some((meta.callbacks.get_mut(key)?, name)));
        let Some((state, name)) = state else {
            bail!(
                "{}: the tensor `{CALLBACK_PREFIX}{k}` belongs to no callback state in its metadata (`strata.callbacks`)\n{FIX}",
                path.display()
            );
        };
        state.tensors.insert(name, t.clone());
    }
    Ok((params, optim, meta))
}

// The checksum is a CRC32 (the `crc32fast` crate: small, maintained by the Rust compression
// crates' authors, SIMD-accelerated, and already in the build through `flate2`). CRC32 is the
// right tool here: it detects every error burst up to 32 bits with certainty, so any single
// changed byte is caught, not just almost surely; a cryptographic hash (SHA-256) would guard
// against deliberate forgery, which a checksum stored in the same file cannot anyway.

/// Writes the CRC32 of `bytes` (a serialised checkpoint whose checksum is [`PLACEHOLDER`]) in
/// the placeholder's place.
fn seal(bytes: &mut [u8]) {
    let at = header_range(bytes)
        .and_then(|h| checksum_value(&bytes[h.clone()], PLACEHOLDER).map(|r| h.start + r.start..h.start + r.end))
        .expect("a checkpoint just serialised holds the checksum placeholder once");
    let crc = crc32fast::hash(bytes);
    bytes[at].copy_from_slice(format!("crc32:{crc:08x}").as_bytes());
}

/// The byte range of the JSON header, after the 8-byte little-endian length.
fn header_range(bytes: &[u8]) -> Option<Range<usize>> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().expect("8 bytes"));
    let end = usize::try_from(n).ok()?.checked_add(8)?;
    (end <= bytes.len()).then_some(8..end)
}

/// Where the value of `"strata.checksum":"<value>"` sits in the header, when it appears
/// exactly once. (In JSON text a quote inside a string is escaped, so the pattern cannot
/// occur inside another value.)
fn checksum_value(header: &[u8], value: &str) -> Option<Range<usize>> {
    let needle = format!("\"{CHECKSUM_KEY}\":\"{value}\"");
    let needle = needle.as_bytes();
    let mut found = header.windows(needle.len()).enumerate().filter(|(_, w)| w == &needle).map(|(i, _)| i);
    let (first, second) = (found.next()?, found.next());
    let start = first + needle.len() - value.len() - 1;
    second.is_none().then_some(start..start + value.len())
}

/// Checks the file's checksum; returns its metadata.
fn verify(bytes: &[u8], path: &Path) -> Result<HashMap<String, String>> {
    let file = path.display();
    let Some(h) = header_range(bytes) else {
        bail!(
            "{file}: not a safetensors file: its first 8 bytes give a header length beyond the file's {} bytes\n{FIX}",
            bytes.len()
        );
    };
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[h.clone()])
        .map_err(|e| anyhow!("{file}: its safetensors header is not a JSON object ({e})\n{FIX}"))?;
    let Some(meta) = header.get("__metadata__").and_then(|m| m.as_object()) else {
        bail!(
            "{file}: not a strata checkpoint: its header has no `__metadata__` (a plain state_dict?); give a checkpoint from a run directory's checkpoints/ folder"
        );
    };
    let mut map = HashMap::new();
    for (k, v) in meta {
        let Some(s) = v.as_str() else {
            bail!("{file}: metadata `{k}` = {}: not a string\n{FIX}", shorten(&v.to_string()))
        };
        map.insert(k.clone(), s.to_string());
    }
    if !map.keys().any(|k| k.starts_with("strata.")) {
        bail!(
            "{file}: not a strata checkpoint: its metadata has no `strata.*` keys (a plain state_dict, such as a run's model.safetensors?)\nfix: give a checkpoint from a run directory's checkpoints/ folder, or the run directory"
        );
    }
    let Some(stored) = map.get(CHECKSUM_KEY) else {
        bail!(
            "{file}: no `{CHECKSUM_KEY}` in its metadata, so it cannot be verified: it was written before strata checksummed its checkpoints, or the key was damaged\n{FIX}"
        );
    };
    let well_formed = stored.len() == PLACEHOLDER.len()
        && stored.starts_with("crc32:")
        && stored.bytes().skip(6).all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        bail!("{file}: metadata `{CHECKSUM_KEY}` = {}: not `crc32:` and 8 hex digits\n{FIX}", shorten(stored));
    }
    let Some(at) = checksum_value(&bytes[h.clone()], stored) else {
        bail!(
            "{file}: metadata `{CHECKSUM_KEY}` = {stored:?} is not where strata writes it (the header was rewritten)\n{FIX}"
        );
    };
    let at = h.start + at.start..h.start + at.end;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..at.start]);
    crc.update(PLACEHOLDER.as_bytes());
    crc.update(&bytes[at.end..]);
    let actual = format!("crc32:{:08x}", crc.finalize());
    if &actual != stored {
        bail!(
            "{file}: checksum mismatch: metadata `{CHECKSUM_KEY}` = {stored:?}, but the file's bytes give {actual:?}\n{FIX}"
        );
    }
    Ok(map)
}

/// The checkpoints directory of a run.
pub fn dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// The file name of the checkpoint at a step.
pub fn step_file(run: &Path, step: usize) -> PathBuf {
    dir(run).join(format!("step-{step:09}.safetensors"))
}

/// The step checkpoints of a run, oldest first: the regular files named exactly as
/// [`step_file`] names them. Anything else in the folder — a user's `step-1.safetensors` or
/// `step-final.safetensors`, a folder, a link — is not strata's, so pruning never deletes it
/// and a resume never renames it aside.
pub fn list(run: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir(run))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: usize = name.strip_prefix("step-")?.strip_suffix(".safetensors")?.parse().ok()?;
            // `parse` also takes `+5`, `5` and `0005`: only step_file's own spelling is strata's.
            let own = name == format!("step-{step:09}.safetensors") && e.file_type().is_ok_and(|t| t.is_file());
            own.then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Whether a run directory holds any checkpoint (a step checkpoint or the best one).
pub fn any(run: &Path) -> bool {
    !list(run).is_empty() || dir(run).join("best.safetensors").exists()
}

/// The error for a run directory without step checkpoints.
fn none_to_resume(run: &Path) -> Error {
    anyhow!(
        "{}: no checkpoint to resume from (expected {}/step-*.safetensors): the run stopped before its first checkpoint\nfix: start it over in place with the command that started it (`strata train … --out {}`): a run directory without checkpoints is restarted automatically",
        run.display(),
        dir(run).display(),
        run.display()
    )
}

/// The checkpoint that evaluating, predicting from or exporting `run_or_file` reads: the file
/// itself, or a run directory's best checkpoint (`checkpoints/best.safetensors`, written when
/// the run had held-out data), else its newest step checkpoint. `what` names the use
/// ("evaluate") for the error of a directory without any.
pub fn best_or_latest(run_or_file: &Path, what: &str) -> Result<PathBuf> {
    if run_or_file.is_file() {
        return Ok(run_or_file.to_path_buf());
    }
    let best = dir(run_or_file).join("best.safetensors");
    if best.exists() {
        return Ok(best);
    }
    list(run_or_file).pop().map(|(_, p)| p).ok_or_else(|| {
        anyhow!(
            "{}: no checkpoint to {what} (expected {}/best.safetensors or step-*.safetensors): it is not a run directory, or its run stopped before its first checkpoint\nfix: give a run directory that has trained (`strata train --out DIR`), or a checkpoint file",
            run_or_file.display(),
            dir(run_or_file).display()
        )
    })
}

/// A checkpoint read back: its path, parameters, optimizer state and metadata.
pub type Loaded = (PathBuf, StateDict, StateDict, Meta);

/// What `--resume` starts from: the file itself when given a file (it must verify), else the
/// newest step checkpoint of the run directory that verifies (with none at all, its best
/// checkpoint, which must verify). Each newer one that does not is
/// reported on stderr and renamed to `*.damaged` — out of the way of later resumes and of
/// pruning, kept for a look — so the caller must hold the run directory's lock.
pub fn load_for_resume(run_or_file: &Path) -> Result<Loaded> {
    load_for_resume_with(run_or_file, &default_config_check)
}

/// [`load_for_resume`], reading the stored run config with `check`.
pub fn load_for_resume_with(run_or_file: &Path, check: ConfigCheck) -> Result<Loaded> {
    if run_or_file.is_file() {
        let (params, optim, meta) = load_with(run_or_file, check)?;
        return Ok((run_or_file.to_path_buf(), params, optim, meta));
    }
    let all = list(run_or_file);
    if all.is_empty() {
        // A run whose step checkpoint failed to write after its best one was written (a full
        // disk at an epoch's end): the best checkpoint is a complete checkpoint of an epoch's
        // end, written from the same state as that epoch's step checkpoint, so the run resumes
        // from it — what `any` (and the CLI's "already holds a run; continue it with
        // --resume") counts as something to resume.
        let best = dir(run_or_file).join("best.safetensors");
        if best.is_file() {
            let (params, optim, meta) = load_with(&best, check)?;
            eprintln!(
                "resuming from {}: the run has no step checkpoint (expected {}/step-*.safetensors), and its best checkpoint is the end of epoch {}",
                best.display(),
                dir(run_or_file).display(),
                meta.epoch
            );
            return Ok((best, params, optim, meta));
        }
        return Err(none_to_resume(run_or_file));
    }
    let mut skipped = vec![];
    for (_, path) in all.iter().rev() {
        match load_with(path, check) {
            Ok((params, optim, meta)) => {
                if !skipped.is_empty() {
                    eprintln!("resuming from {}, the newest checkpoint that verifies", path.display());
                }
                return Ok((path.clone(), params, optim, meta));
            }
            Err(e) => {
                let aside = path.with_extension("safetensors.damaged");
                let moved = match std::fs::rename(path, &aside) {
                    Ok(()) => format!("renamed to {}", aside.display()),
                    Err(err) => format!("could not rename it aside: {err}"),
                };
                eprintln!("warning: skipping the checkpoint {} ({moved}):\n  {e:#}", path.display());
                skipped.push(format!("{e:#}"));
            }
        }
    }
    bail!(
        "{}: none of its {} checkpoints verifies, so the run cannot be resumed:\n  {}\nfix: start the run over in another directory (or delete {} to start it over in place)",
        run_or_file.display(),
        all.len(),
        skipped.join("\n  "),
        run_or_file.display()
    )
}

/// Deletes all but the newest `keep` step checkpoints.
pub fn prune(run: &Path, keep: usize) -> Result<()> {
    let all = list(run);
    for (_, p) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_file(p).map_err(|e| Error::io("removing the old checkpoint", p, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
