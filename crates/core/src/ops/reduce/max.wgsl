// Maximum and its index over the innermost `reduced` visits of a plan layout (see reduce.wgsl);
// the first one on ties, NaN wins (as PyTorch). p = [n_out, reduced, plan layout (at 2)]
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;
@group(0) @binding(3) var<storage, read_write> index: array<i32>;

@compute @workgroup_size(256)
fn max_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = flat_index(gid, nwg);
    if (o >= p[0]) { return; }
    let r = p[1];
    var best = x[strided(o * r, 2u)];
    var at = 0u;
    for (var k = 1u; k < r; k = k + 1u) {
        let v = x[strided(o * r + k, 2u)];
        if (!is_nan(best) && (v > best || is_nan(v))) {
            best = v;
            at = k;
        }
    }
    values[o] = best;
    index[o] = i32(at);
}
