//! Activation functions: sigmoid, tanh, GELU (exact erf form, and PyTorch's tanh approximation),
//! leaky ReLU and ELU as pointwise
//! maps with their derivatives beside them, and softmax / log-softmax along a dimension
//! (numerically stable: the maximum is subtracted first). The `erf` used by GELU is FreeBSD's
//! `s_erf.c` (via musl and the `libm` crate), accurate to below one ulp in f64.

#[cfg(feature = "gpu")]
mod gpu;
use super::elementwise::unary_kernel;
use super::{parallel_pays, with_float};
use crate::autograd::make_node;
use crate::error::Result;
use crate::shape::{Layout, Shape};
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;

/// The few transcendental functions the activations need beyond [`Float`].
trait Real: Float {
    fn tanh(self) -> Self;
}
impl Real for f32 {
    /// (e − 1)/(e + 1) with e = e^(2x) in f64, rounded once: as accurate as `tanhf` (the f64
    /// error is far below f32's ulp) and about three times faster, which matters inside LSTMs.
    #[inline]
    fn tanh(self) -> f32 {
        let x = self as f64;
        if x.abs() < 1e-4 {
            // tanh x = x − x³/3 + O(x⁵); also keeps −0.0 and tiny values exact.
            return (x - x * x * x / 3.0) as f32;
        }
        if x.abs() > 20.0 {
            // |tanh x| rounds to 1 in f64 already; NaN falls through below.
            return self.signum();
        }
        let e = (2.0 * x).exp();
        ((e - 1.0) / (e + 1.0)) as f32
    }
}
impl Real for f64 {
    #[inline]
    fn tanh(self) -> f64 {
        f64::tanh(self)
    }
}

// ------------------------------------------------------------------ pointwise activations

/// Which pointwise activation: one enum so they share dispatch; each derivative sits one match
/// arm below its function.
#[derive(Clone, Copy, Debug)]
enum Act {
    Sigmoid,
    Tanh,
    Gelu,
    GeluTanh,
    LeakyRelu(f64),
    Elu(f64),
}

/// 1/√(2π), the standard normal density at 0.
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// √(2/π), PyTorch's `kBeta = M_SQRT2 * M_2_SQRTPI * 0.5` in the tanh form of GELU.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of the tanh form of GELU (PyTorch's `kKappa`).
const GELU_KAPPA: f64 = 0.044_715;

impl Act {
    fn name(self) -> &'static str {
        match self {
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::Gelu | Act::GeluTanh => "gelu",
            Act::LeakyRelu(_) => "leaky_relu",
            Act::Elu(_) => "elu",
        }
    }

    /// y = f(x).
    #[inline]
    fn forward<T: Real>(self, x: T) -> T {
        match self {
            Act::Sigmoid => T::ONE / (T::ONE + (-x).exp()),
            Act::Tanh => x.tanh(),
            // x·Φ(x) = ½·x·(1 + erf(x/√2)), in f64 and rounded once.
            Act::Gelu => {
                let x = x.to_f64();
                T::from_f64(x * 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)))
            }
            // ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), PyTorch's formula term for term, in f64
            // and rounded once.
            Act::GeluTanh => {
                let x = x.to_f64();
                let inner = SQRT_2_OVER_PI * (x + GELU_KAPPA * x * x * x);
                T::from_f64(0.5 * x * (1.0 + inner.tanh()))
            }
            Act::LeakyRelu(slope) => {
                if x > T::ZERO {
                    x
                } else {
                    x * T::from_f64(slope)
                }
            }
            Act::Elu(alpha) => {
                if x > T::ZERO {
                    x
                } else {
                    T::from_f64(alpha) * (x.exp() - T::ONE)
                }
            }
        }
    }

    /// dL/dx from g = dL/dy, the input x and the output y.
    #[inline]
    fn backward<T: Real>(self, g: T, x: T, y: T) -> T {
        match self {
            // σ' = σ(1 − σ)
            Act::Sigmoid => g * (T::ONE - y) * y,
            // tanh' = 1 − tanh²
            Act::Tanh => g * (T::ONE - y * y),
            // (xΦ(x))' = Φ(x) + x·φ(x)
            Act::Gelu => {
                let x = x.to_f64();
                let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
                let pdf = (-0.5 * x * x).exp() * INV_SQRT_2PI;
                g * T::from_f64(cdf + x * pdf)
            }
            // With u = √(2/π)·(x + κx³) and t = tanh u, y = ½x(1 + t):
            // dy/dx = ½(1 + t) + ½x·(1 − t²)·√(2/π)·(1 + 3κx²), as PyTorch's gelu_backward.
            Act::GeluTanh => {
                let x = x.to_f64();
                let t = (SQRT_2_OVER_PI * (x + GELU_KAPPA * x * x * x)).tanh();
                let d_inner = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_KAPPA * x * x);
                g * T::from_f64(0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner)
            }
            // slope where x ≤ 0 (at 0 too, as PyTorch's leaky_relu_backward)
            Act::LeakyRelu(slope) => {
                if x > T::ZERO {
                    g
                } else {
                    g * T::from_f64(slope)
                }
            }
            // α·eˣ where x ≤ 0 (at 0 too, as PyTorch's elu_backward)
            Act::Elu(alpha) => {
                if x > T::ZERO {
                    g
                } else {
                    g * T::from_f64(alpha) * x.exp()
                }
            }
        }
    }
}

const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// `out[i] = f(g[i], x[i], y[i])` over three contiguous slices, split across threads when large.
fn zip3<T: Float>(g: &[T], x: &[T], y: &[T], f: impl Fn(T, T, T) -> T + Sync) -> Vec<T> {
    const CHUNK: usize = 1 << 13;
    let mut out = vec![T::ZERO; g.len()];
    let run = |start: usize, o: &mut [T]| {
        for (i, oi) in o.iter_mut().enumerate() {
            *oi = f(g[start + i], x[start + i], y[start + i]);
        }
    };
    if parallel_pays(g.len()) {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| run(c * CHUNK, o));
    } else {
        run(0, &mut out);
    }
    out
}

/// The output of an op whose backward needs its own output: the buffer is shared with the
/// closure through its `Arc` (saving the output *tensor* would make a reference cycle).
fn op_with_saved_output(
    out: CpuStorage,
    shape: Shape,
    name: &'static str,
    input: &Tensor,
    backward: impl FnOnce(&Tensor, Arc<CpuStorage>) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Tensor {
    let out = Arc::new(out);
    let saved = out.clone();
    let node = make_node(name, &[input], Box::new(move |g| backward(g, saved)));
    Tensor::from_parts(out, Layout::contiguous(shape), node)
}

fn pointwise(x: &Tensor, act: Act) -> Result<Tensor> {
    let name = act.name();
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        return gpu::pointwise(x, act);
    }
    let s = x.cpu_storage(name)?;
    let out = with_float!(s, name, |v: T| Ok(T::wrap(unary_kernel::<T, T>(v, x.layout(), |a| act.forward(a)))))?;
    let x_saved = x.clone();
    Ok(op_with_saved_output(out, x.shape().clone(), name, x, move |g, y| {
        let x = x_saved;
        let dx = with_float!(y, name, |yv: T| {
            let dx = g.with_slice::<T, _>(|gv| {
                x.with_slice::<T, _>(|xv| zip3(gv, xv, yv, |g, x, y| act.backward(g, x, y)))
            })??;
            Ok(T::wrap(dx))
        })?;
        Ok(vec![Some(Tensor::from_storage(dx, x.shape().clone()))])
    }))
}

impl Tensor {
    /// The logistic function `1 / (1 + e^(−x))`, as `torch.sigmoid`.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn sigmoid(&self) -> Result<Tensor> {
        pointwise(self, Act::Sigmoid)
    }

    /// The hyperbolic tangent, as `torch.tanh`.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn tanh(&self) -> Result<Tensor> {
        pointwise(self, Act::Tanh)
    }

    /// GELU in its exact form `x·Φ(x) = ½·x·(1 + erf(x/√2))`, PyTorch's default
    /// (`F.gelu(x, approximate='none')`).
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn gelu(&self) -> Result<Tensor> {
        pointwise(self, Act::Gelu)
    }

    /// GELU in PyTorch's tanh approximation `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
    /// (`F.gelu(x, approximate='tanh')`), gradient by the same formula's derivative.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        pointwise(self, Act::GeluTanh)
    }

    /// `x` where `x > 0`, else `negative_slope·x`, as `F.leaky_relu` (PyTorch's default slope is
    /// 0.01). The gradient at 0 is `negative_slope`, as in PyTorch.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn leaky_relu(&self, negative_slope: f64) -> Result<Tensor> {
        pointwise(self, Act::LeakyRelu(negative_slope))
    }

    /// `x` where `x > 0`, else `alpha·(eˣ − 1)`, as `F.elu` (PyTorch's default alpha is 1).
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn elu(&self, alpha: f64) -> Result<Tensor> {
        pointwise(self, Act::Elu(alpha))
    }
}

// ------------------------------------------------------------------ softmax and log-softmax

/// `[outer, size, inner]`: the input seen around dimension `d`, so the softmax runs over `size`
/// elements `inner` apart.
fn around(shape: &Shape, d: usize) -> (usize, usize, usize) {
    let dims = shape.dims();
    (dims[..d].iter().product(), dims[d], dims[d + 1..].iter().product())
}

/// Stable (log-)softmax of each line `x[o, :, i]`: m = max x, s = Σ e^(x−m);
/// softmax = e^(x−m)/s, log_softmax = x − m − ln s.
fn softmax_kernel<T: Float>(x: &[T], (outer, size, inner): (usize, usize, usize), log: bool) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    let line = |o: usize, i: usize, out: &mut [T]| {
        let base = o * size * inner + i;
        let at = |j: usize| base + j * inner;
        let mut m = T::NEG_INFINITY;
        for j in 0..size {
            m = m.max_nan(x[at(j)]);
        }
        if m == T::NEG_INFINITY {
            // All −∞: avoid (−∞) − (−∞); PyTorch gives NaN here as well.
            m = T::ZERO;
        }
        let mut s = T::ZERO;
        for j in 0..size {
            let e = (x[at(j)] - m).exp();
            if !log {
                out[at(j) - o * size * inner] = e;
            }
            s += e;
        }
        if log {
            let lse = m + s.ln();
            for j in 0..size {
                out[at(j) - o * size * inner] = x[at(j)] - lse;
            }
        } else {
            let inv = T::ONE / s;
            for j in 0..size {
                out[at(j) - o * size * inner] *= inv;
            }
        }
    };
    let block = size * inner;
    if block == 0 {
        return out;
    }
    let per_block = |(o, chunk): (usize, &mut [T])| (0..inner).for_each(|i| line(o, i, chunk));
    if parallel_pays(x.len()) && outer > 1 {
        out.par_chunks_mut(block).enumerate().for_each(per_block);
    } else {
        out.chunks_mut(block).enumerate().for_each(per_block);
    }
    out
}

/// Backward of (log-)softmax along each line, from g and the saved output y:
/// softmax: dx = y·(g − Σ g·y); log_softmax: dx = g − e^y·Σ g.
fn softmax_backward_kernel<T: Float>(
    g: &[T],
    y: &[T],
    (outer, size, inner): (usize, usize, usize),
    log: bool,
) -> Vec<T> {
    let mut dx = vec![T::ZERO; g.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * size * inner + i + j * inner;
            let mut s = T::ZERO;
            for j in 0..size {
                s += if log { g[at(j)] } else { g[at(j)] * y[at(j)] };
            }
            for j in 0..size {
                let k = at(j);
                dx[k] = if log { g[k] - y[k].exp() * s } else { y[k] * (g[k] - s) };
            }
        }
    }
    dx
}

fn softmax_impl(x: &Tensor, dim: isize, log: bool) -> Result<Tensor> {
    let name = if log { "log_softmax" } else { "softmax" };
    if x.ndim() == 0 {
        // A scalar is a line of one element, as in PyTorch.
        return softmax_impl(&x.reshape(&[1])?, 0, log)?.reshape(&[]);
    }
    let d = x.shape().resolve_dim(name, dim)?;
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        // Composed from ops: the maximum is a constant shift (softmax does not change with it),
        // so it is detached and its backward never runs.
        let dim = d as isize;
        let shifted = x.sub(&x.gpu_max_keepdim(d)?)?;
        let e = shifted.exp()?;
        let total = e.sum(&[dim], true)?;
        return if log { shifted.sub(&total.log()?) } else { e.div(&total) };
    }
    let geo = around(x.shape(), d);
    let s = x.cpu_storage("softmax")?;
    let out = with_float!(s, name, |_v: T| Ok(T::wrap(x.with_slice::<T, _>(|xv| softmax_kernel(xv, geo, log))?)))?;
    let shape = x.shape().clone();
    Ok(op_with_saved_output(out, shape.clone(), name, x, move |g, y| {
        let dx = with_float!(y, name, |yv: T| Ok(T::wrap(
            g.with_slice::<T, _>(|gv| softmax_backward_kernel(gv, yv, geo, log))?
        )))?;
        Ok(vec![Some(Tensor::from_storage(dx, shape))])
    }))
}

impl Tensor {
    /// `e^(x_i) / Σ_j e^(x_j)` along `dim` (negative counts from the end), as
    /// `torch.softmax(x, dim)`; computed stably, with the maximum subtracted first.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape, each line along `dim` summing to 1
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        softmax_impl(self, dim, false)
    }

    /// `x_i − log Σ_j e^(x_j)` along `dim`, as `torch.log_softmax(x, dim)`; stable for any
    /// magnitude (logits of ±1e4 give finite results).
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        softmax_impl(self, dim, true)
    }
}

// ------------------------------------------------------------------ erf

// origin: FreeBSD /usr/src/lib/msun/src/s_erf.c, via musl and the `libm` crate (erf only).
// ====================================================
// Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
//
// Developed at SunPro, a Sun Microsystems, Inc. business.
// Permission to use, copy, modify, and distribute this
// software is freely granted, provided that this notice
// is preserved.
// ====================================================
//
// Method: on |x| < 0.84375, erf(x) = x + x·R(x²) with a rational R; on [0.84375, 1.25) a
// rational approximation around 1; on [1.25, 6), erf = 1 − erfc with
// erfc(x) = exp(−x² − 0.5625 + R(1/x²)/S(1/x²))/x; beyond 6, ±1.

/// The published coefficients, digit for digit (more digits than an f64 holds, as in the
/// original source).
#[allow(clippy::excessive_precision)]
mod erf_coefficients {
    pub(super) const ERX: f64 = 8.45062911510467529297e-01;
    pub(super) const EFX8: f64 = 1.02703333676410069053e+00;
    pub(super) const PP: [f64; 5] = [
        1.28379167095512558561e-01,
        -3.25042107247001499370e-01,
        -2.84817495755985104766e-02,
        -5.77027029648944159157e-03,
        -2.37630166566501626084e-05,
    ];
    pub(super) const QQ: [f64; 5] = [
        3.97917223959155352819e-01,
        6.50222499887672944485e-02,
        5.08130628187576562776e-03,
        1.32494738004321644526e-04,
        -3.96022827877536812320e-06,
    ];
    pub(super) const PA: [f64; 7] = [
        -2.36211856075265944077e-03,
        4.14856118683748331666e-01,
        -3.72207876035701323847e-01,
        3.18346619901161753674e-01,
        -1.10894694282396677476e-01,
        3.54783043256182359371e-02,
        -2.16637559486879084300e-03,
    ];
    pub(super) const QA: [f64; 6] = [
        1.06420880400844228286e-01,
        5.40397917702171048937e-01,
        7.18286544141962662868e-02,
        1.26171219808761642112e-01,
        1.36370839120290507362e-02,
        1.19844998467991074170e-02,
    ];
    pub(super) const RA: [f64; 8] = [
        -9.86494403484714822705e-03,
        -6.93858572707181764372e-01,
        -1.05586262253232909814e+01,
        -6.23753324503260060396e+01,
        -1.62396669462573470355e+02,
        -1.84605092906711035994e+02,
        -8.12874355063065934246e+01,
        -9.81432934416914548592e+00,
    ];
    pub(super) const SA: [f64; 8] = [
        1.96512716674392571292e+01,
        1.37657754143519042600e+02,
        4.34565877475229228821e+02,
        6.45387271733267880336e+02,
        4.29008140027567833386e+02,
        1.08635005541779435134e+02,
        6.57024977031928170135e+00,
        -6.04244152148580987438e-02,
    ];
    pub(super) const RB: [f64; 7] = [
        -9.86494292470009928597e-03,
        -7.99283237680523006574e-01,
        -1.77579549177547519889e+01,
        -1.60636384855821916062e+02,
        -6.37566443368389627722e+02,
        -1.02509513161107724954e+03,
        -4.83519191608651397019e+02,
    ];
    pub(super) const SB: [f64; 7] = [
        3.03380607434824582924e+01,
        3.25792512996573918826e+02,
        1.53672958608443695994e+03,
        3.19985821950859553908e+03,
        2.55305040643316442583e+03,
        4.74528541206955367215e+02,
        -2.24409524465858183362e+01,
    ];
}
use erf_coefficients::*;

/// `c0 + z·(c1 + z·(c2 + …))`.
#[inline]
fn poly(z: f64, c: &[f64]) -> f64 {
    c.iter().rev().fold(0.0, |acc, &ci| acc * z + ci)
}

/// The error function `erf(x) = 2/√π ∫₀ˣ e^(−t²) dt`, to within one ulp in f64.
pub fn erf(x: f64) -> f64 {
    let hi = (x.to_bits() >> 32) as u32;
    let negative = hi >> 31 != 0;
    let ix = hi & 0x7fff_ffff;
    if ix >= 0x7ff0_0000 {
        // erf(NaN) = NaN, erf(±∞) = ±1
        return if x.is_nan() {
            x
        } else if negative {
            -1.0
        } else {
            1.0
        };
    }
    if ix < 0x3feb_0000 {
        // |x| < 0.84375
        if ix < 0x3e30_0000 {
            // |x| < 2⁻²⁸: avoid underflow
            return 0.125 * (8.0 * x + EFX8 * x);
        }
        let z = x * x;
        let r = poly(z, &PP);
        let s = 1.0 + z * poly(z, &QQ);
        return x + x * (r / s);
    }
    let y = if ix < 0x3ff4_0000 {
        // 0.84375 ≤ |x| < 1.25: erf(1 + s) − ERX as a rational function of s
        let s = x.abs() - 1.0;
        let p = poly(s, &PA);
        let q = 1.0 + s * poly(s, &QA);
        ERX + p / q
    } else if ix < 0x4018_0000 {
        // 1.25 ≤ |x| < 6: 1 − erfc(|x|)
        let ax = x.abs();
        let s = 1.0 / (ax * ax);
        let (r, big_s) = if ix < 0x4006_db6d {
            (poly(s, &RA), 1.0 + s * poly(s, &SA))
        } else {
            (poly(s, &RB), 1.0 + s * poly(s, &SB))
        };
        // z is |x| with the low 32 bits cleared, so that z² is exact.
        let z = f64::from_bits(ax.to_bits() & 0xffff_ffff_0000_0000);
        1.0 - (-z * z - 0.5625).exp() * ((z - ax) * (z + ax) + r / big_s).exp() / ax
    } else {
        1.0 - f64::from_bits(0x0010_0000_0000_0000)
    };
    if negative { -y } else { y }
}

#[cfg(test)]
mod tests {
    use super::erf;
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{DType, Generator, Tensor};

    #[test]
    fn erf_reference_values() {
        // Values from mpmath (50 digits), rounded to f64.
        let cases = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (1.5, 0.9661051464753108),
            (2.5, 0.999593047982555),
            (-3.0, -0.9999779095030014),
            (4.0, 0.9999999845827421),
            (7.0, 1.0),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() <= 2e-16, "erf({x}) = {}, want {want}", erf(x));
        }
        assert!(erf(f64::NAN).is_nan());
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
    }

    #[test]
    fn f32_tanh_matches_the_correctly_rounded_value() {
        use super::Real;
        let mut worst = 0.0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4 * (1.0 + (i as f32).abs() * 1e-5);
            let want = (x as f64).tanh();
            let got = Real::tanh(x) as f64;
            worst = worst.max((got - want).abs() / (want.abs().max(f32::MIN_POSITIVE as f64) * f32::EPSILON as f64));
        }
        // Within one f32 ulp of the exact value everywhere (tanhf's own guarantee).
        assert!(worst <= 1.0, "{worst} ulp");
        assert!(Real::tanh(f32::NAN).is_nan());
        assert_eq!(Real::tanh(f32::INFINITY), 1.0);
        assert_eq!(Real::tanh(-1e-30f32), -1e-30);
    }

    #[test]
    fn values_by_hand() {
        let x = Tensor::from_vec(vec![-2.0f64, -0.5, 0.0, 0.5, 2.0], &[5]).unwrap();
        let e = |v: f64| v.exp();
        assert_close(
            &x.sigmoid().unwrap().to_vec_f64(),
            &[1.0 / (1.0 + e(2.0)), 1.0 / (1.0 + e(0.5)), 0.5, 1.0 / (1.0 + e(-0.5)), 1.0 / (1.0 + e(-2.0))],
            1e-15,
            0.0,
        );
        assert_close(
            &x.tanh().unwrap().to_vec_f64(),
            &[-(2.0f64).tanh(), -(0.5f64).tanh(), 0.0, 0.5f64.tanh(), 2.0f64.tanh()],
            1e-15,
            0.0,
        );
        assert_eq!(x.leaky_relu(0.1).unwrap().to_vec_f64(), [-0.2, -0.05, 0.0, 0.5, 2.0]);
        assert_close(
            &x.elu(2.0).unwrap().to_vec_f64(),
            &[2.0 * (e(-2.0) - 1.0), 2.0 * (e(-0.5) - 1.0), 0.0, 0.5, 2.0],
            1e-15,
            0.0,
        );
        // GELU(x) = x·Φ(x); Φ(2) = 0.9772498680518208.
        let g = x.gelu().unwrap().to_vec_f64();
        assert_close(
            &[g[4], g[0], g[2]],
            &[2.0 * 0.9772498680518208, -2.0 * (1.0 - 0.9772498680518208), 0.0],
            1e-15,
            1e-16,
        );
        // The tanh form: 0.5·2·(1 + tanh(√(2/π)·(2 + 0.044715·8))) = 1.954597694087775 (mpmath),
        // gelu(−x) = gelu(x) − x (as for the exact form), and 0 at 0.
        let g = x.gelu_tanh().unwrap().to_vec_f64();
        assert_close(&[g[4], g[0], g[2]], &[1.954597694087775, 1.954597694087775 - 2.0, 0.0], 1e-15, 1e-16);
        // Softmax of [0, ln 3] is [1/4, 3/4].
        let s = Tensor::from_vec(vec![0.0f64, 3f64.ln()], &[2]).unwrap();
        assert_close(&s.softmax(0).unwrap().to_vec_f64(), &[0.25, 0.75], 1e-15, 0.0);
        assert_close(&s.log_softmax(-1).unwrap().to_vec_f64(), &[0.25f64.ln(), 0.75f64.ln()], 1e-15, 0.0);
    }

    #[test]
    fn gradients_at_zero_follow_pytorch() {
        let x = Tensor::from_vec(vec![0.0f32], &[1]).unwrap().requires_grad_().unwrap();
        x.leaky_relu(0.2).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [0.2]);
        x.set_grad(None).unwrap();
        x.elu(0.5).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [0.5]);
    }

    #[test]
    fn softmax_is_stable_for_huge_logits() {
        let x = Tensor::from_vec(vec![1e4f32, -1e4, 0.0, 1e4], &[2, 2]).unwrap();
        let y = x.softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(y, [1.0, 0.0, 0.0, 1.0]);
        let l = x.log_softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(l, [0.0, -2e4, -1e4, 0.0]);
        assert!(x.softmax(2).unwrap_err().to_string().contains("softmax: dimension 2 is out of range"));
        let i = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
        assert!(i.sigmoid().unwrap_err().to_string().contains("sigmoid: not supported for I64"));
    }

    #[test]
    fn gradcheck_pointwise() {
        let mut rng = Generator::new(61);
        let x = randn64(&[3, 5], &mut rng).mul_scalar(2.0).unwrap();
        gradcheck(std::slice::from_ref(&x), |t| t[0].sigmoid());
        gradcheck(std::slice::from_ref(&x), |t| t[0].tanh());
        gradcheck(std::slice::from_ref(&x), |t| t[0].gelu());
        gradcheck(std::slice::from_ref(&x), |t| t[0].gelu_tanh());
        gradcheck(std::slice::from_ref(&x), |t| t[0].leaky_relu(0.03));
        gradcheck(std::slice::from_ref(&x), |t| t[0].elu(1.3));
        // A strided (transposed) input.
        gradcheck(std::slice::from_ref(&x), |t| t[0].t()?.gelu());
        gradcheck(std::slice::from_ref(&x), |t| t[0].t()?.gelu_tanh());
        gradcheck(std::slice::from_ref(&x), |t| t[0].t()?.sigmoid());
    }

    #[test]
    fn gradcheck_softmax() {
        let mut rng = Generator::new(62);
        let x = randn64(&[2, 3, 4], &mut rng);
        for dim in [0, 1, 2, -1] {
            gradcheck(std::slice::from_ref(&x), |t| t[0].softmax(dim));
            gradcheck(std::slice::from_ref(&x), |t| t[0].log_softmax(dim));
        }
        gradcheck(std::slice::from_ref(&x), |t| t[0].transpose(0, 2)?.softmax(1));
        gradcheck(&[randn64(&[], &mut rng)], |t| t[0].log_softmax(0));
        let _ = DType::F64;
    }
}
