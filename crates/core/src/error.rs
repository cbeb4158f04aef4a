//! The one error type of the engine: structured variants that carry the op, the shapes involved
//! and what to change, so a caller can print a message a newcomer can act on.

use crate::device::{DType, Device};
use crate::shape::Shape;

/// Everything an op or a tensor constructor can report.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// Two shapes that an elementwise op cannot broadcast together.
    #[error(
        "{op}: shapes {lhs} and {rhs} cannot be broadcast together: aligned from the right, \
         dimension {dim} is {lhs_size} in the first and {rhs_size} in the second \
         (broadcasting needs them equal or one of them 1)"
    )]
    Broadcast { op: &'static str, lhs: Shape, rhs: Shape, dim: usize, lhs_size: usize, rhs_size: usize },

    /// A matrix product whose inner dimensions differ.
    #[error(
        "{op}: cannot multiply {lhs} by {rhs}: the first has {lhs_k} columns (its last dimension) \
         but the second has {rhs_k} rows (its second-to-last dimension); they must be equal"
    )]
    MatmulShape { op: &'static str, lhs: Shape, rhs: Shape, lhs_k: usize, rhs_k: usize },

    /// An operand whose shape does not fit what the op needs.
    #[error("{op}: {what} has shape {got}, expected {expected}")]
    ShapeMismatch { op: &'static str, what: &'static str, got: Shape, expected: String },

    /// A reshape to a different number of elements.
    #[error("reshape: cannot view {from} ({from_numel} elements) as {to} ({to_numel} elements)")]
    ReshapeNumel { from: Shape, from_numel: usize, to: String, to_numel: usize },

    /// A dimension index outside `-ndim..ndim`.
    #[error("{op}: dimension {dim} is out of range for a tensor of shape {shape} (valid: {min}..={max})", min = -(*ndim as isize), max = *ndim as isize - 1)]
    DimOutOfRange { op: &'static str, dim: isize, shape: Shape, ndim: usize },

    /// A slice that runs past the end of its dimension.
    #[error("{op}: range {start}..{end} along dimension {dim} is out of bounds for shape {shape}")]
    RangeOutOfBounds { op: &'static str, dim: usize, start: usize, end: usize, shape: Shape },

    /// Operands of different element types.
    #[error("{op}: element types differ ({lhs:?} and {rhs:?}); convert one with `.to_dtype(..)`")]
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },

    /// An op that is not defined for this element type.
    #[error("{op}: not supported for {dtype:?} tensors{hint}")]
    UnsupportedDType { op: &'static str, dtype: DType, hint: &'static str },

    /// Operands on different devices.
    #[error("{op}: operands are on different devices ({lhs} and {rhs}); move one with `.to_device(..)`")]
    DeviceMismatch { op: &'static str, lhs: Device, rhs: Device },

    /// An op with no kernel on the device of its operands.
    #[error(
        "{op}: has no kernel on {device} yet; move its inputs with `.to_device(Device::Cpu)` (or run the \
         model on the CPU: `--device cpu`)"
    )]
    NoKernel { op: &'static str, device: Device },

    /// A device that failed while running work (lost, out of resources, or a driver error).
    #[error("{op}: {device} failed: {message}")]
    DeviceFailure { op: &'static str, device: Device, message: String },

    /// A device allocation that does not fit.
    #[error(
        "{op}: out of memory on {device}: {requested} bytes were asked for, and {available}; use a smaller \
         batch or model, or the CPU"
    )]
    DeviceOutOfMemory { op: &'static str, device: Device, requested: u64, available: String },

    /// A device this build or machine cannot use.
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable { device: Device, reason: String },

    /// Data whose length does not match the shape it is given.
    #[error("{op}: shape {shape} needs {expected} elements but {got} were given")]
    DataLength { op: &'static str, shape: Shape, expected: usize, got: usize },

    /// `backward()` on a tensor with more than one element.
    #[error(
        "backward: the tensor has shape {shape}; backward() needs a scalar (one element) — reduce it first, e.g. with `.sum_all()` or `.mean_all()`"
    )]
    BackwardNonScalar { shape: Shape },

    /// `backward()` on a tensor that no gradient flows to.
    #[error(
        "backward: this tensor does not require grad: none of its inputs is a parameter or was created with `.requires_grad_()` (or it was computed inside `no_grad`)"
    )]
    NoGradRequired,

    /// A second `backward()` through the same graph.
    #[error(
        "backward: the graph of this tensor was already used by an earlier backward() and its saved values were freed; run the forward again"
    )]
    GraphFreed,

    /// A class index outside the number of classes.
    #[error("{op}: target {index} is class {value}, but the input has {classes} classes (valid: 0..={max})", max = *classes as i64 - 1)]
    TargetOutOfRange { op: &'static str, index: usize, value: i64, classes: usize },

    /// A value that should be one element but is not.
    #[error("{op}: expected a tensor with one element, got shape {shape}")]
    NotScalar { op: &'static str, shape: Shape },

    /// An in-place update on a tensor that is a view into a larger buffer.
    #[error(
        "{op}: in-place update needs a contiguous tensor that owns its whole buffer (shape {shape}); call `.contiguous()` first"
    )]
    NotInPlaceable { op: &'static str, shape: Shape },

    /// An invalid argument value.
    #[error("{op}: {message}")]
    InvalidArgument { op: &'static str, message: String },
}

/// `Result` with the engine's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Returns early with an [`Error::InvalidArgument`] built from a format string.
#[macro_export]
macro_rules! bail_arg {
    ($op:expr, $($fmt:tt)*) => {
        return Err($crate::Error::InvalidArgument { op: $op, message: format!($($fmt)*) })
    };
}
