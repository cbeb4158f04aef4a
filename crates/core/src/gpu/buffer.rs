//! A tensor's buffer on a GPU: a wgpu storage buffer, its element count and type, and the
//! context it belongs to. Dropping it gives the buffer back to its device's pool.

use super::{Context, check_dtype, context, f32_as_bytes, f32_from_bytes};
use crate::device::{DType, Device};
use crate::error::{Error, Result};
use crate::storage::CpuStorage;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The device buffer of one tensor (f32, or i64 stored as i32).
pub struct GpuBuffer {
    pub(crate) ctx: Arc<Context>,
    buffer: Option<wgpu::Buffer>,
    len: usize,
    dtype: DType,
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} × {:?} on gpu:{})", self.len, self.dtype, self.ctx.index)
    }
}

impl GpuBuffer {
    /// Wraps a device buffer, counting its bytes as held by tensors until it drops.
    fn hold(ctx: Arc<Context>, buffer: wgpu::Buffer, len: usize, dtype: DType) -> GpuBuffer {
        ctx.held.fetch_add(buffer.size(), Ordering::Relaxed);
        GpuBuffer { ctx, buffer: Some(buffer), len, dtype }
    }

    /// A buffer of `len` elements with unspecified contents (every kernel writes all of its output).
    pub(crate) fn uninit(ctx: &Arc<Context>, op: &'static str, len: usize, dtype: DType) -> Result<GpuBuffer> {
        check_dtype(op, dtype)?;
        let buffer = ctx.take_buffer(op, 4 * len as u64)?;
        Ok(GpuBuffer::hold(ctx.clone(), buffer, len, dtype))
    }

    /// The CPU buffer copied to `device`.
    pub(crate) fn upload(device: Device, op: &'static str, cpu: &CpuStorage) -> Result<GpuBuffer> {
        let ctx = context(device)?;
        check_dtype(op, cpu.dtype())?;
        let buffer = match cpu {
            CpuStorage::F32(v) => ctx.upload(op, f32_as_bytes(v))?,
            CpuStorage::I64(v) => {
                let mut words = Vec::with_capacity(v.len());
                for &x in v {
                    words.push(i32::try_from(x).map_err(|_| Error::InvalidArgument {
                        op,
                        message: format!("{x} does not fit the GPU's 32-bit integers (class indices must)"),
                    })?);
                }
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                ctx.upload(op, &bytes)?
            }
            CpuStorage::F64(_) => unreachable!("check_dtype refused f64"),
        };
        Ok(GpuBuffer::hold(ctx, buffer, cpu.len(), cpu.dtype()))
    }

    /// The buffer's contents on the host, after every pending op has run (a synchronisation).
    pub(crate) fn download(&self, op: &'static str) -> Result<CpuStorage> {
        let bytes = self.ctx.download(op, self.raw(), 4 * self.len as u64)?;
        Ok(match self.dtype {
            DType::I64 => CpuStorage::I64(
                bytes.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            ),
            _ => CpuStorage::F32(f32_from_bytes(&bytes)),
        })
    }

    /// The wgpu buffer.
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("only Drop takes the buffer")
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device holding it.
    pub fn device(&self) -> Device {
        self.ctx.strata_device()
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.ctx.held.fetch_sub(b.size(), Ordering::Relaxed);
            self.ctx.give_buffer(b);
        }
    }
}
