//! The activations' CPU kernels: each pointwise function with its derivative one match arm
//! below it (`Act::forward` / `Act::backward`), mapped over host slices; stable (log-)softmax
//! along a dimension and its backward; and [`erf`], which GELU uses (FreeBSD's `s_erf.c`, via
//! musl and the `libm` crate, accurate to below one ulp in f64).

use super::Act;
use crate::error::Result;
use crate::ops::elementwise::cpu::unary_kernel;
use crate::ops::{parallel_pays, with_float};
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// The few transcendental functions the activations need beyond [`Float`].
pub(super) trait Real: Float {
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

/// 1/√(2π), the standard normal density at 0.
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// √(2/π), PyTorch's `kBeta = M_SQRT2 * M_2_SQRTPI * 0.5` in the tanh form of GELU.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// `min(max(v, 0), 6)`, NaN kept (both comparisons false), as PyTorch's clamps.
#[inline]
fn relu6<T: Real>(v: T) -> T {
    let six = T::from_f64(6.0);
    if v < T::ZERO {
        T::ZERO
    } else if v > six {
        six
    } else {
        v
    }
}

/// The cubic coefficient of the tanh form of GELU (PyTorch's `kKappa`).
const GELU_KAPPA: f64 = 0.044_715;

impl Act {
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
            // x·σ(x), as PyTorch's kernel writes it: x / (1 + e^(−x)).
            Act::Silu => x / (T::ONE + (-x).exp()),
            // x·tanh(ln(1 + eˣ)), as PyTorch's kernel (`log1p(exp(x))`), in f64 and rounded once.
            Act::Mish => {
                let x = x.to_f64();
                T::from_f64(x * x.exp().ln_1p().tanh())
            }
            // min(max(x + 3, 0), 6)/6, as PyTorch's kernel.
            Act::Hardsigmoid => relu6(x + T::from_f64(3.0)) / T::from_f64(6.0),
            Act::Relu6 => relu6(x),
            // x·min(max(x + 3, 0), 6)/6
            Act::Hardswish => x * relu6(x + T::from_f64(3.0)) / T::from_f64(6.0),
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
            // (x·σ)' = σ·(1 + x·(1 − σ)), as PyTorch's silu_backward.
            Act::Silu => {
                let s = T::ONE / (T::ONE + (-x).exp());
                g * (s * (T::ONE + x * (T::ONE - s)))
            }
            // tanh(sp) + x·σ(x)·(1 − tanh²(sp)), sp = ln(1 + eˣ), as PyTorch's mish_backward.
            Act::Mish => {
                let x = x.to_f64();
                let (s, t) = (1.0 / (1.0 + (-x).exp()), x.exp().ln_1p().tanh());
                g * T::from_f64(t + x * s * (1.0 - t * t))
            }
            // 1/6 strictly inside (−3, 3), else 0 (PyTorch's hardsigmoid_backward).
            Act::Hardsigmoid => {
                let three = T::from_f64(3.0);
                if x > -three && x < three { g / T::from_f64(6.0) } else { T::ZERO }
            }
            // 1 strictly inside (0, 6), else 0 (PyTorch's hardtanh_backward).
            Act::Relu6 => {
                if x > T::ZERO && x < T::from_f64(6.0) {
                    g
                } else {
                    T::ZERO
                }
            }
            // 0 below −3, x/3 + ½ on [−3, 3], 1 above (PyTorch's hardswish_backward).
            Act::Hardswish => {
                let three = T::from_f64(3.0);
                if x < -three {
                    T::ZERO
                } else if x <= three {
                    g * (x / three + T::from_f64(0.5))
                } else {
                    g
                }
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
    // Every element is written below; from the buffer pool (see `storage`).
    let mut out = T::take_buffer(g.len());
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

/// `act` over `x` (any layout, read in row-major order): the forward's output buffer.
pub(super) fn pointwise(x: &Tensor, act: Act) -> Result<CpuStorage> {
    let name = act.name();
    let s = x.cpu_storage(name)?;
    with_float!(s, name, |v: T| Ok(T::wrap(unary_kernel::<T, T>(v, x.layout(), |a| act.forward(a)))))
}

/// `act`'s input gradient from the output gradient `g`, the input `x` and the saved output `y`
/// (all of `x`'s shape).
pub(super) fn pointwise_backward(g: &Tensor, x: &Tensor, y: &CpuStorage, act: Act) -> Result<CpuStorage> {
    let name = act.name();
    with_float!(y, name, |yv: T| {
        let dx =
            g.with_slice::<T, _>(|gv| x.with_slice::<T, _>(|xv| zip3(gv, xv, yv, |g, x, y| act.backward(g, x, y))))??;
        Ok(T::wrap(dx))
    })
}

// ------------------------------------------------------------------ softmax and log-softmax

/// Stable (log-)softmax of each line `x[o, :, i]`: m = max x, s = Σ e^(x−m);
/// softmax = e^(x−m)/s, log_softmax = x − m − ln s.
fn softmax_kernel<T: Float>(x: &[T], (outer, size, inner): (usize, usize, usize), log: bool) -> Vec<T> {
    // Every element of every line is written below.
    let mut out = T::take_buffer(x.len());
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
    // Every element is written below.
    let mut dx = T::take_buffer(g.len());
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

/// (Log-)softmax of `x` along the lines `(outer, size, inner)` (see `super::around`).
pub(super) fn softmax(x: &Tensor, geo: (usize, usize, usize), log: bool) -> Result<CpuStorage> {
    let name = if log { "log_softmax" } else { "softmax" };
    let s = x.cpu_storage("softmax")?;
    with_float!(s, name, |_v: T| Ok(T::wrap(x.with_slice::<T, _>(|xv| softmax_kernel(xv, geo, log))?)))
}

/// The input gradient of [`softmax`] from the output gradient `g` and the saved output `y`.
pub(super) fn softmax_backward(
    g: &Tensor,
    y: &CpuStorage,
    geo: (usize, usize, usize),
    log: bool,
) -> Result<CpuStorage> {
    let name = if log { "log_softmax" } else { "softmax" };
    with_float!(y, name, |yv: T| Ok(T::wrap(g.with_slice::<T, _>(|gv| softmax_backward_kernel(gv, yv, geo, log))?)))
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
