//! Shapes, strides and layouts: plain data, below the engine's errors (which carry shapes); the
//! rules that can fail — broadcasting (NumPy's, which PyTorch follows) and resolving a dimension
//! index — are in `shape_checks.rs`, above both.

use std::fmt;

/// The sizes of a tensor's dimensions, outermost first. `[]` is a scalar.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// The sizes as a slice.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.0.len()
    }
    /// The number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// The number of elements, or `None` when it does not fit in a `usize` (a shape no buffer
    /// could hold; the checks on shapes a user gives use this rather than [`Shape::numel`]).
    pub fn checked_numel(&self) -> Option<usize> {
        checked_product(&self.0)
    }
    /// Row-major (C-order) strides for this shape, in elements.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        let mut strides = vec![0; self.0.len()];
        let mut acc = 1;
        for (s, &d) in strides.iter_mut().zip(&self.0).rev() {
            *s = acc;
            acc *= d;
        }
        strides
    }
}

/// The product of `dims`, or `None` when it overflows a `usize`. A zero anywhere makes it 0,
/// whatever the other sizes.
pub fn checked_product(dims: &[usize]) -> Option<usize> {
    if dims.contains(&0) {
        return Some(0);
    }
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}
impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How a tensor's elements sit in its buffer: shape, strides (in elements) and start offset.
/// Views (reshape, transpose, narrow, expand) change the layout, not the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The logical shape.
    pub shape: Shape,
    /// Elements to skip to advance one step along each dimension (0 for a broadcast dimension).
    pub strides: Vec<usize>,
    /// Index of the first element in the buffer.
    pub offset: usize,
}

impl Layout {
    /// A row-major layout starting at offset 0.
    pub fn contiguous(shape: Shape) -> Self {
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset: 0 }
    }
    /// Whether elements are in row-major order with no gaps (size-1 dimensions may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.shape.0.iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }
    /// Buffer indices of all elements in row-major order of the logical shape.
    pub fn for_each_index(&self, mut f: impl FnMut(usize)) {
        self.for_each_run(|base, len, stride| (0..len).for_each(|j| f(base + j * stride)));
    }

    /// The elements in row-major order of the logical shape as runs along the last dimension:
    /// `f(base, len, stride)` for each, the run's elements being `base + j·stride` for
    /// `j < len`. Lets copies move whole rows when the last dimension is unit-strided.
    pub fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        let shape = &self.shape.0;
        if shape.contains(&0) {
            return;
        }
        let n = shape.len();
        if n == 0 {
            f(self.offset, 1, 1);
            return;
        }
        let (inner, inner_stride) = (shape[n - 1], self.strides[n - 1]);
        let mut idx = vec![0usize; n];
        let mut base = self.offset;
        loop {
            f(base, inner, inner_stride);
            // Advance the outer multi-index (dimensions 0..n-1), odometer style.
            let mut d = n - 1;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                idx[d] += 1;
                base += self.strides[d];
                if idx[d] < shape[d] {
                    break;
                }
                base -= self.strides[d] * shape[d];
                idx[d] = 0;
            }
        }
    }
    /// This layout broadcast (stride 0 on new or size-1 dimensions) to `target`, which must be a
    /// valid broadcast of it.
    pub fn broadcast_to(&self, target: &Shape) -> Layout {
        let n = target.ndim();
        let k = self.shape.ndim();
        let mut strides = vec![0; n];
        for i in 0..k {
            let (d, s) = (self.shape.0[k - 1 - i], self.strides[k - 1 - i]);
            strides[n - 1 - i] = if d == 1 && target.0[n - 1 - i] != 1 { 0 } else { s };
        }
        Layout { shape: target.clone(), strides, offset: self.offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_each_index_walks_transposed_and_broadcast_layouts() {
        let l = Layout { shape: Shape(vec![3, 2]), strides: vec![1, 3], offset: 0 };
        let mut v = vec![];
        l.for_each_index(|i| v.push(i));
        assert_eq!(v, [0, 3, 1, 4, 2, 5]);
        let b = Layout::contiguous(Shape(vec![1, 2])).broadcast_to(&Shape(vec![2, 2]));
        let mut w = vec![];
        b.for_each_index(|i| w.push(i));
        assert_eq!(w, [0, 1, 0, 1]);
        assert!(!l.is_contiguous());
        assert!(Layout::contiguous(Shape(vec![2, 1, 3])).is_contiguous());
    }
}
