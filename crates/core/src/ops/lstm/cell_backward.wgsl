// The LSTM's gate pass backward on a GPU, one thread per (row r, hidden unit j) of a step.
// p = [N·H, H, g_off, c_off, cprev_off, first, d_off, d_row, has_rec].
// dh = dout[step] (at d_off + r·d_row + j) + dh_rec (the
// recurrent part, when has_rec); dc (carried from the step after, updated in place):
// dc += dh⊙o⊙(1 − tanh²c); dG = [dc⊙g⊙i(1−i), dc⊙c[t−1]⊙f(1−f), dc⊙i⊙(1−g²), dh⊙tanh(c)⊙o(1−o)]
// into dgates at g_off; then dc ← dc⊙f for the step before.
@group(0) @binding(1) var<storage, read> gates: array<f32>;
@group(0) @binding(2) var<storage, read> cs: array<f32>;
@group(0) @binding(3) var<storage, read> c_init: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read> dh_rec: array<f32>;
@group(0) @binding(6) var<storage, read_write> dc: array<f32>;
@group(0) @binding(7) var<storage, read_write> dgates: array<f32>;

@compute @workgroup_size(256)
fn cell_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg);
    let nh = p[0];
    if (e >= nh) { return; }
    let h = p[1];
    let r = e / h;
    let j = e % h;
    let g0 = p[2] + r * 4u * h + j;
    let i = sigmoid(gates[g0]);
    let f = sigmoid(gates[g0 + h]);
    let g = tanh_safe(gates[g0 + 2u * h]);
    let o = sigmoid(gates[g0 + 3u * h]);
    var c_prev: f32;
    if (p[5] == 1u) { c_prev = c_init[e]; } else { c_prev = cs[p[4] + e]; }
    let tc = tanh_safe(cs[p[3] + e]);
    var dh = dout[p[6] + r * p[7] + j];
    if (p[8] == 1u) { dh = dh + dh_rec[e]; }
    let dct = dc[e] + dh * o * (1.0 - tc * tc);
    dgates[g0] = dct * g * i * (1.0 - i);
    dgates[g0 + h] = dct * c_prev * f * (1.0 - f);
    dgates[g0 + 2u * h] = dct * i * (1.0 - g * g);
    dgates[g0 + 3u * h] = dh * tc * o * (1.0 - o);
    dc[e] = dct * f;
}
