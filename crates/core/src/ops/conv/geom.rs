//! The geometry of one validated convolution ([`ConvGeom`]): sizes, the derived per-group
//! sizes, the transposed geometry of the input gradient, the sample chunks, and the valid output
//! ranges that im2col / col2im copy. Shared by the CPU kernels (`cpu.rs`, `winograd.rs` and their
//! x86 files) and the GPU ones (`gpu.rs`).

/// Upper bound (elements) on the memory that per-chunk d_weight partials may take together.
const PARTIALS_BUDGET: usize = 1 << 23;

/// The geometry of one validated convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
    /// Whether the caller allows the fast, less accurate algorithm ([`super::ConvAlgorithm::Fast`]).
    pub fast: bool,
}

impl ConvGeom {
    /// Input channels per group.
    pub(super) fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub(super) fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Rows of one group's column matrix: `C/g·kH·kW`.
    pub(super) fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Output positions per channel: `OH·OW`.
    pub(super) fn l(&self) -> usize {
        self.oh * self.ow
    }
    /// Elements of one input sample.
    pub(super) fn chw(&self) -> usize {
        self.c * self.h * self.w
    }
    /// A 1×1 kernel with stride 1 and no padding: the input *is* the column matrix.
    pub(super) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.padding == (0, 0)
    }
    /// Multiply-adds of one pass (forward, or one of the two backward GEMMs).
    pub fn macs(&self) -> usize {
        self.n * self.o * self.l() * self.k()
    }
    /// For stride 1 with padding no larger than the dilated kernel's reach, the input gradient
    /// is itself a convolution: of dY, padded by `dilation·(k − 1) − padding`, with the kernel
    /// flipped and its channel axes swapped. Returns that convolution's geometry (its input
    /// `dY`: O channels of OH×OW; its output: C channels of H×W).
    pub(super) fn transposed(&self) -> Option<ConvGeom> {
        let reach = (self.dilation.0 * (self.kh - 1), self.dilation.1 * (self.kw - 1));
        (self.stride == (1, 1) && self.padding.0 <= reach.0 && self.padding.1 <= reach.1 && !self.is_pointwise()).then(
            || ConvGeom {
                c: self.o,
                h: self.oh,
                w: self.ow,
                o: self.c,
                padding: (reach.0 - self.padding.0, reach.1 - self.padding.1),
                oh: self.h,
                ow: self.w,
                ..*self
            },
        )
    }
    /// Samples per task: depends on the geometry only, so the d_weight reduction order is the
    /// same for every thread count. At most 16 chunks, fewer when the weight is large.
    pub(super) fn chunk(&self) -> usize {
        let wsize = (self.o * self.k()).max(1);
        let chunks = self.n.clamp(1, 16).min((PARTIALS_BUDGET / wsize).max(1));
        self.n.div_ceil(chunks).max(1)
    }
}

/// Output positions `lo..hi` along one axis whose input index `o·s + off − p` lies in `0..size`.
pub(super) fn valid_range(out: usize, s: usize, off: usize, p: usize, size: usize) -> (usize, usize) {
    let lo = if off >= p { 0 } else { (p - off).div_ceil(s) };
    let hi = if size + p <= off { 0 } else { (size + p - off).div_ceil(s).min(out) };
    (lo.min(hi), hi)
}

impl ConvGeom {
    /// Stride 1 and an output as wide as the input ("same" padding): then a column-matrix row
    /// is the input plane shifted by a constant offset, apart from the padded edges, and
    /// [`im2col`](super::cpu::im2col) / [`col2im`](super::cpu::col2im) move whole planes instead
    /// of rows of `OW` elements.
    pub(super) fn is_shift(&self) -> bool {
        self.stride == (1, 1) && self.ow == self.w
    }
}

/// For column-matrix row `(ki, kj)` of a shift geometry ([`ConvGeom::is_shift`]): the valid
/// output rows `oy_lo..oy_hi` and columns `lo..hi`, and the offset from an output index
/// `oy·OW + ox` to the input index it reads.
pub(super) fn shift_plan(g: &ConvGeom, ki: usize, kj: usize) -> ((usize, usize), (usize, usize), isize) {
    let rows = valid_range(g.oh, 1, ki * g.dilation.0, g.padding.0, g.h);
    let cols = valid_range(g.ow, 1, kj * g.dilation.1, g.padding.1, g.w);
    let dy = (ki * g.dilation.0) as isize - g.padding.0 as isize;
    let dx = (kj * g.dilation.1) as isize - g.padding.1 as isize;
    (rows, cols, dy * g.w as isize + dx)
}

#[cfg(test)]
mod tests {
    use super::valid_range;

    #[test]
    fn valid_ranges_clip_padding() {
        // W = 5, stride 1, pad 1, kernel offset 0: output 0 reads index −1 (padding).
        assert_eq!(valid_range(5, 1, 0, 1, 5), (1, 5));
        // Offset 2 with pad 1: output 4 reads index 5 (padding).
        assert_eq!(valid_range(5, 1, 2, 1, 5), (0, 4));
        // Stride 2: outputs 0..3 read −1, 1, 3 → only 1 and 2 are valid.
        assert_eq!(valid_range(3, 2, 0, 1, 5), (1, 3));
        // A kernel offset past the padded input: nothing is valid.
        assert_eq!(valid_range(2, 1, 9, 0, 5), (0, 0));
    }
}
