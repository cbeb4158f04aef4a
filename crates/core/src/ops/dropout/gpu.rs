//! Dropout on a GPU: the mask drawn on the device from the same Philox stream positions as the
//! CPU (`dropout.wgsl`), so a seed gives the same mask on every device; the product and its
//! backward are the elementwise `mul`.

use crate::device::DType;
use crate::error::Result;
use crate::gpu::{Kernel, context, groups_1d, output};
use crate::rng::Generator;
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

const MASK: Kernel = Kernel { name: "dropout_mask", wgsl: include_str!("dropout.wgsl"), entry: "mask_main" };

/// The mask (0, or `1/(1 − p)` where kept) for `shape` on `x`'s device, drawn from `generator`
/// (which advances by two words per element, as on the CPU).
pub(super) fn mask(x: &Tensor, p: f64, generator: &mut Generator) -> Result<Tensor> {
    let ctx = context(x.device())?;
    let n = x.numel();
    let (seed, stream, base) = generator.state();
    // u ≥ p ⇔ (bits >> 11) ≥ ⌈p·2⁵³⌉: p·2⁵³ is exact (a power-of-two scaling), and so is its ceiling.
    let threshold = (p * (1u64 << 53) as f64).ceil() as u64;
    let scale = (1.0 / (1.0 - p)) as f32;
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;
    let words = [
        n as u32,
        lo(seed),
        hi(seed),
        lo(stream),
        hi(stream),
        lo(base),
        hi(base),
        lo(threshold),
        hi(threshold),
        scale.to_bits(),
    ];
    let out = output(&ctx, "dropout", n, DType::F32)?;
    ctx.dispatch(&MASK, &words, &[out.raw()], groups_1d(n))?;
    *generator = Generator::from_state(seed, stream, base + 2 * n as u64);
    Ok(Tensor::from_storage(Storage::Gpu(out), Shape::from(x.dims())))
}
