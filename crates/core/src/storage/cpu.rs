//! Host buffers: [`CpuStorage`], the size-keyed pool dropped buffers return to, and the
//! element-type traits ([`Element`], [`Float`]) that let one kernel serve every element type.
//! Why a pool: see the `storage` module's docs.

use crate::device::DType;
use std::collections::HashMap;
use std::sync::Mutex;

/// The CPU buffer of one tensor, by element type. Dropping it returns the vector to the
/// buffer pool (see the `storage` module's docs).
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// i64 elements.
    I64(Vec<i64>),
}

impl CpuStorage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::I64(_) => DType::I64,
        }
    }
    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for CpuStorage {
    fn drop(&mut self) {
        match self {
            CpuStorage::F32(v) => f32::give_buffer(std::mem::take(v)),
            CpuStorage::F64(v) => f64::give_buffer(std::mem::take(v)),
            CpuStorage::I64(v) => i64::give_buffer(std::mem::take(v)),
        }
    }
}

/// Most bytes the pool of one element type keeps; buffers given back beyond it are freed. Large enough for
/// every buffer of a training step of the networks we target (a 784→2048→2048→10 MLP at batch
/// 256 cycles ~30 MB), small enough not to matter beside them.
const POOL_MAX_BYTES: usize = 256 << 20;
/// Buffers below this size go straight back to the allocator: its thread cache already
/// recycles them cheaply, and pooling them would only add a hash lookup.
const POOL_MIN_BYTES: usize = 256;
/// Largest buffer kept: bigger ones (a whole data set, say) are freed when dropped, so that
/// dropping one does not pin hundreds of megabytes in the pool.
const POOL_MAX_BUFFER_BYTES: usize = 64 << 20;
/// Most buffers kept per size.
const POOL_MAX_PER_SIZE: usize = 32;

/// Spare vectors of one element type by length (`len == capacity` for every one).
struct BufferPool<T> {
    by_len: HashMap<usize, Vec<Vec<T>>>,
    bytes: usize,
}

impl<T: Copy + Default> BufferPool<T> {
    fn new() -> Self {
        BufferPool { by_len: HashMap::new(), bytes: 0 }
    }

    fn take(&mut self, len: usize) -> Option<Vec<T>> {
        let v = self.by_len.get_mut(&len)?.pop()?;
        self.bytes -= len * size_of::<T>();
        Some(v)
    }

    fn give(&mut self, v: Vec<T>) {
        let bytes = v.capacity() * size_of::<T>();
        if !(POOL_MIN_BYTES..=POOL_MAX_BUFFER_BYTES).contains(&bytes) || self.bytes + bytes > POOL_MAX_BYTES {
            return;
        }
        // Only full-length vectors are kept, so a taken vector needs no resizing.
        if v.len() != v.capacity() {
            return;
        }
        let slot = self.by_len.entry(v.len()).or_default();
        if slot.len() < POOL_MAX_PER_SIZE {
            self.bytes += bytes;
            slot.push(v);
        }
    }
}

// One pool per element type for the whole process, not per thread: a buffer made on one thread
// (a gradient computed on a rayon worker) is often dropped on another, and per-thread pools would
// then fill on one side and miss on the other. The lock is held for a hash lookup only.
static POOL_F32: Mutex<Option<BufferPool<f32>>> = Mutex::new(None);
static POOL_F64: Mutex<Option<BufferPool<f64>>> = Mutex::new(None);
static POOL_I64: Mutex<Option<BufferPool<i64>>> = Mutex::new(None);

fn with_pool<T: Copy + Default, R>(pool: &Mutex<Option<BufferPool<T>>>, f: impl FnOnce(&mut BufferPool<T>) -> R) -> R {
    let mut guard = pool.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(BufferPool::new))
}

/// Bytes currently held by the buffer pools (for tests and diagnostics).
pub fn pooled_bytes() -> usize {
    with_pool(&POOL_F32, |p| p.bytes) + with_pool(&POOL_F64, |p| p.bytes) + with_pool(&POOL_I64, |p| p.bytes)
}

/// A type that can be a tensor element.
pub trait Element: Copy + Send + Sync + 'static + std::fmt::Debug + PartialOrd + Default {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Wraps a vector in the storage variant for this type.
    fn wrap(v: Vec<Self>) -> CpuStorage;
    /// The slice if `s` holds this type.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    /// The mutable vector if `s` holds this type.
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut Vec<Self>>;
    /// Lossy conversion to f64 (for printing and checks).
    fn to_f64(self) -> f64;
    /// Conversion from f64 (rounding for floats, truncation for integers).
    fn from_f64(v: f64) -> Self;
    /// A vector of exactly `len` elements for an op's output, reused from the buffer pool
    /// when one of that length is there. Its values are unspecified (whatever the last user
    /// left): the caller overwrites every element, or fills it first.
    fn take_buffer(len: usize) -> Vec<Self>;
    /// Gives a vector back to the buffer pool (or frees it when the pool is full).
    fn give_buffer(v: Vec<Self>);
    /// [`Element::take_buffer`] filled with zeros.
    fn zeroed_buffer(len: usize) -> Vec<Self> {
        let mut v = Self::take_buffer(len);
        v.fill(Self::default());
        v
    }
}

/// A floating-point element: what differentiable ops are written for.
pub trait Float:
    Element
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::iter::Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// −∞.
    const NEG_INFINITY: Self;
    /// eˣ.
    fn exp(self) -> Self;
    /// ln x.
    fn ln(self) -> Self;
    /// √x.
    fn sqrt(self) -> Self;
    /// The larger of two values (NaN-propagating like PyTorch's max).
    fn max_nan(self, other: Self) -> Self;
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
}

macro_rules! impl_element {
    ($t:ty, $variant:ident, $pool:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut Vec<Self>> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn take_buffer(len: usize) -> Vec<Self> {
                if len * size_of::<$t>() >= POOL_MIN_BYTES
                    && let Some(v) = with_pool(&$pool, |p| p.take(len))
                {
                    return v;
                }
                vec![<$t>::default(); len]
            }
            #[inline]
            fn give_buffer(v: Vec<Self>) {
                if v.capacity() * size_of::<$t>() >= POOL_MIN_BYTES {
                    with_pool(&$pool, |p| p.give(v));
                }
            }
        }
    };
}
impl_element!(f32, F32, POOL_F32);
impl_element!(f64, F64, POOL_F64);
impl_element!(i64, I64, POOL_I64);

macro_rules! impl_float {
    ($t:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn max_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    <$t>::NAN
                } else if other > self {
                    other
                } else {
                    self
                }
            }
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}
impl_float!(f32);
impl_float!(f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_buffers_are_reused_by_length() {
        // A length no other test uses, so parallel tests cannot take the buffer first.
        const LEN: usize = 12_345;
        let first = f32::take_buffer(LEN);
        let ptr = first.as_ptr();
        drop(CpuStorage::F32(first));
        let again = f32::take_buffer(LEN);
        assert_eq!(again.as_ptr(), ptr, "the dropped buffer comes back");
        assert_eq!(again.len(), LEN);
        assert!(f32::zeroed_buffer(LEN).iter().all(|&v| v == 0.0));
        // Huge buffers bypass the pool (a data set dropped must not stay pinned).
        let mut pool = BufferPool::<f64>::new();
        pool.give(vec![0.0; POOL_MAX_BUFFER_BYTES / 8 + 1]);
        pool.give(vec![0.0; 4]);
        assert_eq!(pool.bytes, 0);
        pool.give(vec![0.0; 1000]);
        assert_eq!((pool.bytes, pool.take(1000).map(|v| v.len())), (8000, Some(1000)));
    }
}
