//! A restricted unpickler: the part of Python's pickle machine that `torch.save` uses for
//! state_dicts (protocols 2 to 5), and nothing that runs code.
//!
//! Python's `pickle` calls whatever global a file names (`os.system`, `builtins.eval`): loading a
//! checkpoint is running a program. Here a global is only *looked up* in an allow-list
//! ([`ALLOWED`]) and becomes a marker value; "calling" one (REDUCE, NEWOBJ) is a match on that
//! marker that builds an empty dict or a tensor description. Any other global is refused at the
//! GLOBAL / STACK_GLOBAL opcode, before anything could use it, with its `module.name`; an opcode
//! outside the subset is refused with its name and byte offset.
//!
//! Resources are bounded by the pickle's length: every opcode pushes at most one value, a
//! container's items are moved, never copied (values are small: numbers, shared strings, or
//! indices into the object heap), the memo is a map (a huge index costs nothing), and hashing
//! dict keys draws on a work budget proportional to the input, so no input hangs the reader.
//! What the machine holds (stack, marks, memo, objects, tensor shapes) is also counted against
//! [`MAX_MEMORY`]: a deflated data.pkl of a few hundred KiB can unpack to 256 MiB of DUPs or
//! empty dicts, each of which would otherwise cost tens of bytes. A tensor has at most
//! [`MAX_RANK`] dimensions, checked before its size tuple is read.
//!
//! Why one file over 700 lines: the opcode loop, the allow-list and their unit tests are the
//! security boundary, kept together so it is reviewed in one piece.

use super::error::TorchFileError;
use std::collections::HashMap;
use std::rc::Rc;

/// The element type of a torch storage or tensor, as safetensors can hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TorchDType {
    /// `torch.float32` (`FloatStorage`).
    F32,
    /// `torch.float64` (`DoubleStorage`).
    F64,
    /// `torch.float16` (`HalfStorage`).
    F16,
    /// `torch.bfloat16` (`BFloat16Storage`).
    BF16,
    /// `torch.int64` (`LongStorage`).
    I64,
    /// `torch.int32` (`IntStorage`).
    I32,
    /// `torch.int16` (`ShortStorage`).
    I16,
    /// `torch.int8` (`CharStorage`).
    I8,
    /// `torch.uint8` (`ByteStorage`).
    U8,
    /// `torch.bool` (`BoolStorage`).
    Bool,
    /// `torch.uint16` (saved through an untyped storage and `_rebuild_tensor_v3`).
    U16,
    /// `torch.uint32` (likewise).
    U32,
    /// `torch.uint64` (likewise).
    U64,
}

impl TorchDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TorchDType::F64 | TorchDType::I64 | TorchDType::U64 => 8,
            TorchDType::F32 | TorchDType::I32 | TorchDType::U32 => 4,
            TorchDType::F16 | TorchDType::BF16 | TorchDType::I16 | TorchDType::U16 => 2,
            TorchDType::I8 | TorchDType::U8 | TorchDType::Bool => 1,
        }
    }

    /// PyTorch's name (`float32`), as `torch.<name>`.
    pub fn name(self) -> &'static str {
        match self {
            TorchDType::F32 => "float32",
            TorchDType::F64 => "float64",
            TorchDType::F16 => "float16",
            TorchDType::BF16 => "bfloat16",
            TorchDType::I64 => "int64",
            TorchDType::I32 => "int32",
            TorchDType::I16 => "int16",
            TorchDType::I8 => "int8",
            TorchDType::U8 => "uint8",
            TorchDType::Bool => "bool",
            TorchDType::U16 => "uint16",
            TorchDType::U32 => "uint32",
            TorchDType::U64 => "uint64",
        }
    }

    /// The legacy typed-storage class `torch.save` names for this type (`FloatStorage`), if any.
    fn storage_name(self) -> Option<&'static str> {
        Some(match self {
            TorchDType::F32 => "FloatStorage",
            TorchDType::F64 => "DoubleStorage",
            TorchDType::F16 => "HalfStorage",
            TorchDType::BF16 => "BFloat16Storage",
            TorchDType::I64 => "LongStorage",
            TorchDType::I32 => "IntStorage",
            TorchDType::I16 => "ShortStorage",
            TorchDType::I8 => "CharStorage",
            TorchDType::U8 => "ByteStorage",
            TorchDType::Bool => "BoolStorage",
            TorchDType::U16 | TorchDType::U32 | TorchDType::U64 => return None,
        })
    }

    /// Every type, for lookups by name.
    const ALL: [TorchDType; 13] = [
        TorchDType::F32,
        TorchDType::F64,
        TorchDType::F16,
        TorchDType::BF16,
        TorchDType::I64,
        TorchDType::I32,
        TorchDType::I16,
        TorchDType::I8,
        TorchDType::U8,
        TorchDType::Bool,
        TorchDType::U16,
        TorchDType::U32,
        TorchDType::U64,
    ];
}

/// The most memory the pickle machine's values and objects may take (counted as they are
/// built): a state_dict's pickle needs a few bytes per tensor, even a large checkpoint's a few
/// MiB.
pub(super) const MAX_MEMORY: usize = 256 << 20;

/// The most dimensions a tensor may have (PyTorch's own limit is 64).
pub(super) const MAX_RANK: usize = 64;

/// The globals a state_dict pickle may name, for the refusal message.
pub const ALLOWED: &str = "collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_tensor_v3, \
     torch._utils._rebuild_parameter, torch.storage.UntypedStorage, the torch.*Storage types (torch.FloatStorage, …) \
     and the torch dtypes (torch.float32, …)";

/// An allowed global, looked up by name and never executed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Global {
    /// `collections.OrderedDict`: called with no arguments, an empty dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])`.
    RebuildTensorV3,
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)`: the tensor `data`.
    RebuildParameter,
    /// A storage class in a persistent id: `torch.FloatStorage` (typed), or
    /// `torch.storage.UntypedStorage` (`None`: bytes).
    Storage(Option<TorchDType>),
    /// A dtype, `torch.uint16`: `_rebuild_tensor_v3`'s element type.
    DType(TorchDType),
}

impl Global {
    /// The allow-list.
    fn resolve(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensorV3,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch.storage", "UntypedStorage") | ("torch", "UntypedStorage") => Global::Storage(None),
            ("torch", n) => {
                if let Some(&d) = TorchDType::ALL.iter().find(|d| d.storage_name() == Some(n)) {
                    Global::Storage(Some(d))
                } else if let Some(&d) = TorchDType::ALL.iter().find(|d| d.name() == n) {
                    Global::DType(d)
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }

    /// `module.name`, for messages.
    fn describe(self) -> String {
        match self {
            Global::OrderedDict => "collections.OrderedDict".into(),
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
            Global::RebuildTensorV3 => "torch._utils._rebuild_tensor_v3".into(),
            Global::RebuildParameter => "torch._utils._rebuild_parameter".into(),
            Global::Storage(None) => "torch.storage.UntypedStorage".into(),
            Global::Storage(Some(d)) => format!("torch.{}", d.storage_name().unwrap_or("?")),
            Global::DType(d) => format!("torch.{}", d.name()),
        }
    }
}

/// A value on the pickle machine's stack. Containers live in the [`Heap`] and are referred to
/// by index, so pushing, memoising and fetching never copies them.
#[derive(Clone, Debug)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Obj(usize),
}

/// What the heap holds.
#[derive(Debug)]
pub(super) enum Object {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Dict),
    Global(Global),
    Storage(Storage),
    Tensor(TensorRef),
}

/// A dict (or OrderedDict) in insertion order; a key set again replaces its value.
#[derive(Debug, Default)]
pub(super) struct Dict {
    pub(super) entries: Vec<(Value, Value)>,
    index: HashMap<Key, usize>,
}

/// A dict key that can be compared (strings, numbers, None); other keys are kept as given.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Key {
    None,
    Int(i64),
    Str(Rc<str>),
}

impl Dict {
    /// The value under the string key `key`.
    pub(super) fn get_str(&self, key: &str) -> Option<&Value> {
        self.index.get(&Key::Str(key.into())).map(|&i| &self.entries[i].1)
    }
}

/// A storage named by a persistent id: `('storage', storage_type, key, location, numel)`.
#[derive(Debug)]
pub(super) struct Storage {
    /// The element type of a typed storage; `None` for an untyped one (bytes).
    pub(super) dtype: Option<TorchDType>,
    /// Its record in the archive: `data/<key>`.
    pub(super) key: String,
    /// Elements (typed) or bytes (untyped).
    pub(super) numel: u64,
}

/// A tensor: a view into a storage, in elements of `dtype`.
#[derive(Debug)]
pub(super) struct TensorRef {
    /// The [`Object::Storage`] it views (a heap index).
    pub(super) storage: usize,
    pub(super) dtype: TorchDType,
    pub(super) offset: u64,
    pub(super) size: Vec<u64>,
    pub(super) stride: Vec<u64>,
}

/// The objects a pickle built; [`Value::Obj`] indexes it.
#[derive(Debug, Default)]
pub(super) struct Heap {
    pub(super) objects: Vec<Object>,
}

impl Heap {
    /// What `v` is, for messages: `an int`, `a tuple of 3`, `a dict of 2 entries`, `a tensor`.
    pub(super) fn describe(&self, v: &Value) -> String {
        match v {
            Value::None => "None".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(i) => format!("the int {i}"),
            Value::Float(f) => format!("the float {f}"),
            Value::Str(s) if s.chars().count() <= 40 => format!("the str {s:?}"),
            Value::Str(_) => "a str".into(),
            Value::Bytes(b) => format!("bytes ({} long)", b.len()),
            Value::Obj(i) => match &self.objects[*i] {
                Object::Tuple(t) => format!("a tuple of {}", t.len()),
                Object::List(l) => format!("a list of {}", l.len()),
                Object::Dict(d) => format!("a dict of {} entries", d.entries.len()),
                Object::Global(g) => format!("the global {}", g.describe()),
                Object::Storage(_) => "a storage".into(),
                Object::Tensor(_) => "a tensor".into(),
            },
        }
    }
}

/// Runs the pickle in `data` up to its STOP: the value it returns and the objects it built.
pub(super) fn unpickle(data: &[u8]) -> Result<(Value, Heap), TorchFileError> {
    let mut vm = Vm {
        data,
        pos: 0,
        at: 0,
        stack: vec![],
        marks: vec![],
        memo: HashMap::new(),
        heap: Heap::default(),
        budget: data.len().saturating_mul(32).saturating_add(1 << 16),
        memory: MAX_MEMORY,
    };
    let value = vm.run()?;
    Ok((value, vm.heap))
}

/// The pickle machine's state.
struct Vm<'a> {
    data: &'a [u8],
    /// The next byte to read.
    pos: usize,
    /// Where the current opcode starts (for messages).
    at: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK not yet consumed (Python's metastack).
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    heap: Heap,
    /// Work left: one unit per opcode, and per 8 bytes of a hashed dict key.
    budget: usize,
    /// Bytes left of [`MAX_MEMORY`] for the values and objects the pickle builds.
    memory: usize,
}

type R<T> = Result<T, TorchFileError>;

impl<'a> Vm<'a> {
    fn bad(&self, what: impl Into<String>) -> TorchFileError {
        TorchFileError::Malformed { offset: self.at, what: what.into() }
    }

    fn take(&mut self, n: usize, what: &str) -> R<&'a [u8]> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(self.bad(format!("{what} needs {n} bytes, the pickle ends {left} bytes on")));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self, what: &str) -> R<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn spend(&mut self, units: usize) -> R<()> {
        if units > self.budget {
            return Err(self.bad(
                "the pickle asks for far more work than its length warrants (a decompression-bomb-like structure)",
            ));
        }
        self.budget -= units;
        Ok(())
    }

    /// Counts `bytes` more of what the machine holds against [`MAX_MEMORY`].
    fn charge(&mut self, bytes: usize) -> R<()> {
        if bytes > self.memory {
            return Err(self.bad(format!(
                "the pickle builds more than {} MiB of values and objects, far more than a state_dict's needs (a decompression-bomb-like structure)",
                MAX_MEMORY >> 20
            )));
        }
        self.memory -= bytes;
        Ok(())
    }

    /// What the machine holds: values on the stack, marks, memo entries and heap objects.
    fn held(&self) -> [usize; 4] {
        [self.stack.len(), self.marks.len(), self.memo.len(), self.heap.objects.len()]
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, what: &str) -> R<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.bad(format!("{what}: the stack is empty")));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self, what: &str) -> R<&Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.bad(format!("{what}: the stack is empty")));
        }
        Ok(self.stack.last().expect("checked above"))
    }

    fn pop_mark(&mut self, what: &str) -> R<Vec<Value>> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.bad(format!("{what} without a MARK before it")));
        };
        Ok(self.stack.split_off(mark))
    }

    fn alloc(&mut self, o: Object) -> Value {
        self.heap.objects.push(o);
        Value::Obj(self.heap.objects.len() - 1)
    }

    fn string(&mut self, n: usize, what: &str) -> R<Value> {
        let bytes = self.take(n, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Value::Str(s.into())),
            Err(e) => Err(self.bad(format!("{what}: not UTF-8 ({e})"))),
        }
    }

    fn len_u32(&mut self, what: &str) -> R<usize> {
        Ok(u32::from_le_bytes(self.fixed(what)?) as usize)
    }

    fn len_u64(&mut self, what: &str) -> R<usize> {
        let n = u64::from_le_bytes(self.fixed(what)?);
        // Longer than the rest of the pickle: `take` says so.
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A little-endian two's-complement integer of `n` bytes (LONG1, LONG4), within i64.
    fn long(&mut self, n: usize) -> R<Value> {
        let b = self.take(n, "LONG")?;
        if n > 8 {
            // Wider encodings are fine if the extra bytes only extend the sign.
            let fill = if b[7] & 0x80 != 0 { 0xff } else { 0 };
            if b[8..].iter().any(|&x| x != fill) {
                return Err(self.bad(format!("an integer of {n} bytes, wider than the 64 bits strata reads")));
            }
        }
        let k = n.min(8);
        let mut a = [0u8; 8];
        a[..k].copy_from_slice(&b[..k]);
        if k > 0 && k < 8 && b[k - 1] & 0x80 != 0 {
            a[k..].fill(0xff);
        }
        Ok(Value::Int(i64::from_le_bytes(a)))
    }

    fn global(&mut self, module: &str, name: &str) -> R<Value> {
        match Global::resolve(module, name) {
            Some(g) => Ok(self.alloc(Object::Global(g))),
            None => Err(TorchFileError::RefusedGlobal {
                module: module.to_string(),
                name: name.to_string(),
                offset: self.at,
                allowed: ALLOWED.to_string(),
            }),
        }
    }

    /// A GLOBAL argument: text up to a newline.
    fn line(&mut self) -> R<String> {
        let data = self.data;
        let rest = &data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.bad("GLOBAL: a name without its closing newline"));
        };
        let text = std::str::from_utf8(&rest[..end]).map_err(|e| self.bad(format!("GLOBAL: not UTF-8 ({e})")))?;
        self.pos += end + 1;
        Ok(text.to_string())
    }

    fn obj(&self, v: &Value) -> Option<&Object> {
        match v {
            Value::Obj(i) => self.heap.objects.get(*i),
            _ => None,
        }
    }

    /// The dict that `v` refers to, mutably.
    fn dict_mut(&mut self, v: &Value, what: &str) -> R<&mut Dict> {
        let index = match (v, self.obj(v)) {
            (Value::Obj(i), Some(Object::Dict(_))) => *i,
            _ => return Err(self.bad(format!("{what} on {}, not a dict", self.heap.describe(v)))),
        };
        match &mut self.heap.objects[index] {
            Object::Dict(d) => Ok(d),
            _ => unreachable!("checked above"),
        }
    }

    fn set_items(&mut self, target: &Value, items: Vec<Value>, what: &str) -> R<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.bad(format!("{what} with an odd number of items ({})", items.len())));
        }
        let mut cost = 0usize;
        let keys: Vec<Option<Key>> = items
            .iter()
            .step_by(2)
            .map(|k| match k {
                Value::None => Some(Key::None),
                Value::Int(i) => Some(Key::Int(*i)),
                Value::Str(s) => {
                    cost = cost.saturating_add(s.len() / 8);
                    Some(Key::Str(s.clone()))
                }
                _ => None,
            })
            .collect();
        self.spend(cost)?;
        let dict = self.dict_mut(target, what)?;
        let mut it = items.into_iter();
        for key in keys {
            let (k, v) = (it.next().expect("even"), it.next().expect("even"));
            match key.as_ref().and_then(|key| dict.index.get(key)) {
                Some(&i) => dict.entries[i].1 = v,
                None => {
                    if let Some(key) = key {
                        dict.index.insert(key, dict.entries.len());
                    }
                    dict.entries.push((k, v));
                }
            }
        }
        Ok(())
    }

    fn append(&mut self, target: &Value, items: Vec<Value>, what: &str) -> R<()> {
        let desc = self.heap.describe(target);
        if let Value::Obj(i) = target
            && let Object::List(l) = &mut self.heap.objects[*i]
        {
            l.extend(items);
            return Ok(());
        }
        Err(self.bad(format!("{what} on {desc}, not a list")))
    }

    fn tuple(&mut self, items: Vec<Value>) -> Value {
        self.alloc(Object::Tuple(items))
    }

    fn tuple_items(&self, v: &Value, what: &str) -> R<Vec<Value>> {
        match self.obj(v) {
            Some(Object::Tuple(t)) => Ok(t.clone()),
            _ => Err(self.bad(format!("{what} must be a tuple, got {}", self.heap.describe(v)))),
        }
    }

    fn callable(&self, v: &Value, what: &str) -> R<Global> {
        match self.obj(v) {
            Some(Object::Global(g)) => Ok(*g),
            _ => Err(self.bad(format!("{what} calls {}, which is not a callable global", self.heap.describe(v)))),
        }
    }

    fn int(&self, v: &Value, what: &str) -> R<u64> {
        match v {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            _ => Err(self.bad(format!("{what} must be an int ≥ 0, got {}", self.heap.describe(v)))),
        }
    }

    /// A tensor's size or stride: a tuple of at most [`MAX_RANK`] ints ≥ 0, its length checked
    /// before its items are read.
    fn ints(&self, v: &Value, what: &str) -> R<Vec<u64>> {
        match self.obj(v) {
            Some(Object::Tuple(t)) if t.len() > MAX_RANK => {
                Err(self.bad(format!("{what} has {} dimensions, more than the {MAX_RANK} a tensor may have", t.len())))
            }
            Some(Object::Tuple(t)) => t.iter().map(|x| self.int(x, what)).collect(),
            _ => Err(self.bad(format!("{what} must be a tuple, got {}", self.heap.describe(v)))),
        }
    }

    /// REDUCE and NEWOBJ: what an allowed global "returns". Nothing is executed: each case
    /// builds plain data.
    fn call(&mut self, g: Global, args: Vec<Value>) -> R<Value> {
        let name = g.describe();
        match g {
            Global::OrderedDict if args.is_empty() => Ok(self.alloc(Object::Dict(Dict::default()))),
            Global::OrderedDict => {
                Err(self.bad(format!("{name} with arguments ({}), which torch.save never writes", args.len())))
            }
            Global::RebuildTensorV2 | Global::RebuildTensorV3 => {
                let v3 = g == Global::RebuildTensorV3;
                let (min, max) = if v3 { (7, 8) } else { (6, 7) };
                if args.len() < min || args.len() > max {
                    return Err(self.bad(format!("{name} takes {min} or {max} arguments, got {}", args.len())));
                }
                let storage = match &args[0] {
                    Value::Obj(i) if matches!(self.heap.objects[*i], Object::Storage(_)) => *i,
                    other => return Err(self.bad(format!("{name}: its storage is {}", self.heap.describe(other)))),
                };
                let Object::Storage(s) = &self.heap.objects[storage] else { unreachable!("matched above") };
                let dtype = if v3 {
                    match self.obj(&args[6]) {
                        Some(Object::Global(Global::DType(d))) => *d,
                        _ => return Err(self.bad(format!("{name}: its dtype is {}", self.heap.describe(&args[6])))),
                    }
                } else {
                    match s.dtype {
                        Some(d) => d,
                        None => {
                            return Err(self.bad(format!("{name} over an untyped storage, which needs a dtype (v3)")));
                        }
                    }
                };
                if let Some(sd) = s.dtype
                    && sd != dtype
                {
                    return Err(self.bad(format!("{name}: a {} tensor over a {} storage", dtype.name(), sd.name())));
                }
                let offset = self.int(&args[1], "the storage offset")?;
                let size = self.ints(&args[2], "the size")?;
                let stride = self.ints(&args[3], "the stride")?;
                if size.len() != stride.len() {
                    return Err(self.bad(format!("{name}: {} sizes but {} strides", size.len(), stride.len())));
                }
                if !matches!(args[4], Value::Bool(_)) {
                    return Err(self.bad(format!("{name}: requires_grad is {}", self.heap.describe(&args[4]))));
                }
                if !matches!(self.obj(&args[5]), Some(Object::Dict(_))) {
                    return Err(self.bad(format!("{name}: backward_hooks is {}", self.heap.describe(&args[5]))));
                }
                self.charge((size.len() + stride.len()) * std::mem::size_of::<u64>())?;
                Ok(self.alloc(Object::Tensor(TensorRef { storage, dtype, offset, size, stride })))
            }
            Global::RebuildParameter => {
                if args.len() != 3 || !matches!(self.obj(&args[0]), Some(Object::Tensor(_))) {
                    return Err(self.bad(format!("{name} takes (tensor, requires_grad, hooks)")));
                }
                Ok(args[0].clone())
            }
            Global::Storage(_) | Global::DType(_) => Err(self.bad(format!("{name} is not callable"))),
        }
    }

    /// BINPERSID: `('storage', storage_type, key, location, numel)`, what torch.save's
    /// `persistent_id` returns for each storage.
    fn persistent(&mut self, pid: Value) -> R<Value> {
        let what = "a persistent id";
        let items = self.tuple_items(&pid, what)?;
        let shape = |vm: &Self| {
            vm.bad(format!(
                "{what} must be ('storage', storage type, key, location, numel), got {}",
                items.iter().map(|v| vm.heap.describe(v)).collect::<Vec<_>>().join(", ")
            ))
        };
        let [Value::Str(tag), ty, Value::Str(key), Value::Str(_location), numel] = items.as_slice() else {
            return Err(shape(self));
        };
        if &**tag != "storage" {
            return Err(shape(self));
        }
        let Some(Object::Global(Global::Storage(dtype))) = self.obj(ty) else {
            return Err(shape(self));
        };
        let dtype = *dtype;
        let numel = self.int(numel, "a storage's numel")?;
        let key = key.to_string();
        self.charge(key.len())?;
        Ok(self.alloc(Object::Storage(Storage { dtype, key, numel })))
    }

    fn run(&mut self) -> R<Value> {
        // What each kind of thing the machine holds costs (a memo entry: its key, its value and
        // the map's overhead); strings and bytes are slices of the pickle, shared, not copied.
        let costs = [
            std::mem::size_of::<Value>(),
            std::mem::size_of::<usize>(),
            2 * std::mem::size_of::<(u64, Value)>(),
            std::mem::size_of::<Object>() + 2 * std::mem::size_of::<Value>(),
        ];
        let mut held = self.held();
        loop {
            let now = self.held();
            let grown: usize = now.iter().zip(&held).zip(&costs).map(|((n, h), c)| n.saturating_sub(*h) * c).sum();
            self.charge(grown)?;
            held = now;
            self.at = self.pos;
            self.spend(1)?;
            let Some(&op) = self.data.get(self.pos) else {
                return Err(self.bad("the pickle ends without STOP"));
            };
            self.pos += 1;
            match op {
                0x80 => {
                    let [p] = self.fixed("PROTO")?;
                    if p > 5 {
                        return Err(self.bad(format!("pickle protocol {p}; strata reads 2 to 5")));
                    }
                }
                0x95 => {
                    self.fixed::<8>("FRAME")?;
                }
                b'.' => return self.pop("STOP"),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    if self.stack.len() == self.floor() && !self.marks.is_empty() {
                        self.marks.pop();
                    } else {
                        self.pop("POP")?;
                    }
                }
                b'1' => {
                    self.pop_mark("POP_MARK")?;
                }
                b'2' => {
                    let v = self.top("DUP")?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.fixed("BININT")?);
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let [v] = self.fixed("BININT1")?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.fixed("BININT2")?);
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a => {
                    let [n] = self.fixed("LONG1")?;
                    let v = self.long(n as usize)?;
                    self.stack.push(v);
                }
                0x8b => {
                    let n = self.len_u32("LONG4")?;
                    let v = self.long(n)?;
                    self.stack.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.fixed("BINFLOAT")?);
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.len_u32("BINUNICODE")?;
                    let v = self.string(n, "BINUNICODE")?;
                    self.stack.push(v);
                }
                0x8c => {
                    let [n] = self.fixed("SHORT_BINUNICODE")?;
                    let v = self.string(n as usize, "SHORT_BINUNICODE")?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.len_u64("BINUNICODE8")?;
                    let v = self.string(n, "BINUNICODE8")?;
                    self.stack.push(v);
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'B' => self.len_u32("BINBYTES")?,
                        b'C' => self.fixed::<1>("SHORT_BINBYTES")?[0] as usize,
                        _ => self.len_u64("BINBYTES8")?,
                    };
                    let b = self.take(n, "BINBYTES")?;
                    self.stack.push(Value::Bytes(b.into()));
                }
                b')' => {
                    let v = self.tuple(vec![]);
                    self.stack.push(v);
                }
                b't' => {
                    let items = self.pop_mark("TUPLE")?;
                    let v = self.tuple(items);
                    self.stack.push(v);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < self.floor() + n {
                        return Err(self.bad(format!("TUPLE{n}: fewer than {n} items on the stack")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let v = self.tuple(items);
                    self.stack.push(v);
                }
                b']' => {
                    let v = self.alloc(Object::List(vec![]));
                    self.stack.push(v);
                }
                b'l' => {
                    let items = self.pop_mark("LIST")?;
                    let v = self.alloc(Object::List(items));
                    self.stack.push(v);
                }
                b'a' => {
                    let v = self.pop("APPEND")?;
                    let target = self.top("APPEND")?.clone();
                    self.append(&target, vec![v], "APPEND")?;
                }
                b'e' => {
                    let items = self.pop_mark("APPENDS")?;
                    let target = self.top("APPENDS")?.clone();
                    self.append(&target, items, "APPENDS")?;
                }
                b'}' => {
                    let v = self.alloc(Object::Dict(Dict::default()));
                    self.stack.push(v);
                }
                b'd' => {
                    let items = self.pop_mark("DICT")?;
                    let v = self.alloc(Object::Dict(Dict::default()));
                    self.set_items(&v, items, "DICT")?;
                    self.stack.push(v);
                }
                b's' => {
                    let v = self.pop("SETITEM")?;
                    let k = self.pop("SETITEM")?;
                    let target = self.top("SETITEM")?.clone();
                    self.set_items(&target, vec![k, v], "SETITEM")?;
                }
                b'u' => {
                    let items = self.pop_mark("SETITEMS")?;
                    let target = self.top("SETITEMS")?.clone();
                    self.set_items(&target, items, "SETITEMS")?;
                }
                b'q' | b'r' | 0x94 => {
                    let idx = match op {
                        b'q' => u64::from(self.fixed::<1>("BINPUT")?[0]),
                        b'r' => u64::from(u32::from_le_bytes(self.fixed("LONG_BINPUT")?)),
                        _ => self.memo.len() as u64,
                    };
                    let v = self.top("memoising")?.clone();
                    self.memo.insert(idx, v);
                }
                b'h' | b'j' => {
                    let idx = if op == b'h' {
                        u64::from(self.fixed::<1>("BINGET")?[0])
                    } else {
                        u64::from(u32::from_le_bytes(self.fixed("LONG_BINGET")?))
                    };
                    let Some(v) = self.memo.get(&idx).cloned() else {
                        return Err(self.bad(format!("memo entry {idx} fetched but never stored")));
                    };
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let v = self.global(&module, &name)?;
                    self.stack.push(v);
                }
                0x93 => {
                    let name = self.pop("STACK_GLOBAL")?;
                    let module = self.pop("STACK_GLOBAL")?;
                    let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                        return Err(self.bad("STACK_GLOBAL: module and name must be strings"));
                    };
                    let v = self.global(module, name)?;
                    self.stack.push(v);
                }
                b'R' => {
                    let args = self.pop("REDUCE")?;
                    let func = self.pop("REDUCE")?;
                    let g = self.callable(&func, "REDUCE")?;
                    let args = self.tuple_items(&args, "REDUCE's arguments")?;
                    let v = self.call(g, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop("NEWOBJ")?;
                    let cls = self.pop("NEWOBJ")?;
                    let g = self.callable(&cls, "NEWOBJ")?;
                    let args = self.tuple_items(&args, "NEWOBJ's arguments")?;
                    if g != Global::OrderedDict {
                        return Err(self.bad(format!("NEWOBJ of {}, which is not a class strata builds", g.describe())));
                    }
                    let v = self.call(g, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // An OrderedDict's attributes (a state_dict's `_metadata`: module versions)
                    // are set by BUILD; strata keeps the entries and drops the attributes.
                    let state = self.pop("BUILD")?;
                    let target = self.top("BUILD")?.clone();
                    let ok_state = matches!(state, Value::None) || matches!(self.obj(&state), Some(Object::Dict(_)));
                    if !matches!(self.obj(&target), Some(Object::Dict(_))) || !ok_state {
                        return Err(self.bad(format!(
                            "BUILD of {} with {}: strata sets attributes only on dicts (a state_dict's _metadata)",
                            self.heap.describe(&target),
                            self.heap.describe(&state)
                        )));
                    }
                }
                b'Q' => {
                    let pid = self.pop("BINPERSID")?;
                    let v = self.persistent(pid)?;
                    self.stack.push(v);
                }
                other => {
                    return Err(TorchFileError::UnsupportedOpcode {
                        opcode: other,
                        name: opcode_name(other),
                        offset: self.at,
                    });
                }
            }
        }
    }
}

/// The name `pickletools` gives an opcode strata does not implement.
fn opcode_name(op: u8) -> &'static str {
    match op {
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'P' => "PERSID",
        b'i' => "INST",
        b'o' => "OBJ",
        b'g' => "GET",
        b'p' => "PUT",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(data: &[u8]) -> String {
        unpickle(data).unwrap_err().to_string()
    }

    #[test]
    fn numbers_strings_and_containers() {
        // {'a': [1, -2, 3.5, True, None], 'b': (300, 70000, -1)} as protocol 2 writes it.
        let mut p =
            b"\x80\x02}q\x00(X\x01\x00\x00\x00a]q\x01(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00\x88Ne"
                .to_vec();
        p.extend_from_slice(b"X\x01\x00\x00\x00bM,\x01J\x70\x11\x01\x00\x8a\x01\xff\x87u.");
        let (v, heap) = unpickle(&p).unwrap();
        let Value::Obj(i) = v else { panic!() };
        let Object::Dict(d) = &heap.objects[i] else { panic!() };
        assert_eq!(heap.describe(d.get_str("a").unwrap()), "a list of 5");
        let Some(Value::Obj(t)) = d.get_str("b") else { panic!() };
        let Object::Tuple(t) = &heap.objects[*t] else { panic!() };
        let ints: Vec<i64> = t.iter().map(|v| if let Value::Int(i) = v { *i } else { 0 }).collect();
        assert_eq!(ints, [300, 70000, -1]);
    }

    #[test]
    fn long_integers_sign_extend() {
        let (v, _) = unpickle(b"\x80\x02\x8a\x02\x00\x80.").unwrap();
        assert!(matches!(v, Value::Int(-32768)), "{v:?}");
        let (v, _) = unpickle(b"\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\x00.").unwrap();
        assert!(matches!(v, Value::Int(i64::MAX)), "{v:?}");
        assert!(err(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").contains("wider than the 64 bits"));
    }

    #[test]
    fn refusals_name_the_global_and_the_opcode() {
        let e = err(b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85R.");
        assert!(e.starts_with("refused: the pickle asks for the Python global `os.system` (data.pkl byte 2)"), "{e}");
        let e = err(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.");
        assert!(e.contains("`builtins.eval` (data.pkl byte 18)"), "{e}");
        let e = err(b"\x80\x02(i__main__\nX\n.");
        assert!(e.starts_with("unsupported pickle opcode INST (0x69) at data.pkl byte 3"), "{e}");
        assert!(err(b"\x80\x02\xff").contains("opcode unknown (0xff) at data.pkl byte 2"));
    }

    #[test]
    fn malformed_pickles_are_errors() {
        assert!(err(b"\x80\x02").contains("ends without STOP"));
        assert!(err(b"\x80\x02.").contains("STOP: the stack is empty"));
        assert!(err(b"\x80\x02h\x05.").contains("memo entry 5 fetched but never stored"));
        assert!(err(b"\x80\x02X\xff\xff\xff\xff").contains("BINUNICODE needs 4294967295 bytes"));
        assert!(err(b"\x80\x02K\x00K\x01K\x02s.").contains("SETITEM on the int 0, not a dict"));
        assert!(err(b"\x80\x02K\x01K\x02s.").contains("SETITEM: the stack is empty"));
        assert!(err(b"\x80\x02ccollections\nOrderedDict\nK\x01R.").contains("REDUCE's arguments must be a tuple"));
        // A MARK hides what is below it.
        assert!(err(b"\x80\x02K\x01(\x85.").contains("TUPLE1: fewer than 1 items"));
    }
}
