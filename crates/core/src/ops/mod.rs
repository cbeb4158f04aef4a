//! The ops. Each file holds one op family: its forward, its backward right below it, the CPU
//! kernel beside them and its tests at the bottom. See `README.md` for the list of primitives.

pub mod activation;
pub mod batch_norm;
pub mod concat;
pub mod conv;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod layer_norm;
pub mod linear;
pub mod lstm;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod views;
pub(crate) mod vmath;

/// Elements above which elementwise kernels split work across rayon threads. Below it a second
/// thread costs more than it saves. Measured on the 2-core CI machine kind: a ReLU over 65,536
/// f32 takes 5.2 µs on the calling thread, but 10–30 µs handed to a 2-thread pool and ~70 µs to
/// a 1-thread pool (a call from outside the pool wakes a worker and sleeps until it is done), so
/// a split only pays once the serial pass takes several tens of µs.
pub(crate) const PAR_THRESHOLD: usize = 1 << 19;

/// Whether an elementwise pass over `elements` is worth splitting across rayon's threads: large
/// enough (see [`PAR_THRESHOLD`]) and a pool with more than one thread to split across.
pub(crate) fn parallel_pays(elements: usize) -> bool {
    elements >= PAR_THRESHOLD && rayon::current_num_threads() > 1
}

/// Elements per parallel task of an elementwise kernel: fixed, so the split (and so any
/// per-chunk result) does not depend on the thread count, and large enough to amortise a task.
pub(crate) const PAR_CHUNK: usize = 1 << 14;

/// Runs `$body` with `$v` bound to the float slice of `$storage` and `$T` to its element type;
/// an `i64` buffer is an [`crate::Error::UnsupportedDType`] for `$op`.
macro_rules! with_float {
    ($storage:expr, $op:expr, |$v:ident : $T:ident| $body:expr) => {
        match &*$storage {
            $crate::storage::CpuStorage::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::storage::CpuStorage::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            $crate::storage::CpuStorage::I64(_) => Err($crate::Error::UnsupportedDType {
                op: $op,
                dtype: $crate::DType::I64,
                hint: " (convert with `.to_dtype(DType::F32)`)",
            }),
        }
    };
}
pub(crate) use with_float;

/// Like [`with_float`] for two buffers of the same float type.
macro_rules! with_float2 {
    ($a:expr, $b:expr, $op:expr, |$va:ident, $vb:ident : $T:ident| $body:expr) => {
        match (&*$a, &*$b) {
            ($crate::storage::CpuStorage::F32($va), $crate::storage::CpuStorage::F32($vb)) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            ($crate::storage::CpuStorage::F64($va), $crate::storage::CpuStorage::F64($vb)) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            (a, b) => Err(if a.dtype() == b.dtype() {
                $crate::Error::UnsupportedDType {
                    op: $op,
                    dtype: a.dtype(),
                    hint: " (convert with `.to_dtype(DType::F32)`)",
                }
            } else {
                $crate::Error::DTypeMismatch { op: $op, lhs: a.dtype(), rhs: b.dtype() }
            }),
        }
    };
}
pub(crate) use with_float2;
