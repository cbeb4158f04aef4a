//! Symbolic shapes: `[N, 784]` with the batch dimension `N` unknown until run time, and the
//! small helpers every shape rule shares (a dimension as a number, PyTorch's argument spelling).
//! `N` is first but for time-major sequences, `[T, N, F]`: the shape says where it is.

use std::fmt;
use strata_core::DType;

/// One dimension of a symbolic shape: the batch `N`, or a concrete size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// The batch dimension, unknown until run time.
    Batch,
    /// A concrete size; `usize::MAX` stands for one that overflowed 64 bits (the shape rules
    /// saturate rather than wrap), shown as `≥18446744073709551615`: all that is known of it.
    Fixed(usize),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => write!(f, "N"),
            // Saturated: at least this, not this.
            Dim::Fixed(usize::MAX) => write!(f, "≥{}", usize::MAX),
            Dim::Fixed(d) => write!(f, "{d}"),
        }
    }
}

/// A shape with the symbolic batch dimension: first (`[N, 784]`, `[N, 1, 28, 28]`), or second
/// in time-major sequences (`[T, N, F]`, what a recurrent layer with `batch_first = false`
/// reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymShape(pub Vec<Dim>);

impl SymShape {
    /// `[N, *sample]`.
    pub fn batched(sample: &[usize]) -> SymShape {
        SymShape(std::iter::once(Dim::Batch).chain(sample.iter().map(|&d| Dim::Fixed(d))).collect())
    }

    /// `sample` with the batch inserted at `batch_dim` (0 or 1: `[T, N, F]` for a time-major
    /// `[T, F]` sample).
    pub fn batched_at(sample: &[usize], batch_dim: usize) -> SymShape {
        let mut dims: Vec<Dim> = sample.iter().map(|&d| Dim::Fixed(d)).collect();
        dims.insert(batch_dim.min(dims.len()), Dim::Batch);
        SymShape(dims)
    }

    /// Where the batch dimension is (`None` when the shape has none).
    pub fn batch_dim(&self) -> Option<usize> {
        self.0.iter().position(|d| *d == Dim::Batch)
    }

    /// Parses a per-sample shape as the CLI takes it: `784`, `1x28x28` (also `1,28,28`).
    pub fn parse_sample(text: &str) -> Result<SymShape, String> {
        let parts: Vec<&str> = text.split(['x', 'X', ',', '×']).map(str::trim).collect();
        let mut dims = Vec::with_capacity(parts.len());
        for p in &parts {
            match p.parse::<usize>() {
                Ok(d) if d > 0 => dims.push(d),
                _ => {
                    return Err(format!(
                        "`{text}` is not a sample shape: give positive sizes separated by x, e.g. 784 or 1x28x28"
                    ));
                }
            }
        }
        Ok(SymShape::batched(&dims))
    }

    /// Number of dimensions, the batch included.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The sizes of one sample: every dimension but the batch (`[T, F]` of a time-major
    /// `[T, N, F]`); the first is taken as the batch in a shape without one. `None` if another
    /// dimension is symbolic.
    pub fn sample(&self) -> Option<Vec<usize>> {
        let b = self.batch_dim().unwrap_or(0);
        let others = self.0.iter().enumerate().filter(|&(i, _)| i != b);
        others.map(|(_, d)| if let Dim::Fixed(v) = d { Some(*v) } else { None }).collect()
    }

    /// Elements per sample (`usize::MAX` when the count overflows).
    pub fn sample_numel(&self) -> usize {
        self.sample().map_or(0, |s| saturating_product(&s))
    }

    /// The concrete shape for batch size `n`.
    pub fn with_batch(&self, n: usize) -> Vec<usize> {
        self.0.iter().map(|d| if let Dim::Fixed(v) = d { *v } else { n }).collect()
    }

    /// The last dimension's size, when the shape has one after the batch.
    pub fn last(&self) -> Option<usize> {
        match self.0.last() {
            Some(Dim::Fixed(d)) if self.rank() >= 2 => Some(*d),
            _ => None,
        }
    }

    /// The same shape with the last dimension set to `d`.
    pub fn with_last(&self, d: usize) -> SymShape {
        let mut v = self.0.clone();
        if let Some(l) = v.last_mut() {
            *l = Dim::Fixed(d);
        }
        SymShape(v)
    }
}

impl fmt::Display for SymShape {
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

/// The product of `dims`, or `usize::MAX` when it overflows (sizes that large are then refused
/// by the memory check rather than wrapping around).
pub fn saturating_product(dims: &[usize]) -> usize {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX)
}

/// `f32`, `f64`, `i64`: element types as model files write them.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::I64 => "i64",
    }
}

/// Dimension `i` of `x` as a number (0 for the symbolic batch).
pub fn fixed(x: &SymShape, i: usize) -> usize {
    match x.0.get(i) {
        Some(Dim::Fixed(v)) => *v,
        _ => 0,
    }
}

/// `3` or `(3, 2)`, as PyTorch's int-or-tuple arguments are written.
pub fn pair_arg((a, b): (usize, usize)) -> String {
    if a == b { a.to_string() } else { format!("({a}, {b})") }
}

/// `128` or `[28, 64]`, as PyTorch's int-or-list shape arguments are written.
pub fn shape_arg(dims: &[usize]) -> String {
    match dims {
        [one] => one.to_string(),
        _ => format!("{dims:?}"),
    }
}
