//! The GPU context's unit tests: buffer limits, the dispatch limit, software adapters.

use super::*;

fn adapter(name: &str, kind: &str) -> AdapterDescription {
    AdapterDescription {
        index: 0,
        name: name.into(),
        kind: kind.into(),
        backend: "Vulkan".into(),
        driver: String::new(),
        max_buffer_bytes: 1 << 30,
        max_binding_bytes: 1 << 30,
    }
}

#[test]
fn buffers_stay_within_the_kernels_32_bit_indices() {
    // Vulkan's usual limits: the binding decides.
    assert_eq!(largest_buffer(u64::MAX, 128 << 20), 128 << 20);
    assert_eq!(largest_buffer(1 << 30, u64::from(u32::MAX)), 1 << 30);
    // An adapter binding 64 GiB: capped at 2³¹ − 1 elements of 4 bytes.
    assert_eq!(largest_buffer(64 << 30, 64 << 30), 4 * (i32::MAX as u64));
}

#[test]
fn an_oversized_dispatch_is_refused_and_the_device_keeps_working() {
    if adapters().is_empty() {
        eprintln!("SKIPPED: the dispatch-limit test in {}: {}", file!(), no_adapter_reason());
        return;
    }
    const STORE: Kernel = Kernel {
        name: "test_store",
        wgsl: "@group(0) @binding(1) var<storage, read_write> out: array<u32>;\n\
               @compute @workgroup_size(1) fn store_main() { out[0] = p[0]; }",
        entry: "store_main",
    };
    let ctx = context(Device::Gpu(0)).unwrap();
    let out = output(&ctx, "test", 1, DType::F32).unwrap();
    // Past the per-dimension limit: an error now, not a wgpu validation error at the next
    // read that would also drop this encoder's other work.
    let e = ctx.dispatch(&STORE, &[7], &[out.raw()], (70_000, 1, 1)).unwrap_err().to_string();
    assert!(e.contains("test_store") && e.contains("per dimension") && e.contains("on the CPU"), "{e}");
    ctx.dispatch(&STORE, &[7], &[out.raw()], (1, 1, 1)).unwrap();
    let crate::storage::CpuStorage::F32(v) = &out.download("test").unwrap() else { unreachable!("f32") };
    assert_eq!(v[0].to_bits(), 7);
}

#[test]
fn software_adapters_are_told_apart() {
    assert!(adapter("llvmpipe (LLVM 15.0.6, 256 bits)", "other").is_software());
    assert!(adapter("SwiftShader Device (Subzero)", "other").is_software());
    assert!(adapter("some rasteriser", SOFTWARE_KIND).is_software());
    assert!(!adapter("NVIDIA H200", "discrete GPU").is_software());
}
