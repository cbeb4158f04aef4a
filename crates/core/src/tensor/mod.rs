//! The `Tensor`: a shared handle to a buffer, a layout (shape, strides, offset), a device, and —
//! when it takes part in differentiation — a leaf gradient or the node of the op that made it.
//!
//! Cloning a `Tensor` is cheap (a reference count) and the clone is the *same* tensor: it shares
//! gradient and identity, as a Python reference would. Views (reshape, transpose, narrow,
//! expand) share the buffer without copying.
//!
//! This file holds the handle, construction, accessors and device moves; `grad.rs` a leaf's
//! gradient, `in_place.rs` the in-place updates, `graph.rs` the autograd graph's nodes (which
//! tensors point at); recording ops and `backward` are in `autograd`.

use crate::device::{DType, Device};
use crate::error::{Error, Result};
use crate::rng::Generator;
use crate::shape::{Layout, Shape};
use crate::storage::{CpuStorage, Element, Storage};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

mod grad;
pub(crate) mod graph;
mod in_place;

use graph::Node;

static NEXT_TENSOR: AtomicU64 = AtomicU64::new(1);

/// A device as the number `TensorImpl::device` holds.
fn encode(device: Device) -> usize {
    match device {
        Device::Cpu => 0,
        Device::Gpu(i) => i + 1,
    }
}

struct TensorImpl {
    id: u64,
    // The buffer is replaced, not mutated, when someone else holds it (copy-on-write); the lock
    // is held only to clone the `Arc` or to perform an in-place update.
    storage: RwLock<Storage>,
    layout: Layout,
    // The device, encoded (0: CPU, i + 1: gpu:i) so that reading it takes no lock; it changes
    // only when a leaf moves in place (`to_device_`).
    device: AtomicUsize,
    // The element type, fixed for the tensor's life (a replaced buffer keeps it): kept here so
    // that reading it takes no lock, as every op does to check its operands.
    dtype: DType,
    // A leaf that wants gradients (a parameter). Non-leaves have `grad_fn` instead.
    requires_grad: bool,
    grad_fn: Option<Arc<Node>>,
    grad: Mutex<GradSlot>,
}

/// A leaf's gradient buffer. `zero_grad` only sets `zeroed`: the next backward overwrites the
/// buffer instead of adding to it, which saves a pass that writes zeros over every gradient
/// each step (~0.4 MB for SimpleNN, ~23 MB for a 784→2048→2048→10 MLP). Readers see zeros.
#[derive(Default)]
struct GradSlot {
    grad: Option<Tensor>,
    zeroed: bool,
}

/// An n-dimensional array of `f32`, `f64` or `i64` with optional gradient tracking.
#[derive(Clone)]
pub struct Tensor(Arc<TensorImpl>);

impl Tensor {
    // ---------------------------------------------------------------- construction

    pub(crate) fn from_parts(storage: impl Into<Storage>, layout: Layout, grad_fn: Option<Arc<Node>>) -> Tensor {
        let storage = storage.into();
        Tensor(Arc::new(TensorImpl {
            id: NEXT_TENSOR.fetch_add(1, Ordering::Relaxed),
            dtype: storage.dtype(),
            device: AtomicUsize::new(encode(storage.device())),
            storage: RwLock::new(storage),
            layout,
            requires_grad: false,
            grad_fn,
            grad: Mutex::new(GradSlot::default()),
        }))
    }

    /// A constant tensor (no gradient) owning `storage` laid out as `shape`.
    pub(crate) fn from_storage(storage: impl Into<Storage>, shape: Shape) -> Tensor {
        Tensor::from_parts(storage, Layout::contiguous(shape), None)
    }

    /// A tensor holding `data` in row-major order with the given shape.
    ///
    /// ```
    /// # use strata_core::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(t.dims(), &[2, 3]);
    /// # Ok::<(), strata_core::Error>(())
    /// ```
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        let shape = Shape::from(shape);
        let Some(numel) = shape.checked_numel() else {
            crate::bail_arg!(
                "from_vec",
                "shape {shape} has more elements than a usize can count (its product overflows)"
            );
        };
        if data.len() != numel {
            return Err(Error::DataLength { op: "from_vec", expected: numel, got: data.len(), shape });
        }
        Ok(Tensor::from_storage(T::wrap(data), shape))
    }

    /// A tensor copied from a slice.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A one-element tensor of shape `[]`.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor::from_storage(T::wrap(vec![value]), Shape(vec![]))
    }

    /// A tensor of `shape` filled with `value` (converted to `dtype`: to an I64 as Rust's `as`
    /// converts, towards zero and saturating, NaN to 0; [`Tensor::fill_`] checks instead).
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        // From the buffer pool: a large fresh vector would fault its pages in one by one.
        fn filled<T: Element>(n: usize, value: T) -> Vec<T> {
            let mut v = T::take_buffer(n);
            v.fill(value);
            v
        }
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(filled(n, value as f32)),
            DType::F64 => CpuStorage::F64(filled(n, value)),
            DType::I64 => CpuStorage::I64(filled(n, value as i64)),
        };
        Tensor::from_storage(storage, Shape::from(shape))
    }

    /// A tensor of `shape` filled with `value` (converted to `dtype`) on `device`.
    pub fn full_on(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        // An element count past a usize is an error, not an overflow panic (or, wrapped, a
        // buffer of the wrong size).
        if crate::shape::checked_product(shape).is_none() {
            crate::bail_arg!(
                "full",
                "shape {shape:?} has more elements than a usize can count (its product overflows)"
            );
        }
        match device {
            Device::Cpu => Ok(Tensor::full(shape, value, dtype)),
            #[cfg(feature = "gpu")]
            Device::Gpu(_) => {
                let b = crate::ops::views::gpu_buffer::full(shape.iter().product(), value, dtype, device)?;
                Ok(Tensor::from_storage(Storage::Gpu(b), Shape::from(shape)))
            }
            #[cfg(not(feature = "gpu"))]
            Device::Gpu(_) => Err(crate::gpu_unavailable(device)),
        }
    }

    /// Zeros.
    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 0.0, dtype)
    }

    /// Ones.
    pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 1.0, dtype)
    }

    /// Zeros with this tensor's shape, type and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::full_on(self.dims(), 0.0, self.dtype(), self.device())
    }

    /// Ones with this tensor's shape, type and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::full_on(self.dims(), 1.0, self.dtype(), self.device())
    }

    /// Uniform values in `[low, high)` drawn from `rng` (reproducible for a seed, whatever the
    /// thread count). Float types only; `low ≤ high`, both finite (as `torch.Tensor.uniform_`).
    pub fn rand_uniform(shape: &[usize], low: f64, high: f64, dtype: DType, rng: &mut Generator) -> Result<Tensor> {
        const OP: &str = "rand_uniform";
        if !(low.is_finite() && high.is_finite() && low <= high) {
            crate::bail_arg!(OP, "needs finite bounds with low <= high, got low = {low}, high = {high}");
        }
        let mut v = random_buffer(OP, shape, dtype)?;
        rng.fill_uniform(&mut v, low, high);
        Tensor::from_f64_values(v, shape, dtype, OP)
    }

    /// Normal values with the given mean and standard deviation drawn from `rng`. Float types
    /// only; `std ≥ 0` and both finite (as `torch.normal`).
    pub fn randn(shape: &[usize], mean: f64, std: f64, dtype: DType, rng: &mut Generator) -> Result<Tensor> {
        const OP: &str = "randn";
        if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
            crate::bail_arg!(OP, "needs a finite mean and a finite std >= 0, got mean = {mean}, std = {std}");
        }
        let mut v = random_buffer(OP, shape, dtype)?;
        rng.fill_normal(&mut v, mean, std);
        Tensor::from_f64_values(v, shape, dtype, OP)
    }

    fn from_f64_values(v: Vec<f64>, shape: &[usize], dtype: DType, op: &'static str) -> Result<Tensor> {
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(v.into_iter().map(|x| x as f32).collect()),
            DType::F64 => CpuStorage::F64(v),
            DType::I64 => return Err(Error::UnsupportedDType { op, dtype, hint: " (random values are float)" }),
        };
        Ok(Tensor::from_storage(storage, Shape::from(shape)))
    }

    // ---------------------------------------------------------------- accessors

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.0.layout.shape
    }
    /// The sizes of the dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0.layout.shape.0
    }
    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.dims().len()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape().numel()
    }
    /// Size of dimension `dim` (negative counts from the end).
    pub fn size(&self, dim: isize) -> Result<usize> {
        Ok(self.dims()[self.shape().resolve_dim("size", dim)?])
    }
    /// Strides in elements.
    pub fn strides(&self) -> &[usize] {
        &self.0.layout.strides
    }
    /// The full layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    /// Whether the elements are in row-major order without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    /// The device holding the data.
    pub fn device(&self) -> Device {
        match self.0.device.load(Ordering::Relaxed) {
            0 => Device::Cpu,
            i => Device::Gpu(i - 1),
        }
    }
    /// A process-unique identity (clones share it; views and results get their own).
    pub fn id(&self) -> u64 {
        self.0.id
    }
    /// Whether two handles are the same tensor.
    pub fn same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The buffer, on whichever device (shared; cheap).
    pub(crate) fn buffer(&self) -> Storage {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The host buffer, for a CPU kernel of `op`; a tensor on another device is an error naming
    /// `op` (its kernels for that device do not exist yet) and the fix.
    #[cfg_attr(not(feature = "gpu"), allow(unused_variables))]
    pub(crate) fn cpu_storage(&self, op: &'static str) -> Result<Arc<CpuStorage>> {
        match self.buffer() {
            Storage::Cpu(s) => Ok(s),
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => Err(Error::NoKernel { op, device: self.device() }),
        }
    }

    /// The GPU buffer, for a GPU kernel of `op`.
    #[cfg(feature = "gpu")]
    pub(crate) fn gpu_buffer(&self, op: &'static str) -> Result<Arc<crate::gpu::GpuBuffer>> {
        match self.buffer() {
            Storage::Gpu(b) => Ok(b),
            Storage::Cpu(_) => Err(Error::DeviceMismatch { op, lhs: Device::Cpu, rhs: Device::Gpu(0) }),
        }
    }

    /// The GPU buffer of a float operand of a GPU kernel of `op`: f32 only. The GPU holds i64 as
    /// i32 words, which a float kernel would read as (tiny, denormal) floats, a silently wrong
    /// result; such a tensor is refused as the CPU refuses it.
    #[cfg(feature = "gpu")]
    pub(crate) fn gpu_f32_buffer(&self, op: &'static str) -> Result<Arc<crate::gpu::GpuBuffer>> {
        if self.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op, dtype: self.dtype(), hint: crate::ops::FLOAT_ONLY_HINT });
        }
        self.gpu_buffer(op)
    }

    /// The GPU buffer for a kernel of `op` to write in place: the tensor must own its whole
    /// buffer; a buffer shared with a view or a saved value is copied first (copy-on-write).
    #[cfg(feature = "gpu")]
    pub(crate) fn gpu_buffer_unique(&self, op: &'static str) -> Result<Arc<crate::gpu::GpuBuffer>> {
        if !self.owns_whole_buffer() {
            return Err(Error::NotInPlaceable { op, shape: self.shape().clone() });
        }
        let shared = self.0.storage.read().unwrap_or_else(|e| e.into_inner()).handles() > 1;
        if shared {
            self.replace_buffer(self.gpu_copy()?);
        }
        self.gpu_buffer(op)
    }

    /// This tensor with a host buffer: itself on the CPU; on a GPU, its whole buffer read back
    /// (a synchronisation) under the same layout.
    #[cfg_attr(not(feature = "gpu"), allow(unused_variables))]
    fn on_host(&self, op: &'static str) -> Result<Tensor> {
        match self.buffer() {
            Storage::Cpu(_) => Ok(self.clone()),
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => Ok(Tensor::from_parts(b.download(op)?, self.0.layout.clone(), None)),
        }
    }

    /// Replaces this tensor's buffer (same element count and type): the in-place ops of devices
    /// whose kernels write a fresh buffer. Views and saved values keep the old one.
    #[cfg(feature = "gpu")]
    pub(crate) fn replace_buffer(&self, storage: Storage) {
        debug_assert_eq!(storage.dtype(), self.dtype());
        *self.0.storage.write().unwrap_or_else(|e| e.into_inner()) = storage;
    }

    /// Whether this handle's layout covers its whole buffer, contiguously from the start: the
    /// condition for an in-place update ([`Tensor::update_`]).
    fn owns_whole_buffer(&self) -> bool {
        self.0.layout.is_contiguous()
            && self.0.layout.offset == 0
            && self.0.storage.read().unwrap_or_else(|e| e.into_inner()).len() == self.numel()
    }

    /// This tensor's elements in a fresh contiguous buffer on its GPU (always a copy; not
    /// recorded by autograd).
    #[cfg(feature = "gpu")]
    pub(crate) fn gpu_copy(&self) -> Result<Storage> {
        let b = self.gpu_buffer("contiguous")?;
        Ok(Storage::Gpu(crate::ops::views::gpu_buffer::copy(&b, self.layout())?))
    }

    /// The elements in row-major order of the shape, as `T` (which must be the tensor's type).
    /// On a GPU this reads the values back: a synchronisation, where a device error surfaces.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if self.device() != Device::Cpu {
            return self.on_host("to_vec")?.to_vec();
        }
        let storage = self.cpu_storage("to_vec")?;
        let data = T::slice(&storage).ok_or(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE })?;
        let layout = self.layout();
        if layout.is_contiguous() {
            let n = self.numel();
            return Ok(data[layout.offset..layout.offset + n].to_vec());
        }
        let mut out = Vec::with_capacity(self.numel());
        layout.for_each_run(|base, len, stride| {
            if stride == 1 {
                out.extend_from_slice(&data[base..base + len]);
            } else {
                out.extend((0..len).map(|j| data[base + j * stride]));
            }
        });
        Ok(out)
    }

    /// The elements converted to `f64`, whatever the element type. On a GPU this reads the
    /// values back; should the device fail, the values are NaN (`to_vec` returns the error).
    pub fn to_vec_f64(&self) -> Vec<f64> {
        let Ok(host) = self.on_host("to_vec_f64") else {
            return vec![f64::NAN; self.numel()];
        };
        let Ok(storage) = host.cpu_storage("to_vec_f64") else { unreachable!("on_host gives a host buffer") };
        let mut out = Vec::with_capacity(self.numel());
        match &*storage {
            CpuStorage::F32(v) => self.layout().for_each_index(|i| out.push(v[i] as f64)),
            CpuStorage::F64(v) => self.layout().for_each_index(|i| out.push(v[i])),
            CpuStorage::I64(v) => self.layout().for_each_index(|i| out.push(v[i] as f64)),
        }
        out
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::NotScalar { op: "item", shape: self.shape().clone() });
        }
        Ok(self.on_host("item")?.to_vec_f64()[0])
    }

    /// Runs `f` on the contiguous elements of this tensor as a slice of `T`, without copying
    /// when the tensor is already contiguous.
    pub fn with_slice<T: Element, R>(&self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
        if self.device() != Device::Cpu {
            return self.on_host("with_slice")?.with_slice(f);
        }
        let storage = self.cpu_storage("with_slice")?;
        let data =
            T::slice(&storage).ok_or(Error::DTypeMismatch { op: "with_slice", lhs: self.dtype(), rhs: T::DTYPE })?;
        if self.is_contiguous() {
            let o = self.layout().offset;
            return Ok(f(&data[o..o + self.numel()]));
        }
        let v = self.to_vec::<T>()?;
        Ok(f(&v))
    }

    // ---------------------------------------------------------------- devices and types

    /// PyTorch's name for [`Tensor::to_device`]: this tensor on `device` (differentiable).
    pub fn to(&self, device: Device) -> Result<Tensor> {
        self.to_device(device)
    }

    /// This tensor on `device` (PyTorch's `.to(device)`): itself when it is there already, else
    /// a copy, recorded by autograd (the gradient goes back to this tensor's device). A GPU needs
    /// the `gpu` feature and an adapter; `strata devices` lists them.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let from = self.device();
        let moved: Storage = match device {
            // Contiguous on its own device first, so only the elements are read back.
            Device::Cpu => self.contiguous()?.on_host("to_device")?.owned_detached()?.buffer(),
            #[cfg(feature = "gpu")]
            Device::Gpu(_) => {
                let host = self.to_device(Device::Cpu)?.owned_detached()?;
                let s = host.cpu_storage("to_device")?;
                Storage::Gpu(Arc::new(crate::gpu::GpuBuffer::upload(device, "to_device", &s)?))
            }
            #[cfg(not(feature = "gpu"))]
            Device::Gpu(_) => return Err(crate::gpu_unavailable(device)),
        };
        Ok(Tensor::from_op(moved, self.shape().clone(), "to_device", &[self], move |g| {
            Ok(vec![Some(g.to_device(from)?)])
        }))
    }

    /// Moves this tensor to `device` in place, keeping its identity (PyTorch's `param.data =
    /// param.data.to(device)`): how a model's parameters and buffers move, so that the layers
    /// and optimizers holding them see the move. Leaves only (a recorded result would detach
    /// from its graph); the gradient, if any, is dropped.
    pub fn to_device_(&self, device: Device) -> Result<()> {
        if device == self.device() {
            return Ok(());
        }
        if !self.is_leaf() {
            return Err(Error::InvalidArgument {
                op: "to_device_",
                message: "only leaves (parameters, buffers, constants) move in place; use `to_device`".into(),
            });
        }
        let moved = self.detach().to_device(device)?.owned_detached()?;
        let mut slot = self.0.storage.write().unwrap_or_else(|e| e.into_inner());
        if self.0.layout != *moved.layout() {
            return Err(Error::NotInPlaceable { op: "to_device_", shape: self.shape().clone() });
        }
        *slot = moved.buffer();
        self.0.device.store(encode(device), Ordering::Relaxed);
        *self.grad_slot() = GradSlot::default();
        Ok(())
    }

    /// Checks that two operands share device and element type.
    pub(crate) fn check_same(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.device() != other.device() {
            return Err(Error::DeviceMismatch { op, lhs: self.device(), rhs: other.device() });
        }
        if self.dtype() != other.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: other.dtype() });
        }
        Ok(())
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {:?}", self.shape(), self.dtype())?;
        if let Some(name) = self.grad_fn_name() {
            write!(f, ", grad_fn={name}")?;
        } else if self.0.requires_grad {
            write!(f, ", requires_grad")?;
        }
        let v = self.to_vec_f64();
        let shown: Vec<String> = v.iter().take(8).map(|x| format!("{x:.4}")).collect();
        write!(f, ", [{}{}])", shown.join(", "), if v.len() > 8 { ", …" } else { "" })
    }
}

/// The f64 buffer `randn`/`rand_uniform` draw into: an error, not a panic or an abort, for a
/// non-float `dtype`, a shape whose element count overflows, or one the allocator refuses.
fn random_buffer(op: &'static str, shape: &[usize], dtype: DType) -> Result<Vec<f64>> {
    if dtype == DType::I64 {
        return Err(Error::UnsupportedDType { op, dtype, hint: " (random values are float)" });
    }
    let Some(n) = crate::shape::checked_product(shape) else {
        crate::bail_arg!(op, "shape {shape:?} has more elements than a usize can count (its product overflows)");
    };
    let mut v = Vec::new();
    if v.try_reserve_exact(n).is_err() {
        crate::bail_arg!(op, "cannot allocate {n} values for shape {shape:?}");
    }
    v.resize(n, 0.0);
    Ok(v)
}
