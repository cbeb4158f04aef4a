// Pooling from host-built tables (u32 words in `tab`, offsets in p), one plane after another:
//   cells: cell_off[ohw + 1] at p[4], taps (pixel index in the plane) at p[5]
//   pixels: pix_off[hw + 1] at p[6], cells covering each pixel at p[7]; divisors (f32 bits) at p[8]
// p = [planes, hw, ohw, 0, cell_off, taps, pix_off, pix_cells, divisors]
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> tab: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> index: array<i32>;

// avg forward: one thread per (plane, cell).
@compute @workgroup_size(256)
fn avg_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let ohw = p[2];
    if (i >= p[0] * ohw) { return; }
    let plane = i / ohw;
    let cell = i % ohw;
    var sum = 0.0;
    for (var t = tab[p[4] + cell]; t < tab[p[4] + cell + 1u]; t = t + 1u) {
        sum = sum + x[plane * p[1] + tab[p[5] + t]];
    }
    let d = bitcast<f32>(tab[p[8] + cell]);
    out[i] = select(0.0, sum / d, d > 0.0);
    index[0] = index[0];
}

// avg backward: one thread per (plane, pixel); x is the output gradient here.
@compute @workgroup_size(256)
fn avg_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let hw = p[1];
    if (i >= p[0] * hw) { return; }
    let plane = i / hw;
    let pix = i % hw;
    var acc = 0.0;
    for (var t = tab[p[6] + pix]; t < tab[p[6] + pix + 1u]; t = t + 1u) {
        let cell = tab[p[7] + t];
        let d = bitcast<f32>(tab[p[8] + cell]);
        if (d > 0.0) { acc = acc + x[plane * p[2] + cell] / d; }
    }
    out[i] = acc;
    index[0] = index[0];
}

// max forward: one thread per (plane, cell); the first maximum, but every NaN wins (so the last
// NaN), as on the CPU (PyTorch's rule); index −1 for a window with no input element.
@compute @workgroup_size(256)
fn max_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let ohw = p[2];
    if (i >= p[0] * ohw) { return; }
    let plane = i / ohw;
    let cell = i % ohw;
    var best = 0.0;
    var at = -1;
    for (var t = tab[p[4] + cell]; t < tab[p[4] + cell + 1u]; t = t + 1u) {
        let pix = tab[p[5] + t];
        let v = x[plane * p[1] + pix];
        if (at < 0 || v > best || is_nan(v)) {
            best = v;
            at = i32(pix);
        }
    }
    out[i] = best;
    index[i] = at;
}

// max backward: one thread per (plane, pixel): the gradients of the cells that chose it.
@compute @workgroup_size(256)
fn max_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let hw = p[1];
    if (i >= p[0] * hw) { return; }
    let plane = i / hw;
    let pix = i % hw;
    var acc = 0.0;
    for (var t = tab[p[6] + pix]; t < tab[p[6] + pix + 1u]; t = t + 1u) {
        let cell = tab[p[7] + t];
        if (index[plane * p[2] + cell] == i32(pix)) { acc = acc + x[plane * p[2] + cell]; }
    }
    out[i] = acc;
}
