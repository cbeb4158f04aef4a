//! Branch-free f32 `exp`, `expm1`, logistic sigmoid and `tanh` for kernels that want the
//! compiler to vectorise them (the fused LSTM cell): only adds, multiplies, divides, min/max,
//! selects and bit casts, so a loop calling them compiles to AVX-512 (or SSE) code, where
//! `f32::exp` and `f32::tanh` are opaque library calls, one element at a time.
//!
//! `exp` is Cephes' `expf`: x = n·ln 2 + r with |r| ≤ ½ln 2 (n rounded to nearest by the
//! 1.5·2²³ trick, ln 2 split in two for an exact reduction), eʳ = 1 + r + r²·P(r) with P of
//! degree 5, and 2ⁿ built from its exponent bits. `expm1` keeps r + r²·P(r) apart from the 1, so
//! that `tanh x = expm1(2x) / (expm1(2x) + 2)` has no cancellation near 0.
//!
//! Accuracy (tested below against f64 over a sweep): `exp` within 1 ulp, `expm1` within 1.5,
//! `sigmoid` and `tanh` within 2 — far inside the PyTorch-parity tolerance (1e-5 relative). Every operation is a
//! plain IEEE one, never fused (Rust does not contract `a·b + c`), so the vector and scalar code
//! round identically: the results do not depend on the CPU or the thread count.

/// Inputs are clamped to this range: e^88 is finite in f32 and e^−87 is still normal, so 2ⁿ
/// can be built from exponent bits for every n the reduction gives.
const EXP_LO: f32 = -87.0;
const EXP_HI: f32 = 88.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, LN2_HI with few enough bits that n·LN2_HI is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds to an integer (nearest, ties to even) held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `(2ⁿ, r + r²·P(r))` with `eˣ = 2ⁿ·(1 + r + r²·P(r))`, for x already clamped.
#[inline(always)]
fn exp_parts(x: f32) -> (f32, f32) {
    let t = x * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5; // Cephes' 5.0000001201e-1, which rounds to ½ in f32
    // The integer n sits in t's low mantissa bits, offset by the magic number's own bits.
    let ni = t.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    (scale, r * r * p + r)
}

/// eˣ (NaN stays NaN; below −87 it is e^−87 ≈ 1.6e−38, above 88 e^88 ≈ 1.7e38).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let (s, p) = exp_parts(x.clamp(EXP_LO, EXP_HI));
    let y = s * p + s;
    if x.is_nan() { x } else { y }
}

/// eˣ − 1, accurate near 0.
#[inline(always)]
pub(crate) fn expm1(x: f32) -> f32 {
    let (s, p) = exp_parts(x.clamp(EXP_LO, EXP_HI));
    let y = s * p + (s - 1.0);
    if x.is_nan() { x } else { y }
}

/// The logistic function 1 / (1 + e^−x).
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// tanh x = expm1(2x) / (expm1(2x) + 2); exactly ±1 beyond |x| ≈ 9.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let e = expm1(2.0 * x);
    let y = e / (e + 2.0);
    // Keep −0.0 and subnormals exact (2x would lose nothing, but e/(e+2) rounds them).
    if x.abs() < 1e-30 { x } else { y }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of `got` against the exact `want` in units of f32's last place at `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let ulp = (want.abs().max(f32::MIN_POSITIVE as f64) * f32::EPSILON as f64).max(f64::MIN_POSITIVE);
        (got as f64 - want).abs() / ulp
    }

    fn sweep() -> impl Iterator<Item = f32> {
        (-300_000..=300_000).map(|i| i as f32 * 3e-4 * (1.0 + (i as f32).abs() * 2e-6))
    }

    #[test]
    fn accuracy_against_f64() {
        let (mut e, mut em, mut s, mut t) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for x in sweep() {
            let xd = x as f64;
            if xd.abs() < 80.0 {
                e = e.max(ulps(exp(x), xd.exp()));
                em = em.max(ulps(expm1(x), xd.exp_m1()));
                s = s.max(ulps(sigmoid(x), 1.0 / (1.0 + (-xd).exp())));
            } else if xd < 0.0 {
                // Far below: e^x itself, of which f32 keeps little; the value is ~0 either way.
                assert!(sigmoid(x) < 2e-35);
            }
            t = t.max(ulps(tanh(x), xd.tanh()));
        }
        assert!(e <= 1.0 && em <= 1.5 && s <= 2.0 && t <= 2.0, "exp {e} expm1 {em} sigmoid {s} tanh {t} ulp");
    }

    #[test]
    fn edges() {
        assert!(exp(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
        assert_eq!((tanh(f32::INFINITY), tanh(f32::NEG_INFINITY), tanh(30.0), tanh(-30.0)), (1.0, -1.0, 1.0, -1.0));
        assert_eq!((sigmoid(f32::INFINITY), sigmoid(f32::NEG_INFINITY) < 1e-37), (1.0, true));
        assert_eq!((sigmoid(200.0), sigmoid(-200.0) < 1e-37), (1.0, true));
        assert_eq!((tanh(0.0), tanh(-0.0).to_bits(), tanh(1e-35)), (0.0, (-0.0f32).to_bits(), 1e-35));
        assert_eq!((exp(0.0), expm1(0.0), sigmoid(0.0)), (1.0, 0.0, 0.5));
    }
}
