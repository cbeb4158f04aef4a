//! The shape rules that can fail, with the engine's errors: broadcasting two shapes (NumPy's
//! rules, which PyTorch follows) and resolving a possibly negative dimension index. Apart from
//! `shape.rs` because the errors carry shapes: shapes first, then errors, then these.

use crate::error::{Error, Result};
use crate::shape::Shape;

impl Shape {
    /// Resolves a possibly negative dimension index (`-1` is the last) for `op`'s error message.
    pub fn resolve_dim(&self, op: &'static str, dim: isize) -> Result<usize> {
        let n = self.ndim() as isize;
        let d = if dim < 0 { dim + n } else { dim };
        if d < 0 || d >= n.max(0) {
            return Err(Error::DimOutOfRange { op, dim, shape: self.clone(), ndim: self.ndim() });
        }
        Ok(d as usize)
    }
    /// The broadcast of two shapes, or an error naming the first dimension that conflicts.
    pub fn broadcast(op: &'static str, lhs: &Shape, rhs: &Shape) -> Result<Shape> {
        let n = lhs.ndim().max(rhs.ndim());
        let mut out = vec![0; n];
        for i in 0..n {
            let l = if i < lhs.ndim() { lhs.0[lhs.ndim() - 1 - i] } else { 1 };
            let r = if i < rhs.ndim() { rhs.0[rhs.ndim() - 1 - i] } else { 1 };
            out[n - 1 - i] = if l == r || r == 1 {
                l
            } else if l == 1 {
                r
            } else {
                return Err(Error::Broadcast {
                    op,
                    lhs: lhs.clone(),
                    rhs: rhs.clone(),
                    dim: i,
                    lhs_size: l,
                    rhs_size: r,
                });
            };
        }
        Ok(Shape(out))
    }
}

#[cfg(test)]
mod tests {
    use crate::shape::Shape;

    #[test]
    fn broadcast_rules() {
        let s = |v: &[usize]| Shape(v.to_vec());
        assert_eq!(Shape::broadcast("t", &s(&[4, 1, 3]), &s(&[5, 1])).unwrap(), s(&[4, 5, 3]));
        assert_eq!(Shape::broadcast("t", &s(&[]), &s(&[2, 2])).unwrap(), s(&[2, 2]));
        let e = Shape::broadcast("add", &s(&[2, 3]), &s(&[4])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "add: shapes [2, 3] and [4] cannot be broadcast together: aligned from the right, \
             dimension 0 is 3 in the first and 4 in the second (broadcasting needs them equal or one of them 1)"
        );
    }
}
