//! State dicts: parameters and buffers by PyTorch's dotted names, saved and loaded as
//! safetensors with PyTorch's layouts, so files move between strata and PyTorch unchanged
//! (`model.load_state_dict(safetensors.torch.load_file(path), strict=True)` on the Python side).
//!
//! Writes are atomic: a temporary file in the same directory is written, flushed to disk and
//! renamed over the target, so a crash leaves either the old file or the new one, never a torn one.

use crate::{Error, Result};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use strata_core::{DType, Tensor};

/// Named tensors in insertion order, as returned by [`crate::module::Module::state_dict`].
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

/// What a file that is not safetensors is instead, when that is recognisable, and how strata
/// reads it: a weights file given where safetensors is expected (`--weights`, `--init`).
fn other_format(bytes: &[u8], path: &Path) -> String {
    let p = path.display();
    if bytes.starts_with(b"PK\x03\x04") {
        format!(
            "; it is a zip archive, as torch.save writes: `strata convert {p} --output weights.safetensors` turns a PyTorch state_dict into safetensors"
        )
    } else if bytes.first() == Some(&0x80) {
        "; it starts as a Python pickle (torch.save's format before PyTorch 1.6): save it again with a newer PyTorch, then `strata convert` it".into()
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
        format!(
            "; it is named as an ONNX model: `strata import {p} --output DIR` gives its model file and safetensors weights"
        )
    } else {
        String::new()
    }
}

impl StateDict {
    /// An empty state_dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an entry.
    pub fn insert(&mut self, key: impl Into<String>, tensor: Tensor) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = tensor,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, tensor));
            }
        }
    }

    /// The tensor under `key`.
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(k, t)| (k.as_str(), t))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The safetensors encoding of this state_dict, with `metadata` in its header.
    pub fn to_safetensors_bytes(&self, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
        let mut buffers = Vec::with_capacity(self.entries.len());
        for (k, t) in &self.entries {
            let (dtype, bytes) = match t.dtype() {
                DType::F32 => {
                    (StDtype::F32, t.to_vec::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
                }
                DType::F64 => (StDtype::F64, t.to_vec::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
                DType::I64 => (StDtype::I64, t.to_vec::<i64>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
            };
            buffers.push((k.clone(), dtype, t.dims().to_vec(), bytes));
        }
        let mut views = Vec::with_capacity(buffers.len());
        for (k, dtype, shape, bytes) in &buffers {
            let view = TensorView::new(*dtype, shape.clone(), bytes)
                .map_err(|e| Error::SafeTensors { path: k.into(), message: e.to_string() })?;
            views.push((k.clone(), view));
        }
        let mut meta = metadata.unwrap_or_default();
        // What `safetensors.torch.save_file` writes; some readers look for it.
        meta.entry("format".into()).or_insert_with(|| "pt".into());
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::SafeTensors { path: "<memory>".into(), message: e.to_string() })
    }

    /// Saves as a safetensors file, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_with_metadata(path, None)
    }

    /// Saves with extra string metadata in the header, atomically.
    pub fn save_with_metadata(&self, path: impl AsRef<Path>, metadata: Option<HashMap<String, String>>) -> Result<()> {
        let bytes = self.to_safetensors_bytes(metadata)?;
        atomic_write(path.as_ref(), &bytes)
    }

    /// Reads a safetensors file. The header is validated against the file's length before
    /// any tensor is allocated. F32, F64 and I64 tensors load as they are; F16 and BF16 (as
    /// half-precision checkpoints are shared) widen to f32, and the other integer types and
    /// BOOL to i64, exactly; loading into a model converts to its element type.
    pub fn load(path: impl AsRef<Path>) -> Result<StateDict> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|error| Error::Io {
            path: path.into(),
            action: "reading the state_dict",
            error,
        })?;
        Self::from_safetensors_bytes(&bytes, path)
    }

    /// Reads a safetensors file and the string metadata of its header (`__metadata__`).
    pub fn load_with_metadata(path: impl AsRef<Path>) -> Result<(StateDict, HashMap<String, String>)> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|error| Error::Io {
            path: path.into(),
            action: "reading the state_dict",
            error,
        })?;
        let sd = Self::from_safetensors_bytes(&bytes, path)?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::SafeTensors { path: path.into(), message: e.to_string() })?;
        Ok((sd, meta.metadata().clone().unwrap_or_default()))
    }

    /// Removes and returns the entries whose keys start with `prefix`, with the prefix stripped
    /// (how checkpoints keep optimizer state apart from parameters).
    pub fn split_prefix(&mut self, prefix: &str) -> StateDict {
        let (taken, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.entries).into_iter().partition(|(k, _)| k.starts_with(prefix));
        self.index.clear();
        for (k, t) in kept {
            self.insert(k, t);
        }
        let mut out = StateDict::new();
        for (k, t) in taken {
            out.insert(k[prefix.len()..].to_string(), t);
        }
        out
    }

    /// Decodes safetensors bytes; `path` names the source in errors.
    pub fn from_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<StateDict> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::SafeTensors {
            path: path.into(),
            message: format!("{e}{}", other_format(bytes, path)),
        })?;
        let mut names: Vec<(String, TensorView)> = st.tensors();
        // The file orders tensors by offset; present them by name for stable output.
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut sd = StateDict::new();
        for (key, view) in names {
            let shape = view.shape().to_vec();
            let tensor = match widened(view.dtype(), view.data(), &shape) {
                Some(t) => t,
                None => {
                    return Err(Error::UnsupportedFileDType {
                        path: path.into(),
                        key,
                        dtype: format!("{:?}", view.dtype()),
                    });
                }
            }?;
            sd.insert(key, tensor);
        }
        Ok(sd)
    }
}

/// A tensor from little-endian `data` of element type `dtype`: f32, f64 and i64 as they are;
/// F16 and BF16 widened to f32 and the narrower integers and BOOL to i64, exactly (loading into
/// a model then converts to its element type, as `load_state_dict` copies). `None` for a type
/// strata does not read. Shared by safetensors files and PyTorch's (`torch_file`).
pub(crate) fn widened(dtype: StDtype, data: &[u8], shape: &[usize]) -> Option<strata_core::Result<Tensor>> {
    Some(match dtype {
        StDtype::F32 => Tensor::from_vec(
            data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect(),
            shape,
        ),
        StDtype::F64 => Tensor::from_vec(
            data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
            shape,
        ),
        StDtype::I64 => Tensor::from_vec(
            data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
            shape,
        ),
        // Half precision widened to f32 and narrower integers and bool to int64, exactly,
        // as a PyTorch file's are (`torch_file`): loading into a model then converts to
        // its element type, as `load_state_dict` copies.
        StDtype::F16 => Tensor::from_vec(
            data.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect::<Vec<f32>>(),
            shape,
        ),
        StDtype::BF16 => Tensor::from_vec(
            data.chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect::<Vec<f32>>(),
            shape,
        ),
        StDtype::I32 => Tensor::from_vec(
            data.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4 bytes")))).collect(),
            shape,
        ),
        StDtype::U32 => Tensor::from_vec(
            data.chunks_exact(4).map(|c| i64::from(u32::from_le_bytes(c.try_into().expect("4 bytes")))).collect(),
            shape,
        ),
        StDtype::I16 => {
            Tensor::from_vec(data.chunks_exact(2).map(|c| i64::from(i16::from_le_bytes([c[0], c[1]]))).collect(), shape)
        }
        StDtype::U16 => {
            Tensor::from_vec(data.chunks_exact(2).map(|c| i64::from(u16::from_le_bytes([c[0], c[1]]))).collect(), shape)
        }
        StDtype::I8 => Tensor::from_vec(data.iter().map(|&b| i64::from(b as i8)).collect(), shape),
        StDtype::U8 | StDtype::BOOL => Tensor::from_vec(data.iter().map(|&b| i64::from(b)).collect(), shape),
        _ => return None,
    })
}

/// An IEEE half-precision value, widened exactly.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m × 2^-24, normalised for f32.
            let shift = m.leading_zeros() - 21; // places to bring the top bit to bit 10
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename
/// over the target, fsync of the directory. On any error the target is untouched.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| Error::Io {
        path: path.into(),
        action: "writing",
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    // A missing directory is the user's path, not the temporary file's: say so about the path.
    if !dir.is_dir() {
        return Err(Error::Io {
            path: path.into(),
            action: "writing",
            error: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("its directory {} does not exist; create it first, or choose another path", dir.display()),
            ),
        });
    }
    if path.is_dir() {
        return Err(Error::Io {
            path: path.into(),
            action: "writing",
            error: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "it is a directory; give the path of a file (inside it, or elsewhere)",
            ),
        });
    }
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    fn io<'a>(action: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |error| Error::Io { path: p.into(), action, error }
    }
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io("creating a temporary file", &tmp))?;
        f.write_all(bytes).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("flushing to disk", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("renaming the temporary file over", path))?;
        // Make the rename itself durable; not every platform can open a directory, so best effort.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{Module, load_file};
    use crate::{Linear, Sequential};
    use strata_core::Generator;

    fn model(seed: u64) -> Sequential {
        let mut rng = Generator::new(seed);
        Sequential::new()
            .add_module("fc1", Linear::with_options(4, 3, true, DType::F32, &mut rng).unwrap())
            .unwrap()
            .add_module("fc2", Linear::with_options(3, 2, true, DType::F32, &mut rng).unwrap())
            .unwrap()
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let a = model(1);
        a.state_dict().save(&path).unwrap();
        let b = model(2);
        assert_ne!(a.parameters()[0].to_vec_f64(), b.parameters()[0].to_vec_f64());
        load_file(&b, &path, true).unwrap();
        for (pa, pb) in a.parameters().iter().zip(b.parameters()) {
            assert_eq!(pa.to_vec::<f32>().unwrap(), pb.to_vec::<f32>().unwrap());
        }
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn mismatches_are_all_reported_and_nothing_changes() {
        let a = model(1);
        let mut sd = StateDict::new();
        sd.insert("fc1.weight", Tensor::zeros(&[3, 5], DType::F32));
        sd.insert("fc1.bias", Tensor::zeros(&[3], DType::F32));
        sd.insert("fc3.weight", Tensor::zeros(&[1], DType::F32));
        let before = a.parameters()[1].to_vec_f64();
        let err = a.load_state_dict(&sd, true).unwrap_err().to_string();
        assert_eq!(
            err,
            "state_dict does not fit the model:\n  `fc1.weight`: the model has shape [3, 4], the state_dict has [3, 5]\n  \
             missing from the state_dict: fc2.weight, fc2.bias\n  not in the model: fc3.weight\n  \
             fix: load a state_dict saved from the same architecture, or pass strict = false to load only the matching keys"
        );
        assert_eq!(a.parameters()[1].to_vec_f64(), before);
    }

    #[test]
    fn bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.safetensors");
        std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk").unwrap();
        let e = StateDict::load(&path).unwrap_err().to_string();
        assert!(e.contains("junk.safetensors: not a valid safetensors file"), "{e}");
        assert!(!e.contains("; it "), "plain junk gets no guess: {e}");
        let e = StateDict::load(dir.path().join("absent.safetensors")).unwrap_err().to_string();
        assert!(e.contains("absent.safetensors: reading the state_dict failed"), "{e}");
        // Half precision and narrow integers widen exactly (as a PyTorch file's do).
        let path = dir.path().join("half.safetensors");
        let h: Vec<u8> = [0x3c00u16, 0xc000, 0x0001].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [0x3f80u16, 0xc040].iter().flat_map(|v| v.to_le_bytes()).collect();
        let i: Vec<u8> = [-3i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = [
            ("h", safetensors::tensor::TensorView::new(StDtype::F16, vec![3], &h).unwrap()),
            ("b", safetensors::tensor::TensorView::new(StDtype::BF16, vec![2], &b).unwrap()),
            ("i", safetensors::tensor::TensorView::new(StDtype::I32, vec![2], &i).unwrap()),
            ("u", safetensors::tensor::TensorView::new(StDtype::BOOL, vec![2], &[1u8, 0]).unwrap()),
        ];
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        let sd = StateDict::load(&path).unwrap();
        assert_eq!(sd.get("h").unwrap().to_vec::<f32>().unwrap(), [1.0, -2.0, 2f32.powi(-24)]);
        assert_eq!(sd.get("b").unwrap().to_vec::<f32>().unwrap(), [1.0, -3.0]);
        assert_eq!(sd.get("i").unwrap().to_vec::<i64>().unwrap(), [-3, 7]);
        assert_eq!(sd.get("u").unwrap().to_vec::<i64>().unwrap(), [1, 0]);
        // Weights in another format are named, with the command that reads them.
        for (name, bytes, says) in [
            ("model.pt", &b"PK\x03\x04rest of a zip"[..], "a zip archive, as torch.save writes: `strata convert "),
            ("old.pt", b"\x80\x02}q\x00", "a Python pickle (torch.save's format before PyTorch 1.6)"),
            ("m.onnx", b"\x08\x08\x12\x06strata", "named as an ONNX model: `strata import "),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let e = StateDict::load(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("{name}: not a valid safetensors file")) && e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keep.bin");
        std::fs::write(&path, b"old").unwrap();
        // Writing into a directory that does not exist fails before touching the target, and the
        // message is about the path asked for, not the temporary file beside it.
        let target = dir.path().join("nope/keep.bin");
        let e = atomic_write(&target, b"new").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: writing failed: its directory {} does not exist; create it first, or choose another path",
                target.display(),
                dir.path().join("nope").display()
            )
        );
        // A directory given as the file: said so, the directory untouched, no temporary left.
        let e = atomic_write(dir.path(), b"new").unwrap_err().to_string();
        assert!(
            e.ends_with("writing failed: it is a directory; give the path of a file (inside it, or elsewhere)"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        atomic_write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
