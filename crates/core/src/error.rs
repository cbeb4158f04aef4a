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
    Broadcast {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The first operand's shape.
        lhs: Shape,
        /// The second operand's shape.
        rhs: Shape,
        /// The first dimension that differs, counted from the right (0 is the last).
        dim: usize,
        /// Its size in the first operand.
        lhs_size: usize,
        /// Its size in the second operand.
        rhs_size: usize,
    },

    /// A matrix product whose inner dimensions differ.
    #[error(
        "{op}: cannot multiply {lhs} by {rhs}: the first has {lhs_k} columns (its last dimension) \
         but the second has {rhs_k} rows (its second-to-last dimension); they must be equal"
    )]
    MatmulShape {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The left operand's shape.
        lhs: Shape,
        /// The right operand's shape.
        rhs: Shape,
        /// The left operand's columns (its last dimension).
        lhs_k: usize,
        /// The right operand's rows (its second-to-last dimension).
        rhs_k: usize,
    },

    /// An operand whose shape does not fit what the op needs.
    #[error("{op}: {what} has shape {got}, expected {expected}")]
    ShapeMismatch {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// Which operand (`input`, `target`, `gradient`, …).
        what: &'static str,
        /// Its shape.
        got: Shape,
        /// The shape the op needs, in words or as a shape.
        expected: String,
    },

    /// A reshape to a different number of elements.
    #[error("reshape: cannot view {from} ({from_numel} elements) as {to} ({to_numel} elements)")]
    ReshapeNumel {
        /// The tensor's shape.
        from: Shape,
        /// Its number of elements.
        from_numel: usize,
        /// The shape asked for, as written (`-1` for an inferred dimension).
        to: String,
        /// The elements the shape asked for holds (the product of its known dimensions).
        to_numel: usize,
    },

    /// A dimension index outside `-ndim..ndim`.
    #[error("{op}: dimension {dim} is out of range for a tensor of shape {shape} (valid: {min}..={max})", min = -(*ndim as isize), max = *ndim as isize - 1)]
    DimOutOfRange {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The dimension given (negative counts from the end).
        dim: isize,
        /// The tensor's shape.
        shape: Shape,
        /// Its number of dimensions.
        ndim: usize,
    },

    /// A slice that runs past the end of its dimension.
    #[error("{op}: range {start}..{end} along dimension {dim} is out of bounds for shape {shape}")]
    RangeOutOfBounds {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The dimension sliced.
        dim: usize,
        /// The range's first index.
        start: usize,
        /// The range's end (exclusive).
        end: usize,
        /// The tensor's shape.
        shape: Shape,
    },

    /// Operands of different element types.
    #[error("{op}: element types differ ({lhs:?} and {rhs:?}); convert one with `.to_dtype(..)`")]
    DTypeMismatch {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The first operand's element type.
        lhs: DType,
        /// The second operand's element type.
        rhs: DType,
    },

    /// An op that is not defined for this element type.
    #[error("{op}: not supported for {dtype:?} tensors{hint}")]
    UnsupportedDType {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The element type given.
        dtype: DType,
        /// Appended to the message: which operand and what it must be (may be empty; starts
        /// with a space when not).
        hint: &'static str,
    },

    /// Operands on different devices.
    #[error("{op}: operands are on different devices ({lhs} and {rhs}); move one with `.to_device(..)`")]
    DeviceMismatch {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The first operand's device.
        lhs: Device,
        /// The second operand's device.
        rhs: Device,
    },

    /// An op with no kernel on the device of its operands.
    #[error(
        "{op}: has no kernel on {device} yet; move its inputs with `.to_device(Device::Cpu)` (or run the \
         model on the CPU: `--device cpu`)"
    )]
    NoKernel {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The device without the kernel.
        device: Device,
    },

    /// A device that failed while running work (lost, out of resources, or a driver error).
    #[error("{op}: {device} failed: {message}")]
    DeviceFailure {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The device that failed.
        device: Device,
        /// The driver's or wgpu's account of the failure.
        message: String,
    },

    /// A device allocation that does not fit.
    #[error(
        "{op}: out of memory on {device}: {requested} bytes were asked for, and {available}; use a smaller \
         batch or model, or the CPU"
    )]
    DeviceOutOfMemory {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The device.
        device: Device,
        /// The bytes of the allocation that failed.
        requested: u64,
        /// What the device has, in words (the largest buffer it allows, or what strata holds there).
        available: String,
    },

    /// A device this build or machine cannot use.
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable {
        /// The device asked for.
        device: Device,
        /// Why it cannot be used (a build without the `gpu` feature, no such adapter, an adapter
        /// that refused to open).
        reason: String,
    },

    /// Data whose length does not match the shape it is given.
    #[error("{op}: shape {shape} needs {expected} elements but {got} were given")]
    DataLength {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The shape the data is for.
        shape: Shape,
        /// The shape's number of elements.
        expected: usize,
        /// The number of values given.
        got: usize,
    },

    /// `backward()` on a tensor with more than one element.
    #[error(
        "backward: the tensor has shape {shape}; backward() needs a scalar (one element) — reduce it first, e.g. with `.sum_all()` or `.mean_all()`"
    )]
    BackwardNonScalar {
        /// The tensor's shape.
        shape: Shape,
    },

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
    TargetOutOfRange {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The position of the first bad target in the (flattened) target tensor.
        index: usize,
        /// Its class index.
        value: i64,
        /// The number of classes, the input's class dimension.
        classes: usize,
    },

    /// A value that should be one element but is not.
    #[error("{op}: expected a tensor with one element, got shape {shape}")]
    NotScalar {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The tensor's shape.
        shape: Shape,
    },

    /// An in-place update on a tensor that is a view into a larger buffer.
    #[error(
        "{op}: in-place update needs a contiguous tensor that owns its whole buffer (shape {shape}); call `.contiguous()` first"
    )]
    NotInPlaceable {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// The tensor's shape.
        shape: Shape,
    },

    /// An invalid argument value.
    #[error("{op}: {message}")]
    InvalidArgument {
        /// The op that failed (`matmul`, `conv2d`, …).
        op: &'static str,
        /// What is wrong with the argument, and what it must be.
        message: String,
    },
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
