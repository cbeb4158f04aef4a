//! The GPU backend's runtime on `wgpu` (Vulkan, Metal, DX12; Mesa's software "llvmpipe" Vulkan
//! on machines without a GPU): adapters, one context per adapter, device buffers with a pool,
//! compute pipelines compiled once from WGSL, and one pending command encoder that every op
//! records into.
//!
//! Why one pending encoder: a training step is hundreds of small dispatches, and a queue
//! submission per dispatch costs more than most of them take. Ops record their dispatches into
//! one open compute pass of a shared encoder (a copy ends the pass, the next dispatch opens
//! another), which is submitted when a value is read back (`to_vec`, `item`: the only
//! synchronisation) or when it holds `MAX_PENDING` dispatches. Ordering needs no fences:
//! dispatches run in recording order, wgpu places the barriers between those that need one
//! (within a pass as between passes), and no buffer is ever written from
//! the host once a pass may use it (uploads make fresh buffers, mapped at creation). The
//! kernels' parameter words go the same way: each encoder has one fresh buffer for all of its
//! dispatches' words (each bound at its own offset), written and unmapped as it is submitted; a
//! small buffer per dispatch was most of a small dispatch's host time (~10 µs of ~11 on
//! llvmpipe's host thread, 2-core machine; ~4 µs with the arena, ~2.2 µs with one pass for all
//! dispatches instead of a pass each: `examples/dispatch_cost.rs`).
//!
//! The kernels themselves live with their ops (`ops/<op>/gpu.rs` and its `.wgsl`); this module
//! only runs them. Tensors on the GPU hold `f32` (and `i64` class indices, stored as `i32`:
//! WGSL has no 64-bit integers, nor `f64`).

mod buffer;

pub use buffer::GpuBuffer;

use crate::device::{DType, Device};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Passes recorded before the pending encoder is submitted without a read forcing it: large
/// enough to batch a step's small dispatches, small enough that the GPU starts early.
const MAX_PENDING: usize = 256;

/// Bytes of the params arena of one pending encoder: every dispatch's parameter words, at the
/// adapter's storage-offset alignment (256 bytes at most), so 256 dispatches fit in the
/// usual case; a full arena submits the encoder early.
const ARENA_BYTES: u64 = 64 << 10;

/// Threads per workgroup of the one-dimensional kernels (elementwise, fills, updates).
pub(crate) const WORKGROUP: u32 = 256;

/// One adapter as `strata devices` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterDescription {
    /// Index in the list: `gpu:N`.
    pub index: usize,
    /// The adapter's name ("NVIDIA H200", "llvmpipe (LLVM 15.0.6, 256 bits)").
    pub name: String,
    /// Discrete, integrated, virtual, CPU (software) or other.
    pub kind: String,
    /// The graphics API wgpu drives it through (Vulkan, Metal, DX12).
    pub backend: String,
    /// The driver and its version, as the driver reports them.
    pub driver: String,
    /// The largest buffer the adapter allows, in bytes.
    pub max_buffer_bytes: u64,
    /// The largest buffer one kernel may bind, in bytes (the largest tensor on this device).
    pub max_binding_bytes: u64,
}

/// [`AdapterDescription::kind`] of an adapter that computes on the CPU (wgpu's `DeviceType::Cpu`).
const SOFTWARE_KIND: &str = "software (CPU)";

impl AdapterDescription {
    /// Whether this adapter is a software rasteriser running on the CPU (Mesa's llvmpipe /
    /// lavapipe, SwiftShader, or any adapter wgpu reports as a CPU device): its timings show
    /// that the GPU code paths run correctly, not how fast a GPU would run them.
    pub fn is_software(&self) -> bool {
        let name = self.name.to_lowercase();
        self.kind == SOFTWARE_KIND || ["llvmpipe", "lavapipe", "swiftshader"].iter().any(|s| name.contains(s))
    }
}

fn instance() -> &'static wgpu::Instance {
    static INSTANCE: OnceLock<wgpu::Instance> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        // Compute-capable native APIs only: OpenGL has no storage buffers in every context,
        // and the browser's WebGPU is not native.
        desc.backends &= wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
        wgpu::Instance::new(desc)
    })
}

fn raw_adapters() -> &'static [wgpu::Adapter] {
    &adapter_list().0
}

/// The number of distinct adapters (without the replicas of [`REPLICAS_VAR`]).
fn real_adapter_count() -> usize {
    adapter_list().1.max(1)
}

/// The adapters, best first, then their replicas; and how many are real.
fn adapter_list() -> &'static (Vec<wgpu::Adapter>, usize) {
    static ADAPTERS: OnceLock<(Vec<wgpu::Adapter>, usize)> = OnceLock::new();
    ADAPTERS.get_or_init(|| {
        let mut all = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
        // Real GPUs first, so `gpu` (= `gpu:0`) is the best one; the software adapter last.
        all.sort_by_key(|a| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        });
        // Testing placement across devices on a machine with one adapter: each adapter offered
        // `STRATA_GPU_REPLICAS` times, every copy its own logical device (own queue, buffers and
        // pool); moves between them go through the host, as between two real GPUs.
        let replicas = std::env::var(REPLICAS_VAR).ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(1);
        let real = all.len();
        for _ in 1..replicas.clamp(1, 8) {
            all.extend_from_within(..real);
        }
        (all, real)
    })
}

/// The environment variable that offers every adapter several times (`STRATA_GPU_REPLICAS=2`:
/// `gpu:0` and `gpu:1` on a machine with one adapter), each a separate logical device: how the
/// tests place layers on three devices (the CPU and two GPUs) with one software adapter.
pub const REPLICAS_VAR: &str = "STRATA_GPU_REPLICAS";

/// The adapters this machine offers, best first (an empty list when there is no Vulkan, Metal
/// or DX12 driver; [`no_adapter_reason`] says why).
pub fn adapters() -> Vec<AdapterDescription> {
    raw_adapters()
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let info = a.get_info();
            let limits = a.limits();
            let replica = index / real_adapter_count();
            AdapterDescription {
                index,
                name: if replica == 0 {
                    info.name
                } else {
                    format!("{} (replica {replica}, {REPLICAS_VAR})", info.name)
                },
                kind: match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => "discrete GPU",
                    wgpu::DeviceType::IntegratedGpu => "integrated GPU",
                    wgpu::DeviceType::VirtualGpu => "virtual GPU",
                    wgpu::DeviceType::Cpu => SOFTWARE_KIND,
                    wgpu::DeviceType::Other => "other",
                }
                .into(),
                backend: format!("{:?}", info.backend),
                driver: [info.driver, info.driver_info]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
                max_buffer_bytes: limits.max_buffer_size,
                max_binding_bytes: limits.max_storage_buffer_binding_size,
            }
        })
        .collect()
}

/// Why there is no adapter, with the fix, for messages and `strata devices`.
pub fn no_adapter_reason() -> String {
    "no Vulkan, Metal or DX12 adapter was found. On Linux without a GPU, Mesa's software Vulkan \
     works: `apt-get install mesa-vulkan-drivers` (Debian/Ubuntu); with a GPU, install its \
     vendor's Vulkan driver"
        .into()
}

/// A device error reported by wgpu outside any call that could return it (a failed dispatch, a
/// lost device); the next synchronisation reports it.
type ErrorSlot = Arc<Mutex<Option<String>>>;

/// One adapter opened for compute: its device and queue, compiled pipelines, the buffer pool
/// and the pending encoder.
pub(crate) struct Context {
    pub(crate) index: usize,
    pub(crate) device: wgpu::Device,
    queue: wgpu::Queue,
    limits: wgpu::Limits,
    /// Each kernel's pipeline and its bind group layout (fetched once: wgpu makes a new handle
    /// on every `get_bind_group_layout`).
    pipelines: Mutex<HashMap<&'static str, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>>,
    pending: Mutex<Pending>,
    pool: Mutex<Pool>,
    /// Bytes of the buffers tensors hold on the device now (not counting the pool): what an
    /// out-of-memory error reports.
    pub(crate) held: std::sync::atomic::AtomicU64,
    error: ErrorSlot,
}

/// Spare buffers by size, and the bytes they hold (one lock for both).
#[derive(Default)]
struct Pool {
    by_size: HashMap<u64, Vec<wgpu::Buffer>>,
    /// Bytes in `by_size`.
    bytes: u64,
}

#[derive(Default)]
struct Pending {
    /// The open compute pass every dispatch is recorded into, until a copy or the submission
    /// ends it (dropped first: the encoder is locked while it is open). One pass for many
    /// dispatches: wgpu still places a barrier between dispatches that need one, and a pass
    /// begun and ended per dispatch was a share of each dispatch's host time.
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    passes: usize,
    /// The parameter words of the encoder's dispatches, each at an aligned offset of one buffer
    /// made for this encoder (mapped at creation, filled and unmapped when it is submitted).
    arena: Option<Arena>,
}

/// One encoder's parameter buffer and the bytes written into it so far.
struct Arena {
    buffer: wgpu::Buffer,
    bytes: Vec<u8>,
}

/// Most bytes the pool of one device keeps.
const POOL_MAX_BYTES: u64 = 1 << 30;

impl Context {
    /// The device of this context.
    pub(crate) fn strata_device(&self) -> Device {
        Device::Gpu(self.index)
    }

    /// Records one compute pass of `kernel` over `workgroups`, with `params` (32-bit words) at
    /// binding 0 and `buffers` at bindings 1, 2, … in order.
    pub(crate) fn dispatch(
        &self,
        kernel: &Kernel,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        workgroups: (u32, u32, u32),
    ) -> Result<()> {
        if workgroups.0 == 0 || workgroups.1 == 0 || workgroups.2 == 0 {
            return Ok(());
        }
        // Refused here, not by wgpu: wgpu reports an oversized dispatch only when the encoder is
        // submitted, and then drops every op recorded with it (their outputs silently never
        // written). The kernels split their grids (`groups_1d`, matmul's chunks), so this is
        // the last line of defence.
        let most = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.0 > most || workgroups.1 > most || workgroups.2 > most {
            return Err(self.device_error(
                kernel.name,
                format!(
                    "a dispatch of {workgroups:?} workgroups is more than the adapter's {most} per dimension: the \
                     tensor is too large for this kernel on this device; run the op on the CPU \
                     (`.to_device(Device::Cpu)`)"
                ),
            ));
        }
        let (pipeline, layout) = self.pipeline(kernel)?;
        // At least one word: a binding may not be empty.
        let words: &[u32] = if params.is_empty() { &[0] } else { params };
        let size = size_of_val(words) as u64;
        let align = u64::from(self.limits.min_storage_buffer_offset_alignment).max(4);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Why an arena: a buffer per dispatch for a few words (and its staging copy) was most of
        // a small dispatch's host time. The words go to this encoder's own buffer, which no
        // earlier submission can be reading: fresh per encoder, as uploads are.
        let full =
            pending.arena.as_ref().is_some_and(|a| (a.bytes.len() as u64).next_multiple_of(align) + size > ARENA_BYTES);
        if full {
            self.submit(&mut pending);
        }
        let arena = pending.arena.get_or_insert_with(|| Arena {
            buffer: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: ARENA_BYTES,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: true,
            }),
            bytes: Vec::with_capacity(ARENA_BYTES as usize),
        });
        let offset = (arena.bytes.len() as u64).next_multiple_of(align);
        arena.bytes.resize(offset as usize, 0);
        arena.bytes.extend_from_slice(words_as_bytes(words));
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &arena.buffer,
                offset,
                size: std::num::NonZeroU64::new(size),
            }),
        }];
        entries.extend(
            buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() }),
        );
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name),
            layout: &layout,
            entries: &entries,
        });
        let Pending { pass, encoder, .. } = &mut *pending;
        let encoder = encoder.get_or_insert_with(|| self.device.create_command_encoder(&Default::default()));
        let pass = pass.get_or_insert_with(|| {
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("strata"), timestamp_writes: None })
                .forget_lifetime()
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(workgroups.0, workgroups.1, workgroups.2);
        pending.passes += 1;
        if pending.passes >= MAX_PENDING {
            self.submit(&mut pending);
        }
        Ok(())
    }

    /// Records a buffer-to-buffer copy (bytes) into the pending encoder.
    pub(crate) fn copy(&self, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // The open pass ends first: copies are recorded on the encoder itself.
        pending.pass = None;
        let encoder = pending.encoder.get_or_insert_with(|| self.device.create_command_encoder(&Default::default()));
        encoder.copy_buffer_to_buffer(src, 0, dst, 0, bytes);
        pending.passes += 1;
    }

    fn submit(&self, pending: &mut Pending) {
        pending.pass = None;
        // The parameter words reach their buffer before any command that reads them is submitted.
        if let Some(arena) = pending.arena.take() {
            match arena.buffer.slice(..arena.bytes.len() as u64).get_mapped_range_mut() {
                Ok(mut view) => view.copy_from_slice(&arena.bytes),
                // Reported at the next synchronisation, as a failed dispatch is.
                Err(e) => {
                    let message = format!("writing the kernels' parameters failed: {e}");
                    self.error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(message);
                }
            }
            arena.buffer.unmap();
        }
        if let Some(encoder) = pending.encoder.take() {
            self.queue.submit([encoder.finish()]);
        }
        pending.passes = 0;
    }

    /// Submits the pending work and waits for the device to finish it; reports a device error
    /// that happened since the last synchronisation, naming `op`.
    pub(crate) fn synchronize(&self, op: &'static str) -> Result<()> {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            self.submit(&mut pending);
        }
        if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
            return Err(self.device_error(op, e.to_string()));
        }
        self.take_error(op)
    }

    fn take_error(&self, op: &'static str) -> Result<()> {
        match self.error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(message) => Err(self.device_error(op, message)),
            None => Ok(()),
        }
    }

    fn device_error(&self, op: &'static str, message: String) -> Error {
        Error::DeviceFailure { op, device: self.strata_device(), message }
    }

    fn pipeline(&self, kernel: &Kernel) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(kernel.name) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name),
            source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.name),
            layout: None,
            module: &module,
            entry_point: Some(kernel.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(self.device_error(kernel.name, format!("the kernel does not compile: {e}")));
        }
        let layout = pipeline.get_bind_group_layout(0);
        cache.insert(kernel.name, (pipeline.clone(), layout.clone()));
        Ok((pipeline, layout))
    }

    /// Refuses a buffer larger than the adapter allows in one binding, or than the kernels'
    /// 32-bit element indices reach ([`largest_buffer`]).
    fn check_size(&self, op: &'static str, size: u64) -> Result<()> {
        let max = largest_buffer(self.limits.max_buffer_size, self.limits.max_storage_buffer_binding_size);
        if size > max {
            return Err(Error::DeviceOutOfMemory {
                op,
                device: self.strata_device(),
                requested: size,
                available: format!("{max} bytes at most in one buffer on this adapter"),
            });
        }
        Ok(())
    }

    /// The error for an allocation the device could not make.
    fn out_of_memory(&self, op: &'static str, size: u64) -> Error {
        let live = self.held.load(std::sync::atomic::Ordering::Relaxed);
        Error::DeviceOutOfMemory {
            op,
            device: self.strata_device(),
            requested: size,
            available: format!(
                "the device had no block of that size left, with {:.1} MiB held by strata's tensors there \
                 (free some, or use smaller batches)",
                live as f64 / (1 << 20) as f64
            ),
        }
    }

    /// A storage buffer of at least `bytes` (rounded up to 4), from the pool when one of that size
    /// is there. Its contents are unspecified. Refuses sizes beyond the adapter's limits, and
    /// reports running out of device memory, naming `op`.
    pub(crate) fn take_buffer(&self, op: &'static str, bytes: u64) -> Result<wgpu::Buffer> {
        let size = bytes.max(4).next_multiple_of(4);
        {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = pool.by_size.get_mut(&size).and_then(Vec::pop) {
                pool.bytes -= size;
                return Ok(b);
            }
        }
        self.check_size(op, size)?;
        let create = || {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(op),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            pollster::block_on(scope.pop()).is_none().then_some(buffer)
        };
        if let Some(buffer) = create() {
            return Ok(buffer);
        }
        // Free what the pool holds (buffers of other sizes) and try once more before giving up.
        *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = Pool::default();
        create().ok_or_else(|| self.out_of_memory(op, size))
    }

    /// Gives a buffer back to the pool (or frees it when the pool is full).
    pub(crate) fn give_buffer(&self, buffer: wgpu::Buffer) {
        let size = buffer.size();
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.bytes + size > POOL_MAX_BYTES {
            return;
        }
        pool.bytes += size;
        pool.by_size.entry(size).or_default().push(buffer);
    }

    /// A fresh buffer holding `bytes`, written before any pass can use it.
    pub(crate) fn upload(&self, op: &'static str, bytes: &[u8]) -> Result<wgpu::Buffer> {
        let size = (bytes.len() as u64).max(4).next_multiple_of(4);
        self.check_size(op, size)?;
        let mut padded;
        let contents = if bytes.len() as u64 == size {
            bytes
        } else {
            padded = bytes.to_vec();
            padded.resize(size as usize, 0);
            &padded[..]
        };
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = wgpu::util::DeviceExt::create_buffer_init(
            &self.device,
            &wgpu::util::BufferInitDescriptor {
                label: Some(op),
                contents,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            },
        );
        if pollster::block_on(scope.pop()).is_some() {
            return Err(self.out_of_memory(op, size));
        }
        Ok(buffer)
    }

    /// The first `bytes` of `buffer`, after every pending pass has run.
    pub(crate) fn download(&self, op: &'static str, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.max(4).next_multiple_of(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.copy(buffer, &staging, size);
        self.synchronize(op)?;
        let slice = staging.slice(..);
        let result: Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>> = Arc::default();
        let sink = result.clone();
        slice.map_async(wgpu::MapMode::Read, move |r| *sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(r));
        // Another thread's poll may be the one that runs this callback, a moment after ours
        // returns: wait for the callback itself.
        let started = std::time::Instant::now();
        loop {
            if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
                return Err(self.device_error(op, e.to_string()));
            }
            match result.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(Ok(())) => break,
                Some(Err(e)) => return Err(self.device_error(op, format!("reading the result back failed: {e}"))),
                None if started.elapsed() > std::time::Duration::from_secs(600) => {
                    return Err(self.device_error(op, "reading the result back did not complete in 10 minutes".into()));
                }
                None => std::thread::yield_now(),
            }
        }
        let view = slice.get_mapped_range().map_err(|e| self.device_error(op, e.to_string()))?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// The most elements one tensor may hold on a GPU: the kernels index elements with 32-bit words,
/// some of them signed (class and pooling indices are `i32`), so 2³¹ − 1.
const MAX_ELEMENTS: u64 = i32::MAX as u64;

/// The largest buffer strata makes on an adapter with these limits, in bytes: what one binding
/// and one buffer may hold, and no more than [`MAX_ELEMENTS`] 4-byte elements (an adapter that
/// binds more, as some Metal ones report, would otherwise have the kernels' indices wrap).
fn largest_buffer(max_buffer_size: u64, max_binding_size: u64) -> u64 {
    max_buffer_size.min(max_binding_size).min(4 * MAX_ELEMENTS)
}

/// Opens adapter `index` (once per process) and returns its context.
pub(crate) fn context(device: Device) -> Result<Arc<Context>> {
    let Device::Gpu(index) = device else {
        return Err(Error::DeviceUnavailable { device, reason: "not a GPU device".into() });
    };
    static CONTEXTS: OnceLock<Mutex<HashMap<usize, Arc<Context>>>> = OnceLock::new();
    let mut contexts = CONTEXTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = contexts.get(&index) {
        return Ok(c.clone());
    }
    let adapters = raw_adapters();
    let adapter = adapters.get(index).ok_or_else(|| Error::DeviceUnavailable {
        device,
        reason: if adapters.is_empty() {
            no_adapter_reason()
        } else {
            format!(
                "this machine has {} adapter(s), gpu:0 to gpu:{}; `strata devices` lists them",
                adapters.len(),
                adapters.len() - 1
            )
        },
    })?;
    let limits = adapter.limits();
    let (dev, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("strata"),
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .map_err(|e| Error::DeviceUnavailable { device, reason: format!("the adapter refused to open: {e}") })?;
    let error: ErrorSlot = Arc::default();
    let sink = error.clone();
    dev.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        sink.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| e.to_string());
    }));
    let ctx = Arc::new(Context {
        index,
        device: dev,
        queue,
        limits,
        pipelines: Mutex::default(),
        pending: Mutex::default(),
        pool: Mutex::default(),
        held: Default::default(),
        error,
    });
    contexts.insert(index, ctx.clone());
    Ok(ctx)
}

/// A compute kernel: WGSL source (prefixed with the shared helpers of `common.wgsl`) and the
/// entry point to run. `name` keys the pipeline cache, so it is unique per (source, entry).
pub(crate) struct Kernel {
    /// Unique name (also the label in GPU debuggers and errors).
    pub name: &'static str,
    /// The kernel's own WGSL.
    pub wgsl: &'static str,
    /// Its entry point.
    pub entry: &'static str,
}

impl Kernel {
    fn source(&self) -> String {
        format!("{}\n{}", include_str!("common.wgsl"), self.wgsl)
    }
}

/// Workgroups for a one-dimensional kernel over `n` items, [`WORKGROUP`] per group: spread over
/// x and y, since one dimension holds at most 65,535 groups. Kernels recover the item index with
/// `flat_index` (common.wgsl).
pub(crate) fn groups_1d(n: usize) -> (u32, u32, u32) {
    let groups = n.div_ceil(WORKGROUP as usize) as u32;
    if groups <= 65_535 { (groups, 1, 1) } else { (65_535, groups.div_ceil(65_535), 1) }
}

/// The bytes of 32-bit words.
pub(crate) fn words_as_bytes(words: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding and any byte is a valid u8; the length is the words' size.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), size_of_val(words)) }
}

/// The bytes of f32 values.
pub(crate) fn f32_as_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: as for `words_as_bytes`.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), size_of_val(v)) }
}

/// f32 values from bytes (a multiple of 4 long).
pub(crate) fn f32_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Whether a GPU dtype is stored: f32, and i64 class indices as i32.
pub(crate) fn check_dtype(op: &'static str, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::I64 => Ok(()),
        DType::F64 => Err(Error::UnsupportedDType {
            op,
            dtype,
            hint: " on a GPU (WGSL has no f64; use f32 there, or keep f64 models on the CPU)",
        }),
    }
}

/// A strided layout as kernel parameters (`strided` in common.wgsl): `[ndim, offset, shape…,
/// strides…]`, broadcast to `out` (aligned from the right; a broadcast dimension gets stride 0).
pub(crate) fn layout_words(layout: &crate::shape::Layout, out: &[usize]) -> Vec<u32> {
    let dims = &layout.shape.0;
    let lead = out.len() - dims.len();
    let mut words = vec![out.len() as u32, layout.offset as u32];
    words.extend(out.iter().map(|&d| d as u32));
    words.extend(
        (0..out.len()).map(|i| {
            if i < lead || (dims[i - lead] == 1 && out[i] != 1) { 0 } else { layout.strides[i - lead] as u32 }
        }),
    );
    words
}

/// A fresh output buffer of `n` elements on `ctx` wrapped as storage.
pub(crate) fn output(ctx: &Arc<Context>, op: &'static str, n: usize, dtype: DType) -> Result<Arc<GpuBuffer>> {
    Ok(Arc::new(GpuBuffer::uninit(ctx, op, n, dtype)?))
}

#[cfg(test)]
mod tests;
