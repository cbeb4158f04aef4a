// Binary cross-entropy with logits, elementwise over contiguous x, y (and pw, the positive
// weight expanded to x's shape when p[1] = 1): p = [numel, has_pos_weight].
// forward: loss = (1 − y)·x + (1 + (pw − 1)·y)·sp(−x), sp(z) = max(z, 0) + ln(1 + e^(−|z|)).
// backward: dx = g·((1 − y) − (1 + (pw − 1)·y)·σ(−x)), dy = g·(−x + (pw − 1)·sp(−x)).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> pos_weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

fn softplus(z: f32) -> f32 {
    return max(z, 0.0) + log(1.0 + exp(-abs(z)));
}

fn pw(i: u32) -> f32 {
    if (p[1] != 0u) { return pos_weight[i]; }
    return 1.0;
}

@compute @workgroup_size(256)
fn forward_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    loss[i] = (1.0 - y[i]) * x[i] + (1.0 + (pw(i) - 1.0) * y[i]) * softplus(-x[i]);
}
