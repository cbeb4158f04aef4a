//! The IDX data model and its encoding: [`IdxArray`] (a shape and its elements), [`IdxData`]
//! (one variant per element type), the element types' codes and sizes, and [`MAX_DIMS`]. Plain
//! data, below the reader (`mod.rs`) and the errors (`crate::error`), which both use it.

/// The most dimensions accepted. The format allows 255, but no real data set has more than a
/// handful and a bound keeps a corrupt header from describing an absurd shape.
pub const MAX_DIMS: u8 = 8;

/// The elements of an IDX file, one variant per element type.
#[derive(Clone, Debug, PartialEq)]
pub enum IdxData {
    /// Type code 0x08.
    U8(Vec<u8>),
    /// Type code 0x09.
    I8(Vec<i8>),
    /// Type code 0x0B.
    I16(Vec<i16>),
    /// Type code 0x0C.
    I32(Vec<i32>),
    /// Type code 0x0D.
    F32(Vec<f32>),
    /// Type code 0x0E.
    F64(Vec<f64>),
}

impl IdxData {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            IdxData::U8(v) => v.len(),
            IdxData::I8(v) => v.len(),
            IdxData::I16(v) => v.len(),
            IdxData::I32(v) => v.len(),
            IdxData::F32(v) => v.len(),
            IdxData::F64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type's name (`"u8"`, `"f32"`, ...), for messages.
    pub fn type_name(&self) -> &'static str {
        ElemType::of(self).name()
    }

    /// The IDX type code (byte 2 of the header).
    pub fn type_code(&self) -> u8 {
        ElemType::of(self).code()
    }

    /// Every element converted to `f32`, unscaled (`u8` 255 becomes 255.0). Large `i32` and `f64`
    /// values round to the nearest `f32`.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            IdxData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            IdxData::I8(v) => v.iter().map(|&x| x as f32).collect(),
            IdxData::I16(v) => v.iter().map(|&x| x as f32).collect(),
            IdxData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            IdxData::F32(v) => v.clone(),
            IdxData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// A decoded IDX file: its shape and its elements (`data.len() == dims.iter().product()`).
#[derive(Clone, Debug, PartialEq)]
pub struct IdxArray {
    /// The dimensions, outermost first (MNIST images: `[count, 28, 28]`).
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: IdxData,
}

impl IdxArray {
    /// Encodes this array as an uncompressed IDX file, the exact inverse of
    /// [`parse_idx`](super::parse_idx).
    ///
    /// # Panics
    /// If the shape does not match the data, has no or more than [`MAX_DIMS`] dimensions, or a
    /// dimension exceeds `u32::MAX`: such an array cannot be written as IDX.
    pub fn to_bytes(&self) -> Vec<u8> {
        assert!(
            (1..=MAX_DIMS as usize).contains(&self.dims.len()),
            "IDX arrays have 1 to {MAX_DIMS} dimensions, this one has {}",
            self.dims.len()
        );
        assert_eq!(
            self.dims.iter().product::<usize>(),
            self.data.len(),
            "IdxArray shape {:?} does not match its {} elements",
            self.dims,
            self.data.len()
        );
        let elem = ElemType::of(&self.data);
        let mut out = Vec::with_capacity(4 + 4 * self.dims.len() + self.data.len() * elem.size());
        out.extend_from_slice(&[0, 0, elem.code(), self.dims.len() as u8]);
        for &d in &self.dims {
            let d = u32::try_from(d).expect("IDX dimensions must fit in a u32");
            out.extend_from_slice(&d.to_be_bytes());
        }
        match &self.data {
            IdxData::U8(v) => out.extend_from_slice(v),
            IdxData::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
            IdxData::I16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_be_bytes())),
            IdxData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_be_bytes())),
            IdxData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_be_bytes())),
            IdxData::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_be_bytes())),
        }
        out
    }
}

/// The element types IDX knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ElemType {
    U8,
    I8,
    I16,
    I32,
    F32,
    F64,
}

impl ElemType {
    pub(super) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x08 => ElemType::U8,
            0x09 => ElemType::I8,
            0x0B => ElemType::I16,
            0x0C => ElemType::I32,
            0x0D => ElemType::F32,
            0x0E => ElemType::F64,
            _ => return None,
        })
    }

    pub(super) fn of(data: &IdxData) -> Self {
        match data {
            IdxData::U8(_) => ElemType::U8,
            IdxData::I8(_) => ElemType::I8,
            IdxData::I16(_) => ElemType::I16,
            IdxData::I32(_) => ElemType::I32,
            IdxData::F32(_) => ElemType::F32,
            IdxData::F64(_) => ElemType::F64,
        }
    }

    pub(super) fn code(self) -> u8 {
        match self {
            ElemType::U8 => 0x08,
            ElemType::I8 => 0x09,
            ElemType::I16 => 0x0B,
            ElemType::I32 => 0x0C,
            ElemType::F32 => 0x0D,
            ElemType::F64 => 0x0E,
        }
    }

    pub(super) fn size(self) -> usize {
        match self {
            ElemType::U8 | ElemType::I8 => 1,
            ElemType::I16 => 2,
            ElemType::I32 | ElemType::F32 => 4,
            ElemType::F64 => 8,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            ElemType::U8 => "u8",
            ElemType::I8 => "i8",
            ElemType::I16 => "i16",
            ElemType::I32 => "i32",
            ElemType::F32 => "f32",
            ElemType::F64 => "f64",
        }
    }

    /// Decodes a payload whose length has already been checked to be `count * size()`.
    pub(super) fn decode(self, payload: &[u8]) -> IdxData {
        fn be<const N: usize, T>(payload: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
            payload.chunks_exact(N).map(|c| f(c.try_into().expect("chunks_exact yields N bytes"))).collect()
        }
        match self {
            ElemType::U8 => IdxData::U8(payload.to_vec()),
            ElemType::I8 => IdxData::I8(payload.iter().map(|&b| b as i8).collect()),
            ElemType::I16 => IdxData::I16(be(payload, i16::from_be_bytes)),
            ElemType::I32 => IdxData::I32(be(payload, i32::from_be_bytes)),
            ElemType::F32 => IdxData::F32(be(payload, f32::from_be_bytes)),
            ElemType::F64 => IdxData::F64(be(payload, f64::from_be_bytes)),
        }
    }
}
