// Non-finite detection: flag[0] becomes 1 when any element of x (f32 bits, under the strided
// layout at p[1]) is NaN or ±∞. p = [numel, layout…]. The test is on the bits (exponent all
// ones), which no finite-math assumption of the shader compiler can fold away.
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> flag: array<atomic<u32>>;

@compute @workgroup_size(256)
fn finite_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    if ((x[strided(i, 1u)] & 0x7f800000u) == 0x7f800000u) {
        atomicStore(&flag[0], 1u);
    }
}
