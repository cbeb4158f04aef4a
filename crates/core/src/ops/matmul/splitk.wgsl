// The second pass of a split-K product (matmul.wgsl): out[z, r, c] = Σ_s part[z·S + s, r, c],
// the slices added in order s = 0, 1, …, then the epilogue (bias over columns, ReLU).
// p = [batch·M·N, M·N, N, S, flags (1: bias, 2: ReLU)].
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn splitk_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg);
    if (e >= p[0]) { return; }
    let mn = p[1];
    let S = p[3];
    let z = e / mn;
    let rc = e % mn;
    var v = 0.0;
    for (var s = 0u; s < S; s = s + 1u) {
        v = v + part[(z * S + s) * mn + rc];
    }
    let flags = p[4];
    if ((flags & 1u) != 0u) { v = v + bias[rc % p[2]]; }
    if ((flags & 2u) != 0u) { v = select(0.0, v, v > 0.0 || is_nan(v)); }
    out[e] = v;
}
