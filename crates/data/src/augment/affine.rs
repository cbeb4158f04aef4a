//! `RandomAffine`: a small random rotation, translation and scaling about the image centre with
//! bilinear sampling — torchvision's `transforms.RandomAffine(degrees, translate, scale,
//! interpolation=BILINEAR)` without shear.
//!
//! The geometry is torchvision's tensor path exactly (`F.affine` → `_get_inverse_affine_matrix`
//! → `_gen_affine_grid` → `grid_sample(align_corners=False)`), so a parity fixture can hold the
//! two to rounding.

use std::fmt;

use strata_core::Generator;

use super::{ImageShape, check_fill, fill_at};
use crate::error::{DataError, Result};

/// The parameters of one affine warp, torchvision's `F.affine(angle, translate, scale, shear=0)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineParams {
    /// Rotation in degrees, clockwise on the screen (rows grow downwards), as `F.affine`.
    pub angle: f64,
    /// Translation `[horizontal, vertical]` in pixels (right and down are positive).
    /// [`RandomAffine`] draws whole pixels, as torchvision does.
    pub translate: [f64; 2],
    /// Scale factor (> 1 enlarges).
    pub scale: f64,
}

impl AffineParams {
    /// No change: angle 0, no translation, scale 1.
    pub const IDENTITY: AffineParams = AffineParams { angle: 0.0, translate: [0.0, 0.0], scale: 1.0 };
}

/// A random rotation, translation and scale, torchvision's `RandomAffine(degrees, translate,
/// scale, interpolation=InterpolationMode.BILINEAR, fill=fill)` with no shear.
///
/// Parameters, drawn per image in this order (torchvision's `get_params`):
/// `angle ~ U(degrees[0], degrees[1])`; when `translate = [a, b]`,
/// `tx = round(U(−a·W, a·W))`, `ty = round(U(−b·H, b·H))` whole pixels (ties to even, as
/// Python's `round`); when `scale = [lo, hi]`, `s ~ U(lo, hi)`, else 1.
///
/// The warp: with centred output coordinates `x = j + ½ − W/2`, `y = i + ½ − H/2` and
/// `θ = angle` in radians, the output pixel `(i, j)` reads the input at
///
/// `u = ( cos θ·(x − tx) + sin θ·(y − ty)) / s + (W − 1)/2`
/// `v = (−sin θ·(x − tx) + cos θ·(y − ty)) / s + (H − 1)/2`
///
/// by bilinear interpolation over the four pixels around `(v, u)`:
/// `out = Σ wₖ·x[pₖ] + (1 − Σ wₖ)·fill`, the sums over the neighbours inside the image (so a
/// pixel wholly outside is `fill`, and an inside one is exact). With `fill = 0` this is
/// `F.affine(x, …, interpolation=BILINEAR)` with `fill=None` (grid_sample's zero padding).
/// torchvision's `RandomAffine(fill=0)` instead multiplies the border pixels' sum by `Σ wₖ` once
/// more (`img · mask + (1 − mask) · fill` on an image already weighted by the mask); strata keeps
/// the formula above, under which warping then normalising equals normalising then warping
/// with the normalised fill ([`super::Augment::after_normalize`]).
///
/// # Shapes
/// - input: `[C, H, W]`
/// - output: `[C, H, W]`
#[derive(Clone, Debug, PartialEq)]
pub struct RandomAffine {
    /// The range the angle is drawn from, `[min, max]` degrees.
    pub degrees: [f64; 2],
    /// The largest translation as fractions `[of the width, of the height]`, each in `[0, 1]`.
    pub translate: Option<[f64; 2]>,
    /// The range the scale is drawn from, `[min, max]`, both positive.
    pub scale: Option<[f64; 2]>,
    /// The value of pixels that come from outside the image: one per channel, or one for all
    /// (default 0; see [`super::Augment::after_normalize`] for normalised data).
    pub fill: Vec<f32>,
}

impl RandomAffine {
    /// Rotations by an angle in `(−degrees, degrees)`, no translation or scaling, fill 0.
    pub fn new(degrees: f64) -> Self {
        RandomAffine { degrees: [-degrees, degrees], translate: None, scale: None, fill: vec![0.0] }
    }

    /// Angles from `[min, max]` degrees.
    pub fn degrees_range(self, min: f64, max: f64) -> Self {
        RandomAffine { degrees: [min, max], ..self }
    }

    /// Translations up to `a·W` horizontally and `b·H` vertically.
    pub fn translate(self, a: f64, b: f64) -> Self {
        RandomAffine { translate: Some([a, b]), ..self }
    }

    /// Scale factors from `[min, max]`.
    pub fn scale(self, min: f64, max: f64) -> Self {
        RandomAffine { scale: Some([min, max]), ..self }
    }

    /// The value of pixels that come from outside the image.
    pub fn fill(self, fill: Vec<f32>) -> Self {
        RandomAffine { fill, ..self }
    }

    /// Checks the parameters against an input of `shape`; the output has the same shape.
    pub(crate) fn output_shape(&self, shape: ImageShape) -> Result<ImageShape> {
        let err = |message: String| Err(DataError::InvalidArgument { what: "RandomAffine", message });
        let [lo, hi] = self.degrees;
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return err(format!(
                "degrees must be a finite range with min ≤ max (a single number d means (−d, d), d ≥ 0), got ({lo}, {hi})"
            ));
        }
        if let Some(t) = self.translate
            && !t.iter().all(|v| (0.0..=1.0).contains(v))
        {
            return err(format!(
                "translate must be two fractions of the width and height in [0, 1], got ({}, {})",
                t[0], t[1]
            ));
        }
        if let Some([lo, hi]) = self.scale
            && !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi)
        {
            return err(format!("scale must be a range of positive factors with min ≤ max, got ({lo}, {hi})"));
        }
        check_fill("RandomAffine", &self.fill, shape[0])?;
        Ok(shape)
    }

    /// Draws the parameters for an image of `shape`, torchvision's `RandomAffine.get_params`
    /// (see the type's documentation for the distributions and their order).
    ///
    /// # Errors
    /// Parameters out of range (as [`RandomAffine::warp`]).
    pub fn get_params(&self, shape: ImageShape, rng: &mut Generator) -> Result<AffineParams> {
        self.output_shape(shape)?;
        Ok(self.draw(shape, rng))
    }

    fn draw(&self, [_, h, w]: ImageShape, rng: &mut Generator) -> AffineParams {
        let mut uniform = |lo: f64, hi: f64| lo + (hi - lo) * rng.next_f64();
        let angle = uniform(self.degrees[0], self.degrees[1]);
        let translate = match self.translate {
            Some([a, b]) => {
                let (dx, dy) = (a * w as f64, b * h as f64);
                let tx = uniform(-dx, dx).round_ties_even();
                [tx, uniform(-dy, dy).round_ties_even()]
            }
            None => [0.0, 0.0],
        };
        let scale = self.scale.map_or(1.0, |[lo, hi]| uniform(lo, hi));
        AffineParams { angle, translate, scale }
    }

    /// The warp with explicit parameters, torchvision's
    /// `F.affine(x, angle, translate, scale, shear=[0, 0], interpolation=BILINEAR)` with this
    /// transform's fill (`fill=None` for 0, exactly); for parity tests and callers that draw their
    /// own parameters.
    ///
    /// # Errors
    /// A sample that does not hold `shape`'s values, a fill of the wrong length, non-finite
    /// parameters or a scale that is not positive.
    ///
    /// # Shapes
    /// - `x`: `[C, H, W]` (`shape`)
    /// - output: `[C, H, W]`
    pub fn warp(&self, x: &[f32], shape: ImageShape, params: AffineParams) -> Result<Vec<f32>> {
        super::check_len(x, shape)?;
        check_fill("RandomAffine", &self.fill, shape[0])?;
        let AffineParams { angle, translate: [tx, ty], scale } = params;
        if !(angle.is_finite() && tx.is_finite() && ty.is_finite() && scale.is_finite() && scale > 0.0) {
            return Err(DataError::InvalidArgument {
                what: "RandomAffine",
                message: format!("the parameters must be finite with a positive scale, got {params:?}"),
            });
        }
        let mut out = Vec::new();
        self.write(x, shape, params, &mut out);
        Ok(out)
    }

    /// Warps a checked input with randomly drawn parameters into `out` (cleared first).
    pub(crate) fn run(&self, x: &[f32], shape: ImageShape, rng: &mut Generator, out: &mut Vec<f32>) {
        let params = self.draw(shape, rng);
        self.write(x, shape, params, out);
    }

    fn write(&self, x: &[f32], [c, h, w]: ImageShape, params: AffineParams, out: &mut Vec<f32>) {
        let AffineParams { angle, translate: [tx, ty], scale } = params;
        let (sin, cos) = angle.to_radians().sin_cos();
        // torchvision's inverse matrix (shear 0, centre 0): rotation by −θ over the scale, after
        // undoing the translation.
        let (m0, m1, m3, m4) = (cos / scale, sin / scale, -sin / scale, cos / scale);
        let (m2, m5) = (-(m0 * tx + m1 * ty), -(m3 * tx + m4 * ty));
        let (half_w, half_h) = (w as f64 / 2.0, h as f64 / 2.0);
        let (wi, hi) = (w as isize, h as isize);
        // Positions with all four neighbours inside: 0 ≤ u < W − 1 and 0 ≤ v < H − 1.
        let (end_u, end_v) = (w as f64 - 1.0, h as f64 - 1.0);
        out.clear();
        out.resize(c * h * w, 0.0);
        let plane = h * w;
        // The input position of output pixel (i, j), in pixels (grid_sample,
        // align_corners=False), is `(m0·j + u_row, m3·j + v_row)`, with x = j + ½ − W/2 folded
        // into the row's start.
        let x0 = 0.5 - half_w;
        for i in 0..h {
            let y = i as f64 + 0.5 - half_h;
            let (u_row, v_row) = (m0 * x0 + m1 * y + m2 + half_w - 0.5, m3 * x0 + m4 * y + m5 + half_h - 0.5);
            for j in 0..w {
                let (u, v) = (m0 * j as f64 + u_row, m3 * j as f64 + v_row);
                let at = i * w + j;
                // Most pixels: all four neighbours inside, no fill; truncation is the floor of
                // these non-negative positions.
                if u >= 0.0 && u < end_u && v >= 0.0 && v < end_v {
                    let (ui, vi) = (u as usize, v as usize);
                    let (fu, fv) = ((u - ui as f64) as f32, (v - vi as f64) as f32);
                    let weights = [(1.0 - fv) * (1.0 - fu), (1.0 - fv) * fu, fv * (1.0 - fu), fv * fu];
                    let k = vi * w + ui;
                    for ch in 0..c {
                        let s = &x[ch * plane..(ch + 1) * plane];
                        let (top, bottom) = (&s[k..k + 2], &s[k + w..k + w + 2]);
                        out[ch * plane + at] =
                            weights[0] * top[0] + weights[1] * top[1] + weights[2] * bottom[0] + weights[3] * bottom[1];
                    }
                    continue;
                }
                let (u0, v0) = (floor(u), floor(v));
                let (fu, fv) = ((u - u0) as f32, (v - v0) as f32);
                let weights = [(1.0 - fv) * (1.0 - fu), (1.0 - fv) * fu, fv * (1.0 - fu), fv * fu];
                // Far outside: no neighbour is inside, the pixel is the fill.
                if !(u0 > -2.0 && u0 < w as f64 && v0 > -2.0 && v0 < h as f64) {
                    for ch in 0..c {
                        out[ch * plane + at] = fill_at(&self.fill, ch);
                    }
                    continue;
                }
                let (u0, v0) = (u0 as isize, v0 as isize);
                let taps = [(v0, u0), (v0, u0 + 1), (v0 + 1, u0), (v0 + 1, u0 + 1)];
                for ch in 0..c {
                    let src = &x[ch * plane..(ch + 1) * plane];
                    // `outside`: the weight of the neighbours outside the image, which the fill
                    // takes; exactly 0 when all the weighted ones are inside.
                    let (mut sum, mut outside) = (0.0f32, 0.0f32);
                    for (&(r, q), &wt) in taps.iter().zip(&weights) {
                        // A position exactly on the last row or column has neighbours of weight
                        // 0 beyond it: skipped, so they do not bring in the fill.
                        if wt == 0.0 {
                            continue;
                        }
                        if (0..hi).contains(&r) && (0..wi).contains(&q) {
                            sum += wt * src[r as usize * w + q as usize];
                        } else {
                            outside += wt;
                        }
                    }
                    out[ch * plane + at] = if outside == 0.0 { sum } else { sum + outside * fill_at(&self.fill, ch) };
                }
            }
        }
    }
}

/// `v.floor()` without a call into libm, which the baseline x86-64 target (no SSE4.1 rounding
/// instruction) makes of `f64::floor`: a truncating conversion, one less below zero. Exact
/// for `|v| < 2^63`, beyond which any value is far outside the image anyway; NaN stays NaN.
/// Measured: the warp of a 28×28 image took 2.6× as long with `f64::floor`.
#[inline]
fn floor(v: f64) -> f64 {
    let t = v as i64 as f64;
    if v.is_nan() {
        v
    } else if t > v {
        t - 1.0
    } else {
        t
    }
}

impl fmt::Display for RandomAffine {
    /// `RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))`, torchvision's
    /// spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [lo, hi] = self.degrees;
        if lo == -hi {
            write!(f, "RandomAffine(degrees={hi}")?
        } else {
            write!(f, "RandomAffine(degrees=({lo}, {hi})")?
        }
        if let Some([a, b]) = self.translate {
            write!(f, ", translate=({a}, {b})")?;
        }
        if let Some([a, b]) = self.scale {
            write!(f, ", scale=({a}, {b})")?;
        }
        if self.fill.iter().any(|&v| v != 0.0) {
            write!(f, ", fill={}", super::list(&self.fill))?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(h: usize, w: usize) -> Vec<f32> {
        (0..h * w).map(|v| v as f32 + 1.0).collect()
    }

    #[test]
    fn degrees_0_translate_0_scale_1_is_the_identity() {
        let x = image(5, 7);
        let a = RandomAffine::new(0.0).translate(0.0, 0.0).scale(1.0, 1.0);
        assert_eq!(a.warp(&x, [1, 5, 7], AffineParams::IDENTITY).unwrap(), x);
        // Drawn from those ranges: the identity too.
        let mut g = Generator::new(0);
        let mut out = Vec::new();
        a.run(&x, [1, 5, 7], &mut g, &mut out);
        assert_eq!(out, x);
    }

    #[test]
    fn ninety_degrees_turns_clockwise() {
        // 1 2 3        7 4 1
        // 4 5 6   →    8 5 2   (torchvision's F.affine(angle=90) gives the same)
        // 7 8 9        9 6 3
        let x = image(3, 3);
        let out =
            RandomAffine::new(0.0).warp(&x, [1, 3, 3], AffineParams { angle: 90.0, ..AffineParams::IDENTITY }).unwrap();
        let want = [7.0, 4.0, 1.0, 8.0, 5.0, 2.0, 9.0, 6.0, 3.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-5, "{out:?}");
        }
        // On a 2×2 image the centre is between pixels, and the turn is exact too.
        let out = RandomAffine::new(0.0)
            .warp(&image(2, 2), [1, 2, 2], AffineParams { angle: -90.0, ..AffineParams::IDENTITY })
            .unwrap();
        let want = [2.0, 4.0, 1.0, 3.0];
        assert!(out.iter().zip(want).all(|(o, w)| (o - w).abs() < 1e-5), "{out:?}");
    }

    #[test]
    fn translation_shifts_and_fills() {
        // One pixel right: column 0 comes from outside (the fill), column j from j − 1.
        let x = image(2, 3);
        let a = RandomAffine::new(0.0).fill(vec![-1.0]);
        let out = a.warp(&x, [1, 2, 3], AffineParams { translate: [1.0, 0.0], ..AffineParams::IDENTITY }).unwrap();
        assert_eq!(out, [-1.0, 1.0, 2.0, -1.0, 4.0, 5.0]);
        // Half a pixel down: row 0 mixes the fill (half) with row 0 (half), row 1 rows 0 and 1.
        let out = a.warp(&x, [1, 2, 3], AffineParams { translate: [0.0, 0.5], ..AffineParams::IDENTITY }).unwrap();
        assert_eq!(out, [0.0, 0.5, 1.0, 2.5, 3.5, 4.5]);
        // Far away: all fill.
        let out = a.warp(&x, [1, 2, 3], AffineParams { translate: [1e9, 0.0], ..AffineParams::IDENTITY }).unwrap();
        assert_eq!(out, [-1.0; 6]);
    }

    #[test]
    fn scale_two_magnifies_the_centre() {
        // A 4×4 image scaled by 2 about its centre: output (1, 1) reads input (1.25, 1.25).
        let x = image(4, 4);
        let out = RandomAffine::new(0.0).warp(&x, [1, 4, 4], AffineParams { scale: 2.0, ..AffineParams::IDENTITY });
        let out = out.unwrap();
        let want = x[5] * 0.5625 + x[6] * 0.1875 + x[9] * 0.1875 + x[10] * 0.0625;
        assert!((out[5] - want).abs() < 1e-5, "{} vs {want}", out[5]);
    }

    #[test]
    fn drawn_parameters_stay_in_their_ranges() {
        let a = RandomAffine::new(10.0).translate(0.1, 0.2).scale(0.9, 1.1);
        let mut g = Generator::new(5);
        for _ in 0..1000 {
            let p = a.get_params([1, 28, 28], &mut g).unwrap();
            assert!((-10.0..10.0).contains(&p.angle) && (0.9..1.1).contains(&p.scale), "{p:?}");
            // |tx| ≤ round(2.8) = 3, |ty| ≤ round(5.6) = 6, whole pixels.
            assert!(p.translate[0].abs() <= 3.0 && p.translate[1].abs() <= 6.0, "{p:?}");
            assert!(p.translate.iter().all(|t| t.fract() == 0.0));
        }
    }

    #[test]
    fn floor_agrees_with_f64_floor() {
        for v in [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.999, -2.001, 27.0, -1e-300, 1e17 + 2.0, -3e18] {
            assert_eq!(floor(v), v.floor(), "{v}");
        }
        assert!(floor(f64::NAN).is_nan());
        assert!(floor(1e300) < 1e300 && floor(1e300) > 1e18, "saturates far outside the image");
    }

    #[test]
    fn bad_parameters_are_errors() {
        let x = image(2, 2);
        for (a, says) in [
            (RandomAffine::new(-1.0), "degrees"),
            (RandomAffine::new(f64::NAN), "degrees"),
            (RandomAffine::new(1.0).translate(1.5, 0.0), "translate"),
            (RandomAffine::new(1.0).scale(0.0, 1.0), "scale"),
            (RandomAffine::new(1.0).scale(2.0, 1.0), "scale"),
            (RandomAffine::new(1.0).fill(vec![0.0; 3]), "fill"),
        ] {
            let e = a.get_params([1, 2, 2], &mut Generator::new(0)).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let bad = AffineParams { scale: 0.0, ..AffineParams::IDENTITY };
        assert!(RandomAffine::new(0.0).warp(&x, [1, 2, 2], bad).is_err());
        assert_eq!(
            RandomAffine::new(10.0).translate(0.1, 0.1).scale(0.9, 1.1).to_string(),
            "RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))"
        );
    }
}
