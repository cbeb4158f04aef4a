//! Dropout's CPU kernel: one uniform draw per element from the generator's stream, the mask
//! (0, or `1/(1 − p)` where the draw is ≥ p) and its product with the input, in the input's
//! float type.

use crate::error::Result;
use crate::ops::with_float;
use crate::rng::Generator;
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;

/// `(x·m, m)` for float `x` (any layout) and the mask `m` drawn from `generator` (which
/// advances), both of `x`'s shape and type.
pub(super) fn dropout(x: &Tensor, p: f64, generator: &mut Generator) -> Result<(CpuStorage, CpuStorage)> {
    const OP: &str = "dropout";
    let numel = x.numel();
    let mut u = vec![0.0; numel];
    generator.fill_uniform(&mut u, 0.0, 1.0);
    let scale = 1.0 / (1.0 - p);
    let xc = x.contiguous()?;
    let s = xc.cpu_storage("dropout")?;
    let o = xc.layout().offset;
    // The mask holds 0 or 1/(1 − p) in the input's type: y = x·m and dx = g·m.
    with_float!(s, OP, |v: T| {
        let m: Vec<T> = u.iter().map(|&u| if u >= p { T::from_f64(scale) } else { T::ZERO }).collect();
        let y: Vec<T> = v[o..o + numel].iter().zip(&m).map(|(&x, &m)| x * m).collect();
        Ok((T::wrap(y), T::wrap(m)))
    })
}
