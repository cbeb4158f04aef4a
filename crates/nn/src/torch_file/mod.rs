//! PyTorch checkpoints without pickle's risks: `torch.save(model.state_dict(), path)` files
//! read by a restricted unpickler that never runs code.
//!
//! A `.pt` file (PyTorch ≥ 1.6) is a zip archive: `<top>/data.pkl` (a pickle of the object,
//! each tensor a call to `torch._utils._rebuild_tensor_v2` over a *persistent id* naming a
//! storage), `<top>/data/<key>` (each storage's raw bytes), `<top>/byteorder` (`little`) and
//! `<top>/version`; the top folder's name varies (the file's stem, or `archive`). The pickle is
//! run by `pickle`'s subset of Python's pickle machine, which only *looks up* globals in an
//! allow-list (`collections.OrderedDict`, the tensor-rebuilding functions, the storage types
//! and dtypes): any other global — `posix.system`, `builtins.eval`, `subprocess.Popen` — is
//! refused by name ([`TorchFileError::RefusedGlobal`]) before anything could call it.
//!
//! What is accepted: a dict of tensors (a state_dict), or a training checkpoint dict holding
//! one under `state_dict`, `model_state_dict` or `model` (picked in that order, the key said in
//! [`TorchStateDict::from_key`]; its other entries may be numbers, strings, lists, tuples,
//! dicts and tensors — an optimizer's state_dict — but no other objects). Tensors of the element
//! types in [`TorchDType`], with any storage offset and strides (transposed, sliced, expanded
//! views are written out contiguously) and shared storages (each view copied out of the one
//! storage). Refused, each with its reason: any other global, legacy (pre-1.6) files,
//! TorchScript archives, big-endian storages, complex and float8 tensors (no allowed storage
//! type), views reaching beyond their storage.
//!
//! Sizes are checked against the archive before anything is allocated: a record's declared
//! size against what its compressed bytes can hold, a storage's length against its persistent
//! id, each view against its storage, and all the tensors written out together against
//! 4 × the file's length + 256 MiB (expanded views can legitimately be larger than their
//! storage, not without bound). Each storage record is read once however many persistent ids
//! name it, and the records read together are held to the same bound (deflated records of
//! zeros, or zip entries overlapping one another, could otherwise unpack to far more).
//!
//! ```no_run
//! let sd = strata_nn::torch_file::load("weights.pt")?;
//! for (name, t) in &sd.tensors {
//!     println!("{name}: {} {:?}", t.dtype.name(), t.shape);
//! }
//! std::fs::write("weights.safetensors", sd.to_safetensors_bytes()?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod pickle;

pub use error::TorchFileError;
pub use pickle::{ALLOWED, TorchDType};

use crate::state_dict::widened;
use crate::{Error, Result, StateDict};
use pickle::{Heap, Object, TensorRef, Value, unpickle};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use strata_core::Tensor;

/// One tensor of a PyTorch file, contiguous, its bytes little-endian as safetensors stores them.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchTensor {
    /// The element type.
    pub dtype: TorchDType,
    /// The shape (`[]` for a 0-d tensor).
    pub shape: Vec<usize>,
    /// `numel × dtype.size()` bytes, row-major.
    pub data: Vec<u8>,
}

/// The tensors of a PyTorch file, in the file's order.
#[derive(Clone, Debug, Default)]
pub struct TorchStateDict {
    /// `(key, tensor)` in the state_dict's order.
    pub tensors: Vec<(String, TorchTensor)>,
    /// The entry of the checkpoint dict the state_dict was taken from (`state_dict`), or `None`
    /// when the file's object is the state_dict itself.
    pub from_key: Option<String>,
    /// How many storages more than one tensor views (tied weights, views saved together).
    pub shared_storages: usize,
}

/// Reads a `torch.save` file (see the [module docs](self)); errors name the file.
pub fn load(path: impl AsRef<Path>) -> Result<TorchStateDict> {
    let path = path.as_ref();
    let io = |error| Error::Io { path: path.into(), action: "reading the PyTorch file", error };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut head = [0u8; 16];
    let n = read_head(&mut file, &mut head).map_err(io)?;
    file.rewind().map_err(io)?;
    let result = if head[..n].starts_with(b"PK") {
        read_zip(std::io::BufReader::new(file), len)
    } else {
        let mut bytes = vec![];
        file.read_to_end(&mut bytes).map_err(io)?;
        read_other(&bytes)
    };
    result.map_err(|error| Error::TorchFile { path: path.into(), error })
}

/// Reads a `torch.save` file held in memory; `path` names it in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<TorchStateDict> {
    let result = if bytes.starts_with(b"PK") {
        read_zip(std::io::Cursor::new(bytes), bytes.len() as u64)
    } else {
        read_other(bytes)
    };
    result.map_err(|error| Error::TorchFile { path: path.into(), error })
}

fn read_head(f: &mut std::fs::File, head: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

type R<T> = std::result::Result<T, TorchFileError>;

/// The start of a legacy file: a protocol-2 pickle of torch's magic number 0x1950a86a20f9469cfc6c.
const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// A file that is not a zip archive: a legacy torch file, a bare pickle (run through the same
/// restricted machine, so a malicious one is refused by name), or neither.
fn read_other(bytes: &[u8]) -> R<TorchStateDict> {
    if bytes.starts_with(LEGACY_MAGIC) {
        return Err(TorchFileError::Legacy);
    }
    if bytes.first() == Some(&0x80) {
        let (value, heap) = unpickle(bytes)?;
        return Err(TorchFileError::BarePickle { what: heap.describe(&value) });
    }
    let start: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(TorchFileError::NotTorch {
        start: if start.is_empty() { "nothing: it is empty".into() } else { start.join(" ") },
    })
}

/// The most a data.pkl may unpack to: a state_dict's pickle holds names and small numbers.
const MAX_PICKLE: u64 = 256 << 20;

fn zip_err(e: zip::result::ZipError) -> TorchFileError {
    TorchFileError::Zip(e.to_string())
}

/// Reads the record `name`, whose declared size must be `expect` when given; the size is
/// checked against what the record's compressed bytes can hold before anything is allocated,
/// and the bytes read must match it (and the record's CRC).
fn read_record<Z: Read + Seek>(
    zip: &mut zip::ZipArchive<Z>,
    name: &str,
    expect: Option<u64>,
    file_len: u64,
) -> R<Vec<u8>> {
    let f = zip.by_name(name).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => TorchFileError::Archive(format!("the record `{name}` is missing")),
        e => zip_err(e),
    })?;
    let size = f.size();
    if let Some(n) = expect
        && size != n
    {
        return Err(TorchFileError::Content(format!(
            "the record `{name}` holds {size} bytes, its persistent id says {n}"
        )));
    }
    // Deflate expands at most 1032:1; a stored record is its own size.
    let ratio = if f.compression() == zip::CompressionMethod::Stored { 1 } else { 1032 };
    if f.compressed_size() > file_len || size > f.compressed_size().saturating_mul(ratio).saturating_add(64) {
        return Err(TorchFileError::Zip(format!(
            "the record `{name}` claims {size} bytes, more than the archive ({file_len} bytes) can hold"
        )));
    }
    let size = usize::try_from(size).map_err(|_| TorchFileError::Zip(format!("the record `{name}` is too large")))?;
    let mut buf = Vec::with_capacity(size);
    // One byte more than declared: the reader reaches its end, where the CRC is checked.
    f.take(size as u64 + 1).read_to_end(&mut buf).map_err(|e| TorchFileError::Zip(format!("reading `{name}`: {e}")))?;
    if buf.len() != size {
        return Err(TorchFileError::Zip(format!(
            "the record `{name}` holds {} bytes, its header says {size}",
            buf.len()
        )));
    }
    Ok(buf)
}

fn read_zip<Z: Read + Seek>(reader: Z, file_len: u64) -> R<TorchStateDict> {
    let mut zip = zip::ZipArchive::new(reader).map_err(zip_err)?;
    let names: Vec<String> = zip.file_names().filter_map(|n| n.ok().map(|n| n.into_owned())).collect();
    // `<top>/data.pkl`, the top folder named as torch.save chose.
    let mut pickles = names.iter().filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1);
    let Some(pkl) = pickles.next() else {
        return Err(TorchFileError::Archive(
            "a zip archive without data.pkl: not one torch.save wrote (save with `torch.save(model.state_dict(), path)`)".into(),
        ));
    };
    let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
    if names.iter().any(|n| n.starts_with(&format!("{prefix}code/")) || *n == format!("{prefix}constants.pkl")) {
        return Err(TorchFileError::Archive(
            "a TorchScript archive (torch.jit.save), whose pickles name compiled classes; save the model's weights with `torch.save(model.state_dict(), path)`".into(),
        ));
    }
    if names.iter().any(|n| *n == format!("{prefix}byteorder")) {
        let order = read_record(&mut zip, &format!("{prefix}byteorder"), None, file_len)?;
        match order.as_slice() {
            b"little" => {}
            b"big" => {
                return Err(TorchFileError::Content(
                    "saved on a big-endian machine (byteorder = big); strata reads little-endian storages: load and re-save it on a little-endian machine".into(),
                ));
            }
            other => {
                return Err(TorchFileError::Content(format!(
                    "unknown byteorder record {:?}",
                    String::from_utf8_lossy(&other[..other.len().min(16)])
                )));
            }
        }
    }
    // Absent (files before PyTorch 1.10): little-endian, as torch.load assumes.
    let pkl_size = zip.by_name(pkl).map_err(zip_err)?.size();
    if pkl_size > MAX_PICKLE {
        return Err(TorchFileError::Content(format!(
            "data.pkl is {pkl_size} bytes, more than the {MAX_PICKLE} a state_dict's pickle needs"
        )));
    }
    let pkl = pkl.clone();
    let data = read_record(&mut zip, &pkl, None, file_len)?;
    let (top, heap) = unpickle(&data)?;
    let (entries, from_key) = pick_state_dict(&top, &heap)?;

    // Each storage record read once, however many tensors (or persistent ids) name it.
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut viewers: HashMap<String, usize> = HashMap::new();
    let limit = file_len.saturating_mul(4).saturating_add(256 << 20);
    let mut total = 0u64;
    let mut read = 0u64;
    let mut tensors = Vec::with_capacity(entries.len());
    for (key, t) in entries {
        let Object::Storage(s) = &heap.objects[t.storage] else { unreachable!("the unpickler checks it") };
        *viewers.entry(s.key.clone()).or_default() += 1;
        let nbytes = match s.dtype {
            Some(d) => s.numel.checked_mul(d.size() as u64),
            None => Some(s.numel),
        }
        .ok_or_else(|| TorchFileError::Content(format!("`{key}`: its storage's size overflows")))?;
        let name = format!("{prefix}data/{}", s.key);
        match storages.get(&s.key) {
            Some(bytes) if bytes.len() as u64 != nbytes => {
                return Err(TorchFileError::Content(format!(
                    "the record `{name}` holds {} bytes, its persistent id says {nbytes}",
                    bytes.len()
                )));
            }
            Some(_) => {}
            None => {
                read = read.saturating_add(nbytes);
                if read > limit {
                    return Err(TorchFileError::Content(format!(
                        "`{key}`: its storage brings the storages read to more than {limit} bytes: far more than the file's {file_len} bytes"
                    )));
                }
                storages.insert(s.key.clone(), read_record(&mut zip, &name, Some(nbytes), file_len)?);
            }
        }
        let numel = t.size.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let out_bytes = numel.and_then(|n| n.checked_mul(t.dtype.size() as u64));
        total = out_bytes.and_then(|b| total.checked_add(b)).unwrap_or(u64::MAX);
        if total > limit {
            return Err(TorchFileError::Content(format!(
                "`{key}` (shape {:?}) brings the tensors to more than {limit} bytes: far more than the file's {file_len} bytes of storages",
                t.size
            )));
        }
        let data = materialise(&key, t, &storages[&s.key])?;
        let shape = t.size.iter().map(|&d| d as usize).collect();
        tensors.push((key, TorchTensor { dtype: t.dtype, shape, data }));
    }
    let shared_storages = viewers.values().filter(|&&n| n > 1).count();
    Ok(TorchStateDict { tensors, from_key, shared_storages })
}

/// The entries of a checkpoint dict that may hold the state_dict, in the order they are tried.
pub const STATE_DICT_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];

/// The state_dict in the unpickled object: the object itself when it is a dict of tensors, else
/// its first entry of [`STATE_DICT_KEYS`] that is.
fn pick_state_dict<'h>(top: &Value, heap: &'h Heap) -> R<(Entries<'h>, Option<String>)> {
    let Some(d) = as_dict(top, heap) else {
        return Err(TorchFileError::Content(format!(
            "the file holds {}, not a dict of tensors (a state_dict); save `model.state_dict()`",
            heap.describe(top)
        )));
    };
    let not = match tensors_of(d, heap) {
        Ok(t) => return Ok((t, None)),
        Err(not) => not,
    };
    for key in STATE_DICT_KEYS {
        if let Some(inner) = d.get_str(key).and_then(|v| as_dict(v, heap))
            && let Ok(t) = tensors_of(inner, heap)
        {
            return Ok((t, Some(key.to_string())));
        }
    }
    let shown: Vec<String> = not.iter().take(6).cloned().collect();
    let more = if not.len() > 6 { format!(" and {} more", not.len() - 6) } else { String::new() };
    Err(TorchFileError::Content(format!(
        "the file's dict is no state_dict: not tensors: {}{more}; and it has no `state_dict`, `model_state_dict` or `model` entry that is one. Save `model.state_dict()` itself",
        shown.join(", ")
    )))
}

/// A state_dict's entries: each key with its tensor.
type Entries<'h> = Vec<(String, &'h TensorRef)>;

/// The dict `v` refers to, if it is one.
fn as_dict<'h>(v: &Value, heap: &'h Heap) -> Option<&'h pickle::Dict> {
    match v {
        Value::Obj(i) => match &heap.objects[*i] {
            Object::Dict(d) => Some(d),
            _ => None,
        },
        _ => None,
    }
}

/// The entries of `d` when every one is a tensor under a string key (a state_dict), else the
/// entries that are not, described.
fn tensors_of<'h>(
    d: &'h pickle::Dict,
    heap: &'h Heap,
) -> std::result::Result<Vec<(String, &'h TensorRef)>, Vec<String>> {
    let mut ok = vec![];
    let mut not = vec![];
    for (k, v) in &d.entries {
        match (k, v) {
            (Value::Str(k), Value::Obj(i)) if matches!(heap.objects[*i], Object::Tensor(_)) => {
                if let Object::Tensor(t) = &heap.objects[*i] {
                    ok.push((k.to_string(), t));
                }
            }
            (Value::Str(k), v) => not.push(format!("`{k}` ({})", heap.describe(v))),
            (k, _) => not.push(format!("the key {}", heap.describe(k))),
        }
    }
    if d.entries.is_empty() {
        not.push("nothing: the dict is empty".into());
    }
    if not.is_empty() { Ok(ok) } else { Err(not) }
}

/// The tensor's elements copied out of its storage, row-major: transposed, sliced and expanded
/// views come out contiguous.
fn materialise(key: &str, t: &TensorRef, storage: &[u8]) -> R<Vec<u8>> {
    let item = t.dtype.size();
    let numel = t.size.iter().product::<u64>(); // checked by the caller
    if numel == 0 {
        return Ok(vec![]);
    }
    let elems = (storage.len() / item) as u64;
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&n, &s)| (n - 1).checked_mul(s).and_then(|x| a.checked_add(x)));
    if last.is_none_or(|l| l >= elems) {
        return Err(TorchFileError::Content(format!(
            "`{key}`: its view (offset {}, size {:?}, stride {:?}) reaches beyond its storage of {elems} elements",
            t.offset, t.size, t.stride
        )));
    }
    let mut out = Vec::with_capacity(numel as usize * item);
    let rank = t.size.len();
    if rank == 0 {
        let at = t.offset as usize * item;
        out.extend_from_slice(&storage[at..at + item]);
        return Ok(out);
    }
    // Odometer over all but the last dimension; the last is one run when its stride is 1.
    let (inner, inner_stride) = (t.size[rank - 1] as usize, t.stride[rank - 1] as usize);
    let mut idx = vec![0u64; rank - 1];
    loop {
        let base = t.offset + idx.iter().zip(&t.stride).map(|(&i, &s)| i * s).sum::<u64>();
        let base = base as usize;
        if inner_stride == 1 {
            out.extend_from_slice(&storage[base * item..(base + inner) * item]);
        } else {
            for j in 0..inner {
                let at = (base + j * inner_stride) * item;
                out.extend_from_slice(&storage[at..at + item]);
            }
        }
        // Next index, last dimension fastest.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return Ok(out);
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

impl TorchDType {
    /// The safetensors element type.
    pub fn safetensors_dtype(self) -> StDtype {
        match self {
            TorchDType::F32 => StDtype::F32,
            TorchDType::F64 => StDtype::F64,
            TorchDType::F16 => StDtype::F16,
            TorchDType::BF16 => StDtype::BF16,
            TorchDType::I64 => StDtype::I64,
            TorchDType::I32 => StDtype::I32,
            TorchDType::I16 => StDtype::I16,
            TorchDType::I8 => StDtype::I8,
            TorchDType::U8 => StDtype::U8,
            TorchDType::Bool => StDtype::BOOL,
            TorchDType::U16 => StDtype::U16,
            TorchDType::U32 => StDtype::U32,
            TorchDType::U64 => StDtype::U64,
        }
    }
}

impl TorchStateDict {
    /// The safetensors encoding, every tensor in its own element type (`format = pt` in the
    /// header, as `safetensors.torch.save_file` writes).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>> {
        let mut views = Vec::with_capacity(self.tensors.len());
        for (k, t) in &self.tensors {
            let view = TensorView::new(t.dtype.safetensors_dtype(), t.shape.clone(), &t.data)
                .map_err(|e| Error::SafeTensors { path: k.into(), message: e.to_string() })?;
            views.push((k.clone(), view));
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::SafeTensors { path: "<memory>".into(), message: e.to_string() })
    }

    /// The tensors as a strata [`StateDict`]: f32, f64 and int64 as they are; float16 and
    /// bfloat16 widened to f32 and the other integer types and bool to int64, exactly (loading
    /// it into a model then converts to the model's element type, as PyTorch's
    /// `load_state_dict` copies).
    pub fn to_state_dict(&self) -> Result<StateDict> {
        let mut sd = StateDict::new();
        for (k, t) in &self.tensors {
            let tensor = if t.dtype == TorchDType::U64 {
                // Read as int64: refused above its range rather than wrapped.
                let v: Vec<u64> =
                    t.data.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8"))).collect();
                if v.iter().any(|&x| x > i64::MAX as u64) {
                    return Err(Error::UnsupportedFileDType {
                        path: "the PyTorch file".into(),
                        key: k.clone(),
                        dtype: "uint64 (values above int64's range)".into(),
                    });
                }
                Tensor::from_vec(v.into_iter().map(|x| x as i64).collect::<Vec<i64>>(), &t.shape)?
            } else {
                widened(t.dtype.safetensors_dtype(), &t.data, &t.shape).expect("every other torch dtype widens")?
            };
            sd.insert(k.clone(), tensor);
        }
        Ok(sd)
    }
}

#[cfg(test)]
mod tests {
    use crate::state_dict::f16_to_f32;

    #[test]
    fn half_precision_widens_exactly() {
        for (h, f) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x0001, 2f32.powi(-24)),
            (0x03ff, 1023.0 * 2f32.powi(-24)),
            (0x0400, 2f32.powi(-14)),
            (0x7bff, 65504.0),
            (0x7c00, f32::INFINITY),
            (0x8000, -0.0),
        ] {
            assert_eq!(f16_to_f32(h).to_bits(), f.to_bits(), "{h:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
