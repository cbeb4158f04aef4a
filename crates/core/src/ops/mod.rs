//! The ops. Each op family is one folder: `mod.rs` holds its API, `# Shapes` docs, autograd and
//! the dispatch on the inputs' device (and its tests, or `tests.rs`), `cpu.rs` its CPU kernels,
//! and `gpu.rs` with its `.wgsl` the GPU path (the `gpu` feature). `vmath.rs` holds vectorisable
//! math for the CPU kernels, `tasks.rs` their helpers for splitting work over threads. See `README.md` for the primitives every backend implements.

pub mod activation;
pub mod batch_norm;
pub mod collective;
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
pub mod optim;
pub mod pad;
pub mod pool;
pub mod reduce;
pub(crate) mod tasks;
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

/// Asks the CPU to bring `v`'s cache lines into L1 ahead of use. For loops that walk many short
/// runs far apart (a channel's plane in each sample of a batch): the hardware prefetchers
/// follow one long stream well, but each new short run starts with a wait on memory.
#[inline(always)]
pub(crate) fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = v.as_ptr().cast::<i8>();
        for at in (0..size_of_val(v)).step_by(64) {
            // SAFETY: SSE, which the intrinsic needs, is part of x86-64; a prefetch never faults,
            // and the address is inside `v` anyway.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(at)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Runs `f` compiled for AVX-512 when the CPU has it (detected at run time), else as is.
///
/// The crate is built for baseline x86-64, where loops vectorise to 4-wide SSE; a kernel whose
/// loop is written inside `f` (and inlined there, as closures and `#[inline]` iterator code are)
/// gets 16-wide f32 vectors instead. Only for loops whose result does not depend on the vector
/// width: elementwise maps, and sums whose order the code fixes itself (Rust never reorders or
/// fuses float operations), so every CPU computes the same bits.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { wide_avx512(f) };
    }
    f()
}

/// [`wide`]'s AVX-512 body.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn wide_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Defines `fn $name<T: Bound>(args) -> R` that runs the `#[inline(always)]` function `$inner`
/// compiled for AVX-512 when the CPU has it (see [`wide`]; a named function is inlined into its
/// AVX-512 copy for certain, where a large closure may not be).
macro_rules! wide_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$T:ident: $B:ident>($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? => $inner:ident) => {
        $(#[$m])*
        $vis fn $name<$T: $B>($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512<$T: $B>($($a: $t),*) $(-> $r)? {
                    $inner($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F, checked just above.
                    return unsafe { avx512($($a),*) };
                }
            }
            $inner($($a),*)
        }
    };
}
pub(crate) use wide_fn;

/// The hint of an i64 tensor refused by a float-only op, on every device.
pub(crate) const FLOAT_ONLY_HINT: &str = " (convert with `.to_dtype(DType::F32)`)";

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
                hint: $crate::ops::FLOAT_ONLY_HINT,
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
                $crate::Error::UnsupportedDType { op: $op, dtype: a.dtype(), hint: $crate::ops::FLOAT_ONLY_HINT }
            } else {
                $crate::Error::DTypeMismatch { op: $op, lhs: a.dtype(), rhs: b.dtype() }
            }),
        }
    };
}
pub(crate) use with_float2;
