//! The numbers behind `torch.nn.init`, in f64 and in PyTorch's order of operations: gains,
//! fans, each scheme's bounds and standard deviations, the rejection sampling of
//! `trunc_normal_` and the sign-corrected QR decomposition of `orthogonal_`.

use super::scheme::{Draw, FanMode, Init, Nonlinearity};
use strata_core::Generator;

/// `calculate_gain(nonlinearity, param)`: 1 for the linear functions and sigmoid, 5/3 for tanh,
/// √2 for relu, √(2 / (1 + slope²)) for leaky_relu (`param` is the slope, 0.01 when `None`),
/// 3/4 for selu.
pub fn gain(nonlinearity: Nonlinearity, param: Option<f64>) -> f64 {
    match nonlinearity {
        Nonlinearity::Linear
        | Nonlinearity::Conv1d
        | Nonlinearity::Conv2d
        | Nonlinearity::Conv3d
        | Nonlinearity::ConvTranspose1d
        | Nonlinearity::ConvTranspose2d
        | Nonlinearity::ConvTranspose3d
        | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2.0f64.sqrt(),
        Nonlinearity::LeakyRelu => {
            let slope = param.unwrap_or(0.01);
            (2.0 / (1.0 + slope * slope)).sqrt()
        }
        Nonlinearity::Selu => 3.0 / 4.0,
    }
}

/// `_calculate_fan_in_and_fan_out`: for a weight `[out, in, *kernel]`,
/// `fan_in = in·∏kernel` and `fan_out = out·∏kernel` (a grouped convolution's weight is
/// `[out, in/groups, kH, kW]`, so its fan_in is `in/groups·kH·kW`). `None` below 2 dimensions.
pub fn fans(shape: &[usize]) -> Option<(usize, usize)> {
    if shape.len() < 2 {
        return None;
    }
    let receptive: usize = shape[2..].iter().product();
    Some((shape[1] * receptive, shape[0] * receptive))
}

/// What `init` draws from for a tensor of `shape`, computed as PyTorch computes it; `None` when
/// the scheme needs two or more dimensions and `shape` has fewer.
pub fn draw(init: &Init, shape: &[usize]) -> Option<Draw> {
    let fan = |mode: FanMode| fans(shape).map(|(i, o)| if mode == FanMode::FanIn { i } else { o } as f64);
    // Float conversions and operations in the order of torch/nn/init.py, so the bounds agree to
    // the last bit.
    Some(match *init {
        Init::Uniform { a, b } => Draw::Uniform { low: a, high: b },
        Init::Normal { mean, std } => Draw::Normal { mean, std },
        Init::TruncNormal { mean, std, a, b } => Draw::TruncNormal { mean, std, a, b },
        Init::Constant { val } => Draw::Constant(val),
        Init::Zeros => Draw::Constant(0.0),
        Init::Ones => Draw::Constant(1.0),
        Init::XavierUniform { gain } => {
            let (i, o) = fans(shape)?;
            let std = gain * (2.0 / (i + o) as f64).sqrt();
            let a = 3.0f64.sqrt() * std;
            Draw::Uniform { low: -a, high: a }
        }
        Init::XavierNormal { gain } => {
            let (i, o) = fans(shape)?;
            Draw::Normal { mean: 0.0, std: gain * (2.0 / (i + o) as f64).sqrt() }
        }
        Init::KaimingUniform { a, mode, nonlinearity } => {
            let std = gain(nonlinearity, Some(a)) / fan(mode)?.sqrt();
            let bound = 3.0f64.sqrt() * std;
            Draw::Uniform { low: -bound, high: bound }
        }
        Init::KaimingNormal { a, mode, nonlinearity } => {
            Draw::Normal { mean: 0.0, std: gain(nonlinearity, Some(a)) / fan(mode)?.sqrt() }
        }
        Init::Orthogonal { gain } => {
            fans(shape)?;
            Draw::Orthogonal { gain }
        }
    })
}

/// `numel` values of `draw` for a tensor of `shape`, from `rng` (uniform and normal values as
/// `Tensor::rand_uniform` and `Tensor::randn` draw them).
pub fn values(draw: Draw, shape: &[usize], rng: &mut Generator) -> Vec<f64> {
    let numel: usize = shape.iter().product();
    let mut v = vec![0.0; numel];
    match draw {
        Draw::Uniform { low, high } => rng.fill_uniform(&mut v, low, high),
        Draw::Normal { mean, std } => rng.fill_normal(&mut v, mean, std),
        Draw::TruncNormal { mean, std, a, b } => trunc_normal(&mut v, mean, std, a, b, rng),
        Draw::Constant(c) => v.fill(c),
        Draw::Orthogonal { gain } => {
            if numel > 0 {
                rng.fill_normal(&mut v, 0.0, 1.0);
                let rows = shape[0];
                v = orthogonal(&v, rows, numel / rows);
                v.iter_mut().for_each(|x| *x *= gain);
            }
        }
    }
    v
}

/// Fills `out` with N(mean, std²) restricted to `[a, b]`, by PyTorch's rejection sampling
/// (`_no_grad_trunc_normal_`, torch 2.15): when the interval holds more than 30% of the mass,
/// normal draws outside it are drawn again; otherwise uniform draws on the interval are
/// accepted with probability pdf(x)/pdf(mode). Rejected values are drawn again in batches, so
/// the result is the same whatever the thread count.
///
/// One departure, for intervals far in a tail or very wide: the uniform proposals cover only
/// the part of `[a, b]` where the density is at least 2⁻⁶⁰ of its peak (the mass left out is
/// below f64's resolution), so at least about one proposal in 45 is accepted where PyTorch's
/// rate can fall to one in millions (`a = -1e6, b = -3`). The rounds are capped at 10⁵ (a
/// value still rejected then keeps its last proposal, inside `[a, b]`): with at least one
/// proposal in 45 accepted, the cap is never reached.
pub fn trunc_normal(out: &mut [f64], mean: f64, std: f64, a: f64, b: f64, rng: &mut Generator) {
    const MAX_ROUNDS: usize = 100_000;
    let p = norm_cdf((b - mean) / std) - norm_cdf((a - mean) / std);
    let mut pending: Vec<usize> = (0..out.len()).collect();
    if p > 0.3 {
        for _ in 0..MAX_ROUNDS {
            let mut draws = vec![0.0; pending.len()];
            rng.fill_normal(&mut draws, mean, std);
            for (&i, x) in pending.iter().zip(draws) {
                out[i] = x;
            }
            pending.retain(|&i| out[i] < a || out[i] > b);
            if pending.is_empty() {
                return;
            }
        }
        // Unreachable in practice (each round keeps under 70%): stay within the bounds.
        pending.iter().for_each(|&i| out[i] = out[i].clamp(a, b));
        return;
    }
    let mode = mean.clamp(a, b);
    let z_mode = (mode - mean) / std;
    let log_peak = -0.5 * z_mode * z_mode;
    // Where pdf/peak ≥ 2⁻⁶⁰: |z|² ≤ z_mode² + 120·ln 2.
    let reach = std * (z_mode * z_mode + 120.0 * std::f64::consts::LN_2).sqrt();
    let (lo, hi) = (a.max(mean - reach), b.min(mean + reach));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (a, b) };
    for _ in 0..MAX_ROUNDS {
        let mut candidates = vec![0.0; pending.len()];
        let mut accept = vec![0.0; pending.len()];
        rng.fill_uniform(&mut candidates, lo, hi);
        rng.fill_uniform(&mut accept, 0.0, 1.0);
        let mut still = Vec::new();
        for ((&i, x), u) in pending.iter().zip(candidates).zip(accept) {
            out[i] = x;
            let z = (x - mean) / std;
            // PyTorch rejects when log(u) > log_pdf − log_peak (a NaN comparison accepts).
            if u.ln() > -0.5 * z * z - log_peak {
                still.push(i);
            }
        }
        pending = still;
        if pending.is_empty() {
            return;
        }
    }
}

/// The standard normal CDF, `(1 + erf(x/√2)) / 2` (as `trunc_normal_`'s `norm_cdf`).
pub fn norm_cdf(x: f64) -> f64 {
    (1.0 + strata_core::erf(x / 2.0f64.sqrt())) / 2.0
}

/// `orthogonal_`'s matrix from `a` (`[rows, cols]`, row-major, normal draws): the QR
/// decomposition of `a` (of `aᵀ` when wide) with each column of Q multiplied by the sign of
/// R's diagonal, so the result is unique (R's diagonal positive) and equal to PyTorch's for the
/// same draws. Tall: orthonormal columns (`QᵀQ = I`); wide: orthonormal rows (`QQᵀ = I`).
pub fn orthogonal(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let wide = rows < cols;
    let (m, n) = if wide { (cols, rows) } else { (rows, cols) };
    // col[j][i]: column j of the m×n matrix being decomposed (column-major for the reflections).
    let mut col: Vec<Vec<f64>> =
        (0..n).map(|j| (0..m).map(|i| if wide { a[j * cols + i] } else { a[i * cols + j] }).collect()).collect();
    // Householder: H_k = I − 2 v vᵀ turns column k's entries k.. into (r_kk, 0, …, 0).
    let mut reflectors: Vec<Vec<f64>> = Vec::with_capacity(n);
    let mut diag = vec![0.0; n];
    for k in 0..n {
        let x = &col[k][k..];
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let alpha = if x[0] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = x.to_vec();
        v[0] -= alpha;
        let vnorm = v.iter().map(|t| t * t).sum::<f64>().sqrt();
        if vnorm > 0.0 {
            v.iter_mut().for_each(|t| *t /= vnorm);
        }
        for c in col.iter_mut().skip(k) {
            let dot: f64 = v.iter().zip(&c[k..]).map(|(p, q)| p * q).sum();
            c[k..].iter_mut().zip(&v).for_each(|(q, p)| *q -= 2.0 * dot * p);
        }
        diag[k] = col[k][k];
        reflectors.push(v);
    }
    // Q = H_0 H_1 … H_{n−1} applied to the first n columns of the identity, then each column
    // times sign(r_kk) (0 for a zero diagonal entry, as torch's `sign`).
    let mut q: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            let mut e = vec![0.0; m];
            e[j] = 1.0;
            for (k, v) in reflectors.iter().enumerate().rev() {
                let dot: f64 = v.iter().zip(&e[k..]).map(|(p, q)| p * q).sum();
                e[k..].iter_mut().zip(v).for_each(|(q, p)| *q -= 2.0 * dot * p);
            }
            e
        })
        .collect();
    for (j, c) in q.iter_mut().enumerate() {
        let s = if diag[j] > 0.0 {
            1.0
        } else if diag[j] < 0.0 {
            -1.0
        } else {
            0.0
        };
        c.iter_mut().for_each(|x| *x *= s);
    }
    // Back to [rows, cols] row-major: Q is m×n; the wide case is Qᵀ.
    let mut out = vec![0.0; rows * cols];
    for (j, c) in q.iter().enumerate() {
        for (i, x) in c.iter().enumerate() {
            if wide {
                out[j * cols + i] = *x;
            } else {
                out[i * cols + j] = *x;
            }
        }
    }
    out
}
