//! One writer per run directory: `strata train` (fresh or `--resume`) holds an advisory lock on
//! `RUN_DIR/.lock` for as long as it runs, with its pid written inside for the message a second
//! writer gets; having taken it, it removes the temporary files that killed runs left behind.
//!
//! The lock is `std::fs::File::try_lock` (stable since Rust 1.89): `flock(2)` on Unix,
//! `LockFileEx` on Windows, no new dependency. It is what `fs4` and `fd-lock` wrap, and better
//! than a bare `libc::flock` for being portable. Like theirs, the lock belongs to the open file,
//! so the operating system releases it when the process ends, however it ends (SIGKILL, a
//! crash, a power cut): a stale lock of a dead process cannot exist, the next run simply takes
//! it. The pid inside is only for the message. The file itself stays; deleting it on exit
//! would let a third process lock a fresh file while a second still waits on the old one.

use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = ".lock";

/// The run directories this process holds, with their locked files: held until the process
/// exits, since the process is the writer.
static HELD: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// Takes `dir`'s lock for the rest of this process (nothing to do if it already holds it), or
/// refuses naming the process that holds it; then removes stray temporary files of killed
/// runs. `dir` must exist.
pub fn acquire(dir: &Path) -> Result<()> {
    let key = dir.canonicalize().with_context(|| format!("locking the run directory {}", dir.display()))?;
    let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if held.iter().any(|(p, _)| *p == key) {
        return Ok(());
    }
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: the holder's pid must survive a second writer's attempt.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the run directory's lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let (who, stop) = match text.trim().parse::<u32>() {
                Ok(pid) => {
                    (format!("pid {pid}"), format!("stop it (Ctrl-C, or `kill -INT {pid}`, writes a checkpoint)"))
                }
                Err(_) => ("a process that is just starting (no pid written yet)".to_string(), "stop it".to_string()),
            };
            bail!(
                "{}: the run directory is in use: another strata ({who}) is training into it and holds its lock file {}\nfix: wait for it to finish, or {stop} and then continue with `strata train --resume {}`; or train into another directory (--out)",
                dir.display(),
                path.display(),
                dir.display()
            );
        }
        Err(TryLockError::Error(e)) => bail!(
            "{}: cannot lock the run directory's lock file {}: {e}\nfix: put the run directory on a local file system that supports file locks",
            dir.display(),
            path.display()
        ),
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .with_context(|| format!("writing the pid into the lock file {}", path.display()))?;
    remove_stray_temporaries(dir);
    held.push((key, file));
    Ok(())
}

/// Whether `name` is a temporary file of `strata_nn::state_dict::atomic_write`:
/// `.<file name>.tmp-<pid>`.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.')
        && name.rsplit_once(".tmp-").is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the temporary files (checkpoints, final parameters, the rewritten metrics.jsonl) that
/// runs killed mid-write left in `dir` and its checkpoints folder. Only the lock holder calls
/// this, and it writes none yet, so every such file is a dead process's; failures to remove
/// one are only reported, as a leftover is harmless.
fn remove_stray_temporaries(dir: &Path) {
    let mut removed = vec![];
    for d in [dir.to_path_buf(), crate::checkpoint::dir(dir)] {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) && is_temporary(&entry.file_name().to_string_lossy()) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed.push(entry.path().display().to_string()),
                    Err(e) => {
                        eprintln!("warning: could not remove the stray temporary file {}: {e}", entry.path().display())
                    }
                }
            }
        }
    }
    if !removed.is_empty() {
        removed.sort();
        eprintln!("removed {} temporary file(s) left by a killed run: {}", removed.len(), removed.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names() {
        assert!(is_temporary(".step-000000140.safetensors.tmp-4242"));
        assert!(is_temporary(".metrics.jsonl.tmp-1"));
        for name in ["step-000000140.safetensors", ".lock", ".x.tmp-", ".x.tmp-12a", "a.tmp-12"] {
            assert!(!is_temporary(name), "{name}");
        }
    }

    #[test]
    fn a_held_directory_is_refused_to_another_open_file_and_stray_files_go() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(crate::checkpoint::dir(dir)).unwrap();
        let stray = crate::checkpoint::dir(dir).join(".step-000000007.safetensors.tmp-99999");
        std::fs::write(&stray, b"torn").unwrap();
        acquire(dir).unwrap();
        assert!(!stray.exists());
        acquire(dir).unwrap(); // held already: fine
        let pid = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // Another open file description conflicts, as another process's would.
        let other = File::open(dir.join(LOCK_FILE)).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
    }
}
