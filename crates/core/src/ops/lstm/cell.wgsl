// The LSTM's gate pass on a GPU, one thread per (row r, hidden unit j) of a step, gates in
// PyTorch's order i, f, g, o (each H columns of a G = 4H row).
//
// cell_forward: p = [N·H, H, xw_off, c_off, cprev_off, first]. Pre-activations
// xw[step] + hw (hw = h[t−1]·W_hhᵀ + b_hh) are kept in `gates` (at xw_off, the same layout as
// xw) for the backward; c[t] = f⊙c[t−1] + i⊙g and h[t] = o⊙tanh(c[t]) go to `hs` and `cs` at
// c_off. c[t−1] is `c_init` at the first step (first = 1), else `cs` at cprev_off.
@group(0) @binding(1) var<storage, read> xw: array<f32>;
@group(0) @binding(2) var<storage, read> hw: array<f32>;
@group(0) @binding(3) var<storage, read> c_init: array<f32>;
@group(0) @binding(4) var<storage, read_write> gates: array<f32>;
@group(0) @binding(5) var<storage, read_write> hs: array<f32>;
@group(0) @binding(6) var<storage, read_write> cs: array<f32>;

@compute @workgroup_size(256)
fn cell_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg);
    let nh = p[0];
    if (e >= nh) { return; }
    let h = p[1];
    let r = e / h;
    let j = e % h;
    let g0 = p[2] + r * 4u * h + j;
    let w0 = r * 4u * h + j;
    let pi = xw[g0] + hw[w0];
    let pf = xw[g0 + h] + hw[w0 + h];
    let pg = xw[g0 + 2u * h] + hw[w0 + 2u * h];
    let po = xw[g0 + 3u * h] + hw[w0 + 3u * h];
    gates[g0] = pi;
    gates[g0 + h] = pf;
    gates[g0 + 2u * h] = pg;
    gates[g0 + 3u * h] = po;
    var c_prev: f32;
    if (p[5] == 1u) { c_prev = c_init[e]; } else { c_prev = cs[p[4] + e]; }
    let c = sigmoid(pf) * c_prev + sigmoid(pi) * tanh_safe(pg);
    cs[p[3] + e] = c;
    hs[p[3] + e] = sigmoid(po) * tanh_safe(c);
}
