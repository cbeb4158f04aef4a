// Binary cross-entropy with logits, backward (`bce.wgsl` is the forward): p = [numel,
// has_pos_weight], one thread per element, g the upstream gradient of each element's loss:
// dx = g·((1 − y) − (1 + (pw − 1)·y)·σ(−x)), dy = g·(−x + (pw − 1)·sp(−x)).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> pos_weight: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> dy: array<f32>;

fn softplus(z: f32) -> f32 {
    return max(z, 0.0) + log(1.0 + exp(-abs(z)));
}

@compute @workgroup_size(256)
fn backward_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    let xi = x[i];
    // σ(−x) without overflow.
    var sig_neg = 0.0;
    if (xi >= 0.0) {
        sig_neg = exp(-xi) / (1.0 + exp(-xi));
    } else {
        sig_neg = 1.0 / (1.0 + exp(xi));
    }
    var w = 1.0;
    if (p[1] != 0u) { w = pos_weight[i]; }
    dx[i] = g[i] * ((1.0 - y[i]) - (1.0 + (w - 1.0) * y[i]) * sig_neg);
    dy[i] = g[i] * (-xi + (w - 1.0) * softplus(-xi));
}
