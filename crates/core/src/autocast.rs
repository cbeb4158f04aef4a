//! Mixed precision: the autocast scope, as `torch.autocast("cpu", dtype=torch.bfloat16)`.
//!
//! Inside a bf16 scope every f32 matrix product on the CPU — `matmul`, `linear`, and the GEMMs
//! inside convolution and the LSTM — rounds its two operands to bfloat16 and accumulates in f32
//! (`ops/matmul/amx.rs`: AMX tiles where the CPU and OS allow them; `ops/matmul/bf16.rs`:
//! AVX512-BF16 `vdpbf16ps` where the CPU has it, the same numbers through the f32 kernel
//! elsewhere). Two exceptions, both for speed and both more accurate, not less: a
//! product with fewer than 16 output rows or columns (batch-1 inference, a 10-class output
//! layer; `ops/matmul/cpu.rs`, `BF16_MIN_SIDE`) or fewer than 16 terms per output (a
//! convolution over one input channel, 3×3: 9; `BF16_MIN_DEPTH`) runs in f32, since rounding
//! its operands costs more than it saves; and GPU tensors' products stay f32. Everything else stays f32: element-wise ops, reductions, softmax
//! and cross-entropy, normalisation, the optimizer and the parameters themselves, which are the
//! f32 master weights (rounded when a product packs them, never stored rounded). f64 tensors are
//! never affected.
//!
//! Unlike PyTorch, a product's *output* is f32, not bf16: the rounding is on the inputs only, so
//! the activations the next op reads are the f32 accumulator's, one rounding fewer per layer.
//!
//! The scope is per thread, like grad mode. Each graph node remembers the precision its forward
//! ran under and its backward runs under the same one, wherever `backward` is called — the
//! weight and input gradients of a bf16 product are bf16 products too, as under PyTorch's
//! autocast. The CPU kernels that hand work to rayon's threads carry the scope along
//! (`with_precision`).

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;

/// The precision of matrix products (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Products in f32 throughout (the default).
    #[default]
    F32,
    /// f32 products take bfloat16-rounded operands and accumulate in f32.
    Bf16,
}

impl Precision {
    /// The name used in run files and on the command line: `"f32"` or `"bf16"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision named `s` (`"f32"` or `"bf16"`), or `None`.
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "f32" => Some(Precision::F32),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    static PRECISION: Cell<Precision> = const { Cell::new(Precision::F32) };
    /// The live guards of this thread, oldest first: `(id, precision)`. The precision in force
    /// is the newest one's (F32 with none), whatever order the guards are dropped in.
    static GUARDS: RefCell<Vec<(u64, Precision)>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
}

/// The precision of f32 matrix products on this thread now.
pub fn precision() -> Precision {
    PRECISION.with(|p| p.get())
}

/// While alive, f32 matrix products on this thread use `precision`; dropping it restores the
/// precision of the newest guard still alive (F32 when none is). Guards dropped out of order
/// (two guards held in variables and the outer one dropped first) leave the inner one in force
/// until it too is dropped. Made by [`AutocastGuard::new`]; [`autocast`] is the closure form.
/// A guard belongs to the thread that made it (it is not `Send`).
#[must_use = "the guard sets the precision only while it is alive"]
pub struct AutocastGuard {
    id: u64,
    _thread: PhantomData<*const ()>,
}

impl AutocastGuard {
    /// Sets this thread's product precision until the guard is dropped.
    pub fn new(precision: Precision) -> Self {
        let id = NEXT_ID.with(|n| n.replace(n.get() + 1));
        GUARDS.with(|g| g.borrow_mut().push((id, precision)));
        PRECISION.with(|p| p.set(precision));
        AutocastGuard { id, _thread: PhantomData }
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        let now = GUARDS.with(|g| {
            let mut g = g.borrow_mut();
            g.retain(|&(id, _)| id != self.id);
            g.last().map_or(Precision::F32, |&(_, p)| p)
        });
        PRECISION.with(|p| p.set(now));
    }
}

/// Runs `f` with this thread's f32 matrix products in `precision`, as
/// `with torch.autocast("cpu", dtype=torch.bfloat16):` does for `Precision::Bf16`.
///
/// ```
/// use strata_core::{DType, Precision, Tensor, autocast};
/// let a = Tensor::from_vec(vec![1.0f32 + 1.0 / 1024.0; 16 * 16], &[16, 16])?;
/// let ones = Tensor::ones(&[16, 16], DType::F32);
/// // bf16 keeps 8 significant bits: 1 + 2⁻¹⁰ rounds to 1, so each sum of 16 is 16.
/// let y = autocast(Precision::Bf16, || a.matmul(&ones))?;
/// assert_eq!(y.to_vec::<f32>()?, vec![16.0; 16 * 16]);
/// assert_eq!(a.matmul(&ones)?.to_vec::<f32>()?, vec![16.0 + 16.0 / 1024.0; 16 * 16]);
/// # Ok::<(), strata_core::Error>(())
/// ```
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    let _guard = AutocastGuard::new(precision);
    f()
}

/// Runs `f` under `precision`: how work handed to another thread (a rayon task, a node's
/// backward) keeps the precision of the code that made it.
pub(crate) fn with_precision<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    if precision == self::precision() {
        return f();
    }
    autocast(precision, f)
}

/// `x` rounded to bfloat16 (to nearest, ties to even; NaN stays NaN), as the upper 16 bits of
/// an f32.
#[inline(always)]
pub fn round_bf16_bits(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        // NaN: keep the sign, force a quiet NaN (rounding could carry into the exponent).
        return (bits | 0x0040_0000) & 0xffff_0000;
    }
    bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000
}

/// `x` rounded to the nearest bfloat16 value, as an f32 (exact: a bf16 is an f32 with the low 16
/// bits zero).
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(round_bf16_bits(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa, 1.
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: up to the even one.
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        // Just above a half rounds up.
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0 + 1.0 / 65536.0), 1.0 + 1.0 / 128.0);
        assert_eq!(round_bf16(-2.5), -2.5);
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
        // The largest f32 overflows to infinity, as a cast to torch.bfloat16 does.
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert!(round_bf16(f32::NAN).is_nan());
        // A NaN whose payload sits only in the low bits stays NaN (not infinity).
        assert!(round_bf16(f32::from_bits(0x7f80_0001)).is_nan());
        assert_eq!(round_bf16(0.0).to_bits(), 0);
        assert_eq!(round_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn guards_dropped_out_of_order_leave_the_newest_live_one_in_force() {
        let a = AutocastGuard::new(Precision::Bf16);
        let b = AutocastGuard::new(Precision::F32);
        drop(a);
        // b, made after a, is still alive: its precision stays.
        assert_eq!(precision(), Precision::F32);
        drop(b);
        // (Each guard used to restore what it saw when made: b put Bf16 back for good here.)
        assert_eq!(precision(), Precision::F32);
        let a = AutocastGuard::new(Precision::F32);
        let b = AutocastGuard::new(Precision::Bf16);
        drop(a);
        assert_eq!(precision(), Precision::Bf16);
        drop(b);
        assert_eq!(precision(), Precision::F32);
    }

    #[test]
    fn guard_restores_the_previous_precision() {
        assert_eq!(precision(), Precision::F32);
        autocast(Precision::Bf16, || {
            assert_eq!(precision(), Precision::Bf16);
            autocast(Precision::F32, || assert_eq!(precision(), Precision::F32));
            assert_eq!(precision(), Precision::Bf16);
        });
        assert_eq!(precision(), Precision::F32);
        assert_eq!(Precision::parse("bf16"), Some(Precision::Bf16));
        assert_eq!(Precision::parse("fp16"), None);
    }
}
