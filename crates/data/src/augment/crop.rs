//! `RandomCrop`: pad an image, then cut a window of a fixed size at a random offset —
//! torchvision's `transforms.RandomCrop(size, padding, fill, padding_mode)`.
//!
//! The padded image is never built: each output pixel reads the input pixel its padded position
//! maps to (or the fill), through one index table per axis, so a large padding costs nothing but
//! the tables.

use std::fmt;

use strata_core::Generator;

use super::{ImageShape, check_fill, fill_at};
use crate::error::{DataError, Result};

/// How [`RandomCrop`] fills its padding: torchvision's `padding_mode` (names and meanings of
/// `torchvision.transforms.functional.pad`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PadMode {
    /// The fill value (per channel): `f f | a b c | f f`.
    #[default]
    Constant,
    /// Copies of the edge pixel: `a a | a b c | c c` (`F.pad`'s `replicate`).
    Edge,
    /// Mirror image without repeating the edge: `c b | a b c | b a`. Each padding must be smaller
    /// than the side it pads.
    Reflect,
    /// Mirror image repeating the edge: `b a | a b c | c b`. Each padding must be at most the
    /// side it pads.
    Symmetric,
}

impl PadMode {
    /// Every mode, in torchvision's order.
    pub const ALL: [PadMode; 4] = [PadMode::Constant, PadMode::Edge, PadMode::Reflect, PadMode::Symmetric];

    /// torchvision's name: `"constant"`, `"edge"`, `"reflect"` or `"symmetric"`.
    pub fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Edge => "edge",
            PadMode::Reflect => "reflect",
            PadMode::Symmetric => "symmetric",
        }
    }

    /// Parses a name (see [`PadMode::name`]).
    pub fn from_name(name: &str) -> Option<PadMode> {
        PadMode::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The input index that position `p` of a side of `n` pixels padded by `before` reads, or
    /// `None` for the fill. Assumes the padding is within the mode's limit (checked first).
    fn source(self, p: usize, before: usize, n: usize) -> Option<usize> {
        let (i, n) = (p as isize - before as isize, n as isize);
        let i = match self {
            _ if (0..n).contains(&i) => i,
            PadMode::Constant => return None,
            PadMode::Edge => i.clamp(0, n - 1),
            // −1 → 1, n → n − 2.
            PadMode::Reflect if i < 0 => -i,
            PadMode::Reflect => 2 * (n - 1) - i,
            // −1 → 0, n → n − 1.
            PadMode::Symmetric if i < 0 => -i - 1,
            PadMode::Symmetric => 2 * n - 1 - i,
        };
        Some(i as usize)
    }

    /// Why a padding of `pad` on a side of `n` pixels is refused and the largest allowed, or
    /// `None` when it is allowed.
    fn refuses(self, pad: usize, n: usize) -> Option<(&'static str, usize)> {
        match self {
            PadMode::Reflect if pad >= n => Some(("reflect padding must be smaller than the side it pads", n - 1)),
            PadMode::Symmetric if pad > n => Some(("symmetric padding may be at most the side it pads", n)),
            _ => None,
        }
    }
}

impl fmt::Display for PadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Pads the image by `padding` and crops a `size` window at a uniformly random offset,
/// torchvision's `RandomCrop(size, padding, fill=fill, padding_mode=padding_mode)` (without
/// `pad_if_needed`).
///
/// For an input `x` of `H × W` padded to `H' = top + H + bottom`, `W' = left + W + right`, and
/// an offset `(i, j)` drawn uniformly from `0..=H' − h` × `0..=W' − w` (row first, as
/// torchvision's `get_params`; no draw when the window is the whole padded image):
///
/// `out[c, y, x] = padded(c, i + y, j + x)`, where `padded(c, p, q) = x[c, p − top, q − left]`
/// inside the image and, outside, the fill (`constant`) or the pixel that [`PadMode`] mirrors
/// or replicates.
///
/// # Shapes
/// - input: `[C, H, W]`
/// - output: `[C, h, w]` (`size = [h, w]`, at most the padded `[H', W']`)
#[derive(Clone, Debug, PartialEq)]
pub struct RandomCrop {
    /// The window, `[height, width]`.
    pub size: [usize; 2],
    /// Padding `[left, top, right, bottom]` (torchvision's order for a 4-sequence).
    pub padding: [usize; 4],
    /// How the padding is filled.
    pub padding_mode: PadMode,
    /// The `constant` padding's value: one per channel, or one for all (torchvision's `fill`,
    /// default 0, a black pixel of raw data; see [`super::Augment::after_normalize`] for data
    /// that is normalised already).
    pub fill: Vec<f32>,
}

impl RandomCrop {
    /// A square `size × size` window, no padding, constant fill 0.
    pub fn new(size: usize) -> Self {
        Self::rect(size, size)
    }

    /// A `height × width` window, no padding, constant fill 0.
    pub fn rect(height: usize, width: usize) -> Self {
        RandomCrop { size: [height, width], padding: [0; 4], padding_mode: PadMode::Constant, fill: vec![0.0] }
    }

    /// The same padding on all four sides (torchvision's `padding=4`).
    pub fn padding(self, padding: usize) -> Self {
        RandomCrop { padding: [padding; 4], ..self }
    }

    /// Padding `[left, top, right, bottom]`.
    pub fn padding_ltrb(self, padding: [usize; 4]) -> Self {
        RandomCrop { padding, ..self }
    }

    /// How the padding is filled.
    pub fn padding_mode(self, padding_mode: PadMode) -> Self {
        RandomCrop { padding_mode, ..self }
    }

    /// The constant padding's value (one per channel, or one for all).
    pub fn fill(self, fill: Vec<f32>) -> Self {
        RandomCrop { fill, ..self }
    }

    /// The padded image's `[H', W']`, checked: the window fits, the mode allows the padding.
    fn padded(&self, [c, h, w]: ImageShape) -> Result<[usize; 2]> {
        let err = |message: String| Err(DataError::InvalidArgument { what: "RandomCrop", message });
        let [l, t, r, b] = self.padding;
        let (Some(ph), Some(pw)) =
            (t.checked_add(h).and_then(|v| v.checked_add(b)), l.checked_add(w).and_then(|v| v.checked_add(r)))
        else {
            return err(format!("padding {:?} is too large", self.padding));
        };
        for (pad, side, n) in [(l, "left", w), (r, "right", w), (t, "top", h), (b, "bottom", h)] {
            if let Some((why, max)) = self.padding_mode.refuses(pad, n) {
                return err(format!("{why}: {side} padding {pad} on a side of {n} pixels; pad at most {max}"));
            }
        }
        let [th, tw] = self.size;
        if th == 0 || tw == 0 {
            return err(format!("the crop size must be at least 1×1, got {th}×{tw}"));
        }
        if th > ph || tw > pw {
            return err(format!(
                "the crop size {th}×{tw} is larger than the padded image {ph}×{pw} ({h}×{w} padded by left {l}, top {t}, \
                 right {r}, bottom {b}); crop at most {ph}×{pw} or pad more"
            ));
        }
        check_fill("RandomCrop", &self.fill, c)?;
        Ok([ph, pw])
    }

    /// The output shape for an input of `shape`, or why the crop cannot apply to it.
    pub(crate) fn output_shape(&self, shape: ImageShape) -> Result<ImageShape> {
        self.padded(shape)?;
        Ok([shape[0], self.size[0], self.size[1]])
    }

    /// The random offset `(top, left)` of the window in the padded image, torchvision's
    /// `RandomCrop.get_params`: `top` uniform in `0..=H' − h`, then `left` in `0..=W' − w`; no
    /// number is drawn when the window is the whole padded image.
    ///
    /// # Errors
    /// As [`RandomCrop::crop_at`], for a shape the crop cannot apply to.
    pub fn get_params(&self, shape: ImageShape, rng: &mut Generator) -> Result<(usize, usize)> {
        let [ph, pw] = self.padded(shape)?;
        Ok(self.draw([ph, pw], rng))
    }

    fn draw(&self, [ph, pw]: [usize; 2], rng: &mut Generator) -> (usize, usize) {
        let [th, tw] = self.size;
        if ph == th && pw == tw {
            return (0, 0);
        }
        let top = rng.below((ph - th + 1) as u64) as usize;
        let left = rng.below((pw - tw + 1) as u64) as usize;
        (top, left)
    }

    /// The window at the explicit offset `(top, left)` of the padded image, torchvision's
    /// `F.crop(F.pad(x, padding, fill, padding_mode), top, left, h, w)`; for parity tests and for
    /// callers that draw their own offsets.
    ///
    /// # Errors
    /// A sample that does not hold `shape`'s values, a window that does not fit the padded
    /// image (or does not fit at this offset), a padding the mode refuses, a fill of the wrong
    /// length.
    ///
    /// # Shapes
    /// - `x`: `[C, H, W]` (`shape`)
    /// - output: `[C, h, w]`
    pub fn crop_at(&self, x: &[f32], shape: ImageShape, top: usize, left: usize) -> Result<Vec<f32>> {
        super::check_len(x, shape)?;
        let [ph, pw] = self.padded(shape)?;
        let [th, tw] = self.size;
        if top > ph - th || left > pw - tw {
            return Err(DataError::InvalidArgument {
                what: "RandomCrop",
                message: format!(
                    "a {th}×{tw} window at (top {top}, left {left}) leaves the padded {ph}×{pw} image; top must be at most \
                     {} and left at most {}",
                    ph - th,
                    pw - tw
                ),
            });
        }
        let mut out = Vec::new();
        self.write(x, shape, (top, left), &mut out);
        Ok(out)
    }

    /// Crops a checked input at a random offset into `out` (cleared first).
    pub(crate) fn run(&self, x: &[f32], shape: ImageShape, rng: &mut Generator, out: &mut Vec<f32>) {
        let [_, h, w] = shape;
        let [l, t, r, b] = self.padding;
        let at = self.draw([t + h + b, l + w + r], rng);
        self.write(x, shape, at, out);
    }

    fn write(&self, x: &[f32], [c, h, w]: ImageShape, (top, left): (usize, usize), out: &mut Vec<f32>) {
        let [l, t, _, _] = self.padding;
        let [th, tw] = self.size;
        let mode = self.padding_mode;
        // rows[y]: the input row output row y reads (None: fill); cols likewise.
        let rows: Vec<Option<usize>> = (0..th).map(|y| mode.source(top + y, t, h)).collect();
        let cols: Vec<Option<usize>> = (0..tw).map(|x| mode.source(left + x, l, w)).collect();
        out.clear();
        out.reserve(c * th * tw);
        for ch in 0..c {
            let plane = &x[ch * h * w..(ch + 1) * h * w];
            let fill = fill_at(&self.fill, ch);
            for row in &rows {
                match row {
                    Some(r) => {
                        let line = &plane[r * w..(r + 1) * w];
                        out.extend(cols.iter().map(|col| col.map_or(fill, |q| line[q])));
                    }
                    None => out.extend(std::iter::repeat_n(fill, tw)),
                }
            }
        }
    }
}

impl fmt::Display for RandomCrop {
    /// `RandomCrop(28, padding=4)`, torchvision's spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [th, tw] = self.size;
        if th == tw {
            write!(f, "RandomCrop({th}")?
        } else {
            write!(f, "RandomCrop(({th}, {tw})")?
        }
        let [l, t, r, b] = self.padding;
        if self.padding != [0; 4] {
            if l == t && t == r && r == b {
                write!(f, ", padding={l}")?
            } else {
                write!(f, ", padding=({l}, {t}, {r}, {b})")?
            }
            if self.padding_mode != PadMode::Constant {
                write!(f, ", padding_mode={}", self.padding_mode)?;
            } else if self.fill.iter().any(|&v| v != 0.0) {
                write!(f, ", fill={}", super::list(&self.fill))?;
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1×2×3 image: 1 2 3 / 4 5 6.
    const X: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];

    #[test]
    fn every_mode_pads_a_row_as_torchvision_documents() {
        // One row `1 2 3` padded by 2 on the left and right, cropped whole.
        let row = [1.0, 2.0, 3.0];
        let pad = |mode| RandomCrop::rect(1, 7).padding_ltrb([2, 0, 2, 0]).padding_mode(mode).fill(vec![9.0]);
        let at = |mode| pad(mode).crop_at(&row, [1, 1, 3], 0, 0).unwrap();
        assert_eq!(at(PadMode::Constant), [9.0, 9.0, 1.0, 2.0, 3.0, 9.0, 9.0]);
        assert_eq!(at(PadMode::Edge), [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]);
        assert_eq!(at(PadMode::Reflect), [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
        assert_eq!(at(PadMode::Symmetric), [2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0]);
    }

    #[test]
    fn crop_with_padding_at_a_known_offset() {
        // Padded by 1 with zeros, the image is
        //   0 0 0 0 0
        //   0 1 2 3 0
        //   0 4 5 6 0
        //   0 0 0 0 0
        // and the 2×3 window at (top 1, left 2) is 2 3 0 / 5 6 0.
        let crop = RandomCrop::rect(2, 3).padding(1);
        assert_eq!(crop.crop_at(&X, [1, 2, 3], 1, 2).unwrap(), [2.0, 3.0, 0.0, 5.0, 6.0, 0.0]);
        assert_eq!(crop.crop_at(&X, [1, 2, 3], 0, 0).unwrap(), [0.0, 0.0, 0.0, 0.0, 1.0, 2.0]);
        // Without padding, the whole image is the only window, and no number is drawn.
        let mut g = Generator::new(1);
        assert_eq!(RandomCrop::rect(2, 3).get_params([1, 2, 3], &mut g).unwrap(), (0, 0));
        assert_eq!(g, Generator::new(1));
    }

    #[test]
    fn two_channels_get_their_own_fill() {
        let x: Vec<f32> = (1..=4).map(|v| v as f32).collect();
        let crop = RandomCrop::rect(1, 2).padding_ltrb([1, 0, 0, 0]).fill(vec![-1.0, -2.0]);
        assert_eq!(crop.crop_at(&x, [2, 1, 2], 0, 0).unwrap(), [-1.0, 1.0, -2.0, 3.0]);
    }

    #[test]
    fn random_offsets_cover_every_position_and_stay_in_bounds() {
        let crop = RandomCrop::new(2).padding(1);
        let mut g = Generator::new(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let (t, l) = crop.get_params([1, 2, 3], &mut g).unwrap();
            assert!(t <= 2 && l <= 3, "({t}, {l})");
            seen.insert((t, l));
        }
        assert_eq!(seen.len(), 12, "all 3 × 4 offsets of a 2×2 window in the padded 4×5 image");
    }

    #[test]
    fn bounds_are_errors() {
        let e = RandomCrop::new(5).crop_at(&X, [1, 2, 3], 0, 0).unwrap_err().to_string();
        assert!(e.contains("the crop size 5×5 is larger than the padded image 2×3"), "{e}");
        let e = RandomCrop::rect(2, 3).padding(1).crop_at(&X, [1, 2, 3], 3, 0).unwrap_err().to_string();
        assert!(e.contains("top must be at most 2"), "{e}");
        let e = RandomCrop::new(2).padding(2).padding_mode(PadMode::Reflect).crop_at(&X, [1, 2, 3], 0, 0);
        assert!(e.unwrap_err().to_string().contains("reflect padding must be smaller than the side it pads"));
        assert!(RandomCrop::new(2).padding(2).padding_mode(PadMode::Symmetric).crop_at(&X, [1, 2, 3], 0, 0).is_ok());
        assert!(RandomCrop::new(0).crop_at(&X, [1, 2, 3], 0, 0).is_err());
        assert!(RandomCrop::new(1).fill(vec![0.0; 2]).crop_at(&X, [1, 2, 3], 0, 0).is_err());
        assert!(RandomCrop::new(1).padding(usize::MAX).crop_at(&X, [1, 2, 3], 0, 0).is_err());
        assert!(RandomCrop::new(1).crop_at(&X[..5], [1, 2, 3], 0, 0).is_err());
    }

    #[test]
    fn names_and_display() {
        for m in PadMode::ALL {
            assert_eq!(PadMode::from_name(m.name()), Some(m));
        }
        assert_eq!(PadMode::from_name("zeros"), None);
        assert_eq!(RandomCrop::new(28).padding(4).to_string(), "RandomCrop(28, padding=4)");
        assert_eq!(
            RandomCrop::rect(2, 3).padding_ltrb([1, 2, 3, 4]).padding_mode(PadMode::Edge).to_string(),
            "RandomCrop((2, 3), padding=(1, 2, 3, 4), padding_mode=edge)"
        );
    }
}
