// Embedding lookups. gather: p = [n, dim, rows]; out[p, d] = w[idx[p], d] (idx: i32), NaN for an
// index outside 0..rows (the GPU does not read the indices back to check them).
// backward: p = [rows, dim, positions offset, row offsets offset]; a table built on the device
// (table_*.wgsl) lists, per weight row, the positions that read it (in order, padding left out):
// dw[r, d] = Σ g[pos, d] over the row's positions, one thread per (r, d), no atomics.
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn gather_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let dim = p[1];
    if (i >= p[0] * dim) { return; }
    let r = idx[i / dim];
    if (r >= p[2]) {
        out[i] = bitcast<f32>(0x7fc00000u);
        return;
    }
    out[i] = src[r * dim + i % dim];
}

@compute @workgroup_size(256)
fn backward_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let dim = p[1];
    if (i >= p[0] * dim) { return; }
    let r = i / dim;
    let d = i % dim;
    var acc = 0.0;
    for (var t = idx[p[3] + r]; t < idx[p[3] + r + 1u]; t = t + 1u) {
        acc = acc + src[idx[p[2] + t] * dim + d];
    }
    out[i] = acc;
}
