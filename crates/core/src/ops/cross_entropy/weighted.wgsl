// Weighted, smoothed negative log-likelihood rows (`cross_entropy_with`, `nll_loss`), one thread
// per row of contiguous x [n, c] with i32 targets:
//   p = [n, c, flags, ignore_index (i32 bits), ε (f32 bits)];
//   flags: 1 = x is logits (log-softmax first), 2 = class weights bound, 4 = ignore_index set.
// forward: lp = log-probabilities [n, c]; loss[i] = (1 − ε)·w[t]·(−lp[i, t]) + ε/C·Σ_k w[k]·(−lp[i, k]);
//          wt[i] = w[t] (the mean's denominator; 0 for an ignored row), wt[n + i] = Σ_k w[k].
//          A target outside 0..c that is not ignored gives NaN (the GPU does not check on the host).
// backward: one thread per element; g is each row's upstream gradient.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> lp: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
@group(0) @binding(6) var<storage, read_write> wt: array<f32>;

fn class_weight(k: u32) -> f32 {
    if ((p[2] & 2u) != 0u) { return weight[k]; }
    return 1.0;
}

fn ignored(t: i32) -> bool {
    return (p[2] & 4u) != 0u && t == bitcast<i32>(p[3]);
}

@compute @workgroup_size(256)
fn forward_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let n = p[0];
    let c = p[1];
    if (i >= n) { return; }
    let row = i * c;
    var total_w = 0.0;
    for (var k = 0u; k < c; k = k + 1u) {
        total_w = total_w + class_weight(k);
    }
    wt[n + i] = total_w;
    let t = labels[i];
    if (ignored(t)) {
        loss[i] = 0.0;
        wt[i] = 0.0;
        return;
    }
    var lse = 0.0;
    if ((p[2] & 1u) != 0u) {
        var mx = x[row];
        for (var k = 1u; k < c; k = k + 1u) {
            mx = max(mx, x[row + k]);
        }
        var sum = 0.0;
        for (var k = 0u; k < c; k = k + 1u) {
            sum = sum + exp(x[row + k] - mx);
        }
        lse = mx + log(sum);
    }
    for (var k = 0u; k < c; k = k + 1u) {
        lp[row + k] = x[row + k] - lse;
    }
    if (t < 0 || u32(t) >= c) {
        loss[i] = bitcast<f32>(0x7fc00000u);
        wt[i] = bitcast<f32>(0x7fc00000u);
        return;
    }
    let eps = pf(4u);
    let w_t = class_weight(u32(t));
    var l = (1.0 - eps) * w_t * -lp[row + u32(t)];
    // Skipped at ε = 0, so that a −∞ log-probability of another class does not give 0·∞.
    if (eps != 0.0) {
        var s = 0.0;
        for (var k = 0u; k < c; k = k + 1u) {
            s = s + class_weight(k) * lp[row + k];
        }
        l = l - eps / f32(c) * s;
    }
    loss[i] = l;
    wt[i] = w_t;
}
