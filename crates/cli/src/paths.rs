//! Paths compared as the file system sees them, for the commands' "an output is never one of
//! its own inputs" checks (`train --out`/`--save`, `export`, `convert`, `import`): two spellings
//! of one file (`./a`, `a`, `dir/../a`, a symbolic link, a hard link) are the same file.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// `path` made absolute, with symbolic links and `..` resolved as far as it exists: its longest
/// existing ancestor canonicalised, the rest appended (an output file need not exist yet).
pub fn resolved(path: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<Component> = abs.components().collect();
    // The longest prefix that exists, canonicalised; the rest (which does not exist, so holds no
    // links) normalised by its names.
    for split in (1..=parts.len()).rev() {
        let head: PathBuf = parts[..split].iter().collect();
        if let Ok(mut p) = head.canonicalize() {
            for c in &parts[split..] {
                match c {
                    Component::ParentDir => {
                        p.pop();
                    }
                    Component::CurDir => {}
                    c => p.push(c),
                }
            }
            return p;
        }
    }
    abs
}

/// Whether `a` and `b` name the same file: the same resolved path, or (both existing, on Unix)
/// the same device and inode (a hard link).
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b))
            && x.is_file()
            && y.is_file()
        {
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
    }
    resolved(a) == resolved(b)
}

/// Whether `path` is `dir` or lies inside it (both resolved).
pub fn is_within(path: &Path, dir: &Path) -> bool {
    resolved(path).starts_with(resolved(dir))
}

/// Refuses an output that is one of the command's inputs, whatever `--force` says: writing it
/// would destroy what the command reads. `flag` names the output's option (`-o`, `--save`);
/// `inputs` are what each input is (`the checkpoint`) and its path. A directory input (a data
/// folder) covers every existing file in it.
pub fn refuse_overwriting_an_input(flag: &str, output: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    for (what, input) in inputs {
        let hit = if input.is_dir() { output.exists() && is_within(output, input) } else { same_file(output, input) };
        if hit {
            bail!(
                "{flag} {}: {} {} {}, an input of this command; writing there would destroy it (--force does not allow that)\nfix: choose another {flag} path",
                output.display(),
                if input.is_dir() { "is inside" } else { "is" },
                what,
                input.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_file_are_the_same_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.csv"), "x").unwrap();
        assert!(same_file(&dir.join("a.csv"), &dir.join("sub/../a.csv")));
        assert!(same_file(&dir.join("new/x/../y"), &dir.join("new/y")));
        assert!(!same_file(&dir.join("a.csv"), &dir.join("b.csv")));
        #[cfg(unix)]
        {
            std::fs::hard_link(dir.join("a.csv"), dir.join("hard.csv")).unwrap();
            std::os::unix::fs::symlink(dir.join("a.csv"), dir.join("soft.csv")).unwrap();
            assert!(same_file(&dir.join("a.csv"), &dir.join("hard.csv")));
            assert!(same_file(&dir.join("a.csv"), &dir.join("soft.csv")));
        }
        let e = refuse_overwriting_an_input("-o", &dir.join("sub/../a.csv"), &[("the data", &dir.join("a.csv"))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("is the data") && e.contains("--force does not allow that"), "{e}");
        std::fs::write(dir.join("sub/x"), "x").unwrap();
        let e = refuse_overwriting_an_input("--save", &dir.join("sub/x"), &[("the data folder", &dir.join("sub"))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("is inside the data folder"), "{e}");
        // A new file in a folder of inputs destroys nothing.
        assert!(refuse_overwriting_an_input("--save", &dir.join("sub/y"), &[("the data", &dir.join("sub"))]).is_ok());
        assert!(refuse_overwriting_an_input("-o", &dir.join("b.csv"), &[("the data", &dir.join("a.csv"))]).is_ok());
    }
}
