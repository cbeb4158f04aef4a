//! The subset of `onnx.proto` (ONNX IR version 8) that export writes, as hand-written prost
//! messages: the field numbers are onnx.proto's, so any ONNX reader decodes them. Fields strata
//! never sets (sparse initializers, functions, training info, external data) are left out; a
//! protobuf reader skips what a message does not hold, so leaving them out changes nothing.

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;
/// `TensorProto.DataType.DOUBLE`.
pub const DOUBLE: i32 = 11;
/// `TensorProto.DataType.INT32`.
pub const INT32: i32 = 6;

/// `AttributeProto.AttributeType` values.
pub mod attribute_type {
    /// A single float (`f`).
    pub const FLOAT: i32 = 1;
    /// A single int64 (`i`).
    pub const INT: i32 = 2;
    /// A byte string (`s`).
    pub const STRING: i32 = 3;
    /// A list of int64 (`ints`).
    pub const INTS: i32 = 7;
    /// A list of byte strings (`strings`): an RNN's `activations`.
    pub const STRINGS: i32 = 8;
}

/// `ModelProto`: the file's top-level message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// The IR version the model targets (8 goes with opset 17).
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// The operator sets used: the default domain (`""`) at the opset version.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// The tool that wrote the model (`strata`).
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// Its version.
    #[prost(string, tag = "3")]
    pub producer_version: String,
    /// A reverse-DNS namespace for the model (unset).
    #[prost(string, tag = "4")]
    pub domain: String,
    /// The model's version (unset: 0).
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// Human-readable documentation.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// The computation.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Named strings (`strata.mean`, `strata.std`, `strata.classes`).
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `OperatorSetIdProto`: an operator domain at a version.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    /// The domain (`""`: the default ONNX operators).
    #[prost(string, tag = "1")]
    pub domain: String,
    /// The opset version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `StringStringEntryProto`: one metadata entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    /// The key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `GraphProto`: nodes in topological order, weights, and typed inputs and outputs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// The nodes, each after the nodes producing its inputs.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// The graph's name (the model's).
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors: the weights, named by their state_dict keys.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Human-readable documentation.
    #[prost(string, tag = "10")]
    pub doc_string: String,
    /// The graph's inputs.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// The graph's outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Types of intermediate values (unset: readers infer them).
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

/// `NodeProto`: one operator application.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// Names of the input values.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Names of the output values.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// The node's name: the layer's dotted path.
    #[prost(string, tag = "3")]
    pub name: String,
    /// The operator (`Gemm`, `Conv`, …).
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// The operator's attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Human-readable documentation.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// The operator's domain (`""`: ONNX's).
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `AttributeProto`: a named attribute; `type` says which value field is in use.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    /// The attribute's name (`transB`, `pads`, …).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Which field holds the value ([`attribute_type`]).
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    /// A float value.
    #[prost(float, tag = "2")]
    pub f: f32,
    /// An integer value.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// A string value (UTF-8 bytes).
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    /// A list of integers.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// A tensor value (`Constant`'s `value`, `ConstantOfShape`'s fill; read by import).
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// A list of floats (read by import).
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    /// A list of byte strings (a recurrent node's `activations`; read by import).
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
}

/// `TensorProto`: a constant tensor, its elements little-endian in `raw_data`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// The shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// The element type ([`FLOAT`], [`DOUBLE`], [`INT64`]).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// The name the nodes refer to it by.
    #[prost(string, tag = "8")]
    pub name: String,
    /// The elements, row-major, little-endian.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    /// FLOAT elements when not in `raw_data` (ONNX's `make_tensor` writes them here; read by
    /// import).
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// INT32 (and smaller integer) elements when not in `raw_data` (read by import).
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    /// INT64 elements when not in `raw_data` (read by import).
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// DOUBLE elements when not in `raw_data` (read by import).
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// `1` (EXTERNAL) when the elements are in another file, which import refuses.
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

/// `ValueInfoProto`: a value's name and type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    /// The value's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `TypeProto`, tensor types only (`tensor_type` of its `value` oneof).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// A tensor type.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

/// `TypeProto.Tensor`: an element type and a shape.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProtoTensor {
    /// The element type ([`FLOAT`], [`DOUBLE`], …).
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// The shape, dimensions fixed or symbolic.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `TensorShapeProto`: the dimensions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// One entry per dimension.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a size or a name (`batch`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    /// A fixed size or a symbolic name.
    #[prost(oneof = "DimensionValue", tags = "1, 2")]
    pub value: Option<DimensionValue>,
}

/// The `value` oneof of [`Dimension`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum DimensionValue {
    /// `dim_value`: a fixed size.
    #[prost(int64, tag = "1")]
    DimValue(i64),
    /// `dim_param`: a symbolic size, the same wherever the name recurs.
    #[prost(string, tag = "2")]
    DimParam(String),
}
