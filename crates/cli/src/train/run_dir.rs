//! The run directory (`--out`) before a run writes into it. A run writes `config.toml`,
//! `model.toml`, `metrics.jsonl`, TensorBoard events, `checkpoints/` and `model.safetensors`
//! there, so it only ever writes into a directory that is new, empty, or strata's own.
//!
//! How strata recognises its own run directory: every run, before it writes anything else,
//! makes `checkpoints/` and takes the lock file `.lock` (holding its pid; see `run_lock`), so a
//! directory holding both — the lock file with nothing but a pid in it — was made by
//! `strata train`. A directory holding anything else (a project folder, a data folder, a
//! PyTorch `checkpoints/` without strata's lock file) is refused, never written into; and
//! starting a strata run over in place deletes only the files that strata writes.

use crate::checkpoint;
use crate::run_lock::LOCK_FILE;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// The files a run writes at the top of its run directory (besides `checkpoints/`, TensorBoard
/// events and the lock file).
pub(super) const RUN_FILES: [&str; 4] = ["config.toml", "model.toml", "metrics.jsonl", "model.safetensors"];

/// What a directory given as `--out` is.
#[derive(Debug, PartialEq)]
pub(super) enum Kind {
    /// Missing, or empty (nothing but what an aborted start of strata left: an empty
    /// `checkpoints/`, strata's lock file).
    Empty,
    /// A strata run directory (strata's lock file and `checkpoints/`).
    Strata,
    /// Anything else: a directory that holds these entries (sorted), not written into.
    Foreign(Vec<String>),
    /// A file, not a directory.
    File,
}

/// Whether `path` is strata's lock file: a small file holding nothing but a pid (or nothing, as
/// a run that is just starting leaves it).
fn is_strata_lock(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= 32)
        && std::fs::read_to_string(path).is_ok_and(|t| t.trim().bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` is a TensorBoard event file that strata wrote (see strata-train's
/// `tensorboard`: `events.out.tfevents.<time>.<host>.strata`).
pub(super) fn is_strata_events(name: &str) -> bool {
    name.starts_with("events.out.tfevents.") && name.ends_with(".strata")
}

/// What `dir` is (see [`Kind`]).
pub(super) fn kind(dir: &Path) -> Result<Kind> {
    if !dir.exists() {
        return Ok(Kind::Empty);
    }
    if !dir.is_dir() {
        return Ok(Kind::File);
    }
    let lock = is_strata_lock(&dir.join(LOCK_FILE));
    let checkpoints = checkpoint::dir(dir);
    if lock && checkpoints.is_dir() {
        return Ok(Kind::Strata);
    }
    let empty_dir = |p: &Path| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none());
    let mut others = vec![];
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading the run directory {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading the run directory {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name == LOCK_FILE && lock) || (name == "checkpoints" && empty_dir(&entry.path())) {
            continue;
        }
        others.push(name);
    }
    others.sort();
    Ok(if others.is_empty() { Kind::Empty } else { Kind::Foreign(others) })
}

/// Refuses a `--out` that a run must not write into: a file, or a directory that is neither
/// empty nor a strata run directory. `resuming`: the directory of the run being resumed, where
/// the checkpoint was found, which must be strata's too.
pub(super) fn check_writable(dir: &Path, resuming: bool) -> Result<()> {
    // A resumed run's directory holds the strata checkpoint it resumes (verified by its
    // checksum), even when its lock file did not travel with a copy of it.
    if resuming && checkpoint::dir(dir).is_dir() {
        return Ok(());
    }
    match kind(dir)? {
        Kind::Empty | Kind::Strata => Ok(()),
        Kind::File => bail!(
            "--out {}: a file, not a directory; a run directory is a folder that strata makes\nfix: give a new directory (e.g. --out runs/NAME)",
            dir.display()
        ),
        Kind::Foreign(names) => {
            let shown = names.iter().take(5).map(String::as_str).collect::<Vec<_>>().join(", ");
            let more = if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
            bail!(
                "{} {}: the directory is not empty ({shown}{more}) and is not a strata run directory (one that `strata train` made holds its lock file {LOCK_FILE} and a checkpoints/ folder); a run writes {}, TensorBoard events and checkpoints/ into its run directory, replacing files of those names, so it does not write into this one\nfix: {}",
                if resuming { "--resume" } else { "--out" },
                dir.display(),
                RUN_FILES.join(", "),
                if resuming {
                    "resume from a run directory that `strata train --out DIR` made".to_string()
                } else {
                    format!("give a new or empty directory (e.g. --out {})", dir.join("run").display())
                }
            )
        }
    }
}

/// Clears a strata run directory whose run stopped before its first checkpoint — nothing to
/// resume — so that the same command starts the run over in place: the files strata wrote
/// there (metrics.jsonl, strata's TensorBoard events, the resolved config.toml and model.toml)
/// go; anything else (the lock file, files a person put there) stays. `dir` must be
/// [`Kind::Strata`] and locked; says so on stderr when there was anything to clear.
pub(super) fn restart_in_place(dir: &Path) -> Result<()> {
    let mut removed = false;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading the run directory {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = ["metrics.jsonl", "config.toml", "model.toml"].contains(&name.as_str()) || is_strata_events(&name);
        if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {} to start the run over", entry.path().display()))?;
            removed = true;
        }
    }
    if removed {
        eprintln!(
            "{}: its run stopped before its first checkpoint, so there is nothing to resume: starting it over in place",
            dir.display()
        );
    }
    Ok(())
}

/// Refuses a run that would write over one of its own inputs (`inputs`: what each is, and its
/// path; a directory covers its files), whatever `--force` says: the run directory's files
/// ([`RUN_FILES`]) and `--save`; `--save` is refused on the run directory's own files too.
pub(super) fn refuse_overwriting_inputs(
    out: Option<&Path>,
    save: Option<&Path>,
    inputs: &[(&str, &Path)],
) -> Result<()> {
    if let Some(dir) = out {
        for name in RUN_FILES {
            let file = dir.join(name);
            if let Some((what, input)) = inputs.iter().find(|(_, i)| i.is_file() && crate::paths::same_file(&file, i)) {
                bail!(
                    "--out {}: the run would write its {name} over {what} {}, which it reads\nfix: give a new or empty directory (--out), or move {} out of the run directory",
                    dir.display(),
                    input.display(),
                    input.display()
                );
            }
        }
    }
    if let Some(save) = save {
        crate::paths::refuse_overwriting_an_input("--save", save, inputs)?;
        if let Some(dir) = out {
            let own = RUN_FILES.iter().any(|n| crate::paths::same_file(save, &dir.join(n)))
                || crate::paths::is_within(save, &checkpoint::dir(dir));
            if own {
                bail!(
                    "--save {}: a file of the run directory {} itself, which the run writes (its {} and checkpoints/)\nfix: give --save a path outside the run directory's own files",
                    save.display(),
                    dir.display(),
                    RUN_FILES.join(", ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        assert_eq!(kind(&d).unwrap(), Kind::Empty);
        std::fs::create_dir_all(d.join("checkpoints")).unwrap();
        assert_eq!(kind(&d).unwrap(), Kind::Empty);
        std::fs::write(d.join(".lock"), "").unwrap();
        assert_eq!(kind(&d).unwrap(), Kind::Strata);
        std::fs::write(d.join(".lock"), "4242\n").unwrap();
        std::fs::write(d.join("config.toml"), "x").unwrap();
        assert_eq!(kind(&d).unwrap(), Kind::Strata);
        // Someone else's lock file is not strata's.
        std::fs::write(d.join(".lock"), "{\"owner\": \"other tool\"}").unwrap();
        assert_eq!(kind(&d).unwrap(), Kind::Foreign(vec![".lock".into(), "config.toml".into()]));
        std::fs::remove_file(d.join(".lock")).unwrap();
        assert_eq!(kind(&d).unwrap(), Kind::Foreign(vec!["config.toml".into()]));
        let f = tmp.path().join("f");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(kind(&f).unwrap(), Kind::File);
        let e = check_writable(&d, false).unwrap_err().to_string();
        assert!(e.contains("the directory is not empty (config.toml) and is not a strata run directory"), "{e}");
    }

    #[test]
    fn starting_over_removes_only_strata_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for name in
            ["metrics.jsonl", "config.toml", "events.out.tfevents.1.h.strata", "events.out.tfevents.1.h", "notes.txt"]
        {
            std::fs::write(d.join(name), "x").unwrap();
        }
        restart_in_place(d).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["events.out.tfevents.1.h", "notes.txt"]);
    }
}
